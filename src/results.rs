//! InfluxDB 1.x query results (`{"results":[{"statement_id":0,"series":[...]}]}`,
//! InfluxDB 1.x HTTP API "Query data"): merging the answers of several backends
//! to one statement, and combining per-statement results into one response.

use serde_json::Value;

/// Merges the result objects (elements of `results`) that several backends gave
/// for the same statement: series with the same name, tags and columns are
/// joined, their rows united, de-duplicated and sorted (SHOW answers
/// lexicographically, SELECT rows by their first column, the time). A result
/// with `"error"` is returned as is if every input has one; otherwise errored
/// inputs are ignored. `statement_id` is not set (see [`combine`]).
pub fn merge_statement_results(results: Vec<Value>) -> Value {
    let _ = results;
    todo!()
}

/// The first result object of a backend's response body for a single
/// statement, or an error message if the body is not InfluxDB JSON (or is a
/// top-level `{"error": ...}`).
pub fn first_result(body: &[u8]) -> Result<Value, String> {
    let _ = body;
    todo!()
}

/// `{"results":[...]}` with `statement_id` set to each result's index, as JSON
/// bytes (pretty-printed with 4 spaces when `pretty`).
pub fn combine(results: Vec<Value>, pretty: bool) -> Vec<u8> {
    let _ = (results, pretty);
    todo!()
}

/// A statement result carrying only an error (`{"error":"..."}`), as InfluxDB
/// reports a failed statement inside `results`.
pub fn error_result(message: &str) -> Value {
    serde_json::json!({ "error": message })
}
