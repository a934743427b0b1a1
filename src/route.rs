//! Routes: which backends hold a measurement (its replica set).
//!
//! From the config's `keymaps` (as in the original InfluxDB Proxy's `KEYMAPS`):
//! the exact key first; then the longest key that is a prefix of the
//! measurement name; then `_default_`; with no match there is no route and the
//! line or statement is rejected.
//!
//! Keys are compared byte by byte with the unescaped measurement name, case
//! sensitive (measurement names are case sensitive in InfluxDB). A lookup walks
//! a byte trie of the keys once along the name: no hashing, no allocation.

use std::collections::BTreeMap;

/// The key that matches any measurement no other key matches.
pub const DEFAULT_KEY: &str = "_default_";

/// Indices into the backend list (the order of `Router::new`'s `backends`),
/// sorted and without duplicates.
pub type ReplicaSet = Vec<usize>;

/// Measurement name -> replica set.
#[derive(Debug, Clone)]
pub struct Router {
    /// Trie of the keys other than `_default_`; node 0 is the root (the empty
    /// key, which never holds a set).
    nodes: Vec<Node>,
    /// The replica set of `_default_`, if configured.
    default: Option<ReplicaSet>,
    /// Every key other than `_default_` with its replica set, in key order.
    keys: Vec<(String, ReplicaSet)>,
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// (next byte, node index), sorted by byte.
    children: Vec<(u8, usize)>,
    /// Index into `Router::keys` of the key ending here.
    key: Option<usize>,
}

impl Router {
    /// Builds the router. `backends` are the backend names in index order.
    /// Errors: a keymap naming an unknown backend, or an empty keymap
    /// (message names the key); an empty key (use `_default_`).
    pub fn new(keymaps: &BTreeMap<String, Vec<String>>, backends: &[String]) -> Result<Router, String> {
        let mut router = Router { nodes: vec![Node::default()], default: None, keys: Vec::new() };
        for (key, names) in keymaps {
            if names.is_empty() {
                return Err(format!("keymap {key:?} names no backend"));
            }
            let mut set = ReplicaSet::with_capacity(names.len());
            for name in names {
                match backends.iter().position(|b| b == name) {
                    Some(index) => set.push(index),
                    None => return Err(format!("keymap {key:?} names unknown backend {name:?}")),
                }
            }
            set.sort_unstable();
            set.dedup();
            if key == DEFAULT_KEY {
                router.default = Some(set);
            } else if key.is_empty() {
                return Err(format!(
                    "keymap key \"\" is empty (use {DEFAULT_KEY:?} to match every measurement)"
                ));
            } else {
                router.insert(key, set);
            }
        }
        Ok(router)
    }

    /// The replica set of `measurement` (unescaped name), or `None` if no key
    /// matches and there is no `_default_`.
    pub fn route(&self, measurement: &str) -> Option<&ReplicaSet> {
        let mut node = &self.nodes[0];
        let mut best = None;
        for &byte in measurement.as_bytes() {
            match node.children.binary_search_by_key(&byte, |&(b, _)| b) {
                Ok(k) => node = &self.nodes[node.children[k].1],
                Err(_) => break,
            }
            if let Some(key) = node.key {
                best = Some(key);
            }
        }
        match best {
            Some(key) => Some(&self.keys[key].1),
            None => self.default.as_ref(),
        }
    }

    /// Every key with its replica set, in a stable order (exact keys as given,
    /// `_default_` last), for `influx-proxy check`.
    pub fn describe(&self) -> Vec<(String, ReplicaSet)> {
        let mut all = self.keys.clone();
        if let Some(set) = &self.default {
            all.push((DEFAULT_KEY.to_string(), set.clone()));
        }
        all
    }

    /// Adds `key` (not `_default_`, not empty) to the trie.
    fn insert(&mut self, key: &str, set: ReplicaSet) {
        let mut node = 0;
        for &byte in key.as_bytes() {
            node = match self.nodes[node].children.binary_search_by_key(&byte, |&(b, _)| b) {
                Ok(k) => self.nodes[node].children[k].1,
                Err(k) => {
                    let next = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.nodes[node].children.insert(k, (byte, next));
                    next
                }
            };
        }
        self.nodes[node].key = Some(self.keys.len());
        self.keys.push((key.to_string(), set));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends() -> Vec<String> {
        ["a", "b", "c"].map(String::from).to_vec()
    }

    fn keymaps(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        entries.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect()
    }

    fn router() -> Router {
        Router::new(
            &keymaps(&[
                ("cpu", &["a", "b"]),
                ("cpu.load", &["c"]),
                ("mem", &["c", "a", "c"]),
                ("_default_", &["b"]),
            ]),
            &backends(),
        )
        .unwrap()
    }

    #[test]
    fn exact_key_wins() {
        let r = router();
        assert_eq!(r.route("cpu"), Some(&vec![0, 1]));
        assert_eq!(r.route("cpu.load"), Some(&vec![2]));
    }

    #[test]
    fn longest_prefix_wins() {
        let r = router();
        assert_eq!(r.route("cpu.load.1"), Some(&vec![2]));
        assert_eq!(r.route("cpu.loa"), Some(&vec![0, 1]));
        assert_eq!(r.route("cpu_user"), Some(&vec![0, 1]));
        assert_eq!(r.route("memory"), Some(&vec![0, 2]));
    }

    #[test]
    fn default_catches_the_rest() {
        let r = router();
        assert_eq!(r.route("disk"), Some(&vec![1]));
        assert_eq!(r.route("cp"), Some(&vec![1]));
        assert_eq!(r.route("CPU"), Some(&vec![1]));
        assert_eq!(r.route(""), Some(&vec![1]));
    }

    #[test]
    fn no_default_means_no_route() {
        let r = Router::new(&keymaps(&[("cpu", &["a"])]), &backends()).unwrap();
        assert_eq!(r.route("cpu2"), Some(&vec![0]));
        assert_eq!(r.route("disk"), None);
        assert_eq!(r.route("cp"), None);
    }

    #[test]
    fn replica_sets_are_sorted_and_deduplicated() {
        assert_eq!(router().route("mem"), Some(&vec![0, 2]));
    }

    #[test]
    fn non_ascii_keys_route_by_bytes() {
        let r = Router::new(&keymaps(&[("温度", &["c"]), ("温", &["a"])]), &backends()).unwrap();
        assert_eq!(r.route("温度.室内"), Some(&vec![2]));
        assert_eq!(r.route("温湿度"), Some(&vec![0]));
        assert_eq!(r.route("湿"), None);
    }

    #[test]
    fn unknown_backend_is_an_error_naming_key_and_backend() {
        let e = Router::new(&keymaps(&[("cpu", &["a", "x"])]), &backends()).unwrap_err();
        assert_eq!(e, r#"keymap "cpu" names unknown backend "x""#);
    }

    #[test]
    fn empty_keymap_is_an_error_naming_the_key() {
        let e = Router::new(&keymaps(&[("cpu", &[])]), &backends()).unwrap_err();
        assert_eq!(e, r#"keymap "cpu" names no backend"#);
        let e = Router::new(&keymaps(&[("", &["a"])]), &backends()).unwrap_err();
        assert!(e.contains("_default_"), "{e}");
    }

    #[test]
    fn describe_lists_keys_in_order_with_default_last() {
        let got = router().describe();
        let want = [("cpu", vec![0, 1]), ("cpu.load", vec![2]), ("mem", vec![0, 2]), ("_default_", vec![1])]
            .map(|(k, v)| (k.to_string(), v));
        assert_eq!(got, want);
    }
}
