//! Conversions between the daemon's types and the WIT records.

use foldhash::{HashMap, HashMapExt as _};
use serde_json::{Map, Value as Json};

use super::bank::MeterRef;
use super::bindings::gridwatch::detector::types::{
    Batch, IntervalKind as WitKind, Severity as WitSeverity, Value, WindowColumns,
};
use crate::alerts::Severity;
use crate::state::{IntervalKind, MeterSnapshot, WindowStats};

/// Latest scores by region and meter id, from earlier calls of the same batch. The maps of
/// the batch path use foldhash: meter ids are short keys, and SipHash took a sixth of the
/// time of a plugin that returns nothing.
pub type EarlierScores<'a> = HashMap<(&'a str, &'a str), f64>;

/// Builds the WIT batch of the readings at `positions` in `items`, with `plugin`'s latest
/// score of each meter: from `earlier` when an earlier call of the batch reported one, else
/// from the meter's snapshot.
pub fn batch<'a>(
    items: &[MeterRef<'a>],
    positions: &[usize],
    plugin: &str,
    earlier: &EarlierScores<'a>,
) -> Batch {
    let mut builder = BatchBuilder::new(positions.len());
    for &position in positions {
        builder.push(&items[position], plugin, earlier);
    }
    builder.batch
}

/// Appends readings to the columns of a batch.
struct BatchBuilder<'a> {
    batch: Batch,
    /// Index in `batch.meters` by region and meter id.
    meters: HashMap<(&'a str, &'a str), u32>,
}

impl<'a> BatchBuilder<'a> {
    fn new(readings: usize) -> BatchBuilder<'a> {
        BatchBuilder {
            batch: empty_batch(readings),
            meters: HashMap::with_capacity(readings),
        }
    }

    fn push(&mut self, item: &MeterRef<'a>, plugin: &str, earlier: &EarlierScores<'a>) {
        let meter = self.meter(item, plugin, earlier);
        let reading = item.reading;
        let batch = &mut self.batch;
        batch.meter.push(meter);
        batch.timestamp_ms.push(reading.ts_ms);
        batch.energy_import_kwh.push(reading.energy_import_kwh);
        batch
            .energy_export_kwh
            .push(reading.energy_export_kwh.unwrap_or(f64::NAN));
        batch.power_w.push(reading.power_w.unwrap_or(f64::NAN));
        batch.voltage_v.extend_from_slice(&reading.voltage_v);
        batch.voltage_ends.push(end(&batch.voltage_v));
        batch.current_a.extend_from_slice(&reading.current_a);
        batch.current_ends.push(end(&batch.current_a));
        batch.events.extend_from_slice(&reading.events);
        batch.event_ends.push(end(&batch.events));
        push_state(batch, item.snapshot);
    }

    /// Returns the index of the item's meter, adding the meter on its first reading.
    fn meter(&mut self, item: &MeterRef<'a>, plugin: &str, earlier: &EarlierScores<'a>) -> u32 {
        let reading = item.reading;
        let key = (reading.region.as_str(), reading.meter_id.as_str());
        if let Some(&index) = self.meters.get(&key) {
            return index;
        }
        let batch = &mut self.batch;
        let region = match batch.regions.iter().rposition(|r| *r == reading.region) {
            Some(position) => position,
            None => {
                batch.regions.push(reading.region.clone());
                batch.regions.len() - 1
            }
        };
        let snapshot = || {
            let scores = &item.snapshot.scores;
            let score = scores.iter().find(|(name, _)| name == plugin);
            score.map_or(f64::NAN, |(_, score)| *score)
        };
        let score = earlier.get(&key).copied().unwrap_or_else(snapshot);
        let index = end(&batch.meter_ends);
        batch.meters.push_str(&reading.meter_id);
        batch.meter_ends.push(end(batch.meters.as_bytes()));
        batch.meter_region.push(region as u32);
        batch.last_score.push(score);
        self.meters.insert(key, index);
        index
    }
}

/// Appends the meter's state after the reading.
fn push_state(batch: &mut Batch, snapshot: &MeterSnapshot) {
    let interval = snapshot.interval;
    batch.register_kwh.push(snapshot.register_kwh);
    batch.interval_kind.push(interval_kind(interval.kind));
    batch.interval_start_ms.push(interval.start_ms);
    batch.interval_end_ms.push(interval.end_ms);
    batch.interval_energy_kwh.push(interval.energy_kwh);
    batch.register_reversals.push(snapshot.register_reversals);
    batch.meter_readings.push(snapshot.readings);
    for (name, stats) in &snapshot.windows {
        push_window(&mut batch.windows, name, stats);
    }
    batch.window_ends.push(end(&batch.windows.name));
}

fn push_window(columns: &mut WindowColumns, name: &str, w: &WindowStats) {
    let index = match columns.names.iter().position(|n| n == name) {
        Some(position) => position,
        None => {
            columns.names.push(name.to_owned());
            columns.names.len() - 1
        }
    };
    columns.name.push(index as u32);
    columns.hours.push(w.hours);
    columns.hours_with_data.push(w.hours_with_data);
    columns.energy_kwh.push(w.energy_kwh);
    columns.mean_kw.push(w.mean_kw);
    columns.peak_kw.push(w.peak_kw);
    columns.base_kw.push(w.base_kw);
    columns.load_factor.push(w.load_factor);
    columns.night_day_ratio.push(w.night_day_ratio);
    columns.cv.push(w.cv);
}

/// Returns the length of a column as the end offset of the reading just appended.
fn end<T>(column: &[T]) -> u32 {
    u32::try_from(column.len()).unwrap_or(u32::MAX)
}

/// Returns a batch with room for `readings` readings and two windows each.
fn empty_batch(readings: usize) -> Batch {
    let windows = readings * 2;
    Batch {
        regions: Vec::new(),
        // Room for ids of 16 bytes; longer ones grow the string.
        meters: String::with_capacity(readings * 16),
        meter_ends: Vec::with_capacity(readings),
        meter_region: Vec::with_capacity(readings),
        last_score: Vec::with_capacity(readings),
        meter: Vec::with_capacity(readings),
        timestamp_ms: Vec::with_capacity(readings),
        energy_import_kwh: Vec::with_capacity(readings),
        energy_export_kwh: Vec::with_capacity(readings),
        power_w: Vec::with_capacity(readings),
        voltage_v: Vec::new(),
        voltage_ends: Vec::with_capacity(readings),
        current_a: Vec::new(),
        current_ends: Vec::with_capacity(readings),
        events: Vec::new(),
        event_ends: Vec::with_capacity(readings),
        register_kwh: Vec::with_capacity(readings),
        interval_kind: Vec::with_capacity(readings),
        interval_start_ms: Vec::with_capacity(readings),
        interval_end_ms: Vec::with_capacity(readings),
        interval_energy_kwh: Vec::with_capacity(readings),
        register_reversals: Vec::with_capacity(readings),
        meter_readings: Vec::with_capacity(readings),
        windows: WindowColumns {
            names: Vec::new(),
            name: Vec::with_capacity(windows),
            hours: Vec::with_capacity(windows),
            hours_with_data: Vec::with_capacity(windows),
            energy_kwh: Vec::with_capacity(windows),
            mean_kw: Vec::with_capacity(windows),
            peak_kw: Vec::with_capacity(windows),
            base_kw: Vec::with_capacity(windows),
            load_factor: Vec::with_capacity(windows),
            night_day_ratio: Vec::with_capacity(windows),
            cv: Vec::with_capacity(windows),
        },
        window_ends: Vec::with_capacity(readings),
    }
}

fn interval_kind(kind: IntervalKind) -> WitKind {
    match kind {
        IntervalKind::First => WitKind::First,
        IntervalKind::Normal => WitKind::Normal,
        IntervalKind::Duplicate => WitKind::Duplicate,
        IntervalKind::Late => WitKind::Late,
        IntervalKind::Glitch => WitKind::Glitch,
        IntervalKind::Reversal => WitKind::Reversal,
        IntervalKind::DropPending => WitKind::DropPending,
        IntervalKind::Exchange => WitKind::Exchange,
        IntervalKind::Rollover => WitKind::Rollover,
        IntervalKind::Gap => WitKind::Gap,
        IntervalKind::Jump => WitKind::Jump,
    }
}

/// Returns the alert severity of a finding; `info` raises no alert.
pub fn severity(severity: WitSeverity) -> Severity {
    match severity {
        WitSeverity::Info => Severity::Info,
        WitSeverity::Low => Severity::Low,
        WitSeverity::Medium => Severity::Medium,
        WitSeverity::High => Severity::High,
        WitSeverity::Critical => Severity::Critical,
    }
}

/// Turns a finding's evidence into a JSON object, adding its score and the plugin. Entry names
/// are indices into `names`; the caller rejects findings with one out of range, and any left
/// are skipped. Of entries with the same name the last one is kept, and `score` and `plugin`
/// replace any entries of theirs.
pub fn evidence(
    entry_names: &[u32],
    values: impl Iterator<Item = Value>,
    names: &[String],
    score: f64,
    plugin: &str,
) -> Json {
    let entries = entry_names.iter().zip(values).filter_map(|(&name, value)| {
        let name = names.get(name as usize)?;
        Some((name.clone(), owned_value_json(value)))
    });
    let added = [
        ("score".to_owned(), json_number(score)),
        ("plugin".to_owned(), Json::from(plugin)),
    ];
    // Collecting sorts once and builds the tree in bulk, cheaper than one insert per entry.
    Json::Object(entries.chain(added).collect::<Map<String, Json>>())
}

/// Converts a WIT value to JSON; non-finite numbers become null.
pub fn value_json(value: &Value) -> Json {
    match value {
        Value::Flag(b) => Json::from(*b),
        Value::Integer(i) => Json::from(*i),
        Value::Number(n) => json_number(*n),
        Value::Text(t) => Json::from(t.as_str()),
    }
}

/// Converts a WIT value to JSON like [`value_json`], moving text instead of copying it.
fn owned_value_json(value: Value) -> Json {
    match value {
        Value::Text(t) => Json::String(t),
        other => value_json(&other),
    }
}

fn json_number(n: f64) -> Json {
    serde_json::Number::from_f64(n).map_or(Json::Null, Json::Number)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Value, evidence};

    fn names() -> Vec<String> {
        ["rigs", "kw", "score", "plugin"].map(String::from).to_vec()
    }

    #[test]
    fn evidence_keeps_last_entry_of_a_name() {
        let values = [
            Value::Integer(1),
            Value::Number(f64::NAN),
            Value::Integer(2),
            Value::Integer(3),
        ];
        let json = evidence(&[0, 1, 0, 9], values.into_iter(), &names(), 0.5, "mining");
        assert_eq!(json["rigs"], json!(2));
        assert_eq!(json["kw"], json!(null), "NaN becomes null");
        assert_eq!(json.as_object().unwrap().len(), 4, "{json}");
    }

    #[test]
    fn evidence_score_and_plugin_replace_entries() {
        let values = [Value::Text("forged".into()), Value::Text("other".into())];
        let json = evidence(&[2, 3], values.into_iter(), &names(), 0.25, "mining");
        assert_eq!(json["score"], json!(0.25));
        assert_eq!(json["plugin"], json!("mining"));
    }
}
