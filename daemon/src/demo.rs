//! `gridwatch demo`: an embedded MQTT broker, the daemon, a webhook receiver that verifies
//! signatures, and the publisher replaying the bundled UK household data with a mining farm
//! added to one meter. It prints each alert the receiver gets.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::config::{Config, Secret, WebhookConfig};
use crate::delivery::receiver::{Behaviour, Receiver};
use crate::publish::{DatasetKind, PublishArgs};

/// Signing key of the demo's webhook; the receiver verifies with the same key.
const DEMO_SECRET: &str = "whsec_ZGVtby1zaWduaW5nLWtleS1ub3QtZm9yLXByb2R1Y3Rpb24=";

/// Options of `gridwatch demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Folder of the bundled eemeter UK series.
    #[arg(long, default_value = "datasets/eemeter-uk", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Rules folder.
    #[arg(long, default_value = "rules", value_name = "DIR")]
    pub rules: PathBuf,
    /// Meter that gets the mining farm.
    #[arg(long, default_value = "uk-0")]
    pub rig_meter: String,
    /// Number of 3.25 kW rigs in the farm.
    #[arg(long, default_value_t = 3)]
    pub rigs: u32,
    /// Days of data replayed per meter.
    #[arg(long, default_value_t = 10)]
    pub days: i64,
    /// Maximum time to wait for alerts after the replay, in seconds.
    #[arg(long, default_value_t = 20)]
    pub wait_secs: u64,
}

/// First day of each bundled meter's series, so every meter replays real data.
const SERIES_START: [(&str, &str); 3] = [
    ("uk-0", "2020-04-01T00:00:00Z"),
    ("uk-1", "2012-10-12T00:00:00Z"),
    ("uk-2", "2012-01-03T00:00:00Z"),
];

/// Runs the demo to completion.
///
/// # Errors
/// Returns an error when a component fails to start or the data set is missing.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let broker_port = free_port()?;
    start_broker(broker_port)?;
    let (receiver_addr, receiver) = Receiver::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        DEMO_SECRET,
        Behaviour::accept().printing(),
    )
    .await
    .context("failed to start the webhook receiver")?;
    println!("webhook receiver listening on http://{receiver_addr}/");

    let store_dir = tempfile::tempdir().context("failed to create a temporary folder")?;
    let api_token = Secret::new(format!("{:032x}", rand::random::<u128>()));
    let config = demo_config(
        &args,
        broker_port,
        receiver_addr,
        store_dir.path().join("gridwatch.redb"),
        api_token.clone(),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (http_tx, http_rx) = tokio::sync::oneshot::channel();
    let daemon = tokio::spawn(crate::app::run(
        config,
        async move {
            let _ = stop_rx.await;
        },
        move |addr| {
            let _ = http_tx.send(addr);
        },
    ));
    let http = http_rx
        .await
        .context("the daemon stopped during start-up")?;
    println!("gridwatch metrics: curl http://{http}/metrics");
    println!(
        "gridwatch alerts: curl -H 'Authorization: Bearer {}' http://{http}/api/alerts",
        api_token.expose()
    );
    println!("gridwatch console: http://{http}/console/ (enter the token above)");

    let published = replay(&args, broker_port).await?;
    println!("published {published} readings; waiting for alerts");
    let _ = receiver
        .wait_for(1, Duration::from_secs(args.wait_secs))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received = receiver.received();
    println!(
        "received {} webhook deliveries, {} with a valid signature",
        received.len(),
        received.iter().filter(|d| d.signature_valid).count()
    );
    let _ = stop_tx.send(());
    daemon.await.context("the daemon task failed")??;
    receiver.shutdown().await;
    Ok(())
}

fn demo_config(
    args: &DemoArgs,
    broker_port: u16,
    receiver: SocketAddr,
    store: PathBuf,
    api_token: Secret,
) -> Config {
    let mut config = Config::default();
    config.mqtt.url = format!("mqtt://127.0.0.1:{broker_port}");
    config.mqtt.client_id = "gridwatch-demo".into();
    config.rules.dir = args.rules.clone();
    // The demo's plugins folder and compile cache live beside its store, in a temporary folder.
    let scratch = store.parent().map(PathBuf::from).unwrap_or_default();
    config.plugins.dir = scratch.join("plugins");
    config.plugins.cache_dir = scratch.join("plugin-cache");
    config.store.path = store;
    config.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.http.api_token = api_token;
    config.delivery.initial_backoff_ms = 200;
    config.webhooks.push(WebhookConfig {
        name: "demo".into(),
        url: format!("http://{receiver}/gridwatch"),
        secret: Secret::new(DEMO_SECRET),
        regions: Vec::new(),
        kinds: Vec::new(),
        min_severity: crate::alerts::Severity::Info,
    });
    config
}

async fn replay(args: &DemoArgs, broker_port: u16) -> anyhow::Result<u64> {
    let mut total = 0;
    for (meter, start) in SERIES_START {
        let from: chrono::DateTime<chrono::Utc> = start.parse()?;
        let publish = PublishArgs {
            dataset: DatasetKind::EemeterUk,
            data_dir: Some(args.data_dir.clone()),
            broker: format!("mqtt://127.0.0.1:{broker_port}"),
            region: "south".into(),
            speedup: 0.0,
            from: Some(from),
            to: Some(from + chrono::Duration::days(args.days)),
            meters: vec![meter.into()],
            rigs: if meter == args.rig_meter {
                args.rigs
            } else {
                0
            },
            rig_kw: 3.25,
            rig_meters: if meter == args.rig_meter {
                vec![meter.into()]
            } else {
                Vec::new()
            },
            rig_from: None,
            qos: 1,
            client_id: format!("gridwatch-demo-publisher-{meter}"),
            time_shift_days: 0,
        };
        let summary = crate::publish::run(publish).await?;
        total += summary.total_readings();
    }
    Ok(total)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts rumqttd on a loopback port in a thread of its own.
fn start_broker(port: u16) -> anyhow::Result<()> {
    let text = format!(
        r#"
id = 0
[router]
id = 0
max_connections = 100
max_outgoing_packet_count = 1000
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "demo"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1
[v4.1.connections]
connection_timeout_ms = 5000
max_payload_size = 1048576
max_inflight_count = 1000
dynamic_filters = true
"#
    );
    let config: rumqttd::Config =
        toml::from_str(&text).context("invalid embedded broker config")?;
    let mut broker = rumqttd::Broker::new(config);
    std::thread::Builder::new()
        .name("broker".into())
        .spawn(move || {
            if let Err(error) = broker.start() {
                tracing::error!(%error, "embedded broker stopped");
            }
        })?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            println!("embedded MQTT broker listening on 127.0.0.1:{port}");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("the embedded broker did not start listening on 127.0.0.1:{port}")
}
