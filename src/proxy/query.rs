//! The query path: `GET|POST /query` (InfluxDB 1.x "Query data with the
//! InfluxDB API"), one or more InfluxQL statements separated by `;`.
//!
//! Every statement is checked against the statement filter and classified
//! before anything is sent: a forbidden or malformed statement fails the whole
//! request and reaches no backend. Then, per statement (see
//! [`crate::statement::StatementKind`]):
//! - reads with FROM go to one backend of the measurement's replica set,
//!   healthy ones first in random order, failing over on no answer or 5xx;
//!   regex or multi-set sources read one backend per replica set and merge;
//! - `SHOW` without FROM goes to every healthy backend and the answers are
//!   merged, so one backend down does not break it; its `LIMIT n OFFSET m`
//!   is sent as `LIMIT n+m` and re-applied to the merged rows;
//! - schema statements go to every backend concerned through the same delivery
//!   rule as writes (queued for backends that are down).
//!
//! A single read statement answered by one backend is passed through as the
//! backend sent it (so `chunked`, `pretty`, `epoch` and CSV via `Accept` work
//! unchanged); otherwise the per-statement results are combined into one
//! `{"results":[...]}` body.

use super::{allow, join_all, Proxy};
use crate::error::ProxyError;
use crate::http::{decode_params, Method, Request, Response};
use crate::results::{
    combine, first_result, merge_select_results, merge_statement_results, window_show_rows,
};
use crate::route::ReplicaSet;
use crate::statement::{
    classify, show_limit_offset, show_statement_for_backends, split_statements, Source, StatementKind,
};
use crate::storage::Storage;
use crate::transport::{Transport, TransportError};
use crate::write_queue::{Credentials, Record};
use serde_json::Value;
use std::io::Write;

/// Parameters of one `/query` request that are forwarded to backends.
struct QueryContext {
    db: Option<String>,
    /// Forwarded as is: rp, epoch, params (bound parameters), pretty, chunked,
    /// chunk_size.
    forwarded: Vec<(String, String)>,
    credentials: Credentials,
    accept: Option<String>,
    pretty: bool,
}

/// How a read statement is served.
enum ReadPlan {
    /// Every source lives on each of these backends: ask one.
    One(ReplicaSet),
    /// Sources span several replica sets (or a regex): ask one backend of each
    /// and merge.
    Cover(Vec<ReplicaSet>),
}

impl<T: Transport, S: Storage> Proxy<T, S> {
    pub(super) async fn query(&self, request: &Request, now_ms: u64) -> Result<Response, ProxyError> {
        allow(request, &[Method::Get, Method::Post])?;
        let params = query_params(request);
        let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let q = get("q")
            .filter(|q| !q.trim().is_empty())
            .ok_or_else(|| ProxyError::BadRequest("missing required parameter \"q\"".into()))?;
        let mut forwarded = Vec::new();
        for name in ["rp", "epoch", "params", "pretty", "chunked", "chunk_size"] {
            if let Some(v) = get(name) {
                forwarded.push((name.to_string(), v));
            }
        }
        let ctx = QueryContext {
            db: get("db").filter(|d| !d.is_empty()),
            pretty: get("pretty").is_some_and(|p| p == "true"),
            forwarded,
            credentials: Credentials {
                username: get("u").filter(|u| !u.is_empty()),
                password: get("p"),
                authorization: request.header("authorization").map(str::to_string),
            },
            accept: request.header("accept").map(str::to_string),
        };
        let gzip = accepts_gzip(request);

        let statements =
            split_statements(&q).map_err(|e| ProxyError::BadRequest(format!("error parsing query: {e}")))?;
        if statements.is_empty() {
            return Err(ProxyError::BadRequest("error parsing query: empty query".into()));
        }
        for statement in &statements {
            self.filter.check(statement).map_err(ProxyError::Forbidden)?;
        }
        let mut kinds = Vec::with_capacity(statements.len());
        for statement in &statements {
            kinds.push(
                classify(statement)
                    .map_err(|e| ProxyError::BadRequest(format!("error parsing query: {e}")))?,
            );
        }

        // One read statement served by one backend: pass its answer through.
        if let ([statement], [StatementKind::ReadFrom(sources)]) = (statements.as_slice(), kinds.as_slice()) {
            if let ReadPlan::One(set) = self.read_plan(sources)? {
                let response = self.read_one(&set, statement, &ctx, true, now_ms).await?;
                return Ok(finish(response, gzip));
            }
        }

        let mut results = Vec::with_capacity(statements.len());
        for (statement, kind) in statements.iter().zip(kinds) {
            results.push(self.run_statement(statement, kind, &ctx, now_ms).await?);
        }
        let mut response = Response::json(200, combine(results, ctx.pretty));
        response.headers.push(("x-influxdb-build".into(), "OSS".into()));
        Ok(finish(response, gzip))
    }

    /// The result object of one statement.
    async fn run_statement(
        &self,
        statement: &str,
        kind: StatementKind,
        ctx: &QueryContext,
        now_ms: u64,
    ) -> Result<Value, ProxyError> {
        match kind {
            StatementKind::ReadFrom(sources) => match self.read_plan(&sources)? {
                ReadPlan::One(set) => {
                    let r = self.read_one(&set, statement, ctx, false, now_ms).await?;
                    first_result(&r.body)
                        .map_err(|e| ProxyError::Unavailable(format!("bad backend answer: {e}")))
                }
                ReadPlan::Cover(sets) => {
                    // SHOW ... FROM several replica sets: rows are united and
                    // LIMIT/OFFSET re-applied, as for SHOW without FROM;
                    // SELECT: each series from the backend that holds it.
                    let is_show =
                        statement.split_whitespace().next().is_some_and(|w| w.eq_ignore_ascii_case("SHOW"));
                    let bad = |e: String| ProxyError::BadRequest(format!("error parsing query: {e}"));
                    let (sent, window) = if is_show {
                        (
                            show_statement_for_backends(statement).map_err(bad)?,
                            Some(show_limit_offset(statement).map_err(bad)?),
                        )
                    } else {
                        (statement.to_string(), None)
                    };
                    let answers = join_all(
                        sets.iter().map(|set| self.read_one(set, &sent, ctx, false, now_ms)).collect(),
                    )
                    .await;
                    let mut results = Vec::with_capacity(answers.len());
                    for answer in answers {
                        let r = answer?;
                        results.push(
                            first_result(&r.body)
                                .map_err(|e| ProxyError::Unavailable(format!("bad backend answer: {e}")))?,
                        );
                    }
                    Ok(match window {
                        Some((limit, offset)) => {
                            window_show_rows(merge_statement_results(results), limit, offset)
                        }
                        None => merge_select_results(results),
                    })
                }
            },
            StatementKind::ShowAll => self.show_all(statement, ctx, now_ms).await,
            StatementKind::SchemaAll => {
                let all: Vec<usize> = (0..self.backends.len()).collect();
                self.schema(&all, statement, ctx, now_ms).await
            }
            StatementKind::SchemaMeasurement(m) => {
                let set = self.router.route(&m.name).ok_or_else(|| no_route(&m.name))?.clone();
                self.schema(&set, statement, ctx, now_ms).await
            }
            StatementKind::SelectInto(sources) => {
                let mut targets: Vec<usize> = match self.read_plan(&sources)? {
                    ReadPlan::One(set) => set,
                    ReadPlan::Cover(sets) => sets.into_iter().flatten().collect(),
                };
                targets.sort_unstable();
                targets.dedup();
                self.schema(&targets, statement, ctx, now_ms).await
            }
        }
    }

    fn read_plan(&self, sources: &[Source]) -> Result<ReadPlan, ProxyError> {
        let mut sets: Vec<ReplicaSet> = Vec::new();
        let mut regex = false;
        for source in sources {
            match source {
                Source::Measurement(m) => {
                    let set = self.router.route(&m.name).ok_or_else(|| no_route(&m.name))?;
                    if !sets.contains(set) {
                        sets.push(set.clone());
                    }
                }
                Source::Regex(_) => regex = true,
            }
        }
        if regex {
            for (_, set) in self.router.describe() {
                if !sets.contains(&set) {
                    sets.push(set);
                }
            }
            return Ok(ReadPlan::Cover(sets));
        }
        let common: ReplicaSet = match sets.first() {
            Some(first) => first.iter().copied().filter(|b| sets.iter().all(|s| s.contains(b))).collect(),
            None => Vec::new(),
        };
        if common.is_empty() {
            Ok(ReadPlan::Cover(sets))
        } else {
            Ok(ReadPlan::One(common))
        }
    }

    /// Asks one backend of `set`: healthy ones first, in random order, then
    /// the others; the next on no answer or 5xx. A 4xx is the client's fault
    /// and is returned at once. `passthrough` forwards the client's `Accept`
    /// and formatting parameters for a verbatim answer.
    async fn read_one(
        &self,
        set: &[usize],
        statement: &str,
        ctx: &QueryContext,
        passthrough: bool,
        now_ms: u64,
    ) -> Result<Response, ProxyError> {
        let mut errors = Vec::new();
        for backend in self.read_order(set) {
            let request = query_request(statement, ctx, passthrough);
            match self.transport.send(&self.backends[backend], request).await {
                Ok(r) if (200..300).contains(&r.status) => {
                    self.record_ok(backend);
                    return Ok(r);
                }
                Ok(r) if (400..500).contains(&r.status) => {
                    return Err(ProxyError::Backend { status: r.status, message: super::error_message(&r) });
                }
                Ok(r) => {
                    let e = format!("HTTP {}: {}", r.status, super::error_message(&r));
                    errors.push(format!("{}: {e}", self.backends[backend].name));
                    self.record_failure(backend, e, now_ms);
                }
                // Up, but answering more than the proxy buffers: no
                // failover (another replica answers the same), not down.
                Err(e @ TransportError::ResponseTooLarge { .. }) => {
                    let message = format!("backend {}: {e}", self.backends[backend].name);
                    return Err(ProxyError::Backend { status: 502, message });
                }
                Err(e) => {
                    errors.push(format!("{}: {e}", self.backends[backend].name));
                    self.record_failure(backend, e.to_string(), now_ms);
                }
            }
        }
        Err(ProxyError::Unavailable(format!("no backend could answer the query ({})", errors.join("; "))))
    }

    /// The order in which to ask the backends of `set`, each tier in random
    /// order: healthy and caught up (empty write queue), then healthy but still
    /// replaying (its answers may miss queued writes), then down.
    fn read_order(&self, set: &[usize]) -> Vec<usize> {
        let mut tiers: [Vec<usize>; 3] = Default::default();
        for &b in set {
            let state = &self.states[b];
            let tier = match (state.health.borrow().is_healthy(), state.queue.is_empty()) {
                (true, true) => 0,
                (true, false) => 1,
                (false, _) => 2,
            };
            tiers[tier].push(b);
        }
        let mut order = Vec::with_capacity(set.len());
        for mut tier in tiers {
            fastrand::shuffle(&mut tier);
            order.extend(tier);
        }
        order
    }

    /// `SHOW` without FROM: every healthy backend (every backend if none is),
    /// answers merged. Fails only if no backend answered.
    ///
    /// `LIMIT n OFFSET m` is the window of the merged answer, not of each
    /// backend's: backends are asked for `LIMIT n+m` without OFFSET, and
    /// OFFSET then LIMIT are applied to each merged series, as InfluxDB
    /// applies them to its own answer (see [`window_show_rows`]).
    async fn show_all(&self, statement: &str, ctx: &QueryContext, now_ms: u64) -> Result<Value, ProxyError> {
        let bad = |e: String| ProxyError::BadRequest(format!("error parsing query: {e}"));
        let (limit, offset) = show_limit_offset(statement).map_err(bad)?;
        let sent = show_statement_for_backends(statement).map_err(bad)?;
        let mut targets: Vec<usize> = (0..self.backends.len()).filter(|&b| self.is_healthy(b)).collect();
        if targets.is_empty() {
            targets = (0..self.backends.len()).collect();
        }
        let singles: Vec<[usize; 1]> = targets.iter().map(|&b| [b]).collect();
        let answers =
            join_all(singles.iter().map(|one| self.read_one(one, &sent, ctx, false, now_ms)).collect()).await;
        let mut results = Vec::new();
        let mut first_error = None;
        for answer in answers {
            match answer.and_then(|r| {
                first_result(&r.body).map_err(|e| ProxyError::Unavailable(format!("bad backend answer: {e}")))
            }) {
                Ok(v) => results.push(v),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match (results.is_empty(), first_error) {
            (true, Some(e)) => Err(e),
            _ => Ok(window_show_rows(merge_statement_results(results), limit, offset)),
        }
    }

    /// A schema statement to every backend of `targets`, through the delivery
    /// rule (queued for backends that are down or have a backlog). The answer
    /// is the first directly delivered backend's result, or an empty success
    /// when every backend queued it.
    async fn schema(
        &self,
        targets: &[usize],
        statement: &str,
        ctx: &QueryContext,
        now_ms: u64,
    ) -> Result<Value, ProxyError> {
        let deliveries = join_all(
            targets
                .iter()
                .map(|&backend| {
                    let record = Record::Statement {
                        db: ctx.db.clone(),
                        q: statement.to_string(),
                        credentials: ctx.credentials.clone(),
                    };
                    async move { (backend, self.deliver(backend, record, 0, now_ms).await) }
                })
                .collect(),
        )
        .await;
        let delivered = self.settle(deliveries)?;
        // Any backend that reports the statement failed makes it a failure.
        let mut first = None;
        for (backend, r) in delivered {
            let name = &self.backends[backend].name;
            let result = first_result(&r.body)
                .map_err(|e| ProxyError::Unavailable(format!("bad answer from backend {name}: {e}")))?;
            if let Some(e) = result.get("error").and_then(|e| e.as_str()) {
                return Ok(crate::results::error_result(&format!("backend {name}: {e}")));
            }
            first.get_or_insert(result);
        }
        Ok(first.unwrap_or_else(|| Value::Object(Default::default())))
    }
}

fn no_route(measurement: &str) -> ProxyError {
    ProxyError::BadRequest(format!(
        "no route for measurement \"{measurement}\": add a keymap or \"_default_\""
    ))
}

/// The request's parameters: for `POST` with a form body, the body's first
/// (they take precedence, as in InfluxDB's use of Go's `FormValue`), then the
/// URL's.
fn query_params(request: &Request) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let is_form = request
        .header("content-type")
        .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    if request.method == Method::Post && is_form {
        params.extend(decode_params(&String::from_utf8_lossy(&request.body)));
    }
    params.extend(request.query.iter().cloned());
    params
}

/// `POST /query` to a backend with the statement in a form body.
fn query_request(statement: &str, ctx: &QueryContext, passthrough: bool) -> Request {
    let mut form = vec![("q".to_string(), statement.to_string())];
    if let Some(db) = &ctx.db {
        form.push(("db".into(), db.clone()));
    }
    for (k, v) in &ctx.forwarded {
        let formatting = matches!(k.as_str(), "pretty" | "chunked" | "chunk_size");
        if passthrough || !formatting {
            form.push((k.clone(), v.clone()));
        }
    }
    let mut request = Request::new(Method::Post, "/query");
    request.headers.push(("content-type".into(), "application/x-www-form-urlencoded".into()));
    if passthrough {
        if let Some(accept) = &ctx.accept {
            request.headers.push(("accept".into(), accept.clone()));
        }
    }
    super::add_credentials(&mut request, &ctx.credentials);
    request.body = crate::http::encode_params(&form).into_bytes();
    request
}

fn accepts_gzip(request: &Request) -> bool {
    request.header("accept-encoding").is_some_and(|v| {
        v.split(',').any(|e| e.split(';').next().is_some_and(|e| e.trim().eq_ignore_ascii_case("gzip")))
    })
}

/// The client's answer: backend headers reduced to the ones that describe the
/// body, gzip-compressed when the client accepts it.
fn finish(response: Response, gzip: bool) -> Response {
    let mut headers: Vec<(String, String)> = response
        .headers
        .into_iter()
        .filter(|(k, _)| {
            matches!(k.as_str(), "content-type" | "x-influxdb-build" | "request-id" | "x-influxdb-error")
        })
        .collect();
    let mut body = response.body;
    if gzip && !body.is_empty() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        if encoder.write_all(&body).is_ok() {
            if let Ok(compressed) = encoder.finish() {
                body = compressed;
                headers.push(("content-encoding".into(), "gzip".into()));
            }
        }
    }
    Response { status: response.status, headers, body }
}
