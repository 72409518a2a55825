//! Detector that returns one valid finding and five invalid ones for the first reading of each
//! call, to test that the host drops invalid findings and keeps the valid one.
//!
//! The SDK always writes valid name indices, so this fixture uses the interface's own
//! bindings and builds the `findings` record by hand.

wit_bindgen::generate!({ path: "../../plugin-sdk/wit", world: "plugin" });

use exports::gridwatch::detector::detector::Guest;
use gridwatch::detector::types::{Batch, Entry, Finding, Findings, Info, Severity, Value};

struct BadFindings;

/// Builds a finding about reading `reading` of kind `kind` with one evidence entry named `name`,
/// both indices into the call's `names`.
fn finding(reading: u32, kind: u32, score: f64, name: u32) -> Finding {
    Finding {
        reading,
        kind,
        severity: Severity::Low,
        score,
        message: format!("reading {reading}, kind {kind}, score {score}, name {name}"),
        evidence: vec![Entry {
            name,
            value: Value::Integer(1),
        }],
    }
}

impl Guest for BadFindings {
    fn describe() -> Info {
        Info {
            name: "bad-findings".into(),
            version: "1.0.0".into(),
            description: "Returns one valid and five invalid findings per call".into(),
            kinds: vec!["odd".into()],
            settings: Vec::new(),
        }
    }

    fn detect(batch: Batch) -> Findings {
        if batch.meter.is_empty() {
            return Findings {
                names: Vec::new(),
                items: Vec::new(),
            };
        }
        let readings = batch.meter.len() as u32;
        Findings {
            // Index 0 is the declared kind, 1 an evidence name and 2 a kind never declared.
            names: vec!["odd".into(), "count".into(), "undeclared".into()],
            items: vec![
                finding(0, 0, 0.5, 1),
                // A reading outside the call.
                finding(readings, 0, 0.5, 1),
                // A kind index outside `names`.
                finding(0, 7, 0.5, 1),
                // A kind that `describe` did not declare.
                finding(0, 2, 0.5, 1),
                // A score outside 0 to 1.
                finding(0, 0, 1.5, 1),
                // An evidence name index outside `names`.
                finding(0, 0, 0.5, 9),
            ],
        }
    }
}

// Exported only in WebAssembly builds: native linkers reject the interface names as symbols.
#[cfg(target_family = "wasm")]
export!(BadFindings);
