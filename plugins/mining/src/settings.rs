//! The settings the mining detector declares, and their values for one region.

use gridwatch_plugin_sdk::prelude::*;

use crate::MS_PER_HOUR;

/// Returns the settings the detector declares, with their defaults.
pub fn settings() -> Vec<SettingSpec> {
    let number = |name: &str, value: f64, description: &str| {
        setting_spec(name, Value::Number(value), description)
    };
    let integer = |name: &str, value: i64, description: &str| {
        setting_spec(name, Value::Integer(value), description)
    };
    vec![
        setting_spec(
            "recent_window",
            Value::Text("24h".into()),
            "Rolling window, by name, that must lie wholly after the step; its base load is the level after it",
        ),
        number(
            "min_recent_coverage",
            0.9,
            "Share of the recent window's hours that must have readings",
        ),
        integer(
            "history_hours",
            168,
            "Hours of the meter's history searched for the step; the longest [state] window bounds it",
        ),
        number(
            "min_before_hours",
            24.0,
            "Hours with readings that the history must hold before the step",
        ),
        number(
            "low_quantile",
            0.1,
            "Quantile of the hourly power before the step taken as the earlier base load",
        ),
        number(
            "min_step_kw",
            1.25,
            "Median load added over the same hours of the day before the step that scores fully, kW",
        ),
        number(
            "min_floor_share",
            0.5,
            "Low quantile of the added load over its median that scores fully: the step holds day and night",
        ),
        number(
            "min_step_z",
            3.0,
            "Step over the robust spread of the earlier hours around their hour-of-day medians that scores fully",
        ),
        number(
            "min_spread_kw",
            0.05,
            "Smallest spread the step is divided by, kW",
        ),
        number(
            "max_added_spread",
            0.4,
            "Spread of the added load from its low to its high quantile, over its median, that scores fully; hourly readings only",
        ),
        number(
            "min_level_ratio",
            2.0,
            "Base load after the step over the earlier median hourly power that scores fully",
        ),
        number(
            "peer_mean_kw",
            0.5,
            "Mean power of the region's typical premises of the same tariff class, kW",
        ),
        number(
            "min_peer_ratio",
            2.0,
            "Mean power of the recent window over peer_mean_kw that scores fully",
        ),
        number(
            "min_load_factor",
            0.3,
            "Load factor (hourly mean over hourly peak) of the judged window that scores fully",
        ),
        number(
            "min_night_day_ratio",
            0.6,
            "Night over day mean power, or day over night when smaller, that scores fully",
        ),
        number(
            "heating_max_kw",
            3.0,
            "Step below which daily readings in the heating season are held until it ends, kW",
        ),
        integer(
            "heating_first_month",
            10,
            "First month (1 to 12, UTC) of the heating season; 0 for none",
        ),
        integer(
            "heating_last_month",
            4,
            "Last month (1 to 12, UTC) of the heating season; 0 for none",
        ),
        number(
            "coarse_interval_hours",
            6.0,
            "Reading interval from which the daily cycle is not visible, hours",
        ),
        number(
            "coarse_quick_step_kw",
            4.0,
            "Step from which daily readings alert without waiting for coarse_confirm_hours, kW",
        ),
        number(
            "coarse_confirm_hours",
            144.0,
            "Hours a smaller step on daily readings must hold before it alerts; at most history_hours",
        ),
        setting_spec(
            "window",
            Value::Text("7d".into()),
            "Rolling window, by name, judged when the history shows no earlier, lower level",
        ),
        number(
            "min_hours_with_data",
            120.0,
            "Hours of that window that must have readings",
        ),
        number(
            "min_base_kw",
            2.0,
            "Base load (lowest hourly mean) of that window that scores fully, kW",
        ),
        number(
            "rig_kw",
            3.25,
            "Typical draw of one rig, kW, for the rig estimate",
        ),
        number("min_rig_kw", 1.4, "Lowest draw of one rig, kW"),
        number("max_rig_kw", 4.8, "Highest draw of one rig, kW"),
        number(
            "alert_score",
            0.99,
            "Score from which a finding raises an alert",
        ),
        integer(
            "high_rigs",
            3,
            "Estimated rigs from which the alert is high",
        ),
        number(
            "score_step",
            0.05,
            "Score change that reports a new score-only finding",
        ),
    ]
}

/// Thresholds of one region.
pub(crate) struct Thresholds {
    pub(crate) recent_window: String,
    pub(crate) min_recent_coverage: f64,
    pub(crate) history_hours: u32,
    pub(crate) min_before_hours: f64,
    pub(crate) low_quantile: f64,
    pub(crate) min_step_kw: f64,
    pub(crate) min_floor_share: f64,
    pub(crate) min_step_z: f64,
    pub(crate) min_spread_kw: f64,
    pub(crate) max_added_spread: f64,
    pub(crate) min_level_ratio: f64,
    pub(crate) peer_mean_kw: f64,
    pub(crate) min_peer_ratio: f64,
    pub(crate) min_load_factor: f64,
    pub(crate) min_night_day_ratio: f64,
    pub(crate) heating_max_kw: f64,
    pub(crate) heating_first_month: u32,
    pub(crate) heating_last_month: u32,
    pub(crate) coarse_interval_ms: i64,
    pub(crate) coarse_quick_step_kw: f64,
    pub(crate) coarse_confirm_hours: f64,
    pub(crate) window: String,
    pub(crate) min_hours: f64,
    pub(crate) min_base_kw: f64,
    pub(crate) rig_kw: f64,
    pub(crate) min_rig_kw: f64,
    pub(crate) max_rig_kw: f64,
    pub(crate) alert_score: f64,
    pub(crate) high_rigs: f64,
    pub(crate) score_step: f64,
}

impl Thresholds {
    pub(crate) fn for_region(host: &mut impl Host, region: &str) -> Thresholds {
        let recent_window = host.setting_text(region, "recent_window");
        let window = host.setting_text(region, "window");
        let mut number = |name: &str| host.setting_f64(region, name);
        let month = |value: f64| value.clamp(0.0, 12.0) as u32;
        Thresholds {
            recent_window,
            min_recent_coverage: number("min_recent_coverage"),
            history_hours: number("history_hours").clamp(0.0, f64::from(u32::MAX)) as u32,
            min_before_hours: number("min_before_hours"),
            low_quantile: number("low_quantile"),
            min_step_kw: number("min_step_kw"),
            min_floor_share: number("min_floor_share"),
            min_step_z: number("min_step_z"),
            min_spread_kw: number("min_spread_kw"),
            max_added_spread: number("max_added_spread"),
            min_level_ratio: number("min_level_ratio"),
            peer_mean_kw: number("peer_mean_kw"),
            min_peer_ratio: number("min_peer_ratio"),
            min_load_factor: number("min_load_factor"),
            min_night_day_ratio: number("min_night_day_ratio"),
            heating_max_kw: number("heating_max_kw"),
            heating_first_month: month(number("heating_first_month")),
            heating_last_month: month(number("heating_last_month")),
            coarse_interval_ms: (number("coarse_interval_hours") * MS_PER_HOUR as f64) as i64,
            coarse_quick_step_kw: number("coarse_quick_step_kw"),
            coarse_confirm_hours: number("coarse_confirm_hours"),
            window,
            min_hours: number("min_hours_with_data"),
            min_base_kw: number("min_base_kw"),
            rig_kw: number("rig_kw"),
            min_rig_kw: number("min_rig_kw"),
            max_rig_kw: number("max_rig_kw"),
            alert_score: number("alert_score"),
            high_rigs: number("high_rigs"),
            score_step: number("score_step"),
        }
    }
}
