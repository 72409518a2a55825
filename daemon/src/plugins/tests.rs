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
fn file_shorter_than_header_is_named_short() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.wasm");
    std::fs::write(&path, b"\0as").unwrap();
    let error = LoadedPlugin::load(&engine(dir.path()), &path).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("the file is 3 bytes long, expected at least the 8 bytes"),
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
    let states = std::sync::Arc::new(super::PluginStates::in_memory());
    host_for(
        vec!["*".to_owned()],
        std::sync::Arc::new(super::NoHistory),
        states,
    )
}

/// Builds a store's data like [`host_with_one_meter`] for a plugin enabled in `regions`.
fn host_for(
    regions: Vec<String>,
    history: std::sync::Arc<dyn super::HistorySource>,
    states: std::sync::Arc<super::PluginStates>,
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
        states,
        history,
        fuel: (None, None),
        log_budget: Default::default(),
        history_regions: regions,
    });
    let limits = StateLimits {
        max_value_bytes: 1_024,
        max_bytes_per_call: 4_096,
        max_pending_bytes: 100_000,
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

    let states = std::sync::Arc::new(super::PluginStates::in_memory());
    let mut state = host_for(
        vec!["north".to_owned()],
        std::sync::Arc::new(ThreeHours),
        states,
    );
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

/// Builds a core module with two empty memories of the maximum sizes given, in pages, and a
/// function `grow{i}` per memory that grows it by the pages given and returns the old size, or
/// -1.
fn two_memories_module(maximum: [Option<u64>; 2]) -> Vec<u8> {
    use wasm_encoder::{
        CodeSection, ExportKind, ExportSection, Function, FunctionSection, Instruction,
        MemorySection, MemoryType, Module, TypeSection, ValType,
    };

    let mut types = TypeSection::new();
    types.ty().function([ValType::I32], [ValType::I32]);
    let mut functions = FunctionSection::new();
    let mut memories = MemorySection::new();
    let mut exports = ExportSection::new();
    let mut code = CodeSection::new();
    for index in 0..2 {
        functions.function(0);
        memories.memory(MemoryType {
            minimum: 0,
            maximum: maximum[index as usize],
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        exports.export(&format!("grow{index}"), ExportKind::Func, index);
        let mut body = Function::new([]);
        body.instruction(&Instruction::LocalGet(0))
            .instruction(&Instruction::MemoryGrow(index))
            .instruction(&Instruction::End);
        code.function(&body);
    }
    let mut module = Module::new();
    module
        .section(&types)
        .section(&functions)
        .section(&memories)
        .section(&exports)
        .section(&code);
    module.finish()
}

/// A grow function of [`two_memories_module`]: pages to add, and the old size or -1.
type Grow = wasmtime::TypedFunc<i32, i32>;

/// Instantiates [`two_memories_module`] in a store of [`host_with_one_meter`] with the memory
/// limiter installed, and returns the store and the grow functions of the two memories.
fn two_memories_instance(
    maximum: [Option<u64>; 2],
) -> (wasmtime::Store<super::host::HostState>, [Grow; 2]) {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let module = wasmtime::Module::new(&engine.engine, two_memories_module(maximum)).unwrap();
    let mut store = wasmtime::Store::new(&engine.engine, host_with_one_meter());
    store.limiter(|state| state);
    store.set_fuel(1_000_000).unwrap();
    store.set_epoch_deadline(1_000_000);
    let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
    let grow = ["grow0", "grow1"].map(|name| {
        instance
            .get_typed_func::<i32, i32>(&mut store, name)
            .unwrap()
    });
    (store, grow)
}

#[test]
fn memory_cap_covers_all_memories() {
    let (mut store, [grow0, grow1]) = two_memories_instance([None, None]);

    // The cap of `host_with_one_meter` is 1 MiB, 16 pages: 10 pages fit once, not twice.
    assert_eq!(grow0.call(&mut store, 10).unwrap(), 0);
    let error = grow1.call(&mut store, 10).unwrap_err();
    let message = format!("{error:#}");
    assert!(
        message.contains("memory limit of 1048576 bytes reached"),
        "{message}"
    );
    assert!(store.data().memory_limit_hit);
}

#[test]
fn failed_memory_growth_counts_for_nothing() {
    let (mut store, [grow0, grow1]) = two_memories_instance([Some(1), None]);

    // Growing the first memory past its maximum of one page fails every time, and the 1 MiB
    // cap still has room for 10 pages of the second one.
    for _ in 0..100 {
        assert_eq!(grow0.call(&mut store, 10).unwrap(), -1);
    }
    assert_eq!(grow1.call(&mut store, 10).unwrap(), 0);
}

#[test]
fn table_cap_covers_all_tables() {
    use wasmtime::ResourceLimiter;

    let mut state = host_with_one_meter();
    assert!(state.table_growing(0, 60_000, None).unwrap());
    assert!(!state.table_growing(0, 60_000, None).unwrap());
    // Growing the first table again counts only what it adds.
    assert!(state.table_growing(60_000, 100_000, None).unwrap());
}

#[test]
fn long_state_key_fails_call() {
    use super::bindings::gridwatch::detector::host::Host;

    let key = "k".repeat(super::host::MAX_STATE_KEY_BYTES + 1);
    for result in [
        state_call(|state| state.get_state(0, key.clone()).map(drop)),
        state_call(|state| state.set_state(0, key.clone(), vec![1])),
        state_call(|state| state.delete_state(0, key.clone())),
    ] {
        let (error, cause) = result;
        assert!(
            error.contains("state key of 1025 bytes is over the limit of 1024 bytes"),
            "{error}"
        );
        assert_eq!(cause, Some("state"));
    }
}

#[test]
fn deletions_count_toward_call_state_bytes() {
    use super::bindings::gridwatch::detector::host::Host;

    // `host_with_one_meter` allows 4,096 bytes per call: four deletions of 1,000-byte keys fit.
    let mut state = host_with_one_meter();
    for i in 0..4 {
        let key = format!("{i}{}", "k".repeat(999));
        state.delete_state(0, key).unwrap();
    }
    let error = state.delete_state(0, "k".repeat(1_000)).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("state writes of 5000 bytes in one call are over the limit of 4096 bytes"),
        "{error}"
    );
    let cause = state.limit_hit.as_ref().map(|(cause, _)| *cause);
    assert_eq!(cause, Some("state"));
}

/// Runs `call` on a fresh store's data and returns its error and the cause it recorded.
fn state_call(
    call: impl FnOnce(&mut super::host::HostState) -> wasmtime::Result<()>,
) -> (String, Option<&'static str>) {
    let mut state = host_with_one_meter();
    let error = call(&mut state).unwrap_err().to_string();
    (error, state.limit_hit.as_ref().map(|(cause, _)| *cause))
}

#[test]
fn log_budget_drops_lines_past_minute_limit() {
    use super::host::LogBudget;
    use std::time::{Duration, Instant};

    let budget = LogBudget::default();
    let start = Instant::now();
    for _ in 0..600 {
        assert!(budget.take(start).write);
    }
    let first = budget.take(start + Duration::from_secs(30));
    assert!(!first.write);
    assert!(first.first_dropped);
    let second = budget.take(start + Duration::from_secs(59));
    assert!(!second.write);
    assert!(!second.first_dropped);

    // The next minute writes again and reports the two dropped lines once.
    let next = budget.take(start + Duration::from_secs(60));
    assert!(next.write);
    assert_eq!(next.dropped_before, 2);
    assert_eq!(
        budget.take(start + Duration::from_secs(61)).dropped_before,
        0
    );
}

#[test]
fn log_message_cannot_break_or_reorder_line() {
    use super::host::clean_log_message;

    let forged = "ok\nERROR fake\u{2028}line\u{202e}desrever\u{2066}x\u{2069}";
    assert_eq!(clean_log_message(forged), "ok ERROR fake line desrever x ");
    assert_eq!(clean_log_message(&"é".repeat(1_500)).chars().count(), 1_000);
}

#[test]
fn pending_state_of_batch_is_limited() {
    use super::bindings::gridwatch::detector::host::Host;

    // Each call writes three values of 1,000 bytes, under the 4,096 bytes per call of
    // `host_for`, and keeps them for the batch until the pending limit of 100,000 bytes is
    // reached. Only state backed by a store counts pending writes.
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(&dir.path().join("store.redb")).unwrap();
    let states = std::sync::Arc::new(super::PluginStates::new(std::sync::Arc::new(store)));
    let history = std::sync::Arc::new(super::NoHistory);
    let mut state = host_for(vec!["*".to_owned()], history, states);
    let batch = state_batch(&state);
    let mut calls = 0;
    let error = loop {
        state.begin_call(Some(batch.clone()));
        let written =
            (0..3).try_for_each(|i| state.set_state(0, format!("{calls}-{i}"), vec![0; 1_000]));
        if let Err(error) = written {
            break error.to_string();
        }
        state.keep_writes();
        calls += 1;
        assert!(calls < 100, "the pending limit never tripped");
    };
    assert!(
        error.contains("state writes waiting for the batch's commit reached"),
        "{error}"
    );
    assert!(error.contains("over the limit of 100000 bytes"), "{error}");
    assert_eq!(calls, 30, "calls kept before the limit");
    let cause = state.limit_hit.as_ref().map(|(cause, _)| *cause);
    assert_eq!(cause, Some("state"));

    // Committing the batch empties the pending writes, and the plugin may write again.
    state.drop_writes();
    state.context.states.take_pending();
    state.begin_call(Some(batch));
    state.set_state(0, "after".into(), vec![0; 1_000]).unwrap();
}

/// Returns the batch of the call that `host_for` began.
fn state_batch(
    state: &super::host::HostState,
) -> std::sync::Arc<super::bindings::gridwatch::detector::types::Batch> {
    state.batch().expect("host_for begins a call")
}
