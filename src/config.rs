//! The JSON configuration file (`config/proxy.json`).
//!
//! Every key, its unit and its default is listed in README.md ("Configuration").
//! Unknown keys are an error naming the key. Errors name the file, the JSON path
//! and the problem on one line, e.g.
//! `config/proxy.json: $.keymaps.cpu[1]: unknown backend "c"`.
//!
//! Paths: `$` is the whole document, `.key` a member (`["key"]` when the key
//! holds anything but letters, digits and `_`), `[n]` an array element
//! (0-based). JSON syntax errors have path `$` and give line and column.

use crate::route::{Keymap, Router};
use crate::shard_group::ShardGroup;
use crate::tls::{BackendTls, ListenTls};
use crate::transport::BackendAddr;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

/// The whole configuration. Field docs give units and defaults.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the proxy listens on, `host:port`. Default `127.0.0.1:7076`.
    #[serde(default = "defaults::listen")]
    pub listen: String,
    /// Serve HTTPS on `listen` with this certificate and key
    /// ([`crate::tls::ListenTls`]; native host only). Default: none, plain
    /// HTTP.
    #[serde(default)]
    pub listen_tls: Option<ListenTls>,
    /// TLS settings of every `https://` backend that has no `tls` of its own
    /// ([`crate::tls::BackendTls`]). Default: none, i.e. the system trust
    /// store and no client certificate.
    #[serde(default)]
    pub backend_tls: Option<BackendTls>,
    /// Directory of the write queues and dead-letter files (relative to the
    /// working directory). Default `data`.
    #[serde(default = "defaults::data_dir")]
    pub data_dir: String,
    /// Backends by name. At least one. Names are made of `A-Z a-z 0-9 _ . -`
    /// (each names its write queue's directory). Their order (the map's,
    /// sorted by name) gives the backend indices used everywhere
    /// ([`Config::backend_names`]).
    pub backends: BTreeMap<String, BackendConfig>,
    /// Measurement key -> either a list of the names of the backends that
    /// each hold a full copy (an explicit replica set) or the name of a shard
    /// group of `shard_groups` (a string). Key `_default_` matches any
    /// measurement no other key matches. See [`crate::route`].
    pub keymaps: BTreeMap<String, Keymap>,
    /// Shard groups by name: backends over which the measurements of the
    /// keymaps naming the group are spread, each shard key on
    /// `replication_factor` of them ([`crate::shard_group`]). Default: none.
    #[serde(default)]
    pub shard_groups: BTreeMap<String, ShardGroupConfig>,
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
    /// Largest write body sent to a backend in one request, in bytes, counted
    /// after the proxy added its timestamps: a longer write is sent (or
    /// queued) as several batches cut at point boundaries, and a batch a
    /// backend refuses with 413 is halved. Default 8,388,608 (8 MiB), below
    /// InfluxDB 1.x's default `[http] max-body-size` of 25,000,000.
    #[serde(default = "defaults::backend_max_body_bytes")]
    pub backend_max_body_bytes: u64,
    /// Whether a write body with malformed lines (or points no keymap
    /// routes) among valid ones is written in part, as InfluxDB 1.x does
    /// (services/httpd/handler.go `serveWrite`): the valid points are
    /// written and the answer is 400 `partial write: ... dropped=N` naming
    /// the bad lines. `false`: such a body is refused whole (400, nothing
    /// written), the proxy's behaviour before partial writes. Default `true`.
    #[serde(default = "defaults::partial_writes")]
    pub partial_writes: bool,
    /// Longest time a client may take to send a request head (request line
    /// and headers), in ms, counted from its first byte; later -> 408 and the
    /// connection is closed. Default 60,000 (async-h1's fixed limit before).
    #[serde(default = "defaults::header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Longest time a client may take to send a request body, in ms, counted
    /// from the end of its head (a total, not a gap between reads, so that a
    /// trickling body is cut too); later -> 408, the connection is closed and
    /// nothing of the request reaches the proxy's core. Default 30,000 (a
    /// `max_body_bytes` body then needs at least ~0.8 MB/s).
    #[serde(default = "defaults::body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// Largest write queue per backend, in bytes on disk. When full, writes for
    /// that backend are answered 503. Default 1 GiB.
    #[serde(default = "defaults::queue_max_bytes")]
    pub queue_max_bytes: u64,
    /// Replay attempts of one queued record that fails while its backend is
    /// otherwise healthy (its `/ping` answers 2xx: the record gets a 5xx or a
    /// broken connection) before it is moved to the dead-letter file, so the
    /// records behind it flow. Attempts while the backend is down do not
    /// count, nor do timeouts (a backend too busy to answer in
    /// `request_timeout_ms` is slow, not refusing the record; only
    /// `replay_max_age_ms` gives such a record up). Default 10.
    #[serde(default = "defaults::replay_max_attempts")]
    pub replay_max_attempts: u32,
    /// Age of a queued record (ms since it was queued) past which it is moved
    /// to the dead-letter file at its next replay failure while its backend is
    /// otherwise healthy (as `replay_max_attempts`; a backend that is down is
    /// waited for without limit). Default 86,400,000 (24 h).
    #[serde(default = "defaults::replay_max_age_ms")]
    pub replay_max_age_ms: u64,
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
    /// Largest backend response body the proxy reads, in bytes; a larger
    /// answer ends as a 502 naming the backend and this limit (it is not
    /// buffered whole). Default 64 MiB (67,108,864).
    #[serde(default = "defaults::backend_max_response_bytes")]
    pub backend_max_response_bytes: u64,
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
    /// Most connections open at once to one backend (idle and busy); a
    /// request waits for a free one within its `request_timeout_ms`.
    /// Default 64.
    #[serde(default = "defaults::pool_max_open")]
    pub pool_max_open: usize,
    /// The operator states that this proxy is the only one writing to the
    /// shard groups' backends. A reload that changes a shard group's
    /// placement (a backend added or removed, the replication factor) moves
    /// the keys live (`crate::rebalance`), and a move refuses to start or
    /// resume without it (see README "Moving shard keys"). Default false.
    #[serde(default)]
    pub rebalance_single_writer: bool,
    /// Copy rate limit of a move, points per second per shard group (0: no
    /// limit). Default 50,000.
    #[serde(default = "defaults::rebalance_points_per_s")]
    pub rebalance_points_per_s: u64,
    /// Target points per copied chunk of a move. Default 10,000.
    #[serde(default = "defaults::rebalance_points_per_chunk")]
    pub rebalance_points_per_chunk: u64,
    /// Token auth at the proxy ([`crate::auth`]). Default: none, the
    /// client's credentials are passed through to the backends unchanged.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
}

/// `auth`: the tokens the proxy accepts and the paths open without one.
/// Present = every request to a path not in `open` needs a configured token.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The accepted tokens, at least one; each name and hash once.
    pub tokens: Vec<TokenConfig>,
    /// Paths answered without a token (exact, e.g. `/ping`). Default
    /// `["/ping", "/health"]` (load balancers and health checks probe them;
    /// InfluxDB 1.x serves `/ping` without credentials too).
    #[serde(default = "defaults::open_paths")]
    pub open: Vec<String>,
}

/// One accepted token (`auth.tokens[i]`): only its hash is configured.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs and 403 messages (InfluxDB's user name in its 403
    /// texts), non-empty, unique.
    pub name: String,
    /// SHA-512 of the whole token text (`apiv3_...`), 128 hex digits, as
    /// `influx-proxy create token` prints it (InfluxDB 3 stores this hash,
    /// influxdb3_catalog `compute_token_hash`).
    pub sha512: TokenHash,
    /// Databases the token may use: names, or `["*"]` for all.
    pub databases: Vec<String>,
    /// What it may do there: `read` (SELECT, SHOW, EXPLAIN), `write`
    /// (`/write`, `/api/v2/write`, `DELETE`, `DROP SERIES`), `admin`
    /// (schema statements: `CREATE`/`DROP DATABASE`, retention policies,
    /// `DROP MEASUREMENT`, `SELECT INTO`, and with `"*"` users, grants,
    /// continuous queries; admin also reads and writes).
    pub permissions: Vec<Permission>,
}

/// A permission of a token (see [`TokenConfig::permissions`]).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Read,
    Write,
    Admin,
}

/// A SHA-512 digest, read from 128 hex digits (either case).
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 64]);

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash(")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TokenHash, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bad = || {
            serde::de::Error::custom(format!(
                "expected the SHA-512 of a token as 128 hex digits (influx-proxy create token prints it), \
                 found {} characters",
                text.len()
            ))
        };
        let bytes = text.as_bytes();
        if bytes.len() != 128 {
            return Err(bad());
        }
        let mut out = [0u8; 64];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(h), Some(l)) => out[i] = (h * 16 + l) as u8,
                _ => return Err(bad()),
            }
        }
        Ok(TokenHash(out))
    }
}

/// One backend.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `http://host:port[/base]` or `https://host:port[/base]` (TLS with a
    /// verified certificate: see `tls`).
    pub url: String,
    /// TLS settings of this `https://` backend ([`crate::tls::BackendTls`]),
    /// instead of the global `backend_tls`. Not allowed on an `http://`
    /// backend. Default: none.
    #[serde(default)]
    pub tls: Option<BackendTls>,
    /// Send write bodies to this backend gzip-compressed
    /// (`Content-Encoding: gzip`, flate2's fastest level), direct writes and
    /// replayed batches alike: for a backend across a slow or metered link
    /// (another datacenter). InfluxDB 1.x decodes such bodies
    /// (services/httpd/handler.go `serveWrite`). A client's gzip body
    /// forwarded as it came stays as it came. Per backend, not global,
    /// because it is a property of the link to one backend: compressing for
    /// a backend on the same host or LAN only costs CPU. Batches are still
    /// cut at `backend_max_body_bytes` of line protocol (the decoded bytes).
    /// Default false.
    #[serde(default)]
    pub gzip: bool,
    /// With `auth` on: the user name the proxy sends this backend (HTTP
    /// Basic, InfluxDB 1.x user auth), with the password of
    /// `password_env` or `password_file`. Default: none.
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding `username`'s password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding `username`'s password (trailing line ending dropped),
    /// e.g. `/run/secrets/b`.
    #[serde(default)]
    pub password_file: Option<String>,
    /// Environment variable holding a token sent as `Authorization: Bearer
    /// <token>` (InfluxDB 3; instead of username and password).
    #[serde(default)]
    pub token_env: Option<String>,
    /// File holding such a token (trailing line ending dropped).
    #[serde(default)]
    pub token_file: Option<String>,
    /// The credentials read from those sources by the host
    /// ([`Config::resolve_credentials`]); never from the JSON.
    #[serde(skip)]
    pub credentials: Option<crate::auth::BackendCredentials>,
}

/// Where a backend's secret is read from (by the host: the core does no IO).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable, by name.
    Env(String),
    /// A file, by path; a trailing `\n` or `\r\n` is not part of the secret.
    File(String),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "environment variable {name}"),
            SecretSource::File(path) => write!(f, "file {path}"),
        }
    }
}

impl BackendConfig {
    /// The configured source of the password (key, source), if any.
    fn password_source(&self) -> Option<(&'static str, SecretSource)> {
        source(&self.password_env, &self.password_file, "password")
    }

    /// The configured source of the token (key, source), if any.
    fn token_source(&self) -> Option<(&'static str, SecretSource)> {
        source(&self.token_env, &self.token_file, "token")
    }

    /// Whether credentials are configured for this backend.
    pub fn has_credentials(&self) -> bool {
        self.username.is_some() || self.password_source().is_some() || self.token_source().is_some()
    }
}

fn source(env: &Option<String>, file: &Option<String>, what: &str) -> Option<(&'static str, SecretSource)> {
    let (env_key, file_key) =
        if what == "password" { ("password_env", "password_file") } else { ("token_env", "token_file") };
    match (env, file) {
        (Some(name), _) => Some((env_key, SecretSource::Env(name.clone()))),
        (None, Some(path)) => Some((file_key, SecretSource::File(path.clone()))),
        (None, None) => None,
    }
}

/// One shard group (`shard_groups.<name>`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ShardGroupConfig {
    /// Names of the group's backends (of `backends`), at least one, each
    /// once; their order does not matter.
    pub backends: Vec<String>,
    /// Copies of each shard key: from 1 to the number of `backends`.
    pub replication_factor: usize,
    /// Tag whose value joins the shard key (`(db, measurement, value)`); a
    /// point without it goes to the shard of the empty value. Default: none,
    /// the key is `(db, measurement)`.
    #[serde(default)]
    pub shard_tag: Option<String>,
}

/// A keymap value: a JSON array of backend names or a string naming a shard
/// group. Errors keep the JSON path of the element (`$.keymaps.cpu[1]`).
impl<'de> Deserialize<'de> for Keymap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Keymap, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Keymap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of backend names or the name of a shard group")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Keymap, E> {
                Ok(Keymap::Group(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Keymap, A::Error> {
                let mut names = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(Keymap::Backends(names))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

mod defaults {
    pub fn open_paths() -> Vec<String> {
        vec!["/ping".into(), "/health".into()]
    }
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
    pub fn backend_max_body_bytes() -> u64 {
        8 << 20
    }
    pub fn partial_writes() -> bool {
        true
    }
    pub fn header_read_timeout_ms() -> u64 {
        60_000
    }
    pub fn body_read_timeout_ms() -> u64 {
        30_000
    }
    pub fn queue_max_bytes() -> u64 {
        1 << 30
    }
    pub fn replay_max_attempts() -> u32 {
        10
    }
    pub fn replay_max_age_ms() -> u64 {
        24 * 60 * 60 * 1000
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
    pub fn backend_max_response_bytes() -> u64 {
        64 << 20
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
    pub fn pool_max_open() -> usize {
        64
    }
    pub fn rebalance_points_per_s() -> u64 {
        50_000
    }
    pub fn rebalance_points_per_chunk() -> u64 {
        10_000
    }
}

/// A configuration error: `file: path: problem`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name as given on the command line (empty when the error is
    /// about a [`Config`] built in memory; Display then leaves it out).
    pub file: String,
    /// JSON path of the offending value (`$`, `$.backends.a.url`, `$.keymaps.cpu[1]`).
    pub path: String,
    /// What is wrong, on one line.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file.is_empty() {
            write!(f, "{}: {}", self.path, self.problem)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Parses and validates `text` (the contents of `file`): JSON syntax, unknown
    /// keys, types, at least one backend, every backend URL
    /// ([`crate::transport::BackendAddr::parse`]), every shard group (known
    /// backends, each once; a replication factor from 1 to its size; a
    /// usable `shard_tag`), every keymap naming known backends and non-empty
    /// or a known shard group, every statement regex compiling, non-zero
    /// limits.
    ///
    /// The first problem found is returned; see [`ConfigError`] for its shape.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let error = |path: String, problem: String| ConfigError {
            file: file.to_string(),
            path,
            problem: one_line(&problem),
        };
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let config: Config = match serde_path_to_error::deserialize(&mut deserializer) {
            Ok(config) => config,
            Err(e) => {
                let path = match e.inner().classify() {
                    serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "$".to_string(),
                    _ => json_path(e.path()),
                };
                return Err(error(path, e.inner().to_string()));
            }
        };
        // Trailing characters after the document.
        if let Err(e) = deserializer.end() {
            return Err(error("$".to_string(), e.to_string()));
        }
        config.validate().map_err(|(path, problem)| error(path, problem))?;
        Ok(config)
    }

    /// Reads each backend's password or token from its source with `read`
    /// (the host's: environment, files) into [`BackendConfig::credentials`].
    /// Errors name the file, the key's path and the source, e.g.
    /// `proxy.json: $.backends.b.password_env: environment variable B_PASS:
    /// not set`; an empty secret is an error too.
    pub fn resolve_credentials(
        &mut self,
        file: &str,
        read: &dyn Fn(&SecretSource) -> Result<String, String>,
    ) -> Result<(), ConfigError> {
        for (name, backend) in self.backends.iter_mut() {
            let read_one = |key: &str, source: &SecretSource| {
                let fail = |problem: String| ConfigError {
                    file: file.to_string(),
                    path: format!("$.backends{}.{key}", key_segment(name)),
                    problem: one_line(&format!("{source}: {problem}")),
                };
                let secret = read(source).map_err(fail)?;
                let secret =
                    secret.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(&secret);
                if secret.is_empty() {
                    return Err(fail("is empty".to_string()));
                }
                Ok(secret.to_string())
            };
            backend.credentials = match (&backend.username, backend.password_source(), backend.token_source())
            {
                (Some(username), Some((key, source)), None) => Some(crate::auth::BackendCredentials::Basic {
                    username: username.clone(),
                    password: read_one(key, &source)?,
                }),
                (None, None, Some((key, source))) => {
                    Some(crate::auth::BackendCredentials::Token(read_one(key, &source)?))
                }
                _ => None,
            };
        }
        Ok(())
    }

    /// The backend names in index order (sorted by name, the order of
    /// `backends`): index `i` in a [`crate::route::ReplicaSet`] is
    /// `backend_names()[i]`.
    pub fn backend_names(&self) -> Vec<String> {
        self.backends.keys().cloned().collect()
    }

    /// The backends' addresses in index order. Error (only for a config not
    /// checked by [`Config::parse`]): a bad URL, with its path.
    pub fn backend_addrs(&self) -> Result<Vec<BackendAddr>, ConfigError> {
        self.backends
            .iter()
            .map(|(name, backend)| {
                let mut addr = BackendAddr::parse(name, &backend.url)
                    .map(|addr| addr.with_tls(backend.tls.as_ref().or(self.backend_tls.as_ref())))
                    .map_err(|problem| ConfigError {
                        file: String::new(),
                        path: format!("$.backends{}.url", key_segment(name)),
                        problem,
                    })?;
                if backend.has_credentials() && backend.credentials.is_none() {
                    return Err(ConfigError {
                        file: String::new(),
                        path: format!("$.backends{}", key_segment(name)),
                        problem: "its credentials were not read: this host does not read password_env, \
                                  password_file, token_env or token_file"
                            .to_string(),
                    });
                }
                addr.credentials = backend.credentials.clone();
                Ok(addr)
            })
            .collect()
    }

    /// The shard groups of `shard_groups` over [`Config::backend_names`], in
    /// name order. Error (only for a config not checked by [`Config::parse`]):
    /// a group with no, an unknown or a repeated backend, or a bad
    /// replication factor or shard tag.
    pub fn shard_groups(&self) -> Result<Vec<ShardGroup>, ConfigError> {
        self.shard_groups_over(&self.backend_names())
    }

    /// [`Config::shard_groups`] with backend indices into `names` (the
    /// proxy's stable backend order, which a live reload extends at the end:
    /// `Topology::names`) instead of [`Config::backend_names`]. Error: a
    /// group naming a backend that is not in `names`.
    pub fn shard_groups_over(&self, names: &[String]) -> Result<Vec<ShardGroup>, ConfigError> {
        self.shard_groups
            .iter()
            .map(|(name, group)| {
                ShardGroup::new(
                    name,
                    &group.backends,
                    names,
                    group.replication_factor,
                    group.shard_tag.as_deref(),
                )
                .map_err(|problem| ConfigError {
                    file: String::new(),
                    path: format!("$.shard_groups{}", key_segment(name)),
                    problem,
                })
            })
            .collect()
    }

    /// The router built from `keymaps` and `shard_groups` over
    /// [`Config::backend_names`]. Error (only for a config not checked by
    /// [`Config::parse`]): a keymap naming an unknown backend or group, or
    /// none; a bad group (see [`Config::shard_groups`]).
    pub fn router(&self) -> Result<Router, ConfigError> {
        self.router_over(&self.backend_names())
    }

    /// [`Config::router`] with backend indices into `names` (see
    /// [`Config::shard_groups_over`]).
    pub fn router_over(&self, names: &[String]) -> Result<Router, ConfigError> {
        let groups = self.shard_groups_over(names)?;
        Router::new(&self.keymaps, groups, names).map_err(|problem| ConfigError {
            file: String::new(),
            path: "$.keymaps".to_string(),
            problem,
        })
    }

    /// Checks what serde cannot: `Err((path, problem))` for the first problem.
    fn validate(&self) -> Result<(), (String, String)> {
        let fail = |path: &str, problem: String| Err((path.to_string(), problem));

        if self.listen.parse::<SocketAddr>().is_err() {
            return fail(
                "$.listen",
                format!(
                    "{:?} is not a socket address host:port with an IP address (e.g. 127.0.0.1:7076 or [::]:7076)",
                    self.listen
                ),
            );
        }
        if self.data_dir.is_empty() {
            return fail("$.data_dir", "must not be empty".to_string());
        }
        if let Some(Err((field, problem))) = self.listen_tls.as_ref().map(ListenTls::validate) {
            return fail(&format!("$.listen_tls.{field}"), problem);
        }
        if let Some(Err((field, problem))) = self.backend_tls.as_ref().map(BackendTls::validate) {
            return fail(&format!("$.backend_tls.{field}"), problem);
        }

        if self.backends.is_empty() {
            return fail("$.backends", "at least one backend is required".to_string());
        }
        for (name, backend) in &self.backends {
            let path = format!("$.backends{}", key_segment(name));
            if let Some(problem) = bad_backend_name(name) {
                return fail(&path, problem);
            }
            let addr = match BackendAddr::parse(name, &backend.url) {
                Ok(addr) => addr,
                Err(problem) => return fail(&format!("{path}.url"), problem),
            };
            if let Some(tls) = &backend.tls {
                if addr.tls.is_none() {
                    return fail(
                        &format!("{path}.tls"),
                        format!("is set but the url {:?} is http:// (use https://)", backend.url),
                    );
                }
                if let Err((field, problem)) = tls.validate() {
                    return fail(&format!("{path}.tls.{field}"), problem);
                }
            }
            for (key, value) in [
                ("username", &backend.username),
                ("password_env", &backend.password_env),
                ("password_file", &backend.password_file),
                ("token_env", &backend.token_env),
                ("token_file", &backend.token_file),
            ] {
                if value.as_deref() == Some("") {
                    return fail(&format!("{path}.{key}"), "must not be empty".to_string());
                }
            }
            if backend.password_env.is_some() && backend.password_file.is_some() {
                return fail(
                    &format!("{path}.password_file"),
                    "give password_env or password_file, not both".into(),
                );
            }
            if backend.token_env.is_some() && backend.token_file.is_some() {
                return fail(&format!("{path}.token_file"), "give token_env or token_file, not both".into());
            }
            match (&backend.username, backend.password_source(), backend.token_source()) {
                (Some(_), None, _) => {
                    return fail(&format!("{path}.username"), "needs password_env or password_file".into())
                }
                (None, Some((key, _)), _) => {
                    return fail(&format!("{path}.{key}"), "a password needs a username".into())
                }
                (Some(_), Some(_), Some((key, _))) => {
                    return fail(
                        &format!("{path}.{key}"),
                        "give username and password, or a token, not both".into(),
                    )
                }
                _ => {}
            }
            if backend.has_credentials() && self.auth.is_none() {
                return fail(
                    &path,
                    "backend credentials are used only with \"auth\" (without it the clients' credentials \
                     are passed through)"
                        .into(),
                );
            }
        }

        if self.keymaps.is_empty() {
            return fail(
                "$.keymaps",
                format!(
                    "at least one keymap is required (e.g. {{\"{}\": [...]}})",
                    crate::route::DEFAULT_KEY
                ),
            );
        }
        for (name, group) in &self.shard_groups {
            let path = format!("$.shard_groups{}", key_segment(name));
            if name.is_empty() {
                return fail(&path, "a shard group name must not be empty".to_string());
            }
            if group.backends.is_empty() {
                return fail(
                    &format!("{path}.backends"),
                    "names no backend (a shard group needs at least one)".to_string(),
                );
            }
            for (i, backend) in group.backends.iter().enumerate() {
                if !self.backends.contains_key(backend) {
                    return fail(&format!("{path}.backends[{i}]"), format!("unknown backend {backend:?}"));
                }
                if group.backends[..i].contains(backend) {
                    return fail(
                        &format!("{path}.backends[{i}]"),
                        format!("backend {backend:?} is listed twice"),
                    );
                }
            }
            let rf_path = format!("{path}.replication_factor");
            if group.replication_factor == 0 {
                return fail(&rf_path, "must be at least 1".to_string());
            }
            if group.replication_factor > group.backends.len() {
                return fail(
                    &rf_path,
                    format!(
                        "{} is more than the group's {} backends",
                        group.replication_factor,
                        group.backends.len()
                    ),
                );
            }
            if let Some(tag) = &group.shard_tag {
                if let Some(problem) = bad_shard_tag(tag) {
                    return fail(&format!("{path}.shard_tag"), problem);
                }
            }
        }

        for (key, keymap) in &self.keymaps {
            let path = format!("$.keymaps{}", key_segment(key));
            if key.is_empty() {
                return fail(
                    &path,
                    format!("empty key (use {:?} to match every measurement)", crate::route::DEFAULT_KEY),
                );
            }
            match keymap {
                Keymap::Backends(names) => {
                    if names.is_empty() {
                        return fail(&path, "names no backend (a keymap needs at least one)".to_string());
                    }
                    for (i, name) in names.iter().enumerate() {
                        if !self.backends.contains_key(name) {
                            return fail(&format!("{path}[{i}]"), format!("unknown backend {name:?}"));
                        }
                        if names[..i].contains(name) {
                            return fail(
                                &format!("{path}[{i}]"),
                                format!("backend {name:?} is listed twice"),
                            );
                        }
                    }
                }
                Keymap::Group(group) if !self.shard_groups.contains_key(group) => {
                    let known = if self.shard_groups.is_empty() {
                        "no shard_groups are configured".to_string()
                    } else {
                        let names: Vec<&str> = self.shard_groups.keys().map(String::as_str).collect();
                        format!("shard_groups has {}", names.join(", "))
                    };
                    return fail(&path, format!("unknown shard group {group:?} ({known})"));
                }
                Keymap::Group(_) => {}
            }
        }

        for (list, patterns) in [
            ("forbidden_statements", &self.forbidden_statements),
            ("allowed_statements", &self.allowed_statements),
        ] {
            for (i, pattern) in patterns.iter().enumerate() {
                if let Err(e) = regex_lite::RegexBuilder::new(pattern).case_insensitive(true).build() {
                    return fail(&format!("$.{list}[{i}]"), format!("bad regex {pattern:?}: {e}"));
                }
            }
        }

        let positive = [
            ("max_body_bytes", self.max_body_bytes),
            ("backend_max_body_bytes", self.backend_max_body_bytes),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("body_read_timeout_ms", self.body_read_timeout_ms),
            ("queue_max_bytes", self.queue_max_bytes),
            ("replay_max_attempts", u64::from(self.replay_max_attempts)),
            ("replay_max_age_ms", self.replay_max_age_ms),
            ("health_check_interval_ms", self.health_check_interval_ms),
            ("health_check_fall", u64::from(self.health_check_fall)),
            ("health_check_rise", u64::from(self.health_check_rise)),
            ("request_timeout_ms", self.request_timeout_ms),
            ("backend_max_response_bytes", self.backend_max_response_bytes),
            ("replay_backoff_min_ms", self.replay_backoff_min_ms),
            ("replay_backoff_max_ms", self.replay_backoff_max_ms),
            ("pool_max_open", self.pool_max_open as u64),
            ("rebalance_points_per_chunk", self.rebalance_points_per_chunk),
        ];
        for (key, value) in positive {
            if value == 0 {
                return fail(&format!("$.{key}"), "must be at least 1".to_string());
            }
        }
        if self.replay_backoff_min_ms > self.replay_backoff_max_ms {
            return fail(
                "$.replay_backoff_min_ms",
                format!(
                    "{} is more than replay_backoff_max_ms ({})",
                    self.replay_backoff_min_ms, self.replay_backoff_max_ms
                ),
            );
        }
        if let Some(auth) = &self.auth {
            if auth.tokens.is_empty() {
                return fail(
                    "$.auth.tokens",
                    "at least one token is required (influx-proxy create token makes one)".to_string(),
                );
            }
            for (i, token) in auth.tokens.iter().enumerate() {
                let path = format!("$.auth.tokens[{i}]");
                if token.name.is_empty() {
                    return fail(&format!("{path}.name"), "must not be empty".to_string());
                }
                if let Some(j) = auth.tokens[..i].iter().position(|t| t.name == token.name) {
                    return fail(
                        &format!("{path}.name"),
                        format!("{:?} is also the name of token {j}", token.name),
                    );
                }
                if let Some(j) = auth.tokens[..i].iter().position(|t| t.sha512 == token.sha512) {
                    return fail(&format!("{path}.sha512"), format!("the same hash as token {j}"));
                }
                if token.databases.is_empty() {
                    return fail(
                        &format!("{path}.databases"),
                        "names no database (list names, or [\"*\"] for all)".to_string(),
                    );
                }
                for (k, db) in token.databases.iter().enumerate() {
                    if db.is_empty() {
                        return fail(&format!("{path}.databases[{k}]"), "must not be empty".to_string());
                    }
                    if db == "*" && token.databases.len() > 1 {
                        return fail(
                            &format!("{path}.databases[{k}]"),
                            "\"*\" (all databases) must be alone".to_string(),
                        );
                    }
                }
                if token.permissions.is_empty() {
                    return fail(
                        &format!("{path}.permissions"),
                        "names no permission (read, write, admin)".to_string(),
                    );
                }
            }
            for (i, open) in auth.open.iter().enumerate() {
                if !open.starts_with('/') {
                    return fail(
                        &format!("$.auth.open[{i}]"),
                        format!("{open:?} is not a path (/ping, ...)"),
                    );
                }
            }
        }
        if self.queue_max_bytes < self.max_body_bytes {
            return fail(
                "$.queue_max_bytes",
                format!(
                    "{} is less than max_body_bytes ({}): a write that large could never be queued",
                    self.queue_max_bytes, self.max_body_bytes
                ),
            );
        }
        Ok(())
    }
}

/// Why `name` cannot name a backend (it becomes a directory name), if it can't.
fn bad_backend_name(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a backend name must not be empty".to_string());
    }
    if name == "." || name == ".." {
        return Some(format!("backend name {name:?} is not allowed (it names a directory)"));
    }
    if !name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-')) {
        return Some(format!(
            "backend name {name:?} may hold only letters, digits, '_', '.' and '-' (it names a directory)"
        ));
    }
    None
}

/// Why `tag` cannot be a group's `shard_tag`, if it can't.
fn bad_shard_tag(tag: &str) -> Option<String> {
    if tag.is_empty() {
        return Some("must not be empty (leave shard_tag out to shard by measurement)".to_string());
    }
    if tag == "time" {
        return Some(
            "\"time\" cannot be a shard tag (InfluxDB 1.x refuses points with a tag named time)".to_string(),
        );
    }
    if tag.chars().any(char::is_control) {
        return Some(format!("{tag:?} holds a control character (no point can carry such a tag)"));
    }
    None
}

/// `.key` for plain keys, `["key"]` (JSON string syntax) for any other.
pub(crate) fn key_segment(key: &str) -> String {
    let plain = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
    if plain {
        format!(".{key}")
    } else {
        format!("[{}]", serde_json::Value::from(key))
    }
}

/// serde_path_to_error's path in this module's notation (`$.a.b[1]`).
fn json_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::from("$");
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => out.push_str(&key_segment(key)),
            Segment::Unknown => out.push_str(".?"),
        }
    }
    out
}

/// Joins a possibly multi-line message into one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        r#"{"backends": {"a": {"url": "http://127.0.0.1:8086"}}, "keymaps": {"_default_": ["a"]}}"#;

    /// The error for `text` as displayed, e.g. `proxy.json: $.listen: ...`.
    fn error(text: &str) -> String {
        Config::parse("proxy.json", text).unwrap_err().to_string()
    }

    /// `MINIMAL` with `"key": value` added at the top level.
    fn with(key: &str, value: &str) -> String {
        format!(r#"{{"{key}": {value}, {}"#, &MINIMAL[1..])
    }

    #[test]
    fn auth_is_off_by_default_and_checked_with_json_paths() {
        assert_eq!(Config::parse("p", MINIMAL).unwrap().auth, None);
        let hash = "ab".repeat(64);
        let token = |extra: &str| {
            format!(
                r#"{{"name":"telegraf","sha512":"{hash}","databases":["telegraf"],"permissions":["write"]{extra}}}"#
            )
        };
        let config = Config::parse("p", &with("auth", &format!(r#"{{"tokens":[{}]}}"#, token("")))).unwrap();
        let auth = config.auth.unwrap();
        assert_eq!(auth.open, vec!["/ping".to_string(), "/health".to_string()]);
        assert_eq!(auth.tokens[0].sha512.0, [0xab; 64]);
        assert_eq!(auth.tokens[0].permissions, vec![Permission::Write]);
        let auth_error = |auth: &str| error(&with("auth", auth));
        let one = |t: &str| format!(r#"{{"tokens":[{t}]}}"#);
        assert_eq!(
            auth_error(r#"{"tokens":[]}"#),
            "proxy.json: $.auth.tokens: at least one token is required (influx-proxy create token makes one)"
        );
        let e = auth_error(&one(&token("").replace(&hash, "abc")));
        assert!(e.starts_with("proxy.json: $.auth.tokens[0].sha512: expected the SHA-512"), "{e}");
        let e = auth_error(&one(&token("").replace(&hash, &"zz".repeat(64))));
        assert!(e.starts_with("proxy.json: $.auth.tokens[0].sha512: "), "{e}");
        let e = auth_error(&one(&token("").replace("\"write\"", "\"delete\"")));
        assert!(
            e.starts_with("proxy.json: $.auth.tokens[0].permissions[0]: unknown variant `delete`"),
            "{e}"
        );
        let e = auth_error(&one(&token(r#","extra":1"#)));
        assert!(e.starts_with("proxy.json: $.auth.tokens[0].extra: unknown field `extra`"), "{e}");
        assert_eq!(
            auth_error(&one(&token("").replace(r#"["telegraf"]"#, r#"["*","x"]"#))),
            "proxy.json: $.auth.tokens[0].databases[0]: \"*\" (all databases) must be alone"
        );
        assert!(auth_error(&one(&token("").replace(r#"["telegraf"]"#, "[]")))
            .contains("$.auth.tokens[0].databases:"));
        assert!(auth_error(&one(&token("").replace(r#"["write"]"#, "[]")))
            .contains("$.auth.tokens[0].permissions:"));
        let two = format!(
            r#"{{"tokens":[{},{}]}}"#,
            token(""),
            token("").replace("telegraf\",\"sha", "t2\",\"sha")
        );
        assert_eq!(auth_error(&two), "proxy.json: $.auth.tokens[1].sha512: the same hash as token 0");
        let open = format!(r#"{{"tokens":[{}],"open":["ping"]}}"#, token(""));
        assert_eq!(auth_error(&open), "proxy.json: $.auth.open[0]: \"ping\" is not a path (/ping, ...)");
    }

    #[test]
    fn backend_credentials_are_checked_and_need_auth() {
        let hash = "ab".repeat(64);
        let auth = format!(
            r#""auth": {{"tokens":[{{"name":"t","sha512":"{hash}","databases":["*"],"permissions":["read"]}}]}}"#
        );
        let config = |backend: &str, auth: &str| {
            format!(
                r#"{{"backends": {{"a": {{"url": "http://127.0.0.1:8086"{backend}}}}}, "keymaps": {{"_default_": ["a"]}}{auth}}}"#
            )
        };
        let ok = |backend: &str| Config::parse("p", &config(backend, &format!(", {auth}"))).map(|_| ());
        let problem = |backend: &str| ok(backend).unwrap_err().to_string();
        assert_eq!(ok(r#", "username": "u", "password_env": "P""#), Ok(()));
        assert_eq!(ok(r#", "token_file": "/run/secrets/a""#), Ok(()));
        assert_eq!(
            problem(r#", "username": "u""#),
            "p: $.backends.a.username: needs password_env or password_file"
        );
        assert_eq!(
            problem(r#", "password_env": "P""#),
            "p: $.backends.a.password_env: a password needs a username"
        );
        assert_eq!(
            problem(r#", "username": "u", "password_env": "P", "password_file": "f""#),
            "p: $.backends.a.password_file: give password_env or password_file, not both"
        );
        assert_eq!(
            problem(r#", "username": "u", "password_env": "P", "token_env": "T""#),
            "p: $.backends.a.token_env: give username and password, or a token, not both"
        );
        assert_eq!(problem(r#", "token_env": """#), "p: $.backends.a.token_env: must not be empty");
        let e = Config::parse("p", &config(r#", "token_env": "T""#, "")).unwrap_err().to_string();
        assert!(e.starts_with("p: $.backends.a: backend credentials are used only with \"auth\""), "{e}");
        // Reading: errors name the key and the source; a file's line ending is dropped.
        let mut c =
            Config::parse("p", &config(r#", "username": "u", "password_env": "P""#, &format!(", {auth}")))
                .unwrap();
        let e = c.resolve_credentials("p", &|_| Err("not set".into())).unwrap_err().to_string();
        assert_eq!(e, "p: $.backends.a.password_env: environment variable P: not set");
        let e = c.resolve_credentials("p", &|_| Ok("\n".into())).unwrap_err().to_string();
        assert_eq!(e, "p: $.backends.a.password_env: environment variable P: is empty");
        c.resolve_credentials("p", &|_| Ok("pw\r\n".into())).unwrap();
        assert_eq!(
            c.backends["a"].credentials,
            Some(crate::auth::BackendCredentials::Basic { username: "u".into(), password: "pw".into() })
        );
    }

    /// `gzip` per backend: off unless set, a boolean (else an error naming
    /// the key's path).
    #[test]
    fn gzip_is_per_backend_and_off_by_default() {
        let config = Config::parse("proxy.json", MINIMAL).unwrap();
        assert!(!config.backends["a"].gzip);
        let text = r#"{"backends": {"a": {"url": "http://x:1", "gzip": true}, "b": {"url": "http://x:2"}},
                       "keymaps": {"_default_": ["a", "b"]}}"#;
        let config = Config::parse("proxy.json", text).unwrap();
        assert_eq!((config.backends["a"].gzip, config.backends["b"].gzip), (true, false));
        assert_eq!(
            error(r#"{"backends": {"a": {"url": "http://x:1", "gzip": 1}}, "keymaps": {"_default_": ["a"]}}"#),
            "proxy.json: $.backends.a.gzip: invalid type: integer `1`, expected a boolean at line 1 column 50"
        );
    }

    /// TLS: a backend's own `tls` wins over `backend_tls`; `tls` on an
    /// `http://` backend, half a client certificate and empty file names are
    /// errors naming the key.
    #[test]
    fn tls_settings_per_backend_and_global() {
        let text = r#"{"backend_tls": {"ca_file": "ca.pem"},
            "listen_tls": {"cert_file": "proxy.pem", "key_file": "proxy.key"},
            "backends": {"a": {"url": "https://a.example:8086"},
                         "b": {"url": "https://b.example", "tls": {"ca_file": "b-ca.pem",
                               "client_cert_file": "me.pem", "client_key_file": "me.key"}},
                         "c": {"url": "http://c.example"}},
            "keymaps": {"_default_": ["a", "b", "c"]}}"#;
        let config = Config::parse("proxy.json", text).unwrap();
        let addrs = config.backend_addrs().unwrap();
        assert_eq!(addrs[0].tls.as_ref().unwrap().ca_file.as_deref(), Some("ca.pem"));
        let b = addrs[1].tls.as_ref().unwrap();
        assert_eq!(
            (b.ca_file.as_deref(), b.client_cert_file.as_deref(), b.client_key_file.as_deref()),
            (Some("b-ca.pem"), Some("me.pem"), Some("me.key"))
        );
        assert_eq!(addrs[2].tls, None);
        assert_eq!(config.listen_tls.as_ref().unwrap().cert_file, "proxy.pem");

        assert_eq!(
            error(
                r#"{"backends": {"a": {"url": "http://x:1", "tls": {}}}, "keymaps": {"_default_": ["a"]}}"#
            ),
            "proxy.json: $.backends.a.tls: is set but the url \"http://x:1\" is http:// (use https://)"
        );
        assert_eq!(
            error(
                r#"{"backends": {"a": {"url": "https://x:1", "tls": {"client_cert_file": "c.pem"}}},
                    "keymaps": {"_default_": ["a"]}}"#
            ),
            "proxy.json: $.backends.a.tls.client_key_file: is required with client_cert_file (mutual TLS needs both)"
        );
        assert_eq!(
            error(&with("backend_tls", r#"{"ca_file": ""}"#)),
            "proxy.json: $.backend_tls.ca_file: must not be empty"
        );
        assert_eq!(
            error(&with("listen_tls", r#"{"cert_file": "a.pem", "key_file": ""}"#)),
            "proxy.json: $.listen_tls.key_file: must not be empty"
        );
        assert!(error(&with("listen_tls", r#"{"cert_file": "a.pem"}"#)).contains("missing field `key_file`"));
        assert!(error(&with("backend_tls", r#"{"verify": false}"#)).contains("unknown field `verify`"));
    }

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../config/proxy.json");
        let config = Config::parse("config/proxy.json", text).unwrap();
        assert_eq!(config.listen, "127.0.0.1:7076");
        assert_eq!(config.data_dir, "data");
        assert_eq!(config.backend_names(), ["a", "b"]);
        let addrs = config.backend_addrs().unwrap();
        assert_eq!(addrs[1].authority(), "127.0.0.1:8087");
        let router = config.router().unwrap();
        assert_eq!(router.replicas("db", "cpu", None), Some(vec![0, 1]));
        assert_eq!(router.replicas("db", "cpu.load.1", None), Some(vec![1]));
        assert_eq!(router.replicas("db", "mem", None), Some(vec![0, 1]));
        assert!(config.shard_groups.is_empty());
    }

    #[test]
    fn the_shard_group_example_config_parses() {
        let text = include_str!("../config/shard-groups.json");
        let config = Config::parse("config/shard-groups.json", text).unwrap();
        assert_eq!(config.backend_names(), ["a", "b", "c", "d", "e"]);
        let groups = config.shard_groups().unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(
            (groups[0].name(), groups[0].backends(), groups[0].replication_factor()),
            ("main", &[0, 1, 2][..], 2)
        );
        assert_eq!(groups[1].shard_tag(), Some("customer_id"));
        let router = config.router().unwrap();
        assert!(matches!(router.route("cpu.load"), Some(crate::route::Route::Set(s)) if *s == vec![1]));
        assert!(
            matches!(router.route("requests"), Some(crate::route::Route::Group(g)) if g.name() == "tenants")
        );
        assert!(matches!(router.route("mem"), Some(crate::route::Route::Group(g)) if g.name() == "main"));
        // placement's golden placement of (telegraf, cpu) over a, b, c with RF 2.
        assert_eq!(router.replicas("telegraf", "cpu", None), Some(vec![1, 2]));
    }

    /// `MINIMAL`'s backends a, b, c with these `shard_groups` and `keymaps`.
    fn groups(shard_groups: &str, keymaps: &str) -> String {
        format!(
            r#"{{"backends": {{"a": {{"url": "http://x:1"}}, "b": {{"url": "http://x:2"}}, "c": {{"url": "http://x:3"}}}},
                "shard_groups": {shard_groups}, "keymaps": {keymaps}}}"#
        )
    }

    #[test]
    fn shard_groups_are_checked() {
        let ok = groups(
            r#"{"main": {"backends": ["c", "a", "b"], "replication_factor": 2},
                "t": {"backends": ["a", "b"], "replication_factor": 1, "shard_tag": "customer"}}"#,
            r#"{"req": "t", "cpu": ["a"], "_default_": "main"}"#,
        );
        let c = Config::parse("proxy.json", &ok).unwrap();
        assert_eq!(c.keymaps["req"], Keymap::Group("t".into()));
        assert_eq!(c.shard_groups["t"].shard_tag.as_deref(), Some("customer"));
        let cases = [
            (
                r#"{"main": {"backends": ["a", "x"], "replication_factor": 1}}"#,
                r#"proxy.json: $.shard_groups.main.backends[1]: unknown backend "x""#,
            ),
            (
                r#"{"main": {"backends": ["a", "b", "a"], "replication_factor": 1}}"#,
                r#"proxy.json: $.shard_groups.main.backends[2]: backend "a" is listed twice"#,
            ),
            (
                r#"{"main": {"backends": [], "replication_factor": 1}}"#,
                "proxy.json: $.shard_groups.main.backends: names no backend (a shard group needs at least one)",
            ),
            (
                r#"{"main": {"backends": ["a", "b"], "replication_factor": 0}}"#,
                "proxy.json: $.shard_groups.main.replication_factor: must be at least 1",
            ),
            (
                r#"{"main": {"backends": ["a", "b"], "replication_factor": 3}}"#,
                "proxy.json: $.shard_groups.main.replication_factor: 3 is more than the group's 2 backends",
            ),
            (
                r#"{"main": {"backends": ["a"], "replication_factor": 1, "shard_tag": ""}}"#,
                "proxy.json: $.shard_groups.main.shard_tag: must not be empty (leave shard_tag out to shard by measurement)",
            ),
            (
                r#"{"main": {"backends": ["a"], "replication_factor": 1, "shard_tag": "time"}}"#,
                r#"proxy.json: $.shard_groups.main.shard_tag: "time" cannot be a shard tag (InfluxDB 1.x refuses points with a tag named time)"#,
            ),
            (
                r#"{"main": {"backends": ["a"], "replication_factor": 1, "shard_tag": "a\nb"}}"#,
                r#"proxy.json: $.shard_groups.main.shard_tag: "a\nb" holds a control character (no point can carry such a tag)"#,
            ),
            (
                r#"{"": {"backends": ["a"], "replication_factor": 1}}"#,
                r#"proxy.json: $.shard_groups[""]: a shard group name must not be empty"#,
            ),
        ];
        for (shard_groups, want) in cases {
            assert_eq!(error(&groups(shard_groups, r#"{"_default_": ["a"]}"#)), want, "{shard_groups}");
        }
        let e = error(&groups(
            r#"{"main": {"backends": ["a"], "replication_factor": -1}}"#,
            r#"{"_default_": ["a"]}"#,
        ));
        assert!(
            e.starts_with("proxy.json: $.shard_groups.main.replication_factor: invalid value: integer `-1`"),
            "{e}"
        );
        let e = error(&groups(
            r#"{"main": {"backends": ["a"], "replication_factor": 1, "rf": 2}}"#,
            r#"{"_default_": ["a"]}"#,
        ));
        assert!(e.starts_with("proxy.json: $.shard_groups.main.rf: unknown field `rf`"), "{e}");
        let e = error(&groups(r#"{"main": {"backends": ["a"]}}"#, r#"{"_default_": ["a"]}"#));
        assert!(e.starts_with("proxy.json: $.shard_groups.main: missing field `replication_factor`"), "{e}");
    }

    /// A replica set names each backend once (twice would write every
    /// point twice to it and count it as two replicas).
    #[test]
    fn a_keymap_naming_a_backend_twice_is_an_error() {
        assert_eq!(
            error(&groups("{}", r#"{"cpu": ["a", "b", "a"], "_default_": ["c"]}"#)),
            r#"proxy.json: $.keymaps.cpu[2]: backend "a" is listed twice"#
        );
    }

    #[test]
    fn a_keymap_naming_an_unknown_group_or_neither_is_an_error() {
        let main = r#"{"main": {"backends": ["a", "b"], "replication_factor": 2}}"#;
        assert_eq!(
            error(&groups(main, r#"{"req": "tenants", "_default_": "main"}"#)),
            r#"proxy.json: $.keymaps.req: unknown shard group "tenants" (shard_groups has main)"#
        );
        assert_eq!(
            error(r#"{"backends": {"a": {"url": "http://x:1"}}, "keymaps": {"_default_": "main"}}"#),
            r#"proxy.json: $.keymaps._default_: unknown shard group "main" (no shard_groups are configured)"#
        );
        let e = error(&groups(main, r#"{"_default_": 3}"#));
        assert!(
            e.starts_with(
                "proxy.json: $.keymaps._default_: invalid type: integer `3`, expected a list of backend names or the name of a shard group"
            ),
            "{e}"
        );
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let c = Config::parse("proxy.json", MINIMAL).unwrap();
        assert_eq!(c.listen, "127.0.0.1:7076");
        assert_eq!(c.data_dir, "data");
        assert_eq!(c.forbidden_statements.len(), crate::statement::DEFAULT_FORBIDDEN.len());
        assert!(c.allowed_statements.is_empty());
        assert_eq!(
            (c.max_body_bytes, c.queue_max_bytes, c.health_check_interval_ms),
            (25_000_000, 1 << 30, 1000)
        );
        assert_eq!((c.health_check_fall, c.health_check_rise, c.request_timeout_ms), (3, 2, 10_000));
        assert_eq!((c.replay_backoff_min_ms, c.replay_backoff_max_ms, c.pool_max_idle), (500, 10_000, 8));
        assert_eq!((c.replay_max_attempts, c.replay_max_age_ms), (10, 86_400_000));
        assert_eq!(c.backend_max_body_bytes, 8_388_608);
        assert_eq!((c.header_read_timeout_ms, c.body_read_timeout_ms), (60_000, 30_000));
    }

    #[test]
    fn json_syntax_errors_have_path_dollar_and_a_position() {
        assert_eq!(
            error("{\n  \"backends\": {,\n}"),
            "proxy.json: $: key must be a string at line 2 column 16"
        );
        assert!(error("").starts_with("proxy.json: $: EOF while parsing"), "{}", error(""));
        assert!(error(&format!("{MINIMAL} x")).starts_with("proxy.json: $: trailing characters"));
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let e = error(&with("bakends", "{}"));
        assert!(e.starts_with("proxy.json: $.bakends: unknown field `bakends`, expected one of"), "{e}");
        let e =
            error(r#"{"backends": {"a": {"url": "http://x", "uri": "y"}}, "keymaps": {"_default_": ["a"]}}"#);
        assert!(
            e.starts_with("proxy.json: $.backends.a.uri: unknown field `uri`, expected one of `url`"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_are_named_with_their_path() {
        let e = error(&with("max_body_bytes", r#""25MB""#));
        assert!(
            e.starts_with(r#"proxy.json: $.max_body_bytes: invalid type: string "25MB", expected u64"#),
            "{e}"
        );
        let e = error(r#"{"backends": {"a": {"url": "http://x"}}, "keymaps": {"cpu.load": ["a", 2]}}"#);
        assert!(e.starts_with(r#"proxy.json: $.keymaps["cpu.load"][1]: invalid type: integer `2`"#), "{e}");
        let e = error(r#"{"backends": {"a": {"url": 8086}}, "keymaps": {}}"#);
        assert!(e.starts_with("proxy.json: $.backends.a.url: invalid type: integer `8086`"), "{e}");
    }

    #[test]
    fn missing_keys_are_named() {
        assert!(error(r#"{"backends": {}}"#).starts_with("proxy.json: $: missing field `keymaps`"));
        let e = error(r#"{"backends": {"a": {}}, "keymaps": {}}"#);
        assert!(e.starts_with("proxy.json: $.backends.a: missing field `url`"), "{e}");
    }

    #[test]
    fn backends_are_checked() {
        assert_eq!(
            error(r#"{"backends": {}, "keymaps": {"_default_": ["a"]}}"#),
            "proxy.json: $.backends: at least one backend is required"
        );
        let e = error(r#"{"backends": {"a/b": {"url": "http://x"}}, "keymaps": {"_default_": ["a/b"]}}"#);
        assert!(e.starts_with(r#"proxy.json: $.backends["a/b"]: backend name "a/b" may hold only"#), "{e}");
        let e = error(r#"{"backends": {"..": {"url": "http://x"}}, "keymaps": {"_default_": [".."]}}"#);
        assert!(e.starts_with(r#"proxy.json: $.backends[".."]: backend name ".." is not allowed"#), "{e}");
        let e = error(r#"{"backends": {"": {"url": "http://x"}}, "keymaps": {"_default_": [""]}}"#);
        assert_eq!(e, r#"proxy.json: $.backends[""]: a backend name must not be empty"#);
        assert_eq!(
            error(r#"{"backends": {"a-1.x": {"url": "ftp://x"}}, "keymaps": {"_default_": ["a-1.x"]}}"#),
            r#"proxy.json: $.backends["a-1.x"].url: "ftp://x" is not an http:// or https:// URL"#
        );
    }

    #[test]
    fn keymaps_are_checked() {
        let backends = r#""backends": {"a": {"url": "http://x"}, "b": {"url": "http://y"}}"#;
        assert_eq!(
            error(&format!(r#"{{{backends}, "keymaps": {{}}}}"#)),
            r#"proxy.json: $.keymaps: at least one keymap is required (e.g. {"_default_": [...]})"#
        );
        assert_eq!(
            error(&format!(r#"{{{backends}, "keymaps": {{"cpu": ["a", "c"]}}}}"#)),
            r#"proxy.json: $.keymaps.cpu[1]: unknown backend "c""#
        );
        assert_eq!(
            error(&format!(r#"{{{backends}, "keymaps": {{"cpu": []}}}}"#)),
            "proxy.json: $.keymaps.cpu: names no backend (a keymap needs at least one)"
        );
        assert_eq!(
            error(&format!(r#"{{{backends}, "keymaps": {{"": ["a"]}}}}"#)),
            r#"proxy.json: $.keymaps[""]: empty key (use "_default_" to match every measurement)"#
        );
    }

    #[test]
    fn statement_regexes_must_compile() {
        let e = error(&with("forbidden_statements", r#"["^grant", "drop", "(unclosed"]"#));
        assert!(e.starts_with(r#"proxy.json: $.forbidden_statements[2]: bad regex "(unclosed": "#), "{e}");
        assert!(!e.contains('\n'));
        let e = error(&with("allowed_statements", r#"["[z-a]"]"#));
        assert!(e.starts_with("proxy.json: $.allowed_statements[0]: bad regex"), "{e}");
    }

    #[test]
    fn listen_must_be_a_socket_address() {
        for bad in [r#""localhost:7076""#, r#""127.0.0.1""#, r#""127.0.0.1:99999""#] {
            let e = error(&with("listen", bad));
            assert!(e.starts_with(&format!("proxy.json: $.listen: {bad} is not a socket address")), "{e}");
        }
        assert!(Config::parse("p", &with("listen", r#""[::]:7076""#)).is_ok());
    }

    #[test]
    fn limits_must_be_positive_and_consistent() {
        for key in [
            "max_body_bytes",
            "backend_max_body_bytes",
            "header_read_timeout_ms",
            "body_read_timeout_ms",
            "queue_max_bytes",
            "replay_max_attempts",
            "replay_max_age_ms",
            "health_check_interval_ms",
            "health_check_fall",
            "health_check_rise",
            "request_timeout_ms",
            "backend_max_response_bytes",
            "replay_backoff_min_ms",
            "replay_backoff_max_ms",
            "pool_max_open",
            "rebalance_points_per_chunk",
        ] {
            assert_eq!(error(&with(key, "0")), format!("proxy.json: $.{key}: must be at least 1"));
        }
        assert_eq!(
            error(&with("replay_backoff_min_ms", "20000")),
            "proxy.json: $.replay_backoff_min_ms: 20000 is more than replay_backoff_max_ms (10000)"
        );
        assert!(error(&with("queue_max_bytes", "1000"))
            .starts_with("proxy.json: $.queue_max_bytes: 1000 is less than max_body_bytes (25000000)"));
        assert_eq!(error(&with("data_dir", r#""""#)), "proxy.json: $.data_dir: must not be empty");
        assert!(Config::parse("p", &with("pool_max_idle", "0")).is_ok());
        let c = Config::parse("p", &with("backend_max_response_bytes", "1000")).unwrap();
        assert_eq!(c.backend_max_response_bytes, 1000);
        assert_eq!(Config::parse("p", MINIMAL).unwrap().backend_max_response_bytes, 64 << 20);
    }

    #[test]
    fn errors_about_in_memory_configs_leave_the_file_out() {
        let mut c = Config::parse("p", MINIMAL).unwrap();
        c.keymaps.insert("cpu".into(), Keymap::Backends(vec!["zz".into()]));
        assert_eq!(
            c.router().unwrap_err().to_string(),
            r#"$.keymaps: keymap "cpu" names unknown backend "zz""#
        );
        c.shard_groups.insert(
            "g".into(),
            ShardGroupConfig { backends: vec!["a".into()], replication_factor: 2, shard_tag: None },
        );
        assert!(c
            .router()
            .unwrap_err()
            .to_string()
            .starts_with(r#"$.shard_groups.g: shard group "g": replication_factor 2"#));
    }
}
