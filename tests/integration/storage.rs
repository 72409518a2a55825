//! A full or read-only disk under the store: the daemon stops acknowledging, reports unhealthy on
//! /healthz, and resumes by itself once the disk is writable again, with every reading's effect
//! stored once.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{
    Daemon, Mosquitto, broker_stored_messages, get_json, get_text, metric, publish_all, repo_root,
    wait_for, wait_until_processed,
};

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
    let tamper = alerts["alerts"]
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

/// An ext4 file system in an image file, mounted through a loop device with
/// `errors=remount-ro` and unmounted on drop. Mounting needs root, which CI has.
///
/// A running daemon keeps its store open for writing, and Linux refuses `mount -o remount,ro`
/// (EBUSY) while any file on the file system is open for writing. A disk turns read-only under
/// a running process when the kernel forces it after a file system error, which
/// [`Ext4Disk::trigger_error`] causes.
struct Ext4Disk {
    image: PathBuf,
    path: PathBuf,
    mounted: bool,
}

impl Ext4Disk {
    fn create(image: &Path, path: &Path, size_bytes: u64) -> Ext4Disk {
        std::fs::File::create(image)
            .unwrap()
            .set_len(size_bytes)
            .unwrap();
        run_tool(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image));
        std::fs::create_dir_all(path).unwrap();
        let mut disk = Ext4Disk {
            image: image.to_owned(),
            path: path.to_owned(),
            mounted: false,
        };
        disk.mount();
        disk
    }

    fn mount(&mut self) {
        run_tool(
            Command::new("mount")
                .args(["-o", "loop,errors=remount-ro"])
                .arg(&self.image)
                .arg(&self.path),
        );
        self.mounted = true;
    }

    /// Reports a file system error through ext4's `trigger_fs_error` attribute, so the kernel
    /// makes the file system read-only at once, as it does on a real metadata or journal error.
    fn trigger_error(&self) {
        let output = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.path)
            .output()
            .expect("failed to run findmnt");
        let source = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let device = source.rsplit('/').next().unwrap_or_default();
        let attribute = format!("/sys/fs/ext4/{device}/trigger_fs_error");
        std::fs::write(&attribute, "test error")
            .unwrap_or_else(|error| panic!("failed to write {attribute}: {error}"));
        let probe = std::fs::write(self.path.join("probe"), b"x");
        assert!(
            probe.is_err(),
            "{} still writable after the error",
            self.path.display()
        );
    }

    /// Unmounts the file system; fails while a process has a file on it open.
    fn try_unmount(&mut self) -> bool {
        let status = Command::new("umount")
            .arg(&self.path)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("failed to run umount");
        self.mounted = !status.success();
        status.success()
    }

    /// Replays the journal and fixes the file system, as an operator does before mounting a
    /// disk that went read-only after an error.
    fn repair(&self) {
        let status = Command::new("e2fsck")
            .arg("-fy")
            .arg(&self.image)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("failed to run e2fsck");
        // Exit status 1 means errors were corrected.
        assert!(
            matches!(status.code(), Some(0 | 1)),
            "e2fsck on {} failed: {status}",
            self.image.display()
        );
    }
}

impl Drop for Ext4Disk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Runs a command and fails the test with its output when it fails.
fn run_tool(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("failed to run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}); the test needs root and e2fsprogs: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn committed_messages(daemon: &Daemon) -> f64 {
    let text = get_text(&format!("{}/metrics", daemon.http)).await;
    metric(&text, "gridwatch_messages_committed_total").unwrap_or(0.0)
}

/// Waits until the broker's message store contains at least `min` and at most `max` messages.
async fn wait_broker_stored(port: u16, min: u64, max: u64, timeout: Duration) -> u64 {
    let start = Instant::now();
    loop {
        let stored = broker_stored_messages(port).await;
        if (min..=max).contains(&stored) {
            return stored;
        }
        assert!(
            start.elapsed() < timeout,
            "broker stores {stored} messages, expected {min} to {max}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_disk_pauses_and_resumes() {
    // `sys_interval 1` publishes the broker's store count every second.
    let broker = Mosquitto::start_custom(|port, _| {
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_inflight_messages 1000\nmax_queued_messages 0\nsys_interval 1\n"
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let mut disk = Ext4Disk::create(
        &dir.path().join("disk.img"),
        &dir.path().join("disk"),
        64 << 20,
    );
    // Only the store lives on the disk. The log stays off it, so the disk can be unmounted for
    // repair while the daemon runs.
    let daemon_dir = dir.path().join("daemon");
    std::fs::create_dir_all(&daemon_dir).unwrap();
    let store = disk.path.join("gridwatch.redb");
    std::os::unix::fs::symlink(&store, daemon_dir.join("gridwatch.redb")).unwrap();
    let config = format!(
        "[mqtt]\nurl = \"{}\"\nclient_id = \"gridwatch-read-only\"\n\n[rules]\ndir = \"{}\"\n",
        broker.url(),
        repo_root().join("rules").display()
    );
    let daemon = Daemon::start(&daemon_dir, &config);
    publish_all(broker.port, cover_openings(0..50)).await;
    wait_until_processed(&daemon).await;
    let baseline = wait_broker_stored(broker.port, 0, u64::MAX, Duration::from_secs(20)).await;

    disk.trigger_error();
    publish_all(broker.port, cover_openings(50..900)).await;
    wait_health(&daemon, 503, Duration::from_secs(60)).await;
    let log = daemon.log();
    assert!(
        log.contains("failed to commit batch; readings stay unacknowledged"),
        "commit failure logged; log:\n{log}"
    );
    assert!(
        log.contains("Read-only file system"),
        "cause of the commit failure logged; log:\n{log}"
    );

    // Nothing is committed or acknowledged: the broker keeps all 850 new messages.
    let min_stored = baseline + 850;
    wait_broker_stored(broker.port, min_stored, u64::MAX, Duration::from_secs(30)).await;
    assert_eq!(
        committed_messages(&daemon).await,
        50.0,
        "messages committed while the disk is read-only"
    );

    // Between attempts the daemon holds no handle on the file, so the disk can be unmounted,
    // and it does not create a new, empty store on the bare mount point meanwhile.
    wait_for("the disk to unmount", Duration::from_secs(60), || {
        disk.try_unmount()
    });
    daemon.wait_for_log("not found while reopening it", Duration::from_secs(60));
    assert!(
        !store.exists(),
        "the daemon created {} while the disk was unmounted",
        store.display()
    );
    assert_eq!(
        health_status(&daemon).await,
        503,
        "/healthz while unmounted"
    );

    disk.repair();
    disk.mount();
    wait_health(&daemon, 200, Duration::from_secs(60)).await;
    wait_until_processed(&daemon).await;
    // The count includes the retained `$SYS` topics, of which Mosquitto 2.0 adds a few dozen
    // during its first minute, so the bound allows 100 above the baseline.
    wait_broker_stored(broker.port, 0, baseline + 100, Duration::from_secs(30)).await;

    let alerts = get_json(&format!("{}/api/alerts?limit=1000", daemon.http)).await;
    let tamper: Vec<&serde_json::Value> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "tamper")
        .collect();
    assert_eq!(
        tamper.len(),
        900,
        "one tamper alert per meter after recovery; log:\n{}",
        daemon.log()
    );
    let repeated: Vec<&serde_json::Value> =
        tamper.iter().copied().filter(|a| a["count"] != 1).collect();
    assert!(
        repeated.is_empty(),
        "alerts counted more than once: {repeated:?}"
    );
    let text = get_text(&format!("{}/metrics", daemon.http)).await;
    let accepted = metric(&text, "gridwatch_readings_accepted_total");
    assert_eq!(accepted, Some(900.0), "readings accepted");
}
