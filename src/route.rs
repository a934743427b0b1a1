//! Routes: which backends hold a measurement: an explicit replica set or a
//! shard group ([`crate::shard_group`]), whose placement then picks the
//! replicas of each shard key.
//!
//! From the config's `keymaps` (as in the original InfluxDB Proxy's `KEYMAPS`):
//! the exact key first; then the longest key that is a prefix of the
//! measurement name; then `_default_`; with no match there is no route and the
//! line or statement is rejected.
//!
//! Keys are compared byte by byte with the unescaped measurement name, case
//! sensitive (measurement names are case sensitive in InfluxDB). A lookup walks
//! a byte trie of the keys once along the name: no hashing, no allocation.

use crate::shard_group::ShardGroup;
use std::collections::BTreeMap;

/// The key that matches any measurement no other key matches.
pub const DEFAULT_KEY: &str = "_default_";

/// Indices into the backend list (the order of `Router::new`'s `backends`),
/// sorted and without duplicates.
pub type ReplicaSet = Vec<usize>;

/// What a keymap names (config `keymaps` values): a list of backend names
/// (an explicit replica set) or the name of a shard group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keymap {
    Backends(Vec<String>),
    Group(String),
}

/// Where a measurement lives: see [`Router::route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'r> {
    /// Every point and statement of the measurement goes to this replica set.
    Set(&'r ReplicaSet),
    /// The measurement is spread over this group: each shard key
    /// `(db, measurement[, tag value])` has its own replicas
    /// ([`ShardGroup::replicas`]).
    Group(&'r ShardGroup),
}

/// A keymap resolved: a replica set or an index into `Router::groups`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Set(ReplicaSet),
    Group(usize),
}

/// Measurement name -> replica set or shard group.
#[derive(Debug, Clone)]
pub struct Router {
    /// Trie of the keys other than `_default_`; node 0 is the root (the empty
    /// key, which never holds a set).
    nodes: Vec<Node>,
    /// The target of `_default_`, if configured.
    default: Option<Target>,
    /// Every key other than `_default_` with its target, in key order.
    keys: Vec<(String, Target)>,
    /// Every shard group of the config, in name order (used by a keymap or
    /// not).
    groups: Vec<ShardGroup>,
}

#[derive(Debug, Clone, Default)]
struct Node {
    /// (next byte, node index), sorted by byte.
    children: Vec<(u8, usize)>,
    /// Index into `Router::keys` of the key ending here.
    key: Option<usize>,
}

impl Router {
    /// Builds the router. `backends` are the backend names in index order;
    /// `groups` the shard groups (built over the same backends) that keymaps
    /// may name. Errors: a keymap naming an unknown backend or group, or an
    /// empty keymap (message names the key); an empty key (use `_default_`).
    pub fn new(
        keymaps: &BTreeMap<String, Keymap>,
        groups: Vec<ShardGroup>,
        backends: &[String],
    ) -> Result<Router, String> {
        let mut router = Router { nodes: vec![Node::default()], default: None, keys: Vec::new(), groups };
        for (key, keymap) in keymaps {
            let target = match keymap {
                Keymap::Backends(names) => {
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
                    crate::sort::sort_unstable(&mut set);
                    set.dedup();
                    Target::Set(set)
                }
                Keymap::Group(name) => match router.groups.iter().position(|g| g.name() == name) {
                    Some(index) => Target::Group(index),
                    None => return Err(format!("keymap {key:?} names unknown shard group {name:?}")),
                },
            };
            if key == DEFAULT_KEY {
                router.default = Some(target);
            } else if key.is_empty() {
                return Err(format!(
                    "keymap key \"\" is empty (use {DEFAULT_KEY:?} to match every measurement)"
                ));
            } else {
                router.insert(key, target);
            }
        }
        Ok(router)
    }

    /// Where `measurement` (unescaped name) lives: an explicit replica set or
    /// a shard group; `None` if no key matches and there is no `_default_`.
    /// Costs one walk of the key trie, no hashing (placement in a group is
    /// the caller's next step, [`ShardGroup::replicas`]).
    pub fn route(&self, measurement: &str) -> Option<Route<'_>> {
        self.target(measurement).map(|t| self.resolve(t))
    }

    /// The replica set every measurement goes to, when there is one: the
    /// keymap is `_default_` alone and names an explicit replica set (no
    /// shard group). A write then routes no point one by one.
    pub fn only_set(&self) -> Option<&ReplicaSet> {
        match (&self.default, self.keys.is_empty()) {
            (Some(Target::Set(set)), true) => Some(set),
            _ => None,
        }
    }

    /// The replica set of the shard key `(db, measurement[, tag_value])`:
    /// the explicit set, or the group's placement of the key. `None`: no
    /// route.
    pub fn replicas(&self, db: &str, measurement: &str, tag_value: Option<&str>) -> Option<ReplicaSet> {
        match self.route(measurement)? {
            Route::Set(set) => Some(set.clone()),
            Route::Group(group) => Some(group.replicas(db, measurement, tag_value)),
        }
    }

    /// Every shard group of the config, in name order.
    pub fn groups(&self) -> &[ShardGroup] {
        &self.groups
    }

    /// Every distinct place data may live: the explicit replica sets of the
    /// keymaps and the shard groups keymaps name, each once, in
    /// [`Router::describe`] order. What a read of every measurement (regex
    /// FROM, SHOW without FROM) must cover.
    pub fn destinations(&self) -> Vec<Route<'_>> {
        let mut out: Vec<Route<'_>> = Vec::new();
        for (_, route) in self.describe() {
            if !out.contains(&route) {
                out.push(route);
            }
        }
        out
    }

    fn resolve<'r>(&'r self, target: &'r Target) -> Route<'r> {
        match target {
            Target::Set(set) => Route::Set(set),
            Target::Group(index) => Route::Group(&self.groups[*index]),
        }
    }

    fn target(&self, measurement: &str) -> Option<&Target> {
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

    /// Every key with where it routes, in a stable order (keys in order,
    /// `_default_` last), for `influx-proxy check`.
    pub fn describe(&self) -> Vec<(&str, Route<'_>)> {
        let mut all: Vec<(&str, Route<'_>)> =
            self.keys.iter().map(|(key, target)| (key.as_str(), self.resolve(target))).collect();
        if let Some(target) = &self.default {
            all.push((DEFAULT_KEY, self.resolve(target)));
        }
        all
    }

    /// Adds `key` (not `_default_`, not empty) to the trie.
    fn insert(&mut self, key: &str, target: Target) {
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
        self.keys.push((key.to_string(), target));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends() -> Vec<String> {
        ["a", "b", "c"].map(String::from).to_vec()
    }

    fn keymaps(entries: &[(&str, &[&str])]) -> BTreeMap<String, Keymap> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), Keymap::Backends(v.iter().map(|s| s.to_string()).collect())))
            .collect()
    }

    fn new(keymaps: &BTreeMap<String, Keymap>) -> Result<Router, String> {
        Router::new(keymaps, Vec::new(), &backends())
    }

    fn router() -> Router {
        new(&keymaps(&[
            ("cpu", &["a", "b"]),
            ("cpu.load", &["c"]),
            ("mem", &["c", "a", "c"]),
            ("_default_", &["b"]),
        ]))
        .unwrap()
    }

    /// The explicit replica set `measurement` routes to (panics on a group).
    fn set(r: &Router, measurement: &str) -> Option<Vec<usize>> {
        r.route(measurement).map(|route| match route {
            Route::Set(set) => set.clone(),
            Route::Group(g) => panic!("{measurement} routes to group {}", g.name()),
        })
    }

    #[test]
    fn exact_key_wins() {
        let r = router();
        assert_eq!(set(&r, "cpu"), Some(vec![0, 1]));
        assert_eq!(set(&r, "cpu.load"), Some(vec![2]));
    }

    #[test]
    fn longest_prefix_wins() {
        let r = router();
        assert_eq!(set(&r, "cpu.load.1"), Some(vec![2]));
        assert_eq!(set(&r, "cpu.loa"), Some(vec![0, 1]));
        assert_eq!(set(&r, "cpu_user"), Some(vec![0, 1]));
        assert_eq!(set(&r, "memory"), Some(vec![0, 2]));
    }

    #[test]
    fn default_catches_the_rest() {
        let r = router();
        assert_eq!(set(&r, "disk"), Some(vec![1]));
        assert_eq!(set(&r, "cp"), Some(vec![1]));
        assert_eq!(set(&r, "CPU"), Some(vec![1]));
        assert_eq!(set(&r, ""), Some(vec![1]));
    }

    #[test]
    fn no_default_means_no_route() {
        let r = new(&keymaps(&[("cpu", &["a"])])).unwrap();
        assert_eq!(set(&r, "cpu2"), Some(vec![0]));
        assert_eq!(set(&r, "disk"), None);
        assert_eq!(set(&r, "cp"), None);
        assert_eq!(r.replicas("db", "disk", None), None);
    }

    #[test]
    fn replica_sets_are_sorted_and_deduplicated() {
        assert_eq!(set(&router(), "mem"), Some(vec![0, 2]));
    }

    #[test]
    fn non_ascii_keys_route_by_bytes() {
        let r = new(&keymaps(&[("温度", &["c"]), ("温", &["a"])])).unwrap();
        assert_eq!(set(&r, "温度.室内"), Some(vec![2]));
        assert_eq!(set(&r, "温湿度"), Some(vec![0]));
        assert_eq!(set(&r, "湿"), None);
    }

    #[test]
    fn unknown_backend_is_an_error_naming_key_and_backend() {
        let e = new(&keymaps(&[("cpu", &["a", "x"])])).unwrap_err();
        assert_eq!(e, r#"keymap "cpu" names unknown backend "x""#);
    }

    #[test]
    fn empty_keymap_is_an_error_naming_the_key() {
        let e = new(&keymaps(&[("cpu", &[])])).unwrap_err();
        assert_eq!(e, r#"keymap "cpu" names no backend"#);
        let e = new(&keymaps(&[("", &["a"])])).unwrap_err();
        assert!(e.contains("_default_"), "{e}");
    }

    #[test]
    fn describe_lists_keys_in_order_with_default_last() {
        let r = router();
        let got: Vec<(&str, Vec<usize>)> = r
            .describe()
            .into_iter()
            .map(|(k, route)| match route {
                Route::Set(set) => (k, set.clone()),
                Route::Group(_) => panic!("no group here"),
            })
            .collect();
        let want = [("cpu", vec![0, 1]), ("cpu.load", vec![2]), ("mem", vec![0, 2]), ("_default_", vec![1])];
        assert_eq!(got, want);
    }

    fn group_router() -> Router {
        let names = backends();
        let main = ShardGroup::new("main", &names, &names, 2, None).unwrap();
        let tenants = ShardGroup::new("tenants", &names[1..], &names, 1, Some("customer")).unwrap();
        let mut maps = keymaps(&[("cpu.load", &["b"])]);
        maps.insert("requests".into(), Keymap::Group("tenants".into()));
        maps.insert("_default_".into(), Keymap::Group("main".into()));
        Router::new(&maps, vec![main, tenants], &names).unwrap()
    }

    #[test]
    fn a_keymap_naming_a_group_routes_to_the_group_and_placement_picks_the_replicas() {
        let r = group_router();
        assert!(matches!(r.route("cpu.load.1"), Some(Route::Set(s)) if *s == vec![1]));
        assert!(matches!(r.route("cpu"), Some(Route::Group(g)) if g.name() == "main"));
        assert!(matches!(r.route("requests_v2"), Some(Route::Group(g)) if g.name() == "tenants"));
        // placement's golden placements: (telegraf, cpu) -> b, c; (telegraf, mem) -> c, a.
        assert_eq!(r.replicas("telegraf", "cpu", None), Some(vec![1, 2]));
        assert_eq!(r.replicas("telegraf", "mem", None), Some(vec![0, 2]));
        assert_eq!(r.replicas("telegraf", "cpu.load", Some("x")), Some(vec![1]));
        let one = r.replicas("app", "requests", Some("customer-17")).unwrap();
        assert_eq!(one.len(), 1);
        assert!(one[0] == 1 || one[0] == 2);
        assert_eq!(r.destinations().len(), 3);
    }

    #[test]
    fn a_keymap_naming_an_unknown_group_is_an_error() {
        let mut maps = BTreeMap::new();
        maps.insert("cpu".to_string(), Keymap::Group("nope".into()));
        assert_eq!(new(&maps).unwrap_err(), r#"keymap "cpu" names unknown shard group "nope""#);
    }
}
