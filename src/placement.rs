//! Shard placement: which backends of a shard group hold a shard key.
//!
//! A shard group is a list of backends and a replication factor RF. A shard
//! key is `(db, measurement)`, or `(db, measurement, tag value)` for a group
//! sharded by a tag. [`place`] gives the RF backends of the group that hold
//! the key, best first.
//!
//! # Spec
//!
//! Placement is **rendezvous hashing** (highest random weight, Thaler and
//! Ravishankar 1996): every backend `b` of the group gets the score
//! `XXH3-64(frame(b) ++ frame(db) ++ frame(measurement) [++ frame(tag value)])`,
//! where `frame(s)` is the length of `s` in bytes as a u32 little-endian
//! followed by the bytes of `s` (so `("ab", "c")` and `("a", "bc")` differ), and
//! XXH3-64 is the 64-bit XXH3 hash with seed 0 (xxHash specification,
//! `xxhash-rust` crate). The key's replicas are the RF backends with the
//! highest scores, ties broken by the backend name. The group's name and the
//! order of its backends do not enter, so the same backends give the same
//! placement in any group and any config order.
//!
//! Why rendezvous hashing rather than a ring with virtual nodes:
//! - **Minimal movement, exactly.** Adding backend `n` to a group of N moves a
//!   key only if `n` scores among its top RF, i.e. for an expected RF/(N+1) of
//!   the keys, and each moved key loses exactly one old owner (the lowest of its
//!   old RF); removing a backend moves only the keys it held. A ring gives this
//!   only on average over its virtual nodes, and its balance depends on how many
//!   there are.
//! - **No state.** Nothing to build or keep per group: placement is a pure
//!   function of the key and the backend names, written once and pinned by
//!   golden tests. The cost, O(N) hashes per key, is small for the groups of a
//!   few to a few dozen backends this proxy serves, and hosts can cache it per
//!   key.
//! - **Distinct replicas for free:** the top RF of N scores are RF distinct
//!   backends.
//!
//! The scores must never change between versions of the proxy: every proxy
//! with the same config must place a key the same way, and a changed score
//! would silently move data. The golden tests in this module pin them.

use xxhash_rust::xxh3::Xxh3;

/// The key a point or statement is placed by: its database, its measurement
/// and, in a group sharded by a tag, that tag's value (`Some("")` for a point
/// without the tag: it goes to the shard of the empty value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardKey<'a> {
    pub db: &'a str,
    pub measurement: &'a str,
    pub tag_value: Option<&'a str>,
}

/// The rendezvous score of `backend` (its name) for `key`; see the module doc.
pub fn score(backend: &str, key: &ShardKey<'_>) -> u64 {
    let mut hasher = Xxh3::new();
    let mut frame = |s: &str| {
        hasher.update(&(s.len() as u32).to_le_bytes());
        hasher.update(s.as_bytes());
    };
    frame(backend);
    frame(key.db);
    frame(key.measurement);
    if let Some(tag) = key.tag_value {
        frame(tag);
    }
    hasher.digest()
}

/// The indexes (into `backends`, names of a group's backends) of the
/// `replication_factor` backends that hold `key`, highest score first (ties by
/// name). Fewer when the group has fewer backends; none for an empty group or
/// a factor of 0.
pub fn place<S: AsRef<str>>(backends: &[S], replication_factor: usize, key: &ShardKey<'_>) -> Vec<usize> {
    let mut scored: Vec<(u64, &str, usize)> =
        backends.iter().enumerate().map(|(i, name)| (score(name.as_ref(), key), name.as_ref(), i)).collect();
    crate::sort::sort_unstable_by(&mut scored, |a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.into_iter().take(replication_factor).map(|(_, _, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(db: &'a str, measurement: &'a str, tag_value: Option<&'a str>) -> ShardKey<'a> {
        ShardKey { db, measurement, tag_value }
    }

    fn owners(backends: &[&str], rf: usize, k: &ShardKey<'_>) -> Vec<String> {
        place(backends, rf, k).into_iter().map(|i| backends[i].to_string()).collect()
    }

    /// Golden placements: these must never change (a change moves data on
    /// every proxy that upgrades). Regenerate only with a migration.
    #[test]
    fn placements_are_pinned() {
        let group = ["a", "b", "c"];
        let cases: &[(ShardKey<'_>, [&str; 2])] = &[
            (key("telegraf", "cpu", None), GOLDEN[0]),
            (key("telegraf", "mem", None), GOLDEN[1]),
            (key("telegraf", "disk", None), GOLDEN[2]),
            (key("app", "requests", Some("customer-17")), GOLDEN[3]),
            (key("app", "requests", Some("")), GOLDEN[4]),
        ];
        for (k, expected) in cases {
            assert_eq!(owners(&group, 2, k), expected.to_vec(), "{k:?}");
        }
        assert_eq!(score("a", &key("telegraf", "cpu", None)), GOLDEN_SCORE);
    }

    /// Computed independently of this crate, with the xxHash reference
    /// implementation (PyPI `xxhash` 3, `xxh3_64_intdigest`) over the frames of
    /// the module doc.
    const GOLDEN: [[&str; 2]; 5] = [["b", "c"], ["c", "a"], ["c", "b"], ["a", "b"], ["b", "c"]];
    const GOLDEN_SCORE: u64 = 12_668_311_550_392_151_608;

    #[test]
    fn the_config_order_of_backends_does_not_matter() {
        let k = key("db", "m", None);
        let forward = owners(&["a", "b", "c", "d"], 2, &k);
        let backward = owners(&["d", "c", "b", "a"], 2, &k);
        assert_eq!(forward, backward);
    }

    #[test]
    fn replicas_are_distinct_and_as_many_as_the_group_allows() {
        let k = key("db", "m", Some("x"));
        let o = owners(&["a", "b", "c"], 2, &k);
        assert_eq!(o.len(), 2);
        assert_ne!(o[0], o[1]);
        assert_eq!(owners(&["a", "b"], 3, &k).len(), 2);
        assert!(place::<&str>(&[], 2, &k).is_empty());
        assert!(place(&["a"], 0, &k).is_empty());
    }

    #[test]
    fn frames_keep_key_parts_apart() {
        assert_ne!(score("a", &key("ab", "c", None)), score("a", &key("a", "bc", None)));
        assert_ne!(score("a", &key("db", "m", None)), score("a", &key("db", "m", Some(""))));
    }

    /// Adding one backend to a group of N moves about RF/(N+1) of the keys
    /// and no more; each moved key swaps exactly one owner for the new one.
    #[test]
    fn adding_a_backend_moves_about_rf_over_n_plus_1_of_10000_keys() {
        let before = ["a", "b", "c"];
        let after = ["a", "b", "c", "d"];
        let rf = 2;
        let mut moved = 0;
        for i in 0..10_000 {
            let m = format!("m{i}");
            let k = key("db", &m, None);
            let mut old = owners(&before, rf, &k);
            let mut new = owners(&after, rf, &k);
            old.sort();
            new.sort();
            if old != new {
                moved += 1;
                assert!(
                    new.contains(&"d".to_string()),
                    "a key moved between old backends: {old:?} -> {new:?}"
                );
                assert_eq!(old.iter().filter(|o| new.contains(o)).count(), rf - 1, "{old:?} -> {new:?}");
            }
        }
        let fraction = moved as f64 / 10_000.0;
        let expected = rf as f64 / (before.len() + 1) as f64;
        eprintln!("adding d to a, b, c (RF {rf}) moved {moved} of 10,000 keys: {fraction} (RF/(N+1) = {expected:.3})");
        assert!(
            (fraction - expected).abs() < 0.03,
            "moved {fraction} of the keys, expected about {expected}"
        );
    }

    #[test]
    fn removing_a_backend_moves_only_the_keys_it_held() {
        let before = ["a", "b", "c", "d"];
        let after = ["a", "b", "d"];
        let mut held_by_c = 0;
        for i in 0..2_000 {
            let m = format!("m{i}");
            let k = key("db", &m, None);
            let old = owners(&before, 2, &k);
            let new = owners(&after, 2, &k);
            if !old.contains(&"c".to_string()) {
                assert_eq!(old, new, "{m}");
            } else {
                // Its other owner keeps it; only c's copy moves.
                held_by_c += 1;
                assert!(old.iter().all(|o| o == "c" || new.contains(o)), "{m}: {old:?} -> {new:?}");
            }
        }
        assert!(held_by_c > 0, "c held none of the 2,000 keys: the loop checked no move");
    }
}
