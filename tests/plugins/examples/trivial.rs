//! Detector that returns no findings and does nothing else, to measure the host's cost per
//! reading.

use gridwatch_plugin_sdk::prelude::*;

struct Trivial;

impl Detector for Trivial {
    fn describe() -> Info {
        Info {
            name: "trivial".into(),
            version: "1.0.0".into(),
            description: "Returns no findings".into(),
            kinds: vec!["none".into()],
            settings: Vec::new(),
        }
    }

    fn detect(_batch: Batch) -> Vec<Finding> {
        Vec::new()
    }
}

export_detector!(Trivial);
