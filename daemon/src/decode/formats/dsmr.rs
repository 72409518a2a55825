//! DSMR P1 telegrams, as Dutch, Belgian (Fluvius), Luxembourgish, Irish and Hungarian smart
//! meters write them on their P1 port, versions 2.2 to 5.
//!
//! A telegram is a header line `/XXX5<identification>`, a blank line, one OBIS data set per line
//! and an end line `!` followed by a CRC16/ARC of every byte from `/` to `!` as 4 hex digits.
//! Versions before 4 end in a bare `!`. Meters usually end lines with CR LF.
//!
//! | code | field | source unit | stored as |
//! |---|---|---|---|
//! | header line | `extra.identification` | text | text |
//! | 0-0:1.0.0 | `ts_ms` | `YYMMDDhhmmssX`, X = `S` (+02:00) or `W` (+01:00) | Unix ms |
//! | 0-0:96.1.1, 0-0:96.1.0, 0-0:42.0.0, 1-0:0.0.0, 0-0:96.1.255 | `meter_id`, first present | hex-encoded ASCII or text | text |
//! | 1-0:1.8.0, 1-0:2.8.0 | `energy_import_kwh`, `energy_export_kwh` | kWh or Wh | kWh |
//! | 1-0:1.8.T, 1-0:2.8.T | their sum when no total is sent; `extra.energy_import_tariffT_kwh` | kWh or Wh | kWh |
//! | 1-0:1.7.0, 1-0:2.7.0 | `power_w` = import minus export | kW or W | W |
//! | 1-0:21.7.0, 41.7.0, 61.7.0 (22, 42, 62 for export) | `extra.power_import_l1_w` .. | kW or W | W |
//! | 1-0:32.7.0, 52.7.0, 72.7.0 | `voltage_v` | V | V |
//! | 1-0:31.7.0, 51.7.0, 71.7.0 | `current_a` | A | A |
//! | 1-0:13.7.0 | `power_factor` when within -1 to 1 | none | ratio |
//! | 0-0:96.7.21, 0-0:96.7.9 | `extra.power_failures`, `extra.long_power_failures`; events `power_failure`, `long_power_failure` | count | count |
//! | 1-0:32.32.0 .. 72.32.0 | `extra.voltage_sags_l1` ..; event `voltage_sag` | count | count |
//! | 1-0:32.36.0 .. 72.36.0 | `extra.voltage_swells_l1` ..; event `voltage_swell` | count | count |
//! | 0-n:24.2.1 and other M-Bus lines (n = 1..4) | `extra["0-n:24.2.1"]` | as sent | as sent |
//! | any other code | `extra[code]` | as sent | as sent |
//!
//! A value without a unit is taken in the first unit listed for its register. Event counters
//! are cumulative since the meter was installed, so an event name is present in every reading
//! while its counter is above 0. A rule that looks for new events compares the counters in
//! `extra` between readings.

use chrono::{FixedOffset, NaiveDate, TimeZone};
use crc::{CRC_16_ARC, Crc};
use serde_json::{Map, Value, json};

use super::obis::{self, DataSet, Registers};
use super::{DeviceReading, FormatError, FormatErrorKind};

/// CRC16 as DSMR 4 and 5 use it: polynomial 0x8005, reflected, initial value 0.
const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_ARC);

/// Codes that name the electricity meter, best first.
const METER_ID_CODES: [&str; 5] = [
    "0-0:96.1.1",
    "0-0:96.1.0",
    "0-0:42.0.0",
    "1-0:0.0.0",
    "0-0:96.1.255",
];

/// Parses one P1 telegram.
///
/// Text before the header other than whitespace, and anything after the line with `!`, is not
/// part of the telegram. The CRC is checked when the `!` line carries one. A telegram that a
/// bridge passed on with LF line endings in place of CR LF is also accepted when its CRC matches
/// the CR LF form.
///
/// # Errors
/// `Malformed` when the header is missing or a line is not `code(value)`, `Truncated` when
/// there is no `!` line, `BadChecksum` when the CRC does not match, and `BadValue` or `BadUnit`
/// for a known register with an invalid value or unit.
pub fn parse_telegram(payload: &[u8]) -> Result<DeviceReading, FormatError> {
    let telegram = frame(payload)?;
    check_crc(&telegram)?;
    let body = std::str::from_utf8(telegram.body).map_err(|_| {
        FormatError::new(
            FormatErrorKind::Malformed,
            "invalid DSMR telegram: not ASCII text",
        )
    })?;

    let mut lines = body.lines();
    let header = lines.next().unwrap_or_default().trim_end();
    let mut reading = DeviceReading::default();
    reading
        .extra
        .insert("identification".to_owned(), json!(&header[1..]));

    let sets = collect_data_sets(lines)?;
    decode_data_sets(&sets, &mut reading)?;
    Ok(reading)
}

/// The parts of a telegram: the bytes from `/` to `!` inclusive and the CRC text after `!`.
struct Telegram<'a> {
    body: &'a [u8],
    crc: &'a str,
}

fn frame(payload: &[u8]) -> Result<Telegram<'_>, FormatError> {
    let Some(start) = payload.iter().position(|b| !b.is_ascii_whitespace()) else {
        let detail = "empty DSMR telegram, expected a header line starting with '/'";
        return Err(FormatError::new(FormatErrorKind::Malformed, detail));
    };
    if payload[start] != b'/' {
        let start_text = String::from_utf8_lossy(&payload[start..payload.len().min(start + 20)]);
        let detail =
            format!("missing DSMR header: telegram starts with '{start_text}', expected '/'");
        return Err(FormatError::new(FormatErrorKind::Malformed, detail));
    }

    let Some(bang) = payload[start..]
        .iter()
        .position(|&b| b == b'!')
        .map(|i| start + i)
    else {
        let length = payload.len() - start;
        let detail = format!("truncated DSMR telegram: no '!' end line in {length} bytes");
        return Err(FormatError::new(FormatErrorKind::Truncated, detail));
    };

    let after = &payload[bang + 1..];
    let crc_end = after
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(after.len());
    let crc = std::str::from_utf8(&after[..crc_end]).unwrap_or("?").trim();
    Ok(Telegram {
        body: &payload[start..=bang],
        crc,
    })
}

/// Checks the CRC when the telegram carries one.
fn check_crc(telegram: &Telegram<'_>) -> Result<(), FormatError> {
    if telegram.crc.is_empty() {
        return Ok(());
    }
    let sent = parse_crc(telegram.crc)?;

    let computed = CRC16.checksum(telegram.body);
    if computed == sent || crlf_checksum(telegram.body) == Some(sent) {
        return Ok(());
    }
    let detail = format!("DSMR CRC mismatch: telegram carries {sent:04X}, computed {computed:04X}");
    Err(FormatError::new(FormatErrorKind::BadChecksum, detail))
}

/// Parses the CRC after `!`. Some meters drop leading zeros, so 1 to 4 hex digits are accepted.
fn parse_crc(text: &str) -> Result<u16, FormatError> {
    let valid = text.len() <= 4 && text.bytes().all(|b| b.is_ascii_hexdigit());
    match u16::from_str_radix(text, 16) {
        Ok(crc) if valid => Ok(crc),
        _ => {
            let detail = format!("invalid DSMR CRC '{text}', expected 4 hex digits");
            Err(FormatError::new(FormatErrorKind::Malformed, detail))
        }
    }
}

/// Computes the CRC with every LF turned into CR LF, for telegrams without any CR.
fn crlf_checksum(body: &[u8]) -> Option<u16> {
    if body.contains(&b'\r') || !body.contains(&b'\n') {
        return None;
    }
    let mut digest = CRC16.digest();
    for line in body.split_inclusive(|&b| b == b'\n') {
        match line.strip_suffix(b"\n") {
            Some(text) => {
                digest.update(text);
                digest.update(b"\r\n");
            }
            None => digest.update(line),
        }
    }
    Some(digest.finalize())
}

/// Parses the lines after the header into data sets with the line they start on.
///
/// A line that starts with `(` continues the data set above it, as DSMR 2.2 and 3 write the
/// gas reading of `0-n:24.3.0` on its own line.
fn collect_data_sets<'a>(
    lines: impl Iterator<Item = &'a str>,
) -> Result<Vec<(&'a str, DataSet<'a>)>, FormatError> {
    let mut sets: Vec<(&str, DataSet<'_>)> = Vec::new();
    for line in lines.map(str::trim).filter(|l| !l.is_empty() && *l != "!") {
        let parsed = obis::parse_data_sets(line).filter(|s| s.len() == 1);
        let Some(set) = parsed.and_then(|mut s| s.pop()) else {
            let detail = format!("invalid DSMR line '{line}', expected 'code(value)'");
            return Err(FormatError::new(FormatErrorKind::Malformed, detail));
        };

        match sets.last_mut() {
            Some((_, previous)) if set.code.is_empty() => previous.groups.extend(set.groups),
            None if set.code.is_empty() => {
                let detail = format!("invalid DSMR line '{line}': value without a code");
                return Err(FormatError::new(FormatErrorKind::Malformed, detail));
            }
            _ => sets.push((line, set)),
        }
    }
    Ok(sets)
}

fn decode_data_sets(
    sets: &[(&str, DataSet<'_>)],
    reading: &mut DeviceReading,
) -> Result<(), FormatError> {
    let mut registers = Registers::default();
    let mut ids = Map::new();
    for (line, set) in sets {
        let (prefix, cde) = obis::split_code(set.code);
        let key = match prefix {
            Some(prefix) => format!("{prefix}:{cde}"),
            None => cde.clone(),
        };

        if METER_ID_CODES.contains(&key.as_str()) {
            ids.insert(key.clone(), json!(text_value(&set.groups)));
        } else if key == "0-0:1.0.0" {
            reading.ts_ms = Some(parse_time_line(line, &set.groups)?);
        } else if matches!(prefix, Some("0-0" | "1-0")) {
            let known = registers.apply(&cde, set, line, &mut reading.extra)?;
            if !known {
                reading
                    .extra
                    .insert(key, electricity_extra(&cde, &set.groups));
            }
        } else {
            reading.extra.insert(key, mbus_extra(&cde, &set.groups));
        }
    }

    registers.finish(reading);
    reading.meter_id = METER_ID_CODES
        .iter()
        .filter_map(|code| ids.get(*code)?.as_str())
        .find(|id| !id.is_empty())
        .map(str::to_owned);
    reading.extra.extend(ids);
    Ok(())
}

/// Returns the text of a one-group id or message, decoded from hex when it is hex ASCII.
fn text_value(groups: &[&str]) -> String {
    let text = groups.first().copied().unwrap_or_default().trim();
    obis::decode_hex_text(text).unwrap_or_else(|| text.to_owned())
}

fn parse_time_line(line: &str, groups: &[&str]) -> Result<i64, FormatError> {
    let text = groups.first().copied().unwrap_or_default();
    parse_timestamp(text).ok_or_else(|| {
        let detail = format!("invalid DSMR timestamp '{line}', expected YYMMDDhhmmss and S or W");
        FormatError::new(FormatErrorKind::BadValue, detail)
    })
}

/// Parses a `YYMMDDhhmmssX` timestamp into Unix milliseconds.
///
/// X is `S` for summer time (+02:00) or `W` for winter time (+01:00), the offsets of
/// Europe/Amsterdam and Europe/Brussels. Years are taken as 2000 to 2099.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let (digits, season) = text.split_at_checked(12)?;
    let offset_hours = match season {
        "S" => 2,
        "W" => 1,
        _ => return None,
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }

    let field = |i: usize| digits[i..i + 2].parse::<u32>().ok();
    let date = NaiveDate::from_ymd_opt(2000 + field(0)? as i32, field(2)?, field(4)?)?;
    let local = date.and_hms_opt(field(6)?, field(8)?, field(10)?)?;
    let offset = FixedOffset::east_opt(offset_hours * 3600)?;
    Some(
        offset
            .from_local_datetime(&local)
            .single()?
            .timestamp_millis(),
    )
}

/// Returns the `extra` value of an unrecognised electricity data set.
fn electricity_extra(cde: &str, groups: &[&str]) -> Value {
    if cde == "96.13.0" || cde == "96.13.1" {
        return json!(text_value(groups));
    }
    obis::extra_value(groups, Some(parse_timestamp))
}

/// Returns the `extra` value of an M-Bus data set (gas, water or heat meter on channel 1..4).
///
/// DSMR 2.2 and 3 write gas as `0-1:24.3.0(time)(00)(60)(1)(0-1:24.2.1)(m3)(value)`: that
/// becomes `{"value": n, "unit": "m3"}`.
fn mbus_extra(cde: &str, groups: &[&str]) -> Value {
    match (cde, groups) {
        ("96.1.0" | "96.1.1", _) => json!(text_value(groups)),
        ("24.3.0", [_, _, _, _, _, unit, value]) => match obis::parse_number(value) {
            Some(value) => json!({ "value": value, "unit": unit }),
            None => obis::extra_value(groups, None),
        },
        _ => obis::extra_value(groups, Some(parse_timestamp)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::decode::formats::assert_close;

    const V5: &str = include_str!("fixtures/dsmr_v5.txt");
    const FLUVIUS: &str = include_str!("fixtures/dsmr_fluvius.txt");
    const V2_2: &str = include_str!("fixtures/dsmr_v2_2.txt");
    const WH_UNITS: &str = include_str!("fixtures/dsmr_wh_units.txt");
    const EON_HU: &str = include_str!("fixtures/dsmr_eon_hu.txt");
    const ESY_V304: &str = include_str!("fixtures/dsmr_esy_v304.txt");
    const UNPADDED_CRC: &str = include_str!("fixtures/dsmr_unpadded_crc.txt");

    /// Returns the fixture with CR LF line endings, as meters send it.
    fn crlf(text: &str) -> String {
        text.replace('\n', "\r\n")
    }

    fn parse(text: &str) -> Result<DeviceReading, FormatError> {
        parse_telegram(crlf(text).as_bytes())
    }

    fn parse_ok(text: &str) -> DeviceReading {
        parse(text).unwrap_or_else(|e| panic!("telegram rejected: {e}"))
    }

    fn extra_f64(reading: &DeviceReading, key: &str) -> Option<f64> {
        reading.extra.get(key).and_then(|v| v.as_f64())
    }

    #[test]
    fn v5_telegram_all_fields() {
        let reading = parse_ok(V5);

        assert_eq!(reading.meter_id.as_deref(), Some("E0051002468135790"));
        assert_eq!(reading.ts_ms, Some(1_720_765_815_000));
        assert_close(reading.energy_import_kwh, 4512.307 + 3877.046, "import");
        assert_close(reading.energy_export_kwh, 812.5 + 1903.125, "export");
        assert_close(reading.power_w, 1734.0 - 250.0, "power");
        assert_eq!(reading.voltage_v, vec![231.4, 229.8, 232.1]);
        assert_eq!(reading.current_a, vec![4.0, 2.0, 1.0]);
        assert_eq!(reading.power_factor, None);
        assert_eq!(
            reading.events,
            vec!["power_failure", "long_power_failure", "voltage_sag"]
        );
    }

    #[test]
    fn v5_telegram_extra_values() {
        let reading = parse_ok(V5);
        let cases: &[(&str, serde_json::Value)] = &[
            ("identification", json!("ISK5\\2M550T-1013")),
            ("energy_import_tariff1_kwh", json!(4512.307)),
            ("energy_import_tariff2_kwh", json!(3877.046)),
            ("energy_export_tariff1_kwh", json!(812.5)),
            ("energy_export_tariff2_kwh", json!(1903.125)),
            ("power_import_l1_w", json!(912.0)),
            ("power_import_l2_w", json!(521.0)),
            ("power_import_l3_w", json!(301.0)),
            ("power_export_l3_w", json!(250.0)),
            ("power_failures", json!(9)),
            ("long_power_failures", json!(3)),
            ("voltage_sags_l1", json!(2)),
            ("voltage_sags_l2", json!(0)),
            ("voltage_sags_l3", json!(1)),
            ("voltage_swells_l1", json!(0)),
            ("1-3:0.2.8", json!(50.0)),
            ("0-0:96.14.0", json!(2.0)),
            ("0-0:96.13.0", json!("Onderhoud 14 juli")),
            ("0-0:96.1.1", json!("E0051002468135790")),
            ("1-0:99.1.7", json!(42.0)),
            ("0-1:24.1.0", json!(3.0)),
            ("0-1:96.1.0", json!("G0012345678901234")),
            (
                "0-1:24.2.1",
                json!({ "ts_ms": 1_720_764_000_000_i64, "value": 1234.567, "unit": "m3" }),
            ),
            (
                "1-0:99.97.0",
                json!("(2)(0-0:96.7.19)(230115093000W)(0000000412*s)(240301181500W)(0000007200*s)"),
            ),
        ];
        for (key, expected) in cases {
            assert_eq!(reading.extra.get(*key), Some(expected), "extra key {key}");
        }
    }

    #[test]
    fn fluvius_telegram() {
        let reading = parse_ok(FLUVIUS);

        assert_eq!(reading.meter_id.as_deref(), Some("1SAG1100482177"));
        assert_eq!(reading.ts_ms, Some(1_705_299_330_000));
        assert_close(reading.energy_import_kwh, 1204.33 + 987.012, "import");
        assert_close(reading.energy_export_kwh, 150.0 + 75.25, "export");
        assert_close(reading.power_w, 640.0, "power");
        assert_eq!(reading.voltage_v, vec![230.2]);
        assert_eq!(reading.current_a, vec![2.81]);
        assert!(reading.events.is_empty(), "events: {:?}", reading.events);

        let peak = json!({ "ts_ms": 1_704_735_000_000_i64, "value": 4.815, "unit": "kW" });
        assert_eq!(reading.extra.get("1-0:1.6.0"), Some(&peak));
        let average = json!({ "value": 1.12, "unit": "kW" });
        assert_eq!(reading.extra.get("1-0:1.4.0"), Some(&average));
        let gas = json!({ "ts_ms": 1_705_299_000_000_i64, "value": 451.207, "unit": "m3" });
        assert_eq!(reading.extra.get("0-1:24.2.3"), Some(&gas));
        let water = json!({ "ts_ms": 1_705_299_300_000_i64, "value": 33.891, "unit": "m3" });
        assert_eq!(reading.extra.get("0-2:24.2.1"), Some(&water));
        assert_eq!(
            reading.extra.get("0-2:96.1.1"),
            Some(&json!("8SAG2200012345"))
        );
        assert_eq!(reading.extra.get("0-0:96.13.0"), Some(&json!("")));
        let history = reading.extra.get("0-0:98.1.0").and_then(|v| v.as_str());
        assert!(
            history.is_some_and(|h| h.starts_with("(2)(1-0:1.6.0)")),
            "{history:?}"
        );
    }

    #[test]
    fn v2_2_telegram_without_crc() {
        let reading = parse_ok(V2_2);

        assert_eq!(reading.meter_id.as_deref(), Some("K8EG0040199"));
        assert_eq!(reading.ts_ms, None);
        assert_close(reading.energy_import_kwh, 712.045 + 588.1, "import");
        assert_close(reading.energy_export_kwh, 0.0, "export");
        assert_close(reading.power_w, 430.0, "power");
        let gas = json!({ "value": 2011.337, "unit": "m3" });
        assert_eq!(reading.extra.get("0-1:24.3.0"), Some(&gas));
        assert_eq!(reading.extra.get("0-1:24.4.0"), Some(&json!(1.0)));
    }

    #[test]
    fn wh_and_w_units_converted() {
        let reading = parse_ok(WH_UNITS);

        assert_eq!(reading.meter_id, None);
        assert_eq!(reading.ts_ms, Some(1_698_705_900_000));
        assert_close(reading.energy_import_kwh, 7503.215, "import");
        assert_close(reading.energy_export_kwh, 4.5, "export");
        assert_close(reading.power_w, 1250.0, "power");
        assert_close(
            extra_f64(&reading, "energy_import_tariff1_kwh"),
            5400.11,
            "tariff 1",
        );
        assert_close(
            extra_f64(&reading, "energy_import_tariff2_kwh"),
            2103.105,
            "tariff 2",
        );
        let reactive = json!({ "value": 912.0, "unit": "varh" });
        assert_eq!(reading.extra.get("1-0:3.8.0"), Some(&reactive));
    }

    #[test]
    fn hungarian_telegram_total_wins_over_tariffs() {
        let reading = parse_ok(EON_HU);

        assert_eq!(reading.meter_id.as_deref(), Some("901234560007788"));
        assert_eq!(reading.ts_ms, Some(1_724_148_900_000));
        assert_close(reading.energy_import_kwh, 410.25, "import");
        assert_close(reading.energy_export_kwh, 1250.5, "export");
        assert_close(reading.power_w, -3412.0, "power");
        assert_eq!(reading.voltage_v, vec![238.6, 240.1, 239.9]);
        assert_eq!(reading.current_a, vec![5.0, 1.0, 2.0]);
        assert_close(reading.power_factor, 0.962, "power factor");
        assert_close(
            extra_f64(&reading, "energy_import_tariff4_kwh"),
            0.0,
            "tariff 4",
        );
        assert_eq!(
            reading.extra.get("0-0:42.0.0"),
            Some(&json!("SAG40912300007788"))
        );
        assert_eq!(reading.extra.get("1-0:33.7.0"), Some(&json!(0.971)));
        let frequency = json!({ "value": 49.98, "unit": "Hz" });
        assert_eq!(reading.extra.get("1-0:14.7.0"), Some(&frequency));
    }

    #[test]
    fn power_factor_out_of_range_kept_in_extra() {
        let text = EON_HU.replace("1-0:13.7.0(0.962)", "1-0:13.7.0(4.556)");
        let text = text
            .split_once('!')
            .map(|(body, _)| format!("{body}!\n"))
            .unwrap();
        let reading = parse_ok(&text);

        assert_eq!(reading.power_factor, None);
        assert_eq!(reading.extra.get("1-0:13.7.0"), Some(&json!(4.556)));
    }

    #[test]
    fn esy_v304_codes_with_suffix() {
        let reading = parse_ok(ESY_V304);

        assert_eq!(reading.meter_id.as_deref(), Some("1336009876"));
        assert_close(reading.energy_import_kwh, 12345.6789012, "import");
        assert_eq!(reading.energy_export_kwh, None);
        assert_close(reading.power_w, 485.75, "power");
        assert_close(extra_f64(&reading, "power_import_l1_w"), 210.5, "power l1");
        assert_eq!(
            reading.extra.get("0-0:96.1.255"),
            Some(&json!("1ESY1336009876"))
        );
        assert_eq!(reading.extra.get("1-0:96.5.5"), Some(&json!(80.0)));
    }

    #[test]
    fn unpadded_crc_accepted() {
        let reading = parse_ok(UNPADDED_CRC);

        assert_eq!(reading.meter_id.as_deref(), Some("ADC3100000271122"));
        assert_eq!(reading.ts_ms, Some(1_736_658_900_000));
        assert_eq!(reading.energy_import_kwh, None);
        let heat = json!({ "ts_ms": 1_736_658_900_000_i64, "value": 118.002, "unit": "GJ" });
        assert_eq!(reading.extra.get("0-1:24.2.1"), Some(&heat));
    }

    #[test]
    fn lf_line_endings_accepted() {
        let reading = parse_telegram(V5.as_bytes());

        assert!(reading.is_ok(), "{reading:?}");
    }

    #[test]
    fn unknown_codes_kept_not_fatal() {
        let text = V5.replace("1-0:99.1.7(42)", "1-0:99.1.7(42)\n7-0:0.0.9(abc*xyz)");
        let text = text
            .split_once('!')
            .map(|(body, _)| format!("{body}!\n"))
            .unwrap();
        let reading = parse_ok(&text);

        assert_eq!(reading.extra.get("7-0:0.0.9"), Some(&json!("abc*xyz")));
    }

    #[test]
    fn timestamp_offsets() {
        let cases = [
            ("240331015959W", Some(1_711_846_799_000)),
            ("240331030000S", Some(1_711_846_800_000)),
            ("241027025959S", Some(1_729_990_799_000)),
            ("241027020000W", Some(1_729_990_800_000)),
            ("240229120000W", Some(1_709_204_400_000)),
            ("230229120000W", None),
            ("240101120000", None),
            ("240101120000X", None),
            ("24010112000AW", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_timestamp(text), expected, "timestamp '{text}'");
        }
    }

    #[test]
    fn broken_telegrams_rejected() {
        let without_crc = |text: &str| {
            let (body, _) = text.split_once('!').unwrap();
            format!("{body}!\n")
        };
        let cases: Vec<(&str, String, FormatErrorKind)> = vec![
            ("empty", String::new(), FormatErrorKind::Malformed),
            (
                "whitespace only",
                " \r\n".to_owned(),
                FormatErrorKind::Malformed,
            ),
            (
                "bad crc",
                V5.replace("!9BDA", "!9BDB"),
                FormatErrorKind::BadChecksum,
            ),
            (
                "changed value",
                V5.replace("(01.734*kW)", "(01.735*kW)"),
                FormatErrorKind::BadChecksum,
            ),
            (
                "crc not hex",
                V5.replace("!9BDA", "!9BDZ"),
                FormatErrorKind::Malformed,
            ),
            (
                "crc too long",
                V5.replace("!9BDA", "!9BDA0"),
                FormatErrorKind::Malformed,
            ),
            (
                "truncated",
                V5[..V5.find('!').unwrap()].to_owned(),
                FormatErrorKind::Truncated,
            ),
            (
                "truncated mid line",
                V5[..200].to_owned(),
                FormatErrorKind::Truncated,
            ),
            (
                "missing header",
                V5.replacen("/ISK5", "ISK5", 1),
                FormatErrorKind::Malformed,
            ),
            (
                "malformed line",
                without_crc(&V5.replace("1-0:99.1.7(42)", "1-0:99.1.7 42")),
                FormatErrorKind::Malformed,
            ),
            (
                "unclosed parenthesis",
                without_crc(&V5.replace("1-0:99.1.7(42)", "1-0:99.1.7(42")),
                FormatErrorKind::Malformed,
            ),
            (
                "continuation without code",
                without_crc(&V5.replace("1-3:0.2.8(50)", "(50)")),
                FormatErrorKind::Malformed,
            ),
            (
                "unit MJ on energy",
                without_crc(&V5.replace("(004512.307*kWh)", "(004512.307*MJ)")),
                FormatErrorKind::BadUnit,
            ),
            (
                "tariff register twice",
                without_crc(&V5.replace(
                    "1-0:1.8.2(003877.046*kWh)",
                    "1-0:1.8.2(003877.046*kWh)\r\n1-0:1.8.2(003877.046*kWh)",
                )),
                FormatErrorKind::BadValue,
            ),
            (
                "unit kW on voltage",
                without_crc(&V5.replace("(231.4*V)", "(231.4*kV)")),
                FormatErrorKind::BadUnit,
            ),
            (
                "unit on counter",
                without_crc(&V5.replace("0-0:96.7.21(00009)", "0-0:96.7.21(00009*s)")),
                FormatErrorKind::BadUnit,
            ),
            (
                "non-numeric energy",
                without_crc(&V5.replace("(004512.307*kWh)", "(0045x2.307*kWh)")),
                FormatErrorKind::BadValue,
            ),
            (
                "empty power",
                without_crc(&V5.replace("(01.734*kW)", "()")),
                FormatErrorKind::BadValue,
            ),
            (
                "negative counter",
                without_crc(&V5.replace("0-0:96.7.21(00009)", "0-0:96.7.21(-0009)")),
                FormatErrorKind::BadValue,
            ),
            (
                "bad timestamp",
                without_crc(&V5.replace("(240712083015S)", "(241312083015S)")),
                FormatErrorKind::BadValue,
            ),
        ];
        for (name, text, kind) in cases {
            let result = parse(&text);
            assert_eq!(
                result.as_ref().err().map(|e| e.reason),
                Some(kind),
                "{name}: {result:?}"
            );
        }
    }

    #[test]
    fn error_messages_name_value() {
        let text = V5.replace("(004512.307*kWh)", "(004512.307*MJ)");
        let text = text
            .split_once('!')
            .map(|(body, _)| format!("{body}!\n"))
            .unwrap();
        let error = parse(&text).unwrap_err();

        let expected =
            "invalid OBIS value '1-0:1.8.1(004512.307*MJ)': unit 'MJ', expected kWh or Wh";
        assert_eq!(error.to_string(), expected);
        assert_eq!(error.reason.as_str(), "bad_unit");
    }
}
