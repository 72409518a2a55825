//! Electricity theft detector.
//!
//! Each meter's readings build a compact profile in plugin state: the current UTC day hour by
//! hour and a summary of each earlier day (energy, coverage, variation of its hours, export).
//! Three checks run as readings complete hours and days:
//!
//! - **zero run**: consumption stops for `min_zero_hours` hours in a row on a meter that had
//!   load before, with no energy exported (hours zeroed, or evening load moved away);
//! - **flat profile**: `min_flat_days` days in a row whose hours barely vary, on a meter whose
//!   earlier days varied, at about the usual daily energy (each day replaced by its mean);
//! - **level drop**: the median daily energy of the newest `recent_days` days, and of the
//!   newest `confirm_days` of them, lies between `vacancy_ratio` and `drop_ratio` of the
//!   median of the `baseline_days` before (readings scaled down).
//!
//! Benign changes are kept out by design: added loads (EV charging, heating, heat pumps) raise
//! consumption, a vacant home drops below `vacancy_ratio`, and a meter that exports energy (PV)
//! is not judged for zero hours or drops while it exports.
//!
//! Each check raises a `theft` finding at most once per `realert_hours`.

mod checks;
mod profile;

use std::cell::RefCell;
use std::collections::HashMap;

use gridwatch_plugin_sdk::prelude::*;

pub use checks::{Limits, Signal, judge_flat_day, judge_hour, judge_level, median};
pub use profile::{Check, Completed, DAY_MS, Day, HOUR_MS, Hour, Profile};

/// The theft detector.
pub struct Theft;

const KIND: &str = "theft";
const STATE_KEY: &str = "profile";

/// Meters whose profiles the instance keeps in memory between calls. With the default 273 days
/// a profile takes about 7 KiB of memory, so the cache stays inside the default 64 MiB sandbox
/// memory.
const MAX_CACHED_METERS: usize = 5_000;

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::new(MAX_CACHED_METERS));
}

impl Detector for Theft {
    fn describe() -> Info {
        Info {
            name: "theft".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Consumption that stops for hours, loses its daily shape or drops \
                          against the meter's own baseline"
                .into(),
            kinds: vec![KIND.into()],
            settings: settings(),
        }
    }

    fn detect(batch: Batch) -> Vec<Finding> {
        CACHE.with(|cache| detect_with(&mut WasmHost, &mut cache.borrow_mut(), &batch))
    }
}

export_detector!(Theft);

/// Profiles kept in the instance's memory, so that a reading costs no host call unless it
/// completes a day or raises a finding.
///
/// The daemon builds a new instance after a failed call, which empties the cache, so the
/// cache never contains writes that the daemon dropped.
///
/// A cached profile is written to plugin state only when a day completes or a finding is raised.
/// Meters beyond `max_meters` are not cached, and their profiles are written on every call.
///
/// NOTE: after a restart or a new plugin version, the cached hours of the current day since the
/// last write are missing, so that day is incomplete and the checks skip it.
#[derive(Debug, Default)]
pub struct Cache {
    profiles: HashMap<(String, String), Profile>,
    max_meters: usize,
}

impl Cache {
    /// Creates a cache of up to `max_meters` profiles; 0 turns caching off, so every call
    /// reads and writes plugin state for each of its meters.
    pub fn new(max_meters: usize) -> Cache {
        Cache {
            profiles: HashMap::new(),
            max_meters,
        }
    }
}

/// A meter's profile during one call, and whether plugin state must be written.
struct MeterEntry {
    profile: Profile,
    changed: bool,
}

/// Runs the detector on a batch with the given host and cache; the plugin passes the daemon's
/// host, native tests pass a [`MemoryHost`].
pub fn detect_with(host: &mut impl Host, cache: &mut Cache, batch: &Batch) -> Vec<Finding> {
    let mut regions: Vec<Option<Limits>> = Vec::new();
    regions.resize_with(batch.regions.len(), || None);
    let mut entries: Vec<Option<MeterEntry>> = Vec::new();
    entries.resize_with(batch.meter_count(), || None);
    let mut findings = Vec::new();

    for reading in batch.readings() {
        let meter = reading.meter();
        let region = batch.meter_region[meter.index() as usize] as usize;
        let limits =
            regions[region].get_or_insert_with(|| Limits::for_region(host, meter.region()));
        let entry = entries[meter.index() as usize].get_or_insert_with(|| MeterEntry {
            profile: load_profile(host, cache, meter),
            changed: cache.max_meters == 0,
        });
        findings.extend(examine(
            limits,
            &mut entry.profile,
            &mut entry.changed,
            reading,
        ));
    }

    for (index, entry) in entries.into_iter().enumerate() {
        let Some(entry) = entry else { continue };
        let meter = batch.meter_at(index);
        // A profile that does not fit into the cache is written on every call, so that plugin
        // state never lacks hours that only an evicted profile had.
        let cached = cache.profiles.len() < cache.max_meters;
        if entry.changed || !cached {
            host.set_state(meter, STATE_KEY, &entry.profile.encode());
        }
        if cached {
            let key = (meter.region().to_owned(), meter.id().to_owned());
            cache.profiles.insert(key, entry.profile);
        }
    }
    findings
}

fn load_profile(host: &mut impl Host, cache: &mut Cache, meter: Meter<'_>) -> Profile {
    let key = (meter.region().to_owned(), meter.id().to_owned());
    if let Some(profile) = cache.profiles.remove(&key) {
        return profile;
    }
    host.get_state(meter, STATE_KEY)
        .and_then(|bytes| Profile::decode(&bytes))
        .unwrap_or_default()
}

/// Adds one reading to the meter's profile and runs the checks on what it completed.
fn examine(
    limits: &Limits,
    profile: &mut Profile,
    changed: &mut bool,
    reading: Reading<'_>,
) -> Vec<Finding> {
    let interval = reading.interval();
    let counts = matches!(
        interval.kind,
        IntervalKind::Normal | IntervalKind::Rollover | IntervalKind::Exchange
    );
    if !counts {
        return Vec::new();
    }
    let completed = profile.add(
        interval.start_ms,
        interval.end_ms,
        interval.energy_kwh,
        reading.energy_export_kwh(),
        limits.max_days(),
    );
    *changed |= !completed.days.is_empty();

    let mut signals = Vec::new();
    for hour in &completed.hours {
        signals.extend(judge_hour(limits, profile, hour));
    }
    for index in 0..completed.days.len() {
        // The profile keeps the newest days, so judge each completed day with the days up to
        // it, as if it had completed alone.
        let newest = completed.days.len() - 1 - index;
        let days = &profile.days[..profile.days.len() - newest];
        signals.extend(judge_flat_day(limits, days));
        signals.extend(judge_level(limits, days));
    }

    let mut findings = Vec::new();
    for signal in signals {
        if checks::may_alert(limits, profile, signal.check, signal.at_ms) {
            profile.alerted_ms[signal.check as usize] = Some(signal.at_ms);
            *changed = true;
            findings.push(finding(reading, signal));
        }
    }
    findings
}

fn finding(reading: Reading<'_>, signal: Signal) -> Finding {
    let mut evidence = vec![
        entry("check", Value::Text(signal.check.as_str().into())),
        entry("at_ms", Value::Integer(signal.at_ms)),
    ];
    evidence.extend(signal.evidence);
    Finding {
        reading: reading.index(),
        kind: KIND.into(),
        severity: Severity::Medium,
        score: signal.score,
        message: signal.message,
        evidence,
    }
}

/// Returns the settings the detector declares, with their defaults.
pub fn settings() -> Vec<SettingSpec> {
    let number = |name: &str, value: f64, description: &str| {
        setting_spec(name, Value::Number(value), description)
    };
    let integer = |name: &str, value: i64, description: &str| {
        setting_spec(name, Value::Integer(value), description)
    };
    vec![
        number(
            "zero_max_kwh",
            0.002,
            "Hourly energy at or below which an hour counts as zero, kWh",
        ),
        integer(
            "min_zero_hours",
            5,
            "Fewest zero hours in a row, with no energy exported, that make a suspect run",
        ),
        integer(
            "max_zero_hours",
            16,
            "Most zero hours in a row that make a suspect run; longer runs are outages or \
             vacancies",
        ),
        integer(
            "min_zero_days",
            2,
            "Suspect runs in a row, sharing an hour of the day, that raise a finding",
        ),
        number(
            "max_pattern_gap_hours",
            48.0,
            "Longest time from the end of one suspect run to the start of the next for both to \
             count towards the pattern, hours",
        ),
        number(
            "min_load_kwh",
            0.05,
            "Mean hourly energy of the meter over about the day before a zero run, below which \
             the run is not suspect, kWh",
        ),
        number(
            "max_flat_variation",
            0.05,
            "Coefficient of variation of a day's hourly energy at or below which the day is flat",
        ),
        number(
            "min_baseline_variation",
            0.2,
            "Median coefficient of variation of the earlier days from which flat days are suspect",
        ),
        integer(
            "min_flat_days",
            3,
            "Flat days in a row that raise a finding",
        ),
        integer(
            "min_flat_baseline_days",
            3,
            "Earlier days with hourly readings that the flat-profile check needs",
        ),
        integer(
            "max_baseline_flat_days",
            0,
            "Flat days the earlier days may hold before flat days are no longer suspect, as \
             with estimated readings",
        ),
        number(
            "min_flat_level_ratio",
            0.5,
            "Lowest energy of the flat days as a share of the earlier days' median",
        ),
        number(
            "max_flat_level_ratio",
            2.0,
            "Highest energy of the flat days as a share of the earlier days' median, so a \
             large constant load such as a mining rig is not taken for flattening",
        ),
        number(
            "min_day_coverage",
            0.9,
            "Share of a day's 24 hours that readings must cover for the day to count",
        ),
        integer(
            "baseline_days",
            182,
            "Days before the recent window whose median daily energy is the baseline, at most 366",
        ),
        integer(
            "min_baseline_days",
            120,
            "Complete baseline days the level-drop check needs",
        ),
        integer(
            "recent_days",
            91,
            "Newest days whose median daily energy is compared with the baseline, at most 366",
        ),
        integer(
            "confirm_days",
            28,
            "Newest days of the recent window whose median must also lie in the drop band",
        ),
        number(
            "drop_ratio",
            0.35,
            "Highest share of the baseline's median daily energy that counts as a drop",
        ),
        number(
            "vacancy_ratio",
            0.075,
            "Share of the baseline below which a drop counts as a vacant home, not theft",
        ),
        number(
            "min_baseline_kwh",
            1.0,
            "Median daily energy of the baseline below which no drop is judged, kWh",
        ),
        number(
            "min_baseline_stability",
            0.6,
            "Lowest ratio of the smaller to the larger median daily energy of the baseline's \
             two halves, so a baseline that holds a step of its own is not judged",
        ),
        number(
            "realert_hours",
            168.0,
            "Hours after a finding of one check before the same check raises another",
        ),
    ]
}

#[cfg(test)]
mod tests;
