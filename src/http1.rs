//! One HTTP/1.1 client connection, served by async-h1 for both hosts: request
//! heads guarded, http-types messages converted to the core's [`Request`] and
//! the core's [`Response`] back.
//!
//! The host accepts connections and calls [`serve_connection`] for each; it
//! passes the stream (any `futures-io` stream async-h1 accepts) and what only
//! it has, through [`ConnectionHost`]: a timer, and whether it is shutting
//! down. Nothing here spawns, sleeps on its own or reads a clock.
//!
//! The request-head guard: async-h1 2.3 answers nothing to a head it refuses
//! (the client would see the connection drop), panics on some (non-ASCII
//! values), and lets some through that RFC 9112 requires refusing. So this
//! module reads each head whole itself, checks it (`check_head` lists the
//! rules) and hands async-h1 a rewritten head it reads the same way. Refused
//! requests are answered with an InfluxDB-style `{"error":"..."}` body and
//! `Connection: close` (the stream cannot be resynced; a new connection
//! works), and never reach the core:
//! - a head of [`MAX_HEAD_BYTES`] (8 KiB, async-h1's `MAX_HEAD_LENGTH`) or
//!   more -> 431, read no further;
//! - a head not received whole within `header_read_timeout_ms` of its first
//!   byte -> 408;
//! - a non-ASCII header value -> 400 (http-types panics on them);
//! - conflicting or invalid `Content-Length` (`5` and `6`, `5, 6`, `+5`,
//!   `-1`) -> 400 (RFC 9112 section 6.3, request smuggling); the same value
//!   repeated is taken once, as Go's net/http (InfluxDB) does;
//! - `Transfer-Encoding` with `Content-Length`, in HTTP/1.0, or whose final
//!   coding is not `chunked` -> 400; another coding before `chunked` -> 501;
//! - no `Host` in HTTP/1.1, several, or one that is not `host[:port]` -> 400;
//! - async-h1 refuses HTTP/1.0 (505): the guard rewrites the version of an
//!   HTTP/1.0 request line to 1.1 (adding the `Host` async-h1 requires if
//!   the client sent none; the core sees only the client's headers) and
//!   closes the connection after the response (HTTP/1.0 has no keep-alive by
//!   default; the response is an HTTP/1.1 one with `Content-Length`, as RFC
//!   9110 section 6.2 allows). nginx's `proxy_pass` speaks HTTP/1.0 by default;
//! - anything else httparse or async-h1 refuses (malformed request line,
//!   unknown method) -> 400.
//!
//! Request bodies are read up to `max_body_bytes`; a larger body (by its
//! `Content-Length`, or while reading a chunked body) is answered 413 with
//! `Connection: close` and the rest of it is not read. A body not received
//! whole within `body_read_timeout_ms` of the end of its head (a total, so
//! that a trickling body is cut too) is answered 408; one that ends before its
//! `Content-Length`, a malformed chunked body, or one whose trailers are
//! non-ASCII (another http-types panic), over 4 KiB or cut short is answered
//! 400 (trailers are held back until whole: async-h1's decoder would wait for
//! ever on trailers that come in pieces); in all these cases the core
//! sees nothing of the request. After a response that closes the connection
//! early (408, 413, bad head) the connection lingers: it is half-closed (the
//! stream's `close`) and what the client still sends is read and discarded
//! for a bounded time, so that the client reads the response rather than a
//! reset.
//!
//! [`decode_request`] runs one connection's bytes through all of this in
//! memory, for the fuzz target in tests/fuzz.
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

/// A request head (request line, headers and the blank line) of this many
/// bytes or more is answered 431 and not read further: async-h1's own limit
/// (`MAX_HEAD_LENGTH`, 8 KiB).
pub const MAX_HEAD_BYTES: usize = 8 * 1024;

/// After a response that closes the connection early (413, bad head), at most
/// this many bytes the client still sends are read and discarded ...
const LINGER_BYTES: usize = 1 << 20;
/// ... for at most this long, in ms.
const LINGER_MS: u64 = 1000;

/// A kept-alive connection with no request for this long, in ms, is closed
/// (both hosts; as async-h1's former time limit for reading a request head).
pub const IDLE_TIMEOUT_MS: u64 = 60_000;

/// How one connection is served.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// Largest request body, in bytes (the config's `max_body_bytes`).
    pub max_body_bytes: u64,
    /// A kept-alive connection with no request for this long, in ms, is
    /// closed.
    pub idle_timeout_ms: u64,
    /// Longest time from the first byte of a request to the end of its head,
    /// in ms (the config's `header_read_timeout_ms`); later -> 408.
    pub header_read_timeout_ms: u64,
    /// Longest time from the end of a request head to the end of its body,
    /// in ms, in total (the config's `body_read_timeout_ms`); later -> 408.
    pub body_read_timeout_ms: u64,
}

impl ConnectionOptions {
    /// The options the config gives, with the idle timeout [`IDLE_TIMEOUT_MS`].
    pub fn from_config(config: &crate::config::Config) -> ConnectionOptions {
        ConnectionOptions {
            max_body_bytes: config.max_body_bytes,
            idle_timeout_ms: IDLE_TIMEOUT_MS,
            header_read_timeout_ms: config.header_read_timeout_ms,
            body_read_timeout_ms: config.body_read_timeout_ms,
        }
    }
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
    serve(stream, options, host, handler, usize::MAX, true).await;
}

/// [`serve_connection`], for at most `max_requests` requests; `catch_panics`
/// turns a panic in async-h1 or http-types into a 400 (or a dropped
/// connection) where panics unwind.
async fn serve<S, H, Fut>(
    stream: S,
    options: &ConnectionOptions,
    host: &impl ConnectionHost,
    handler: H,
    max_requests: usize,
    catch_panics: bool,
) where
    S: AsyncRead + AsyncWrite + Clone + Send + Sync + Unpin + 'static,
    H: Fn(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let guard = Arc::new(Mutex::new(StreamGuard::default()));
    let io = GuardedStream { inner: stream.clone(), guard: guard.clone() };
    // Set when async-h1 called the endpoint: an error after that is not a
    // bad head, and nothing more may be written.
    let invoked = Cell::new(false);
    let endpoint = {
        let (handler, guard, invoked) = (&handler, &guard, &invoked);
        move |req: http_types::Request| {
            invoked.set(true);
            async move {
                let facts = lock(guard).facts.clone();
                let ms = options.body_read_timeout_ms;
                let read = read_request(req, &facts, options.max_body_bytes);
                let timeout = async {
                    host.sleep(ms).await;
                    Err(refusal(&timeout_error("body", ms)))
                };
                let (response, close) = match read.or(timeout).await {
                    Ok(request) => (handler(request).await, facts.http10),
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
    for _ in 0..max_requests {
        let Some(first) = wait_for_request(&mut stream, options, host).await else {
            break;
        };
        let checked = match read_head(&mut stream, first, options, host).await {
            Ok((head, rest)) => check_head(&head).map(|checked| (checked, rest)),
            Err(Some(error)) => Err(error),
            // The client left (or the connection failed) within the head.
            Err(None) => break,
        };
        let (checked, rest) = match checked {
            Ok(checked) => checked,
            Err(error) => {
                answer_and_linger(&mut stream, host, &error).await;
                break;
            }
        };
        *lock(&guard) = StreamGuard::for_request(checked, rest);
        invoked.set(false);
        let result = if catch_panics {
            AssertUnwindSafe(server.accept_one()).catch_unwind().await
        } else {
            Ok(server.accept_one().await)
        };
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
            answer_and_linger(&mut stream, host, &error).await;
        } else if lock(&guard).cut {
            linger(&mut stream, host).await;
        }
        break;
    }
}

/// Answers a request refused before async-h1 called the endpoint, with
/// `Connection: close`, then lingers.
async fn answer_and_linger<S>(stream: &mut S, host: &impl ConnectionHost, error: &ProxyError)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let response = to_http_response(refusal(error), true);
    let mut encoder = async_h1::server::Encoder::new(response, http_types::Method::Get);
    if futures_lite::io::copy(&mut encoder, &mut *stream).await.is_ok() {
        linger(stream, host).await;
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

/// Reads a whole request head, of which `buf` holds the first bytes, within
/// `header_read_timeout_ms`: `(head, rest)`, the head through its blank line
/// and the bytes read after it. `Err(Some(_))`: 431 for a head of
/// [`MAX_HEAD_BYTES`] or more, 408 for the timeout; `Err(None)`: the
/// connection ended first.
async fn read_head<S>(
    stream: &mut S,
    buf: Vec<u8>,
    options: &ConnectionOptions,
    host: &impl ConnectionHost,
) -> Result<(Vec<u8>, Vec<u8>), Option<ProxyError>>
where
    S: AsyncRead + Unpin,
{
    let reading = async move {
        let mut buf = buf;
        let mut searched = 0;
        loop {
            if let Some(at) = buf[searched..].windows(4).position(|w| w == b"\r\n\r\n") {
                let rest = buf.split_off(searched + at + 4);
                return Ok((buf, rest));
            }
            if buf.len() >= MAX_HEAD_BYTES {
                return Err(Some(head_too_large()));
            }
            searched = buf.len().saturating_sub(3);
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Err(None),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    let ms = options.header_read_timeout_ms;
    let timeout = async {
        host.sleep(ms).await;
        Err(Some(timeout_error("head", ms)))
    };
    reading.or(timeout).await
}

/// 408 for a request head or body not read within `ms`.
fn timeout_error(part: &str, ms: u64) -> ProxyError {
    ProxyError::Backend {
        status: 408,
        message: format!("timeout reading the request {part} (limit {ms} ms)"),
    }
}

/// What the guard learnt from a request head, for reading the request.
#[derive(Debug, Clone, Default)]
struct HeadFacts {
    /// The request is HTTP/1.0 (rewritten to 1.1 for async-h1): its response
    /// closes the connection.
    http10: bool,
    /// The client sent no `Host` (HTTP/1.0); the guard supplied one for
    /// async-h1, which the core does not see.
    host_added: bool,
    /// The client sent a `Content-Type` (else http-types invents one, which
    /// the core does not see).
    content_type: bool,
    /// The body is chunked.
    chunked: bool,
}

/// A request head checked and rewritten for async-h1.
#[derive(Debug)]
struct CheckedHead {
    head: Vec<u8>,
    facts: HeadFacts,
}

/// Checks a request head (through its blank line) and rewrites it for
/// async-h1: the `BadRequest` (or 431, 501) refusing it, or the head async-h1
/// is to read, in which every header line is one httparse reads the same way
/// (`name: value`, CRLF), the version of an HTTP/1.0 request is 1.1, a
/// repeated identical `Content-Length` is one, and an HTTP/1.0 request
/// without `Host` has one. Refused (RFC 9112 and 9110, and async-h1's
/// panics):
/// - header names that are not tokens, lines without a colon, obsolete line
///   folding, control characters in values; non-ASCII values (http-types
///   panics on them);
/// - a `Content-Length` that is not digits only, or several that differ
///   (RFC 9112 section 6.3: request smuggling);
/// - `Transfer-Encoding` with `Content-Length` or in HTTP/1.0 (400), with
///   `chunked` not the final coding or twice (400), with another coding
///   before `chunked` (501, as InfluxDB's Go server: not implemented);
/// - an HTTP/1.1 request without `Host`, several `Host`s, or one that is not
///   `host[:port]` (RFC 9112 section 3.2; async-h1 builds the URL from it,
///   so a `/` or `?` there would change the path or query).
///
/// The request line is left to httparse and the URL parser.
fn check_head(head: &[u8]) -> Result<CheckedHead, ProxyError> {
    let bad = |problem: String| ProxyError::BadRequest(format!("malformed request head: {problem}"));
    if head.len() >= MAX_HEAD_BYTES {
        return Err(head_too_large());
    }
    let mut text = head.strip_suffix(b"\r\n\r\n").ok_or_else(|| bad("no end".into()))?;
    // RFC 9112 section 2.2: empty lines before the request line are ignored.
    while let Some(rest) = text.strip_prefix(b"\r\n") {
        text = rest;
    }
    let mut lines = text.split(|&b| b == b'\n').map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let mut request_line = lines.next().unwrap_or_default().to_vec();
    let mut facts = HeadFacts::default();
    if request_line.ends_with(b" HTTP/1.0") {
        // async-h1 refuses HTTP/1.0; the request is the same in HTTP/1.1 but
        // for persistence: its response closes.
        let at = request_line.len() - 1;
        request_line[at] = b'1';
        facts.http10 = true;
    }
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    // RFC 9110 section 9.1: the method is case-sensitive. http-types reads
    // `hEAD` as HEAD (the answer would then have no body, although the
    // client, which sent another method, waits for one), and Go's server
    // behind InfluxDB knows no `hEAD`: refused.
    let method = request_line.split(|&b| b == b' ').next().unwrap_or_default();
    if method.iter().any(u8::is_ascii_lowercase) {
        return Err(bad(format!(
            "unknown method {:?} (methods are case-sensitive)",
            String::from_utf8_lossy(method)
        )));
    }
    let mut fields: Vec<(&str, &str)> = Vec::new();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(bad(format!("header line without a colon {:?}", String::from_utf8_lossy(line))));
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&b| token(b)) {
            return Err(bad(format!("invalid header name {:?}", String::from_utf8_lossy(name))));
        }
        if value.iter().any(|&b| b >= 0x80) {
            return Err(bad("header values must be ASCII".into()));
        }
        if value.iter().any(|&b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Err(bad(format!("control character in header {:?}", String::from_utf8_lossy(name))));
        }
        // Both are ASCII now.
        let (Ok(name), Ok(value)) = (std::str::from_utf8(name), std::str::from_utf8(value)) else {
            return Err(bad("header values must be ASCII".into()));
        };
        fields.push((name, value));
    }
    let values = |wanted: &str| -> Vec<&str> {
        fields.iter().filter(|(name, _)| name.eq_ignore_ascii_case(wanted)).map(|(_, v)| *v).collect()
    };
    let quoted = |list: &[&str]| list.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(", ");

    let hosts = values("host");
    match hosts[..] {
        [] if facts.http10 => facts.host_added = true,
        [] => return Err(bad("Host header missing".into())),
        [host] if !valid_host(host) => return Err(bad(format!("invalid Host header {host:?}"))),
        [_] => {}
        _ => return Err(bad("several Host headers".into())),
    }

    let lengths = values("content-length");
    for length in &lengths {
        if length.is_empty() || !length.bytes().all(|b| b.is_ascii_digit()) || length.parse::<u64>().is_err()
        {
            return Err(bad(format!("invalid Content-Length header {length:?}")));
        }
    }
    if lengths.iter().any(|l| l != &lengths[0]) {
        return Err(bad(format!("conflicting Content-Length headers ({})", quoted(&lengths))));
    }
    // async-h1 keeps the length as a usize: on wasm32 a length past 4 GiB
    // would wrap to a small one and pass the body limit.
    if lengths.first().and_then(|l| l.parse::<u64>().ok()).is_some_and(|n| usize::try_from(n).is_err()) {
        return Err(ProxyError::TooLarge(format!("request body too large: Content-Length {}", lengths[0])));
    }

    let encodings = values("transfer-encoding");
    if !encodings.is_empty() {
        let all = encodings.join(", ");
        let codings: Vec<&str> = all.split(',').map(|c| c.trim_matches([' ', '\t'])).collect();
        let chunked = |c: &&str| c.eq_ignore_ascii_case("chunked");
        if facts.http10 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request".into()));
        }
        if !lengths.is_empty() {
            return Err(bad("both Transfer-Encoding and Content-Length".into()));
        }
        if !codings.last().is_some_and(chunked) {
            return Err(bad(format!("chunked is not the final Transfer-Encoding {all:?}")));
        }
        if codings.iter().filter(|c| chunked(c)).count() > 1 {
            return Err(bad(format!("chunked twice in Transfer-Encoding {all:?}")));
        }
        if codings.len() > 1 {
            return Err(ProxyError::Backend {
                status: 501,
                message: format!("unsupported Transfer-Encoding {all:?} (only chunked is implemented)"),
            });
        }
        facts.chunked = true;
    }
    facts.content_type = !values("content-type").is_empty();

    let mut out = Vec::with_capacity(head.len() + 32);
    out.extend_from_slice(&request_line);
    out.extend_from_slice(b"\r\n");
    if facts.host_added {
        // `Host` is optional in HTTP/1.0 (load balancers' health checks often
        // omit it) but async-h1 requires it of 1.1 (the proxy does not route
        // by host).
        out.extend_from_slice(b"Host: localhost\r\n");
    }
    let (mut length_done, mut encoding_done) = (false, false);
    for (name, value) in &fields {
        let once = if name.eq_ignore_ascii_case("content-length") {
            Some(&mut length_done)
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            Some(&mut encoding_done)
        } else {
            None
        };
        let value = match once {
            Some(done) if *done => continue,
            Some(done) => {
                *done = true;
                if facts.chunked {
                    "chunked"
                } else {
                    value
                }
            }
            None => value,
        };
        for part in [name.as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
            out.extend_from_slice(part);
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(CheckedHead { head: out, facts })
}

/// `value` without the spaces and tabs around it.
fn trim(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// A `Host` value is `uri-host [":" port]` (RFC 9110 section 7.2, RFC 3986
/// section 3.2.2): checked for its characters only (reg-name, IP literals,
/// port), the URL parser does the rest.
fn valid_host(host: &str) -> bool {
    !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b))
}

fn lock(guard: &Mutex<StreamGuard>) -> std::sync::MutexGuard<'_, StreamGuard> {
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

/// The answer to a request head async-h1 refused (after [`check_head`]
/// passed it: what httparse or the URL parser refuses), or `None` when the
/// connection itself failed (nothing to answer).
fn bad_head_response(error: &http_types::Error) -> Option<ProxyError> {
    if error.downcast_ref::<io::Error>().is_some() {
        return None;
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

/// Reads the request into the core's form, with the client's headers (not
/// those the guard or http-types added), or the response refusing it: 413
/// for a body over `max_body_bytes`, 400 for a body that cannot be read or
/// ends before its `Content-Length`.
async fn read_request(
    mut req: http_types::Request,
    facts: &HeadFacts,
    max_body_bytes: u64,
) -> Result<Request, Response> {
    let too_large =
        || refusal(&ProxyError::TooLarge(format!("request body too large (limit {max_body_bytes} bytes)")));
    let expected = req.len();
    if expected.is_some_and(|len| len as u64 > max_body_bytes) {
        return Err(too_large());
    }
    let mut reader = req.take_body();
    let body = match read_body(&mut reader, expected, max_body_bytes).await {
        Ok(body) => body,
        Err(e) => {
            let message = format!("error reading request body: {e}");
            return Err(refusal(&ProxyError::BadRequest(message)));
        }
    };
    if body.len() as u64 > max_body_bytes {
        return Err(too_large());
    }
    if let Some(expected) = expected.filter(|&len| body.len() < len) {
        let message = format!("request body cut short: {} of {expected} bytes", body.len());
        return Err(refusal(&ProxyError::BadRequest(message)));
    }
    let url = req.url();
    let mut headers = Vec::new();
    for (name, values) in req.iter() {
        let name = name.as_str().to_ascii_lowercase();
        if (name == "host" && facts.host_added) || (name == "content-type" && !facts.content_type) {
            continue;
        }
        for value in values.iter() {
            headers.push((name.clone(), value.as_str().to_string()));
        }
    }
    Ok(Request {
        method: Method::parse(req.method().as_ref()),
        path: url.path().to_string(),
        query: url.query().map(decode_params).unwrap_or_default(),
        headers,
        body,
        peer: None,
    })
}

/// Bytes of a request body's buffer zeroed before any of the body came
/// (see [`read_body`]).
const BODY_ZEROED_AHEAD: usize = 64 * 1024;

/// Reads `reader` to its end, but no more than `max_body_bytes` + 1 bytes
/// (one more than the limit tells the caller it was passed). With the body's
/// `Content-Length` (`expected`, bytes) the buffer is allocated once; without
/// one (chunked) it doubles from 8 KiB. Each byte of the buffer is zeroed
/// once (`read_to_end` zeroes all spare room again after every read that
/// waits, and a body arrives in many), and only as the body comes: at most
/// [`BODY_ZEROED_AHEAD`] bytes before any came, then as many again as came,
/// so that a client announcing a `max_body_bytes` body and sending none
/// holds no more memory than one sending it (about twice what came).
// Zeroed after allocating on purpose (see the buffer's comment).
#[allow(clippy::slow_vector_initialization)]
async fn read_body(
    reader: &mut (impl AsyncRead + Unpin),
    expected: Option<usize>,
    max_body_bytes: u64,
) -> io::Result<Vec<u8>> {
    let cap = usize::try_from(max_body_bytes.saturating_add(1)).unwrap_or(usize::MAX);
    // One spare byte past a Content-Length, so that the end is read without
    // growing the buffer.
    let reserved = expected.map_or(8 * 1024, |len| len.saturating_add(1)).min(cap);
    // Allocated, then zeroed: the allocator reuses memory it holds for
    // that, where `vec![0; n]` (calloc) takes fresh pages from the system
    // for a large buffer, and their page faults cost more than the zeroing.
    let mut body = Vec::with_capacity(reserved);
    body.resize(reserved.min(BODY_ZEROED_AHEAD), 0);
    let mut filled = 0;
    loop {
        if filled == body.len() {
            if body.len() >= cap {
                break;
            }
            // Within the room reserved first, then doubling up to `cap`.
            let limit = if body.len() < reserved { reserved } else { cap };
            body.resize(body.len().saturating_mul(2).max(8 * 1024).min(limit), 0);
        }
        match reader.read(&mut body[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    body.truncate(filled);
    Ok(body)
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

/// Why the [`GuardedStream`] refused to read more of a request body.
#[derive(Debug)]
enum BodyError {
    /// http-types panics on a non-ASCII trailer value (async-h1 passes
    /// trailers to it unchecked).
    NonAsciiTrailer,
    /// The trailers are over [`MAX_TRAILER_BYTES`].
    TrailersTooLarge,
    /// The connection ended within the trailers.
    TrailersCut,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::NonAsciiTrailer => write!(f, "non-ASCII byte in the trailers of a chunked body"),
            BodyError::TrailersTooLarge => {
                write!(f, "the trailers of a chunked body are over {MAX_TRAILER_BYTES} bytes")
            }
            BodyError::TrailersCut => write!(f, "the connection ended within the trailers of a chunked body"),
        }
    }
}

impl std::error::Error for BodyError {}

/// Largest trailer section of a chunked body (after its last chunk, through
/// its blank line), in bytes; more -> 400. (async-h1's decoder reads at most
/// 8 KiB of trailers, and only in one piece; see [`GuardedStream`].)
const MAX_TRAILER_BYTES: usize = 4096;

/// What the [`GuardedStream`] hands async-h1 for the request being read.
#[derive(Debug, Default)]
struct StreamGuard {
    /// The checked head, handed out first (in reads of its own).
    head: Vec<u8>,
    /// Bytes read after the head with it (or held back), handed out next.
    rest: Vec<u8>,
    /// Reads return end-of-file: the request was refused, the rest of its
    /// body is not wanted.
    cut: bool,
    facts: HeadFacts,
    /// Where a chunked body is, to hold back and check its trailers.
    chunked: Option<Chunked>,
}

impl StreamGuard {
    fn for_request(checked: CheckedHead, rest: Vec<u8>) -> StreamGuard {
        let chunked = checked.facts.chunked.then_some(Chunked::Size(0));
        StreamGuard { head: checked.head, rest, cut: false, facts: checked.facts, chunked }
    }
}

/// The framing of a chunked body as async-h1's `ChunkedDecoder` reads it
/// (RFC 9112 section 7.1, without chunk extensions), followed to find the
/// trailers. Like the decoder, an unexpected byte (which it refuses with an
/// error) leaves the state as it was: async-h1 reads on after the error (to
/// drain the body), and the two must agree on where the trailers start.
/// `Off` once the trailers were handed out.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Chunked {
    Size(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    Trailers,
    Off,
}

impl Chunked {
    /// Follows `bytes` up to the start of the trailers: how many of them come
    /// before (all, unless the state becomes `Trailers`).
    fn follow(&mut self, bytes: &[u8]) -> usize {
        let mut at = 0;
        while at < bytes.len() {
            let b = bytes[at];
            *self = match *self {
                Chunked::Data(n) => {
                    let k = (bytes.len() - at).min(usize::try_from(n).unwrap_or(usize::MAX));
                    at += k;
                    *self = if k as u64 == n { Chunked::DataCr } else { Chunked::Data(n - k as u64) };
                    continue;
                }
                Chunked::Trailers => return at,
                Chunked::Off => return bytes.len(),
                Chunked::Size(n) if b == b'\r' => Chunked::SizeLf(n),
                Chunked::Size(n) => match (b as char).to_digit(16) {
                    Some(d) => Chunked::Size(
                        n.checked_mul(16).and_then(|n| n.checked_add(u64::from(d))).unwrap_or(n),
                    ),
                    None => Chunked::Size(n),
                },
                Chunked::SizeLf(0) if b == b'\n' => Chunked::Trailers,
                Chunked::SizeLf(n) if b == b'\n' => Chunked::Data(n),
                Chunked::DataCr if b == b'\r' => Chunked::DataLf,
                Chunked::DataLf if b == b'\n' => Chunked::Size(0),
                // What the decoder refuses: its state stays.
                state => state,
            };
            at += 1;
        }
        at
    }
}

/// The end of a whole trailer section at the start of `bytes` (just `CRLF`,
/// or field lines through `CRLF CRLF`), if it is there.
fn trailers_end(bytes: &[u8]) -> Option<usize> {
    if bytes.starts_with(b"\r\n") {
        return Some(2);
    }
    bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|at| at + 4)
}

/// The client connection as async-h1 reads it: the checked head first, then
/// the body, and end-of-file once the request was refused. The trailers of a
/// chunked body are held back until they are whole and handed out in one
/// read, checked: async-h1's decoder panics (in http-types) on a non-ASCII
/// trailer, and waits for ever (returns `Pending` without a wake-up) on
/// trailers that come in pieces.
#[derive(Debug, Clone)]
struct GuardedStream<S> {
    inner: S,
    guard: Arc<Mutex<StreamGuard>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let mut guard = lock(&this.guard);
        if guard.cut || buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if !guard.head.is_empty() {
            let n = buf.len().min(guard.head.len());
            buf[..n].copy_from_slice(&guard.head[..n]);
            guard.head.drain(..n);
            return Poll::Ready(Ok(n));
        }
        if guard.chunked == Some(Chunked::Trailers) {
            loop {
                if let Some(end) = trailers_end(&guard.rest) {
                    if guard.rest[..end].iter().any(|&b| b >= 0x80) {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            BodyError::NonAsciiTrailer,
                        )));
                    }
                    // The decoder reads into 8 KiB: all of it fits.
                    let n = end.min(buf.len());
                    buf[..n].copy_from_slice(&guard.rest[..n]);
                    guard.rest.drain(..n);
                    guard.chunked = Some(Chunked::Off);
                    return Poll::Ready(Ok(n));
                }
                if guard.rest.len() > MAX_TRAILER_BYTES {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        BodyError::TrailersTooLarge,
                    )));
                }
                let mut chunk = [0u8; 4096];
                match Pin::new(&mut this.inner).poll_read(cx, &mut chunk) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            BodyError::TrailersCut,
                        )))
                    }
                    Poll::Ready(Ok(n)) => guard.rest.extend_from_slice(&chunk[..n]),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
            }
        }
        let mut n = if guard.rest.is_empty() {
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            }
        } else {
            let n = buf.len().min(guard.rest.len());
            buf[..n].copy_from_slice(&guard.rest[..n]);
            guard.rest.drain(..n);
            n
        };
        if let Some(chunked) = &mut guard.chunked {
            let before = chunked.follow(&buf[..n]);
            if before < n {
                // The trailers start here: held back until whole.
                let mut held = buf[before..n].to_vec();
                held.append(&mut guard.rest);
                guard.rest = held;
                n = before;
            }
        }
        Poll::Ready(Ok(n))
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

/// Feeds `input`, the bytes of one client connection, through the
/// request-head guard and async-h1's decoding exactly as
/// [`serve_connection`] does (with a body limit of `max_body_bytes`), on an
/// in-memory stream, for the first request only. Returns:
/// - `Some(Ok(request))`: the [`Request`] the core would be handed;
/// - `Some(Err(status))`: the status of the refusal written instead (400,
///   408, 413, 431, 501, 505);
/// - `None`: nothing was answered (the input ends within the head).
///
/// The entry point of the request-head guard's fuzz target (tests/fuzz)
/// and a test helper. It never blocks: the stream ends with `input`, and the
/// timers (idle, head, body) are virtual, firing only after everything else
/// stood still for a while, so a request that would wait for more bytes ends
/// as it would at its timeout. Unlike [`serve_connection`] it does not turn
/// panics into a 400: every input must be handled without one (under
/// wasmtime a panic aborts the proxy), so a panic here is a bug to report.
pub fn decode_request(input: &[u8], max_body_bytes: u64) -> Option<Result<Request, u16>> {
    let stream =
        MemoryStream(Arc::new(Mutex::new(MemoryState { input: input.to_vec(), ..MemoryState::default() })));
    let options = ConnectionOptions {
        max_body_bytes,
        idle_timeout_ms: IDLE_TIMEOUT_MS,
        header_read_timeout_ms: 60_000,
        body_read_timeout_ms: 30_000,
    };
    let seen = std::cell::RefCell::new(None);
    let handler = |request: Request| {
        *seen.borrow_mut() = Some(request);
        async { Response::empty(204) }
    };
    futures_lite::future::block_on(serve(stream.clone(), &options, &VirtualTimers, handler, 1, false));
    if let Some(request) = seen.into_inner() {
        return Some(Ok(request));
    }
    let state = stream.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    final_status(&state.output).map(Err)
}

/// The status of the first final (not 1xx) response in `output`.
fn final_status(mut output: &[u8]) -> Option<u16> {
    loop {
        let status = output.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
        let status: u16 = std::str::from_utf8(status).ok()?.parse().ok()?;
        if status >= 200 {
            return Some(status);
        }
        let end = output.windows(4).position(|w| w == b"\r\n\r\n")?;
        output = &output[end + 4..];
    }
}

/// [`decode_request`]'s stream: reads `input`, then end-of-file; keeps what
/// is written.
#[derive(Debug, Clone)]
struct MemoryStream(Arc<Mutex<MemoryState>>);

#[derive(Debug, Default)]
struct MemoryState {
    input: Vec<u8>,
    read: usize,
    output: Vec<u8>,
}

impl AsyncRead for MemoryStream {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut state = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let start = state.read.min(state.input.len());
        let n = buf.len().min(state.input.len() - start);
        buf[..n].copy_from_slice(&state.input[start..start + n]);
        state.read = start + n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for MemoryStream {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).output.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// [`decode_request`]'s timers: a sleep ends after being polled 64 times
/// (each time waking its task again), whatever its length; with an
/// in-memory stream that never waits, that is only when the rest is stuck.
struct VirtualTimers;

impl ConnectionHost for VirtualTimers {
    fn sleep(&self, _ms: u64) -> impl Future<Output = ()> {
        let mut polls = 0;
        std::future::poll_fn(move |cx| {
            polls += 1;
            if polls > 64 {
                Poll::Ready(())
            } else {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
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

    impl Seen {
        /// The first answer's status and the body the core got (echoed).
        fn first_status_and_body(&self) -> (u16, serde_json::Value) {
            (self.answers[0].status, self.answers[0].json()["body"].clone())
        }
    }

    /// Serves one connection whose client sends `segments`, with a body limit
    /// of `max_body_bytes`; `head_requests` tells which answers have no body.
    fn serve(max_body_bytes: u64, segments: &[&[u8]], head_requests: &[bool]) -> Seen {
        serve_pipe(Pipe::new(segments), max_body_bytes, head_requests)
    }

    fn serve_pipe(pipe: Pipe, max_body_bytes: u64, head_requests: &[bool]) -> Seen {
        let options = ConnectionOptions {
            max_body_bytes,
            idle_timeout_ms: 60_000,
            header_read_timeout_ms: 60_000,
            body_read_timeout_ms: 60_000,
        };
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
        assert_eq!(seen.first_status_and_body(), (200, "0123456789".into()));
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
        let options = ConnectionOptions {
            max_body_bytes: 1000,
            idle_timeout_ms: 60_000,
            header_read_timeout_ms: 60_000,
            body_read_timeout_ms: 60_000,
        };
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

    /// The headers the handler saw, as (name, value) pairs.
    fn seen_headers(a: &Answer) -> Vec<(String, String)> {
        serde_json::from_value(a.json()["headers"].clone()).unwrap()
    }

    /// RFC 9112 section 6.3: a Content-Length that is not one number (or
    /// the same number repeated) makes the framing unknowable (request
    /// smuggling); such requests are refused before any handler runs.
    #[test]
    fn conflicting_or_invalid_content_lengths_are_400() {
        for (lengths, expect) in [
            (&["5", "6"][..], r#"conflicting Content-Length headers ("5", "6")"#),
            (&["6", "5"], r#"conflicting Content-Length headers ("6", "5")"#),
            (&["5, 6"], r#"invalid Content-Length header "5, 6""#),
            (&["5, 5"], r#"invalid Content-Length header "5, 5""#),
            (&["-1"], r#"invalid Content-Length header "-1""#),
            (&["+5"], r#"invalid Content-Length header "+5""#),
            (&["abc"], r#"invalid Content-Length header "abc""#),
            (&["0x5"], r#"invalid Content-Length header "0x5""#),
            (&["5 5"], r#"invalid Content-Length header "5 5""#),
            (&[""], r#"invalid Content-Length header """#),
            (&["99999999999999999999999"], r#"invalid Content-Length header "99999999999999999999999""#),
        ] {
            let mut req = b"POST /write?db=x HTTP/1.1\r\nHost: x\r\n".to_vec();
            for l in lengths {
                req.extend_from_slice(format!("Content-Length: {l}\r\n").as_bytes());
            }
            req.extend_from_slice(b"\r\ncpu v=1");
            let a = only_answer_then_closed(serve(1000, &[&req], &[]));
            assert_eq!(a.status, 400, "{lengths:?}: {a:?}");
            assert_eq!(a.error(), format!("malformed request head: {expect}"), "{lengths:?}");
            assert_eq!(a.header("x-influxdb-version"), Some(crate::INFLUXDB_COMPAT_VERSION));
        }
    }

    /// RFC 9110 section 8.6 allows taking a repeated identical Content-Length
    /// as one (Go's net/http, hence InfluxDB, does): the core sees one.
    #[test]
    fn identical_repeated_content_lengths_count_once() {
        let seen = serve(
            1000,
            &[b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc"],
            &[],
        );
        let a = &seen.answers[0];
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.json()["body"], "abc");
        let lengths: Vec<_> = seen_headers(a).into_iter().filter(|(k, _)| k == "content-length").collect();
        assert_eq!(lengths, [("content-length".to_string(), "3".to_string())]);
    }

    /// RFC 9112 section 6.1: chunked must be the final coding (else 400);
    /// codings the proxy does not know are 501 (as InfluxDB's Go server);
    /// Transfer-Encoding with Content-Length, or in HTTP/1.0, is 400.
    #[test]
    fn transfer_encodings_other_than_chunked_are_refused() {
        for (head, status, expect) in [
            ("HTTP/1.1\r\nTransfer-Encoding: gzip", 400, "chunked is not the final Transfer-Encoding"),
            (
                "HTTP/1.1\r\nTransfer-Encoding: chunked, gzip",
                400,
                "chunked is not the final Transfer-Encoding",
            ),
            ("HTTP/1.1\r\nTransfer-Encoding: ", 400, "chunked is not the final Transfer-Encoding"),
            ("HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked", 400, "chunked twice"),
            ("HTTP/1.1\r\nTransfer-Encoding: chunked, chunked", 400, "chunked twice"),
            (
                "HTTP/1.1\r\nTransfer-Encoding: gzip, chunked",
                501,
                "unsupported Transfer-Encoding \"gzip, chunked\"",
            ),
            ("HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked", 501, "unsupported"),
            (
                "HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5",
                400,
                "both Transfer-Encoding and Content-Length",
            ),
            ("HTTP/1.0\r\nTransfer-Encoding: chunked", 400, "Transfer-Encoding in an HTTP/1.0 request"),
        ] {
            let req = format!("POST /write?db=x {head}\r\nHost: x\r\n\r\n5\r\ncpu v\r\n0\r\n\r\n");
            let a = only_answer_then_closed(serve(1000, &[req.as_bytes()], &[]));
            assert_eq!(a.status, status, "{head:?}: {a:?}");
            assert!(a.error().contains(expect), "{head:?}: {:?}", a.error());
        }
        // Case and spaces do not matter.
        let seen = serve(
            1000,
            &[b"POST /w HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:  Chunked \r\n\r\n3\r\nabc\r\n0\r\n\r\n"],
            &[],
        );
        assert_eq!(seen.first_status_and_body(), (200, "abc".into()));
    }

    /// The guard rewrites HTTP/1.0 to 1.1 for async-h1 and supplies the
    /// `Host` async-h1 requires, only when the client sent none, and the core
    /// sees the client's headers, no more.
    #[test]
    fn http_1_0_requests_reach_the_core_with_the_clients_host_only() {
        let seen = serve(1000, &[b"GET /q HTTP/1.0\r\nHost: db.example:7076\r\nX-A: 1\r\n\r\n"], &[]);
        let a = &seen.answers[0];
        assert_eq!(a.status, 200, "{a:?}");
        let strings =
            |v: &[(&str, &str)]| v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let mut headers = seen_headers(a);
        headers.sort();
        assert_eq!(headers, strings(&[("host", "db.example:7076"), ("x-a", "1")]));
        let seen = serve(1000, &[b"GET /q HTTP/1.0\r\nX-A: 1\r\n\r\n"], &[]);
        assert_eq!(seen_headers(&seen.answers[0]), strings(&[("x-a", "1")]));
    }

    /// RFC 9110 section 9.1: methods are case-sensitive; `hEAD` is not HEAD
    /// (found by fuzzing: it was answered as HEAD, without the body its
    /// Content-Length announced, which a client that sent `hEAD` waits for).
    #[test]
    fn a_method_in_other_case_is_400_with_its_body() {
        for method in ["hEAD", "head", "Get", "pOST"] {
            let req = format!("{method} /ping HTTP/1.1\r\nHost: a\r\n\r\n");
            let a = only_answer_then_closed(serve(1000, &[req.as_bytes()], &[]));
            assert_eq!(a.status, 400, "{method}: {a:?}");
            assert_eq!(
                a.error(),
                format!("malformed request head: unknown method {method:?} (methods are case-sensitive)")
            );
        }
    }

    /// RFC 9112 section 3.2: several `Host` headers, or an invalid one, are
    /// 400. (A `Host` with `/`, `?` or `#` would otherwise change the path or
    /// query the core sees: async-h1 builds the URL from it.)
    #[test]
    fn several_or_invalid_host_headers_are_400() {
        for (hosts, expect) in [
            (&["a", "b"][..], "several Host headers"),
            (&["a", "a"], "several Host headers"),
            (&["x/y"], r#"invalid Host header "x/y""#),
            (&["x?db=other"], r#"invalid Host header "x?db=other""#),
            (&["x#"], r#"invalid Host header "x#""#),
            (&["u@x"], r#"invalid Host header "u@x""#),
            (&["x\\y"], r#"invalid Host header "x\\y""#),
            (&["a b"], r#"invalid Host header "a b""#),
            (&[""], r#"invalid Host header """#),
        ] {
            let mut req = b"GET /ping HTTP/1.1\r\n".to_vec();
            for h in hosts {
                req.extend_from_slice(format!("Host: {h}\r\n").as_bytes());
            }
            req.extend_from_slice(b"\r\n");
            let a = only_answer_then_closed(serve(1000, &[&req], &[]));
            assert_eq!(a.status, 400, "{hosts:?}: {a:?}");
            assert_eq!(a.error(), format!("malformed request head: {expect}"), "{hosts:?}");
        }
        for host in ["127.0.0.1:7076", "[::1]:7076", "influx-proxy.example", "a_b.c-d~e"] {
            let req = format!("GET /ping HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(serve(1000, &[req.as_bytes()], &[]).answers[0].status, 204, "{host}");
        }
    }

    /// A client that closes its side before the whole body came: nothing of
    /// the request reaches the handler (a cut write must not be written).
    #[test]
    fn a_body_cut_short_reaches_no_handler() {
        let a = only_answer_then_closed(serve(
            1000,
            &[b"POST /write?db=x HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\ncpu v=1\ncpu v=2\n"],
            &[],
        ));
        assert_eq!(a.status, 400, "{a:?}");
        assert_eq!(a.error(), "request body cut short: 16 of 20 bytes");
        let a = only_answer_then_closed(serve(
            1000,
            &[b"POST /write?db=x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8\r\ncpu v=1\n\r\n"],
            &[],
        ));
        assert_eq!(a.status, 400, "{a:?}");
        assert!(a.error().starts_with("error reading request body:"), "{a:?}");
    }

    /// A body source handing out `data` at most `piece` bytes a read, noting
    /// for each read how much had come before it and the room it was given.
    struct Pieces {
        data: Vec<u8>,
        at: usize,
        piece: usize,
        reads: Vec<(usize, usize)>,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let at = self.at;
            self.reads.push((at, buf.len()));
            let n = buf.len().min(self.piece).min(self.data.len() - at);
            buf[..n].copy_from_slice(&self.data[at..at + n]);
            self.at += n;
            Poll::Ready(Ok(n))
        }
    }

    fn pieces(len: usize, piece: usize) -> Pieces {
        let data = (0..len).map(|i| (i % 251) as u8).collect();
        Pieces { data, at: 0, piece, reads: Vec::new() }
    }

    /// `read_body` returns the body exactly, up to one byte past the limit,
    /// around every size where its buffer grows or stops (a Content-Length
    /// or none, a body at, under and over `max_body_bytes`).
    #[test]
    fn a_body_is_read_exactly_up_to_one_byte_past_the_limit() {
        const K: usize = 1024;
        for len in [0, 1, 8 * K - 1, 8 * K, 8 * K + 1, 64 * K - 1, 64 * K, 64 * K + 1, 200 * K + 3] {
            for max in [len.saturating_sub(1), len, len + 1, 1 << 20] {
                for piece in [7, 5000, usize::MAX] {
                    // async-h1 hands out no more than the Content-Length.
                    for expected in [None, Some(len).filter(|_| len <= max)] {
                        let mut source = pieces(len, piece);
                        let body = block_on(read_body(&mut source, expected, max as u64)).unwrap();
                        let want = len.min(max + 1);
                        let case = format!("len {len}, max {max}, piece {piece}, expected {expected:?}");
                        assert_eq!(body.len(), want, "{case}");
                        assert!(body[..] == source.data[..want], "{case}");
                    }
                }
            }
        }
    }

    /// A client that announces a large body and sends little of it holds
    /// little memory: the buffer zeroed ahead of the body is at most 64 KiB
    /// before any came, then no more than twice what came (it was the whole
    /// Content-Length, up to `max_body_bytes`, for as long as the body
    /// timeout lets the client wait).
    #[test]
    fn a_large_content_length_is_not_zeroed_ahead_of_its_body() {
        let mut source = pieces(300 * 1024, 1000);
        let body = block_on(read_body(&mut source, Some(25_000_000), 25_000_000)).unwrap();
        assert_eq!(body.len(), 300 * 1024, "cut short (refused by the caller)");
        for &(came, room) in &source.reads {
            assert!(came + room <= 2 * came + BODY_ZEROED_AHEAD, "{came} bytes came, {room} bytes of room");
        }
    }

    /// async-h1 panics in http-types on a non-ASCII trailer value (an abort
    /// under wasmtime): the guard refuses it first.
    #[test]
    fn a_non_ascii_trailer_is_400() {
        let a = only_answer_then_closed(serve(
            1000,
            &[b"POST /write HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: caf\xc3\xa9\r\n\r\n"],
            &[],
        ));
        assert_eq!(a.status, 400, "{a:?}");
        assert_eq!(a.error(), "error reading request body: non-ASCII byte in the trailers of a chunked body");
        // ASCII trailers are read (and not passed on).
        let seen = serve(
            1000,
            &[b"POST /write HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: ok\r\n\r\n"],
            &[],
        );
        assert_eq!(seen.first_status_and_body(), (200, "abc".into()));
    }

    #[test]
    fn decode_request_gives_the_core_request_or_the_refusal() {
        let request =
            decode_request(b"POST /write?db=x HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n\r\ncpu v=1", 100)
                .unwrap()
                .unwrap();
        assert_eq!((request.method, request.path.as_str()), (Method::Post, "/write"));
        assert_eq!(request.query, [("db".to_string(), "x".to_string())]);
        assert_eq!(request.body, b"cpu v=1");
        assert_eq!(
            decode_request(b"POST /w HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n", 100),
            Some(Err(413))
        );
        assert_eq!(
            decode_request(
                b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                100
            ),
            Some(Err(400))
        );
        assert_eq!(decode_request(b"GET / HTTP/1.1\r\nHost: h\r\n", 100), None, "the client left mid-head");
        assert_eq!(decode_request(b"", 100), None);
        // A trailer cut off after its first line: async-h1's decoder would
        // wait for ever (it returns Pending without a wake-up); the body
        // timeout ends it.
        assert_eq!(
            decode_request(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y", 100),
            Some(Err(400))
        );
    }

    /// Serves `segments` (each one read, all flowing without waiting for
    /// answers) on a thread: what the client saw, or a panic if the
    /// connection was still being served after 5 s.
    #[track_caller]
    fn serve_bounded(segments: &[&[u8]]) -> Seen {
        let pipe = Pipe::new(segments);
        pipe.0.lock().unwrap().lockstep = false;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(serve_pipe(pipe, 1000, &[])).ok());
        rx.recv_timeout(std::time::Duration::from_secs(5)).expect("the connection hangs")
    }

    /// async-h1's chunked decoder returns `Pending` without a wake-up when
    /// the trailers it read are not whole, so the connection would hang for
    /// ever (also after its response, while async-h1 drains the body): the
    /// guard hands trailers out only whole, and refuses them cut or too large.
    #[test]
    fn trailers_in_pieces_or_after_a_bad_last_chunk_do_not_hang_the_connection() {
        let head: &[u8] = b"POST /write HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        let seen = serve_bounded(&[head, b"3\r\nabc\r\n0\r\nX-T: a", b"b\r\n", b"\r\n"]);
        assert_eq!(seen.first_status_and_body(), (200, "abc".into()));
        let seen = serve_bounded(&[head, b"3\r\nabc\r\n0\r\n", b"\r", b"\n"]);
        assert_eq!(seen.first_status_and_body(), (200, "abc".into()));
        // A malformed last chunk that async-h1 refuses, then what looks like
        // the start of trailers.
        let a = only_answer_then_closed(serve_bounded(&[head, b"3\r\nabc\r\n0\r\xff\nX-T:"]));
        assert_eq!(a.status, 400, "{a:?}");
        let a = only_answer_then_closed(serve_bounded(&[head, b"3\r\nabc\r\n0\r\nX-T: a"]));
        assert_eq!(a.status, 400, "{a:?}");
        assert_eq!(
            a.error(),
            "error reading request body: the connection ended within the trailers of a chunked body"
        );
        let mut large = b"3\r\nabc\r\n0\r\nX-T: ".to_vec();
        large.extend(std::iter::repeat_n(b'a', 5000));
        let a = only_answer_then_closed(serve_bounded(&[head, &large, b"\r\n\r\n"]));
        assert_eq!(a.status, 400, "{a:?}");
        assert_eq!(
            a.error(),
            "error reading request body: the trailers of a chunked body are over 4096 bytes"
        );
    }
}
