//! A full disk under the store: the daemon stops acknowledging, reports unhealthy on /healthz,
//! and resumes by itself once space returns, with every reading's effect stored.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{Daemon, Mosquitto, get_json, publish_all, repo_root, wait_until_processed};

/// A small tmpfs, unmounted on drop. Mounting needs root, which CI has.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("failed to run mount");
        assert!(
            status.success(),
            "mounting a tmpfs at {} failed; the test needs root",
            path.display()
        );
        SmallDisk {
            path: path.to_owned(),
        }
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

async fn health_status(daemon: &Daemon) -> u16 {
    match reqwest::get(format!("{}/healthz", daemon.http)).await {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

async fn wait_health(daemon: &Daemon, expected: u16, timeout: Duration) {
    let start = Instant::now();
    loop {
        let status = health_status(daemon).await;
        if status == expected {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "/healthz still {status}, expected {expected}; log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One reading per meter that opens the cover, so each meter gets one tamper alert.
fn cover_openings(meters: std::ops::Range<u32>) -> Vec<(String, Vec<u8>)> {
    meters
        .map(|m| {
            let payload = format!(
                r#"{{"ts":"2025-06-01T12:00:00Z","energy_import_kwh":{m}.5,"events":["cover_open"]}}"#
            );
            (format!("meters/south/disk-{m}/telemetry"), payload.into_bytes())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_pauses_and_resumes() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let disk = SmallDisk::mount(&dir.path().join("disk"), "8m");
    let config = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"gridwatch-disk\"\n\n[rules]\ndir = \"{}\"\n",
        broker.url(),
        repo_root().join("rules").display()
    );
    let daemon = Daemon::start(&disk.path, &config);
    publish_all(broker.port, cover_openings(0..50)).await;
    wait_until_processed(&daemon).await;

    let filler = disk.fill();
    publish_all(broker.port, cover_openings(50..900)).await;
    wait_health(&daemon, 503, Duration::from_secs(60)).await;

    std::fs::remove_file(&filler).unwrap();
    wait_health(&daemon, 200, Duration::from_secs(60)).await;
    wait_until_processed(&daemon).await;

    let alerts = get_json(&format!("{}/api/alerts?limit=1000", daemon.http)).await;
    let tamper = alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "tamper")
        .count();
    assert_eq!(
        tamper,
        900,
        "one tamper alert per meter after recovery; log:\n{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_daemon_on_same_store_exits_3() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"gridwatch-lock\"\n\n[rules]\ndir = \"{}\"\n",
        broker.url(),
        repo_root().join("rules").display()
    );
    let _daemon = Daemon::start(dir.path(), &config);

    let output = Command::new(env!("CARGO_BIN_EXE_gridwatch"))
        .args(["run", "--config"])
        .arg(dir.path().join("gridwatch.toml"))
        .output()
        .expect("failed to run a second gridwatch");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(3),
        "exit status; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("gridwatch.redb"),
        "names the file: {stderr}"
    );
    assert!(
        stderr.contains("another gridwatch process"),
        "says what to do: {stderr}"
    );
}
