//! One shard of meter state: applies readings and runs rules for the meters it owns.
//!
//! A batch passes a shard twice: first every reading is applied to its meter's state, then,
//! after the plugins have scored the batch, the rules run on each reading.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, LazyLock};

use parking_lot::RwLock;
use prometheus_client::metrics::counter::Counter;

use crate::decode::Reading;
use crate::metrics::Metrics;
use crate::rules::RuleEngine;
use crate::state::{IntervalKind, MeterSnapshot, MeterState, StateModel};
use crate::store::{AlertWrite, Store};

/// Hasher that assigns meters to shards, fixed for the life of the process.
static SHARD_HASHER: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// Returns the shard that owns the meter `region/meter_id`.
pub(super) fn shard_of(key: &str, shards: usize) -> usize {
    let hash = SHARD_HASHER.hash_one(key);
    (hash % shards as u64) as usize
}

/// Returns the key meter state is kept under.
pub(super) fn meter_key(reading: &Reading) -> String {
    format!("{}/{}", reading.region, reading.meter_id)
}

/// Meter states of one shard, by `region/meter_id`, shared with the plugins' history import.
pub(super) type MeterMap = Arc<RwLock<HashMap<String, MeterState>>>;

/// What every shard shares: the state model, rules, store and metrics.
pub(super) struct ShardContext {
    model: StateModel,
    rules: Arc<RuleEngine>,
    pub(super) store: Arc<Store>,
    pub(super) metrics: Arc<Metrics>,
    /// `register_intervals` counters by `IntervalKind as usize`, so the hot path allocates no
    /// label set.
    interval_counters: Vec<Counter>,
}

impl ShardContext {
    pub(super) fn new(
        model: StateModel,
        rules: Arc<RuleEngine>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
    ) -> ShardContext {
        let interval_counters = IntervalKind::ALL
            .iter()
            .map(|kind| {
                let labels = vec![("kind", kind.as_str().to_owned())];
                metrics.register_intervals.get_or_create(&labels).clone()
            })
            .collect();
        ShardContext {
            model,
            rules,
            store,
            metrics,
            interval_counters,
        }
    }

    fn load_state(&self, key: &str) -> MeterState {
        match self.store.load_meter(key) {
            Ok(Some(state)) => state,
            Ok(None) => self.model.new_state(),
            Err(error) => {
                // NOTE: the meter restarts from empty state, which loses its history.
                tracing::error!(meter = key, %error, "failed to load meter state; starting afresh");
                self.model.new_state()
            }
        }
    }
}

/// Splits each shard's readings into rounds in which each meter appears at most once: round
/// `k` has the `k`-th reading of every meter, in batch order. A batch without repeated meters
/// is one round.
pub(super) fn rounds(routed: Vec<Vec<(usize, Reading)>>) -> Vec<Vec<Vec<(usize, Reading)>>> {
    let repeats = routed.iter().any(|readings| {
        let mut seen = HashSet::with_capacity(readings.len());
        !readings
            .iter()
            .all(|(_, r)| seen.insert((r.region.as_str(), r.meter_id.as_str())))
    });
    if !repeats {
        return vec![routed];
    }
    let shards = routed.len();
    let mut rounds: Vec<Vec<Vec<(usize, Reading)>>> = Vec::new();
    for (shard, readings) in routed.into_iter().enumerate() {
        let mut seen: HashMap<(String, String), usize> = HashMap::new();
        for (index, reading) in readings {
            let round = seen
                .entry((reading.region.clone(), reading.meter_id.clone()))
                .or_insert(0);
            if *round == rounds.len() {
                rounds.push(vec![Vec::new(); shards]);
            }
            rounds[*round][shard].push((index, reading));
            *round += 1;
        }
    }
    rounds
}

/// A reading that took effect, with its meter's state, waiting for plugins and rules.
pub(super) struct Applied {
    /// Position of its message in the batch.
    pub(super) index: usize,
    /// Its meter's key, `region/meter_id`.
    pub(super) key: String,
    pub(super) reading: Reading,
    pub(super) snapshot: MeterSnapshot,
}

/// Effects of one shard's part of a batch.
#[derive(Default)]
pub(super) struct ShardOutput {
    /// Meters whose state changed, by `region/meter_id`.
    pub(super) dirty: HashSet<String>,
    /// Readings that took effect, in batch order within each round (see [`rounds`]).
    pub(super) applied: Vec<Applied>,
    /// Alerts raised, each with the index of its message in the batch.
    pub(super) alerts: Vec<(usize, AlertWrite)>,
    /// Readings accepted.
    pub(super) accepted: usize,
}

/// Meter state of the meters one shard owns.
#[derive(Default)]
pub(super) struct Shard {
    pub(super) meters: MeterMap,
}

impl ShardOutput {
    /// Appends the effects of a later round of the same batch.
    pub(super) fn absorb(&mut self, later: ShardOutput) {
        self.dirty.extend(later.dirty);
        self.applied.extend(later.applied);
        self.alerts.extend(later.alerts);
        self.accepted += later.accepted;
    }
}

impl Shard {
    pub(super) fn len(&self) -> usize {
        self.meters.read().len()
    }

    /// Applies readings to meter state in batch order.
    pub(super) fn apply(
        &self,
        context: &ShardContext,
        readings: Vec<(usize, Reading)>,
    ) -> ShardOutput {
        let mut output = ShardOutput::default();
        let mut meters = self.meters.write();
        for (index, reading) in readings {
            let key = meter_key(&reading);
            let state = meters
                .entry(key.clone())
                .or_insert_with(|| context.load_state(&key));
            let interval = context.model.apply(state, &reading);
            context.interval_counters[interval.kind as usize].inc();
            context.metrics.readings_accepted.inc();
            output.accepted += 1;
            if matches!(interval.kind, IntervalKind::Duplicate | IntervalKind::Late) {
                // Already reflected in the state: running plugins and rules again would count a
                // second firing.
                if !reading.events.is_empty() {
                    let labels = vec![("interval", interval.kind.as_str().to_owned())];
                    context
                        .metrics
                        .events_not_evaluated
                        .get_or_create(&labels)
                        .inc_by(reading.events.len() as u64);
                    tracing::debug!(
                        meter = %reading.meter_id,
                        region = %reading.region,
                        ts_ms = reading.ts_ms,
                        events = ?reading.events,
                        interval = interval.kind.as_str(),
                        "event codes of a reading that takes no effect were not evaluated"
                    );
                }
                continue;
            }
            let snapshot = context.model.snapshot(state, &reading, interval);
            output.dirty.insert(key.clone());
            output.applied.push(Applied {
                index,
                key,
                reading,
                snapshot,
            });
        }
        output
    }

    /// Runs the rules on every applied reading.
    pub(super) fn evaluate(context: &ShardContext, output: &mut ShardOutput) {
        for applied in &output.applied {
            for draft in context.rules.evaluate(&applied.reading, &applied.snapshot) {
                let alert = AlertWrite {
                    region: applied.reading.region.clone(),
                    meter: applied.reading.meter_id.clone(),
                    ts_ms: applied.reading.ts_ms,
                    draft,
                };
                output.alerts.push((applied.index, alert));
            }
        }
    }

    /// Records plugin scores in the meters' state and in the snapshots the rules will read.
    pub(super) fn set_scores(&self, output: &mut ShardOutput, scores: &[(String, String, f64)]) {
        if scores.is_empty() {
            return;
        }
        let mut meters = self.meters.write();
        for (key, plugin, score) in scores {
            if let Some(state) = meters.get_mut(key) {
                state.set_score(plugin, *score);
            }
        }
        for applied in &mut output.applied {
            if let Some(state) = meters.get(&applied.key) {
                applied.snapshot.scores.clone_from(&state.scores);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::rounds;
    use crate::decode::Reading;

    /// Routes readings of the given meters, one per message, to shards by a fixed map.
    fn routed(meters: &[(&str, usize)]) -> Vec<Vec<(usize, Reading)>> {
        let mut routed = vec![Vec::new(), Vec::new()];
        for (index, (meter, shard)) in meters.iter().enumerate() {
            let reading = Reading::new("north", meter, 1_000 * index as i64, 1.0);
            routed[*shard].push((index, reading));
        }
        routed
    }

    fn indexes(rounds: &[Vec<Vec<(usize, Reading)>>]) -> Vec<Vec<Vec<usize>>> {
        rounds
            .iter()
            .map(|round| {
                let shard = |readings: &Vec<(usize, Reading)>| {
                    readings.iter().map(|(index, _)| *index).collect()
                };
                round.iter().map(shard).collect()
            })
            .collect()
    }

    #[test]
    fn batch_without_repeats_is_one_round() {
        let split = rounds(routed(&[("a", 0), ("b", 1), ("c", 0)]));
        assert_eq!(indexes(&split), vec![vec![vec![0, 2], vec![1]]]);
    }

    #[test]
    fn repeated_meter_goes_to_later_rounds() {
        let meters = [("a", 0), ("b", 1), ("a", 0), ("c", 0), ("a", 0), ("b", 1)];
        let split = rounds(routed(&meters));
        let expected = vec![
            vec![vec![0, 3], vec![1]],
            vec![vec![2], vec![5]],
            vec![vec![4], vec![]],
        ];
        assert_eq!(indexes(&split), expected);
    }
}
