//! The checks of one reading, each returning the cause it found.

use gridwatch_plugin_sdk::prelude::*;

/// Kind of suspicion a reading raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CauseKind {
    /// The register went backwards outside a rollover or meter exchange.
    RegisterReversal,
    /// The meter cover was opened.
    CoverOpen,
    /// The terminal cover was opened.
    TerminalCoverOpen,
    /// A strong magnetic field acted on the meter.
    MagneticField,
    /// Energy flowed backwards through an import-only meter.
    ReverseEnergy,
    /// A phase carried current while its voltage was missing.
    CurrentWithoutVoltage,
    /// Neutral current differed from phase current.
    NeutralCurrentMismatch,
    /// Consumption fell to a fraction of the meter's baseline while voltage was present.
    ConsumptionDrop,
    /// Consumption stayed at zero for hours while voltage was present.
    ZeroConsumption,
}

impl CauseKind {
    /// Returns the name used in the `causes` evidence.
    pub fn as_str(self) -> &'static str {
        match self {
            CauseKind::RegisterReversal => "register_reversal",
            CauseKind::CoverOpen => "cover_open",
            CauseKind::TerminalCoverOpen => "terminal_cover_open",
            CauseKind::MagneticField => "magnetic_field",
            CauseKind::ReverseEnergy => "reverse_energy",
            CauseKind::CurrentWithoutVoltage => "current_without_voltage",
            CauseKind::NeutralCurrentMismatch => "neutral_current_mismatch",
            CauseKind::ConsumptionDrop => "consumption_drop",
            CauseKind::ZeroConsumption => "zero_consumption",
        }
    }
}

/// One cause found on a reading.
#[derive(Debug, Clone)]
pub struct Cause {
    /// Kind of suspicion.
    pub kind: CauseKind,
    /// Severity of a finding with this cause alone.
    pub severity: Severity,
    /// Confidence from 0 to 1.
    pub score: f64,
    /// The cause and its values, in words.
    pub message: String,
    /// Values behind the cause.
    pub evidence: Vec<Entry>,
}

/// Event causes: the setting that lists their codes, the default codes, severity, score and
/// the words of the message.
///
/// The numbers are standard event log codes of the Dutch smart meter requirements (DSMR/SMR,
/// DLMS/COSEM), as the `EventType` enum of the Open Smart Grid Platform (GXF) lists them. They
/// are 40 terminal cover removed, 42 strong DC field detected and 44 meter cover removed.
/// That code set has no codes for the other three causes, and other code sets give the same
/// numbers other meanings, so their defaults are names only.
const EVENT_CAUSES: [(CauseKind, &str, &str, Severity, f64, &str); 6] = [
    (
        CauseKind::CoverOpen,
        "cover_open_codes",
        "cover_open,meter_cover_open,meter_cover_removed,44",
        Severity::High,
        1.0,
        "meter cover opened",
    ),
    (
        CauseKind::TerminalCoverOpen,
        "terminal_cover_open_codes",
        "terminal_cover_open,terminal_cover_removed,40",
        Severity::Medium,
        0.8,
        "terminal cover opened",
    ),
    (
        CauseKind::MagneticField,
        "magnetic_field_codes",
        "magnetic_field,strong_magnetic_field,strong_dc_field,42",
        Severity::High,
        1.0,
        "strong magnetic field",
    ),
    (
        CauseKind::ReverseEnergy,
        "reverse_energy_codes",
        "reverse_energy,reverse_current,current_reversal",
        Severity::Medium,
        0.8,
        "reverse energy",
    ),
    (
        CauseKind::CurrentWithoutVoltage,
        "current_without_voltage_codes",
        "current_without_voltage",
        Severity::High,
        0.9,
        "current without voltage",
    ),
    (
        CauseKind::NeutralCurrentMismatch,
        "neutral_current_mismatch_codes",
        "neutral_current_mismatch,neutral_current_imbalance,high_neutral_current",
        Severity::Medium,
        0.7,
        "neutral current mismatch",
    ),
];

/// Returns the settings of the event code lists.
pub fn event_settings() -> Vec<SettingSpec> {
    EVENT_CAUSES
        .iter()
        .map(|(_, name, codes, _, _, words)| {
            setting_spec(
                name,
                Value::Text((*codes).into()),
                &format!("Comma-separated event codes, names or numbers, that mean {words}"),
            )
        })
        .collect()
}

/// Settings of one region.
pub struct Limits {
    /// Codes of each entry of [`EVENT_CAUSES`], in its order, lowercase.
    event_codes: Vec<Vec<String>>,
    import_only: bool,
    reverse_power_min_w: f64,
    voltage_present_v: f64,
    min_current_a: f64,
    recent_window: String,
    baseline_window: String,
    min_recent_coverage: f64,
    min_baseline_hours: f64,
    min_baseline_kw: f64,
    drop_fraction: f64,
    zero_max_kw: f64,
    zero_run_hours: f64,
}

impl Limits {
    /// Reads the region's settings.
    pub fn for_region(host: &mut impl Host, region: &str) -> Limits {
        let event_codes = EVENT_CAUSES
            .iter()
            .map(|(_, name, _, _, _, _)| parse_codes(&host.setting_text(region, name)))
            .collect();
        Limits {
            event_codes,
            import_only: matches!(host.setting(region, "import_only"), Some(Value::Flag(true))),
            reverse_power_min_w: host.setting_f64(region, "reverse_power_min_w"),
            voltage_present_v: host.setting_f64(region, "voltage_present_v"),
            min_current_a: host.setting_f64(region, "min_current_a"),
            recent_window: host.setting_text(region, "recent_window"),
            baseline_window: host.setting_text(region, "baseline_window"),
            min_recent_coverage: host.setting_f64(region, "min_recent_coverage"),
            min_baseline_hours: host.setting_f64(region, "min_baseline_hours"),
            min_baseline_kw: host.setting_f64(region, "min_baseline_kw"),
            drop_fraction: host.setting_f64(region, "drop_fraction"),
            zero_max_kw: host.setting_f64(region, "zero_max_kw"),
            zero_run_hours: host.setting_f64(region, "zero_run_hours"),
        }
    }
}

/// Splits a comma-separated code list into trimmed, lowercase codes.
fn parse_codes(text: &str) -> Vec<String> {
    text.split(',')
        .map(|code| code.trim().to_ascii_lowercase())
        .filter(|code| !code.is_empty())
        .collect()
}

/// Per-meter state: loaded at the meter's first reading of a batch and stored after the
/// batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Track {
    /// Accepted register after the meter's previous reading, kWh.
    pub last_register_kwh: Option<f64>,
    /// Start of the current run of zero consumption with voltage present, Unix milliseconds.
    pub zero_since_ms: Option<i64>,
    /// The start of the zero run as loaded, so an unchanged value is not written again.
    loaded_zero_since_ms: Option<i64>,
}

const REGISTER_KEY: &str = "register_kwh";
const ZERO_SINCE_KEY: &str = "zero_since_ms";

impl Track {
    /// Reads the meter's state.
    pub fn load(host: &mut impl Host, meter: Meter<'_>) -> Track {
        let register = host.get_state(meter, REGISTER_KEY).and_then(|bytes| {
            let bytes: [u8; 8] = bytes.try_into().ok()?;
            Some(f64::from_le_bytes(bytes))
        });
        let zero_since = host.get_state(meter, ZERO_SINCE_KEY).and_then(|bytes| {
            let bytes: [u8; 8] = bytes.try_into().ok()?;
            Some(i64::from_le_bytes(bytes))
        });
        Track {
            last_register_kwh: register,
            zero_since_ms: zero_since,
            loaded_zero_since_ms: zero_since,
        }
    }

    /// Writes the meter's state.
    pub fn store(&self, host: &mut impl Host, meter: Meter<'_>) {
        if let Some(register) = self.last_register_kwh {
            host.set_state(meter, REGISTER_KEY, &register.to_le_bytes());
        }
        if self.zero_since_ms == self.loaded_zero_since_ms {
            return;
        }
        match self.zero_since_ms {
            Some(since) => host.set_state(meter, ZERO_SINCE_KEY, &since.to_le_bytes()),
            None => host.delete_state(meter, ZERO_SINCE_KEY),
        }
    }
}

/// Runs every check on a reading and returns the causes found, updating the meter's track.
pub fn examine(limits: &Limits, reading: Reading<'_>, track: &mut Track) -> Vec<Cause> {
    let mut causes = Vec::new();
    causes.extend(reversal(reading, track));
    causes.extend(events(limits, reading));
    causes.extend(reverse_power(limits, reading));
    causes.extend(current_without_voltage(limits, reading));
    let voltage = present_voltage(limits, reading);
    causes.extend(zero_run(limits, reading, voltage, track));
    if let Some(voltage) = voltage {
        causes.extend(consumption_drop(limits, reading, voltage));
    }
    causes
}

fn reversal(reading: Reading<'_>, track: &Track) -> Option<Cause> {
    if reading.interval().kind != IntervalKind::Reversal {
        return None;
    }
    let now = reading.register_kwh();
    let mut evidence = vec![entry("reading_import_kwh", Value::Number(now))];
    let message = match track.last_register_kwh {
        Some(before) => {
            evidence.push(entry("previous_register_kwh", Value::Number(before)));
            evidence.push(entry("drop_kwh", Value::Number(before - now)));
            format!(
                "register went backwards by {:.1} kWh, from {before:.1} to {now:.1} kWh",
                before - now
            )
        }
        None => format!("register went backwards to {now:.1} kWh"),
    };
    Some(Cause {
        kind: CauseKind::RegisterReversal,
        severity: Severity::High,
        score: 1.0,
        message,
        evidence,
    })
}

fn events(limits: &Limits, reading: Reading<'_>) -> Vec<Cause> {
    let mut causes = Vec::new();
    for ((kind, _, _, severity, score, words), codes) in
        EVENT_CAUSES.iter().zip(&limits.event_codes)
    {
        let matched: Vec<&str> = reading
            .events()
            .iter()
            .filter(|event| codes.iter().any(|code| event.eq_ignore_ascii_case(code)))
            .map(String::as_str)
            .collect();
        if matched.is_empty() {
            continue;
        }
        let list = matched.join(",");
        causes.push(Cause {
            kind: *kind,
            severity: *severity,
            score: *score,
            message: format!("{words} (meter event {list})"),
            evidence: vec![entry(
                format!("{}_events", kind.as_str()),
                Value::Text(list),
            )],
        });
    }
    causes
}

fn reverse_power(limits: &Limits, reading: Reading<'_>) -> Option<Cause> {
    let power_w = reading.power_w()?;
    if !limits.import_only || power_w > -limits.reverse_power_min_w {
        return None;
    }
    Some(Cause {
        kind: CauseKind::ReverseEnergy,
        severity: Severity::Medium,
        score: 0.8,
        message: format!("reverse energy: power of {power_w:.0} W on an import-only meter"),
        evidence: vec![entry("power_w", Value::Number(power_w))],
    })
}

fn current_without_voltage(limits: &Limits, reading: Reading<'_>) -> Option<Cause> {
    let voltages = reading.voltage_v();
    // Only phases that report both values are judged.
    let (phase, current, voltage) = reading
        .current_a()
        .iter()
        .zip(voltages)
        .enumerate()
        .find(|(_, (current, voltage))| {
            **current >= limits.min_current_a && **voltage < limits.voltage_present_v
        })
        .map(|(phase, (current, voltage))| (phase + 1, *current, *voltage))?;
    Some(Cause {
        kind: CauseKind::CurrentWithoutVoltage,
        severity: Severity::High,
        score: 0.9,
        message: format!(
            "current without voltage: L{phase} carries {current:.1} A at {voltage:.0} V"
        ),
        evidence: vec![
            entry("phase", Value::Integer(phase as i64)),
            entry("phase_current_a", Value::Number(current)),
            entry("phase_voltage_v", Value::Number(voltage)),
        ],
    })
}

/// Returns the highest phase voltage when it shows voltage present.
fn present_voltage(limits: &Limits, reading: Reading<'_>) -> Option<f64> {
    let highest = reading.voltage_v().iter().copied().fold(f64::NAN, f64::max);
    (highest >= limits.voltage_present_v).then_some(highest)
}

fn zero_run(
    limits: &Limits,
    reading: Reading<'_>,
    voltage: Option<f64>,
    track: &mut Track,
) -> Option<Cause> {
    let interval = reading.interval();
    let zero = interval.kind == IntervalKind::Normal
        && interval.end_ms > interval.start_ms
        && interval_mean_kw(&interval) <= limits.zero_max_kw;
    let Some(voltage) = voltage.filter(|_| zero) else {
        track.zero_since_ms = None;
        return None;
    };
    let since = *track.zero_since_ms.get_or_insert(interval.start_ms);
    let hours = (interval.end_ms - since) as f64 / 3_600_000.0;
    if hours < limits.zero_run_hours {
        return None;
    }
    // 0.5 when the run reaches the limit, rising to 1 at twice the limit.
    let score = (hours / limits.zero_run_hours / 2.0).clamp(0.5, 1.0);
    Some(Cause {
        kind: CauseKind::ZeroConsumption,
        severity: Severity::Medium,
        score,
        message: format!("zero consumption for {hours:.1} h with {voltage:.0} V present"),
        evidence: vec![
            entry("zero_hours", Value::Number(hours)),
            entry("zero_since_ms", Value::Integer(since)),
        ],
    })
}

fn consumption_drop(limits: &Limits, reading: Reading<'_>, voltage: f64) -> Option<Cause> {
    let recent = reading.window(&limits.recent_window)?;
    let whole = reading.window(&limits.baseline_window)?;
    if recent.hours_with_data < limits.min_recent_coverage * f64::from(recent.hours) {
        return None;
    }
    // The baseline is the part of the longer window before the recent one.
    let baseline_hours = whole.hours_with_data - recent.hours_with_data;
    if baseline_hours < limits.min_baseline_hours || baseline_hours <= 0.0 {
        return None;
    }
    let baseline_kw = (whole.energy_kwh - recent.energy_kwh) / baseline_hours;
    let recent_kw = recent.energy_kwh / recent.hours_with_data;
    if baseline_kw < limits.min_baseline_kw || recent_kw >= limits.drop_fraction * baseline_kw {
        return None;
    }
    let ratio = recent_kw / baseline_kw;
    Some(Cause {
        kind: CauseKind::ConsumptionDrop,
        severity: Severity::Medium,
        score: (1.0 - ratio).clamp(0.0, 1.0),
        message: format!(
            "consumption dropped to {recent_kw:.2} kW over {}, {:.0} % of the {baseline_kw:.2} kW \
             baseline, with {voltage:.0} V present",
            recent.name,
            ratio * 100.0
        ),
        evidence: vec![
            entry("recent_kw", Value::Number(recent_kw)),
            entry("baseline_kw", Value::Number(baseline_kw)),
            entry("baseline_hours", Value::Number(baseline_hours)),
        ],
    })
}
