//! Per-reading views over the columns of a [`Batch`].
//!
//! The host sends a batch as columns of numbers, which it copies into the sandbox in bulk.
//! These views give a detector one reading, meter or window at a time without copying.

use crate::bindings::gridwatch::detector::types::{Batch, IntervalKind, WindowColumns};

impl Batch {
    /// Returns the number of readings.
    #[inline]
    pub fn len(&self) -> usize {
        self.meter.len()
    }

    /// Returns true when the batch has no readings.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.meter.is_empty()
    }

    /// Returns the reading at `index`.
    ///
    /// # Panics
    /// Panics when `index` is not below [`Batch::len`].
    #[inline]
    pub fn reading(&self, index: usize) -> Reading<'_> {
        assert!(index < self.len(), "reading {index} is out of range");
        Reading { batch: self, index }
    }

    /// Returns the readings in batch order.
    #[inline]
    pub fn readings(&self) -> impl ExactSizeIterator<Item = Reading<'_>> {
        (0..self.len()).map(|index| Reading { batch: self, index })
    }

    /// Returns the number of meters, each counted once however many readings it has.
    #[inline]
    pub fn meter_count(&self) -> usize {
        self.meter_ends.len()
    }

    /// Returns the meter with index `index`, its position in [`Batch::meter_ends`].
    ///
    /// # Panics
    /// Panics when `index` is not below the number of meters.
    #[inline]
    pub fn meter_at(&self, index: usize) -> Meter<'_> {
        assert!(index < self.meter_count(), "meter {index} is out of range");
        Meter { batch: self, index }
    }
}

/// Returns the range of a flat column that belongs to element `index`, from an `-ends` column.
#[inline]
fn span(ends: &[u32], index: usize) -> std::ops::Range<usize> {
    let start = if index == 0 { 0 } else { ends[index - 1] };
    start as usize..ends[index] as usize
}

/// Returns `None` for NaN, the batch's mark of an absent value.
#[inline]
fn present(value: f64) -> Option<f64> {
    (!value.is_nan()).then_some(value)
}

/// One meter of a batch.
#[derive(Debug, Clone, Copy)]
pub struct Meter<'a> {
    batch: &'a Batch,
    index: usize,
}

impl<'a> Meter<'a> {
    /// Returns the meter's index, its position in [`Batch::meter_ends`], which the `host`
    /// functions take.
    #[inline]
    pub fn index(&self) -> u32 {
        self.index as u32
    }

    /// Returns the meter's region.
    #[inline]
    pub fn region(&self) -> &'a str {
        let region = self.batch.meter_region[self.index];
        &self.batch.regions[region as usize]
    }

    /// Returns the meter id within its region.
    #[inline]
    pub fn id(&self) -> &'a str {
        &self.batch.meters[span(&self.batch.meter_ends, self.index)]
    }

    /// Returns this plugin's latest score for the meter from the findings of earlier calls.
    #[inline]
    pub fn last_score(&self) -> Option<f64> {
        present(self.batch.last_score[self.index])
    }
}

/// One reading of a batch and its meter's state after the reading was applied.
#[derive(Debug, Clone, Copy)]
pub struct Reading<'a> {
    batch: &'a Batch,
    index: usize,
}

impl<'a> Reading<'a> {
    /// Returns the reading's index in the batch, which a finding about it carries.
    #[inline]
    pub fn index(&self) -> u32 {
        self.index as u32
    }

    /// Returns the reading's meter.
    #[inline]
    pub fn meter(&self) -> Meter<'a> {
        let meter = self.batch.meter[self.index];
        Meter {
            batch: self.batch,
            index: meter as usize,
        }
    }

    /// Returns the reading time, Unix milliseconds.
    #[inline]
    pub fn timestamp_ms(&self) -> i64 {
        self.batch.timestamp_ms[self.index]
    }

    /// Returns the import register, kWh.
    #[inline]
    pub fn energy_import_kwh(&self) -> f64 {
        self.batch.energy_import_kwh[self.index]
    }

    /// Returns the export register, kWh, when the reading has one.
    #[inline]
    pub fn energy_export_kwh(&self) -> Option<f64> {
        present(self.batch.energy_export_kwh[self.index])
    }

    /// Returns the instantaneous active power, W, when the reading has it.
    #[inline]
    pub fn power_w(&self) -> Option<f64> {
        present(self.batch.power_w[self.index])
    }

    /// Returns the per-phase voltages, V.
    #[inline]
    pub fn voltage_v(&self) -> &'a [f64] {
        &self.batch.voltage_v[span(&self.batch.voltage_ends, self.index)]
    }

    /// Returns the per-phase currents, A.
    #[inline]
    pub fn current_a(&self) -> &'a [f64] {
        &self.batch.current_a[span(&self.batch.current_ends, self.index)]
    }

    /// Returns the meter's event codes, such as `cover_open`.
    #[inline]
    pub fn events(&self) -> &'a [String] {
        &self.batch.events[span(&self.batch.event_ends, self.index)]
    }

    /// Returns the accepted import register after the reading, kWh.
    #[inline]
    pub fn register_kwh(&self) -> f64 {
        self.batch.register_kwh[self.index]
    }

    /// Returns the register step that ends at the reading.
    #[inline]
    pub fn interval(&self) -> Interval {
        let batch = self.batch;
        Interval {
            kind: batch.interval_kind[self.index],
            start_ms: batch.interval_start_ms[self.index],
            end_ms: batch.interval_end_ms[self.index],
            energy_kwh: batch.interval_energy_kwh[self.index],
        }
    }

    /// Returns the unexplained register reversals within the longest window.
    #[inline]
    pub fn register_reversals(&self) -> u32 {
        self.batch.register_reversals[self.index]
    }

    /// Returns the readings that took effect for the meter; duplicates and late readings are
    /// not counted.
    #[inline]
    pub fn meter_readings(&self) -> u64 {
        self.batch.meter_readings[self.index]
    }

    /// Returns the statistics of every window, in the daemon's config order.
    #[inline]
    pub fn windows(&self) -> impl ExactSizeIterator<Item = Window<'a>> + use<'a> {
        let columns = &self.batch.windows;
        span(&self.batch.window_ends, self.index).map(move |row| Window::at(columns, row))
    }

    /// Returns the statistics of the window named `name`, such as `7d`.
    #[inline]
    pub fn window(&self, name: &str) -> Option<Window<'a>> {
        let columns = &self.batch.windows;
        span(&self.batch.window_ends, self.index)
            .find(|&row| columns.names[columns.name[row] as usize] == name)
            .map(|row| Window::at(columns, row))
    }
}

/// Energy between the previous accepted reading and this one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Classification of the register step.
    pub kind: IntervalKind,
    /// Start, Unix milliseconds.
    pub start_ms: i64,
    /// End, Unix milliseconds.
    pub end_ms: i64,
    /// Energy, kWh.
    pub energy_kwh: f64,
}

/// Statistics of one rolling window of hourly energy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window<'a> {
    /// Window name from the daemon config, such as `7d`.
    pub name: &'a str,
    /// Length of the window, hours.
    pub hours: u32,
    /// Hours of the window with readings.
    pub hours_with_data: f64,
    /// Energy over the window, kWh.
    pub energy_kwh: f64,
    /// Mean power, kW.
    pub mean_kw: f64,
    /// Highest hourly mean power, kW.
    pub peak_kw: f64,
    /// Lowest hourly mean power, kW.
    pub base_kw: f64,
    /// Mean over peak power.
    pub load_factor: f64,
    /// Mean power at night over mean power by day.
    pub night_day_ratio: f64,
    /// Coefficient of variation (standard deviation over mean) of hourly power.
    pub cv: f64,
}

impl<'a> Window<'a> {
    #[inline]
    fn at(columns: &'a WindowColumns, row: usize) -> Window<'a> {
        Window {
            name: &columns.names[columns.name[row] as usize],
            hours: columns.hours[row],
            hours_with_data: columns.hours_with_data[row],
            energy_kwh: columns.energy_kwh[row],
            mean_kw: columns.mean_kw[row],
            peak_kw: columns.peak_kw[row],
            base_kw: columns.base_kw[row],
            load_factor: columns.load_factor[row],
            night_day_ratio: columns.night_day_ratio[row],
            cv: columns.cv[row],
        }
    }
}

/// One reading and its meter's state, as [`BatchBuilder::push`] takes it.
///
/// The builder keeps the meter's region and id, of lifetime `'a`, until it is done, and copies
/// the rest, of lifetime `'b`.
#[derive(Debug, Clone, Copy)]
pub struct NewReading<'a, 'b> {
    /// Region of the meter.
    pub region: &'a str,
    /// Meter id within the region.
    pub meter: &'a str,
    /// This plugin's latest score for the meter from the findings of earlier calls.
    pub last_score: Option<f64>,
    /// Reading time, Unix milliseconds.
    pub timestamp_ms: i64,
    /// Import register, kWh.
    pub energy_import_kwh: f64,
    /// Export register, kWh.
    pub energy_export_kwh: Option<f64>,
    /// Instantaneous active power, W.
    pub power_w: Option<f64>,
    /// Per-phase voltages, V.
    pub voltage_v: &'b [f64],
    /// Per-phase currents, A.
    pub current_a: &'b [f64],
    /// Event codes, such as `cover_open`.
    pub events: &'b [String],
    /// Accepted import register after the reading, kWh.
    pub register_kwh: f64,
    /// The register step that ends at the reading.
    pub interval: Interval,
    /// Statistics of every window.
    pub windows: &'b [Window<'b>],
    /// Unexplained register reversals within the longest window.
    pub register_reversals: u32,
    /// Readings that took effect for the meter; duplicates and late readings are not counted.
    pub meter_readings: u64,
}

/// Builds a [`Batch`] one reading at a time, for native tests and benchmarks of detectors.
#[derive(Debug)]
pub struct BatchBuilder<'a> {
    batch: Batch,
    /// Index in `batch.meters` by region and meter id.
    meters: std::collections::HashMap<(&'a str, &'a str), u32, foldhash::fast::FixedState>,
}

impl Default for BatchBuilder<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> BatchBuilder<'a> {
    /// Creates a builder of an empty batch.
    pub fn new() -> BatchBuilder<'a> {
        BatchBuilder {
            batch: empty_batch(),
            meters: std::collections::HashMap::default(),
        }
    }

    /// Appends a reading.
    pub fn push(&mut self, reading: &NewReading<'a, '_>) {
        let meter = self.meter(reading);
        let batch = &mut self.batch;
        batch.meter.push(meter);
        batch.timestamp_ms.push(reading.timestamp_ms);
        batch.energy_import_kwh.push(reading.energy_import_kwh);
        batch
            .energy_export_kwh
            .push(reading.energy_export_kwh.unwrap_or(f64::NAN));
        batch.power_w.push(reading.power_w.unwrap_or(f64::NAN));
        batch.voltage_v.extend_from_slice(reading.voltage_v);
        batch.voltage_ends.push(end(&batch.voltage_v));
        batch.current_a.extend_from_slice(reading.current_a);
        batch.current_ends.push(end(&batch.current_a));
        batch.events.extend_from_slice(reading.events);
        batch.event_ends.push(end(&batch.events));

        batch.register_kwh.push(reading.register_kwh);
        batch.interval_kind.push(reading.interval.kind);
        batch.interval_start_ms.push(reading.interval.start_ms);
        batch.interval_end_ms.push(reading.interval.end_ms);
        batch.interval_energy_kwh.push(reading.interval.energy_kwh);
        batch.register_reversals.push(reading.register_reversals);
        batch.meter_readings.push(reading.meter_readings);
        for window in reading.windows {
            push_window(&mut batch.windows, window);
        }
        batch.window_ends.push(end(&batch.windows.name));
    }

    /// Returns the batch.
    pub fn build(self) -> Batch {
        self.batch
    }

    /// Returns the index of the reading's meter, adding the meter on its first reading.
    fn meter(&mut self, reading: &NewReading<'a, '_>) -> u32 {
        let key = (reading.region, reading.meter);
        if let Some(&index) = self.meters.get(&key) {
            return index;
        }
        let batch = &mut self.batch;
        let region = match batch.regions.iter().position(|r| r == reading.region) {
            Some(position) => position,
            None => {
                batch.regions.push(reading.region.to_owned());
                batch.regions.len() - 1
            }
        };
        let index = end(&batch.meter_ends);
        batch.meters.push_str(reading.meter);
        batch.meter_ends.push(batch.meters.len() as u32);
        batch.meter_region.push(region as u32);
        batch
            .last_score
            .push(reading.last_score.unwrap_or(f64::NAN));
        self.meters.insert(key, index);
        index
    }
}

fn end<T>(column: &[T]) -> u32 {
    column.len() as u32
}

fn push_window(columns: &mut WindowColumns, window: &Window<'_>) {
    let name = match columns.names.iter().position(|n| n == window.name) {
        Some(position) => position,
        None => {
            columns.names.push(window.name.to_owned());
            columns.names.len() - 1
        }
    };
    columns.name.push(name as u32);
    columns.hours.push(window.hours);
    columns.hours_with_data.push(window.hours_with_data);
    columns.energy_kwh.push(window.energy_kwh);
    columns.mean_kw.push(window.mean_kw);
    columns.peak_kw.push(window.peak_kw);
    columns.base_kw.push(window.base_kw);
    columns.load_factor.push(window.load_factor);
    columns.night_day_ratio.push(window.night_day_ratio);
    columns.cv.push(window.cv);
}

fn empty_batch() -> Batch {
    Batch {
        regions: Vec::new(),
        meters: String::new(),
        meter_ends: Vec::new(),
        meter_region: Vec::new(),
        last_score: Vec::new(),
        meter: Vec::new(),
        timestamp_ms: Vec::new(),
        energy_import_kwh: Vec::new(),
        energy_export_kwh: Vec::new(),
        power_w: Vec::new(),
        voltage_v: Vec::new(),
        voltage_ends: Vec::new(),
        current_a: Vec::new(),
        current_ends: Vec::new(),
        events: Vec::new(),
        event_ends: Vec::new(),
        register_kwh: Vec::new(),
        interval_kind: Vec::new(),
        interval_start_ms: Vec::new(),
        interval_end_ms: Vec::new(),
        interval_energy_kwh: Vec::new(),
        register_reversals: Vec::new(),
        meter_readings: Vec::new(),
        windows: WindowColumns {
            names: Vec::new(),
            name: Vec::new(),
            hours: Vec::new(),
            hours_with_data: Vec::new(),
            energy_kwh: Vec::new(),
            mean_kw: Vec::new(),
            peak_kw: Vec::new(),
            base_kw: Vec::new(),
            load_factor: Vec::new(),
            night_day_ratio: Vec::new(),
            cv: Vec::new(),
        },
        window_ends: Vec::new(),
    }
}
