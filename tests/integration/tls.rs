//! MQTT over TLS against Mosquitto: with a user name and password, with a client certificate,
//! and with an untrusted server certificate, which is a logged connection error, not a crash.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{
    Daemon, Mosquitto, free_port, get_json, get_text, metric, publish_all, repo_root,
};

const USER: &str = "gridwatch";
const PASSWORD: &str = "tls-test-password";

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Writes a CA named `name` and a certificate it signs for `cn` with the extensions in
/// `extensions` (an openssl extension file body).
fn issue(dir: &Path, ca: &str, cn: &str, file: &str, extensions: &str) {
    std::fs::write(dir.join(format!("{file}.ext")), extensions).unwrap();
    let key = format!("{file}.key");
    let csr = format!("{file}.csr");
    let pem = format!("{file}.pem");
    let subject = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
            &subject,
        ],
    );
    let ca_pem = format!("{ca}.pem");
    let ca_key = format!("{ca}.key");
    let ext = format!("{file}.ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}

fn make_ca(dir: &Path, name: &str) {
    let key = format!("{name}.key");
    let pem = format!("{name}.pem");
    let subject = format!("/CN={name}");
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &pem,
            "-days", "2", "-subj", &subject,
        ],
    );
}

/// Certificates and the password file in the broker's folder, readable by Mosquitto.
fn write_credentials(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    make_ca(dir, "ca");
    make_ca(dir, "other-ca");
    issue(
        dir,
        "ca",
        "127.0.0.1",
        "server",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    issue(dir, "ca", USER, "client", "extendedKeyUsage=clientAuth\n");
    let status = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(dir.join("passwd"))
        .args([USER, PASSWORD])
        .status()
        .expect("mosquitto_passwd");
    assert!(status.success(), "mosquitto_passwd failed");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

struct TlsBroker {
    broker: Mosquitto,
    password_port: u16,
    certificate_port: u16,
    dir: std::path::PathBuf,
}

fn start_broker() -> TlsBroker {
    let password_port = free_port();
    let certificate_port = free_port();
    let mut dir_seen = None;
    let broker = Mosquitto::start_custom(|plain, dir| {
        write_credentials(dir);
        dir_seen = Some(dir.to_owned());
        let d = dir.display();
        format!(
            "per_listener_settings true\nmax_inflight_messages 1000\npersistence false\n\
             listener {plain} 127.0.0.1\nallow_anonymous true\n\
             listener {password_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\n\
             keyfile {d}/server.key\nallow_anonymous false\npassword_file {d}/passwd\n\
             listener {certificate_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\n\
             keyfile {d}/server.key\nrequire_certificate true\nuse_identity_as_username true\n\
             allow_anonymous false\n"
        )
    });
    crate::support::wait_for("TLS listeners", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", certificate_port)).is_ok()
    });
    TlsBroker {
        broker,
        password_port,
        certificate_port,
        dir: dir_seen.unwrap(),
    }
}

fn daemon_config(client_id: &str, mqtt: &str) -> String {
    format!(
        "[mqtt]\nclient_id = \"{client_id}\"\n{mqtt}\n[rules]\ndir = \"{}\"\n",
        repo_root().join("rules").display()
    )
}

fn cover_opening(meter: &str) -> Vec<(String, Vec<u8>)> {
    let payload =
        r#"{"ts":"2025-06-01T12:00:00Z","energy_import_kwh":10.5,"events":["cover_open"]}"#;
    vec![(
        format!("meters/south/{meter}/telemetry"),
        payload.as_bytes().to_vec(),
    )]
}

async fn wait_for_tamper_alert(daemon: &Daemon, meter: &str) {
    let start = std::time::Instant::now();
    loop {
        let alerts = get_json(&format!("{}/api/alerts", daemon.http)).await;
        if alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["meter"] == meter)
        {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no alert for {meter}; log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_connected(daemon: &Daemon) {
    let start = std::time::Instant::now();
    loop {
        let text = get_text(&format!("{}/metrics", daemon.http)).await;
        if metric(&text, "gridwatch_mqtt_connected") == Some(1.0) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not connected; log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_password_receives_readings() {
    let tls = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let mqtt = format!(
        "url = \"mqtts://127.0.0.1:{}\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\nca_file = \"{}\"\n",
        tls.password_port,
        tls.dir.join("ca.pem").display()
    );
    let daemon = Daemon::start(dir.path(), &daemon_config("gridwatch-tls-password", &mqtt));
    wait_connected(&daemon).await;
    publish_all(tls.broker.port, cover_opening("tls-1")).await;
    wait_for_tamper_alert(&daemon, "tls-1").await;
    assert!(
        !daemon.log().contains(PASSWORD),
        "password logged:\n{}",
        daemon.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificate_receives_readings() {
    let tls = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let d = tls.dir.display();
    let mqtt = format!(
        "url = \"mqtts://127.0.0.1:{}\"\nca_file = \"{d}/ca.pem\"\nclient_cert_file = \"{d}/client.pem\"\n\
         client_key_file = \"{d}/client.key\"\n",
        tls.certificate_port
    );
    let daemon = Daemon::start(dir.path(), &daemon_config("gridwatch-tls-cert", &mqtt));
    wait_connected(&daemon).await;
    publish_all(tls.broker.port, cover_opening("tls-2")).await;
    wait_for_tamper_alert(&daemon, "tls-2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_server_certificate_is_logged() {
    let tls = start_broker();
    let dir = tempfile::tempdir().unwrap();
    let mqtt = format!(
        "url = \"mqtts://127.0.0.1:{}\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\nca_file = \"{}\"\n",
        tls.password_port,
        tls.dir.join("other-ca.pem").display()
    );
    let daemon = Daemon::start(dir.path(), &daemon_config("gridwatch-tls-untrusted", &mqtt));
    daemon.wait_for_log("broker connection failed", Duration::from_secs(30));
    let log = daemon.log();
    assert!(
        log.to_lowercase().contains("certificate"),
        "names the certificate problem:\n{log}"
    );
    let text = get_text(&format!("{}/metrics", daemon.http)).await;
    assert_eq!(
        metric(&text, "gridwatch_mqtt_connected"),
        Some(0.0),
        "not connected"
    );
    let health = reqwest::get(format!("{}/healthz", daemon.http))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200, "daemon still serving");
}
