//! Code shared by the test-fixture plugins in `examples/`.
//!
//! Each example is a detector component that the daemon's tests load to check how the plugin
//! host handles a runaway, failing, oversized or stateful plugin.

#![warn(missing_docs)]

/// Counter detector shared by `counter_v1` and `counter_v2`, which differ only in version.
pub mod counter {
    use gridwatch_plugin_sdk::prelude::*;

    /// Plugin name of both counter versions, so the host treats them as one plugin.
    pub const NAME: &str = "counter";

    /// Kind of every finding the counter returns.
    pub const KIND: &str = "count";

    /// State key of the per-meter reading count, stored as a little-endian `u64`.
    pub const COUNT_KEY: &str = "count";

    /// Builds the counter's `Info` for the given version.
    pub fn info(version: &str) -> Info {
        Info {
            name: NAME.into(),
            version: version.into(),
            description: "Counts the readings of each meter in plugin state".into(),
            kinds: vec![KIND.into()],
            settings: Vec::new(),
        }
    }

    /// Increments each reading's meter count in plugin state and returns one finding per
    /// reading that carries the new count and `version`.
    pub fn detect(batch: &Batch, version: &str) -> Vec<Finding> {
        let mut findings = Vec::with_capacity(batch.len());
        for reading in batch.readings() {
            let meter = reading.meter();
            let count = decode_count(state::get(meter, COUNT_KEY)).saturating_add(1);
            state::set(meter, COUNT_KEY, &count.to_le_bytes());
            findings.push(Finding {
                reading: reading.index(),
                kind: KIND.into(),
                severity: Severity::Low,
                score: 0.5,
                message: format!("reading {count} seen by counter {version}"),
                evidence: vec![
                    entry("count", Value::Integer(count_as_i64(count))),
                    entry("version", Value::Text(version.into())),
                ],
            });
        }
        findings
    }

    /// Decodes a stored count. A missing value, or one that is not 8 bytes long, counts as 0.
    pub fn decode_count(stored: Option<Vec<u8>>) -> u64 {
        stored
            .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
            .map_or(0, u64::from_le_bytes)
    }

    /// Converts a count to the signed integer that evidence carries, saturating at `i64::MAX`.
    fn count_as_i64(count: u64) -> i64 {
        i64::try_from(count).unwrap_or(i64::MAX)
    }

    #[cfg(test)]
    mod tests {
        use super::{count_as_i64, decode_count};

        #[test]
        fn decode_count_reads_little_endian() {
            assert_eq!(decode_count(Some(7u64.to_le_bytes().to_vec())), 7);
            assert_eq!(
                decode_count(Some(u64::MAX.to_le_bytes().to_vec())),
                u64::MAX
            );
        }

        #[test]
        fn decode_count_defaults_to_zero() {
            assert_eq!(decode_count(None), 0);
            assert_eq!(decode_count(Some(Vec::new())), 0);
            assert_eq!(decode_count(Some(vec![1, 2, 3])), 0);
            assert_eq!(decode_count(Some(vec![0; 9])), 0);
        }

        #[test]
        fn count_as_i64_saturates() {
            assert_eq!(count_as_i64(3), 3);
            assert_eq!(count_as_i64(u64::MAX), i64::MAX);
        }
    }
}
