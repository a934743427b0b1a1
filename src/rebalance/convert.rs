//! The copy of history: the InfluxQL the copy asks, a backend's answers turned
//! back into line protocol, chunk sizing and the rate limit.

use crate::results::StatementResult;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// InfluxDB 1.x field types, as `SHOW FIELD KEYS` names them (`fieldType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Float,
    Integer,
    /// Written as `1u` (InfluxDB 1.x with unsigned support; 1.6 never reports it).
    Unsigned,
    String,
    Boolean,
}

impl FieldType {
    /// `"float"`, `"integer"`, `"unsigned"`, `"string"`, `"boolean"`; `None` otherwise.
    pub fn parse(name: &str) -> Option<FieldType> {
        Some(match name {
            "float" => FieldType::Float,
            "integer" => FieldType::Integer,
            "unsigned" => FieldType::Unsigned,
            "string" => FieldType::String,
            "boolean" => FieldType::Boolean,
            _ => return None,
        })
    }
}

/// An InfluxQL identifier in double quotes: `a"b\c` -> `"a\"b\\c"` (InfluxQL
/// "Identifiers": quoted identifiers escape `"` and `\` with a backslash).
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    escape_into(&mut out, name, &['"', '\\']);
    out.push('"');
    out
}

/// An InfluxQL string literal in single quotes, `'` and `\` escaped.
pub fn quote_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    escape_into(&mut out, value, &['\'', '\\']);
    out.push('\'');
    out
}

/// `"db"."rp"."m"`: a fully qualified measurement.
pub fn qualified(db: &str, rp: &str, measurement: &str) -> String {
    format!("{}.{}.{}", quote_ident(db), quote_ident(rp), quote_ident(measurement))
}

/// The condition restricting a tag-sharded key to its tag value
/// (`"tag" = 'v'`; `'...' = ''` also matches series without the tag, as
/// InfluxDB 1.x does), or `None` for a measurement-sharded key.
pub fn tag_condition(shard_tag: Option<&str>, tag_value: Option<&str>) -> Option<String> {
    match (shard_tag, tag_value) {
        (Some(tag), Some(value)) => Some(format!("{} = {}", quote_ident(tag), quote_string(value))),
        _ => None,
    }
}

fn where_clause(condition: Option<&str>, range: Option<(i64, i64)>) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(c) = condition {
        parts.push(c.to_string());
    }
    if let Some((a, b)) = range {
        parts.push(format!("time >= {a} AND time < {b}"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", parts.join(" AND "))
    }
}

/// `SELECT * FROM "db"."rp"."m" WHERE [cond AND] time >= a AND time < b GROUP BY *`:
/// one chunk of history, asked with `epoch=ns`; `a` and `b` in ns since the epoch.
pub fn chunk_query(db: &str, rp: &str, measurement: &str, condition: Option<&str>, a: i64, b: i64) -> String {
    format!(
        "SELECT * FROM {}{} GROUP BY *",
        qualified(db, rp, measurement),
        where_clause(condition, Some((a, b)))
    )
}

/// The earliest (`ascending`) or latest point's query:
/// `SELECT * FROM ... [WHERE cond] ORDER BY time ASC|DESC LIMIT 1`.
pub fn bound_query(
    db: &str,
    rp: &str,
    measurement: &str,
    condition: Option<&str>,
    ascending: bool,
) -> String {
    format!(
        "SELECT * FROM {}{} ORDER BY time {} LIMIT 1",
        qualified(db, rp, measurement),
        where_clause(condition, None),
        if ascending { "ASC" } else { "DESC" }
    )
}

/// `SELECT count(*) FROM ... WHERE [cond AND] time >= a AND time < b`: the
/// verification's per-field counts.
pub fn count_query(db: &str, rp: &str, measurement: &str, condition: Option<&str>, a: i64, b: i64) -> String {
    format!(
        "SELECT count(*) FROM {}{}",
        qualified(db, rp, measurement),
        where_clause(condition, Some((a, b)))
    )
}

/// `SHOW FIELD KEYS ON "db" FROM "rp"."m"`.
pub fn field_keys_query(db: &str, rp: &str, measurement: &str) -> String {
    format!("SHOW FIELD KEYS ON {} FROM {}.{}", quote_ident(db), quote_ident(rp), quote_ident(measurement))
}

/// The field types of a `SHOW FIELD KEYS` answer (columns `fieldKey`,
/// `fieldType`). A field listed twice with different types (possible across
/// shards in InfluxDB 1.x) keeps the first. Error: a result with `error`, or
/// not of that shape.
pub fn field_types(result: &StatementResult) -> Result<BTreeMap<String, FieldType>, String> {
    let mut types = BTreeMap::new();
    for series in series_of(result)? {
        let key = column(&series.columns, "fieldKey")?;
        let ty = column(&series.columns, "fieldType")?;
        for row in &series.values {
            let (Some(k), Some(t)) = (row.get(key), row.get(ty)) else {
                return Err("SHOW FIELD KEYS: short row".to_string());
            };
            let k: String = serde_json::from_str(k.get()).map_err(|e| format!("SHOW FIELD KEYS: {e}"))?;
            let t: String = serde_json::from_str(t.get()).map_err(|e| format!("SHOW FIELD KEYS: {e}"))?;
            let t =
                FieldType::parse(&t).ok_or_else(|| format!("SHOW FIELD KEYS: unknown field type {t:?}"))?;
            types.entry(k).or_insert(t);
        }
    }
    Ok(types)
}

/// One series of an answer, its cells kept as the backend's JSON text.
#[derive(Deserialize)]
pub(crate) struct RawSeries<'a> {
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) tags: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) columns: Vec<String>,
    #[serde(borrow, default)]
    pub(crate) values: Vec<Vec<&'a RawValue>>,
}

/// The series of a result, or its error.
pub(crate) fn series_of(result: &StatementResult) -> Result<Vec<RawSeries<'_>>, String> {
    if let Some(e) = result.error_message() {
        return Err(e);
    }
    match result.raw_member("series") {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(text).map_err(|e| format!("unexpected series: {e}")),
    }
}

fn column(columns: &[String], name: &str) -> Result<usize, String> {
    columns.iter().position(|c| c == name).ok_or_else(|| format!("no column {name:?} in the answer"))
}

/// The time (ns) of the first row of the first series (the answer of a
/// [`bound_query`]), `None` when there is no row.
pub fn first_time(result: &StatementResult) -> Result<Option<i64>, String> {
    for series in series_of(result)? {
        let t = column(&series.columns, "time")?;
        if let Some(row) = series.values.first() {
            let cell = row.get(t).ok_or("short row")?;
            return cell.get().parse::<i64>().map(Some).map_err(|_| format!("time {} is not ns", cell.get()));
        }
    }
    Ok(None)
}

/// A chunk turned into line protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Converted {
    /// Lines, each ending in `\n`, timestamps in ns (write with no precision).
    pub body: Vec<u8>,
    /// Points written (rows with at least one non-null field).
    pub points: u64,
}

/// A chunk's answer (`SELECT * ... GROUP BY *` at `epoch=ns`: series with
/// `tags`, `columns` `time` and the fields, `values`) -> line protocol, with
/// the field types of `SHOW FIELD KEYS` ([`field_types`]):
/// integers `1i`, unsigned `1u`, strings quoted with `\` and `"` escaped,
/// booleans `true`/`false`, floats in the shortest form that reads back as
/// the same f64 (parsed from the backend's text, correctly rounded).
/// Measurement names escape `,` and space; tag keys, tag values and field keys
/// escape `,`, `=` and space (InfluxDB 1.x line protocol, as
/// `crate::line_protocol` reads it). Tags with an empty value (GROUP BY *
/// lists every tag key of the measurement) are left out, null fields are
/// skipped and a row with no field is skipped; columns that are not fields
/// (tags) are ignored. Tags are written sorted by key.
///
/// Errors: the result's `error`; a cell whose JSON does not fit its field's
/// type; a `partial` answer (the backend's `max-row-limit` cut it: ask a
/// shorter range).
pub fn chunk_to_line_protocol(
    result: &StatementResult,
    types: &BTreeMap<String, FieldType>,
) -> Result<Converted, String> {
    if result.raw_member("partial").is_some_and(|p| p.trim() == "true") {
        return Err("partial answer (max-row-limit): ask a shorter range".to_string());
    }
    // Lines are written straight into one buffer; a row with no field is cut
    // off again. Names are escaped once per series, not per point.
    let mut body = String::new();
    let mut points = 0;
    for series in series_of(result)? {
        let time = column(&series.columns, "time")?;
        let fields: Vec<(usize, &String, String, FieldType)> = series
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != time)
            .filter_map(|(i, c)| {
                types.get(c).map(|t| {
                    let mut escaped = String::with_capacity(c.len());
                    escape_into(&mut escaped, c, &[',', '=', ' ']);
                    (i, c, escaped, *t)
                })
            })
            .collect();
        let mut head = String::new();
        escape_into(&mut head, &series.name, &[',', ' ']);
        for (k, v) in &series.tags {
            if v.is_empty() {
                continue;
            }
            head.push(',');
            escape_into(&mut head, k, &[',', '=', ' ']);
            head.push('=');
            escape_into(&mut head, v, &[',', '=', ' ']);
        }
        for row in &series.values {
            let start = body.len();
            body.push_str(&head);
            let mut any = false;
            for (i, name, escaped, ty) in &fields {
                let Some(cell) = row.get(*i) else { continue };
                let text = cell.get().trim();
                if text == "null" {
                    continue;
                }
                body.push(if any { ',' } else { ' ' });
                any = true;
                body.push_str(escaped);
                body.push('=');
                field_value(&mut body, text, *ty).map_err(|e| format!("field {name:?}: {e}"))?;
            }
            if !any {
                body.truncate(start);
                continue;
            }
            let t = row.get(time).ok_or("short row")?.get();
            let t: i64 = t.parse().map_err(|_| format!("time {t} is not ns (ask with epoch=ns)"))?;
            let _ = writeln!(body, " {t}");
            points += 1;
        }
    }
    Ok(Converted { body: body.into_bytes(), points })
}

/// Appends `s` to `out` with a backslash before each character of `special`.
fn escape_into(out: &mut String, s: &str, special: &[char]) {
    for c in s.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

fn field_value(out: &mut String, text: &str, ty: FieldType) -> Result<(), String> {
    match ty {
        FieldType::Float => {
            let f: f64 = text.parse().map_err(|_| format!("{text} is not a float"))?;
            if !f.is_finite() {
                return Err(format!("{text} is not finite"));
            }
            let _ = write!(out, "{f:?}");
        }
        FieldType::Integer => {
            let i: i64 = text.parse().map_err(|_| format!("{text} is not an integer"))?;
            let _ = write!(out, "{i}i");
        }
        FieldType::Unsigned => {
            let u: u64 = text.parse().map_err(|_| format!("{text} is not unsigned"))?;
            let _ = write!(out, "{u}u");
        }
        FieldType::Boolean => match text {
            "true" | "false" => out.push_str(text),
            _ => return Err(format!("{text} is not a boolean")),
        },
        FieldType::String => {
            let s: String = serde_json::from_str(text).map_err(|_| format!("{text} is not a string"))?;
            out.push('"');
            escape_into(out, &s, &['"', '\\']);
            out.push('"');
        }
    }
    Ok(())
}

/// The next chunk's length in ns: scaled so that a chunk holds about
/// `target_points` (the last chunk of `span_ns` held `points`), at most 4
/// times longer or shorter than the last one, within `1..=max_span_ns`.
pub fn next_span_ns(span_ns: i64, points: u64, target_points: u64, max_span_ns: i64) -> i64 {
    let span = span_ns.max(1) as f64;
    let factor =
        if points == 0 { 4.0 } else { (target_points.max(1) as f64 / points as f64).clamp(0.25, 4.0) };
    ((span * factor) as i64).clamp(1, max_span_ns.max(1))
}

/// The pause (ms) after copying `points` that keeps the copy at
/// `points_per_s` (0: no limit).
pub fn rate_delay_ms(points: u64, points_per_s: u64) -> u64 {
    if points_per_s == 0 {
        return 0;
    }
    points.saturating_mul(1000).div_ceil(points_per_s)
}

/// A Go duration as `SHOW RETENTION POLICIES` prints it (`168h0m0s`, `0s`,
/// `1h30m`, `500ms`) in whole seconds (rounded down), for `CREATE RETENTION
/// POLICY ... DURATION <n>s`. `None` when it is not one.
pub fn go_duration_secs(text: &str) -> Option<u64> {
    let mut rest = text;
    let mut ns: u128 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u128 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit: u128 = match &rest[..unit_len] {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            "" if n == 0 && rest.is_empty() => 1,
            _ => return None,
        };
        rest = &rest[unit_len..];
        ns = ns.checked_add(n.checked_mul(unit)?)?;
    }
    u64::try_from(ns / 1_000_000_000).ok()
}
