//! Detector whose findings columns disagree: two readings but one severity. The host must fail
//! the call with a specific error instead of reading past a column.
//!
//! The SDK always writes columns that agree, so this fixture uses the interface's own bindings.

wit_bindgen::generate!({ path: "../../plugin-sdk/wit", world: "plugin" });

use exports::gridwatch::detector::detector::Guest;
use gridwatch::detector::types::{Batch, Findings, Info, Severity};

struct TornColumns;

impl Guest for TornColumns {
    fn describe() -> Info {
        Info {
            name: "torn-columns".into(),
            version: "1.0.0".into(),
            description: "Returns findings columns of different lengths".into(),
            kinds: vec!["odd".into()],
            settings: Vec::new(),
        }
    }

    fn detect(_batch: Batch) -> Findings {
        Findings {
            names: vec!["odd".into()],
            reading: vec![0, 0],
            kind: vec![0, 0],
            severity: vec![Severity::Low],
            score: vec![0.5, 0.5],
            messages: "ab".into(),
            message_ends: vec![1, 2],
            entry_ends: vec![0, 0],
            entry_name: Vec::new(),
            entry_value: Vec::new(),
        }
    }
}

// Exported only in WebAssembly builds: native linkers reject the interface names as symbols.
#[cfg(target_family = "wasm")]
export!(TornColumns);
