//! Energy-balance detector: unmetered energy between a transformer meter and its customers.
//!
//! The `topology` setting lists the customer meters each transformer meter feeds (see
//! [`topology::parse`]). For every reading of a listed transformer, the detector judges the
//! complete hours from `lag_hours` back, once the transformer's and every customer's readings
//! cover them. It fetches the hours with the `meter-history` import, because the customers'
//! readings are rarely in the same batch. An hour still missing a customer's readings
//! `max_wait_hours` after the lag is skipped.
//!
//! Each judged hour adds the transformer's energy and its deficit (transformer energy minus
//! the customers' sum) to the last `detect_hours` hours. Their deficit is compared with the
//! losses the transformer is expected to have. Until `baseline_hours` hours are learned, those
//! are `max_loss_share - min_excess_share` of its energy. Afterwards they follow a no-load loss
//! plus a load share fitted to the transformer's own hours without excess ([`LossFit`]). An
//! excess of at least `min_excess_share` of the energy raises a `bypass` alert on the
//! transformer meter. The evidence ranks the customers by how well a drop in their metered
//! load explains the missing energy ([`Feeder::rank`]).

mod balance;
pub mod topology;

use gridwatch_plugin_sdk::prelude::*;

pub use balance::{
    Balance, Deficit, Feeder, HourStatus, JudgedHour, Limits, LossFit, LossModel, pearson,
};
use balance::{HOUR_MS, hours_of};
use topology::Customer;

/// The energy-balance detector.
pub struct EnergyBalance;

const KIND: &str = "bypass";

impl Detector for EnergyBalance {
    fn describe() -> Info {
        Info {
            name: "energy-balance".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Energy at a transformer meter that its customers' meters do not record, \
                          beyond its technical losses, with the customers most likely responsible"
                .into(),
            kinds: vec![KIND.into()],
            settings: settings(),
        }
    }

    fn detect(batch: Batch) -> Vec<Finding> {
        let outcome = detect_with(&mut WasmHost, &batch);
        for problem in &outcome.problems {
            log(Level::Error, problem);
        }
        outcome.findings
    }
}

export_detector!(EnergyBalance);

/// Findings and problems of one call.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Findings of the call.
    pub findings: Vec<Finding>,
    /// Problems with topology texts, each reported by the call that first parses the text.
    pub problems: Vec<String>,
}

/// Runs the detector on a batch with the given host; the plugin passes the daemon's, native
/// tests pass a [`MemoryHost`].
pub fn detect_with(host: &mut impl Host, batch: &Batch) -> Outcome {
    let mut outcome = Outcome::default();
    let mut regions: Vec<Option<Region>> = Vec::new();
    regions.resize_with(batch.regions.len(), || None);
    let mut balances: Vec<Option<Balance>> = vec![None; batch.meter_count()];

    for reading in batch.readings() {
        let meter = reading.meter();
        let region_index = batch.meter_region[meter.index() as usize] as usize;
        let region = regions[region_index]
            .get_or_insert_with(|| Region::load(host, meter.region(), &mut outcome.problems));
        let Some(topology) = &region.topology else {
            continue;
        };
        let Some(customers) = topology.customers(meter.id()) else {
            continue;
        };
        let balance =
            balances[meter.index() as usize].get_or_insert_with(|| Balance::load(host, meter));
        if let Some(finding) = check(host, &region.limits, balance, reading, customers) {
            outcome.findings.push(finding);
        }
    }

    for (index, balance) in balances.iter().enumerate() {
        if let Some(balance) = balance {
            balance.store(host, batch.meter_at(index));
        }
    }
    outcome
}

/// A region's limits and topology, read once per call.
struct Region {
    limits: Limits,
    topology: Option<std::sync::Arc<topology::Topology>>,
}

impl Region {
    fn load(host: &mut impl Host, region: &str, problems: &mut Vec<String>) -> Region {
        let limits = Limits::for_region(host, region);
        let text = host.setting_text(region, "topology");
        if text.trim().is_empty() {
            return Region {
                limits,
                topology: None,
            };
        }
        let (parsed, fresh) = topology::cached(region, &text);
        let topology = match parsed {
            Ok(topology) => Some(topology),
            Err(problem) => {
                if fresh {
                    problems.push(format!(
                        "invalid topology setting of region '{region}', no transformer is \
                         checked there: {problem}"
                    ));
                }
                None
            }
        };
        Region { limits, topology }
    }
}

/// Judges the transformer's hours that are ready at this reading and returns a finding for
/// the last one that shows a deficit.
fn check(
    host: &mut impl Host,
    limits: &Limits,
    balance: &mut Balance,
    reading: Reading<'_>,
    customers: &[Customer],
) -> Option<Finding> {
    let now_ms = reading.timestamp_ms();
    let ready_end_ms = now_ms.div_euclid(HOUR_MS) * HOUR_MS - limits.lag_hours * HOUR_MS;
    if balance
        .next_hour_ms
        .is_some_and(|next| next + HOUR_MS > ready_end_ms)
    {
        return None;
    }

    let meter = reading.meter();
    let transformer = hours_of(host, meter.region(), meter.id(), limits.window_hours);
    let oldest_ms = *transformer.keys().min()?;
    let customer_hours = customers
        .iter()
        .map(|c| hours_of(host, &c.region, &c.meter, limits.window_hours))
        .collect();
    let feeder = Feeder {
        transformer,
        customers,
        customer_hours,
    };

    let mut start_ms = balance.next_hour_ms.unwrap_or(oldest_ms).max(oldest_ms);
    let mut last = None;
    while start_ms + HOUR_MS <= ready_end_ms {
        match feeder.status(limits, start_ms) {
            HourStatus::Ready(transformer_kwh, customers_kwh) => {
                let hour = JudgedHour {
                    start_ms,
                    transformer_kwh,
                    deficit_kwh: transformer_kwh - customers_kwh,
                };
                last = balance.judge(limits, hour).or(last);
            }
            HourStatus::Missing => {}
            HourStatus::Waiting => {
                let wait_hours = limits.lag_hours + limits.max_wait_hours;
                let waited_until_ms = start_ms + HOUR_MS + wait_hours * HOUR_MS;
                if waited_until_ms > now_ms {
                    break;
                }
            }
        }
        start_ms += HOUR_MS;
    }
    balance.next_hour_ms = Some(start_ms);

    let deficit = last?;
    let ranked = feeder.rank(limits, &deficit);
    Some(finding(limits, reading, &feeder, &deficit, &ranked))
}

fn finding(
    limits: &Limits,
    reading: Reading<'_>,
    feeder: &Feeder<'_>,
    deficit: &Deficit,
    ranked: &[(usize, f64)],
) -> Finding {
    let suspects: Vec<(&Customer, f64)> = ranked
        .iter()
        .take(limits.max_suspects)
        .map(|(index, score)| (&feeder.customers[*index], *score))
        .collect();
    let names: Vec<&str> = suspects.iter().map(|(c, _)| c.meter.as_str()).collect();
    let listed: Vec<String> = suspects
        .iter()
        .take(3)
        .map(|(c, score)| format!("{} ({score:.2})", c.meter))
        .collect();
    let unmetered_kwh = deficit.excess_share * deficit.transformer_kwh;
    let message = format!(
        "{:.1} % of the transformer's {:.1} kWh over {} h is unmetered beyond {:.1} % expected \
         losses; most likely: {}",
        deficit.excess_share * 100.0,
        deficit.transformer_kwh,
        deficit.hours,
        deficit.expected_loss_share * 100.0,
        listed.join(", ")
    );
    let score = (deficit.excess_share / (2.0 * limits.min_excess_share)).clamp(0.0, 1.0);
    let severity = if deficit.excess_share >= limits.high_excess_share {
        Severity::High
    } else {
        Severity::Medium
    };

    let mut evidence = vec![
        entry("customers", Value::Integer(feeder.customers.len() as i64)),
        entry("hour_start_ms", Value::Integer(deficit.hour_start_ms)),
        entry("onset_ms", Value::Integer(deficit.onset_ms)),
        entry("hours", Value::Integer(deficit.hours as i64)),
        entry("transformer_kwh", Value::Number(deficit.transformer_kwh)),
        entry("deficit_kwh", Value::Number(deficit.deficit_kwh)),
        entry("unmetered_kwh", Value::Number(unmetered_kwh)),
        entry(
            "expected_loss_share",
            Value::Number(deficit.expected_loss_share),
        ),
        entry("no_load_kwh", Value::Number(deficit.model.no_load_kwh)),
        entry("load_loss_share", Value::Number(deficit.model.load_share)),
        entry("excess_share", Value::Number(deficit.excess_share)),
        entry("suspects", Value::Text(names.join(","))),
        entry("score", Value::Number(score)),
    ];
    for (rank, (customer, suspect_score)) in suspects.iter().enumerate() {
        let number = rank + 1;
        let name = format!("suspect_{number}");
        evidence.push(entry(name, Value::Text(customer.meter.clone())));
        let name = format!("suspect_{number}_region");
        evidence.push(entry(name, Value::Text(customer.region.clone())));
        let name = format!("suspect_{number}_score");
        evidence.push(entry(name, Value::Number(*suspect_score)));
    }
    Finding {
        reading: reading.index(),
        kind: KIND.into(),
        severity,
        score,
        message,
        evidence,
    }
}

/// Returns the settings the detector declares, with their defaults.
pub fn settings() -> Vec<SettingSpec> {
    vec![
        setting_spec(
            "topology",
            Value::Text(String::new()),
            "Customer meters of each transformer meter of the region, one \
             `transformer,region,meter` line each; usually `{ file = \"topology.csv\" }`",
        ),
        setting_spec(
            "lag_hours",
            Value::Integer(1),
            "Hours after an hour ends, in the transformer's readings, before it is judged",
        ),
        setting_spec(
            "max_wait_hours",
            Value::Integer(48),
            "Hours past the lag an hour waits for missing customer readings before it is skipped",
        ),
        setting_spec(
            "window_hours",
            Value::Integer(168),
            "Hours of history read per meter; at most the longest [state] window",
        ),
        setting_spec(
            "baseline_hours",
            Value::Integer(24),
            "Judged hours that form a transformer's loss model, and its time constant",
        ),
        setting_spec(
            "detect_hours",
            Value::Integer(6),
            "Judged hours whose summed deficit is compared with the expected losses",
        ),
        setting_spec(
            "min_excess_share",
            Value::Number(0.03),
            "Deficit share of transformer energy above the expected losses that raises an alert",
        ),
        setting_spec(
            "max_loss_share",
            Value::Number(0.10),
            "Deficit share of transformer energy that raises an alert whatever losses were learned, \
             at the transformer's mean load",
        ),
        setting_spec(
            "high_excess_share",
            Value::Number(0.10),
            "Excess share from which the alert is high instead of medium",
        ),
        setting_spec(
            "min_hour_coverage",
            Value::Number(0.9),
            "Share of an hour that a meter's readings must cover for the hour to be judged",
        ),
        setting_spec(
            "compare_hours",
            Value::Integer(24),
            "Hours before the deficit's onset that each customer's drop is measured against",
        ),
        setting_spec(
            "max_suspects",
            Value::Integer(5),
            "Customers listed in the alert's evidence, most likely first",
        ),
    ]
}

#[cfg(test)]
mod tests;
