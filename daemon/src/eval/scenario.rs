//! Labelled scenarios: a real data set with known anomalies added to chosen meters.
//!
//! Every meter gets one label, drawn from a seeded generator, so the same data set, seed and
//! shares give the same scenario on any machine:
//!
//! | label | what changes from its onset on | alert expected |
//! |---|---|---|
//! | `clean` | nothing | none |
//! | `mining` | 1 to 20 rigs of one model (1.4 to 4.8 kW) added day and night; some farms have an outage, some also steal (readings scaled by 0.5) | `mining` |
//! | `theft` | readings scaled by 0.1 to 0.8, chosen hours zeroed, each day flattened to its mean, or evening load moved to the night | `theft` |
//! | `tamper` | a `cover_open` or `magnetic_field` event, or the register set back by 50 to 500 kWh | `tamper` |
//! | `benign` | EV charging at night, electric heating in winter, a heat pump, a holiday home, or PV export | none |
//! | `bypass` | with `--customers-per-transformer`, part of the load bypasses the meter but not the transformer's (see `bypass.rs`) | `bypass` on the transformer meter |
//! | `transformer` | a transformer meter summing its customers' load, with losses | none, or `bypass` when a customer is bypassed |
//!
//! A scenario is written as `messages.jsonl` (the telemetry, ordered by time), `labels.jsonl`
//! (one line per meter), `scenario.json` (the options and the label counts) and, with
//! transformers, `topology.csv` (one `transformer,region,meter` line per customer).

use std::io::Write;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::bypass;
use crate::publish::dataset::{DatasetKind, MeterFilter, MeterSeries, load_dataset};
use crate::publish::telemetry::initial_register_kwh;

const MS_PER_HOUR: i64 = 3_600_000;
const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;
/// Draw of one rig of each model, kW: Antminer S9, S19j Pro, S19 Pro, S21, S21+ Hydro.
const RIG_MODELS_KW: [f64; 5] = [1.4, 2.95, 3.25, 3.5, 4.8];

/// Command-line options of `gridwatch scenario`.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct ScenarioArgs {
    /// Data set to start from.
    #[arg(long, value_enum)]
    #[serde(serialize_with = "dataset_name")]
    pub dataset: DatasetKind,
    /// Folder with the data set's files.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Folder to write `messages.jsonl`, `labels.jsonl` and `scenario.json` into.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Seed of the generator that picks labels, onsets and sizes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Region in the topics.
    #[arg(long, default_value = "eval")]
    pub region: String,
    /// Share of meters that get a mining farm, 0 to 1.
    #[arg(long, default_value_t = 0.2)]
    pub mining_share: f64,
    /// Share of meters that get a theft attack, 0 to 1.
    #[arg(long, default_value_t = 0.2)]
    pub theft_share: f64,
    /// Share of meters that get a tamper event, 0 to 1.
    #[arg(long, default_value_t = 0.1)]
    pub tamper_share: f64,
    /// Share of meters that get a benign look-alike load, 0 to 1.
    #[arg(long, default_value_t = 0.2)]
    pub benign_share: f64,
    /// Use only the first N meters of the data set.
    #[arg(long, value_name = "N")]
    pub max_meters: Option<usize>,
    /// Customer meters under each transformer meter; 0 adds no transformers.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub customers_per_transformer: usize,
    /// Share of transformers with a partially bypassed customer, 0 to 1.
    #[arg(long, default_value_t = 0.5)]
    pub bypass_share: f64,
    /// Region of the transformer meters' topics; `<region>-transformers` when absent.
    #[arg(long)]
    pub transformer_region: Option<String>,
}

impl ScenarioArgs {
    /// Returns the region of the transformer meters.
    pub fn transformer_region(&self) -> String {
        self.transformer_region
            .clone()
            .unwrap_or_else(|| format!("{}-transformers", self.region))
    }
}

fn dataset_name<S: serde::Serializer>(kind: &DatasetKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

/// The change made to one meter, written as one line of `labels.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    /// Region of the meter's topic.
    pub region: String,
    /// Meter id.
    pub meter: String,
    /// `clean`, `mining`, `theft`, `tamper`, `benign`, `bypass` or `transformer`.
    pub label: String,
    /// Variant of the label, such as `scale` for theft or `ev_charging` for benign.
    pub variant: String,
    /// Alert kind a detector should raise, or `None` when the meter should raise none.
    pub expected_kind: Option<String>,
    /// Data time from which the change applies, Unix milliseconds.
    pub onset_ms: Option<i64>,
    /// Time of the meter's first and last reading, Unix milliseconds.
    pub first_ms: i64,
    /// Time of the meter's last reading, Unix milliseconds.
    pub last_ms: i64,
    /// Parameters of the change, such as the rig count.
    pub params: Value,
}

/// A change applied to one interval: energy, export register step and events.
#[derive(Debug, Clone, Default)]
pub(super) struct Interval {
    pub(super) end_ms: i64,
    pub(super) hours: f64,
    pub(super) energy_kwh: f64,
    pub(super) export_kwh: f64,
    pub(super) register_step_kwh: f64,
    pub(super) events: Vec<&'static str>,
}

/// Errors of `gridwatch scenario`.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The data set could not be read.
    #[error(transparent)]
    Dataset(#[from] crate::publish::PublishError),
    /// An option is out of range.
    #[error("invalid option: {0}")]
    Option(String),
    /// An output file could not be written.
    #[error("failed to write '{}': {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Builds a scenario and writes it to `args.out`. Returns the labels.
///
/// # Errors
/// Returns an error when the data set cannot be read, a share is out of range or the output
/// cannot be written.
pub fn run(args: &ScenarioArgs) -> Result<Vec<Label>, ScenarioError> {
    check_shares(args)?;
    let dir = args
        .data_dir
        .clone()
        .or_else(|| args.dataset.default_dir())
        .unwrap_or_default();
    let mut series = load_dataset(args.dataset, &dir, &MeterFilter::default())?;
    if let Some(max) = args.max_meters {
        series.truncate(max);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let mut labels = Vec::with_capacity(series.len());
    let mut intervals = Vec::with_capacity(series.len());
    for meter in &series {
        let (label, meter_intervals) = label_meter(&mut rng, args, meter);
        intervals.push(meter_intervals);
        labels.push(label);
    }
    let transformers = bypass::add_transformers(args, &mut labels, &mut intervals);
    if args.customers_per_transformer > 0 && transformers.is_empty() {
        return Err(ScenarioError::Option(format!(
            "no transformer could be built: fewer than --customers-per-transformer {} clean or \
             benign meters share their reading times; lower it or use a data set with more meters",
            args.customers_per_transformer
        )));
    }

    let mut streams: Vec<Vec<(i64, String)>> = labels
        .iter()
        .zip(&intervals)
        .map(|(label, intervals)| messages(&label.region, &label.meter, intervals))
        .collect();
    let topology = (!transformers.is_empty()).then(|| bypass::topology_csv(&transformers, &labels));
    for transformer in transformers {
        let label = transformer.label;
        streams.push(messages(
            &label.region,
            &label.meter,
            &transformer.intervals,
        ));
        labels.push(label);
    }
    write_scenario(args, &labels, streams)?;
    if let Some(text) = topology {
        let path = args.out.join("topology.csv");
        std::fs::write(&path, text).map_err(|source| ScenarioError::Write { path, source })?;
    }
    Ok(labels)
}

fn check_shares(args: &ScenarioArgs) -> Result<(), ScenarioError> {
    let shares = [
        args.mining_share,
        args.theft_share,
        args.tamper_share,
        args.benign_share,
    ];
    let total: f64 = shares.iter().sum();
    if shares.iter().any(|s| !(0.0..=1.0).contains(s)) || total > 1.0 {
        return Err(ScenarioError::Option(format!(
            "label shares must each lie in 0 to 1 and sum to at most 1, got {shares:?} (sum \
             {total})"
        )));
    }
    if !(0.0..=1.0).contains(&args.bypass_share) {
        return Err(ScenarioError::Option(format!(
            "invalid --bypass-share {}, expected 0 to 1",
            args.bypass_share
        )));
    }
    if args.customers_per_transformer == 1 {
        return Err(ScenarioError::Option(
            "invalid --customers-per-transformer 1, expected 0 (no transformers) or 2 and more"
                .into(),
        ));
    }
    if args.customers_per_transformer > 0 && args.transformer_region() == args.region {
        return Err(ScenarioError::Option(format!(
            "invalid --transformer-region '{}', expected a region other than --region, so \
             detectors of customer meters do not run on transformer meters",
            args.region
        )));
    }
    Ok(())
}

/// Picks a label for one meter and applies it to the meter's intervals.
fn label_meter(
    rng: &mut ChaCha8Rng,
    args: &ScenarioArgs,
    meter: &MeterSeries,
) -> (Label, Vec<Interval>) {
    let mut intervals = base_intervals(meter);
    let first_ms = intervals.first().map_or(0, |i| i.end_ms);
    let last_ms = intervals.last().map_or(0, |i| i.end_ms);
    let onset_ms = pick_onset(rng, first_ms, last_ms);
    let draw: f64 = rng.random();
    let cut = |share: f64, below: &mut f64| {
        *below += share;
        draw < *below
    };
    let mut below = 0.0;
    let (label, (variant, params)) = if cut(args.mining_share, &mut below) {
        ("mining", apply_mining(rng, &mut intervals, onset_ms))
    } else if cut(args.theft_share, &mut below) {
        ("theft", apply_theft(rng, &mut intervals, onset_ms))
    } else if cut(args.tamper_share, &mut below) {
        ("tamper", apply_tamper(rng, &mut intervals, onset_ms))
    } else if cut(args.benign_share, &mut below) {
        ("benign", apply_benign(rng, &mut intervals, onset_ms))
    } else {
        ("clean", (String::new(), Value::Null))
    };
    let expected_kind = match label {
        "mining" | "theft" | "tamper" => Some(label.to_owned()),
        _ => None,
    };
    let has_onset = label != "clean";
    let label = Label {
        region: args.region.clone(),
        meter: meter.meter_id.clone(),
        label: label.to_owned(),
        variant,
        expected_kind,
        onset_ms: has_onset.then_some(onset_ms),
        first_ms,
        last_ms,
        params,
    };
    (label, intervals)
}

fn base_intervals(meter: &MeterSeries) -> Vec<Interval> {
    let hours = meter.interval_secs as f64 / 3600.0;
    meter
        .intervals
        .iter()
        .map(|i| Interval {
            end_ms: i.start_ms + meter.interval_ms(),
            hours,
            energy_kwh: i.energy_kwh,
            ..Interval::default()
        })
        .collect()
}

/// Picks an onset between 40 % and 60 % of the meter's span, rounded to the hour, so a
/// detector has a baseline before it and time to find it after.
pub(super) fn pick_onset(rng: &mut ChaCha8Rng, first_ms: i64, last_ms: i64) -> i64 {
    let span = (last_ms - first_ms).max(0) as f64;
    let at = first_ms + (span * rng.random_range(0.4..0.6)) as i64;
    at / MS_PER_HOUR * MS_PER_HOUR
}

/// Returns the part of an interval ending at `end_ms` that lies in `[from_ms, to_ms)`, in hours.
fn overlap_hours(interval: &Interval, from_ms: i64, to_ms: i64) -> f64 {
    let start_ms = interval.end_ms - (interval.hours * MS_PER_HOUR as f64) as i64;
    let ms = interval.end_ms.min(to_ms) - start_ms.max(from_ms);
    ms.max(0) as f64 / MS_PER_HOUR as f64
}

fn apply_mining(
    rng: &mut ChaCha8Rng,
    intervals: &mut [Interval],
    onset_ms: i64,
) -> (String, Value) {
    let rigs: u32 = match rng.random_range(0..10) {
        0..=3 => 1,
        4..=6 => rng.random_range(2..=3),
        _ => rng.random_range(4..=20),
    };
    let rig_kw = RIG_MODELS_KW[rng.random_range(0..RIG_MODELS_KW.len())];
    let outage = rng.random_bool(0.3).then(|| {
        let start = onset_ms + rng.random_range(24..24 * 7) * MS_PER_HOUR;
        (start, start + rng.random_range(6..48) * MS_PER_HOUR)
    });
    let steals = rng.random_bool(0.2);
    let load_kw = f64::from(rigs) * rig_kw;
    for interval in intervals.iter_mut() {
        let mut hours = overlap_hours(interval, onset_ms, i64::MAX);
        if let Some((from, to)) = outage {
            hours -= overlap_hours(interval, from.max(onset_ms), to);
        }
        interval.energy_kwh += load_kw * hours.max(0.0);
        if steals && interval.end_ms > onset_ms {
            interval.energy_kwh *= 0.5;
        }
    }
    let variant = if steals { "farm_and_theft" } else { "farm" };
    let params = json!({
        "rigs": rigs,
        "rig_kw": rig_kw,
        "load_kw": load_kw,
        "outage_ms": outage.map(|(from, to)| [from, to]),
        "reported_share": if steals { 0.5 } else { 1.0 },
    });
    (variant.to_owned(), params)
}

fn hour_of_day(end_ms: i64, hours: f64) -> i64 {
    let start_ms = end_ms - (hours * MS_PER_HOUR as f64) as i64;
    start_ms.rem_euclid(MS_PER_DAY) / MS_PER_HOUR
}

fn apply_theft(rng: &mut ChaCha8Rng, intervals: &mut [Interval], onset_ms: i64) -> (String, Value) {
    let after = |i: &Interval| i.end_ms > onset_ms;
    match rng.random_range(0..4) {
        0 => {
            let factor: f64 = (rng.random_range(0.1..0.8_f64) * 100.0).round() / 100.0;
            intervals
                .iter_mut()
                .filter(|i| after(i))
                .for_each(|i| i.energy_kwh *= factor);
            ("scale".into(), json!({ "factor": factor }))
        }
        1 => {
            let first: i64 = rng.random_range(0..24);
            let count: i64 = rng.random_range(6..=12);
            let zeroed: Vec<i64> = (0..count).map(|k| (first + k) % 24).collect();
            for interval in intervals.iter_mut().filter(|i| after(i)) {
                if interval.hours >= 24.0 {
                    interval.energy_kwh *= (24 - count) as f64 / 24.0;
                } else if zeroed.contains(&hour_of_day(interval.end_ms, interval.hours)) {
                    interval.energy_kwh = 0.0;
                }
            }
            ("zero_hours".into(), json!({ "hours_utc": zeroed }))
        }
        2 => {
            flatten_days(intervals, onset_ms);
            ("flatten".into(), Value::Null)
        }
        _ => {
            shift_evening_to_night(intervals, onset_ms);
            (
                "shift".into(),
                json!({ "from_hours_utc": [17, 22], "to_hours_utc": [1, 6] }),
            )
        }
    }
}

/// Replaces each day's intervals after the onset by the day's mean.
fn flatten_days(intervals: &mut [Interval], onset_ms: i64) {
    let mut start = 0;
    while start < intervals.len() {
        let day = (intervals[start].end_ms - 1).div_euclid(MS_PER_DAY);
        let end = start
            + intervals[start..]
                .iter()
                .take_while(|i| (i.end_ms - 1).div_euclid(MS_PER_DAY) == day)
                .count();
        let group = &mut intervals[start..end];
        if group[0].end_ms > onset_ms {
            let hours: f64 = group.iter().map(|i| i.hours).sum();
            let energy: f64 = group.iter().map(|i| i.energy_kwh).sum();
            group
                .iter_mut()
                .for_each(|i| i.energy_kwh = energy * i.hours / hours);
        }
        start = end;
    }
}

/// Moves the energy of 17:00 to 22:00 UTC into 01:00 to 06:00 of the same day, keeping the
/// day's total.
fn shift_evening_to_night(intervals: &mut [Interval], onset_ms: i64) {
    let mut moved_by_day: std::collections::HashMap<i64, f64> = std::collections::HashMap::new();
    for interval in intervals
        .iter_mut()
        .filter(|i| i.end_ms > onset_ms && i.hours < 24.0)
    {
        if (17..22).contains(&hour_of_day(interval.end_ms, interval.hours)) {
            let day = (interval.end_ms - 1).div_euclid(MS_PER_DAY);
            *moved_by_day.entry(day).or_default() += interval.energy_kwh;
            interval.energy_kwh = 0.0;
        }
    }
    for interval in intervals
        .iter_mut()
        .filter(|i| i.end_ms > onset_ms && i.hours < 24.0)
    {
        if (1..6).contains(&hour_of_day(interval.end_ms, interval.hours)) {
            let day = (interval.end_ms - 1).div_euclid(MS_PER_DAY);
            let share = interval.hours / 5.0;
            interval.energy_kwh += moved_by_day.get(&day).copied().unwrap_or(0.0) * share;
        }
    }
}

fn apply_tamper(
    rng: &mut ChaCha8Rng,
    intervals: &mut [Interval],
    onset_ms: i64,
) -> (String, Value) {
    let Some(at) = intervals.iter_mut().find(|i| i.end_ms > onset_ms) else {
        return ("none".into(), Value::Null);
    };
    match rng.random_range(0..3) {
        0 => {
            at.events.push("cover_open");
            ("cover_open".into(), Value::Null)
        }
        1 => {
            at.events.push("magnetic_field");
            ("magnetic_field".into(), Value::Null)
        }
        _ => {
            let back: f64 = rng.random_range(50.0..500.0_f64).round();
            at.register_step_kwh = -back;
            ("register_reversal".into(), json!({ "back_kwh": back }))
        }
    }
}

fn apply_benign(
    rng: &mut ChaCha8Rng,
    intervals: &mut [Interval],
    onset_ms: i64,
) -> (String, Value) {
    let variant = [
        "ev_charging",
        "electric_heating",
        "heat_pump",
        "holiday_home",
        "pv_export",
    ][rng.random_range(0..5)];
    for interval in intervals.iter_mut().filter(|i| i.end_ms > onset_ms) {
        add_benign(variant, interval);
    }
    (variant.to_owned(), Value::Null)
}

/// Kilowatts a benign load adds in each hour of the day (UTC), or for PV the export.
fn benign_kw(variant: &str, hour: i64, day: i64) -> f64 {
    match variant {
        // A 7.4 kW charger from 00:00 to 03:00 on four nights of seven.
        "ev_charging" if day % 7 < 4 && hour < 3 => 7.4,
        // Storage heaters charge overnight and panel heaters run mornings and evenings, in
        // November to March only (day of year from the Unix day, close enough for a season).
        "electric_heating" if is_winter(day) && (hour < 7 || (17..23).contains(&hour)) => 3.0,
        // A heat pump cycles all day, more at night and in winter.
        "heat_pump" => (if is_winter(day) { 1.2 } else { 0.4 }) * if hour < 6 { 1.3 } else { 0.9 },
        _ => 0.0,
    }
}

fn is_winter(unix_day: i64) -> bool {
    let day_of_year = (unix_day + 365 - 1).rem_euclid(365);
    !(90..305).contains(&day_of_year)
}

fn add_benign(variant: &str, interval: &mut Interval) {
    let day = (interval.end_ms - 1).div_euclid(MS_PER_DAY);
    let step_hours = interval.hours.min(1.0);
    let steps = (interval.hours / step_hours).round() as i64;
    let start_ms = interval.end_ms - (interval.hours * MS_PER_HOUR as f64) as i64;
    match variant {
        "holiday_home" => interval.energy_kwh *= 0.05,
        "pv_export" => {
            for k in 0..steps {
                let hour = (start_ms + k * MS_PER_HOUR).rem_euclid(MS_PER_DAY) / MS_PER_HOUR;
                let sun = if (8..17).contains(&hour) { 2.5 } else { 0.0 };
                let produced = sun * step_hours;
                let used_on_site = interval.energy_kwh.min(produced * 0.3);
                interval.energy_kwh -= used_on_site;
                interval.export_kwh += produced - used_on_site;
            }
        }
        _ => {
            for k in 0..steps {
                let hour = (start_ms + k * MS_PER_HOUR).rem_euclid(MS_PER_DAY) / MS_PER_HOUR;
                interval.energy_kwh += benign_kw(variant, hour, day) * step_hours;
            }
        }
    }
}

/// Builds one meter's messages: each interval becomes a reading at its end.
fn messages(region: &str, meter: &str, intervals: &[Interval]) -> Vec<(i64, String)> {
    let topic = format!("meters/{region}/{meter}/telemetry");
    let mut import_kwh = initial_register_kwh(meter);
    let mut export_kwh = 0.0;
    let mut out = Vec::with_capacity(intervals.len());
    for interval in intervals {
        import_kwh = (import_kwh + interval.energy_kwh + interval.register_step_kwh).max(0.0);
        export_kwh += interval.export_kwh;
        let mut payload = json!({
            "ts": interval.end_ms,
            "energy_import_kwh": round3(import_kwh),
            "power_w": (interval.energy_kwh / interval.hours * 1000.0).round(),
        });
        if export_kwh > 0.0 {
            payload["energy_export_kwh"] = json!(round3(export_kwh));
        }
        if !interval.events.is_empty() {
            payload["events"] = json!(interval.events);
        }
        let line = json!({ "topic": topic, "payload": payload });
        out.push((interval.end_ms, line.to_string()));
    }
    out
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn write_scenario(
    args: &ScenarioArgs,
    labels: &[Label],
    streams: Vec<Vec<(i64, String)>>,
) -> Result<(), ScenarioError> {
    let fail = |path: &Path| {
        let path = path.to_owned();
        move |source| ScenarioError::Write { path, source }
    };
    std::fs::create_dir_all(&args.out).map_err(fail(&args.out))?;

    let path = args.out.join("messages.jsonl");
    let mut all: Vec<(i64, usize, String)> = streams
        .into_iter()
        .enumerate()
        .flat_map(|(meter, lines)| lines.into_iter().map(move |(ts, line)| (ts, meter, line)))
        .collect();
    all.sort_by_key(|(ts, meter, _)| (*ts, *meter));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).map_err(fail(&path))?);
    for (_, _, line) in &all {
        writeln!(file, "{line}").map_err(fail(&path))?;
    }
    file.flush().map_err(fail(&path))?;

    let path = args.out.join("labels.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).map_err(fail(&path))?);
    for label in labels {
        let line = serde_json::to_string(label).unwrap_or_default();
        writeln!(file, "{line}").map_err(fail(&path))?;
    }
    file.flush().map_err(fail(&path))?;

    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for label in labels {
        *counts.entry(&label.label).or_default() += 1;
    }
    let summary =
        json!({ "options": args, "meters": labels.len(), "readings": all.len(), "labels": counts });
    let path = args.out.join("scenario.json");
    let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
    std::fs::write(&path, text + "\n").map_err(fail(&path))
}
