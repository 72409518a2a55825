//! Durable plugin state: values per plugin, meter and key, committed with each batch.
//!
//! Reads go through a cache to the store. Writes stay in memory until the pipeline takes them
//! with [`PluginStates::take_pending`] and commits them in the batch's transaction, so a crash
//! before the commit leaves the state as it was before the batch, matching the readings the
//! broker redelivers.

use foldhash::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::store::Store;

/// Bytes of keys and values above which the cache of committed values is cleared. Plugins
/// choose their keys, so the cache is bounded by size, not by entries.
const MAX_CACHED_BYTES: usize = 256 * 1024 * 1024;

/// Bytes counted for a cache entry besides its key and value: the map's slot and the two
/// allocations' headers, an estimate.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// Plugin state for every plugin.
pub struct PluginStates {
    store: Option<Arc<Store>>,
    inner: Mutex<Inner>,
    /// Bytes of cached entries above which the cache is cleared.
    cache_limit_bytes: usize,
}

#[derive(Default)]
struct Inner {
    /// Committed values read from the store, `None` for absent ones.
    cached: HashMap<String, Option<Vec<u8>>>,
    /// Bytes of the entries in `cached`, counted by [`entry_bytes`].
    cached_bytes: usize,
    /// Values written since the last [`PluginStates::take_pending`].
    pending: HashMap<String, Option<Vec<u8>>>,
    /// Bytes of the writes in `pending` by plugin name, counted by [`entry_bytes`].
    pending_bytes: HashMap<String, usize>,
}

impl Inner {
    /// Caches a committed value, clearing the cache first when the entry would take it past
    /// `limit_bytes`.
    fn cache(&mut self, key: String, value: Option<Vec<u8>>, limit_bytes: usize) {
        let bytes = entry_bytes(&key, &value);
        if self.cached_bytes + bytes > limit_bytes {
            self.cached.clear();
            self.cached_bytes = 0;
        }
        if let Some(old) = self.cached.get(&key) {
            self.cached_bytes -= entry_bytes(&key, old);
        }
        self.cached_bytes += bytes;
        self.cached.insert(key, value);
    }
}

/// Returns the bytes counted for a cache entry or a pending write.
pub fn entry_bytes(key: &str, value: &Option<Vec<u8>>) -> usize {
    key.len() + value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD_BYTES
}

impl PluginStates {
    /// Creates plugin state backed by the store.
    pub fn new(store: Arc<Store>) -> PluginStates {
        PluginStates {
            store: Some(store),
            inner: Mutex::new(Inner::default()),
            cache_limit_bytes: MAX_CACHED_BYTES,
        }
    }

    /// Creates plugin state held only in memory, for `gridwatch plugin test`.
    pub fn in_memory() -> PluginStates {
        PluginStates {
            store: None,
            inner: Mutex::new(Inner::default()),
            cache_limit_bytes: MAX_CACHED_BYTES,
        }
    }

    /// Returns the value under a key built by
    /// [`push_plugin_state_key`](crate::store::push_plugin_state_key), including uncommitted
    /// writes.
    pub fn get(&self, full: &str) -> Option<Vec<u8>> {
        let mut inner = self.inner.lock();
        if let Some(value) = inner.pending.get(full).or_else(|| inner.cached.get(full)) {
            return value.clone();
        }
        let loaded = self.load(full);
        inner.cache(full.to_owned(), loaded.clone(), self.cache_limit_bytes);
        loaded
    }

    /// Records the writes (`Some`) and deletions (`None`) of one successful call of `plugin`,
    /// by the key that [`push_plugin_state_key`](crate::store::push_plugin_state_key) builds.
    pub fn apply(&self, plugin: &str, writes: impl Iterator<Item = (String, Option<Vec<u8>>)>) {
        let mut inner = self.inner.lock();
        let mut bytes = 0;
        for (key, value) in writes {
            bytes += entry_bytes(&key, &value);
            inner.pending.insert(key, value);
        }
        // State kept only in memory, as `plugin test` keeps it, is never committed, so its
        // writes stay pending and are not counted.
        if self.store.is_none() {
            return;
        }
        match inner.pending_bytes.get_mut(plugin) {
            Some(total) => *total += bytes,
            None => {
                inner.pending_bytes.insert(plugin.to_owned(), bytes);
            }
        }
    }

    /// Returns the bytes of `plugin`'s writes that wait for the next
    /// [`PluginStates::take_pending`], each counted as its full key, its value and an estimate of
    /// the memory it takes besides them.
    pub fn pending_bytes(&self, plugin: &str) -> usize {
        let inner = self.inner.lock();
        inner.pending_bytes.get(plugin).copied().unwrap_or(0)
    }

    /// Takes the writes made since the last call, to be committed with the batch. They stay
    /// readable from the cache.
    pub fn take_pending(&self) -> Vec<(String, Option<Vec<u8>>)> {
        let mut inner = self.inner.lock();
        let pending: Vec<_> = inner.pending.drain().collect();
        inner.pending_bytes.clear();
        for (key, value) in &pending {
            inner.cache(key.clone(), value.clone(), self.cache_limit_bytes);
        }
        pending
    }

    /// Returns the bytes the cache holds, by [`entry_bytes`].
    #[cfg(test)]
    fn cached_bytes(&self) -> usize {
        self.inner.lock().cached_bytes
    }

    fn load(&self, key: &str) -> Option<Vec<u8>> {
        let store = self.store.as_ref()?;
        match store.load_plugin_state(key) {
            Ok(value) => value,
            Err(error) => {
                // NOTE: the plugin gets the value as absent for this batch, and the read is not
                // retried.
                tracing::error!(%error, "failed to read plugin state");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_stays_under_byte_limit() {
        let states = PluginStates {
            cache_limit_bytes: 10_000,
            ..PluginStates::in_memory()
        };
        for i in 0..100 {
            let key = format!("{i:04}{}", "k".repeat(996));
            assert_eq!(states.get(&key), None);
            assert!(states.cached_bytes() <= 10_000, "{}", states.cached_bytes());
        }
        states.apply("test", [("w".to_owned(), Some(vec![0; 5_000]))].into_iter());
        states.take_pending();
        // The value's entry replaced earlier entries to stay under the limit.
        let cached = states.cached_bytes();
        assert!(cached >= 1 + 5_000 + ENTRY_OVERHEAD_BYTES, "{cached}");
        assert!(cached <= 10_000, "{cached}");
        assert_eq!(states.get("w"), Some(vec![0; 5_000]));
    }
}
