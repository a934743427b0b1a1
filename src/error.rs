//! Errors the proxy answers with, and whose fault they are.
//!
//! Every error becomes an InfluxDB-style body `{"error":"..."}` with the status
//! InfluxDB 1.x uses for the same situation (InfluxDB 1.x HTTP API reference,
//! "Status codes and responses"): client input -> 4xx, backends unavailable or
//! the queue unable to keep a write -> 5xx.

use crate::http::Response;
use std::fmt;

/// An error answered to the client. The HTTP status follows from the variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// Malformed request: bad line protocol, bad gzip, bad InfluxQL, missing
    /// `db` or `q`, a measurement no route matches -> 400.
    BadRequest(String),
    /// Token auth ([`crate::auth`]): no token, or an unknown one -> 401,
    /// with `WWW-Authenticate: Basic realm="InfluxDB"` as influxd sends
    /// (services/httpd/handler.go `httpError`).
    Unauthorized(String),
    /// A statement refused by the statement filter, or a request outside
    /// its token's scope -> 403.
    Forbidden(String),
    /// Unknown endpoint -> 404.
    NotFound(String),
    /// Wrong method for the endpoint -> 405.
    MethodNotAllowed(String),
    /// Body over `max_body_bytes` -> 413.
    TooLarge(String),
    /// A backend answered 4xx: its status and error text are passed on.
    Backend { status: u16, message: String },
    /// No backend could serve the request (all down or 5xx) -> 503 (or the
    /// backend's 5xx status when one answered).
    Unavailable(String),
    /// The write queue is full or its disk failed: the write was not kept -> 503.
    QueueFull(String),
    /// A bug or an unexpected IO failure -> 500.
    Internal(String),
}

impl ProxyError {
    /// The HTTP status code for this error.
    pub fn status(&self) -> u16 {
        match self {
            ProxyError::BadRequest(_) => 400,
            ProxyError::Unauthorized(_) => 401,
            ProxyError::Forbidden(_) => 403,
            ProxyError::NotFound(_) => 404,
            ProxyError::MethodNotAllowed(_) => 405,
            ProxyError::TooLarge(_) => 413,
            ProxyError::Backend { status, .. } => *status,
            ProxyError::Unavailable(_) | ProxyError::QueueFull(_) => 503,
            ProxyError::Internal(_) => 500,
        }
    }

    /// The message put in `{"error": ...}`.
    pub fn message(&self) -> &str {
        match self {
            ProxyError::BadRequest(m)
            | ProxyError::Unauthorized(m)
            | ProxyError::Forbidden(m)
            | ProxyError::NotFound(m)
            | ProxyError::MethodNotAllowed(m)
            | ProxyError::TooLarge(m)
            | ProxyError::Backend { message: m, .. }
            | ProxyError::Unavailable(m)
            | ProxyError::QueueFull(m)
            | ProxyError::Internal(m) => m,
        }
    }

    /// The HTTP response: status, `content-type: application/json`, body
    /// `{"error":"..."}` (InfluxDB 1.x error body shape).
    pub fn to_response(&self) -> Response {
        let mut response = Response::json(self.status(), error_body(self.message()));
        if let ProxyError::Unauthorized(_) = self {
            response.headers.push(("www-authenticate".into(), "Basic realm=\"InfluxDB\"".into()));
        }
        response
    }
}

/// `{"error":"<message>"}` and a line ending, as bytes, escaped exactly as
/// InfluxDB 1.x's Go `encoding/json` escapes the string (services/httpd
/// `httpError`, `json.Marshal`; encoding/json's `encodeState.string`): `"`
/// and `\\` backslashed, `\n`, `\r`, `\t` as such, every other byte below
/// 0x20 as `\u00xx` (lowercase hex), and `<`, `>`, `&`, U+2028, U+2029 as
/// `\u003c`, `\u003e`, `\u0026`, `\u2028`, `\u2029`, so that an error body
/// is byte for byte influxd's (a malformed line quoted in a partial write's
/// error may hold any of them).
pub fn error_body(message: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(message.len() + 14);
    body.extend_from_slice(b"{\"error\":\"");
    for c in message.chars() {
        match c {
            '"' => body.extend_from_slice(b"\\\""),
            '\\' => body.extend_from_slice(b"\\\\"),
            '\n' => body.extend_from_slice(b"\\n"),
            '\r' => body.extend_from_slice(b"\\r"),
            '\t' => body.extend_from_slice(b"\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\0'..='\u{1f}' => {
                body.extend_from_slice(format!("\\u{:04x}", u32::from(c)).as_bytes())
            }
            c => body.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    body.extend_from_slice(b"\"}\n");
    body
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status(), self.message())
    }
}

impl std::error::Error for ProxyError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_is_influxdb_shaped() {
        let r = ProxyError::BadRequest("unable to parse 'x': missing fields".into()).to_response();
        assert_eq!(r.status, 400);
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"], "unable to parse 'x': missing fields");
        assert_eq!(ProxyError::QueueFull("q".into()).status(), 503);
        assert_eq!(ProxyError::Backend { status: 404, message: "database not found".into() }.status(), 404);
    }

    /// As Go's `json.Marshal` writes it (influxd's error bodies).
    #[test]
    fn error_bodies_escape_html_characters_as_influxd_does() {
        assert_eq!(
            String::from_utf8(error_body("unable to parse 'm s=\"<a&b>\"\u{2028}': x")).unwrap(),
            "{\"error\":\"unable to parse 'm s=\\\"\\u003ca\\u0026b\\u003e\\\"\\u2028': x\"}\n"
        );
        assert_eq!(
            String::from_utf8(error_body("a\\b\n\r\t\u{8}\u{c}\u{1f}\u{7f}é")).unwrap(),
            "{\"error\":\"a\\\\b\\n\\r\\t\\u0008\\u000c\\u001f\u{7f}é\"}\n"
        );
        // Still JSON, read back as the message.
        let v: serde_json::Value = serde_json::from_slice(&error_body("x<\"\u{1}")).unwrap();
        assert_eq!(v["error"], "x<\"\u{1}");
    }
}
