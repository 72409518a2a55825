//! Detector whose findings all refer to one 100 kB name, to test that the output limit counts
//! a name at every use: 20 findings list 100 kB once but make the host copy 2 MB.

wit_bindgen::generate!({ path: "../../plugin-sdk/wit", world: "plugin" });

use exports::gridwatch::detector::detector::Guest;
use gridwatch::detector::types::{Batch, Findings, Info, Severity};

/// Findings per call.
const FINDINGS: u32 = 20;

/// Length of the name they share, in bytes.
const NAME_BYTES: usize = 100_000;

struct RepeatedNames;

impl Guest for RepeatedNames {
    fn describe() -> Info {
        Info {
            name: "repeated-names".into(),
            version: "1.0.0".into(),
            description: "Returns 20 findings whose kind is one 100 kB name".into(),
            kinds: vec!["odd".into()],
            settings: Vec::new(),
        }
    }

    fn detect(batch: Batch) -> Findings {
        let count = if batch.meter.is_empty() { 0 } else { FINDINGS };
        let names = if count == 0 {
            Vec::new()
        } else {
            vec!["x".repeat(NAME_BYTES)]
        };
        let findings = count as usize;
        Findings {
            names,
            reading: vec![0; findings],
            kind: vec![0; findings],
            severity: vec![Severity::Low; findings],
            score: vec![0.5; findings],
            messages: String::new(),
            message_ends: vec![0; findings],
            entry_ends: vec![0; findings],
            entry_name: Vec::new(),
            entry_value: Vec::new(),
        }
    }
}

// Exported only in WebAssembly builds: native linkers reject the interface names as symbols.
#[cfg(target_family = "wasm")]
export!(RepeatedNames);
