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
    /// A statement refused by the statement filter -> 403.
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
        Response::json(self.status(), error_body(self.message()))
    }
}

/// `{"error":"<message>"}` as bytes.
pub fn error_body(message: &str) -> Vec<u8> {
    let mut body = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
    body.push(b'\n');
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
}
