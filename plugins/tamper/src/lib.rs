//! Meter tampering detector.
//!
//! Each reading is checked for causes of suspicion, and the causes found on one reading make
//! one `tamper` finding whose severity and score are those of the strongest cause:
//!
//! - the register went backwards outside a rollover or meter exchange (interval kind
//!   `reversal`);
//! - the meter reported a tamper event: meter cover or terminal cover opened, strong magnetic
//!   field, reverse energy, current without voltage, neutral current mismatch;
//! - data that shows the same without an event: negative power on an import-only meter, or a
//!   phase with current but no voltage;
//! - consumption dropped to a fraction of the meter's own baseline while voltage is present;
//! - a long run of zero consumption while voltage is present.
//!
//! A meter exchange (interval kind `exchange`) is reported as a low `meter_exchange` finding,
//! not as tampering. Each event code list is a setting, so a region whose meters use other
//! names or numbers sets its own.

mod checks;

use gridwatch_plugin_sdk::prelude::*;

pub use checks::{Cause, CauseKind};

/// The tamper detector.
pub struct Tamper;

const TAMPER: &str = "tamper";
const EXCHANGE: &str = "meter_exchange";

/// Score of a meter exchange finding. It is low because an exchange is routine work, but it
/// still replaces the meter's latest tamper score.
const EXCHANGE_SCORE: f64 = 0.2;

impl Detector for Tamper {
    fn describe() -> Info {
        Info {
            name: "tamper".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Register reversals, tamper events, current without voltage and \
                          consumption that stops while voltage is present"
                .into(),
            kinds: vec![TAMPER.into(), EXCHANGE.into()],
            settings: settings(),
        }
    }

    fn detect(batch: Batch) -> Vec<Finding> {
        detect_with(&mut WasmHost, &batch)
    }
}

export_detector!(Tamper);

/// Runs the detector on a batch with the given host; the plugin passes the daemon's, native
/// tests pass a [`MemoryHost`].
pub fn detect_with(host: &mut impl Host, batch: &Batch) -> Vec<Finding> {
    // Settings are read once per region and batch, and meter state once per meter and batch.
    let mut regions: Vec<Option<checks::Limits>> = Vec::new();
    regions.resize_with(batch.regions.len(), || None);
    let mut tracks: Vec<Option<checks::Track>> = vec![None; batch.meter_count()];
    let mut findings = Vec::new();

    for reading in batch.readings() {
        let meter = reading.meter();
        let region = batch.meter_region[meter.index() as usize] as usize;
        let limits =
            regions[region].get_or_insert_with(|| checks::Limits::for_region(host, meter.region()));
        let track =
            tracks[meter.index() as usize].get_or_insert_with(|| checks::Track::load(host, meter));

        if reading.interval().kind == IntervalKind::Exchange {
            findings.push(exchange_finding(reading, track));
        }
        let causes = checks::examine(limits, reading, track);
        if let Some(finding) = tamper_finding(reading, &causes) {
            findings.push(finding);
        }
        track.last_register_kwh = Some(reading.register_kwh());
    }

    for (index, track) in tracks.iter().enumerate() {
        if let Some(track) = track {
            track.store(host, batch.meter_at(index));
        }
    }
    findings
}

/// Returns the settings the detector declares, with their defaults.
pub fn settings() -> Vec<SettingSpec> {
    let mut specs = checks::event_settings();
    specs.extend([
        setting_spec(
            "import_only",
            Value::Flag(false),
            "Meters of the region only import, so negative power is reverse energy",
        ),
        setting_spec(
            "reverse_power_min_w",
            Value::Number(50.0),
            "Negative power on an import-only meter that counts as reverse energy, W",
        ),
        setting_spec(
            "voltage_present_v",
            Value::Number(100.0),
            "Phase voltage from which voltage counts as present, V",
        ),
        setting_spec(
            "min_current_a",
            Value::Number(0.5),
            "Phase current that counts as current without voltage when the phase has none, A",
        ),
        setting_spec(
            "recent_window",
            Value::Text("24h".into()),
            "Rolling window whose mean power is compared with the baseline, by name",
        ),
        setting_spec(
            "baseline_window",
            Value::Text("7d".into()),
            "Rolling window whose hours before the recent window are the baseline, by name",
        ),
        setting_spec(
            "min_recent_coverage",
            Value::Number(0.9),
            "Share of the recent window's hours that must have readings",
        ),
        setting_spec(
            "min_baseline_hours",
            Value::Number(72.0),
            "Hours with readings the baseline needs before a drop is judged",
        ),
        setting_spec(
            "min_baseline_kw",
            Value::Number(0.1),
            "Baseline mean power below which a drop is not judged, kW",
        ),
        setting_spec(
            "drop_fraction",
            Value::Number(0.2),
            "Recent mean power below this share of the baseline is a sustained drop",
        ),
        setting_spec(
            "zero_max_kw",
            Value::Number(0.001),
            "Interval mean power at or below which consumption counts as zero, kW",
        ),
        setting_spec(
            "zero_run_hours",
            Value::Number(24.0),
            "Hours of zero consumption with voltage present that raise an alert",
        ),
    ]);
    specs
}

fn exchange_finding(reading: Reading<'_>, track: &checks::Track) -> Finding {
    let interval = reading.interval();
    let mut evidence = vec![
        entry("interval_kind", Value::Text("exchange".into())),
        entry("register_kwh", Value::Number(reading.register_kwh())),
        entry(
            "energy_since_exchange_kwh",
            Value::Number(interval.energy_kwh),
        ),
    ];
    let old = track.last_register_kwh;
    if let Some(old) = old {
        evidence.push(entry("previous_register_kwh", Value::Number(old)));
    }
    let before = old.map_or_else(String::new, |old| format!(" from {old:.1} kWh"));
    Finding {
        reading: reading.index(),
        kind: EXCHANGE.into(),
        severity: Severity::Low,
        score: EXCHANGE_SCORE,
        message: format!(
            "meter exchange: register restarted{before} and now reads {:.1} kWh",
            reading.register_kwh()
        ),
        evidence,
    }
}

/// Builds one finding from the causes of a reading, or `None` when there are none.
fn tamper_finding(reading: Reading<'_>, causes: &[Cause]) -> Option<Finding> {
    let strongest = causes.iter().max_by(|a, b| {
        a.score
            .total_cmp(&b.score)
            .then(a.severity.cmp(&b.severity))
    })?;
    let severity = causes.iter().map(|c| c.severity).max()?;
    let names: Vec<&str> = causes.iter().map(|c| c.kind.as_str()).collect();
    let messages: Vec<&str> = causes.iter().map(|c| c.message.as_str()).collect();

    let mut evidence = vec![
        entry("causes", Value::Text(names.join(","))),
        entry(
            "interval_kind",
            Value::Text(interval_kind_name(reading.interval().kind).into()),
        ),
        entry("register_kwh", Value::Number(reading.register_kwh())),
        entry(
            "register_reversals",
            Value::Integer(i64::from(reading.register_reversals())),
        ),
    ];
    let voltage = reading.voltage_v().iter().copied().fold(f64::NAN, f64::max);
    if !voltage.is_nan() {
        evidence.push(entry("max_voltage_v", Value::Number(voltage)));
    }
    for cause in causes {
        evidence.extend(cause.evidence.iter().cloned());
    }
    Some(Finding {
        reading: reading.index(),
        kind: TAMPER.into(),
        severity,
        score: strongest.score,
        message: messages.join("; "),
        evidence,
    })
}

/// Returns the snake_case name the daemon uses for an interval kind.
fn interval_kind_name(kind: IntervalKind) -> &'static str {
    match kind {
        IntervalKind::First => "first",
        IntervalKind::Normal => "normal",
        IntervalKind::Duplicate => "duplicate",
        IntervalKind::Late => "late",
        IntervalKind::Glitch => "glitch",
        IntervalKind::Reversal => "reversal",
        IntervalKind::DropPending => "drop_pending",
        IntervalKind::Exchange => "exchange",
        IntervalKind::Rollover => "rollover",
        IntervalKind::Gap => "gap",
        IntervalKind::Jump => "jump",
    }
}

#[cfg(test)]
mod tests;
