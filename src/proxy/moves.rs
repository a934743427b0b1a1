//! The rebalance wired into the proxy: moves of shard keys started by a
//! reload (a group's backends or replication factor changed), by `POST
//! /resync?backend=` (a backend that lost its data) and resumed at start;
//! the routing answers they give the write and query paths; the
//! [`crate::rebalance::Backends`] the core drives them through; `POST
//! /cleanup?group=`; and their progress in `/health` and `/metrics`.
//!
//! # Where a move lives
//!
//! A move of group `g` ([`GroupMove`]) is part of the [`Topology`] that has
//! `g`'s new placement, installed with it in one step: a request that started
//! on an older topology routes `g`'s keys by the old placement only (as a key
//! in `Pending`), and the core waits for such requests to end before it
//! relies on the new routing ([`Backends::requests_done_before`], below).
//! Later reloads carry the move over while the group keeps its placement.
//!
//! # Requests of an older routing
//!
//! Every request gets a sequence number when it starts ([`Proxy::handle`])
//! and is *in flight* until it ends. When a move's routing epoch
//! ([`Rebalance::routing_epoch`]) changes (a key joined its new owners, or
//! cleanup began), the move notes the next sequence number: every request
//! that may have routed with the older epoch has a smaller number, so
//! `requests_done_before(e)` is "no request in flight has a number below
//! the one noted for `e`". (The epoch is noted after the step that changed
//! it returns, so a request that started in between counts as old: only
//! conservative.)
//!
//! # Reads during a move
//!
//! A read of one key goes to [`Rebalance::read_targets`] (old owners until
//! the key is verified). A read of the whole group (a regex FROM, `SHOW`
//! without FROM, `SHOW ... FROM` a tag-sharded measurement) asks a cover of
//! the backends that hold every key whole: the moving keys' old owners and
//! the group's backends that receive no copy (old owners keep every write
//! until `cleanup`), `|pool| - s + 1` of them where `s` is the fewest owners
//! a key has there (see [`crate::shard_group`] for why that is a cover).
//! Once every key is verified, reads follow the group's new placement.
//! Known limit: while a backend is being removed, a backend of the pool may
//! also be an added owner of another key with part of its copy; a regex
//! `SELECT` over the group could then take that key's series from it (SHOW
//! answers are unions and stay exact).
//!
//! # Keys written for the first time during a reload
//!
//! The keys to move are discovered (`SHOW DATABASES`, `SHOW MEASUREMENTS`,
//! `SHOW TAG VALUES`) on every backend of the group before the new topology
//! is installed. A key first written between the discovery and the
//! installation would land on its old owners only and not be moved, so a
//! reload that starts a move *freezes* the proxy's writes and queries
//! ([`InFlight::freeze`]): new ones wait before taking their topology, the
//! ones already running are let finish, then the keys are listed, the move
//! started and the new topology installed, and the waiting requests go on
//! with it. Writes and queries therefore pause for the time of the listing
//! (a few queries per database and backend). `POST /resync` needs no freeze:
//! the placement does not change, a key first written meanwhile is placed on
//! all its owners, the resynced backend included.

use super::{Proxy, Topology};
use crate::error::ProxyError;
use crate::http::{Method, Request, Response};
use crate::rebalance::{
    keys_of_db, plan, plan_resync, show_names, show_tag_values, Backends, KeyId, Placement, Rebalance,
    RebalanceError, RebalanceOptions, StepOutcome,
};
use crate::results::{first_result, StatementResult};
use crate::route::{ReplicaSet, Route};
use crate::storage::Storage;
use crate::transport::{BackendAddr, Transport};
use crate::write_queue::Record;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

/// The move of one shard group, with what the proxy keeps about it.
pub struct GroupMove {
    pub(super) group: String,
    pub(super) rebalance: Rebalance,
    /// The backends that hold every key of the group whole until the move
    /// is verified (the old placement's members; for a resync the group
    /// without the replaced backend), and the fewest of them a key has
    /// (see "Reads during a move").
    pool: Vec<String>,
    fewest: usize,
    /// Some backend of `pool` also receives a copy (a removal, a larger
    /// replication factor): a regex `SELECT` over the cover could take a
    /// key's series from its partial copy, so it is refused until verified.
    pool_overlaps_copies: bool,
    /// Routing epoch -> the first request sequence number that routed with
    /// it (see the module doc).
    epochs: RefCell<BTreeMap<u64, u64>>,
    /// When the host loop should step it next (ms since the epoch).
    next_at: Cell<u64>,
    /// The last failure to save its state, for `/health`.
    pub(super) last_error: RefCell<Option<String>>,
}

/// The read pool saved next to a move's state (`rebalance/<group>.pool`,
/// JSON), so that a restarted proxy reads where the move started reading.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedPool {
    backends: Vec<String>,
    fewest: usize,
}

fn pool_path(group: &str) -> String {
    let state = crate::rebalance::state_path(group);
    format!("{}.pool", state.trim_end_matches(".state"))
}

impl GroupMove {
    fn new(group: &str, rebalance: Rebalance, pool: SavedPool, next_seq: u64) -> GroupMove {
        let epochs = BTreeMap::from([(rebalance.routing_epoch(), next_seq)]);
        let (_, added, _) = rebalance.owner_summary();
        let pool_overlaps_copies = pool.backends.iter().any(|b| added.contains(b));
        GroupMove {
            group: group.to_string(),
            rebalance,
            pool: pool.backends,
            fewest: pool.fewest.max(1),
            pool_overlaps_copies,
            epochs: RefCell::new(epochs),
            next_at: Cell::new(0),
            last_error: RefCell::new(None),
        }
    }

    /// Whether reads of the group must still avoid its new placement.
    pub(super) fn reads_moving(&self) -> bool {
        !self.rebalance.all_verified()
    }

    /// Whether a regex or multi-set `SELECT` over the whole group must be
    /// refused now (see [`GroupMove::pool_overlaps_copies`]).
    pub(super) fn refuses_cover_select(&self) -> bool {
        self.pool_overlaps_copies && self.reads_moving()
    }

    /// The backends (indices of `topo`) a read of the whole group asks while
    /// keys are not verified, and how many distinct ones (see the module
    /// doc); `None` once every key is verified.
    pub(super) fn read_pool(&self, topo: &Topology) -> Option<(Vec<usize>, usize)> {
        if !self.reads_moving() {
            return None;
        }
        let indices = indices_of(topo, &self.pool);
        let count = (indices.len() + 1).saturating_sub(self.fewest).clamp(1, indices.len().max(1));
        Some((indices, count))
    }

    fn note_epoch(&self, next_seq: u64) {
        let epoch = self.rebalance.routing_epoch();
        self.epochs.borrow_mut().entry(epoch).or_insert(next_seq);
    }
}

/// Names -> indices of `topo` (names it does not know are left out), sorted.
pub(super) fn indices_of(topo: &Topology, names: &[String]) -> ReplicaSet {
    let mut set: ReplicaSet = names.iter().filter_map(|n| topo.index_of(n)).collect();
    crate::sort::sort_unstable(&mut set);
    set.dedup();
    set
}

/// Write and query requests in flight, by sequence number, and the freeze
/// a reload that starts a move holds while it lists the keys.
#[derive(Default)]
pub(super) struct InFlight {
    next_seq: Cell<u64>,
    live: RefCell<BTreeMap<u64, usize>>,
    /// Woken whenever a request ends (a reload waiting for older ones).
    ended: RefCell<Vec<std::task::Waker>>,
    /// While true, new write and query requests wait before they take
    /// their topology ([`InFlight::unfrozen`]).
    frozen: Cell<bool>,
    /// Requests waiting for the freeze to end.
    thawed: RefCell<Vec<std::task::Waker>>,
}

/// Ends a request's time in flight when dropped.
pub(super) struct InFlightGuard<'a> {
    inflight: &'a InFlight,
    seq: u64,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        {
            let mut live = self.inflight.live.borrow_mut();
            if let Some(n) = live.get_mut(&self.seq) {
                *n -= 1;
                if *n == 0 {
                    live.remove(&self.seq);
                }
            }
        }
        for waker in self.inflight.ended.borrow_mut().drain(..) {
            waker.wake();
        }
    }
}

/// Ends a freeze when dropped (also when the reload fails or is dropped).
pub(super) struct FreezeGuard<'a>(&'a InFlight);

impl Drop for FreezeGuard<'_> {
    fn drop(&mut self) {
        self.0.frozen.set(false);
        for waker in self.0.thawed.borrow_mut().drain(..) {
            waker.wake();
        }
    }
}

impl InFlight {
    pub(super) fn start(&self) -> InFlightGuard<'_> {
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        *self.inflight_entry(seq) += 1;
        InFlightGuard { inflight: self, seq }
    }

    fn inflight_entry(&self, seq: u64) -> std::cell::RefMut<'_, usize> {
        std::cell::RefMut::map(self.live.borrow_mut(), |m| m.entry(seq).or_insert(0))
    }

    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq.get()
    }

    /// Completes once no freeze is held (at once when none is).
    pub(super) async fn unfrozen(&self) {
        std::future::poll_fn(|cx| {
            if self.frozen.get() {
                self.thawed.borrow_mut().push(cx.waker().clone());
                std::task::Poll::Pending
            } else {
                std::task::Poll::Ready(())
            }
        })
        .await
    }

    /// Freezes new requests and completes once every request that started
    /// before is done: from then on no request routes with the old
    /// topology and none has begun with it, so keys listed now are every
    /// key written so far.
    pub(super) async fn freeze(&self) -> FreezeGuard<'_> {
        self.frozen.set(true);
        let guard = FreezeGuard(self);
        let seq = self.next_seq.get();
        std::future::poll_fn(|cx| {
            if self.done_before(seq) {
                std::task::Poll::Ready(())
            } else {
                self.ended.borrow_mut().push(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await;
        guard
    }

    /// True when no request with a sequence number below `seq` is in flight.
    fn done_before(&self, seq: u64) -> bool {
        self.live.borrow().keys().next().is_none_or(|&first| first >= seq)
    }
}

/// [`Backends`] of one move over the proxy's transport and write queues.
struct MoveBackends<'a, T, S> {
    proxy: &'a Proxy<T, S>,
    mv: &'a GroupMove,
}

impl<T: Transport, S: Storage> Backends for MoveBackends<'_, T, S> {
    async fn query(&self, backend: &str, db: &str, q: &str) -> Result<StatementResult, String> {
        let topo = self.proxy.topology();
        let i = topo.index_of(backend).ok_or_else(|| format!("unknown backend {backend}"))?;
        self.proxy.ask_backend(&topo.backends[i], Some(db), q).await
    }

    async fn push(&self, backend: &str, record: &Record, now_ms: u64) -> Result<(), String> {
        let topo = self.proxy.topology();
        let i = topo.index_of(backend).ok_or_else(|| format!("unknown backend {backend}"))?;
        topo.states[i].queue.push(&self.proxy.storage, record, now_ms).await.map_err(|e| e.to_string())
    }

    async fn send(&self, backend: &str, record: &Record) -> Result<(), String> {
        let topo = self.proxy.topology();
        let i = topo.index_of(backend).ok_or_else(|| format!("unknown backend {backend}"))?;
        let addr = &topo.backends[i];
        let sent = self.proxy.send_record(i, record).await;
        match sent.outcome {
            Ok(r) if (200..300).contains(&r.status) => {
                if let Some(e) = super::statement_error(record, &r) {
                    return Err(e);
                }
                if let Record::Write { body, .. } = record {
                    self.proxy.metrics.written(&addr.name, super::count_lines(body), body.len() as u64);
                }
                Ok(())
            }
            Ok(r) => Err(format!("HTTP {}: {}", r.status, super::error_message(&r))),
            Err(e) => Err(e.to_string()),
        }
    }

    fn is_healthy(&self, backend: &str) -> bool {
        let topo = self.proxy.topology();
        topo.index_of(backend).is_some_and(|i| topo.states[i].health.borrow().is_healthy())
    }

    fn queue_is_empty(&self, backend: &str) -> bool {
        let topo = self.proxy.topology();
        topo.index_of(backend).is_some_and(|i| topo.states[i].queue.is_empty())
    }

    fn requests_done_before(&self, epoch: u64) -> bool {
        let epochs = self.mv.epochs.borrow();
        let seq = match epochs.get(&epoch) {
            Some(&seq) => seq,
            // Older than the move in this process: requests before it started.
            None => match epochs.iter().next() {
                Some((&first, &seq)) if epoch <= first => seq,
                _ => return false,
            },
        };
        self.proxy.inflight.done_before(seq)
    }
}

impl<T: Transport, S: Storage> Proxy<T, S> {
    /// The options of a move from the configuration.
    pub(super) fn move_options(config: &crate::config::Config) -> RebalanceOptions {
        RebalanceOptions {
            single_writer: config.rebalance_single_writer,
            points_per_chunk: config.rebalance_points_per_chunk,
            points_per_s: config.rebalance_points_per_s,
            ..RebalanceOptions::default()
        }
    }

    /// One statement `q` asked of `addr` (`epoch=ns`), its first result.
    /// Error: no answer, a non-2xx, an unreadable answer (one line).
    pub(super) async fn ask_backend(
        &self,
        addr: &BackendAddr,
        db: Option<&str>,
        q: &str,
    ) -> Result<StatementResult, String> {
        let mut form = vec![("q".to_string(), q.to_string()), ("epoch".to_string(), "ns".to_string())];
        if let Some(db) = db {
            form.push(("db".into(), db.to_string()));
        }
        let mut request = Request::new(Method::Post, "/query");
        request.headers.push(("content-type".into(), "application/x-www-form-urlencoded".into()));
        request.body = crate::http::encode_params(&form).into_bytes();
        match self.transport.send(addr, request).await {
            Ok(r) if (200..300).contains(&r.status) => first_result(&r.body),
            Ok(r) => Err(format!("HTTP {}: {}", r.status, super::error_message(&r))),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The shard keys of group `group` held anywhere on `addrs`: every
    /// database's measurements routed to the group (and, with a shard tag,
    /// their tag values). Error: a backend that cannot be asked (a key
    /// missed there would be lost).
    async fn discover_keys(
        &self,
        addrs: &[BackendAddr],
        router: &crate::route::Router,
        group: &str,
        shard_tag: Option<&str>,
    ) -> Result<BTreeSet<KeyId>, String> {
        let mut keys = BTreeSet::new();
        for addr in addrs {
            let fail = |e: String| format!("cannot list the keys of backend {}: {e}", addr.name);
            let dbs = show_names(&self.ask_backend(addr, None, "SHOW DATABASES").await.map_err(fail)?)
                .map_err(fail)?;
            for db in dbs.iter().filter(|d| *d != "_internal") {
                let ms =
                    show_names(&self.ask_backend(addr, Some(db), "SHOW MEASUREMENTS").await.map_err(fail)?)
                        .map_err(fail)?;
                let ms: Vec<String> = ms
                    .into_iter()
                    .filter(|m| matches!(router.route(m), Some(Route::Group(g)) if g.name() == group))
                    .collect();
                if ms.is_empty() {
                    continue;
                }
                let tags = match shard_tag {
                    Some(tag) => {
                        let q = format!("SHOW TAG VALUES WITH KEY = {}", crate::rebalance::quote_ident(tag));
                        let pairs =
                            show_tag_values(&self.ask_backend(addr, Some(db), &q).await.map_err(fail)?)
                                .map_err(fail)?;
                        Some(pairs.into_iter().filter(|(m, _)| ms.contains(m)).collect::<Vec<_>>())
                    }
                    None => None,
                };
                keys_of_db(db, &ms, tags.as_deref(), &mut keys);
            }
        }
        Ok(keys)
    }

    /// For a reload from `old` to `new` (router `router` over the stable
    /// names): starts a move for each group in use whose backends or
    /// replication factor changed, and returns the moves the new topology
    /// has (carried over and started) with one change line per move. Error
    /// (one line, nothing started... except moves already written, which a
    /// restart resumes): not single writer, a move still in progress, a
    /// backend that cannot list its keys, the state file.
    pub(super) async fn moves_for_reload(
        &self,
        old: &Topology,
        new: &crate::config::Config,
        router: &crate::route::Router,
        new_addrs: &[BackendAddr],
    ) -> Result<(BTreeMap<String, Rc<GroupMove>>, Vec<String>, Option<FreezeGuard<'_>>), String> {
        use crate::route::Keymap;
        let mut moves = BTreeMap::new();
        let mut changes = Vec::new();
        let mut starts = Vec::new();
        for (name, after) in &new.shard_groups {
            let Some(before) = old.config.shard_groups.get(name) else { continue };
            let used = old.config.keymaps.values().any(|k| matches!(k, Keymap::Group(g) if g == name));
            let mut a = before.backends.clone();
            let mut b = after.backends.clone();
            crate::sort::sort_unstable(&mut a);
            crate::sort::sort_unstable(&mut b);
            if !used || (a == b && before.replication_factor == after.replication_factor) {
                if let Some(mv) = old.moves.get(name) {
                    moves.insert(name.clone(), mv.clone());
                }
                continue;
            }
            if !new.rebalance_single_writer {
                return Err(format!(
                    "$.shard_groups.{name}: {}",
                    RebalanceError::NotSingleWriter(name.clone())
                ) + " (rebalance_single_writer: true)");
            }
            if old.moves.get(name).is_some_and(|mv| mv.reads_moving()) {
                return Err(format!(
                    "$.shard_groups.{name}: {}; wait until it is verified (/health)",
                    RebalanceError::Busy(name.clone())
                ));
            }
            starts.push((name.clone(), before.clone(), after.clone()));
        }
        // Writes and queries wait while the keys are listed and the move is
        // installed, so that no key is first written in between (it would
        // land on its old owners only and not be moved).
        let freeze = if starts.is_empty() { None } else { Some(self.inflight.freeze().await) };
        // First every group's keys are listed and planned (a backend that
        // does not answer refuses the reload before anything is saved), then
        // the moves are saved; a save that fails takes back the ones saved
        // before it, so a refused reload leaves no move behind.
        let mut planned = Vec::with_capacity(starts.len());
        for (name, before, after) in starts {
            // Every backend that may hold a key: old and new members.
            let mut members: BTreeSet<String> = before.backends.iter().cloned().collect();
            members.extend(after.backends.iter().cloned());
            let addrs: Vec<BackendAddr> = members
                .iter()
                .filter_map(|m| {
                    new_addrs
                        .iter()
                        .find(|a| &a.name == m)
                        .or_else(|| old.backends.iter().find(|a| &a.name == m))
                        .cloned()
                })
                .collect();
            let keys = self.discover_keys(&addrs, router, &name, after.shard_tag.as_deref()).await?;
            let old_names: Vec<&str> = before.backends.iter().map(String::as_str).collect();
            let new_names: Vec<&str> = after.backends.iter().map(String::as_str).collect();
            let key_moves = plan(
                Placement { backends: &old_names, replication_factor: before.replication_factor },
                Placement { backends: &new_names, replication_factor: after.replication_factor },
                &keys,
            );
            planned.push((name, before, after, key_moves, keys.len()));
        }
        let mut saved: Vec<String> = Vec::new();
        for (name, before, after, key_moves, total) in planned {
            let n = key_moves.len();
            let pool = SavedPool { backends: before.backends.clone(), fewest: before.replication_factor };
            let started = match self.save_pool(&name, &pool).await {
                Ok(()) => Rebalance::start(
                    &self.storage,
                    &name,
                    after.shard_tag.as_deref(),
                    key_moves,
                    Self::move_options(new),
                )
                .await
                .map_err(|e| format!("$.shard_groups.{name}: {e}")),
                Err(e) => Err(e),
            };
            let rebalance = match started {
                Ok(rebalance) => rebalance,
                Err(e) => {
                    saved.push(name);
                    for group in &saved {
                        let _ = self.storage.remove(&crate::rebalance::state_path(group)).await;
                        let _ = self.storage.remove(&pool_path(group)).await;
                    }
                    return Err(e);
                }
            };
            saved.push(name.clone());
            changes.push(format!("shard group {name}: moving {n} of {total} keys"));
            moves.insert(
                name.clone(),
                Rc::new(GroupMove::new(&name, rebalance, pool, self.inflight.next_seq())),
            );
        }
        Ok((moves, changes, freeze))
    }

    /// Saves the read pool of a move about to start (before its state).
    async fn save_pool(&self, group: &str, pool: &SavedPool) -> Result<(), String> {
        // `list` creates the directory (write_atomic needs it).
        let _ = self.storage.list("rebalance").await;
        let bytes = serde_json::to_vec(pool).map_err(|e| e.to_string())?;
        self.storage
            .write_atomic(&pool_path(group), &bytes)
            .await
            .map_err(|e| format!("shard group {group:?}: {}: {e}", pool_path(group)))
    }

    /// At start: the moves saved in the storage for the groups in use.
    /// Error (the proxy does not start): a damaged state file, or a move with
    /// keys not yet verified while `rebalance_single_writer` is not set.
    pub(super) async fn open_moves(
        storage: &S,
        config: &crate::config::Config,
    ) -> Result<BTreeMap<String, Rc<GroupMove>>, String> {
        let mut moves = BTreeMap::new();
        for name in config.shard_groups.keys() {
            let options = Self::move_options(config);
            let opened = match Rebalance::open(storage, name, options.clone()).await {
                Err(RebalanceError::NotSingleWriter(_)) => {
                    // A finished move needs no single writer any more.
                    let forced = RebalanceOptions { single_writer: true, ..options };
                    match Rebalance::open(storage, name, forced).await {
                        Ok(Some(r)) if r.all_verified() => Some(r),
                        Ok(None) => None,
                        _ => {
                            return Err(format!(
                                "shard group {name:?}: {}",
                                RebalanceError::NotSingleWriter(name.clone())
                            ))
                        }
                    }
                }
                Err(e) => return Err(format!("shard group {name:?}: {e}")),
                Ok(r) => r,
            };
            if let Some(rebalance) = opened {
                let pool = match storage.read(&pool_path(name)).await {
                    Ok(bytes) => serde_json::from_slice::<SavedPool>(&bytes)
                        .map_err(|e| format!("shard group {name:?}: {}: {e}", pool_path(name)))?,
                    // Written before the state file: missing only if the
                    // state is from a version without it; the moving keys'
                    // old owners then.
                    Err(_) => {
                        let (old, _, fewest) = rebalance.owner_summary();
                        SavedPool { backends: old.into_iter().collect(), fewest }
                    }
                };
                moves.insert(name.clone(), Rc::new(GroupMove::new(name, rebalance, pool, 0)));
            }
        }
        Ok(moves)
    }

    /// One step of every move that is due (the host's move loop,
    /// [`crate::host::run_moves`]); returns when to call again (ms since the
    /// epoch).
    pub async fn step_moves(&self, now_ms: u64) -> u64 {
        let topo = self.topology();
        let mut next = u64::MAX;
        for mv in topo.moves.values() {
            if mv.next_at.get() <= now_ms {
                let backends = MoveBackends { proxy: self, mv };
                let at = match mv.rebalance.step(&backends, &self.storage, now_ms).await {
                    Ok(StepOutcome::Again { at_ms }) => at_ms,
                    Ok(StepOutcome::Idle) => now_ms.saturating_add(1000),
                    Err(e) => {
                        let line = format!("shard group {}: move: {e}", mv.group);
                        self.log(&line);
                        *mv.last_error.borrow_mut() = Some(line);
                        now_ms.saturating_add(1000)
                    }
                };
                mv.note_epoch(self.inflight.next_seq());
                mv.next_at.set(at);
            }
            next = next.min(mv.next_at.get());
        }
        next
    }

    /// Saves every move's progress not yet in its state file (at shutdown).
    pub async fn flush_moves(&self) {
        let topo = self.topology();
        for mv in topo.moves.values() {
            if let Err(e) = mv.rebalance.flush(&self.storage).await {
                self.log(&format!("shard group {}: saving the move: {e}", mv.group));
            }
        }
    }

    /// Records a restart of the move loop (supervised by the host).
    pub fn record_move_loop_restart(&self, reason: &str) {
        self.move_loop_restarts.set(self.move_loop_restarts.get() + 1);
        self.log(&format!("move loop restarted {reason}"));
        *self.last_move_loop_error.borrow_mut() = Some(format!("move loop restarted {reason}"));
    }

    /// Whether some move still writes to backend `name` (it must not leave).
    pub(super) fn moves_write_to(&self, name: &str) -> bool {
        self.topology().moves.values().any(|mv| mv.rebalance.writes_to(name))
    }

    /// The per-group progress for `/health`.
    pub(super) fn moves_health(&self) -> Vec<serde_json::Value> {
        let topo = self.topology();
        topo.moves
            .values()
            .map(|mv| {
                let p = mv.rebalance.progress();
                let state = if p.keys_moving > 0 {
                    "moving"
                } else if p.keys > 0 && p.keys_cleaned == p.keys {
                    "cleaned"
                } else {
                    "verified"
                };
                serde_json::json!({
                    "group": mv.group,
                    "state": state,
                    "keys": p.keys,
                    "keys_moving": p.keys_moving,
                    "keys_copied": p.keys_copied,
                    "keys_verified": p.keys_verified,
                    "keys_cleaned": p.keys_cleaned,
                    "points_copied": p.points_copied,
                    "errors": p.errors,
                    "last_error": p.last_error.or_else(|| mv.last_error.borrow().clone()),
                })
            })
            .collect()
    }

    /// The per-group progress for `/metrics` (OpenMetrics lines).
    pub(super) fn moves_metrics(&self) -> String {
        let topo = self.topology();
        let mut out = String::new();
        if topo.moves.is_empty() {
            return out;
        }
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        out.push_str("# TYPE influx_proxy_rebalance_keys gauge\n");
        out.push_str("# HELP influx_proxy_rebalance_keys Keys of a shard group's move, by state.\n");
        let progress: Vec<_> = topo.moves.values().map(|mv| mv.rebalance.progress()).collect();
        for p in &progress {
            for (state, n) in [
                ("moving", p.keys_moving),
                ("copied", p.keys_copied),
                ("verified", p.keys_verified),
                ("cleaned", p.keys_cleaned),
            ] {
                out.push_str(&format!(
                    "influx_proxy_rebalance_keys{{group=\"{}\",state=\"{state}\"}} {n}\n",
                    esc(&p.group)
                ));
            }
        }
        out.push_str("# TYPE influx_proxy_rebalance_points_copied counter\n");
        out.push_str("# HELP influx_proxy_rebalance_points_copied Points copied by a shard group's move.\n");
        for p in &progress {
            out.push_str(&format!(
                "influx_proxy_rebalance_points_copied_total{{group=\"{}\"}} {}\n",
                esc(&p.group),
                p.points_copied
            ));
        }
        out.push_str("# TYPE influx_proxy_rebalance_errors counter\n");
        out.push_str(
            "# HELP influx_proxy_rebalance_errors Failed steps of a shard group's move (retried).\n",
        );
        for p in &progress {
            out.push_str(&format!(
                "influx_proxy_rebalance_errors_total{{group=\"{}\"}} {}\n",
                esc(&p.group),
                p.errors
            ));
        }
        out
    }

    /// `POST /cleanup?group=g` (loopback only): deletes the old copies of a
    /// verified move ([`Rebalance::cleanup`]). 400 when the group has no
    /// move or keys are still moving.
    pub(super) async fn cleanup_endpoint(&self, request: &Request) -> Result<Response, ProxyError> {
        super::allow(request, &[Method::Post])?;
        loopback_only(request, "/cleanup")?;
        let group = request
            .param("group")
            .ok_or_else(|| ProxyError::BadRequest("missing required parameter \"group\"".into()))?;
        let topo = self.topology();
        let mv = topo
            .moves
            .get(group)
            .ok_or_else(|| ProxyError::BadRequest(format!("shard group {group:?} has no move")))?;
        if mv.reads_moving() {
            return Err(ProxyError::BadRequest(format!(
                "shard group {group:?}: keys are still moving; cleanup deletes old copies only once every key is verified (/health)"
            )));
        }
        let n = mv.rebalance.cleanup(&self.storage).await.map_err(|e| ProxyError::Internal(e.to_string()))?;
        mv.note_epoch(self.inflight.next_seq());
        mv.next_at.set(0);
        self.log(&format!("shard group {group}: cleanup of {n} keys requested"));
        json_answer(&serde_json::json!({ "group": group, "keys": n }))
    }

    /// `POST /resync?backend=b` (loopback only): refills `b` (a new empty
    /// server under the same name, or one that lost its data) from its
    /// replicas in every group in use that has it ([`plan_resync`]); until a
    /// key is verified its reads skip `b`. 400: unknown backend, in no
    /// group, not single writer, a move in progress, a backend that cannot
    /// list its keys.
    pub(super) async fn resync_endpoint(&self, request: &Request) -> Result<Response, ProxyError> {
        use crate::route::Keymap;
        super::allow(request, &[Method::Post])?;
        loopback_only(request, "/resync")?;
        let backend = request
            .param("backend")
            .ok_or_else(|| ProxyError::BadRequest("missing required parameter \"backend\"".into()))?
            .to_string();
        let _one_at_a_time = self.reloads.lock().await;
        let topo = self.topology();
        let config = &topo.config;
        let groups: Vec<(String, crate::config::ShardGroupConfig)> = config
            .shard_groups
            .iter()
            .filter(|(name, g)| {
                g.backends.contains(&backend)
                    && config.keymaps.values().any(|k| matches!(k, Keymap::Group(n) if n == *name))
            })
            .map(|(n, g)| (n.clone(), g.clone()))
            .collect();
        if groups.is_empty() {
            return Err(ProxyError::BadRequest(format!("backend {backend:?} is in no shard group in use")));
        }
        if !config.rebalance_single_writer {
            return Err(ProxyError::BadRequest(format!(
                "{} (rebalance_single_writer: true)",
                RebalanceError::NotSingleWriter(groups[0].0.clone())
            )));
        }
        for (name, _) in &groups {
            if topo.moves.get(name).is_some_and(|mv| mv.reads_moving()) {
                return Err(ProxyError::BadRequest(RebalanceError::Busy(name.clone()).to_string()));
            }
        }
        let mut moves = topo.moves.clone();
        let mut report = Vec::new();
        for (name, g) in &groups {
            let addrs: Vec<BackendAddr> = g
                .backends
                .iter()
                .filter_map(|m| topo.index_of(m).map(|i| topo.backends[i].clone()))
                .collect();
            let keys = self
                .discover_keys(&addrs, &topo.router, name, g.shard_tag.as_deref())
                .await
                .map_err(ProxyError::BadRequest)?;
            let names: Vec<&str> = g.backends.iter().map(String::as_str).collect();
            let key_moves = plan_resync(
                Placement { backends: &names, replication_factor: g.replication_factor },
                &backend,
                &keys,
            );
            let n = key_moves.len();
            let pool = SavedPool {
                backends: g.backends.iter().filter(|b| **b != backend).cloned().collect(),
                fewest: g.replication_factor.saturating_sub(1),
            };
            self.save_pool(name, &pool).await.map_err(ProxyError::BadRequest)?;
            let rebalance = Rebalance::start(
                &self.storage,
                name,
                g.shard_tag.as_deref(),
                key_moves,
                Self::move_options(config),
            )
            .await
            .map_err(|e| ProxyError::BadRequest(e.to_string()))?;
            moves.insert(
                name.clone(),
                Rc::new(GroupMove::new(name, rebalance, pool, self.inflight.next_seq())),
            );
            report.push(serde_json::json!({ "group": name, "keys": n }));
            self.log(&format!("shard group {name}: resync of backend {backend}: {n} keys"));
        }
        self.install_moves(&topo, moves);
        json_answer(&serde_json::json!({ "backend": backend, "groups": report }))
    }
}

/// 403 unless the peer is on a loopback address.
fn loopback_only(request: &Request, path: &str) -> Result<(), ProxyError> {
    if super::is_loopback(request.peer) {
        Ok(())
    } else {
        Err(ProxyError::Forbidden(format!("{path} is answered only to clients on a loopback address")))
    }
}

fn json_answer(value: &serde_json::Value) -> Result<Response, ProxyError> {
    let mut bytes = serde_json::to_vec(value).map_err(|e| ProxyError::Internal(e.to_string()))?;
    bytes.push(b'\n');
    Ok(Response::json(200, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_in_flight_hold_back_only_the_epochs_noted_after_they_started() {
        let inflight = InFlight::default();
        let first = inflight.start();
        let noted = inflight.next_seq();
        // A request that started before the epoch was noted is still in flight.
        assert!(!inflight.done_before(noted));
        let later = inflight.start();
        drop(first);
        // Only a request that started after it remains: the epoch is clear.
        assert!(inflight.done_before(noted));
        assert!(!inflight.done_before(inflight.next_seq()));
        drop(later);
        assert!(inflight.done_before(inflight.next_seq()));
    }

    #[test]
    fn a_freeze_lets_running_requests_finish_and_holds_new_ones_until_it_ends() {
        use futures_lite::future::{block_on, poll_once};
        let inflight = InFlight::default();
        let running = inflight.start();
        let mut freeze = Box::pin(inflight.freeze());
        assert!(block_on(poll_once(&mut freeze)).is_none(), "waits for the running request");
        let mut newcomer = Box::pin(inflight.unfrozen());
        assert!(block_on(poll_once(&mut newcomer)).is_none(), "a new request waits");
        drop(running);
        let guard = block_on(poll_once(&mut freeze)).expect("the running request ended");
        assert!(block_on(poll_once(&mut newcomer)).is_none(), "still frozen");
        drop(guard);
        assert!(block_on(poll_once(&mut newcomer)).is_some(), "the freeze ended");
    }
}
