//! Prometheus metrics shared by every stage.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A counter of seconds.
pub type SecondsCounter = Counter<f64, std::sync::atomic::AtomicU64>;

type Labels = Vec<(&'static str, String)>;

/// Every metric the daemon exports. Counters get the `_total` suffix when encoded.
pub struct Metrics {
    registry: Registry,
    /// Messages received from MQTT.
    pub readings_received: Counter,
    /// Readings decoded and applied to meter state.
    pub readings_accepted: Counter,
    /// Messages rejected, by `reason`.
    pub readings_rejected: Family<Labels, Counter>,
    /// Readings whose register step was classified, by `kind` (normal, duplicate, late, gap, ...).
    pub register_intervals: Family<Labels, Counter>,
    /// Rule failures, by `rule` and `error` (operations, call_depth, string_size, runtime, ...).
    pub rule_errors: Family<Labels, Counter>,
    /// Event codes of `late` and `duplicate` readings, which reach no rule or plugin, by
    /// `interval`.
    pub events_not_evaluated: Family<Labels, Counter>,
    /// Calls of a rule's `on_reading`, by `rule`.
    pub rule_evaluations: Family<Labels, Counter>,
    /// Time spent in a rule's `on_reading`, by `rule`.
    pub rule_evaluation_seconds: Family<Labels, SecondsCounter>,
    /// Rule set reloads, by `outcome` (success, failure).
    pub rule_reloads: Family<Labels, Counter>,
    /// 1 when the active rule set is older than the files on disk because the last reload failed.
    pub rules_stale: Gauge,
    /// Messages decoded by a `[[decoders]]` entry, by `decoder` and `outcome` (reading,
    /// rejected, held, ignored).
    pub messages_decoded: Family<Labels, Counter>,
    /// Decoder script reloads, by outcome.
    pub decoder_reloads: Family<Labels, Counter>,
    /// 1 when the active decoder scripts are older than the files on disk because the last
    /// reload failed.
    pub decoders_stale: Gauge,
    /// Alerts by `change` (opened, escalated, repeated).
    pub alerts: Family<Labels, Counter>,
    /// Webhook delivery attempts, by `webhook` and `outcome`.
    pub webhook_deliveries: Family<Labels, Counter>,
    /// Deliveries waiting in the outbox.
    pub outbox_depth: Gauge,
    /// Deliveries in the dead-letter table.
    pub dead_letters: Gauge,
    /// 1 for a webhook disabled after its endpoint returned 410 Gone, 0 for a configured one that
    /// is enabled, by `webhook`.
    pub webhook_disabled: Family<Labels, Gauge>,
    /// 1 while connected to the MQTT broker.
    pub mqtt_connected: Gauge,
    /// MQTT connection attempts that failed.
    pub mqtt_connection_errors: Counter,
    /// Acknowledgements written to the broker connection.
    pub mqtt_acks: Counter,
    /// Acknowledgements dropped because the broker session of their message had ended.
    pub mqtt_acks_dropped: Counter,
    /// Redb commits of reading batches.
    pub store_commits: Counter,
    /// Messages whose batch was committed, accepted and rejected alike; after a commit
    /// failure it lags `readings_received` until the retry succeeds.
    pub messages_committed: Counter,
    /// 1 while batch commits succeed, 0 while they fail and readings stay unacknowledged.
    pub store_healthy: Gauge,
    /// Meters held in memory.
    pub meters: Gauge,
    /// Plugins loaded from the plugins folder.
    pub plugins_loaded: Gauge,
    /// Plugin folder reloads, by `outcome` (success, failure).
    pub plugin_reloads: Family<Labels, Counter>,
    /// Readings passed to plugins, by `plugin`.
    pub plugin_readings: Family<Labels, Counter>,
    /// Findings returned by plugins, by `plugin`.
    pub plugin_findings: Family<Labels, Counter>,
    /// Failed plugin calls, by `plugin` and `cause` (fuel, deadline, memory, stack, output,
    /// invalid_output, state, trap, instantiate).
    pub plugin_failures: Family<Labels, Counter>,
    /// Findings dropped as invalid from calls that succeeded, by `plugin`.
    pub plugin_findings_dropped: Family<Labels, Counter>,
    /// Time spent in a plugin's detect calls, by `plugin`: converting the batch, the call
    /// itself and reading the findings.
    pub plugin_call_seconds: Family<Labels, SecondsCounter>,
    /// 1 while a plugin is quarantined after repeated failures, by `plugin`.
    pub plugin_quarantined: Family<Labels, Gauge>,
    /// Times a plugin entered quarantine, by `plugin`.
    pub plugin_quarantines: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("gridwatch");
        let m = Metrics {
            registry: Registry::default(),
            readings_received: Counter::default(),
            readings_accepted: Counter::default(),
            readings_rejected: Family::default(),
            register_intervals: Family::default(),
            rule_errors: Family::default(),
            events_not_evaluated: Family::default(),
            rule_evaluations: Family::default(),
            rule_evaluation_seconds: Family::default(),
            rule_reloads: Family::default(),
            rules_stale: Gauge::default(),
            messages_decoded: Family::default(),
            decoder_reloads: Family::default(),
            decoders_stale: Gauge::default(),
            alerts: Family::default(),
            webhook_deliveries: Family::default(),
            outbox_depth: Gauge::default(),
            dead_letters: Gauge::default(),
            webhook_disabled: Family::default(),
            mqtt_connected: Gauge::default(),
            mqtt_connection_errors: Counter::default(),
            mqtt_acks: Counter::default(),
            mqtt_acks_dropped: Counter::default(),
            store_commits: Counter::default(),
            messages_committed: Counter::default(),
            store_healthy: Gauge::default(),
            meters: Gauge::default(),
            plugins_loaded: Gauge::default(),
            plugin_reloads: Family::default(),
            plugin_readings: Family::default(),
            plugin_findings: Family::default(),
            plugin_findings_dropped: Family::default(),
            plugin_failures: Family::default(),
            plugin_call_seconds: Family::default(),
            plugin_quarantined: Family::default(),
            plugin_quarantines: Family::default(),
        };
        let r = &mut registry;
        r.register(
            "readings_received",
            "Messages received from MQTT",
            m.readings_received.clone(),
        );
        r.register(
            "readings_accepted",
            "Readings accepted",
            m.readings_accepted.clone(),
        );
        r.register(
            "readings_rejected",
            "Messages rejected, by reason",
            m.readings_rejected.clone(),
        );
        r.register(
            "register_intervals",
            "Register steps by classification",
            m.register_intervals.clone(),
        );
        r.register(
            "rule_errors",
            "Rule failures, by rule and error",
            m.rule_errors.clone(),
        );
        r.register(
            "events_not_evaluated",
            "Event codes of late and duplicate readings, which reach no rule or plugin, by interval",
            m.events_not_evaluated.clone(),
        );
        r.register(
            "rule_evaluations",
            "Calls of a rule's on_reading, by rule",
            m.rule_evaluations.clone(),
        );
        r.register(
            "rule_evaluation_seconds",
            "Time spent in a rule's on_reading, by rule",
            m.rule_evaluation_seconds.clone(),
        );
        r.register(
            "rule_reloads",
            "Rule set reloads, by outcome",
            m.rule_reloads.clone(),
        );
        r.register(
            "rules_stale",
            "1 when the last rule reload failed",
            m.rules_stale.clone(),
        );
        r.register(
            "messages_decoded",
            "Messages decoded by a configured decoder, by decoder and outcome",
            m.messages_decoded.clone(),
        );
        r.register(
            "decoder_reloads",
            "Decoder script reloads, by outcome",
            m.decoder_reloads.clone(),
        );
        r.register(
            "decoders_stale",
            "1 when the last decoder script reload failed",
            m.decoders_stale.clone(),
        );
        r.register("alerts", "Alert firings, by change", m.alerts.clone());
        r.register(
            "webhook_deliveries",
            "Webhook delivery attempts, by webhook and outcome",
            m.webhook_deliveries.clone(),
        );
        r.register(
            "outbox_depth",
            "Deliveries waiting in the outbox",
            m.outbox_depth.clone(),
        );
        r.register(
            "dead_letters",
            "Deliveries in the dead-letter table",
            m.dead_letters.clone(),
        );
        r.register(
            "webhook_disabled",
            "1 for a webhook disabled after 410 Gone, by webhook",
            m.webhook_disabled.clone(),
        );
        r.register(
            "mqtt_connected",
            "1 while connected to the broker",
            m.mqtt_connected.clone(),
        );
        r.register(
            "mqtt_connection_errors",
            "Failed MQTT connection attempts",
            m.mqtt_connection_errors.clone(),
        );
        r.register(
            "mqtt_acks",
            "Acknowledgements written to the broker connection",
            m.mqtt_acks.clone(),
        );
        r.register(
            "mqtt_acks_dropped",
            "Acknowledgements dropped because the broker session of their message had ended",
            m.mqtt_acks_dropped.clone(),
        );
        r.register(
            "messages_committed",
            "Messages whose batch was committed",
            m.messages_committed.clone(),
        );
        r.register(
            "store_commits",
            "Commits of reading batches",
            m.store_commits.clone(),
        );
        r.register(
            "plugins_loaded",
            "Plugins loaded from the plugins folder",
            m.plugins_loaded.clone(),
        );
        r.register(
            "plugin_reloads",
            "Plugin folder reloads, by outcome",
            m.plugin_reloads.clone(),
        );
        r.register(
            "plugin_readings",
            "Readings passed to plugins, by plugin",
            m.plugin_readings.clone(),
        );
        r.register(
            "plugin_findings",
            "Findings returned by plugins, by plugin",
            m.plugin_findings.clone(),
        );
        r.register(
            "plugin_findings_dropped",
            "Findings dropped as invalid from calls that succeeded, by plugin",
            m.plugin_findings_dropped.clone(),
        );
        r.register(
            "plugin_failures",
            "Failed plugin calls, by plugin and cause",
            m.plugin_failures.clone(),
        );
        r.register(
            "plugin_call_seconds",
            "Time spent in a plugin's detect calls, by plugin",
            m.plugin_call_seconds.clone(),
        );
        r.register(
            "plugin_quarantined",
            "1 while a plugin is quarantined, by plugin",
            m.plugin_quarantined.clone(),
        );
        r.register(
            "plugin_quarantines",
            "Times a plugin entered quarantine, by plugin",
            m.plugin_quarantines.clone(),
        );
        r.register(
            "store_healthy",
            "1 while batch commits succeed",
            m.store_healthy.clone(),
        );
        r.register("meters", "Meters held in memory", m.meters.clone());
        m.store_healthy.set(1);
        Metrics { registry, ..m }
    }

    /// Encodes every metric in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Increments a one-label counter family.
    pub fn inc(family: &Family<Labels, Counter>, label: &'static str, value: &str) {
        family.get_or_create(&vec![(label, value.to_owned())]).inc();
    }
}
