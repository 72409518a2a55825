//! Service manager integration. The daemon sends systemd `READY=1` once the broker connection
//! is up, then watchdog notifications, then `STOPPING=1` when it stops. `gridwatch healthcheck`
//! reports whether the daemon's `/healthz` answers 200.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Mosquitto, free_port, repo_root, send_signal, wait_exit};

/// Reads notifications until one contains `text`, and returns everything read.
fn wait_for_notification(socket: &UnixDatagram, text: &str, timeout: Duration) -> String {
    let start = Instant::now();
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    while start.elapsed() < timeout {
        if let Ok(n) = socket.recv(&mut buffer) {
            seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
            seen.push('\n');
            if seen.contains(text) {
                return seen;
            }
        }
    }
    panic!("no '{text}' notification within {timeout:?}; got: {seen}");
}

fn healthcheck(config: &std::path::Path) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .args(["healthcheck", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn systemd_ready_watchdog_and_stopping() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let config = dir.path().join("gridwatch.toml");
    let text = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"gridwatch-service\"\n[rules]\ndir = \"{}\"\n\
         [http]\nlisten = \"127.0.0.1:{}\"\n[store]\npath = \"gridwatch.redb\"\n",
        broker.url(),
        repo_root().join("rules").display(),
        free_port()
    );
    std::fs::write(&config, text).unwrap();

    let (code, stderr) = healthcheck(&config);
    assert_eq!(code, Some(1), "no daemon runs yet: {stderr}");
    assert!(
        stderr.contains("failed to reach http://127.0.0.1:"),
        "{stderr}"
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let seen = wait_for_notification(&socket, "READY=1", Duration::from_secs(30));
    assert!(seen.contains("STATUS=connected to the broker"), "{seen}");
    // The watchdog interval is half of WATCHDOG_USEC: 200 ms.
    wait_for_notification(&socket, "WATCHDOG=1", Duration::from_secs(2));

    let (code, stderr) = healthcheck(&config);
    assert_eq!(code, Some(0), "{stderr}");

    send_signal(child.id(), "TERM");
    wait_for_notification(&socket, "STOPPING=1", Duration::from_secs(10));
    let status = wait_exit(&mut child, Duration::from_secs(15)).expect("daemon stopped");
    assert!(status.success(), "{status:?}");
}
