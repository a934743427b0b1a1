//! The native host: smol executor, async-h1 server and client, file storage,
//! timers and signals. Everything here performs IO; the core does not.
//!
//! - [`transport`]: [`NativeTransport`], the HTTP/1.1 client of the backends.
//! - [`storage`]: [`FsStorage`], the write queue's files.
//! - [`server`]: [`serve`], the HTTP/1.1 server the clients talk to.
//! - [`tls`]: TLS (rustls, the shared [`crate::host_tls`]) over smol's TCP: `https://` backends and the TLS listener.
//! - [`run`]: the whole proxy: configuration, listener, [`Proxy`], background
//!   health checks and replay, signals.
//! - [`NativeHost`]: the primitives the shared background loops need
//!   ([`crate::host`]): smol timers, the system clocks, the shutdown signal.
//! - [`worker_pool`]: [`WorkerPool`], one worker thread per core for the CPU
//!   of requests.
//!
//! [`Proxy`] is single-threaded (`Rc`/`RefCell` inside): sockets, routing,
//! delivery, the write queues and the background loops run on one thread, on
//! a `smol::LocalExecutor`. The per-line CPU of a write (gzip decoding and
//! validation of bodies of at least [`OFFLOAD_MIN_BYTES`]) runs on the
//! [`WorkerPool`], so the proxy uses every core ([`handle_offloaded`]).
//! Blocking file IO runs on smol's blocking thread pool, DNS lookups too.

pub mod server;
pub mod storage;
pub mod tls;
pub mod transport;
pub mod worker_pool;

pub use server::{serve, ServerOptions};
pub use storage::FsStorage;
pub use transport::NativeTransport;
pub use worker_pool::WorkerPool;

use crate::config::Config;
use crate::http::{Request, Response};
use crate::proxy::Proxy;
use futures_lite::{FutureExt, StreamExt};
use smol::channel::{Receiver, Sender};
use smol::{LocalExecutor, Timer};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The native proxy, as run by `influx-proxy`.
type NativeProxy = Proxy<NativeTransport, FsStorage>;

/// The time as the core wants it: ms since the Unix epoch (0 if the clock is
/// before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The monotonic clock given to the core ([`Proxy::set_clock`]): µs since
/// the first call in this process (`std::time::Instant`).
pub fn monotonic_us() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// The native [`crate::host::Host`]: smol timers, the system clocks, and a
/// stop channel closed at shutdown (sleeps end early, loops end after their
/// current step).
pub struct NativeHost {
    stop: Receiver<()>,
}

impl NativeHost {
    /// A host whose loops stop once every sender of `stop` is dropped.
    pub fn new(stop: Receiver<()>) -> NativeHost {
        NativeHost { stop }
    }
}

impl crate::host::Host for NativeHost {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn monotonic_us(&self) -> u64 {
        monotonic_us()
    }

    async fn sleep(&self, ms: u64) {
        async {
            Timer::after(Duration::from_millis(ms)).await;
        }
        .or(async {
            self.stop.recv().await.ok();
        })
        .await
    }

    fn stopping(&self) -> bool {
        self.stop.is_closed()
    }
}

/// Reads and validates the configuration file. Errors are one line naming the
/// file: `FILE: cannot read ...` or [`crate::config::ConfigError`]'s
/// `FILE: $.path: problem`.
pub fn load_config(path: &str) -> Result<Config, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| one_line(&format!("{path}: cannot read the file: {e}")))?;
    let mut config = Config::parse(path, &text).map_err(|e| one_line(&e.to_string()))?;
    config
        .resolve_credentials(path, &crate::host_secrets::read_secret)
        .map_err(|e| one_line(&e.to_string()))?;
    Ok(config)
}

/// Reads the configuration file whole for a reload. Error: one line,
/// `FILE: cannot read the file: ...`.
fn read_config_file(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| one_line(&format!("{path}: cannot read the file: {e}")))
}

/// Binds the configured `listen` address. Errors are one line naming the file
/// and `$.listen`, e.g. `config/proxy.json: $.listen: address 127.0.0.1:7076
/// already in use`.
pub fn bind(config_file: &str, listen: &str) -> Result<std::net::TcpListener, String> {
    std::net::TcpListener::bind(listen).map_err(|e| {
        let problem = match e.kind() {
            std::io::ErrorKind::AddrInUse => format!("address {listen} already in use"),
            std::io::ErrorKind::PermissionDenied => format!("no permission to listen on {listen}"),
            _ => format!("cannot listen on {listen}: {e}"),
        };
        one_line(&format!("{config_file}: $.listen: {problem}"))
    })
}

/// Runs the proxy described by the configuration file until SIGINT or SIGTERM,
/// applying the file again on SIGHUP or `POST /reload` from a loopback
/// client ([`Proxy::reload_file`]), then shuts down gracefully (stop accepting, finish requests in flight for
/// at most 10 s, let each replay step in progress end). A second signal during
/// the shutdown stops at once.
///
/// Prints `influx-proxy <version> listening on <addr>` to stderr once serving
/// (`listening on https://<addr>` with `listen_tls`).
/// Errors (one line, for stderr, exit status 1): the configuration file
/// unreadable or invalid, a TLS file unreadable or unusable ([`crate::host_tls::check`]), the address unavailable, the write queues unable to
/// open, the signal handlers unable to install.
pub fn run(config_path: &str) -> Result<(), String> {
    let config = load_config(config_path)?;
    let tls = crate::host_tls::check(config_path, &config)?;
    let listener = bind(config_path, &config.listen)?;
    let ex = LocalExecutor::new();
    smol::block_on(ex.run(serve_proxy(&ex, config_path, config, listener, tls)))
}

async fn serve_proxy(
    ex: &LocalExecutor<'_>,
    config_path: &str,
    config: Config,
    listener: std::net::TcpListener,
    (backend_tls, listen_tls): (
        crate::host_tls::ClientConfigs,
        Option<std::sync::Arc<futures_rustls::rustls::ServerConfig>>,
    ),
) -> Result<(), String> {
    let listener = smol::net::TcpListener::try_from(listener)
        .map_err(|e| one_line(&format!("{config_path}: $.listen: {e}")))?;
    let local_addr = listener.local_addr().map_or_else(|_| config.listen.clone(), |a| a.to_string());
    let mut signals = async_signal::Signals::new([async_signal::Signal::Int, async_signal::Signal::Term])
        .map_err(|e| one_line(&format!("cannot install the signal handlers: {e}")))?;
    // Installed before the write queues open (slow with a large backlog): a
    // SIGHUP meanwhile would otherwise kill the proxy (its default action);
    // it is kept and applied once the proxy runs.
    let mut hangups = async_signal::Signals::new([async_signal::Signal::Hup])
        .map_err(|e| one_line(&format!("cannot install the signal handlers: {e}")))?;

    let transport = NativeTransport::new(config.request_timeout_ms, config.pool_max_idle)
        .with_max_open(config.pool_max_open)
        .with_max_response_bytes(config.backend_max_response_bytes)
        .with_tls(backend_tls);
    let storage = FsStorage::new(&config.data_dir);
    let options = ServerOptions { tls: listen_tls, ..ServerOptions::from_config(&config) };
    let data_dir = config.data_dir.clone();
    let mut proxy = Proxy::open(config, transport, storage)
        .await
        .map_err(|e| one_line(&format!("cannot open the write queues in {data_dir}: {e}")))?;
    proxy.set_clock(Rc::new(monotonic_us));
    proxy.set_config_file(config_path.to_string(), Rc::new(read_config_file));
    proxy.set_secret_reader(Rc::new(crate::host_secrets::read_secret));
    proxy.set_log(Rc::new(|line: &str| eprintln!("influx-proxy: {line}")));
    let proxy: Rc<NativeProxy> = Rc::new(proxy);

    // Closed at shutdown: background loops stop after their current step.
    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
    let host = Rc::new(NativeHost::new(stop_rx));
    // Every backend's health-check and replay loops, now and for each
    // backend a reload adds; the replay tasks are awaited at shutdown.
    let replay_tasks: Rc<RefCell<Vec<smol::Task<()>>>> = Rc::default();
    let loop_starter = {
        let (p, h, tasks) = (proxy.clone(), host.clone(), replay_tasks.clone());
        let spawn = move |backend: usize, kind: crate::host::LoopKind| {
            let (p, h) = (p.clone(), h.clone());
            let task = ex.spawn(async move { crate::host::run_loop(&*h, &*p, backend, kind).await });
            match kind {
                crate::host::LoopKind::Replay => tasks.borrow_mut().push(task),
                crate::host::LoopKind::HealthCheck => task.detach(),
            }
        };
        let (p, h) = (proxy.clone(), host.clone());
        async move { crate::host::run_backend_loops(&*h, &*p, spawn).await }
    };

    // SIGHUP: re-read the configuration file and apply it (logged by the proxy).
    {
        let proxy = proxy.clone();
        ex.spawn(async move {
            while hangups.next().await.is_some() {
                // The outcome is logged and shown in /health.
                let _ = proxy.reload_file(now_ms()).await;
            }
        })
        .detach();
    }

    // First signal: graceful shutdown; second: stop at once.
    let (first_tx, first_rx) = smol::channel::bounded::<()>(1);
    let (second_tx, second_rx) = smol::channel::bounded::<()>(1);
    ex.spawn(async move {
        let mut senders: Vec<Sender<()>> = vec![first_tx, second_tx];
        while !senders.is_empty() && signals.next().await.is_some() {
            senders.remove(0);
        }
    })
    .detach();

    let workers = Rc::new(
        WorkerPool::per_core().map_err(|e| one_line(&format!("cannot start the worker threads: {e}")))?,
    );
    let scheme = if options.tls.is_some() { "https://" } else { "" };
    eprintln!("influx-proxy {} listening on {scheme}{local_addr}", crate::VERSION);
    let handler = {
        let proxy = proxy.clone();
        move |request| {
            let (proxy, workers) = (proxy.clone(), workers.clone());
            async move { handle_offloaded(&proxy, &workers, request).await }
        }
    };
    let shutdown = async move {
        first_rx.recv().await.ok();
    };
    let graceful = async {
        let busy = serve(ex, listener, handler, options, shutdown)
            .or(async {
                loop_starter.await;
                std::future::pending().await
            })
            .await;
        if busy > 0 {
            eprintln!(
                "influx-proxy: {busy} connection(s) still busy after the shutdown grace period, closed"
            );
        }
        drop(stop_tx);
        let replay_done = async {
            let tasks = std::mem::take(&mut *replay_tasks.borrow_mut());
            for task in tasks {
                task.await;
            }
        };
        replay_done
            .or(async {
                Timer::after(Duration::from_secs(5)).await;
            })
            .await;
        // The moves' progress not yet saved (the move loop was dropped with
        // the loop starter).
        proxy.flush_moves().await;
    };
    graceful
        .or(async {
            second_rx.recv().await.ok();
            eprintln!("influx-proxy: second signal, stopping at once");
        })
        .await;
    Ok(())
}

/// Write bodies (as sent, in bytes) from which validation runs on the
/// [`WorkerPool`]: below, it takes less than handing it over (a 8 KiB body is
/// about 80 lines, 10 µs of validation).
pub const OFFLOAD_MIN_BYTES: usize = 8 * 1024;

/// Answers `request` as [`Proxy::handle`] does, the body of a write of at
/// least [`OFFLOAD_MIN_BYTES`] decoded and validated on `workers` first
/// ([`Proxy::write_body_job`], [`Proxy::handle_prepared`]): the proxy's thread
/// serves other connections meanwhile. A job that panicked (a bug) is
/// answered 500 with nothing written: it is not kept to be run again, so
/// that the worker holds the only handle on the body's buffer and can keep
/// it as text, checked once ([`crate::http::SharedBytes::into_text`]).
pub async fn handle_offloaded<T, S>(
    proxy: &Proxy<T, S>,
    workers: &WorkerPool,
    mut request: Request,
) -> Response
where
    T: crate::transport::Transport,
    S: crate::storage::Storage,
{
    let prepared = match proxy.write_body_job(&mut request) {
        Some(job) if job.len() >= OFFLOAD_MIN_BYTES => match workers.run(move || job.run()).await {
            Some(prepared) => Some(prepared),
            None => {
                let message = "validating the write body failed (a bug in the proxy); nothing was written";
                eprintln!("influx-proxy: {message}");
                return crate::error::ProxyError::Internal(message.into()).to_response();
            }
        },
        Some(job) => Some(job.run()),
        None => None,
    };
    proxy.handle_prepared(request, prepared, now_ms()).await
}

/// Messages from std and the OS may span lines; start-up errors are one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_in_use_is_one_line_naming_the_file_and_listen() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let e = bind("config/proxy.json", &addr).unwrap_err();
        assert_eq!(e, format!("config/proxy.json: $.listen: address {addr} already in use"));
        let e = bind("p.json", "not an address").unwrap_err();
        assert!(e.starts_with("p.json: $.listen: cannot listen on not an address: "), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn a_missing_config_file_is_one_line_naming_it() {
        let e = load_config("/nonexistent/proxy.json").unwrap_err();
        assert!(e.starts_with("/nonexistent/proxy.json: cannot read the file: "), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn monotonic_us_never_goes_back() {
        let a = monotonic_us();
        std::thread::sleep(Duration::from_millis(2));
        let b = monotonic_us();
        assert!(b >= a + 2_000, "{a} {b}");
    }

    #[test]
    fn the_native_hosts_sleep_ends_early_at_shutdown() {
        use crate::host::Host;
        let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
        let host = NativeHost::new(stop_rx);
        assert!(!host.stopping());
        drop(stop_tx);
        assert!(host.stopping());
        // An hour-long sleep returns at once once stopping (bounded by the test's own timer).
        let ended = smol::block_on(
            async {
                host.sleep(3_600_000).await;
                true
            }
            .or(async {
                Timer::after(Duration::from_secs(10)).await;
                false
            }),
        );
        assert!(ended);
    }

    #[test]
    fn now_ms_is_milliseconds_since_the_epoch() {
        let t = now_ms();
        // Between 2020-01-01 and 2200-01-01.
        assert!(t > 1_577_836_800_000 && t < 7_258_118_400_000, "{t}");
    }
}
