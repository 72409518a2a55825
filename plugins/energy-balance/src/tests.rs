use gridwatch_plugin_sdk::prelude::*;

use super::topology::{self, Customer};
use super::{Balance, JudgedHour, LossFit, Outcome, detect_with, pearson, settings};

const HOUR_MS: i64 = 3_600_000;

/// First hour of the history: Monday 2025-03-03 00:00 UTC.
const START_HOUR: i64 = 1_740_960_000_000 / HOUR_MS;

const CUSTOMERS: [&str; 5] = ["c1", "c2", "c3", "c4", "c5"];

const TOPOLOGY: &str = "transformer,region,meter\n\
                        tx1,north,c1\ntx1,north,c2\ntx1,north,c3\ntx1,north,c4\ntx1,north,c5\n";

/// True hourly load of customer `index`, kWh: a daily cycle with its own size and phase and a
/// little variation from hour to hour.
fn true_kwh(index: usize, hour: i64) -> f64 {
    let base = 0.4 + 0.2 * index as f64;
    let phase = index as f64;
    let cycle = (std::f64::consts::TAU * hour as f64 / 24.0 + phase).sin();
    let wobble = 0.05 * ((hour * 7 + index as i64 * 3) % 5) as f64;
    base * (1.0 + 0.6 * cycle) + wobble
}

/// A feeder of five customers whose transformer meter records their true load plus 3 %
/// losses. From `bypass_hour` on, `bypassed_share` of customer `bypassed`'s load is no longer
/// metered.
struct Feeder {
    bypass: Option<(usize, i64, f64)>,
    /// Loss of every hour on top of the 3 %, kWh.
    no_load_kwh: f64,
}

impl Feeder {
    fn metered_kwh(&self, index: usize, hour: i64) -> f64 {
        let load = true_kwh(index, hour);
        match self.bypass {
            Some((bypassed, from, share)) if bypassed == index && hour >= from => {
                load * (1.0 - share)
            }
            _ => load,
        }
    }

    fn transformer_kwh(&self, hour: i64) -> f64 {
        let total: f64 = (0..CUSTOMERS.len()).map(|i| true_kwh(i, hour)).sum();
        total * 1.03 + self.no_load_kwh
    }

    /// Sets the host's history to the hours before `end_hour`, the customers' up to
    /// `customers_end_hour`.
    fn fill(&self, host: &mut MemoryHost, end_hour: i64, customers_end_hour: i64) {
        let hours = |end: i64, energy: &dyn Fn(i64) -> f64| -> Vec<Hour> {
            (START_HOUR..end)
                .map(|hour| Hour {
                    start_ms: hour * HOUR_MS,
                    energy_kwh: energy(hour),
                    covered_secs: 3600,
                })
                .collect()
        };
        let transformer = hours(end_hour, &|h| self.transformer_kwh(h));
        host.history
            .insert(("tx".into(), "tx1".into()), transformer);
        for (index, meter) in CUSTOMERS.iter().enumerate() {
            let customer = hours(customers_end_hour, &|h| self.metered_kwh(index, h));
            host.history
                .insert(("north".into(), (*meter).into()), customer);
        }
    }
}

fn host() -> MemoryHost {
    let mut host = MemoryHost::with_defaults(&settings());
    host.settings
        .insert("topology".into(), Value::Text(TOPOLOGY.into()));
    host
}

/// Builds a batch of one reading of the meter `tx/meter` at the start of `hour`.
fn reading_of(meter: &'static str, hour: i64) -> Batch {
    reading_in("tx", meter, hour)
}

/// Builds a batch of one reading of the meter `region/meter` at the start of `hour`.
fn reading_in(region: &str, meter: &str, hour: i64) -> Batch {
    let mut builder = BatchBuilder::new();
    builder.push(&NewReading {
        region,
        meter,
        last_score: None,
        timestamp_ms: hour * HOUR_MS,
        energy_import_kwh: 100.0,
        energy_export_kwh: None,
        power_w: None,
        voltage_v: &[],
        current_a: &[],
        events: &[],
        register_kwh: 100.0,
        interval: Interval {
            kind: IntervalKind::Normal,
            start_ms: (hour - 1) * HOUR_MS,
            end_ms: hour * HOUR_MS,
            energy_kwh: 1.0,
        },
        windows: &[],
        register_reversals: 0,
        meter_readings: 1_000,
    });
    builder.build()
}

fn reading_at(hour: i64) -> Batch {
    reading_of("tx1", hour)
}

/// Feeds one transformer reading per hour from `first` to `last` hours after the start and
/// returns the findings with the hour of the reading that raised each.
fn feed(host: &mut MemoryHost, feeder: &Feeder, first: i64, last: i64) -> Vec<(i64, Finding)> {
    let mut found = Vec::new();
    for offset in first..=last {
        let hour = START_HOUR + offset;
        feeder.fill(host, hour, hour);
        let Outcome { findings, problems } = detect_with(host, &reading_at(hour));
        assert!(problems.is_empty(), "{problems:?}");
        found.extend(findings.into_iter().map(|f| (offset, f)));
    }
    found
}

fn text(finding: &Finding, name: &str) -> String {
    match finding.evidence.iter().find(|e| e.name == name) {
        Some(Entry {
            value: Value::Text(t),
            ..
        }) => t.clone(),
        other => panic!("evidence {name} is not text: {other:?}"),
    }
}

fn number(finding: &Finding, name: &str) -> f64 {
    match finding.evidence.iter().find(|e| e.name == name) {
        Some(Entry {
            value: Value::Number(n),
            ..
        }) => *n,
        Some(Entry {
            value: Value::Integer(i),
            ..
        }) => *i as f64,
        other => panic!("evidence {name} is not a number: {other:?}"),
    }
}

#[test]
fn balanced_feeder_reports_nothing() {
    let mut host = host();
    let feeder = Feeder {
        bypass: None,
        no_load_kwh: 0.0,
    };
    let found = feed(&mut host, &feeder, 1, 120);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn no_load_losses_raise_nothing() {
    let mut host = host();
    // 0.15 kWh an hour is 3 % of the feeder's mean load, and more than twice that share in
    // its quietest hours.
    let feeder = Feeder {
        bypass: None,
        no_load_kwh: 0.15,
    };
    let found = feed(&mut host, &feeder, 1, 168);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn bypass_names_the_customer_first() {
    let mut host = host();
    // A third of c4's load, about 9 % of the transformer's energy, from hour 72.
    let feeder = Feeder {
        bypass: Some((3, START_HOUR + 72, 0.35)),
        no_load_kwh: 0.0,
    };
    let found = feed(&mut host, &feeder, 1, 120);
    let (first_hour, first) = found.first().expect("a bypass finding");
    assert!(
        (73..=72 + 12).contains(first_hour),
        "first finding at hour {first_hour}"
    );
    assert_eq!(first.kind, "bypass");
    let (_, last) = found.last().unwrap();
    assert_eq!(text(last, "suspect_1"), "c4", "{:?}", last.evidence);
    assert_eq!(text(last, "suspect_1_region"), "north");
    assert!(text(last, "suspects").starts_with("c4,"));
    let onset = number(last, "onset_ms") as i64;
    assert_eq!(onset, (START_HOUR + 72) * HOUR_MS, "estimated onset");
    let expected = number(last, "expected_loss_share");
    assert!((expected - 0.03).abs() < 0.005, "learned losses {expected}");
}

#[test]
fn bypass_from_first_hour_is_found() {
    let mut host = host();
    // Nearly all of c5's load, about 15 % of the transformer's energy, from the first hour.
    let feeder = Feeder {
        bypass: Some((4, START_HOUR, 0.9)),
        no_load_kwh: 0.0,
    };
    let found = feed(&mut host, &feeder, 1, 48);
    assert!(!found.is_empty());
    let (_, last) = found.last().unwrap();
    assert!(number(last, "excess_share") >= 0.03, "{:?}", last.evidence);
}

#[test]
fn hour_waits_for_customer_readings() {
    let mut host = host();
    let feeder = Feeder {
        bypass: None,
        no_load_kwh: 0.0,
    };
    feed(&mut host, &feeder, 1, 30);
    // The customers' readings stop at hour 30 while the transformer's go on.
    for offset in 31..=40 {
        let hour = START_HOUR + offset;
        feeder.fill(&mut host, hour, START_HOUR + 30);
        let outcome = detect_with(&mut host, &reading_at(hour));
        assert!(outcome.findings.is_empty(), "{:?}", outcome.findings);
    }
    let meter = reading_at(START_HOUR + 40);
    let balance = Balance::load(&mut host, meter.meter_at(0));
    assert_eq!(
        balance.next_hour_ms,
        Some((START_HOUR + 30) * HOUR_MS),
        "the first hour without customer readings is not judged"
    );
}

#[test]
fn hour_is_skipped_after_max_wait() {
    let mut host = host();
    host.settings
        .insert("max_wait_hours".into(), Value::Integer(2));
    let feeder = Feeder {
        bypass: None,
        no_load_kwh: 0.0,
    };
    feed(&mut host, &feeder, 1, 30);
    let hour = START_HOUR + 40;
    feeder.fill(&mut host, hour, START_HOUR + 30);
    detect_with(&mut host, &reading_at(hour));
    let balance = Balance::load(&mut host, reading_at(hour).meter_at(0));
    // Hours up to 36 end at least the lag (1 h) and the wait (2 h) before the reading at hour
    // 40, so they are skipped, and hour 37 still waits.
    assert_eq!(balance.next_hour_ms, Some((START_HOUR + 37) * HOUR_MS));
}

#[test]
fn meter_outside_topology_is_ignored() {
    let mut host = host();
    let outcome = detect_with(&mut host, &reading_of("other", START_HOUR + 5));
    assert!(outcome.findings.is_empty());
    assert!(host.state.is_empty(), "no state for an unlisted meter");
}

#[test]
fn invalid_topology_is_reported_once() {
    let mut host = MemoryHost::with_defaults(&settings());
    host.settings.insert(
        "topology".into(),
        Value::Text("tx9,north,a\ntx9,north\n".into()),
    );
    // A region of its own: the parse cache is per region and shared by the tests running
    // beside this one.
    let batch = reading_in("tx-invalid", "tx9", START_HOUR + 3);
    let first = detect_with(&mut host, &batch);
    assert_eq!(first.problems.len(), 1, "{:?}", first.problems);
    assert!(
        first.problems[0].contains("topology line 2: invalid line 'tx9,north'"),
        "{}",
        first.problems[0]
    );
    let again = detect_with(&mut host, &batch);
    assert!(again.problems.is_empty(), "{:?}", again.problems);
}

#[test]
fn topology_parses_header_comments_and_regions() {
    let text =
        "# feeder map\ntransformer,region,meter\n\ntx1, north, a\ntx1,south,a\ntx2,north,b\n";
    let parsed = topology::parse(text).unwrap();
    assert_eq!(parsed.len(), 2);
    let customers = parsed.customers("tx1").unwrap();
    assert_eq!(
        customers,
        &[
            Customer {
                region: "north".into(),
                meter: "a".into()
            },
            Customer {
                region: "south".into(),
                meter: "a".into()
            },
        ]
    );
    assert!(parsed.customers("a").is_none());
}

#[test]
fn topology_rejects_bad_lines() {
    let cases = [
        (
            "tx1,north\n",
            "topology line 1: invalid line 'tx1,north', expected 3",
        ),
        (
            "tx1,north,a,b\n",
            "topology line 1: invalid line 'tx1,north,a,b'",
        ),
        ("tx1,,a\n", "topology line 1: empty region in 'tx1,,a'"),
        (
            "tx1,north,a\ntx2,north,a\n",
            "topology line 2: meter 'north/a' is already listed under transformer 'tx1'",
        ),
    ];
    for (text, expected) in cases {
        let error = topology::parse(text).unwrap_err();
        assert!(error.starts_with(expected), "{text:?}: {error}");
    }
}

#[test]
fn balance_state_round_trips() {
    let mut host = host();
    let batch = reading_at(START_HOUR + 1);
    let meter = batch.meter_at(0);
    let balance = Balance {
        next_hour_ms: Some(42 * HOUR_MS),
        learned_hours: 30,
        fit: LossFit {
            weight: 20.0,
            transformer_kwh: 12.5,
            deficit_kwh: 0.4,
            transformer_sq: 9.0,
            product: 0.3,
        },
        onset_ms: None,
        quiet_hours: 3,
        recent: vec![JudgedHour {
            start_ms: 41 * HOUR_MS,
            transformer_kwh: 2.0,
            deficit_kwh: 0.1,
        }],
    };
    balance.store(&mut host, meter);
    assert_eq!(Balance::load(&mut host, meter), balance);
}

#[test]
fn pearson_of_known_series() {
    let xs = [1.0, 2.0, 3.0, 4.0];
    assert!((pearson(&xs, &[2.0, 4.0, 6.0, 8.0]) - 1.0).abs() < 1e-12);
    assert!((pearson(&xs, &[8.0, 6.0, 4.0, 2.0]) + 1.0).abs() < 1e-12);
    assert_eq!(pearson(&xs, &[1.0, 1.0, 1.0, 1.0]), 0.0);
    assert_eq!(pearson(&xs[..2], &[1.0, 2.0]), 0.0);
}
