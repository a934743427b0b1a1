//! Host support shared by every host: the background loops of a [`Proxy`]
//! (health checks and replay of each backend's write queue), their constants
//! and their supervision, written once. Part of the core: this module performs
//! no IO and reads no clock itself.
//!
//! # Design
//!
//! A host (the native smol server in `crate::native`, the WASI component in
//! `wasm/`) implements only the primitives of [`Host`]: sleeping, the wall
//! clock (`now_ms`, ms since the Unix epoch, passed to the core's functions),
//! a monotonic clock (`monotonic_us`, also given to the proxy with
//! [`Proxy::set_clock`] for the duration histograms), and whether to stop.
//! Then it runs [`run_backend_loops`], which asks the proxy which loops to
//! start ([`Proxy::claim_loops`]: at start every backend's health-check and
//! replay loop, after a reload those of each backend added) and has the host
//! spawn each, [`run_loop`], on its executor. A backend removed by a reload
//! keeps its loops until its write queue is delivered
//! ([`Proxy::retire_if_drained`]); then they end. Both loops drive the core only through
//! [`Proxy::check_health`] and [`Proxy::replay_step`]; their timing rules
//! (every `health_check_interval_ms`; replay at once after progress, after
//! [`REPLAY_IDLE_MS`] when the queue is empty, after the step's backoff when
//! delivery failed) live here and nowhere else.
//!
//! # Supervision
//!
//! Each loop runs under [`supervise`]: if the loop's future returns while the
//! host is not stopping, or panics, the event is recorded with
//! [`Proxy::record_loop_restart`] (visible in `/health` as the backend's
//! `last_error`, e.g. `replay loop restarted after panic: ...`, and
//! `loop_restarts`; in `/metrics` as
//! `influx_proxy_loop_restarts_total{loop,backend}`) and the loop is started
//! again after a backoff ([`RESTART_BACKOFF_MIN_MS`], doubling up to
//! [`RESTART_BACKOFF_MAX_MS`], back to the minimum once a loop ran
//! [`RESTART_RESET_AFTER_MS`] without incident). A panic is caught with
//! `catch_unwind` around the loop's future, so the step in progress is
//! dropped and the next run starts from the state the core keeps:
//!
//! - `RefCell` borrows and `async_lock` guards held across the panic are
//!   released while unwinding (neither poisons), so the proxy stays usable.
//! - Replay state is in the write queue, not in the loop: a record whose
//!   delivery panicked was only peeked, so it is delivered on the next run
//!   (at least once, as always), and the restart counts as a failed
//!   attempt of that record for the replay policy (`replay_max_attempts`),
//!   so a record that makes every attempt panic is dead-lettered rather than
//!   restarting the loop forever. A panic inside a queue operation between
//!   its storage calls may leave that queue's in-memory view and its files
//!   apart; the queue's recovery rules then apply at the next start.
//!
//! On wasm32 (`panic=abort`) a panic ends the component whatever catches it:
//! there the defence is that nothing in the core or the hosts panics on any
//! input (nothing read from the network is unwrapped, the request and
//! response heads go through guards), and the supervisor still restarts a
//! loop that returns.
//!
//! # Using every CPU core (natively)
//!
//! [`Proxy`] is single-threaded (`Rc`, `RefCell`, `Cell`): today the native
//! host runs one proxy on one `LocalExecutor` thread, and only the per-line
//! CPU of writes (decoding and validating a body, [`crate::validated_body`])
//! runs on other cores, on the native host's worker threads
//! (`crate::native::WorkerPool`); the WASI host runs it inline. Nothing here assumes
//! a single thread beyond that: a [`Host`] is per executor, and the loops
//! take `&Proxy`. The intended way to use N cores is one proxy per thread,
//! each with its own executor, transport (connection pool) and `Host`, all
//! accepting on the same port through `SO_REUSEPORT` listeners (the kernel
//! spreads connections). What must change is ownership of the write queues:
//! a queue's files must have exactly one writer. Either
//!
//! - **per-backend queue ownership:** backend *i*'s queue (its appends,
//!   acknowledgements and its replay loop) belongs to thread *i mod N*; other
//!   threads deliver directly while the owner reports the queue empty and
//!   the backend up (a shared atomic), and otherwise hand the record to the
//!   owner over a channel and wait for its "durable" answer before 204; or
//! - **a shared queue owner:** one thread owns every queue and runs every
//!   replay loop, the others send it appends.
//!
//! Either way health state is per thread or shared through atomics, the
//! metrics registry is already thread-safe (`prometheus-client` families are
//! `Arc`s) and would be shared, and `run_replay` runs only on the owner's
//! thread while `run_health_checks` may run everywhere or on the owner with
//! the result published. This module's API stays as it is.

use crate::proxy::{Proxy, ReplayStep};
use crate::storage::Storage;
use crate::transport::Transport;
use futures_lite::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;

/// How long replay waits when a backend's write queue is empty, in ms.
pub const REPLAY_IDLE_MS: u64 = 50;
/// The first wait before a loop that ended or panicked is started again, in ms.
pub const RESTART_BACKOFF_MIN_MS: u64 = 500;
/// The longest wait between restarts of a loop that keeps failing, in ms.
pub const RESTART_BACKOFF_MAX_MS: u64 = 30_000;
/// A loop that ran this long (ms, monotonic) before failing restarts after
/// [`RESTART_BACKOFF_MIN_MS`] again.
pub const RESTART_RESET_AFTER_MS: u64 = 60_000;

/// The longest the loop starter ([`run_backend_loops`]) waits between two
/// looks at the loops wanted, in ms (it is woken at once by a reload; this
/// bounds how late it notices the host stopping).
pub const LOOP_STARTER_POLL_MS: u64 = 1000;

/// Which background loop of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopKind {
    /// [`run_health_checks`]: `GET /ping` every `health_check_interval_ms`.
    HealthCheck,
    /// [`run_replay`]: delivering the backend's write queue.
    Replay,
}

impl LoopKind {
    /// The name in messages: `health-check`, `replay`.
    pub fn name(self) -> &'static str {
        match self {
            LoopKind::HealthCheck => "health-check",
            LoopKind::Replay => "replay",
        }
    }

    /// The value of the `loop` label in `/metrics`: `health_check`, `replay`.
    pub fn label(self) -> &'static str {
        match self {
            LoopKind::HealthCheck => "health_check",
            LoopKind::Replay => "replay",
        }
    }
}

/// What a host provides to the background loops: primitives only.
///
/// Single-threaded like [`Proxy`]: the futures need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait Host {
    /// The wall clock: ms since the Unix epoch (0 before 1970). Passed to the
    /// core as `now_ms`.
    fn now_ms(&self) -> u64;
    /// A monotonic clock: µs since a fixed origin, never going back.
    fn monotonic_us(&self) -> u64;
    /// Sleeps `ms` milliseconds. May return early once [`Host::stopping`]
    /// is true (the loops check it after each sleep).
    async fn sleep(&self, ms: u64);
    /// Whether the loops should end (the host is shutting down). A step in
    /// progress is finished, not cancelled; a host that never stops returns
    /// false.
    fn stopping(&self) -> bool;
}

/// Health checks of backend `backend` (index), supervised ([`supervise`]):
/// one [`Proxy::check_health`] every `health_check_interval_ms`, until the
/// host stops.
pub async fn run_health_checks<T: Transport, S: Storage, H: Host>(
    host: &H,
    proxy: &Proxy<T, S>,
    backend: usize,
) {
    supervise(host, proxy, LoopKind::HealthCheck, backend, || health_check_loop(host, proxy, backend)).await
}

/// Replay of backend `backend`'s write queue, supervised ([`supervise`]),
/// until the host stops.
pub async fn run_replay<T: Transport, S: Storage, H: Host>(host: &H, proxy: &Proxy<T, S>, backend: usize) {
    supervise(host, proxy, LoopKind::Replay, backend, || replay_loop(host, proxy, backend)).await
}

/// The health-check loop, unsupervised: check, sleep the interval (read
/// again each time: a reload may change it), until the host stops or the
/// backend has left ([`Proxy::runs_loops`]).
pub async fn health_check_loop<T: Transport, S: Storage, H: Host>(
    host: &H,
    proxy: &Proxy<T, S>,
    backend: usize,
) {
    while !host.stopping() && proxy.runs_loops(backend) {
        proxy.check_health(backend, host.now_ms()).await;
        host.sleep(proxy.topology().config().health_check_interval_ms).await;
    }
}

/// The replay loop, unsupervised: one [`Proxy::replay_step`] after another,
/// waiting as the step says, until the host stops or the backend has left
/// (removed by a reload, checked whenever its queue is empty:
/// [`Proxy::retire_if_drained`]).
pub async fn replay_loop<T: Transport, S: Storage, H: Host>(host: &H, proxy: &Proxy<T, S>, backend: usize) {
    while !host.stopping() && proxy.runs_loops(backend) {
        match proxy.replay_step(backend, host.now_ms()).await {
            // Let requests run between deliveries.
            ReplayStep::Progress => futures_lite::future::yield_now().await,
            ReplayStep::Idle => {
                if proxy.retire_if_drained(backend) {
                    return;
                }
                host.sleep(REPLAY_IDLE_MS).await
            }
            ReplayStep::RetryAfter(ms) => host.sleep(ms).await,
        }
    }
}

/// Runs loop `kind` of backend `backend` (supervised: [`run_health_checks`]
/// or [`run_replay`]) as handed out by [`Proxy::claim_loops`], and tells the
/// proxy when it has returned ([`Proxy::loop_ended`], also if it panics), so
/// that it can be started again if the backend is added back.
pub async fn run_loop<T: Transport, S: Storage, H: Host>(
    host: &H,
    proxy: &Proxy<T, S>,
    backend: usize,
    kind: LoopKind,
) {
    struct Ended<'a, T: Transport, S: Storage>(&'a Proxy<T, S>, usize, LoopKind);
    impl<T: Transport, S: Storage> Drop for Ended<'_, T, S> {
        fn drop(&mut self) {
            self.0.loop_ended(self.1, self.2);
        }
    }
    let _ended = Ended(proxy, backend, kind);
    match kind {
        LoopKind::HealthCheck => run_health_checks(host, proxy, backend).await,
        LoopKind::Replay => run_replay(host, proxy, backend).await,
    }
}

/// The host's loop starter: until the host stops, hands every loop the proxy
/// wants started ([`Proxy::claim_loops`]) to `spawn(backend, kind)`, which
/// must spawn [`run_loop`] for it on the host's executor; then waits for a
/// reload to add a backend ([`Proxy::loops_wanted`], or at most
/// [`LOOP_STARTER_POLL_MS`]). Run it once per proxy, as its own task.
pub async fn run_backend_loops<T, S, H, F>(host: &H, proxy: &Proxy<T, S>, mut spawn: F)
where
    T: Transport,
    S: Storage,
    H: Host,
    F: FnMut(usize, LoopKind),
{
    let starter = async {
        while !host.stopping() {
            for (backend, kind) in proxy.claim_loops() {
                spawn(backend, kind);
            }
            proxy.loops_wanted().or(host.sleep(LOOP_STARTER_POLL_MS)).await;
        }
    };
    futures_lite::future::zip(starter, run_moves(host, proxy)).await;
}

/// The longest the move loop sleeps between two looks at the moves, in ms
/// (a move started by a reload or `/resync` is stepped within this).
pub const MOVE_POLL_MS: u64 = 200;

/// The move loop ([`run_backend_loops`] runs it next to the loop starter):
/// steps the shard groups' moves ([`Proxy::step_moves`], each group at the
/// time its last step asked for: its rate limit, backoff or wait), sleeping
/// in between, until the host stops; then saves their progress
/// ([`Proxy::flush_moves`]). Supervised like the backends' loops: if it
/// returns early or panics it is restarted after a backoff, recorded with
/// [`Proxy::record_move_loop_restart`] (`/health` `move_loop_restarts`). A
/// step dropped by a panic is redone from the durable state (harmless, see
/// `crate::rebalance`).
pub async fn run_moves<T: Transport, S: Storage, H: Host>(host: &H, proxy: &Proxy<T, S>) {
    restart_until(
        host,
        || host.stopping(),
        |reason| proxy.record_move_loop_restart(reason),
        || move_loop(host, proxy),
    )
    .await;
    proxy.flush_moves().await;
}

/// The move loop, unsupervised.
async fn move_loop<T: Transport, S: Storage, H: Host>(host: &H, proxy: &Proxy<T, S>) {
    while !host.stopping() {
        let next = proxy.step_moves(host.now_ms()).await;
        let wait = next.saturating_sub(host.now_ms()).min(MOVE_POLL_MS);
        if wait == 0 {
            futures_lite::future::yield_now().await;
        } else {
            host.sleep(wait).await;
        }
    }
}

/// Runs the loop made by `start` until the host stops; restarts it (after a
/// backoff, see the module doc) whenever it returns early or panics, and
/// records each restart with [`Proxy::record_loop_restart`]. Returns once the
/// host is stopping (or the backend has left, [`Proxy::runs_loops`]) and the
/// loop has returned (or panicked).
pub async fn supervise<T, S, H, F, L>(host: &H, proxy: &Proxy<T, S>, kind: LoopKind, backend: usize, start: F)
where
    T: Transport,
    S: Storage,
    H: Host,
    F: FnMut() -> L,
    L: Future<Output = ()>,
{
    restart_until(
        host,
        || host.stopping() || !proxy.runs_loops(backend),
        |reason| proxy.record_loop_restart(kind, backend, reason, host.now_ms()),
        start,
    )
    .await
}

/// The restart bookkeeping of [`supervise`] and [`run_moves`]: runs the loop
/// made by `start` until, after it returns (or panics), `done()`; else
/// `restarted(reason)` records the restart (`after it ended`, `after panic:
/// ...`) and the loop is started again after a backoff (module doc), unless
/// `done()` by then.
async fn restart_until<H, D, R, F, L>(host: &H, done: D, mut restarted: R, mut start: F)
where
    H: Host,
    D: Fn() -> bool,
    R: FnMut(&str),
    F: FnMut() -> L,
    L: Future<Output = ()>,
{
    let mut backoff_ms = RESTART_BACKOFF_MIN_MS;
    loop {
        let started_us = host.monotonic_us();
        let outcome = AssertUnwindSafe(start()).catch_unwind().await;
        if done() {
            return;
        }
        let reason = match outcome {
            Ok(()) => "after it ended".to_string(),
            Err(payload) => format!("after panic: {}", panic_message(payload.as_ref())),
        };
        restarted(&reason);
        if host.monotonic_us().saturating_sub(started_us) >= RESTART_RESET_AFTER_MS * 1000 {
            backoff_ms = RESTART_BACKOFF_MIN_MS;
        }
        host.sleep(backoff_ms).await;
        if done() {
            return;
        }
        backoff_ms = backoff_ms.saturating_mul(2).min(RESTART_BACKOFF_MAX_MS);
    }
}

/// The message of a panic payload (`panic!("...")` gives a `&str` or a
/// `String`), else `"non-string panic payload"`.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

#[cfg(test)]
mod tests;
