//! Per-reading cost of detectors run as WebAssembly plugins, against the same detector logic
//! compiled natively.
//!
//! Every iteration passes one batch of 1,024 readings, one per meter, half of them flat 6.5 kW
//! loads that the mining detector alerts on and half household loads it passes over:
//!
//! - `mining/native`: the detector compiled into the daemon, doing the plugin's whole job
//!   natively: the daemon's readings go in as the detector's batch columns, and each finding
//!   comes out as a meter score and an alert record with JSON evidence;
//! - `mining/plugin`: the same crate built for `wasm32-wasip2`, run by the daemon's plugin bank,
//!   with the same input and output, plus the copies across the sandbox, the host calls for
//!   state and settings, and the checks on every finding;
//! - `mining/logic`: `gridwatch_plugin_mining::detect_with` alone, on a batch built beforehand,
//!   returning SDK findings: the part of `native` that is the detector's own logic;
//! - `trivial/plugin`: a plugin that returns nothing, which measures the host's own cost.
//!
//! Run with `cargo bench --bench plugins`; the plugins are built first (release, wasm32-wasip2,
//! in `target/plugins`).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[path = "common/plugins.rs"]
mod common;

use common::{BATCH, bank, batch, build_plugins, native_host, run_native, run_plugin, sdk_batch};
use gridwatch::plugins::MeterRef;

fn plugins(c: &mut Criterion) {
    let out = build_plugins();
    let batch = batch();
    let items = MeterRef::list(&batch);
    let native_batch = sdk_batch(&batch);
    let mut native_host = native_host();

    let mut group = c.benchmark_group("mining");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("logic", |b| {
        b.iter(|| gridwatch_plugin_mining::detect_with(&mut native_host, &native_batch).len())
    });
    group.bench_function("native", |b| {
        b.iter(|| run_native(&mut native_host, &batch))
    });
    let mut mining = bank(&out.join("gridwatch_plugin_mining.wasm"));
    group.bench_function("plugin", |b| b.iter(|| run_plugin(&mut mining, &items)));
    group.finish();

    let mut group = c.benchmark_group("trivial");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut trivial = bank(&out.join("examples/trivial.wasm"));
    group.bench_function("plugin", |b| b.iter(|| run_plugin(&mut trivial, &items)));
    group.finish();
}

criterion_group!(benches, plugins);
criterion_main!(benches);
