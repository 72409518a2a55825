//! `gridwatch decode test`: shows what each sample message becomes, or why it is rejected.
//!
//! Samples are JSON lines, `{"topic": "...", "payload": ...}`, where the payload is a string
//! sent as is (telegrams, readouts, a head-end's text) or any other JSON value, sent as its
//! compact JSON text.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use super::script::{DecoderScripts, ScriptError};
use super::{Decoded, Decoder, Decoders, Reading};
use crate::config::{Config, DecoderConfig, DeviceFormat, SmlKeys};

/// Command-line options of `gridwatch decode`.
#[derive(Debug, Clone, clap::Args)]
pub struct DecodeArgs {
    #[command(subcommand)]
    command: DecodeCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
enum DecodeCommand {
    /// Decodes sample messages and prints each reading or rejection; exits with 1 when a sample
    /// is rejected.
    Test {
        /// A Rhai decoder script (`NAME.rhai`), the name of a `[[decoders]]` entry of
        /// `--config`, or a format: gridwatch, tasmota, tasmota_sml, shelly_gen2, shelly_gen1,
        /// dsmr, iec62056_21.
        #[arg(long, value_name = "FILE|NAME|FORMAT")]
        decoder: String,
        /// Samples, one JSON object per line: {"topic": "...", "payload": "text" or {...}}.
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// Topic template that gives the meter and region, such as `tele/{meter}/SENSOR`;
        /// default `#`, which matches every topic and names no meter.
        #[arg(long, value_name = "TEMPLATE", default_value = "#")]
        topic: String,
        /// Region of readings whose topic and payload name none.
        #[arg(long)]
        region: Option<String>,
        /// Offset of the device's local clock from UTC, for Tasmota's `Time`.
        #[arg(long, value_name = "OFFSET", default_value = "+00:00")]
        utc_offset: String,
        /// Configuration for validation bounds, sandbox limits and named decoders; built-in
        /// defaults when absent.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// Errors of `gridwatch decode`; a rejected sample is a result, not an error.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The configuration did not load.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The decoder script did not compile.
    #[error(transparent)]
    Script(#[from] ScriptError),
    /// The decoder could not be built from the arguments.
    #[error("invalid decoder: {0}")]
    Decoder(String),
    /// A file could not be read or written.
    #[error("failed to read or write '{}': {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A sample line is not `{"topic": ..., "payload": ...}`.
    #[error("invalid sample at '{}' line {line}: {problem}", path.display())]
    Sample {
        /// The samples file.
        path: PathBuf,
        /// Line number, starting at 1.
        line: usize,
        /// The problem with the line.
        problem: String,
    },
}

/// Runs a `decode` command. Returns `Ok(false)` when a sample was rejected.
///
/// # Errors
/// Returns an error when the configuration, script or samples cannot be read.
pub fn run(args: &DecodeArgs, out: &mut dyn Write) -> Result<bool, ToolError> {
    let DecodeCommand::Test {
        decoder,
        input,
        topic,
        region,
        utc_offset,
        config,
    } = &args.command;
    let config = match config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let options = RouteOptions {
        topic,
        region: region.as_deref(),
        utc_offset,
    };
    let decoders = build(&config, decoder, &options)?;
    let samples = read_samples(input)?;
    let io = |source| ToolError::Io {
        path: PathBuf::from("<stdout>"),
        source,
    };
    let counts = print_samples(&decoders, &samples, out).map_err(io)?;
    writeln!(out, "{counts}").map_err(io)?;
    Ok(counts.rejected == 0)
}

/// The route settings given on the command line.
struct RouteOptions<'a> {
    topic: &'a str,
    region: Option<&'a str>,
    utc_offset: &'a str,
}

fn build(
    config: &Config,
    decoder: &str,
    options: &RouteOptions<'_>,
) -> Result<Decoders, ToolError> {
    let native = Decoder::new(
        &config.mqtt.topic_layout,
        config.decode.clone(),
        config.mqtt.max_payload_bytes,
    )
    .map_err(ToolError::Decoder)?;
    let limits = super::script_limits(config);
    if decoder.ends_with(".rhai") {
        let (scripts, name) = DecoderScripts::load_file(Path::new(decoder), &limits)?;
        let route = route_config(&name, DeviceFormat::Rhai, Some(name.clone()), options);
        return Decoders::single(native, &route, Some(Arc::new(scripts)))
            .map_err(ToolError::Decoder);
    }
    if let Some(named) = config.decoders.iter().find(|d| d.name == decoder) {
        let scripts = match named.format {
            DeviceFormat::Rhai => Some(Arc::new(DecoderScripts::load(
                &config.decode.scripts_dir,
                named.script.as_slice(),
                &limits,
                0,
                Arc::new(crate::metrics::Metrics::new()),
            )?)),
            _ => None,
        };
        return Decoders::single(native, named, scripts).map_err(ToolError::Decoder);
    }
    let format = parse_format(decoder)?;
    if format == DeviceFormat::Rhai {
        return Err(ToolError::Decoder(
            "format 'rhai' needs a script: pass the .rhai file as --decoder".into(),
        ));
    }
    let route = route_config(decoder, format, None, options);
    Decoders::single(native, &route, None).map_err(ToolError::Decoder)
}

fn parse_format(name: &str) -> Result<DeviceFormat, ToolError> {
    let value = toml::Value::String(name.to_owned());
    DeviceFormat::deserialize(value).map_err(|_| {
        ToolError::Decoder(format!(
            "'{name}' is not a .rhai file, a configured decoder or a format; expected one of \
             gridwatch, tasmota, tasmota_sml, shelly_gen2, shelly_gen1, dsmr, iec62056_21"
        ))
    })
}

fn route_config(
    name: &str,
    format: DeviceFormat,
    script: Option<String>,
    options: &RouteOptions<'_>,
) -> DecoderConfig {
    DecoderConfig {
        name: name.to_owned(),
        format,
        topic: options.topic.to_owned(),
        region: options.region.map(str::to_owned),
        region_table: None,
        utc_offset: options.utc_offset.to_owned(),
        channels: 3,
        sml: SmlKeys::default(),
        script,
    }
}

/// One sample message.
struct Sample {
    line: usize,
    topic: String,
    payload: Vec<u8>,
}

fn read_samples(path: &Path) -> Result<Vec<Sample>, ToolError> {
    let file = std::fs::File::open(path).map_err(|source| ToolError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut samples = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| ToolError::Io {
            path: path.to_owned(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let sample = parse_sample(&line).map_err(|problem| ToolError::Sample {
            path: path.to_owned(),
            line: i + 1,
            problem,
        })?;
        samples.push(Sample {
            line: i + 1,
            ..sample
        });
    }
    Ok(samples)
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let topic = value
        .get("topic")
        .and_then(Value::as_str)
        .ok_or("missing string field 'topic'")?;
    let payload = match value.get("payload") {
        Some(Value::String(text)) => text.clone().into_bytes(),
        Some(other) => other.to_string().into_bytes(),
        None => return Err("missing field 'payload'".into()),
    };
    Ok(Sample {
        line: 0,
        topic: topic.to_owned(),
        payload,
    })
}

/// How many samples ended in each outcome.
#[derive(Debug, Default)]
struct Counts {
    samples: usize,
    decoded: usize,
    readings: usize,
    rejected: usize,
    held: usize,
    ignored: usize,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} samples: {} gave {} readings, {} rejected, {} held, {} ignored",
            self.samples, self.decoded, self.readings, self.rejected, self.held, self.ignored
        )
    }
}

fn print_samples(
    decoders: &Decoders,
    samples: &[Sample],
    out: &mut dyn Write,
) -> std::io::Result<Counts> {
    let mut counts = Counts::default();
    let now_ms = chrono::Utc::now().timestamp_millis();
    for sample in samples {
        counts.samples += 1;
        writeln!(out, "line {}: {}", sample.line, sample.topic)?;
        let (_, decoded) = decoders.decode(&sample.topic, &sample.payload, now_ms, now_ms);
        match decoded {
            Decoded::Readings(readings) => {
                counts.decoded += 1;
                counts.readings += readings.len();
                for reading in &readings {
                    writeln!(out, "  reading {}", reading_json(reading))?;
                }
            }
            Decoded::Rejected(rejection) => {
                counts.rejected += 1;
                let reason = rejection.reason.as_str();
                writeln!(out, "  rejected ({reason}): {}", rejection.detail)?;
            }
            Decoded::Held => {
                counts.held += 1;
                writeln!(out, "  held: completes a later reading of its device")?;
            }
            Decoded::Ignored => {
                counts.ignored += 1;
                writeln!(out, "  ignored: carries no meter reading")?;
            }
        }
    }
    Ok(counts)
}

/// Returns a reading as a JSON object in the gridwatch schema, with region and an RFC 3339 time.
pub fn reading_json(reading: &Reading) -> Value {
    let ts = chrono::DateTime::from_timestamp_millis(reading.ts_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let mut object = json!({
        "region": reading.region,
        "meter_id": reading.meter_id,
        "ts": ts,
        "energy_import_kwh": reading.energy_import_kwh,
    });
    let optional = [
        (
            "energy_export_kwh",
            reading.energy_export_kwh.map(|v| json!(v)),
        ),
        ("power_w", reading.power_w.map(|v| json!(v))),
        ("power_factor", reading.power_factor.map(|v| json!(v))),
        ("seq", reading.seq.map(|v| json!(v))),
        (
            "voltage_v",
            (!reading.voltage_v.is_empty()).then(|| json!(reading.voltage_v)),
        ),
        (
            "current_a",
            (!reading.current_a.is_empty()).then(|| json!(reading.current_a)),
        ),
        (
            "events",
            (!reading.events.is_empty()).then(|| json!(reading.events)),
        ),
        (
            "extra",
            (!reading.extra.is_empty()).then(|| json!(reading.extra)),
        ),
    ];
    if let Some(map) = object.as_object_mut() {
        for (key, value) in optional {
            if let Some(value) = value {
                map.insert(key.to_owned(), value);
            }
        }
    }
    object
}
