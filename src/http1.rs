//! One HTTP/1.1 client connection, served by async-h1 for both hosts: request
//! heads guarded, http-types messages converted to the core's [`Request`] and
//! the core's [`Response`] back.
//!
//! The host accepts connections and calls [`serve_connection`] for each; it
//! passes the stream (any `futures-io` stream async-h1 accepts) and what only
//! it has, through [`ConnectionHost`]: a timer, and whether it is shutting
//! down. Nothing here spawns, sleeps on its own or reads a clock.
//!
//! What async-h1 2.3 does with bad request heads, and what this module adds:
//! async-h1's `accept` returns an error and writes nothing, so the client would
//! see the connection drop. This module answers instead, with an InfluxDB-style
//! `{"error":"..."}` body and `Connection: close` (the stream cannot be resynced
//! after a bad head; a new connection works):
//! - a head of 8 KiB or more (async-h1's fixed `MAX_HEAD_LENGTH`, checked after
//!   each line) -> 431; a single line growing past [`MAX_HEAD_BYTES`] without
//!   an end is cut off here before async-h1 buffers it all;
//! - a header value with non-ASCII bytes -> 400 (async-h1 would panic in
//!   http-types, which only accepts ASCII header values);
//! - async-h1 refuses HTTP/1.0 (505): this module rewrites the version of an
//!   HTTP/1.0 request line to 1.1 before async-h1 reads it, and closes the
//!   connection after the response (HTTP/1.0 has no keep-alive by default;
//!   the response is an HTTP/1.1 one with `Content-Length`, as RFC 9110
//!   section 6.2 allows). nginx's `proxy_pass` speaks HTTP/1.0 by default;
//! - anything else httparse or async-h1 refuses (no `Host`, malformed request
//!   line, `Content-Length` with `Transfer-Encoding`, unknown method) -> 400.
//!
//! Request bodies are read up to `max_body_bytes`; a larger body (by its
//! `Content-Length`, or while reading a chunked body) is answered 413 with
//! `Connection: close` and the rest of it is not read. After a response that
//! closes the connection early (413, bad head) the connection lingers: it is
//! half-closed (the stream's `close`) and what the client still sends is read
//! and discarded for a bounded time, so that the client reads the response
//! rather than a reset.
//!
//! Responses: framing headers (`Content-Length`, `Transfer-Encoding`,
//! `Connection`, `Keep-Alive`) are async-h1's and this module's to set; a
//! header of the core's that is not valid HTTP/1.1 is dropped, never a panic;
//! async-h1 leaves out the body of responses to HEAD.

pub mod client;

use crate::error::ProxyError;
use crate::http::{decode_params, Method, Request, Response};
use async_h1::server::ConnectionStatus;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use futures_lite::FutureExt;
use http_types::headers::{HeaderName, HeaderValue};
use http_types::{Body, StatusCode};
use std::cell::Cell;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// Largest request head (request line and headers) read, in bytes, before
/// answering 431. async-h1 itself refuses heads of 8 KiB or more (checked per
/// line); this bound stops a single endless line early.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// After a response that closes the connection early (413, bad head), at most
/// this many bytes the client still sends are read and discarded ...
const LINGER_BYTES: usize = 1 << 20;
/// ... for at most this long, in ms.
const LINGER_MS: u64 = 1000;

/// How one connection is served.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// Largest request body, in bytes (the config's `max_body_bytes`).
    pub max_body_bytes: u64,
    /// A kept-alive connection with no request for this long, in ms, is
    /// closed.
    pub idle_timeout_ms: u64,
}

/// What a connection needs from its host.
pub trait ConnectionHost {
    /// A future that completes after `ms` milliseconds.
    fn sleep(&self, ms: u64) -> impl Future<Output = ()>;

    /// True once the host is shutting down: responses say
    /// `Connection: close` and no further request is read. Never, by default.
    fn closing(&self) -> bool {
        false
    }

    /// Completes when the host starts shutting down, to end a connection
    /// waiting idle for its next request. Never, by default.
    fn closed(&self) -> impl Future<Output = ()> {
        futures_lite::future::pending()
    }
}

/// Serves the requests of one client connection until it closes, stays idle
/// past `idle_timeout_ms`, sends a request that cannot be answered on the
/// same connection (see the module doc), or the host shuts down. Each request
/// is answered by `handler`. Errors of the connection itself (reset, broken
/// pipe) end it quietly: there is no one left to answer.
pub async fn serve_connection<S, H, Fut>(
    stream: S,
    options: &ConnectionOptions,
    host: &impl ConnectionHost,
    handler: H,
) where
    S: AsyncRead + AsyncWrite + Clone + Send + Sync + Unpin + 'static,
    H: Fn(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let guard = Arc::new(Mutex::new(HeadGuard::default()));
    let io = GuardedStream { inner: stream.clone(), guard: guard.clone() };
    // Set when async-h1 called the endpoint: an error after that is not a
    // bad head, and nothing more may be written.
    let invoked = Cell::new(false);
    let endpoint = {
        let (handler, guard, invoked) = (&handler, &guard, &invoked);
        let max_body = options.max_body_bytes;
        move |req: http_types::Request| {
            invoked.set(true);
            async move {
                let http10 = lock(guard).http10;
                let (response, close) = match read_request(req, max_body).await {
                    Ok(request) => (handler(request).await, http10),
                    Err(refusal) => {
                        // Stop reading: the rest of the body is not wanted.
                        lock(guard).cut = true;
                        (refusal, true)
                    }
                };
                Ok(to_http_response(response, close || host.closing()))
            }
        }
    };
    let mut server = async_h1::server::Server::new(io, endpoint);
    let mut stream = stream;
    loop {
        let Some(first) = wait_for_request(&mut stream, options, host).await else {
            break;
        };
        {
            let mut guard = lock(&guard);
            guard.start_request();
            guard.prefetched = first;
        }
        invoked.set(false);
        let result = AssertUnwindSafe(server.accept_one()).catch_unwind().await;
        let bad_head = match result {
            Ok(Ok(ConnectionStatus::KeepAlive)) if !host.closing() => continue,
            Ok(Ok(_)) => None,
            Ok(Err(e)) if !invoked.get() => bad_head_response(&e),
            Ok(Err(_)) => None,
            // A panic inside async-h1 or http-types while reading the head
            // (where panics unwind; on wasm32 they abort).
            Err(_) if !invoked.get() => Some(ProxyError::BadRequest("malformed request head".into())),
            Err(_) => None,
        };
        if let Some(error) = bad_head {
            let response = to_http_response(refusal(&error), true);
            let mut encoder = async_h1::server::Encoder::new(response, http_types::Method::Get);
            if futures_lite::io::copy(&mut encoder, &mut stream).await.is_ok() {
                linger(&mut stream, host).await;
            }
        } else if lock(&guard).cut {
            linger(&mut stream, host).await;
        }
        break;
    }
}

/// Waits for the first bytes of the next request. `None` if the client closed
/// the connection, stayed idle past `idle_timeout_ms`, or the host is
/// shutting down.
async fn wait_for_request<S>(
    stream: &mut S,
    options: &ConnectionOptions,
    host: &impl ConnectionHost,
) -> Option<Vec<u8>>
where
    S: AsyncRead + Unpin,
{
    if host.closing() {
        return None;
    }
    let mut buf = vec![0u8; 4096];
    let read = async {
        match stream.read(&mut buf).await {
            Ok(n) if n > 0 => Some(n),
            _ => None,
        }
    };
    let closed = async {
        host.closed().await;
        None
    };
    let idle = async {
        host.sleep(options.idle_timeout_ms).await;
        None
    };
    let n = read.or(closed).or(idle).await?;
    buf.truncate(n);
    Some(buf)
}

fn lock(guard: &Mutex<HeadGuard>) -> std::sync::MutexGuard<'_, HeadGuard> {
    guard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Half-closes the connection and discards what the client still sends, for
/// a bounded time, so that a client still sending reads the response.
async fn linger<S>(stream: &mut S, host: &impl ConnectionHost)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.close().await.ok();
    let drain = async {
        let mut buf = [0u8; 8192];
        let mut total = 0;
        while total < LINGER_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    drain.or(host.sleep(LINGER_MS)).await;
}

/// The answer to a request head async-h1 refused, or `None` when the
/// connection itself failed (nothing to answer).
fn bad_head_response(error: &http_types::Error) -> Option<ProxyError> {
    if let Some(io_error) = error.downcast_ref::<io::Error>() {
        return match io_error.get_ref().and_then(|e| e.downcast_ref::<HeadError>()) {
            Some(HeadError::TooLarge) => Some(head_too_large()),
            Some(HeadError::NonAscii) => {
                Some(ProxyError::BadRequest("malformed request head: header values must be ASCII".into()))
            }
            None => None,
        };
    }
    let message = error.to_string();
    if message.starts_with("Head byte length") {
        Some(head_too_large())
    } else if message.starts_with("Unsupported HTTP version") {
        Some(ProxyError::Backend {
            status: 505,
            message: "HTTP version not supported: this server speaks HTTP/1.1".into(),
        })
    } else {
        Some(ProxyError::BadRequest(format!("malformed request head: {message}")))
    }
}

fn head_too_large() -> ProxyError {
    ProxyError::Backend { status: 431, message: "request header fields too large (limit 8192 bytes)".into() }
}

/// The answer to a request refused before the core saw it: the error body, and
/// `X-Influxdb-Version` as on every answer of the proxy.
fn refusal(error: &ProxyError) -> Response {
    let mut response = error.to_response();
    response.headers.push(("x-influxdb-version".into(), crate::INFLUXDB_COMPAT_VERSION.into()));
    response
}

/// Reads the request into the core's form, or the response refusing it (413
/// for a body over `max_body_bytes`, 400 for a body that cannot be read).
async fn read_request(mut req: http_types::Request, max_body_bytes: u64) -> Result<Request, Response> {
    let too_large =
        || refusal(&ProxyError::TooLarge(format!("request body too large (limit {max_body_bytes} bytes)")));
    if req.len().is_some_and(|len| len as u64 > max_body_bytes) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let mut reader = req.take_body();
    if let Err(e) = (&mut reader).take(max_body_bytes.saturating_add(1)).read_to_end(&mut body).await {
        let message = format!("error reading request body: {e}");
        return Err(refusal(&ProxyError::BadRequest(message)));
    }
    if body.len() as u64 > max_body_bytes {
        return Err(too_large());
    }
    let url = req.url();
    let mut headers = Vec::new();
    for (name, values) in req.iter() {
        for value in values.iter() {
            headers.push((name.as_str().to_ascii_lowercase(), value.as_str().to_string()));
        }
    }
    Ok(Request {
        method: Method::parse(req.method().as_ref()),
        path: url.path().to_string(),
        query: url.query().map(decode_params).unwrap_or_default(),
        headers,
        body,
    })
}

/// Response headers set here and by async-h1 (framing, connection).
const FRAMING: &[&str] = &["content-length", "transfer-encoding", "connection", "keep-alive"];

/// The core's response as async-h1's; `close` adds `Connection: close`.
/// An invalid status becomes a 500; invalid headers are dropped.
fn to_http_response(response: Response, close: bool) -> http_types::Response {
    let status = match StatusCode::try_from(response.status) {
        Ok(s) => s,
        Err(_) => {
            let message = format!("invalid response status {}", response.status);
            return to_http_response(ProxyError::Internal(message).to_response(), close);
        }
    };
    let mut out = http_types::Response::new(status);
    let has_content_type = response.header("content-type").is_some();
    out.set_body(Body::from(response.body));
    if !has_content_type {
        // http-types invents `application/octet-stream` for a byte body.
        out.remove_header("content-type");
    }
    for (name, value) in response.headers {
        let lower = name.to_ascii_lowercase();
        if FRAMING.contains(&lower.as_str()) {
            continue;
        }
        let Some((name, value)) = header(lower, value) else { continue };
        if name == "content-type" {
            out.insert_header(name, value);
        } else {
            out.append_header(name, value);
        }
    }
    if close {
        out.insert_header("connection", "close");
    }
    out
}

/// A header as http-types wants it, if it is valid HTTP/1.1 (RFC 9110 section
/// 5: the name a token, the value visible ASCII, spaces and tabs); `None`
/// otherwise, never a panic.
pub fn header(name: String, value: String) -> Option<(HeaderName, HeaderValue)> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let field = |b: u8| b == b'\t' || (b' '..=b'~').contains(&b);
    if name.is_empty() || !name.bytes().all(token) || !value.bytes().all(field) {
        return None;
    }
    Some((HeaderName::from_bytes(name.into_bytes()).ok()?, HeaderValue::from_bytes(value.into_bytes()).ok()?))
}

/// Why the [`GuardedStream`] refused to read more of a request head.
#[derive(Debug)]
enum HeadError {
    TooLarge,
    NonAscii,
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::TooLarge => write!(f, "request head over {MAX_HEAD_BYTES} bytes"),
            HeadError::NonAscii => write!(f, "non-ASCII byte in a request header"),
        }
    }
}

impl std::error::Error for HeadError {}

/// What the [`GuardedStream`] knows of the request being read.
#[derive(Debug, Default)]
struct HeadGuard {
    /// Reading a request head (until its blank line).
    in_head: bool,
    /// Bytes of the head so far.
    head_bytes: usize,
    /// Still in the request line (non-ASCII is left to the URL parser there).
    request_line: bool,
    /// How much of `\r\n\r\n` the last bytes matched.
    end_matched: usize,
    /// Reads return end-of-file: the request was refused, the rest of its
    /// body is not wanted.
    cut: bool,
    /// Bytes read from the stream while waiting for the request, not yet
    /// inspected.
    prefetched: Vec<u8>,
    /// The request line read so far (held back until its end).
    line: Vec<u8>,
    /// Bytes inspected but not yet handed to async-h1.
    pending: Vec<u8>,
    /// The request is HTTP/1.0 (rewritten to 1.1 for async-h1): its response
    /// closes the connection.
    http10: bool,
}

impl HeadGuard {
    fn start_request(&mut self) {
        *self = HeadGuard { in_head: true, request_line: true, ..HeadGuard::default() };
    }

    /// Looks at bytes just read: counts and checks those of the head.
    fn inspect(&mut self, bytes: &[u8]) -> Result<(), HeadError> {
        for &b in bytes {
            if !self.in_head {
                return Ok(());
            }
            self.head_bytes += 1;
            if self.head_bytes > MAX_HEAD_BYTES {
                return Err(HeadError::TooLarge);
            }
            if b >= 0x80 && !self.request_line {
                return Err(HeadError::NonAscii);
            }
            if b == b'\n' {
                self.request_line = false;
            }
            self.end_matched = match (self.end_matched, b) {
                (0 | 2, b'\r') => self.end_matched + 1,
                (1 | 3, b'\n') => self.end_matched + 1,
                (_, b'\r') => 1,
                _ => 0,
            };
            if self.end_matched == 4 {
                self.in_head = false;
            }
        }
        Ok(())
    }
}

/// The client connection as async-h1 reads it: request heads are checked by
/// the [`HeadGuard`], and reads end once a request was refused.
#[derive(Debug, Clone)]
struct GuardedStream<S> {
    inner: S,
    guard: Arc<Mutex<HeadGuard>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            let mut guard = lock(&this.guard);
            if guard.cut {
                return Poll::Ready(Ok(0));
            }
            if !guard.pending.is_empty() {
                let n = buf.len().min(guard.pending.len());
                buf[..n].copy_from_slice(&guard.pending[..n]);
                guard.pending.drain(..n);
                return Poll::Ready(Ok(n));
            }
            let n = if guard.prefetched.is_empty() {
                drop(guard);
                let n = match Pin::new(&mut this.inner).poll_read(cx, buf) {
                    Poll::Ready(Ok(n)) => n,
                    other => return other,
                };
                guard = lock(&this.guard);
                n
            } else {
                let n = buf.len().min(guard.prefetched.len());
                buf[..n].copy_from_slice(&guard.prefetched[..n]);
                guard.prefetched.drain(..n);
                n
            };
            let in_request_line = guard.in_head && guard.request_line;
            if let Err(e) = guard.inspect(&buf[..n]) {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
            if n == 0 || !in_request_line {
                return Poll::Ready(Ok(n));
            }
            // The request line is held back until it is whole, so that its
            // version can be rewritten.
            match buf[..n].iter().position(|&b| b == b'\n') {
                None => guard.line.extend_from_slice(&buf[..n]),
                Some(i) => {
                    let mut line = std::mem::take(&mut guard.line);
                    line.extend_from_slice(&buf[..=i]);
                    if line.ends_with(b" HTTP/1.0\r\n") {
                        // async-h1 refuses HTTP/1.0; the request is the same in
                        // HTTP/1.1 but for persistence: its response closes.
                        let at = line.len() - 3;
                        line[at] = b'1';
                        guard.http10 = true;
                        // `Host` is optional in HTTP/1.0 (load balancers' health
                        // checks often omit it) but async-h1 requires it of
                        // 1.1: supply one ahead of the client's own, if any
                        // (the proxy does not route by host).
                        line.extend_from_slice(b"Host: localhost\r\n");
                    }
                    line.extend_from_slice(&buf[i + 1..n]);
                    guard.pending = line;
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use std::collections::VecDeque;

    /// A client connection in memory: the client's bytes come in segments,
    /// the next one only once the server wrote something since the last (a
    /// client that waits for each answer); what the server writes is kept.
    #[derive(Clone, Default)]
    struct Pipe(Arc<Mutex<PipeState>>);

    #[derive(Default)]
    struct PipeState {
        segments: VecDeque<Vec<u8>>,
        current: Vec<u8>,
        answered: bool,
        written: Vec<u8>,
        closed_by_server: bool,
        /// The next segment waits for an answer (else all flow at once).
        lockstep: bool,
    }

    impl Pipe {
        fn new(segments: &[&[u8]]) -> Pipe {
            let pipe = Pipe::default();
            let mut state = pipe.0.lock().unwrap();
            state.segments = segments.iter().map(|s| s.to_vec()).collect();
            state.answered = true;
            state.lockstep = true;
            drop(state);
            pipe
        }
    }

    impl AsyncRead for Pipe {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
            let mut state = self.0.lock().unwrap();
            if state.current.is_empty() {
                if state.segments.is_empty() {
                    return Poll::Ready(Ok(0));
                }
                assert!(
                    state.answered || !state.lockstep,
                    "the server reads on before answering: the test would hang"
                );
                state.current = state.segments.pop_front().unwrap_or_default();
                state.answered = false;
            }
            let n = buf.len().min(state.current.len());
            buf[..n].copy_from_slice(&state.current[..n]);
            state.current.drain(..n);
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Pipe {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let mut state = self.0.lock().unwrap();
            state.written.extend_from_slice(buf);
            state.answered = true;
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.0.lock().unwrap().closed_by_server = true;
            Poll::Ready(Ok(()))
        }
    }

    /// No timers needed: the pipe never makes the server wait.
    struct NoTimers;

    impl ConnectionHost for NoTimers {
        fn sleep(&self, _ms: u64) -> impl Future<Output = ()> {
            futures_lite::future::pending()
        }
    }

    /// Echoes the request as JSON; `/ping` is 204. (Also the native server's
    /// test handler.)
    pub(crate) async fn echo(req: Request) -> Response {
        if req.path == "/ping" {
            let mut r = Response::empty(204);
            r.headers.push(("x-influxdb-version".into(), "test".into()));
            return r;
        }
        let echo = serde_json::json!({
            "method": req.method.as_str(),
            "path": req.path,
            "query": req.query,
            "headers": req.headers,
            "body": String::from_utf8_lossy(&req.body),
        });
        Response::json(200, serde_json::to_vec(&echo).unwrap())
    }

    /// An answer as a test client read it (also used by the native server's
    /// tests).
    #[derive(Debug)]
    pub(crate) struct Answer {
        pub(crate) status: u16,
        pub(crate) headers: Vec<(String, String)>,
        pub(crate) body: Vec<u8>,
    }

    impl Answer {
        pub(crate) fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
        }

        pub(crate) fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).unwrap()
        }

        pub(crate) fn error(&self) -> String {
            self.json()["error"].as_str().unwrap().to_string()
        }
    }

    /// What the client saw: the answers (Content-Length framed; no body for
    /// HEAD), and whether the server half-closed the connection.
    struct Seen {
        answers: Vec<Answer>,
        closed_by_server: bool,
    }

    /// Serves one connection whose client sends `segments`, with a body limit
    /// of `max_body_bytes`; `head_requests` tells which answers have no body.
    fn serve(max_body_bytes: u64, segments: &[&[u8]], head_requests: &[bool]) -> Seen {
        serve_pipe(Pipe::new(segments), max_body_bytes, head_requests)
    }

    fn serve_pipe(pipe: Pipe, max_body_bytes: u64, head_requests: &[bool]) -> Seen {
        let options = ConnectionOptions { max_body_bytes, idle_timeout_ms: 60_000 };
        block_on(serve_connection(pipe.clone(), &options, &NoTimers, echo));
        let state = pipe.0.lock().unwrap();
        let mut rest = &state.written[..];
        let mut answers = Vec::new();
        let mut i = 0;
        while !rest.is_empty() {
            let end = rest.windows(4).position(|w| w == b"\r\n\r\n").expect("a whole response head");
            let head = std::str::from_utf8(&rest[..end]).unwrap();
            let mut lines = head.split("\r\n");
            let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
            let headers: Vec<(String, String)> = lines
                .map(|l| l.split_once(": ").unwrap())
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect();
            let mut a = Answer { status, headers, body: Vec::new() };
            rest = &rest[end + 4..];
            if !head_requests.get(i).copied().unwrap_or(false) {
                let len: usize = a.header("content-length").map_or(0, |v| v.parse().unwrap());
                a.body = rest[..len].to_vec();
                rest = &rest[len..];
            }
            answers.push(a);
            i += 1;
        }
        Seen { answers, closed_by_server: state.closed_by_server }
    }

    /// The only answer on a connection the server closed after it.
    fn only_answer_then_closed(seen: Seen) -> Answer {
        assert_eq!(seen.answers.len(), 1, "{:?}", seen.answers);
        assert!(seen.closed_by_server, "the server half-closes before lingering");
        let a = seen.answers.into_iter().next().unwrap();
        assert_eq!(a.header("connection"), Some("close"));
        a
    }

    #[test]
    fn requests_reach_the_handler_decoded_and_connections_are_kept_alive() {
        let seen = serve(
            1000,
            &[
                b"POST /write?db=my%20db&precision=s&rp=a+b HTTP/1.1\r\nHost: x\r\nAuthorization: Token t\r\n\
                  Content-Length: 11\r\n\r\ncpu value=1",
                b"POST /write HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ncpu\r\n2\r\n v\r\n0\r\n\r\n",
                b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n",
            ],
            &[],
        );
        let [a, b, c] = &seen.answers[..] else { panic!("{:?}", seen.answers) };
        assert_eq!(a.status, 200);
        assert_eq!(a.header("content-type"), Some("application/json"));
        assert_eq!(a.header("connection"), None);
        let v = a.json();
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/write");
        assert_eq!(v["query"], serde_json::json!([["db", "my db"], ["precision", "s"], ["rp", "a b"]]));
        assert!(v["headers"].as_array().unwrap().contains(&serde_json::json!(["authorization", "Token t"])));
        assert_eq!(v["body"], "cpu value=1");
        assert_eq!(b.json()["body"], "cpu v", "chunked body");
        assert_eq!(c.status, 204);
        assert_eq!(c.header("x-influxdb-version"), Some("test"));
        assert_eq!(c.header("content-type"), None, "no invented content type");
        assert!(!seen.closed_by_server, "the client closed first");
    }

    #[test]
    fn head_responses_have_no_body() {
        let seen = serve(
            1000,
            &[b"HEAD /query HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"],
            &[true, false],
        );
        let [a, b] = &seen.answers[..] else { panic!("{:?}", seen.answers) };
        assert_eq!(a.status, 200);
        assert!(a.header("content-length").unwrap().parse::<usize>().unwrap() > 0);
        // Nothing but the next response follows on the connection.
        assert_eq!(b.status, 204);
    }

    #[test]
    fn a_body_over_the_limit_by_its_content_length_is_413_without_reading_it() {
        // Only the head is sent: the answer must not wait for the body.
        let seen = serve(10, &[b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n"], &[]);
        let a = only_answer_then_closed(seen);
        assert_eq!(a.status, 413);
        assert_eq!(a.error(), "request body too large (limit 10 bytes)");
        assert_eq!(a.header("x-influxdb-version"), Some(crate::INFLUXDB_COMPAT_VERSION));
    }

    #[test]
    fn a_chunked_body_over_the_limit_is_413_and_one_at_the_limit_is_read() {
        let seen = serve(
            10,
            &[b"POST /write HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n01234567\r\n"],
            &[],
        );
        let a = only_answer_then_closed(seen);
        assert_eq!(a.status, 413);
        assert_eq!(a.error(), "request body too large (limit 10 bytes)");
        let seen = serve(10, &[b"POST /w HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789"], &[]);
        assert_eq!(
            (seen.answers[0].status, seen.answers[0].json()["body"].clone()),
            (200, "0123456789".into())
        );
    }

    #[test]
    fn a_header_block_over_8_kib_is_431() {
        let mut req = b"GET /query HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..100 {
            req.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(100)).as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        let a = only_answer_then_closed(serve(1000, &[&req], &[]));
        assert_eq!(a.status, 431);
        assert_eq!(a.error(), "request header fields too large (limit 8192 bytes)");
        assert_eq!(a.header("x-influxdb-version"), Some(crate::INFLUXDB_COMPAT_VERSION));
    }

    #[test]
    fn an_endless_request_line_or_header_is_431() {
        let mut line = b"GET /query?q=".to_vec();
        line.extend(std::iter::repeat_n(b'a', 100_000));
        assert_eq!(only_answer_then_closed(serve(1000, &[&line], &[])).status, 431);
        let mut header = b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Oversized: ".to_vec();
        header.extend(std::iter::repeat_n(b'x', 100_000));
        header.extend_from_slice(b"\r\n\r\n");
        assert_eq!(only_answer_then_closed(serve(1000, &[&header], &[])).status, 431);
    }

    #[test]
    fn malformed_heads_are_400_with_an_influxdb_error_body() {
        for (req, expect) in [
            (&b"GARBAGE\r\n\r\n"[..], "malformed request head"),
            (b"\x16\x03\x01 not http at all\r\n\r\n", "malformed request head"),
            (b"GET /ping HTTP/1.1\r\n\r\n", "Host header missing"),
            (b"GET /ping HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", "malformed request head"),
            (b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Name: caf\xc3\xa9\r\n\r\n", "header values must be ASCII"),
            (
                b"POST /w HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "Content-Length",
            ),
            (b"GET /ping HTTP/2.0\r\nHost: x\r\n\r\n", "malformed request head"),
        ] {
            let a = only_answer_then_closed(serve(1000, &[req], &[]));
            assert_eq!(a.status, 400, "{}", String::from_utf8_lossy(req));
            let message = a.error();
            assert!(message.contains(expect), "{message:?} for {}", String::from_utf8_lossy(req));
        }
    }

    #[test]
    fn http_1_0_requests_are_served_and_their_connection_closed() {
        // The request line is held back until it is whole, also when it comes
        // in two reads.
        let pipe = Pipe::new(&[b"POST /write?db=x HTT", b"P/1.0\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"]);
        pipe.0.lock().unwrap().lockstep = false;
        // A third request on the connection would not be read.
        pipe.0.lock().unwrap().segments.push_back(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n".to_vec());
        let seen = serve_pipe(pipe, 1000, &[]);
        let [a] = &seen.answers[..] else { panic!("one answer, then closed: {:?}", seen.answers) };
        assert_eq!(a.header("connection"), Some("close"));
        assert_eq!(a.status, 200);
        assert_eq!(a.json()["body"], "abc");
        assert_eq!(a.json()["path"], "/write");
    }

    #[test]
    fn http_1_0_requests_without_host_are_served() {
        let pipe = Pipe::new(&[b"GET /ping HTTP/1.0\r\n\r\n"]);
        let seen = serve_pipe(pipe, 1000, &[]);
        let [a] = &seen.answers[..] else { panic!("one answer: {:?}", seen.answers) };
        assert_eq!(a.status, 204, "{a:?}");
        assert_eq!(a.header("connection"), Some("close"));
    }

    #[test]
    fn a_host_shutting_down_closes_after_the_response_and_reads_no_more() {
        struct Closing;
        impl ConnectionHost for Closing {
            fn sleep(&self, _ms: u64) -> impl Future<Output = ()> {
                futures_lite::future::pending()
            }
            fn closing(&self) -> bool {
                true
            }
        }
        let pipe = Pipe::new(&[b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"]);
        let options = ConnectionOptions { max_body_bytes: 1000, idle_timeout_ms: 60_000 };
        block_on(serve_connection(pipe.clone(), &options, &Closing, echo));
        assert!(pipe.0.lock().unwrap().written.is_empty(), "no request is read once closing");
    }

    #[test]
    fn response_headers_that_are_not_valid_http_are_dropped() {
        let mut r = Response::json(400, b"{\"error\":\"x\"}\n".to_vec());
        r.headers.push(("X-Influxdb-Version".into(), "1.8.10".into()));
        r.headers.push(("content-length".into(), "999".into()));
        r.headers.push(("connection".into(), "keep-alive".into()));
        r.headers.push(("bad header".into(), "x".into()));
        r.headers.push(("x-split".into(), "a\r\nset-cookie: x".into()));
        r.headers.push(("x-name".into(), "café".into()));
        r.headers.push(("x-multi".into(), "1".into()));
        r.headers.push(("x-multi".into(), "2".into()));
        let mut out = to_http_response(r, true);
        assert_eq!(out.status(), StatusCode::BadRequest);
        assert_eq!(out.header("x-influxdb-version").map(|v| v.as_str()), Some("1.8.10"));
        assert_eq!(out.header("connection").map(|v| v.as_str()), Some("close"));
        assert!(out.header("content-length").is_none(), "framing is async-h1's");
        let names: Vec<String> = out.iter().map(|(n, _)| n.as_str().to_string()).collect();
        assert!(!names.iter().any(|n| n == "bad header" || n == "x-split" || n == "x-name"), "{names:?}");
        let multi: Vec<&str> = out.header("x-multi").unwrap().iter().map(|v| v.as_str()).collect();
        assert_eq!(multi, ["1", "2"]);
        assert_eq!(out.header("content-type").map(|v| v.as_str()), Some("application/json"));
        assert_eq!(block_on(out.body_string()).unwrap(), "{\"error\":\"x\"}\n");
        // An impossible status is a 500, not a panic.
        assert_eq!(to_http_response(Response::empty(1000), false).status(), StatusCode::InternalServerError);
    }
}
