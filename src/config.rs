//! The JSON configuration file (`config/proxy.json`).
//!
//! Every key, its unit and its default is listed in README.md ("Configuration").
//! Unknown keys are an error naming the key. Errors name the file, the JSON path
//! and the problem on one line, e.g.
//! `config/proxy.json: $.keymaps.cpu[1]: unknown backend "c"`.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

/// The whole configuration. Field docs give units and defaults.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the proxy listens on, `host:port`. Default `127.0.0.1:7076`.
    #[serde(default = "defaults::listen")]
    pub listen: String,
    /// Directory of the write queues and dead-letter files (relative to the
    /// working directory). Default `data`.
    #[serde(default = "defaults::data_dir")]
    pub data_dir: String,
    /// Backends by name. At least one.
    pub backends: BTreeMap<String, BackendConfig>,
    /// Measurement key -> names of the backends that each hold a full copy
    /// (the replica set). Key `_default_` matches any measurement no other key
    /// matches. See [`crate::route`].
    pub keymaps: BTreeMap<String, Vec<String>>,
    /// Regexes (regex-lite, matched case-insensitively against the statement)
    /// of InfluxQL statements refused with 403. Default: GRANT, REVOKE, user
    /// management, SELECT INTO, continuous queries, KILL QUERY (see
    /// [`crate::statement::DEFAULT_FORBIDDEN`]).
    #[serde(default = "defaults::forbidden_statements")]
    pub forbidden_statements: Vec<String>,
    /// Regexes of statements allowed even though a forbidden pattern matches.
    /// Default: none.
    #[serde(default)]
    pub allowed_statements: Vec<String>,
    /// Largest request body accepted, in bytes (after gzip decoding too).
    /// Default 25,000,000 (InfluxDB 1.x `max-body-size`).
    #[serde(default = "defaults::max_body_bytes")]
    pub max_body_bytes: u64,
    /// Largest write queue per backend, in bytes on disk. When full, writes for
    /// that backend are answered 503. Default 1 GiB.
    #[serde(default = "defaults::queue_max_bytes")]
    pub queue_max_bytes: u64,
    /// Time between health checks of each backend, in ms. Default 1000.
    #[serde(default = "defaults::health_check_interval_ms")]
    pub health_check_interval_ms: u64,
    /// Consecutive failed checks (or failed requests) before a backend is
    /// marked down. Default 3.
    #[serde(default = "defaults::health_check_fall")]
    pub health_check_fall: u32,
    /// Consecutive successful checks before a down backend is marked up.
    /// Default 2.
    #[serde(default = "defaults::health_check_rise")]
    pub health_check_rise: u32,
    /// Timeout of one request to a backend (connect + response), in ms.
    /// Default 10,000.
    #[serde(default = "defaults::request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// First delay before retrying a failed replay, in ms; doubles up to
    /// `replay_backoff_max_ms`. Default 500.
    #[serde(default = "defaults::replay_backoff_min_ms")]
    pub replay_backoff_min_ms: u64,
    /// Longest delay between replay attempts, in ms. Default 10,000.
    #[serde(default = "defaults::replay_backoff_max_ms")]
    pub replay_backoff_max_ms: u64,
    /// Idle kept-alive connections kept per backend. Default 8.
    #[serde(default = "defaults::pool_max_idle")]
    pub pool_max_idle: usize,
}

/// One backend.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `http://host:port[/base]`.
    pub url: String,
}

mod defaults {
    pub fn listen() -> String {
        "127.0.0.1:7076".into()
    }
    pub fn data_dir() -> String {
        "data".into()
    }
    pub fn forbidden_statements() -> Vec<String> {
        crate::statement::DEFAULT_FORBIDDEN.iter().map(|s| s.to_string()).collect()
    }
    pub fn max_body_bytes() -> u64 {
        25_000_000
    }
    pub fn queue_max_bytes() -> u64 {
        1 << 30
    }
    pub fn health_check_interval_ms() -> u64 {
        1000
    }
    pub fn health_check_fall() -> u32 {
        3
    }
    pub fn health_check_rise() -> u32 {
        2
    }
    pub fn request_timeout_ms() -> u64 {
        10_000
    }
    pub fn replay_backoff_min_ms() -> u64 {
        500
    }
    pub fn replay_backoff_max_ms() -> u64 {
        10_000
    }
    pub fn pool_max_idle() -> usize {
        8
    }
}

/// A configuration error: `file: path: problem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name as given on the command line.
    pub file: String,
    /// JSON path of the offending value (`$`, `$.backends.a.url`, `$.keymaps.cpu[1]`).
    pub path: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.path, self.problem)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses and validates `text` (the contents of `file`): JSON syntax, unknown
    /// keys, types, at least one backend, every backend URL
    /// ([`crate::transport::BackendAddr::parse`]), every keymap naming known
    /// backends and non-empty, every statement regex compiling, non-zero limits.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let _ = (file, text);
        todo!("config parsing")
    }
}
