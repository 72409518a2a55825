//! The data each plugin store carries and the host imports offered to plugins.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Result};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{
    Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView,
    WasiView,
};

use super::bindings::gridwatch::detector::host::Host;
use super::bindings::gridwatch::detector::types::{self, Batch, Hourly, Level, Value};
use super::state::PluginStates;
use crate::state::RecentHours;
use crate::store::push_plugin_state_key;

/// Bytes of a plugin's standard error kept for the log when a call fails.
const STDERR_CAPACITY: usize = 16 * 1024;

/// Table elements an instance may hold in all its tables together.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Linear memories an instance may create. Each one reserves address space even when empty,
/// so their number is limited besides their total size.
const MAX_MEMORIES: usize = 100;

/// Tables an instance may create.
const MAX_TABLES: usize = 1_000;

/// Bytes of one state key.
pub const MAX_STATE_KEY_BYTES: usize = 1024;

/// Log lines one call may write; later ones are dropped.
const MAX_LOG_LINES_PER_CALL: usize = 100;

/// Characters of one plugin log message.
const MAX_LOG_CHARS: usize = 1_000;

/// Log lines one plugin may write per minute over all its calls; later ones are dropped. Small
/// batches mean many calls, so the limit per call alone does not bound the log.
const MAX_LOG_LINES_PER_MINUTE: u32 = 600;

/// Limits on a call's state writes.
#[derive(Debug, Clone, Copy)]
pub struct StateLimits {
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Bytes of keys and values one call may write.
    pub max_bytes_per_call: usize,
    /// Bytes of the plugin's writes that may wait for the commit of a batch, counted with the
    /// full keys and an estimate of the memory each write takes besides them.
    pub max_pending_bytes: usize,
}

/// Source of the meters' hourly energy for the `history` import.
pub trait HistorySource: Send + Sync {
    /// Returns up to `hours` hours of the meter `region/meter_id`, oldest first.
    fn history(&self, key: &str, hours: u32) -> RecentHours;
}

/// A history source with no hours for any meter, for plugins run without meter state.
pub struct NoHistory;

impl HistorySource for NoHistory {
    fn history(&self, _key: &str, _hours: u32) -> RecentHours {
        RecentHours::default()
    }
}

/// A plugin's settings: per region, for every region, and the declared defaults.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub(super) defaults: HashMap<String, Value>,
    pub(super) every_region: HashMap<String, Value>,
    pub(super) by_region: HashMap<String, HashMap<String, Value>>,
}

impl Settings {
    /// Returns the value for the region, falling back to every region and then the default.
    pub fn get(&self, region: &str, name: &str) -> Option<Value> {
        self.by_region
            .get(region)
            .and_then(|s| s.get(name))
            .or_else(|| self.every_region.get(name))
            .or_else(|| self.defaults.get(name))
            .cloned()
    }
}

/// Context the host imports of one plugin use.
pub struct PluginContext {
    /// Plugin name, the scope of its state.
    pub name: String,
    /// Resolved settings.
    pub settings: Settings,
    /// Durable plugin state.
    pub states: Arc<PluginStates>,
    /// Meter history.
    pub history: Arc<dyn HistorySource>,
    /// Fuel per call and per reading that replace the engine's, from the plugin's config.
    pub fuel: (Option<u64>, Option<u64>),
    /// Log lines of the plugin in the current minute, over all its calls.
    pub log_budget: LogBudget,
    /// Regions whose meters' history `meter-history` may read: those the plugin runs in and
    /// its `history_regions`, from its config; `*` stands for every region.
    pub history_regions: Vec<String>,
}

impl PluginContext {
    /// Returns true when `meter-history` may read meters of the region.
    pub fn reads_history_of(&self, region: &str) -> bool {
        crate::config::lists_region(&self.history_regions, region)
    }
}

/// Counts a plugin's log lines per minute, across its calls and instances.
#[derive(Default)]
pub struct LogBudget {
    window: parking_lot::Mutex<LogWindow>,
}

#[derive(Default)]
struct LogWindow {
    /// Start of the current minute, set by its first line.
    start: Option<Instant>,
    /// Lines counted in the current minute, dropped ones included.
    lines: u32,
    /// Lines dropped in the current minute.
    dropped: u64,
}

/// The decision of [`LogBudget::take`] on one log line.
#[derive(Debug, PartialEq, Eq)]
pub struct LogPermit {
    /// Whether the line may be written.
    pub write: bool,
    /// Lines dropped in the minute that ended before this line, reported once.
    pub dropped_before: u64,
    /// Whether this line is the first one dropped in its minute.
    pub first_dropped: bool,
}

impl LogBudget {
    /// Counts one log line written at `now`.
    pub fn take(&self, now: Instant) -> LogPermit {
        let mut window = self.window.lock();
        let mut dropped_before = 0;
        let expired = window
            .start
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(60));
        if expired {
            dropped_before = std::mem::take(&mut window.dropped);
            window.start = Some(now);
            window.lines = 0;
        }
        window.lines = window.lines.saturating_add(1);
        let write = window.lines <= MAX_LOG_LINES_PER_MINUTE;
        if !write {
            window.dropped += 1;
        }
        LogPermit {
            write,
            dropped_before,
            first_dropped: !write && window.dropped == 1,
        }
    }
}

/// Returns true for the characters a plugin must not put into a log line: control characters,
/// line and paragraph separators and bidirectional formatting characters. With them a plugin
/// could start a new log line or reorder how one is displayed.
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        )
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// Returns text from a plugin with the characters of [`is_hidden`] replaced by spaces.
pub fn clean_text(text: &str) -> String {
    text.chars()
        .map(|c| if is_hidden(c) { ' ' } else { c })
        .collect()
}

/// Returns a plugin's log message cut to [`MAX_LOG_CHARS`] characters and cleaned like
/// [`clean_text`] cleans it.
pub fn clean_log_message(message: &str) -> String {
    let end = message
        .char_indices()
        .nth(MAX_LOG_CHARS)
        .map_or(message.len(), |(index, _)| index);
    clean_text(&message[..end])
}

/// The data of one plugin store.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) stderr: MemoryOutputPipe,
    pub(super) context: Arc<PluginContext>,
    /// The batch of the `detect` call in progress, whose meters the state functions index.
    batch: Option<Arc<Batch>>,
    memory_cap: usize,
    /// Bytes of all linear memories of the instance together.
    memory_bytes: usize,
    /// Elements of all tables of the instance together.
    table_elements: usize,
    /// Bytes the last accepted memory growth added, taken back when wasmtime reports that the
    /// growth failed after all.
    last_memory_growth: usize,
    /// Elements the last accepted table growth added, taken back like `last_memory_growth`.
    last_table_growth: usize,
    /// Set when the plugin tried to grow its memory past the cap.
    pub(super) memory_limit_hit: bool,
    /// State writes of the call in progress, by full key; kept only if the call succeeds.
    writes: foldhash::HashMap<String, Option<Vec<u8>>>,
    limits: StateLimits,
    /// State bytes written by the call in progress.
    written_bytes: usize,
    /// The same writes counted as [`StateLimits::max_pending_bytes`] counts them.
    pending_bytes: usize,
    /// Log lines written by the call in progress.
    log_lines: usize,
    /// The limit a host function enforced by failing the call: cause and description.
    pub(super) limit_hit: Option<(&'static str, String)>,
    /// `region/meter_id` of the meter of the last state or history call.
    meter_key: String,
    /// Full state key of the last state call.
    state_key: String,
}

impl HostState {
    /// Builds a store's data with WASI locked down: no files, network, environment or
    /// arguments, clocks fixed at zero and a fixed random sequence.
    pub fn new(context: Arc<PluginContext>, memory_cap: usize, limits: StateLimits) -> HostState {
        let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
        let mut builder = WasiCtxBuilder::new();
        builder
            .stderr(stderr.clone())
            .wall_clock(FixedClock)
            .monotonic_clock(FixedClock)
            .secure_random(Deterministic::new(vec![0x5a; 32]))
            .insecure_random(Deterministic::new(vec![0xa5; 32]))
            .insecure_random_seed(0)
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false);
        HostState {
            wasi: builder.build(),
            table: ResourceTable::new(),
            stderr,
            context,
            batch: None,
            memory_cap,
            memory_bytes: 0,
            table_elements: 0,
            last_memory_growth: 0,
            last_table_growth: 0,
            memory_limit_hit: false,
            writes: foldhash::HashMap::default(),
            limits,
            written_bytes: 0,
            pending_bytes: 0,
            log_lines: 0,
            limit_hit: None,
            meter_key: String::new(),
            state_key: String::new(),
        }
    }

    /// Resets the per-call counters before a call and sets the batch it examines.
    pub fn begin_call(&mut self, batch: Option<Arc<Batch>>) {
        self.batch = batch;
        self.written_bytes = 0;
        self.pending_bytes = 0;
        self.log_lines = 0;
        self.limit_hit = None;
    }

    /// Returns the batch of the call in progress.
    #[cfg(test)]
    pub fn batch(&self) -> Option<Arc<Batch>> {
        self.batch.clone()
    }

    /// Releases the batch after a call.
    pub fn end_call(&mut self) {
        self.batch = None;
    }

    /// Records which limit failed the call and returns the error that traps it.
    fn fail_call<T>(&mut self, cause: &'static str, detail: String) -> Result<T> {
        let error = wasmtime::Error::msg(detail.clone());
        self.limit_hit = Some((cause, detail));
        Err(error)
    }

    /// Counts a write or deletion of `value` under `key`, whose full key is in `state_key`.
    /// Fails the call past `max_bytes_per_call`, or when the plugin's writes that wait for the
    /// batch's commit would pass `max_pending_bytes`.
    fn count_state_bytes(&mut self, key: &str, value: &Option<Vec<u8>>) -> Result<()> {
        let value_bytes = value.as_ref().map_or(0, Vec::len);
        self.written_bytes += key.len() + value_bytes;
        let limit = self.limits.max_bytes_per_call;
        if self.written_bytes > limit {
            let detail = format!(
                "state writes of {} bytes in one call are over the limit of {limit} bytes",
                self.written_bytes
            );
            return self.fail_call("state", detail);
        }
        self.pending_bytes += super::state::entry_bytes(&self.state_key, value);
        let pending = self.context.states.pending_bytes(&self.context.name) + self.pending_bytes;
        let limit = self.limits.max_pending_bytes;
        if pending > limit {
            let detail = format!(
                "state writes waiting for the batch's commit reached {pending} bytes, over the \
                 limit of {limit} bytes"
            );
            return self.fail_call("state", detail);
        }
        Ok(())
    }

    /// Hands the state writes of a successful call to the batch.
    pub fn keep_writes(&mut self) {
        if !self.writes.is_empty() {
            let plugin = &self.context.name;
            self.context.states.apply(plugin, self.writes.drain());
        }
    }

    /// Drops the state writes of a failed call.
    pub fn drop_writes(&mut self) {
        self.writes.clear();
    }

    /// Returns the tail of what the plugin wrote to standard error, on one line.
    pub fn stderr_tail(&self) -> String {
        let bytes = self.stderr.contents();
        let text = String::from_utf8_lossy(&bytes);
        let trimmed = text.trim();
        let start = trimmed
            .char_indices()
            .rev()
            .nth(400)
            .map_or(0, |(index, _)| index);
        trimmed[start..].replace('\n', " | ")
    }

    /// Writes `region/meter_id` of the meter at `index` in the call's batch to `meter_key`, or
    /// fails the call when there is no such meter. The buffer saves an allocation per call.
    fn set_meter_key(&mut self, index: u32) -> Result<()> {
        let found = self.batch.as_deref().and_then(|batch| {
            let index = index as usize;
            let end = *batch.meter_ends.get(index)? as usize;
            let start = match index {
                0 => 0,
                _ => batch.meter_ends[index - 1] as usize,
            };
            let meter = batch.meters.get(start..end)?;
            let region = batch.meter_region.get(index)?;
            let region = batch.regions.get(*region as usize)?;
            Some((region, meter))
        });
        match found {
            Some((region, meter)) => {
                self.meter_key.clear();
                self.meter_key.extend([region.as_str(), "/", meter]);
                Ok(())
            }
            None => {
                let meters = self.batch.as_deref().map_or(0, |b| b.meter_ends.len());
                let detail = format!(
                    "meter index {index} is out of range; expected below {meters}, the meters \
                     in the batch"
                );
                self.fail_call("trap", detail)
            }
        }
    }

    /// Returns up to `hours` hours of the history of the meter in `meter_key`.
    fn hours_of_key(&self, hours: u32) -> Hourly {
        hourly(self.context.history.history(&self.meter_key, hours))
    }

    /// Writes the full state key of `key` for the meter at index `meter` to `state_key`. Fails the
    /// call when `key` is longer than [`MAX_STATE_KEY_BYTES`].
    fn set_state_key(&mut self, meter: u32, key: &str) -> Result<()> {
        if key.len() > MAX_STATE_KEY_BYTES {
            let detail = format!(
                "state key of {} bytes is over the limit of {MAX_STATE_KEY_BYTES} bytes",
                key.len()
            );
            return self.fail_call("state", detail);
        }
        self.set_meter_key(meter)?;
        self.state_key.clear();
        push_plugin_state_key(
            &mut self.state_key,
            &self.context.name,
            &self.meter_key,
            key,
        );
        Ok(())
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The caps cover all memories and all tables of an instance together: a component can hold
/// many core modules, and a module many memories, so a cap per memory would bound nothing.
/// Memories and tables never shrink, and a failed call gets a fresh store.
impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool> {
        // Past the memory's own maximum `memory.grow` returns -1, so the request counts for
        // nothing.
        if maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(false);
        }
        let total = self
            .memory_bytes
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.memory_cap {
            self.memory_limit_hit = true;
            wasmtime::bail!(
                "memory limit of {} bytes reached (all linear memories of the plugin together)",
                self.memory_cap
            );
        }
        self.last_memory_growth = desired.saturating_sub(current);
        self.memory_bytes = total;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> Result<()> {
        self.memory_bytes = self.memory_bytes.saturating_sub(self.last_memory_growth);
        self.last_memory_growth = 0;
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> Result<bool> {
        if maximum.is_some_and(|maximum| desired > maximum) {
            return Ok(false);
        }
        let total = self
            .table_elements
            .saturating_sub(current)
            .saturating_add(desired);
        if total > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        self.last_table_growth = desired.saturating_sub(current);
        self.table_elements = total;
        Ok(true)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> Result<()> {
        self.table_elements = self.table_elements.saturating_sub(self.last_table_growth);
        self.last_table_growth = 0;
        Ok(())
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

impl types::Host for HostState {}

impl Host for HostState {
    fn get_state(&mut self, meter: u32, key: String) -> Result<Option<Vec<u8>>> {
        self.set_state_key(meter, &key)?;
        Ok(match self.writes.get(&self.state_key) {
            Some(value) => value.clone(),
            None => self.context.states.get(&self.state_key),
        })
    }

    // NOTE: the limits are per value and per call. The state a plugin keeps over many calls is
    // not limited, so a plugin that writes new keys on every call grows the store without end.
    fn set_state(&mut self, meter: u32, key: String, value: Vec<u8>) -> Result<()> {
        let limits = &self.limits;
        if value.len() > limits.max_value_bytes {
            let detail = format!(
                "state value of {} bytes is over the limit of {} bytes",
                value.len(),
                limits.max_value_bytes
            );
            return self.fail_call("state", detail);
        }
        self.set_state_key(meter, &key)?;
        let value = Some(value);
        self.count_state_bytes(&key, &value)?;
        self.writes.insert(self.state_key.clone(), value);
        Ok(())
    }

    fn delete_state(&mut self, meter: u32, key: String) -> Result<()> {
        self.set_state_key(meter, &key)?;
        self.count_state_bytes(&key, &None)?;
        self.writes.insert(self.state_key.clone(), None);
        Ok(())
    }

    fn history(&mut self, meter: u32, hours: u32) -> Result<Hourly> {
        self.set_meter_key(meter)?;
        Ok(self.hours_of_key(hours))
    }

    fn meter_history(&mut self, region: String, meter_id: String, hours: u32) -> Result<Hourly> {
        if !self.context.reads_history_of(&region) {
            return Ok(hourly(RecentHours::default()));
        }
        self.meter_key.clear();
        self.meter_key
            .extend([region.as_str(), "/", meter_id.as_str()]);
        Ok(self.hours_of_key(hours))
    }

    fn setting(&mut self, region: String, name: String) -> Result<Option<Value>> {
        Ok(self.context.settings.get(&region, &name))
    }

    fn log(&mut self, level: Level, message: String) -> Result<()> {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES_PER_CALL {
            return Ok(());
        }
        let plugin = self.context.name.as_str();
        let permit = self.context.log_budget.take(Instant::now());
        if permit.dropped_before > 0 {
            tracing::warn!(
                plugin,
                dropped = permit.dropped_before,
                limit = MAX_LOG_LINES_PER_MINUTE,
                "log lines of this plugin were dropped in the last minute, over the limit per minute"
            );
        }
        if permit.first_dropped {
            tracing::warn!(
                plugin,
                limit = MAX_LOG_LINES_PER_MINUTE,
                "further log lines of this plugin are dropped until the minute ends"
            );
        }
        if !permit.write {
            return Ok(());
        }
        let message = clean_log_message(&message);
        if self.log_lines == MAX_LOG_LINES_PER_CALL {
            tracing::warn!(
                plugin,
                limit = MAX_LOG_LINES_PER_CALL,
                "further log lines of this plugin call are dropped"
            );
        }
        match level {
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }
}

/// A clock that always reads zero, so plugins cannot observe time beyond the readings.
struct FixedClock;

impl HostWallClock for FixedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FixedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

fn hourly(recent: RecentHours) -> Hourly {
    Hourly {
        start_ms: recent.start_ms,
        energy_kwh: recent.energy_kwh,
        covered_secs: recent.covered_secs,
    }
}
