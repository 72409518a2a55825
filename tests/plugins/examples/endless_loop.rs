//! Detector whose `detect` never returns, to test the host's time limit.

use core::hint::black_box;

use gridwatch_plugin_sdk::prelude::*;

struct EndlessLoop;

impl Detector for EndlessLoop {
    fn describe() -> Info {
        Info {
            name: "endless-loop".into(),
            version: "1.0.0".into(),
            description: "Loops forever on every detect call".into(),
            kinds: vec!["loop".into()],
            settings: Vec::new(),
        }
    }

    fn detect(_batch: Batch) -> Vec<Finding> {
        let mut iterations: u64 = 0;
        loop {
            // `black_box` hides the counter from the optimiser, so the loop stays in the code.
            iterations = black_box(iterations).wrapping_add(1);
        }
    }
}

export_detector!(EndlessLoop);
