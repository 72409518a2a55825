//! Replays real meter data sets as MQTT telemetry, optionally with an injected mining load.
//!
//! [`load_dataset`] reads a data set into one [`MeterSeries`] per meter, [`build_telemetry`]
//! turns the series into messages ordered by time, and [`run`] publishes them to a broker at a
//! chosen speed-up. The first two need no broker, so tests and benchmarks use them directly.
//!
//! Each interval of the data becomes one reading on `meters/<region>/<meter_id>/telemetry`:
//!
//! ```json
//! {"ts":1585706400000,"energy_import_kwh":23456.789,"power_w":78.0,"seq":0}
//! ```
//!
//! `ts` is the interval's end in Unix milliseconds, `energy_import_kwh` a cumulative register
//! rounded to 0.001 kWh, `power_w` the interval's mean power and `seq` the interval's position in
//! the meter's series.

pub mod dataset;
mod mqtt;
pub mod telemetry;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

pub use dataset::{DatasetKind, IntervalEnergy, MeterFilter, MeterSeries, load_dataset};
pub use telemetry::{
    Injection, Telemetry, TelemetryOptions, TelemetryStream, build_telemetry, initial_register_kwh,
};

use dataset::format_ms;

/// Command-line options of `gridwatch publish`.
#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    /// Data set to replay.
    #[arg(long, value_enum)]
    pub dataset: DatasetKind,

    /// Folder containing the data set's files. Default for eemeter-uk: datasets/eemeter-uk. The
    /// umass data set is not bundled, so it has no default.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Broker URL, mqtt://host:port or mqtts://host:port.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883", value_name = "URL")]
    pub broker: String,

    /// Region in the topic `meters/<region>/<meter_id>/telemetry`.
    #[arg(long, default_value = "south")]
    pub region: String,

    /// Data time per wall-clock time: 3600 replays one hour of data per second, and 0 publishes
    /// as fast as the broker acknowledges.
    #[arg(long, default_value_t = 3600.0, value_name = "FACTOR")]
    pub speedup: f64,

    /// Earliest reading time to publish, RFC 3339 in data time (before --time-shift-days).
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    pub from: Option<DateTime<Utc>>,

    /// Reading time at which to stop (exclusive), RFC 3339 in data time.
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    pub to: Option<DateTime<Utc>>,

    /// Meter ids to publish, comma-separated (uk-0,uk-2 or b1002,b1005). Default: all meters.
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub meters: Vec<String>,

    /// Number of mining rigs to add.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub rigs: u32,

    /// Draw of one rig in kW (an Antminer S19 draws about 3.25 kW).
    #[arg(long, default_value_t = 3.25, value_name = "KW")]
    pub rig_kw: f64,

    /// Meters that get the rigs, comma-separated. Default: every published meter.
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub rig_meters: Vec<String>,

    /// Data time from which the rigs run, RFC 3339. Default: the start of the replay (--from,
    /// or the first interval of the data).
    #[arg(long, value_parser = parse_time, value_name = "TIME")]
    pub rig_from: Option<DateTime<Utc>>,

    /// MQTT quality of service: 0, 1 or 2.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,

    /// MQTT client id.
    #[arg(long, default_value = "gridwatch-publisher")]
    pub client_id: String,

    /// Days added to every published timestamp, to move old data near the present. May be
    /// negative.
    #[arg(
        long,
        default_value_t = 0,
        allow_negative_numbers = true,
        value_name = "DAYS"
    )]
    pub time_shift_days: i64,
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|e| format!("'{text}' is not an RFC 3339 time such as 2013-01-07T00:00:00Z: {e}"))
}

/// Errors of the publisher.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The data set's folder does not exist.
    #[error("data folder '{path}' for data set '{dataset}' not found: {hint}")]
    MissingFolder {
        /// Data set.
        dataset: DatasetKind,
        /// Folder that was looked for.
        path: PathBuf,
        /// Sentence naming the files' source and the option that points to them.
        hint: String,
    },

    /// A file of the data set does not exist.
    #[error("file '{path}' of data set '{dataset}' not found: {hint}")]
    MissingFile {
        /// Data set.
        dataset: DatasetKind,
        /// File that was looked for.
        path: PathBuf,
        /// Sentence naming the files' source and the option that points to them.
        hint: String,
    },

    /// A data file could not be read.
    #[error("failed to read '{path}'", path = path.display())]
    Io {
        /// File being read.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },

    /// A line of a data file could not be parsed.
    #[error("{}:{line}: invalid value '{value}', expected {expected}", path.display())]
    Malformed {
        /// File containing the line.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The offending value or line.
        value: String,
        /// Expected form of the value.
        expected: String,
    },

    /// A meter has too few rows to tell its interval length.
    #[error(
        "meter '{meter_id}' in '{path}' has fewer than two rows, so its interval length is unknown"
    )]
    TooFewRows {
        /// File containing the meter.
        path: PathBuf,
        /// Meter id.
        meter_id: String,
    },

    /// `--meters` or `--rig-meters` names meters the data set does not contain.
    #[error("data set '{dataset}' has no meter {}", meters.join(", "))]
    UnknownMeters {
        /// Data set.
        dataset: DatasetKind,
        /// Ids that were not found.
        meters: Vec<String>,
    },

    /// A command-line value is invalid or the options contradict each other.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// Option name, such as `--speedup`.
        option: &'static str,
        /// Problem with the value and the expected form.
        reason: String,
    },

    /// The selected window contains no readings.
    #[error("no readings between {from} and {to}, but the loaded data spans {first} to {last}")]
    EmptyWindow {
        /// Window start as given, or `start`.
        from: String,
        /// Window end as given, or `end`.
        to: String,
        /// First reading time of the loaded data.
        first: String,
        /// Last reading time of the loaded data.
        last: String,
    },

    /// The broker could not be reached or the connection failed repeatedly.
    #[error("failed to connect to broker '{broker}' after {attempts} attempts")]
    Connection {
        /// Broker URL.
        broker: String,
        /// Attempts made.
        attempts: u32,
        /// Last connection error.
        source: Box<rumqttc::ConnectionError>,
    },

    /// The broker dropped the session while publishes were unacknowledged, so they are lost.
    #[error(
        "broker '{broker}' reconnected without the previous session, so up to {unacknowledged} \
         publishes were lost; check that the broker keeps sessions (persistence) and rerun"
    )]
    SessionLost {
        /// Broker URL.
        broker: String,
        /// Publishes sent but not acknowledged at the time of the reconnect.
        unacknowledged: u64,
    },

    /// The MQTT event loop ended before every publish was acknowledged.
    #[error("MQTT connection to broker '{broker}' ended before every publish was acknowledged")]
    EventLoopStopped {
        /// Broker URL.
        broker: String,
    },

    /// The MQTT client stopped accepting requests.
    #[error("MQTT client for broker '{broker}' stopped")]
    Client {
        /// Broker URL.
        broker: String,
        /// Underlying error.
        source: Box<rumqttc::ClientError>,
    },
}

/// Readings published for one meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeterSummary {
    /// Readings published and acknowledged.
    pub readings: u64,
    /// First published reading time, Unix ms (after the time shift).
    pub first_ts_ms: i64,
    /// Last published reading time, Unix ms (after the time shift).
    pub last_ts_ms: i64,
}

/// Readings published by [`run`], per meter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishSummary {
    /// Per meter id.
    pub meters: BTreeMap<String, MeterSummary>,
}

impl PublishSummary {
    /// Counts one published reading.
    pub fn record(&mut self, meter_id: &str, ts_ms: i64) {
        if let Some(meter) = self.meters.get_mut(meter_id) {
            meter.readings += 1;
            meter.first_ts_ms = meter.first_ts_ms.min(ts_ms);
            meter.last_ts_ms = meter.last_ts_ms.max(ts_ms);
            return;
        }
        let meter = MeterSummary {
            readings: 1,
            first_ts_ms: ts_ms,
            last_ts_ms: ts_ms,
        };
        self.meters.insert(meter_id.to_owned(), meter);
    }

    /// Returns the number of readings over all meters.
    pub fn total_readings(&self) -> u64 {
        self.meters.values().map(|m| m.readings).sum()
    }

    /// Returns the earliest reading time over all meters, Unix ms.
    pub fn first_ts_ms(&self) -> Option<i64> {
        self.meters.values().map(|m| m.first_ts_ms).min()
    }

    /// Returns the latest reading time over all meters, Unix ms.
    pub fn last_ts_ms(&self) -> Option<i64> {
        self.meters.values().map(|m| m.last_ts_ms).max()
    }
}

impl std::fmt::Display for PublishSummary {
    /// Writes one line per meter and a total line, with times in RFC 3339 UTC.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (meter_id, meter) in &self.meters {
            writeln!(
                f,
                "{meter_id}: {} readings from {} to {}",
                meter.readings,
                format_ms(meter.first_ts_ms),
                format_ms(meter.last_ts_ms)
            )?;
        }
        write!(
            f,
            "total: {} readings from {} meters",
            self.total_readings(),
            self.meters.len()
        )
    }
}

/// Loads the data set, builds its telemetry and publishes it to the broker at the requested
/// speed-up. At QoS 1 and 2 it returns once the broker has acknowledged every publish, and at
/// QoS 0 once every publish has been written to the socket.
///
/// # Errors
/// Returns a [`PublishError`] for invalid options, missing or malformed data, an empty window,
/// an unreachable broker or a lost session.
pub async fn run(args: PublishArgs) -> Result<PublishSummary, PublishError> {
    validate(&args)?;
    let data_dir = data_dir(&args)?;
    let filter = MeterFilter {
        meters: args.meters.clone(),
    };
    let series = load_dataset(args.dataset, &data_dir, &filter)?;

    let options = telemetry_options(&args, &series)?;
    let stream = build_telemetry(&series, &options);
    if stream.remaining() == 0 {
        return Err(empty_window(&args, &series));
    }

    tracing::info!(
        dataset = %args.dataset,
        data_dir = %data_dir.display(),
        meters = series.len(),
        readings = stream.remaining(),
        broker = %args.broker,
        region = %args.region,
        speedup = args.speedup,
        "replay starting"
    );
    mqtt::publish_all(stream, &args).await
}

fn validate(args: &PublishArgs) -> Result<(), PublishError> {
    let invalid = |option, reason: String| Err(PublishError::InvalidOption { option, reason });
    if !args.speedup.is_finite() || args.speedup < 0.0 {
        return invalid(
            "--speedup",
            format!("got {}, expected 0 or a positive number", args.speedup),
        );
    }
    if args.region.is_empty() || args.region.contains(['/', '+', '#']) {
        return invalid(
            "--region",
            format!(
                "got '{}', expected a non-empty name without / + #",
                args.region
            ),
        );
    }
    if !args.rig_kw.is_finite() || args.rig_kw <= 0.0 {
        return invalid(
            "--rig-kw",
            format!("got {}, expected a positive number of kW", args.rig_kw),
        );
    }
    if let (Some(from), Some(to)) = (args.from, args.to)
        && from >= to
    {
        return invalid("--to", format!("{to} is not after --from {from}"));
    }
    if args.rigs == 0 && (!args.rig_meters.is_empty() || args.rig_from.is_some()) {
        return invalid(
            "--rigs",
            "--rig-meters or --rig-from given but --rigs is 0".to_owned(),
        );
    }
    if !args.meters.is_empty()
        && let Some(id) = args.rig_meters.iter().find(|id| !args.meters.contains(id))
    {
        return invalid("--rig-meters", format!("meter '{id}' is not in --meters"));
    }
    Ok(())
}

fn data_dir(args: &PublishArgs) -> Result<PathBuf, PublishError> {
    match (&args.data_dir, args.dataset.default_dir()) {
        (Some(dir), _) => Ok(dir.clone()),
        (None, Some(dir)) => Ok(dir),
        (None, None) => Err(PublishError::InvalidOption {
            option: "--data-dir",
            reason: args.dataset.location_hint(),
        }),
    }
}

fn telemetry_options(
    args: &PublishArgs,
    series: &[MeterSeries],
) -> Result<TelemetryOptions, PublishError> {
    let unknown: Vec<String> = args
        .rig_meters
        .iter()
        .filter(|id| !series.iter().any(|s| &s.meter_id == *id))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(PublishError::UnknownMeters {
            dataset: args.dataset,
            meters: unknown,
        });
    }

    let from_ms = args.from.map(|t| t.timestamp_millis());
    let injection = (args.rigs > 0).then(|| Injection {
        rigs: args.rigs,
        rig_kw: args.rig_kw,
        meters: args.rig_meters.clone(),
        from_ms: args
            .rig_from
            .map(|t| t.timestamp_millis())
            .or(from_ms)
            .unwrap_or(i64::MIN),
    });
    Ok(TelemetryOptions {
        region: args.region.clone(),
        from_ms,
        to_ms: args.to.map(|t| t.timestamp_millis()),
        time_shift_ms: args.time_shift_days * 86_400_000,
        injection,
    })
}

fn empty_window(args: &PublishArgs, series: &[MeterSeries]) -> PublishError {
    let first = series
        .iter()
        .filter_map(|s| Some(s.intervals.first()?.start_ms + s.interval_ms()))
        .min();
    let last = series
        .iter()
        .filter_map(|s| Some(s.intervals.last()?.start_ms + s.interval_ms()))
        .max();
    let describe = |time: Option<i64>, absent: &str| time.map_or(absent.to_owned(), format_ms);
    PublishError::EmptyWindow {
        from: describe(args.from.map(|t| t.timestamp_millis()), "the start"),
        to: describe(args.to.map(|t| t.timestamp_millis()), "the end"),
        first: describe(first, "nothing"),
        last: describe(last, "nothing"),
    }
}
