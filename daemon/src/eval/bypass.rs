//! Partial bypass under a transformer: the topology, the transformer meters' readings and the
//! bypassed customers.
//!
//! Meters labelled `clean`, or `benign` without PV export, are grouped in order of their first
//! reading into transformers of `--customers-per-transformer` meters. Meters left over and
//! meters with other labels stay off the topology. Every transformer gets its own meter, in
//! `--transformer-region`, whose readings fall at the times all its customers have one. Its
//! interval energy is the customers' true energy plus technical losses and meter error:
//!
//! - losses of 2 % to 5 % of the energy (drawn per transformer), 40 % of them as a constant
//!   no-load loss (at the transformer's mean power) and 60 % in proportion to the load;
//! - a meter error drawn uniformly from ±0.5 % of the interval's energy.
//!
//! NOTE: load losses grow with the square of the current, but the model takes them as linear
//! in the energy. So it understates how much the loss share varies between night and day.
//!
//! A share (`--bypass-share`) of the transformers gets a bypass: one of its `clean` customers,
//! from an onset between 40 % and 60 % of the transformer's span, has 20 % to 80 % of its load
//! taken off its meter. The transformer's readings keep that load. The customer's label
//! becomes `bypass` and records the transformer and the bypassed share of the transformer's
//! energy after the onset. A transformer without a `clean` customer gets no bypass.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::scenario::{Interval, Label, ScenarioArgs, pick_onset};

/// Shares of the losses that do not depend on the load.
const NO_LOAD_SHARE_OF_LOSSES: f64 = 0.4;

/// Largest meter error, as a share of an interval's energy.
const METER_ERROR: f64 = 0.005;

/// A transformer meter: its label, its intervals and its customers by meter index.
#[derive(Debug, Clone)]
pub(super) struct Transformer {
    /// Label of the transformer meter, `transformer`.
    pub(super) label: Label,
    /// Intervals of the transformer meter.
    pub(super) intervals: Vec<Interval>,
    /// Indices of its customers in the scenario's meters.
    pub(super) customers: Vec<usize>,
}

/// Builds the transformers and applies the bypasses to the customers' labels and intervals.
///
/// The generator runs on its own stream of the seed, so the labels of the other meters are
/// the same as without transformers.
pub(super) fn add_transformers(
    args: &ScenarioArgs,
    labels: &mut [Label],
    intervals: &mut [Vec<Interval>],
) -> Vec<Transformer> {
    let size = args.customers_per_transformer;
    if size == 0 {
        return Vec::new();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    rng.set_stream(1);

    let mut candidates: Vec<usize> = (0..labels.len())
        .filter(|&m| is_candidate(&labels[m]) && !intervals[m].is_empty())
        .collect();
    candidates.sort_by_key(|&m| intervals[m][0].end_ms);

    let region = args.transformer_region();
    let mut transformers = Vec::new();
    for (number, customers) in candidates.chunks_exact(size).enumerate() {
        let id = format!("tx-{:03}", number + 1);
        let mut transformer = build_transformer(&mut rng, &region, &id, customers, intervals);
        if transformer.intervals.is_empty() {
            continue;
        }
        if rng.random_bool(args.bypass_share) {
            add_bypass(&mut rng, &mut transformer, labels, intervals);
        }
        transformers.push(transformer);
    }
    transformers
}

fn is_candidate(label: &Label) -> bool {
    label.label == "clean" || (label.label == "benign" && label.variant != "pv_export")
}

/// Sums the customers' energy at the times all of them have a reading and adds losses and
/// meter error.
fn build_transformer(
    rng: &mut ChaCha8Rng,
    region: &str,
    id: &str,
    customers: &[usize],
    intervals: &[Vec<Interval>],
) -> Transformer {
    let mut by_end: BTreeMap<i64, (usize, f64, f64)> = BTreeMap::new();
    for &customer in customers {
        for interval in &intervals[customer] {
            let slot = by_end.entry(interval.end_ms).or_default();
            slot.0 += 1;
            slot.1 += interval.energy_kwh;
            slot.2 = interval.hours;
        }
    }
    let shared: Vec<(i64, f64, f64)> = by_end
        .into_iter()
        .filter(|(_, (count, _, _))| *count == customers.len())
        .map(|(end_ms, (_, energy, hours))| (end_ms, energy, hours))
        .collect();

    let loss_share: f64 = (rng.random_range(0.02..0.05_f64) * 1000.0).round() / 1000.0;
    let total_hours: f64 = shared.iter().map(|(_, _, hours)| hours).sum();
    let total_kwh: f64 = shared.iter().map(|(_, energy, _)| energy).sum();
    let mean_kw = if total_hours > 0.0 {
        total_kwh / total_hours
    } else {
        0.0
    };
    let no_load_kw = NO_LOAD_SHARE_OF_LOSSES * loss_share * mean_kw;
    let load_share = (1.0 - NO_LOAD_SHARE_OF_LOSSES) * loss_share;
    let transformer_intervals = shared
        .iter()
        .map(|&(end_ms, energy, hours)| {
            let error = rng.random_range(-METER_ERROR..=METER_ERROR) * energy;
            Interval {
                end_ms,
                hours,
                energy_kwh: (energy * (1.0 + load_share) + no_load_kw * hours + error).max(0.0),
                ..Interval::default()
            }
        })
        .collect::<Vec<_>>();

    let first_ms = transformer_intervals.first().map_or(0, |i| i.end_ms);
    let last_ms = transformer_intervals.last().map_or(0, |i| i.end_ms);
    let label = Label {
        region: region.to_owned(),
        meter: id.to_owned(),
        label: "transformer".into(),
        variant: "balanced".into(),
        expected_kind: None,
        onset_ms: None,
        first_ms,
        last_ms,
        params: json!({
            "customers": customers.len(),
            "loss_share": loss_share,
            "bypassed_meter": null,
        }),
    };
    Transformer {
        label,
        intervals: transformer_intervals,
        customers: customers.to_vec(),
    }
}

/// Takes part of one clean customer's load off its meter from an onset, and labels both.
fn add_bypass(
    rng: &mut ChaCha8Rng,
    transformer: &mut Transformer,
    labels: &mut [Label],
    intervals: &mut [Vec<Interval>],
) {
    let clean: Vec<usize> = transformer
        .customers
        .iter()
        .copied()
        .filter(|&m| labels[m].label == "clean")
        .collect();
    if clean.is_empty() {
        return;
    }
    let customer = clean[rng.random_range(0..clean.len())];
    let label = &transformer.label;
    let onset_ms = pick_onset(rng, label.first_ms, label.last_ms);
    let fraction: f64 = (rng.random_range(0.2..0.8_f64) * 100.0).round() / 100.0;

    let transformer_ends: std::collections::HashSet<i64> =
        transformer.intervals.iter().map(|i| i.end_ms).collect();
    let mut bypassed_kwh = 0.0;
    let mut bypassed_seen_kwh = 0.0;
    for interval in intervals[customer]
        .iter_mut()
        .filter(|i| i.end_ms > onset_ms)
    {
        let removed = interval.energy_kwh * fraction;
        interval.energy_kwh -= removed;
        bypassed_kwh += removed;
        if transformer_ends.contains(&interval.end_ms) {
            bypassed_seen_kwh += removed;
        }
    }
    let transformer_after_kwh: f64 = transformer
        .intervals
        .iter()
        .filter(|i| i.end_ms > onset_ms)
        .map(|i| i.energy_kwh)
        .sum();
    let transformer_share = if transformer_after_kwh > 0.0 {
        bypassed_seen_kwh / transformer_after_kwh
    } else {
        0.0
    };

    let customer_label = &mut labels[customer];
    customer_label.label = "bypass".into();
    customer_label.variant = "partial".into();
    customer_label.expected_kind = Some("bypass".into());
    customer_label.onset_ms = Some(onset_ms);
    customer_label.params = json!({
        "transformer": transformer.label.meter,
        "transformer_region": transformer.label.region,
        "bypassed_fraction": fraction,
        "bypassed_kwh": bypassed_kwh,
        "transformer_share": transformer_share,
    });
    transformer.label.variant = "bypassed".into();
    transformer.label.onset_ms = Some(onset_ms);
    transformer.label.params["bypassed_meter"] = json!(customer_label.meter);
}

/// Returns the topology file's text: a header and one `transformer,region,meter` line per
/// customer.
pub(super) fn topology_csv(transformers: &[Transformer], labels: &[Label]) -> String {
    let mut text = String::from("transformer,region,meter\n");
    for transformer in transformers {
        for &customer in &transformer.customers {
            let label = &labels[customer];
            text.push_str(&format!(
                "{},{},{}\n",
                transformer.label.meter, label.region, label.meter
            ));
        }
    }
    text
}
