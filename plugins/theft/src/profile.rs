//! A meter's compact consumption profile: the current UTC day hour by hour, a ring of earlier
//! day summaries, the current run of zero hours and when each check last raised a finding.

/// Milliseconds in an hour.
pub const HOUR_MS: i64 = 3_600_000;
/// Milliseconds in a day.
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Maximum length of an interval whose energy is placed in its hours, ms. Longer intervals, such as daily
/// readings, count only towards their days' totals. One minute of slack allows for late
/// reading clocks.
const MAX_RESOLVED_MS: i64 = HOUR_MS + 60_000;

/// Share of an hour that readings of at most an hour must cover for the hour to count as
/// resolved.
pub const MIN_HOUR_COVERAGE: f32 = 0.9;

/// Resolved hours a day needs before its coefficient of variation is computed.
const MIN_VARIATION_HOURS: usize = 12;

/// Export register step that counts as exported energy, kWh. It lies above the rounding of
/// registers to 1 Wh.
const MIN_EXPORT_KWH: f64 = 0.002;

/// Summary of one complete UTC day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Day {
    /// Unix day, UTC.
    pub day: i64,
    /// Imported energy, kWh.
    pub energy_kwh: f32,
    /// Hours covered by readings of any length.
    pub covered_hours: f32,
    /// Hours covered by readings of at most an hour.
    pub resolved_hours: u8,
    /// Coefficient of variation of the resolved hours' energy, or NaN when fewer than 12
    /// hours are resolved or the day used no energy.
    pub variation: f32,
    /// Whether the export register advanced during the day.
    pub exported: bool,
}

/// One hour of the current day, handed to the checks once a later reading has passed it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hour {
    /// Start of the hour, Unix milliseconds.
    pub start_ms: i64,
    /// Imported energy from readings of at most an hour, kWh.
    pub energy_kwh: f32,
    /// Share of the hour covered by readings of at most an hour, 0 to 1.
    pub covered: f32,
    /// Whether the export register advanced during the hour.
    pub exported: bool,
}

/// Hours and days that a reading completed, oldest first.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Completed {
    /// Completed hours of the days the reading touched.
    pub hours: Vec<Hour>,
    /// Completed days.
    pub days: Vec<Day>,
}

/// Check that raised a finding, usable as an index into [`Profile::alerted_ms`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Consumption stopped for several hours while the meter had load before.
    ZeroRun = 0,
    /// The daily profile lost its variation.
    FlatProfile = 1,
    /// Daily consumption fell well below the meter's own baseline.
    LevelDrop = 2,
}

impl Check {
    /// Returns the name used in evidence and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Check::ZeroRun => "zero_run",
            Check::FlatProfile => "flat_profile",
            Check::LevelDrop => "level_drop",
        }
    }
}

/// The state the detector keeps per meter.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// End of the newest interval added, Unix milliseconds.
    pub last_end_ms: Option<i64>,
    /// Export register of the newest reading that had one, kWh.
    pub last_export_kwh: Option<f64>,
    /// Unix day being filled.
    pub day: Option<i64>,
    /// Start of the first hour of the current day not yet completed, Unix milliseconds.
    pub next_hour_ms: i64,
    /// Energy of each hour of the current day, kWh.
    pub hour_kwh: [f32; 24],
    /// Share of each hour of the current day covered by readings of at most an hour.
    pub hour_covered: [f32; 24],
    /// Hours of the current day with exported energy, one bit per hour.
    pub hour_exported: u32,
    /// Energy of the current day from readings of any length, kWh.
    pub day_kwh: f32,
    /// Hours of the current day covered by readings of any length.
    pub day_covered_hours: f32,
    /// Whether the export register advanced during the current day.
    pub day_exported: bool,
    /// Zero hours in a row up to the newest completed hour.
    pub zero_hours: u32,
    /// Start of the current zero run, Unix milliseconds.
    pub zero_start_ms: i64,
    /// Mean energy of the meter's resolved hours over about the last day, kWh: an exponential
    /// moving average that starts at 0 and gives each new hour a weight of 1/24.
    pub load_kwh: f32,
    /// Mean hourly energy before the current zero run, kWh.
    pub load_before_zero_kwh: f32,
    /// Hours of the day (UTC) of the newest zero run that qualified, one bit per hour.
    pub pattern_mask: u32,
    /// End of the newest zero run that qualified, Unix milliseconds.
    pub pattern_end_ms: i64,
    /// Qualifying zero runs in a row, each overlapping the previous one's hours of the day.
    pub pattern_days: u32,
    /// Earlier complete days, oldest first.
    pub days: Vec<Day>,
    /// Time of the newest finding of each [`Check`], Unix milliseconds.
    pub alerted_ms: [Option<i64>; 3],
}

impl Default for Profile {
    fn default() -> Profile {
        Profile {
            last_end_ms: None,
            last_export_kwh: None,
            day: None,
            next_hour_ms: 0,
            hour_kwh: [0.0; 24],
            hour_covered: [0.0; 24],
            hour_exported: 0,
            day_kwh: 0.0,
            day_covered_hours: 0.0,
            day_exported: false,
            zero_hours: 0,
            zero_start_ms: 0,
            load_kwh: 0.0,
            load_before_zero_kwh: 0.0,
            pattern_mask: 0,
            pattern_end_ms: 0,
            pattern_days: 0,
            days: Vec::new(),
            alerted_ms: [None; 3],
        }
    }
}

impl Profile {
    /// Adds the energy of one interval and returns the hours and days it completed. Days are
    /// kept up to `max_days`. Intervals that end at or before the newest one are ignored.
    pub fn add(
        &mut self,
        start_ms: i64,
        end_ms: i64,
        energy_kwh: f64,
        export_kwh: Option<f64>,
        max_days: usize,
    ) -> Completed {
        let mut completed = Completed::default();
        if end_ms <= start_ms || self.last_end_ms.is_some_and(|last| end_ms <= last) {
            return completed;
        }
        let start_ms = self.last_end_ms.map_or(start_ms, |last| start_ms.max(last));
        self.last_end_ms = Some(end_ms);
        let exported = self.note_export(export_kwh);

        let resolved = end_ms - start_ms <= MAX_RESOLVED_MS;
        let step_ms = if resolved { HOUR_MS } else { DAY_MS };
        let total_ms = (end_ms - start_ms) as f64;
        let mut from_ms = start_ms;
        while from_ms < end_ms {
            let to_ms = ((from_ms / step_ms + 1) * step_ms).min(end_ms);
            let share = (to_ms - from_ms) as f64 / total_ms;
            let segment = Segment {
                start_ms: from_ms,
                hours: (to_ms - from_ms) as f32 / HOUR_MS as f32,
                energy_kwh: (energy_kwh * share) as f32,
                resolved,
                exported,
            };
            self.add_segment(&segment, max_days, &mut completed);
            from_ms = to_ms;
        }
        completed
    }

    /// Stores the export register and returns whether it advanced.
    fn note_export(&mut self, export_kwh: Option<f64>) -> bool {
        let Some(export_kwh) = export_kwh.filter(|kwh| kwh.is_finite()) else {
            return false;
        };
        let advanced = self
            .last_export_kwh
            .is_some_and(|last| export_kwh - last >= MIN_EXPORT_KWH);
        self.last_export_kwh = Some(export_kwh);
        advanced
    }

    fn add_segment(&mut self, segment: &Segment, max_days: usize, completed: &mut Completed) {
        let day = segment.start_ms.div_euclid(DAY_MS);
        match self.day {
            Some(current) if day < current => return,
            Some(current) if day > current => {
                self.complete_hours_until((current + 1) * DAY_MS, completed);
                self.close_day(current, max_days, completed);
                self.open_day(day);
            }
            Some(_) => {}
            None => self.open_day(day),
        }
        let hour_start_ms = segment.start_ms.div_euclid(HOUR_MS) * HOUR_MS;
        self.complete_hours_until(hour_start_ms, completed);

        self.day_kwh += segment.energy_kwh;
        self.day_covered_hours += segment.hours;
        self.day_exported |= segment.exported;
        if segment.resolved {
            let hour = ((segment.start_ms - day * DAY_MS) / HOUR_MS) as usize;
            self.hour_kwh[hour] += segment.energy_kwh;
            self.hour_covered[hour] += segment.hours;
            if segment.exported {
                self.hour_exported |= 1 << hour;
            }
        }
    }

    fn open_day(&mut self, day: i64) {
        self.day = Some(day);
        self.next_hour_ms = day * DAY_MS;
        self.hour_kwh = [0.0; 24];
        self.hour_covered = [0.0; 24];
        self.hour_exported = 0;
        self.day_kwh = 0.0;
        self.day_covered_hours = 0.0;
        self.day_exported = false;
    }

    /// Hands over the current day's hours that start before `until_ms`.
    fn complete_hours_until(&mut self, until_ms: i64, completed: &mut Completed) {
        let Some(day) = self.day else { return };
        let day_start_ms = day * DAY_MS;
        let until_ms = until_ms.min(day_start_ms + DAY_MS);
        while self.next_hour_ms < until_ms {
            let hour = ((self.next_hour_ms - day_start_ms) / HOUR_MS) as usize;
            completed.hours.push(Hour {
                start_ms: self.next_hour_ms,
                energy_kwh: self.hour_kwh[hour],
                covered: self.hour_covered[hour].min(1.0),
                exported: self.hour_exported & (1 << hour) != 0,
            });
            self.next_hour_ms += HOUR_MS;
        }
    }

    fn close_day(&mut self, day: i64, max_days: usize, completed: &mut Completed) {
        let resolved: Vec<f32> = (0..24)
            .filter(|&h| self.hour_covered[h] >= MIN_HOUR_COVERAGE)
            .map(|h| self.hour_kwh[h])
            .collect();
        let summary = Day {
            day,
            energy_kwh: self.day_kwh,
            covered_hours: self.day_covered_hours,
            resolved_hours: resolved.len() as u8,
            variation: variation(&resolved),
            exported: self.day_exported,
        };
        self.days.push(summary);
        let excess = self.days.len().saturating_sub(max_days);
        self.days.drain(..excess);
        completed.days.push(summary);
    }
}

/// Part of an interval that lies in one hour (resolved) or one day.
struct Segment {
    start_ms: i64,
    hours: f32,
    energy_kwh: f32,
    resolved: bool,
    exported: bool,
}

/// Returns the coefficient of variation (standard deviation over mean) of hourly energies.
fn variation(hours: &[f32]) -> f32 {
    if hours.len() < MIN_VARIATION_HOURS {
        return f32::NAN;
    }
    let n = hours.len() as f32;
    let mean = hours.iter().sum::<f32>() / n;
    if mean <= 0.0 {
        return f32::NAN;
    }
    let square_sum: f32 = hours.iter().map(|h| (h - mean) * (h - mean)).sum();
    (square_sum / n).sqrt() / mean
}

/// Version byte at the start of the encoded state.
const VERSION: u8 = 1;
const DAY_BYTES: usize = 8 + 4 + 4 + 1 + 4 + 1;

impl Profile {
    /// Encodes the profile for plugin state.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(300 + self.days.len() * DAY_BYTES);
        out.push(VERSION);
        put_i64(&mut out, self.last_end_ms.unwrap_or(i64::MIN));
        out.extend_from_slice(&self.last_export_kwh.unwrap_or(f64::NAN).to_le_bytes());
        put_i64(&mut out, self.day.unwrap_or(i64::MIN));
        put_i64(&mut out, self.next_hour_ms);

        // The current day, hour by hour.
        for value in self.hour_kwh.iter().chain(&self.hour_covered) {
            out.extend_from_slice(&value.to_le_bytes());
        }
        out.extend_from_slice(&self.hour_exported.to_le_bytes());
        out.extend_from_slice(&self.day_kwh.to_le_bytes());
        out.extend_from_slice(&self.day_covered_hours.to_le_bytes());
        out.push(u8::from(self.day_exported));

        // The zero run and recurring-pattern trackers.
        out.extend_from_slice(&self.zero_hours.to_le_bytes());
        put_i64(&mut out, self.zero_start_ms);
        out.extend_from_slice(&self.load_kwh.to_le_bytes());
        out.extend_from_slice(&self.load_before_zero_kwh.to_le_bytes());
        out.extend_from_slice(&self.pattern_mask.to_le_bytes());
        put_i64(&mut out, self.pattern_end_ms);
        out.extend_from_slice(&self.pattern_days.to_le_bytes());
        for alerted in self.alerted_ms {
            put_i64(&mut out, alerted.unwrap_or(i64::MIN));
        }

        // Earlier days' summaries, with their count first.
        out.extend_from_slice(&(self.days.len() as u32).to_le_bytes());
        for day in &self.days {
            put_i64(&mut out, day.day);
            out.extend_from_slice(&day.energy_kwh.to_le_bytes());
            out.extend_from_slice(&day.covered_hours.to_le_bytes());
            out.push(day.resolved_hours);
            out.extend_from_slice(&day.variation.to_le_bytes());
            out.push(u8::from(day.exported));
        }
        out
    }

    /// Decodes a profile written by [`Profile::encode`], or returns `None` for bytes of
    /// another version or length.
    pub fn decode(bytes: &[u8]) -> Option<Profile> {
        let mut reader = Reader { bytes, at: 0 };
        if reader.u8()? != VERSION {
            return None;
        }
        let optional = |value: i64| (value != i64::MIN).then_some(value);
        let mut profile = Profile {
            last_end_ms: optional(reader.i64()?),
            last_export_kwh: Some(reader.f64()?).filter(|kwh| !kwh.is_nan()),
            day: optional(reader.i64()?),
            next_hour_ms: reader.i64()?,
            ..Profile::default()
        };

        for value in profile.hour_kwh.iter_mut() {
            *value = reader.f32()?;
        }
        for value in profile.hour_covered.iter_mut() {
            *value = reader.f32()?;
        }
        profile.hour_exported = reader.u32()?;
        profile.day_kwh = reader.f32()?;
        profile.day_covered_hours = reader.f32()?;
        profile.day_exported = reader.u8()? != 0;

        profile.zero_hours = reader.u32()?;
        profile.zero_start_ms = reader.i64()?;
        profile.load_kwh = reader.f32()?;
        profile.load_before_zero_kwh = reader.f32()?;
        profile.pattern_mask = reader.u32()?;
        profile.pattern_end_ms = reader.i64()?;
        profile.pattern_days = reader.u32()?;
        for alerted in profile.alerted_ms.iter_mut() {
            *alerted = optional(reader.i64()?);
        }

        let days = reader.u32()? as usize;
        if reader.bytes.len() - reader.at != days * DAY_BYTES {
            return None;
        }
        profile.days = (0..days)
            .map(|_| reader.day())
            .collect::<Option<Vec<Day>>>()?;
        Some(profile)
    }
}

fn put_i64(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// Reads little-endian values from encoded state.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = self.bytes.get(self.at..self.at + N)?;
        self.at += N;
        bytes.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[byte]| byte)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_le_bytes)
    }

    fn f32(&mut self) -> Option<f32> {
        self.take().map(f32::from_le_bytes)
    }

    fn f64(&mut self) -> Option<f64> {
        self.take().map(f64::from_le_bytes)
    }

    fn day(&mut self) -> Option<Day> {
        Some(Day {
            day: self.i64()?,
            energy_kwh: self.f32()?,
            covered_hours: self.f32()?,
            resolved_hours: self.u8()?,
            variation: self.f32()?,
            exported: self.u8()? != 0,
        })
    }
}
