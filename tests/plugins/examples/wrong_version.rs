//! Detector built against version 4.0.0 of the `gridwatch:detector` WIT package, which the
//! host must reject because it implements 3.0.0.
//!
//! `wit-next/detector.wit` is a copy of the SDK's WIT file that differs only in the version on
//! its `package` line. The bindings are generated here instead of coming from the SDK.

wit_bindgen::generate!({ path: "wit-next", world: "plugin" });

use exports::gridwatch::detector::detector::Guest;
use gridwatch::detector::types::{Batch, Findings, Info};

struct WrongVersion;

impl Guest for WrongVersion {
    fn describe() -> Info {
        Info {
            name: "wrong-version".into(),
            version: "1.0.0".into(),
            description: "Exports the detector interface at version 4.0.0".into(),
            kinds: vec!["none".into()],
            settings: Vec::new(),
        }
    }

    fn detect(_batch: Batch) -> Findings {
        Findings {
            names: Vec::new(),
            reading: Vec::new(),
            kind: Vec::new(),
            severity: Vec::new(),
            score: Vec::new(),
            messages: String::new(),
            message_ends: Vec::new(),
            entry_ends: Vec::new(),
            entry_name: Vec::new(),
            entry_value: Vec::new(),
        }
    }
}

// Exported only in WebAssembly builds: native linkers reject the interface names as symbols.
#[cfg(target_family = "wasm")]
export!(WrongVersion);
