//! The core's only way to reach a backend: send one HTTP request, get the
//! response.
//!
//! Hosts implement [`Transport`]: the native host with async-h1 over pooled,
//! kept-alive TCP connections (`crate::native::transport`), the WASI host over
//! wasi sockets, and tests with in-memory mock backends. A transport owns
//! connection pooling and **timeouts** (the core reads no clock): a request that
//! takes longer than the configured timeout ends with [`TransportError::Timeout`].

use crate::http::{Request, Response, SharedBytes};
use std::fmt;

/// Where a backend lives, parsed from its configured URL
/// (`http://host:port[/base]` or `https://...`, InfluxDB 1.x default port
/// 8086 for both, as influxd serves HTTPS on its HTTP port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendAddr {
    /// The backend's name in the configuration (`"a"`, `"b"`, ...).
    pub name: String,
    /// Host name or IP literal, without brackets.
    pub host: String,
    pub port: u16,
    /// Path prefix put before `/write`, `/query`, `/ping`; empty or `/x` (no
    /// trailing slash).
    pub base_path: String,
    /// The URL as configured, for messages.
    pub url: String,
    /// Credentials put on every request to this backend (config
    /// `backends.<name>.username` / `token_*`, with `auth` on), replacing
    /// any the request had. Debug-printed redacted.
    pub credentials: Option<crate::auth::BackendCredentials>,
    /// `Some` for an `https://` backend: how to verify it and which client
    /// certificate to show (file names; the host reads them). `None` for
    /// `http://`.
    pub tls: Option<crate::tls::BackendTls>,
}

impl BackendAddr {
    /// Parses `http://host[:port][/base]` or `https://host[:port][/base]`
    /// (then with [`BackendTls::default`](crate::tls::BackendTls): the
    /// system trust store, no client certificate; see
    /// [`BackendAddr::with_tls`]). Errors name the problem.
    pub fn parse(name: &str, url: &str) -> Result<BackendAddr, String> {
        let (rest, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(r), _) => (r, None),
            (None, Some(r)) => (r, Some(crate::tls::BackendTls::default())),
            (None, None) => return Err(format!("{url:?} is not an http:// or https:// URL")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.contains('@') || authority.contains('?') || path.contains('?') || path.contains('#') {
            return Err(format!("{url:?}: credentials, query or fragment are not allowed in a backend URL"));
        }
        let (host, port) = if let Some(h) = authority.strip_prefix('[') {
            // [::1]:8086
            let (h, after) = h.split_once(']').ok_or_else(|| format!("{url:?}: unclosed '[' in host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p,
                None if after.is_empty() => "8086",
                None => return Err(format!("{url:?}: bad port")),
            };
            (h, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p),
                None => (authority, "8086"),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} has no host"));
        }
        let port: u16 =
            port.parse().map_err(|_| format!("{url:?}: port {port:?} is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(format!("{url:?}: port 0 is not allowed"));
        }
        Ok(BackendAddr {
            name: name.to_string(),
            host: host.to_string(),
            port,
            base_path: path.to_string(),
            url: url.to_string(),
            credentials: None,
            tls,
        })
    }

    /// This address with `settings` as its TLS settings if it is an
    /// `https://` backend (an `http://` one is returned as it is).
    pub fn with_tls(mut self, settings: Option<&crate::tls::BackendTls>) -> BackendAddr {
        if let (Some(tls), Some(settings)) = (self.tls.as_mut(), settings) {
            *tls = settings.clone();
        }
        self
    }

    /// The key of this backend's connection pool and connection limit:
    /// `host:port` for `http://`, `https://host:port` for `https://` (a
    /// plain and a TLS connection to one port are never mixed up).
    pub fn pool_key(&self) -> String {
        match self.tls {
            None => self.authority(),
            Some(_) => format!("https://{}", self.authority()),
        }
    }

    /// `host:port` as used to connect (IPv6 literals bracketed).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Why a request to a backend got no usable HTTP response. `Connect`,
/// `Timeout` and `Io` mean "the backend may be down": reads fail over, writes
/// go to the backend's write queue. `ResponseTooLarge` does not: the backend
/// is up and answered, but more than the proxy will buffer; another replica
/// would answer the same, so a query ends at once with a 502 naming the
/// backend and the limit, not counted against the backend's health. (Write
/// and ping answers are a few hundred bytes; there it is handled like `Io`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// Could not connect (refused, unreachable, name lookup failed).
    Connect(String),
    /// No complete response within the transport's timeout.
    Timeout,
    /// The connection broke or the response could not be decoded (malformed
    /// or oversized head, conflicting `Content-Length`, body cut short).
    Io(String),
    /// The response body is larger than `limit` bytes (the config's
    /// `backend_max_response_bytes`); it was not read further.
    ResponseTooLarge { limit: u64 },
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Connect(e) => write!(f, "connect failed: {e}"),
            TransportError::Timeout => write!(f, "timed out"),
            TransportError::Io(e) => write!(f, "i/o error: {e}"),
            TransportError::ResponseTooLarge { limit } => {
                write!(f, "answer larger than backend_max_response_bytes ({limit} bytes)")
            }
        }
    }
}

/// Sends one HTTP request to one backend and returns its whole response.
///
/// `request.path` is relative to the backend (e.g. `/write`); the transport puts
/// `backend.base_path` in front. A response of any status is `Ok`; only the
/// absence of a response is an error. Implementations bound connection pools and
/// apply timeouts.
#[allow(async_fn_in_trait)]
pub trait Transport {
    async fn send(&self, backend: &BackendAddr, request: Request) -> Result<Response, TransportError>;

    /// [`Transport::send`] with `body` as the request's body (in place of
    /// `request.body`, which is ignored): the replicas of a write share one
    /// buffer. The default copies `body` into the request; transports that
    /// can send shared bytes (the HTTP/1.1 client of both hosts) override it.
    async fn send_shared(
        &self,
        backend: &BackendAddr,
        mut request: Request,
        body: SharedBytes,
    ) -> Result<Response, TransportError> {
        request.body = body.to_vec();
        self.send(backend, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_backend_urls() {
        let a = BackendAddr::parse("a", "http://127.0.0.1:8087").unwrap();
        assert_eq!((a.host.as_str(), a.port, a.base_path.as_str()), ("127.0.0.1", 8087, ""));
        let b = BackendAddr::parse("b", "http://influx.local/prefix/").unwrap();
        assert_eq!((b.host.as_str(), b.port, b.base_path.as_str()), ("influx.local", 8086, "/prefix"));
        let c = BackendAddr::parse("c", "http://[::1]:9000").unwrap();
        assert_eq!((c.host.as_str(), c.port, c.authority()), ("::1", 9000, "[::1]:9000".to_string()));
        let e = BackendAddr::parse("e", "https://influx.example:8443/base").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.base_path.as_str()), ("influx.example", 8443, "/base"));
        assert_eq!(e.tls, Some(crate::tls::BackendTls::default()));
        assert_eq!(e.pool_key(), "https://influx.example:8443");
        assert_eq!(a.tls, None);
        assert_eq!(a.pool_key(), "127.0.0.1:8087");
        let ca = crate::tls::BackendTls { ca_file: Some("ca.pem".into()), ..Default::default() };
        assert_eq!(e.with_tls(Some(&ca)).tls, Some(ca.clone()));
        assert_eq!(a.clone().with_tls(Some(&ca)).tls, None, "http stays http");
        assert!(BackendAddr::parse("d", "ftp://x").unwrap_err().contains("https://"));
        assert!(BackendAddr::parse("d", "127.0.0.1:8086").is_err());
        assert!(BackendAddr::parse("d", "http://x:99999").unwrap_err().contains("port"));
        assert!(BackendAddr::parse("d", "http://:80").is_err());
    }
}
