//! Parsers for the payloads that real meters and bridges publish.
//!
//! Each parser turns one message into a [`DeviceReading`] or a [`FormatError`]. The parsers are
//! pure: they do no I/O and read no clock. Invalid input yields a [`FormatError`], and a test
//! feeds every prefix and many single-byte changes of each fixture to check that none panics.
//!
//! | module | source |
//! |---|---|
//! | [`dsmr`] | DSMR P1 telegrams, versions 2.2 to 5, with the Belgian and Hungarian variants |
//! | [`iec62056_21`] | IEC 62056-21 mode C readouts |
//! | [`tasmota`] | Tasmota `SENSOR` JSON with an `ENERGY` object, and Tasmota SML script output |
//! | [`shelly`] | Shelly Gen2 energy meter status and `NotifyStatus` JSON, Shelly Gen1 3EM topics |
//!
//! Units are the same in every parser: energy in kWh, power in W, voltage in V, current in A.
//!
//! Keys in [`DeviceReading::extra`] follow one rule. A value that a parser recognises but that
//! has no field of its own gets a snake_case name with its unit as suffix, such as
//! `energy_import_tariff1_kwh` or `power_import_l1_w`, and is converted to that unit. A value
//! that the parser does not recognise keeps its name from the source (an OBIS code or a JSON
//! key) and its value as sent.

pub mod dsmr;
pub mod iec62056_21;
mod obis;
pub mod shelly;
pub mod tasmota;

use std::fmt;

use serde_json::{Map, Value};

/// Values decoded from one device message, before the meter id and region are known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceReading {
    /// Meter id when the payload names the meter (DSMR equipment id, Shelly device id).
    pub meter_id: Option<String>,
    /// Reading time in Unix milliseconds when the payload carries one.
    pub ts_ms: Option<i64>,
    /// Total import register in kWh (the sum of the tariff registers when no total is sent).
    pub energy_import_kwh: Option<f64>,
    /// Total export register in kWh.
    pub energy_export_kwh: Option<f64>,
    /// Total active power in W, import minus export.
    pub power_w: Option<f64>,
    /// Voltage per phase in V, in phase order.
    pub voltage_v: Vec<f64>,
    /// Current per phase in A, in phase order.
    pub current_a: Vec<f64>,
    /// Total power factor, -1 to 1.
    pub power_factor: Option<f64>,
    /// Event names such as `power_failure`, `voltage_sag` and `voltage_swell`.
    pub events: Vec<String>,
    /// Values without a field of their own: tariff registers, per-phase power, counters and
    /// unrecognised codes or keys.
    pub extra: Map<String, Value>,
}

/// Reason a payload could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FormatErrorKind {
    /// The payload does not have the structure of its format.
    Malformed,
    /// The checksum in the payload does not match its content.
    BadChecksum,
    /// The payload ends before its end marker.
    Truncated,
    /// A required field or line is absent.
    MissingField,
    /// A value carries a unit that the register cannot have.
    BadUnit,
    /// A value is not a number, or not a valid value of its field.
    BadValue,
}

impl FormatErrorKind {
    /// Returns the snake_case name used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FormatErrorKind::Malformed => "malformed",
            FormatErrorKind::BadChecksum => "bad_checksum",
            FormatErrorKind::Truncated => "truncated",
            FormatErrorKind::MissingField => "missing_field",
            FormatErrorKind::BadUnit => "bad_unit",
            FormatErrorKind::BadValue => "bad_value",
        }
    }
}

/// A payload that could not be decoded: the reason and a message naming the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    /// Machine-readable reason.
    pub reason: FormatErrorKind,
    /// Lowercase message naming the value and what was expected.
    pub detail: String,
}

impl FormatError {
    pub(crate) fn new(reason: FormatErrorKind, detail: impl Into<String>) -> Self {
        FormatError {
            reason,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for FormatError {}

/// Asserts that two values differ by less than 1e-9, naming the field on failure.
#[cfg(test)]
#[track_caller]
pub(crate) fn assert_close(actual: Option<f64>, expected: f64, field: &str) {
    let Some(actual) = actual else {
        panic!("{field}: missing, expected {expected}");
    };
    assert!(
        (actual - expected).abs() < 1e-9,
        "{field}: {actual}, expected {expected}"
    );
}

#[cfg(test)]
mod tests {
    use chrono::FixedOffset;

    use super::*;

    const FIXTURES: [&str; 17] = [
        include_str!("fixtures/dsmr_v5.txt"),
        include_str!("fixtures/dsmr_fluvius.txt"),
        include_str!("fixtures/dsmr_v2_2.txt"),
        include_str!("fixtures/dsmr_wh_units.txt"),
        include_str!("fixtures/dsmr_eon_hu.txt"),
        include_str!("fixtures/dsmr_esy_v304.txt"),
        include_str!("fixtures/dsmr_unpadded_crc.txt"),
        include_str!("fixtures/iec62056_21_iskra.txt"),
        include_str!("fixtures/shelly_em_status.json"),
        include_str!("fixtures/shelly_emdata_status.json"),
        include_str!("fixtures/shelly_notify_em.json"),
        include_str!("fixtures/shelly_notify_emdata.json"),
        include_str!("fixtures/tasmota_pow_sensor.json"),
        include_str!("fixtures/tasmota_three_phase_sensor.json"),
        include_str!("fixtures/tasmota_teleinfo_sensor.json"),
        include_str!("fixtures/tasmota_sml_named.json"),
        include_str!("fixtures/tasmota_sml_obis.json"),
    ];

    /// Bytes that end or split values, lines and frames in the formats above.
    const SPECIAL_BYTES: [u8; 12] = [
        b'(', b')', b'*', b'!', b'/', b'\n', b'"', b':', 0x02, 0x03, 0xff, b'0',
    ];

    /// Runs every parser on the payload and discards the results: only a panic fails.
    fn parse_with_all(payload: &[u8]) {
        let utc = FixedOffset::east_opt(0).unwrap();
        let _ = dsmr::parse_telegram(payload);
        let _ = iec62056_21::parse_readout(payload);
        let _ = tasmota::parse_sensor(payload, utc);
        let _ = tasmota::parse_sml(payload, &tasmota::SmlMapping::default(), utc);
        let _ = shelly::parse_em_status(payload);
        let _ = shelly::parse_emdata_status(payload);
        let _ = shelly::parse_rpc_event(payload);
        let mut assembler = shelly::Gen1Assembler::new("shellyem3-0", 3).unwrap();
        let _ = assembler.push("shellies/shellyem3-0/emeter/0/total", payload);
    }

    #[test]
    fn parsers_survive_truncation() {
        for fixture in FIXTURES {
            let crlf = fixture.replace('\n', "\r\n");
            for bytes in [fixture.as_bytes(), crlf.as_bytes()] {
                for end in 0..=bytes.len() {
                    parse_with_all(&bytes[..end]);
                }
            }
        }
    }

    #[test]
    fn parsers_survive_byte_changes() {
        for fixture in FIXTURES {
            let mut bytes = fixture.as_bytes().to_vec();
            for index in 0..bytes.len() {
                let original = bytes[index];
                for special in SPECIAL_BYTES {
                    bytes[index] = special;
                    parse_with_all(&bytes);
                }
                bytes[index] = original;
            }
        }
    }

    #[test]
    fn error_kind_names() {
        let cases = [
            (FormatErrorKind::Malformed, "malformed"),
            (FormatErrorKind::BadChecksum, "bad_checksum"),
            (FormatErrorKind::Truncated, "truncated"),
            (FormatErrorKind::MissingField, "missing_field"),
            (FormatErrorKind::BadUnit, "bad_unit"),
            (FormatErrorKind::BadValue, "bad_value"),
        ];
        for (kind, name) in cases {
            assert_eq!(kind.as_str(), name, "{kind:?}");
        }
    }
}
