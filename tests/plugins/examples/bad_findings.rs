//! Detector that returns one valid finding and six invalid ones for the first reading of each
//! call, to test that the host drops invalid findings and keeps the valid one.
//!
//! The SDK always writes valid name indices, so this fixture uses the interface's own
//! bindings and builds the `findings` columns by hand.

wit_bindgen::generate!({ path: "../../plugin-sdk/wit", world: "plugin" });

use exports::gridwatch::detector::detector::Guest;
use gridwatch::detector::types::{Batch, Findings, Info, Severity, Value};

struct BadFindings;

/// Appends a finding about reading `reading` of kind `kind` with one evidence entry named
/// `name`, both indices into the call's `names`.
fn push(findings: &mut Findings, reading: u32, kind: u32, score: f64, name: u32) {
    findings.reading.push(reading);
    findings.kind.push(kind);
    findings.severity.push(Severity::Low);
    findings.score.push(score);
    findings.messages.push_str(&format!(
        "reading {reading}, kind {kind}, score {score}, name {name}"
    ));
    findings.message_ends.push(findings.messages.len() as u32);
    findings.entry_name.push(name);
    findings.entry_value.push(Value::Integer(1));
    findings.entry_ends.push(findings.entry_name.len() as u32);
}

fn empty(names: Vec<String>) -> Findings {
    Findings {
        names,
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

impl Guest for BadFindings {
    fn describe() -> Info {
        Info {
            name: "bad-findings".into(),
            version: "1.0.0".into(),
            description: "Returns one valid and six invalid findings per call".into(),
            kinds: vec!["odd".into()],
            settings: Vec::new(),
        }
    }

    fn detect(batch: Batch) -> Findings {
        if batch.meter.is_empty() {
            return empty(Vec::new());
        }
        let readings = batch.meter.len() as u32;
        // Index 0 is the declared kind, 1 an evidence name and 2 a kind never declared.
        let mut findings = empty(vec!["odd".into(), "count".into(), "undeclared".into()]);
        push(&mut findings, 0, 0, 0.5, 1);
        // A reading outside the call.
        push(&mut findings, readings, 0, 0.5, 1);
        // A kind index outside `names`.
        push(&mut findings, 0, 7, 0.5, 1);
        // A kind that `describe` did not declare.
        push(&mut findings, 0, 2, 0.5, 1);
        // A score outside 0 to 1.
        push(&mut findings, 0, 0, 1.5, 1);
        // An evidence name index outside `names`.
        push(&mut findings, 0, 0, 0.5, 9);
        // A second finding of the same reading and kind.
        push(&mut findings, 0, 0, 0.75, 1);
        findings
    }
}

// Exported only in WebAssembly builds: native linkers reject the interface names as symbols.
#[cfg(target_family = "wasm")]
export!(BadFindings);
