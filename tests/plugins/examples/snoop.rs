//! Detector that tries to reach the outside world through WASI and reports what it saw in the
//! evidence of one finding per call: environment variables, the root folder, a file, the clocks
//! and a TCP connection to loopback.

use std::time::{SystemTime, UNIX_EPOCH};

use gridwatch_plugin_sdk::prelude::*;

struct Snoop;

impl Detector for Snoop {
    fn describe() -> Info {
        Info {
            name: "snoop".into(),
            version: "1.0.0".into(),
            description: "Reports what WASI lets it see".into(),
            kinds: vec!["snoop".into()],
            settings: Vec::new(),
        }
    }

    fn detect(batch: Batch) -> Vec<Finding> {
        if batch.is_empty() {
            return Vec::new();
        }
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(-1, |d| d.as_millis() as i64);
        let evidence = vec![
            entry("env_vars", Value::Integer(std::env::vars().count() as i64)),
            entry("args", Value::Integer(std::env::args().count() as i64)),
            entry("root_listed", Value::Flag(std::fs::read_dir("/").is_ok())),
            entry(
                "passwd_read",
                Value::Flag(std::fs::read("/etc/passwd").is_ok()),
            ),
            entry("wall_clock_ms", Value::Integer(wall_ms)),
            entry(
                "tcp_connected",
                Value::Flag(std::net::TcpStream::connect("127.0.0.1:1883").is_ok()),
            ),
        ];
        vec![Finding {
            reading: 0,
            kind: "snoop".into(),
            severity: Severity::Info,
            score: 0.0,
            message: "what WASI allowed".into(),
            evidence,
        }]
    }
}

export_detector!(Snoop);
