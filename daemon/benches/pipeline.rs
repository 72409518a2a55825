//! Offline throughput of the pipeline: decode, meter state, the shipped rules and the alert
//! store, on telemetry built from the bundled eemeter UK series and read back from a file.
//!
//! Run with `cargo bench -p gridwatch --bench pipeline`. The meter count is set with
//! `GRIDWATCH_BENCH_METERS` (default 1,000 meters, 168 hourly readings each).

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use gridwatch::config::Config;
use gridwatch::decode::Decoder;
use gridwatch::ingest::Message;
use gridwatch::metrics::Metrics;
use gridwatch::pipeline::{Pipeline, PipelineSettings};
use gridwatch::publish::{
    DatasetKind, Injection, MeterFilter, TelemetryOptions, build_telemetry, load_dataset,
};
use gridwatch::rules::RuleEngine;
use gridwatch::state::StateModel;
use gridwatch::store::Store;

const READINGS_PER_METER: usize = 168;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Writes `topic<TAB>payload` lines for `meters` meters and returns the file's path.
fn write_telemetry(dir: &Path, meters: usize) -> std::path::PathBuf {
    let base = load_dataset(
        DatasetKind::EemeterUk,
        &repo().join("datasets/eemeter-uk"),
        &MeterFilter::default(),
    )
    .expect("bundled eemeter data");
    let series: Vec<_> = (0..meters)
        .map(|i| {
            let mut s = base[i % base.len()].clone();
            s.meter_id = format!("{}-{i}", s.meter_id);
            s.intervals.truncate(READINGS_PER_METER);
            s
        })
        .collect();
    let rigged: Vec<String> = series
        .iter()
        .step_by(10)
        .map(|s| s.meter_id.clone())
        .collect();
    let options = TelemetryOptions {
        region: "south".into(),
        injection: Some(Injection {
            rigs: 2,
            rig_kw: 3.25,
            meters: rigged,
            from_ms: i64::MIN,
        }),
        ..TelemetryOptions::default()
    };
    let path = dir.join("telemetry.tsv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for t in build_telemetry(&series, &options) {
        file.write_all(t.topic.as_bytes()).unwrap();
        file.write_all(b"\t").unwrap();
        file.write_all(&t.payload).unwrap();
        file.write_all(b"\n").unwrap();
    }
    file.flush().unwrap();
    path
}

fn read_messages(path: &Path) -> Vec<Message> {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    file.lines()
        .map(|line| {
            let line = line.unwrap();
            let (topic, payload) = line.split_once('\t').unwrap();
            Message::offline(topic, payload.as_bytes().to_vec(), 0)
        })
        .collect()
}

fn pipeline(dir: &Path, workers: usize) -> Pipeline {
    let mut config = Config::default();
    config.rules.dir = repo().join("rules");
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(Store::open(&dir.join("bench.redb")).unwrap());
    let rules = Arc::new(RuleEngine::load(config.rules.clone(), metrics.clone()).unwrap());
    let decoder = Decoder::new(
        &config.mqtt.topic_layout,
        config.decode.clone(),
        config.mqtt.max_payload_bytes,
    )
    .unwrap();
    config.state.workers = workers;
    let model = StateModel::new(&config.state, config.decode.max_power_kw);
    Pipeline::new(
        decoder,
        model,
        rules,
        store,
        metrics,
        PipelineSettings::from_config(&config),
    )
}

fn offline_throughput(c: &mut Criterion) {
    let meters: usize = std::env::var("GRIDWATCH_BENCH_METERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let data_dir = tempfile::tempdir().unwrap();
    let messages = read_messages(&write_telemetry(data_dir.path(), meters));
    let now_ms = chrono::Utc::now().timestamp_millis();
    let batch = Config::default().store.commit_max_readings;

    let mut group = c.benchmark_group("pipeline");
    group.sample_size(10);
    group.throughput(Throughput::Elements(messages.len() as u64));
    for workers in [1, 2] {
        let name = format!("offline_{meters}_meters_{workers}_workers");
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let dir = tempfile::tempdir().unwrap();
                    (pipeline(dir.path(), workers), dir)
                },
                |(mut pipeline, _dir)| {
                    for chunk in messages.chunks(batch) {
                        pipeline.process_batch(chunk, now_ms).unwrap();
                    }
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, offline_throughput);
criterion_main!(benches);
