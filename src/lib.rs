//! # influx-proxy core
//!
//! A high-availability proxy for InfluxDB 1.x. This library is the
//! **runtime-agnostic core**: line protocol parsing, routing of measurements to
//! replica sets, InfluxQL statement classification and filtering, query failover,
//! merging of fanned-out `SHOW` results, health checks and the durable, ordered
//! per-backend write queue with its replay.
//!
//! The core performs no IO and reads no clock. It reaches the world only through
//! two traits, [`transport::Transport`] (send one HTTP request to one backend) and
//! [`storage::Storage`] (the write queue's files), and every function that needs
//! the time takes `now_ms` (milliseconds since the Unix epoch) as an argument.
//! Hosts own sockets, files, timers and spawning: the native smol/async-h1 server
//! lives in [`native`] (feature `native`, on by default); the WASI host lives in
//! the separate `wasm/` crate.
//!
//! Module map (each concept lives in the file named after it):
//! - [`config`]: the JSON configuration file.
//! - [`auth`]: token auth at the proxy (InfluxDB 3 tokens, scopes, influxd's
//!   401/403 answers).
//! - [`line_protocol`]: splitting a write body into points and reading each
//!   point's measurement.
//! - [`validated_body`]: a write body decoded and validated as a pure job
//!   (any thread may run it; the native host runs it on worker threads).
//! - [`route`]: measurement name -> replica set (keymaps).
//! - [`shard_group`]: a shard group (backends, replication factor, shard tag)
//!   and the replicas of a shard key in it.
//! - [`placement`]: shard key -> the backends of a shard group that hold it
//!   (rendezvous hashing).
//! - [`rebalance`]: moving shard keys between backends live (plan, per-key
//!   state machine, copy of history, verification, durable transfer state).
//! - [`statement`]: InfluxQL statements: splitting, classification, the
//!   forbidden/allowed filter.
//! - [`results`]: InfluxDB query result JSON: merging fanned-out `SHOW` answers.
//! - [`shard_query`]: SELECTs over a tag-sharded measurement: pinning, the
//!   statement each shard is asked, the exact merge of their answers.
//! - [`write_queue`]: the durable per-backend write queue (record format, torn-tail
//!   recovery, dead letters).
//! - [`health_check`]: backend up/down after consecutive results.
//! - [`metrics`]: Prometheus counters, gauges and histograms of the proxy.
//! - [`host`]: what every host runs: the supervised health-check and replay
//!   loops, over a small [`host::Host`] trait of primitives (sleep, clocks, stop).
//! - [`api_v3`]: the InfluxDB 3 HTTP API (`/api/v3/write_lp`,
//!   `/api/v3/query_influxql`, `/api/v3/configure/database`) over the 1.x paths.
//! - [`tls`]: TLS settings of `https://` backends and of the listener (file
//!   names; the native host reads them and speaks TLS).
//! - [`proxy`]: the request life cycle: write fan-out, query routing and
//!   failover, schema fan-out, replay.
#![forbid(unsafe_code)]

pub mod api_v3;
pub mod auth;
pub mod config;
pub mod error;
pub mod health_check;
pub mod host;
pub mod http;
pub mod line_protocol;
pub mod metrics;
pub mod placement;
pub mod proxy;
pub mod rebalance;
pub mod results;
pub mod route;
pub mod shard_group;
pub mod shard_query;
pub mod sort;
pub mod statement;
pub mod storage;
pub mod tls;
pub mod transport;
pub mod validated_body;
pub mod write_queue;

#[cfg(test)]
mod test_influxd;

/// The write queue's files on a real file system: the durability rules
/// written once for both hosts (feature `host-fs`, part of `native`; the
/// `wasm/` crate enables it).
#[cfg(feature = "host-fs")]
pub mod host_fs;
#[cfg(feature = "host-fs")]
pub mod host_secrets;
#[cfg(feature = "host-tls")]
pub mod host_tls;
/// One HTTP/1.1 client connection served by async-h1, with the request-head
/// guard and the conversion to and from the core's messages; shared by the
/// native and the WASI host (feature `http1`, part of `native`).
#[cfg(feature = "http1")]
pub mod http1;
#[cfg(feature = "native")]
pub mod native;

/// The InfluxDB version this proxy reports in `X-Influxdb-Version` (the API it
/// speaks is InfluxDB 1.x's HTTP API).
pub const INFLUXDB_COMPAT_VERSION: &str = "1.8.10";
/// This proxy's own version, reported in `X-Influx-Proxy-Version` (on `/ping`),
/// `/health` and `--version`. (`X-Influxdb-Build` is `OSS`, as clients expect.)
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
