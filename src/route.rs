//! Routes: which backends hold a measurement (its replica set).
//!
//! From the config's `keymaps` (as in the original InfluxDB Proxy's `KEYMAPS`):
//! the exact key first; then the longest key that is a prefix of the
//! measurement name; then `_default_`; with no match there is no route and the
//! line or statement is rejected.

use std::collections::BTreeMap;

/// The key that matches any measurement no other key matches.
pub const DEFAULT_KEY: &str = "_default_";

/// Indices into the backend list (the order of `Router::new`'s `backends`),
/// sorted and without duplicates.
pub type ReplicaSet = Vec<usize>;

/// Measurement name -> replica set.
#[derive(Debug, Clone)]
pub struct Router {
    _private: (),
}

impl Router {
    /// Builds the router. `backends` are the backend names in index order.
    /// Errors: a keymap naming an unknown backend, or an empty keymap
    /// (message names the key).
    pub fn new(keymaps: &BTreeMap<String, Vec<String>>, backends: &[String]) -> Result<Router, String> {
        let _ = (keymaps, backends);
        todo!()
    }

    /// The replica set of `measurement` (unescaped name), or `None` if no key
    /// matches and there is no `_default_`.
    pub fn route(&self, measurement: &str) -> Option<&ReplicaSet> {
        let _ = measurement;
        todo!()
    }

    /// Every key with its replica set, in a stable order (exact keys as given,
    /// `_default_` last), for `influx-proxy check`.
    pub fn describe(&self) -> Vec<(String, ReplicaSet)> {
        todo!()
    }
}
