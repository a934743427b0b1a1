//! Shard groups: a list of backends over which shard keys are spread with
//! `replication_factor` copies each (config `shard_groups`, README "Shard
//! groups").
//!
//! # The rule
//!
//! A keymap that names a group (`"_default_": "main"`) routes a measurement
//! to the group rather than to a fixed replica set. Each point, and each
//! statement about one measurement, is then placed by its **shard key**:
//! `(db, measurement)`, or `(db, measurement, value of shard_tag)` in a group
//! with a `shard_tag`. The key's replicas are the `replication_factor`
//! backends of the group that [`crate::placement::place`] ranks first
//! (rendezvous hashing on XXH3-64; the placement module's doc is its spec and
//! its golden tests pin it). Placement depends only on the key and the names
//! of the group's backends, so every proxy with the same config places a key
//! on the same backends, today and after an upgrade.
//!
//! **A point without the shard tag** belongs to the shard of the empty tag
//! value: its key is `(db, measurement, "")`. It is stored (InfluxDB accepts
//! it) and a query that pins the tag to `''` finds it where InfluxDB would.
//! A group without `shard_tag` ignores tags: its keys have no tag value.
//!
//! # Reading every shard
//!
//! A read that may touch any key of a group (a regex FROM, `SHOW` without
//! FROM, `SHOW ... FROM` a tag-sharded measurement) asks one backend of a
//! **cover**: a set of backends that meets every key's replica set. Any
//! `N - RF + 1` distinct backends of a group of `N` are a cover: a key's
//! replica set has `RF` distinct backends of the group, and the `RF - 1`
//! backends left out of a cover of `N - RF + 1` cannot hold all of them, so
//! at least one replica of every key is in the cover. Fewer backends are not
//! enough in general (the `RF` backends outside a smaller set may be exactly
//! some key's replicas). So a read of a group asks [`ShardGroup::cover_size`]
//! backends, healthy ones first, and replaces each one that does not answer
//! by another backend of the group; with `RF - 1` backends down it still
//! reaches every shard.

use crate::placement::{place, ShardKey};
use crate::route::ReplicaSet;

/// One shard group of the configuration, resolved to backend indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardGroup {
    name: String,
    /// Indices into the proxy's backend list ([`crate::config::Config::backend_names`]),
    /// sorted.
    backends: Vec<usize>,
    /// The names of `backends`, in the same order (what placement hashes).
    names: Vec<String>,
    replication_factor: usize,
    shard_tag: Option<String>,
}

impl ShardGroup {
    /// Builds group `name` of the backends named `members` (any order), with
    /// `all_backends` the proxy's backend names in index order. Errors (one
    /// line): no member, an unknown or repeated member, a replication factor
    /// of 0 or above the number of members, an empty `shard_tag`.
    /// [`crate::config::Config::parse`] reports the same problems with their
    /// JSON path first.
    pub fn new(
        name: &str,
        members: &[String],
        all_backends: &[String],
        replication_factor: usize,
        shard_tag: Option<&str>,
    ) -> Result<ShardGroup, String> {
        if members.is_empty() {
            return Err(format!("shard group {name:?} has no backend"));
        }
        let mut backends = Vec::with_capacity(members.len());
        for member in members {
            match all_backends.iter().position(|b| b == member) {
                Some(i) if backends.contains(&i) => {
                    return Err(format!("shard group {name:?} lists backend {member:?} twice"))
                }
                Some(i) => backends.push(i),
                None => return Err(format!("shard group {name:?} names unknown backend {member:?}")),
            }
        }
        if replication_factor == 0 || replication_factor > backends.len() {
            return Err(format!(
                "shard group {name:?}: replication_factor {replication_factor} must be from 1 to the group's {} backends",
                backends.len()
            ));
        }
        if shard_tag == Some("") {
            return Err(format!("shard group {name:?}: shard_tag must not be empty"));
        }
        crate::sort::sort_unstable(&mut backends);
        let names = backends.iter().map(|&i| all_backends[i].clone()).collect();
        Ok(ShardGroup {
            name: name.to_string(),
            backends,
            names,
            replication_factor,
            shard_tag: shard_tag.map(str::to_string),
        })
    }

    /// The group's name (its key in `shard_groups`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The group's backends: indices into the proxy's backend list, sorted.
    pub fn backends(&self) -> &[usize] {
        &self.backends
    }

    /// The group's backend names, in the order of [`ShardGroup::backends`].
    pub fn backend_names(&self) -> &[String] {
        &self.names
    }

    /// Copies of each shard key (RF), from 1 to the number of backends.
    pub fn replication_factor(&self) -> usize {
        self.replication_factor
    }

    /// The tag whose value is part of the shard key, if the group is sharded
    /// by a tag.
    pub fn shard_tag(&self) -> Option<&str> {
        self.shard_tag.as_deref()
    }

    /// The shard key of `(db, measurement, tag_value)` in this group: without
    /// `shard_tag` the tag value is ignored; with it a missing value is the
    /// empty one (`Some("")`, see the module doc).
    pub fn key<'a>(&self, db: &'a str, measurement: &'a str, tag_value: Option<&'a str>) -> ShardKey<'a> {
        let tag_value = self.shard_tag.as_ref().map(|_| tag_value.unwrap_or(""));
        ShardKey { db, measurement, tag_value }
    }

    /// The replicas of `(db, measurement[, tag_value])` (see
    /// [`ShardGroup::key`]): `replication_factor` backend indices, sorted.
    pub fn replicas(&self, db: &str, measurement: &str, tag_value: Option<&str>) -> ReplicaSet {
        self.key_replicas(&self.key(db, measurement, tag_value))
    }

    /// The replicas of `key` as sorted backend indices
    /// ([`crate::placement::place`] over the group's backend names).
    pub fn key_replicas(&self, key: &ShardKey<'_>) -> ReplicaSet {
        let mut set: ReplicaSet =
            place(&self.names, self.replication_factor, key).into_iter().map(|i| self.backends[i]).collect();
        crate::sort::sort_unstable(&mut set);
        set
    }

    /// The first backend of `among` (in its order, e.g. the backends of a
    /// cover that answered) that holds `key`, if any: which answer to take a
    /// key's data from when several backends of a cover hold it (with RF > 1
    /// they share keys, so each key's rows must be taken from one of them).
    /// Any cover of [`ShardGroup::cover_size`] backends of the group holds a
    /// replica of every key, so then the answer is always `Some`.
    pub fn owner_among(&self, key: &ShardKey<'_>, among: &[usize]) -> Option<usize> {
        let replicas = self.key_replicas(key);
        among.iter().copied().find(|b| replicas.contains(b))
    }

    /// How many distinct backends of the group a read of every shard must
    /// reach: `N - RF + 1` (any that many meet every replica set; see the
    /// module doc).
    pub fn cover_size(&self) -> usize {
        self.backends.len() - self.replication_factor + 1
    }

    /// Whether every backend holds every key (RF = N): then any one backend
    /// answers for the whole group.
    pub fn is_full_copy(&self) -> bool {
        self.replication_factor == self.backends.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn group(rf: usize, tag: Option<&str>) -> ShardGroup {
        // Proxy backends a..e (indices 0..4); the group holds b, c, e given
        // out of order.
        ShardGroup::new("g", &names(&["e", "b", "c"]), &names(&["a", "b", "c", "d", "e"]), rf, tag).unwrap()
    }

    #[test]
    fn replicas_are_placement_over_the_group_as_sorted_backend_indices() {
        let g = group(2, None);
        assert_eq!(g.backends(), [1, 2, 4]);
        for m in ["cpu", "mem", "disk", "net", "m17"] {
            let key = ShardKey { db: "db", measurement: m, tag_value: None };
            let mut want: Vec<usize> =
                place(&["b", "c", "e"], 2, &key).into_iter().map(|i| [1, 2, 4][i]).collect();
            want.sort_unstable();
            assert_eq!(g.replicas("db", m, None), want, "{m}");
            assert_eq!(g.replicas("db", m, Some("ignored")), want, "a group without shard_tag ignores tags");
        }
    }

    #[test]
    fn placement_agrees_with_the_golden_placements() {
        // placement's golden: ("telegraf", "cpu") on a group a, b, c with RF 2
        // lives on b and c.
        let g = ShardGroup::new("main", &names(&["c", "a", "b"]), &names(&["a", "b", "c"]), 2, None).unwrap();
        assert_eq!(g.replicas("telegraf", "cpu", None), vec![1, 2]);
        assert_eq!(g.replicas("telegraf", "mem", None), vec![0, 2]);
        let t = ShardGroup::new("t", &names(&["a", "b", "c"]), &names(&["a", "b", "c"]), 2, Some("customer"))
            .unwrap();
        assert_eq!(t.replicas("app", "requests", Some("customer-17")), vec![0, 1]);
    }

    #[test]
    fn a_missing_shard_tag_is_the_shard_of_the_empty_value() {
        let g = group(1, Some("customer"));
        assert_eq!(g.key("db", "m", None).tag_value, Some(""));
        for m in ["a", "b", "c", "d", "e", "f"] {
            assert_eq!(g.replicas("db", m, None), g.replicas("db", m, Some("")));
        }
        let spread: std::collections::BTreeSet<ReplicaSet> =
            (0..50).map(|i| g.replicas("db", "m", Some(&format!("v{i}")))).collect();
        assert!(spread.len() > 1, "tag values spread over the group");
    }

    #[test]
    fn any_cover_of_n_minus_rf_plus_1_backends_meets_every_replica_set() {
        let g = group(2, None);
        assert_eq!(g.cover_size(), 2);
        assert!(!g.is_full_copy());
        for cover in [[1, 2], [1, 4], [2, 4]] {
            for i in 0..500 {
                let set = g.replicas("db", &format!("m{i}"), None);
                assert!(set.iter().any(|b| cover.contains(b)), "{set:?} misses cover {cover:?}");
            }
        }
        assert_eq!(group(3, None).cover_size(), 1);
        assert!(group(3, None).is_full_copy());
        assert_eq!(group(1, None).cover_size(), 3);
    }

    #[test]
    fn owner_among_a_cover_is_the_first_of_it_holding_the_key() {
        let g = group(2, Some("customer"));
        for i in 0..200 {
            let value = format!("v{i}");
            let key = g.key("db", "m", Some(&value));
            let replicas = g.key_replicas(&key);
            for cover in [[1, 2], [4, 1], [2, 4]] {
                let owner = g.owner_among(&key, &cover).expect("a cover holds every key");
                assert!(replicas.contains(&owner));
                assert_eq!(owner, *cover.iter().find(|b| replicas.contains(b)).unwrap());
            }
            assert_eq!(g.owner_among(&key, &[0, 3]), None, "backends outside the group hold nothing");
        }
    }

    #[test]
    fn bad_groups_are_one_line_errors() {
        let all = names(&["a", "b"]);
        let e = |members: &[&str], rf, tag| ShardGroup::new("g", &names(members), &all, rf, tag).unwrap_err();
        assert_eq!(e(&[], 1, None), r#"shard group "g" has no backend"#);
        assert_eq!(e(&["a", "x"], 1, None), r#"shard group "g" names unknown backend "x""#);
        assert_eq!(e(&["a", "a"], 1, None), r#"shard group "g" lists backend "a" twice"#);
        assert!(e(&["a", "b"], 0, None).contains("replication_factor 0 must be from 1 to the group's 2"));
        assert!(e(&["a", "b"], 3, None).contains("replication_factor 3"));
        assert_eq!(e(&["a"], 1, Some("")), r#"shard group "g": shard_tag must not be empty"#);
    }
}
