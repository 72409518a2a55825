//! OBIS data sets as DSMR P1 telegrams and IEC 62056-21 readouts write them, and the
//! electricity registers that both formats share.
//!
//! A data set is a code followed by one or more value groups: `1-0:1.8.1(000123.456*kWh)`,
//! `1.8.0(001846.0*kWh)` or `0-1:24.2.1(200426223001S)(00246.138*m3)`. A value group contains a
//! value and, after `*`, an optional unit.
//!
//! | code (C.D.E) | quantity | accepted units | stored as |
//! |---|---|---|---|
//! | 1.8.0, 2.8.0 | import, export total | kWh, Wh | kWh |
//! | 1.8.T, 2.8.T (T = 1..9) | import, export tariff T | kWh, Wh | kWh |
//! | 1.7.0, 2.7.0 | active power import, export | kW, W | W |
//! | 16.7.0 | active power, import minus export | kW, W | W |
//! | 21.7.0, 41.7.0, 61.7.0 | active power import L1..L3 | kW, W | W |
//! | 22.7.0, 42.7.0, 62.7.0 | active power export L1..L3 | kW, W | W |
//! | 32.7.0, 52.7.0, 72.7.0 | voltage L1..L3 | V | V |
//! | 31.7.0, 51.7.0, 71.7.0 | current L1..L3 | A | A |
//! | 13.7.0 | power factor | none | -1 to 1 |
//! | 32.32.0, 52.32.0, 72.32.0 | voltage sag count L1..L3 | none | count |
//! | 32.36.0, 52.36.0, 72.36.0 | voltage swell count L1..L3 | none | count |
//! | 96.7.21, 96.7.9 | power failure count, long power failure count | none | count |
//!
//! A value without a unit is taken in the unit in the first column of "accepted units".

use serde_json::{Map, Value, json};

use super::{DeviceReading, FormatError, FormatErrorKind};

/// One data set: the code as written and its value groups without parentheses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DataSet<'a> {
    pub code: &'a str,
    pub groups: Vec<&'a str>,
}

/// Splits a line into its data sets.
///
/// IEC 62056-21 allows several data sets on one line. A line that starts with `(` yields one
/// data set with an empty code, which DSMR uses to continue the previous line. Returns `None`
/// when a parenthesis is unbalanced or a code is missing between two data sets.
pub(crate) fn parse_data_sets(line: &str) -> Option<Vec<DataSet<'_>>> {
    let mut sets = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        let open = rest.find('(')?;
        let code = &rest[..open];
        if code.contains(')') || (code.is_empty() && !sets.is_empty()) {
            return None;
        }

        let (groups, after) = parse_groups(&rest[open..])?;
        sets.push(DataSet { code, groups });
        rest = after;
    }
    Some(sets)
}

/// Reads consecutive `(...)` groups and returns them with the text after the last one.
fn parse_groups(mut rest: &str) -> Option<(Vec<&str>, &str)> {
    let mut groups = Vec::new();
    while let Some(inner) = rest.strip_prefix('(') {
        let close = inner.find(')')?;
        let group = &inner[..close];
        if group.contains('(') {
            return None;
        }
        groups.push(group);
        rest = &inner[close + 1..];
    }
    Some((groups, rest))
}

/// Splits a code such as `1-0:1.8.1*255` into its `A-B` medium and channel prefix (when
/// written) and its `C.D.E` part. A `C.D` code is completed to `C.D.0`.
pub(crate) fn split_code(code: &str) -> (Option<&str>, String) {
    let (prefix, rest) = match code.split_once(':') {
        Some((prefix, rest)) => (Some(prefix), rest),
        None => (None, code),
    };
    let cde = rest.split_once('*').map_or(rest, |(cde, _)| cde);

    let parts: Vec<&str> = cde.split('.').collect();
    let numeric = parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()));
    if parts.len() == 2 && numeric {
        return (prefix, format!("{cde}.0"));
    }
    (prefix, cde.to_owned())
}

/// Splits a value group into its value and its unit.
pub(crate) fn split_unit(group: &str) -> (&str, Option<&str>) {
    match group.split_once('*') {
        Some((value, unit)) => (value, Some(unit)),
        None => (group, None),
    }
}

/// Parses a decimal number, rejecting NaN and infinity.
pub(crate) fn parse_number(text: &str) -> Option<f64> {
    let text = text.trim();
    if text.is_empty()
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
    {
        return None;
    }
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Decodes hex-encoded ASCII, as DSMR writes equipment ids and text messages.
///
/// Returns `None` unless the text is an even number of hex digits that decode to printable
/// ASCII, so ids such as `00000000000000` stay as written.
pub(crate) fn decode_hex_text(text: &str) -> Option<String> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect();
    let bytes = bytes?;
    if !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return None;
    }
    String::from_utf8(bytes).ok()
}

/// Converts the value groups of an unrecognised data set into a JSON value for `extra`.
///
/// One numeric group becomes a number, or `{"value": n, "unit": u}` when it has a unit. Two
/// groups of a timestamp and a number, as M-Bus readings are written, become
/// `{"ts_ms": t, "value": n, "unit": u}`. Anything else stays text: one group as written, or
/// several groups with their parentheses.
pub(crate) fn extra_value(groups: &[&str], parse_ts: Option<fn(&str) -> Option<i64>>) -> Value {
    if let [group] = groups {
        return match measured(group) {
            Some((value, None)) => json!(value),
            Some((value, Some(unit))) => json!({ "value": value, "unit": unit }),
            None => Value::from(*group),
        };
    }

    if let ([ts, group], Some(parse_ts)) = (groups, parse_ts)
        && let (Some(ts_ms), Some((value, unit))) = (parse_ts(ts), measured(group))
    {
        let mut object = Map::new();
        object.insert("ts_ms".to_owned(), json!(ts_ms));
        object.insert("value".to_owned(), json!(value));
        if let Some(unit) = unit {
            object.insert("unit".to_owned(), json!(unit));
        }
        return Value::Object(object);
    }

    let joined: String = groups.iter().map(|g| format!("({g})")).collect();
    Value::from(joined)
}

/// Returns the number and unit of a numeric value group.
fn measured(group: &str) -> Option<(f64, Option<&str>)> {
    let (value, unit) = split_unit(group);
    Some((parse_number(value)?, unit))
}

/// Unit family of a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quantity {
    Energy,
    Power,
    Voltage,
    Current,
    Count,
    Ratio,
}

impl Quantity {
    /// Converts a value to kWh, W, V or A, or returns `None` for a unit this quantity cannot
    /// have. Unit names are compared without regard to case.
    fn convert(self, value: f64, unit: Option<&str>) -> Option<f64> {
        let unit = unit.map(str::to_ascii_lowercase);
        let factor = match (self, unit.as_deref()) {
            (Quantity::Energy, None | Some("kwh")) => 1.0,
            (Quantity::Energy, Some("wh")) => 0.001,
            (Quantity::Power, None | Some("kw")) => 1000.0,
            (Quantity::Power, Some("w")) => 1.0,
            (Quantity::Voltage, None | Some("v")) => 1.0,
            (Quantity::Current, None | Some("a")) => 1.0,
            (Quantity::Count | Quantity::Ratio, None) => 1.0,
            _ => return None,
        };
        Some(value * factor)
    }

    fn expected_unit(self) -> &'static str {
        match self {
            Quantity::Energy => "kWh or Wh",
            Quantity::Power => "kW or W",
            Quantity::Voltage => "V",
            Quantity::Current => "A",
            Quantity::Count | Quantity::Ratio => "no unit",
        }
    }
}

/// An electricity register that has a field or a named `extra` key. Phases count from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Register {
    /// Import energy: tariff 0 is the total.
    Import(u16),
    /// Export energy: tariff 0 is the total.
    Export(u16),
    PowerImport,
    PowerExport,
    PowerNet,
    PhasePowerImport(usize),
    PhasePowerExport(usize),
    Voltage(usize),
    Current(usize),
    PowerFactor,
    Sags(usize),
    Swells(usize),
    PowerFailures,
    LongPowerFailures,
}

impl Register {
    fn from_cde(cde: &str) -> Option<Register> {
        let mut parts = cde.split('.').map(|p| p.parse::<u16>().ok());
        let (c, d, e) = (parts.next()??, parts.next()??, parts.next()??);
        if parts.next().is_some() {
            return None;
        }

        // Per-phase codes step by 20 in C: 21/41/61, 31/51/71, 32/52/72.
        let phase = usize::from(c.saturating_sub(21) / 20);
        let register = match (c, d, e) {
            (1, 8, 0..=9) => Register::Import(e),
            (2, 8, 0..=9) => Register::Export(e),
            (1, 7, 0) => Register::PowerImport,
            (2, 7, 0) => Register::PowerExport,
            (16, 7, 0) => Register::PowerNet,
            (21 | 41 | 61, 7, 0) => Register::PhasePowerImport(phase),
            (22 | 42 | 62, 7, 0) => Register::PhasePowerExport(phase),
            (32 | 52 | 72, 7, 0) => Register::Voltage(phase),
            (31 | 51 | 71, 7, 0) => Register::Current(phase),
            (13, 7, 0) => Register::PowerFactor,
            (32 | 52 | 72, 32, 0) => Register::Sags(phase),
            (32 | 52 | 72, 36, 0) => Register::Swells(phase),
            (96, 7, 21) => Register::PowerFailures,
            (96, 7, 9) => Register::LongPowerFailures,
            _ => return None,
        };
        Some(register)
    }

    fn quantity(self) -> Quantity {
        match self {
            Register::Import(_) | Register::Export(_) => Quantity::Energy,
            Register::PowerImport
            | Register::PowerExport
            | Register::PowerNet
            | Register::PhasePowerImport(_)
            | Register::PhasePowerExport(_) => Quantity::Power,
            Register::Voltage(_) => Quantity::Voltage,
            Register::Current(_) => Quantity::Current,
            Register::PowerFactor => Quantity::Ratio,
            Register::Sags(_)
            | Register::Swells(_)
            | Register::PowerFailures
            | Register::LongPowerFailures => Quantity::Count,
        }
    }
}

/// Electricity registers collected from the data sets of one message.
#[derive(Debug, Default)]
pub(crate) struct Registers {
    import_total: Option<f64>,
    import_tariff_sum: Option<f64>,
    export_total: Option<f64>,
    export_tariff_sum: Option<f64>,
    power_import: Option<f64>,
    power_export: Option<f64>,
    power_net: Option<f64>,
    voltage: [Option<f64>; 3],
    current: [Option<f64>; 3],
    power_factor: Option<f64>,
    events: Vec<&'static str>,
}

impl Registers {
    /// Stores the value of a data set whose `C.D.E` code is a known register.
    ///
    /// Returns `Ok(false)` when the code is not a known register, so the caller keeps the data
    /// set in `extra`. A power factor outside -1 to 1 is also returned as unknown.
    ///
    /// # Errors
    /// Returns `BadValue` for a value that is not a number or a count that is not a
    /// non-negative integer, and `BadUnit` for a unit the register cannot have.
    pub(crate) fn apply(
        &mut self,
        cde: &str,
        set: &DataSet<'_>,
        line: &str,
        extra: &mut Map<String, Value>,
    ) -> Result<bool, FormatError> {
        let Some(register) = Register::from_cde(cde) else {
            return Ok(false);
        };
        let value = register_value(register, set, line)?;
        if register == Register::PowerFactor && !(-1.0..=1.0).contains(&value) {
            return Ok(false);
        }
        // A tariff register sent twice would be counted twice in the sum.
        let tariff_key = match register {
            Register::Import(tariff) if tariff > 0 => {
                Some(format!("energy_import_tariff{tariff}_kwh"))
            }
            Register::Export(tariff) if tariff > 0 => {
                Some(format!("energy_export_tariff{tariff}_kwh"))
            }
            _ => None,
        };
        if tariff_key.is_some_and(|key| extra.contains_key(&key)) {
            let detail = format!("invalid register line '{line}': register {cde} appears twice");
            return Err(FormatError::new(FormatErrorKind::BadValue, detail));
        }

        self.store(register, value, extra);
        Ok(true)
    }

    fn store(&mut self, register: Register, value: f64, extra: &mut Map<String, Value>) {
        match register {
            Register::Import(0) => self.import_total = Some(value),
            Register::Export(0) => self.export_total = Some(value),
            Register::Import(tariff) => {
                add(&mut self.import_tariff_sum, value);
                extra.insert(format!("energy_import_tariff{tariff}_kwh"), json!(value));
            }
            Register::Export(tariff) => {
                add(&mut self.export_tariff_sum, value);
                extra.insert(format!("energy_export_tariff{tariff}_kwh"), json!(value));
            }
            Register::PowerImport => self.power_import = Some(value),
            Register::PowerExport => self.power_export = Some(value),
            Register::PowerNet => self.power_net = Some(value),
            Register::PhasePowerImport(phase) => {
                extra.insert(format!("power_import_l{}_w", phase + 1), json!(value));
            }
            Register::PhasePowerExport(phase) => {
                extra.insert(format!("power_export_l{}_w", phase + 1), json!(value));
            }
            Register::Voltage(phase) => self.voltage[phase] = Some(value),
            Register::Current(phase) => self.current[phase] = Some(value),
            Register::PowerFactor => self.power_factor = Some(value),
            Register::Sags(phase) => self.count(
                extra,
                format!("voltage_sags_l{}", phase + 1),
                value,
                "voltage_sag",
            ),
            Register::Swells(phase) => self.count(
                extra,
                format!("voltage_swells_l{}", phase + 1),
                value,
                "voltage_swell",
            ),
            Register::PowerFailures => {
                self.count(extra, "power_failures".to_owned(), value, "power_failure")
            }
            Register::LongPowerFailures => {
                let key = "long_power_failures".to_owned();
                self.count(extra, key, value, "long_power_failure")
            }
        }
    }

    /// Stores a cumulative event counter and records its event when the counter is above 0.
    fn count(
        &mut self,
        extra: &mut Map<String, Value>,
        key: String,
        value: f64,
        event: &'static str,
    ) {
        // The value was checked to be a non-negative integer.
        extra.insert(key, json!(value as u64));
        if value > 0.0 && !self.events.contains(&event) {
            self.events.push(event);
        }
    }

    /// Writes the collected registers into the reading.
    ///
    /// A total register wins over the sum of the tariff registers. Power is `16.7.0` when sent,
    /// else `1.7.0` minus `2.7.0`. Phase vectors stop at the first phase that was not sent.
    pub(crate) fn finish(self, reading: &mut DeviceReading) {
        reading.energy_import_kwh = self.import_total.or(self.import_tariff_sum);
        reading.energy_export_kwh = self.export_total.or(self.export_tariff_sum);
        reading.power_w = self
            .power_net
            .or(match (self.power_import, self.power_export) {
                (Some(import), export) => Some(import - export.unwrap_or(0.0)),
                (None, Some(export)) => Some(-export),
                (None, None) => None,
            });

        // NOTE: a phase after a missing one (L3 sent without L2) is left out of the vector.
        reading.voltage_v = self.voltage.iter().map_while(|v| *v).collect();
        reading.current_a = self.current.iter().map_while(|v| *v).collect();
        reading.power_factor = self.power_factor;
        reading
            .events
            .extend(self.events.iter().map(|e| (*e).to_owned()));
    }
}

fn add(sum: &mut Option<f64>, value: f64) {
    *sum = Some(sum.unwrap_or(0.0) + value);
}

/// Parses and converts the value of a known register from the last group of its data set.
fn register_value(register: Register, set: &DataSet<'_>, line: &str) -> Result<f64, FormatError> {
    let group = set.groups.last().copied().unwrap_or_default();
    let (text, unit) = split_unit(group);
    let Some(value) = parse_number(text) else {
        let detail = format!("invalid OBIS value '{line}': '{text}' is not a number");
        return Err(FormatError::new(FormatErrorKind::BadValue, detail));
    };

    let quantity = register.quantity();
    let Some(value) = quantity.convert(value, unit) else {
        let unit = unit.unwrap_or_default();
        let expected = quantity.expected_unit();
        let detail = format!("invalid OBIS value '{line}': unit '{unit}', expected {expected}");
        return Err(FormatError::new(FormatErrorKind::BadUnit, detail));
    };

    if quantity == Quantity::Count && (value < 0.0 || value.fract() != 0.0) {
        let detail = format!("invalid OBIS value '{line}': '{text}', expected a whole count");
        return Err(FormatError::new(FormatErrorKind::BadValue, detail));
    }
    Ok(value)
}
