//! The plan: which keys move, from which owners to which, copied from where.

use super::convert::series_of;
use super::KeyId;
use crate::placement::{place, ShardKey};
use crate::results::StatementResult;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A group's placement: its backends' names and its replication factor.
#[derive(Debug, Clone, Copy)]
pub struct Placement<'a> {
    pub backends: &'a [&'a str],
    pub replication_factor: usize,
}

impl Placement<'_> {
    /// The names of `key`'s owners, best first ([`crate::placement::place`]).
    pub fn owners(&self, key: &KeyId) -> Vec<String> {
        place(self.backends, self.replication_factor, &key.as_shard_key())
            .into_iter()
            .map(|i| self.backends[i].to_string())
            .collect()
    }
}

/// One key to move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMove {
    pub key: KeyId,
    /// Owners before, best first. Reads go here until the key is verified.
    pub old_owners: Vec<String>,
    /// Owners after, best first. Reads go here once the key is verified.
    pub new_owners: Vec<String>,
    /// The old owner the history is read from: one that stays an owner if
    /// any (it keeps receiving every write), else the best old owner.
    /// `None` when no old owner can serve (a resync of a key whose only
    /// replica was the replaced backend): the key cannot be copied.
    pub source: Option<String>,
}

impl KeyMove {
    /// New owners that were not old owners: they receive the copy.
    pub fn added(&self) -> Vec<String> {
        self.new_owners.iter().filter(|b| !self.old_owners.contains(b)).cloned().collect()
    }

    /// Old owners that are not new owners: `cleanup` deletes the key there.
    pub fn lost(&self) -> Vec<String> {
        self.old_owners.iter().filter(|b| !self.new_owners.contains(b)).cloned().collect()
    }
}

/// The moves a placement change causes: every key whose set of owners
/// differs between `old` and `new` (adding a backend: about RF/(N+1) of the
/// keys, each losing one old owner; removing one: exactly the keys it held).
/// Keys whose owners stay the same are not listed. Sorted by key.
pub fn plan(old: Placement<'_>, new: Placement<'_>, keys: &BTreeSet<KeyId>) -> Vec<KeyMove> {
    let mut moves = Vec::new();
    for key in keys {
        let old_owners = old.owners(key);
        let new_owners = new.owners(key);
        let (mut a, mut b) = (old_owners.clone(), new_owners.clone());
        crate::sort::sort(&mut a);
        crate::sort::sort(&mut b);
        if a == b {
            continue;
        }
        let source =
            old_owners.iter().find(|o| new_owners.contains(o)).or_else(|| old_owners.first()).cloned();
        moves.push(KeyMove { key: key.clone(), old_owners, new_owners, source });
    }
    moves
}

/// The moves that refill `replaced` (a new, empty server under the same
/// name, or one that lost its data) from its replicas: every key it owns,
/// with old owners = its other owners (reads skip `replaced` until the key is
/// verified) and new owners = all its owners. `source` is `None` for a key
/// that had no other replica (RF 1): its data is gone.
pub fn plan_resync(placement: Placement<'_>, replaced: &str, keys: &BTreeSet<KeyId>) -> Vec<KeyMove> {
    let mut moves = Vec::new();
    for key in keys {
        let owners = placement.owners(key);
        if !owners.iter().any(|o| o == replaced) {
            continue;
        }
        let others: Vec<String> = owners.iter().filter(|o| *o != replaced).cloned().collect();
        let source = others.first().cloned();
        moves.push(KeyMove { key: key.clone(), old_owners: others, new_owners: owners, source });
    }
    moves
}

/// The first column of every row of a `SHOW DATABASES` or `SHOW
/// MEASUREMENTS` answer (`name`). Error: the result's `error`, or rows that
/// are not strings.
pub fn show_names(result: &StatementResult) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for series in series_of(result)? {
        for row in &series.values {
            let cell = row.first().ok_or("SHOW: empty row")?;
            names.push(serde_json::from_str(cell.get()).map_err(|e| format!("SHOW: {e}"))?);
        }
    }
    Ok(names)
}

/// `(measurement, value)` pairs of a `SHOW TAG VALUES WITH KEY = "tag"`
/// answer (one series per measurement, columns `key`, `value`).
pub fn show_tag_values(result: &StatementResult) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for series in series_of(result)? {
        let value =
            series.columns.iter().position(|c| c == "value").ok_or("SHOW TAG VALUES: no value column")?;
        for row in &series.values {
            let cell = row.get(value).ok_or("SHOW TAG VALUES: short row")?;
            let v: String = serde_json::from_str(cell.get()).map_err(|e| format!("SHOW TAG VALUES: {e}"))?;
            pairs.push((series.name.clone(), v));
        }
    }
    Ok(pairs)
}

/// The keys of database `db` for a group: `(db, m)` per measurement, or with
/// a shard tag `(db, m, v)` per tag value seen plus `(db, m, "")` (points
/// without the tag). Feed it the union of the answers of every backend of the
/// group (old and new), so no key held anywhere is missed.
pub fn keys_of_db(
    db: &str,
    measurements: &[String],
    tag_values: Option<&[(String, String)]>,
    keys: &mut BTreeSet<KeyId>,
) {
    for m in measurements {
        match tag_values {
            None => {
                keys.insert(KeyId::new(db, m, None));
            }
            Some(_) => {
                keys.insert(KeyId::new(db, m, Some("")));
            }
        }
    }
    for (m, v) in tag_values.unwrap_or(&[]) {
        keys.insert(KeyId::new(db, m, Some(v)));
    }
}

impl KeyId {
    /// The placement key.
    pub fn as_shard_key(&self) -> ShardKey<'_> {
        ShardKey { db: &self.db, measurement: &self.measurement, tag_value: self.tag_value.as_deref() }
    }
}
