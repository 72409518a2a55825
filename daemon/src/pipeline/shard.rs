//! One shard of meter state: applies readings and runs rules for the meters it owns.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, LazyLock};

use prometheus_client::metrics::counter::Counter;

use crate::decode::Reading;
use crate::metrics::Metrics;
use crate::rules::RuleEngine;
use crate::state::{IntervalKind, MeterState, StateModel};
use crate::store::{AlertWrite, Store};

/// Hasher that assigns meters to shards, fixed for the life of the process.
static SHARD_HASHER: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// Returns the shard that owns the reading's meter.
pub(super) fn shard_of(reading: &Reading, shards: usize) -> usize {
    let hash = SHARD_HASHER.hash_one((&reading.region, &reading.meter_id));
    (hash % shards as u64) as usize
}

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

/// Effects of one shard's part of a batch.
#[derive(Default)]
pub(super) struct ShardOutput {
    /// Meters whose state changed, by `region/meter_id`.
    pub(super) dirty: HashSet<String>,
    /// Alerts raised, each with the index of its message in the batch.
    pub(super) alerts: Vec<(usize, AlertWrite)>,
    /// Readings accepted.
    pub(super) accepted: usize,
}

/// Meter state of the meters one shard owns, by `region/meter_id`.
#[derive(Default)]
pub(super) struct Shard {
    meters: HashMap<String, MeterState>,
}

impl Shard {
    pub(super) fn len(&self) -> usize {
        self.meters.len()
    }

    /// Applies readings in batch order and runs the rules on each.
    pub(super) fn apply(
        &mut self,
        context: &ShardContext,
        readings: Vec<(usize, Reading)>,
    ) -> ShardOutput {
        let mut output = ShardOutput::default();
        for (index, reading) in readings {
            self.accept(context, index, &reading, &mut output);
        }
        output
    }

    fn accept(
        &mut self,
        context: &ShardContext,
        index: usize,
        reading: &Reading,
        output: &mut ShardOutput,
    ) {
        let key = format!("{}/{}", reading.region, reading.meter_id);
        let state = self
            .meters
            .entry(key.clone())
            .or_insert_with(|| context.load_state(&key));
        let interval = context.model.apply(state, reading);
        context.interval_counters[interval.kind as usize].inc();
        context.metrics.readings_accepted.inc();
        output.accepted += 1;
        if matches!(interval.kind, IntervalKind::Duplicate | IntervalKind::Late) {
            // Already reflected in the state: running rules again would count a second firing.
            return;
        }

        let snapshot = context.model.snapshot(state, reading, interval);
        output.dirty.insert(key);
        for draft in context.rules.evaluate(reading, &snapshot) {
            let alert = AlertWrite {
                region: reading.region.clone(),
                meter: reading.meter_id.clone(),
                ts_ms: reading.ts_ms,
                draft,
            };
            output.alerts.push((index, alert));
        }
    }

    /// Returns the states of the given meters, for the commit.
    pub(super) fn dirty_states<'a>(
        &'a self,
        dirty: &'a HashSet<String>,
    ) -> impl Iterator<Item = (&'a String, &'a MeterState)> + 'a {
        dirty
            .iter()
            .filter_map(|key| self.meters.get(key).map(|state| (key, state)))
    }
}
