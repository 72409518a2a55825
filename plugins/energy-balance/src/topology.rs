//! The topology setting: which customer meters each transformer meter feeds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Column names of the topology text, also accepted as its first line.
pub const HEADER: &str = "transformer,region,meter";

/// A customer meter under a transformer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer {
    /// Region of the customer's meter.
    pub region: String,
    /// Meter id of the customer's meter.
    pub meter: String,
}

/// Customers by transformer meter id, in the order the text lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    transformers: HashMap<String, Vec<Customer>>,
}

impl Topology {
    /// Returns the customers of a transformer meter, or `None` when the topology does not list
    /// it.
    pub fn customers(&self, transformer: &str) -> Option<&[Customer]> {
        self.transformers.get(transformer).map(Vec::as_slice)
    }

    /// Returns the number of transformers.
    pub fn len(&self) -> usize {
        self.transformers.len()
    }

    /// Returns true when no transformer is listed.
    pub fn is_empty(&self) -> bool {
        self.transformers.is_empty()
    }
}

/// Parses topology text: one `transformer,region,meter` line per customer meter.
/// `transformer` is the transformer meter's id in the region whose setting contains the text,
/// and `region`, `meter` name the customer's meter. Blank lines and lines starting with `#` are
/// skipped, and the first line may be the header `transformer,region,meter`.
///
/// # Errors
/// Returns a message naming the line, its text and what was expected.
pub fn parse(text: &str) -> Result<Topology, String> {
    let mut topology = Topology::default();
    let mut owners: HashMap<(String, String), String> = HashMap::new();
    let mut first = true;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let is_header = first && line.eq_ignore_ascii_case(HEADER);
        first = false;
        if is_header {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [transformer, region, meter] = fields[..] else {
            return Err(format!(
                "topology line {number}: invalid line '{line}', expected 3 comma-separated \
                 fields {HEADER}"
            ));
        };
        for (name, value) in [
            ("transformer", transformer),
            ("region", region),
            ("meter", meter),
        ] {
            if value.is_empty() {
                return Err(format!(
                    "topology line {number}: empty {name} in '{line}', expected {HEADER}"
                ));
            }
        }
        let key = (region.to_owned(), meter.to_owned());
        if let Some(owner) = owners.get(&key) {
            return Err(format!(
                "topology line {number}: meter '{region}/{meter}' is already listed under \
                 transformer '{owner}', expected each customer meter once"
            ));
        }
        owners.insert(key, transformer.to_owned());
        topology
            .transformers
            .entry(transformer.to_owned())
            .or_default()
            .push(Customer {
                region: region.to_owned(),
                meter: meter.to_owned(),
            });
    }
    Ok(topology)
}

/// Parse results by region, kept while the region's topology text is unchanged.
type Cache = HashMap<String, (String, Result<Arc<Topology>, String>)>;

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// Returns the parsed topology of a region's text, parsing it only when the text changed
/// since the last call for the region. The flag is true when this call parsed the text, so
/// the caller reports a parse error once, not on every batch.
pub fn cached(region: &str, text: &str) -> (Result<Arc<Topology>, String>, bool) {
    let mut guard = CACHE.lock().unwrap_or_else(|poison| poison.into_inner());
    let cache = guard.get_or_insert_with(HashMap::new);
    if let Some((cached_text, parsed)) = cache.get(region)
        && cached_text == text
    {
        return (parsed.clone(), false);
    }
    let parsed = parse(text).map(Arc::new);
    cache.insert(region.to_owned(), (text.to_owned(), parsed.clone()));
    (parsed, true)
}
