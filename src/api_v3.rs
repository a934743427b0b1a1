//! The InfluxDB 3 HTTP API in front of InfluxDB 1.x backends: a client of
//! InfluxDB 3 Core (its `influxdb3` CLI, `influxdb3-python`, curl as its docs
//! show) writes, queries and manages databases through the proxy, which turns
//! each request into the 1.x request the rest of the proxy already handles
//! (same routes, replicas, write queues, failover, schema fan-out), then turns
//! the answer into InfluxDB 3's shape. The behaviour follows InfluxDB 3 Core's
//! source (github.com/influxdata/influxdb, `main`): `influxdb3_server/src/http.rs`
//! (handlers, error bodies), `influxdb3_types/src/http.rs` (request shapes,
//! formats, content types) and `influxdb3_types/src/write.rs` (precision).
//!
//! - `POST /api/v3/write_lp?db=&precision=&accept_partial=&no_sync=`: the
//!   body (line protocol, plain or gzip) is validated here; with
//!   `precision=auto` (the default) each timestamp's unit is inferred from its
//!   magnitude ([`Precision::to_nanos`], InfluxDB 3's rule) and the point is
//!   forwarded in nanoseconds, so one body may mix units. The valid points go
//!   through the 1.x write path ([`crate::proxy`]'s `/write`) as one write.
//!   Malformed lines: `accept_partial=true` (default) writes the others and
//!   answers 400 `{"error":"partial write of line protocol occurred","data":[..]}`;
//!   `accept_partial=false` writes nothing and answers 400
//!   `{"error":"line protocol parsing error","data":{..}}` (the first bad line).
//!   Points no keymap routes follow `accept_partial` too, answered as the 1.x
//!   path answers them (400 `{"error":"partial write: no route ..."}`, or
//!   the whole body refused).
//!   `no_sync=true`: every backend's points go to its write queue on disk
//!   (appended and fsynced) and the client hears 204 then, without waiting for
//!   the backends; the replay loops deliver them (so still durable on the
//!   proxy's disk, unlike InfluxDB 3's `no_sync`, which answers before its WAL
//!   is persisted). A database a backend does not have is created (as
//!   InfluxDB 3 creates it on first write) and the write sent again.
//! - `GET|POST /api/v3/query_influxql`: run as `/query` (routing, failover,
//!   merged `SHOW`s) with `epoch=ns`, answered as InfluxDB 3's row-oriented
//!   formats ([`QueryFormat`], [`Table`]).
//! - `GET|POST|DELETE /api/v3/configure/database`: `SHOW`, `CREATE`, `DROP
//!   DATABASE` through `/query` (schema statements: every backend, queued for
//!   backends that are down).
//! - `/api/v3/query_sql` and `format=parquet`: 501, a 1.x backend cannot
//!   answer SQL and the proxy does not write Parquet.
//!
//! No IO, no clock: part of the core.

use crate::error::{error_body, ProxyError};
use crate::http::{Method, Request, Response};
use crate::line_protocol::LineProtocolError;
use crate::proxy::{Proxy, Topology, WriteApi};
use crate::storage::Storage;
use crate::transport::Transport;
use crate::validated_body::{PreparedBody, WriteBodyJob};
use serde::Serialize;
use serde_json::{Map, Value};

/// The metrics label of an InfluxDB 3 path (`/metrics`
/// `influx_proxy_requests_total{endpoint}`), `None` for any other path.
pub fn endpoint(path: &str) -> Option<&'static str> {
    Some(match path {
        "/api/v3/write_lp" => "api_v3_write_lp",
        "/api/v3/query_influxql" => "api_v3_query_influxql",
        "/api/v3/query_sql" => "api_v3_query_sql",
        "/api/v3/configure/database" => "api_v3_configure_database",
        _ => return None,
    })
}

/// Whether endpoint label `endpoint` ([`endpoint`]) is a write or a query
/// (kept in flight for the moves, as `/write` and `/query` are).
pub fn is_write_or_query(endpoint: &str) -> bool {
    matches!(endpoint, "api_v3_write_lp" | "api_v3_query_influxql" | "api_v3_configure_database")
}

/// The unit of a `write_lp` body's timestamps (`precision=`), InfluxDB 3's
/// `Precision` (influxdb3_types/src/write.rs): `auto` (default), `s` /
/// `second`, `ms` / `millisecond`, `us` / `u` / `microsecond`, `ns` / `n` /
/// `nanosecond`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Inferred per timestamp from its magnitude ([`Precision::to_nanos`]).
    #[default]
    Auto,
    /// `s`, `second`.
    Second,
    /// `ms`, `millisecond`.
    Millisecond,
    /// `us`, `u`, `microsecond`.
    Microsecond,
    /// `ns`, `n`, `nanosecond`.
    Nanosecond,
}

impl Precision {
    /// Parses `precision=`. Error (400 text): `unrecognized precision unit: x`.
    pub fn parse(s: &str) -> Result<Precision, String> {
        Ok(match s {
            "auto" => Precision::Auto,
            "s" | "second" => Precision::Second,
            "ms" | "millisecond" => Precision::Millisecond,
            "us" | "u" | "microsecond" => Precision::Microsecond,
            "ns" | "n" | "nanosecond" => Precision::Nanosecond,
            _ => return Err(format!("unrecognized precision unit: {s}")),
        })
    }

    /// InfluxDB 1.x's `precision` for this unit (`None` for auto: the
    /// timestamps are sent as ns).
    fn v1(self) -> Option<&'static str> {
        match self {
            Precision::Auto => None,
            Precision::Second => Some("s"),
            Precision::Millisecond => Some("ms"),
            Precision::Microsecond => Some("u"),
            Precision::Nanosecond => Some("ns"),
        }
    }

    /// Timestamp `ts` at this precision in nanoseconds; for `Auto` the unit
    /// InfluxDB 3 guesses (`Precision::guess_precision`): `|ts| / 10^9` below
    /// 5 -> seconds, below 5,000 -> ms, below 5,000,000 -> µs, else ns (so
    /// present-day timestamps of any unit land right; this fails in 2128, as
    /// InfluxDB 3's does). `None` when the result overflows an i64.
    pub fn to_nanos(self, ts: i64) -> Option<i64> {
        let unit = match self {
            Precision::Auto => match ts.unsigned_abs() / 1_000_000_000 {
                0..=4 => Precision::Second,
                5..=4_999 => Precision::Millisecond,
                5_000..=4_999_999 => Precision::Microsecond,
                _ => Precision::Nanosecond,
            },
            p => p,
        };
        let multiplier = match unit {
            Precision::Second => 1_000_000_000,
            Precision::Millisecond => 1_000_000,
            Precision::Microsecond => 1_000,
            Precision::Auto | Precision::Nanosecond => 1,
        };
        ts.checked_mul(multiplier)
    }
}

/// One rejected line of a `write_lp` body, serialized as InfluxDB 3's
/// `WriteLineError`: `error_message`, `line_number` (1-based),
/// `original_line` cut to its first 20 bytes (at a character boundary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WriteLineError {
    /// Why the line was rejected (the proxy's line protocol reason).
    pub error_message: String,
    /// 1-based line number in the client's body.
    pub line_number: usize,
    /// The line as sent (whole here; cut to 20 bytes when serialized).
    #[serde(serialize_with = "first_20_bytes")]
    pub original_line: String,
}

fn first_20_bytes<S: serde::Serializer>(line: &str, s: S) -> Result<S::Ok, S::Error> {
    let mut end = line.len().min(20);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    s.serialize_str(&line[..end])
}

impl From<&LineProtocolError> for WriteLineError {
    fn from(e: &LineProtocolError) -> WriteLineError {
        WriteLineError {
            error_message: e.reason.clone(),
            line_number: e.line_number,
            original_line: e.line.clone(),
        }
    }
}

/// A `write_lp` body made ready for the 1.x write path: its valid points
/// (timestamps in ns for `auto`), one a line, and its rejected lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LineProtocolV1 {
    /// The valid points, each its line and `\n`.
    pub body: Vec<u8>,
    /// Points in `body`.
    pub points: usize,
    /// The rejected lines, in body order.
    pub rejected: Vec<WriteLineError>,
    /// Whether a timestamp was rewritten (else `body` holds the valid
    /// points as they came).
    pub rewritten: bool,
}

/// Splits `text` (a decoded body) into valid points and rejected lines
/// (`malformed`: the validator's errors); with [`Precision::Auto`] every
/// timestamp is rewritten in ns, a timestamp whose ns overflow an i64 being
/// a rejected line (`timestamp, T, out of range for precision: Auto`).
pub fn to_v1_lines<'a>(
    points: impl Iterator<Item = crate::line_protocol::Point<'a>>,
    malformed: &[LineProtocolError],
    precision: Precision,
) -> LineProtocolV1 {
    let mut out = LineProtocolV1 {
        rejected: malformed.iter().map(WriteLineError::from).collect(),
        ..Default::default()
    };
    for point in points {
        let line = point.line;
        match (precision, point.has_timestamp, line.rsplit_once(' ')) {
            (Precision::Auto, true, Some((head, ts))) => {
                match ts.parse::<i64>().ok().and_then(|t| precision.to_nanos(t)) {
                    Some(ns) => {
                        out.body.extend_from_slice(head.as_bytes());
                        out.body.push(b' ');
                        // Written in place (no string per line), then
                        // compared with the timestamp as it came.
                        let start = out.body.len();
                        let _ = std::io::Write::write_fmt(&mut out.body, format_args!("{ns}"));
                        out.rewritten |= &out.body[start..] != ts.as_bytes();
                    }
                    None => {
                        out.rejected.push(WriteLineError {
                            error_message: format!("timestamp, {ts}, out of range for precision: Auto"),
                            line_number: point.line_number,
                            original_line: line.to_string(),
                        });
                        continue;
                    }
                }
            }
            _ => out.body.extend_from_slice(line.as_bytes()),
        }
        out.body.push(b'\n');
        out.points += 1;
    }
    out.rejected.sort_by_key(|e| e.line_number);
    out
}

/// InfluxDB 3's answer to a body with rejected lines (influxdb3_server
/// http.rs): all accepted -> 400 `{"error":"partial write of line protocol
/// occurred","data":[..every line..]}`; refused whole (`accept_partial=false`)
/// -> 400 `{"error":"line protocol parsing error","data":{..first line..}}`.
pub fn rejected_response(rejected: &[WriteLineError], accept_partial: bool) -> Response {
    let body = if accept_partial {
        serde_json::json!({"error": "partial write of line protocol occurred", "data": rejected})
    } else {
        serde_json::json!({"error": "line protocol parsing error", "data": rejected.first()})
    };
    Response::json(400, serde_json::to_vec(&body).unwrap_or_default())
}

/// The answer format of a query (`format=` or the `Accept` header),
/// InfluxDB 3's `QueryFormat` with its content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryFormat {
    /// `json`: one array of row objects, `application/json`.
    Json,
    /// `jsonl` / `json_lines`: one row object a line, `application/jsonl`.
    JsonLines,
    /// `csv`: a header line and the rows, `text/csv`.
    Csv,
    /// `pretty`: an ASCII table, `text/plain; charset=utf-8`.
    Pretty,
    /// `parquet`: refused (501), the proxy writes no Parquet.
    Parquet,
}

impl QueryFormat {
    /// Parses `format=` (as InfluxDB 3's serde names). Error: 400.
    pub fn parse(s: &str) -> Result<QueryFormat, ProxyError> {
        Ok(match s {
            "json" => QueryFormat::Json,
            "jsonl" | "json_lines" => QueryFormat::JsonLines,
            "csv" => QueryFormat::Csv,
            "pretty" => QueryFormat::Pretty,
            "parquet" => QueryFormat::Parquet,
            _ => {
                return Err(ProxyError::BadRequest(format!(
                    "unknown variant `{s}`, expected one of `parquet`, `csv`, `pretty`, `json`, `json_lines`"
                )))
            }
        })
    }

    /// The format an `Accept` header asks for (`QueryFormat::try_from_headers`):
    /// none, `*/*` or `application/json` -> json, `text/csv`, `text/plain`
    /// -> pretty, the Parquet type; any other type containing `text/html`
    /// or `*/*` -> json; else 400 `invalid mime type (...)`.
    pub fn from_accept(accept: Option<&str>) -> Result<QueryFormat, ProxyError> {
        Ok(match accept {
            None | Some("application/json" | "*/*") => QueryFormat::Json,
            Some("text/csv") => QueryFormat::Csv,
            Some("text/plain") => QueryFormat::Pretty,
            Some("application/vnd.apache.parquet") => QueryFormat::Parquet,
            Some(s) if s.contains("text/html") || s.contains("*/*") => QueryFormat::Json,
            Some(s) => return Err(ProxyError::BadRequest(format!("invalid mime type ({s})"))),
        })
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            QueryFormat::Json => "application/json",
            QueryFormat::JsonLines => "application/jsonl",
            QueryFormat::Csv => "text/csv",
            QueryFormat::Pretty => "text/plain; charset=utf-8",
            QueryFormat::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// A query answer as InfluxDB 3 shapes it: named columns (in order) and rows
/// (`None` = null). From a 1.x answer ([`Table::from_v1`]): each series'
/// name is column `iox::measurement`, then `time`, then its tags, then its
/// other columns, the columns of all series united in order of appearance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Column names, in answer order.
    pub columns: Vec<String>,
    /// One value (or null) per column, each row as long as `columns`.
    pub rows: Vec<Vec<Option<Value>>>,
}

impl Table {
    /// The table of a 1.x `/query` answer asked with `epoch=ns` (every
    /// statement's series in order; `time` written as InfluxDB 3 writes a
    /// timestamp, e.g. `2026-12-03T08:00:00.5`). Error (400): the first
    /// statement's `error`; a body that is not a 1.x answer (502).
    pub fn from_v1(body: &[u8]) -> Result<Table, ProxyError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ProxyError::Unavailable(format!("backend answer is not JSON: {e}")))?;
        let results = v["results"]
            .as_array()
            .ok_or_else(|| ProxyError::Unavailable("backend answer has no \"results\"".into()))?;
        let mut table = Table::default();
        for result in results {
            if let Some(e) = result["error"].as_str() {
                return Err(ProxyError::BadRequest(e.to_string()));
            }
            for series in result["series"].as_array().into_iter().flatten() {
                table.add_series(series);
            }
        }
        Ok(table)
    }

    fn column(&mut self, name: &str) -> usize {
        match self.columns.iter().position(|c| c == name) {
            Some(i) => i,
            None => {
                self.columns.push(name.to_string());
                for row in &mut self.rows {
                    row.push(None);
                }
                self.columns.len() - 1
            }
        }
    }

    fn add_series(&mut self, series: &Value) {
        let measurement = self.column("iox::measurement");
        let names: Vec<&str> =
            series["columns"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let time = names.contains(&"time").then(|| self.column("time"));
        let mut tags: Vec<(usize, Value)> = Vec::new();
        for (key, value) in series["tags"].as_object().into_iter().flatten() {
            tags.push((self.column(key), value.clone()));
        }
        let index: Vec<usize> = names.iter().map(|n| self.column(n)).collect();
        for values in series["values"].as_array().into_iter().flatten() {
            let mut row = vec![None; self.columns.len()];
            row[measurement] = series["name"].as_str().map(|n| Value::String(n.into()));
            for (i, v) in tags.iter() {
                row[*i] = Some(v.clone()).filter(|v| !v.is_null());
            }
            for (k, v) in values.as_array().into_iter().flatten().enumerate() {
                let Some(&i) = index.get(k) else { continue };
                row[i] = match (Some(i) == time, v) {
                    (_, Value::Null) => None,
                    (true, Value::Number(n)) => n.as_i64().map(|ns| Value::String(timestamp(ns))),
                    _ => Some(v.clone()),
                };
            }
            self.rows.push(row);
        }
    }

    /// The table in `format` (not Parquet): bytes as InfluxDB 3 writes them
    /// (arrow's JSON, JSON lines, CSV and pretty writers; nulls left out of
    /// JSON objects, empty in CSV and tables).
    pub fn render(&self, format: QueryFormat) -> Vec<u8> {
        let object = |row: &Vec<Option<Value>>| {
            let mut o = Map::new();
            for (c, v) in self.columns.iter().zip(row) {
                if let Some(v) = v {
                    o.insert(c.clone(), v.clone());
                }
            }
            Value::Object(o)
        };
        match format {
            QueryFormat::Json => {
                serde_json::to_vec(&Value::Array(self.rows.iter().map(object).collect())).unwrap_or_default()
            }
            QueryFormat::JsonLines => {
                let mut out = Vec::new();
                for row in &self.rows {
                    out.extend(serde_json::to_vec(&object(row)).unwrap_or_default());
                    out.push(b'\n');
                }
                out
            }
            QueryFormat::Csv => {
                if self.columns.is_empty() {
                    return Vec::new();
                }
                let mut out = String::new();
                let line = |cells: Vec<String>, out: &mut String| {
                    let cells: Vec<String> = cells.into_iter().map(|c| csv_cell(&c)).collect();
                    out.push_str(&cells.join(","));
                    out.push('\n');
                };
                line(self.columns.clone(), &mut out);
                for row in &self.rows {
                    line(row.iter().map(cell_text).collect(), &mut out);
                }
                out.into_bytes()
            }
            QueryFormat::Pretty | QueryFormat::Parquet => self.pretty().into_bytes(),
        }
    }

    /// Arrow's `pretty_format_batches`: `+---+` rules, `| a |` cells left
    /// aligned, the header between two rules, a closing rule, no final line
    /// ending; `++\n++` for no columns.
    fn pretty(&self) -> String {
        if self.columns.is_empty() {
            return "++\n++".into();
        }
        let cells: Vec<Vec<String>> = self.rows.iter().map(|r| r.iter().map(cell_text).collect()).collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                cells
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([self.columns[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let rule: String = widths.iter().fold("+".to_string(), |s, w| s + &"-".repeat(w + 2) + "+");
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(&widths)
                .fold("|".to_string(), |s, (c, w)| s + " " + c + &" ".repeat(w - c.chars().count()) + " |")
        };
        let mut out = vec![rule.clone(), line(&self.columns), rule.clone()];
        out.extend(cells.iter().map(|r| line(r)));
        out.push(rule);
        out.join("\n")
    }
}

/// A cell as text: strings as they are, numbers and booleans as JSON writes
/// them, null empty.
fn cell_text(v: &Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// A CSV field quoted when it holds a comma, quote or line break (RFC 4180,
/// as arrow's CSV writer does).
fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `ns` since the Unix epoch as arrow writes a timestamp without time zone
/// (chrono's `NaiveDateTime`): `YYYY-MM-DDTHH:MM:SS`, then `.` and 3, 6 or 9
/// digits when there is a fraction of a second.
pub fn timestamp(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to civil date (H. Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut s =
        format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", sod / 3600, sod % 3600 / 60, sod % 60);
    if nanos != 0 {
        if nanos % 1_000_000 == 0 {
            s.push_str(&format!(".{:03}", nanos / 1_000_000));
        } else if nanos % 1_000 == 0 {
            s.push_str(&format!(".{:06}", nanos / 1_000));
        } else {
            s.push_str(&format!(".{nanos:09}"));
        }
    }
    s
}

/// `true` / `false` parameter `name` of `request`, `default` when absent.
/// Error (400), as serde_urlencoded's: `name: provided string was not `true` or `false``.
fn bool_param(request: &Request, name: &str, default: bool) -> Result<bool, ProxyError> {
    match request.param(name) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(_) => Err(ProxyError::BadRequest(format!("{name}: provided string was not `true` or `false`"))),
    }
}

/// An InfluxQL identifier in double quotes (`"` and `\` escaped).
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// 501 `{"error": ...}`: something a 1.x backend cannot do.
fn not_implemented(message: &str) -> Response {
    Response::json(501, error_body(message))
}

/// The request of a query through the proxy's `/query`: `POST` (schema
/// statements need it) with `q`, `db`, `params`, `epoch=ns`, the client's
/// credentials and peer.
fn v1_query(client: &Request, q: &str, db: Option<&str>, params: Option<String>) -> Request {
    let mut request = Request::new(Method::Post, "/query");
    request.query.push(("q".into(), q.to_string()));
    if let Some(db) = db.filter(|d| !d.is_empty()) {
        request.query.push(("db".into(), db.to_string()));
    }
    if let Some(params) = params {
        request.query.push(("params".into(), params));
    }
    request.query.push(("epoch".into(), "ns".into()));
    for name in ["u", "p"] {
        if let Some(v) = client.param(name) {
            request.query.push((name.into(), v.to_string()));
        }
    }
    if let Some(auth) = client.header("authorization") {
        request.headers.push(("authorization".into(), auth.to_string()));
    }
    request.peer = client.peer;
    request
}

/// A `query_influxql` request's fields (`QueryRequest`): from the URL for
/// GET, from a JSON body `{"db","q","format","params"}` for POST.
#[derive(Debug, serde::Deserialize)]
struct QueryRequest {
    db: Option<String>,
    q: String,
    format: Option<String>,
    params: Option<Value>,
}

impl<T: Transport, S: Storage> Proxy<T, S> {
    /// Answers an InfluxDB 3 request; `endpoint` is its [`endpoint`] label;
    /// `prepared`: a `write_lp` body the host validated
    /// ([`Proxy::write_body_job`]).
    pub(crate) async fn api_v3(
        &self,
        topo: &Topology,
        endpoint: &str,
        request: &mut Request,
        prepared: Option<PreparedBody>,
        now_ms: u64,
    ) -> Result<Response, ProxyError> {
        match endpoint {
            "api_v3_write_lp" => self.write_lp(topo, request, prepared, now_ms).await,
            "api_v3_query_influxql" => self.query_influxql(topo, request, now_ms).await,
            "api_v3_configure_database" => self.configure_database(topo, request, now_ms).await,
            _ => Ok(not_implemented(
                "the proxy's backends are InfluxDB 1.x, which cannot answer SQL: \
                 use /api/v3/query_influxql (or /query) with InfluxQL",
            )),
        }
    }

    async fn write_lp(
        &self,
        topo: &Topology,
        request: &mut Request,
        prepared: Option<PreparedBody>,
        now_ms: u64,
    ) -> Result<Response, ProxyError> {
        if request.method != Method::Post {
            return Err(ProxyError::MethodNotAllowed("unsupported method".into()));
        }
        let db = request
            .param("db")
            .filter(|d| !d.is_empty())
            .ok_or_else(|| ProxyError::BadRequest("missing query parameter: db".into()))?
            .to_string();
        let precision = match request.param("precision") {
            Some(p) => Precision::parse(p).map_err(ProxyError::BadRequest)?,
            None => Precision::Auto,
        };
        let accept_partial = bool_param(request, "accept_partial", true)?;
        let no_sync = bool_param(request, "no_sync", false)?;
        let max = topo.config().max_body_bytes;
        let content_encoding = request.header("content-encoding").map(str::to_string);
        let prepared = prepared
            .unwrap_or_else(|| WriteBodyJob::take(request, max).run())
            .checked(content_encoding.as_deref(), max);
        let body = prepared.validated().map_err(Clone::clone)?;
        let text = body.text();
        let lines = to_v1_lines(body.points(text), body.malformed(), precision);
        if !lines.rejected.is_empty() && (!accept_partial || lines.points == 0) {
            return Ok(rejected_response(&lines.rejected, accept_partial));
        }
        if lines.points == 0 {
            return Ok(Response::empty(204));
        }
        let mut v1 = Request::new(Method::Post, "/write");
        v1.query.push(("db".into(), db.clone()));
        if let Some(p) = precision.v1() {
            v1.query.push(("precision".into(), p.into()));
        }
        if let Some(auth) = request.header("authorization") {
            v1.headers.push(("authorization".into(), auth.to_string()));
        }
        v1.peer = request.peer;
        // One timestamp for the points that have none, for both attempts
        // below: writing again after creating the database must give the
        // backends that already took the body the same points (a point
        // with the same series and timestamp replaces itself), not a second
        // copy of each stamped one.
        let default_timestamp =
            (body.summary().without_timestamp > 0).then(|| self.default_timestamp(precision.v1(), now_ms));
        let api = WriteApi::V3 { no_sync, accept_partial, default_timestamp };
        // The client's body itself (validated once, a gzip body forwarded
        // as it came) when nothing in it changes; else the rebuilt lines.
        let (job, first) = if lines.rejected.is_empty() && !lines.rewritten {
            if let Some(encoding) = content_encoding {
                v1.headers.push(("content-encoding".into(), encoding));
            }
            (prepared.job(), prepared)
        } else {
            v1.body = lines.body;
            // Shares the body's bytes: a second attempt copies none of them.
            let job = WriteBodyJob::take(&mut v1, max);
            (job.clone(), job.run())
        };
        let mut response = self.write(topo, &mut v1, Some(first), api, now_ms).await;
        // InfluxDB 3 creates a database on its first write: so does this
        // API, on the backends that lack it, then writes again.
        let missing = |r: &Result<Response, ProxyError>| match r {
            Err(e) => e.status() == 404 && e.message().contains("database not found"),
            Ok(r) => r.status == 404 && String::from_utf8_lossy(&r.body).contains("database not found"),
        };
        if missing(&response) {
            let create = v1_query(request, &format!("CREATE DATABASE {}", quote_ident(&db)), None, None);
            let created = self.query(topo, &create, now_ms).await?;
            if created.status != 200 {
                return Ok(created);
            }
            response = self.write(topo, &mut v1, Some(job.run()), api, now_ms).await;
        }
        match response? {
            r if r.status == 204 && !lines.rejected.is_empty() => {
                Ok(rejected_response(&lines.rejected, true))
            }
            r => Ok(r),
        }
    }

    async fn query_influxql(
        &self,
        topo: &Topology,
        request: &mut Request,
        now_ms: u64,
    ) -> Result<Response, ProxyError> {
        let header_format = QueryFormat::from_accept(request.header("accept"))?;
        let fields = query_fields(request)?;
        let format = match &fields.format {
            Some(f) => QueryFormat::parse(f)?,
            None => header_format,
        };
        if format == QueryFormat::Parquet {
            return Ok(not_implemented("format parquet: the proxy answers json, jsonl, csv or pretty"));
        }
        let params = match fields.params {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(v) => Some(v.to_string()),
        };
        let v1 = v1_query(request, &fields.q, fields.db.as_deref(), params);
        let answer = self.query(topo, &v1, now_ms).await?;
        if answer.status != 200 {
            return Ok(answer);
        }
        let table = Table::from_v1(&answer.body)?;
        Ok(table_response(&table, format))
    }

    async fn configure_database(
        &self,
        topo: &Topology,
        request: &mut Request,
        now_ms: u64,
    ) -> Result<Response, ProxyError> {
        let (statement, format) = match configure_statement(request)? {
            Configure::Run(statement, format) => (statement, format),
            Configure::Answer(response) => return Ok(response),
        };
        let v1 = v1_query(request, &statement, None, None);
        let answer = self.query(topo, &v1, now_ms).await?;
        if answer.status != 200 {
            return Ok(answer);
        }
        let table = Table::from_v1(&answer.body)?;
        Ok(match format {
            Some(format) => {
                let rows = table
                    .rows
                    .iter()
                    .map(|r| {
                        let i = table.columns.iter().position(|c| c == "name");
                        vec![i.and_then(|i| r[i].clone())]
                    })
                    .collect();
                table_response(&Table { columns: vec!["iox::database".into()], rows }, format)
            }
            None => Response::empty(200),
        })
    }
}

/// What a `configure/database` request does: the InfluxQL statement it
/// runs (`SHOW DATABASES` for GET, `CREATE DATABASE` for POST `{"db"}`,
/// `DROP DATABASE` for DELETE `?db=`) with the listing's format for GET, or
/// an answer without a backend (parquet: 501). Errors: 400 for a bad body
/// or an empty name, 405 for another method.
enum Configure {
    Run(String, Option<QueryFormat>),
    Answer(Response),
}

impl Configure {
    fn run((statement, format): (String, Option<QueryFormat>)) -> Self {
        Configure::Run(statement, format)
    }
}

fn configure_statement(request: &Request) -> Result<Configure, ProxyError> {
    Ok(Configure::run(match request.method {
        Method::Get => {
            // InfluxDB 3 requires `format`; json when it is absent here.
            let format = QueryFormat::parse(request.param("format").unwrap_or("json"))?;
            if format == QueryFormat::Parquet {
                return Ok(Configure::Answer(not_implemented(
                    "format parquet: the proxy answers json, jsonl, csv or pretty",
                )));
            }
            ("SHOW DATABASES".to_string(), Some(format))
        }
        Method::Post => {
            #[derive(serde::Deserialize)]
            struct Create {
                db: String,
                retention_period: Option<Value>,
            }
            let create: Create = serde_json::from_slice(&request.body)
                .map_err(|e| ProxyError::BadRequest(format!("invalid JSON body: {e}")))?;
            if create.retention_period.is_some_and(|r| !r.is_null()) {
                return Err(ProxyError::BadRequest(
                    "retention_period is not supported through the proxy: create the database, \
                         then ALTER RETENTION POLICY with /query"
                        .into(),
                ));
            }
            (format!("CREATE DATABASE {}", db_name(&create.db)?), None)
        }
        Method::Delete => {
            let db = request.param("db").unwrap_or("");
            (format!("DROP DATABASE {}", db_name(db)?), None)
        }
        _ => return Err(ProxyError::MethodNotAllowed("unsupported method".into())),
    }))
}

/// A `query_influxql` request's fields: from the URL for GET, from the JSON
/// body for POST. Errors: 400 (no `q`, a bad body), 405 (another method).
fn query_fields(request: &Request) -> Result<QueryRequest, ProxyError> {
    Ok(match request.method {
        Method::Get => QueryRequest {
            db: request.param("db").map(str::to_string),
            q: request
                .param("q")
                .ok_or_else(|| ProxyError::BadRequest("missing field `q`".into()))?
                .to_string(),
            format: request.param("format").map(str::to_string),
            params: request.param("params").map(|p| Value::String(p.to_string())),
        },
        Method::Post => serde_json::from_slice(&request.body)
            .map_err(|e| ProxyError::BadRequest(format!("invalid JSON body: {e}")))?,
        _ => return Err(ProxyError::MethodNotAllowed("unsupported method".into())),
    })
}

/// The InfluxQL a `query_influxql` or `configure/database` request
/// (`endpoint`, an [`endpoint`] label) runs, and its `db`: what token auth
/// checks the request's scope against ([`crate::auth`]). `None` for other
/// endpoints and for requests their handler refuses before running
/// anything (400, 405, 501).
pub(crate) fn influxql_of(endpoint: &str, request: &Request) -> Option<(String, Option<String>)> {
    match endpoint {
        "api_v3_query_influxql" => query_fields(request).ok().map(|f| (f.q, f.db)),
        "api_v3_configure_database" => match configure_statement(request).ok()? {
            Configure::Run(statement, _) => Some((statement, None)),
            Configure::Answer(_) => None,
        },
        _ => None,
    }
}

/// A database name of `configure/database`, quoted; error (400) when empty.
fn db_name(db: &str) -> Result<String, ProxyError> {
    if db.is_empty() {
        return Err(ProxyError::BadRequest("db name cannot be empty".into()));
    }
    Ok(quote_ident(db))
}

fn table_response(table: &Table, format: QueryFormat) -> Response {
    Response {
        status: 200,
        headers: vec![("content-type".into(), format.content_type().into())],
        body: table.render(format),
    }
}

#[cfg(test)]
mod tests;
