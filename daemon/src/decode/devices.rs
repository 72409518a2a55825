//! Routing of messages to device formats by topic template, and the conversion of what a
//! device sent into a validated [`Reading`].
//!
//! Each `[[decoders]]` entry of the configuration becomes a route. A message goes to the first
//! route whose template matches its topic, and to the gridwatch schema with `mqtt.topic_layout`
//! when none does. Whatever the format, the values end in the gridwatch schema's fields and pass
//! the same validation as native readings.
//!
//! Two formats need the messages of one device in order: Shelly Gen1, whose values arrive one
//! per topic, and Shelly Gen2, whose `em` status (power, voltage, current) is held and joined to
//! the device's next energy reading. [`Decoders::is_ordered`] returns true for the messages that
//! the pipeline must decode on one thread in batch order.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::FixedOffset;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use super::formats::shelly::Gen1Assembler;
use super::formats::tasmota::SmlMapping;
use super::formats::{self, DeviceReading, FormatError, FormatErrorKind};
use super::script::DecoderScripts;
use super::topic::{TopicIds, TopicLayout};
use super::{DEFAULT_REGION, Decoder, KNOWN_FIELDS, Reading, RejectReason, Rejection};
use crate::config::{Config, DecoderConfig, DeviceFormat};

/// Maximum age of held Shelly Gen2 `em` values when the device's next energy reading arrives.
const HOLD_MAX_AGE_MS: i64 = 10 * 60 * 1000;

/// The result of decoding one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// Readings, in the order the message gave them; most messages give one.
    Readings(Vec<Reading>),
    /// The message was rejected.
    Rejected(Rejection),
    /// The message is valid and was held: it becomes part of a later reading of its device.
    Held,
    /// The message is valid but carries no meter reading, such as a Shelly switch status.
    Ignored,
}

impl Decoded {
    /// Returns the outcome's name for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Decoded::Readings(_) => "reading",
            Decoded::Rejected(_) => "rejected",
            Decoded::Held => "held",
            Decoded::Ignored => "ignored",
        }
    }
}

impl From<Result<Reading, Rejection>> for Decoded {
    fn from(result: Result<Reading, Rejection>) -> Self {
        match result {
            Ok(reading) => Decoded::Readings(vec![reading]),
            Err(rejection) => Decoded::Rejected(rejection),
        }
    }
}

/// One configured device format and the topics it decodes.
struct Route {
    name: Arc<str>,
    format: DeviceFormat,
    layout: TopicLayout,
    region: Option<String>,
    regions: HashMap<String, String>,
    utc_offset: FixedOffset,
    sml: SmlMapping,
    channels: usize,
    script: Option<String>,
}

/// Partial messages of one device, kept until they form a reading.
enum Partial {
    Gen1(Box<Gen1Assembler>),
    Gen2(DeviceReading),
}

/// A device's partial messages and when the latest arrived.
struct Held {
    received_ms: i64,
    partial: Partial,
}

/// Every decoder of the configuration, with the state of devices that send partial messages.
pub struct Decoders {
    native: Decoder,
    routes: Vec<Route>,
    scripts: Option<Arc<DecoderScripts>>,
    pending: Mutex<HashMap<(usize, String), Held>>,
    max_pending: usize,
    /// A route has a format that needs its device's messages in order.
    has_ordered: bool,
}

impl From<Decoder> for Decoders {
    /// Decodes every topic with the gridwatch schema only.
    fn from(native: Decoder) -> Self {
        Decoders {
            native,
            routes: Vec::new(),
            scripts: None,
            pending: Mutex::new(HashMap::new()),
            max_pending: 0,
            has_ordered: false,
        }
    }
}

impl Decoders {
    /// Builds the decoders of a configuration. `scripts` contains the Rhai decoder scripts and is
    /// required when a decoder has format `rhai`.
    ///
    /// # Errors
    /// Returns a message naming the decoder when its template, offset or region table is
    /// invalid, or when its script is not loaded.
    pub fn from_config(
        config: &Config,
        scripts: Option<Arc<DecoderScripts>>,
    ) -> Result<Decoders, String> {
        let native = Decoder::new(
            &config.mqtt.topic_layout,
            config.decode.clone(),
            config.mqtt.max_payload_bytes,
        )?;
        let routes = config
            .decoders
            .iter()
            .map(|c| Route::new(c, scripts.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        let has_ordered = routes.iter().any(Route::is_ordered);
        Ok(Decoders {
            native,
            routes,
            scripts,
            pending: Mutex::new(HashMap::new()),
            max_pending: config.decode.max_pending_devices,
            has_ordered,
        })
    }

    /// Builds decoders with one route, for `gridwatch decode test`.
    ///
    /// # Errors
    /// Same as [`Decoders::from_config`].
    pub fn single(
        native: Decoder,
        decoder: &DecoderConfig,
        scripts: Option<Arc<DecoderScripts>>,
    ) -> Result<Decoders, String> {
        let route = Route::new(decoder, scripts.as_deref())?;
        Ok(Decoders {
            has_ordered: route.is_ordered(),
            routes: vec![route],
            scripts,
            max_pending: 1_000,
            ..Decoders::from(native)
        })
    }

    /// Returns true when the message's format needs its device's messages in order, so it must
    /// be decoded on one thread in batch order.
    pub fn is_ordered(&self, topic: &str) -> bool {
        // Most configurations have no Shelly decoder, so no topic needs matching twice.
        if !self.has_ordered {
            return false;
        }
        self.route(topic)
            .is_some_and(|(_, route, _)| route.is_ordered())
    }

    /// Decodes one message. `received_ms` is the time the message arrived, used as the reading
    /// time when the payload carries none; `now_ms` bounds timestamps in the future.
    ///
    /// Returns the decoder's name (`None` for the gridwatch schema on `mqtt.topic_layout`) and
    /// what the message became.
    pub fn decode(
        &self,
        topic: &str,
        payload: &[u8],
        received_ms: i64,
        now_ms: i64,
    ) -> (Option<&str>, Decoded) {
        let Some((index, route, ids)) = self.route(topic) else {
            return (None, self.native.decode(topic, payload, now_ms).into());
        };
        let message = Message {
            topic,
            payload,
            ids,
            received_ms,
            now_ms,
        };
        let decoded = match self.native.check_size(payload) {
            Ok(()) => self.decode_routed(index, route, &message),
            Err(rejection) => Decoded::Rejected(rejection),
        };
        let decoded = match decoded {
            Decoded::Rejected(r) => Decoded::Rejected(Rejection {
                detail: format!("decoder '{}': {}", route.name, r.detail),
                ..r
            }),
            other => other,
        };
        (Some(&route.name), decoded)
    }

    fn route<'t>(&self, topic: &'t str) -> Option<(usize, &Route, TopicIds<'t>)> {
        self.routes
            .iter()
            .enumerate()
            .find_map(|(i, route)| route.layout.match_topic(topic).map(|ids| (i, route, ids)))
    }

    fn decode_routed(&self, index: usize, route: &Route, message: &Message<'_>) -> Decoded {
        let payload = message.payload;
        let parsed = match route.format {
            DeviceFormat::Gridwatch => return self.decode_native(route, message),
            DeviceFormat::Rhai => return self.decode_script(route, message),
            DeviceFormat::ShellyGen1 => return self.decode_gen1(index, route, message),
            DeviceFormat::ShellyGen2 => return self.decode_gen2(index, route, message),
            DeviceFormat::Tasmota => formats::tasmota::parse_sensor(payload, route.utc_offset),
            DeviceFormat::TasmotaSml => {
                formats::tasmota::parse_sml(payload, &route.sml, route.utc_offset)
            }
            DeviceFormat::Dsmr => formats::dsmr::parse_telegram(payload),
            DeviceFormat::Iec62056_21 => formats::iec62056_21::parse_readout(payload),
        };
        match parsed {
            Ok(device) => self.finish(route, message, device).into(),
            Err(error) if is_json(route.format) && super::contains_non_finite_literal(payload) => {
                let detail = format!(
                    "payload contains NaN or Infinity, which JSON does not allow ({error})"
                );
                Decoded::Rejected(Rejection::new(RejectReason::NonFinite, detail))
            }
            Err(error) => Decoded::Rejected(format_rejection(error)),
        }
    }

    fn decode_native(&self, route: &Route, message: &Message<'_>) -> Decoded {
        let map = match super::parse_object(message.payload) {
            Ok(map) => map,
            Err(rejection) => return Decoded::Rejected(rejection),
        };
        self.reading_from_map(route, message, map).into()
    }

    fn decode_script(&self, route: &Route, message: &Message<'_>) -> Decoded {
        let (Some(scripts), Some(script)) = (&self.scripts, &route.script) else {
            let detail = "no decoder script is loaded";
            return Decoded::Rejected(Rejection::new(RejectReason::ScriptFailed, detail));
        };
        let maps = match scripts.run(script, message.topic, message.payload) {
            Ok(maps) => maps,
            Err(rejection) => return Decoded::Rejected(rejection),
        };
        if maps.is_empty() {
            return Decoded::Ignored;
        }
        let mut readings = Vec::with_capacity(maps.len());
        for (i, map) in maps.into_iter().enumerate() {
            match self.reading_from_map(route, message, map) {
                Ok(reading) => readings.push(reading),
                Err(r) if readings.is_empty() && i == 0 => return Decoded::Rejected(r),
                Err(r) => {
                    return Decoded::Rejected(Rejection {
                        detail: format!("reading {} of the message: {}", i + 1, r.detail),
                        ..r
                    });
                }
            }
        }
        Decoded::Readings(readings)
    }

    /// Validates a map of gridwatch schema fields. A `region` field overrides the route's
    /// region, as a Rhai decoder may set it.
    fn reading_from_map(
        &self,
        route: &Route,
        message: &Message<'_>,
        mut map: Map<String, Value>,
    ) -> Result<Reading, Rejection> {
        let region_field = match map.remove("region") {
            None | Some(Value::Null) => None,
            Some(Value::String(region)) => Some(region),
            Some(other) => return Err(super::wrong_type("region", &other, "a string")),
        };
        let meter = match message.ids.meter_id {
            Some(meter) => meter.to_owned(),
            None => match map.get("meter_id") {
                Some(Value::String(meter)) => meter.clone(),
                _ => String::new(),
            },
        };
        let region = region_field.unwrap_or_else(|| route.region_of(&message.ids, &meter));
        self.native
            .reading_from_map(&region, message.ids.meter_id, map, message.now_ms)
    }

    /// Turns a device format's values into a validated reading.
    fn finish(
        &self,
        route: &Route,
        message: &Message<'_>,
        device: DeviceReading,
    ) -> Result<Reading, Rejection> {
        let meter = message
            .ids
            .meter_id
            .map(str::to_owned)
            .or_else(|| device.meter_id.clone())
            .ok_or_else(|| {
                let detail = format!(
                    "field 'meter_id' is missing: the topic template '{}' names no meter and \
                     the payload carries no meter id",
                    route.layout
                );
                Rejection::new(RejectReason::MissingField, detail)
            })?;
        let region = route.region_of(&message.ids, &meter);
        let map = schema_map(device, message.received_ms);
        self.native
            .reading_from_map(&region, Some(&meter), map, message.now_ms)
    }

    fn decode_gen2(&self, index: usize, route: &Route, message: &Message<'_>) -> Decoded {
        let device = match formats::shelly::parse_gen2(message.topic, message.payload) {
            Ok(Some(device)) => device,
            Ok(None) => return Decoded::Ignored,
            Err(_) if super::contains_non_finite_literal(message.payload) => {
                let detail = "payload contains NaN or Infinity, which JSON does not allow";
                return Decoded::Rejected(Rejection::new(RejectReason::NonFinite, detail));
            }
            Err(error) => return Decoded::Rejected(format_rejection(error)),
        };
        let key = device_key(index, message, &device);
        let mut pending = self.pending.lock();
        if device.energy_import_kwh.is_none() {
            if let Err(rejection) = self.make_room(&mut pending, &key, message.received_ms) {
                return Decoded::Rejected(rejection);
            }
            let held = Held {
                received_ms: message.received_ms,
                partial: Partial::Gen2(device),
            };
            pending.insert(key, held);
            return Decoded::Held;
        }
        let held = match pending.remove(&key) {
            Some(Held {
                received_ms,
                partial: Partial::Gen2(values),
            }) if message.received_ms - received_ms <= HOLD_MAX_AGE_MS => Some(values),
            _ => None,
        };
        drop(pending);
        let device = match held {
            Some(values) => join_gen2(device, values),
            None => device,
        };
        self.finish(route, message, device).into()
    }

    fn decode_gen1(&self, index: usize, route: &Route, message: &Message<'_>) -> Decoded {
        let Some(device_id) = message.ids.meter_id else {
            let detail = format!("topic '{}' names no device", message.topic);
            return Decoded::Rejected(Rejection::new(RejectReason::TopicMismatch, detail));
        };
        let rest = route.layout.rest_of(message.topic).unwrap_or_default();
        let Some(quantity) = gen1_value_quantity(rest) else {
            return Decoded::Ignored;
        };
        if let Err(rejection) = check_gen1_energy(quantity, message) {
            return Decoded::Rejected(rejection);
        }
        let topic = format!("shellies/{device_id}/{rest}");
        let key = (index, device_id.to_owned());
        let mut pending = self.pending.lock();
        if let Err(rejection) = self.make_room(&mut pending, &key, message.received_ms) {
            return Decoded::Rejected(rejection);
        }
        if !pending.contains_key(&key) {
            match Gen1Assembler::new(device_id, route.channels) {
                Ok(assembler) => {
                    let partial = Partial::Gen1(Box::new(assembler));
                    let received_ms = message.received_ms;
                    pending.insert(
                        key.clone(),
                        Held {
                            received_ms,
                            partial,
                        },
                    );
                }
                Err(error) => return Decoded::Rejected(format_rejection(error)),
            }
        }
        let Some(held) = pending.get_mut(&key) else {
            return Decoded::Rejected(self.too_many_devices());
        };
        held.received_ms = message.received_ms;
        let Partial::Gen1(assembler) = &mut held.partial else {
            return Decoded::Rejected(self.too_many_devices());
        };
        let pushed = assembler.push(&topic, message.payload);
        if matches!(pushed, Ok(Some(_))) {
            // The period is complete, so the device no longer takes a slot.
            pending.remove(&key);
        }
        drop(pending);
        match pushed {
            Ok(Some(device)) => self.finish(route, message, device).into(),
            Ok(None) => Decoded::Held,
            Err(error) => Decoded::Rejected(format_rejection(error)),
        }
    }

    /// Makes sure `key` can be held: it is held already, or there is room, or room is made by
    /// dropping devices whose last partial message is older than [`HOLD_MAX_AGE_MS`].
    fn make_room(
        &self,
        pending: &mut HashMap<(usize, String), Held>,
        key: &(usize, String),
        received_ms: i64,
    ) -> Result<(), Rejection> {
        if pending.contains_key(key) || pending.len() < self.max_pending {
            return Ok(());
        }
        pending.retain(|_, held| received_ms - held.received_ms <= HOLD_MAX_AGE_MS);
        if pending.len() < self.max_pending {
            return Ok(());
        }
        Err(self.too_many_devices())
    }

    fn too_many_devices(&self) -> Rejection {
        let detail = format!(
            "{} devices already have partial messages held, the limit set by \
             decode.max_pending_devices",
            self.max_pending
        );
        Rejection::new(RejectReason::TooManyDevices, detail)
    }
}

/// A message and the ids its topic carries.
struct Message<'a> {
    topic: &'a str,
    payload: &'a [u8],
    ids: TopicIds<'a>,
    received_ms: i64,
    now_ms: i64,
}

impl Route {
    fn new(config: &DecoderConfig, scripts: Option<&DecoderScripts>) -> Result<Route, String> {
        let name = &config.name;
        let layout =
            TopicLayout::parse(&config.topic).map_err(|e| format!("decoder '{name}': {e}"))?;
        let utc_offset = parse_offset(&config.utc_offset).ok_or_else(|| {
            format!(
                "decoder '{name}': invalid utc_offset '{}'",
                config.utc_offset
            )
        })?;
        let regions = match &config.region_table {
            Some(path) => read_region_table(path).map_err(|e| format!("decoder '{name}': {e}"))?,
            None => HashMap::new(),
        };
        if let Some(script) = &config.script {
            let loaded = scripts.is_some_and(|s| s.contains(script));
            if !loaded {
                return Err(format!(
                    "decoder '{name}': script '{script}' is not in the decoder scripts folder"
                ));
            }
        }
        let optional = |key: &str| (!key.is_empty()).then(|| key.to_owned());
        Ok(Route {
            name: Arc::from(name.as_str()),
            format: config.format,
            layout,
            region: config.region.clone(),
            regions,
            utc_offset,
            sml: SmlMapping {
                meter_key: config.sml.meter.clone(),
                import_kwh: config.sml.import_kwh.clone(),
                export_kwh: optional(&config.sml.export_kwh),
                power_w: optional(&config.sml.power_w),
            },
            channels: config.channels,
            script: config.script.clone(),
        })
    }

    /// Returns true when the format needs its device's messages in order.
    fn is_ordered(&self) -> bool {
        matches!(
            self.format,
            DeviceFormat::ShellyGen1 | DeviceFormat::ShellyGen2
        )
    }

    /// Returns the region: from the topic, else the region table, else the fixed region.
    fn region_of(&self, ids: &TopicIds<'_>, meter: &str) -> String {
        if let Some(region) = ids.region {
            return region.to_owned();
        }
        if let Some(region) = self.regions.get(meter) {
            return region.clone();
        }
        self.region.as_deref().unwrap_or(DEFAULT_REGION).to_owned()
    }
}

/// Parses an offset such as `+01:00` or `-05:30`.
pub(crate) fn parse_offset(text: &str) -> Option<FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(&format!("2000-01-01T00:00:00{text}"))
        .ok()
        .map(|t| *t.offset())
}

/// Reads a region table: one `meter,region` pair per line. Blank lines, lines starting with
/// `#` and a first line `meter,region` are skipped.
///
/// Every bad line is reported: a line without exactly two fields, quotes, a region that is not
/// a valid topic level, or a meter listed twice.
fn read_region_table(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("failed to read region table '{}': {e}", path.display()))?;
    let mut regions = HashMap::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (i == 0 && line == "meter,region") {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let problem = match fields.as_slice() {
            [meter, region] if valid_table_id(meter) && valid_table_id(region) => {
                let previous = regions.insert((*meter).to_owned(), (*region).to_owned());
                previous.map(|_| format!("meter '{meter}' is listed twice"))
            }
            _ => Some(format!(
                "'{line}', expected meter,region without quotes, each 1 to 128 bytes without \
                 '/', '+' or '#'"
            )),
        };
        if let Some(problem) = problem {
            problems.push(format!("line {}: {problem}", i + 1));
        }
    }
    if problems.is_empty() {
        return Ok(regions);
    }
    Err(format!(
        "invalid region table '{}': {}",
        path.display(),
        problems.join("; ")
    ))
}

fn valid_table_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= super::MAX_ID_BYTES && !id.contains(['/', '+', '#', '"', '\''])
}

/// Returns the quantity of a Gen1 emeter value topic, `emeter/<n>/<quantity>`, or `None` for
/// other topics of the device, such as `relay/0`, `online` or `emeter/0/energy`.
fn gen1_value_quantity(rest: &str) -> Option<&str> {
    let mut levels = rest.split('/');
    let (Some("emeter"), Some(_), Some(quantity), None) =
        (levels.next(), levels.next(), levels.next(), levels.next())
    else {
        return None;
    };
    let known = [
        "power",
        "voltage",
        "current",
        "pf",
        "total",
        "total_returned",
    ];
    known.contains(&quantity).then_some(quantity)
}

/// Rejects a negative Gen1 energy total on the message that carries it.
fn check_gen1_energy(quantity: &str, message: &Message<'_>) -> Result<(), Rejection> {
    if quantity != "total" && quantity != "total_returned" {
        return Ok(());
    }
    let text = String::from_utf8_lossy(message.payload);
    match text.trim().parse::<f64>() {
        Ok(value) if value < 0.0 => Err(Rejection::new(
            RejectReason::NegativeValue,
            format!("Shelly Gen1 {quantity}: {value} Wh is negative, expected at least 0"),
        )),
        _ => Ok(()),
    }
}

fn device_key(index: usize, message: &Message<'_>, device: &DeviceReading) -> (usize, String) {
    let device_id = message
        .ids
        .meter_id
        .map(str::to_owned)
        .or_else(|| device.meter_id.clone())
        .unwrap_or_else(|| message.topic.to_owned());
    (index, device_id)
}

/// Joins held `em` values (power, voltage, current) to an energy reading that lacks them.
fn join_gen2(mut energy: DeviceReading, held: DeviceReading) -> DeviceReading {
    energy.power_w = energy.power_w.or(held.power_w);
    energy.power_factor = energy.power_factor.or(held.power_factor);
    if energy.voltage_v.is_empty() {
        energy.voltage_v = held.voltage_v;
    }
    if energy.current_a.is_empty() {
        energy.current_a = held.current_a;
    }
    for (key, value) in held.extra {
        energy.extra.entry(key).or_insert(value);
    }
    energy
}

/// Builds the gridwatch schema's fields from a device reading. Extra keys that collide with a
/// schema field are renamed with a `device_` prefix.
fn schema_map(device: DeviceReading, received_ms: i64) -> Map<String, Value> {
    let mut map = Map::new();
    for (key, value) in device.extra {
        if KNOWN_FIELDS.contains(&key.as_str()) || key == "region" {
            map.insert(format!("device_{key}"), value);
        } else {
            map.insert(key, value);
        }
    }
    map.insert("ts".into(), json!(device.ts_ms.unwrap_or(received_ms)));
    let fields = [
        ("energy_import_kwh", device.energy_import_kwh),
        ("energy_export_kwh", device.energy_export_kwh),
        ("power_w", device.power_w),
        ("power_factor", device.power_factor),
    ];
    for (key, value) in fields {
        if let Some(value) = value {
            map.insert(key.into(), json!(value));
        }
    }
    if !device.voltage_v.is_empty() {
        map.insert("voltage_v".into(), json!(device.voltage_v));
    }
    if !device.current_a.is_empty() {
        map.insert("current_a".into(), json!(device.current_a));
    }
    if !device.events.is_empty() {
        map.insert("events".into(), json!(device.events));
    }
    if let Some(meter) = device.meter_id {
        map.insert("device_id".into(), json!(meter));
    }
    map
}

fn is_json(format: DeviceFormat) -> bool {
    matches!(
        format,
        DeviceFormat::Tasmota | DeviceFormat::TasmotaSml | DeviceFormat::ShellyGen2
    )
}

fn format_rejection(error: FormatError) -> Rejection {
    let reason = match error.reason {
        FormatErrorKind::Malformed => RejectReason::Malformed,
        FormatErrorKind::BadChecksum => RejectReason::BadChecksum,
        FormatErrorKind::Truncated => RejectReason::Truncated,
        FormatErrorKind::MissingField => RejectReason::MissingField,
        FormatErrorKind::BadUnit => RejectReason::BadUnit,
        FormatErrorKind::BadValue => RejectReason::BadValue,
    };
    Rejection::new(reason, error.detail)
}

#[cfg(test)]
mod tests;
