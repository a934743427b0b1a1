//! The query path: `GET|POST /query` (InfluxDB 1.x "Query data with the
//! InfluxDB API"), one or more InfluxQL statements separated by `;`.
//!
//! The query is planned whole before anything is sent ([`Proxy::plan`]): every
//! statement is checked against the statement filter, classified, routed and,
//! for a fanned-out SHOW, its LIMIT/OFFSET read. Any refusal (403, 400) fails
//! the whole request and reaches no backend. A query of several statements
//! with a mutation among them is also parsed whole by one backend first
//! ([`Proxy::check_syntax`]), since the planner does not read every statement
//! to the end: a parse error there is the answer, with nothing executed.
//! Then, per statement (see
//! [`crate::statement::StatementKind`]):
//! - reads with FROM go to one backend of the measurement's replica set,
//!   healthy ones first in random order, failing over on no answer or 5xx;
//!   regex or multi-set sources read one backend per replica set and merge;
//!   in a shard group ([`crate::shard_group`]) a measurement's replica set is
//!   that of its shard key `(db, measurement)` (db from `db.rp.m`, `SHOW ...
//!   ON db` or the `db` parameter), and a regex FROM reads a cover of the
//!   group: `N - RF + 1` distinct backends, healthy first, each that does not
//!   answer replaced by another backend of the group;
//! - `EXPLAIN [ANALYZE] SELECT` goes to one backend of the replica set the
//!   SELECT reads (of the first set or shard group when it reads several),
//!   failing over, and its answer is passed on;
//! - `SHOW` without FROM goes to every healthy backend and the answers are
//!   merged, so one backend down does not break it; with shard groups in the
//!   keymaps it goes to one backend of each explicit replica set and a cover
//!   of each group instead, so that every shard answers; its `LIMIT n OFFSET
//!   m` is sent as `LIMIT n+m` and re-applied to the merged rows;
//! - a measurement of a group sharded by a tag lives on several replica sets
//!   (one per tag value): `SHOW ... FROM` it reads a cover of the group (rows
//!   united, exact), and a `SELECT` from it is refused with 400 until the
//!   exact merge of partial answers is wired in, unless the group keeps
//!   every key on every backend (RF = N);
//! - schema statements go to every backend concerned through the same delivery
//!   rule as writes (queued for backends that are down); `DELETE` and `DROP
//!   SERIES` without FROM or FROM a regex go to every backend.
//!
//! A backend's error is passed on as InfluxDB wrote it; which backend
//! answered is in the [`BACKEND_HEADER`] response header and the log.
//!
//! Consecutive reads that go to the same backends are sent together, one
//! request per backend per batch of at most [`MAX_BATCH_STATEMENTS`]
//! statements, and the answer is written one result at a time
//! ([`ResultsWriter`]): time and memory grow linearly with the query. Each
//! result is kept as the backend's JSON text ([`StatementResult`]), parsed
//! only where a merge needs it, so an answer costs about its size in memory.
//!
//! As InfluxDB, the statements after a failed one are not executed. Before
//! any statement changed something, a failure is the answer's status (4xx
//! passed on, 503 when no backend answered); after, it is that statement's
//! `error` in a 200 answer, so a request that changed data never answers as
//! if it had been refused whole.
//!
//! A single read statement answered by one backend is passed through as the
//! backend sent it (so `chunked`, `pretty`, `epoch` and CSV via `Accept` work
//! unchanged); otherwise the per-statement results are combined into one
//! `{"results":[...]}` body.

use super::Delivery;
use super::{allow, join_all, Proxy, Topology};
use crate::error::ProxyError;
use crate::http::{decode_params, Method, Request, Response};
use crate::results::{
    answer_results, error_result, first_result, merge_select_results, merge_statement_results,
    window_show_rows, ResultsWriter, StatementResult,
};
use crate::route::{ReplicaSet, Route};
use crate::shard_query::{self, ShardQuery};
use crate::statement::{parse_statements, Source, Statement, StatementKind};
use crate::storage::Storage;
use crate::transport::{Transport, TransportError};
use crate::write_queue::{Credentials, Record};
use std::io::Write;

/// The statement [`Proxy::check_syntax`] appends to a query so that InfluxDB
/// parses it and executes none of it: not InfluxQL (InfluxDB answers `found
/// influx_proxy_syntax_check, expected SELECT, ...`).
const SYNTAX_PROBE: &str = "influx_proxy_syntax_check";

/// Parameters of one `/query` request that are forwarded to backends.
struct QueryContext {
    db: Option<String>,
    /// Forwarded as is: rp, epoch, params (bound parameters), pretty, chunked,
    /// chunk_size.
    forwarded: Vec<(String, String)>,
    credentials: Credentials,
    accept: Option<String>,
    pretty: bool,
    /// Which backends answered, for [`BACKEND_HEADER`] (shared with the
    /// inner contexts of a sharded SELECT).
    answered: std::rc::Rc<std::cell::RefCell<Answered>>,
}

/// The response header naming the backends whose answers the body was made
/// from: their configured names, each once, comma-separated
/// (`X-Influx-Proxy-Backend: a` or `a, b`). When the answer carries a
/// backend's error (a 4xx passed on, or a statement's `error` from one of
/// the backends a schema statement went to), it names that backend alone.
/// Absent when no backend answered (a refusal by the proxy, 503). The error
/// text itself is the backend's, unchanged, as InfluxDB sent it.
pub const BACKEND_HEADER: &str = "x-influx-proxy-backend";

/// The backends that answered one `/query` request, see [`BACKEND_HEADER`].
#[derive(Debug, Default)]
struct Answered {
    /// Backends whose answers were used, in the order they answered.
    names: Vec<String>,
    /// The backend whose error the answer carries, if any, and the error.
    error_from: Option<(String, String)>,
}

impl QueryContext {
    /// Notes that backend `name` answered.
    fn answered_by(&self, name: &str) {
        let mut answered = self.answered.borrow_mut();
        if !answered.names.iter().any(|n| n == name) {
            answered.names.push(name.to_string());
        }
    }

    /// Notes that the answer carries backend `name`'s error `message` (the
    /// first one noted).
    fn error_from(&self, name: &str, message: &str) {
        self.answered.borrow_mut().error_from.get_or_insert_with(|| (name.to_string(), message.to_string()));
    }

    /// The value of [`BACKEND_HEADER`], `None` when no backend answered.
    fn backend_header(&self) -> Option<String> {
        let answered = self.answered.borrow();
        match &answered.error_from {
            Some((name, _)) => Some(name.clone()),
            None if answered.names.is_empty() => None,
            None => Some(answered.names.join(", ")),
        }
    }
}

/// How a read statement is served.
enum ReadPlan {
    /// Every source lives on each of these backends: ask one.
    One(ReplicaSet),
    /// Sources span several replica sets (or a regex): ask one backend of each
    /// set and [`Pool::count`] distinct backends of each pool (shard groups
    /// read whole), and merge.
    Cover { sets: Vec<ReplicaSet>, pools: Vec<Pool> },
}

/// A shard group read whole: `count` distinct backends of `backends`, any
/// that many being a cover of the group (see [`crate::shard_group`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pool {
    backends: Vec<usize>,
    count: usize,
}

/// Most statements sent to one backend in one request. Consecutive read
/// statements with the same [`Reach`] are sent together (InfluxDB answers
/// one result per statement), so a query of many statements costs one
/// request per backend per batch instead of one per statement.
pub(super) const MAX_BATCH_STATEMENTS: usize = 1000;

/// Most bytes of statement text in one batched request (a batch also ends
/// at [`MAX_BATCH_STATEMENTS`]); bounds the size of a backend's answer held
/// at once.
const MAX_BATCH_BYTES: usize = 256 * 1024;

/// A statement of the request, planned before anything is sent: every check
/// that can refuse it (filter, classification, routing, LIMIT/OFFSET) has
/// passed.
struct Planned<'q> {
    /// The statement as the client wrote it (without the `;`).
    text: &'q str,
    action: Action,
}

enum Action {
    /// A read: `sent` (the statement, with a fanned-out SHOW's window
    /// rewritten) goes to `reach`; the answers are combined by `merge`.
    Read { sent: String, reach: Reach, merge: Merge },
    /// A schema statement, allowed administration statement or
    /// `SELECT ... INTO`: to every backend of `targets` through the delivery
    /// rule.
    Mutate { targets: Vec<usize> },
    /// A SELECT over a measurement sharded by a tag that no single replica
    /// set answers: `query` ([`crate::shard_query`]) is asked of a cover of
    /// the group and the answers are merged exactly (see
    /// [`Proxy::sharded_select`]).
    Sharded(Box<Sharded>),
}

/// The fan-out of one SELECT over a tag-sharded measurement.
struct Sharded {
    query: ShardQuery,
    /// The cover asked: the group's backends, `cover_size` of them.
    pool: Pool,
    /// The group's index in `Router::groups`.
    group: usize,
    /// The shard key's database and measurement.
    db: String,
    measurement: String,
}

/// Which backends a read goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reach {
    /// One backend of each replica set (healthy first, failing over within
    /// the set); every set must answer.
    EachSet(Vec<ReplicaSet>),
    /// Every healthy backend (every backend if none is); one answer is
    /// enough.
    EveryHealthy,
    /// One backend of each replica set (as `EachSet`) and `count` distinct
    /// backends of each pool, healthy first, a backend that does not answer
    /// replaced by another of its pool; every one must answer.
    Cover { sets: Vec<ReplicaSet>, pools: Vec<Pool> },
}

/// How the answers to one read statement are combined.
#[derive(Debug, Clone, Copy)]
enum Merge {
    /// One replica set: its answer as it is.
    One,
    /// SHOW: rows united, then OFFSET and LIMIT applied to the union.
    Show { limit: Option<u64>, offset: Option<u64> },
    /// SELECT over several replica sets: each series from the first set
    /// that has it.
    Select,
}

/// Where [`Proxy::ask_batch`] may stop before the end of its statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopAt {
    /// At a failed statement (an `error` result or no answer): one replica
    /// set, whose failure is the statement's.
    Failure,
    /// At a statement without an answer: one of several replica sets, each
    /// of which must answer (an `error` result of one set is then the
    /// statement's answer, see [`Proxy::read_batch`]).
    NoAnswer,
    /// Never: one of every healthy backend, where one answer is enough.
    Never,
}

/// What one statement gave: its result object (which may carry InfluxDB's
/// `error`), or a failure of the whole statement.
type Outcome = Result<StatementResult, ProxyError>;

fn failed(outcome: &Outcome) -> bool {
    outcome.as_ref().map_or(true, StatementResult::has_error)
}

impl<T: Transport, S: Storage> Proxy<T, S> {
    pub(crate) async fn query(
        &self,
        topo: &Topology,
        request: &Request,
        now_ms: u64,
    ) -> Result<Response, ProxyError> {
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
            // With token auth at the proxy the client's credentials are
            // the proxy's, not the backends' (`u`/`p` of a form body too).
            credentials: if topo.config.auth.is_some() {
                Credentials::default()
            } else {
                Credentials {
                    username: get("u").filter(|u| !u.is_empty()),
                    password: get("p"),
                    authorization: request.header("authorization").map(str::to_string),
                }
            },
            accept: request.header("accept").map(str::to_string),
            answered: Default::default(),
        };
        let gzip = accepts_gzip(request);
        let mut response = match self.run_query(topo, &q, &ctx, gzip, now_ms).await {
            Ok(response) => response,
            Err(e) => e.to_response(),
        };
        if let Some(names) = ctx.backend_header() {
            response.headers.push((BACKEND_HEADER.into(), names));
        }
        if let Some((name, message)) = &ctx.answered.borrow().error_from {
            self.log(&format!(
                "backend {name}: error passed on to the client (HTTP {}): {message}",
                response.status
            ));
        }
        Ok(response)
    }

    /// [`Self::query`] once its parameters are read: plans the statements of
    /// `q`, runs them and combines the answers.
    async fn run_query(
        &self,
        topo: &Topology,
        q: &str,
        ctx: &QueryContext,
        gzip: bool,
        now_ms: u64,
    ) -> Result<Response, ProxyError> {
        let statements =
            parse_statements(q).map_err(|e| ProxyError::BadRequest(format!("error parsing query: {e}")))?;
        if statements.is_empty() {
            return Err(ProxyError::BadRequest("error parsing query: empty query".into()));
        }
        let plans = self.plan(topo, &statements, ctx.db.as_deref())?;
        // The proxy's planner reads only what routing needs: a statement
        // InfluxDB cannot parse after a mutation would reach a backend after
        // the mutation ran. InfluxDB parses the whole query first.
        if plans.len() > 1 && plans.iter().any(|p| matches!(p.action, Action::Mutate { .. })) {
            self.check_syntax(topo, q, ctx, now_ms).await?;
        }

        // One read statement served by one backend: pass its answer through.
        if let [Planned { text, action: Action::Read { reach: Reach::EachSet(sets), merge: Merge::One, .. } }] =
            plans.as_slice()
        {
            if let [set] = sets.as_slice() {
                let response = self.read_one(set, text, ctx, true, now_ms).await?;
                return Ok(finish(response, gzip));
            }
        }

        let mut out = ResultsWriter::new(ctx.pretty);
        // Whether a statement changed (or queued a change to) a backend: from
        // then on a failure is that statement's error in a 200 answer, never
        // the answer's status, since the request was not refused whole.
        let mut mutated = false;
        let mut next = 0;
        'statements: while next < plans.len() {
            let outcomes = match &plans[next].action {
                Action::Mutate { targets } => {
                    let (outcome, changed) = self.schema(targets, plans[next].text, ctx, now_ms).await;
                    mutated |= changed;
                    next += 1;
                    vec![outcome]
                }
                Action::Sharded(sharded) => {
                    next += 1;
                    vec![self.sharded_select(topo, sharded, ctx, now_ms).await]
                }
                Action::Read { reach, .. } => {
                    let end = batch_end(&plans, next);
                    let outcomes = self.read_batch(topo, &plans[next..end], reach, ctx, now_ms).await;
                    next = end;
                    outcomes
                }
            };
            for outcome in outcomes {
                // As InfluxDB: the statements after a failed one are not executed.
                let stop = failed(&outcome);
                match outcome {
                    Ok(result) => {
                        let before = out.bytes();
                        out.push(result);
                        // Each backend answer is bounded by the transport; the
                        // combined answer by the same limit.
                        let limit = topo.config.backend_max_response_bytes;
                        if out.bytes() as u64 > limit {
                            let message = format!(
                                "query answer larger than backend_max_response_bytes ({limit} bytes)"
                            );
                            if !mutated {
                                return Err(ProxyError::Backend { status: 502, message });
                            }
                            out.pop(before);
                            out.push(error_result(&message).into());
                            break 'statements;
                        }
                    }
                    Err(e) if !mutated => return Err(e),
                    Err(e) => out.push(error_result(e.message()).into()),
                }
                if stop {
                    break 'statements;
                }
            }
        }
        while out.len() < plans.len() {
            out.push(error_result("not executed").into());
        }
        let mut response = Response::json(200, out.finish());
        response.headers.push(("x-influxdb-build".into(), "OSS".into()));
        Ok(finish(response, gzip))
    }

    /// Has a backend parse the whole query `q` without executing any of it:
    /// `q`, then a statement that cannot parse ([`SYNTAX_PROBE`]). InfluxDB
    /// 1.x parses a whole query before executing any statement and refuses
    /// it whole at the first parse error (400 `error parsing query: ... at
    /// line L, char C`), so nothing runs either way. An error naming the probe
    /// means `q` parsed; any other parse error is `q`'s own, with the
    /// position influxd gives for `q` alone (the probe comes after it), and
    /// fails the request with that 400 before anything is sent. No answer,
    /// or any other answer (401 without credentials, ...), checks nothing:
    /// the query runs as planned.
    async fn check_syntax(
        &self,
        topo: &Topology,
        q: &str,
        ctx: &QueryContext,
        now_ms: u64,
    ) -> Result<(), ProxyError> {
        let probe = format!("{q}\n;{SYNTAX_PROBE}");
        let every: Vec<usize> = topo.active.clone();
        // The probe's answer is not the client's: its backend is not noted
        // for the header unless its parse error becomes the answer.
        let probe_ctx = QueryContext {
            db: ctx.db.clone(),
            forwarded: ctx.forwarded.clone(),
            credentials: ctx.credentials.clone(),
            accept: None,
            pretty: false,
            answered: Default::default(),
        };
        let outcome = self.read_one(&every, &probe, &probe_ctx, false, now_ms).await;
        match outcome {
            Err(ProxyError::Backend { status: 400, message })
                if message.starts_with("error parsing query") && !message.contains(SYNTAX_PROBE) =>
            {
                if let Some((name, error)) = probe_ctx.answered.borrow().error_from.clone() {
                    ctx.answered_by(&name);
                    ctx.error_from(&name, &error);
                }
                Err(ProxyError::BadRequest(message))
            }
            _ => Ok(()),
        }
    }

    /// Plans every statement before anything is sent: the statement filter
    /// (403), then classification, routing and a fanned-out SHOW's
    /// LIMIT/OFFSET (400). The first refusal fails the whole request.
    fn plan<'q>(
        &self,
        topo: &Topology,
        statements: &[Statement<'q>],
        db: Option<&str>,
    ) -> Result<Vec<Planned<'q>>, ProxyError> {
        for statement in statements {
            topo.filter.check_statement(statement).map_err(ProxyError::Forbidden)?;
        }
        let bad = |e: String| ProxyError::BadRequest(format!("error parsing query: {e}"));
        let mut plans = Vec::with_capacity(statements.len());
        for statement in statements {
            let text = statement.text();
            let is_show = statement.is_show();
            // The database of the statement's shard keys: `SHOW ... ON db`,
            // else the `db` parameter (a `db.rp.m` source names its own).
            let on = if is_show { statement.show_on_database() } else { None };
            let db = on.as_deref().or(db);
            let action = match statement.classify().map_err(bad)? {
                StatementKind::ReadFrom(sources) if !is_show && tag_sharded(topo, &sources, db).is_some() => {
                    self.plan_sharded_select(topo, text, &sources, db)?
                }
                StatementKind::ReadFrom(sources) => match self.read_plan(topo, &sources, db, !is_show)? {
                    ReadPlan::One(set) => Action::Read {
                        sent: text.to_string(),
                        reach: Reach::EachSet(vec![set]),
                        merge: Merge::One,
                    },
                    ReadPlan::Cover { sets, pools } => {
                        let reach = if pools.is_empty() {
                            Reach::EachSet(sets)
                        } else {
                            Reach::Cover { sets, pools }
                        };
                        // SHOW ... FROM several replica sets: rows are united and
                        // LIMIT/OFFSET re-applied, as for SHOW without FROM;
                        // SELECT: each series from the backend that holds it.
                        if is_show {
                            let (limit, offset) = statement.show_limit_offset().map_err(bad)?;
                            Action::Read {
                                sent: statement.for_backends().map_err(bad)?,
                                reach,
                                merge: Merge::Show { limit, offset },
                            }
                        } else {
                            Action::Read { sent: text.to_string(), reach, merge: Merge::Select }
                        }
                    }
                },
                StatementKind::ShowAll => {
                    let (limit, offset) = statement.show_limit_offset().map_err(bad)?;
                    Action::Read {
                        sent: statement.for_backends().map_err(bad)?,
                        reach: self.show_all_reach(topo),
                        merge: Merge::Show { limit, offset },
                    }
                }
                StatementKind::SchemaAll => Action::Mutate { targets: topo.active.clone() },
                StatementKind::SchemaMeasurement(m) => Action::Mutate {
                    targets: self.schema_targets(topo, &m.name, m.database.as_deref().or(db))?,
                },
                // DELETE / DROP SERIES FROM several measurements: every
                // backend that may hold any of them; a regex may match any
                // measurement, so every backend.
                StatementKind::SchemaSources(sources) => {
                    let mut targets = Vec::new();
                    if sources.is_empty() || sources.iter().any(|s| matches!(s, Source::Regex { .. })) {
                        targets.extend(self.every_measurement_targets(topo)?);
                    }
                    for source in &sources {
                        if let Source::Measurement(m) = source {
                            targets.extend(self.schema_targets(
                                topo,
                                &m.name,
                                m.database.as_deref().or(db),
                            )?);
                        }
                    }
                    crate::sort::sort_unstable(&mut targets);
                    targets.dedup();
                    Action::Mutate { targets }
                }
                // EXPLAIN [ANALYZE]: to one backend of the replica set that
                // holds the sources, failing over, its answer passed on. A
                // SELECT that reads several replica sets or shards (merged
                // otherwise) is explained by one backend of the first set (or
                // of the first shard group): that backend's plan of the part
                // of the data it holds. Plans are not merged.
                StatementKind::Explain(sources) => {
                    let set = match self.read_plan(topo, &sources, db, false)? {
                        ReadPlan::One(set) => set,
                        ReadPlan::Cover { sets, pools } => sets
                            .into_iter()
                            .next()
                            .or_else(|| pools.into_iter().next().map(|pool| pool.backends))
                            .unwrap_or_default(),
                    };
                    Action::Read {
                        sent: text.to_string(),
                        reach: Reach::EachSet(vec![set]),
                        merge: Merge::One,
                    }
                }
                StatementKind::SelectInto(sources) => {
                    // Each replica computes its own copy of the target into
                    // its own store: in a shard group the target would then
                    // live on the sources' replicas, not on its own key's.
                    let grouped = sources.iter().any(|source| match source {
                        Source::Measurement(m) => matches!(topo.router.route(&m.name), Some(Route::Group(_))),
                        Source::Regex { .. } => !topo.router.groups().is_empty(),
                    });
                    if grouped {
                        return Err(ProxyError::BadRequest(
                            "SELECT ... INTO from measurements of a shard group is not supported: the target \
                             would not be placed by its own shard key (read the data and write it through the proxy)"
                                .into(),
                        ));
                    }
                    let mut targets: Vec<usize> = match self.read_plan(topo, &sources, db, true)? {
                        ReadPlan::One(set) => set,
                        ReadPlan::Cover { sets, pools } => sets
                            .into_iter()
                            .flatten()
                            .chain(pools.into_iter().flat_map(|p| p.backends))
                            .collect(),
                    };
                    crate::sort::sort_unstable(&mut targets);
                    targets.dedup();
                    Action::Mutate { targets }
                }
            };
            plans.push(Planned { text, action });
        }
        Ok(plans)
    }

    /// Runs a batch of read statements that share `reach` and combines the
    /// answers per statement. The outcomes are in statement order, one per
    /// statement, except that they end at a failed statement on a single
    /// replica set (InfluxDB does not execute the statements after it). An
    /// `error` result from one of several sets or cover backends is the
    /// statement's answer (the others' rows alone would look complete).
    async fn read_batch(
        &self,
        topo: &Topology,
        batch: &[Planned<'_>],
        reach: &Reach,
        ctx: &QueryContext,
        now_ms: u64,
    ) -> Vec<Outcome> {
        let sent: Vec<&str> = batch
            .iter()
            .map(|p| match &p.action {
                Action::Read { sent, .. } => sent.as_str(),
                Action::Mutate { .. } | Action::Sharded(_) => p.text,
            })
            .collect();
        let merges: Vec<Merge> = batch
            .iter()
            .map(|p| match &p.action {
                Action::Read { merge, .. } => *merge,
                Action::Mutate { .. } | Action::Sharded(_) => Merge::One,
            })
            .collect();
        let (answers, every_healthy) = match reach {
            Reach::EachSet(sets) => {
                let stop_at = if sets.len() == 1 { StopAt::Failure } else { StopAt::NoAnswer };
                let asks = sets.iter().map(|set| self.ask_batch(set, &sent, ctx, stop_at, now_ms)).collect();
                (join_all(asks).await, false)
            }
            Reach::Cover { sets, pools } => {
                let parts: Vec<Pool> = sets
                    .iter()
                    .map(|set| Pool { backends: set.clone(), count: 1 })
                    .chain(pools.iter().cloned())
                    .collect();
                let asks = parts.iter().map(|part| self.ask_pool(part, &sent, ctx, now_ms)).collect();
                (join_all(asks).await.into_iter().flatten().collect(), false)
            }
            Reach::EveryHealthy => {
                let mut targets: Vec<usize> =
                    topo.active.iter().copied().filter(|&b| self.is_healthy(b)).collect();
                if targets.is_empty() {
                    targets = topo.active.clone();
                }
                let singles: Vec<[usize; 1]> = targets.iter().map(|&b| [b]).collect();
                let asks = singles
                    .iter()
                    .map(|one| self.ask_batch(one, &sent, ctx, StopAt::Never, now_ms))
                    .collect();
                (join_all(asks).await, true)
            }
        };
        // Each backend's outcomes, consumed statement by statement.
        let mut answers: Vec<std::vec::IntoIter<Outcome>> = answers.into_iter().map(Vec::into_iter).collect();
        let mut outcomes = Vec::with_capacity(batch.len());
        for merge in merges {
            let mut values = Vec::with_capacity(answers.len());
            let mut first_error = None;
            for answer in &mut answers {
                match answer.next() {
                    Some(Ok(v)) => values.push(v),
                    Some(Err(e)) => {
                        first_error.get_or_insert(e);
                    }
                    // A single replica set stopped at a failed statement.
                    None => return outcomes,
                }
            }
            // An `error` result of one of several sets or cover backends is
            // the statement's answer: merged away, the others' rows would
            // be answered as complete.
            let errored = (!every_healthy && values.len() > 1)
                .then(|| values.iter().position(StatementResult::has_error))
                .flatten();
            let outcome = match first_error {
                // Every set must answer, except that SHOW without FROM needs one backend.
                Some(e) if !every_healthy || values.is_empty() => Err(e),
                _ if errored.is_some() => Ok(values.swap_remove(errored.unwrap_or_default())),
                _ => Ok(match merge {
                    Merge::One => values.into_iter().next().unwrap_or_default(),
                    // SHOW answers are parsed whole: their rows are sorted and united.
                    Merge::Show { limit, offset } => {
                        let values = values.iter().map(StatementResult::to_value).collect();
                        window_show_rows(merge_statement_results(values), limit, offset).into()
                    }
                    Merge::Select => merge_select_results(values),
                }),
            };
            outcomes.push(outcome);
        }
        outcomes
    }

    /// Asks one backend of `set` (see [`Self::read_one`]) for the results of
    /// `statements`, sent together. One outcome per statement in order, or
    /// fewer ending with the statement `stop_at` stops at.
    ///
    /// InfluxDB stops a query at a failed statement, and 1.6 then reports
    /// `not executed` in place of its error: such a statement is asked again
    /// alone for its own answer, and the statements after it are sent again
    /// (unless it stops there), in a batch half as long as the one cut short
    /// (doubling again after each whole batch): the statements sent stay
    /// within a small multiple of `statements.len()` however many fail. A batch refused whole with 4xx (a statement
    /// InfluxDB cannot parse) is asked statement by statement. A batch that
    /// got no answer (timeout, 5xx from every backend of the set) is asked
    /// statement by statement too, since many heavy statements together can
    /// outlast `request_timeout_ms` where each alone would not, except with
    /// [`StopAt::Never`], where it fails every statement of the batch (a
    /// hanging backend must not cost one timeout per statement).
    async fn ask_batch(
        &self,
        set: &[usize],
        statements: &[&str],
        ctx: &QueryContext,
        stop_at: StopAt,
        now_ms: u64,
    ) -> Vec<Outcome> {
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(statements.len());
        // Ask the next statement alone / ask every remaining one alone.
        let mut alone_next = false;
        let mut one_by_one = false;
        // The last batch gave no result at all.
        let mut batch_gave_nothing = false;
        // Statements per request: halved after a batch cut short by a failed
        // statement, doubled after a whole one, so a backend that fails many
        // statements is not sent the rest of the batch again after each.
        let mut batch_size = statements.len();
        while outcomes.len() < statements.len() {
            let rest = &statements[outcomes.len()..];
            let part = &rest[..rest.len().min(batch_size)];
            if part.len() == 1 || alone_next || one_by_one {
                alone_next = false;
                let outcome = self.ask_one(set, rest[0], ctx, now_ms).await;
                let ok = !failed(&outcome);
                // A batch that failed at its first statement although that
                // statement answers alone: send the rest one by one (a
                // backend that cannot answer batches still costs one request
                // per statement, not one batch per statement).
                one_by_one |= std::mem::take(&mut batch_gave_nothing) && ok;
                let stop = match stop_at {
                    StopAt::Failure => !ok,
                    StopAt::NoAnswer => outcome.is_err(),
                    StopAt::Never => false,
                };
                outcomes.push(outcome);
                if stop {
                    break;
                }
                continue;
            }
            let joined = part.join(";\n");
            match self.read_one(set, &joined, ctx, false, now_ms).await {
                Ok(response) => match batch_results(&response.body, part.len()) {
                    Ok(results) => {
                        let complete = results.len() == part.len();
                        alone_next = !complete;
                        batch_gave_nothing = results.is_empty();
                        batch_size = if complete {
                            batch_size.saturating_mul(2).min(statements.len())
                        } else {
                            (batch_size / 2).max(1)
                        };
                        outcomes.extend(results.into_iter().map(Ok));
                    }
                    Err(e) if stop_at == StopAt::Never => {
                        let e = ProxyError::Unavailable(format!("bad backend answer: {e}"));
                        outcomes.resize(statements.len(), Err(e));
                    }
                    Err(_) => one_by_one = true,
                },
                Err(ProxyError::Backend { .. }) => one_by_one = true,
                Err(e) if stop_at == StopAt::Never => outcomes.resize(statements.len(), Err(e)),
                Err(_) => one_by_one = true,
            }
        }
        outcomes
    }

    /// A query to `backend` failed (no answer or 5xx): counted as a backend
    /// error and kept as its `last_error`, but not towards
    /// `health_check_fall` (see [`Self::read_one`]).
    fn record_query_failure(&self, backend: usize, error: String, now_ms: u64) {
        let topo = self.topology();
        if let (Some(s), Some(addr)) = (topo.states.get(backend), topo.backends.get(backend)) {
            self.metrics.backend_error(&addr.name);
            s.health.borrow_mut().record_query_failure(error, now_ms);
        }
    }

    /// One statement's result from one backend of `set`.
    async fn ask_one(&self, set: &[usize], statement: &str, ctx: &QueryContext, now_ms: u64) -> Outcome {
        let response = self.read_one(set, statement, ctx, false, now_ms).await?;
        first_result(&response.body).map_err(|e| ProxyError::Unavailable(format!("bad backend answer: {e}")))
    }

    /// Where a read of `sources` goes: one replica set holding every source,
    /// or one backend of each of several sets plus a cover of each shard
    /// group read whole. `db` is the database of sources that do not name
    /// one (`db.rp.m`); without any, a measurement of a group is asked of
    /// any backend of the group (which answers InfluxDB's "database name
    /// required"). `select`: a SELECT, which cannot be answered exactly by
    /// uniting the answers of a group sharded by a tag (400 for now); SHOW
    /// statements can.
    fn read_plan(
        &self,
        topo: &Topology,
        sources: &[Source],
        db: Option<&str>,
        select: bool,
    ) -> Result<ReadPlan, ProxyError> {
        let mut sets: Vec<ReplicaSet> = Vec::new();
        let mut pools: Vec<Pool> = Vec::new();
        let mut regex = false;
        let add_set = |sets: &mut Vec<ReplicaSet>, set: ReplicaSet| {
            if !sets.contains(&set) {
                sets.push(set);
            }
        };
        for source in sources {
            match source {
                Source::Measurement(m) => {
                    match topo.router.route(&m.name).ok_or_else(|| no_route(&m.name))? {
                        Route::Set(set) => add_set(&mut sets, set.clone()),
                        Route::Group(group) => match (m.database.as_deref().or(db), group.shard_tag()) {
                            // A key being moved: its old owners until verified.
                            (Some(db), None) if moving(topo, group) => {
                                let key = crate::rebalance::KeyId::new(db, &m.name, None);
                                let set = match topo
                                    .moves
                                    .get(group.name())
                                    .and_then(|mv| mv.rebalance.read_targets(&key))
                                {
                                    Some(names) => super::moves::indices_of(topo, &names),
                                    None => group.replicas(db, &m.name, None),
                                };
                                add_set(&mut sets, set)
                            }
                            (_, Some(tag)) if select && moving(topo, group) => {
                                return Err(tag_sharded_select(
                                    &format!("measurement \"{}\"", m.name),
                                    group.name(),
                                    tag,
                                ))
                            }
                            (_, Some(_)) if moving(topo, group) => {
                                let pool = group_pool(topo, group);
                                if !pools.contains(&pool) {
                                    pools.push(pool);
                                }
                            }
                            _ if group.is_full_copy() => add_set(&mut sets, group.backends().to_vec()),
                            (Some(db), None) => add_set(&mut sets, group.replicas(db, &m.name, None)),
                            // No database: any backend answers InfluxDB's
                            // "database name required".
                            (None, _) => add_set(&mut sets, group.backends().to_vec()),
                            (_, Some(tag)) if select => {
                                return Err(tag_sharded_select(
                                    &format!("measurement \"{}\"", m.name),
                                    group.name(),
                                    tag,
                                ))
                            }
                            (_, Some(_)) => {
                                let pool =
                                    Pool { backends: group.backends().to_vec(), count: group.cover_size() };
                                if !pools.contains(&pool) {
                                    pools.push(pool);
                                }
                            }
                        },
                    }
                }
                Source::Regex { .. } => regex = true,
            }
        }
        if regex {
            for route in topo.router.destinations() {
                match route {
                    Route::Set(set) => add_set(&mut sets, set.clone()),
                    Route::Group(group) if group.is_full_copy() && !moving(topo, group) => {
                        add_set(&mut sets, group.backends().to_vec())
                    }
                    Route::Group(group) => {
                        if let (Some(tag), true) = (group.shard_tag(), select) {
                            return Err(tag_sharded_select(
                                "a regex FROM, which may match measurements",
                                group.name(),
                                tag,
                            ));
                        }
                        if select && topo.moves.get(group.name()).is_some_and(|mv| mv.refuses_cover_select())
                        {
                            return Err(ProxyError::BadRequest(format!(
                                "a regex FROM over shard group \"{}\" cannot be answered exactly while its keys \
                                 are being copied between backends that also hold other keys; name the \
                                 measurements, or retry once the move is verified (/health)",
                                group.name()
                            )));
                        }
                        let pool = group_pool(topo, group);
                        if !pools.contains(&pool) {
                            pools.push(pool);
                        }
                    }
                }
            }
            return Ok(ReadPlan::Cover { sets, pools });
        }
        let common: ReplicaSet = match sets.first() {
            Some(first) if pools.is_empty() => {
                first.iter().copied().filter(|b| sets.iter().all(|s| s.contains(b))).collect()
            }
            _ => Vec::new(),
        };
        if common.is_empty() {
            Ok(ReadPlan::Cover { sets, pools })
        } else {
            Ok(ReadPlan::One(common))
        }
    }

    /// Where `SHOW` without FROM goes: every healthy backend when the
    /// keymaps name explicit replica sets only (as before shard groups: one
    /// answer is enough); with a shard group, one backend of each explicit
    /// set and a cover of each group, so that every shard answers.
    fn show_all_reach(&self, topo: &Topology) -> Reach {
        let destinations = topo.router.destinations();
        if !destinations.iter().any(|d| matches!(d, Route::Group(_))) {
            return Reach::EveryHealthy;
        }
        let (mut sets, mut pools) = (Vec::new(), Vec::new());
        for route in destinations {
            match route {
                Route::Set(set) => sets.push(set.clone()),
                Route::Group(group) => pools.push(group_pool(topo, group)),
            }
        }
        Reach::Cover { sets, pools }
    }

    /// The backends a `DELETE` or `DROP SERIES` of every measurement (no
    /// FROM, or FROM a regex) goes to: every active backend and, while a
    /// shard group is being moved, the moving keys' old owners. Refused
    /// (400) while a key of a move is being copied, as a `DELETE` of that
    /// key is ([`Self::schema_targets`]): a chunk read before the delete
    /// would bring the points back on the new owner.
    fn every_measurement_targets(&self, topo: &Topology) -> Result<Vec<usize>, ProxyError> {
        let mut targets = topo.active.clone();
        for (group, mv) in &topo.moves {
            if !mv.rebalance.delete_allowed_all() {
                return Err(ProxyError::BadRequest(format!(
                    "shard group \"{group}\" is being moved between backends: DELETE and DROP SERIES without \
                     FROM or FROM a regex are refused until its copy is done; retry later, or name the \
                     measurements"
                )));
            }
            let (old, _, _) = mv.rebalance.owner_summary();
            targets.extend(super::moves::indices_of(topo, &old.into_iter().collect::<Vec<_>>()));
        }
        crate::sort::sort_unstable(&mut targets);
        targets.dedup();
        Ok(targets)
    }

    /// The backends a `DROP MEASUREMENT`, `DELETE` or `DROP SERIES FROM
    /// measurement` goes to: every replica that may hold it (the explicit
    /// set; in a group sharded by measurement the replicas of `(db,
    /// measurement)`, every backend of the group without a database; in a
    /// group sharded by a tag, every backend of the group).
    fn schema_targets(
        &self,
        topo: &Topology,
        measurement: &str,
        db: Option<&str>,
    ) -> Result<Vec<usize>, ProxyError> {
        let route = topo.router.route(measurement).ok_or_else(|| no_route(measurement))?;
        if let Route::Group(group) = route {
            if let Some(mv) = topo.moves.get(group.name()) {
                let refuse = || {
                    ProxyError::BadRequest(format!(
                        "measurement \"{measurement}\" is being moved between backends (shard group \"{}\"): \
                         DELETE, DROP SERIES and DROP MEASUREMENT are refused until its copy is done; retry later",
                        group.name()
                    ))
                };
                let mut targets: Vec<usize> = match (db, group.shard_tag()) {
                    (Some(db), None) => {
                        let key = crate::rebalance::KeyId::new(db, measurement, None);
                        if !mv.rebalance.delete_allowed(&key) {
                            return Err(refuse());
                        }
                        match mv.rebalance.write_targets(&key) {
                            Some(names) => super::moves::indices_of(topo, &names),
                            None => group.replicas(db, measurement, None),
                        }
                    }
                    _ => {
                        if !mv.rebalance.delete_allowed_measurement(db, measurement) {
                            return Err(refuse());
                        }
                        let (old, _, _) = mv.rebalance.owner_summary();
                        let mut all = group.backends().to_vec();
                        all.extend(super::moves::indices_of(topo, &old.into_iter().collect::<Vec<_>>()));
                        all
                    }
                };
                crate::sort::sort_unstable(&mut targets);
                targets.dedup();
                return Ok(targets);
            }
        }
        Ok(match route {
            Route::Set(set) => set.clone(),
            Route::Group(group) => match (db, group.shard_tag()) {
                (Some(db), None) => group.replicas(db, measurement, None),
                _ => group.backends().to_vec(),
            },
        })
    }

    /// One read of `statements` from `pool`: one answer (all its outcomes)
    /// per backend asked, `pool.count` of them. A set (`count` 1) is asked
    /// as [`Self::ask_batch`] asks it, failing over inside the set. A cover
    /// (`count` > 1) asks that many distinct backends at once, healthy ones
    /// first ([`Self::read_order`]); each that does not answer every
    /// statement is replaced by the next backend of the pool. When the pool
    /// runs out, the failed answers stand in for the missing ones, so that
    /// the statements they could not answer fail.
    async fn ask_pool(
        &self,
        pool: &Pool,
        statements: &[&str],
        ctx: &QueryContext,
        now_ms: u64,
    ) -> Vec<Vec<Outcome>> {
        if pool.count <= 1 {
            return vec![self.ask_batch(&pool.backends, statements, ctx, StopAt::NoAnswer, now_ms).await];
        }
        self.ask_cover(pool, statements, ctx, now_ms)
            .await
            .into_iter()
            .map(|(_, outcomes)| outcomes)
            .collect()
    }

    /// [`Self::ask_pool`] for a cover (`pool.count` distinct backends, each
    /// asked alone), with the index of the backend of each answer: answers
    /// of every statement first, in the order they were asked, then the
    /// failed ones standing in for the backends missing.
    async fn ask_cover(
        &self,
        pool: &Pool,
        statements: &[&str],
        ctx: &QueryContext,
        now_ms: u64,
    ) -> Vec<(usize, Vec<Outcome>)> {
        let order = self.read_order(&pool.backends);
        let (mut answered, mut failed) = (Vec::new(), Vec::new());
        let mut next = 0;
        while answered.len() < pool.count && next < order.len() {
            let take = (pool.count - answered.len()).min(order.len() - next);
            let singles: Vec<[usize; 1]> = order[next..next + take].iter().map(|&b| [b]).collect();
            next += take;
            let asks = singles
                .iter()
                .map(|one| async move {
                    (one[0], self.ask_batch(one, statements, ctx, StopAt::NoAnswer, now_ms).await)
                })
                .collect();
            for (backend, outcomes) in join_all(asks).await {
                // An `error` result counts as no answer: the merge would
                // drop it and answer the other backends' keys as complete.
                if outcomes.len() == statements.len() && !outcomes.iter().any(self::failed) {
                    answered.push((backend, outcomes));
                } else {
                    failed.push((backend, outcomes));
                }
            }
        }
        let missing = pool.count.saturating_sub(answered.len());
        answered.extend(failed.into_iter().take(missing));
        answered
    }

    /// Plans a SELECT of one measurement of a group sharded by a tag (see
    /// [`tag_sharded`]): a `WHERE` that pins the shard tag to values one
    /// backend holds all of goes to that replica set as it is, like any
    /// read of one replica set; otherwise the statement is planned by
    /// [`crate::shard_query::plan`] for a fan-out to a cover of the group,
    /// or refused with its 400 (a function that cannot be merged exactly,
    /// naming how to make the query exact).
    fn plan_sharded_select(
        &self,
        topo: &Topology,
        text: &str,
        sources: &[Source],
        db: Option<&str>,
    ) -> Result<Action, ProxyError> {
        let Some((index, measurement, db)) = tag_sharded(topo, sources, db) else {
            return Err(ProxyError::Internal("not a tag-sharded SELECT".into()));
        };
        let Some(group) = topo.router.groups().get(index) else {
            return Err(ProxyError::Internal("no such shard group".into()));
        };
        let Some(tag) = group.shard_tag() else {
            return Err(ProxyError::Internal("shard group without a shard tag".into()));
        };
        let pinned = shard_query::pinned_values(text, tag)
            .map_err(|e| ProxyError::BadRequest(format!("error parsing query: {e}")))?;
        if let Some(values) = pinned {
            let mut common: Option<ReplicaSet> = None;
            for value in &values {
                let replicas = read_replicas(topo, group, db, measurement, Some(value));
                common = Some(match common {
                    None => replicas,
                    Some(c) => c.into_iter().filter(|b| replicas.contains(b)).collect(),
                });
            }
            if let Some(set) = common.filter(|c| !c.is_empty()) {
                return Ok(Action::Read {
                    sent: text.to_string(),
                    reach: Reach::EachSet(vec![set]),
                    merge: Merge::One,
                });
            }
        }
        let query = shard_query::plan(text, tag).map_err(ProxyError::BadRequest)?;
        Ok(Action::Sharded(Box::new(Sharded {
            query,
            pool: group_pool(topo, group),
            group: index,
            db: db.to_string(),
            measurement: measurement.to_string(),
        })))
    }

    /// Runs a planned tag-sharded fan-out: the backends' statements
    /// ([`ShardQuery::backend_statements`]) asked of a cover of the group
    /// ([`Self::ask_cover`]: healthy first, a backend that does not answer
    /// replaced by another of the group), without the client's `epoch` and
    /// `chunked` (the merge reads RFC 3339 times and applies `epoch` itself),
    /// then merged with each tag value's series taken from the first
    /// backend asked that holds it ([`crate::shard_group::ShardGroup::owner_among`]).
    /// A statement a backend could not answer fails as unanswered reads do;
    /// a merge the data make inexact is a 400.
    async fn sharded_select(
        &self,
        topo: &Topology,
        sharded: &Sharded,
        ctx: &QueryContext,
        now_ms: u64,
    ) -> Outcome {
        let epoch = ctx.forwarded.iter().find(|(k, _)| k == "epoch").map(|(_, v)| v.clone());
        let inner = QueryContext {
            db: ctx.db.clone(),
            forwarded: ctx
                .forwarded
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "epoch" | "chunked" | "chunk_size"))
                .cloned()
                .collect(),
            credentials: ctx.credentials.clone(),
            accept: None,
            pretty: false,
            answered: ctx.answered.clone(),
        };
        let statements: Vec<&str> = sharded.query.backend_statements().iter().map(String::as_str).collect();
        let mut asked = Vec::new();
        let mut answers = Vec::new();
        for (backend, outcomes) in self.ask_cover(&sharded.pool, &statements, &inner, now_ms).await {
            let results = outcomes.into_iter().collect::<Result<Vec<_>, _>>()?;
            asked.push(backend);
            answers.push((backend, results));
        }
        let Some(group) = topo.router.groups().get(sharded.group) else {
            return Err(ProxyError::Internal("no such shard group".into()));
        };
        // Each value's series from the first asked backend that holds the
        // key whole: its replicas, or its old owners while a move has not
        // verified it.
        let owner = |value: &str| {
            let holders = read_replicas(topo, group, &sharded.db, &sharded.measurement, Some(value));
            asked.iter().copied().find(|b| holders.contains(b))
        };
        sharded.query.merge(answers, &owner, epoch.as_deref()).map_err(ProxyError::BadRequest)
    }

    /// Asks one backend of `set`: healthy ones first, in random order, then
    /// the others; the next on no answer or 5xx. A 4xx is the client's fault
    /// and is returned at once. `passthrough` forwards the client's `Accept`
    /// and formatting parameters for a verbatim answer.
    ///
    /// A query's outcome does not count towards `health_check_fall` or
    /// `health_check_rise`: one heavy query that times out or fails with 5xx
    /// must not mark a backend down (and divert its writes to the queue);
    /// the failure is kept as the backend's `last_error` and counted in
    /// `influx_proxy_backend_errors_total`.
    async fn read_one(
        &self,
        set: &[usize],
        statement: &str,
        ctx: &QueryContext,
        passthrough: bool,
        now_ms: u64,
    ) -> Result<Response, ProxyError> {
        let mut errors = Vec::new();
        // The backends' current addresses (a reload may have changed a URL).
        let topo = self.topology();
        for backend in self.read_order(set) {
            let request = query_request(statement, ctx, passthrough);
            match self.transport.send(&topo.backends[backend], request).await {
                Ok(r) if (200..300).contains(&r.status) => {
                    ctx.answered_by(&topo.backends[backend].name);
                    return Ok(r);
                }
                Ok(r) if (400..500).contains(&r.status) => {
                    let name = &topo.backends[backend].name;
                    ctx.answered_by(name);
                    let message = super::error_message(&r);
                    ctx.error_from(name, &message);
                    return Err(ProxyError::Backend { status: r.status, message });
                }
                Ok(r) => {
                    let e = format!("query answered HTTP {}: {}", r.status, super::error_message(&r));
                    errors.push(format!("{}: {e}", topo.backends[backend].name));
                    self.record_query_failure(backend, e, now_ms);
                }
                // Up, but answering more than the proxy buffers: no
                // failover (another replica answers the same), not down.
                Err(e @ TransportError::ResponseTooLarge { .. }) => {
                    let message = format!("backend {}: {e}", topo.backends[backend].name);
                    return Err(ProxyError::Backend { status: 502, message });
                }
                Err(e) => {
                    errors.push(format!("{}: query: {e}", topo.backends[backend].name));
                    self.record_query_failure(backend, format!("query: {e}"), now_ms);
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
        let topo = self.topology();
        for &b in set {
            let state = &topo.states[b];
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

    /// A schema statement to every backend of `targets`, through the delivery
    /// rule (queued for backends that are down or have a backlog). The result
    /// is the first directly delivered backend's, or an empty success when
    /// every backend queued it; a backend reporting the statement failed
    /// makes it that error. Also says whether any backend got it (delivered
    /// or queued), so a later failure is not answered as if nothing changed.
    async fn schema(
        &self,
        targets: &[usize],
        statement: &str,
        ctx: &QueryContext,
        now_ms: u64,
    ) -> (Outcome, bool) {
        let deliveries = join_all(
            targets
                .iter()
                .map(|&backend| {
                    let record = Record::Statement {
                        db: ctx.db.clone(),
                        q: statement.to_string(),
                        credentials: ctx.credentials.clone(),
                    };
                    async move { (backend, self.deliver_statement(backend, &record, now_ms).await) }
                })
                .collect(),
        )
        .await;
        let changed = deliveries.iter().any(|(_, d)| matches!(d, Delivery::Delivered(_) | Delivery::Queued));
        let topo = self.topology();
        let delivered = match self.settle(deliveries) {
            Ok(delivered) => delivered,
            Err((e, refused_by)) => {
                // A backend's refusal is its answer, passed on; a 503 (a
                // copy could not be kept) is the proxy's, naming none.
                if let Some(backend) = refused_by {
                    ctx.error_from(&topo.backends[backend].name, e.message());
                }
                return (Err(e), changed);
            }
        };
        // Any backend that reports the statement failed makes it a failure.
        let mut first = None;
        for (backend, r) in delivered {
            let name = &topo.backends[backend].name;
            ctx.answered_by(name);
            let result = match first_result(&r.body) {
                Ok(result) => result,
                Err(e) => {
                    let e = ProxyError::Unavailable(format!("bad answer from backend {name}: {e}"));
                    return (Err(e), changed);
                }
            };
            if let Some(e) = result.error_message() {
                // InfluxDB's text unchanged (clients match on it); which
                // backend said it is in the header and the log.
                ctx.error_from(name, &e);
                return (Ok(result), changed);
            }
            first.get_or_insert(result);
        }
        (Ok(first.unwrap_or_default()), changed)
    }
}

/// The end (exclusive) of the batch of read statements starting at `start`:
/// the following reads with the same [`Reach`], at most
/// [`MAX_BATCH_STATEMENTS`] statements and [`MAX_BATCH_BYTES`] of text (at
/// least one statement).
fn batch_end(plans: &[Planned<'_>], start: usize) -> usize {
    let Action::Read { reach, .. } = &plans[start].action else {
        return start + 1;
    };
    let mut bytes = 0;
    let mut end = start;
    for plan in &plans[start..] {
        match &plan.action {
            Action::Read { sent, reach: r, .. } if r == reach => {
                if end > start
                    && (end - start >= MAX_BATCH_STATEMENTS || bytes + sent.len() > MAX_BATCH_BYTES)
                {
                    break;
                }
                bytes += sent.len() + 2;
                end += 1;
            }
            _ => break,
        }
    }
    end.max(start + 1)
}

/// The results of a batched answer (`{"results":[...]}` for `n`
/// statements) that InfluxDB executed: those before the first result that
/// carries an `error`, is missing, or is out of order. Error: the body is
/// not InfluxDB JSON, or is a top-level `{"error": ...}`.
fn batch_results(body: &[u8], n: usize) -> Result<Vec<StatementResult>, String> {
    let results = answer_results(body)?;
    let mut executed = Vec::with_capacity(n.min(results.len()));
    for (i, raw) in results.into_iter().take(n).enumerate() {
        let Ok(result) = StatementResult::from_json(raw.get()) else { break };
        let in_order = result.statement_id().is_none_or(|id| id == i as u64);
        if result.has_error() || !in_order {
            break;
        }
        executed.push(result);
    }
    Ok(executed)
}

/// Whether reads of `group` are still on the old owners of a move.
fn moving(topo: &Topology, group: &crate::shard_group::ShardGroup) -> bool {
    topo.moves.get(group.name()).is_some_and(|mv| mv.reads_moving())
}

/// The backends a read of the whole of `group` asks: a cover of the group,
/// or while a move's keys are not verified a cover of the backends holding
/// every key whole (`proxy/moves.rs`).
fn group_pool(topo: &Topology, group: &crate::shard_group::ShardGroup) -> Pool {
    if let Some((backends, count)) = topo.moves.get(group.name()).and_then(|mv| mv.read_pool(topo)) {
        return Pool { backends, count };
    }
    Pool { backends: group.backends().to_vec(), count: group.cover_size() }
}

/// The backends that hold shard key `(db, measurement[, tag value])` of
/// `group` whole for a read: its old owners while a move of the group has
/// not verified it (`proxy/moves.rs`), else its replicas.
fn read_replicas(
    topo: &Topology,
    group: &crate::shard_group::ShardGroup,
    db: &str,
    measurement: &str,
    tag_value: Option<&str>,
) -> ReplicaSet {
    if moving(topo, group) {
        let key = crate::rebalance::KeyId::new(db, measurement, tag_value);
        if let Some(names) = topo.moves.get(group.name()).and_then(|mv| mv.rebalance.read_targets(&key)) {
            return super::moves::indices_of(topo, &names);
        }
    }
    group.replicas(db, measurement, tag_value)
}

/// A read of exactly one measurement of a group sharded by a tag (not a
/// full copy), with a database (`db.rp.m` or the `db` parameter): the
/// group's index in `Router::groups`, the measurement and the database.
fn tag_sharded<'s>(
    topo: &Topology,
    sources: &'s [Source],
    db: Option<&'s str>,
) -> Option<(usize, &'s str, &'s str)> {
    let [Source::Measurement(m)] = sources else {
        return None;
    };
    let Some(Route::Group(group)) = topo.router.route(&m.name) else {
        return None;
    };
    if group.shard_tag().is_none() || group.is_full_copy() {
        return None;
    }
    let db = m.database.as_deref().or(db)?;
    let index = topo.router.groups().iter().position(|g| g.name() == group.name())?;
    Some((index, m.name.as_str(), db))
}

/// The 400 for a SELECT of several measurements (or a regex) that would
/// need the answers of several shards of a group sharded by `tag` merged
/// (a SELECT of one such measurement is merged exactly: see
/// [`crate::shard_query`]): `what` is what the SELECT reads.
fn tag_sharded_select(what: &str, group: &str, tag: &str) -> ProxyError {
    ProxyError::BadRequest(format!(
        "SELECT from {what} sharded by tag \"{tag}\" (shard group \"{group}\") cannot be merged exactly across \
         its shards: select from one measurement of the group at a time"
    ))
}

fn no_route(measurement: &str) -> ProxyError {
    ProxyError::BadRequest(format!(
        "no route for measurement \"{measurement}\": add a keymap or \"_default_\""
    ))
}

/// The request's parameters: for `POST` with a form body, the body's first
/// (they take precedence, as in InfluxDB's use of Go's `FormValue`), then the
/// URL's.
pub(super) fn query_params(request: &Request) -> Vec<(String, String)> {
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
