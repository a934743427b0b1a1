//! Prometheus metrics of the proxy itself, served at `GET /metrics` in the
//! Prometheus text exposition format (encoded by the `prometheus-client`
//! crate, the Prometheus project's Rust client).
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `influx_proxy_requests_total` | counter | endpoint, status | client requests answered |
//! | `influx_proxy_points_written_total` | counter | backend | points acknowledged by the backend (direct and replayed) |
//! | `influx_proxy_bytes_written_total` | counter | backend | line protocol bytes acknowledged by the backend |
//! | `influx_proxy_bytes_sent_total` | counter | backend | write body bytes sent to the backend as they went on the wire (gzip-compressed for a backend with `gzip`, or a client's gzip body forwarded as it came), every request counted, answered or not |
//! | `influx_proxy_points_refused_total` | counter | backend | points of client writes the backend refused with a 4xx: the `dropped=N` of its `partial write: ... dropped=N` (e.g. a field type conflict on this replica only), else every point of the refused batch (services/httpd/handler.go `serveWrite`, InfluxDB 1.x) |
//! | `influx_proxy_backend_errors_total` | counter | backend | requests to the backend that got no answer, a 5xx, or a 4xx |
//! | `influx_proxy_replayed_records_total` | counter | backend | write queue records delivered by replay |
//! | `influx_proxy_write_queue_records` | gauge | backend | records waiting in the backend's write queue |
//! | `influx_proxy_write_queue_bytes` | gauge | backend | bytes on disk of those records |
//! | `influx_proxy_dead_letters` | gauge | backend | records moved to the dead-letter file (4xx on replay, or given up by the replay policy), counted from the file on open |
//! | `influx_proxy_backend_healthy` | gauge | backend | 1 if the health check says up, else 0 |
//! | `influx_proxy_replay_given_up_total` | counter | backend | records moved to the dead-letter file by the replay policy (`replay_max_attempts` / `replay_max_age_ms`) |
//! | `influx_proxy_write_queue_oldest_age_seconds` | gauge | backend | age of the oldest record waiting (0 when empty) |
//! | `influx_proxy_write_queue_replay_attempts` | gauge | backend | failed replay attempts of the oldest record |
//! | `influx_proxy_loop_restarts_total` | counter | loop (`health_check`, `replay`), backend | background loops restarted by the supervisor after a panic or an unexpected end ([`crate::host`]) |
//! | `influx_proxy_config_reloads_total` | counter | result (`applied`, `refused`) | configuration reload attempts ([`crate::proxy::Proxy::reload`]) |
//! | `influx_proxy_auth_failures_total` | counter | reason (`unauthorized`: no, malformed or unknown token, 401; `forbidden`: out of the token's scope, 403) | requests refused by token auth ([`crate::auth`]) |
//! | `influx_proxy_config_generation` | gauge | | the configuration's generation: 1 at start, +1 per applied reload |
//! | `influx_proxy_request_duration_seconds` | histogram | endpoint | time from a parsed client request to its answer, in [`crate::proxy::Proxy::handle`] (body reading and writing excluded) |
//! | `influx_proxy_backend_request_duration_seconds` | histogram | backend | time of each request to the backend, answered or not (writes, queries, replay, health checks) |
//!
//! Histograms follow the Prometheus conventions (seconds; `_bucket{le=...}`,
//! `_sum`, `_count`; buckets [`DURATION_BUCKETS_S`]). They are observed only
//! once the host has given the proxy a monotonic clock
//! ([`crate::proxy::Proxy::set_clock`]); the core itself reads no clock.

use crate::http::{Request, Response};
use crate::transport::{BackendAddr, Transport, TransportError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::rc::Rc;

/// Upper bounds of the duration histograms' buckets, in seconds (Prometheus'
/// default buckets, from 5 ms to 10 s, with 1 ms and 2.5 ms below for local
/// backends and 30 s and 60 s above for slow queries and timeouts).
pub const DURATION_BUCKETS_S: [f64; 15] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// A monotonic clock given by the host: microseconds since an arbitrary,
/// fixed origin, never going back (e.g. `std::time::Instant` elapsed since
/// start-up). Only differences are used.
pub type MonotonicClock = Rc<dyn Fn() -> u64>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS_S)
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoopLabels {
    r#loop: String,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    backend: String,
}

/// A backend's gauges, sampled by the proxy when `/metrics` is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendGauges {
    pub queue_records: u64,
    pub queue_bytes: u64,
    pub dead_letters: u64,
    pub healthy: bool,
    /// Age of the queue's oldest record in ms (0 when empty or unknown).
    pub oldest_record_age_ms: u64,
    /// Failed replay attempts of the queue's oldest record.
    pub replay_attempts: u64,
}

/// The proxy's counters and gauges.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    points_written: Family<BackendLabels, Counter>,
    bytes_written: Family<BackendLabels, Counter>,
    bytes_sent: Family<BackendLabels, Counter>,
    backend_errors: Family<BackendLabels, Counter>,
    points_refused: Family<BackendLabels, Counter>,
    replayed: Family<BackendLabels, Counter>,
    queue_records: Family<BackendLabels, Gauge>,
    queue_bytes: Family<BackendLabels, Gauge>,
    dead_letters: Family<BackendLabels, Gauge>,
    healthy: Family<BackendLabels, Gauge>,
    replay_given_up: Family<BackendLabels, Counter>,
    queue_oldest_age: Family<BackendLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    queue_replay_attempts: Family<BackendLabels, Gauge>,
    loop_restarts: Family<LoopLabels, Counter>,
    config_reloads: Family<ResultLabels, Counter>,
    auth_failures: Family<ReasonLabels, Counter>,
    config_generation: Gauge,
    request_duration: HistogramFamily<EndpointLabels>,
    backend_request_duration: HistogramFamily<BackendLabels>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn backend(name: &str) -> BackendLabels {
    BackendLabels { backend: name.to_string() }
}

fn seconds(micros: u64) -> f64 {
    micros as f64 / 1e6
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Metrics {
    /// An empty set of metrics, registered under the prefix `influx_proxy`.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("influx_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        let points_written = Family::<BackendLabels, Counter>::default();
        let bytes_written = Family::<BackendLabels, Counter>::default();
        let bytes_sent = Family::<BackendLabels, Counter>::default();
        let backend_errors = Family::<BackendLabels, Counter>::default();
        let points_refused = Family::<BackendLabels, Counter>::default();
        let replayed = Family::<BackendLabels, Counter>::default();
        let queue_records = Family::<BackendLabels, Gauge>::default();
        let queue_bytes = Family::<BackendLabels, Gauge>::default();
        let dead_letters = Family::<BackendLabels, Gauge>::default();
        let healthy = Family::<BackendLabels, Gauge>::default();
        let replay_given_up = Family::<BackendLabels, Counter>::default();
        let queue_oldest_age = Family::<BackendLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let queue_replay_attempts = Family::<BackendLabels, Gauge>::default();
        let loop_restarts = Family::<LoopLabels, Counter>::default();
        let config_reloads = Family::<ResultLabels, Counter>::default();
        for result in ["applied", "refused"] {
            let _ = config_reloads.get_or_create(&ResultLabels { result: result.into() });
        }
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        for reason in ["unauthorized", "forbidden"] {
            let _ = auth_failures.get_or_create(&ReasonLabels { reason: reason.into() });
        }
        let config_generation = Gauge::default();
        config_generation.set(1);
        let request_duration: HistogramFamily<EndpointLabels> =
            Family::new_with_constructor(duration_histogram);
        let backend_request_duration: HistogramFamily<BackendLabels> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "requests",
            "Client requests answered, by endpoint and HTTP status",
            requests.clone(),
        );
        registry.register("points_written", "Points acknowledged by the backend", points_written.clone());
        registry.register(
            "bytes_written",
            "Line protocol bytes acknowledged by the backend",
            bytes_written.clone(),
        );
        registry.register(
            "bytes_sent",
            "Write body bytes sent to the backend as they went on the wire (compressed or not), answered or not",
            bytes_sent.clone(),
        );
        registry.register(
            "backend_errors",
            "Backend requests with no answer, a 5xx or a 4xx",
            backend_errors.clone(),
        );
        registry.register(
            "points_refused",
            "Points of client writes the backend refused with a 4xx (its partial write's dropped=N, else the batch)",
            points_refused.clone(),
        );
        registry.register("replayed_records", "Write queue records delivered by replay", replayed.clone());
        registry.register(
            "write_queue_records",
            "Records waiting in the backend's write queue",
            queue_records.clone(),
        );
        registry.register("write_queue_bytes", "Bytes on disk of the records waiting", queue_bytes.clone());
        registry.register("dead_letters", "Records moved to the dead-letter file", dead_letters.clone());
        registry.register("backend_healthy", "1 if the backend's health check says up", healthy.clone());
        registry.register(
            "replay_given_up",
            "Records moved to the dead-letter file by the replay policy (attempts or age cap)",
            replay_given_up.clone(),
        );
        registry.register_with_unit(
            "write_queue_oldest_age",
            "Age of the oldest record waiting in the backend's write queue (0 when empty)",
            Unit::Seconds,
            queue_oldest_age.clone(),
        );
        registry.register(
            "write_queue_replay_attempts",
            "Failed replay attempts of the oldest record in the backend's write queue",
            queue_replay_attempts.clone(),
        );
        registry.register(
            "loop_restarts",
            "Background loops (health_check, replay) restarted after a panic or an unexpected end",
            loop_restarts.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reload attempts, by result (applied, refused)",
            config_reloads.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests refused by token auth, by reason (unauthorized: 401, forbidden: 403)",
            auth_failures.clone(),
        );
        registry.register(
            "config_generation",
            "The configuration's generation: 1 at start, +1 per applied reload",
            config_generation.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time from a parsed client request to its answer, by endpoint",
            Unit::Seconds,
            request_duration.clone(),
        );
        registry.register_with_unit(
            "backend_request_duration",
            "Time of each request to the backend, answered or not",
            Unit::Seconds,
            backend_request_duration.clone(),
        );
        Metrics {
            registry,
            requests,
            points_written,
            bytes_written,
            bytes_sent,
            backend_errors,
            points_refused,
            replayed,
            queue_records,
            queue_bytes,
            dead_letters,
            healthy,
            replay_given_up,
            queue_oldest_age,
            queue_replay_attempts,
            loop_restarts,
            config_reloads,
            auth_failures,
            config_generation,
            request_duration,
            backend_request_duration,
        }
    }

    /// Counts one restart of background loop `loop_name` (`"health_check"`
    /// or `"replay"`) of `backend`.
    pub fn loop_restart(&self, loop_name: &str, backend_name: &str) {
        self.loop_restarts
            .get_or_create(&LoopLabels { r#loop: loop_name.to_string(), backend: backend_name.to_string() })
            .inc();
    }

    /// Counts a request refused by token auth: `reason` `unauthorized`
    /// (401) or `forbidden` (403).
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures.get_or_create(&ReasonLabels { reason: reason.to_string() }).inc();
    }

    /// Counts one configuration reload attempt; `result` is `"applied"` or
    /// `"refused"`.
    pub fn config_reload(&self, result: &str) {
        self.config_reloads.get_or_create(&ResultLabels { result: result.to_string() }).inc();
    }

    /// Removes `backend`'s gauges (its queue, health and replay figures):
    /// called when a backend removed by a reload has left, so that no stale
    /// values stay exposed. Its counters stay (they only ever grow).
    pub fn forget_backend(&self, backend_name: &str) {
        let labels = backend(backend_name);
        self.queue_records.remove(&labels);
        self.queue_bytes.remove(&labels);
        self.dead_letters.remove(&labels);
        self.healthy.remove(&labels);
        self.queue_oldest_age.remove(&labels);
        self.queue_replay_attempts.remove(&labels);
    }

    /// Sets the configuration generation gauge.
    pub fn config_generation(&self, generation: u64) {
        self.config_generation.set(gauge_value(generation));
    }

    /// Observes one client request to `endpoint` that took `micros` µs.
    pub fn request_duration(&self, endpoint: &str, micros: u64) {
        self.request_duration
            .get_or_create(&EndpointLabels { endpoint: endpoint.to_string() })
            .observe(seconds(micros));
    }

    /// Observes one request to `backend` that took `micros` µs.
    pub fn backend_request_duration(&self, backend_name: &str, micros: u64) {
        self.backend_request_duration.get_or_create(&backend(backend_name)).observe(seconds(micros));
    }

    /// Counts one answered client request.
    pub fn request(&self, endpoint: &str, status: u16) {
        self.requests.get_or_create(&RequestLabels { endpoint: endpoint.to_string(), status }).inc();
    }

    /// Counts `points` points of `bytes` bytes acknowledged by `backend`.
    pub fn written(&self, backend_name: &str, points: u64, bytes: u64) {
        let labels = backend(backend_name);
        self.points_written.get_or_create(&labels).inc_by(points);
        self.bytes_written.get_or_create(&labels).inc_by(bytes);
    }

    /// Counts `bytes` bytes of write body sent to `backend` in one request,
    /// as they went on the wire (compressed when they were).
    pub fn sent(&self, backend_name: &str, bytes: u64) {
        self.bytes_sent.get_or_create(&backend(backend_name)).inc_by(bytes);
    }

    /// Counts `points` points of a client write refused by `backend` (a 4xx
    /// answer; `dropped=N` of a partial write).
    pub fn points_refused(&self, backend_name: &str, points: u64) {
        self.points_refused.get_or_create(&backend(backend_name)).inc_by(points);
    }

    /// Counts one failed request to `backend`.
    pub fn backend_error(&self, backend_name: &str) {
        self.backend_errors.get_or_create(&backend(backend_name)).inc();
    }

    /// Counts one record delivered by replay to `backend`.
    pub fn replayed(&self, backend_name: &str) {
        self.replayed.get_or_create(&backend(backend_name)).inc();
    }

    /// Counts one record dead-lettered by the replay policy for `backend`.
    pub fn replay_given_up(&self, backend_name: &str) {
        self.replay_given_up.get_or_create(&backend(backend_name)).inc();
    }

    /// Records dead-lettered by the replay policy for `backend` since start.
    pub fn replay_given_up_count(&self, backend_name: &str) -> u64 {
        self.replay_given_up.get_or_create(&backend(backend_name)).get()
    }

    /// The text exposition (`text/plain; version=0.0.4` with `# EOF`), with
    /// gauges set from `gauges` (backend name, values).
    pub fn render(&self, gauges: &[(&str, BackendGauges)]) -> String {
        for (name, g) in gauges {
            let labels = backend(name);
            self.queue_records.get_or_create(&labels).set(gauge_value(g.queue_records));
            self.queue_bytes.get_or_create(&labels).set(gauge_value(g.queue_bytes));
            self.dead_letters.get_or_create(&labels).set(gauge_value(g.dead_letters));
            self.healthy.get_or_create(&labels).set(i64::from(g.healthy));
            self.queue_oldest_age.get_or_create(&labels).set(g.oldest_record_age_ms as f64 / 1000.0);
            self.queue_replay_attempts.get_or_create(&labels).set(gauge_value(g.replay_attempts));
            let _ = self.replay_given_up.get_or_create(&labels);
            // Make counters visible (at 0) before the first event.
            let _ = self.points_written.get_or_create(&labels);
            let _ = self.bytes_written.get_or_create(&labels);
            let _ = self.bytes_sent.get_or_create(&labels);
            let _ = self.backend_errors.get_or_create(&labels);
            let _ = self.points_refused.get_or_create(&labels);
            let _ = self.replayed.get_or_create(&labels);
            for loop_name in ["health_check", "replay"] {
                let _ = self
                    .loop_restarts
                    .get_or_create(&LoopLabels { r#loop: loop_name.into(), backend: labels.backend.clone() });
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The proxy's [`Transport`] with every `send` timed into
/// `influx_proxy_backend_request_duration_seconds{backend}` (answered or
/// not: a timeout is observed at its full length) while a clock is set.
/// Derefs to the inner transport, so its other methods stay reachable.
pub struct TimedTransport<T> {
    inner: T,
    clock: Option<MonotonicClock>,
    histogram: HistogramFamily<BackendLabels>,
}

impl<T> TimedTransport<T> {
    /// Sets the clock used from now on.
    pub fn set_clock(&mut self, clock: MonotonicClock) {
        self.clock = Some(clock);
    }
}

impl<T: Transport> TimedTransport<T> {
    /// [`Transport::send`], timed; with the backend's configured
    /// credentials put on the request ([`BackendAddr::credentials`]): every
    /// request to a backend goes through here.
    pub async fn send(&self, addr: &BackendAddr, mut request: Request) -> Result<Response, TransportError> {
        if let Some(credentials) = &addr.credentials {
            credentials.apply(&mut request);
        }
        let Some(clock) = &self.clock else { return self.inner.send(addr, request).await };
        let start = clock();
        let outcome = self.inner.send(addr, request).await;
        self.histogram.get_or_create(&backend(&addr.name)).observe(seconds(clock().saturating_sub(start)));
        outcome
    }

    /// [`TimedTransport::send`] of [`Transport::send_shared`].
    pub async fn send_shared(
        &self,
        addr: &BackendAddr,
        mut request: Request,
        body: crate::http::SharedBytes,
    ) -> Result<Response, TransportError> {
        if let Some(credentials) = &addr.credentials {
            credentials.apply(&mut request);
        }
        let Some(clock) = &self.clock else { return self.inner.send_shared(addr, request, body).await };
        let start = clock();
        let outcome = self.inner.send_shared(addr, request, body).await;
        self.histogram.get_or_create(&backend(&addr.name)).observe(seconds(clock().saturating_sub(start)));
        outcome
    }
}

impl<T> std::ops::Deref for TimedTransport<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl Metrics {
    /// Wraps `transport` so that its requests are observed in these
    /// metrics' backend-request histograms (once a clock is set).
    pub fn timed<T>(&self, transport: T) -> TimedTransport<T> {
        TimedTransport { inner: transport, clock: None, histogram: self.backend_request_duration.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges_per_backend() {
        let m = Metrics::new();
        m.request("write", 204);
        m.request("write", 204);
        m.written("a", 10, 300);
        m.backend_error("b");
        let text = m.render(&[
            (
                "a",
                BackendGauges {
                    queue_records: 0,
                    queue_bytes: 0,
                    dead_letters: 0,
                    healthy: true,
                    ..Default::default()
                },
            ),
            (
                "b",
                BackendGauges {
                    queue_records: 3,
                    queue_bytes: 120,
                    dead_letters: 1,
                    healthy: false,
                    oldest_record_age_ms: 1500,
                    replay_attempts: 4,
                },
            ),
        ]);
        assert!(text.contains("influx_proxy_requests_total{endpoint=\"write\",status=\"204\"} 2"), "{text}");
        assert!(text.contains("influx_proxy_points_written_total{backend=\"a\"} 10"), "{text}");
        assert!(text.contains("influx_proxy_write_queue_records{backend=\"b\"} 3"), "{text}");
        assert!(text.contains("influx_proxy_backend_healthy{backend=\"b\"} 0"), "{text}");
        assert!(text.contains("influx_proxy_write_queue_oldest_age_seconds{backend=\"b\"} 1.5"), "{text}");
        assert!(text.contains("influx_proxy_write_queue_replay_attempts{backend=\"b\"} 4"), "{text}");
        assert!(text.contains("influx_proxy_replay_given_up_total{backend=\"a\"} 0"), "{text}");
        assert!(text.contains("# TYPE influx_proxy_write_queue_bytes gauge"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
        assert!(text.contains("influx_proxy_loop_restarts_total{loop=\"replay\",backend=\"a\"} 0"), "{text}");
    }

    #[test]
    fn duration_histograms_are_in_seconds_with_buckets_sum_and_count() {
        let m = Metrics::new();
        m.request_duration("write", 3_000); // 3 ms
        m.request_duration("write", 2_000_000); // 2 s
        m.backend_request_duration("b", 500); // 0.5 ms
        m.loop_restart("replay", "b");
        let text = m.render(&[]);
        assert!(text.contains("# TYPE influx_proxy_request_duration_seconds histogram"), "{text}");
        assert!(text.contains("# UNIT influx_proxy_request_duration_seconds seconds"), "{text}");
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no line {name} in {text}"))
                .rsplit(' ')
                .next()
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(line("influx_proxy_request_duration_seconds_count{endpoint=\"write\"}"), "2");
        assert_eq!(line("influx_proxy_request_duration_seconds_sum{endpoint=\"write\"}"), "2.003");
        // Cumulative buckets: 3 ms is under 5 ms, 2 s only from 2.5 s on.
        assert_eq!(
            line("influx_proxy_request_duration_seconds_bucket{le=\"0.005\",endpoint=\"write\"}"),
            "1"
        );
        assert_eq!(line("influx_proxy_request_duration_seconds_bucket{le=\"1.0\",endpoint=\"write\"}"), "1");
        assert_eq!(line("influx_proxy_request_duration_seconds_bucket{le=\"2.5\",endpoint=\"write\"}"), "2");
        assert_eq!(line("influx_proxy_request_duration_seconds_bucket{le=\"+Inf\",endpoint=\"write\"}"), "2");
        assert_eq!(line("influx_proxy_backend_request_duration_seconds_count{backend=\"b\"}"), "1");
        assert_eq!(
            line("influx_proxy_backend_request_duration_seconds_bucket{le=\"0.001\",backend=\"b\"}"),
            "1"
        );
        assert_eq!(line("influx_proxy_loop_restarts_total{loop=\"replay\",backend=\"b\"}"), "1");
    }
}
