//! InfluxDB 1.x query results (`{"results":[{"statement_id":0,"series":[...]}]}`,
//! InfluxDB 1.x HTTP API "Query data"): merging the answers of several backends
//! to one statement, and combining per-statement results into one response.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

/// Merges the result objects (elements of `results`) that several backends gave
/// for the same statement: series with the same name, tags and columns are
/// joined, their rows united, de-duplicated and sorted (SHOW answers
/// lexicographically, SELECT rows by their first column, the time). A result
/// with `"error"` is returned as is if every input has one; otherwise errored
/// inputs are ignored. `statement_id` is not set (see [`combine`]).
///
/// Details: rows are compared column by column (null first, then booleans,
/// numbers by value, strings lexicographically), which orders SHOW answers
/// lexicographically and SELECT answers by time. When the first column is
/// `time` and every joined input lists its rows by descending time
/// (`ORDER BY time DESC`), the merged rows are descending too. Series are
/// in InfluxDB's order: by measurement name, then by tag values in tag key
/// order (series with equal names and tags keep the order in which they
/// first appear).
/// `messages` (InfluxDB's warnings) are united; `partial` is dropped. Inputs
/// with neither series nor error give `{}` (InfluxDB prints
/// `{"statement_id":0}` for an empty answer). A single usable input is returned
/// as it is, without `statement_id` and `partial`. No input at all gives `{}`.
pub fn merge_statement_results(results: Vec<Value>) -> Value {
    let (ok, errored): (Vec<Value>, Vec<Value>) = results.into_iter().partition(|r| r.get("error").is_none());
    if ok.is_empty() {
        return match errored.into_iter().next() {
            Some(mut first) => {
                if let Some(object) = first.as_object_mut() {
                    object.remove("statement_id");
                }
                first
            }
            None => Value::Object(Map::new()),
        };
    }
    if ok.len() == 1 {
        let mut only = ok.into_iter().next().unwrap_or_default();
        if let Some(object) = only.as_object_mut() {
            object.remove("statement_id");
            object.remove("partial");
        }
        return only;
    }

    let mut merged: Vec<MergedSeries> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut messages: Vec<Value> = Vec::new();
    for result in ok {
        if let Some(result_messages) = result.get("messages") {
            unite_messages(&mut messages, result_messages);
        }
        let Some(series) = result.get("series").and_then(Value::as_array) else {
            continue;
        };
        for one in series {
            let Some(one) = one.as_object() else { continue };
            let key = series_key(one);
            let slot = *index.entry(key).or_insert_with(|| {
                merged.push(MergedSeries::new(one));
                merged.len() - 1
            });
            merged[slot].add_rows(one.get("values"));
        }
    }

    let mut out = Map::new();
    if !merged.is_empty() {
        crate::sort::sort_by_cached_key(&mut merged, |m| series_sort_key(m.name.as_ref(), m.tags.as_ref()));
        let series = merged.into_iter().map(MergedSeries::into_value).collect();
        out.insert("series".to_string(), Value::Array(series));
    }
    if !messages.is_empty() {
        out.insert("messages".to_string(), Value::Array(messages));
    }
    Value::Object(out)
}

/// Applies a `SHOW` statement's `OFFSET m` then `LIMIT n` to the rows of each
/// series of a merged result (from [`merge_statement_results`]), as InfluxDB
/// 1.x applies them to one server's answer: per series, after sorting. A
/// series left without rows is dropped, and `series` is removed when none is
/// left (InfluxDB then answers `{"statement_id":0}`). `None`, `LIMIT 0` and
/// `OFFSET 0` mean no limit / no offset, so with neither the result is
/// returned unchanged; a result with an `error` has no series and is
/// returned unchanged too.
///
/// Why per series, from InfluxDB 1.x (`coordinator/statement_executor.go` and
/// `query/statement_rewriter.go`): SHOW MEASUREMENTS answers one series
/// (`measurements`) and windows its names; SHOW TAG VALUES windows each
/// measurement's series of key/value pairs; SHOW TAG KEYS and SHOW FIELD
/// KEYS are rewritten to SELECTs over system iterators that yield one series
/// per measurement, and SELECT's LIMIT/OFFSET count rows per series; SHOW
/// SERIES becomes a SELECT whose one series holds every series key. So each
/// merged series gets the window, which is the global window where there is
/// one series. Used with [`crate::statement::show_statement_for_backends`],
/// which asks each backend for its first n+m rows per series: the first n+m
/// rows of the merged sorted union are among them.
pub fn window_show_rows(mut result: Value, limit: Option<u64>, offset: Option<u64>) -> Value {
    let limit = limit.filter(|&n| n > 0);
    let offset = offset.unwrap_or(0);
    if limit.is_none() && offset == 0 {
        return result;
    }
    let Some(object) = result.as_object_mut() else {
        return result;
    };
    let Some(Value::Array(series)) = object.get_mut("series") else {
        return result;
    };
    let skip = usize::try_from(offset).unwrap_or(usize::MAX);
    let take = limit.map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
    series.retain_mut(|one| {
        let Some(one) = one.as_object_mut() else {
            return true;
        };
        let rows = match one.remove("values") {
            Some(Value::Array(rows)) => rows,
            _ => Vec::new(),
        };
        let kept: Vec<Value> = rows.into_iter().skip(skip).take(take).collect();
        if kept.is_empty() {
            return false;
        }
        one.insert("values".to_string(), Value::Array(kept));
        true
    });
    if series.is_empty() {
        object.remove("series");
    }
    result
}

/// Merges the result objects that backends holding *different* measurements
/// gave for one `SELECT` (a regex or several measurements spanning replica
/// sets): each series (same name, tags and columns) is taken whole from the
/// first backend that returned it, rows untouched, so two equal rows of one
/// series stay two rows (unlike [`merge_statement_results`], which unites rows
/// and suits `SHOW`). Series taken from several backends are put in
/// InfluxDB's order: by measurement name, then by tag values in tag key order
/// (InfluxDB 1.x sorts a query's series by name and tag set). Errors as in
/// [`merge_statement_results`]. `statement_id` is not set.
///
/// Works on the backends' JSON text ([`StatementResult`]): only each
/// series' `name`, `tags` and `columns` are parsed, its rows are copied as
/// text, so memory stays proportional to the answers' size.
pub fn merge_select_results<R: Into<StatementResult>>(results: Vec<R>) -> StatementResult {
    let (mut ok, errored): (Vec<StatementResult>, Vec<StatementResult>) =
        results.into_iter().map(Into::into).partition(|r| !r.has_error());
    if ok.len() <= 1 {
        let Some(mut only) = ok.into_iter().chain(errored).next() else {
            return StatementResult::default();
        };
        only.members.remove("statement_id");
        if !only.has_error() {
            only.members.remove("partial");
        }
        return only;
    }
    let mut seen: HashMap<String, ()> = HashMap::new();
    let mut messages: Vec<Value> = Vec::new();
    // Per result, the indexes of the series taken from it (first seen).
    let mut taken: Vec<Vec<usize>> = Vec::with_capacity(ok.len());
    // Every series taken: (InfluxDB's sort key, result, index).
    let mut order: Vec<(SeriesSortKey, usize, usize)> = Vec::new();
    // Each result's series, borrowed: its `series` text is scanned once.
    let all_series: Vec<Vec<&RawValue>> = ok.iter().map(result_series).collect();
    for (result, series) in ok.iter().zip(&all_series) {
        if let Some(raw) = result.members.get("messages") {
            unite_messages(&mut messages, &json_value(raw));
        }
        let mut from_this = Vec::new();
        for (i, one) in series.iter().enumerate() {
            // Series that are not objects are left out, as by merge_statement_results.
            if !one.get().starts_with('{') {
                continue;
            }
            let Ok(head) = serde_json::from_str::<SeriesHead>(one.get()) else { continue };
            let sort_key = head.sort_key();
            if seen.insert(head.key(), ()).is_none() {
                from_this.push(i);
                order.push((sort_key, taken.len(), i));
            }
        }
        taken.push(from_this);
    }
    let contributors: Vec<usize> = (0..ok.len()).filter(|&r| !taken[r].is_empty()).collect();
    // Every series of one result (the usual regex FROM: the measurement
    // lives in one replica set): moved, not copied.
    let whole = match contributors.as_slice() {
        [only] if taken[*only].len() == all_series[*only].len() => Some(*only),
        _ => None,
    };
    let mut series_text = None;
    if !contributors.is_empty() && whole.is_none() {
        // Stable: series with equal keys keep the backends' order.
        crate::sort::sort_by(&mut order, |x, y| x.0.cmp(&y.0));
        let mut series_out = String::from("[");
        for (_, r, i) in &order {
            if series_out.len() > 1 {
                series_out.push(',');
            }
            series_out.push_str(all_series[*r][*i].get());
        }
        series_out.push(']');
        series_text = Some(series_out);
    }
    drop(all_series);
    let mut out = StatementResult::default();
    if let Some(series) = whole.and_then(|only| ok[only].members.remove("series")) {
        out.members.insert("series".into(), series);
    }
    if let Some(series) = series_text.and_then(|text| RawValue::from_string(text).ok()) {
        out.members.insert("series".into(), series);
    }
    if !messages.is_empty() {
        out.insert_value("messages", &Value::Array(messages));
    }
    out
}

/// The elements of `result`'s `series`, borrowed (none if it is not an array).
fn result_series(result: &StatementResult) -> Vec<&RawValue> {
    result
        .members
        .get("series")
        .and_then(|raw| serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok())
        .unwrap_or_default()
}

/// The identifying members of a series, its rows skipped unparsed.
#[derive(Deserialize)]
struct SeriesHead {
    #[serde(default)]
    name: Option<Value>,
    #[serde(default)]
    tags: Option<Value>,
    #[serde(default)]
    columns: Option<Value>,
}

/// A series' name and its tags sorted by key (see [`series_sort_key`]).
type SeriesSortKey = (String, Vec<(String, String)>);

/// A series' place in InfluxDB's order (InfluxDB 1.x sorts a query's series
/// by measurement name, then tag set): its name, then its tags sorted by key,
/// as text.
fn series_sort_key(name: Option<&Value>, tags: Option<&Value>) -> SeriesSortKey {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let name = name.map(text).unwrap_or_default();
    let mut tags: Vec<(String, String)> = match tags {
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
        _ => Vec::new(),
    };
    crate::sort::sort(&mut tags);
    (name, tags)
}

impl SeriesHead {
    /// See [`series_sort_key`].
    fn sort_key(&self) -> SeriesSortKey {
        series_sort_key(self.name.as_ref(), self.tags.as_ref())
    }

    /// As [`series_key`].
    fn key(self) -> String {
        let mut map = Map::new();
        for (key, value) in [("name", self.name), ("tags", self.tags), ("columns", self.columns)] {
            if let Some(value) = value {
                map.insert(key.to_string(), value);
            }
        }
        series_key(&map)
    }
}

/// Adds the `messages` array `result_messages` (InfluxDB's warnings) not yet in `messages`.
fn unite_messages(messages: &mut Vec<Value>, result_messages: &Value) {
    for message in result_messages.as_array().into_iter().flatten() {
        if !messages.contains(message) {
            messages.push(message.clone());
        }
    }
}

/// One series being joined from several inputs.
struct MergedSeries {
    name: Option<Value>,
    tags: Option<Value>,
    columns: Option<Value>,
    rows: Vec<Value>,
    /// Some input listed its rows by ascending / descending `time` column.
    seen_ascending: bool,
    seen_descending: bool,
}

impl MergedSeries {
    fn new(series: &Map<String, Value>) -> MergedSeries {
        MergedSeries {
            name: series.get("name").cloned(),
            tags: series.get("tags").cloned(),
            columns: series.get("columns").cloned(),
            rows: Vec::new(),
            seen_ascending: false,
            seen_descending: false,
        }
    }

    fn add_rows(&mut self, values: Option<&Value>) {
        let Some(rows) = values.and_then(Value::as_array) else {
            return;
        };
        let by_time = self.columns.as_ref().and_then(|c| c.get(0)).is_some_and(|first| first == "time");
        for pair in rows.windows(2).filter(|_| by_time) {
            match compare_first_column(&pair[0], &pair[1]) {
                Ordering::Less => self.seen_ascending = true,
                Ordering::Greater => self.seen_descending = true,
                Ordering::Equal => {}
            }
        }
        self.rows.extend(rows.iter().cloned());
    }

    fn into_value(mut self) -> Value {
        crate::sort::sort_by(&mut self.rows, compare_values);
        self.rows.dedup_by(|a, b| compare_values(a, b) == Ordering::Equal);
        if self.seen_descending && !self.seen_ascending {
            self.rows.reverse();
        }
        let mut out = Map::new();
        for (key, value) in [("name", self.name), ("tags", self.tags), ("columns", self.columns)] {
            if let Some(value) = value {
                out.insert(key.to_string(), value);
            }
        }
        if !self.rows.is_empty() {
            out.insert("values".to_string(), Value::Array(self.rows));
        }
        Value::Object(out)
    }
}

/// The identity of a series: name, tag set (in key order) and columns.
fn series_key(series: &Map<String, Value>) -> String {
    let tags: Vec<(&String, &Value)> = match series.get("tags").and_then(Value::as_object) {
        Some(tags) => {
            let mut pairs: Vec<_> = tags.iter().collect();
            crate::sort::sort_by(&mut pairs, |a, b| a.0.cmp(b.0));
            pairs
        }
        None => Vec::new(),
    };
    let key = (series.get("name"), tags, series.get("columns"));
    serde_json::to_string(&key).unwrap_or_default()
}

fn compare_first_column(a: &Value, b: &Value) -> Ordering {
    match (a.as_array().and_then(|r| r.first()), b.as_array().and_then(|r| r.first())) {
        (Some(a), Some(b)) => compare_values(a, b),
        _ => Ordering::Equal,
    }
}

/// A total order on JSON values: null < booleans < numbers (by value, ties
/// broken by their text) < strings < arrays (element by element) < objects
/// (by their text). Equal only for values that print the same.
fn compare_values(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => {
            let by_value = match (x.as_i64(), y.as_i64()) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(Ordering::Equal),
            };
            by_value.then_with(|| x.to_string().cmp(&y.to_string()))
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (x, y) in x.iter().zip(y) {
                let order = compare_values(x, y);
                if order != Ordering::Equal {
                    return order;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(_), Value::Object(_)) => a.to_string().cmp(&b.to_string()),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// One statement's result object (an element of an answer's `results`),
/// each member kept as the JSON text the backend sent (`series` with all its
/// rows is one piece of text), so a parsed answer costs about its size in
/// memory, not the 10-20 times a [`Value`] tree of its numbers and strings
/// costs. Members are unique and in key order (a repeated key keeps its last
/// value, as [`Value`] does).
///
/// Built from a backend's answer ([`first_result`], [`answer_results`]) or
/// from a [`Value`] (`From`); compared by value with [`Value`]s.
#[derive(Debug, Clone, Default)]
pub struct StatementResult {
    members: BTreeMap<String, Box<RawValue>>,
}

impl StatementResult {
    /// The result object in `json` (one element of `results`). Error: `json`
    /// is not a JSON object.
    pub fn from_json(json: &str) -> Result<StatementResult, String> {
        if !json.trim_start().starts_with('{') {
            return Err("a result is not an object".to_string());
        }
        serde_json::from_str(json)
            .map(|members| StatementResult { members })
            .map_err(|e| format!("a result is not a JSON object ({e})"))
    }

    /// Whether the result has an `error` member (InfluxDB's failed statement).
    pub fn has_error(&self) -> bool {
        self.members.contains_key("error")
    }

    /// The `statement_id` member when it is a non-negative integer.
    pub fn statement_id(&self) -> Option<u64> {
        self.members.get("statement_id").and_then(|raw| serde_json::from_str::<u64>(raw.get()).ok())
    }

    /// The JSON text of member `name` exactly as the backend sent it (e.g.
    /// `series` with all its rows), without parsing its numbers: the copy of
    /// history (`crate::rebalance`) reads floats from this text so they keep
    /// every bit.
    pub fn raw_member(&self, name: &str) -> Option<&str> {
        self.members.get(name).map(|raw| raw.get())
    }

    /// The `error` member when it is a string.
    pub fn error_message(&self) -> Option<String> {
        self.members.get("error").and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
    }

    /// The result as a [`Value`] (the whole tree: for small answers, such
    /// as `SHOW`'s, and tests). A member that does not parse (a number out
    /// of `f64`'s range) is `null`.
    pub fn to_value(&self) -> Value {
        Value::Object(self.members.iter().map(|(k, raw)| (k.clone(), json_value(raw))).collect())
    }

    /// Sets member `key` to `value`.
    fn insert_value(&mut self, key: &str, value: &Value) {
        if let Ok(raw) = serde_json::value::to_raw_value(value) {
            self.members.insert(key.to_string(), raw);
        }
    }
}

/// `null` prints as `{}`; a value that is not an object becomes an `error`
/// (`unexpected result: ...`).
impl From<Value> for StatementResult {
    fn from(value: Value) -> StatementResult {
        let mut result = StatementResult::default();
        match value {
            Value::Object(object) => {
                for (key, value) in object {
                    result.insert_value(&key, &value);
                }
            }
            Value::Null => {}
            other => result.insert_value("error", &Value::String(format!("unexpected result: {other}"))),
        }
        result
    }
}

impl PartialEq for StatementResult {
    fn eq(&self, other: &StatementResult) -> bool {
        self.to_value() == other.to_value()
    }
}

impl PartialEq<Value> for StatementResult {
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

/// The parsed value of a piece of valid JSON text (`null` if out of range).
fn json_value(raw: &RawValue) -> Value {
    serde_json::from_str(raw.get()).unwrap_or(Value::Null)
}

/// The members of an InfluxDB answer the proxy reads; `results` stays text.
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow, default)]
    results: Option<&'a RawValue>,
    /// Present, even as `null`, means the request failed (as a `Value`'s `get`).
    #[serde(default, deserialize_with = "present")]
    error: Option<Box<RawValue>>,
}

/// A member that is present, whatever its value (`null` included).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// The elements of a backend's answer `{"results":[...]}`, as text borrowed
/// from `body` (nothing is copied). Error: `body` is not InfluxDB JSON (not
/// JSON, not UTF-8, not an object), is a top-level `{"error": ...}` (its
/// message), or has no `results` array.
pub fn answer_results(body: &[u8]) -> Result<Vec<&RawValue>, String> {
    let not_json = |e: &dyn std::fmt::Display| {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
        format!("backend answer is not InfluxDB JSON ({e}): {}", text.trim())
    };
    let whole: &RawValue = serde_json::from_slice(body).map_err(|e| not_json(&e))?;
    if !whole.get().starts_with('{') {
        return Err(not_json(&"not an object"));
    }
    let answer: Answer = serde_json::from_str(whole.get()).map_err(|e| not_json(&e))?;
    if let Some(error) = answer.error {
        return Err(match json_value(&error) {
            Value::String(message) => message,
            other => other.to_string(),
        });
    }
    answer
        .results
        .and_then(|results| serde_json::from_str::<Vec<&RawValue>>(results.get()).ok())
        .ok_or_else(|| "backend answer has no results".to_string())
}

/// The first result object of a backend's response body for a single
/// statement, or an error message if the body is not InfluxDB JSON (or is a
/// top-level `{"error": ...}`); see [`answer_results`].
pub fn first_result(body: &[u8]) -> Result<StatementResult, String> {
    match answer_results(body)?.first() {
        Some(first) => StatementResult::from_json(first.get())
            .map_err(|e| format!("backend answer is not InfluxDB JSON: {e}")),
        None => Err("backend answer has no results".to_string()),
    }
}

/// `{"results":[...]}` with `statement_id` set to each result's index, as JSON
/// bytes (pretty-printed with 4 spaces when `pretty`); see [`ResultsWriter`].
pub fn combine<R: Into<StatementResult>>(results: Vec<R>, pretty: bool) -> Vec<u8> {
    let mut writer = ResultsWriter::new(pretty);
    for result in results {
        writer.push(result.into());
    }
    writer.finish()
}

/// Writes a `{"results":[...]}` body one statement result at a time, so a
/// query of many statements holds the bytes written so far and one result,
/// never every result parsed (time and memory linear in the answer).
///
/// `statement_id` is set to each result's index (0, 1, ...). Keys are printed
/// in InfluxDB's order (its `Result` and `Row` types): `statement_id`,
/// `series` (each `name`, `tags`, `columns`, `values`, `partial`),
/// `messages`, `partial`, `error`, then any other key. Members are copied as
/// the backend wrote them. Compact, or pretty-printed with 4 spaces as
/// InfluxDB's `pretty=true`. The body ends with a newline, as InfluxDB's does.
pub struct ResultsWriter {
    body: Vec<u8>,
    pretty: bool,
    count: usize,
}

/// Indentation of a result inside a pretty body (`results` is at depth 1).
const PRETTY_RESULT_INDENT: usize = 2;

impl ResultsWriter {
    /// An empty body.
    pub fn new(pretty: bool) -> ResultsWriter {
        ResultsWriter { body: Vec::new(), pretty, count: 0 }
    }

    /// Appends the next statement's result object.
    pub fn push(&mut self, result: StatementResult) {
        if self.pretty {
            self.body.extend_from_slice(if self.count == 0 { b"{\n    \"results\": [\n" } else { b",\n" });
            let mut one = Vec::new();
            write_result(&mut one, self.count, &result);
            drop(result);
            self.body.extend_from_slice(&b" ".repeat(4 * PRETTY_RESULT_INDENT));
            write_pretty(&mut self.body, &one, PRETTY_RESULT_INDENT);
        } else {
            self.body.extend_from_slice(if self.count == 0 { b"{\"results\":[" } else { b"," });
            write_result(&mut self.body, self.count, &result);
        }
        self.count += 1;
    }

    /// Bytes of the body written so far.
    pub fn bytes(&self) -> usize {
        self.body.len()
    }

    /// Takes back the last result pushed, given [`ResultsWriter::bytes`]
    /// from just before it was pushed.
    pub fn pop(&mut self, bytes_before: usize) {
        if self.count > 0 {
            self.body.truncate(bytes_before);
            self.count -= 1;
        }
    }

    /// How many results were written.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no result was written.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The whole body.
    pub fn finish(mut self) -> Vec<u8> {
        match (self.pretty, self.count) {
            (false, 0) => self.body.extend_from_slice(b"{\"results\":[]}"),
            (false, _) => self.body.extend_from_slice(b"]}"),
            (true, 0) => self.body.extend_from_slice(b"{\n    \"results\": []\n}"),
            (true, _) => self.body.extend_from_slice(b"\n    ]\n}"),
        }
        self.body.push(b'\n');
        self.body
    }
}

/// Result members printed first, in this order (InfluxDB's `Result`).
const RESULT_ORDER: [&str; 4] = ["series", "messages", "partial", "error"];
/// Series members printed first, in this order (InfluxDB's `Row`).
const SERIES_ORDER: [&str; 5] = ["name", "tags", "columns", "values", "partial"];

/// Writes `result` compact, with `statement_id`, in InfluxDB's key order.
/// A `series` that is not an array is printed among the other keys.
fn write_result(out: &mut Vec<u8>, statement_id: usize, result: &StatementResult) {
    out.extend_from_slice(format!("{{\"statement_id\":{statement_id}").as_bytes());
    let series_list =
        result.members.get("series").and_then(|raw| serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok());
    for key in RESULT_ORDER {
        let Some(raw) = result.members.get(key) else { continue };
        match (key, &series_list) {
            ("series", None) => continue,
            ("series", Some(list)) => {
                write_key(out, key);
                out.push(b'[');
                for (i, one) in list.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_series(out, one);
                }
                out.push(b']');
            }
            _ => write_member(out, key, raw),
        }
    }
    for (key, raw) in &result.members {
        let placed = RESULT_ORDER.contains(&key.as_str()) && (key != "series" || series_list.is_some());
        if !placed && key != "statement_id" {
            write_member(out, key, raw);
        }
    }
    out.push(b'}');
}

/// Writes a series in InfluxDB's key order (anything but an object as is).
fn write_series(out: &mut Vec<u8>, series: &RawValue) {
    let members = match series.get().starts_with('{') {
        true => serde_json::from_str::<BTreeMap<String, &RawValue>>(series.get()).ok(),
        false => None,
    };
    let Some(members) = members else {
        out.extend_from_slice(series.get().as_bytes());
        return;
    };
    out.push(b'{');
    let mark = out.len();
    let ordered = SERIES_ORDER.iter().filter_map(|&k| members.get_key_value(k));
    let others = members.iter().filter(|(k, _)| !SERIES_ORDER.contains(&k.as_str()));
    for (key, raw) in ordered.chain(others) {
        if out.len() > mark {
            out.push(b',');
        }
        write_key_value(out, key, raw);
    }
    out.push(b'}');
}

/// `,"key":raw`, after the `statement_id` that always comes first.
fn write_member(out: &mut Vec<u8>, key: &str, raw: &RawValue) {
    out.push(b',');
    write_key_value(out, key, raw);
}

/// `,"key":` (the key JSON-escaped).
fn write_key(out: &mut Vec<u8>, key: &str) {
    out.push(b',');
    write_string(out, key);
    out.push(b':');
}

fn write_key_value(out: &mut Vec<u8>, key: &str, raw: &RawValue) {
    write_string(out, key);
    out.push(b':');
    out.extend_from_slice(raw.get().as_bytes());
}

fn write_string(out: &mut Vec<u8>, text: &str) {
    // Writing a string to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// Appends the JSON text `json` re-indented as serde_json's
/// `PrettyFormatter` with 4 spaces prints it (InfluxDB's `pretty=true`):
/// each array element and object member on its own line, `"key": value`,
/// empty arrays and objects as `[]` and `{}`. `depth` is the indentation of
/// `json` itself (its first line is not indented, its later lines are).
/// Whitespace between tokens is dropped; strings are copied unchanged.
fn write_pretty(out: &mut Vec<u8>, json: &[u8], depth: usize) {
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        out.extend(std::iter::repeat_n(b' ', 4 * depth));
    };
    let mut depth = depth;
    let mut i = 0;
    while i < json.len() {
        let b = json[i];
        match b {
            b'"' => {
                let start = i;
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(json.len());
                out.extend_from_slice(&json[start..i]);
                continue;
            }
            b'{' | b'[' => {
                let close = if b == b'{' { b'}' } else { b']' };
                let next = json[i + 1..].iter().position(|c| !c.is_ascii_whitespace()).map(|p| i + 1 + p);
                out.push(b);
                if let Some(next) = next.filter(|&n| json[n] == close) {
                    out.push(close);
                    i = next;
                } else {
                    depth += 1;
                    newline(out, depth);
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(out, depth);
                out.push(b);
            }
            b',' => {
                out.push(b',');
                newline(out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            b' ' | b'\t' | b'\n' | b'\r' => {}
            _ => out.push(b),
        }
        i += 1;
    }
}

/// A statement result carrying only an error (`{"error":"..."}`), as InfluxDB
/// reports a failed statement inside `results`.
pub fn error_result(message: &str) -> Value {
    serde_json::json!({ "error": message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;
    use serde_json::json;

    #[test]
    fn show_databases_from_two_backends_is_their_sorted_union() {
        let a = json!({"statement_id":0,"series":[{"name":"databases","columns":["name"],
            "values":[["_internal"],["telegraf"],["app"]]}]});
        let b = json!({"statement_id":0,"series":[{"name":"databases","columns":["name"],
            "values":[["_internal"],["metrics"],["telegraf"]]}]});
        assert_eq!(
            merge_statement_results(vec![a, b]),
            json!({"series":[{"name":"databases","columns":["name"],
                "values":[["_internal"],["app"],["metrics"],["telegraf"]]}]})
        );
    }

    #[test]
    fn window_applies_offset_then_limit_to_each_series() {
        let names = |v: &[&str]| Value::Array(v.iter().map(|n| json!([n])).collect());
        let merged = json!({"series":[{"name":"measurements","columns":["name"],
            "values":names(&["a", "b", "c", "d", "e"])}]});
        let window =
            |limit, offset| window_show_rows(merged.clone(), limit, offset)["series"][0]["values"].clone();
        assert_eq!(window(Some(2), Some(1)), names(&["b", "c"]));
        assert_eq!(window(Some(2), None), names(&["a", "b"]));
        assert_eq!(window(None, Some(3)), names(&["d", "e"]));
        assert_eq!(window(Some(10), Some(4)), names(&["e"]));
        // LIMIT 0 is no limit, as in InfluxDB.
        assert_eq!(window(Some(0), Some(1)), names(&["b", "c", "d", "e"]));
        assert_eq!(window_show_rows(merged.clone(), None, None), merged);
        assert_eq!(window_show_rows(merged.clone(), Some(0), Some(0)), merged);
        // An offset past the end leaves no series: InfluxDB's empty answer.
        assert_eq!(window_show_rows(merged.clone(), Some(2), Some(5)), json!({}));

        // SHOW TAG KEYS: one series per measurement, each windowed; one left empty is dropped.
        let tag_keys = json!({"series":[
            {"name":"cpu","columns":["tagKey"],"values":[["cpu"],["host"],["region"]]},
            {"name":"mem","columns":["tagKey"],"values":[["host"]]},
            {"name":"disk","columns":["tagKey"],"values":[["device"],["host"]]}],
            "messages":[{"level":"warning","text":"x"}]});
        assert_eq!(
            window_show_rows(tag_keys, Some(1), Some(1)),
            json!({"series":[
                {"name":"cpu","columns":["tagKey"],"values":[["host"]]},
                {"name":"disk","columns":["tagKey"],"values":[["host"]]}],
                "messages":[{"level":"warning","text":"x"}]})
        );
        let error = json!({"error":"database not found: x"});
        assert_eq!(window_show_rows(error.clone(), Some(1), Some(1)), error);
    }

    #[test]
    fn backends_asked_for_limit_plus_offset_give_the_global_window() {
        // SHOW MEASUREMENTS LIMIT 2 OFFSET 2 over two backends: each was asked
        // for LIMIT 4 and answered its first 4 names.
        let a = json!({"series":[{"name":"measurements","columns":["name"],
            "values":[["a"],["c"],["e"],["g"]]}]});
        let b = json!({"series":[{"name":"measurements","columns":["name"],
            "values":[["b"],["c"],["d"],["f"]]}]});
        let merged = merge_statement_results(vec![a, b]);
        assert_eq!(
            window_show_rows(merged, Some(2), Some(2)),
            json!({"series":[{"name":"measurements","columns":["name"],"values":[["c"],["d"]]}]})
        );
    }

    #[test]
    fn show_measurements_where_one_backend_has_none() {
        let empty = json!({"statement_id":0});
        let some = json!({"statement_id":0,"series":[{"name":"measurements","columns":["name"],
            "values":[["mem"],["cpu"]]}]});
        let merged = merge_statement_results(vec![empty.clone(), some.clone(), empty.clone()]);
        assert_eq!(
            merged,
            json!({"series":[{"name":"measurements","columns":["name"],"values":[["cpu"],["mem"]]}]})
        );
        // Nobody has any: an empty result, which combine prints as InfluxDB does.
        let merged = merge_statement_results(vec![empty.clone(), empty]);
        assert_eq!(merged, json!({}));
        assert_eq!(combine(vec![merged], false), b"{\"results\":[{\"statement_id\":0}]}\n");
    }

    #[test]
    fn errored_backends_are_ignored_unless_all_errored() {
        let ok =
            json!({"statement_id":0,"series":[{"name":"databases","columns":["name"],"values":[["b"]]}]});
        let ok2 =
            json!({"statement_id":0,"series":[{"name":"databases","columns":["name"],"values":[["a"]]}]});
        let err = error_result("backend down");
        assert_eq!(
            merge_statement_results(vec![err.clone(), ok, ok2]),
            json!({"series":[{"name":"databases","columns":["name"],"values":[["a"],["b"]]}]})
        );
        let err2 = json!({"statement_id":0,"error":"database not found: x"});
        assert_eq!(merge_statement_results(vec![err2, err]), json!({"error":"database not found: x"}));
        assert_eq!(merge_statement_results(vec![]), json!({}));
    }

    #[test]
    fn select_series_from_two_backends_are_joined_by_name_tags_and_columns() {
        let a = json!({"statement_id":0,"series":[
            {"name":"cpu","tags":{"host":"a"},"columns":["time","v"],"values":[[3,1.5],[1,0.5]]},
            {"name":"cpu","tags":{"host":"b"},"columns":["time","v"],"values":[[1,7]]}]});
        let b = json!({"statement_id":0,"series":[
            {"name":"cpu","tags":{"host":"a"},"columns":["time","v"],"values":[[2,1],[1,0.5],[10,null]]},
            {"name":"cpu","tags":{"host":"c"},"columns":["time","v"],"values":[[4,2]]}]});
        assert_eq!(
            merge_statement_results(vec![a, b]),
            json!({"series":[
                {"name":"cpu","tags":{"host":"a"},"columns":["time","v"],"values":[[1,0.5],[2,1],[3,1.5],[10,null]]},
                {"name":"cpu","tags":{"host":"b"},"columns":["time","v"],"values":[[1,7]]},
                {"name":"cpu","tags":{"host":"c"},"columns":["time","v"],"values":[[4,2]]}]})
        );
    }

    #[test]
    fn descending_time_stays_descending() {
        let a = json!({"series":[{"name":"cpu","columns":["time","v"],"values":[[30,1],[10,1]]}]});
        let b = json!({"series":[{"name":"cpu","columns":["time","v"],"values":[[20,2]]}]});
        assert_eq!(
            merge_statement_results(vec![a, b]),
            json!({"series":[{"name":"cpu","columns":["time","v"],"values":[[30,1],[20,2],[10,1]]}]})
        );
    }

    #[test]
    fn rows_sort_column_by_column_with_nulls_first_and_numbers_by_value() {
        let a = json!({"series":[{"name":"t","columns":["key","value"],
            "values":[["host","b"],["host",null],["dc",10]]}]});
        let b = json!({"series":[{"name":"t","columns":["key","value"],
            "values":[["host","a"],["dc",9],["dc",10],["host","b"]]}]});
        assert_eq!(
            merge_statement_results(vec![a, b]),
            json!({"series":[{"name":"t","columns":["key","value"],
                "values":[["dc",9],["dc",10],["host",null],["host","a"],["host","b"]]}]})
        );
    }

    #[test]
    fn messages_are_kept_and_partial_dropped() {
        let warning = json!({"level":"warning","text":"deprecated"});
        let a = json!({"series":[{"name":"m","columns":["name"],"values":[["x"]]}],
            "messages":[warning.clone()],"partial":true});
        let b = json!({"messages":[warning.clone()]});
        assert_eq!(
            merge_statement_results(vec![a.clone(), b]),
            json!({"series":[{"name":"m","columns":["name"],"values":[["x"]]}],"messages":[warning.clone()]})
        );
        // A single usable answer is passed on as is, minus partial.
        let single = merge_statement_results(vec![a, error_result("down")]);
        assert_eq!(
            single,
            json!({"series":[{"name":"m","columns":["name"],"values":[["x"]]}],"messages":[warning]})
        );
    }

    #[test]
    fn first_result_reads_influxdb_bodies() {
        let body = br#"{"results":[{"statement_id":0,"series":[{"name":"databases","columns":["name"],"values":[["a"]]}]}]}"#;
        assert_eq!(
            first_result(body).map(|r| r.to_value()),
            Ok(json!({"statement_id":0,"series":[{"name":"databases","columns":["name"],"values":[["a"]]}]}))
        );
        assert_eq!(
            first_result(br#"{"results":[{"statement_id":0,"error":"database not found: x"}]}"#)
                .map(|r| r.to_value()),
            Ok(json!({"statement_id":0,"error":"database not found: x"}))
        );
        assert_eq!(
            first_result(br#"{"error":"error parsing query: found EOF"}"#).unwrap_err(),
            "error parsing query: found EOF"
        );
        let err = first_result(b"<html>502 Bad Gateway</html>").unwrap_err();
        assert!(err.starts_with("backend answer is not InfluxDB JSON"), "{err}");
        assert!(err.contains("502 Bad Gateway"), "{err}");
        assert_eq!(first_result(br#"{"results":[]}"#).unwrap_err(), "backend answer has no results");
        assert!(first_result(br#"{"results":[1]}"#).is_err());
        assert!(first_result(b"").is_err());
    }

    #[test]
    fn combine_numbers_statements_with_influxdb_key_order() {
        let results = vec![
            json!({"series":[{"values":[["a"]],"columns":["name"],"name":"databases"}],"statement_id":7}),
            error_result("database not found: x"),
            json!({"messages":[{"level":"warning","text":"w"}],"series":[{"tags":{"h":"a"},"name":"cpu","columns":["time"]}]}),
        ];
        let body = combine(results, false);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            concat!(
                r#"{"results":[{"statement_id":0,"series":[{"name":"databases","columns":["name"],"values":[["a"]]}]},"#,
                r#"{"statement_id":1,"error":"database not found: x"},"#,
                r#"{"statement_id":2,"series":[{"name":"cpu","tags":{"h":"a"},"columns":["time"]}],"messages":[{"level":"warning","text":"w"}]}]}"#,
                "\n"
            )
        );
    }

    #[test]
    fn combine_pretty_indents_with_four_spaces() {
        let body =
            combine(vec![json!({"series":[{"name":"databases","columns":["name"],"values":[["a"]]}]})], true);
        let expected = r#"{
    "results": [
        {
            "statement_id": 0,
            "series": [
                {
                    "name": "databases",
                    "columns": [
                        "name"
                    ],
                    "values": [
                        [
                            "a"
                        ]
                    ]
                }
            ]
        }
    ]
}
"#;
        assert_eq!(String::from_utf8(body).unwrap(), expected);
    }

    #[test]
    fn results_written_one_at_a_time_are_one_body_compact_or_pretty() {
        let results = vec![
            json!({"series":[{"name":"databases","columns":["name"],"values":[["a"],["b"]]}]}),
            error_result("database not found: x"),
            json!({}),
        ];
        let compact = combine(results.clone(), false);
        let pretty = combine(results, true);
        let parsed = |body: &[u8]| serde_json::from_slice::<Value>(body).unwrap();
        assert_eq!(parsed(&compact), parsed(&pretty));
        assert_eq!(parsed(&compact)["results"][2], json!({"statement_id": 2}));
        let text = String::from_utf8(pretty).unwrap();
        assert!(
            text.starts_with("{\n    \"results\": [\n        {\n            \"statement_id\": 0,\n"),
            "{text}"
        );
        assert!(text.contains("\n        },\n        {\n            \"statement_id\": 1,\n"), "{text}");
        assert!(text.ends_with("\n        }\n    ]\n}\n"), "{text}");
        assert_eq!(ResultsWriter::new(false).finish(), b"{\"results\":[]}\n");
    }

    #[test]
    fn combine_keeps_unknown_keys_and_odd_shapes() {
        let body = combine(vec![json!({"zeta":1,"series":"odd"}), json!(null)], false);
        let value: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value, json!({"results":[{"statement_id":0,"series":"odd","zeta":1},{"statement_id":1}]}));
    }

    #[test]
    fn select_merge_keeps_equal_rows_of_one_series_and_takes_each_series_once() {
        let a =
            json!({"statement_id":0,"series":[{"name":"cpu","columns":["time","v"],"values":[[5,1],[5,1]]}]});
        let b = json!({"statement_id":0,"series":[
            {"name":"cpu","columns":["time","v"],"values":[[5,1],[5,1]]},
            {"name":"mem","columns":["time","v"],"values":[[6,2]]}
        ]});
        let merged = merge_select_results(vec![a, b]);
        assert_eq!(
            merged,
            json!({"series":[
                {"name":"cpu","columns":["time","v"],"values":[[5,1],[5,1]]},
                {"name":"mem","columns":["time","v"],"values":[[6,2]]}
            ]})
        );
        let failed = merge_select_results(vec![json!({"error":"boom"}), json!({"error":"bang"})]);
        assert_eq!(failed, json!({"error":"boom"}));
    }

    #[test]
    fn show_merge_puts_series_in_influxdb_order() {
        let keys = |name: &str| json!({"name":name,"columns":["tagKey"],"values":[["host"]]});
        let a = json!({"series":[keys("m00"), keys("m02"), keys("m03")]});
        let b = json!({"series":[keys("m01"), keys("m02"), keys("m10")]});
        assert_eq!(
            merge_statement_results(vec![a, b]),
            json!({"series":[keys("m00"), keys("m01"), keys("m02"), keys("m03"), keys("m10")]})
        );
    }

    /// Series of several backends (measurements of different replica sets)
    /// come out as one InfluxDB sorts them: by name, then by tag values.
    #[test]
    fn select_merge_puts_series_of_several_backends_in_influxdb_order() {
        let series = |name: &str, host: &str| json!({"name":name,"tags":{"host":host},"columns":["time","v"],"values":[[1,1]]});
        let a = json!({"series":[series("m2", "h0"), series("m2", "h1"), series("m4", "h0")]});
        let b = json!({"series":[series("m1", "h1"), series("m2", "h0"), series("m3", "h0")]});
        let c = json!({"series":[series("m1", "h0"), series("m10", "h0")]});
        assert_eq!(
            merge_select_results(vec![a, b, c]),
            json!({"series":[series("m1", "h0"), series("m1", "h1"), series("m10", "h0"), series("m2", "h0"),
                             series("m2", "h1"), series("m3", "h0"), series("m4", "h0")]})
        );
    }

    #[test]
    fn pretty_reindenting_prints_as_serde_json_pretty() {
        let values = [
            json!({"statement_id":0,"series":[{"name":"c\"p{u]","tags":{"h":"a,b: c"},"columns":["time","v"],
                "values":[[1,-1.5e-7],[2,null],[3,"x\\\"[{,:"],[4,true]]}]}),
            json!({"a":[],"b":{},"c":[[],{}],"d":"\u{e9}\u{1F600}\n\t","e":[{"f":[1,[2,[3]]]}]}),
            json!([]),
            json!("plain"),
            json!(12),
        ];
        for value in values {
            let mut out = Vec::new();
            write_pretty(&mut out, value.to_string().as_bytes(), 0);
            let mut expected = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            value.serialize(&mut serde_json::Serializer::with_formatter(&mut expected, formatter)).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), String::from_utf8(expected).unwrap());
        }
        // Whitespace between tokens is dropped; later lines are indented by depth.
        let mut out = Vec::new();
        write_pretty(&mut out, b" { \"a\" : [ 1 , 2 ] } ", 1);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\n        \"a\": [\n            1,\n            2\n        ]\n    }"
        );
    }

    #[test]
    fn rows_are_copied_as_the_backend_wrote_them() {
        // Numbers keep their text (InfluxDB's Go encoding), through the
        // select merge and the writer: nothing is re-encoded.
        let a = br#"{"results":[{"statement_id":0,"series":[{"name":"cpu","columns":["time","v"],"values":[[1,1e+21],[2,1.50]]}]}]}"#;
        let b = br#"{"results":[{"statement_id":0,"series":[{"name":"mem","columns":["time","v"],"values":[[1,2.0E-7]]}]}]}"#;
        let merged = merge_select_results(vec![first_result(a).unwrap(), first_result(b).unwrap()]);
        let body = String::from_utf8(combine(vec![merged], false)).unwrap();
        assert_eq!(
            body,
            concat!(
                r#"{"results":[{"statement_id":0,"series":[{"name":"cpu","columns":["time","v"],"values":[[1,1e+21],[2,1.50]]},"#,
                r#"{"name":"mem","columns":["time","v"],"values":[[1,2.0E-7]]}]}]}"#,
                "\n"
            )
        );
        // A single backend's result: passed on as it was, minus statement_id and partial.
        let only = merge_select_results(vec![
            first_result(br#"{"results":[{"statement_id":3,"series":[{"name":"m","columns":["time"],"values":[[1]]}],"partial":true}]}"#).unwrap(),
            error_result("down").into(),
        ]);
        assert_eq!(only, json!({"series":[{"name":"m","columns":["time"],"values":[[1]]}]}));
    }

    #[test]
    fn malformed_backend_answers_are_errors_never_panics() {
        let deep = "[".repeat(10_000);
        let bodies: Vec<&[u8]> = vec![
            b"",
            b"{",
            b"null",
            b"[]",
            b"\"results\"",
            b"{\"results\":{}}",
            b"{\"results\":\"x\"}",
            b"{\"results\":[{\"series\":[",
            b"{\"results\":[{\"series\":[{\"values\":[[1,2]]}]}]",
            b"{\"results\":[]} trailing",
            b"{\"results\":[{\"statement_id\":0}]}\xff",
            b"{\"results\":[{\"error\":\"\xff\xfe\"}]}",
            b"{\"error\":{\"nested\":1}}",
            deep.as_bytes(),
        ];
        for body in bodies {
            let text = String::from_utf8_lossy(body);
            assert!(first_result(body).is_err(), "{text}");
            assert!(answer_results(body).is_err(), "{text}");
        }
        assert_eq!(first_result(br#"{"error":{"nested":1}}"#).unwrap_err(), r#"{"nested":1}"#);
        assert_eq!(first_result(br#"{"error":null,"results":[{}]}"#).unwrap_err(), "null");
        assert!(first_result(br#"{"results":[[1]]}"#).is_err());
        assert!(first_result(br#"{"results":["x"]}"#).is_err());

        // Odd but well-formed shapes parse, merge and print without panicking.
        let odd: Vec<&[u8]> = vec![
            br#"{"results":[{}]}"#,
            br#"{"results":[{"series":"odd","statement_id":"x"}]}"#,
            br#"{"results":[{"series":[1,"s",null,[],{}],"messages":"m"}]}"#,
            br#"{"results":[{"series":[{"name":1,"tags":[1],"columns":{},"values":"v"}],"messages":[1]}]}"#,
            br#"{"results":[{"series":[{"name":"a","name":"b"}],"error":null}]}"#,
            br#"{"results":[{"series":[{"values":[[1e400]]}]}]}"#,
        ];
        let parsed: Vec<StatementResult> = odd.into_iter().map(|b| first_result(b).unwrap()).collect();
        let merged = merge_select_results(parsed.clone());
        for pretty in [false, true] {
            let body = combine(parsed.iter().cloned().chain([merged.clone()]).collect(), pretty);
            // Syntax only: 1e400 is valid JSON that a Value cannot hold.
            let value: BTreeMap<String, Vec<&RawValue>> =
                serde_json::from_slice(&body).expect("the combined body is JSON");
            assert_eq!(value["results"].len(), parsed.len() + 1);
        }
    }

    #[test]
    fn answer_results_borrow_each_statement_result() {
        let body = br#"{"results":[{"statement_id":0,"series":[{"name":"m","columns":["time"],"values":[[1]]}]},{"statement_id":1,"error":"x"}]}"#;
        let results = answer_results(body).unwrap();
        assert_eq!(results.len(), 2);
        assert_eq!(results[1].get(), r#"{"statement_id":1,"error":"x"}"#);
        let second = StatementResult::from_json(results[1].get()).unwrap();
        assert!(second.has_error());
        assert_eq!(second.error_message().as_deref(), Some("x"));
        assert_eq!(second.statement_id(), Some(1));
        let first = StatementResult::from_json(results[0].get()).unwrap();
        assert!(!first.has_error());
        assert_eq!(first.error_message(), None);
        assert_eq!(
            answer_results(br#"{"error":"error parsing query: found EOF"}"#).unwrap_err(),
            "error parsing query: found EOF"
        );
    }

    #[test]
    fn select_merge_from_one_contributing_backend_gives_its_series_once() {
        let cpu = json!({"name":"cpu","columns":["time","v"],"values":[[1,1]]});
        let mem = json!({"name":"mem","columns":["time","v"],"values":[[2,2]]});
        // b holds the same series as a (a measurement on both replica sets) or none.
        let a = json!({"series":[cpu.clone(), mem.clone()]});
        let b = json!({"series":[{"name":"cpu","columns":["time","v"],"values":[[9,9]]}]});
        assert_eq!(merge_select_results(vec![a.clone(), b]), json!({"series":[cpu.clone(), mem.clone()]}));
        assert_eq!(merge_select_results(vec![json!({}), a]), json!({"series":[cpu.clone(), mem.clone()]}));
        // A series repeated inside one answer is taken once.
        let twice = json!({"series":[cpu.clone(), cpu.clone(), mem.clone()]});
        assert_eq!(merge_select_results(vec![twice, json!({})]), json!({"series":[cpu, mem]}));
        assert_eq!(merge_select_results(vec![json!({}), json!({})]), json!({}));
    }
}
