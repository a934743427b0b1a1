//! Verification: per-field counts on the copy source and a new owner.

use super::convert::series_of;
use crate::results::StatementResult;
use serde::Serialize;
use std::collections::BTreeMap;

/// One field whose count differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CountDiff {
    pub field: String,
    /// Points with this field on the old owner (the copy source).
    pub old: u64,
    /// Points with this field on the new owner.
    pub new: u64,
}

/// The outcome of comparing two owners' counts over the copied range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Equal,
    /// The fields that differ (sorted by name).
    Differs(Vec<CountDiff>),
}

/// The per-field counts of a `SELECT count(*) ...` answer (columns `time`,
/// `count_<field>`...; no series: no point, every count 0), summed over its
/// series. Error: the result's `error` or an unexpected shape.
pub fn field_counts(result: &StatementResult) -> Result<BTreeMap<String, u64>, String> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for series in series_of(result)? {
        for row in &series.values {
            for (column, cell) in series.columns.iter().zip(row) {
                let Some(field) = column.strip_prefix("count_") else { continue };
                let n = match cell.get().trim() {
                    "null" => 0,
                    text => text.parse::<u64>().map_err(|_| format!("count {text} is not a number"))?,
                };
                *counts.entry(field.to_string()).or_default() += n;
            }
        }
    }
    Ok(counts)
}

/// Equal when every field has the same count on both (a field missing on
/// one side counts 0), else the fields that differ.
pub fn compare_counts(old: &BTreeMap<String, u64>, new: &BTreeMap<String, u64>) -> Verification {
    let mut diffs = Vec::new();
    let fields: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for field in fields {
        let (o, n) = (old.get(field).copied().unwrap_or(0), new.get(field).copied().unwrap_or(0));
        if o != n {
            diffs.push(CountDiff { field: field.clone(), old: o, new: n });
        }
    }
    if diffs.is_empty() {
        Verification::Equal
    } else {
        Verification::Differs(diffs)
    }
}
