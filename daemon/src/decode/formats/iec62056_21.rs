//! IEC 62056-21 mode C readouts, as meters send them on their optical or serial port and as
//! readers such as vzlogger pass them on.
//!
//! A readout is an identification line `/XXXZ<identification>`, then a data block of lines with
//! one or more data sets each, such as `1.8.0(001846.0*kWh)`, then an end line `!`. On the
//! wire the data block starts with STX (0x02) and is followed by ETX (0x03) and a block check
//! character (BCC): the XOR of every byte after STX up to and including ETX. Readers often
//! drop STX, ETX and BCC, so the BCC is checked only when STX is present.
//!
//! | address | field | source unit | stored as |
//! |---|---|---|---|
//! | identification line | `extra.identification` | text | text |
//! | 0.0.0, C.1.0, 96.1.0 | `meter_id`, first present | text | text |
//! | 1.8.0, 2.8.0 | `energy_import_kwh`, `energy_export_kwh` | kWh or Wh | kWh |
//! | 1.8.T, 2.8.T | their sum when no total is sent; `extra.energy_import_tariffT_kwh` | kWh or Wh | kWh |
//! | 16.7.0, else 1.7.0 minus 2.7.0 | `power_w` | kW or W | W |
//! | 21.7.0, 41.7.0, 61.7.0 (22, 42, 62 for export) | `extra.power_import_l1_w` .. | kW or W | W |
//! | 32.7.0, 52.7.0, 72.7.0 | `voltage_v` | V | V |
//! | 31.7.0, 51.7.0, 71.7.0 | `current_a` | A | A |
//! | 13.7.0 | `power_factor` when within -1 to 1 | none | ratio |
//! | any other address | `extra[address]` | as sent | as sent |
//!
//! Addresses written as `C.D` are read as `C.D.0`, and an `A-B:` prefix or `*F` suffix is
//! dropped for the registers above. A value without a unit is taken in the first unit listed.

use serde_json::{Map, json};

use super::obis::{self, DataSet, Registers};
use super::{DeviceReading, FormatError, FormatErrorKind};

const STX: u8 = 0x02;
const ETX: u8 = 0x03;

/// Addresses that name the meter, best first.
const METER_ID_ADDRESSES: [&str; 3] = ["0.0.0", "C.1.0", "96.1.0"];

/// Parses one mode C readout.
///
/// NOTE: the meter's clock (0.9.1 time, 0.9.2 date) is local time without a zone, so it is kept
/// in `extra` and `ts_ms` stays `None`.
///
/// # Errors
/// `Malformed` when the identification line is missing or a line is not `address(value)`.
/// `Truncated` when the `!` line, ETX or BCC is missing. `BadChecksum` when the BCC does not
/// match. `BadValue` or `BadUnit` for a known register with an invalid value or unit.
pub fn parse_readout(payload: &[u8]) -> Result<DeviceReading, FormatError> {
    let (identification, block) = split_identification(payload)?;
    let data = data_block(block)?;
    let text = std::str::from_utf8(data).map_err(|_| {
        FormatError::new(
            FormatErrorKind::Malformed,
            "invalid IEC 62056-21 readout: not ASCII",
        )
    })?;

    let mut reading = DeviceReading::default();
    reading
        .extra
        .insert("identification".to_owned(), json!(identification));
    decode_lines(text, &mut reading)?;
    Ok(reading)
}

/// Returns the identification without `/` and the bytes after its line.
fn split_identification(payload: &[u8]) -> Result<(String, &[u8]), FormatError> {
    let start = payload.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start.filter(|&i| payload[i] == b'/') else {
        let detail = "missing IEC 62056-21 identification line, expected '/XXXZ...'";
        return Err(FormatError::new(FormatErrorKind::Malformed, detail));
    };

    let rest = &payload[start + 1..];
    let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let identification = String::from_utf8_lossy(&rest[..end]).trim().to_owned();
    if identification.is_empty() {
        let detail = "empty IEC 62056-21 identification line, expected '/XXXZ...'";
        return Err(FormatError::new(FormatErrorKind::Malformed, detail));
    }
    Ok((identification, &rest[(end + 1).min(rest.len())..]))
}

/// Returns the data lines up to and including `!`, checking the BCC when the block has STX.
fn data_block(block: &[u8]) -> Result<&[u8], FormatError> {
    let start = block.iter().position(|b| !b.is_ascii_whitespace());
    let data = match start {
        Some(i) if block[i] == STX => checked_block(&block[i + 1..])?,
        _ => block,
    };

    match end_line(data) {
        Some(end) => Ok(&data[..end]),
        None => {
            let length = data.len();
            let detail =
                format!("truncated IEC 62056-21 readout: no '!' end line in {length} bytes");
            Err(FormatError::new(FormatErrorKind::Truncated, detail))
        }
    }
}

/// Returns the bytes between STX and ETX after checking the BCC that follows ETX.
fn checked_block(after_stx: &[u8]) -> Result<&[u8], FormatError> {
    let Some(etx) = after_stx.iter().position(|&b| b == ETX) else {
        let detail = "truncated IEC 62056-21 readout: STX without ETX";
        return Err(FormatError::new(FormatErrorKind::Truncated, detail));
    };
    let Some(&sent) = after_stx.get(etx + 1) else {
        let detail = "truncated IEC 62056-21 readout: no BCC after ETX";
        return Err(FormatError::new(FormatErrorKind::Truncated, detail));
    };

    let computed = after_stx[..=etx].iter().fold(0u8, |bcc, b| bcc ^ b);
    if computed != sent {
        let detail = format!(
            "IEC 62056-21 BCC mismatch: readout carries {sent:02X}, computed {computed:02X}"
        );
        return Err(FormatError::new(FormatErrorKind::BadChecksum, detail));
    }
    Ok(&after_stx[..etx])
}

/// Returns the offset of the `!` line: a `!` at the start of the data or after a line break.
fn end_line(data: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for line in data.split_inclusive(|&b| b == b'\n') {
        if line.trim_ascii() == b"!" {
            return Some(line_start);
        }
        line_start += line.len();
    }
    None
}

fn decode_lines(text: &str, reading: &mut DeviceReading) -> Result<(), FormatError> {
    let mut registers = Registers::default();
    let mut ids = Map::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let sets = obis::parse_data_sets(line).filter(|s| s.iter().all(|set| !set.code.is_empty()));
        let Some(sets) = sets else {
            let detail = format!("invalid IEC 62056-21 line '{line}', expected 'address(value)'");
            return Err(FormatError::new(FormatErrorKind::Malformed, detail));
        };
        for set in &sets {
            decode_data_set(set, line, &mut registers, &mut ids, reading)?;
        }
    }

    registers.finish(reading);
    reading.meter_id = METER_ID_ADDRESSES
        .iter()
        .filter_map(|address| ids.get(*address)?.as_str())
        .find(|id| !id.is_empty())
        .map(str::to_owned);
    reading.extra.extend(ids);
    Ok(())
}

fn decode_data_set(
    set: &DataSet<'_>,
    line: &str,
    registers: &mut Registers,
    ids: &mut Map<String, serde_json::Value>,
    reading: &mut DeviceReading,
) -> Result<(), FormatError> {
    let (prefix, cde) = obis::split_code(set.code);
    if prefix.is_none() && METER_ID_ADDRESSES.contains(&cde.as_str()) {
        let id = set.groups.first().copied().unwrap_or_default().trim();
        ids.insert(cde, json!(id));
        return Ok(());
    }

    let electricity = prefix.is_none_or(|p| p.starts_with("1-"));
    let register_set = value_group_only(set);
    if electricity && registers.apply(&cde, &register_set, line, &mut reading.extra)? {
        return Ok(());
    }
    let key = prefix.map_or_else(|| cde.clone(), |p| format!("{p}:{cde}"));
    reading
        .extra
        .insert(key, obis::extra_value(&set.groups, None));
    Ok(())
}

/// Returns a copy of the data set with only its value group: the first group with a unit, else
/// the first group. IEC 62056-21 writes a value before its time stamp, as in
/// `1.6.0(02.5*kW)(24-01-08 18:30)`, while [`Registers::apply`] reads the last group.
fn value_group_only<'a>(set: &DataSet<'a>) -> DataSet<'a> {
    let value = set
        .groups
        .iter()
        .find(|g| g.contains('*'))
        .or(set.groups.first());
    DataSet {
        code: set.code,
        groups: value.into_iter().copied().collect(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::decode::formats::assert_close;

    const IDENTIFICATION: &str = "/ISK5MT174-0001\r\n";
    const DATA: &str = include_str!("fixtures/iec62056_21_iskra.txt");
    /// XOR of the CR LF form of `DATA` and ETX.
    const DATA_BCC: u8 = 0x2a;

    /// Builds the wire form: identification, STX, data lines in CR LF, ETX and BCC.
    fn framed(data: &str, bcc: u8) -> Vec<u8> {
        let mut bytes = IDENTIFICATION.as_bytes().to_vec();
        bytes.push(STX);
        bytes.extend_from_slice(data.replace('\n', "\r\n").as_bytes());
        bytes.push(ETX);
        bytes.push(bcc);
        bytes
    }

    /// Builds the form that readers log: identification and data lines without STX and BCC.
    fn unframed(data: &str) -> Vec<u8> {
        format!("{IDENTIFICATION}{data}").into_bytes()
    }

    fn parse_ok(payload: &[u8]) -> DeviceReading {
        parse_readout(payload).unwrap_or_else(|e| panic!("readout rejected: {e}"))
    }

    #[test]
    fn framed_readout_all_fields() {
        let reading = parse_ok(&framed(DATA, DATA_BCC));

        assert_eq!(reading.meter_id.as_deref(), Some("71234567"));
        assert_eq!(reading.ts_ms, None);
        assert_close(reading.energy_import_kwh, 12345.67, "import");
        assert_close(reading.energy_export_kwh, 321.5, "export");
        assert_close(reading.power_w, 845.0, "power");
        assert_eq!(reading.voltage_v, vec![231.2, 230.5, 229.9]);
        assert_eq!(reading.current_a, vec![1.25, 0.8, 2.1]);
        assert_close(reading.power_factor, 0.93, "power factor");
        assert!(reading.events.is_empty(), "events: {:?}", reading.events);

        let cases = [
            ("identification", json!("ISK5MT174-0001")),
            ("0.0.0", json!("71234567")),
            ("C.1.0", json!("11223344")),
            ("energy_import_tariff1_kwh", json!(8000.12)),
            ("energy_import_tariff2_kwh", json!(4345.55)),
            ("energy_export_tariff1_kwh", json!(300.0)),
            ("energy_export_tariff2_kwh", json!(21.5)),
            ("F.F", json!(0.0)),
            ("0.9.1", json!(83015.0)),
            ("C.7.0", json!(12.0)),
            ("1.6.0", json!("(04.21*kW)(24-07-03 19:15)")),
        ];
        for (key, expected) in cases {
            assert_eq!(reading.extra.get(key), Some(&expected), "extra key {key}");
        }
    }

    #[test]
    fn unframed_readout_same_values() {
        let framed_reading = parse_ok(&framed(DATA, DATA_BCC));
        let reading = parse_ok(&unframed(DATA));

        assert_eq!(reading, framed_reading);
    }

    #[test]
    fn tariffs_summed_without_total() {
        let data =
            "0.0.0( 20000)\n1.8.1(001846.0*kWh)\n1.8.2(000100.5*kWh)\n2.8.1(004329.6*kWh)\n!\n";
        let reading = parse_ok(&unframed(data));

        assert_eq!(reading.meter_id.as_deref(), Some("20000"));
        assert_close(reading.energy_import_kwh, 1946.5, "import");
        assert_close(reading.energy_export_kwh, 4329.6, "export");
        assert_eq!(reading.power_w, None);
    }

    #[test]
    fn units_normalised() {
        let cases = [
            ("1.8.0(1846000*Wh)", 1846.0),
            ("1.8.0(1846.0*KWH)", 1846.0),
            ("1.8.0(1846.0)", 1846.0),
        ];
        for (line, expected) in cases {
            let reading = parse_ok(&unframed(&format!("{line}\n!\n")));
            assert_close(reading.energy_import_kwh, expected, line);
        }

        let power = [
            ("1.7.0(1.5*kW)", 1500.0),
            ("1.7.0(1500*W)", 1500.0),
            ("1.7.0(1.5)", 1500.0),
            ("1.7.0(2.0*kW)\n2.7.0(0.5*kW)", 1500.0),
            ("16.7.0(-0.25*kW)", -250.0),
        ];
        for (lines, expected) in power {
            let reading = parse_ok(&unframed(&format!("{lines}\n!\n")));
            assert_close(reading.power_w, expected, lines);
        }
    }

    #[test]
    fn prefixed_addresses_mapped() {
        let data = "1-0:1.8.0*255(000042.0*kWh)\n1-0:32.7.0*255(230.0*V)\n0-0:96.1.0*255(X9)\n!\n";
        let reading = parse_ok(&unframed(data));

        assert_close(reading.energy_import_kwh, 42.0, "import");
        assert_eq!(reading.voltage_v, vec![230.0]);
        assert_eq!(reading.extra.get("0-0:96.1.0"), Some(&json!("X9")));
    }

    #[test]
    fn unknown_addresses_kept() {
        let data = "1.8.0(000010.0*kWh)\n99.1.0(abc)\n3.8.0(000005.0*kvarh)\n!\n";
        let reading = parse_ok(&unframed(data));

        assert_eq!(reading.extra.get("99.1.0"), Some(&json!("abc")));
        let reactive = json!({ "value": 5.0, "unit": "kvarh" });
        assert_eq!(reading.extra.get("3.8.0"), Some(&reactive));
    }

    #[test]
    fn broken_readouts_rejected() {
        let mut missing_bcc = framed(DATA, DATA_BCC);
        missing_bcc.pop();
        let mut missing_etx = missing_bcc.clone();
        missing_etx.pop();
        let cases: Vec<(&str, Vec<u8>, FormatErrorKind)> = vec![
            ("empty", Vec::new(), FormatErrorKind::Malformed),
            (
                "no identification",
                DATA.as_bytes().to_vec(),
                FormatErrorKind::Malformed,
            ),
            (
                "empty identification",
                b"/\r\n1.8.0(1*kWh)\r\n!\r\n".to_vec(),
                FormatErrorKind::Malformed,
            ),
            (
                "bad bcc",
                framed(DATA, DATA_BCC ^ 0x01),
                FormatErrorKind::BadChecksum,
            ),
            ("missing bcc", missing_bcc, FormatErrorKind::Truncated),
            ("missing etx", missing_etx, FormatErrorKind::Truncated),
            (
                "no end line",
                unframed("1.8.0(000010.0*kWh)\n"),
                FormatErrorKind::Truncated,
            ),
            (
                "framed no end line",
                framed("1.8.0(1*kWh)\n", 0x73),
                FormatErrorKind::Truncated,
            ),
            (
                "malformed line",
                unframed("1.8.0 000010.0\n!\n"),
                FormatErrorKind::Malformed,
            ),
            (
                "value without address",
                unframed("(000010.0*kWh)\n!\n"),
                FormatErrorKind::Malformed,
            ),
            (
                "unit MJ",
                unframed("1.8.0(000010.0*MJ)\n!\n"),
                FormatErrorKind::BadUnit,
            ),
            (
                "unit kWh on voltage",
                unframed("32.7(230*kWh)\n!\n"),
                FormatErrorKind::BadUnit,
            ),
            (
                "non-numeric",
                unframed("1.8.0(00001O.0*kWh)\n!\n"),
                FormatErrorKind::BadValue,
            ),
            (
                "empty value",
                unframed("31.7.0()\n!\n"),
                FormatErrorKind::BadValue,
            ),
        ];
        for (name, payload, kind) in cases {
            let result = parse_readout(&payload);
            assert_eq!(
                result.as_ref().err().map(|e| e.reason),
                Some(kind),
                "{name}: {result:?}"
            );
        }
    }

    #[test]
    fn bad_unit_message() {
        let error = parse_readout(&unframed("1.8.0(000010.0*MJ)\n!\n")).unwrap_err();

        let expected = "invalid OBIS value '1.8.0(000010.0*MJ)': unit 'MJ', expected kWh or Wh";
        assert_eq!(error.to_string(), expected);
    }
}
