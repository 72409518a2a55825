use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::Value;

use super::*;

const HOUR_MS: i64 = 3_600_000;

/// Returns the bundled eemeter folder, found from the crate's manifest directory.
fn bundled_eemeter_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../datasets/eemeter-uk")
}

fn load_bundled(meters: &[&str]) -> Vec<MeterSeries> {
    let filter = MeterFilter {
        meters: meters.iter().map(|m| m.to_string()).collect(),
    };
    load_dataset(DatasetKind::EemeterUk, &bundled_eemeter_dir(), &filter)
        .expect("bundled data loads")
}

fn write_gz(dir: &Path, name: &str, text: &str) {
    let file = std::fs::File::create(dir.join(name)).unwrap();
    let mut encoder = GzEncoder::new(file, Compression::fast());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap();
}

fn ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

fn series(meter_id: &str, interval_secs: i64, rows: &[(i64, f64)]) -> MeterSeries {
    MeterSeries {
        meter_id: meter_id.to_owned(),
        interval_secs,
        intervals: rows
            .iter()
            .map(|&(start_ms, energy_kwh)| IntervalEnergy {
                start_ms,
                energy_kwh,
            })
            .collect(),
    }
}

fn options() -> TelemetryOptions {
    TelemetryOptions {
        region: "south".to_owned(),
        ..TelemetryOptions::default()
    }
}

fn payload(message: &Telemetry) -> Value {
    serde_json::from_slice(&message.payload).expect("payload is JSON")
}

fn register(message: &Telemetry) -> f64 {
    payload(message)["energy_import_kwh"]
        .as_f64()
        .expect("register is a number")
}

fn power_w(message: &Telemetry) -> f64 {
    payload(message)["power_w"]
        .as_f64()
        .expect("power_w is a number")
}

#[test]
fn bundled_eemeter_loads_three_meters() {
    let all = load_bundled(&[]);

    let ids: Vec<&str> = all.iter().map(|s| s.meter_id.as_str()).collect();
    assert_eq!(ids, ["uk-0", "uk-1", "uk-2"]);

    // Row counts after dropping the repeated first row of each billing month.
    let rows: Vec<usize> = all.iter().map(|s| s.intervals.len()).collect();
    assert_eq!(rows, [23_508, 22_521, 35_444], "rows per meter");

    let steps: Vec<i64> = all.iter().map(|s| s.interval_secs).collect();
    assert_eq!(steps, [3600, 1800, 1800], "interval lengths");
}

#[test]
fn bundled_eemeter_spans_expected_dates() {
    let all = load_bundled(&[]);
    let spans: Vec<(i64, i64)> = all
        .iter()
        .map(|s| {
            (
                s.intervals[0].start_ms,
                s.intervals.last().unwrap().start_ms,
            )
        })
        .collect();

    assert_eq!(
        spans[0],
        (ms("2020-04-01T01:00:00Z"), ms("2022-12-06T12:00:00Z"))
    );
    assert_eq!(
        spans[1],
        (ms("2012-10-12T00:30:00Z"), ms("2014-01-25T06:30:00Z"))
    );
    assert_eq!(
        spans[2],
        (ms("2012-01-03T00:00:00Z"), ms("2014-12-02T23:30:00Z"))
    );
}

#[test]
fn meter_filter_keeps_only_named_meters() {
    let chosen = load_bundled(&["uk-2"]);

    assert_eq!(chosen.len(), 1);
    assert_eq!(chosen[0].meter_id, "uk-2");
}

#[test]
fn unknown_meter_is_rejected_by_name() {
    let filter = MeterFilter {
        meters: vec!["uk-9".to_owned()],
    };
    let error = load_dataset(DatasetKind::EemeterUk, &bundled_eemeter_dir(), &filter).unwrap_err();

    assert!(
        matches!(error, PublishError::UnknownMeters { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("uk-9"), "{error}");
}

#[test]
fn register_is_cumulative_and_matches_csv() {
    let all = load_bundled(&["uk-1"]);
    let source = &all[0];
    let messages: Vec<Telemetry> = build_telemetry(&all, &options()).collect();
    assert_eq!(
        messages.len(),
        source.intervals.len(),
        "one reading per interval"
    );

    let first = register(&messages[0]);
    let expected_first = initial_register_kwh("uk-1") + source.intervals[0].energy_kwh;
    assert!(
        (first - expected_first).abs() < 0.0015,
        "first register {first}"
    );

    for (index, pair) in messages.windows(2).enumerate() {
        let step = register(&pair[1]) - register(&pair[0]);
        let csv = source.intervals[index + 1].energy_kwh;
        assert!(
            step >= 0.0,
            "register decreased at reading {}: {step}",
            index + 1
        );
        assert!(
            (step - csv).abs() < 0.0015,
            "reading {}: step {step}, CSV {csv}",
            index + 1
        );
    }
}

#[test]
fn reading_is_stamped_at_interval_end() {
    let all = load_bundled(&["uk-0"]);
    let first = build_telemetry(&all, &options()).next().unwrap();

    assert_eq!(first.ts_ms, ms("2020-04-01T02:00:00Z"));
    assert_eq!(payload(&first)["ts"], first.ts_ms);
    assert_eq!(first.topic, "meters/south/uk-0/telemetry");
}

#[test]
fn payload_has_schema_fields() {
    let hour = ms("2020-01-01T00:00:00Z");
    let data = [series("m1", 1800, &[(hour, 0.25)])];
    let message = build_telemetry(&data, &options()).next().unwrap();
    let body = payload(&message);

    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["energy_import_kwh", "power_w", "seq", "ts"]);
    assert_eq!(body["power_w"], 500.0, "0.25 kWh in half an hour is 500 W");
    assert_eq!(body["seq"], 0);
}

#[test]
fn gaps_publish_nothing() {
    let start = ms("2020-01-01T00:00:00Z");
    let data = [series(
        "m1",
        3600,
        &[(start, 1.0), (start + 5 * HOUR_MS, 2.0)],
    )];
    let messages: Vec<Telemetry> = build_telemetry(&data, &options()).collect();

    let times: Vec<i64> = messages.iter().map(|m| m.ts_ms).collect();
    assert_eq!(times, [start + HOUR_MS, start + 6 * HOUR_MS]);
    let step = register(&messages[1]) - register(&messages[0]);
    assert!(
        (step - 2.0).abs() < 1e-9,
        "register step across the gap {step}"
    );
}

#[test]
fn injection_adds_rig_energy_only_after_start() {
    let start = ms("2020-01-01T00:00:00Z");
    let rows: Vec<(i64, f64)> = (0..24).map(|h| (start + h * HOUR_MS, 0.5)).collect();
    let data = [series("m1", 3600, &rows)];
    let rig_from = start + 10 * HOUR_MS;
    let injected = TelemetryOptions {
        injection: Some(Injection {
            rigs: 2,
            rig_kw: 3.25,
            meters: Vec::new(),
            from_ms: rig_from,
        }),
        ..options()
    };

    let plain: Vec<Telemetry> = build_telemetry(&data, &options()).collect();
    let mined: Vec<Telemetry> = build_telemetry(&data, &injected).collect();

    for (base, with_rigs) in plain.iter().zip(&mined) {
        let added_kwh = register(with_rigs) - register(base);
        let running_hours = ((base.ts_ms - rig_from).max(0) / HOUR_MS) as f64;
        let expected = 2.0 * 3.25 * running_hours;
        assert!(
            (added_kwh - expected).abs() < 0.0015,
            "at {}: added {added_kwh}",
            base.ts_ms
        );

        let added_w = power_w(with_rigs) - power_w(base);
        let expected_w = if base.ts_ms > rig_from { 6500.0 } else { 0.0 };
        assert!(
            (added_w - expected_w).abs() < 0.06,
            "at {}: power added {added_w}",
            base.ts_ms
        );
    }
}

#[test]
fn injection_prorates_partly_covered_interval() {
    let injection = Injection {
        rigs: 1,
        rig_kw: 3.0,
        meters: Vec::new(),
        from_ms: 30 * 60 * 1000,
    };

    assert_eq!(injection.energy_kwh(0, HOUR_MS), 1.5);
    assert_eq!(injection.energy_kwh(-HOUR_MS, 0), 0.0);
    assert_eq!(injection.energy_kwh(HOUR_MS, 2 * HOUR_MS), 3.0);
}

#[test]
fn injection_skips_other_meters() {
    let start = ms("2020-01-01T00:00:00Z");
    let data = [
        series("a", 3600, &[(start, 1.0)]),
        series("b", 3600, &[(start, 1.0)]),
    ];
    let injected = TelemetryOptions {
        injection: Some(Injection {
            rigs: 1,
            rig_kw: 1.0,
            meters: vec!["b".to_owned()],
            from_ms: 0,
        }),
        ..options()
    };
    let messages: Vec<Telemetry> = build_telemetry(&data, &injected).collect();

    assert_eq!(power_w(&messages[0]), 1000.0, "meter a has no rig");
    assert_eq!(power_w(&messages[1]), 2000.0, "meter b has one 1 kW rig");
}

#[test]
fn readings_are_merged_in_time_order() {
    let all = load_bundled(&[]);
    let window = TelemetryOptions {
        from_ms: Some(ms("2013-01-01T00:00:00Z")),
        to_ms: Some(ms("2013-01-08T00:00:00Z")),
        ..options()
    };
    let messages: Vec<Telemetry> = build_telemetry(&all, &window).collect();

    // uk-1 and uk-2 are half-hourly. uk-0 starts in 2020, so it has nothing in this window.
    assert_eq!(messages.len(), 2 * 7 * 48, "readings in the week");
    for pair in messages.windows(2) {
        assert!(
            pair[0].ts_ms <= pair[1].ts_ms,
            "{} after {}",
            pair[0].topic,
            pair[1].topic
        );
    }
    assert_eq!(
        messages[0].meter_id, "uk-1",
        "equal times follow the series order"
    );
    assert_eq!(messages[1].meter_id, "uk-2");
}

#[test]
fn window_keeps_register_of_full_replay() {
    let all = load_bundled(&["uk-0"]);
    let from_ms = ms("2021-06-01T00:00:00Z");
    let window = TelemetryOptions {
        from_ms: Some(from_ms),
        ..options()
    };

    let full = build_telemetry(&all, &options())
        .find(|m| m.ts_ms == from_ms)
        .unwrap();
    let windowed = build_telemetry(&all, &window).next().unwrap();

    assert_eq!(windowed.ts_ms, from_ms);
    assert_eq!(windowed.payload, full.payload);
}

#[test]
fn time_shift_moves_published_times() {
    let all = load_bundled(&["uk-0"]);
    let shifted = TelemetryOptions {
        time_shift_ms: 10 * 86_400_000,
        ..options()
    };

    let plain = build_telemetry(&all, &options()).next().unwrap();
    let moved = build_telemetry(&all, &shifted).next().unwrap();

    assert_eq!(moved.ts_ms - plain.ts_ms, 10 * 86_400_000);
    assert_eq!(payload(&moved)["ts"], moved.ts_ms);
}

#[test]
fn missing_folder_names_path_and_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("absent");
    let error = load_dataset(DatasetKind::Umass, &missing, &MeterFilter::default()).unwrap_err();
    let message = error.to_string();

    assert!(
        matches!(error, PublishError::MissingFolder { .. }),
        "{error:?}"
    );
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert!(message.contains("umass"), "{message}");
    assert!(message.contains("not bundled"), "{message}");
    assert!(message.contains("--data-dir"), "{message}");
}

#[test]
fn missing_file_names_path() {
    let dir = tempfile::tempdir().unwrap();
    let error = load_dataset(DatasetKind::Umass, dir.path(), &MeterFilter::default()).unwrap_err();
    let message = error.to_string();

    assert!(
        matches!(error, PublishError::MissingFile { .. }),
        "{error:?}"
    );
    assert!(
        message.contains("umass_microgrid_2011-04-02_long.csv.gz"),
        "{message}"
    );
    assert!(message.contains("not bundled"), "{message}");
}

#[test]
fn malformed_line_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = "building_id,unix_ts,usage_kw\nb1,1301702400,-0.0\nb1,1301702460,abc\n";
    write_gz(dir.path(), "umass_microgrid_2011-04-02_long.csv.gz", text);

    let error = load_dataset(DatasetKind::Umass, dir.path(), &MeterFilter::default()).unwrap_err();
    let message = error.to_string();

    assert!(
        matches!(error, PublishError::Malformed { line: 3, .. }),
        "{error:?}"
    );
    assert!(
        message.contains("umass_microgrid_2011-04-02_long.csv.gz:3"),
        "{message}"
    );
    assert!(message.contains("'abc'"), "{message}");
    assert!(message.contains("non-negative power in kW"), "{message}");
}

#[test]
fn malformed_eemeter_time_names_expected_form() {
    let dir = tempfile::tempdir().unwrap();
    let text = "start,value\n2020-04-01 01:00:00+00:00,0.1\n01/04/2020 02:00,0.1\n";
    write_gz(
        dir.path(),
        "uk-electricity-hdd-only-hourly-sample-0.csv.gz",
        text,
    );

    let filter = MeterFilter {
        meters: vec!["uk-0".to_owned()],
    };
    let error = load_dataset(DatasetKind::EemeterUk, dir.path(), &filter).unwrap_err();
    let message = error.to_string();

    assert!(message.contains("sample-0.csv.gz:3"), "{message}");
    assert!(message.contains("2020-04-01 01:00:00+00:00"), "{message}");
}

#[test]
fn wrong_header_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    write_gz(
        dir.path(),
        "umass_microgrid_2011-04-02_long.csv.gz",
        "id,ts,kw\nb1,0,1\n",
    );

    let error = load_dataset(DatasetKind::Umass, dir.path(), &MeterFilter::default()).unwrap_err();

    assert!(
        matches!(error, PublishError::Malformed { line: 1, .. }),
        "{error:?}"
    );
}

#[test]
fn conflicting_repeated_row_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let text = "building_id,unix_ts,usage_kw\nb1,1301702400,1.0\nb1,1301702400,2.0\n";
    write_gz(dir.path(), "umass_microgrid_2011-04-02_long.csv.gz", text);

    let error = load_dataset(DatasetKind::Umass, dir.path(), &MeterFilter::default()).unwrap_err();

    assert!(
        matches!(error, PublishError::Malformed { line: 3, .. }),
        "{error:?}"
    );
}

#[test]
fn umass_rows_become_minute_energy() {
    let dir = tempfile::tempdir().unwrap();
    let text = "building_id,unix_ts,usage_kw\n\
                b2,1301702400,-0.0\nb2,1301702460,6.0\nb1,1301702400,3.0\nb1,1301702520,5e-05\n";
    write_gz(dir.path(), "umass_microgrid_2011-04-02_long.csv.gz", text);

    let all = load_dataset(DatasetKind::Umass, dir.path(), &MeterFilter::default()).unwrap();

    let ids: Vec<&str> = all.iter().map(|s| s.meter_id.as_str()).collect();
    assert_eq!(ids, ["b2", "b1"], "meters keep their file order");
    assert_eq!(all[0].interval_secs, 60);
    assert_eq!(all[0].intervals[1].energy_kwh, 0.1, "6 kW for one minute");
    assert!(
        all[0].intervals[0].energy_kwh.is_sign_positive(),
        "-0.0 becomes 0.0"
    );

    let messages: Vec<Telemetry> = build_telemetry(&all, &options()).collect();
    assert_eq!(messages[0].topic, "meters/south/b2/telemetry");
    assert_eq!(power_w(&messages[1]), 3000.0, "b1's first minute");
}

#[test]
fn initial_register_is_stable_and_plausible() {
    let value = initial_register_kwh("uk-0");

    assert_eq!(value, initial_register_kwh("uk-0"));
    assert!((1000.0..51_000.0).contains(&value), "{value}");
    assert_ne!(value, initial_register_kwh("uk-1"));
}

mod broker {
    use std::net::{TcpListener, TcpStream};
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

    use super::*;

    /// A Mosquitto process on a free loopback port, stopped on drop.
    struct Mosquitto {
        child: Child,
        port: u16,
        _dir: tempfile::TempDir,
    }

    impl Drop for Mosquitto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Returns the Mosquitto binary: `$MOSQUITTO`, else `/usr/sbin/mosquitto`, else `mosquitto`
    /// on the PATH.
    fn mosquitto_binary() -> PathBuf {
        if let Some(path) = std::env::var_os("MOSQUITTO") {
            return PathBuf::from(path);
        }
        let system = PathBuf::from("/usr/sbin/mosquitto");
        if system.exists() {
            system
        } else {
            PathBuf::from("mosquitto")
        }
    }

    fn start_mosquitto() -> Mosquitto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("mosquitto.conf");
        let text = format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n");
        std::fs::write(&config, text).unwrap();

        let binary = mosquitto_binary();
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "failed to start {}: {e}. Install Mosquitto or set MOSQUITTO to its path",
                    binary.display()
                )
            });
        let broker = Mosquitto {
            child,
            port,
            _dir: dir,
        };

        // Wait until the listener accepts connections.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "Mosquitto did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }

    fn args(port: u16) -> PublishArgs {
        PublishArgs {
            dataset: DatasetKind::EemeterUk,
            data_dir: Some(bundled_eemeter_dir()),
            broker: format!("mqtt://127.0.0.1:{port}"),
            region: "test".to_owned(),
            speedup: 0.0,
            from: Some("2013-01-01T00:00:00Z".parse().unwrap()),
            to: Some("2013-01-02T00:00:00Z".parse().unwrap()),
            meters: Vec::new(),
            rigs: 1,
            rig_kw: 3.25,
            rig_meters: vec!["uk-2".to_owned()],
            rig_from: Some("2013-01-01T12:00:00Z".parse().unwrap()),
            qos: 1,
            client_id: format!("gridwatch-publish-test-{port}"),
            time_shift_days: 0,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_delivers_every_reading_in_order() {
        let broker = start_mosquitto();
        let options = MqttOptions::new("gridwatch-publish-test-sub", "127.0.0.1", broker.port);
        let (subscriber, mut events) = AsyncClient::new(options, 64);
        subscriber
            .subscribe("meters/test/#", QoS::AtLeastOnce)
            .await
            .unwrap();
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.unwrap() {
                break;
            }
        }

        let summary = run(args(broker.port))
            .await
            .expect("publisher run succeeds");
        assert_eq!(
            summary.total_readings(),
            96,
            "two half-hourly meters for one day"
        );
        assert_eq!(summary.meters["uk-1"].readings, 48);
        assert_eq!(summary.meters["uk-2"].readings, 48);
        assert_eq!(summary.first_ts_ms(), Some(ms("2013-01-01T00:00:00Z")));
        assert_eq!(summary.last_ts_ms(), Some(ms("2013-01-01T23:30:00Z")));

        let mut received = Vec::new();
        while received.len() < 96 {
            let event = tokio::time::timeout(Duration::from_secs(10), events.poll())
                .await
                .expect("subscriber received all readings within 10 s")
                .unwrap();
            if let Event::Incoming(Packet::Publish(publish)) = event {
                received.push((publish.topic, publish.payload.to_vec()));
            }
        }

        let series = load_bundled(&[]);
        let args = args(broker.port);
        let options = TelemetryOptions {
            region: "test".to_owned(),
            from_ms: args.from.map(|t| t.timestamp_millis()),
            to_ms: args.to.map(|t| t.timestamp_millis()),
            time_shift_ms: 0,
            injection: Some(Injection {
                rigs: 1,
                rig_kw: 3.25,
                meters: vec!["uk-2".to_owned()],
                from_ms: ms("2013-01-01T12:00:00Z"),
            }),
        };
        let expected: Vec<(String, Vec<u8>)> = build_telemetry(&series, &options)
            .map(|m| (m.topic, m.payload))
            .collect();
        assert_eq!(received, expected);
    }

    #[tokio::test]
    async fn run_rejects_empty_window_before_connecting() {
        let mut args = args(1);
        args.from = Some("2030-01-01T00:00:00Z".parse().unwrap());
        args.to = None;

        let error = run(args).await.unwrap_err();

        assert!(
            matches!(error, PublishError::EmptyWindow { .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("2022-12-06T13:00:00Z"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn run_rejects_unknown_rig_meter() {
        let mut args = args(1);
        args.rig_meters = vec!["uk-7".to_owned()];

        let error = run(args).await.unwrap_err();

        assert!(
            matches!(error, PublishError::UnknownMeters { .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn run_rejects_invalid_broker_url() {
        let mut args = args(1);
        args.broker = "http://127.0.0.1:1883".to_owned();

        let error = run(args).await.unwrap_err();

        assert!(
            matches!(
                error,
                PublishError::InvalidOption {
                    option: "--broker",
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn run_requires_data_dir_for_umass() {
        let mut args = args(1);
        args.dataset = DatasetKind::Umass;
        args.data_dir = None;

        let error = run(args).await.unwrap_err();
        let message = error.to_string();

        assert!(message.contains("--data-dir"), "{message}");
        assert!(message.contains("not bundled"), "{message}");
    }
}

#[test]
fn lcl_days_become_daily_energy_without_partial_days() {
    let dir = tempfile::tempdir().unwrap();
    let header = "LCLid,day,energy_median,energy_mean,energy_max,energy_count,energy_std,\
                  energy_sum,energy_min";
    let rows = [
        "MAC000002,2012-10-12,0.1,0.2,0.9,46,0.1,7.1,0.0",
        "MAC000002,2012-10-13,0.1,0.2,0.9,48,0.1,9.5,0.0",
        "MAC000002,2012-10-14,0.1,0.2,0.9,48,0.1,8.25,0.0",
        "MAC000003,2012-10-13,0.1,0.2,0.9,48,0.1,3.0,0.0",
    ];
    std::fs::write(
        dir.path().join("block_0.csv"),
        format!("{header}\n{}\n", rows.join("\n")),
    )
    .unwrap();
    let all = load_dataset(
        DatasetKind::LclLondonDaily,
        dir.path(),
        &MeterFilter::default(),
    )
    .unwrap();
    let ids: Vec<&str> = all.iter().map(|s| s.meter_id.as_str()).collect();
    assert_eq!(ids, ["MAC000002", "MAC000003"]);
    assert_eq!(all[0].interval_secs, 86_400);
    let energy: Vec<f64> = all[0].intervals.iter().map(|i| i.energy_kwh).collect();
    assert_eq!(
        energy,
        [9.5, 8.25],
        "the day with 46 half-hours is left out"
    );
}

#[test]
fn tsrepr_rows_become_half_hour_series() {
    let dir = tempfile::tempdir().unwrap();
    let header: Vec<String> = (1..=672).map(|i| format!("V{i}")).collect();
    let row: Vec<String> = (0..672).map(|i| format!("{}", i as f64 / 100.0)).collect();
    let text = format!(
        "{}\n{}\n{}\n",
        header.join(","),
        row.join(","),
        row.join(",")
    );
    std::fs::write(dir.path().join("elec_load_50x672.csv"), text).unwrap();
    let all = load_dataset(DatasetKind::Tsrepr, dir.path(), &MeterFilter::default()).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].meter_id, "ts-2");
    assert_eq!(all[0].interval_secs, 1_800);
    assert_eq!(all[0].intervals.len(), 672);
    assert_eq!(all[0].intervals[2].energy_kwh, 0.02);
    let missing = load_dataset(
        DatasetKind::Tsrepr,
        Path::new("/nonexistent"),
        &MeterFilter::default(),
    );
    assert!(missing.unwrap_err().to_string().contains("TSrepr"));
}
