//! The repaired release of `always_trap`: the same plugin name, a new version, and a `detect`
//! that returns no findings. Swapping it in shows a quarantined plugin recovering.

use gridwatch_plugin_sdk::prelude::*;

struct AlwaysTrapFixed;

impl Detector for AlwaysTrapFixed {
    fn describe() -> Info {
        Info {
            name: "always-trap".into(),
            version: "1.0.1".into(),
            description: "The repaired always-trap: returns no findings".into(),
            kinds: vec!["trap".into()],
            settings: Vec::new(),
        }
    }

    fn detect(_batch: Batch) -> Vec<Finding> {
        Vec::new()
    }
}

export_detector!(AlwaysTrapFixed);
