//! The HTTP/1.1 server of the WASI host: async-h1 over wstd TCP, each
//! connection a task on the wstd executor, every request answered by
//! [`Proxy::handle`].
//!
//! Conversion mirrors the native host: the path and the percent-decoded query
//! (decoded with the core's [`decode_params`]), header names in lower case, the
//! whole body read into memory up to `max_body_bytes`; a larger body is
//! answered 413 with InfluxDB's message before the core sees it.

use crate::stream::Stream;
use crate::{now_ms, Host};
use futures_lite::AsyncReadExt;
use http_types::headers::{HeaderName, HeaderValue};
use influx_proxy::error::ProxyError;
use influx_proxy::http::{decode_params, Method, Request, Response};
use std::rc::Rc;
use wstd::iter::AsyncIterator;
use wstd::net::TcpListener;

/// Accepts connections on `listener` forever, one task per connection.
pub async fn serve(proxy: Rc<Host>, listener: TcpListener) {
    let mut incoming = listener.incoming();
    while let Some(conn) = incoming.next().await {
        let conn = match conn {
            Ok(conn) => conn,
            // A failed accept (e.g. the client already went away) concerns
            // that client only.
            Err(_) => continue,
        };
        let proxy = proxy.clone();
        wstd::runtime::spawn(async move {
            // A malformed request or a broken connection ends that connection;
            // async-h1 has already answered what it could.
            let _ = async_h1::accept(Stream::new(conn), move |req| {
                let proxy = proxy.clone();
                async move { Ok(answer(&proxy, req).await) }
            })
            .await;
        })
        .detach();
    }
}

/// One request: body limit, conversion, [`Proxy::handle`], conversion back.
async fn answer(proxy: &Host, mut req: http_types::Request) -> http_types::Response {
    let max = proxy.config().max_body_bytes;
    let response = match read_request(&mut req, max).await {
        Ok(request) => proxy.handle(request, now_ms()).await,
        Err(e) => {
            let mut r = e.to_response();
            if e.status() == 413 {
                // Do not make the client send the rest of a body we refuse.
                r.headers.push(("connection".into(), "close".into()));
            }
            r
        }
    };
    to_http_types(response)
}

/// The InfluxDB 1.x message for a body over `max-body-size` (Go's
/// `http.MaxBytesReader`).
const TOO_LARGE: &str = "http: request body too large";

/// Converts an incoming request, reading at most `max_body_bytes` of body.
async fn read_request(
    req: &mut http_types::Request,
    max_body_bytes: u64,
) -> Result<Request, ProxyError> {
    if req.len().is_some_and(|len| len as u64 > max_body_bytes) {
        return Err(ProxyError::TooLarge(TOO_LARGE.into()));
    }
    let mut body = Vec::new();
    req.take_body()
        .take(max_body_bytes.saturating_add(1))
        .read_to_end(&mut body)
        .await
        .map_err(|e| ProxyError::BadRequest(format!("reading the request body: {e}")))?;
    if body.len() as u64 > max_body_bytes {
        return Err(ProxyError::TooLarge(TOO_LARGE.into()));
    }
    let mut headers = Vec::new();
    for (name, values) in req.iter() {
        for value in values.iter() {
            headers.push((
                name.as_str().to_ascii_lowercase(),
                value.as_str().to_string(),
            ));
        }
    }
    Ok(Request {
        method: Method::parse(req.method().as_ref()),
        path: req.url().path().to_string(),
        query: decode_params(req.url().query().unwrap_or("")),
        headers,
        body,
    })
}

/// The core's response as an http-types response. Framing headers are left to
/// async-h1; a header that is not valid HTTP is dropped, never a panic.
fn to_http_types(response: Response) -> http_types::Response {
    let status = http_types::StatusCode::try_from(response.status)
        .unwrap_or(http_types::StatusCode::InternalServerError);
    let mut out = http_types::Response::new(status);
    for (name, value) in response.headers {
        if ["content-length", "transfer-encoding"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
        {
            continue;
        }
        if let Some((name, value)) = header(name, value) {
            out.append_header(name, value);
        }
    }
    if !response.body.is_empty() {
        out.set_body(response.body);
    }
    out
}

/// A header that is valid HTTP/1.1 (RFC 9110 section 5: the name a token,
/// the value without control characters other than tab), else `None`.
pub(crate) fn header(name: String, value: String) -> Option<(HeaderName, HeaderValue)> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let field = |b: u8| b == b'\t' || (b' '..=b'~').contains(&b);
    if name.is_empty() || !name.bytes().all(token) || !value.bytes().all(field) {
        return None;
    }
    Some((
        HeaderName::from_bytes(name.into_bytes()).ok()?,
        HeaderValue::from_bytes(value.into_bytes()).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    fn incoming(url: &str, body: &str) -> http_types::Request {
        let mut req = http_types::Request::new(http_types::Method::Post, url);
        req.insert_header("Content-Encoding", "gzip");
        req.set_body(body.to_string());
        req
    }

    #[test]
    fn request_is_converted_like_the_native_host() {
        let mut req = incoming(
            "http://proxy/write?db=my%20db&precision=s&rp=a+b",
            "cpu v=1",
        );
        let r = block_on(read_request(&mut req, 100)).unwrap();
        assert_eq!(r.method, Method::Post);
        assert_eq!(r.path, "/write");
        assert_eq!(r.param("db"), Some("my db"));
        assert_eq!(r.param("rp"), Some("a b"));
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.body, b"cpu v=1");
    }

    #[test]
    fn body_over_the_limit_is_413() {
        let mut req = incoming("http://proxy/write?db=x", "cpu v=1");
        let e = block_on(read_request(&mut req, 6)).unwrap_err();
        assert_eq!((e.status(), e.message()), (413, TOO_LARGE));
        // Exactly at the limit is accepted.
        let mut req = incoming("http://proxy/write?db=x", "cpu v=1");
        assert!(block_on(read_request(&mut req, 7)).is_ok());
    }

    #[test]
    fn response_keeps_status_headers_and_body() {
        let mut r = Response::json(400, b"{\"error\":\"x\"}\n".to_vec());
        r.headers
            .push(("x-influxdb-version".into(), "1.8.10".into()));
        r.headers.push(("content-length".into(), "999".into()));
        r.headers.push(("bad header".into(), "x".into()));
        r.headers
            .push(("x-split".into(), "a\r\nset-cookie: x".into()));
        let mut out = to_http_types(r);
        assert_eq!(out.status(), http_types::StatusCode::BadRequest);
        assert_eq!(
            out.header("x-influxdb-version").map(|v| v.as_str()),
            Some("1.8.10")
        );
        assert!(
            out.header("x-split").is_none() && out.iter().all(|(n, _)| n.as_str() != "bad header")
        );
        assert_eq!(
            out.header("content-type").map(|v| v.as_str()),
            Some("application/json")
        );
        assert_eq!(block_on(out.body_string()).unwrap(), "{\"error\":\"x\"}\n");
    }
}
