//! Conversion of interval series into MQTT telemetry messages, merged across meters by time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use serde::Serialize;

use super::dataset::MeterSeries;

const MS_PER_HOUR: f64 = 3_600_000.0;

/// A constant mining load added to chosen meters from a given time on.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    /// Number of rigs.
    pub rigs: u32,
    /// Draw of one rig in kW.
    pub rig_kw: f64,
    /// Meters that get the load. Empty means every meter.
    pub meters: Vec<String>,
    /// Data time in Unix milliseconds from which the rigs run.
    pub from_ms: i64,
}

impl Injection {
    /// Returns the total added load in kW: rigs × per-rig draw.
    pub fn load_kw(&self) -> f64 {
        f64::from(self.rigs) * self.rig_kw
    }

    fn applies_to(&self, meter_id: &str) -> bool {
        self.meters.is_empty() || self.meters.iter().any(|m| m == meter_id)
    }

    /// Returns the energy the rigs draw within `[start_ms, end_ms)`, in kWh. An interval that
    /// starts before `from_ms` gets only the part after it.
    pub fn energy_kwh(&self, start_ms: i64, end_ms: i64) -> f64 {
        let running_ms = end_ms - start_ms.max(self.from_ms);
        if running_ms <= 0 {
            return 0.0;
        }
        self.load_kw() * running_ms as f64 / MS_PER_HOUR
    }
}

/// Options for turning series into telemetry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetryOptions {
    /// Region in the topic `meters/<region>/<meter_id>/telemetry`.
    pub region: String,
    /// Earliest reading time to publish (data time, Unix ms, inclusive).
    pub from_ms: Option<i64>,
    /// Latest reading time to publish (data time, Unix ms, exclusive).
    pub to_ms: Option<i64>,
    /// Shift added to every published timestamp, in milliseconds.
    pub time_shift_ms: i64,
    /// Mining load to add, if any.
    pub injection: Option<Injection>,
}

/// One MQTT message ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    /// Meter id, also part of the topic.
    pub meter_id: String,
    /// MQTT topic.
    pub topic: String,
    /// JSON payload.
    pub payload: Vec<u8>,
    /// Reading time in Unix milliseconds, after the time shift.
    pub ts_ms: i64,
}

/// The JSON payload, in the field order of the telemetry schema.
#[derive(Serialize)]
struct Payload {
    ts: i64,
    energy_import_kwh: f64,
    power_w: f64,
    seq: u64,
}

/// One reading before serialisation.
#[derive(Debug, Clone, Copy)]
struct MeterReading {
    ts_ms: i64,
    register_kwh: f64,
    power_w: f64,
    seq: u64,
}

/// Returns a plausible starting import register in kWh for a meter, between 1,000.0 and
/// 50,999.9, derived from its id so every run starts at the same value.
pub fn initial_register_kwh(meter_id: &str) -> f64 {
    // FNV-1a, 64 bit: stable across Rust versions, unlike `DefaultHasher`.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in meter_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    1000.0 + (hash % 500_000) as f64 / 10.0
}

/// Builds the telemetry of all series, ordered by reading time and then by the meter's position
/// in `series`.
///
/// Each interval becomes one reading stamped with the interval's end. The register starts at
/// [`initial_register_kwh`] and adds every interval from the start of the series, including
/// those before `from_ms`, so a window shows the same register values as a full replay.
/// Missing intervals publish nothing and add nothing to the register.
///
/// NOTE: the injected load is skipped over missing intervals too, although a real rig would keep
/// drawing, so the register step across a gap is smaller than with a real farm.
pub fn build_telemetry(series: &[MeterSeries], options: &TelemetryOptions) -> TelemetryStream {
    let meters: Vec<MeterReadings> = series
        .iter()
        .map(|s| MeterReadings::new(s, options))
        .collect();

    let mut heap = BinaryHeap::with_capacity(meters.len());
    for (index, meter) in meters.iter().enumerate() {
        if let Some(first) = meter.readings.first() {
            heap.push(Reverse((first.ts_ms, index, 0)));
        }
    }
    TelemetryStream {
        region: options.region.clone(),
        time_shift_ms: options.time_shift_ms,
        meters,
        heap,
    }
}

struct MeterReadings {
    meter_id: String,
    readings: Vec<MeterReading>,
}

impl MeterReadings {
    fn new(series: &MeterSeries, options: &TelemetryOptions) -> Self {
        let interval_ms = series.interval_ms();
        let hours = interval_ms as f64 / MS_PER_HOUR;
        let injection = options
            .injection
            .as_ref()
            .filter(|i| i.applies_to(&series.meter_id));
        let from_ms = options.from_ms.unwrap_or(i64::MIN);
        let to_ms = options.to_ms.unwrap_or(i64::MAX);

        let mut register_kwh = initial_register_kwh(&series.meter_id);
        let mut readings = Vec::new();
        for (seq, interval) in series.intervals.iter().enumerate() {
            let end_ms = interval.start_ms + interval_ms;
            let added_kwh = injection.map_or(0.0, |i| i.energy_kwh(interval.start_ms, end_ms));
            let energy_kwh = interval.energy_kwh + added_kwh;
            register_kwh += energy_kwh;

            if end_ms < from_ms || end_ms >= to_ms {
                continue;
            }
            readings.push(MeterReading {
                ts_ms: end_ms,
                register_kwh: round_to(register_kwh, 1000.0),
                power_w: round_to(energy_kwh / hours * 1000.0, 10.0),
                seq: seq as u64,
            });
        }
        MeterReadings {
            meter_id: series.meter_id.clone(),
            readings,
        }
    }
}

fn round_to(value: f64, steps_per_unit: f64) -> f64 {
    (value * steps_per_unit).round() / steps_per_unit
}

/// Telemetry of several meters merged by reading time, built by [`build_telemetry`].
pub struct TelemetryStream {
    region: String,
    time_shift_ms: i64,
    meters: Vec<MeterReadings>,
    /// Next unread reading per meter: (time, meter index, reading index).
    heap: BinaryHeap<Reverse<(i64, usize, usize)>>,
}

impl TelemetryStream {
    /// Returns the number of readings not yet yielded.
    pub fn remaining(&self) -> usize {
        self.heap
            .iter()
            .map(|Reverse((_, meter, position))| self.meters[*meter].readings.len() - position)
            .sum()
    }
}

impl Iterator for TelemetryStream {
    type Item = Telemetry;

    fn next(&mut self) -> Option<Telemetry> {
        let Reverse((_, meter_index, position)) = self.heap.pop()?;
        let meter = &self.meters[meter_index];
        if let Some(next) = meter.readings.get(position + 1) {
            self.heap
                .push(Reverse((next.ts_ms, meter_index, position + 1)));
        }

        let reading = meter.readings[position];
        let ts_ms = reading.ts_ms + self.time_shift_ms;
        let payload = Payload {
            ts: ts_ms,
            energy_import_kwh: reading.register_kwh,
            power_w: reading.power_w,
            seq: reading.seq,
        };
        Some(Telemetry {
            meter_id: meter.meter_id.clone(),
            topic: format!("meters/{}/{}/telemetry", self.region, meter.meter_id),
            // serde_json writes non-finite floats as null, so serialising integers and floats cannot fail.
            payload: serde_json::to_vec(&payload).unwrap_or_default(),
            ts_ms,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let remaining = self.remaining();
        (remaining, Some(remaining))
    }
}
