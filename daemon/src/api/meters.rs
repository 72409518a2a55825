//! The meter route: a meter's current state, recent hourly energy and alerts.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, ApiState, ErrorBody, blocking};
use crate::alerts::Alert;
use crate::state::{LastReading, MeterState, WindowStats};
use crate::store::AlertQuery;

/// Hours of hourly energy returned when `hours` is not given.
pub const DEFAULT_HOURS: u32 = 24;

/// Alerts of the meter returned, newest first.
pub const METER_ALERTS_LIMIT: usize = 100;

/// Query parameters of `GET /api/meters/{region}/{meter}`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MeterParams {
    /// Hours of hourly energy, ending with the newest: 1 to the longest window; 24 when not given.
    hours: Option<String>,
}

/// The newest reading of a meter.
#[derive(Debug, Serialize, ToSchema)]
pub struct LastReadingView {
    /// Reading time, Unix milliseconds.
    ts_ms: i64,
    /// Import register, kWh.
    energy_import_kwh: f64,
    /// Export register, kWh.
    energy_export_kwh: Option<f64>,
    /// Instantaneous power, W.
    power_w: Option<f64>,
    /// Device sequence number.
    seq: Option<u64>,
}

impl From<LastReading> for LastReadingView {
    fn from(last: LastReading) -> LastReadingView {
        LastReadingView {
            ts_ms: last.ts_ms,
            energy_import_kwh: last.energy_import_kwh,
            energy_export_kwh: last.energy_export_kwh,
            power_w: last.power_w,
            seq: last.seq,
        }
    }
}

/// Statistics of one rolling window; ratios are `null` when undefined.
#[derive(Debug, Serialize, ToSchema)]
pub struct WindowView {
    /// Window name, such as `24h`.
    name: String,
    /// Window length in hours.
    hours: u32,
    /// Hours covered by readings.
    hours_with_data: f64,
    /// Energy in the window, kWh.
    energy_kwh: f64,
    /// Mean power, kW.
    mean_kw: f64,
    /// Highest hourly mean power, kW.
    peak_kw: f64,
    /// Lowest hourly mean power, kW.
    base_kw: f64,
    /// Mean of the hourly means divided by the peak.
    load_factor: f64,
    /// Mean night power divided by mean day power.
    night_day_ratio: f64,
    /// Coefficient of variation of hourly power.
    cv: f64,
}

impl WindowView {
    fn new(name: String, stats: WindowStats) -> WindowView {
        WindowView {
            name,
            hours: stats.hours,
            hours_with_data: stats.hours_with_data,
            energy_kwh: stats.energy_kwh,
            mean_kw: stats.mean_kw,
            peak_kw: stats.peak_kw,
            base_kw: stats.base_kw,
            load_factor: stats.load_factor,
            night_day_ratio: stats.night_day_ratio,
            cv: stats.cv,
        }
    }
}

/// Energy of one hour.
#[derive(Debug, Serialize, ToSchema)]
pub struct HourView {
    /// Start of the hour, Unix milliseconds.
    start_ms: i64,
    /// Energy in the hour, kWh.
    energy_kwh: f64,
    /// Seconds of the hour covered by readings.
    covered_secs: u32,
}

/// A meter's state, recent hourly energy and alerts.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeterReport {
    /// Region.
    region: String,
    /// Meter id.
    meter: String,
    /// Source of the state: `memory` for a meter the pipeline holds, `store` for one read from
    /// the database (not seen since the daemon started), `none` for a meter with alerts only.
    state_source: String,
    /// Newest reading.
    last_reading: Option<LastReadingView>,
    /// Accepted import register, kWh.
    register_kwh: Option<f64>,
    /// Readings that took effect.
    readings: u64,
    /// Latest score of each plugin, by plugin name.
    scores: BTreeMap<String, f64>,
    /// Statistics of each configured window.
    windows: Vec<WindowView>,
    /// Hourly energy, oldest first, ending with the newest hour.
    hourly: Vec<HourView>,
    /// The meter's alerts, newest first, at most 100.
    alerts: Vec<Alert>,
}

#[utoipa::path(
    get,
    path = "/api/meters/{region}/{meter}",
    tag = "meters",
    params(
        ("region" = String, Path, description = "Region"),
        ("meter" = String, Path, description = "Meter id"),
        MeterParams,
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The meter's state, hourly energy and alerts", body = MeterReport),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
        (status = 404, description = "The meter has no state and no alerts", body = ErrorBody),
    )
)]
/// Returns a meter's current state, recent hourly energy and alerts.
pub async fn get_meter(
    State(state): State<ApiState>,
    Path((region, meter)): Path<(String, String)>,
    params: Result<Query<MeterParams>, QueryRejection>,
) -> Result<Json<MeterReport>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let capacity = state.state_model.capacity_hours();
    let hours = match params.hours.as_deref() {
        None => DEFAULT_HOURS.min(capacity),
        Some(text) => match text.parse::<u32>() {
            Ok(hours) if (1..=capacity).contains(&hours) => hours,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "invalid hours '{text}', expected an integer from 1 to {capacity}"
                )));
            }
        },
    };

    let key = format!("{region}/{meter}");
    let in_memory = state.meters.get(&key);
    let query = AlertQuery {
        region: Some(region.clone()),
        meter: Some(meter.clone()),
        limit: METER_ALERTS_LIMIT,
        ..AlertQuery::default()
    };
    let stored_key = key.clone();
    let load_stored = in_memory.is_none();
    let (stored, page) = blocking(&state, move |store| {
        let stored = if load_stored {
            store.load_meter(&stored_key)?
        } else {
            None
        };
        Ok((stored, store.list_alert_page(&query)?))
    })
    .await?;

    let (source, meter_state) = match (in_memory, stored) {
        (Some(in_memory), _) => ("memory", Some(in_memory)),
        (None, Some(stored)) => ("store", Some(stored)),
        (None, None) => ("none", None),
    };
    if meter_state.is_none() && page.alerts.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("meter '{key}' not found: no state and no alerts"),
        ));
    }
    let mut report = MeterReport {
        region,
        meter,
        state_source: source.to_owned(),
        last_reading: None,
        register_kwh: None,
        readings: 0,
        scores: BTreeMap::new(),
        windows: Vec::new(),
        hourly: Vec::new(),
        alerts: page.alerts,
    };
    if let Some(meter_state) = meter_state {
        fill_state(&mut report, &state, &meter_state, hours);
    }
    Ok(Json(report))
}

fn fill_state(report: &mut MeterReport, state: &ApiState, meter: &MeterState, hours: u32) {
    report.last_reading = meter.last.map(LastReadingView::from);
    report.register_kwh = meter.register.register_kwh();
    report.readings = meter.readings;
    report.scores = meter.scores.iter().cloned().collect();
    report.windows = state
        .state_model
        .window_stats(meter)
        .into_iter()
        .map(|(name, stats)| WindowView::new(name, stats))
        .collect();
    report.hourly = meter
        .history
        .recent(hours)
        .iter()
        .map(|(start_ms, energy_kwh, covered_secs)| HourView {
            start_ms,
            energy_kwh,
            covered_secs,
        })
        .collect();
}
