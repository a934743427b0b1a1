//! The backend side of HTTP/1.1 (the proxy as a client of InfluxDB servers),
//! written once for the native and the WASI host: [`BackendClient`] is the
//! whole [`Transport`] (keep-alive pool per backend, retry on a fresh
//! connection, `pool_max_open`, the request timeout, bounded and guarded
//! response reading), generic over a [`BackendHost`] that provides only
//! primitives: connect to a [`BackendAddr`] (a `futures-io` stream), sleep,
//! and optionally a liveness probe of an idle pooled connection.
//!
//! The rules, the same on every host:
//! - **Pool.** Connections are kept alive and pooled per backend
//!   (`host:port`), at most `pool_max_idle` idle ones; a connection goes back
//!   only after its whole response was read, if that response allows reuse
//!   ([`DecodedResponse::reusable`]: HTTP/1.1, no `Connection: close`, framed
//!   body, nothing after it). A pooled connection is probed before reuse
//!   ([`BackendHost::alive`]); one that the backend closed, or that has stray
//!   bytes waiting, is dropped.
//! - **Retry once.** A request that fails on a *reused* connection with an
//!   i/o error before any byte of a response arrived is sent once more on a
//!   fresh connection (the backend closed the idle connection before reading
//!   the request). This is safe for what the proxy sends: pings and queries are
//!   idempotent, and InfluxDB writes are idempotent per point ("Duplicate
//!   points" in the InfluxDB 1.x documentation). Failures on a fresh
//!   connection, and failures after a response byte, are not retried.
//! - **Connection limit.** At most `pool_max_open` requests hold a connection
//!   to one backend at once ([`ConnectionLimits`]); more wait.
//! - **Timeout.** The whole request (waiting for a connection, connecting,
//!   sending, reading the whole response) is bounded by `request_timeout_ms`:
//!   [`TransportError::Timeout`], and the connection is dropped.
//! - **Responses** are read by [`response`] (not async-h1, whose http-types
//!   headers panic on non-ASCII values): head bounded, non-ASCII header values
//!   percent-encoded, cut bodies and ambiguous framing are
//!   [`TransportError::Io`], bodies over `backend_max_response_bytes` are
//!   [`TransportError::ResponseTooLarge`]. Requests are encoded by async-h1.
//! - **Early answers.** When sending the request fails (the backend answered
//!   and closed before reading all of it, as influxd does with 413 for a body
//!   over its `max-body-size`), the answer already sent is still read and
//!   returned if it is whole.
//!
//! Single-threaded, like the proxy that owns it; a multi-threaded host would
//! run one client per executor thread (the pool and limits are per client).

pub mod response;

pub use response::{decode_backend_response, decode_backend_response_bytes, DecodedResponse};

use crate::http::{encode_params, Method, Request, Response, SharedBytes};
use crate::transport::{BackendAddr, Transport, TransportError};
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

/// Default for `backend_max_response_bytes`: 64 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// Default for `pool_max_open`.
pub const DEFAULT_MAX_OPEN: usize = 64;

/// What a host provides to [`BackendClient`]: primitives only.
pub trait BackendHost {
    /// A connection to a backend.
    type Stream: AsyncRead + AsyncWrite + Unpin;

    /// Opens a connection to `backend` (its `host:port`). Errors are
    /// [`TransportError::Connect`] naming the backend.
    fn connect(&self, backend: &BackendAddr) -> impl Future<Output = Result<Self::Stream, TransportError>>;

    /// A future that completes after `ms` milliseconds.
    fn sleep(&self, ms: u64) -> impl Future<Output = ()>;

    /// Whether an idle pooled connection still looks usable, checked without
    /// waiting. By default: a read polled once finds nothing (pending), i.e.
    /// neither the end of the stream, nor an error, nor stray bytes (a
    /// connection with any of those is dropped, so consuming a byte is
    /// harmless). A host whose reads never complete on the first poll gets
    /// `true`; the retry-once rule covers it.
    fn alive(&self, stream: &mut Self::Stream) -> impl Future<Output = bool> {
        async move {
            let mut probe = [0u8; 1];
            futures_lite::future::poll_once(stream.read(&mut probe)).await.is_none()
        }
    }
}

/// The HTTP/1.1 client of the backends: the [`Transport`] of both hosts.
/// See the module doc for its rules.
pub struct BackendClient<H: BackendHost> {
    host: H,
    /// Whole request, ms (`request_timeout_ms`).
    timeout_ms: u64,
    /// Idle connections kept per backend (`pool_max_idle`).
    max_idle: usize,
    /// Largest response body read, bytes (`backend_max_response_bytes`).
    max_response_bytes: u64,
    /// Idle connections by `host:port`, most recently used last.
    pools: RefCell<HashMap<String, Vec<H::Stream>>>,
    /// Requests holding a connection, by `host:port` (`pool_max_open`).
    limits: ConnectionLimits,
    /// Connections opened so far.
    connects: Cell<u64>,
}

impl<H: BackendHost> std::fmt::Debug for BackendClient<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendClient")
            .field("timeout_ms", &self.timeout_ms)
            .field("max_idle", &self.max_idle)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("connects", &self.connects.get())
            .finish_non_exhaustive()
    }
}

/// Why one try failed, and whether it may be sent again on a fresh
/// connection (an i/o error before any response byte arrived).
struct Failure {
    error: TransportError,
    retryable: bool,
}

impl<H: BackendHost> BackendClient<H> {
    /// A client on `host` whose requests time out after `timeout_ms` (the
    /// config's `request_timeout_ms`), keeping at most `max_idle` idle
    /// connections per backend (`pool_max_idle`; 0 = no reuse), with
    /// [`DEFAULT_MAX_OPEN`] and [`DEFAULT_MAX_RESPONSE_BYTES`].
    pub fn new(host: H, timeout_ms: u64, max_idle: usize) -> BackendClient<H> {
        BackendClient {
            host,
            timeout_ms,
            max_idle,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            pools: RefCell::new(HashMap::new()),
            limits: ConnectionLimits::new(DEFAULT_MAX_OPEN),
            connects: Cell::new(0),
        }
    }

    /// At most `max_open` (at least 1) requests hold a connection to one
    /// backend at once (`pool_max_open`).
    pub fn with_max_open(mut self, max_open: usize) -> BackendClient<H> {
        self.limits = ConnectionLimits::new(max_open);
        self
    }

    /// Response bodies over `bytes` end as [`TransportError::ResponseTooLarge`]
    /// (`backend_max_response_bytes`).
    pub fn with_max_response_bytes(mut self, bytes: u64) -> BackendClient<H> {
        self.max_response_bytes = bytes;
        self
    }

    /// This client with its host replaced by `f(host)` (e.g. given its TLS
    /// settings). Call before the first request: pooled connections are kept.
    pub fn map_host(self, f: impl FnOnce(H) -> H) -> BackendClient<H> {
        BackendClient { host: f(self.host), ..self }
    }

    /// Idle pooled connections to `backend` right now.
    pub fn idle_connections(&self, backend: &BackendAddr) -> usize {
        self.pools.borrow().get(&backend.pool_key()).map_or(0, Vec::len)
    }

    /// Connections opened so far (to every backend), for tests and metrics.
    pub fn connections_opened(&self) -> u64 {
        self.connects.get()
    }

    /// An idle connection of pool `key` ([`BackendAddr::pool_key`]) that still looks usable.
    async fn take_pooled(&self, key: &str) -> Option<H::Stream> {
        loop {
            let mut stream = self.pools.borrow_mut().get_mut(key)?.pop()?;
            if self.host.alive(&mut stream).await {
                return Some(stream);
            }
        }
    }

    fn give_back(&self, key: &str, stream: H::Stream) {
        let mut pools = self.pools.borrow_mut();
        let pool = pools.entry(key.to_string()).or_default();
        if pool.len() < self.max_idle {
            pool.push(stream);
        }
    }

    /// One exchange on `stream`; the stream goes back to the pool if the
    /// response allows it.
    async fn send_once(
        &self,
        backend: &BackendAddr,
        request: &Request,
        body: &SharedBytes,
        mut stream: H::Stream,
    ) -> Result<Response, Failure> {
        let prefix = |error: TransportError| match error {
            TransportError::Io(e) => TransportError::Io(format!("{}: {e}", backend.url)),
            other => other,
        };
        let outgoing = backend_request_head(backend, request, body.len())
            .map_err(|error| Failure { error, retryable: false })?;
        let sent = write_request(&mut stream, outgoing, body).await;
        let mut reader = response::Reader::new(&mut stream);
        let decoded = response::read_response(&mut reader, request.method, self.max_response_bytes).await;
        let received = reader.received > 0;
        match (sent, decoded) {
            (Ok(()), Ok(decoded)) => {
                if decoded.reusable {
                    self.give_back(&backend.pool_key(), stream);
                }
                Ok(decoded.response)
            }
            // Answered before the whole request was taken: the connection
            // is not reused.
            (Err(_), Ok(decoded)) => Ok(decoded.response),
            (Err(e), Err(_)) if !received => Err(Failure {
                error: TransportError::Io(format!("{}: sending the request: {e}", backend.url)),
                retryable: true,
            }),
            (_, Err(error)) => {
                let retryable = !received && matches!(error, TransportError::Io(_));
                Err(Failure { error: prefix(error), retryable })
            }
        }
    }

    /// One request with `body` (shared by both tries, never copied).
    async fn send_with_retry(
        &self,
        backend: &BackendAddr,
        request: Request,
        body: SharedBytes,
    ) -> Result<Response, TransportError> {
        let pool_key = backend.pool_key();
        let _permit = self.limits.acquire(&pool_key).await;
        if let Some(stream) = self.take_pooled(&pool_key).await {
            match self.send_once(backend, &request, &body, stream).await {
                Ok(response) => return Ok(response),
                Err(Failure { retryable: true, .. }) => {}
                Err(failure) => return Err(failure.error),
            }
        }
        self.connects.set(self.connects.get() + 1);
        let stream = self.host.connect(backend).await?;
        self.send_once(backend, &request, &body, stream).await.map_err(|f| f.error)
    }
}

impl<H: BackendHost> Transport for BackendClient<H> {
    async fn send(&self, backend: &BackendAddr, mut request: Request) -> Result<Response, TransportError> {
        let body = SharedBytes::from(std::mem::take(&mut request.body));
        self.send_shared(backend, request, body).await
    }

    async fn send_shared(
        &self,
        backend: &BackendAddr,
        request: Request,
        body: SharedBytes,
    ) -> Result<Response, TransportError> {
        let timeout = async {
            self.host.sleep(self.timeout_ms).await;
            Err(TransportError::Timeout)
        };
        futures_lite::future::or(self.send_with_retry(backend, request, body), timeout).await
    }
}

/// Writes `request`'s head (async-h1's encoding of a request whose body
/// reader is empty: [`backend_request_head`]) and then `body` itself to
/// `stream`, and flushes. The body is written from the shared buffer as it
/// is (no copy of it here; an encoder reading it into a write buffer copied
/// each body once per backend), the head with the body's first piece in one
/// vectored write, then the rest in pieces of at most [`WRITE_PIECE`].
async fn write_request<S: AsyncWrite + Unpin>(
    stream: &mut S,
    request: http_types::Request,
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    async_h1::client::Encoder::new(request).read_to_end(&mut head).await?;
    let (first, rest) = body.split_at(body.len().min(WRITE_PIECE));
    let mut parts = [std::io::IoSlice::new(&head), std::io::IoSlice::new(first)];
    let mut parts = &mut parts[..];
    while !parts.is_empty() {
        match stream.write_vectored(parts).await? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n => std::io::IoSlice::advance_slices(&mut parts, n),
        }
    }
    for piece in rest.chunks(WRITE_PIECE) {
        stream.write_all(piece).await?;
    }
    stream.flush().await
}

/// Largest piece of a body handed to the stream in one write (256 KiB): a
/// stream that gathers what it is given before sending it (the WASI host's,
/// `wasm/src/stream.rs`) then holds at most this much more of it, instead of
/// a copy of the whole body; natively it is a few more system calls for a
/// body of megabytes.
const WRITE_PIECE: usize = 256 * 1024;

/// Request headers never passed to a backend: hop-by-hop headers (RFC 9110
/// section 7.6.1) and the framing headers the client sets itself.
const NOT_FORWARDED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
];

/// The core's `request` as an http-types request to `backend`: the backend's
/// base path before the path, the query string encoded, `Host` set to the
/// backend, the client's headers forwarded except hop-by-hop and framing ones
/// and invalid ones (never a panic), and `body` (not `request.body`) with its
/// length for a POST or a non-empty body. Error: a method the proxy never sends,
/// or a URL that does not parse.
pub fn to_backend_request<B>(
    backend: &BackendAddr,
    request: &Request,
    body: &B,
) -> Result<http_types::Request, TransportError>
where
    B: AsRef<[u8]> + Clone + Unpin + Send + Sync + 'static,
{
    let len = body.as_ref().len();
    backend_request(backend, request, len, futures_lite::io::Cursor::new(body.clone()))
}

/// [`to_backend_request`] for a body of `len` bytes that the caller writes
/// itself after the head: the request's body reader is empty, so async-h1's
/// encoder yields the head (with `content-length: len`) and nothing more.
pub fn backend_request_head(
    backend: &BackendAddr,
    request: &Request,
    len: usize,
) -> Result<http_types::Request, TransportError> {
    backend_request(backend, request, len, futures_lite::io::empty())
}

fn backend_request(
    backend: &BackendAddr,
    request: &Request,
    len: usize,
    reader: impl futures_lite::io::AsyncBufRead + Unpin + Send + Sync + 'static,
) -> Result<http_types::Request, TransportError> {
    let method = match request.method {
        Method::Get => http_types::Method::Get,
        Method::Head => http_types::Method::Head,
        Method::Post => http_types::Method::Post,
        Method::Delete | Method::Other => {
            return Err(TransportError::Io("the proxy only sends GET, HEAD and POST".into()))
        }
    };
    let mut url = format!("http://{}{}{}", backend.authority(), backend.base_path, request.path);
    if !request.query.is_empty() {
        url.push('?');
        url.push_str(&encode_params(&request.query));
    }
    let url = http_types::Url::parse(&url).map_err(|e| TransportError::Io(format!("{url}: {e}")))?;
    let mut out = http_types::Request::new(method, url);
    if request.method == Method::Post || len > 0 {
        out.set_body(http_types::Body::from_reader(reader, Some(len)));
        // `set_body` adds `content-type: application/octet-stream`; only the
        // client's own content type is passed on.
        out.remove_header("content-type");
    }
    out.insert_header("host", backend.authority().as_str());
    for (name, value) in &request.headers {
        let lower = name.to_ascii_lowercase();
        if NOT_FORWARDED.contains(&lower.as_str()) {
            continue;
        }
        if let Some((name, value)) = super::header(lower, value.clone()) {
            out.append_header(name, value);
        }
    }
    Ok(out)
}

/// The bound on requests holding a connection to one backend at once (the
/// config's `pool_max_open`): one semaphore per `host:port`. Single-threaded,
/// like the transports that own it.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_open: usize,
    permits: RefCell<HashMap<String, Arc<async_lock::Semaphore>>>,
}

impl ConnectionLimits {
    /// At most `max_open` (at least 1) requests per backend at once.
    pub fn new(max_open: usize) -> ConnectionLimits {
        ConnectionLimits { max_open: max_open.max(1), permits: RefCell::new(HashMap::new()) }
    }

    /// Waits for a free place at `authority` (`host:port`); the place is held
    /// until the guard is dropped. Callers bound the wait with their timeout.
    pub async fn acquire(&self, authority: &str) -> async_lock::SemaphoreGuardArc {
        let semaphore = self
            .permits
            .borrow_mut()
            .entry(authority.to_string())
            .or_insert_with(|| Arc::new(async_lock::Semaphore::new(self.max_open)))
            .clone();
        semaphore.acquire_arc().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that takes at most 7,777 bytes a write (as a socket whose
    /// send buffer is full takes part of a write), gathering them.
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(7777);
            self.0.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// `write_request` writes the whole request, head and then the body as
    /// given, whatever their sizes and however little the stream takes a
    /// write (a head of 10 kB, bodies from 0 to 700 kB).
    #[test]
    fn a_request_is_written_whole_however_little_the_stream_takes_a_write() {
        let backend = BackendAddr::parse("a", "http://127.0.0.1:8087").unwrap();
        for header in [0, 10_000] {
            for len in [0, 1, 4096, WRITE_PIECE - 1, WRITE_PIECE, WRITE_PIECE + 1, 700_001] {
                let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let mut request = Request::new(Method::Post, "/write");
                request.headers = vec![("authorization".into(), "x".repeat(header))];
                let out = backend_request_head(&backend, &request, body.len()).unwrap();
                let mut wire = Trickle(Vec::new());
                futures_lite::future::block_on(write_request(&mut wire, out, &body)).unwrap();
                let wire = wire.0;
                let end = wire.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                let head = String::from_utf8_lossy(&wire[..end]);
                assert!(head.contains(&format!("content-length: {len}\r\n")), "{header} {len}: {head}");
                assert!(wire[end..] == body[..], "header {header}, body {len}: body as sent");
            }
        }
    }

    #[test]
    fn backend_request_has_base_path_query_host_and_forwarded_headers_only() {
        let backend = BackendAddr::parse("a", "http://127.0.0.1:8087/influx").unwrap();
        let mut request = Request::new(Method::Post, "/write");
        request.query = vec![("db".into(), "my db".into())];
        request.headers = vec![
            ("authorization".into(), "Token x".into()),
            ("content-type".into(), "text/plain".into()),
            ("connection".into(), "keep-alive".into()),
            ("content-length".into(), "99".into()),
            ("x-bad".into(), "caf\u{e9}".into()),
        ];
        let out = to_backend_request(&backend, &request, &SharedBytes::from(b"abc".to_vec())).unwrap();
        assert_eq!(out.url().as_str(), "http://127.0.0.1:8087/influx/write?db=my%20db");
        assert_eq!(out.header("host").unwrap().as_str(), "127.0.0.1:8087");
        assert_eq!(out.header("authorization").unwrap().as_str(), "Token x");
        assert_eq!(out.header("content-type").unwrap().as_str(), "text/plain");
        assert!(out.header("connection").is_none() && out.header("x-bad").is_none());
        assert_eq!(out.len(), Some(3));
        let get =
            to_backend_request(&backend, &Request::new(Method::Get, "/ping"), &SharedBytes::from(Vec::new()));
        assert!(get.unwrap().header("content-type").is_none());
    }
}
