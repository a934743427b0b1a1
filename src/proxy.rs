//! The life of a proxied request: write fan-out to replicas with the durable
//! write queue, query routing with failover, schema fan-out, merged `SHOW`
//! answers; plus the background work hosts drive: health checks and replay.

use crate::config::Config;
use crate::http::{Request, Response};
use crate::storage::Storage;
use crate::transport::{BackendAddr, Transport};

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
    _t: T,
    _s: S,
}

impl<T: Transport, S: Storage> Proxy<T, S> {
    /// Builds the proxy from a validated config and opens every backend's write
    /// queue under `<data_dir-relative> queue/<backend>/` in `storage` (recovering
    /// from a crash: torn tail records dropped, replay resumes where it was).
    /// Error: a queue that cannot be opened (message names the backend).
    pub async fn open(config: Config, transport: T, storage: S) -> Result<Self, String> {
        let _ = (config, transport, storage);
        todo!()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        todo!()
    }

    /// The backends, in index order.
    pub fn backends(&self) -> &[BackendAddr] {
        todo!()
    }

    /// Answers one client request (`/ping`, `/write`, `/api/v2/write`, `/query`,
    /// `/health`, `/metrics`). Never panics on bad input: errors are
    /// InfluxDB-style `{"error":"..."}` responses. `now_ms` is the time (ms since
    /// the Unix epoch). The host has already refused bodies over
    /// `config().max_body_bytes` with 413.
    pub async fn handle(&self, request: Request, now_ms: u64) -> Response {
        let _ = (request, now_ms);
        todo!()
    }

    /// One health check of backend `backend` (index): `GET /ping`.
    pub async fn check_health(&self, backend: usize, now_ms: u64) {
        let _ = (backend, now_ms);
        todo!()
    }

    /// Tries to deliver the oldest queued record of backend `backend`.
    pub async fn replay_step(&self, backend: usize, now_ms: u64) -> ReplayStep {
        let _ = (backend, now_ms);
        todo!()
    }
}
