//! Checks that `docs/config.md` lists exactly the keys the configuration accepts, and that
//! each documented default is the real one.

use super::*;

const REFERENCE: &str = include_str!("../../../docs/config.md");

/// A table of the reference: the marker above it (such as `[mqtt]`) and its rows.
struct Table {
    marker: String,
    rows: Vec<(String, String)>,
}

/// Splits the reference into tables, each named by the last backticked name in the heading or
/// sentence above it.
fn tables() -> Vec<Table> {
    let mut tables: Vec<Table> = Vec::new();
    let mut marker = String::new();
    let mut in_table = false;
    for line in REFERENCE.lines() {
        if let Some(row) = line.strip_prefix("| `") {
            let (key, rest) = row.split_once('`').unwrap();
            let default = rest
                .trim_start_matches(" |")
                .split(" | ")
                .next()
                .unwrap()
                .trim();
            if !in_table {
                tables.push(Table {
                    marker: marker.clone(),
                    rows: Vec::new(),
                });
                in_table = true;
            }
            let table = tables.last_mut().unwrap();
            table.rows.push((key.to_owned(), default.to_owned()));
            continue;
        }
        if line.starts_with('|') {
            continue;
        }
        in_table = false;
        let heading = line.starts_with("## ") || line.ends_with(':');
        if let Some(name) = line.split('`').nth(1).filter(|_| heading) {
            marker = name.to_owned();
        }
    }
    tables
}

/// How to reach one table's keys: the TOML around a key, and the parsed part to compare.
struct Place {
    marker: &'static str,
    wrap: fn(&str) -> String,
    view: fn(&Config) -> String,
}

const DECODER: &str = "[[decoders]]\nname = \"d\"\nformat = \"dsmr\"\ntopic = \"x/{meter}\"\n";
const WEBHOOK: &str = "[[webhooks]]\nname = \"w\"\nurl = \"http://127.0.0.1:1/\"\n\
                       secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n";

fn places() -> Vec<Place> {
    vec![
        Place {
            marker: "[mqtt]",
            wrap: |k| format!("[mqtt]\n{k}"),
            view: |c| format!("{:?}", c.mqtt),
        },
        Place {
            marker: "[decode]",
            wrap: |k| format!("[decode]\n{k}"),
            view: |c| format!("{:?}", c.decode),
        },
        Place {
            marker: "[[decoders]]",
            wrap: |k| format!("{DECODER}{k}"),
            view: |c| format!("{:?}", c.decoders),
        },
        Place {
            marker: "sml",
            wrap: |k| format!("{DECODER}sml = {{ {k} }}"),
            view: |c| format!("{:?}", c.decoders),
        },
        Place {
            marker: "[state]",
            wrap: |k| format!("[state]\n{k}"),
            view: |c| format!("{:?}", c.state),
        },
        Place {
            marker: "[rules]",
            wrap: |k| format!("[rules]\n{k}"),
            view: |c| format!("{:?}", c.rules),
        },
        Place {
            marker: "[plugins]",
            wrap: |k| format!("[plugins]\n{k}"),
            view: |c| format!("{:?}", c.plugins),
        },
        Place {
            marker: "[plugins.detectors.NAME]",
            wrap: |k| format!("[plugins.detectors.p]\n{k}"),
            view: |c| format!("{:?}", c.plugins.detectors),
        },
        Place {
            marker: "[store]",
            wrap: |k| format!("[store]\n{k}"),
            view: |c| format!("{:?}", c.store),
        },
        Place {
            marker: "[http]",
            wrap: |k| format!("[http]\n{k}"),
            view: |c| format!("{:?}", c.http),
        },
        Place {
            marker: "[[http.tokens]]",
            wrap: |k| format!("[[http.tokens]]\nname = \"n\"\ntoken = \"t\"\n{k}"),
            view: |c| format!("{:?}", c.http.tokens),
        },
        Place {
            marker: "[delivery]",
            wrap: |k| format!("[delivery]\n{k}"),
            view: |c| format!("{:?}", c.delivery),
        },
        Place {
            marker: "[[webhooks]]",
            wrap: |k| format!("{WEBHOOK}{k}"),
            view: |c| format!("{:?}", c.webhooks),
        },
    ]
}

/// Returns the field names serde lists when it meets an unknown key at `place`.
fn accepted_keys(place: &Place) -> Vec<String> {
    let text = (place.wrap)("zz_unknown_key = 1");
    let problems = Config::parse(&text)
        .expect_err("an unknown key is rejected")
        .join("\n");
    // serde writes "expected `a`", "expected `a` or `b`" or "expected one of `a`, `b`, ...".
    let Some((_, list)) = problems.split_once("`zz_unknown_key`, expected ") else {
        panic!("{}: no list of keys in: {problems}", place.marker);
    };
    let list = list.lines().next().unwrap_or_default();
    let mut keys: Vec<String> = list
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    keys.sort();
    keys
}

#[test]
fn reference_lists_every_accepted_key() {
    let tables = tables();
    for place in places() {
        let table = tables
            .iter()
            .find(|t| t.marker == place.marker)
            .unwrap_or_else(|| panic!("docs/config.md has no table for {}", place.marker));
        let mut documented: Vec<String> = table.rows.iter().map(|(k, _)| k.clone()).collect();
        documented.sort();
        assert_eq!(
            documented,
            accepted_keys(&place),
            "keys of {}",
            place.marker
        );
    }
    assert_eq!(
        tables.len(),
        places().len(),
        "every table of the reference is checked"
    );
}

#[test]
fn reference_defaults_are_the_real_ones() {
    let tables = tables();
    for place in places() {
        let table = tables.iter().find(|t| t.marker == place.marker).unwrap();
        let base = Config::parse(&(place.wrap)("")).unwrap();
        for (key, default) in &table.rows {
            let Some(value) = default.strip_prefix('`').and_then(|d| d.strip_suffix('`')) else {
                continue;
            };
            let text = (place.wrap)(&format!("{key} = {value}"));
            let parsed = Config::parse(&text)
                .unwrap_or_else(|p| panic!("{} {key} = {value}: {p:?}", place.marker));
            assert_eq!(
                (place.view)(&parsed),
                (place.view)(&base),
                "{} {key}: documented default {value} differs from the real one",
                place.marker
            );
        }
    }
}
