//! The life of a proxied request: write fan-out to replicas with the durable
//! write queue ([`write`]), query routing with failover, schema fan-out and
//! merged `SHOW` answers ([`query`]), and the background work hosts drive:
//! health checks ([`Proxy::check_health`]) and replay ([`Proxy::replay_step`]).
//!
//! Delivery rule (the durability promise): a write or schema statement for a
//! backend is sent directly only while that backend's write queue is empty and
//! its health check says up; otherwise, or when the direct attempt gets no
//! answer or a 5xx, it is appended to the queue (durable when the append
//! returns). A client hears 204 only when every targeted backend acknowledged
//! the write or has it in its queue on disk.
//!
//! The configuration and what derives from it (routes, filters, the backend
//! list) form one [`Topology`] snapshot, taken at the start of each request
//! and swapped by a live reload (`proxy/reload.rs`: [`Proxy::reload`], `POST
//! /reload`).

mod moves;
mod query;
mod reload;
mod replica;
mod send;
mod write;

pub(crate) use write::WriteApi;

pub use reload::{
    is_loopback, moves_data, ConfigReader, LogSink, ReloadReport, SecretReader, Topology, LEAVING_FILE,
    RESTART_ONLY,
};

use crate::config::Config;
use crate::error::ProxyError;
use crate::health_check::Health;
use crate::http::{Method, Request, Response};
use crate::metrics::{BackendGauges, Metrics, MonotonicClock, TimedTransport};
use crate::statement::StatementFilter;
use crate::storage::Storage;
use crate::transport::{Transport, TransportError};
use crate::validated_body::{PreparedBody, WriteBodyJob};
use crate::write_queue::{Batch, QueueError, Record, RecordId, WriteQueue};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::Poll;

/// Most records [`Proxy::replay_step`] sends in one request: bounds the ids
/// a batch keeps in memory when records are small.
pub const REPLAY_BATCH_MAX_RECORDS: usize = 10_000;

/// Most bytes of bodies [`Proxy::replay_step`] puts in one request (less
/// when `backend_max_body_bytes` is lower, 8 MiB by default, the same; a
/// single record may be longer and is then sent in pieces as on the write
/// path). 8 MiB rather than 2: while writes keep arriving, every push holds
/// the queue's lock through its fsync and replay takes it twice a batch
/// (read, ack), so records per batch is what lets replay outrun the load
/// (write bench, catch-up under load). The cost is memory while replaying:
/// about three buffers of this size per batch (the read, the batch body,
/// the request), three batches at once when pipelined (one being
/// acknowledged, one sent, one read).
pub const REPLAY_BATCH_MAX_BYTES: u64 = 8 * 1024 * 1024;

/// Most batches one [`Proxy::replay_step`] delivers: while each is
/// acknowledged whole, the next one is read while it is sent, and sent while
/// its ack (an fsync) is written, so the backend and the disk work at the
/// same time; bounded so that the host's loop checks whether to stop (and
/// lets other tasks run) between steps.
pub const REPLAY_PIPELINE_MAX_BATCHES: usize = 16;

/// What [`Proxy::replay_step`] did, and when the host should call it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStep {
    /// The queue is empty: call again after a short idle delay (the host's
    /// choice, e.g. 50 ms).
    Idle,
    /// A record was delivered (or dead-lettered): call again at once.
    Progress,
    /// Delivery failed: call again after this many ms (exponential backoff
    /// between `replay_backoff_min_ms` and `replay_backoff_max_ms`).
    RetryAfter(u64),
}

/// The proxy: configuration, backends, their health and write queues.
/// Single-threaded: hosts run it on one executor thread and share it by `Rc`.
pub struct Proxy<T, S> {
    /// The configuration in force and what derives from it; borrowed only to
    /// clone the `Rc` ([`Proxy::topology`]), never across an `.await`.
    topology: RefCell<Rc<Topology>>,
    /// Topologies replaced by a reload, while requests may still hold them
    /// (see [`Proxy::retire_if_drained`]).
    superseded: RefCell<Vec<Weak<Topology>>>,
    /// Held by the reload in progress: reloads run one at a time.
    reloads: async_lock::Mutex<()>,
    /// The last reload attempt, for `/health`.
    last_reload: RefCell<Option<reload::LastReload>>,
    /// The configuration file and how to read it ([`Proxy::set_config_file`]).
    config_file: Option<(String, ConfigReader)>,
    /// Reads backends' secrets for a reload ([`Proxy::set_secret_reader`]).
    secret_reader: Option<SecretReader>,
    /// Where log lines go ([`Proxy::set_log`]).
    log: Option<LogSink>,
    /// The host's loop starter waiting in [`Proxy::loops_wanted`].
    loop_starter: RefCell<Option<std::task::Waker>>,
    /// Timed into the backend-request histograms once a clock is set.
    transport: TimedTransport<T>,
    storage: S,
    metrics: Metrics,
    /// The host's monotonic clock (µs), for the duration histograms; none
    /// until [`Proxy::set_clock`].
    clock: Option<MonotonicClock>,
    /// Last default timestamp given at ns / µs precision (see `write.rs`).
    last_default_ns: Cell<u128>,
    last_default_us: Cell<u128>,
    /// Requests in flight, for the moves' `requests_done_before`.
    inflight: moves::InFlight,
    /// Restarts of the host's move loop and the last one's reason.
    move_loop_restarts: Cell<u64>,
    last_move_loop_error: RefCell<Option<String>>,
}

/// Per-backend state.
struct BackendState {
    queue: WriteQueue,
    health: RefCell<Health>,
    /// Current replay backoff in ms; 0 when the last attempt succeeded.
    backoff_ms: Cell<u64>,
    /// Restarts of this backend's background loops ([`Proxy::record_loop_restart`]).
    loop_restarts: Cell<u64>,
    /// The last restart's message and time (ms since the Unix epoch).
    last_loop_error: RefCell<Option<(String, u64)>>,
    /// The replay policy's view of the head record (not persisted: counts
    /// restart at 0 when the proxy restarts).
    replay: Cell<HeadReplay>,
    /// After a replay loop restart: (segment, offset) of the head then in
    /// flight; replay is not pipelined until the queue's head has passed it
    /// ([`Proxy::replay_step`]), so the replay policy sees each record that
    /// may have caused the restart as the head.
    replay_serial_until: Cell<Option<(u64, u64)>>,
    /// Removed by a reload and its queue delivered: it has left, its loops
    /// end ([`Proxy::retire_if_drained`]); cleared if it is added back.
    retired: Cell<bool>,
    /// Whether its health-check (0) and replay (1) loops are running
    /// ([`Proxy::claim_loops`], [`Proxy::loop_ended`]).
    loops: [Cell<bool>; 2],
}

impl BackendState {
    /// The state of a backend whose queue was just opened: up, no backoff.
    fn new(queue: WriteQueue) -> BackendState {
        BackendState {
            queue,
            health: RefCell::new(Health::new()),
            backoff_ms: Cell::new(0),
            replay: Cell::new(HeadReplay::default()),
            replay_serial_until: Cell::new(None),
            loop_restarts: Cell::new(0),
            last_loop_error: RefCell::new(None),
            retired: Cell::new(false),
            loops: [Cell::new(false), Cell::new(false)],
        }
    }
}

/// Replay attempts of one queue's head record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct HeadReplay {
    /// (segment, offset) of the head record these counts are about.
    head: Option<(u64, u64)>,
    /// Failed delivery attempts of it, whatever the cause (`/health`
    /// `replay_attempts`).
    attempts: u64,
    /// Those failed while the backend answered `/ping`, or ended with the
    /// replay loop restarted (a panic): the failure is about this record;
    /// compared with `replay_max_attempts`.
    record_failures: u64,
    /// Those that ended with the replay loop restarted.
    restarts: u64,
    /// A batch of several records from it was in flight (set while
    /// [`Proxy::replay_step`] sends one; still set after a loop restart
    /// during it): it is then sent alone before the replay policy may give
    /// it up.
    batch: bool,
}

/// What [`Proxy::deliver_one`] hands to one backend.
#[derive(Clone, Copy)]
enum Outgoing<'a> {
    Write(&'a write::WriteBody),
    Statement(&'a Record),
}

/// An error answered for a write or schema statement and the index of the
/// backend whose refusal it is (`None` when it is not a backend's), from
/// [`Proxy::settle`].
type Refused = (ProxyError, Option<usize>);

/// The result of handing one record to one backend.
#[derive(Debug)]
enum Delivery {
    /// The backend answered 2xx.
    Delivered(Response),
    /// The record is durably in the backend's write queue.
    Queued,
    /// The backend answered 4xx: the client's fault, passed on, not queued.
    Rejected { status: u16, message: String },
    /// Neither delivered nor kept (queue full, disk failure).
    NotKept(QueueError),
}

impl<T: Transport, S: Storage> Proxy<T, S> {
    /// Builds the proxy from a validated config and opens every backend's write
    /// queue in directory `queue/<backend>` of `storage` (recovering from a
    /// crash: torn tail records dropped, replay resumes where it was), and
    /// those of the backends a reload removed that had not left yet
    /// ([`reload::LEAVING_FILE`]), which are leaving again.
    /// Errors: a bad backend URL, keymap or statement pattern (normally caught
    /// by [`Config::parse`]), a queue that cannot be opened (the message
    /// names the backend), or a [`reload::LEAVING_FILE`] that cannot be read.
    pub async fn open(config: Config, transport: T, storage: S) -> Result<Self, String> {
        // Checked before any queue is opened.
        config.backend_addrs().map_err(|e| e.to_string())?;
        config.router().map_err(|e| e.to_string())?;
        StatementFilter::new(&config.forbidden_statements, &config.allowed_statements)?;
        let mut states = Vec::with_capacity(config.backends.len());
        for name in config.backends.keys() {
            let queue = WriteQueue::open(&storage, &format!("queue/{name}"), config.queue_max_bytes)
                .await
                .map_err(|e| format!("write queue of backend {name}: {e}"))?;
            states.push(Rc::new(BackendState::new(queue)));
        }
        // Backends removed by a reload before a restart whose queues still
        // hold acknowledged writes: leaving again.
        let leaving = reload::open_leaving(&config, &storage).await?;
        let moves = Self::open_moves(&storage, &config).await?;
        let mut topology = Topology::first(config, states, leaving)?;
        topology.moves = moves;
        let metrics = Metrics::new();
        Ok(Proxy {
            topology: RefCell::new(Rc::new(topology)),
            superseded: RefCell::new(Vec::new()),
            reloads: async_lock::Mutex::new(()),
            last_reload: RefCell::new(None),
            config_file: None,
            secret_reader: None,
            log: None,
            loop_starter: RefCell::new(None),
            transport: metrics.timed(transport),
            storage,
            metrics,
            clock: None,
            last_default_ns: Cell::new(0),
            last_default_us: Cell::new(0),
            inflight: moves::InFlight::default(),
            move_loop_restarts: Cell::new(0),
            last_move_loop_error: RefCell::new(None),
        })
    }

    /// Gives the proxy the host's monotonic clock (µs since a fixed origin,
    /// never going back), used only to observe the duration histograms of
    /// `/metrics`: around [`Proxy::handle`] and around each request to a
    /// backend. Without it (unit tests) nothing is observed. Hosts call it
    /// once, right after [`Proxy::open`].
    pub fn set_clock(&mut self, clock: MonotonicClock) {
        self.transport.set_clock(clock.clone());
        self.clock = Some(clock);
    }

    /// Records that background loop `kind` of backend `backend` (index) was
    /// restarted by the host's supervisor ([`crate::host`]), `reason` saying
    /// why (`"after panic: ..."`, `"after it ended"`). Shown in `/health` as
    /// the backend's `last_error` (`"replay loop restarted after panic: ..."`)
    /// and `loop_restarts`, and counted in `/metrics` as
    /// `influx_proxy_loop_restarts_total{loop,backend}`. It does not count
    /// towards `health_check_fall`.
    pub fn record_loop_restart(
        &self,
        kind: crate::host::LoopKind,
        backend: usize,
        reason: &str,
        now_ms: u64,
    ) {
        let topo = self.topology();
        let (Some(state), Some(addr)) = (topo.states.get(backend), topo.backends.get(backend)) else {
            return;
        };
        state.loop_restarts.set(state.loop_restarts.get().saturating_add(1));
        *state.last_loop_error.borrow_mut() =
            Some((format!("{} loop restarted {reason}", kind.name()), now_ms));
        if kind == crate::host::LoopKind::Replay {
            // The replay loop died while delivering the head record (if one
            // was being delivered): that counts as a failure of the record
            // itself, so a record that makes every attempt panic is
            // dead-lettered by the replay policy instead of restarting the
            // loop forever.
            let mut replay = state.replay.get();
            if let Some(head) = replay.head {
                let until = state.replay_serial_until.get().map_or(head, |until| until.max(head));
                state.replay_serial_until.set(Some(until));
                replay.attempts += 1;
                replay.record_failures += 1;
                replay.restarts += 1;
                state.replay.set(replay);
            }
        }
        self.metrics.loop_restart(kind.label(), &addr.name);
    }

    /// How many times backend `backend`'s background loops were restarted.
    pub fn loop_restarts(&self, backend: usize) -> u64 {
        let topo = self.topology();
        topo.states.get(backend).map_or(0, |s| s.loop_restarts.get())
    }

    /// Whether backend `backend` (index) is up according to its health checks.
    pub fn is_healthy(&self, backend: usize) -> bool {
        let topo = self.topology();
        topo.states.get(backend).is_some_and(|s| s.health.borrow().is_healthy())
    }

    /// Records and bytes waiting in backend `backend`'s write queue.
    pub fn queue_depth(&self, backend: usize) -> crate::write_queue::QueueDepth {
        let topo = self.topology();
        topo.states.get(backend).map(|s| s.queue.depth()).unwrap_or_default()
    }

    /// Answers one client request (`/ping`, `/write`, `/api/v2/write`, `/query`,
    /// `/health`, `/metrics`, `/replica`). Never panics on bad input: errors are
    /// InfluxDB-style `{"error":"..."}` responses. `now_ms` is the time (ms since
    /// the Unix epoch). The host has already refused bodies over
    /// `config().max_body_bytes` with 413.
    pub async fn handle(&self, request: Request, now_ms: u64) -> Response {
        self.handle_prepared(request, None, now_ms).await
    }

    /// The body job of a write request (`/write`, `/api/v2/write`,
    /// `/api/v3/write_lp`), taking
    /// its body (no copy), for the host to run where it likes (e.g. on
    /// another core) and hand back to [`Proxy::handle_prepared`]: the CPU
    /// of a write (gzip decoding, validation) off the proxy's thread. `None`
    /// (body left in place) for any other request, and with `auth` for a
    /// write without a valid token (refused 401 with its body never
    /// decoded). Validated with the current `max_body_bytes`.
    pub fn write_body_job(&self, request: &mut Request) -> Option<WriteBodyJob> {
        if !matches!(request.path.as_str(), "/write" | "/api/v2/write" | "/api/v3/write_lp")
            || request.method != Method::Post
        {
            return None;
        }
        let topology = self.topology();
        // With token auth, no body work for a request without a valid
        // token: it is refused 401 without its body decoded.
        if let Some(auth) = &topology.config.auth {
            let password = request.param("p").filter(|_| request.path == "/write");
            if !crate::auth::is_open(auth, &request.path)
                && crate::auth::authenticate(auth, request.header("authorization"), password).is_err()
            {
                return None;
            }
        }
        Some(WriteBodyJob::take(request, topology.config.max_body_bytes))
    }

    /// [`Proxy::handle`], with the body of a write request already
    /// validated by the host ([`Proxy::write_body_job`], then
    /// [`WriteBodyJob::run`]): the same answer as [`Proxy::handle`] gives
    /// the request with its body, byte for byte. `prepared` is ignored for
    /// other requests.
    pub async fn handle_prepared(
        &self,
        mut request: Request,
        prepared: Option<PreparedBody>,
        now_ms: u64,
    ) -> Response {
        let start = self.clock.as_ref().map(|clock| clock());
        let endpoint = match request.path.as_str() {
            "/ping" => "ping",
            "/write" => "write",
            "/api/v2/write" => "api_v2_write",
            "/query" => "query",
            "/health" => "health",
            "/metrics" => "metrics",
            "/reload" => "reload",
            "/replica" => "replica",
            "/cleanup" => "cleanup",
            "/resync" => "resync",
            path => crate::api_v3::endpoint(path).unwrap_or("other"),
        };
        // Writes and queries: wait while a reload lists the keys of a move it
        // starts, then in flight until answered (a move waits for requests
        // routed before its routing changed; `proxy/moves.rs`).
        let _in_flight = if matches!(endpoint, "write" | "api_v2_write" | "query")
            || crate::api_v3::is_write_or_query(endpoint)
        {
            self.inflight.unfrozen().await;
            Some(self.inflight.start())
        } else {
            None
        };
        // The request's snapshot: a reload while it runs does not change
        // its routes, filters or limits.
        let topology = self.topology();
        let authorized = self.authorize(&topology, &mut request, endpoint);
        let result = match endpoint {
            _ if authorized.is_err() => authorized.map(|()| Response::empty(204)),
            "ping" => self.ping(&request),
            "write" => self.write(&topology, &mut request, prepared, write::WriteApi::V1, now_ms).await,
            "api_v2_write" => {
                self.write(&topology, &mut request, prepared, write::WriteApi::V2, now_ms).await
            }
            "query" => self.query(&topology, &request, now_ms).await,
            "health" => self.health(&request, now_ms),
            "metrics" => self.metrics(&request, now_ms),
            "reload" => self.reload_endpoint(&request, now_ms).await,
            "replica" => self.replica(&request),
            "cleanup" => self.cleanup_endpoint(&request).await,
            "resync" => self.resync_endpoint(&request).await,
            v3 if v3.starts_with("api_v3_") => {
                self.api_v3(&topology, v3, &mut request, prepared, now_ms).await
            }
            _ => Err(ProxyError::NotFound(format!("404 page not found: {}", request.path))),
        };
        let mut response = result.unwrap_or_else(|e| e.to_response());
        response.headers.push(("x-influxdb-version".into(), crate::INFLUXDB_COMPAT_VERSION.into()));
        if request.method == Method::Head {
            response.body.clear();
        }
        self.metrics.request(endpoint, response.status);
        if let (Some(clock), Some(start)) = (&self.clock, start) {
            self.metrics.request_duration(endpoint, clock().saturating_sub(start));
        }
        response
    }

    /// Token auth ([`crate::auth`], config `auth`; nothing to do without
    /// it): a path in `auth.open` passes; any other needs a configured
    /// token (401) whose scope covers the request (403): a write's
    /// database, every statement of a query (all checked before any is
    /// sent), and admin on `*` for the proxy's own endpoints other than
    /// `/ping`, `/health`, `/metrics` and `/replica`. Refusals are counted
    /// in `influx_proxy_auth_failures_total`. An authorized request loses
    /// the client's credentials (`Authorization`, `u`, `p`): backends get
    /// none of them, and neither do queued records.
    fn authorize(&self, topo: &Topology, request: &mut Request, endpoint: &str) -> Result<(), ProxyError> {
        let Some(auth) = &topo.config.auth else { return Ok(()) };
        if crate::auth::is_open(auth, &request.path) {
            return Ok(());
        }
        let params = if endpoint == "query" { query::query_params(request) } else { request.query.clone() };
        let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        // `p` on the v1 routes only, as InfluxDB 3 (influxdb3_server http.rs
        // `extract_v1_auth_token`: `/query`, `/write`).
        let password = if matches!(endpoint, "query" | "write") { param("p") } else { None };
        let result = crate::auth::authenticate(auth, request.header("authorization"), password)
            .map_err(|e| ("unauthorized", e))
            .and_then(|grant| {
                let nonempty = |name: &str| param(name).filter(|v| !v.is_empty());
                let scoped = match endpoint {
                    // Without a database the write handler answers 400.
                    "write" => nonempty("db").map_or(Ok(()), |db| grant.authorize_write(db)),
                    "api_v2_write" => nonempty("bucket")
                        .map(|b| b.split_once('/').map_or(b, |(db, _)| db))
                        .filter(|db| !db.is_empty())
                        .map_or(Ok(()), |db| grant.authorize_write(db)),
                    // A query that does not parse is answered 400 by the
                    // query path, before anything is sent.
                    "query" => match nonempty("q").map(crate::statement::parse_statements) {
                        Some(Ok(statements)) => statements
                            .iter()
                            .try_for_each(|statement| grant.authorize_statement(statement, nonempty("db"))),
                        _ => Ok(()),
                    },
                    // InfluxDB 3's routes: `write_lp` as a write to `db`; a
                    // query or `configure/database` as the InfluxQL it runs.
                    "api_v3_write_lp" => nonempty("db").map_or(Ok(()), |db| grant.authorize_write(db)),
                    "api_v3_query_influxql" | "api_v3_configure_database" => {
                        match crate::api_v3::influxql_of(endpoint, request) {
                            Some((q, db)) => match crate::statement::parse_statements(&q) {
                                Ok(statements) => statements.iter().try_for_each(|statement| {
                                    grant.authorize_statement(
                                        statement,
                                        db.as_deref().filter(|d| !d.is_empty()),
                                    )
                                }),
                                Err(_) => Ok(()),
                            },
                            None => Ok(()),
                        }
                    }
                    "ping" | "health" | "metrics" | "replica" | "other" | "api_v3_query_sql" => Ok(()),
                    _ => grant.authorize_proxy_admin(&request.path),
                };
                scoped.map_err(|e| ("forbidden", e))
            });
        if let Err((reason, e)) = result {
            self.metrics.auth_failure(reason);
            return Err(e);
        }
        request.headers.retain(|(name, _)| !name.eq_ignore_ascii_case("authorization"));
        request.query.retain(|(name, _)| name != "u" && name != "p");
        Ok(())
    }

    /// One health check of backend `backend` (index): `GET /ping`, expecting
    /// 2xx. Marks the backend down after `health_check_fall` failures in a row
    /// and up after `health_check_rise` successes in a row.
    pub async fn check_health(&self, backend: usize, now_ms: u64) {
        let topo = self.topology();
        let Some(addr) = topo.backends.get(backend) else { return };
        match self.transport.send(addr, Request::new(Method::Get, "/ping")).await {
            Ok(r) if (200..300).contains(&r.status) => self.record_ok(backend),
            Ok(r) => self.record_failure(backend, format!("ping answered HTTP {}", r.status), now_ms),
            Err(e) => self.record_failure(backend, format!("ping: {e}"), now_ms),
        }
    }

    /// Tries to deliver the oldest queued records of backend `backend`
    /// (index): the head record and the consecutive writes after it with the
    /// same db, rp, precision and credentials, up to `backend_max_body_bytes`
    /// (and [`REPLAY_BATCH_MAX_BYTES`]) of bodies and
    /// [`REPLAY_BATCH_MAX_RECORDS`] records
    /// ([`WriteQueue::peek_batch`]), as one request (bodies concatenated in
    /// queue order, so a later value of a point still wins), acknowledged
    /// together with one ack when the backend answers 2xx. A statement is
    /// sent alone, and so is a head record that already failed on its own.
    /// While batches are answered 2xx whole, up to
    /// [`REPLAY_PIPELINE_MAX_BATCHES`] are delivered in one step, each read
    /// while the one before it is sent and sent while the previous one's ack
    /// is written ([`WriteQueue::peek_batch_after`]; why this keeps the order
    /// after a crash: the write queue's guarantee 10); the files of the
    /// segments an ack consumed are removed while the next batch is sent
    /// ([`WriteQueue::ack_batch_leaving_files`]).
    ///
    /// Each record is judged alone, as if it had been sent alone:
    /// 2xx: acknowledged and removed. 4xx (or a schema statement the backend
    /// reports as failed): moved to the dead-letter file so it never blocks the
    /// queue. No answer or another status (5xx): the backend's `/ping` is
    /// asked whether it is otherwise healthy.
    /// - `/ping` fails too (connection refused, timeout, a 5xx): the backend
    ///   is down; the records are kept and retried without limit (neither
    ///   attempts nor age count against them; attempts are shown for the
    ///   head), after a backoff that doubles
    ///   from `replay_backoff_min_ms` to `replay_backoff_max_ms`.
    /// - `/ping` answers below 500 (2xx, or 401 with `ping-auth-enabled`):
    ///   the failure is about a record; it is retried
    ///   the same way until it has failed so `replay_max_attempts` times
    ///   (a timeout never counts: the backend is busy, and giving up an
    ///   acknowledged write because of load would lose it), or
    ///   fails once more when older than `replay_max_age_ms` (age = `now_ms`
    ///   minus its push time; records queued by a version without push times
    ///   have no age), then moved to the dead-letter file with the reason, so
    ///   the records behind it flow.
    ///
    /// When a batch of several records is refused in part, or fails while
    /// `/ping` answers, the records the backend acknowledged (whole pieces
    /// answered 2xx) are acknowledged and the others are sent again one by
    /// one, in order, each judged by the rules above, so a refused point
    /// dead-letters only its own record and a failing record is counted
    /// alone, never its neighbours.
    pub async fn replay_step(&self, backend: usize, now_ms: u64) -> ReplayStep {
        let step = self.replay_attempt(backend, now_ms).await;
        if step != ReplayStep::Progress {
            // Replay does not go on at once (queue empty, a backoff, the
            // backend down): the batch buffers kept for reuse are let go
            // (write queue guarantee 5), and the files of segments already
            // acknowledged removed (guarantee 4).
            if let Some(state) = self.topology().states.get(backend) {
                state.queue.release_spare_buffers();
                state.queue.remove_consumed_segments(&self.storage).await;
            }
        }
        step
    }

    /// One step of [`Proxy::replay_step`], before its buffers are let go.
    async fn replay_attempt(&self, backend: usize, now_ms: u64) -> ReplayStep {
        let topo = self.topology();
        let (Some(_), Some(state)) = (topo.backends.get(backend), topo.states.get(backend)) else {
            return ReplayStep::Idle;
        };
        // A head that failed on its own (or while its loop restarted) is sent
        // alone until it is delivered or given up.
        let known = state.replay.get();
        let alone = known.head.is_some() && (known.record_failures > 0 || known.restarts > 0);
        let max_records = if alone { 1 } else { REPLAY_BATCH_MAX_RECORDS };
        let max_body = topo.config.backend_max_body_bytes.min(REPLAY_BATCH_MAX_BYTES);
        let batch = match state.queue.peek_batch(&self.storage, max_body, max_records).await {
            Ok(Some(batch)) => batch,
            Ok(None) => {
                state.backoff_ms.set(0);
                return ReplayStep::Idle;
            }
            Err(e) => {
                self.record_failure(backend, format!("write queue: {e}"), now_ms);
                return ReplayStep::RetryAfter(topo.config.replay_backoff_max_ms);
            }
        };
        let head = batch.ids[0];
        // A head whose last attempt was a batch that ended with the loop
        // restarted is sent alone before it can be given up: any record of
        // the batch may have caused the restart.
        let replay = self.head_replay(state, head);
        let led_batch = replay.batch;
        let replay = HeadReplay { batch: false, ..replay };
        state.replay.set(replay);
        let max_attempts = u64::from(topo.config.replay_max_attempts);
        if replay.restarts > 0 && replay.record_failures >= max_attempts && !led_batch {
            let reason = format!(
                "replay gave up after {} attempts, {} of them ending with the replay loop \
                 restarted (replay_max_attempts {max_attempts})",
                replay.record_failures, replay.restarts
            );
            let record = batch.record(0).unwrap_or_else(|| batch.record.clone());
            return self.give_up(backend, head, &record, &reason, now_ms).await;
        }
        // Pipelined: while every batch is acknowledged whole, the next one is
        // read while this one is sent, and sent while this one's ack is
        // written (see `REPLAY_PIPELINE_MAX_BATCHES`); not for a head that
        // failed on its own nor after a loop restart until the head in
        // flight then is passed (any record of the pipeline may have caused
        // it).
        let serial = match state.replay_serial_until.get() {
            Some(until) if (head.segment, head.offset) <= until => true,
            Some(_) => {
                state.replay_serial_until.set(None);
                false
            }
            None => false,
        };
        let pipelined = !alone && !serial && !led_batch;
        // The batch after `batch`, read ahead (only reads: nothing is sent
        // before `batch` is known delivered whole).
        let read_after = |batch: &Batch, more: bool| {
            let last = batch.ids[batch.ids.len() - 1];
            async move {
                match pipelined && more {
                    true => state.queue.peek_batch_after(&self.storage, last, max_body, max_records).await,
                    false => None,
                }
            }
        };
        let mut batch = batch;
        // Not while backing off: a backend still down would have a batch read
        // for nothing at every retry.
        let read_ahead = REPLAY_PIPELINE_MAX_BATCHES > 1 && state.backoff_ms.get() == 0;
        let (mut sent, mut next) = futures_lite::future::zip(
            self.replay_send(state, backend, &batch),
            read_after(&batch, read_ahead),
        )
        .await;
        for delivered in 1..REPLAY_PIPELINE_MAX_BATCHES {
            if !delivered_whole(&batch, &sent) {
                if let Some(unsent) = next {
                    state.queue.recycle(unsent);
                }
                return self.replay_judge(backend, &batch, sent, now_ms).await;
            }
            let Some(this) = next.take() else { break };
            // This batch goes out while the previous one's ack is written,
            // and the one after it is read meanwhile: acks are prefix-ordered,
            // so after a crash before the ack is durable both are delivered
            // again, in order (write queue guarantee 10). The ack is polled
            // first: it then holds the queue's lock while the read waits, so
            // the read's checksums and copies (on this thread) come after the
            // send has filled the socket rather than in its way (measured:
            // polling the send or the read first replays 12-15% slower).
            self.head_replay(state, this.ids[0]);
            state.replay.set(HeadReplay { batch: this.ids.len() > 1, ..state.replay.get() });
            let (((), acked), (this_sent, after)) = futures_lite::future::zip(
                futures_lite::future::zip(
                    state.queue.remove_consumed_segments(&self.storage),
                    state.queue.ack_batch_leaving_files(&self.storage, &batch.ids),
                ),
                futures_lite::future::zip(
                    self.send_record_judging_each(backend, &this.record),
                    read_after(&this, delivered + 1 < REPLAY_PIPELINE_MAX_BATCHES),
                ),
            )
            .await;
            state.replay.set(HeadReplay { batch: false, ..state.replay.get() });
            if let Err(e) = acked {
                // Delivered but not removed: delivered again later, this
                // batch first (line protocol writes with timestamps are
                // idempotent, and the later value is sent last again).
                self.record_failure(backend, format!("write queue: {e}"), now_ms);
                return ReplayStep::RetryAfter(topo.config.replay_backoff_max_ms);
            }
            self.replay_delivered(backend, &batch, now_ms);
            // Its buffer holds a later batch.
            state.queue.recycle(std::mem::replace(&mut batch, this));
            sent = this_sent;
            next = after;
        }
        if !delivered_whole(&batch, &sent) {
            return self.replay_judge(backend, &batch, sent, now_ms).await;
        }
        if let Err(e) = state.queue.ack_batch(&self.storage, &batch.ids).await {
            // Delivered but not removed: delivered again later
            // (line protocol writes with timestamps are idempotent).
            self.record_failure(backend, format!("write queue: {e}"), now_ms);
            return ReplayStep::RetryAfter(topo.config.replay_backoff_max_ms);
        }
        self.replay_delivered(backend, &batch, now_ms);
        state.queue.recycle(batch);
        state.replay.set(HeadReplay::default());
        ReplayStep::Progress
    }

    /// Sends batch `batch` of backend `backend` (state `state`) as one
    /// request (in pieces if over `backend_max_body_bytes`), marking its head
    /// as leading a batch meanwhile when it holds several records.
    async fn replay_send(&self, state: &BackendState, backend: usize, batch: &Batch) -> send::Sent {
        let several = batch.ids.len() > 1;
        if several {
            state.replay.set(HeadReplay { batch: true, ..state.replay.get() });
        }
        let sent = self.send_record_judging_each(backend, &batch.record).await;
        if several {
            state.replay.set(HeadReplay { batch: false, ..state.replay.get() });
        }
        sent
    }

    /// Batch `batch` was delivered whole and acknowledged: counts it and
    /// ends the backoff (the replay policy's counts are about the next head
    /// and stay).
    fn replay_delivered(&self, backend: usize, batch: &Batch, now_ms: u64) {
        let topo = self.topology();
        let state = &topo.states[backend];
        if let Record::Write { body, .. } = &batch.record {
            self.replayed(backend, batch.ids.len(), body, now_ms);
        }
        state.backoff_ms.set(0);
        self.record_write_ok(backend);
    }

    /// Judges the answer `sent` to batch `batch` when it was not delivered
    /// whole (or is a statement): a single record by
    /// [`Proxy::replay_judge_record`]; several by the rules of
    /// [`Proxy::replay_step`] (down: the batch waits whole; else the records
    /// taken are acknowledged and the others sent one by one).
    async fn replay_judge(&self, backend: usize, batch: &Batch, sent: send::Sent, now_ms: u64) -> ReplayStep {
        let topo = self.topology();
        let (addr, state) = (&topo.backends[backend], &topo.states[backend]);
        if batch.ids.len() == 1 {
            return self.replay_judge_record(backend, batch.ids[0], &batch.record, sent, now_ms).await;
        }
        let error = match &sent.outcome {
            Ok(r) if (200..300).contains(&r.status) => None,
            Ok(r) if refuses_request(r) => None,
            Ok(r) => Some(format!("replay answered HTTP {}: {}", r.status, error_message(r))),
            Err(e) => Some(format!("replay: {e}")),
        };
        if let Some(error) = error {
            // Down (no answer to /ping either): the batch waits whole.
            let ping = self.transport.send(addr, Request::new(Method::Get, "/ping")).await;
            if !matches!(&ping, Ok(r) if r.status < 500) {
                let mut replay = state.replay.get();
                replay.attempts += 1;
                state.replay.set(replay);
                return self.replay_failed(backend, error, now_ms);
            }
        }
        self.replay_one_by_one(backend, batch, &sent, now_ms).await
    }

    /// The replay policy's counts for head record `head`, reset when the head
    /// changed.
    fn head_replay(&self, state: &BackendState, head: RecordId) -> HeadReplay {
        let mut replay = state.replay.get();
        if replay.head != Some((head.segment, head.offset)) {
            replay = HeadReplay { head: Some((head.segment, head.offset)), ..HeadReplay::default() };
            state.replay.set(replay);
        }
        replay
    }

    /// Counts `records` replayed records holding write body `body` as
    /// delivered to backend `backend`.
    fn replayed(&self, backend: usize, records: usize, body: &[u8], now_ms: u64) {
        let topo = self.topology();
        let (state, addr) = (&topo.states[backend], &topo.backends[backend]);
        for _ in 0..records {
            self.metrics.replayed(&addr.name);
        }
        self.metrics.written(&addr.name, count_lines(body), body.len() as u64);
        state.health.borrow_mut().record_write(now_ms);
    }

    /// After batch `batch` was not acknowledged whole (`sent`): acknowledges
    /// its records the backend took (inside pieces answered 2xx, in one ack
    /// per run of them) and sends each of the others again alone
    /// ([`Proxy::replay_record`]), in order; stops at the first that is not
    /// delivered or dead-lettered.
    async fn replay_one_by_one(
        &self,
        backend: usize,
        batch: &crate::write_queue::Batch,
        sent: &send::Sent,
        now_ms: u64,
    ) -> ReplayStep {
        let topo = self.topology();
        let state = &topo.states[backend];
        let taken = |i: usize| {
            let range = batch.body_range(i);
            range.end <= sent.acked
                && !sent.refused.iter().any(|p| p.start < range.end && range.start < p.end)
        };
        let mut run = 0..0;
        for i in 0..=batch.ids.len() {
            if i < batch.ids.len() && taken(i) {
                if run.is_empty() {
                    run = i..i;
                }
                run.end = i + 1;
                continue;
            }
            if !run.is_empty() {
                if let Err(e) = state.queue.ack_batch(&self.storage, &batch.ids[run.clone()]).await {
                    self.record_failure(backend, format!("write queue: {e}"), now_ms);
                    return ReplayStep::RetryAfter(topo.config.replay_backoff_max_ms);
                }
                if let Record::Write { body, .. } = &batch.record {
                    let bytes = batch.body_range(run.start).start..batch.body_range(run.end - 1).end;
                    self.replayed(backend, run.len(), body.get(bytes).unwrap_or_default(), now_ms);
                }
                self.record_write_ok(backend);
                run = 0..0;
            }
            let (Some(id), Some(record)) = (batch.ids.get(i).copied(), batch.record(i)) else { break };
            self.head_replay(state, id);
            let step = self.replay_record(backend, id, &record, now_ms).await;
            if step != ReplayStep::Progress {
                return step;
            }
        }
        state.backoff_ms.set(0);
        state.replay.set(HeadReplay::default());
        ReplayStep::Progress
    }

    /// Sends head record `id` alone and judges the answer (see
    /// [`Proxy::replay_step`]): acknowledged, dead-lettered (only the pieces
    /// refused), or the replay policy applied to its failure.
    async fn replay_record(&self, backend: usize, id: RecordId, record: &Record, now_ms: u64) -> ReplayStep {
        let sent = self.send_record_judging_each(backend, record).await;
        self.replay_judge_record(backend, id, record, sent, now_ms).await
    }

    /// Judges the answer `sent` to head record `id` (`record`), sent alone
    /// (see [`Proxy::replay_record`]).
    async fn replay_judge_record(
        &self,
        backend: usize,
        id: RecordId,
        record: &Record,
        sent: send::Sent,
        now_ms: u64,
    ) -> ReplayStep {
        let topo = self.topology();
        let (state, addr) = (&topo.states[backend], &topo.backends[backend]);
        let outcome = sent.outcome;
        let rejection = match &outcome {
            Ok(r) if (200..300).contains(&r.status) => statement_error(record, r),
            Ok(r) if refuses_request(r) => Some(format!("HTTP {}: {}", r.status, error_message(r))),
            Ok(r) => {
                let error = format!("replay answered HTTP {}: {}", r.status, error_message(r));
                return self.replay_record_failed(backend, id, record, error, false, now_ms).await;
            }
            Err(e) => {
                let timed_out = matches!(e, TransportError::Timeout);
                let error = format!("replay: {e}");
                return self.replay_record_failed(backend, id, record, error, timed_out, now_ms).await;
            }
        };
        let done = match &rejection {
            None => state.queue.ack(&self.storage, id).await,
            Some(reason) => {
                self.metrics.backend_error(&addr.name);
                // Only the pieces refused are dead letters; the others were
                // delivered.
                let dead = match record {
                    Record::Write { db, rp, precision, credentials, body } if !sent.refused.is_empty() => {
                        Record::Write {
                            db: db.clone(),
                            rp: rp.clone(),
                            precision: precision.clone(),
                            credentials: credentials.clone(),
                            body: sent
                                .refused
                                .iter()
                                .flat_map(|r| body.get(r.clone()).unwrap_or_default())
                                .copied()
                                .collect::<Vec<u8>>()
                                .into(),
                        }
                    }
                    _ => record.clone(),
                };
                let done = state.queue.dead_letter(&self.storage, id, &dead, reason, now_ms).await;
                if done.is_ok() {
                    self.log_dead_letter(&addr.name, &dead, reason);
                }
                if let (Ok(()), Record::Write { body, .. }, Record::Write { body: refused, .. }) =
                    (&done, record, &dead)
                {
                    let delivered = body.len().saturating_sub(refused.len()) as u64;
                    if delivered > 0 {
                        let points = count_lines(body).saturating_sub(count_lines(refused));
                        self.metrics.written(&addr.name, points, delivered);
                    }
                }
                done
            }
        };
        if let Err(e) = done {
            // The record was delivered but could not be removed: it will be
            // delivered again (line protocol writes are idempotent).
            self.record_failure(backend, format!("write queue: {e}"), now_ms);
            return ReplayStep::RetryAfter(topo.config.replay_backoff_max_ms);
        }
        if rejection.is_none() {
            self.metrics.replayed(&addr.name);
            if let Record::Write { body, .. } = record {
                self.metrics.written(&addr.name, count_lines(body), body.len() as u64);
                state.health.borrow_mut().record_write(now_ms);
            }
        }
        state.backoff_ms.set(0);
        state.replay.set(HeadReplay::default());
        self.record_write_ok(backend);
        ReplayStep::Progress
    }

    /// The head record `id` could not be delivered (`error`; `timed_out`:
    /// no answer within `request_timeout_ms`): applies the replay policy of
    /// [`Proxy::replay_step`].
    async fn replay_record_failed(
        &self,
        backend: usize,
        id: RecordId,
        record: &Record,
        error: String,
        timed_out: bool,
        now_ms: u64,
    ) -> ReplayStep {
        let topo = self.topology();
        let (state, addr) = (&topo.states[backend], &topo.backends[backend]);
        let mut replay = state.replay.get();
        replay.attempts += 1;
        state.replay.set(replay);
        // Any answer below 500 means the backend serves requests (a 401 is
        // InfluxDB with `ping-auth-enabled`); no answer or a 5xx: down.
        let ping = self.transport.send(addr, Request::new(Method::Get, "/ping")).await;
        if !matches!(&ping, Ok(r) if r.status < 500) {
            // Down: wait for it without limit.
            return self.replay_failed(backend, error, now_ms);
        }
        // A timeout while /ping answers says the backend is busy, not that
        // the record is bad: only the age limit applies to it.
        if !timed_out {
            replay.record_failures += 1;
            state.replay.set(replay);
        }
        let max_attempts = u64::from(topo.config.replay_max_attempts);
        let age_ms = id.pushed_ms.map(|t| now_ms.saturating_sub(t));
        let reason = if !timed_out && replay.record_failures >= max_attempts {
            format!(
                "replay gave up after {} attempts while the backend answered /ping \
                 (replay_max_attempts {max_attempts}): {error}",
                replay.record_failures
            )
        } else if let Some(age) = age_ms.filter(|&a| a >= topo.config.replay_max_age_ms) {
            format!(
                "replay gave up: record queued {age} ms ago (replay_max_age_ms {}), \
                 failing while the backend answered /ping: {error}",
                topo.config.replay_max_age_ms
            )
        } else {
            return self.replay_failed(backend, error, now_ms);
        };
        self.give_up(backend, id, record, &reason, now_ms).await
    }

    /// Moves head record `id` of backend `backend`'s queue to the dead-letter
    /// file with `reason` (the replay policy gave up on it).
    async fn give_up(
        &self,
        backend: usize,
        id: RecordId,
        record: &Record,
        reason: &str,
        now_ms: u64,
    ) -> ReplayStep {
        let topo = self.topology();
        let (state, addr) = (&topo.states[backend], &topo.backends[backend]);
        self.metrics.backend_error(&addr.name);
        match state.queue.dead_letter(&self.storage, id, record, reason, now_ms).await {
            Ok(()) => {
                self.log_dead_letter(&addr.name, record, reason);
                self.metrics.replay_given_up(&addr.name);
                state.replay.set(HeadReplay::default());
                state.backoff_ms.set(0);
                ReplayStep::Progress
            }
            Err(e) => {
                self.record_failure(backend, format!("write queue: {e}"), now_ms);
                ReplayStep::RetryAfter(topo.config.replay_backoff_max_ms)
            }
        }
    }

    /// Logs that `record` of backend `name`'s queue went to its dead-letter
    /// file for `reason`: one line with the record's database and points (or
    /// statement), so that an operator sees every write given up.
    fn log_dead_letter(&self, name: &str, record: &Record, reason: &str) {
        let what = match record {
            Record::Write { db, body, .. } => {
                format!("a write of {} points to database {db:?}", count_lines(body))
            }
            Record::Statement { .. } => "a schema statement".to_string(),
        };
        self.log(&format!("backend {name}: {what} moved to the dead-letter file: {reason}"));
    }

    /// Age in ms of the oldest record in backend `backend`'s queue at
    /// `now_ms`; `None` when the queue is empty or its head has no push time.
    pub fn oldest_record_age_ms(&self, backend: usize, now_ms: u64) -> Option<u64> {
        let topo = self.topology();
        let pushed = topo.states.get(backend)?.queue.oldest_pushed_ms()?;
        Some(now_ms.saturating_sub(pushed))
    }

    /// Failed replay attempts of the head record of backend `backend`'s
    /// queue (since it became the head, counted since the proxy started).
    pub fn replay_attempts(&self, backend: usize) -> u64 {
        let topo = self.topology();
        topo.states.get(backend).map_or(0, |s| s.replay.get().attempts)
    }

    fn replay_failed(&self, backend: usize, error: String, now_ms: u64) -> ReplayStep {
        let topo = self.topology();
        self.record_write_failure(backend, error, now_ms);
        let state = &topo.states[backend];
        let min = topo.config.replay_backoff_min_ms.max(1);
        let next = match state.backoff_ms.get() {
            0 => min,
            b => b.saturating_mul(2).min(topo.config.replay_backoff_max_ms.max(min)),
        };
        state.backoff_ms.set(next);
        ReplayStep::RetryAfter(next)
    }

    fn record_ok(&self, backend: usize) {
        let topo = self.topology();
        if let Some(s) = topo.states.get(backend) {
            let changed = s.health.borrow_mut().record_ok(topo.config.health_check_rise);
            self.log_health_change(backend, changed);
        }
    }

    fn record_failure(&self, backend: usize, error: String, now_ms: u64) {
        let topo = self.topology();
        if let (Some(s), Some(addr)) = (topo.states.get(backend), topo.backends.get(backend)) {
            self.metrics.backend_error(&addr.name);
            let changed = s.health.borrow_mut().record_failure(topo.config.health_check_fall, error, now_ms);
            self.log_health_change(backend, changed);
        }
    }

    /// A write (direct or replayed) the backend answered: see
    /// [`Health::record_write_ok`].
    fn record_write_ok(&self, backend: usize) {
        let topo = self.topology();
        if let Some(s) = topo.states.get(backend) {
            let changed = s.health.borrow_mut().record_write_ok();
            self.log_health_change(backend, changed);
        }
    }

    /// A write (direct or replayed) with no answer, a timeout or a 5xx:
    /// counts towards `health_check_fall` ([`Health::record_write_failure`]).
    fn record_write_failure(&self, backend: usize, error: String, now_ms: u64) {
        let topo = self.topology();
        if let (Some(s), Some(addr)) = (topo.states.get(backend), topo.backends.get(backend)) {
            self.metrics.backend_error(&addr.name);
            let changed =
                s.health.borrow_mut().record_write_failure(topo.config.health_check_fall, error, now_ms);
            self.log_health_change(backend, changed);
        }
    }

    /// Logs that backend `backend` was just marked up or down (when
    /// `changed`), with the last error when down: one line per transition,
    /// so that a log shows when writes started and stopped going to its queue.
    fn log_health_change(&self, backend: usize, changed: bool) {
        if !changed {
            return;
        }
        let topo = self.topology();
        let (Some(s), Some(addr)) = (topo.states.get(backend), topo.backends.get(backend)) else { return };
        let line = {
            let health = s.health.borrow();
            if health.is_healthy() {
                format!("backend {}: marked up", addr.name)
            } else {
                format!(
                    "backend {}: marked down: {}",
                    addr.name,
                    health.last_error().unwrap_or("no error noted")
                )
            }
        };
        self.log(&line);
    }

    /// Hands schema statement `record` to backend `backend`: directly while
    /// its queue is empty and it is up, else (or on no answer / 5xx) through
    /// its write queue. Writes go through [`Proxy::deliver_shared`].
    async fn deliver_statement(&self, backend: usize, record: &Record, now_ms: u64) -> Delivery {
        self.deliver_one(backend, Outgoing::Statement(record), now_ms).await
    }

    /// Hands a write body shared between replicas to backend `backend`, as
    /// [`Proxy::deliver_statement`] does a statement (its bytes
    /// are never copied for a backend that takes it directly; a backend that
    /// queues it gets its own copy, of the line protocol, never of the gzip
    /// bytes). A write is sent in pieces of at most `backend_max_body_bytes`
    /// ([`Proxy::send_write`]); when a piece gets no answer or a 5xx, the
    /// pieces not yet acknowledged are queued (one record) and count as one
    /// failure towards `health_check_fall`. A 4xx (also a 413 for a single
    /// point) is passed on.
    async fn deliver_shared(&self, backend: usize, body: &write::WriteBody, now_ms: u64) -> Delivery {
        self.deliver_one(backend, Outgoing::Write(body), now_ms).await
    }

    async fn deliver_one(&self, backend: usize, outgoing: Outgoing<'_>, now_ms: u64) -> Delivery {
        let topo = self.topology();
        let state = &topo.states[backend];
        let addr = &topo.backends[backend];
        let no_sync = matches!(outgoing, Outgoing::Write(body) if body.no_sync);
        if no_sync || !state.queue.is_empty() || !state.health.borrow().is_healthy() {
            return match outgoing {
                Outgoing::Write(body) => self.enqueue(backend, &body.record(0), now_ms).await,
                Outgoing::Statement(record) => self.enqueue(backend, record, now_ms).await,
            };
        }
        let sent = match outgoing {
            Outgoing::Write(body) => self.send_write(backend, body, false).await,
            Outgoing::Statement(record) => self.send_record(backend, record).await,
        };
        let error = match sent.outcome {
            Ok(r) if (200..300).contains(&r.status) => {
                if let Outgoing::Write(body) = outgoing {
                    let points = body.points.unwrap_or_else(|| count_lines(&body.lines));
                    self.metrics.written(&addr.name, points, body.lines.len() as u64);
                    state.health.borrow_mut().record_write(now_ms);
                }
                self.record_write_ok(backend);
                return Delivery::Delivered(r);
            }
            Ok(r) if refuses_request(&r) => {
                self.metrics.backend_error(&addr.name);
                self.record_write_ok(backend);
                let message = error_message(&r);
                if let Outgoing::Write(body) = outgoing {
                    // The pieces before the refused one were acknowledged.
                    let acked = &body.lines[..sent.acked.min(body.lines.len())];
                    let acked_points = count_lines(acked);
                    if !acked.is_empty() {
                        self.metrics.written(&addr.name, acked_points, acked.len() as u64);
                    }
                    let points = body.points.unwrap_or_else(|| count_lines(&body.lines));
                    let unacked = points.saturating_sub(acked_points);
                    let refused = match partial_write_dropped(r.status, &message) {
                        // The rest of a partial write's piece was stored.
                        Some(dropped) => dropped.min(unacked),
                        None => unacked,
                    };
                    self.metrics.points_refused(&addr.name, refused);
                }
                return Delivery::Rejected { status: r.status, message };
            }
            Ok(r) => format!("HTTP {}: {}", r.status, error_message(&r)),
            Err(e) => e.to_string(),
        };
        // The first record of a backlog is logged with the failure that
        // started it (the writes after it queue behind it, unlogged).
        let backlog = state.queue.is_empty().then(|| error.clone());
        self.record_write_failure(backend, error, now_ms);
        let delivery = match outgoing {
            Outgoing::Write(body) => {
                let acked = &body.lines[..sent.acked.min(body.lines.len())];
                if !acked.is_empty() {
                    self.metrics.written(&addr.name, count_lines(acked), acked.len() as u64);
                }
                self.enqueue(backend, &body.record(acked.len()), now_ms).await
            }
            Outgoing::Statement(record) => self.enqueue(backend, record, now_ms).await,
        };
        if let (Some(error), Delivery::Queued) = (backlog, &delivery) {
            let what = match outgoing {
                Outgoing::Write(_) => "a write",
                Outgoing::Statement(_) => "a schema statement",
            };
            self.log(&format!("backend {}: {what} went to the empty write queue after: {error}", addr.name));
        }
        delivery
    }

    async fn enqueue(&self, backend: usize, record: &Record, now_ms: u64) -> Delivery {
        let topo = self.topology();
        match topo.states[backend].queue.push(&self.storage, record, now_ms).await {
            Ok(()) => Delivery::Queued,
            Err(e) => Delivery::NotKept(e),
        }
    }

    /// Turns the deliveries of one write or schema statement into the
    /// client's answer: 503 if any backend could not keep it, else the first
    /// backend refusal (4xx), else the delivered responses. The error comes
    /// with the index of the backend whose refusal it is (`None` for a 503).
    /// A refusal by some replicas while others took the record (replicas
    /// that disagree, e.g. a field type conflict on one only) is logged with
    /// the backends' names.
    fn settle(&self, deliveries: Vec<(usize, Delivery)>) -> Result<Vec<(usize, Response)>, Refused> {
        let topo = self.topology();
        let mut delivered = Vec::new();
        let mut not_kept = Vec::new();
        let mut rejected = None;
        let mut took = Vec::new();
        for (backend, delivery) in deliveries {
            match delivery {
                Delivery::Rejected { status, message } => {
                    rejected.get_or_insert((ProxyError::Backend { status, message }, Some(backend)));
                }
                Delivery::NotKept(e) => {
                    not_kept.push(format!("backend {}: {e}", topo.backends[backend].name))
                }
                Delivery::Delivered(r) => {
                    took.push(backend);
                    delivered.push((backend, r))
                }
                Delivery::Queued => took.push(backend),
            }
        }
        // Not kept wins over a refusal: the client must retry (a 4xx would
        // make it drop the write, lost for the backend that could not keep it).
        if !not_kept.is_empty() {
            return Err((ProxyError::QueueFull(format!("write not kept: {}", not_kept.join("; "))), None));
        }
        match rejected {
            Some((e, backend)) => {
                if let (Some(b), false) = (backend, took.is_empty()) {
                    let names: Vec<&str> = took.iter().map(|&t| topo.backends[t].name.as_str()).collect();
                    self.log(&format!(
                        "backend {}: refused what {} took: {} {}",
                        topo.backends[b].name,
                        names.join(", "),
                        e.status(),
                        e.message()
                    ));
                }
                Err((e, backend))
            }
            None => Ok(delivered),
        }
    }

    fn ping(&self, request: &Request) -> Result<Response, ProxyError> {
        allow(request, &[Method::Get, Method::Head])?;
        let mut response = if request.param("verbose").is_some_and(|v| v == "true") {
            Response::json(
                200,
                format!("{{\"version\":\"{}\"}}\n", crate::INFLUXDB_COMPAT_VERSION).into_bytes(),
            )
        } else {
            Response::empty(204)
        };
        response.headers.push(("x-influxdb-build".into(), "OSS".into()));
        response.headers.push(("x-influx-proxy-version".into(), crate::VERSION.into()));
        Ok(response)
    }

    /// `GET /health`: 200 with `"status":"pass"` when every backend is up,
    /// `"warn"` when some are down, 503 `"fail"` when all are down.
    fn health(&self, request: &Request, now_ms: u64) -> Result<Response, ProxyError> {
        let topo = self.topology();
        allow(request, &[Method::Get, Method::Head])?;
        let mut backends = Vec::new();
        let mut up = 0;
        for (i, (addr, state)) in topo.backends.iter().zip(&topo.states).enumerate() {
            let active = topo.is_active(i);
            if !active && state.retired.get() {
                // Removed by a reload and left: nothing more to show.
                continue;
            }
            let gauges = self.backend_gauges(i, state, now_ms);
            let health = state.health.borrow();
            up += usize::from(gauges.healthy && active);
            // The most recent of the last backend error and the last loop restart.
            let loop_error = state.last_loop_error.borrow();
            let (last_error, last_error_ms) = match (&*loop_error, health.last_error_ms()) {
                (Some((e, at)), None) => (Some(e.as_str()), Some(*at)),
                (Some((e, at)), Some(h)) if *at >= h => (Some(e.as_str()), Some(*at)),
                _ => (health.last_error(), health.last_error_ms()),
            };
            backends.push(serde_json::json!({
                "name": addr.name,
                "url": addr.url,
                "healthy": gauges.healthy,
                "last_error": last_error,
                "last_error_ms": last_error_ms,
                "last_write_ms": health.last_write_ms(),
                "queue_records": gauges.queue_records,
                "queue_bytes": gauges.queue_bytes,
                "dead_letters": gauges.dead_letters,
                "replay_given_up": self.metrics.replay_given_up_count(&addr.name),
                // Damaged records skipped since start (see the write queue's
                // "Corruption"): lost for this backend, like dead letters.
                "dropped_records": state.queue.dropped().records,
                "oldest_record_age_ms": self.oldest_record_age_ms(i, now_ms),
                "replay_attempts": gauges.replay_attempts,
                "loop_restarts": state.loop_restarts.get(),
                // "leaving": removed by a reload, delivering its queue.
                "state": if active { "active" } else { "leaving" },
            }));
        }
        let (status, code) = match up {
            n if n == topo.active.len() => ("pass", 200),
            0 => ("fail", 503),
            _ => ("warn", 200),
        };
        let last_reload = self.last_reload.borrow().as_ref().map(|last| match &last.result {
            Ok(report) => serde_json::json!({
                "at_ms": last.at_ms,
                "result": "applied",
                "changes": report.changes,
                "error": null,
            }),
            Err(e) => serde_json::json!({
                "at_ms": last.at_ms,
                "result": "refused",
                "changes": [],
                "error": e,
            }),
        });
        let body = serde_json::json!({
            "name": "influx-proxy",
            "version": crate::VERSION,
            "status": status,
            "config_generation": topo.generation,
            "last_reload": last_reload,
            "backends": backends,
            "rebalance": self.moves_health(),
            "move_loop_restarts": self.move_loop_restarts.get(),
            "move_loop_last_error": self.last_move_loop_error.borrow().clone(),
        });
        let mut bytes = serde_json::to_vec_pretty(&body).map_err(|e| ProxyError::Internal(e.to_string()))?;
        bytes.push(b'\n');
        Ok(Response::json(code, bytes))
    }

    /// Backend `i`'s queue and health figures, as `/health` and `/metrics`
    /// show them (the oldest record's age is 0 for an empty queue here).
    fn backend_gauges(&self, i: usize, state: &BackendState, now_ms: u64) -> BackendGauges {
        let depth = state.queue.depth();
        BackendGauges {
            queue_records: depth.records,
            queue_bytes: depth.bytes,
            dead_letters: state.queue.dead_letters(),
            healthy: state.health.borrow().is_healthy(),
            oldest_record_age_ms: self.oldest_record_age_ms(i, now_ms).unwrap_or(0),
            replay_attempts: self.replay_attempts(i),
        }
    }

    fn metrics(&self, request: &Request, now_ms: u64) -> Result<Response, ProxyError> {
        let topo = self.topology();
        allow(request, &[Method::Get, Method::Head])?;
        // The configured backends and the leaving ones, not those that left.
        let gauges: Vec<(&str, BackendGauges)> = topo
            .backends
            .iter()
            .zip(&topo.states)
            .enumerate()
            .filter(|(i, (_, s))| topo.is_active(*i) || !s.retired.get())
            .map(|(i, (addr, s))| (addr.name.as_str(), self.backend_gauges(i, s, now_ms)))
            .collect();
        self.metrics.config_generation(topo.generation);
        let mut text = self.metrics.render(&gauges);
        let moves = self.moves_metrics();
        if !moves.is_empty() {
            match text.rfind("# EOF") {
                Some(at) => text.insert_str(at, &moves),
                None => text.push_str(&moves),
            }
        }
        Ok(Response {
            status: 200,
            headers: vec![(
                "content-type".into(),
                "application/openmetrics-text; version=1.0.0; charset=utf-8".into(),
            )],
            body: text.into_bytes(),
        })
    }
}

impl<T: Transport, S: Storage> Proxy<T, S> {
    /// `POST /reload`: re-reads the configuration file and applies it
    /// ([`Proxy::reload_file`]). Answered only to loopback peers (403
    /// otherwise, and when the host does not know the peer); 405 for another
    /// method; 404 when the proxy was given no file. 200 `{"generation":N,
    /// "changes":[...]}`, or 400 `{"error":"<the one-line reason>"}` when the
    /// file is invalid or the change refused (the old configuration keeps
    /// serving).
    async fn reload_endpoint(&self, request: &Request, now_ms: u64) -> Result<Response, ProxyError> {
        allow(request, &[Method::Post])?;
        if !is_loopback(request.peer) {
            return Err(ProxyError::Forbidden(
                "/reload is answered only to clients on a loopback address".into(),
            ));
        }
        if self.config_file.is_none() {
            return Err(ProxyError::NotFound("404 page not found: /reload (no configuration file)".into()));
        }
        let report = self.reload_file(now_ms).await.map_err(ProxyError::BadRequest)?;
        let body = serde_json::json!({ "generation": report.generation, "changes": report.changes });
        let mut bytes = serde_json::to_vec(&body).map_err(|e| ProxyError::Internal(e.to_string()))?;
        bytes.push(b'\n');
        Ok(Response::json(200, bytes))
    }
}

/// 405 unless the request's method is one of `methods`.
fn allow(request: &Request, methods: &[Method]) -> Result<(), ProxyError> {
    if methods.contains(&request.method) {
        Ok(())
    } else {
        let names: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
        Err(ProxyError::MethodNotAllowed(format!(
            "method not allowed on {}: use {}",
            request.path,
            names.join(" or ")
        )))
    }
}

/// The HTTP request that delivers `record` to a backend: `POST /write` with
/// the line protocol body, or `POST /query` with a form body for a statement.
fn record_request(record: &Record) -> Request {
    match record {
        Record::Write { db, rp, precision, credentials, body } => {
            let mut request = write_request(db, rp, precision, credentials);
            request.body = body.to_vec();
            request
        }
        Record::Statement { db, q, credentials } => {
            let mut form = vec![("q".to_string(), q.clone())];
            if let Some(db) = db {
                form.push(("db".into(), db.clone()));
            }
            let mut request = Request::new(Method::Post, "/query");
            request.headers.push(("content-type".into(), "application/x-www-form-urlencoded".into()));
            add_credentials(&mut request, credentials);
            request.body = crate::http::encode_params(&form).into_bytes();
            request
        }
    }
}

/// `POST /write?db=&rp=&precision=` with the credentials, without a body.
fn write_request(
    db: &str,
    rp: &Option<String>,
    precision: &Option<String>,
    credentials: &crate::write_queue::Credentials,
) -> Request {
    let mut query = vec![("db".to_string(), db.to_string())];
    if let Some(rp) = rp {
        query.push(("rp".into(), rp.clone()));
    }
    if let Some(p) = precision {
        query.push(("precision".into(), p.clone()));
    }
    let mut request = Request::new(Method::Post, "/write");
    request.query = query;
    request.headers.push(("content-type".into(), "text/plain; charset=utf-8".into()));
    add_credentials(&mut request, credentials);
    request
}

/// Forwards the client's credentials unchanged (InfluxDB 1.x
/// "Authentication and authorization": `u`/`p` parameters or the
/// `Authorization` header).
fn add_credentials(request: &mut Request, credentials: &crate::write_queue::Credentials) {
    if let Some(u) = &credentials.username {
        request.query.push(("u".into(), u.clone()));
    }
    if let Some(p) = &credentials.password {
        request.query.push(("p".into(), p.clone()));
    }
    if let Some(a) = &credentials.authorization {
        request.headers.push(("authorization".into(), a.clone()));
    }
}

/// For a delivered schema statement: the error InfluxDB reported inside the
/// 200 answer (`{"results":[{"error":...}]}`), if any. Writes have none.
fn statement_error(record: &Record, response: &Response) -> Option<String> {
    match record {
        Record::Write { .. } => None,
        Record::Statement { .. } => match crate::results::first_result(&response.body) {
            Ok(result) => result.error_message().map(|e| format!("statement failed: {e}")),
            Err(e) => Some(format!("statement failed: {e}")),
        },
    }
}

/// Whether write batch `batch` was delivered whole by its answer `sent`
/// (2xx); a statement never counts (its 200 may report an error, judged by
/// [`Proxy::replay_judge_record`]).
fn delivered_whole(batch: &Batch, sent: &send::Sent) -> bool {
    matches!(batch.record, Record::Write { .. })
        && matches!(&sent.outcome, Ok(r) if (200..300).contains(&r.status))
}

/// Whether a backend's answer to a write refuses the request itself, so that
/// sending it again cannot succeed: any 4xx, and InfluxDB 1.x's answer to a
/// write for a retention policy that does not exist, `500
/// {"error":"retention policy not found: <rp>"}` (its write handler answers
/// every error that is not a client, authorization or partial-write error
/// with 500, services/httpd/handler.go `serveWrite`). Such an answer is passed
/// to the client with its status and never queued (on the direct path), or
/// dead-lettered at once (in replay); it does not count against the
/// backend's health.
pub(crate) fn refuses_request(response: &Response) -> bool {
    (400..500).contains(&response.status)
        || (response.status == 500 && error_message(response).starts_with("retention policy not found"))
}

/// The error text of a backend's answer: `error` of an InfluxDB JSON body, or
/// the body's first 1,000 bytes, or the status.
fn error_message(response: &Response) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&response.body) {
        if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
            return e.to_string();
        }
    }
    let text = String::from_utf8_lossy(&response.body[..response.body.len().min(1000)]).trim().to_string();
    if text.is_empty() {
        format!("HTTP {}", response.status)
    } else {
        text
    }
}

/// The `N` of an InfluxDB 1.x write answer `400 partial write: <reason>
/// dropped=N` (tsdb/shard.go `PartialWriteError`, answered by
/// services/httpd/handler.go `serveWrite`): how many of the request's points
/// the backend did not store; `None` for any other answer.
fn partial_write_dropped(status: u16, message: &str) -> Option<u64> {
    if status != 400 || !message.starts_with("partial write:") {
        return None;
    }
    message.rsplit_once(" dropped=").and_then(|(_, n)| n.trim_end().parse().ok())
}

/// Points in a queued write body (one per line; a rare multi-line string
/// field value counts once per line). Only replay uses it: the write path
/// knows its counts.
fn count_lines(body: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', body).count() as u64
}

/// Runs the futures concurrently on the caller's task; outputs in input order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *output = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests;

/// A loop restart while a batch is in flight (see [`HeadReplay::batch`]).
#[cfg(test)]
mod replay_restart_tests {
    use super::*;
    use crate::storage::MemStorage;
    use crate::transport::{BackendAddr, TransportError};
    use futures_lite::future::block_on;
    use std::cell::{Cell, RefCell};
    use std::panic::{catch_unwind, AssertUnwindSafe};

    /// Refuses connections while `down`; then answers 204, except that a
    /// write holding `boom` panics (a record that makes the loop panic).
    #[derive(Default)]
    struct Backend {
        down: Cell<bool>,
        writes: RefCell<Vec<String>>,
    }

    impl Transport for &Backend {
        async fn send(&self, _: &BackendAddr, request: Request) -> Result<Response, TransportError> {
            if self.down.get() {
                return Err(TransportError::Connect("connection refused".into()));
            }
            if request.path == "/write" {
                let body = String::from_utf8_lossy(&request.body).into_owned();
                assert!(!body.contains("boom"), "the backend panics on this record");
                self.writes.borrow_mut().push(body);
            }
            Ok(Response::empty(204))
        }
    }

    #[test]
    fn a_restart_during_a_batch_does_not_dead_letter_its_head() {
        let text = r#"{
            "backends": { "a": { "url": "http://127.0.0.1:8086" } },
            "keymaps": { "_default_": ["a"] },
            "replay_max_attempts": 1
        }"#;
        let config = Config::parse("test.json", text).unwrap_or_else(|e| panic!("{e}"));
        let backend = Backend::default();
        let proxy =
            block_on(Proxy::open(config, &backend, MemStorage::new())).unwrap_or_else(|e| panic!("{e}"));
        backend.down.set(true);
        for body in ["cpu v=1 1\n", "boom v=1 2\n"] {
            let mut request = Request::new(Method::Post, "/write");
            request.query = vec![("db".into(), "x".into())];
            request.body = body.as_bytes().to_vec();
            assert_eq!(block_on(proxy.handle(request, 0)).status, 204);
        }
        assert_eq!(proxy.queue_depth(0).records, 2);
        backend.down.set(false);
        // The host's supervisor: a panicking step restarts the loop.
        let mut steps = Vec::new();
        for _ in 0..10 {
            match catch_unwind(AssertUnwindSafe(|| block_on(proxy.replay_step(0, 0)))) {
                Ok(ReplayStep::Idle) => break,
                Ok(step) => steps.push(format!("{step:?}")),
                Err(_) => {
                    steps.push("restart".into());
                    proxy.record_loop_restart(crate::host::LoopKind::Replay, 0, "after panic", 0);
                }
            }
        }
        // The batch of both panics; the head alone is delivered, the record
        // that panics alone is given up.
        assert_eq!(steps, ["restart", "Progress", "restart", "Progress"]);
        assert_eq!(*backend.writes.borrow(), ["cpu v=1 1\n"]);
        let health = block_on(proxy.handle(Request::new(Method::Get, "/health"), 0));
        let v: serde_json::Value = serde_json::from_slice(&health.body).unwrap_or_default();
        assert_eq!(v["backends"][0]["dead_letters"], 1, "{v}");
    }
}
