//! Detector that stores a 128 KiB state value for every reading, to test the host's limit on
//! plugin state.

use gridwatch_plugin_sdk::prelude::*;

/// Size of each stored value.
const VALUE_BYTES: usize = 128 << 10;

struct StateHog;

impl Detector for StateHog {
    fn describe() -> Info {
        Info {
            name: "state-hog".into(),
            version: "1.0.0".into(),
            description: "Stores a 128 KiB value per reading".into(),
            kinds: vec!["none".into()],
            settings: Vec::new(),
        }
    }

    fn detect(batch: Batch) -> Vec<Finding> {
        let value = vec![0x5a; VALUE_BYTES];
        for reading in batch.readings() {
            state::set(reading.meter(), "blob", &value);
        }
        Vec::new()
    }
}

export_detector!(StateHog);
