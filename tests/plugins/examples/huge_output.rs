//! Detector that returns about 2 MB of findings, to test the host's output limit.

use gridwatch_plugin_sdk::prelude::*;

/// Number of findings returned per call.
const FINDINGS: usize = 1_000;

/// Length of each finding's message in bytes.
const MESSAGE_BYTES: usize = 2_000;

struct HugeOutput;

impl Detector for HugeOutput {
    fn describe() -> Info {
        Info {
            name: "huge-output".into(),
            version: "1.0.0".into(),
            description: "Returns 1,000 findings of 2,000-byte messages for the first meter".into(),
            kinds: vec!["huge".into()],
            settings: Vec::new(),
        }
    }

    fn detect(batch: Batch) -> Vec<Finding> {
        if batch.is_empty() {
            return Vec::new();
        }
        // One message copied many times keeps the call cheap in fuel, so only the output
        // limit can stop it.
        let message = "h".repeat(MESSAGE_BYTES);
        (0..FINDINGS)
            .map(|_| Finding {
                reading: 0,
                kind: "huge".into(),
                severity: Severity::Info,
                score: 0.0,
                message: message.clone(),
                evidence: Vec::new(),
            })
            .collect()
    }
}

export_detector!(HugeOutput);
