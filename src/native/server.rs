//! The proxy's HTTP/1.1 server: an accept loop on a smol `TcpListener`, each
//! connection served by async-h1 on the local executor, requests converted to
//! the core's [`Request`] and the core's [`Response`] back.
//!
//! What async-h1 2.3 does with bad request heads, and what this server adds:
//! async-h1's `accept` returns an error and writes nothing, so the client would
//! see the connection drop. This server answers instead, with an InfluxDB-style
//! `{"error":"..."}` body and `Connection: close` (the stream cannot be resynced
//! after a bad head; a new connection works):
//! - a head of 8 KiB or more (async-h1's fixed `MAX_HEAD_LENGTH`, checked after
//!   each line) -> 431; a single line growing past [`MAX_HEAD_BYTES`] without
//!   an end is cut off here before async-h1 buffers it all;
//! - a header value with non-ASCII bytes -> 400 (async-h1 would panic in
//!   http-types, which only accepts ASCII header values);
//! - async-h1 refuses HTTP/1.0 (505 here): this server rewrites the version
//!   of an HTTP/1.0 request line to 1.1 before async-h1 reads it, and closes
//!   the connection after the response (HTTP/1.0 has no keep-alive by
//!   default; the response is an HTTP/1.1 one with `Content-Length`, as RFC
//!   9110 section 6.2 allows). nginx's `proxy_pass` speaks HTTP/1.0 by default;
//! - anything else httparse or async-h1 refuses (no `Host`, malformed request
//!   line, `Content-Length` with `Transfer-Encoding`, unknown method) -> 400.
//!
//! Request bodies are read up to `max_body_bytes`; a larger body (by its
//! `Content-Length`, or while reading a chunked body) is answered 413 with
//! `Connection: close` and the rest of it is not read.
//!
//! Shutdown (the `shutdown` future of [`serve`] completing): stop accepting,
//! close idle kept-alive connections, let requests in flight finish (their
//! responses say `Connection: close`), wait at most `shutdown_grace`.

use crate::error::ProxyError;
use crate::http::{decode_params, Method, Request, Response};
use async_h1::server::ConnectionStatus;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use futures_lite::FutureExt;
use http_types::{Body, StatusCode};
use smol::net::{TcpListener, TcpStream};
use smol::{LocalExecutor, Timer};
use std::cell::Cell;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Largest request head (request line and headers) this server reads, in
/// bytes, before answering 431. async-h1 itself refuses heads of 8 KiB or more
/// (checked per line); this bound stops a single endless line early.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// After a response that closes the connection early (413, bad head), the
/// server half-closes and reads and discards at most this many bytes for at
/// most [`LINGER`], so that the client reads the response instead of a reset.
const LINGER_BYTES: usize = 1 << 20;
const LINGER: Duration = Duration::from_secs(1);

/// How the server treats its connections.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest request body, in bytes (the config's `max_body_bytes`).
    pub max_body_bytes: u64,
    /// A kept-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// At shutdown, how long requests in flight may take to finish.
    pub shutdown_grace: Duration,
}

impl ServerOptions {
    /// Options with this body limit, a 60 s idle timeout (as async-h1's time
    /// limit for reading a request head) and a 10 s shutdown grace.
    pub fn new(max_body_bytes: u64) -> ServerOptions {
        ServerOptions {
            max_body_bytes,
            idle_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown` completes, then shuts down
/// gracefully (see the module doc). Each connection is a task on `ex`; each
/// request is answered by `handler`. Returns the number of connections still
/// busy when the grace period ran out (0 after a clean shutdown).
///
/// Errors accepting a connection (e.g. too many open files) do not stop the
/// server: it waits 100 ms and accepts again.
pub async fn serve<'a, H, Fut>(
    ex: &LocalExecutor<'a>,
    listener: TcpListener,
    handler: H,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> usize
where
    H: Fn(Request) -> Fut + 'a,
    Fut: Future<Output = Response> + 'a,
{
    let handler = Rc::new(handler);
    let shared = Rc::new(Shared { closing: Cell::new(false), active: Cell::new(0) });
    // Closed (by dropping the sender) to wake every idle connection at shutdown.
    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                (&mut shutdown).await;
                None
            })
            .await;
        match accepted {
            None => break,
            Some(Ok((stream, _peer))) => {
                stream.set_nodelay(true).ok();
                let conn = Connection {
                    stream,
                    handler: handler.clone(),
                    options: options.clone(),
                    shared: shared.clone(),
                    stop: stop_rx.clone(),
                };
                shared.active.set(shared.active.get() + 1);
                ex.spawn(conn.run()).detach();
            }
            Some(Err(_)) => {
                Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    shared.closing.set(true);
    drop(stop_tx);
    let deadline = Instant::now() + options.shutdown_grace;
    while shared.active.get() > 0 && Instant::now() < deadline {
        Timer::after(Duration::from_millis(10)).await;
    }
    shared.active.get()
}

/// State shared by the accept loop and the connections.
struct Shared {
    /// Shutting down: responses say `Connection: close`.
    closing: Cell<bool>,
    /// Open connections.
    active: Cell<usize>,
}

struct Connection<H> {
    stream: TcpStream,
    handler: Rc<H>,
    options: ServerOptions,
    shared: Rc<Shared>,
    stop: smol::channel::Receiver<()>,
}

impl<H, Fut> Connection<H>
where
    H: Fn(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    async fn run(self) {
        let guard = Arc::new(Mutex::new(HeadGuard::default()));
        let io = GuardedStream { inner: self.stream.clone(), guard: guard.clone() };
        // Set when async-h1 called the endpoint: an error after that is not a
        // bad head, and nothing more may be written.
        let invoked = Rc::new(Cell::new(false));
        let endpoint = {
            let (handler, guard, invoked, shared) =
                (self.handler.clone(), guard.clone(), invoked.clone(), self.shared.clone());
            let max_body = self.options.max_body_bytes;
            move |req: http_types::Request| {
                invoked.set(true);
                let (handler, guard, shared) = (handler.clone(), guard.clone(), shared.clone());
                async move {
                    let http10 = lock(&guard).http10;
                    let (response, close) = match read_request(req, max_body).await {
                        Ok(request) => ((*handler)(request).await, http10),
                        Err(refusal) => {
                            // Stop reading: the rest of the body is not wanted.
                            lock(&guard).cut = true;
                            (refusal, true)
                        }
                    };
                    Ok(to_http_response(response, close || shared.closing.get()))
                }
            }
        };
        let mut server = async_h1::server::Server::new(io, endpoint);
        loop {
            if !self.wait_for_request().await {
                break;
            }
            lock(&guard).start_request();
            invoked.set(false);
            let result = AssertUnwindSafe(server.accept_one()).catch_unwind().await;
            let bad_head = match result {
                Ok(Ok(ConnectionStatus::KeepAlive)) if !self.shared.closing.get() => continue,
                Ok(Ok(_)) => None,
                Ok(Err(e)) if !invoked.get() => bad_head_response(&e),
                Ok(Err(_)) => None,
                // A panic inside async-h1 or http-types while reading the head.
                Err(_) if !invoked.get() => Some(ProxyError::BadRequest("malformed request head".into())),
                Err(_) => None,
            };
            if let Some(error) = bad_head {
                let response = to_http_response(error.to_response(), true);
                let mut encoder = async_h1::server::Encoder::new(response, http_types::Method::Get);
                let mut out = self.stream.clone();
                if futures_lite::io::copy(&mut encoder, &mut out).await.is_ok() {
                    linger(&self.stream).await;
                }
            } else if lock(&guard).cut {
                linger(&self.stream).await;
            }
            break;
        }
        self.shared.active.set(self.shared.active.get() - 1);
    }

    /// Waits until the client sends the next request's first byte. False if it
    /// closed the connection, stayed idle past `idle_timeout`, or the server is
    /// shutting down.
    async fn wait_for_request(&self) -> bool {
        let mut probe = [0u8; 1];
        let readable = async { matches!(self.stream.peek(&mut probe).await, Ok(n) if n > 0) };
        let stop = async {
            self.stop.recv().await.ok();
            false
        };
        let idle = async {
            Timer::after(self.options.idle_timeout).await;
            false
        };
        !self.shared.closing.get() && readable.or(stop).or(idle).await
    }
}

fn lock(guard: &Mutex<HeadGuard>) -> std::sync::MutexGuard<'_, HeadGuard> {
    guard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Half-closes the connection and discards what the client still sends, for
/// a bounded time, so that a client still sending reads the response.
async fn linger(stream: &TcpStream) {
    stream.shutdown(std::net::Shutdown::Write).ok();
    let mut stream = stream.clone();
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
    drain
        .or(async {
            Timer::after(LINGER).await;
        })
        .await;
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

/// Reads the request into the core's form, or the response refusing it.
async fn read_request(mut req: http_types::Request, max_body_bytes: u64) -> Result<Request, Response> {
    let too_large = || {
        ProxyError::TooLarge(format!("request body too large (limit {max_body_bytes} bytes)")).to_response()
    };
    if req.len().is_some_and(|len| len as u64 > max_body_bytes) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let mut reader = req.take_body();
    if let Err(e) = (&mut reader).take(max_body_bytes.saturating_add(1)).read_to_end(&mut body).await {
        let message = format!("error reading request body: {e}");
        return Err(ProxyError::BadRequest(message).to_response());
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

/// Response headers this server sets itself (framing, connection).
const FRAMING: &[&str] = &["content-length", "transfer-encoding", "connection", "keep-alive"];

/// The core's response as async-h1's; `close` adds `Connection: close`.
/// (async-h1's encoder leaves out the body of HEAD responses.)
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
        out.remove_header("content-type");
    }
    for (name, value) in &response.headers {
        let lower = name.to_ascii_lowercase();
        if FRAMING.contains(&lower.as_str()) || !header_token(&lower) || !header_value(value) {
            continue;
        }
        if lower == "content-type" {
            out.insert_header("content-type", value.as_str());
        } else {
            out.append_header(lower.as_str(), value.as_str());
        }
    }
    if close {
        out.insert_header("connection", "close");
    }
    out
}

fn header_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

fn header_value(s: &str) -> bool {
    s.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
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
    /// The request line read so far (held back until its end).
    line: Vec<u8>,
    /// Bytes read but not yet handed to async-h1.
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
struct GuardedStream {
    inner: TcpStream,
    guard: Arc<Mutex<HeadGuard>>,
}

impl AsyncRead for GuardedStream {
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
            drop(guard);
            let n = match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            let mut guard = lock(&this.guard);
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
                    }
                    line.extend_from_slice(&buf[i + 1..n]);
                    guard.pending = line;
                }
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
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
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream as StdStream;

    /// A server on its own thread with [`handler`], stopped on drop.
    struct TestServer {
        port: u16,
        stop: Option<smol::channel::Sender<()>>,
        thread: Option<std::thread::JoinHandle<usize>>,
    }

    impl TestServer {
        fn start(max_body_bytes: u64) -> TestServer {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let (stop, stopped) = smol::channel::bounded::<()>(1);
            let thread = std::thread::spawn(move || {
                let ex = LocalExecutor::new();
                let listener = TcpListener::try_from(listener).unwrap();
                let mut options = ServerOptions::new(max_body_bytes);
                options.shutdown_grace = Duration::from_secs(3);
                let shutdown = async move {
                    stopped.recv().await.ok();
                };
                smol::block_on(ex.run(serve(&ex, listener, handler, options, shutdown)))
            });
            TestServer { port, stop: Some(stop), thread: Some(thread) }
        }

        fn connect(&self) -> StdStream {
            let s = StdStream::connect(("127.0.0.1", self.port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        }

        /// Starts the shutdown; returns what `serve` returned.
        fn stop(&mut self) -> usize {
            self.stop.take();
            self.thread.take().map(|t| t.join().unwrap()).unwrap_or(0)
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                self.stop();
            }
        }
    }

    /// Echoes the request as JSON; `/slow` takes 300 ms; `/ping` is 204.
    async fn handler(req: Request) -> Response {
        if req.path == "/slow" {
            Timer::after(Duration::from_millis(300)).await;
        }
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

    #[derive(Debug)]
    struct Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
        }

        fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).unwrap()
        }
    }

    /// Reads one response (Content-Length framed, or none for HEAD).
    fn read_answer(reader: &mut impl BufRead, head_request: bool) -> Answer {
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let status = status_line.split(' ').nth(1).unwrap_or_else(|| panic!("{status_line:?}"));
        let status = status.parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            let (k, v) = line.trim_end().split_once(": ").unwrap();
            headers.push((k.to_ascii_lowercase(), v.to_string()));
        }
        let mut a = Answer { status, headers, body: Vec::new() };
        let len: usize = a.header("content-length").map_or(0, |v| v.parse().unwrap());
        if !head_request {
            a.body = vec![0; len];
            reader.read_exact(&mut a.body).unwrap();
        }
        a
    }

    fn send(stream: &mut StdStream, request: &[u8]) -> Answer {
        stream.write_all(request).unwrap();
        read_answer(&mut BufReader::new(stream.try_clone().unwrap()), request.starts_with(b"HEAD"))
    }

    fn assert_closed(stream: &mut StdStream) {
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    }

    fn assert_still_serving(server: &TestServer) {
        let a = send(&mut server.connect(), b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(a.status, 204);
        assert_eq!(a.header("x-influxdb-version"), Some("test"));
    }

    #[test]
    fn requests_reach_the_handler_decoded_and_connections_are_kept_alive() {
        let server = TestServer::start(1000);
        let mut c = server.connect();
        let a = send(
            &mut c,
            b"POST /write?db=my%20db&precision=s&rp=a+b HTTP/1.1\r\nHost: x\r\nAuthorization: Token t\r\n\
              Content-Length: 11\r\n\r\ncpu value=1",
        );
        assert_eq!(a.status, 200);
        assert_eq!(a.header("content-type"), Some("application/json"));
        let v = a.json();
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/write");
        assert_eq!(v["query"], serde_json::json!([["db", "my db"], ["precision", "s"], ["rp", "a b"]]));
        assert!(v["headers"].as_array().unwrap().contains(&serde_json::json!(["authorization", "Token t"])));
        assert_eq!(v["body"], "cpu value=1");
        // The same connection serves the next requests, chunked bodies too.
        let a = send(
            &mut c,
            b"POST /write HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ncpu\r\n2\r\n v\r\n0\r\n\r\n",
        );
        assert_eq!(a.json()["body"], "cpu v");
        let a = send(&mut c, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(a.status, 204);
        assert_eq!(a.header("content-type"), None, "no invented content type");
    }

    #[test]
    fn head_responses_have_no_body() {
        let server = TestServer::start(1000);
        let mut c = server.connect();
        let a = send(&mut c, b"HEAD /query HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(a.status, 200);
        assert!(a.header("content-length").unwrap().parse::<usize>().unwrap() > 0);
        // Nothing but the next response follows on the connection.
        let a = send(&mut c, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(a.status, 204);
    }

    #[test]
    fn a_body_over_the_limit_by_its_content_length_is_413_without_reading_it() {
        let server = TestServer::start(10);
        let mut c = server.connect();
        // Only the head is sent: the answer must not wait for the body.
        let a = send(&mut c, b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n");
        assert_eq!(a.status, 413);
        assert_eq!(a.json()["error"], "request body too large (limit 10 bytes)");
        assert_eq!(a.header("connection"), Some("close"));
        assert_closed(&mut c);
        assert_still_serving(&server);
    }

    #[test]
    fn a_chunked_body_over_the_limit_is_413() {
        let server = TestServer::start(10);
        let mut c = server.connect();
        let a = send(
            &mut c,
            b"POST /write HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n01234567\r\n",
        );
        assert_eq!(a.status, 413);
        assert_eq!(a.json()["error"], "request body too large (limit 10 bytes)");
        assert_closed(&mut c);
        // A body of exactly the limit is accepted.
        let a = send(
            &mut server.connect(),
            b"POST /w HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789",
        );
        assert_eq!((a.status, a.json()["body"].clone()), (200, "0123456789".into()));
    }

    #[test]
    fn a_header_block_over_8_kib_is_431_and_the_server_goes_on() {
        let server = TestServer::start(1000);
        let mut c = server.connect();
        let mut req = b"GET /query HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..100 {
            req.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(100)).as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        let a = send(&mut c, &req);
        assert_eq!(a.status, 431);
        assert_eq!(a.json()["error"], "request header fields too large (limit 8192 bytes)");
        assert_eq!(a.header("connection"), Some("close"));
        assert_closed(&mut c);
        assert_still_serving(&server);
    }

    #[test]
    fn an_endless_request_line_is_431() {
        let server = TestServer::start(1000);
        let mut c = server.connect();
        let mut req = b"GET /query?q=".to_vec();
        req.extend(std::iter::repeat_n(b'a', 100_000));
        let a = send(&mut c, &req);
        assert_eq!(a.status, 431);
        assert_still_serving(&server);
    }

    #[test]
    fn malformed_heads_are_400_with_an_influxdb_error_body() {
        let server = TestServer::start(1000);
        for (req, expect) in [
            (&b"GARBAGE\r\n\r\n"[..], "malformed request head"),
            (b"GET /ping HTTP/1.1\r\n\r\n", "Host header missing"),
            (b"GET /ping HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", "malformed request head"),
            (b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Name: caf\xc3\xa9\r\n\r\n", "header values must be ASCII"),
            (
                b"POST /w HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "Content-Length",
            ),
        ] {
            let mut c = server.connect();
            let a = send(&mut c, req);
            assert_eq!(a.status, 400, "{}", String::from_utf8_lossy(req));
            let message = a.json()["error"].as_str().unwrap().to_string();
            assert!(message.contains(expect), "{message:?} for {}", String::from_utf8_lossy(req));
            assert_closed(&mut c);
        }
        assert_still_serving(&server);
    }

    #[test]
    fn http_1_0_requests_are_served_and_their_connection_closed() {
        let server = TestServer::start(1000);
        let mut c = server.connect();
        // Sent in pieces: the request line is held back until it is whole.
        c.write_all(b"POST /write?db=x HTT").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        c.write_all(b"P/1.0\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc").unwrap();
        let a = read_answer(&mut BufReader::new(c.try_clone().unwrap()), false);
        assert_eq!(a.status, 200);
        assert_eq!(a.header("connection"), Some("close"));
        assert_eq!(a.json()["body"], "abc");
        assert_eq!(a.json()["path"], "/write");
        assert_closed(&mut c);
        // Other versions are refused.
        let a = send(&mut server.connect(), b"GET /ping HTTP/2.0\r\nHost: x\r\n\r\n");
        assert_eq!(a.status, 400);
    }

    #[test]
    fn shutdown_lets_requests_in_flight_finish_and_closes_idle_connections() {
        let mut server = TestServer::start(1000);
        let mut idle = server.connect();
        assert_eq!(send(&mut idle, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").status, 204);
        let mut busy = server.connect();
        busy.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let start = Instant::now();
        assert_eq!(server.stop(), 0, "every connection finished within the grace period");
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
        let a = read_answer(&mut BufReader::new(busy.try_clone().unwrap()), false);
        assert_eq!((a.status, a.header("connection")), (200, Some("close")));
        assert_closed(&mut busy);
        assert_closed(&mut idle);
        assert!(StdStream::connect(("127.0.0.1", server.port)).is_err(), "no longer accepting");
    }
}
