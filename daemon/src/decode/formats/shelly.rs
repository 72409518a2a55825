//! Shelly energy meters over MQTT: Gen2 devices such as the Pro 3EM, and the Gen1 3EM.
//!
//! Gen2 devices publish JSON objects with the keys of `EM.GetStatus` and `EMData.GetStatus`
//! (firmware 1.x) on `<prefix>/status/em:0` and `<prefix>/status/emdata:0`, and `NotifyStatus`
//! RPC notifications on `<prefix>/events/rpc`:
//!
//! | key | field | source unit | stored as |
//! |---|---|---|---|
//! | `a_voltage`, `b_voltage`, `c_voltage` | `voltage_v` | V | V |
//! | `a_current`, `b_current`, `c_current` | `current_a` | A | A |
//! | `total_act_power` | `power_w` | W | W |
//! | `a_act_power` .. | `extra.power_l1_w` .. | W | W |
//! | `total_act_power` / `total_aprt_power` | `power_factor` | ratio | ratio |
//! | `total_aprt_power`, `a_aprt_power` .. | `extra.apparent_power_va`, `extra.apparent_power_l1_va` .. | VA | VA |
//! | `a_pf` .. | `extra.power_factor_l1` .. | ratio | ratio |
//! | `a_freq` .. | `extra.frequency_l1_hz` .. | Hz | Hz |
//! | `total_current`, `n_current` | `extra.current_total_a`, `extra.current_n_a` | A | A |
//! | `total_act`, `total_act_ret` | `energy_import_kwh`, `energy_export_kwh` | Wh | kWh |
//! | `a_total_act_energy`, `a_total_act_ret_energy` .. | `extra.energy_import_l1_kwh`, `extra.energy_export_l1_kwh` .. | Wh | kWh |
//! | `NotifyStatus` `src`, `params.ts` | `meter_id`, `ts_ms` | text, Unix s | text, Unix ms |
//!
//! Single-phase Gen2 meters (Pro EM, EM Gen3) publish channel 0 as `em1:0` and `em1data:0`:
//!
//! | key | field | source unit | stored as |
//! |---|---|---|---|
//! | `em1` `act_power`, `voltage`, `current`, `pf` | `power_w`, `voltage_v`, `current_a`, `power_factor` | W, V, A, ratio | same |
//! | `em1` `aprt_power`, `freq` | `extra.apparent_power_va`, `extra.frequency_hz` | VA, Hz | same |
//! | `em1data` `total_act_energy`, `total_act_ret_energy` | `energy_import_kwh`, `energy_export_kwh` | Wh | kWh |
//! | other keys | `extra[key]` | as sent | as sent |
//!
//! A key whose value is `null`, as `n_current` is on devices without a neutral sensor, is
//! skipped. The Gen1 3EM publishes one bare number per topic; see [`Gen1Assembler`].

use serde_json::{Map, Value, json};

use super::{DeviceReading, FormatError, FormatErrorKind};

const PHASES: [&str; 3] = ["a", "b", "c"];

/// Parses a Gen2 message by its topic.
///
/// Returns `Ok(None)` for topics and RPC notifications that carry no energy meter data, such
/// as `<prefix>/status/switch:0` or `NotifyEvent`.
///
/// # Errors
/// Same as [`parse_em_status`], [`parse_emdata_status`] and [`parse_rpc_event`].
pub fn parse_gen2(topic: &str, payload: &[u8]) -> Result<Option<DeviceReading>, FormatError> {
    let Some((_, component)) = topic.rsplit_once('/') else {
        return Ok(None);
    };
    if component.starts_with("em:") && topic.ends_with(&format!("/status/{component}")) {
        return parse_em_status(payload).map(Some);
    }
    if component.starts_with("emdata:") && topic.ends_with(&format!("/status/{component}")) {
        return parse_emdata_status(payload).map(Some);
    }
    // A single-phase meter's second channel measures another circuit, so only channel 0 is
    // read as the meter.
    if component == "em1:0" && topic.ends_with("/status/em1:0") {
        return parse_em1_status(payload).map(Some);
    }
    if component == "em1data:0" && topic.ends_with("/status/em1data:0") {
        return parse_em1data_status(payload).map(Some);
    }
    if topic.ends_with("/events/rpc") {
        return parse_rpc_event(payload);
    }
    Ok(None)
}

/// Parses the `em1:<id>` status of a single-phase meter (Pro EM, EM Gen3): power, voltage,
/// current, power factor and frequency of one channel.
///
/// # Errors
/// `Malformed` when the payload is not a JSON object, `MissingField` when `act_power` is
/// absent, and `BadValue` when a known key is not a number.
pub fn parse_em1_status(payload: &[u8]) -> Result<DeviceReading, FormatError> {
    let status = parse_object(payload)?;
    require(&status, "act_power", "em1")?;
    let mut reading = DeviceReading::default();
    decode_em1(status, &mut reading)?;
    Ok(reading)
}

/// Parses the `em1data:<id>` status of a single-phase meter: energy totals in Wh.
///
/// # Errors
/// `Malformed` when the payload is not a JSON object, `MissingField` when `total_act_energy`
/// is absent, and `BadValue` when a known key is not a number.
pub fn parse_em1data_status(payload: &[u8]) -> Result<DeviceReading, FormatError> {
    let status = parse_object(payload)?;
    require(&status, "total_act_energy", "em1data")?;
    let mut reading = DeviceReading::default();
    decode_em1data(status, &mut reading)?;
    Ok(reading)
}

/// Moves the keys of an `em1` status into the reading.
fn decode_em1(
    mut status: Map<String, Value>,
    reading: &mut DeviceReading,
) -> Result<(), FormatError> {
    reading.power_w = take_number(&mut status, "act_power")?;
    reading.voltage_v = take_number(&mut status, "voltage")?.into_iter().collect();
    reading.current_a = take_number(&mut status, "current")?.into_iter().collect();
    reading.power_factor = take_number(&mut status, "pf")?.map(|pf| pf.clamp(-1.0, 1.0));
    let extra = &mut reading.extra;
    insert_some(
        extra,
        "apparent_power_va",
        take_number(&mut status, "aprt_power")?,
    );
    insert_some(extra, "frequency_hz", take_number(&mut status, "freq")?);
    extra.extend(status);
    Ok(())
}

/// Moves the keys of an `em1data` status into the reading, converting Wh to kWh.
fn decode_em1data(
    mut status: Map<String, Value>,
    reading: &mut DeviceReading,
) -> Result<(), FormatError> {
    let to_kwh = |wh: Option<f64>| wh.map(|wh| wh / 1000.0);
    reading.energy_import_kwh = to_kwh(take_number(&mut status, "total_act_energy")?);
    reading.energy_export_kwh = to_kwh(take_number(&mut status, "total_act_ret_energy")?);
    reading.extra.extend(status);
    Ok(())
}

/// Parses the `em:<id>` status: instantaneous power, voltage and current per phase.
///
/// # Errors
/// `Malformed` when the payload is not a JSON object, `MissingField` when `total_act_power` is
/// absent, and `BadValue` when a known key is not a number.
pub fn parse_em_status(payload: &[u8]) -> Result<DeviceReading, FormatError> {
    let status = parse_object(payload)?;
    require(&status, "total_act_power", "em")?;
    let mut reading = DeviceReading::default();
    decode_em(status, &mut reading)?;
    Ok(reading)
}

/// Parses the `emdata:<id>` status: energy totals in Wh.
///
/// # Errors
/// `Malformed` when the payload is not a JSON object, `MissingField` when `total_act` is
/// absent, and `BadValue` when a known key is not a number.
pub fn parse_emdata_status(payload: &[u8]) -> Result<DeviceReading, FormatError> {
    let status = parse_object(payload)?;
    require(&status, "total_act", "emdata")?;
    let mut reading = DeviceReading::default();
    decode_emdata(status, &mut reading)?;
    Ok(reading)
}

/// Parses a `NotifyStatus` or `NotifyFullStatus` notification from `<prefix>/events/rpc`.
///
/// Notifications carry only the keys that changed, so no key of `em:0`, `emdata:0`, `em1:0`
/// or `em1data:0` is required. Other components in `params` go to `extra` as sent. Returns `Ok(None)` for other
/// methods and for notifications without `em:0` or `emdata:0`.
///
/// # Errors
/// `Malformed` when the payload is not a JSON object, `MissingField` when `params` is absent,
/// and `BadValue` when `ts` or a known key is not a number.
pub fn parse_rpc_event(payload: &[u8]) -> Result<Option<DeviceReading>, FormatError> {
    let mut message = parse_object(payload)?;
    let method = message
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if method != "NotifyStatus" && method != "NotifyFullStatus" {
        return Ok(None);
    }
    let Some(Value::Object(mut params)) = message.remove("params") else {
        let detail = format!("missing Shelly {method} params, expected an object");
        return Err(FormatError::new(FormatErrorKind::MissingField, detail));
    };
    let components = ["em:0", "emdata:0", "em1:0", "em1data:0"];
    if !components.iter().any(|c| params.contains_key(*c)) {
        return Ok(None);
    }

    let mut reading = DeviceReading {
        meter_id: message
            .get("src")
            .and_then(Value::as_str)
            .map(str::to_owned),
        ts_ms: take_ts(&mut params)?,
        ..DeviceReading::default()
    };
    if let Some(em) = params.remove("em:0") {
        decode_em(component_object("em:0", em)?, &mut reading)?;
    }
    if let Some(emdata) = params.remove("emdata:0") {
        decode_emdata(component_object("emdata:0", emdata)?, &mut reading)?;
    }
    if let Some(em1) = params.remove("em1:0") {
        decode_em1(component_object("em1:0", em1)?, &mut reading)?;
    }
    if let Some(em1data) = params.remove("em1data:0") {
        decode_em1data(component_object("em1data:0", em1data)?, &mut reading)?;
    }
    reading.extra.extend(params);
    Ok(Some(reading))
}

fn parse_object(payload: &[u8]) -> Result<Map<String, Value>, FormatError> {
    if payload.trim_ascii().is_empty() {
        let detail = "empty Shelly payload, expected a JSON object";
        return Err(FormatError::new(FormatErrorKind::Malformed, detail));
    }
    match serde_json::from_slice(payload) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => {
            let detail = format!("invalid Shelly payload '{other}', expected a JSON object");
            Err(FormatError::new(FormatErrorKind::Malformed, detail))
        }
        Err(e) => Err(FormatError::new(
            FormatErrorKind::Malformed,
            format!("invalid Shelly JSON: {e}"),
        )),
    }
}

fn component_object(key: &str, value: Value) -> Result<Map<String, Value>, FormatError> {
    match value {
        Value::Object(object) => Ok(object),
        other => Err(bad_value(key, &other, "an object")),
    }
}

fn require(status: &Map<String, Value>, key: &str, component: &str) -> Result<(), FormatError> {
    if status.contains_key(key) {
        return Ok(());
    }
    let detail = format!("missing Shelly {component} status key '{key}'");
    Err(FormatError::new(FormatErrorKind::MissingField, detail))
}

/// Removes `ts`, Unix seconds with a fraction, and returns it in Unix milliseconds.
fn take_ts(params: &mut Map<String, Value>) -> Result<Option<i64>, FormatError> {
    let Some(value) = params.remove("ts") else {
        return Ok(None);
    };
    match value.as_f64() {
        // An f64 resolves Unix seconds of this century to below a microsecond.
        Some(seconds) if seconds.is_finite() => Ok(Some((seconds * 1000.0).round() as i64)),
        _ => Err(bad_value("ts", &value, "Unix seconds")),
    }
}

/// Moves the keys of an `em` status into the reading.
fn decode_em(
    mut status: Map<String, Value>,
    reading: &mut DeviceReading,
) -> Result<(), FormatError> {
    let extra = &mut reading.extra;
    reading.voltage_v = take_phase_vector(&mut status, "voltage", ("voltage", "_v"), extra)?;
    reading.current_a = take_phase_vector(&mut status, "current", ("current", "_a"), extra)?;

    let power = take_number(&mut status, "total_act_power")?;
    let apparent = take_number(&mut status, "total_aprt_power")?;
    reading.power_w = power;
    if let (Some(power), Some(apparent)) = (power, apparent.filter(|s| *s > 0.0)) {
        reading.power_factor = Some((power / apparent).clamp(-1.0, 1.0));
    }
    insert_some(extra, "apparent_power_va", apparent);

    let renames = [
        ("act_power", "power", "_w"),
        ("aprt_power", "apparent_power", "_va"),
        ("pf", "power_factor", ""),
        ("freq", "frequency", "_hz"),
    ];
    for (source, base, suffix) in renames {
        take_phases_into_extra(&mut status, source, (base, suffix), 1.0, extra)?;
    }
    insert_some(
        extra,
        "current_total_a",
        take_number(&mut status, "total_current")?,
    );
    insert_some(extra, "current_n_a", take_number(&mut status, "n_current")?);
    extra.extend(status);
    Ok(())
}

/// Moves the keys of an `emdata` status into the reading, converting Wh to kWh.
fn decode_emdata(
    mut status: Map<String, Value>,
    reading: &mut DeviceReading,
) -> Result<(), FormatError> {
    let to_kwh = |wh: Option<f64>| wh.map(|wh| wh / 1000.0);
    reading.energy_import_kwh = to_kwh(take_number(&mut status, "total_act")?);
    reading.energy_export_kwh = to_kwh(take_number(&mut status, "total_act_ret")?);

    let extra = &mut reading.extra;
    let renames = [
        ("total_act_energy", "energy_import", "_kwh"),
        ("total_act_ret_energy", "energy_export", "_kwh"),
    ];
    for (source, base, suffix) in renames {
        take_phases_into_extra(&mut status, source, (base, suffix), 0.001, extra)?;
    }
    extra.extend(status);
    Ok(())
}

/// Removes `a_<source>`, `b_<source>` and `c_<source>` and returns them in phase order.
///
/// The vector stops at the first phase that is absent, so a phase after it goes to `extra`
/// as `<base>_l<n><suffix>`.
fn take_phase_vector(
    status: &mut Map<String, Value>,
    source: &str,
    (base, suffix): (&str, &str),
    extra: &mut Map<String, Value>,
) -> Result<Vec<f64>, FormatError> {
    let mut values = Vec::new();
    let mut gap = false;
    for (index, phase) in PHASES.iter().enumerate() {
        let value = take_number(status, &format!("{phase}_{source}"))?;
        match value {
            Some(value) if !gap => values.push(value),
            Some(value) => {
                extra.insert(format!("{base}_l{}{suffix}", index + 1), json!(value));
            }
            None => gap = true,
        }
    }
    Ok(values)
}

/// Moves `a_<source>` .. into `extra` as `<base>_l1<suffix>` .., multiplied by `scale`.
fn take_phases_into_extra(
    status: &mut Map<String, Value>,
    source: &str,
    (base, suffix): (&str, &str),
    scale: f64,
    extra: &mut Map<String, Value>,
) -> Result<(), FormatError> {
    for (index, phase) in PHASES.iter().enumerate() {
        let value = take_number(status, &format!("{phase}_{source}"))?;
        let key = format!("{base}_l{}{suffix}", index + 1);
        insert_some(extra, &key, value.map(|v| v * scale));
    }
    Ok(())
}

/// Removes a number, returning `None` when the key is absent or `null`.
fn take_number(status: &mut Map<String, Value>, key: &str) -> Result<Option<f64>, FormatError> {
    match status.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_f64() {
            Some(number) => Ok(Some(number)),
            None => Err(bad_value(key, &value, "a number")),
        },
    }
}

fn insert_some(extra: &mut Map<String, Value>, key: &str, value: Option<f64>) {
    if let Some(value) = value {
        extra.insert(key.to_owned(), json!(value));
    }
}

fn bad_value(key: &str, value: &Value, expected: &str) -> FormatError {
    let detail = format!("invalid Shelly value {key} = {value}, expected {expected}");
    FormatError::new(FormatErrorKind::BadValue, detail)
}

/// Values of one Gen1 emeter channel received since the last emitted reading.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Gen1Phase {
    power_w: Option<f64>,
    voltage_v: Option<f64>,
    current_a: Option<f64>,
    power_factor: Option<f64>,
    total_wh: Option<f64>,
    total_returned_wh: Option<f64>,
}

impl Gen1Phase {
    fn is_complete(&self) -> bool {
        self.total_wh.is_some() && self.total_returned_wh.is_some()
    }
}

/// Assembles the per-topic numbers of one Shelly Gen1 3EM (or 2-channel EM) into readings.
///
/// The device publishes one bare number per topic, `shellies/<id>/emeter/<n>/<quantity>`:
///
/// | quantity | field | source unit | stored as |
/// |---|---|---|---|
/// | `power` | `power_w` (sum of phases); `extra.power_l1_w` .. | W | W |
/// | `voltage` | `voltage_v` | V | V |
/// | `current` | `current_a` | A | A |
/// | `pf` | `extra.power_factor_l1` .. | ratio | ratio |
/// | `total` | `energy_import_kwh` (sum); `extra.energy_import_l1_kwh` .. | Wh | kWh |
/// | `total_returned` | `energy_export_kwh` (sum); `extra.energy_export_l1_kwh` .. | Wh | kWh |
///
/// A reading is emitted when every channel has sent both `total` and `total_returned` since the
/// last reading. `power_w`, `voltage_v` and `current_a` are set only when every channel sent
/// that quantity in the same period. After an emission every value is cleared.
///
/// When a channel sends `total` or `total_returned` a second time before all channels are
/// complete, a channel was lost in the previous period: its energy values are dropped, the
/// period counts in [`incomplete_periods`](Self::incomplete_periods), and collecting starts
/// again. So a channel that never reports stops all readings, rather than letting a partial
/// sum pass for the device's total. Memory is fixed: three channels of six values each.
#[derive(Debug, Clone)]
pub struct Gen1Assembler {
    topic_prefix: String,
    device_id: String,
    phases: [Gen1Phase; Gen1Assembler::MAX_CHANNELS],
    channels: usize,
    incomplete_periods: u64,
}

impl Gen1Assembler {
    /// Largest number of emeter channels on a Gen1 device (the 3EM).
    pub const MAX_CHANNELS: usize = 3;

    /// Builds an assembler for the device `<device_id>` with `channels` emeter channels: 3 for
    /// the 3EM, 2 for the EM.
    ///
    /// # Errors
    /// `BadValue` when `channels` is 0 or above [`Self::MAX_CHANNELS`], or `device_id` is empty
    /// or contains `/`.
    pub fn new(device_id: &str, channels: usize) -> Result<Self, FormatError> {
        if !(1..=Self::MAX_CHANNELS).contains(&channels) {
            let max = Self::MAX_CHANNELS;
            let detail =
                format!("invalid Shelly Gen1 channel count {channels}, expected 1 to {max}");
            return Err(FormatError::new(FormatErrorKind::BadValue, detail));
        }
        if device_id.is_empty() || device_id.contains('/') {
            let detail =
                format!("invalid Shelly Gen1 device id '{device_id}', expected a topic level");
            return Err(FormatError::new(FormatErrorKind::BadValue, detail));
        }
        Ok(Gen1Assembler {
            topic_prefix: format!("shellies/{device_id}/"),
            device_id: device_id.to_owned(),
            phases: [Gen1Phase::default(); Self::MAX_CHANNELS],
            channels,
            incomplete_periods: 0,
        })
    }

    /// Returns the device id that topics must carry.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// Returns how many periods were dropped because a channel's energy values were missing.
    pub fn incomplete_periods(&self) -> u64 {
        self.incomplete_periods
    }

    /// Stores one message and returns a reading when the period is complete.
    ///
    /// Returns `Ok(None)` for topics of this device that carry no emeter value, such as
    /// `shellies/<id>/relay/0` or `shellies/<id>/emeter/0/energy`.
    ///
    /// # Errors
    /// `Malformed` when the topic does not start with `shellies/<id>/`, `BadValue` when the
    /// channel is out of range or the payload is not a number. Neither changes the stored
    /// values.
    pub fn push(
        &mut self,
        topic: &str,
        payload: &[u8],
    ) -> Result<Option<DeviceReading>, FormatError> {
        let Some(rest) = topic.strip_prefix(&self.topic_prefix) else {
            let prefix = &self.topic_prefix;
            let detail = format!("invalid Shelly Gen1 topic '{topic}', expected '{prefix}...'");
            return Err(FormatError::new(FormatErrorKind::Malformed, detail));
        };
        let Some((channel, quantity)) = parse_emeter_topic(rest) else {
            return Ok(None);
        };
        let Some(channel) = channel.parse::<usize>().ok().filter(|c| *c < self.channels) else {
            let max = self.channels - 1;
            let detail = format!(
                "invalid Shelly Gen1 topic '{topic}': channel '{channel}', expected 0 to {max}"
            );
            return Err(FormatError::new(FormatErrorKind::BadValue, detail));
        };

        let value = parse_bare_number(topic, payload)?;
        self.store(channel, quantity, value);
        Ok(self.take_complete())
    }

    fn store(&mut self, channel: usize, quantity: Gen1Quantity, value: f64) {
        let phase = self.phases[channel];
        let repeated = match quantity {
            Gen1Quantity::Total => phase.total_wh.is_some(),
            Gen1Quantity::TotalReturned => phase.total_returned_wh.is_some(),
            _ => false,
        };
        if repeated {
            self.restart_period();
        }

        let phase = &mut self.phases[channel];
        let slot = match quantity {
            Gen1Quantity::Power => &mut phase.power_w,
            Gen1Quantity::Voltage => &mut phase.voltage_v,
            Gen1Quantity::Current => &mut phase.current_a,
            Gen1Quantity::PowerFactor => &mut phase.power_factor,
            Gen1Quantity::Total => &mut phase.total_wh,
            Gen1Quantity::TotalReturned => &mut phase.total_returned_wh,
        };
        *slot = Some(value);
    }

    /// Drops the energy values of an incomplete period and keeps the latest other values.
    fn restart_period(&mut self) {
        self.incomplete_periods += 1;
        for phase in &mut self.phases {
            phase.total_wh = None;
            phase.total_returned_wh = None;
        }
    }

    fn take_complete(&mut self) -> Option<DeviceReading> {
        let phases = &self.phases[..self.channels];
        if !phases.iter().all(Gen1Phase::is_complete) {
            return None;
        }
        let reading = gen1_reading(&self.device_id, phases);
        self.phases = [Gen1Phase::default(); Self::MAX_CHANNELS];
        Some(reading)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gen1Quantity {
    Power,
    Voltage,
    Current,
    PowerFactor,
    Total,
    TotalReturned,
}

/// Splits `emeter/<n>/<quantity>` into the channel text and a known quantity.
fn parse_emeter_topic(rest: &str) -> Option<(&str, Gen1Quantity)> {
    let mut levels = rest.split('/');
    let (Some("emeter"), Some(channel), Some(name), None) =
        (levels.next(), levels.next(), levels.next(), levels.next())
    else {
        return None;
    };
    let quantity = match name {
        "power" => Gen1Quantity::Power,
        "voltage" => Gen1Quantity::Voltage,
        "current" => Gen1Quantity::Current,
        "pf" => Gen1Quantity::PowerFactor,
        "total" => Gen1Quantity::Total,
        "total_returned" => Gen1Quantity::TotalReturned,
        _ => return None,
    };
    Some((channel, quantity))
}

fn parse_bare_number(topic: &str, payload: &[u8]) -> Result<f64, FormatError> {
    let text = String::from_utf8_lossy(payload);
    let text = text.trim();
    let number = text.parse::<f64>().ok().filter(|v| v.is_finite());
    number.ok_or_else(|| {
        let detail = format!("invalid Shelly Gen1 value '{text}' on '{topic}', expected a number");
        FormatError::new(FormatErrorKind::BadValue, detail)
    })
}

/// Builds the reading of a complete period.
fn gen1_reading(device_id: &str, phases: &[Gen1Phase]) -> DeviceReading {
    let mut reading = DeviceReading {
        meter_id: Some(device_id.to_owned()),
        ..DeviceReading::default()
    };
    let all =
        |get: fn(&Gen1Phase) -> Option<f64>| phases.iter().map(get).collect::<Option<Vec<f64>>>();

    let import_wh = all(|p| p.total_wh).unwrap_or_default();
    let export_wh = all(|p| p.total_returned_wh).unwrap_or_default();
    reading.energy_import_kwh = Some(import_wh.iter().sum::<f64>() / 1000.0);
    reading.energy_export_kwh = Some(export_wh.iter().sum::<f64>() / 1000.0);
    reading.power_w = all(|p| p.power_w).map(|p| p.iter().sum());
    reading.voltage_v = all(|p| p.voltage_v).unwrap_or_default();
    reading.current_a = all(|p| p.current_a).unwrap_or_default();

    for (index, phase) in phases.iter().enumerate() {
        let n = index + 1;
        let extra = &mut reading.extra;
        insert_some(extra, &format!("power_l{n}_w"), phase.power_w);
        insert_some(extra, &format!("power_factor_l{n}"), phase.power_factor);
        insert_some(
            extra,
            &format!("energy_import_l{n}_kwh"),
            phase.total_wh.map(|wh| wh / 1000.0),
        );
        let export = phase.total_returned_wh.map(|wh| wh / 1000.0);
        insert_some(extra, &format!("energy_export_l{n}_kwh"), export);
    }
    reading
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::decode::formats::assert_close;

    const EM_STATUS: &str = include_str!("fixtures/shelly_em_status.json");
    const EMDATA_STATUS: &str = include_str!("fixtures/shelly_emdata_status.json");
    const NOTIFY_EM: &str = include_str!("fixtures/shelly_notify_em.json");
    const NOTIFY_EMDATA: &str = include_str!("fixtures/shelly_notify_emdata.json");

    const DEVICE: &str = "shellyem3-C45BBE6A1F02";

    #[test]
    fn em_status_all_fields() {
        let reading = parse_em_status(EM_STATUS.as_bytes()).unwrap();

        assert_eq!(reading.meter_id, None);
        assert_eq!(reading.ts_ms, None);
        assert_eq!(reading.energy_import_kwh, None);
        assert_close(reading.power_w, 552.0, "power");
        assert_eq!(reading.voltage_v, vec![231.6, 230.2, 229.8]);
        assert_eq!(reading.current_a, vec![3.104, 0.912, 1.275]);
        assert_close(reading.power_factor, 552.0 / 1221.8, "power factor");
        assert!(reading.events.is_empty(), "events: {:?}", reading.events);

        let cases = [
            ("power_l1_w", json!(612.4)),
            ("power_l3_w", json!(-210.7)),
            ("apparent_power_l2_va", json!(209.9)),
            ("apparent_power_va", json!(1221.8)),
            ("power_factor_l3", json!(-0.72)),
            ("frequency_l3_hz", json!(49.9)),
            ("current_total_a", json!(5.291)),
            ("id", json!(0)),
            ("user_calibrated_phase", json!([])),
        ];
        for (key, expected) in cases {
            assert_eq!(reading.extra.get(key), Some(&expected), "extra key {key}");
        }
        assert!(
            !reading.extra.contains_key("current_n_a"),
            "null n_current kept"
        );
        assert!(
            !reading.extra.contains_key("a_voltage"),
            "a_voltage left in extra"
        );
    }

    #[test]
    fn emdata_status_wh_converted() {
        let reading = parse_emdata_status(EMDATA_STATUS.as_bytes()).unwrap();

        assert_close(reading.energy_import_kwh, 2020.55492, "import");
        assert_close(reading.energy_export_kwh, 871.55295, "export");
        assert_eq!(reading.power_w, None);
        let cases = [
            ("energy_import_l1_kwh", 1520.43312),
            ("energy_import_l2_kwh", 402.1175),
            ("energy_import_l3_kwh", 98.0043),
            ("energy_export_l1_kwh", 0.0),
            ("energy_export_l2_kwh", 0.01225),
            ("energy_export_l3_kwh", 871.5407),
        ];
        for (key, expected) in cases {
            assert_close(
                reading.extra.get(key).and_then(Value::as_f64),
                expected,
                key,
            );
        }
    }

    #[test]
    fn notify_status_partial_em() {
        let reading = parse_rpc_event(NOTIFY_EM.as_bytes()).unwrap().unwrap();

        assert_eq!(
            reading.meter_id.as_deref(),
            Some("shellypro3em-a0b1c2d3e4f5")
        );
        assert_eq!(reading.ts_ms, Some(1_717_243_205_370));
        assert_close(reading.power_w, 537.7, "power");
        assert_eq!(reading.voltage_v, Vec::<f64>::new());
        assert_eq!(reading.power_factor, None);
        assert_eq!(reading.extra.get("power_l1_w"), Some(&json!(598.1)));
    }

    #[test]
    fn notify_status_emdata_keeps_other_components() {
        let reading = parse_rpc_event(NOTIFY_EMDATA.as_bytes()).unwrap().unwrap();

        assert_eq!(reading.ts_ms, Some(1_717_243_260_000));
        assert_close(reading.energy_import_kwh, 2020.5611, "import");
        assert_close(reading.energy_export_kwh, 871.55295, "export");
        let temperature = json!({ "id": 0, "tC": 41.2 });
        assert_eq!(reading.extra.get("temperature:0"), Some(&temperature));
    }

    #[test]
    fn phase_after_gap_goes_to_extra() {
        let payload = r#"{"total_act_power":10.0,"a_voltage":230.0,"c_voltage":231.0}"#;
        let reading = parse_em_status(payload.as_bytes()).unwrap();

        assert_eq!(reading.voltage_v, vec![230.0]);
        assert_eq!(reading.extra.get("voltage_l3_v"), Some(&json!(231.0)));
    }

    #[test]
    fn gen2_topics_dispatched() {
        let prefix = "shellypro3em-a0b1c2d3e4f5";
        let cases = [
            (format!("{prefix}/status/em:0"), EM_STATUS, true),
            (format!("{prefix}/status/emdata:0"), EMDATA_STATUS, true),
            (format!("{prefix}/events/rpc"), NOTIFY_EM, true),
            (
                format!("{prefix}/events/rpc"),
                r#"{"method":"NotifyEvent","params":{}}"#,
                false,
            ),
            (
                format!("{prefix}/events/rpc"),
                r#"{"method":"NotifyStatus","params":{"ts":1.0,"sys":{"uptime":5}}}"#,
                false,
            ),
            (
                format!("{prefix}/status/switch:0"),
                r#"{"id":0,"output":true}"#,
                false,
            ),
            (format!("{prefix}/online"), "true", false),
        ];
        for (topic, payload, expected) in cases {
            let result = parse_gen2(&topic, payload.as_bytes());
            let produced = result.as_ref().map(Option::is_some);
            assert_eq!(produced, Ok(expected), "{topic}: {result:?}");
        }
    }

    #[test]
    fn broken_gen2_payloads_rejected() {
        type Parser = fn(&[u8]) -> Result<Option<DeviceReading>, FormatError>;
        let em: Parser = |p| parse_em_status(p).map(Some);
        let emdata: Parser = |p| parse_emdata_status(p).map(Some);
        let rpc: Parser = parse_rpc_event;
        let cases: [(&str, Parser, &str, FormatErrorKind); 11] = [
            ("em empty", em, "", FormatErrorKind::Malformed),
            (
                "em not json",
                em,
                "total_act_power=5",
                FormatErrorKind::Malformed,
            ),
            ("em array", em, "[]", FormatErrorKind::Malformed),
            (
                "em no total",
                em,
                r#"{"a_voltage":230.0}"#,
                FormatErrorKind::MissingField,
            ),
            (
                "em string",
                em,
                r#"{"total_act_power":"5"}"#,
                FormatErrorKind::BadValue,
            ),
            (
                "em voltage bool",
                em,
                r#"{"total_act_power":5,"a_voltage":true}"#,
                FormatErrorKind::BadValue,
            ),
            (
                "emdata no total",
                emdata,
                r#"{"total_act_ret":1.0}"#,
                FormatErrorKind::MissingField,
            ),
            (
                "emdata string",
                emdata,
                r#"{"total_act":"x"}"#,
                FormatErrorKind::BadValue,
            ),
            (
                "rpc no params",
                rpc,
                r#"{"method":"NotifyStatus"}"#,
                FormatErrorKind::MissingField,
            ),
            (
                "rpc bad ts",
                rpc,
                r#"{"method":"NotifyStatus","params":{"ts":"now","em:0":{}}}"#,
                FormatErrorKind::BadValue,
            ),
            (
                "rpc em not object",
                rpc,
                r#"{"method":"NotifyStatus","params":{"em:0":5}}"#,
                FormatErrorKind::BadValue,
            ),
        ];
        for (name, parse, payload, kind) in cases {
            let result = parse(payload.as_bytes());
            assert_eq!(
                result.as_ref().err().map(|e| e.reason),
                Some(kind),
                "{name}: {result:?}"
            );
        }
    }

    /// Publishes one period of a channel in the order the device sends it.
    fn publish_channel(
        assembler: &mut Gen1Assembler,
        channel: usize,
        values: [&str; 6],
    ) -> Vec<DeviceReading> {
        let quantities = [
            "power",
            "pf",
            "current",
            "voltage",
            "total",
            "total_returned",
        ];
        let mut readings = Vec::new();
        for (quantity, value) in quantities.iter().zip(values) {
            let topic = format!("shellies/{DEVICE}/emeter/{channel}/{quantity}");
            let result = assembler.push(&topic, value.as_bytes());
            let reading = result.unwrap_or_else(|e| panic!("{topic} = {value}: {e}"));
            readings.extend(reading);
        }
        readings
    }

    const CHANNEL_0: [&str; 6] = ["412.50", "0.91", "1.96", "231.40", "1520433.1", "0.0"];
    const CHANNEL_1: [&str; 6] = ["88.10", "0.64", "0.60", "230.90", "402117.6", "12.3"];
    const CHANNEL_2: [&str; 6] = ["-150.00", "-0.88", "0.74", "229.70", "98004.3", "871540.7"];

    #[test]
    fn gen1_full_period_emits_once() {
        let mut assembler = Gen1Assembler::new(DEVICE, 3).unwrap();
        let mut readings = publish_channel(&mut assembler, 0, CHANNEL_0);
        readings.extend(publish_channel(&mut assembler, 1, CHANNEL_1));
        readings.extend(publish_channel(&mut assembler, 2, CHANNEL_2));

        assert_eq!(readings.len(), 1, "readings: {readings:?}");
        let reading = &readings[0];
        assert_eq!(reading.meter_id.as_deref(), Some(DEVICE));
        assert_eq!(reading.ts_ms, None);
        assert_close(reading.energy_import_kwh, 2020.555, "import");
        assert_close(reading.energy_export_kwh, 871.553, "export");
        assert_close(reading.power_w, 350.6, "power");
        assert_eq!(reading.voltage_v, vec![231.4, 230.9, 229.7]);
        assert_eq!(reading.current_a, vec![1.96, 0.6, 0.74]);
        assert_eq!(reading.power_factor, None);
        assert_eq!(reading.extra.get("power_factor_l3"), Some(&json!(-0.88)));
        assert_eq!(reading.extra.get("power_l2_w"), Some(&json!(88.1)));
        assert_close(
            reading
                .extra
                .get("energy_export_l2_kwh")
                .and_then(Value::as_f64),
            0.0123,
            "l2",
        );
        assert_eq!(assembler.incomplete_periods(), 0);
    }

    #[test]
    fn gen1_missing_channel_emits_nothing() {
        let mut assembler = Gen1Assembler::new(DEVICE, 3).unwrap();
        let mut readings = Vec::new();
        for _ in 0..3 {
            readings.extend(publish_channel(&mut assembler, 0, CHANNEL_0));
            readings.extend(publish_channel(&mut assembler, 2, CHANNEL_2));
        }

        assert!(readings.is_empty(), "readings: {readings:?}");
        assert_eq!(assembler.incomplete_periods(), 2);
    }

    #[test]
    fn gen1_recovers_after_missing_channel() {
        let mut assembler = Gen1Assembler::new(DEVICE, 3).unwrap();
        publish_channel(&mut assembler, 0, CHANNEL_0);
        publish_channel(&mut assembler, 2, CHANNEL_2);
        let mut readings = publish_channel(&mut assembler, 0, CHANNEL_0);
        readings.extend(publish_channel(&mut assembler, 1, CHANNEL_1));
        readings.extend(publish_channel(&mut assembler, 2, CHANNEL_2));

        assert_eq!(readings.len(), 1, "readings: {readings:?}");
        assert_close(readings[0].energy_import_kwh, 2020.555, "import");
        assert_eq!(assembler.incomplete_periods(), 1);
    }

    #[test]
    fn gen1_two_channel_em() {
        let mut assembler = Gen1Assembler::new("shellyem-B8D7E6", 2).unwrap();
        let topic = |channel: usize, quantity: &str| {
            format!("shellies/shellyem-B8D7E6/emeter/{channel}/{quantity}")
        };
        let messages = [
            (topic(0, "total"), "1000"),
            (topic(0, "total_returned"), "250"),
            (topic(1, "power"), "12.5"),
            (topic(1, "total"), "500"),
        ];
        for (topic, payload) in &messages {
            let reading = assembler.push(topic, payload.as_bytes()).unwrap();
            assert_eq!(reading, None, "{topic}");
        }
        let reading = assembler
            .push(&topic(1, "total_returned"), b"0")
            .unwrap()
            .unwrap();

        assert_close(reading.energy_import_kwh, 1.5, "import");
        assert_close(reading.energy_export_kwh, 0.25, "export");
        assert_eq!(reading.power_w, None);
        assert_eq!(reading.extra.get("power_l2_w"), Some(&json!(12.5)));
    }

    #[test]
    fn gen1_other_topics_ignored() {
        let mut assembler = Gen1Assembler::new(DEVICE, 3).unwrap();
        let topics = [
            "relay/0",
            "online",
            "emeter/0/energy",
            "emeter/0/returned_energy",
            "emeter/0",
        ];
        for level in topics {
            let topic = format!("shellies/{DEVICE}/{level}");
            assert_eq!(assembler.push(&topic, b"on"), Ok(None), "{topic}");
        }
    }

    #[test]
    fn gen1_bad_messages_rejected() {
        let mut assembler = Gen1Assembler::new(DEVICE, 3).unwrap();
        let cases = [
            (
                "shellies/other-device/emeter/0/power",
                "1.0",
                FormatErrorKind::Malformed,
            ),
            ("shelly/emeter/0/power", "1.0", FormatErrorKind::Malformed),
            (
                "shellies/shellyem3-C45BBE6A1F02/emeter/3/power",
                "1.0",
                FormatErrorKind::BadValue,
            ),
            (
                "shellies/shellyem3-C45BBE6A1F02/emeter/x/power",
                "1.0",
                FormatErrorKind::BadValue,
            ),
            (
                "shellies/shellyem3-C45BBE6A1F02/emeter/0/power",
                "",
                FormatErrorKind::BadValue,
            ),
            (
                "shellies/shellyem3-C45BBE6A1F02/emeter/0/total",
                "12kWh",
                FormatErrorKind::BadValue,
            ),
            (
                "shellies/shellyem3-C45BBE6A1F02/emeter/0/total",
                "NaN",
                FormatErrorKind::BadValue,
            ),
        ];
        for (topic, payload, kind) in cases {
            let result = assembler.push(topic, payload.as_bytes());
            assert_eq!(
                result.as_ref().err().map(|e| e.reason),
                Some(kind),
                "{topic}: {result:?}"
            );
        }
        assert_eq!(assembler.phases, [Gen1Phase::default(); 3]);
    }

    #[test]
    fn gen1_invalid_construction() {
        let cases = [("dev", 0), ("dev", 4), ("", 3), ("a/b", 3)];
        for (device, channels) in cases {
            let result = Gen1Assembler::new(device, channels);
            assert!(
                result.is_err(),
                "'{device}' with {channels} channels accepted"
            );
        }
    }

    #[test]
    fn single_phase_em1_status_and_energy() {
        let em1 = br#"{"id":0,"current":4.2,"voltage":229.5,"act_power":950.3,"aprt_power":970.0,"pf":0.98,"freq":50.0,"calibration":"factory"}"#;
        let reading = parse_gen2("pro-em/status/em1:0", em1).unwrap().unwrap();
        assert_close(reading.power_w, 950.3, "power_w");
        assert_eq!(reading.voltage_v, vec![229.5]);
        assert_eq!(reading.current_a, vec![4.2]);
        assert_close(reading.power_factor, 0.98, "power_factor");
        assert_eq!(reading.energy_import_kwh, None);

        let data = br#"{"id":0,"total_act_energy":123456.7,"total_act_ret_energy":10.0}"#;
        let reading = parse_gen2("pro-em/status/em1data:0", data)
            .unwrap()
            .unwrap();
        assert_close(reading.energy_import_kwh, 123.4567, "import, Wh to kWh");
        assert_close(reading.energy_export_kwh, 0.01, "export, Wh to kWh");

        let missing = parse_em1data_status(br#"{"id":0}"#).unwrap_err();
        assert_eq!(missing.reason, FormatErrorKind::MissingField);
    }

    #[test]
    fn single_phase_notification() {
        let payload = br#"{"src":"shellyproem50-1","method":"NotifyStatus","params":{"ts":1717243260.5,"em1data:0":{"id":0,"total_act_energy":5000.0}}}"#;
        let reading = parse_rpc_event(payload).unwrap().unwrap();
        assert_close(reading.energy_import_kwh, 5.0, "import");
        assert_eq!(reading.ts_ms, Some(1_717_243_260_500));
    }
}
