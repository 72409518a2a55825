//! Detector that scores every reading with the region's `score` setting, to test per-region
//! settings and rules that read plugin scores.

use gridwatch_plugin_sdk::prelude::*;

const KIND: &str = "score";

struct Scorer;

impl Detector for Scorer {
    fn describe() -> Info {
        Info {
            name: "scorer".into(),
            version: "1.0.0".into(),
            description: "Scores every reading with the region's score setting".into(),
            kinds: vec![KIND.into()],
            settings: vec![setting_spec(
                "score",
                Value::Number(0.25),
                "Score given to every reading of the region, from 0 to 1",
            )],
        }
    }

    fn detect(batch: Batch) -> Vec<Finding> {
        batch
            .readings()
            .map(|reading| {
                let score = setting_f64(reading.meter().region(), "score");
                Finding {
                    reading: reading.index(),
                    kind: KIND.into(),
                    severity: Severity::Info,
                    score,
                    message: "score from settings".into(),
                    evidence: Vec::new(),
                }
            })
            .collect()
    }
}

export_detector!(Scorer);
