//! The public functions the daemon's plugin benchmark calls, used from outside the crate.

use gridwatch_plugin_sdk::prelude::*;

#[test]
fn settings_and_detect_with_are_public() {
    let specs = gridwatch_plugin_mining::settings();
    assert!(specs.iter().any(|spec| spec.name == "min_step_kw"));

    let mut host = MemoryHost::with_defaults(&specs);
    let batch = BatchBuilder::new().build();
    let found = gridwatch_plugin_mining::detect_with(&mut host, &batch);
    assert!(found.is_empty(), "{found:?}");
}
