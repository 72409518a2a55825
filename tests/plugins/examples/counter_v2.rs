//! Version 2.0.0 of the `counter` detector, which counts each meter's readings in plugin
//! state. Swapping it for `counter_v1` tests that state survives a version change.

use gridwatch_plugin_sdk::prelude::*;
use gridwatch_test_plugins::counter;

const VERSION: &str = "2.0.0";

struct Counter;

impl Detector for Counter {
    fn describe() -> Info {
        counter::info(VERSION)
    }

    fn detect(batch: Batch) -> Vec<Finding> {
        counter::detect(&batch, VERSION)
    }
}

export_detector!(Counter);
