//! Prometheus metrics of the proxy itself, served at `GET /metrics` in the
//! Prometheus text exposition format (encoded by the `prometheus-client`
//! crate, the Prometheus project's Rust client).
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `influx_proxy_requests_total` | counter | endpoint, status | client requests answered |
//! | `influx_proxy_points_written_total` | counter | backend | points acknowledged by the backend (direct and replayed) |
//! | `influx_proxy_bytes_written_total` | counter | backend | line protocol bytes acknowledged by the backend |
//! | `influx_proxy_backend_errors_total` | counter | backend | requests to the backend that got no answer, a 5xx, or a 4xx |
//! | `influx_proxy_replayed_records_total` | counter | backend | write queue records delivered by replay |
//! | `influx_proxy_write_queue_records` | gauge | backend | records waiting in the backend's write queue |
//! | `influx_proxy_write_queue_bytes` | gauge | backend | bytes on disk of those records |
//! | `influx_proxy_dead_letters` | gauge | backend | records moved to the dead-letter file (backend answered 4xx on replay) |
//! | `influx_proxy_backend_healthy` | gauge | backend | 1 if the health check says up, else 0 |
//! | `influx_proxy_replay_given_up_total` | counter | backend | records moved to the dead-letter file by the replay policy (`replay_max_attempts` / `replay_max_age_ms`) |
//! | `influx_proxy_write_queue_oldest_age_seconds` | gauge | backend | age of the oldest record waiting (0 when empty) |
//! | `influx_proxy_write_queue_replay_attempts` | gauge | backend | failed replay attempts of the oldest record |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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
    backend_errors: Family<BackendLabels, Counter>,
    replayed: Family<BackendLabels, Counter>,
    queue_records: Family<BackendLabels, Gauge>,
    queue_bytes: Family<BackendLabels, Gauge>,
    dead_letters: Family<BackendLabels, Gauge>,
    healthy: Family<BackendLabels, Gauge>,
    replay_given_up: Family<BackendLabels, Counter>,
    queue_oldest_age: Family<BackendLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    queue_replay_attempts: Family<BackendLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn backend(name: &str) -> BackendLabels {
    BackendLabels { backend: name.to_string() }
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
        let backend_errors = Family::<BackendLabels, Counter>::default();
        let replayed = Family::<BackendLabels, Counter>::default();
        let queue_records = Family::<BackendLabels, Gauge>::default();
        let queue_bytes = Family::<BackendLabels, Gauge>::default();
        let dead_letters = Family::<BackendLabels, Gauge>::default();
        let healthy = Family::<BackendLabels, Gauge>::default();
        let replay_given_up = Family::<BackendLabels, Counter>::default();
        let queue_oldest_age = Family::<BackendLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let queue_replay_attempts = Family::<BackendLabels, Gauge>::default();
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
            "backend_errors",
            "Backend requests with no answer, a 5xx or a 4xx",
            backend_errors.clone(),
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
            prometheus_client::registry::Unit::Seconds,
            queue_oldest_age.clone(),
        );
        registry.register(
            "write_queue_replay_attempts",
            "Failed replay attempts of the oldest record in the backend's write queue",
            queue_replay_attempts.clone(),
        );
        Metrics {
            registry,
            requests,
            points_written,
            bytes_written,
            backend_errors,
            replayed,
            queue_records,
            queue_bytes,
            dead_letters,
            healthy,
            replay_given_up,
            queue_oldest_age,
            queue_replay_attempts,
        }
    }

    /// Counts one record dead-lettered by the replay policy for `backend`.
    pub fn replay_given_up(&self, backend_name: &str) {
        self.replay_given_up.get_or_create(&backend(backend_name)).inc();
    }

    /// Records dead-lettered by the replay policy for `backend` since start.
    pub fn replay_given_up_count(&self, backend_name: &str) -> u64 {
        self.replay_given_up.get_or_create(&backend(backend_name)).get()
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

    /// Counts one failed request to `backend`.
    pub fn backend_error(&self, backend_name: &str) {
        self.backend_errors.get_or_create(&backend(backend_name)).inc();
    }

    /// Counts one record delivered by replay to `backend`.
    pub fn replayed(&self, backend_name: &str) {
        self.replayed.get_or_create(&backend(backend_name)).inc();
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
            let _ = self.backend_errors.get_or_create(&labels);
            let _ = self.replayed.get_or_create(&labels);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
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
    }
}
