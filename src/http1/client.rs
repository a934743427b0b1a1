//! The backend side of HTTP/1.1, shared by the native and WASI transports:
//! the core's [`Request`] as an http-types request to a backend, a backend's
//! http-types response as the core's [`Response`], and the byte counter that
//! tells a retryable failure (no response byte yet) from a broken answer.
//!
//! Connecting, pooling and timeouts stay in each host's transport.

use crate::http::{encode_params, Method, Request, Response};
use crate::transport::{BackendAddr, TransportError};
use futures_lite::io::{AsyncRead, AsyncWrite};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

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

/// A request body read by the first try and a retry without copying it.
#[derive(Debug, Clone)]
pub struct SharedBody(pub Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedBody {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The core's `request` as an http-types request to `backend`: the backend's
/// base path before the path, the query string encoded, `Host` set to the
/// backend, the client's headers forwarded except hop-by-hop and framing ones
/// and invalid ones (never a panic), and `body` (not `request.body`) with its
/// length for a POST or a non-empty body. Error: a method the proxy never sends,
/// or a URL that does not parse.
pub fn to_backend_request(
    backend: &BackendAddr,
    request: &Request,
    body: &SharedBody,
) -> Result<http_types::Request, TransportError> {
    let method = match request.method {
        Method::Get => http_types::Method::Get,
        Method::Head => http_types::Method::Head,
        Method::Post => http_types::Method::Post,
        Method::Other => return Err(TransportError::Io("the proxy only sends GET, HEAD and POST".into())),
    };
    let mut url = format!("http://{}{}{}", backend.authority(), backend.base_path, request.path);
    if !request.query.is_empty() {
        url.push('?');
        url.push_str(&encode_params(&request.query));
    }
    let url = http_types::Url::parse(&url).map_err(|e| TransportError::Io(format!("{url}: {e}")))?;
    let mut out = http_types::Request::new(method, url);
    if request.method == Method::Post || !body.0.is_empty() {
        let len = body.0.len();
        out.set_body(http_types::Body::from_reader(futures_lite::io::Cursor::new(body.clone()), Some(len)));
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

/// A backend's response as the core's: status, header names in lower case
/// (sorted), values that are not visible ASCII, spaces and tabs dropped
/// (async-h1 invents a `date` value with CR LF when the backend sent none),
/// and the body read by the caller.
pub fn from_backend_response(response: &http_types::Response, body: Vec<u8>) -> Response {
    let mut headers = Vec::new();
    for (name, values) in response.iter() {
        for value in values.iter() {
            if value.as_str().bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
                headers.push((name.as_str().to_ascii_lowercase(), value.as_str().to_string()));
            }
        }
    }
    headers.sort();
    Response { status: response.status().into(), headers, body }
}

/// Whether the connection may carry another exchange after this response
/// (RFC 9112 section 9.3): not `Connection: close`, and a body that is framed
/// (Content-Length or Transfer-Encoding) or absent (HEAD, 1xx, 204, 304). A
/// body delimited by the end of the connection cannot be followed by another
/// response.
pub fn reusable(method: Method, response: &http_types::Response) -> bool {
    let close = response
        .header("connection")
        .is_some_and(|v| v.iter().any(|v| v.as_str().eq_ignore_ascii_case("close")));
    let framed =
        response.header("content-length").is_some() || response.header("transfer-encoding").is_some();
    !close && (framed || !has_body(method, response))
}

/// Whether a response to `method` carries a body (not for HEAD, 1xx, 204, 304).
pub fn has_body(method: Method, response: &http_types::Response) -> bool {
    method != Method::Head && !matches!(u16::from(response.status()), 100..=199 | 204 | 304)
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

/// A stream that counts the bytes read from it into a shared counter, to tell
/// "the connection failed before any response byte" (safe to send again on a
/// fresh connection) from a broken answer. Writes pass through.
#[derive(Debug, Clone)]
pub struct CountingStream<S> {
    pub inner: S,
    pub received: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.received.fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingStream<S> {
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
        let out = to_backend_request(&backend, &request, &SharedBody(Arc::new(b"abc".to_vec()))).unwrap();
        assert_eq!(out.url().as_str(), "http://127.0.0.1:8087/influx/write?db=my%20db");
        assert_eq!(out.header("host").unwrap().as_str(), "127.0.0.1:8087");
        assert_eq!(out.header("authorization").unwrap().as_str(), "Token x");
        assert_eq!(out.header("content-type").unwrap().as_str(), "text/plain");
        assert!(out.header("connection").is_none() && out.header("x-bad").is_none());
        assert_eq!(out.len(), Some(3));
        let get =
            to_backend_request(&backend, &Request::new(Method::Get, "/ping"), &SharedBody(Arc::default()));
        assert!(get.unwrap().header("content-type").is_none());
    }

    #[test]
    fn only_framed_responses_without_close_are_reusable() {
        let mut r = http_types::Response::new(200);
        assert!(!reusable(Method::Get, &r), "a body delimited by the connection's end");
        r.insert_header("content-length", "2");
        assert!(reusable(Method::Get, &r));
        r.insert_header("connection", "close");
        assert!(!reusable(Method::Get, &r));
        assert!(reusable(Method::Get, &http_types::Response::new(204)));
        assert!(reusable(Method::Head, &http_types::Response::new(200)));
    }
}
