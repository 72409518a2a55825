//! The hourly balance of one transformer: judging hours, the loss baseline and the suspects.

use std::collections::HashMap;

use gridwatch_plugin_sdk::prelude::*;

use crate::topology::Customer;

pub(crate) const HOUR_MS: i64 = 3_600_000;

/// State key of a transformer's balance.
const STATE_KEY: &str = "balance";

/// Version of the state layout. A value of another version is dropped and learned again.
const STATE_VERSION: u8 = 2;

/// The thresholds of one region, read from its settings.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Hours after an hour ends before it is judged, so customers' readings can arrive.
    pub lag_hours: i64,
    /// Hours past the lag that an hour waits for missing customer readings before it is skipped.
    pub max_wait_hours: i64,
    /// Hours of history fetched per meter, which bounds the suspects' comparison.
    pub window_hours: u32,
    /// Judged hours that form the loss baseline, and its time constant afterwards.
    pub baseline_hours: u32,
    /// Judged hours whose sums form the deficit that is compared.
    pub detect_hours: usize,
    /// Deficit share above the expected losses that raises an alert.
    pub min_excess_share: f64,
    /// Deficit share that raises an alert whatever losses were learned, at the mean load.
    pub max_loss_share: f64,
    /// Excess share from which an alert is high.
    pub high_excess_share: f64,
    /// Share of an hour a meter's readings must cover for the hour to count.
    pub min_hour_coverage: f64,
    /// Hours before the deficit's onset whose load each customer's drop is measured against.
    pub compare_hours: i64,
    /// Suspects listed in the evidence.
    pub max_suspects: usize,
}

impl Limits {
    /// Reads the region's settings.
    pub fn for_region(host: &mut impl Host, region: &str) -> Limits {
        let mut integer = |name: &str, min: f64| host.setting_f64(region, name).max(min);
        let lag_hours = integer("lag_hours", 0.0) as i64;
        let max_wait_hours = integer("max_wait_hours", 0.0) as i64;
        let window_hours = integer("window_hours", 2.0) as u32;
        let baseline_hours = integer("baseline_hours", 1.0) as u32;
        let detect_hours = integer("detect_hours", 1.0) as usize;
        let compare_hours = integer("compare_hours", 1.0) as i64;
        let max_suspects = integer("max_suspects", 1.0) as usize;
        Limits {
            lag_hours,
            max_wait_hours,
            window_hours,
            baseline_hours,
            detect_hours,
            min_excess_share: host.setting_f64(region, "min_excess_share"),
            max_loss_share: host.setting_f64(region, "max_loss_share"),
            high_excess_share: host.setting_f64(region, "high_excess_share"),
            min_hour_coverage: host.setting_f64(region, "min_hour_coverage"),
            compare_hours,
            max_suspects,
        }
    }

    /// Returns the loss share expected before the baseline is learned, and the most a learned
    /// baseline may reach, so a deficit share of `max_loss_share` always raises an alert.
    fn prior_loss_share(&self) -> f64 {
        self.max_loss_share - self.min_excess_share
    }

    fn min_covered_secs(&self) -> u32 {
        (self.min_hour_coverage.clamp(0.0, 1.0) * 3600.0).ceil() as u32
    }
}

/// One judged hour of a transformer: its start and its energy and deficit, kWh.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JudgedHour {
    /// Start of the hour, Unix milliseconds.
    pub start_ms: i64,
    /// Energy of the transformer meter, kWh.
    pub transformer_kwh: f64,
    /// Transformer energy minus the customers' metered energy, kWh.
    pub deficit_kwh: f64,
}

/// Exponentially weighted sums over the hours that showed no excess, for a least-squares fit
/// of an hour's deficit as a no-load loss plus a share of the transformer's energy.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossFit {
    /// Sum of the weights.
    pub weight: f64,
    /// Weighted sum of the transformer's hourly energy, kWh.
    pub transformer_kwh: f64,
    /// Weighted sum of the hourly deficit, kWh.
    pub deficit_kwh: f64,
    /// Weighted sum of the squared transformer energy, kWh².
    pub transformer_sq: f64,
    /// Weighted sum of transformer energy times deficit, kWh².
    pub product: f64,
}

/// The losses a transformer is expected to have in an hour: `no_load_kwh + load_share * kWh`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossModel {
    /// Loss of every hour whatever the load, kWh.
    pub no_load_kwh: f64,
    /// Loss as a share of the hour's transformer energy.
    pub load_share: f64,
}

impl LossModel {
    /// Returns the expected loss of an hour with the given transformer energy, kWh.
    pub fn loss_kwh(&self, transformer_kwh: f64) -> f64 {
        self.no_load_kwh + self.load_share * transformer_kwh
    }
}

impl LossFit {
    fn add(&mut self, decay: f64, transformer_kwh: f64, deficit_kwh: f64) {
        self.weight = self.weight * decay + 1.0;
        self.transformer_kwh = self.transformer_kwh * decay + transformer_kwh;
        self.deficit_kwh = self.deficit_kwh * decay + deficit_kwh;
        self.transformer_sq = self.transformer_sq * decay + transformer_kwh * transformer_kwh;
        self.product = self.product * decay + transformer_kwh * deficit_kwh;
    }

    /// Fits the loss model, scaled down when its loss share at the mean load exceeds `prior`.
    ///
    /// The fit is a straight line through the weighted hours. When the transformer's energy
    /// barely varies, or the line has a negative intercept or slope, the model is the mean
    /// deficit share with no no-load part.
    fn model(&self, prior: f64) -> LossModel {
        let mean_t = self.transformer_kwh / self.weight;
        let mean_d = self.deficit_kwh / self.weight;
        let variance = self.transformer_sq / self.weight - mean_t * mean_t;
        let covariance = self.product / self.weight - mean_t * mean_d;
        let ratio = LossModel {
            no_load_kwh: 0.0,
            load_share: (mean_d / mean_t).max(0.0),
        };
        let mut model = if variance > (0.05 * mean_t).powi(2) {
            let slope = covariance / variance;
            let intercept = mean_d - slope * mean_t;
            if slope >= 0.0 && intercept >= 0.0 {
                LossModel {
                    no_load_kwh: intercept,
                    load_share: slope,
                }
            } else {
                ratio
            }
        } else {
            ratio
        };
        let mean_loss = model.loss_kwh(mean_t);
        if mean_loss > prior * mean_t {
            let scale = prior * mean_t / mean_loss;
            model.no_load_kwh *= scale;
            model.load_share *= scale;
        }
        model
    }
}

/// The learned state of a transformer, kept in plugin state under `balance`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Balance {
    /// Start of the next hour to judge, Unix milliseconds, or `None` before the first.
    pub next_hour_ms: Option<i64>,
    /// Hours that went into the loss fit.
    pub learned_hours: u32,
    /// The loss fit.
    pub fit: LossFit,
    /// First hour of the deficit in progress, Unix milliseconds.
    pub onset_ms: Option<i64>,
    /// Judged hours in a row without excess since the last alert.
    pub quiet_hours: u32,
    /// The latest judged hours, oldest first, at most `detect_hours` of them.
    pub recent: Vec<JudgedHour>,
}

impl Balance {
    /// Loads the transformer's balance, or a new one when there is none or its layout is old.
    pub fn load(host: &mut impl Host, meter: Meter<'_>) -> Balance {
        host.get_state(meter, STATE_KEY)
            .and_then(|bytes| Balance::decode(&bytes))
            .unwrap_or_default()
    }

    /// Stores the balance.
    pub fn store(&self, host: &mut impl Host, meter: Meter<'_>) {
        host.set_state(meter, STATE_KEY, &self.encode());
    }

    fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![STATE_VERSION];
        bytes.extend(self.next_hour_ms.unwrap_or(i64::MIN).to_le_bytes());
        bytes.extend(self.learned_hours.to_le_bytes());
        let fit = &self.fit;
        for value in [
            fit.weight,
            fit.transformer_kwh,
            fit.deficit_kwh,
            fit.transformer_sq,
            fit.product,
        ] {
            bytes.extend(value.to_le_bytes());
        }
        bytes.extend(self.onset_ms.unwrap_or(i64::MIN).to_le_bytes());
        bytes.extend(self.quiet_hours.to_le_bytes());
        for hour in &self.recent {
            bytes.extend(hour.start_ms.to_le_bytes());
            bytes.extend(hour.transformer_kwh.to_le_bytes());
            bytes.extend(hour.deficit_kwh.to_le_bytes());
        }
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<Balance> {
        let (&version, rest) = bytes.split_first()?;
        if version != STATE_VERSION {
            return None;
        }
        let mut reader = Reader(rest);
        let optional = |value: i64| (value != i64::MIN).then_some(value);
        let next_hour_ms = optional(i64::from_le_bytes(reader.take()?));
        let learned_hours = u32::from_le_bytes(reader.take()?);
        let mut number = || Some(f64::from_le_bytes(reader.take()?));
        let fit = LossFit {
            weight: number()?,
            transformer_kwh: number()?,
            deficit_kwh: number()?,
            transformer_sq: number()?,
            product: number()?,
        };
        let mut balance = Balance {
            next_hour_ms,
            learned_hours,
            fit,
            onset_ms: optional(i64::from_le_bytes(reader.take()?)),
            quiet_hours: u32::from_le_bytes(reader.take()?),
            recent: Vec::new(),
        };
        while !reader.0.is_empty() {
            balance.recent.push(JudgedHour {
                start_ms: i64::from_le_bytes(reader.take()?),
                transformer_kwh: f64::from_le_bytes(reader.take()?),
                deficit_kwh: f64::from_le_bytes(reader.take()?),
            });
        }
        Some(balance)
    }

    /// Returns the loss model the transformer is expected to follow: its own fit once
    /// `baseline_hours` hours went into it, scaled to at most the prior share at its mean
    /// load, else the prior share of every hour's energy.
    pub fn loss_model(&self, limits: &Limits) -> LossModel {
        let prior = limits.prior_loss_share();
        let learned = self.learned_hours >= limits.baseline_hours && self.fit.transformer_kwh > 0.0;
        if learned {
            self.fit.model(prior)
        } else {
            LossModel {
                no_load_kwh: 0.0,
                load_share: prior,
            }
        }
    }

    /// Adds a judged hour and returns the deficit of the recent hours when it is large enough
    /// to raise an alert.
    pub fn judge(&mut self, limits: &Limits, hour: JudgedHour) -> Option<Deficit> {
        let model = self.loss_model(limits);
        self.recent.push(hour);
        let excess_of = self.recent.len().saturating_sub(limits.detect_hours);
        self.recent.drain(..excess_of);

        let transformer_kwh: f64 = self.recent.iter().map(|h| h.transformer_kwh).sum();
        let deficit_kwh: f64 = self.recent.iter().map(|h| h.deficit_kwh).sum();
        let loss_kwh: f64 = self
            .recent
            .iter()
            .map(|h| model.loss_kwh(h.transformer_kwh))
            .sum();
        let full = self.recent.len() >= limits.detect_hours;
        let excess_share = share(deficit_kwh - loss_kwh, transformer_kwh);
        let flagged = full && transformer_kwh > 0.0 && excess_share >= limits.min_excess_share;

        let hour_excess = hour_excess_share(&model, &hour);
        if flagged {
            self.quiet_hours = 0;
            if self.onset_ms.is_none() {
                self.onset_ms = Some(self.onset_in_recent(limits, &model));
            }
        } else if excess_share < limits.min_excess_share / 2.0 {
            self.quiet_hours = self.quiet_hours.saturating_add(1);
            if self.quiet_hours >= limits.baseline_hours {
                self.onset_ms = None;
            }
        }
        // Hours of a deficit in progress stay out of the fit, so a lasting bypass is not
        // learned as losses.
        if self.onset_ms.is_none() && hour_excess < limits.min_excess_share {
            self.learn(limits, hour);
        }
        let onset_ms = self.onset_ms?;
        flagged.then_some(Deficit {
            hour_start_ms: hour.start_ms,
            onset_ms,
            hours: self.recent.len(),
            transformer_kwh,
            deficit_kwh,
            model,
            expected_loss_share: share(loss_kwh, transformer_kwh),
            excess_share,
        })
    }

    fn learn(&mut self, limits: &Limits, hour: JudgedHour) {
        let decay = 1.0 - 1.0 / f64::from(limits.baseline_hours.max(1));
        self.fit.add(decay, hour.transformer_kwh, hour.deficit_kwh);
        self.learned_hours = self.learned_hours.saturating_add(1);
    }

    /// Returns the start of the newest run of recent hours whose own excess reaches half the
    /// threshold, or of the oldest recent hour when every hour does.
    fn onset_in_recent(&self, limits: &Limits, model: &LossModel) -> i64 {
        let mut onset = self.recent.last().map_or(0, |h| h.start_ms);
        for hour in self.recent.iter().rev() {
            if hour_excess_share(model, hour) < limits.min_excess_share / 2.0 {
                break;
            }
            onset = hour.start_ms;
        }
        onset
    }
}

/// Returns an hour's deficit beyond the model's losses as a share of its transformer energy.
fn hour_excess_share(model: &LossModel, hour: &JudgedHour) -> f64 {
    share(
        hour.deficit_kwh - model.loss_kwh(hour.transformer_kwh),
        hour.transformer_kwh,
    )
}

/// Reads fixed-size values from the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, tail) = self.0.split_first_chunk::<N>()?;
        self.0 = tail;
        Some(*head)
    }
}

fn share(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
}

/// A deficit large enough to raise an alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Deficit {
    /// Start of the hour judged last, Unix milliseconds.
    pub hour_start_ms: i64,
    /// Estimated start of the deficit, Unix milliseconds.
    pub onset_ms: i64,
    /// Hours in the sums below.
    pub hours: usize,
    /// Transformer energy of those hours, kWh.
    pub transformer_kwh: f64,
    /// Transformer energy minus the customers' metered energy, kWh.
    pub deficit_kwh: f64,
    /// Loss model the hours were judged by.
    pub model: LossModel,
    /// Expected losses of those hours as a share of their transformer energy.
    pub expected_loss_share: f64,
    /// Deficit share minus the expected loss share.
    pub excess_share: f64,
}

/// Hourly energy of one meter by hour start, with the seconds its readings covered.
pub type Hours = HashMap<i64, (f64, u32)>;

/// Fetches the hourly history of a meter as a map by hour start.
pub fn hours_of(host: &mut impl Host, region: &str, meter: &str, hours: u32) -> Hours {
    host.meter_history(region, meter, hours)
        .into_iter()
        .map(|h| (h.start_ms, (h.energy_kwh, h.covered_secs)))
        .collect()
}

/// The hourly energy of a transformer and of its customers.
pub struct Feeder<'a> {
    /// The transformer meter's hours.
    pub transformer: Hours,
    /// The customers, in topology order.
    pub customers: &'a [Customer],
    /// Each customer's hours, in the same order.
    pub customer_hours: Vec<Hours>,
}

/// Whether an hour can be judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HourStatus {
    /// Transformer and customers cover the hour: the transformer energy and the customers' sum.
    Ready(f64, f64),
    /// A customer's readings do not cover the hour yet.
    Waiting,
    /// The transformer's readings do not cover the hour, so it is never judged.
    Missing,
}

impl Feeder<'_> {
    /// Returns whether the hour starting at `start_ms` can be judged.
    pub fn status(&self, limits: &Limits, start_ms: i64) -> HourStatus {
        let min_secs = limits.min_covered_secs();
        let covered = |hours: &Hours| {
            hours
                .get(&start_ms)
                .filter(|(_, secs)| *secs >= min_secs)
                .map(|(kwh, _)| *kwh)
        };
        let Some(transformer_kwh) = covered(&self.transformer) else {
            return HourStatus::Missing;
        };
        let mut customers_kwh = 0.0;
        for hours in &self.customer_hours {
            match covered(hours) {
                Some(kwh) => customers_kwh += kwh,
                None => return HourStatus::Waiting,
            }
        }
        HourStatus::Ready(transformer_kwh, customers_kwh)
    }

    /// Ranks the customers by how well a drop in their metered load explains the deficit,
    /// most likely first, as `(meter index, score from 0 to 1)`.
    ///
    /// Each customer's mean hourly energy since the onset is compared with its mean over the
    /// `compare_hours` before it (or as many hours as have passed since the onset, if more).
    /// The drop's match is the smaller of the drop and the mean hourly excess deficit over the
    /// larger, so a drop of exactly the missing energy scores 1. The correlation is Pearson's
    /// between the customer's metered load and the excess deficit over the hours since the
    /// onset: a bypass takes a share of the customer's own load, so the missing energy rises
    /// and falls with what the meter still records. The score is 0.6 times the match plus 0.4
    /// times the correlation (negative counts as 0).
    pub fn rank(&self, limits: &Limits, deficit: &Deficit) -> Vec<(usize, f64)> {
        let model = deficit.model;
        let end_ms = deficit.hour_start_ms + HOUR_MS;
        // Hours before the fetched window have no data, and a deficit that lasts for months
        // would otherwise cost a lookup for each of its hours.
        let window_start_ms = end_ms - i64::from(limits.window_hours) * HOUR_MS;
        let after: Vec<(i64, f64)> = (deficit.onset_ms.max(window_start_ms)..end_ms)
            .step_by(HOUR_MS as usize)
            .filter_map(|start| match self.status(limits, start) {
                HourStatus::Ready(t, c) => Some((start, t - c - model.loss_kwh(t))),
                _ => None,
            })
            .collect();
        let span = (after.len() as i64).max(limits.compare_hours);
        let before_start_ms = (deficit.onset_ms - span * HOUR_MS).max(window_start_ms);
        let before: Vec<i64> = (before_start_ms..deficit.onset_ms)
            .step_by(HOUR_MS as usize)
            .filter(|start| matches!(self.status(limits, *start), HourStatus::Ready(..)))
            .collect();
        let excess: Vec<f64> = after.iter().map(|(_, e)| *e).collect();
        let excess_mean = mean(&excess);

        let mut ranked: Vec<(usize, f64)> = self
            .customer_hours
            .iter()
            .enumerate()
            .map(|(index, hours)| {
                let energy = |start: &i64| hours.get(start).map_or(0.0, |(kwh, _)| *kwh);
                let metered: Vec<f64> = after.iter().map(|(start, _)| energy(start)).collect();
                let earlier: Vec<f64> = before.iter().map(energy).collect();
                let drop = if earlier.is_empty() {
                    0.0
                } else {
                    mean(&earlier) - mean(&metered)
                };
                let matched = if drop > 0.0 && excess_mean > 0.0 {
                    drop.min(excess_mean) / drop.max(excess_mean)
                } else {
                    0.0
                };
                let correlation = pearson(&metered, &excess).max(0.0);
                (index, 0.6 * matched + 0.4 * correlation)
            })
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked
    }
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// Returns Pearson's correlation, or 0 with fewer than 3 pairs or a constant series.
pub fn pearson(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len().min(ys.len());
    if n < 3 {
        return 0.0;
    }
    let (mx, my) = (mean(&xs[..n]), mean(&ys[..n]));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in xs.iter().zip(ys) {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    if sxx <= f64::EPSILON || syy <= f64::EPSILON {
        return 0.0;
    }
    sxy / (sxx * syy).sqrt()
}
