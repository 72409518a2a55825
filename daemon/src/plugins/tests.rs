//! Unit tests of the plugin host that need no built plugin; the fixtures are exercised by the
//! integration tests.

use super::PluginError;
use super::engine::PluginEngine;
use super::load::LoadedPlugin;
use crate::config::PluginsConfig;

fn engine(dir: &std::path::Path) -> PluginEngine {
    let config = PluginsConfig {
        cache_dir: dir.join("cache"),
        ..PluginsConfig::default()
    };
    PluginEngine::new(&config).expect("engine builds with default limits")
}

#[test]
fn random_bytes_are_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("noise.wasm");
    std::fs::write(&path, [0x13, 0x37, 0xbe, 0xef, 1, 2, 3, 4, 5, 6]).unwrap();
    let error = LoadedPlugin::load(&engine(dir.path()), &path).unwrap_err();
    assert!(
        matches!(error, PluginError::NotComponent { .. }),
        "unexpected error: {error}"
    );
    assert!(error.to_string().contains("13 37 be ef"), "{error}");
}

#[test]
fn core_module_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("core.wasm");
    std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
    let error = LoadedPlugin::load(&engine(dir.path()), &path).unwrap_err();
    assert!(
        error.to_string().contains("core WebAssembly module"),
        "{error}"
    );
}

#[test]
fn truncated_component_fails_to_compile() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.wasm");
    std::fs::write(&path, b"\0asm\x0d\0\x01\0\x01\xff").unwrap();
    let error = LoadedPlugin::load(&engine(dir.path()), &path).unwrap_err();
    assert!(
        matches!(error, PluginError::Compile { .. }),
        "unexpected error: {error}"
    );
}

/// Builds a store's data whose call examines one reading of meter `north/m-1`.
fn host_with_one_meter() -> super::host::HostState {
    host_for(vec!["*".to_owned()], std::sync::Arc::new(super::NoHistory))
}

/// Builds a store's data like [`host_with_one_meter`] for a plugin enabled in `regions`.
fn host_for(
    regions: Vec<String>,
    history: std::sync::Arc<dyn super::HistorySource>,
) -> super::host::HostState {
    use std::sync::Arc;

    use super::bank::MeterRef;
    use super::host::{HostState, PluginContext, StateLimits};
    use crate::decode::Reading;
    use crate::state::{Interval, IntervalKind, MeterSnapshot};

    let reading = Reading::new("north", "m-1", 1_000, 5.0);
    let snapshot = MeterSnapshot {
        region: "north".into(),
        meter_id: "m-1".into(),
        register_kwh: 5.0,
        interval: Interval {
            kind: IntervalKind::First,
            start_ms: 1_000,
            end_ms: 1_000,
            energy_kwh: 0.0,
        },
        windows: Vec::new(),
        register_reversals: 0,
        readings: 1,
        scores: Vec::new(),
    };
    let items = [MeterRef {
        index: 0,
        reading: &reading,
        snapshot: &snapshot,
    }];
    let context = Arc::new(PluginContext {
        name: "test".into(),
        settings: super::Settings::default(),
        states: Arc::new(super::PluginStates::in_memory()),
        history,
        fuel: (None, None),
        history_regions: regions,
    });
    let limits = StateLimits {
        max_value_bytes: 1_024,
        max_bytes_per_call: 4_096,
    };
    let mut state = HostState::new(context, 1 << 20, limits);
    let batch = super::convert::batch(
        &items,
        &[0],
        "test",
        &super::convert::EarlierScores::default(),
    );
    state.begin_call(Some(Arc::new(batch)));
    state
}

#[test]
fn state_of_batch_meter_round_trips() {
    use super::bindings::gridwatch::detector::host::Host;

    let mut state = host_with_one_meter();
    state.set_state(0, "k".into(), vec![7]).unwrap();
    assert_eq!(state.get_state(0, "k".into()).unwrap(), Some(vec![7]));
}

#[test]
fn meter_index_outside_batch_fails_call() {
    use super::bindings::gridwatch::detector::host::Host;

    let mut state = host_with_one_meter();
    let error = state.get_state(1, "k".into()).unwrap_err();
    assert!(
        error.to_string().contains("meter index 1 is out of range"),
        "{error}"
    );
    let cause = state.limit_hit.as_ref().map(|(cause, _)| *cause);
    assert_eq!(cause, Some("trap"));
}

#[test]
fn meter_index_without_batch_fails_call() {
    use super::bindings::gridwatch::detector::host::Host;

    let mut state = host_with_one_meter();
    state.end_call();
    assert!(state.history(0, 24).is_err());
}

/// Three hours of 1 kWh for every meter.
struct ThreeHours;

impl super::HistorySource for ThreeHours {
    fn history(&self, _key: &str, hours: u32) -> crate::state::RecentHours {
        let count = hours.min(3) as usize;
        crate::state::RecentHours {
            start_ms: 7_200_000,
            energy_kwh: vec![1.0; count],
            covered_secs: vec![3_600; count],
        }
    }
}

#[test]
fn meter_history_reads_only_allowed_regions() {
    use super::bindings::gridwatch::detector::host::Host;

    let mut state = host_for(vec!["north".to_owned()], std::sync::Arc::new(ThreeHours));
    let north = state
        .meter_history("north".into(), "m-2".into(), 24)
        .unwrap();
    assert_eq!(north.start_ms, 7_200_000);
    assert_eq!(north.energy_kwh, [1.0, 1.0, 1.0]);
    assert_eq!(north.covered_secs, [3_600, 3_600, 3_600]);

    let south = state
        .meter_history("south".into(), "m-2".into(), 24)
        .unwrap();
    assert_eq!(south.start_ms, 0);
    assert!(south.energy_kwh.is_empty());
    assert!(south.covered_secs.is_empty());

    let own = state.history(0, 2).unwrap();
    assert_eq!(own.energy_kwh, [1.0, 1.0]);
}
