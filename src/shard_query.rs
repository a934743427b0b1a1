//! Queries over a **tag-sharded measurement** (a shard group with
//! `shard_tag`): whether a `SELECT` is pinned to some values of the shard tag,
//! and otherwise the statement each shard is asked and the **exact** merge of
//! the shards' answers into the JSON one InfluxDB 1.x holding all the data
//! would answer (checked against InfluxDB 1.6.7 in `tests/shard_query.rs`).
//! Pure: no IO, no clock.
//!
//! # API (what `src/proxy/query.rs` calls)
//!
//! 1. [`pinned_values`]`(statement, shard_tag)` -> `Ok(Some(values))` when the
//!    `WHERE` clause pins the shard tag: `tag = 'x'`, `'x' = tag`, `OR`s of
//!    such equalities, possibly `AND`ed with other conditions, in
//!    parentheses, the tag plain or double-quoted (`"customer_id"`), with or
//!    without `::tag`. `Ok(None)` otherwise (`!=`, `=~`, `OR` with another
//!    condition, no WHERE). The proxy then asks only the replica sets of
//!    those values (placement of `(db, measurement, value)`); if one backend
//!    holds every value, it sends the statement unchanged to it (the answer
//!    is that backend's, as today); otherwise it uses step 2 over the backends
//!    holding them (the merge is exact for any set of asked backends).
//! 2. [`plan`]`(statement, shard_tag)` -> `Ok(`[`ShardQuery`]`)` or
//!    `Err(message)`: a statement that cannot be merged exactly; the proxy
//!    answers it **400** `{"error": message}` without asking anyone. The
//!    message names the function (or construct) and says how to make the
//!    query exact (pin the shard tag in WHERE, or GROUP BY it).
//! 3. Every asked backend gets the same request, `q` =
//!    [`ShardQuery::backend_query`] (the statements of
//!    [`ShardQuery::backend_statements`]: the SELECT, plus
//!    `SHOW FIELD KEYS FROM m` when the merge needs field types; same db, rp
//!    and credentials as the client's request, but **without `epoch`** and
//!    `chunked`: the merge reads RFC 3339 times, exact to the nanosecond, so
//!    buckets and ties are not blurred by a coarse epoch).
//! 4. [`ShardQuery::merge`]`(answers, owner, epoch)`: `answers` is one
//!    `(backend index, Vec<StatementResult>)` per asked backend (the
//!    backend's result objects, in order, e.g. from
//!    [`crate::results::answer_results`]), `owner(v)` the index of the asked
//!    backend whose answer counts for shard tag value `v` (`""` for points
//!    without the tag): the first of `v`'s replicas, in placement order,
//!    that was asked (`None`: a value not asked for, its series dropped);
//!    `epoch` the client's `epoch` parameter (the merged times are
//!    converted as InfluxDB converts them). Returns the merged result (no
//!    `statement_id`: the caller's [`crate::results::ResultsWriter`]
//!    numbers it), a backend's `error` result as it is, or `Err(message)`
//!    (answered 400, see "refused at merge time" below).
//!
//! Sketch for `query.rs` (lead):
//!
//! ```text
//! match shard_query::pinned_values(stmt, tag)? {
//!     Some(vs) if one backend holds all vs => Reach::EachSet(vec![set]), Merge::One,
//!     Some(vs) => asked = one healthy replica per value's set,
//!     None => asked = one healthy replica of each of N-RF+1 group backends,
//! }
//! let q = shard_query::plan(stmt, tag).map_err(bad_request_400)?;
//! // query_request(&q.backend_query(), ctx, false) without the `epoch` pair;
//! // each body's results: answer_results(body) -> StatementResult::from_json
//! let answers = ask each asked backend;   // Vec<(usize, Vec<StatementResult>)>
//! let owner = |v: &str| place(group_names, rf, &ShardKey{db, measurement, tag_value: Some(v)})
//!     .into_iter().map(|i| group.backends[i]).find(|b| asked.contains(b));
//! q.merge(answers, &owner, params.get("epoch"))?   // Err -> 400
//! ```
//!
//! # Disjointness: choice (a), `GROUP BY <shard_tag>` and owners
//!
//! With RF > 1 the asked backends share keys: a value placed on backends
//! {1, 2} is in both answers. Every backend is therefore asked with the shard
//! tag added to `GROUP BY`, so each series of its answer carries the shard
//! tag value `v`, and the merge keeps the series of `v` only from `owner(v)`.
//! Each value is thus counted exactly once, from a backend that holds all of
//! it (placement is computable from the value), and the merge re-aggregates
//! across values. Why not (b) `SHOW TAG VALUES` first and an
//! `AND (tag = 'v' OR ...)` per backend: it needs two round trips, a
//! statement that grows with the number of values (thousands of tenants),
//! and it races with writes of new values between the two steps; (a) is one
//! round trip and the restriction is applied to the very answer merged.
//! The cost of (a): a backend answers one series per tag value (per output
//! series), instead of one. Points without the tag come back under the
//! value `""`, whose owner is that of the shard of the empty value (where
//! writes put them).
//!
//! A backend `error` result is returned as the statement's answer (an
//! answer from fewer shards would be silently wrong); the proxy must not ask
//! with `chunked=true` (a chunked answer is split into several results).
//!
//! # What is merged, and how (InfluxDB 1.6.7 `query/`)
//!
//! - **`GROUP BY` includes the shard tag (or `*`):** every output series lies
//!   in one shard, so any statement (any function, LIMIT/OFFSET) is exact:
//!   the backends get the statement without `SLIMIT`/`SOFFSET`, each series
//!   is taken from its value's owner, series are ordered by tag set as
//!   InfluxDB does (by `Tags.ID()`: values in tag key order, bytewise), then
//!   `SOFFSET`/`SLIMIT` choose series in the order of their tag set keys
//!   (`MakeTagsKey`, which differs when a series lacks a grouped tag; see
//!   `limit_series`). In every mode, `ORDER BY time DESC`
//!   emits the series in descending tag order, but SLIMIT/SOFFSET still
//!   count them in ascending order (`LimitTagSets` runs on the ascending tag
//!   sets; measured on 1.6.7).
//! - **Raw `SELECT`:** asked with the shard tag grouped, without
//!   SLIMIT/SOFFSET, and `LIMIT n OFFSET m` asked as `LIMIT n+m+1` per
//!   series (the first n+m merged rows are among each series' first n+m;
//!   the extra row tells whether a series was cut inside a run of equal
//!   times, see ties). Rows of one output series are merged by time
//!   (descending with `ORDER BY time DESC`); `SELECT *` columns are the
//!   sorted union of the shards' columns with the shard tag column put back
//!   (InfluxDB leaves a grouped tag out of `*`; `""` becomes `null`), then
//!   OFFSET/LIMIT per series and SOFFSET/SLIMIT over series.
//!   **Ties** (rows at the same time in one output series): InfluxDB's
//!   `sortedMergeHeap.Less` (`query/iterator.gen.go`) orders them by the
//!   auxiliary values (the referenced fields and tags, sorted by name) while
//!   they are strings, and otherwise leaves them in heap order, which depends
//!   on series ids and shard layout and cannot be reproduced by a fan-out.
//!   So equal-time rows are ordered by their leading string auxiliary values
//!   when that decides; identical rows need no order; any other tie is
//!   refused at merge time.
//! - **Aggregates** `count`, `sum`, `min`, `max`, `first`, `last`, `spread`
//!   (asked as `max` and `min`), `mean` (asked as `sum` and `count`), several
//!   in one statement, with aliases, wildcard and regex arguments
//!   (`count(*)`, `max(/re/)`: asked as written, expanded at merge time to
//!   one `<name>_<field>` column per field any shard answered, in field name
//!   order, as one InfluxDB expands them), optional `GROUP BY time(...)` and other
//!   tags, `fill(none|null|previous|linear|<number>)`: each shard is asked
//!   the partial calls (aliased `_sq0`, `_sq1`, ...) with `fill(none)` or,
//!   for any other fill, `fill(null)` (so each shard reports the bucket range
//!   of its series: InfluxDB's fill iterator starts a series at the query's
//!   start, or at its first point's window when WHERE has no lower time
//!   bound, and the union over values is then the output series' range).
//!   Partials are combined per output series and bucket: counts and sums
//!   added (integers stay integers), min/max by value with InfluxDB's tie
//!   rule (`FloatMinReduce`: equal values keep the earlier time, checked),
//!   first/last by time (the earliest / latest; a tie between values is
//!   refused, below), mean = sum / count; then fill is applied per
//!   column as `floatFillIterator` does (`count`'s null fill is 0;
//!   `previous` and `linear` per series in output order; `linear` with
//!   `linearFloat`/`linearInteger`), then OFFSET/LIMIT and SOFFSET/SLIMIT.
//!   The time column: a single selector (`min`/`max`/`first`/`last` alone,
//!   without `GROUP BY time`) reports the selected point's time; otherwise
//!   the bucket (or query) start, which every shard reports alike. Fields
//!   and tags next to one selector (`SELECT max(v), host`) are asked as
//!   written and taken from the selected row (null in filled buckets, as
//!   the fill iterator's empty auxiliary fields).
//!
//! # Not exact, hence refused (400)
//!
//! - At plan time: any other function (`percentile`, `median`, `mode`,
//!   `stddev`, `distinct`, `count(distinct(..))`, `top`, `bottom`,
//!   `integral`, `derivative`, `difference`, `moving_average`, `sample`, ...),
//!   arithmetic over calls, fields or tags next to aggregates other than one
//!   selector (InfluxDB refuses most of these itself), subqueries, regex or
//!   several measurements in
//!   FROM, `GROUP BY /regex/`, `INTO`, unless GROUP BY includes the shard tag
//!   (then everything is exact, subqueries and INTO excepted).
//! - At merge time (the data decides): `first`/`last` where the reported time
//!   is a bucket start (`GROUP BY time`, or several calls) and two shard tag
//!   values have points in the same bucket whose first (last) values differ
//!   (which point is first is then
//!   unknowable: InfluxDB reports the bucket start, not the point's time);
//!   a single selector `first`/`last` whose selected time several values
//!   share with different values (InfluxDB 1.6.7 then picks by layout, not
//!   by `FloatLastReduce`'s value rule: measured); undecidable raw ties
//!   (above), and a pushed-down LIMIT that ends inside a tie of one value's
//!   series; a `min`/`max` with fields or tags next to it whose value
//!   several tag values reach with different fields, where the reported
//!   time cannot break the tie (a bucket start), or ties in time too;
//!   `fill(linear)` whose interpolated value is fractional when the
//!   field's type is unknown to SHOW FIELD KEYS and every value is integral
//!   (an integer field truncates, a float field does not); an integer sum
//!   that overflows; a shard's `"partial": true` answer.
//! - Not detectable, hence documented: ties among several series of *one*
//!   shard tag value (e.g. two hosts of one customer with points at the same
//!   time) are ordered by that value's owner as it stores them, which may
//!   differ from one InfluxDB holding every value (raw rows at the same time,
//!   and which of them `first`/`last` select).
//! - Inherent, not refused: SLIMIT/SOFFSET are applied by InfluxDB per TSM
//!   shard (`LimitTagSets` in each shard's `createVarRefIterator`), so
//!   where the queried data span several shard groups one InfluxDB may
//!   answer more than SLIMIT series, chosen per shard from the series each
//!   holds; the merge applies them once over all series (exact when the
//!   data lie in one shard group). Floating-point sums (and means) are added in a
//!   different order than one server adds them, so they can differ in the
//!   last bits unless the partial sums are exactly representable (one
//!   InfluxDB itself adds per TSM shard in shard order). `now()` is read by
//!   each backend itself (with `GROUP BY time` and fill but no upper time
//!   bound, the last bucket is each backend's own now()). Which of several
//!   points with equal times a selector picks also depends, inside one
//!   InfluxDB, on how many parallel groups it splits the series into
//!   (`GOMAXPROCS`): one InfluxDB on another machine may differ too.

use crate::results::StatementResult;
use crate::statement::{tokenize, Token, TokenKind};
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

// ---------------------------------------------------------------------------
// SELECT statement, as far as the merge needs it
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum FieldKind {
    /// `name(arg)` with one identifier argument.
    /// `wildcard`: the argument is `*` or a `/regex/` (one column per
    /// matching field, named `<name>_<field>`); `field` is then empty.
    Call { name: String, arg: String, field: String, wildcard: bool },
    /// A call of another shape (nested, several or wildcard arguments).
    OtherCall { name: String },
    /// A field or tag reference.
    Ref(String),
    /// `*`.
    Star,
    /// Any other expression.
    Expr,
}

#[derive(Debug, Clone)]
struct Field {
    kind: FieldKind,
    alias: Option<String>,
    /// The field as written (with its alias).
    text: String,
}

#[derive(Debug, Clone)]
struct Select {
    fields_text: String,
    fields: Vec<Field>,
    from_text: String,
    measurement: Option<String>,
    from_plain: bool,
    where_tokens: Vec<Token>,
    where_text: Option<String>,
    /// GROUP BY items as written.
    dims_text: Vec<String>,
    /// Tag dimensions (unquoted names).
    dim_tags: Vec<String>,
    dim_star: bool,
    dim_regex: bool,
    /// `time(...)` as written, and its interval in ns.
    time_dim: Option<(String, i64)>,
    fill: Option<String>,
    desc: bool,
    order_text: Option<String>,
    limit: u64,
    offset: u64,
    slimit: u64,
    soffset: u64,
    tz_text: Option<String>,
    into: bool,
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

fn split_top(tokens: &[Token], sep: &str) -> Vec<Vec<Token>> {
    let mut out = vec![Vec::new()];
    let mut depth = 0i32;
    for t in tokens {
        if t.is_punct("(") {
            depth += 1;
        } else if t.is_punct(")") {
            depth -= 1;
        }
        if depth == 0 && t.is_punct(sep) {
            out.push(Vec::new());
        } else if let Some(last) = out.last_mut() {
            last.push(t.clone());
        }
    }
    out.retain(|v| !v.is_empty());
    out
}

fn span(text: &str, tokens: &[Token]) -> String {
    match (tokens.first(), tokens.last()) {
        (Some(a), Some(b)) => text[a.start..b.end].to_string(),
        _ => String::new(),
    }
}

/// Duration literal (`10s`, `1h`, `500ms`, `2w`) in ns.
fn duration_ns(lit: &str) -> Option<i64> {
    let digits = lit.find(|c: char| !c.is_ascii_digit()).unwrap_or(lit.len());
    let n: i64 = lit[..digits].parse().ok()?;
    let unit = match &lit[digits..] {
        "ns" => 1,
        "u" | "µ" | "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "d" => 86_400_000_000_000,
        "w" => 604_800_000_000_000,
        _ => return None,
    };
    n.checked_mul(unit)
}

fn parse_field(text: &str, tokens: &[Token]) -> Field {
    let mut body = tokens;
    let mut alias = None;
    if body.len() >= 3 && body[body.len() - 2].is_keyword("AS") {
        alias = body[body.len() - 1].name().map(str::to_string);
        body = &body[..body.len() - 2];
    }
    let kind = match body {
        [t] if t.is_punct("*") => FieldKind::Star,
        [t] if t.name().is_some() => FieldKind::Ref(t.name().unwrap_or_default().to_string()),
        [t, c, ty] if t.name().is_some() && c.is_punct("::") && ty.name().is_some() => {
            FieldKind::Ref(t.name().unwrap_or_default().to_string())
        }
        [f, open, rest @ .., close]
            if f.name().is_some() && open.is_punct("(") && close.is_punct(")") && {
                // The parentheses must enclose the whole rest.
                let mut depth = 0;
                rest.iter().all(|t| {
                    if t.is_punct("(") {
                        depth += 1;
                    } else if t.is_punct(")") {
                        depth -= 1;
                    }
                    depth >= 0
                })
            } =>
        {
            let name = f.name().unwrap_or_default().to_ascii_lowercase();
            let arg_ok = match rest {
                [a] => a.name().is_some(),
                [a, c, ty] => a.name().is_some() && c.is_punct("::") && ty.name().is_some(),
                _ => false,
            };
            let wildcard = matches!(rest, [a] if a.is_punct("*") || matches!(a.kind, TokenKind::Regex(_)));
            if arg_ok || wildcard {
                let field = if wildcard {
                    String::new()
                } else {
                    rest.first().and_then(Token::name).unwrap_or_default().to_string()
                };
                FieldKind::Call { name, arg: span(text, rest), field, wildcard }
            } else {
                FieldKind::OtherCall { name }
            }
        }
        _ => {
            // The first function called, if any, names the expression.
            let call = body.windows(2).find(|w| w[0].name().is_some() && w[1].is_punct("("));
            match call {
                Some(w) => {
                    FieldKind::OtherCall { name: w[0].name().unwrap_or_default().to_ascii_lowercase() }
                }
                None => FieldKind::Expr,
            }
        }
    };
    Field { kind, alias, text: span(text, tokens) }
}

fn parse_u64(tokens: &[Token], i: usize, text: &str, what: &str) -> Result<u64, String> {
    tokens
        .get(i)
        .filter(|t| t.kind == TokenKind::Number)
        .and_then(|t| text[t.start..t.end].parse().ok())
        .ok_or_else(|| format!("found bad {what} in SELECT"))
}

fn parse_select(text: &str) -> Result<Select, String> {
    let mut tokens = tokenize(text)?;
    if tokens.last().is_some_and(|t| t.is_punct(";")) {
        tokens.pop();
    }
    if !tokens.first().is_some_and(|t| t.is_keyword("SELECT")) {
        return Err("expected a SELECT statement".to_string());
    }
    // Top-level clause keywords (index into tokens).
    let clause_kws =
        ["FROM", "WHERE", "GROUP", "ORDER", "LIMIT", "OFFSET", "SLIMIT", "SOFFSET", "FILL", "TZ", "INTO"];
    let mut marks: Vec<(String, usize)> = Vec::new();
    let mut depth = 0i32;
    for (i, t) in tokens.iter().enumerate() {
        if t.is_punct("(") {
            depth += 1;
        } else if t.is_punct(")") {
            depth -= 1;
        } else if depth == 0 && i > 0 {
            if let TokenKind::Ident(w) = &t.kind {
                let up = w.to_ascii_uppercase();
                let seen_from = marks.iter().any(|(k, _)| k == "FROM");
                let ok = match up.as_str() {
                    "FROM" | "INTO" => !seen_from,
                    "FILL" | "TZ" => seen_from && tokens.get(i + 1).is_some_and(|n| n.is_punct("(")),
                    k => seen_from && clause_kws.contains(&k),
                };
                if ok {
                    marks.push((up, i));
                }
            }
        }
    }
    let clause = |name: &str| -> Option<&[Token]> {
        let pos = marks.iter().position(|(k, _)| k == name)?;
        let start = marks[pos].1 + 1;
        let end = marks.get(pos + 1).map_or(tokens.len(), |m| m.1);
        Some(&tokens[start..end])
    };
    let field_end = marks.first().map_or(tokens.len(), |m| m.1);
    let field_tokens = &tokens[1..field_end];
    let fields: Vec<Field> = split_top(field_tokens, ",").iter().map(|f| parse_field(text, f)).collect();
    let from = clause("FROM").ok_or("SELECT without FROM")?;
    let from_plain =
        !from.iter().any(|t| t.is_punct("(") || t.is_punct(",") || matches!(t.kind, TokenKind::Regex(_)));
    let measurement = if from_plain { from.last().and_then(Token::name).map(str::to_string) } else { None };
    let where_tokens = clause("WHERE").map(<[Token]>::to_vec).unwrap_or_default();
    let mut s = Select {
        fields_text: span(text, field_tokens),
        fields,
        from_text: span(text, from),
        measurement,
        from_plain,
        where_text: if where_tokens.is_empty() { None } else { Some(span(text, &where_tokens)) },
        where_tokens,
        dims_text: Vec::new(),
        dim_tags: Vec::new(),
        dim_star: false,
        dim_regex: false,
        time_dim: None,
        fill: clause("FILL").map(|f| span(text, f)),
        desc: false,
        order_text: clause("ORDER").map(|o| span(text, o)),
        limit: 0,
        offset: 0,
        slimit: 0,
        soffset: 0,
        tz_text: clause("TZ").map(|t| span(text, t)),
        into: clause("INTO").is_some(),
    };
    if let Some(fill) = &mut s.fill {
        *fill = fill.trim_start_matches('(').trim_end_matches(')').trim().to_ascii_lowercase();
    }
    if let Some(order) = clause("ORDER") {
        s.desc = order.iter().any(|t| t.is_keyword("DESC"));
    }
    if let Some(group) = clause("GROUP") {
        let group = if group.first().is_some_and(|t| t.is_keyword("BY")) { &group[1..] } else { group };
        for dim in split_top(group, ",") {
            s.dims_text.push(span(text, &dim));
            match dim.as_slice() {
                [t] if t.is_punct("*") => s.dim_star = true,
                [t] if matches!(t.kind, TokenKind::Regex(_)) => s.dim_regex = true,
                [t] if t.name().is_some() => s.dim_tags.push(t.name().unwrap_or_default().to_string()),
                [t, open, rest @ ..] if t.is_keyword("time") && open.is_punct("(") => {
                    let lit = rest.first().map(|d| text[d.start..d.end].to_string()).unwrap_or_default();
                    let ns =
                        duration_ns(&lit).ok_or_else(|| format!("invalid GROUP BY time interval {lit:?}"))?;
                    s.time_dim = Some((span(text, &dim), ns));
                }
                _ => s.dim_regex = true,
            }
        }
    }
    for (name, slot) in [("LIMIT", 0), ("OFFSET", 1), ("SLIMIT", 2), ("SOFFSET", 3)] {
        if let Some(pos) = marks.iter().position(|(k, _)| k == name) {
            let v = parse_u64(&tokens, marks[pos].1 + 1, text, name)?;
            match slot {
                0 => s.limit = v,
                1 => s.offset = v,
                2 => s.slimit = v,
                _ => s.soffset = v,
            }
        }
    }
    Ok(s)
}

// ---------------------------------------------------------------------------
// Pinning
// ---------------------------------------------------------------------------

/// What a condition says about the shard tag: `Some(values)` when every
/// point it admits has the tag equal to one of `values`.
fn pins(tokens: &[Token], tag: &str) -> Option<Vec<String>> {
    // OR binds weaker than AND.
    let ors = split_kw(tokens, "OR");
    if ors.len() > 1 {
        let mut all = Vec::new();
        for part in ors {
            all.extend(pins(part, tag)?);
        }
        crate::sort::sort(&mut all);
        all.dedup();
        return Some(all);
    }
    let ands = split_kw(tokens, "AND");
    if ands.len() > 1 {
        // The intersection of the pinned parts (any pinned part suffices).
        let mut result: Option<Vec<String>> = None;
        for part in ands {
            if let Some(values) = pins(part, tag) {
                result = Some(match result {
                    None => values,
                    Some(prev) => prev.into_iter().filter(|v| values.contains(v)).collect(),
                });
            }
        }
        return result;
    }
    match tokens {
        [open, inner @ .., close] if open.is_punct("(") && close.is_punct(")") && balanced(inner) => {
            pins(inner, tag)
        }
        _ => {
            let is_tag = |ts: &[Token]| match ts {
                [t] => t.name() == Some(tag),
                [t, c, ty] => t.name() == Some(tag) && c.is_punct("::") && ty.is_keyword("tag"),
                _ => false,
            };
            let eq = tokens.iter().position(|t| t.is_punct("="))?;
            let (left, right) = (&tokens[..eq], &tokens[eq + 1..]);
            match (left, right) {
                (l, [s]) if is_tag(l) => match &s.kind {
                    TokenKind::Str(v) => Some(vec![v.clone()]),
                    _ => None,
                },
                ([s], r) if is_tag(r) => match &s.kind {
                    TokenKind::Str(v) => Some(vec![v.clone()]),
                    _ => None,
                },
                _ => None,
            }
        }
    }
}

fn balanced(tokens: &[Token]) -> bool {
    let mut depth = 0;
    for t in tokens {
        if t.is_punct("(") {
            depth += 1;
        } else if t.is_punct(")") {
            depth -= 1;
            if depth < 0 {
                return false;
            }
        }
    }
    depth == 0
}

fn split_kw<'t>(tokens: &'t [Token], kw: &str) -> Vec<&'t [Token]> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, t) in tokens.iter().enumerate() {
        if t.is_punct("(") {
            depth += 1;
        } else if t.is_punct(")") {
            depth -= 1;
        } else if depth == 0 && t.is_keyword(kw) {
            out.push(&tokens[start..i]);
            start = i + 1;
        }
    }
    out.push(&tokens[start..]);
    out
}

/// The shard tag values a SELECT's WHERE pins (see the module doc), sorted
/// and de-duplicated; `None` when it does not pin them. Error: the statement
/// does not tokenize or is not a SELECT.
pub fn pinned_values(statement: &str, shard_tag: &str) -> Result<Option<Vec<String>>, String> {
    let s = parse_select(statement)?;
    // A subquery may aggregate over every value before the outer WHERE
    // filters: not pinned.
    if s.where_tokens.is_empty() || s.from_text.trim_start().starts_with('(') {
        return Ok(None);
    }
    Ok(pins(&s.where_tokens, shard_tag).map(|mut v| {
        crate::sort::sort(&mut v);
        v.dedup();
        v
    }))
}

// ---------------------------------------------------------------------------
// Plan
// ---------------------------------------------------------------------------

/// A merge partial asked of every shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Partial {
    Count,
    Sum,
    Min,
    Max,
    First,
    Last,
}

impl Partial {
    fn name(self) -> &'static str {
        match self {
            Partial::Count => "count",
            Partial::Sum => "sum",
            Partial::Min => "min",
            Partial::Max => "max",
            Partial::First => "first",
            Partial::Last => "last",
        }
    }
}

/// The merge of an aggregate statement.
#[derive(Debug, Clone)]
struct AggregatePlan {
    calls: Vec<OutCall>,
    partials: Vec<Partial>,
    /// The backend column of each partial (`_sq0`; `_sq0_<field>` once a
    /// wildcard is expanded).
    partial_columns: Vec<String>,
    single_selector: bool,
    /// Fields and tags next to one selector (`max(v), host`): their column
    /// names, values taken from the selected point's row.
    aux: Vec<String>,
    /// Output columns after `time`, in the statement's order.
    layout: Vec<Col>,
}

impl AggregatePlan {
    /// The plan with each wildcard call replaced by one call per field the
    /// shards answered a column for (`_sq0_<field>`), fields in name order,
    /// columns named `<name>_<field>` as InfluxDB names them. The field set
    /// is the union over the shards, as one InfluxDB expands `*` over the
    /// fields of all its shards.
    fn expand(&self, series: &[Series]) -> AggregatePlan {
        let mut out = AggregatePlan {
            calls: Vec::new(),
            partials: Vec::new(),
            partial_columns: Vec::new(),
            single_selector: false,
            aux: self.aux.clone(),
            layout: Vec::new(),
        };
        for col in &self.layout {
            let Col::Call(c) = *col else {
                out.layout.push(*col);
                continue;
            };
            let call = &self.calls[c];
            if !call.wildcard {
                let partials = call
                    .partials
                    .iter()
                    .map(|&p| {
                        out.partials.push(self.partials[p]);
                        out.partial_columns.push(self.partial_columns[p].clone());
                        out.partials.len() - 1
                    })
                    .collect();
                out.layout.push(Col::Call(out.calls.len()));
                out.calls.push(OutCall { partials, ..call.clone() });
                continue;
            }
            // The fields of the first partial (sum for mean, max for spread).
            let prefix = format!("{}_", self.partial_columns[call.partials[0]]);
            let mut fields: Vec<&str> = series
                .iter()
                .flat_map(|s| s.columns.iter().filter_map(|c| c.strip_prefix(&prefix)))
                .collect();
            crate::sort::sort_unstable(&mut fields);
            fields.dedup();
            for field in fields {
                let partials = call
                    .partials
                    .iter()
                    .map(|&p| {
                        out.partials.push(self.partials[p]);
                        out.partial_columns.push(format!("{}_{field}", self.partial_columns[p]));
                        out.partials.len() - 1
                    })
                    .collect();
                out.layout.push(Col::Call(out.calls.len()));
                out.calls.push(OutCall {
                    func: call.func.clone(),
                    wildcard: false,
                    field: field.to_string(),
                    column: format!("{}_{field}", call.column),
                    partials,
                });
            }
        }
        out
    }
}

/// An output column of an aggregate statement: the i-th call or the i-th
/// auxiliary field.
#[derive(Debug, Clone, Copy)]
enum Col {
    Call(usize),
    Aux(usize),
}

/// One output column of an aggregate statement.
#[derive(Debug, Clone)]
struct OutCall {
    func: String,
    /// `*` or `/regex/` argument, expanded per field at merge time.
    wildcard: bool,
    /// The field the function reads (unquoted).
    field: String,
    column: String,
    /// Indexes of its partials in the backend statement.
    partials: Vec<usize>,
}

#[derive(Debug, Clone)]
enum Mode {
    /// GROUP BY includes the shard tag: series are disjoint.
    Disjoint,
    /// Raw SELECT: rows merged by time. `aux`: referenced names, sorted
    /// (InfluxDB's `opt.Aux`), `None` for `SELECT *` (all columns).
    Raw { star: bool, aux: Option<Vec<String>> },
    /// Aggregates re-combined from partials.
    Aggregate(AggregatePlan),
}

/// The plan of one fanned-out SELECT over a tag-sharded measurement: the
/// statement every asked backend gets, and the merge of their answers (see
/// the module doc).
#[derive(Debug, Clone)]
pub struct ShardQuery {
    backend_statements: Vec<String>,
    shard_tag: String,
    mode: Mode,
    user_dims: Vec<String>,
    grouped_by_time: Option<i64>,
    fill: Fill,
    desc: bool,
    limit: u64,
    offset: u64,
    slimit: u64,
    soffset: u64,
    /// The LIMIT asked of the backends for a raw SELECT (0: none).
    pushed_limit: u64,
}

#[derive(Debug, Clone, PartialEq)]
enum Fill {
    None,
    Null,
    Previous,
    Linear,
    Number(Value),
}

const MERGEABLE: &[&str] = &["count", "sum", "min", "max", "first", "last", "spread", "mean"];

fn refuse(what: &str, tag: &str) -> String {
    format!(
        "{what} cannot be merged exactly across the shards of a measurement sharded by tag {tag:?}: \
         pin the tag in WHERE ({tag} = '...') or add GROUP BY {tag} to make the query exact"
    )
}

/// Plans a SELECT over a tag-sharded measurement (see the module doc).
/// Errors (answered 400): a statement that cannot be merged exactly (the
/// message names the function or construct and how to make it exact), or
/// one that does not parse as a SELECT.
pub fn plan(statement: &str, shard_tag: &str) -> Result<ShardQuery, String> {
    let s = parse_select(statement)?;
    if s.into {
        return Err(refuse("SELECT ... INTO", shard_tag));
    }
    if !s.from_plain || s.measurement.is_none() {
        return Err(refuse("a subquery, a regex or several measurements in FROM", shard_tag));
    }
    let fill = match s.fill.as_deref() {
        None | Some("null") => Fill::Null,
        Some("none") => Fill::None,
        Some("previous") => Fill::Previous,
        Some("linear") => Fill::Linear,
        Some(n) => {
            Fill::Number(serde_json::from_str::<Value>(n).ok().filter(Value::is_number).ok_or_else(|| {
                format!("fill({n}) is not a fill option (none, null, previous, linear or a number)")
            })?)
        }
    };
    let grouped_by_tag = s.dim_star || s.dim_tags.iter().any(|t| t == shard_tag);
    let mut q = ShardQuery {
        backend_statements: Vec::new(),
        shard_tag: shard_tag.to_string(),
        mode: Mode::Disjoint,
        user_dims: {
            // Tag key order, as `Tags.ID()` compares tag sets.
            let mut dims = s.dim_tags.clone();
            crate::sort::sort(&mut dims);
            dims.dedup();
            dims
        },
        grouped_by_time: s.time_dim.as_ref().map(|t| t.1),
        fill: fill.clone(),
        desc: s.desc,
        limit: s.limit,
        offset: s.offset,
        slimit: s.slimit,
        soffset: s.soffset,
        pushed_limit: 0,
    };
    let tail = |with_fill: Option<&str>, limits: (u64, u64), extra_tag: bool| {
        let mut out = format!("FROM {}", s.from_text);
        if let Some(w) = &s.where_text {
            out.push_str(&format!(" WHERE {w}"));
        }
        let mut dims = s.dims_text.clone();
        if extra_tag {
            dims.push(ident(shard_tag));
        }
        if !dims.is_empty() {
            out.push_str(&format!(" GROUP BY {}", dims.join(", ")));
        }
        if let Some(f) = with_fill {
            out.push_str(&format!(" fill({f})"));
        }
        if let Some(o) = &s.order_text {
            out.push_str(&format!(" ORDER {o}"));
        }
        if limits.0 > 0 {
            out.push_str(&format!(" LIMIT {}", limits.0));
        }
        if limits.1 > 0 {
            out.push_str(&format!(" OFFSET {}", limits.1));
        }
        if let Some(tz) = &s.tz_text {
            out.push_str(&format!(" tz{tz}"));
        }
        out
    };
    if grouped_by_tag {
        if s.dim_regex {
            return Err(refuse("GROUP BY /regex/", shard_tag));
        }
        q.backend_statements =
            vec![format!("SELECT {} {}", s.fields_text, tail(s.fill.as_deref(), (s.limit, s.offset), false))];
        return Ok(q);
    }
    if s.dim_regex {
        return Err(refuse("GROUP BY /regex/", shard_tag));
    }
    let has_call =
        s.fields.iter().any(|f| matches!(f.kind, FieldKind::Call { .. } | FieldKind::OtherCall { .. }));
    if !has_call {
        let star = s.fields.iter().any(|f| matches!(f.kind, FieldKind::Star));
        let aux = if star {
            None
        } else {
            let mut names: Vec<String> = Vec::new();
            for f in &s.fields {
                match &f.kind {
                    FieldKind::Ref(n) => names.push(n.clone()),
                    // Expressions: their references are not tracked; ties
                    // among different rows are then refused.
                    _ => names.push(String::new()),
                }
            }
            crate::sort::sort(&mut names);
            names.dedup();
            Some(names)
        };
        q.mode = Mode::Raw { star, aux };
        // LIMIT n OFFSET m is asked as LIMIT n+m+1 per series: the first
        // n+m rows of the merge are among each series' first n+m, and the
        // extra row shows whether a series' rows were cut inside a tie.
        if s.limit > 0 {
            q.pushed_limit = s.limit.saturating_add(s.offset).saturating_add(1);
        }
        q.backend_statements =
            vec![format!("SELECT {} {}", s.fields_text, tail(None, (q.pushed_limit, 0), true))];
        return Ok(q);
    }
    // Aggregates.
    let mut partials: Vec<(Partial, String)> = Vec::new();
    let mut calls = Vec::new();
    let mut add = |p: Partial, arg: &str| {
        partials.push((p, arg.to_string()));
        partials.len() - 1
    };
    // Column names as InfluxDB's SelectStatement.ColumnNames: aliases first,
    // then generated names with `_1`, `_2` on conflicts.
    let mut names: HashMap<String, usize> = HashMap::new();
    for f in &s.fields {
        if let Some(a) = &f.alias {
            names.insert(a.clone(), 1);
        }
    }
    let mut aux: Vec<String> = Vec::new();
    let mut aux_texts: Vec<String> = Vec::new();
    let mut layout: Vec<Col> = Vec::new();
    let mut any_wildcard = false;
    for f in &s.fields {
        let (name, arg, field, wildcard) = match &f.kind {
            FieldKind::Call { name, arg, field, wildcard } if MERGEABLE.contains(&name.as_str()) => {
                (name.clone(), arg.clone(), field.clone(), *wildcard)
            }
            FieldKind::Ref(r) => {
                let column = f.alias.clone().unwrap_or_else(|| r.clone());
                *names.entry(column.clone()).or_insert(0) += 1;
                layout.push(Col::Aux(aux.len()));
                aux.push(column);
                aux_texts.push(f.text.clone());
                continue;
            }
            FieldKind::Call { name, .. } | FieldKind::OtherCall { name } => {
                let what = if MERGEABLE.contains(&name.as_str()) {
                    format!("{name}() with this argument (a nested call or an expression)")
                } else {
                    format!("{name}()")
                };
                return Err(refuse(&what, shard_tag));
            }
            _ => return Err(refuse("a field or expression next to aggregate functions", shard_tag)),
        };
        let column = match &f.alias {
            Some(a) => a.clone(),
            None => {
                let mut column = name.clone();
                if let Some(&count) = names.get(&name) {
                    let mut count = count;
                    loop {
                        let resolved = format!("{name}_{count}");
                        if !names.contains_key(&resolved) {
                            names.insert(name.clone(), count + 1);
                            column = resolved;
                            break;
                        }
                        count += 1;
                    }
                }
                *names.entry(column.clone()).or_insert(0) += 1;
                column
            }
        };
        let ps = match name.as_str() {
            "count" => vec![add(Partial::Count, &arg)],
            "sum" => vec![add(Partial::Sum, &arg)],
            "min" => vec![add(Partial::Min, &arg)],
            "max" => vec![add(Partial::Max, &arg)],
            "first" => vec![add(Partial::First, &arg)],
            "last" => vec![add(Partial::Last, &arg)],
            "spread" => vec![add(Partial::Max, &arg), add(Partial::Min, &arg)],
            _ => vec![add(Partial::Sum, &arg), add(Partial::Count, &arg)],
        };
        layout.push(Col::Call(calls.len()));
        any_wildcard |= wildcard;
        calls.push(OutCall { func: name, field, column, partials: ps, wildcard });
    }
    // InfluxDB allows fields and tags next to one selector only. A wildcard
    // selector reads several fields: its time is the query's start.
    let one_selector = calls.len() == 1
        && !any_wildcard
        && ["min", "max", "first", "last"].contains(&calls[0].func.as_str());
    if !aux.is_empty() && !one_selector {
        return Err(refuse(
            "a field or tag next to aggregate functions (other than one selector)",
            shard_tag,
        ));
    }
    let single_selector = s.time_dim.is_none() && one_selector;
    let fields: Vec<String> = partials
        .iter()
        .enumerate()
        .map(|(i, (p, arg))| format!("{}({arg}) AS \"_sq{i}\"", p.name()))
        .chain(aux_texts)
        .collect();
    let backend_fill = if s.time_dim.is_none() {
        None
    } else if fill == Fill::None {
        Some("none")
    } else {
        Some("null")
    };
    q.backend_statements = vec![format!("SELECT {} {}", fields.join(", "), tail(backend_fill, (0, 0), true))];
    // fill(linear) interpolates integers (truncating) and floats
    // differently, and InfluxDB's JSON prints the float 3.0 as `3`: the field
    // types come from SHOW FIELD KEYS, asked in the same request.
    let fractional_fill = matches!(&fill, Fill::Number(n) if n.as_f64().is_some_and(|f| f.fract() != 0.0));
    if (fill == Fill::Linear || fractional_fill)
        && calls.iter().any(|c| c.func != "count" && c.func != "mean")
    {
        q.backend_statements.push(format!("SHOW FIELD KEYS FROM {}", s.from_text));
    }
    q.mode = Mode::Aggregate(AggregatePlan {
        calls,
        partial_columns: (0..partials.len()).map(|i| format!("_sq{i}")).collect(),
        partials: partials.into_iter().map(|p| p.0).collect(),
        single_selector,
        aux,
        layout,
    });
    Ok(q)
}

// ---------------------------------------------------------------------------
// Merge
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Series {
    name: Value,
    tags: BTreeMap<String, String>,
    columns: Vec<String>,
    values: Vec<Vec<Value>>,
    /// The whole series object (kept in Disjoint mode only, else null).
    original: Value,
}

/// The series of a result, moved out of it; `disjoint`: keep each series
/// object whole in `original` (rows not split out).
fn read_series(result: Value, disjoint: bool) -> Vec<Series> {
    let Value::Object(mut result) = result else { return Vec::new() };
    let Some(Value::Array(list)) = result.remove("series") else { return Vec::new() };
    list.into_iter()
        .filter_map(|s| {
            let Value::Object(mut obj) = s else { return None };
            let tags = obj
                .get("tags")
                .and_then(Value::as_object)
                .map(|t| {
                    t.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect()
                })
                .unwrap_or_default();
            let columns = obj
                .get("columns")
                .and_then(Value::as_array)
                .map(|c| c.iter().map(|c| c.as_str().unwrap_or_default().to_string()).collect())
                .unwrap_or_default();
            let name = obj.get("name").cloned().unwrap_or(Value::Null);
            let values = if disjoint {
                Vec::new()
            } else {
                match obj.remove("values") {
                    Some(Value::Array(rows)) => rows
                        .into_iter()
                        .map(|r| match r {
                            Value::Array(row) => row,
                            _ => Vec::new(),
                        })
                        .collect(),
                    _ => Vec::new(),
                }
            };
            let original = if disjoint { Value::Object(obj) } else { Value::Null };
            Some(Series { name, tags, columns, values, original })
        })
        .collect()
}

/// A point's time as ns since the epoch: an epoch number as is, an RFC 3339
/// string (`2020-01-01T00:00:00.5Z`, `+01:00` offsets) parsed.
fn time_key(v: &Value) -> i128 {
    match v {
        Value::Number(n) => n.as_i64().map(i128::from).unwrap_or_else(|| n.as_f64().unwrap_or(0.0) as i128),
        Value::String(s) => parse_rfc3339(s).unwrap_or(0),
        _ => 0,
    }
}

fn parse_rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut frac: i128 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        let mut padded = digits.to_string();
        while padded.len() < 9 {
            padded.push('0');
        }
        frac = padded.get(..9)?.parse().ok()?;
    }
    let offset_s: i64 = match b.get(i) {
        Some(b'Z') => 0,
        Some(&sign) if sign == b'+' || sign == b'-' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let v = oh * 3600 + om * 60;
            if sign == b'-' {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset_s;
    Some(i128::from(secs) * 1_000_000_000 + frac)
}

/// Orders JSON values as InfluxDB's reducers compare them: numbers by
/// value, strings bytewise, false < true; null lowest.
fn cmp_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)).unwrap_or(Ordering::Equal),
        },
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        _ => Ordering::Equal,
    }
}

/// A float as Go's encoding/json prints it (`3` for 3.0), as a JSON value.
fn float_value(f: f64) -> Value {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 {
        Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

fn is_integer(v: &Value) -> bool {
    matches!(v, Value::Number(n) if n.is_i64() || n.is_u64())
}

fn add_values(a: &Value, b: &Value) -> Result<Value, String> {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) if is_integer(a) && is_integer(b) => x
            .checked_add(y)
            .map(Value::from)
            .ok_or_else(|| "an integer sum overflows across shards".to_string()),
        _ => Ok(float_value(a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0))),
    }
}

fn sub_values(a: &Value, b: &Value) -> Value {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) if is_integer(a) && is_integer(b) => {
            x.checked_sub(y).map_or(Value::Null, Value::from)
        }
        _ => float_value(a.as_f64().unwrap_or(0.0) - b.as_f64().unwrap_or(0.0)),
    }
}

/// An output series: measurement name and the user's GROUP BY tags (key, value).
type OutputKey = (String, Vec<(String, String)>);

/// One bucket of an output series: its reported time and, per partial, the
/// shards' contributions.
type Bucket = (Value, Vec<Vec<Contribution>>);

/// One value of a partial for a bucket: the value, the reported time, the
/// contributing tag value.
#[derive(Debug, Clone)]
struct Contribution {
    value: Value,
    time: Value,
    group: String,
    /// The row's auxiliary values (fields and tags next to a selector).
    aux: Vec<Value>,
}

impl ShardQuery {
    /// The statements every asked backend gets, in one request (see the
    /// module doc): the SELECT, and `SHOW FIELD KEYS FROM m` when the merge
    /// needs the field types (`fill(linear)`).
    pub fn backend_statements(&self) -> &[String] {
        &self.backend_statements
    }

    /// [`ShardQuery::backend_statements`] as the `q` of one request.
    pub fn backend_query(&self) -> String {
        self.backend_statements.join("; ")
    }

    /// Merges the asked backends' results (see the module doc): `answers`
    /// holds `(backend index, result)`, `owner(v)` the asked backend whose
    /// answer counts for shard tag value `v`. Returns a backend's error
    /// result as it is when one failed (no partial answer), the merged
    /// result otherwise, or `Err` (answered 400) when the data make the
    /// merge inexact.
    pub fn merge(
        &self,
        answers: Vec<(usize, Vec<StatementResult>)>,
        owner: &dyn Fn(&str) -> Option<usize>,
        epoch: Option<&str>,
    ) -> Result<StatementResult, String> {
        let mut kept: Vec<Series> = Vec::new();
        let mut messages: Vec<Value> = Vec::new();
        let mut field_types: HashMap<String, String> = HashMap::new();
        for (backend, results) in &answers {
            // A failed statement is the answer (InfluxDB stops a request at
            // its first failed statement, so later results may be missing).
            if let Some(failed) = results.iter().find(|r| r.has_error()) {
                let mut v = failed.to_value();
                if let Some(o) = v.as_object_mut() {
                    o.remove("statement_id");
                }
                return Ok(StatementResult::from(v));
            }
            if results.len() != self.backend_statements.len() {
                return Err(format!(
                    "a shard answered {} results to {} statements",
                    results.len(),
                    self.backend_statements.len()
                ));
            }
            if let Some(keys) = results.get(1) {
                for s in read_series(keys.to_value(), false) {
                    for row in &s.values {
                        if let (Some(Value::String(k)), Some(Value::String(t))) = (row.first(), row.get(1)) {
                            field_types.entry(k.clone()).or_insert_with(|| t.clone());
                        }
                    }
                }
            }
            let Some(result) = results.first() else { continue };
            let v = result.to_value();
            if v.get("partial") == Some(&Value::Bool(true)) {
                return Err(format!(
                    "a shard answered only part of the result (\"partial\": true, its max-row-limit or chunking), \
                     so the merge over tag {:?} would be wrong; narrow the query or pin the tag in WHERE",
                    self.shard_tag
                ));
            }
            if let Some(Value::Array(ms)) = v.get("messages") {
                for m in ms {
                    if !messages.contains(m) {
                        messages.push(m.clone());
                    }
                }
            }
            for s in read_series(v, matches!(self.mode, Mode::Disjoint)) {
                let value = s.tags.get(&self.shard_tag).map_or("", String::as_str);
                if owner(value) == Some(*backend) {
                    kept.push(s);
                }
            }
        }
        let mut out: Vec<Value> = match &self.mode {
            Mode::Disjoint => {
                crate::sort::sort_by(&mut kept, series_order);
                kept.into_iter().map(|s| s.original).collect()
            }
            Mode::Raw { star, aux } => self.merge_raw(kept, *star, aux.as_deref())?,
            Mode::Aggregate(plan) => self.merge_aggregate(kept, plan, &field_types)?,
        };
        if self.slimit > 0 || self.soffset > 0 {
            out = limit_series(out, self.slimit, self.soffset);
        }
        // InfluxDB applies SLIMIT/SOFFSET to the tag sets in ascending order
        // (`LimitTagSets`), then emits the series in descending order with
        // `ORDER BY time DESC` (the merge heaps compare names and tags in
        // reverse).
        if self.desc {
            out.reverse();
        }
        if let Some(epoch) = epoch.map(str::trim).filter(|e| !e.is_empty()) {
            for series in &mut out {
                to_epoch(series, epoch);
            }
        }
        let mut obj = Map::new();
        if !out.is_empty() {
            obj.insert("series".to_string(), Value::Array(out));
        }
        if !messages.is_empty() {
            obj.insert("messages".to_string(), Value::Array(messages));
        }
        Ok(StatementResult::from(Value::Object(obj)))
    }

    /// Output series key: name and the user's tag dimensions.
    fn group_key(&self, s: &Series) -> OutputKey {
        let tags =
            self.user_dims.iter().map(|k| (k.clone(), s.tags.get(k).cloned().unwrap_or_default())).collect();
        (s.name.as_str().unwrap_or_default().to_string(), tags)
    }

    /// Groups series by output key, in InfluxDB's series order.
    fn by_output(&self, kept: Vec<Series>) -> Vec<(OutputKey, Vec<Series>)> {
        let mut map: BTreeMap<OutputKey, Vec<Series>> = BTreeMap::new();
        for s in kept {
            map.entry(self.group_key(&s)).or_default().push(s);
        }
        map.into_iter().collect()
    }

    fn series_value(
        &self,
        key: &(String, Vec<(String, String)>),
        columns: Vec<String>,
        rows: Vec<Vec<Value>>,
    ) -> Value {
        let mut obj = Map::new();
        obj.insert("name".to_string(), Value::String(key.0.clone()));
        if !self.user_dims.is_empty() {
            let tags: Map<String, Value> =
                key.1.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
            obj.insert("tags".to_string(), Value::Object(tags));
        }
        obj.insert("columns".to_string(), Value::Array(columns.into_iter().map(Value::String).collect()));
        obj.insert("values".to_string(), Value::Array(rows.into_iter().map(Value::Array).collect()));
        Value::Object(obj)
    }

    fn window(&self, rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
        let skip = usize::try_from(self.offset).unwrap_or(usize::MAX);
        let mut rows: Vec<Vec<Value>> = rows.into_iter().skip(skip).collect();
        if self.limit > 0 {
            rows.truncate(usize::try_from(self.limit).unwrap_or(usize::MAX));
        }
        rows
    }

    fn merge_raw(&self, kept: Vec<Series>, star: bool, aux: Option<&[String]>) -> Result<Vec<Value>, String> {
        let tag = &self.shard_tag;
        let mut out = Vec::new();
        for (key, group) in self.by_output(kept) {
            // Columns.
            let mut columns: Vec<String> = group[0].columns.clone();
            let same = group.iter().all(|s| s.columns == columns);
            if star {
                let mut names: Vec<String> =
                    group.iter().flat_map(|s| s.columns.iter().skip(1).cloned()).collect::<Vec<_>>();
                if !self.user_dims.contains(tag) {
                    names.push(tag.clone());
                }
                names.retain(|n| !self.user_dims.contains(n));
                crate::sort::sort(&mut names);
                names.dedup();
                columns = std::iter::once("time".to_string()).chain(names).collect();
            } else if !same {
                return Err("shards answered different columns for one SELECT".to_string());
            }
            let aux_names: Vec<String> = match aux {
                Some(a) => a.to_vec(),
                None => columns.iter().skip(1).cloned().collect(),
            };
            let aux_idx: Vec<Option<usize>> =
                aux_names.iter().map(|n| columns.iter().position(|c| c == n && !n.is_empty())).collect();
            let mut rows: Vec<Vec<Value>> = Vec::new();
            // Times at which a series cut by the pushed-down LIMIT may have
            // more rows than it returned (its last two rows share the time).
            let mut cut_ties: Vec<i128> = Vec::new();
            for s in &group {
                let n = s.values.len();
                if self.pushed_limit > 0 && n as u64 >= self.pushed_limit && n >= 2 {
                    let last = time_key(row_time(&s.values[n - 1]));
                    if time_key(row_time(&s.values[n - 2])) == last {
                        cut_ties.push(last);
                    }
                }
                let map: Vec<Option<usize>> =
                    columns.iter().map(|c| s.columns.iter().position(|x| x == c)).collect();
                for r in &s.values {
                    let row: Vec<Value> = columns
                        .iter()
                        .zip(&map)
                        .map(|(c, m)| match m {
                            Some(i) => r.get(*i).cloned().unwrap_or(Value::Null),
                            None if star && c == tag => match s.tags.get(tag) {
                                Some(v) if !v.is_empty() => Value::String(v.clone()),
                                _ => Value::Null,
                            },
                            None => Value::Null,
                        })
                        .collect();
                    rows.push(row);
                }
            }
            let desc = self.desc;
            let aux_cmp = |a: &Vec<Value>, b: &Vec<Value>| -> Option<Ordering> {
                for idx in &aux_idx {
                    let (Some(i), true) = (idx, true) else { return None };
                    match (&a[*i], &b[*i]) {
                        (Value::String(x), Value::String(y)) => match x.cmp(y) {
                            Ordering::Equal => continue,
                            o => return Some(if desc { o.reverse() } else { o }),
                        },
                        _ => return None,
                    }
                }
                None
            };
            crate::sort::sort_by(&mut rows, |a, b| {
                let t = time_key(row_time(a)).cmp(&time_key(row_time(b)));
                let t = if desc { t.reverse() } else { t };
                t.then_with(|| aux_cmp(a, b).unwrap_or(Ordering::Equal))
            });
            // Only ties that touch the window matter.
            let off = usize::try_from(self.offset).unwrap_or(usize::MAX).min(rows.len());
            let end = if self.limit > 0 {
                usize::try_from(self.offset.saturating_add(self.limit)).unwrap_or(usize::MAX).min(rows.len())
            } else {
                rows.len()
            };
            if end > off {
                let last = time_key(row_time(&rows[end - 1]));
                if cut_ties.iter().any(|&t| if desc { last <= t } else { last >= t }) {
                    return Err(format!(
                        "LIMIT/OFFSET end among rows of one value of tag {tag:?} that share a time, which one \
                         InfluxDB orders by its storage layout; pin the tag in WHERE ({tag} = '...') or add \
                         GROUP BY {tag} to make the query exact"
                    ));
                }
            }
            for (i, pair) in rows.windows(2).enumerate() {
                if i + 1 < off || i >= end {
                    continue;
                }
                let same_time = time_key(row_time(&pair[0])) == time_key(row_time(&pair[1]));
                if same_time && pair[0] != pair[1] && aux_cmp(&pair[0], &pair[1]).is_none() {
                    return Err(format!(
                        "rows of different series share the time {}: one InfluxDB orders them by its storage \
                         layout, which a fan-out over the shards of tag {tag:?} cannot reproduce; pin the tag in \
                         WHERE ({tag} = '...') or add GROUP BY {tag} to make the query exact",
                        row_time(&pair[0])
                    ));
                }
            }
            let rows = self.window(rows);
            if !rows.is_empty() {
                out.push(self.series_value(&key, columns, rows));
            }
        }
        Ok(out)
    }

    fn merge_aggregate(
        &self,
        kept: Vec<Series>,
        plan: &AggregatePlan,
        field_types: &HashMap<String, String>,
    ) -> Result<Vec<Value>, String> {
        let expanded;
        let plan = if plan.calls.iter().any(|c| c.wildcard) {
            expanded = plan.expand(&kept);
            &expanded
        } else {
            plan
        };
        let AggregatePlan { calls, partials, single_selector, aux, layout, .. } = plan;
        let single_selector = *single_selector;
        let tag = &self.shard_tag;
        let mut out = Vec::new();
        for (key, group) in self.by_output(kept) {
            // bucket key -> (time, contributions per partial)
            let mut buckets: BTreeMap<i128, Bucket> = BTreeMap::new();
            for s in &group {
                let value = s.tags.get(tag).cloned().unwrap_or_default();
                let idx: Vec<Option<usize>> = plan
                    .partial_columns
                    .iter()
                    .map(|name| s.columns.iter().position(|c| c == name))
                    .collect();
                let aux_idx: Vec<Option<usize>> =
                    aux.iter().map(|a| s.columns.iter().position(|c| c == a)).collect();
                for r in &s.values {
                    let time = r.first().cloned().unwrap_or(Value::Null);
                    let bucket = if self.grouped_by_time.is_some() { time_key(&time) } else { 0 };
                    let entry = buckets
                        .entry(bucket)
                        .or_insert_with(|| (time.clone(), vec![Vec::new(); partials.len()]));
                    for (i, ix) in idx.iter().enumerate() {
                        let v = ix.and_then(|ix| r.get(ix)).cloned().unwrap_or(Value::Null);
                        if v.is_null() || (partials[i] == Partial::Count && v.as_i64() == Some(0)) {
                            continue;
                        }
                        let aux_values = aux_idx
                            .iter()
                            .map(|ix| ix.and_then(|ix| r.get(ix)).cloned().unwrap_or(Value::Null));
                        entry.1[i].push(Contribution {
                            value: v,
                            time: time.clone(),
                            group: value.clone(),
                            aux: aux_values.collect(),
                        });
                    }
                }
            }
            let mut bucket_list: Vec<(i128, Bucket)> = buckets.into_iter().collect();
            if self.desc {
                bucket_list.reverse();
            }
            // Per column: Some(value) or None (empty).
            let mut times: Vec<Value> = Vec::new();
            let mut keys: Vec<i128> = Vec::new();
            let mut cols: Vec<Vec<Option<Value>>> = vec![Vec::new(); calls.len()];
            let mut aux_rows: Vec<Vec<Value>> = Vec::new();
            for (bkey, (time, contribs)) in bucket_list {
                let mut row_time = time;
                let mut row_aux = vec![Value::Null; aux.len()];
                for (c, call) in calls.iter().enumerate() {
                    let (v, t, a) =
                        combine(call, partials, &contribs, single_selector, !aux.is_empty(), tag)?;
                    if single_selector {
                        if let Some(t) = t {
                            row_time = t;
                        }
                    }
                    if let Some(a) = a {
                        row_aux = a;
                    }
                    cols[c].push(v);
                }
                aux_rows.push(row_aux);
                times.push(row_time);
                keys.push(bkey);
            }
            // Fill.
            let n = times.len();
            let mut rows: Vec<Vec<Value>> = Vec::new();
            let mut filled: Vec<Vec<Value>> = vec![vec![Value::Null; n]; calls.len()];
            for (c, call) in calls.iter().enumerate() {
                let col = &cols[c];
                let mut prev: Option<(usize, Value)> = None;
                for i in 0..n {
                    filled[c][i] = match &col[i] {
                        Some(v) => {
                            prev = Some((i, v.clone()));
                            v.clone()
                        }
                        None => match (&self.fill, self.grouped_by_time) {
                            (Fill::Null, _) if call.func == "count" => Value::from(0),
                            // castToInteger truncates the fill number for an
                            // integer iterator.
                            (Fill::Number(x), _) if integer_column(call, field_types) => {
                                Value::from(x.as_f64().unwrap_or(0.0) as i64)
                            }
                            (Fill::Number(x), _) => x.clone(),
                            (Fill::Previous, _) => prev.as_ref().map_or(Value::Null, |p| p.1.clone()),
                            (Fill::Linear, Some(interval)) => {
                                match (&prev, (i + 1..n).find(|&j| col[j].is_some())) {
                                    (Some((pi, pv)), Some(ni)) => {
                                        let nv = col[ni].clone().unwrap_or(Value::Null);
                                        linear(
                                            keys[i],
                                            keys[*pi],
                                            keys[ni],
                                            interval,
                                            pv,
                                            &nv,
                                            integer_column(call, field_types),
                                            call.func == "mean"
                                                || field_types.get(&call.field).map(String::as_str)
                                                    == Some("float"),
                                            col,
                                        )?
                                    }
                                    _ => Value::Null,
                                }
                            }
                            _ => Value::Null,
                        },
                    };
                }
            }
            for i in 0..n {
                let any = cols.iter().any(|c| c[i].is_some());
                if self.fill == Fill::None && !any {
                    continue;
                }
                let mut row = vec![times[i].clone()];
                for col in layout {
                    row.push(match *col {
                        Col::Call(c) => filled[c][i].clone(),
                        Col::Aux(a) => aux_rows[i].get(a).cloned().unwrap_or(Value::Null),
                    });
                }
                rows.push(row);
            }
            let rows = self.window(rows);
            if !rows.is_empty() {
                let columns = std::iter::once("time".to_string())
                    .chain(layout.iter().map(|col| match *col {
                        Col::Call(c) => calls[c].column.clone(),
                        Col::Aux(a) => aux[a].clone(),
                    }))
                    .collect();
                out.push(self.series_value(&key, columns, rows));
            }
        }
        Ok(out)
    }
}

/// Whether InfluxDB computes `call`'s column with an integer iterator:
/// `count`, or a function other than `mean` over an integer field.
fn integer_column(call: &OutCall, field_types: &HashMap<String, String>) -> bool {
    call.func == "count"
        || (call.func != "mean"
            && matches!(field_types.get(&call.field).map(String::as_str), Some("integer" | "unsigned")))
}

/// InfluxDB's `linearFloat` / `linearInteger` (`query/linear.go`) between
/// buckets (times in ns, divided by the interval as the fill iterator does).
#[allow(clippy::too_many_arguments)]
fn linear(
    at: i128,
    prev_t: i128,
    next_t: i128,
    interval: i64,
    prev: &Value,
    next: &Value,
    integer_type: bool,
    float_type: bool,
    col: &[Option<Value>],
) -> Result<Value, String> {
    let i = i128::from(interval.max(1));
    let (x, x1, x2) = ((at / i) as i64, (prev_t / i) as i64, (next_t / i) as i64);
    let (y1, y2) = (prev.as_f64().unwrap_or(0.0), next.as_f64().unwrap_or(0.0));
    // Wrapping, as a release build computes it: the times are a backend's
    // answer, any numbers (InfluxDB's own stay within ±2^63 ns).
    let (dx, dx1) = (x2.wrapping_sub(x1), x.wrapping_sub(x1));
    let m = (y2 - y1) / dx as f64;
    let fv = m * dx1 as f64 + y1;
    let all_integral = col.iter().flatten().all(is_integer);
    if integer_type || (!float_type && all_integral && fv.fract() == 0.0) {
        if let (Some(a), Some(b)) = (prev.as_i64(), next.as_i64()) {
            let m = b.wrapping_sub(a) as f64 / dx as f64;
            return Ok(Value::from((m * dx1 as f64 + a as f64) as i64));
        }
    }
    if !float_type && all_integral && fv.fract() != 0.0 {
        return Err("fill(linear) across shards: the column's type (integer or float) cannot be told from \
                    integral values, and the two interpolate differently; pin the shard tag in WHERE or GROUP BY it"
            .to_string());
    }
    Ok(float_value(fv))
}

/// A column's value for a bucket (`None`: no shard had data), the selected
/// point's time and auxiliary values (selectors).
type Selected = (Option<Value>, Option<Value>, Option<Vec<Value>>);

/// Combines one output column's partials for a bucket: the value (`None`
/// when no shard had data) and, for selectors, the selected point's time.
fn combine(
    call: &OutCall,
    partials: &[Partial],
    contribs: &[Vec<Contribution>],
    single_selector: bool,
    has_aux: bool,
    tag: &str,
) -> Result<Selected, String> {
    let part = |i: usize| &contribs[call.partials[i]];
    let sum = |cs: &[Contribution]| -> Result<Option<Value>, String> {
        let mut acc: Option<Value> = None;
        for c in cs {
            acc = Some(match acc {
                None => c.value.clone(),
                Some(a) => add_values(&a, &c.value)?,
            });
        }
        Ok(acc)
    };
    // Selector: picks the best contribution with InfluxDB's reducer rule.
    let select = |cs: &[Contribution], p: Partial| -> Result<Option<Contribution>, String> {
        if matches!(p, Partial::First | Partial::Last) && !single_selector {
            let mut groups: Vec<&str> = cs.iter().map(|c| c.group.as_str()).collect();
            crate::sort::sort_unstable(&mut groups);
            groups.dedup();
            // Several values in one bucket: exact only if they all report
            // the same (then any of them is the answer).
            let all_same = cs.windows(2).all(|w| w[0].value == w[1].value && w[0].aux == w[1].aux);
            if groups.len() > 1 && !all_same {
                return Err(format!(
                    "{}() over several values of tag {tag:?} in one bucket: InfluxDB reports the bucket start, \
                     not the point's time, so the shards' {}() values cannot be ordered; pin the tag in WHERE \
                     ({tag} = '...') or add GROUP BY {tag} to make the query exact",
                    p.name(),
                    p.name()
                ));
            }
        }
        let mut best: Option<&Contribution> = None;
        for c in cs {
            best = Some(match best {
                None => c,
                Some(b) => {
                    let (tc, tb) = (time_key(&c.time), time_key(&b.time));
                    let vc = cmp_values(&c.value, &b.value);
                    let better = match p {
                        Partial::Min => vc == Ordering::Less || (vc == Ordering::Equal && tc < tb),
                        Partial::Max => vc == Ordering::Greater || (vc == Ordering::Equal && tc < tb),
                        Partial::First => tc < tb || (tc == tb && vc == Ordering::Greater),
                        _ => tc > tb || (tc == tb && vc == Ordering::Greater),
                    };
                    if better {
                        c
                    } else {
                        b
                    }
                }
            });
        }
        if let (Some(b), Partial::First | Partial::Last) = (best, p) {
            // Several values of the tag at the selected time: one InfluxDB
            // picks among them by its layout (not by `FloatLastReduce`'s
            // value rule, as measured on 1.6.7), so no shard order is exact.
            let tie = cs.iter().any(|c| {
                c.group != b.group
                    && time_key(&c.time) == time_key(&b.time)
                    && (c.value != b.value || (has_aux && c.aux != b.aux))
            });
            if tie {
                return Err(format!(
                    "{}() has points of several values of tag {tag:?} at the selected time {}: one InfluxDB picks \
                     among them by its storage layout, which a fan-out cannot reproduce; pin the tag in WHERE \
                     ({tag} = '...') or add GROUP BY {tag} to make the query exact",
                    p.name(),
                    b.time
                ));
            }
        }
        if let (Some(b), Partial::Min | Partial::Max, true) = (best, p, has_aux) {
            // Equal values of several tag values, with different fields or
            // tags next to the selector: which row is reported is decided by
            // time when it is the point's (earlier wins), else by layout.
            let tie = cs.iter().any(|c| {
                c.group != b.group
                    && cmp_values(&c.value, &b.value) == Ordering::Equal
                    && (!single_selector || time_key(&c.time) == time_key(&b.time))
                    && c.aux != b.aux
            });
            if tie {
                return Err(format!(
                    "{}() selects equal values of several values of tag {tag:?} whose other fields differ: one \
                     InfluxDB picks among them by its storage layout; pin the tag in WHERE ({tag} = '...') or \
                     add GROUP BY {tag} to make the query exact",
                    p.name()
                ));
            }
        }
        Ok(best.cloned())
    };
    Ok(match call.func.as_str() {
        "count" | "sum" => (sum(part(0))?, None, None),
        "min" | "max" | "first" | "last" => {
            let p = partials[call.partials[0]];
            match select(part(0), p)? {
                Some(c) => (Some(c.value), Some(c.time), Some(c.aux)),
                None => (None, None, None),
            }
        }
        "spread" => {
            let max = select(part(0), Partial::Max)?;
            let min = select(part(1), Partial::Min)?;
            match (max, min) {
                (Some(a), Some(b)) => (Some(sub_values(&a.value, &b.value)), None, None),
                _ => (None, None, None),
            }
        }
        _ => {
            // mean = sum / count
            let s = sum(part(0))?;
            let n = sum(part(1))?;
            match (s, n) {
                (Some(s), Some(n)) if n.as_f64().unwrap_or(0.0) > 0.0 => {
                    (Some(float_value(s.as_f64().unwrap_or(0.0) / n.as_f64().unwrap_or(1.0))), None, None)
                }
                _ => (None, None, None),
            }
        }
    })
}

/// Rewrites the first column of `series`' rows from RFC 3339 to an integer
/// count of `epoch` units, as InfluxDB's `convertToEpoch`
/// (`services/httpd/handler.go`): `u`, `ms`, `s`, `m`, `h`, anything else
/// nanoseconds; Go's division truncates toward zero, as Rust's does.
fn to_epoch(series: &mut Value, epoch: &str) {
    let divisor: i128 = match epoch {
        "u" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => 1,
    };
    let Some(Value::Array(rows)) = series.get_mut("values") else { return };
    for row in rows {
        if let Some(first) = row.as_array_mut().and_then(|r| r.first_mut()) {
            if let Some(ns) = first.as_str().and_then(parse_rfc3339) {
                *first = i64::try_from(ns / divisor).map_or(Value::Null, Value::from);
            }
        }
    }
}

/// Applies SOFFSET/SLIMIT to `series` (in output order) as InfluxDB 1.6's
/// `LimitTagSets` does: over the tag sets sorted by their key from
/// `tsdb.MakeTagsKey`, the grouped tag keys a series *has* (non-empty
/// values), sorted, joined by `|`, then `|` and their values joined by `|`
/// (so a series without one of the tags sorts by a shorter key: `host|h9`
/// before `host|region|h0|r0`, measured); the chosen series keep their
/// output order. (InfluxDB applies it per TSM shard: over data spanning
/// several shard groups one InfluxDB may answer more series, see the
/// module doc.)
fn limit_series(series: Vec<Value>, slimit: u64, soffset: u64) -> Vec<Value> {
    let key = |s: &Value| -> Vec<u8> {
        let mut present: Vec<(&str, &str)> = s
            .get("tags")
            .and_then(Value::as_object)
            .map(|t| {
                t.iter()
                    .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
                    .filter(|(_, v)| !v.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        crate::sort::sort_unstable(&mut present);
        let keys: Vec<&str> = present.iter().map(|p| p.0).collect();
        let values: Vec<&str> = present.iter().map(|p| p.1).collect();
        let mut out = s.get("name").and_then(Value::as_str).unwrap_or_default().as_bytes().to_vec();
        out.push(0);
        if !present.is_empty() {
            out.extend_from_slice(keys.join("|").as_bytes());
            out.push(b'|');
            out.extend_from_slice(values.join("|").as_bytes());
        }
        out
    };
    let mut order: Vec<usize> = (0..series.len()).collect();
    crate::sort::sort_by_key(&mut order, |&i| key(&series[i]));
    let skip = usize::try_from(soffset).unwrap_or(usize::MAX);
    let take = if slimit > 0 { usize::try_from(slimit).unwrap_or(usize::MAX) } else { usize::MAX };
    let mut chosen = vec![false; series.len()];
    for &i in order.iter().skip(skip).take(take) {
        chosen[i] = true;
    }
    series.into_iter().zip(chosen).filter_map(|(s, keep)| keep.then_some(s)).collect()
}

/// The first column of a row (the time), `null` for an empty row.
fn row_time(row: &[Value]) -> &Value {
    row.first().unwrap_or(&Value::Null)
}

/// InfluxDB's series order: by name, then tag set (values in key order).
fn series_order(a: &Series, b: &Series) -> Ordering {
    let na = a.name.as_str().unwrap_or_default();
    let nb = b.name.as_str().unwrap_or_default();
    na.cmp(nb).then_with(|| a.tags.iter().cmp(b.tags.iter()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pinned_values_of_where_clauses() {
        let p = |s: &str| pinned_values(s, "customer_id").unwrap();
        assert_eq!(p("SELECT v FROM m WHERE customer_id = 'a'"), Some(vec!["a".to_string()]));
        assert_eq!(p(r#"SELECT v FROM m WHERE customer_id = 'a\"b\'c'"#), Some(vec![r#"a"b'c"#.to_string()]));
        assert_eq!(p("SELECT v FROM m WHERE 'a' = \"customer_id\""), Some(vec!["a".to_string()]));
        assert_eq!(
            p("SELECT v FROM m WHERE (customer_id = 'b' OR customer_id = 'a') AND time > now() - 1h"),
            Some(vec!["a".to_string(), "b".to_string()])
        );
        assert_eq!(
            p("SELECT v FROM m WHERE host = 'x' AND (customer_id::tag = 'a')"),
            Some(vec!["a".to_string()])
        );
        assert_eq!(p("SELECT v FROM m WHERE customer_id != 'a'"), None);
        assert_eq!(p("SELECT v FROM m WHERE customer_id =~ /a/"), None);
        assert_eq!(p("SELECT v FROM m WHERE customer_id = 'a' OR host = 'x'"), None);
        assert_eq!(p("SELECT v FROM m"), None);
        assert_eq!(p("SELECT v FROM m WHERE other = 'a'"), None);
        assert_eq!(p("SELECT max(v) FROM (SELECT max(v) AS v FROM m) WHERE customer_id = 'a'"), None);
    }

    /// `time(10µ)` is one duration token (statement.rs's tokenizer, as
    /// influxql's scanner); shard_query's own tokenizer, now gone, split it
    /// at the `µ` and refused the interval.
    #[test]
    fn group_by_time_reads_a_micro_sign_duration() {
        let s = parse_select("SELECT count(v) FROM m WHERE time >= 0 GROUP BY time(10µ)").unwrap();
        assert_eq!(s.time_dim, Some(("time(10µ)".to_string(), 10_000)));
    }

    #[test]
    fn plans_name_partials_and_add_the_shard_tag() {
        let q = plan(
            "SELECT mean(v) AS m, spread(v) FROM cpu WHERE time >= 0 GROUP BY time(1m) fill(linear) LIMIT 3",
            "c",
        )
        .unwrap();
        assert_eq!(q.backend_statements()[1], "SHOW FIELD KEYS FROM cpu");
        assert_eq!(
            q.backend_statements()[0],
            "SELECT sum(v) AS \"_sq0\", count(v) AS \"_sq1\", max(v) AS \"_sq2\", min(v) AS \"_sq3\" FROM cpu \
             WHERE time >= 0 GROUP BY time(1m), \"c\" fill(null)"
        );
        let q = plan("SELECT * FROM cpu ORDER BY time DESC LIMIT 2 SLIMIT 1", "c").unwrap();
        assert_eq!(q.backend_query(), "SELECT * FROM cpu GROUP BY \"c\" ORDER BY time DESC LIMIT 3");
        let q = plan("SELECT percentile(v, 90) FROM cpu GROUP BY c SLIMIT 1", "c").unwrap();
        assert_eq!(q.backend_query(), "SELECT percentile(v, 90) FROM cpu GROUP BY c");
    }

    #[test]
    fn refuses_what_cannot_be_merged() {
        for (q, f) in [
            ("SELECT percentile(v, 90) FROM cpu", "percentile()"),
            ("SELECT median(v) FROM cpu", "median()"),
            ("SELECT count(distinct(v)) FROM cpu", "count()"),
            ("SELECT top(v, 3) FROM cpu", "top()"),
            ("SELECT derivative(mean(v)) FROM cpu GROUP BY time(1m)", "derivative()"),
            ("SELECT mean(v) FROM (SELECT v FROM cpu)", "subquery"),
            ("SELECT mean(v), host FROM cpu", "other than one selector"),
            ("SELECT max(v), min(v), host FROM cpu", "other than one selector"),
        ] {
            let e = plan(q, "customer_id").unwrap_err();
            assert!(e.contains(f) && e.contains("GROUP BY customer_id"), "{q}: {e}");
        }
    }

    fn result(v: Value) -> StatementResult {
        StatementResult::from(v)
    }

    fn one(v: Value) -> Vec<StatementResult> {
        vec![result(v)]
    }

    #[test]
    fn merges_counts_from_owners_only() {
        let q = plan("SELECT count(v) FROM m", "c").unwrap();
        let a = json!({"series":[
            {"name":"m","tags":{"c":"x"},"columns":["time","_sq0"],"values":[["1970-01-01T00:00:00Z",2]]},
            {"name":"m","tags":{"c":"y"},"columns":["time","_sq0"],"values":[["1970-01-01T00:00:00Z",3]]}]});
        let b = json!({"series":[
            {"name":"m","tags":{"c":"y"},"columns":["time","_sq0"],"values":[["1970-01-01T00:00:00Z",3]]}]});
        let owner = |v: &str| Some(if v == "x" { 0 } else { 1 });
        let merged = q.merge(vec![(0, one(a)), (1, one(b))], &owner, None).unwrap();
        assert_eq!(
            merged,
            json!({"series":[{"name":"m","columns":["time","count"],"values":[["1970-01-01T00:00:00Z",5]]}]})
        );
    }

    #[test]
    fn first_in_a_shared_bucket_is_refused() {
        let q = plan("SELECT first(v) FROM m WHERE time >= 0 AND time < 60s GROUP BY time(1m)", "c").unwrap();
        let a = json!({"series":[
            {"name":"m","tags":{"c":"x"},"columns":["time","_sq0"],"values":[["1970-01-01T00:00:00Z",2]]},
            {"name":"m","tags":{"c":"y"},"columns":["time","_sq0"],"values":[["1970-01-01T00:00:00Z",3]]}]});
        let e = q.merge(vec![(0, one(a))], &|_| Some(0), None).unwrap_err();
        assert!(e.contains("first()"), "{e}");
    }

    fn raw(rows: Value) -> Value {
        json!({"name":"m","tags":{"c":"x"},"columns":["time","host","v"],"values":rows})
    }

    #[test]
    fn raw_ties_are_ordered_by_leading_strings_or_refused() {
        let q = plan("SELECT host, v FROM m", "c").unwrap();
        let mut y = raw(json!([["1970-01-01T00:00:01Z", "a", 1], ["1970-01-01T00:00:02Z", "c", 3]]));
        y["tags"]["c"] = json!("y");
        let x = raw(json!([["1970-01-01T00:00:01Z", "b", 2]]));
        let merged = q.merge(vec![(0, one(json!({"series":[x, y]})))], &|_| Some(0), None).unwrap();
        assert_eq!(
            merged.to_value()["series"][0]["values"],
            json!([
                ["1970-01-01T00:00:01Z", "a", 1],
                ["1970-01-01T00:00:01Z", "b", 2],
                ["1970-01-01T00:00:02Z", "c", 3]
            ])
        );
        // `a` sorts first (InfluxDB sorts the auxiliary fields by name): a
        // float decides nothing.
        let q = plan("SELECT host, a FROM m", "c").unwrap();
        let x = json!({"name":"m","tags":{"c":"x"},"columns":["time","host","a"],"values":[["1970-01-01T00:00:01Z","a",1]]});
        let y = json!({"name":"m","tags":{"c":"y"},"columns":["time","host","a"],"values":[["1970-01-01T00:00:01Z","b",2]]});
        let e = q.merge(vec![(0, one(json!({"series":[x, y]})))], &|_| Some(0), None).unwrap_err();
        assert!(e.contains("share the time"), "{e}");
    }

    #[test]
    fn a_pushed_down_limit_cut_inside_a_tie_is_refused() {
        let q = plan("SELECT host, v FROM m LIMIT 1", "c").unwrap();
        assert_eq!(q.backend_query(), "SELECT host, v FROM m GROUP BY \"c\" LIMIT 2");
        // x's two rows share t1: a third row at t1 may sort before them.
        let x = raw(json!([["1970-01-01T00:00:01Z", "b", 1], ["1970-01-01T00:00:01Z", "c", 2]]));
        let e = q.merge(vec![(0, one(json!({"series":[x.clone()]})))], &|_| Some(0), None).unwrap_err();
        assert!(e.contains("LIMIT"), "{e}");
        // With an earlier row of y the window ends before t1: exact.
        let mut y = raw(json!([["1970-01-01T00:00:00Z", "z", 5]]));
        y["tags"]["c"] = json!("y");
        let merged = q.merge(vec![(0, one(json!({"series":[x, y]})))], &|_| Some(0), None).unwrap();
        assert_eq!(merged.to_value()["series"][0]["values"], json!([["1970-01-01T00:00:00Z", "z", 5]]));
    }

    #[test]
    fn fill_linear_interpolates_floats_and_truncates_integers() {
        let q = plan(
            "SELECT mean(v), sum(n) FROM m WHERE time >= 0 AND time < 4m GROUP BY time(1m) fill(linear)",
            "c",
        )
        .unwrap();
        let row = |t: &str, s: Value, c: Value, n: Value| json!([t, s, c, n]);
        let x = json!({"name":"m","tags":{"c":"x"},"columns":["time","_sq0","_sq1","_sq2"],"values":[
            row("1970-01-01T00:00:00Z", json!(1), json!(1), json!(10)),
            row("1970-01-01T00:01:00Z", Value::Null, json!(0), Value::Null),
            row("1970-01-01T00:02:00Z", Value::Null, json!(0), Value::Null),
            row("1970-01-01T00:03:00Z", json!(2), json!(1), json!(21))]});
        assert_eq!(q.backend_statements()[1], "SHOW FIELD KEYS FROM m");
        let keys = json!({"series":[{"name":"m","columns":["fieldKey","fieldType"],
            "values":[["n","integer"],["v","float"]]}]});
        let merged = q
            .merge(vec![(0, vec![result(json!({"series":[x]})), result(keys)])], &|_| Some(0), None)
            .unwrap();
        // linearFloat for the mean; linearInteger (truncating) for the integer sum.
        assert_eq!(
            merged.to_value()["series"][0]["values"],
            json!([
                ["1970-01-01T00:00:00Z", 1, 10],
                ["1970-01-01T00:01:00Z", 1.3333333333333333, 13],
                ["1970-01-01T00:02:00Z", 1.6666666666666665, 17],
                ["1970-01-01T00:03:00Z", 2, 21]
            ])
        );
    }

    #[test]
    fn fill_linear_between_far_apart_backend_times_does_not_overflow() {
        // A backend answering epoch times 1.8e19 ns apart (any number is
        // read as a time): the interpolation must not panic on overflow.
        let q = plan("SELECT mean(v) FROM m WHERE time >= 0 GROUP BY time(1ns) fill(linear)", "c").unwrap();
        let x = json!({"name":"m","tags":{"c":"x"},"columns":["time","_sq0","_sq1"],"values":[
            [-9_000_000_000_000_000_000i64, 1, 1],
            [0, null, 0],
            [9_000_000_000_000_000_000i64, 2, 1]]});
        let merged = q.merge(vec![(0, one(json!({"series":[x]})))], &|_| Some(0), None);
        assert!(merged.is_ok(), "{merged:?}");
    }

    #[test]
    fn errors_and_partial_answers_are_not_merged() {
        let q = plan("SELECT count(v) FROM m", "c").unwrap();
        let merged =
            q.merge(vec![(0, one(json!({"error":"database not found: d"})))], &|_| Some(0), None).unwrap();
        assert_eq!(merged, json!({"error":"database not found: d"}));
        let e =
            q.merge(vec![(0, one(json!({"series":[], "partial": true})))], &|_| Some(0), None).unwrap_err();
        assert!(e.contains("partial"), "{e}");
        // The SHOW FIELD KEYS of a fill(linear) plan failing: its error is the answer.
        let q =
            plan("SELECT max(v) FROM m WHERE time >= 0 AND time < 1m GROUP BY time(10s) fill(linear)", "c")
                .unwrap();
        let answers = vec![(0, vec![result(json!({"series":[]})), result(json!({"error":"boom"}))])];
        assert_eq!(q.merge(answers, &|_| Some(0), None).unwrap(), json!({"error":"boom"}));
        let e = q.merge(vec![(0, one(json!({})))], &|_| Some(0), None).unwrap_err();
        assert!(e.contains("1 results to 2 statements"), "{e}");
    }

    #[test]
    fn slimit_chooses_by_influxdb_tag_set_key_and_epoch_converts_times() {
        let series = |host: &str, region: &str| {
            json!({"name":"m","tags":{"host":host,"region":region},"columns":["time","v"],
                   "values":[["1970-01-01T00:00:01.5Z", 1]]})
        };
        // Output order h0/r0, h0/r1, h9/"": the series without region has
        // the key `host|h9`, before `host|region|h0|r0`.
        let out = vec![series("h0", "r0"), series("h0", "r1"), series("h9", "")];
        let chosen = limit_series(out.clone(), 2, 0);
        assert_eq!(chosen, vec![series("h0", "r0"), series("h9", "")]);
        assert_eq!(limit_series(out, 0, 2), vec![series("h0", "r1")]);
        let mut one = series("h0", "r0");
        to_epoch(&mut one, "ms");
        assert_eq!(one["values"], json!([[1500, 1]]));
        let mut one = series("h0", "r0");
        to_epoch(&mut one, "s");
        assert_eq!(one["values"], json!([[1, 1]]));
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:01+01:00"), Some(1_000_000_000));
        assert_eq!(parse_rfc3339("2020-01-01T00:00:00Z"), Some(1_577_836_800_000_000_000));
    }
}
