//! The daemon's TOML configuration: types, defaults and validation.
//!
//! Loading collects every problem it finds (unknown keys, wrong types, out-of-range values) and
//! reports them together, each with its key path. Secret values are never part of a message.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// MQTT ingest.
    pub mqtt: MqttConfig,
    /// Reading validation bounds.
    pub decode: DecodeConfig,
    /// Per-meter state and rolling statistics.
    pub state: StateConfig,
    /// Rule folder and sandbox limits.
    pub rules: RulesConfig,
    /// The embedded database.
    pub store: StoreConfig,
    /// The HTTP endpoint for health, metrics and the alert API.
    pub http: HttpConfig,
    /// Webhook retry policy shared by all endpoints.
    pub delivery: DeliveryConfig,
    /// Webhook endpoints that receive alerts.
    pub webhooks: Vec<WebhookConfig>,
    /// WebAssembly detector plugins: folder, sandbox limits and per-region settings.
    pub plugins: PluginsConfig,
    /// Device formats by topic template, tried in order before `mqtt.topic_layout`.
    pub decoders: Vec<DecoderConfig>,
}

/// A secret string (password, signing key). Its `Debug` output is redacted.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Returns the secret value. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Returns true when no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// MQTT connection and subscription settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Broker URL: `mqtt://host:port` or `mqtts://host:port` for TLS.
    pub url: String,
    /// Client id. It must stay the same across restarts so the broker keeps the session.
    pub client_id: String,
    /// User name, empty for none.
    pub username: String,
    /// Password, empty for none.
    pub password: Secret,
    /// Topic filters to subscribe to.
    pub topics: Vec<String>,
    /// Topic layout with `{region}` and `{meter_id}` placeholders, one level each.
    pub topic_layout: String,
    /// Keep-alive interval in seconds.
    pub keep_alive_secs: u64,
    /// Largest accepted payload; larger messages are rejected as `oversized`.
    pub max_payload_bytes: usize,
    /// First reconnect delay in milliseconds; it doubles up to `reconnect_max_ms`.
    pub reconnect_min_ms: u64,
    /// Upper bound of the reconnect delay in milliseconds.
    pub reconnect_max_ms: u64,
    /// PEM file with the CA certificates to trust for `mqtts://`; empty uses the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub client_key_file: Option<PathBuf>,
    /// Readings queued between the MQTT task and the pipeline before intake pauses.
    pub queue_capacity: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: "mqtt://127.0.0.1:1883".into(),
            client_id: "gridwatch".into(),
            username: String::new(),
            password: Secret::default(),
            topics: vec!["meters/+/+/telemetry".into()],
            topic_layout: "meters/{region}/{meter_id}/telemetry".into(),
            keep_alive_secs: 30,
            max_payload_bytes: 64 * 1024,
            reconnect_min_ms: 250,
            reconnect_max_ms: 30_000,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            queue_capacity: 10_000,
        }
    }
}

/// Bounds that a reading must satisfy to be accepted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// Earliest accepted reading time, RFC 3339.
    pub min_timestamp: String,
    /// How far a reading may lie ahead of the daemon's clock, in seconds.
    pub max_future_secs: i64,
    /// Largest plausible instantaneous power in kilowatts, either sign.
    pub max_power_kw: f64,
    /// Largest plausible register value in kilowatt-hours.
    pub max_register_kwh: f64,
    /// Largest plausible phase voltage in volts.
    pub max_voltage_v: f64,
    /// Largest plausible phase current in amperes.
    pub max_current_a: f64,
    /// Folder of Rhai decoder scripts named by `[[decoders]] script`, watched for changes.
    pub scripts_dir: PathBuf,
    /// Quiet time after the last change in `scripts_dir` before a reload, in milliseconds.
    pub reload_debounce_ms: u64,
    /// Devices whose partial messages (Shelly Gen1 topics, Shelly Gen2 `em` status) are held
    /// at once; a new device beyond this is rejected.
    pub max_pending_devices: usize,
    /// Operations a decoder script may run per message; the other sandbox limits are those of
    /// `[rules]`.
    pub max_operations: u64,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            min_timestamp: "2000-01-01T00:00:00Z".into(),
            max_future_secs: 86_400,
            max_power_kw: 10_000.0,
            max_register_kwh: 1e10,
            max_voltage_v: 1_000.0,
            max_current_a: 10_000.0,
            scripts_dir: PathBuf::from("decoders"),
            reload_debounce_ms: 300,
            max_pending_devices: 100_000,
            max_operations: 1_000_000,
        }
    }
}

/// Per-meter state settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Rolling windows, each visible to rules by name.
    pub windows: Vec<WindowConfig>,
    /// Intervals longer than this are gaps: their energy is not spread over the window.
    pub max_interval_minutes: u32,
    /// A register drop up to this size is a glitch and yields zero energy.
    pub glitch_tolerance_kwh: f64,
    /// A register that restarts at or below this value after a drop is a meter exchange.
    pub exchange_max_start_kwh: f64,
    /// First hour (UTC, inclusive) of the night period used by the night/day ratio.
    pub night_start_hour: u8,
    /// Last hour (UTC, exclusive) of the night period.
    pub night_end_hour: u8,
    /// Threads that apply readings and run rules, each owning a share of the meters; 0 uses
    /// one per CPU core.
    pub workers: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            windows: vec![
                WindowConfig {
                    name: "24h".into(),
                    hours: 24,
                },
                WindowConfig {
                    name: "7d".into(),
                    hours: 168,
                },
            ],
            max_interval_minutes: 180,
            glitch_tolerance_kwh: 1.0,
            exchange_max_start_kwh: 10.0,
            night_start_hour: 0,
            night_end_hour: 6,
            workers: 0,
        }
    }
}

/// One rolling statistics window.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Name rules use to select the window, such as `7d`.
    pub name: String,
    /// Length in hours.
    pub hours: u32,
}

/// Rule folder and Rhai sandbox limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Folder with one sub-folder per region and the `common` folder.
    pub dir: PathBuf,
    /// Name of the sub-folder whose rules and parameters apply to every region.
    pub common_folder: String,
    /// Operations one rule may run for one reading.
    pub max_operations: u64,
    /// Maximum function call depth.
    pub max_call_levels: usize,
    /// Maximum expression nesting depth.
    pub max_expr_depth: usize,
    /// Maximum string length in bytes.
    pub max_string_bytes: usize,
    /// Maximum array length.
    pub max_array_len: usize,
    /// Maximum map size.
    pub max_map_len: usize,
    /// Alerts one rule may raise for one reading; more are dropped and counted as an error.
    pub max_alerts_per_reading: usize,
    /// Quiet time after the last file change before a reload, in milliseconds.
    pub reload_debounce_ms: u64,
    /// Minimum time between two log lines for errors of the same rule, in seconds.
    pub error_log_interval_secs: u64,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            dir: PathBuf::from("rules"),
            common_folder: "common".into(),
            max_operations: 50_000,
            max_call_levels: 16,
            max_expr_depth: 64,
            max_string_bytes: 16 * 1024,
            max_array_len: 4_096,
            max_map_len: 256,
            max_alerts_per_reading: 8,
            reload_debounce_ms: 300,
            error_log_interval_secs: 60,
        }
    }
}

/// WebAssembly detector plugins: the folder they load from and the sandbox every call runs in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Folder of `.wasm` components, watched for changes.
    pub dir: PathBuf,
    /// Folder for compiled plugins, keyed by content hash; an empty path turns the cache off.
    pub cache_dir: PathBuf,
    /// Fuel (roughly, wasm instructions) a call may use for each reading it carries.
    pub fuel_per_reading: u64,
    /// Fuel every call gets on top of the per-reading budget.
    pub fuel_per_call: u64,
    /// Wall-clock limit of one call, in milliseconds; a backstop behind fuel.
    pub call_timeout_ms: u64,
    /// Linear memory a plugin instance may grow to, in bytes.
    pub max_memory_bytes: usize,
    /// Wasm stack a call may use, in bytes.
    pub max_stack_bytes: usize,
    /// Bytes of findings (strings and fixed overhead per finding) one call may return.
    pub max_output_bytes: usize,
    /// Readings passed in one call; larger batches are split.
    pub max_readings_per_call: usize,
    /// Largest plugin state value, in bytes; a larger `set-state` fails the call.
    pub max_state_value_bytes: usize,
    /// Plugin state bytes (keys and values) one call may write; more fails the call.
    pub max_state_bytes_per_call: usize,
    /// Consecutive failed calls after which a plugin is quarantined.
    pub quarantine_after_failures: u32,
    /// First quarantine length, in seconds; it doubles on each quarantine in a row.
    pub quarantine_initial_secs: u64,
    /// Maximum quarantine, in seconds.
    pub quarantine_max_secs: u64,
    /// Quiet time after the last file change before a reload, in milliseconds.
    pub reload_debounce_ms: u64,
    /// Plugins to run, by plugin name. A loaded plugin without an entry runs nowhere.
    pub detectors: BTreeMap<String, DetectorConfig>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            dir: PathBuf::from("plugins"),
            cache_dir: PathBuf::from("data/plugin-cache"),
            fuel_per_reading: 1_000_000,
            fuel_per_call: 10_000_000,
            call_timeout_ms: 1_000,
            max_memory_bytes: 64 << 20,
            max_stack_bytes: 512 << 10,
            max_output_bytes: 1 << 20,
            max_readings_per_call: 1_024,
            max_state_value_bytes: 64 << 10,
            max_state_bytes_per_call: 1 << 20,
            quarantine_after_failures: 3,
            quarantine_initial_secs: 10,
            quarantine_max_secs: 600,
            reload_debounce_ms: 300,
            detectors: BTreeMap::new(),
        }
    }
}

/// Largest `plugins.max_stack_bytes`: the pipeline thread's stack must hold the wasm stack
/// and the host's own frames.
pub const MAX_PLUGIN_STACK_BYTES: usize = 1 << 20;

/// Largest `plugins.quarantine_max_secs`, one week.
pub const MAX_QUARANTINE_SECS: u64 = 7 * 24 * 3600;

impl PluginsConfig {
    /// Returns the problem of a `cache_dir` inside `dir`, comparing the two paths as `resolve`
    /// returns them.
    fn cache_dir_problem(&self, resolve: fn(&Path) -> PathBuf) -> Option<String> {
        if self.cache_dir.as_os_str().is_empty()
            || !resolve(&self.cache_dir).starts_with(resolve(&self.dir))
        {
            return None;
        }
        Some(format!(
            "plugins.cache_dir: '{}' is inside plugins.dir '{}', expected a separate folder \
             that only the daemon can write, because compiled code there is trusted",
            self.cache_dir.display(),
            self.dir.display()
        ))
    }

    fn validate(&self, problems: &mut Vec<String>) {
        for (key, value) in [
            ("plugins.fuel_per_reading", self.fuel_per_reading),
            ("plugins.fuel_per_call", self.fuel_per_call),
            ("plugins.call_timeout_ms", self.call_timeout_ms),
            ("plugins.max_memory_bytes", self.max_memory_bytes as u64),
            ("plugins.max_stack_bytes", self.max_stack_bytes as u64),
            ("plugins.max_output_bytes", self.max_output_bytes as u64),
            (
                "plugins.max_readings_per_call",
                self.max_readings_per_call as u64,
            ),
            (
                "plugins.quarantine_after_failures",
                u64::from(self.quarantine_after_failures),
            ),
            (
                "plugins.quarantine_initial_secs",
                self.quarantine_initial_secs,
            ),
        ] {
            positive(problems, key, value);
        }
        if self.max_stack_bytes > MAX_PLUGIN_STACK_BYTES {
            problems.push(format!(
                "plugins.max_stack_bytes: {} is above the largest supported value, expected at \
                 most {MAX_PLUGIN_STACK_BYTES}",
                self.max_stack_bytes
            ));
        }
        if self.quarantine_max_secs > MAX_QUARANTINE_SECS {
            problems.push(format!(
                "plugins.quarantine_max_secs: {} is above one week, expected at most \
                 {MAX_QUARANTINE_SECS}",
                self.quarantine_max_secs
            ));
        }
        if let Some(problem) = self.cache_dir_problem(normalized) {
            problems.push(problem);
        }
        if self.quarantine_max_secs < self.quarantine_initial_secs {
            problems.push(format!(
                "plugins.quarantine_max_secs: {} is below quarantine_initial_secs {}, expected \
                 at least that",
                self.quarantine_max_secs, self.quarantine_initial_secs
            ));
        }
        for (name, detector) in &self.detectors {
            detector.validate(name, problems);
        }
    }
}

/// Regions and settings of one plugin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// Regions the plugin runs in; `"*"` means every region.
    #[serde(default = "every_region")]
    pub regions: Vec<String>,
    /// More regions whose meters' history the plugin may read, besides `regions`.
    #[serde(default)]
    pub history_regions: Vec<String>,
    /// Settings for every region, by setting name.
    #[serde(default)]
    pub settings: toml::Table,
    /// Settings for single regions, replacing keys of `settings`, by region then setting name.
    #[serde(default)]
    pub region_settings: BTreeMap<String, toml::Table>,
    /// Fuel of each call of this plugin, in place of `plugins.fuel_per_call`.
    #[serde(default)]
    pub fuel_per_call: Option<u64>,
    /// Fuel per reading of a call of this plugin, in place of `plugins.fuel_per_reading`.
    #[serde(default)]
    pub fuel_per_reading: Option<u64>,
}

fn every_region() -> Vec<String> {
    vec!["*".to_owned()]
}

/// Returns true when `region` can name a region: 1 to 128 bytes without `/`, `+` or `#`,
/// which would clash with the `region/meter_id` keys and MQTT topic levels.
fn is_region_name(region: &str) -> bool {
    !region.is_empty() && region.len() <= 128 && !region.contains(['/', '+', '#'])
}

/// Returns true when `regions` names `region` or contains `"*"`.
pub fn lists_region(regions: &[String], region: &str) -> bool {
    regions.iter().any(|r| r == "*" || r == region)
}

impl DetectorConfig {
    /// Returns true when the plugin runs in `region`.
    pub fn runs_in(&self, region: &str) -> bool {
        lists_region(&self.regions, region)
    }

    fn validate(&self, name: &str, problems: &mut Vec<String>) {
        let lists = [
            ("regions", &self.regions),
            ("history_regions", &self.history_regions),
        ];
        for (field, regions) in lists {
            for region in regions.iter().filter(|r| *r != "*" && !is_region_name(r)) {
                problems.push(format!(
                    "plugins.detectors.{name}.{field}: invalid region '{region}', expected \"*\" \
                     or 1 to 128 bytes without '/', '+' or '#'"
                ));
            }
        }
        let tables = std::iter::once(("settings.".to_owned(), &self.settings)).chain(
            self.region_settings
                .iter()
                .map(|(region, table)| (format!("region_settings.{region}."), table)),
        );
        for (prefix, table) in tables {
            for (key, value) in table {
                let is_file = setting_file(value).is_some();
                if !is_file
                    && matches!(
                        value,
                        toml::Value::Array(_) | toml::Value::Table(_) | toml::Value::Datetime(_)
                    )
                {
                    problems.push(format!(
                        "plugins.detectors.{name}.{prefix}{key}: unsupported {} value, expected \
                         a boolean, integer, float, string or {{ file = \"PATH\" }}",
                        value.type_str()
                    ));
                }
            }
        }
    }

    /// Replaces every `{ file = "PATH" }` setting with the text of that file, resolving a
    /// relative path against `base`.
    fn read_setting_files(&mut self, name: &str, base: &Path, problems: &mut Vec<String>) {
        let tables = std::iter::once(("settings.".to_owned(), &mut self.settings)).chain(
            self.region_settings
                .iter_mut()
                .map(|(region, table)| (format!("region_settings.{region}."), table)),
        );
        for (prefix, table) in tables {
            for (key, value) in table.iter_mut() {
                let Some(file) = setting_file(value) else {
                    continue;
                };
                let path = base.join(file);
                match read_setting_file(&path) {
                    Ok(text) => *value = toml::Value::String(text),
                    Err(error) => problems.push(format!(
                        "plugins.detectors.{name}.{prefix}{key}: failed to read file '{}': \
                         {error}",
                        path.display()
                    )),
                }
            }
        }
    }
}

/// Largest file a `{ file = "PATH" }` setting may name, bytes.
pub const MAX_SETTING_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Reads the text of a setting file: a regular file (or a link to one) of UTF-8 text, at most
/// [`MAX_SETTING_FILE_BYTES`]. A pipe or device would block or never end.
fn read_setting_file(path: &Path) -> Result<String, String> {
    let metadata = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !metadata.is_file() {
        return Err("not a regular file".to_owned());
    }
    if metadata.len() > MAX_SETTING_FILE_BYTES {
        return Err(format!(
            "{} bytes is over the limit of {MAX_SETTING_FILE_BYTES} bytes",
            metadata.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "invalid UTF-8 at byte {}; expected UTF-8 text",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Returns the path of a setting written as `{ file = "PATH" }`, whose value is the file's
/// text.
fn setting_file(value: &toml::Value) -> Option<&str> {
    let table = value.as_table()?;
    match (table.len(), table.get("file")) {
        (1, Some(toml::Value::String(path))) => Some(path),
        _ => None,
    }
}

/// Embedded database settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Path of the redb file; its folder is created when missing.
    pub path: PathBuf,
    /// Rejected messages kept for inspection; the oldest are evicted first.
    pub max_rejected_kept: u64,
    /// Payload bytes kept per rejected message.
    pub rejected_payload_max_bytes: usize,
    /// Page cache of the database, bytes.
    pub cache_bytes: usize,
    /// Largest number of readings in one commit. A batch is committed as soon as no further
    /// message is waiting, so batches grow with load and stay small when traffic is light.
    pub commit_max_readings: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            path: PathBuf::from("data/gridwatch.redb"),
            max_rejected_kept: 10_000,
            rejected_payload_max_bytes: 1024,
            commit_max_readings: 5_000,
            cache_bytes: crate::store::DEFAULT_CACHE_BYTES,
        }
    }
}

/// HTTP endpoint settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address; loopback unless set otherwise.
    pub listen: SocketAddr,
    /// Bearer token with write scope, named `api`; empty sets none. `/healthz` and `/metrics`
    /// need no token, and the routes under `/api/` are disabled while no token is set here or
    /// in `tokens`.
    pub api_token: Secret,
    /// Named bearer tokens for the routes under `/api/`, each with its scope.
    pub tokens: Vec<ApiTokenConfig>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            api_token: Secret::default(),
            tokens: Vec::new(),
        }
    }
}

/// Name of the token that `http.api_token` defines.
pub const API_TOKEN_NAME: &str = "api";

/// One bearer token of the HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenConfig {
    /// Name recorded with every alert action taken with this token.
    pub name: String,
    /// The bearer token itself.
    pub token: Secret,
    /// Scope: the routes the token may call.
    #[serde(default)]
    pub scope: TokenScope,
}

/// Scope of an API token. Write includes read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// The `GET` routes.
    #[default]
    Read,
    /// Every route, including those that change alerts and requeue dead letters.
    Write,
}

impl TokenScope {
    /// Returns the name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Read => "read",
            TokenScope::Write => "write",
        }
    }
}

impl HttpConfig {
    /// Returns every API token: `api_token` as `api` with write scope when set, then `tokens`.
    pub fn all_tokens(&self) -> Vec<ApiTokenConfig> {
        let mut all = Vec::with_capacity(self.tokens.len() + 1);
        if !self.api_token.is_empty() {
            all.push(ApiTokenConfig {
                name: API_TOKEN_NAME.to_owned(),
                token: self.api_token.clone(),
                scope: TokenScope::Write,
            });
        }
        all.extend(self.tokens.iter().cloned());
        all
    }

    fn validate(&self, problems: &mut Vec<String>) {
        let all = self.all_tokens();
        for (i, entry) in self.tokens.iter().enumerate() {
            let at = format!("http.tokens[{i}]");
            let valid_name = !entry.name.is_empty()
                && entry
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !valid_name {
                problems.push(format!(
                    "{at}.name: invalid name '{}', expected letters, digits, '-', '_' or '.'",
                    entry.name
                ));
            }
            if entry.token.is_empty() {
                problems.push(format!("{at}.token: must not be empty"));
            }
        }
        for (i, entry) in all.iter().enumerate() {
            let earlier = &all[..i];
            if earlier.iter().any(|other| other.name == entry.name) {
                problems.push(format!(
                    "http.tokens: duplicate token name '{}' (http.api_token is named '{}')",
                    entry.name, API_TOKEN_NAME
                ));
            }
            if !entry.token.is_empty() && earlier.iter().any(|other| other.token == entry.token) {
                problems.push(format!(
                    "http.tokens: token '{}' has the same value as an earlier token, expected \
                     a distinct value per name (value hidden)",
                    entry.name
                ));
            }
        }
    }
}

/// Webhook retry policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Delay before the first retry, in milliseconds; it doubles each attempt, with jitter.
    pub initial_backoff_ms: u64,
    /// Upper bound of the retry delay, in milliseconds.
    pub max_backoff_ms: u64,
    /// Age after which an undelivered message moves to the dead-letter table, in seconds.
    pub max_age_secs: u64,
    /// Per-request timeout, in milliseconds.
    pub request_timeout_ms: u64,
    /// How often the outbox is scanned for due deliveries, in milliseconds.
    pub poll_interval_ms: u64,
    /// Longest `Retry-After` honoured, in seconds; longer values are capped.
    pub max_retry_after_secs: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            initial_backoff_ms: 1_000,
            max_backoff_ms: 300_000,
            max_age_secs: 86_400,
            request_timeout_ms: 10_000,
            poll_interval_ms: 250,
            max_retry_after_secs: 3_600,
        }
    }
}

/// One webhook endpoint and the alerts it receives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Name used in logs and metrics.
    pub name: String,
    /// Receiver URL.
    pub url: String,
    /// Signing secret, written `whsec_<base64>`.
    pub secret: Secret,
    /// Regions to send; empty sends all.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Alert kinds to send; empty sends all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Lowest severity to send.
    #[serde(default)]
    pub min_severity: crate::alerts::Severity,
}

/// A device format and the topics it decodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoderConfig {
    /// Name used in logs, metrics and rejected messages.
    pub name: String,
    /// Payload format.
    pub format: DeviceFormat,
    /// Topic template such as `tele/{meter}/SENSOR`; gridwatch subscribes to its filter.
    pub topic: String,
    /// Region of every reading; with `region_table`, the region of meters it does not list.
    #[serde(default)]
    pub region: Option<String>,
    /// CSV file of `meter,region` lines that gives each meter's region.
    #[serde(default)]
    pub region_table: Option<PathBuf>,
    /// Offset of the device's local clock from UTC, such as `+01:00`, for Tasmota's `Time`.
    #[serde(default = "default_utc_offset")]
    pub utc_offset: String,
    /// Emeter channels of a Shelly Gen1 device: 3 for the 3EM, 2 for the EM.
    #[serde(default = "default_channels")]
    pub channels: usize,
    /// Key names of a Tasmota SML script's output.
    #[serde(default)]
    pub sml: SmlKeys,
    /// Rhai script in `decode.scripts_dir` that defines `fn decode(topic, payload)`.
    #[serde(default)]
    pub script: Option<String>,
}

fn default_utc_offset() -> String {
    "+00:00".into()
}

fn default_channels() -> usize {
    3
}

/// Payload formats a decoder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceFormat {
    /// The gridwatch JSON schema (`docs/telemetry.md`).
    Gridwatch,
    /// Tasmota `SENSOR` JSON with an `ENERGY` object.
    Tasmota,
    /// Tasmota SML script output, keys named by `sml`.
    TasmotaSml,
    /// Shelly Gen2 `status/em:0`, `status/emdata:0` and `events/rpc` JSON.
    ShellyGen2,
    /// Shelly Gen1 3EM or EM, one number per topic.
    ShellyGen1,
    /// DSMR P1 telegrams as text.
    Dsmr,
    /// IEC 62056-21 mode C readouts as text.
    Iec62056_21,
    /// A Rhai script, named by `script`.
    Rhai,
}

impl DeviceFormat {
    /// Returns the name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceFormat::Gridwatch => "gridwatch",
            DeviceFormat::Tasmota => "tasmota",
            DeviceFormat::TasmotaSml => "tasmota_sml",
            DeviceFormat::ShellyGen2 => "shelly_gen2",
            DeviceFormat::ShellyGen1 => "shelly_gen1",
            DeviceFormat::Dsmr => "dsmr",
            DeviceFormat::Iec62056_21 => "iec62056_21",
            DeviceFormat::Rhai => "rhai",
        }
    }
}

/// Key names of a Tasmota SML script's JSON output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmlKeys {
    /// Name of the meter object at the top level.
    pub meter: String,
    /// Import register, kWh.
    pub import_kwh: String,
    /// Export register, kWh; empty for none.
    pub export_kwh: String,
    /// Active power, W; empty for none.
    pub power_w: String,
}

impl Default for SmlKeys {
    fn default() -> Self {
        SmlKeys {
            meter: "SML".into(),
            import_kwh: "Total_in".into(),
            export_kwh: "Total_out".into(),
            power_w: "Power_curr".into(),
        }
    }
}

impl DecoderConfig {
    fn validate(&self, i: usize, problems: &mut Vec<String>) {
        let at = format!("decoders[{i}]");
        let layout = match crate::decode::TopicLayout::parse(&self.topic) {
            Ok(layout) => Some(layout),
            Err(e) => {
                problems.push(format!("{at}.topic: {e}"));
                None
            }
        };
        if let Some(region) = self.region.as_deref().filter(|r| !is_region_name(r)) {
            problems.push(format!(
                "{at}.region: invalid value '{region}', expected 1 to 128 bytes without '/', \
                 '+' or '#'"
            ));
        }
        if let Some(script) = self.script.as_deref().filter(|s| s.ends_with(".rhai")) {
            problems.push(format!(
                "{at}.script: '{script}' names the file, expected the script name without .rhai"
            ));
        }
        if chrono::DateTime::parse_from_rfc3339(&format!("2000-01-01T00:00:00{}", self.utc_offset))
            .is_err()
        {
            problems.push(format!(
                "{at}.utc_offset: invalid value '{}', expected an offset such as +01:00",
                self.utc_offset
            ));
        }
        match (self.format, &self.script) {
            (DeviceFormat::Rhai, None) => {
                problems.push(format!("{at}.script: required for format \"rhai\""));
            }
            (DeviceFormat::Rhai, Some(_)) | (_, None) => {}
            (format, Some(_)) => problems.push(format!(
                "{at}.script: only format \"rhai\" takes a script, not \"{}\"",
                format.as_str()
            )),
        }
        if self.format == DeviceFormat::ShellyGen1 {
            let has_meter = layout.as_ref().is_some_and(|l| l.has_meter());
            if !has_meter || !self.topic.ends_with("/#") {
                problems.push(format!(
                    "{at}.topic: '{}' must name the device with {{meter}} and end with /#, \
                     such as shellies/{{meter}}/#",
                    self.topic
                ));
            }
            if !(1..=3).contains(&self.channels) {
                problems.push(format!(
                    "{at}.channels: {} is out of range, expected 1 to 3",
                    self.channels
                ));
            }
        }
    }
}

/// Every problem found in a configuration file.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration '{path}':\n{}", format_problems(.problems))]
pub struct ConfigError {
    /// The file that was read.
    pub path: PathBuf,
    /// One line per problem, each starting with its key path.
    pub problems: Vec<String>,
}

fn format_problems(problems: &[String]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

const SECTIONS: &[&str] = &[
    "mqtt", "decode", "state", "rules", "store", "http", "delivery", "plugins",
];

impl Config {
    /// Reads and validates a configuration file. Relative paths inside it are resolved against
    /// the file's folder.
    ///
    /// # Errors
    /// Returns every problem at once: unreadable file, invalid TOML, unknown keys, wrong types
    /// and out-of-range values.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            path: path.to_owned(),
            problems,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(vec![format!("failed to read file: {e}")]))?;
        let mut config = Config::parse(&text).map_err(fail)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        let mut problems = Vec::new();
        // `parse` compared the folders as written. Now that their base is known, links count too.
        if let Some(problem) = config.plugins.cache_dir_problem(resolved) {
            problems.push(problem);
        }
        for (name, detector) in &mut config.plugins.detectors {
            detector.read_setting_files(name, base, &mut problems);
        }
        if !problems.is_empty() {
            return Err(fail(problems));
        }
        Ok(config)
    }

    /// Reads only the `[rules]` section of a configuration file, for reporting rule problems
    /// when the rest of the file is invalid. Returns `None` when that section cannot be read.
    pub fn load_rules_section(path: &Path) -> Option<RulesConfig> {
        let text = std::fs::read_to_string(path).ok()?;
        let table: toml::Table = text.parse().ok()?;
        let mut rules = match table.get("rules") {
            Some(value) => deserialize_at::<RulesConfig>(value.clone(), "rules").ok()?,
            None => RulesConfig::default(),
        };
        if rules.dir.is_relative() {
            rules.dir = path.parent().unwrap_or(Path::new(".")).join(&rules.dir);
        }
        Some(rules)
    }

    /// Parses and validates configuration text.
    ///
    /// # Errors
    /// Returns one message per problem, each starting with its key path.
    pub fn parse(text: &str) -> Result<Config, Vec<String>> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| vec![toml_error(text, &e)])?;
        let mut problems = Vec::new();
        let mut config = Config::default();
        for key in table.keys() {
            if !SECTIONS.contains(&key.as_str()) && key != "webhooks" && key != "decoders" {
                problems.push(format!(
                    "{key}: unknown section, expected one of {}, webhooks, decoders",
                    SECTIONS.join(", ")
                ));
            }
        }
        section(&table, "mqtt", &mut config.mqtt, &mut problems);
        section(&table, "decode", &mut config.decode, &mut problems);
        section(&table, "state", &mut config.state, &mut problems);
        section(&table, "rules", &mut config.rules, &mut problems);
        section(&table, "store", &mut config.store, &mut problems);
        section(&table, "http", &mut config.http, &mut problems);
        section(&table, "delivery", &mut config.delivery, &mut problems);
        section(&table, "plugins", &mut config.plugins, &mut problems);
        config.webhooks = array_of_tables(&table, "webhooks", &mut problems);
        config.decoders = array_of_tables(&table, "decoders", &mut problems);
        config.validate(&mut problems);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.rules.dir);
        resolve(&mut self.decode.scripts_dir);
        for decoder in &mut self.decoders {
            if let Some(table) = &mut decoder.region_table {
                resolve(table);
            }
        }
        resolve(&mut self.plugins.dir);
        if !self.plugins.cache_dir.as_os_str().is_empty() {
            resolve(&mut self.plugins.cache_dir);
        }
        resolve(&mut self.store.path);
        for p in [
            &mut self.mqtt.ca_file,
            &mut self.mqtt.client_cert_file,
            &mut self.mqtt.client_key_file,
        ]
        .into_iter()
        .flatten()
        {
            resolve(p);
        }
    }

    fn validate(&self, problems: &mut Vec<String>) {
        self.validate_mqtt(problems);
        self.validate_state(problems);
        self.http.validate(problems);
        let decode = &self.decode;
        for (key, value) in [
            ("decode.max_power_kw", decode.max_power_kw),
            ("decode.max_register_kwh", decode.max_register_kwh),
            ("decode.max_voltage_v", decode.max_voltage_v),
            ("decode.max_current_a", decode.max_current_a),
        ] {
            positive_float(problems, key, value);
        }
        if decode.max_future_secs < 0 {
            problems.push(format!(
                "decode.max_future_secs: {} is negative, expected 0 or more",
                decode.max_future_secs
            ));
        }
        if chrono::DateTime::parse_from_rfc3339(&self.decode.min_timestamp).is_err() {
            problems.push(format!(
                "decode.min_timestamp: invalid value '{}', expected an RFC 3339 time",
                self.decode.min_timestamp
            ));
        }
        positive(problems, "rules.max_operations", self.rules.max_operations);
        positive(
            problems,
            "decode.max_operations",
            self.decode.max_operations,
        );
        positive(
            problems,
            "decode.max_pending_devices",
            self.decode.max_pending_devices as u64,
        );
        self.validate_decoders(problems);
        self.plugins.validate(problems);
        positive(
            problems,
            "store.commit_max_readings",
            self.store.commit_max_readings as u64,
        );
        positive(
            problems,
            "store.max_rejected_kept",
            self.store.max_rejected_kept,
        );
        positive(
            problems,
            "delivery.max_age_secs",
            self.delivery.max_age_secs,
        );
        positive(
            problems,
            "delivery.initial_backoff_ms",
            self.delivery.initial_backoff_ms,
        );
        let mut names = std::collections::HashSet::new();
        for (i, hook) in self.webhooks.iter().enumerate() {
            if !names.insert(hook.name.as_str()) {
                problems.push(format!(
                    "webhooks[{i}].name: duplicate name '{}'",
                    hook.name
                ));
            }
            match reqwest::Url::parse(&hook.url) {
                Err(e) => {
                    problems.push(format!(
                        "webhooks[{i}].url: invalid URL '{}': {e}",
                        hook.url
                    ));
                }
                Ok(url) if !matches!(url.scheme(), "http" | "https") => problems.push(format!(
                    "webhooks[{i}].url: '{}' uses scheme '{}', expected http or https",
                    hook.url,
                    url.scheme()
                )),
                Ok(_) => {}
            }
            if let Err(e) = crate::delivery::signer::Signer::from_secret(hook.secret.expose()) {
                problems.push(format!("webhooks[{i}].secret: {e}"));
            }
        }
    }

    fn validate_decoders(&self, problems: &mut Vec<String>) {
        let mut names = std::collections::HashSet::new();
        for (i, decoder) in self.decoders.iter().enumerate() {
            if decoder.name.is_empty() || !names.insert(decoder.name.as_str()) {
                problems.push(format!(
                    "decoders[{i}].name: '{}' is empty or used twice, expected a unique name",
                    decoder.name
                ));
            }
            decoder.validate(i, problems);
        }
    }

    /// Returns the topic filters to subscribe to: `mqtt.topics`, then each decoder's filter,
    /// without repeats.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut filters = self.mqtt.topics.clone();
        for decoder in &self.decoders {
            if let Ok(layout) = crate::decode::TopicLayout::parse(&decoder.topic) {
                let filter = layout.filter();
                if !filters.contains(&filter) {
                    filters.push(filter);
                }
            }
        }
        filters
    }

    fn validate_mqtt(&self, problems: &mut Vec<String>) {
        let mqtt = &self.mqtt;
        if let Err(e) = crate::ingest::BrokerAddress::parse(&mqtt.url) {
            problems.push(format!("mqtt.url: {e}"));
        }
        if mqtt.client_id.is_empty() {
            problems.push("mqtt.client_id: must not be empty".into());
        }
        if !(5..=65_535).contains(&mqtt.keep_alive_secs) {
            problems.push(format!(
                "mqtt.keep_alive_secs: {} is out of range, expected 5 to 65535 seconds (the \
                 daemon needs keep-alive to notice a dead connection)",
                mqtt.keep_alive_secs
            ));
        }
        if mqtt.topics.is_empty() && self.decoders.is_empty() {
            problems.push("mqtt.topics: expected at least one topic filter or decoder".into());
        }
        for (i, topic) in mqtt.topics.iter().enumerate() {
            if let Err(problem) = check_topic_filter(topic) {
                problems.push(format!(
                    "mqtt.topics[{i}]: invalid filter '{topic}': {problem}"
                ));
            }
        }
        if mqtt.url.starts_with("mqtts://") && mqtt.ca_file.is_none() {
            problems.push("mqtt.ca_file: required for mqtts:// URLs".into());
        }
        if let Err(e) = crate::decode::TopicLayout::parse(&mqtt.topic_layout) {
            problems.push(format!("mqtt.topic_layout: {e}"));
        }
        if mqtt.reconnect_min_ms == 0 || mqtt.reconnect_min_ms > mqtt.reconnect_max_ms {
            problems.push(format!(
                "mqtt.reconnect_min_ms: {} must be above 0 and at most reconnect_max_ms ({})",
                mqtt.reconnect_min_ms, mqtt.reconnect_max_ms
            ));
        }
        positive(
            problems,
            "mqtt.max_payload_bytes",
            mqtt.max_payload_bytes as u64,
        );
        positive(problems, "mqtt.queue_capacity", mqtt.queue_capacity as u64);
        if mqtt.client_cert_file.is_some() != mqtt.client_key_file.is_some() {
            problems.push(
                "mqtt.client_cert_file: client_cert_file and client_key_file must be set together"
                    .into(),
            );
        }
    }

    fn validate_state(&self, problems: &mut Vec<String>) {
        let state = &self.state;
        if state.windows.is_empty() {
            problems.push("state.windows: expected at least one window".into());
        }
        let mut names = std::collections::HashSet::new();
        for (i, w) in state.windows.iter().enumerate() {
            if !names.insert(w.name.as_str()) {
                problems.push(format!(
                    "state.windows[{i}].name: duplicate name '{}'",
                    w.name
                ));
            }
            if w.hours == 0 || w.hours > crate::state::MAX_WINDOW_HOURS {
                problems.push(format!(
                    "state.windows[{i}].hours: {} is out of range, expected 1 to {}",
                    w.hours,
                    crate::state::MAX_WINDOW_HOURS
                ));
            }
        }
        if state.night_start_hour > 23 || state.night_end_hour > 24 {
            problems.push(format!(
                "state.night_start_hour: night {}..{} is out of range, expected hours 0 to 24",
                state.night_start_hour, state.night_end_hour
            ));
        }
        if state.night_start_hour == state.night_end_hour {
            problems.push("state.night_end_hour: the night period must not be empty".into());
        }
        positive(
            problems,
            "state.max_interval_minutes",
            u64::from(state.max_interval_minutes),
        );
        for (key, value) in [
            ("state.glitch_tolerance_kwh", state.glitch_tolerance_kwh),
            ("state.exchange_max_start_kwh", state.exchange_max_start_kwh),
        ] {
            if value.is_nan() || value < 0.0 {
                problems.push(format!("{key}: {value} is invalid, expected 0 or more"));
            }
        }
    }

    /// Returns the configuration with every secret replaced, for display.
    pub fn redacted(&self) -> String {
        format!("{self:#?}")
    }
}

fn positive_float(problems: &mut Vec<String>, key: &str, value: f64) {
    if value.is_nan() || value <= 0.0 {
        problems.push(format!(
            "{key}: {value} is invalid, expected a number above 0"
        ));
    }
}

/// Checks an MQTT topic filter: not empty, and `+` and `#` each fill a whole level, with `#`
/// only as the last level.
fn check_topic_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("empty filter");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err("'#' must be a whole level and the last one");
        }
        if level.contains('+') && *level != "+" {
            return Err("'+' must be a whole level");
        }
    }
    Ok(())
}

fn positive(problems: &mut Vec<String>, key: &str, value: u64) {
    if value == 0 {
        problems.push(format!("{key}: must be above 0"));
    }
}

fn section<T: for<'de> Deserialize<'de>>(
    table: &toml::Table,
    name: &str,
    target: &mut T,
    problems: &mut Vec<String>,
) {
    let Some(value) = table.get(name) else { return };
    match deserialize_at(value.clone(), name) {
        Ok(parsed) => *target = parsed,
        Err(problem) => problems.extend(key_problems::<T>(value, name, problem)),
    }
}

/// Finds every bad key of a section whose fields all have defaults, by deserializing each key
/// on its own, because serde stops at the first error. Falls back to `first` when no single
/// key fails alone.
fn key_problems<T: for<'de> Deserialize<'de>>(
    value: &toml::Value,
    prefix: &str,
    first: String,
) -> Vec<String> {
    let Some(table) = value.as_table() else {
        return vec![first];
    };
    let problems: Vec<String> = table
        .iter()
        .filter_map(|(key, item)| {
            let single = toml::Table::from_iter([(key.clone(), item.clone())]);
            deserialize_at::<T>(toml::Value::Table(single), prefix).err()
        })
        .collect();
    if problems.is_empty() {
        vec![first]
    } else {
        problems
    }
}

fn array_of_tables<T: for<'de> Deserialize<'de>>(
    table: &toml::Table,
    name: &str,
    problems: &mut Vec<String>,
) -> Vec<T> {
    let Some(value) = table.get(name) else {
        return Vec::new();
    };
    let Some(items) = value.as_array() else {
        problems.push(format!("{name}: expected an array of tables ([[{name}]])"));
        return Vec::new();
    };
    let mut parsed = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match deserialize_at(item.clone(), &format!("{name}[{i}]")) {
            Ok(entry) => parsed.push(entry),
            Err(problem) => problems.push(problem),
        }
    }
    parsed
}

/// Deserializes one value and names the failing key path. Messages about secret keys omit the
/// value, because serde's messages quote it.
fn deserialize_at<T: for<'de> Deserialize<'de>>(
    value: toml::Value,
    prefix: &str,
) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." {
            prefix.to_owned()
        } else {
            format!("{prefix}.{inner}")
        };
        let leaf = path.rsplit('.').next().unwrap_or_default();
        let message = e.inner().to_string();
        if matches!(leaf, "password" | "secret" | "api_token" | "token") {
            format!("{path}: invalid value, expected a string (value hidden)")
        } else if leaf.starts_with("tokens") && message.contains('"') {
            // A token written in place of a table would be quoted by serde's message.
            format!(
                "{path}: invalid value, expected tables with name, token and scope (value hidden)"
            )
        } else {
            format!("{path}: {message}")
        }
    })
}

/// Formats a TOML syntax error with its line and column, counted from 1.
fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().replace('\n', ", ");
    let Some(span) = error.span() else {
        return format!("invalid TOML: {message}");
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("invalid TOML at line {line}, column {column}: {message}")
}

#[cfg(test)]
mod reference;

/// Returns `path` made absolute, with `.` and `..` removed by their names alone.
fn normalized(path: &Path) -> PathBuf {
    use std::path::Component;

    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut normal = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    normal
}

/// Returns `path` made absolute with its symbolic links resolved and `.` and `..` removed, so
/// that two spellings of one folder compare equal. A `..` applies after the links before it, as
/// the operating system applies it. The part that does not exist yet contains no link.
fn resolved(path: &Path) -> PathBuf {
    use std::path::Component;

    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut walked = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if let Ok(real) = walked.canonicalize() {
                    walked = real;
                }
                walked.pop();
            }
            other => walked.push(other),
        }
    }
    let mut existing = walked.as_path();
    let mut missing = Vec::new();
    while !existing.exists() {
        let (Some(name), Some(parent)) = (existing.file_name(), existing.parent()) else {
            break;
        };
        missing.push(name);
        existing = parent;
    }
    let mut result = existing
        .canonicalize()
        .unwrap_or_else(|_| existing.to_owned());
    result.extend(missing.iter().rev());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_below_five_seconds_is_rejected() {
        let problems = Config::parse("[mqtt]\nkeep_alive_secs = 0\n").unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("mqtt.keep_alive_secs: 0 is out of range")),
            "{problems:?}"
        );
        assert!(Config::parse("[mqtt]\nkeep_alive_secs = 5\n").is_ok());
    }

    #[test]
    fn cache_dir_inside_plugins_dir_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("plugins/sub")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("plugins"), dir.path().join("link")).unwrap();
        // `inner/..` is `plugins`, because the link is followed before the `..`.
        let inner = dir.path().join("inner");
        std::os::unix::fs::symlink(dir.path().join("plugins/sub"), inner).unwrap();
        let path = dir.path().join("gridwatch.toml");
        for cache_dir in [
            "plugins/cache",
            "./plugins/../plugins/c",
            "link/c",
            "other/../link",
            "inner/../cache",
        ] {
            let text = format!("[plugins]\ndir = \"plugins\"\ncache_dir = \"{cache_dir}\"\n");
            std::fs::write(&path, text).unwrap();
            let error = Config::load(&path).unwrap_err();
            assert!(
                error.problems[0].contains("is inside plugins.dir"),
                "{cache_dir}: {:?}",
                error.problems
            );
        }
        std::fs::write(
            &path,
            "[plugins]\ndir = \"plugins\"\ncache_dir = \"plugins-cache\"\n",
        )
        .unwrap();
        assert!(Config::load(&path).is_ok());
    }

    #[test]
    fn plugin_setting_reads_its_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("topology.csv"), "tx,north,m1\n").unwrap();
        let path = dir.path().join("gridwatch.toml");
        let text = "[plugins.detectors.energy-balance]\n\
                    settings = { topology = { file = \"topology.csv\" } }\n\
                    region_settings.south = { topology = { file = \"missing.csv\" } }\n";
        std::fs::write(&path, text).unwrap();

        let error = Config::load(&path).unwrap_err();
        assert_eq!(error.problems.len(), 1, "{:?}", error.problems);
        let problem = &error.problems[0];
        assert!(
            problem.starts_with(
                "plugins.detectors.energy-balance.region_settings.south.topology: failed to read \
                 file '"
            ),
            "{problem}"
        );
        assert!(problem.contains("missing.csv"), "{problem}");

        std::fs::write(dir.path().join("missing.csv"), "tx,south,m2\n").unwrap();
        let config = Config::load(&path).unwrap();
        let detector = &config.plugins.detectors["energy-balance"];
        let topology = detector.settings["topology"].as_str();
        assert_eq!(topology, Some("tx,north,m1\n"));
        let south = detector.region_settings["south"]["topology"].as_str();
        assert_eq!(south, Some("tx,south,m2\n"));
    }

    #[test]
    fn plugin_setting_file_must_be_small_regular_text() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.csv");
        let file = std::fs::File::create(&big).unwrap();
        file.set_len(super::MAX_SETTING_FILE_BYTES + 1).unwrap();
        std::fs::write(dir.path().join("latin1.csv"), b"tx,north,m\xe9\n").unwrap();
        std::fs::create_dir(dir.path().join("folder")).unwrap();
        let path = dir.path().join("gridwatch.toml");
        let text = "[plugins.detectors.p]\n\
                    settings = { a = { file = \"big.csv\" }, b = { file = \"latin1.csv\" }, \
                    c = { file = \"folder\" } }\n";
        std::fs::write(&path, text).unwrap();

        let problems = Config::load(&path).unwrap_err().problems;
        assert_eq!(problems.len(), 3, "{problems:?}");
        let about = |key: &str| {
            problems
                .iter()
                .find(|p| p.starts_with(&format!("plugins.detectors.p.settings.{key}:")))
                .unwrap_or_else(|| panic!("no problem for {key}: {problems:?}"))
        };
        assert!(
            about("a").ends_with("bytes is over the limit of 16777216 bytes"),
            "{problems:?}"
        );
        assert!(
            about("b").ends_with("invalid UTF-8 at byte 10; expected UTF-8 text"),
            "{problems:?}"
        );
        assert!(about("c").ends_with("not a regular file"), "{problems:?}");
    }

    #[test]
    fn plugin_setting_table_without_file_is_rejected() {
        let text = "[plugins.detectors.p]\nsettings = { topology = { path = \"t.csv\" } }\n";
        let problems = Config::parse(text).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("plugins.detectors.p.settings.topology: unsupported table"),
            "{problems:?}"
        );
    }

    #[test]
    fn plugin_region_lists_take_region_names() {
        let text = "[plugins.detectors.p]\nregions = [\"*\", \"\"]\n\
                    history_regions = [\"east\", \"a/b\", \"+\"]\n";
        let problems = Config::parse(text).unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with("plugins.detectors.p.regions: invalid region ''"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("plugins.detectors.p.history_regions: invalid region 'a/b'"),
            "{problems:?}"
        );
        assert!(problems[2].contains("invalid region '+'"), "{problems:?}");

        let valid = "[plugins.detectors.p]\nregions = [\"east-tx\"]\nhistory_regions = [\"*\"]\n";
        assert!(Config::parse(valid).is_ok());
    }

    #[test]
    fn toml_syntax_error_names_line_and_column() {
        let problems = Config::parse("[mqtt]\nclient_id = \"a\"\nurl = \n").unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("invalid TOML at line 3, column 7: "),
            "{problems:?}"
        );
        assert!(!problems[0].contains('\n'), "{problems:?}");
    }

    #[test]
    fn shipped_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/gridwatch.toml");
        let config = Config::load(&path).unwrap();
        assert!(
            !config.webhooks.is_empty(),
            "the shipped config should show a webhook"
        );
    }

    #[test]
    fn all_problems_reported_with_paths() {
        let text = r#"
            colour = 1
            [mqtt]
            url = "ftp://x"
            topicz = []
            [state]
            max_interval_minutes = 0
            [[webhooks]]
            name = "a"
            url = "not a url"
            secret = "plain-text-secret"
        "#;
        let problems = Config::parse(text).unwrap_err();
        let joined = problems.join("\n");
        assert!(joined.contains("colour: unknown section"), "{joined}");
        assert!(joined.contains("mqtt.topicz: unknown field"), "{joined}");
        assert!(joined.contains("state.max_interval_minutes"), "{joined}");
        assert!(joined.contains("webhooks[0].url"), "{joined}");
        assert!(joined.contains("webhooks[0].secret"), "{joined}");
        assert!(
            !joined.contains("plain-text-secret"),
            "secret echoed: {joined}"
        );
    }

    #[test]
    fn implausible_values_rejected() {
        let text = r#"
            [mqtt]
            url = "mqtts://broker:8883"
            topics = ["meters/#/x", "meters/a+/b"]
            [decode]
            max_power_kw = -5.0
            max_voltage_v = 0.0
            [state]
            windows = [{ name = "24h", hours = 24 }, { name = "24h", hours = 48 }]
            [[webhooks]]
            name = "a"
            url = "ftp://example.org/hook"
            secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        "#;
        let joined = Config::parse(text).unwrap_err().join("\n");
        for key in [
            "mqtt.ca_file",
            "mqtt.topics[0]",
            "mqtt.topics[1]",
            "decode.max_power_kw",
            "decode.max_voltage_v",
            "state.windows[1].name",
            "webhooks[0].url",
        ] {
            assert!(
                joined.contains(key),
                "no problem reported for {key}: {joined}"
            );
        }
    }

    #[test]
    fn every_bad_key_of_a_section_reported() {
        let text = "[mqtt]\nbogus_key = 1\nkeep_alive_secs = \"thirty\"\n";
        let joined = Config::parse(text).unwrap_err().join("\n");
        assert!(joined.contains("bogus_key"), "{joined}");
        assert!(joined.contains("mqtt.keep_alive_secs"), "{joined}");
    }

    #[test]
    fn secret_type_error_hides_value() {
        let text = "[mqtt]\npassword = 123456789\n";
        let joined = Config::parse(text).unwrap_err().join("\n");
        assert!(joined.contains("mqtt.password"), "{joined}");
        assert!(!joined.contains("123456789"), "secret echoed: {joined}");
    }

    #[test]
    fn api_tokens_combine_with_scopes() {
        let text = r#"
            [http]
            api_token = "admin-value"
            [[http.tokens]]
            name = "dashboard"
            token = "dashboard-value"
            [[http.tokens]]
            name = "oncall"
            token = "oncall-value"
            scope = "write"
        "#;
        let config = Config::parse(text).unwrap();
        let tokens = config.http.all_tokens();
        let summary: Vec<(&str, TokenScope)> =
            tokens.iter().map(|t| (t.name.as_str(), t.scope)).collect();
        assert_eq!(
            summary,
            vec![
                (API_TOKEN_NAME, TokenScope::Write),
                ("dashboard", TokenScope::Read),
                ("oncall", TokenScope::Write),
            ]
        );
        assert!(!config.redacted().contains("dashboard-value"));
    }

    #[test]
    fn api_token_problems_hide_values() {
        let text = r#"
            [http]
            api_token = "same-value"
            [[http.tokens]]
            name = "api"
            token = "same-value"
            [[http.tokens]]
            name = "bad name"
            token = ""
            scope = "admin"
        "#;
        let joined = Config::parse(text).unwrap_err().join("\n");
        assert!(joined.contains("http.tokens[1].scope"), "{joined}");
        let text = r#"
            [http]
            api_token = "same-value"
            [[http.tokens]]
            name = "api"
            token = "same-value"
            [[http.tokens]]
            name = "bad name"
            token = ""
        "#;
        let joined = Config::parse(text).unwrap_err().join("\n");
        for expected in [
            "duplicate token name 'api'",
            "same value as an earlier token",
            "http.tokens[1].name: invalid name 'bad name'",
            "http.tokens[1].token: must not be empty",
        ] {
            assert!(joined.contains(expected), "no '{expected}' in: {joined}");
        }
        assert!(!joined.contains("same-value"), "token echoed: {joined}");
        let joined = Config::parse("[http]\ntokens = [\"secret-value\"]\n")
            .unwrap_err()
            .join("\n");
        assert!(!joined.contains("secret-value"), "token echoed: {joined}");
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let mut config = Config::default();
        config.mqtt.password = Secret::new("hunter2");
        assert!(!config.redacted().contains("hunter2"));
    }
}
