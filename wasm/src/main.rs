//! `influx-proxy` as a wasm32-wasip2 component: the same core as the native
//! server, hosted on wstd (the WASI 0.2 executor, sockets and timers) with
//! async-h1 for HTTP/1.1.
//!
//! Run it as a long-running server:
//!
//! ```text
//! wasmtime run -S inherit-network --dir DATA::/data --dir CONFIGDIR::/config \
//!     influx-proxy.wasm --config /config/proxy.json
//! ```
//!
//! Arguments: `--config FILE` (default `/config/proxy.json`) and
//! `--data-dir DIR` (default `/data`), both paths inside the component. The
//! write queues live under `--data-dir`, which must be a preopened directory;
//! the config's `data_dir` key is not used by this build (it names a host path
//! that the component cannot see). What the flags grant: `-S inherit-network`
//! lets the component listen on the configured address and connect to the
//! backends; `--dir` gives it exactly the data and config directories.
//!
//! There are no signals in WASI: stopping wasmtime (SIGTERM, SIGKILL) loses
//! nothing that was answered 204, since every queue append is synced first.
//! For the same reason there is no SIGHUP: after editing the config file,
//! `POST /reload` from a loopback client (e.g. `curl -XPOST
//! http://127.0.0.1:7076/reload`) re-reads `--config` through the preopened
//! directory and applies it without a restart (see the root crate's
//! `proxy::reload`).
#![forbid(unsafe_code)]

#[cfg(target_os = "wasi")]
mod server;
// Natively only its tests use it.
#[cfg_attr(not(target_os = "wasi"), allow(dead_code))]
mod storage;
#[cfg(target_os = "wasi")]
mod stream;
#[cfg(target_os = "wasi")]
mod transport;

/// The proxy as this host runs it.
#[cfg(target_os = "wasi")]
type Host = influx_proxy::proxy::Proxy<transport::WasiTransport, storage::DirStorage>;

#[cfg_attr(not(target_os = "wasi"), allow(dead_code))]
/// Command-line arguments.
#[derive(Debug, PartialEq)]
struct Args {
    config: String,
    data_dir: String,
}

#[cfg_attr(not(target_os = "wasi"), allow(dead_code))]
const USAGE: &str =
    "usage: influx-proxy.wasm [--config FILE] [--data-dir DIR]  (paths inside the component; \
                     defaults /config/proxy.json and /data)";

#[cfg_attr(not(target_os = "wasi"), allow(dead_code))]
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    use lexopt::prelude::*;
    let mut out = Args { config: "/config/proxy.json".into(), data_dir: "/data".into() };
    let mut parser = lexopt::Parser::from_iter(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Long("config") => {
                out.config = parser.value().map_err(|e| e.to_string())?.string().map_err(|e| e.to_string())?
            }
            Long("data-dir") => {
                out.data_dir =
                    parser.value().map_err(|e| e.to_string())?.string().map_err(|e| e.to_string())?
            }
            Long("version") => return Err(format!("influx-proxy {} (wasm32-wasip2)", influx_proxy::VERSION)),
            Long("help") | Short('h') => return Err(USAGE.into()),
            other => return Err(format!("{}\n{USAGE}", other.unexpected())),
        }
    }
    Ok(out)
}

#[cfg_attr(not(target_os = "wasi"), allow(dead_code))]
/// Milliseconds since the Unix epoch (`wasi:clocks/wall-clock`).
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg_attr(not(target_os = "wasi"), allow(dead_code))]
/// Microseconds since the first call (`wasi:clocks/monotonic-clock`), the
/// clock given to the core for its duration histograms.
fn monotonic_us() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(std::time::Instant::now).elapsed().as_micros() as u64
}

/// The WASI [`influx_proxy::host::Host`]: wstd timers and the WASI clocks.
/// The component has no shutdown (no signals in WASI): the loops never stop.
#[cfg(target_os = "wasi")]
struct WasiHost;

#[cfg(target_os = "wasi")]
impl influx_proxy::host::Host for WasiHost {
    fn now_ms(&self) -> u64 {
        now_ms()
    }

    fn monotonic_us(&self) -> u64 {
        monotonic_us()
    }

    async fn sleep(&self, ms: u64) {
        wstd::task::sleep(std::time::Duration::from_millis(ms).into()).await;
    }

    fn stopping(&self) -> bool {
        false
    }
}

#[cfg(target_os = "wasi")]
fn main() {
    let args = match parse_args(std::env::args()) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    if let Err(message) = wstd::runtime::block_on(run(args)) {
        eprintln!("influx-proxy: {message}");
        std::process::exit(1);
    }
}

/// Opens the proxy, starts the health-check and replay tasks, then serves
/// until the component is stopped. Errors: config, TLS files (read through
/// the preopened directories; an `https://` backend needs a `ca_file`: no
/// system trust store here), data directory, listen address, opening a
/// write queue.
#[cfg(target_os = "wasi")]
async fn run(args: Args) -> Result<(), String> {
    use influx_proxy::config::Config;
    use std::rc::Rc;

    let text = std::fs::read_to_string(&args.config).map_err(|e| {
        format!("{}: {e} (is its directory preopened with wasmtime --dir HOST::GUEST?)", args.config)
    })?;
    let mut config = Config::parse(&args.config, &text).map_err(|e| e.to_string())?;
    // Backend secrets (with token auth): from `--env NAME` and preopened files.
    config
        .resolve_credentials(&args.config, &influx_proxy::host_secrets::read_secret)
        .map_err(|e| e.to_string())?;
    let (backend_tls, listen_tls) = influx_proxy::host_tls::check(&args.config, &config)?;
    let storage = storage::DirStorage::open(&args.data_dir).map_err(|e| {
        format!(
            "data directory {}: {e} (is it preopened with wasmtime --dir HOST::{}?)",
            args.data_dir, args.data_dir
        )
    })?;
    let transport = transport::WasiTransport::new(config.request_timeout_ms, config.pool_max_idle)
        .with_max_open(config.pool_max_open)
        .with_max_response_bytes(config.backend_max_response_bytes)
        .with_tls(backend_tls);
    let listen = config.listen.clone();
    let mut proxy = Host::open(config, transport, storage).await?;
    proxy.set_clock(Rc::new(monotonic_us));
    // For POST /reload: the same file, read again through the preopened directory.
    proxy.set_config_file(
        args.config.clone(),
        Rc::new(|path: &str| {
            std::fs::read_to_string(path).map_err(|e| format!("{path}: cannot read the file: {e}"))
        }),
    );
    proxy.set_secret_reader(Rc::new(influx_proxy::host_secrets::read_secret));
    proxy.set_log(Rc::new(|line: &str| eprintln!("influx-proxy: {line}")));
    let proxy = Rc::new(proxy);
    let listener = wstd::net::TcpListener::bind(&listen).await.map_err(|e| {
        format!("cannot listen on {listen}: {e} (run wasmtime with -S inherit-network; the address must be ip:port)")
    })?;
    let scheme = if listen_tls.is_some() { "https://" } else { "" };
    eprintln!("influx-proxy {} (wasm32-wasip2) listening on {scheme}{listen}", influx_proxy::VERSION);
    // The shared, supervised loops (influx_proxy::host). Panics abort a
    // wasm32 component (panic=abort), so the supervisor restarts only loops
    // that return; the defence against panics is that nothing panics.
    // The loop starter starts them for every backend now and for each
    // backend a reload adds.
    let starter = proxy.clone();
    wstd::runtime::spawn(async move {
        let spawner = starter.clone();
        let spawn = move |backend: usize, kind: influx_proxy::host::LoopKind| {
            let p = spawner.clone();
            wstd::runtime::spawn(
                async move { influx_proxy::host::run_loop(&WasiHost, &*p, backend, kind).await },
            )
            .detach();
        };
        influx_proxy::host::run_backend_loops(&WasiHost, &*starter, spawn).await
    })
    .detach();
    server::serve(proxy, listener, listen_tls).await;
    Ok(())
}

/// The peer's IP address from wstd's `TcpStream::peer_addr`, which gives
/// only the `Debug` text of WASI's `ip-socket-address`
/// (`IpSocketAddress::Ipv4(Ipv4SocketAddress { port: 5, address: (127, 0, 0, 1) })`,
/// or 8 numbers for IPv6). `None` if it does not read as one (the proxy then
/// treats the peer as not loopback).
#[cfg_attr(not(target_os = "wasi"), allow(dead_code))]
fn peer_ip(debug: &str) -> Option<std::net::IpAddr> {
    let start = debug.find("address: (")? + "address: (".len();
    let end = start + debug[start..].find(')')?;
    let parts: Vec<&str> = debug[start..end].split(',').map(str::trim).collect();
    match parts.len() {
        4 => {
            let mut octets = [0u8; 4];
            for (o, p) in octets.iter_mut().zip(&parts) {
                *o = p.parse().ok()?;
            }
            Some(std::net::IpAddr::from(octets))
        }
        8 => {
            let mut segments = [0u16; 8];
            for (s, p) in segments.iter_mut().zip(&parts) {
                *s = p.parse().ok()?;
            }
            Some(std::net::IpAddr::from(segments))
        }
        _ => None,
    }
}

#[cfg(not(target_os = "wasi"))]
fn main() {
    eprintln!("influx-proxy-wasm only runs as a wasm32-wasip2 component: cargo build --release --target wasm32-wasip2");
    std::process::exit(2);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args, String> {
        parse_args(std::iter::once("influx-proxy.wasm").chain(list.iter().copied()).map(String::from))
    }

    #[test]
    fn the_monotonic_clock_never_goes_back() {
        let a = monotonic_us();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(monotonic_us() >= a + 2_000);
    }

    #[test]
    fn the_peer_address_is_read_from_wasis_debug_text() {
        let v4 = "IpSocketAddress::Ipv4(Ipv4SocketAddress { port: 54321, address: (127, 0, 0, 1) })";
        assert_eq!(peer_ip(v4), Some("127.0.0.1".parse().unwrap()));
        let v6 = "IpSocketAddress::Ipv6(Ipv6SocketAddress { port: 1, flow-info: 0, \
                  address: (0, 0, 0, 0, 0, 0, 0, 1), scope-id: 0 })";
        assert_eq!(peer_ip(v6), Some("::1".parse().unwrap()));
        let other = "IpSocketAddress::Ipv4(Ipv4SocketAddress { port: 1, address: (10, 1, 2, 3) })";
        assert_eq!(peer_ip(other), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(peer_ip("something else"), None);
        assert_eq!(peer_ip("address: (1, 2, 300, 4)"), None);
    }

    #[test]
    fn arguments_and_defaults() {
        assert_eq!(
            args(&[]).unwrap(),
            Args { config: "/config/proxy.json".into(), data_dir: "/data".into() }
        );
        assert_eq!(
            args(&["--config", "/c/p.json", "--data-dir=/d"]).unwrap(),
            Args { config: "/c/p.json".into(), data_dir: "/d".into() }
        );
        assert!(args(&["--bogus"]).unwrap_err().contains("--bogus"));
        assert!(args(&["--config"]).unwrap_err().contains("missing"));
    }
}
