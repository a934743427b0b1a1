//! Live configuration reload: the [`Topology`] a request runs with, and
//! [`Proxy::reload`], which swaps it for a new configuration's without a
//! restart.
//!
//! # Snapshots
//!
//! Everything a request decides from the configuration (its routes, the
//! statement filter, the limits, the set of backends a schema statement or a
//! `SHOW` without `FROM` goes to) comes from one [`Topology`], an `Rc`
//! snapshot taken at the start of [`Proxy::handle`]: a reload while the
//! request is in flight installs a new topology for the requests that start
//! after it, and the request in flight finishes with the one it started with.
//! The proxy keeps the topology in a `RefCell<Rc<Topology>>` that is borrowed
//! only to clone the `Rc`, never across an `.await`.
//!
//! # Backend indices
//!
//! A backend's index (its position in [`Topology::backends`], the numbers in
//! a [`crate::route::ReplicaSet`], the slot of its state: write queue,
//! health, replay) is fixed for the life of the process. At start the
//! indices are the config's order (sorted by name, as
//! [`Config::backend_names`]); a backend added by a reload gets the next
//! index at the end, a backend removed keeps its slot (and gets it back if it
//! is added again under the same name, with the same write queue
//! `queue/<name>`). Routers (and shard groups) are therefore built over
//! [`Topology::names`], not over the new config's sorted names.
//!
//! # What a reload changes
//!
//! - **A backend added:** its write queue `queue/<name>` is opened (recovered
//!   if it exists from an earlier life), it starts up (healthy, as at
//!   start), and the host starts its health-check and replay loops
//!   ([`Proxy::claim_loops`], [`crate::host::run_backend_loops`]). Writes
//!   routed to it reach it from the next request on.
//! - **A backend removed:** it gets no new writes, queries or schema
//!   statements at once (no route names it, it is not in
//!   [`Topology::active`]), but what it has in its write queue was
//!   acknowledged to clients (204), so it is not stranded: the backend is
//!   *leaving* (shown so in `/health`) and keeps its replay and health-check
//!   loops until its queue is empty and no request still running on an older
//!   topology can hand it a write; then it has *left*: its loops end and it
//!   is no longer shown. A leaving backend that stays down stays leaving
//!   (its records are kept), also across a restart (the leaving backends
//!   are recorded in [`LEAVING_FILE`]); adding it back makes it a normal
//!   backend again.
//! - **A backend's URL changed:** requests sent from then on (new
//!   connections included) go to the new address; its queue, health and
//!   counters are kept (it is the same backend under its name).
//! - **Explicit keymaps:** applied at once. A measurement whose replica set
//!   changed is written to its new set from then on; what its old set holds
//!   is *not* copied to the new members (no backfill: the rebalance does that
//!   for shard groups), and its reads go to the new set.
//! - **Statement filters, replay policy, health-check settings,
//!   `backend_max_body_bytes`:** from the next request / step on.
//! - **Refused (the old configuration keeps serving):** a config that does
//!   not validate ([`Config::parse`]), a change of a key the running host
//!   cannot apply ([`RESTART_ONLY`]: the listen address, `data_dir`, and the
//!   limits the host's server, connection pool and queues were built with),
//!   and whatever [`moves_data`] refuses.
//!
//! A reload that changes nothing is reported as applied with no changes and
//! leaves the generation as it is.

use super::moves::GroupMove;
use super::{BackendState, Proxy};
use crate::config::Config;
use crate::host::LoopKind;
use crate::route::Router;
use crate::statement::StatementFilter;
use crate::storage::Storage;
use crate::transport::{BackendAddr, Transport};
use crate::write_queue::WriteQueue;
use std::collections::BTreeMap;
use std::rc::Rc;

/// The configuration in force and everything derived from it: one snapshot,
/// shared by `Rc` between the proxy and the requests that started with it.
pub struct Topology {
    /// 1 for the configuration the proxy started with, +1 per applied reload
    /// that changed something.
    pub(super) generation: u64,
    pub(super) config: Config,
    /// Every backend this process has known, by index (stable, see the module
    /// doc); a removed backend keeps its last address.
    pub(super) backends: Vec<BackendAddr>,
    /// Their state, by the same index (shared by every topology).
    pub(super) states: Vec<Rc<BackendState>>,
    /// Indices of the backends in `config` (sorted): the ones that get
    /// requests. The others are leaving or have left.
    pub(super) active: Vec<usize>,
    /// Routes over [`Topology::names`].
    pub(super) router: Router,
    pub(super) filter: StatementFilter,
    /// The moves of shard groups this topology's placement is moving to, by
    /// group name (`proxy/moves.rs`).
    pub(super) moves: BTreeMap<String, Rc<GroupMove>>,
}

impl Topology {
    /// The configuration's generation: 1 at start, +1 per applied reload.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The configuration this topology was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every backend the process has known, by index (including those
    /// removed by a reload, which may still be leaving).
    pub fn backends(&self) -> &[BackendAddr] {
        &self.backends
    }

    /// Backend names by index: what routers and shard groups must be built
    /// over so that their indices are the proxy's.
    pub fn names(&self) -> Vec<String> {
        self.backends.iter().map(|b| b.name.clone()).collect()
    }

    /// Indices of the configured backends, sorted.
    pub fn active(&self) -> &[usize] {
        &self.active
    }

    /// Whether backend `index` is in the configuration (not leaving or left).
    pub fn is_active(&self, index: usize) -> bool {
        self.active.binary_search(&index).is_ok()
    }

    /// The router of this configuration's keymaps.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The index of backend `name`, if the process knows it.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.name == name)
    }

    /// The topology of the configuration the proxy starts with: indices in
    /// the config's order, then the `leaving` backends ([`open_leaving`]).
    /// Errors as [`Proxy::open`]'s.
    pub(super) fn first(
        config: Config,
        mut states: Vec<Rc<BackendState>>,
        leaving: Vec<(BackendAddr, Rc<BackendState>)>,
    ) -> Result<Topology, String> {
        let mut backends = config.backend_addrs().map_err(|e| e.to_string())?;
        let active = (0..backends.len()).collect();
        for (addr, state) in leaving {
            backends.push(addr);
            states.push(state);
        }
        let names: Vec<String> = backends.iter().map(|b| b.name.clone()).collect();
        let router = config.router_over(&names).map_err(|e| e.to_string())?;
        let filter = StatementFilter::new(&config.forbidden_statements, &config.allowed_statements)?;
        Ok(Topology {
            generation: 1,
            config,
            backends,
            states,
            active,
            router,
            filter,
            moves: BTreeMap::new(),
        })
    }

    /// The leaving backends (removed, not yet left) by name, with their URLs.
    fn leaving(&self) -> std::collections::BTreeMap<&str, &str> {
        (0..self.backends.len())
            .filter(|&i| !self.is_active(i) && !self.states[i].retired.get())
            .map(|i| (self.backends[i].name.as_str(), self.backends[i].url.as_str()))
            .collect()
    }
}

/// The file in the storage (`data_dir`) that names the backends removed by a
/// reload and not yet left, so that a restart keeps them leaving until their
/// write queues are delivered: a JSON object, backend name -> URL, rewritten
/// (atomically) by each reload that changes the set. Entries of backends that
/// have left since are ignored at start (their queues are empty).
pub const LEAVING_FILE: &str = "leaving.json";

/// At start: the backends of [`LEAVING_FILE`] that `config` does not name and
/// whose write queue (reopened) still holds records. Errors (one line): the
/// file unreadable or not such a JSON object, a URL that does not parse, a
/// queue that cannot be opened.
pub(super) async fn open_leaving<S: Storage>(
    config: &Config,
    storage: &S,
) -> Result<Vec<(BackendAddr, Rc<BackendState>)>, String> {
    let bytes = match storage.read(LEAVING_FILE).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{LEAVING_FILE}: {e}")),
    };
    let listed: std::collections::BTreeMap<String, String> = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{LEAVING_FILE}: {e} (remove it to forget the leaving backends)"))?;
    let mut out = Vec::new();
    for (name, url) in listed {
        if config.backends.contains_key(&name) {
            continue;
        }
        // Its own `tls` left with it: an https one uses `backend_tls`.
        let addr = BackendAddr::parse(&name, &url)
            .map_err(|e| format!("{LEAVING_FILE}: backend {name}: {e}"))?
            .with_tls(config.backend_tls.as_ref());
        let queue = WriteQueue::open(storage, &format!("queue/{name}"), config.queue_max_bytes)
            .await
            .map_err(|e| format!("write queue of leaving backend {name}: {e}"))?;
        if !queue.is_empty() {
            out.push((addr, Rc::new(BackendState::new(queue))));
        }
    }
    Ok(out)
}

/// What an applied reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// The generation in force afterwards (unchanged when nothing changed).
    pub generation: u64,
    /// One line per change, e.g. `backend b added (http://127.0.0.1:8087)`,
    /// `keymaps changed (...)`, `health_check_fall: 3 -> 5`; empty when the
    /// new configuration equals the old.
    pub changes: Vec<String>,
}

/// The last reload attempt, for `/health`.
#[derive(Debug, Clone)]
pub(super) struct LastReload {
    /// When, in ms since the Unix epoch.
    pub at_ms: u64,
    /// The report, or the one-line reason it was refused.
    pub result: Result<ReloadReport, String>,
}

/// Keys the running host cannot apply: changing one refuses the whole reload
/// (restart the proxy to apply it). `listen` and `data_dir` name the socket
/// and the directory the host opened; the others are the limits its HTTP
/// server (`max_body_bytes`, `header_read_timeout_ms`,
/// `body_read_timeout_ms`), connection pool (`request_timeout_ms`,
/// `pool_max_idle`, `pool_max_open`, `backend_max_response_bytes`) and open
/// write queues (`queue_max_bytes`) were built with.
pub const RESTART_ONLY: &[&str] = &[
    "listen",
    "listen_tls",
    "data_dir",
    "max_body_bytes",
    "header_read_timeout_ms",
    "body_read_timeout_ms",
    "queue_max_bytes",
    "request_timeout_ms",
    "backend_max_response_bytes",
    "pool_max_idle",
    "pool_max_open",
];

/// The first [`RESTART_ONLY`] key whose value differs, as a one-line refusal
/// `$.key: cannot change while the proxy runs (old -> new); restart to apply
/// it`.
fn restart_only(old: &Config, new: &Config) -> Option<String> {
    macro_rules! check {
        ($($key:ident),*) => {{
            let changed: Vec<(&str, String, String)> = vec![$(
                (stringify!($key), format!("{:?}", old.$key), format!("{:?}", new.$key)),
            )*];
            changed
        }};
    }
    let all = check!(
        listen,
        listen_tls,
        data_dir,
        max_body_bytes,
        header_read_timeout_ms,
        body_read_timeout_ms,
        queue_max_bytes,
        request_timeout_ms,
        backend_max_response_bytes,
        pool_max_idle,
        pool_max_open
    );
    debug_assert_eq!(all.len(), RESTART_ONLY.len());
    all.into_iter().find(|(_, o, n)| o != n).map(|(key, o, n)| {
        format!("$.{key}: cannot change while the proxy runs ({o} -> {n}); restart the proxy to apply it")
    })
}

/// Refuses a reload that would move data of a shard group between backends
/// in a way the rebalance (`crate::rebalance`, `proxy/moves.rs`) does not do
/// (one-line reason naming the key): changing the shard tag of a group in
/// use (it changes what a key is), removing a group in use, or pointing an
/// existing keymap at or away from a group. A group in use whose `backends`
/// or `replication_factor` changed is not refused here: the reload starts a
/// move of its keys ([`Proxy::reload`]), which needs
/// `rebalance_single_writer`. Applied live: new groups, new keymaps, changes
/// of groups no keymap uses, and explicit keymaps (a changed explicit replica
/// set is not backfilled, see the module doc).
pub fn moves_data(old: &Config, new: &Config) -> Option<String> {
    use crate::route::Keymap;
    let used = |config: &Config, group: &str| {
        config.keymaps.values().any(|k| matches!(k, Keymap::Group(g) if g == group))
    };
    let refuse = |path: String, what: &str| {
        Some(format!(
            "{path}: {what} would move data between backends, which a live reload does not do yet; \
             keep it as it is"
        ))
    };
    for (name, before) in &old.shard_groups {
        if !used(old, name) {
            continue;
        }
        let path = format!("$.shard_groups{}", crate::config::key_segment(name));
        let Some(after) = new.shard_groups.get(name) else {
            return refuse(path, "removing a shard group in use");
        };
        // A changed backend set or replication factor is a move
        // (`Proxy::moves_for_reload`), which has its own refusals.
        if before.shard_tag != after.shard_tag {
            return refuse(format!("{path}.shard_tag"), "changing a shard group's shard tag");
        }
    }
    for (key, before) in &old.keymaps {
        match new.keymaps.get(key) {
            Some(after) if after == before => {}
            Some(_) | None if matches!(before, Keymap::Group(_)) => {
                let path = format!("$.keymaps{}", crate::config::key_segment(key));
                return refuse(path, "changing or removing a keymap of a shard group");
            }
            Some(Keymap::Group(_)) => {
                let path = format!("$.keymaps{}", crate::config::key_segment(key));
                return refuse(path, "pointing an existing keymap at a shard group");
            }
            _ => {}
        }
    }
    None
}

/// One line per live-applied key that differs (backends and keymaps are
/// described by the caller).
fn setting_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut changes = Vec::new();
    if old.keymaps != new.keymaps {
        let changed: Vec<&str> = old
            .keymaps
            .iter()
            .filter(|(k, v)| new.keymaps.get(*k) != Some(v))
            .map(|(k, _)| k.as_str())
            .chain(new.keymaps.keys().filter(|k| !old.keymaps.contains_key(*k)).map(String::as_str))
            .collect();
        changes.push(format!(
            "keymaps changed: {} (data already written is not copied to a new replica set)",
            changed.join(", ")
        ));
    }
    if old.forbidden_statements != new.forbidden_statements {
        changes.push("forbidden_statements changed".to_string());
    }
    if old.allowed_statements != new.allowed_statements {
        changes.push("allowed_statements changed".to_string());
    }
    macro_rules! scalar {
        ($($key:ident),*) => {$(
            if old.$key != new.$key {
                changes.push(format!("{}: {} -> {}", stringify!($key), old.$key, new.$key));
            }
        )*};
    }
    scalar!(
        backend_max_body_bytes,
        replay_max_attempts,
        replay_max_age_ms,
        health_check_interval_ms,
        health_check_fall,
        health_check_rise,
        replay_backoff_min_ms,
        replay_backoff_max_ms
    );
    changes
}

impl<T: Transport, S: Storage> Proxy<T, S> {
    /// The topology in force now (an `Rc` clone: hold it as long as needed).
    pub fn topology(&self) -> Rc<Topology> {
        self.topology.borrow().clone()
    }

    /// Applies `new` (validated: from [`Config::parse`]) without a restart,
    /// as the module doc describes; `now_ms` (ms since the Unix epoch) dates
    /// the attempt in `/health`. Requests already running keep the topology
    /// they started with. Reloads run one at a time.
    ///
    /// Ok: the generation now in force and the changes (none: nothing to
    /// do). Err (one line; nothing changed, the old configuration keeps
    /// serving): a [`RESTART_ONLY`] key changed (`$.listen: cannot change
    /// ...`), [`moves_data`] refused, or a new backend's write queue could
    /// not be opened. (A failure to record the leaving backends in
    /// [`LEAVING_FILE`] is said in the report, not refused.) Each attempt is
    /// logged (one line through [`Proxy::set_log`]), counted in
    /// `influx_proxy_config_reloads_total{result}` and shown in `/health`.
    pub async fn reload(&self, new: Config, now_ms: u64) -> Result<ReloadReport, String> {
        let _one_at_a_time = self.reloads.lock().await;
        let result = self.apply(new).await;
        self.record_reload(result.clone(), now_ms);
        result
    }

    /// Reads the configuration file given with [`Proxy::set_config_file`]
    /// and applies it ([`Proxy::reload`]). Err (one line): no file given, the
    /// file unreadable or invalid (`FILE: $.path: problem`, as at start), or
    /// refused by [`Proxy::reload`] (then prefixed `FILE: `). A file that
    /// cannot be read or parsed is recorded as a refused reload too.
    pub async fn reload_file(&self, now_ms: u64) -> Result<ReloadReport, String> {
        let Some((path, read)) = self.config_file.as_ref() else {
            return Err("no configuration file is known to this proxy".to_string());
        };
        // The file is read under the lock too, so that of two reloads the
        // one applied last is the one that read the file last.
        let _one_at_a_time = self.reloads.lock().await;
        let parsed = read(path).and_then(|text| {
            let mut config = Config::parse(path, &text).map_err(|e| e.to_string())?;
            if let Some(secrets) = &self.secret_reader {
                config.resolve_credentials(path, &**secrets).map_err(|e| e.to_string())?;
            }
            Ok(config)
        });
        match parsed {
            Ok(config) => {
                let result = self.apply(config).await;
                self.record_reload(result.clone(), now_ms);
                result.map_err(|e| format!("{path}: {e}"))
            }
            Err(e) => {
                let e = one_line(&e);
                self.record_reload(Err(e.clone()), now_ms);
                Err(e)
            }
        }
    }

    /// Builds and installs the new topology, or says why not.
    async fn apply(&self, new: Config) -> Result<ReloadReport, String> {
        let old = self.topology();
        if let Some(refusal) = restart_only(&old.config, &new) {
            return Err(refusal);
        }
        if let Some(refusal) = moves_data(&old.config, &new) {
            return Err(refusal);
        }
        if new == old.config {
            return Ok(ReloadReport { generation: old.generation, changes: Vec::new() });
        }
        let mut backends = old.backends.clone();
        let mut states = old.states.clone();
        let mut changes = Vec::new();
        let addrs = new.backend_addrs().map_err(|e| e.to_string())?;
        for addr in addrs {
            match backends.iter().position(|b| b.name == addr.name) {
                Some(i) => {
                    if !old.is_active(i) {
                        changes.push(format!("backend {} added back ({})", addr.name, addr.url));
                    } else if backends[i].url != addr.url {
                        changes
                            .push(format!("backend {} url: {} -> {}", addr.name, backends[i].url, addr.url));
                    } else if backends[i].tls != addr.tls {
                        // Applied to new connections (the pooled ones were
                        // verified under the old settings and stay).
                        changes.push(format!("backend {} tls settings changed", addr.name));
                    }
                    backends[i] = addr;
                }
                None => {
                    let dir = format!("queue/{}", addr.name);
                    let queue = WriteQueue::open(&self.storage, &dir, new.queue_max_bytes)
                        .await
                        .map_err(|e| format!("$.backends.{}: write queue: {e}", addr.name))?;
                    changes.push(format!("backend {} added ({})", addr.name, addr.url));
                    states.push(Rc::new(BackendState::new(queue)));
                    backends.push(addr);
                }
            }
        }
        for &i in &old.active {
            let name = &backends[i].name;
            if !new.backends.contains_key(name) {
                let records = states[i].queue.depth().records;
                changes.push(format!(
                    "backend {name} removed: leaving until its write queue ({records} records) is delivered"
                ));
            }
        }
        let mut active: Vec<usize> =
            new.backends.keys().filter_map(|name| backends.iter().position(|b| &b.name == name)).collect();
        crate::sort::sort_unstable(&mut active);
        let names: Vec<String> = backends.iter().map(|b| b.name.clone()).collect();
        let router = new.router_over(&names).map_err(|e| e.to_string())?;
        let filter = StatementFilter::new(&new.forbidden_statements, &new.allowed_statements)?;
        let new_addrs = new.backend_addrs().map_err(|e| e.to_string())?;
        // Last: a move started here is durable (a restart resumes it).
        let (moves, move_changes, _freeze) = self.moves_for_reload(&old, &new, &router, &new_addrs).await?;
        changes.extend(move_changes);
        changes.extend(setting_changes(&old.config, &new));
        if changes.is_empty() {
            // Keys this module does not describe (added since).
            changes.push("configuration changed".to_string());
        }
        let generation = old.generation + 1;
        let topology = Topology { generation, config: new, backends, states, active, router, filter, moves };
        // Kept for a restart: without it a restart would strand the queues of
        // the backends still leaving. Not a reason to refuse (a full disk
        // must not keep a dead backend configured): said in the report.
        let leaving = topology.leaving();
        if leaving != old.leaving() {
            let text = serde_json::to_vec(&leaving).map_err(|e| e.to_string())?;
            if let Err(e) = self.storage.write_atomic(LEAVING_FILE, &text).await {
                changes.push(format!(
                    "the leaving backends could not be recorded in {LEAVING_FILE} ({e}): \
                     a restart before they have left would not deliver their queues"
                ));
            }
        }
        for &i in &topology.active {
            topology.states[i].retired.set(false);
        }
        self.supersede(&old, topology);
        self.wake_loop_starter();
        Ok(ReloadReport { generation, changes })
    }

    /// Installs a topology equal to `old` but with `moves` (a resync: the
    /// placement does not change, the generation neither).
    pub(super) fn install_moves(&self, old: &Rc<Topology>, moves: BTreeMap<String, Rc<GroupMove>>) {
        let topology = Topology {
            generation: old.generation,
            config: old.config.clone(),
            backends: old.backends.clone(),
            states: old.states.clone(),
            active: old.active.clone(),
            router: old.router.clone(),
            filter: old.filter.clone(),
            moves,
        };
        self.supersede(old, topology);
    }

    /// Puts `topology` in force in place of `old`, which is kept (weakly)
    /// among the superseded ones while requests still hold it.
    fn supersede(&self, old: &Rc<Topology>, topology: Topology) {
        {
            let mut superseded = self.superseded.borrow_mut();
            superseded.retain(|weak| weak.strong_count() > 0);
            superseded.push(Rc::downgrade(old));
        }
        *self.topology.borrow_mut() = Rc::new(topology);
    }

    /// Keeps the attempt for `/health`, counts it and logs it.
    fn record_reload(&self, result: Result<ReloadReport, String>, now_ms: u64) {
        let line = match &result {
            Ok(r) if r.changes.is_empty() => {
                format!("configuration reloaded: no change (generation {})", r.generation)
            }
            Ok(r) => {
                format!("configuration reloaded (generation {}): {}", r.generation, r.changes.join("; "))
            }
            Err(e) => format!("configuration reload refused, the old configuration keeps serving: {e}"),
        };
        self.metrics.config_reload(if result.is_ok() { "applied" } else { "refused" });
        self.log(&line);
        *self.last_reload.borrow_mut() = Some(LastReload { at_ms: now_ms, result });
    }

    /// Loops the host must start: for each backend that is configured or
    /// leaving, each of its two loops that is not running. Marks them as
    /// running: the host must then run each with [`crate::host::run_loop`]
    /// (which marks it ended when it returns). At start this is every loop of
    /// every backend; after a reload, those of the backends added.
    pub fn claim_loops(&self) -> Vec<(usize, LoopKind)> {
        let topology = self.topology();
        let mut out = Vec::new();
        for (i, state) in topology.states.iter().enumerate() {
            if state.retired.get() {
                continue;
            }
            for (k, kind) in [LoopKind::HealthCheck, LoopKind::Replay].into_iter().enumerate() {
                if !state.loops[k].replace(true) {
                    out.push((i, kind));
                }
            }
        }
        out
    }

    /// Whether [`Proxy::claim_loops`] has loops to hand out.
    fn loops_unclaimed(&self) -> bool {
        let topology = self.topology();
        topology.states.iter().any(|s| !s.retired.get() && s.loops.iter().any(|l| !l.get()))
    }

    /// Completes once [`Proxy::claim_loops`] has loops to hand out (at once
    /// at start, then after a reload added a backend). One waiter at a time
    /// (the host's loop starter).
    pub async fn loops_wanted(&self) {
        std::future::poll_fn(|cx| {
            if self.loops_unclaimed() {
                std::task::Poll::Ready(())
            } else {
                *self.loop_starter.borrow_mut() = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await
    }

    fn wake_loop_starter(&self) {
        if let Some(waker) = self.loop_starter.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Called by [`crate::host::run_loop`] when loop `kind` of `backend` has
    /// returned (the host stops, or the backend has left).
    pub fn loop_ended(&self, backend: usize, kind: LoopKind) {
        if let Some(state) = self.topology().states.get(backend) {
            let k = if kind == LoopKind::HealthCheck { 0 } else { 1 };
            state.loops[k].set(false);
        }
        // Re-added while this loop was ending: the starter starts it again.
        if self.loops_unclaimed() {
            self.wake_loop_starter();
        }
    }

    /// Whether backend `backend`'s loops should keep running: it is
    /// configured, or leaving (not yet left).
    pub fn runs_loops(&self, backend: usize) -> bool {
        self.topology().states.get(backend).is_some_and(|s| !s.retired.get())
    }

    /// For a backend removed by a reload (leaving): once its write queue is
    /// empty and no request still running on an older topology can hand it a
    /// write, marks it as left (its loops end, `/health` stops showing it)
    /// and returns true. The replay loop asks this whenever the queue is
    /// empty. A configured backend is never left.
    pub fn retire_if_drained(&self, backend: usize) -> bool {
        let topology = self.topology();
        let Some(state) = topology.states.get(backend) else { return false };
        if topology.is_active(backend) || state.retired.get() || !state.queue.is_empty() {
            return false;
        }
        // A backend removed from a shard group leaves only once no move
        // writes to it (its keys are verified elsewhere and cleaned up).
        if self.moves_write_to(&topology.backends[backend].name) {
            return false;
        }
        let mut superseded = self.superseded.borrow_mut();
        superseded.retain(|weak| weak.strong_count() > 0);
        let still_used =
            superseded.iter().filter_map(|weak| weak.upgrade()).any(|older| older.is_active(backend));
        drop(superseded);
        if still_used {
            return false;
        }
        state.retired.set(true);
        self.metrics.forget_backend(&topology.backends[backend].name);
        self.log(&format!("backend {} left: its write queue is delivered", topology.backends[backend].name));
        true
    }

    /// Gives the proxy its configuration file, for `POST /reload` and
    /// [`Proxy::reload_file`]: `path` as the host names it, `read` reading it
    /// whole (Err: a one-line reason, e.g. `PATH: cannot read the file:
    /// ...`). Without it `POST /reload` answers 404.
    pub fn set_config_file(&mut self, path: String, read: ConfigReader) {
        self.config_file = Some((path, read));
    }

    /// Gives the proxy the host's reader of backends' secrets (environment
    /// variables, files), so that a reload reads them again
    /// ([`Config::resolve_credentials`]). Without it a reloaded
    /// configuration with backend credentials is refused.
    pub fn set_secret_reader(&mut self, read: SecretReader) {
        self.secret_reader = Some(read);
    }

    /// Gives the proxy a sink for its log lines (one line each, no newline):
    /// one per reload attempt, per backend that has left, per record moved to
    /// a dead-letter file, per backend marked down or up (with its last
    /// error), per write that started a backlog in an empty write queue
    /// (with the failure that queued it), and the move loop's progress.
    /// Without it nothing is logged.
    pub fn set_log(&mut self, log: LogSink) {
        self.log = Some(log);
    }

    pub(super) fn log(&self, line: &str) {
        if let Some(log) = &self.log {
            log(line);
        }
    }
}

/// Reads the configuration file at the path given ([`Proxy::set_config_file`]).
pub type ConfigReader = Rc<dyn Fn(&str) -> Result<String, String>>;

/// Reads one secret of a backend's credentials ([`Proxy::set_secret_reader`],
/// [`Config::resolve_credentials`]).
pub type SecretReader = Rc<dyn Fn(&crate::config::SecretSource) -> Result<String, String>>;

/// Takes one log line ([`Proxy::set_log`]).
pub type LogSink = Rc<dyn Fn(&str)>;

/// Whether `/reload` may be answered to `peer`: only a loopback address (IPv4
/// `127.0.0.0/8`, IPv6 `::1`, or an IPv4-mapped loopback); an unknown peer is
/// refused.
pub fn is_loopback(peer: Option<std::net::IpAddr>) -> bool {
    match peer {
        Some(std::net::IpAddr::V4(v4)) => v4.is_loopback(),
        Some(std::net::IpAddr::V6(v6)) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        None => false,
    }
}

/// Joins a possibly multi-line message into one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}
