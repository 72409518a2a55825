//! Detector whose `detect` panics on every call.
//!
//! A panic in a `wasm32-wasip2` component writes its message to WASI stderr and then aborts,
//! which the host receives as an `unreachable` trap.

use gridwatch_plugin_sdk::prelude::*;

struct AlwaysTrap;

impl Detector for AlwaysTrap {
    fn describe() -> Info {
        Info {
            name: "always-trap".into(),
            version: "1.0.0".into(),
            description: "Panics on every detect call".into(),
            kinds: vec!["trap".into()],
            settings: Vec::new(),
        }
    }

    fn detect(_batch: Batch) -> Vec<Finding> {
        // The characters after the message would end or reorder a log line if they reached it.
        panic!("always-trap fails on every call\r\u{1b}[31m\u{2028}\u{202e}");
    }
}

export_detector!(AlwaysTrap);
