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

/// Cached values above which the cache of committed values is cleared.
const MAX_CACHED_VALUES: usize = 1_000_000;

/// Plugin state for every plugin.
pub struct PluginStates {
    store: Option<Arc<Store>>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Committed values read from the store, `None` for absent ones.
    cached: HashMap<String, Option<Vec<u8>>>,
    /// Values written since the last [`PluginStates::take_pending`].
    pending: HashMap<String, Option<Vec<u8>>>,
}

impl PluginStates {
    /// Creates plugin state backed by the store.
    pub fn new(store: Arc<Store>) -> PluginStates {
        PluginStates {
            store: Some(store),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Creates plugin state held only in memory, for `gridwatch plugin test`.
    pub fn in_memory() -> PluginStates {
        PluginStates {
            store: None,
            inner: Mutex::new(Inner::default()),
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
        if inner.cached.len() >= MAX_CACHED_VALUES {
            inner.cached.clear();
        }
        inner.cached.insert(full.to_owned(), loaded.clone());
        loaded
    }

    /// Records the writes (`Some`) and deletions (`None`) of one successful call, by the key
    /// that [`push_plugin_state_key`](crate::store::push_plugin_state_key) builds.
    pub fn apply(&self, writes: impl Iterator<Item = (String, Option<Vec<u8>>)>) {
        self.inner.lock().pending.extend(writes);
    }

    /// Takes the writes made since the last call, to be committed with the batch. They stay
    /// readable from the cache.
    pub fn take_pending(&self) -> Vec<(String, Option<Vec<u8>>)> {
        let mut inner = self.inner.lock();
        let pending: Vec<_> = inner.pending.drain().collect();
        if inner.cached.len() + pending.len() > MAX_CACHED_VALUES {
            inner.cached.clear();
        }
        for (key, value) in &pending {
            inner.cached.insert(key.clone(), value.clone());
        }
        pending
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
