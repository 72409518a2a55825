//! Loading of the interval data sets into per-meter series.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime};
use flate2::read::GzDecoder;

use super::PublishError;

/// File names of the eemeter UK samples. Sample `n` becomes meter `uk-n`.
const EEMETER_FILES: [&str; 3] = [
    "uk-electricity-hdd-only-hourly-sample-0.csv.gz",
    "uk-electricity-hdd-only-hourly-sample-1.csv.gz",
    "uk-electricity-hdd-only-hourly-sample-2.csv.gz",
];

/// File name of the UMass Smart* microgrid day.
const UMASS_FILE: &str = "umass_microgrid_2011-04-02_long.csv.gz";

/// First line of every Low Carbon London daily file.
const LCL_HEADER: &str =
    "LCLid,day,energy_median,energy_mean,energy_max,energy_count,energy_std,energy_sum,energy_min";
/// Half-hours in a complete Low Carbon London day.
const LCL_HALF_HOURS: &str = "48";
/// File name of the TSrepr consumers.
const TSREPR_FILE: &str = "elec_load_50x672.csv";
/// Values per TSrepr consumer: 14 days of half hours.
const TSREPR_VALUES: usize = 672;
/// Start given to the TSrepr series, which carry no dates: Monday 2012-01-02 00:00 UTC.
const TSREPR_START_MS: i64 = 1_325_462_400_000;

const EEMETER_HEADER: &str = "start,value";
const UMASS_HEADER: &str = "building_id,unix_ts,usage_kw";

/// Interval length of the UMass rows: one minute.
const UMASS_INTERVAL_SECS: i64 = 60;

/// A data set the publisher can replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DatasetKind {
    /// Three UK household meters from the eemeter 4.1.1 package (kWh per hour or half hour),
    /// bundled in `datasets/eemeter-uk`.
    #[value(name = "eemeter-uk")]
    EemeterUk,
    /// 443 buildings of the UMass Smart* microgrid on 2011-04-02 (kW per minute). Not bundled.
    #[value(name = "umass")]
    Umass,
    /// Low Carbon London households (UK Power Networks), daily kWh from `block_*.csv`. Days
    /// with fewer than 48 half-hours are left out as missing. Not bundled.
    #[value(name = "lcl-london-daily")]
    LclLondonDaily,
    /// 50 consumers of the TSrepr R package, 672 half-hour kWh values each. The series carry
    /// no dates, so they start on Monday 2012-01-02 00:00 UTC. Not bundled.
    #[value(name = "tsrepr-30min")]
    Tsrepr,
}

impl DatasetKind {
    /// Returns the name used on the command line and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetKind::EemeterUk => "eemeter-uk",
            DatasetKind::Umass => "umass",
            DatasetKind::LclLondonDaily => "lcl-london-daily",
            DatasetKind::Tsrepr => "tsrepr-30min",
        }
    }

    /// Returns the folder used when `--data-dir` is absent, relative to the working directory.
    /// The UMass data set has none because it is not bundled.
    pub fn default_dir(self) -> Option<PathBuf> {
        match self {
            DatasetKind::EemeterUk => Some(PathBuf::from("datasets/eemeter-uk")),
            DatasetKind::Umass | DatasetKind::LclLondonDaily | DatasetKind::Tsrepr => None,
        }
    }

    /// Returns a sentence telling the operator where the data set's files come from.
    pub(crate) fn location_hint(self) -> String {
        match self {
            DatasetKind::EemeterUk => "the files are bundled in datasets/eemeter-uk of the \
                                       gridwatch repository, so pass that folder with --data-dir"
                .to_owned(),
            DatasetKind::Umass => format!(
                "the UMass microgrid data set is not bundled with gridwatch, so pass the folder \
                 that contains {UMASS_FILE} with --data-dir"
            ),
            DatasetKind::LclLondonDaily => "the Low Carbon London daily data set is not bundled \
                 with gridwatch, so pass the folder that contains its block_*.csv files with \
                 --data-dir"
                .to_owned(),
            DatasetKind::Tsrepr => format!(
                "the TSrepr data set is not bundled with gridwatch, so pass the folder that \
                 contains {TSREPR_FILE} with --data-dir"
            ),
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The energy a meter recorded over one interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntervalEnergy {
    /// Interval start in Unix milliseconds (UTC).
    pub start_ms: i64,
    /// Energy imported during the interval, in kWh.
    pub energy_kwh: f64,
}

/// One meter's interval data, sorted by start time without duplicates. Missing intervals are
/// absent, so consecutive starts may lie more than one interval apart.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterSeries {
    /// Meter id used in the topic: `uk-0` for eemeter sample 0, the building id for UMass.
    pub meter_id: String,
    /// Interval length in seconds: the most common step between consecutive starts.
    pub interval_secs: i64,
    /// The intervals, sorted by `start_ms`.
    pub intervals: Vec<IntervalEnergy>,
}

impl MeterSeries {
    /// Returns the interval length in milliseconds.
    pub fn interval_ms(&self) -> i64 {
        self.interval_secs * 1000
    }
}

/// Meter selection for [`load_dataset`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeterFilter {
    /// Meter ids to keep. Empty keeps every meter.
    pub meters: Vec<String>,
}

impl MeterFilter {
    fn keeps(&self, meter_id: &str) -> bool {
        self.meters.is_empty() || self.meters.iter().any(|m| m == meter_id)
    }
}

/// Loads a data set from `dir` into one series per meter, in the data set's meter order.
///
/// Exact duplicate rows (same start, same value) are dropped, because the eemeter samples repeat
/// the first interval of every billing month.
///
/// # Errors
/// Returns [`PublishError::MissingFolder`] or [`PublishError::MissingFile`] when the data is
/// absent, [`PublishError::Malformed`] naming the file and line for an unreadable row, and
/// [`PublishError::UnknownMeters`] when the filter names meters the data set does not contain.
pub fn load_dataset(
    kind: DatasetKind,
    dir: &Path,
    filter: &MeterFilter,
) -> Result<Vec<MeterSeries>, PublishError> {
    if !dir.is_dir() {
        return Err(PublishError::MissingFolder {
            dataset: kind,
            path: dir.to_owned(),
            hint: kind.location_hint(),
        });
    }

    let series = match kind {
        DatasetKind::EemeterUk => load_eemeter(dir, filter)?,
        DatasetKind::Umass => load_umass(dir, filter)?,
        DatasetKind::LclLondonDaily => load_lcl(dir, filter)?,
        DatasetKind::Tsrepr => load_tsrepr(dir, filter)?,
    };

    let unknown: Vec<String> = filter
        .meters
        .iter()
        .filter(|m| !series.iter().any(|s| &s.meter_id == *m))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(PublishError::UnknownMeters {
            dataset: kind,
            meters: unknown,
        });
    }
    Ok(series)
}

fn load_eemeter(dir: &Path, filter: &MeterFilter) -> Result<Vec<MeterSeries>, PublishError> {
    let mut all = Vec::new();
    for (index, name) in EEMETER_FILES.iter().enumerate() {
        let meter_id = format!("uk-{index}");
        if !filter.keeps(&meter_id) {
            continue;
        }

        let path = dir.join(name);
        let mut rows = RowBuilder::new(&path);
        for_each_line(
            DatasetKind::EemeterUk,
            &path,
            EEMETER_HEADER,
            |line_no, line| {
                let [start, value] = split_fields::<2>(&path, line_no, line, EEMETER_HEADER)?;
                let start_ms = parse_eemeter_time(&path, line_no, start)?;
                let energy_kwh = parse_non_negative(&path, line_no, value, "energy in kWh")?;
                rows.push(line_no, start_ms, energy_kwh)
            },
        )?;
        all.push(rows.finish(meter_id, None)?);
    }
    Ok(all)
}

fn load_umass(dir: &Path, filter: &MeterFilter) -> Result<Vec<MeterSeries>, PublishError> {
    let path = dir.join(UMASS_FILE);
    let mut builders: BTreeMap<String, (usize, RowBuilder)> = BTreeMap::new();
    for_each_line(DatasetKind::Umass, &path, UMASS_HEADER, |line_no, line| {
        let [building, unix_ts, usage_kw] = split_fields::<3>(&path, line_no, line, UMASS_HEADER)?;
        if !filter.keeps(building) {
            return Ok(());
        }

        let start_secs: i64 = unix_ts.parse().map_err(|_| {
            malformed(
                &path,
                line_no,
                unix_ts,
                "a Unix time in seconds such as 1301702400",
            )
        })?;
        let power_kw = parse_non_negative(&path, line_no, usage_kw, "power in kW")?;
        let energy_kwh = power_kw * UMASS_INTERVAL_SECS as f64 / 3600.0;

        let order = builders.len();
        let (_, rows) = builders
            .entry(building.to_owned())
            .or_insert_with(|| (order, RowBuilder::new(&path)));
        rows.push(line_no, start_secs * 1000, energy_kwh)
    })?;

    // Keep the meters in the order of their first row in the file.
    finish_in_order(builders, Some(UMASS_INTERVAL_SECS))
}

/// Loads every `block_*.csv` file of the Low Carbon London daily set, one series per household.
fn load_lcl(dir: &Path, filter: &MeterFilter) -> Result<Vec<MeterSeries>, PublishError> {
    let kind = DatasetKind::LclLondonDaily;
    let io = |source| PublishError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            name.starts_with("block_") && name.ends_with(".csv")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(PublishError::MissingFile {
            dataset: kind,
            path: dir.join("block_*.csv"),
            hint: kind.location_hint(),
        });
    }
    let mut builders: BTreeMap<String, (usize, RowBuilder)> = BTreeMap::new();
    for path in &files {
        for_each_line(kind, path, LCL_HEADER, |line_no, line| {
            let fields = split_fields::<9>(path, line_no, line, LCL_HEADER)?;
            let (household, day, count, sum) = (fields[0], fields[1], fields[5], fields[7]);
            if !filter.keeps(household) || count != LCL_HALF_HOURS {
                return Ok(());
            }
            let start_ms = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")
                .map_err(|_| malformed(path, line_no, day, "a day such as 2012-03-06"))?
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc().timestamp_millis())
                .unwrap_or_default();
            let energy_kwh = parse_non_negative(path, line_no, sum, "energy in kWh")?;
            let order = builders.len();
            let (_, rows) = builders
                .entry(household.to_owned())
                .or_insert_with(|| (order, RowBuilder::new(path)));
            rows.push(line_no, start_ms, energy_kwh)
        })?;
    }
    finish_in_order(builders, Some(86_400))
}

/// Loads the TSrepr consumers: one row of 672 half-hour values each, named `ts-1` to `ts-50`.
fn load_tsrepr(dir: &Path, filter: &MeterFilter) -> Result<Vec<MeterSeries>, PublishError> {
    let path = dir.join(TSREPR_FILE);
    let header: String = (1..=TSREPR_VALUES)
        .map(|i| format!("V{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut all = Vec::new();
    for_each_line(DatasetKind::Tsrepr, &path, &header, |line_no, line| {
        let meter_id = format!("ts-{}", line_no - 1);
        if !filter.keeps(&meter_id) {
            return Ok(());
        }
        let values = split_fields::<TSREPR_VALUES>(&path, line_no, line, "V1,...,V672")?;
        let mut rows = RowBuilder::new(&path);
        for (i, value) in values.iter().enumerate() {
            let energy_kwh = parse_non_negative(&path, line_no, value, "energy in kWh")?;
            rows.push(line_no, TSREPR_START_MS + i as i64 * 1_800_000, energy_kwh)?;
        }
        all.push(rows.finish(meter_id, Some(1_800))?);
        Ok(())
    })?;
    Ok(all)
}

/// Finishes per-meter builders in the order of each meter's first row.
fn finish_in_order(
    builders: BTreeMap<String, (usize, RowBuilder)>,
    interval_secs: Option<i64>,
) -> Result<Vec<MeterSeries>, PublishError> {
    let mut ordered: Vec<(usize, String, RowBuilder)> = builders
        .into_iter()
        .map(|(id, (order, rows))| (order, id, rows))
        .collect();
    ordered.sort_by_key(|(order, _, _)| *order);
    ordered
        .into_iter()
        .map(|(_, id, rows)| rows.finish(id, interval_secs))
        .collect()
}

/// Opens a CSV file, gzip-compressed when its name ends in `.gz`, checks its header and calls `on_row` with each later line and its
/// 1-based line number.
fn for_each_line(
    kind: DatasetKind,
    path: &Path,
    header: &str,
    mut on_row: impl FnMut(u64, &str) -> Result<(), PublishError>,
) -> Result<(), PublishError> {
    let file = File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            PublishError::MissingFile {
                dataset: kind,
                path: path.to_owned(),
                hint: kind.location_hint(),
            }
        } else {
            PublishError::Io {
                path: path.to_owned(),
                source,
            }
        }
    })?;

    let reader: Box<dyn BufRead> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(BufReader::new(GzDecoder::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    for (index, line) in reader.lines().enumerate() {
        let line_no = index as u64 + 1;
        let line = line.map_err(|source| PublishError::Io {
            path: path.to_owned(),
            source,
        })?;
        let line = line.trim_end_matches('\r');
        if line_no == 1 {
            if line != header {
                return Err(malformed(path, 1, line, &format!("the header '{header}'")));
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        on_row(line_no, line)?;
    }
    Ok(())
}

fn split_fields<'a, const N: usize>(
    path: &Path,
    line_no: u64,
    line: &'a str,
    header: &str,
) -> Result<[&'a str; N], PublishError> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    fields
        .try_into()
        .map_err(|_| malformed(path, line_no, line, &format!("{N} fields as in '{header}'")))
}

/// Parses `2020-04-01 01:00:00+00:00`, or `2012-10-12 00:30:00` read as UTC.
fn parse_eemeter_time(path: &Path, line_no: u64, text: &str) -> Result<i64, PublishError> {
    if let Ok(time) = DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%:z") {
        return Ok(time.timestamp_millis());
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .map(|time| time.and_utc().timestamp_millis())
        .map_err(|_| {
            malformed(
                path,
                line_no,
                text,
                "a time such as 2020-04-01 01:00:00+00:00 (UTC)",
            )
        })
}

fn parse_non_negative(
    path: &Path,
    line_no: u64,
    text: &str,
    what: &str,
) -> Result<f64, PublishError> {
    match text.parse::<f64>() {
        // Adding 0.0 turns the data set's `-0.0` into 0.0.
        Ok(value) if value.is_finite() && value >= 0.0 => Ok(value + 0.0),
        _ => Err(malformed(
            path,
            line_no,
            text,
            &format!("a non-negative {what}"),
        )),
    }
}

fn malformed(path: &Path, line: u64, value: &str, expected: &str) -> PublishError {
    PublishError::Malformed {
        path: path.to_owned(),
        line,
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
}

/// Collects the rows of one meter, checking order and dropping exact duplicates.
struct RowBuilder {
    path: PathBuf,
    intervals: Vec<IntervalEnergy>,
    duplicates: u64,
}

impl RowBuilder {
    fn new(path: &Path) -> Self {
        RowBuilder {
            path: path.to_owned(),
            intervals: Vec::new(),
            duplicates: 0,
        }
    }

    fn push(&mut self, line_no: u64, start_ms: i64, energy_kwh: f64) -> Result<(), PublishError> {
        let row = IntervalEnergy {
            start_ms,
            energy_kwh,
        };
        let Some(last) = self.intervals.last() else {
            self.intervals.push(row);
            return Ok(());
        };

        if start_ms > last.start_ms {
            self.intervals.push(row);
        } else if *last == row {
            self.duplicates += 1;
        } else {
            let expected = format!(
                "a start time after {} (rows must be sorted by time, a repeated time must repeat \
                 its value)",
                format_ms(last.start_ms)
            );
            return Err(malformed(
                &self.path,
                line_no,
                &format_ms(start_ms),
                &expected,
            ));
        }
        Ok(())
    }

    fn finish(
        self,
        meter_id: String,
        interval_secs: Option<i64>,
    ) -> Result<MeterSeries, PublishError> {
        let interval_secs = match interval_secs.or_else(|| most_common_step_secs(&self.intervals)) {
            Some(secs) => secs,
            None => {
                return Err(PublishError::TooFewRows {
                    path: self.path,
                    meter_id,
                });
            }
        };
        if self.duplicates > 0 {
            tracing::debug!(
                meter = %meter_id,
                path = %self.path.display(),
                duplicates = self.duplicates,
                "dropped repeated rows"
            );
        }
        Ok(MeterSeries {
            meter_id,
            interval_secs,
            intervals: self.intervals,
        })
    }
}

/// Returns the most common step between consecutive starts, the shortest on a tie.
fn most_common_step_secs(intervals: &[IntervalEnergy]) -> Option<i64> {
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for pair in intervals.windows(2) {
        *counts
            .entry((pair[1].start_ms - pair[0].start_ms) / 1000)
            .or_default() += 1;
    }
    let max = counts.values().copied().max()?;
    counts
        .into_iter()
        .find(|(_, count)| *count == max)
        .map(|(step, _)| step)
}

/// Formats Unix milliseconds as RFC 3339 UTC, for messages.
pub(crate) fn format_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}
