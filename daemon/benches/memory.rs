//! Memory per meter: resident set size of 100,000 meters that each received a week of hourly
//! readings, stored the way the pipeline stores them (a map from `region/meter_id` to state).
//!
//! Run with `cargo bench -p gridwatch --bench memory`; `GRIDWATCH_BENCH_METERS` sets the count.

use std::collections::HashMap;

use gridwatch::config::StateConfig;
use gridwatch::decode::Reading;
use gridwatch::state::{MeterState, StateModel};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn main() {
    let meters: usize = std::env::var("GRIDWATCH_BENCH_METERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let model = StateModel::new(&StateConfig::default(), 10_000.0);
    let start_ms = 1_700_000_000_000 / 3_600_000 * 3_600_000;
    let mut reading = Reading::new("south", "", 0, 0.0);
    reading.power_w = Some(500.0);

    let before = rss_bytes();
    let mut states: HashMap<String, MeterState> = HashMap::new();
    let mut encoded = 0usize;
    for m in 0..meters {
        reading.meter_id = format!("meter-{m:07}");
        let mut state = model.new_state();
        for hour in 0..=168 {
            reading.ts_ms = start_ms + hour * 3_600_000;
            reading.energy_import_kwh = 1_000.0 + hour as f64 * 0.5;
            model.apply(&mut state, &reading);
        }
        if m == 0 {
            encoded = postcard::to_allocvec(&state).unwrap().len();
        }
        states.insert(format!("south/{}", reading.meter_id), state);
    }
    let after = rss_bytes();
    let per_meter = (after - before) as f64 / meters as f64;
    println!("meters: {meters}");
    println!(
        "resident set growth: {:.1} MiB",
        (after - before) as f64 / 1048576.0
    );
    println!("per meter in memory: {per_meter:.0} bytes");
    println!(
        "per 100k meters: {:.1} MiB",
        per_meter * 100_000.0 / 1048576.0
    );
    println!("per meter in redb (postcard value): {encoded} bytes");
    assert_eq!(states.len(), meters);
}
