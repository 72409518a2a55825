//! Cost of the mining detector as a plugin over the same detector compiled natively, measured
//! in pairs so that both sides see the same machine.
//!
//! Criterion's `plugins` benchmark times each side alone, one after the other; on a shared
//! machine their medians can drift apart by a tenth between runs. Here every round times
//! `ITERATIONS` native runs and `ITERATIONS` plugin runs back to back, in alternating order, and
//! the ratio is taken within the round. The input and output are those of
//! `mining/native` and `mining/plugin` in the `plugins` benchmark.
//!
//! Run with `cargo bench --bench plugin_ratio`.

use std::time::{Duration, Instant};

#[path = "common/plugins.rs"]
#[allow(
    dead_code,
    reason = "shared with the plugins benchmark, which uses more of it"
)]
mod common;

use common::{BATCH, bank, batch, build_plugins, native_host, run_native, run_plugin};
use gridwatch::plugins::MeterRef;

/// Rounds of the measurement.
const ROUNDS: usize = 61;
/// Runs of each side per round.
const ITERATIONS: u32 = 40;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and gets one round.
    let rounds = if std::env::args().any(|arg| arg == "--bench") {
        ROUNDS
    } else {
        1
    };
    let out = build_plugins();
    let batch = batch();
    let items = MeterRef::list(&batch);
    let mut host = native_host();
    let mut plugin = bank(&out.join("gridwatch_plugin_mining.wasm"));

    let mut time_native = |runs: u32| {
        let started = Instant::now();
        for _ in 0..runs {
            std::hint::black_box(run_native(&mut host, &batch));
        }
        started.elapsed()
    };
    let mut time_plugin = |runs: u32| {
        let started = Instant::now();
        for _ in 0..runs {
            std::hint::black_box(run_plugin(&mut plugin, &items));
        }
        started.elapsed()
    };
    // Warm-up: caches, the allocator's pools and the plugin instance.
    time_native(ITERATIONS);
    time_plugin(ITERATIONS);

    let mut native_ms = Vec::with_capacity(rounds);
    let mut plugin_ms = Vec::with_capacity(rounds);
    let mut ratios = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let (native, plugin) = if round % 2 == 0 {
            let native = time_native(ITERATIONS);
            (native, time_plugin(ITERATIONS))
        } else {
            let plugin = time_plugin(ITERATIONS);
            (time_native(ITERATIONS), plugin)
        };
        let per_run = |total: Duration| total.as_secs_f64() * 1e3 / f64::from(ITERATIONS);
        native_ms.push(per_run(native));
        plugin_ms.push(per_run(plugin));
        ratios.push(plugin.as_secs_f64() / native.as_secs_f64());
    }
    let (native_q, plugin_q, ratio_q) = (
        quartiles(&mut native_ms),
        quartiles(&mut plugin_ms),
        quartiles(&mut ratios),
    );
    println!(
        "mining, {rounds} rounds of {ITERATIONS} runs per side, {BATCH} readings per run \
         (median, quartiles):"
    );
    println!(
        "  native         {:.3} ms  ({:.3} to {:.3})",
        native_q.1, native_q.0, native_q.2
    );
    println!(
        "  plugin         {:.3} ms  ({:.3} to {:.3})",
        plugin_q.1, plugin_q.0, plugin_q.2
    );
    println!(
        "  plugin/native  {:.2}      ({:.2} to {:.2})",
        ratio_q.1, ratio_q.0, ratio_q.2
    );
}

/// Returns the lower quartile, the median and the upper quartile.
fn quartiles(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.5), at(0.75))
}
