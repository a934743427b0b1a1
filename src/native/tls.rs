//! TLS for the native host, on rustls (ring provider) through
//! futures-rustls over smol's `TcpStream`:
//!
//! - **`https://` backends** ([`client_config`], [`ClientConfigs`],
//!   [`BackendStream`]): the backend's certificate chain is verified by
//!   rustls (webpki) against the `ca_file` of its [`BackendTls`], or the
//!   operating system's trust store (rustls-native-certs) when there is
//!   none; the name checked is the URL's host (a DNS name or an IP address,
//!   in the certificate's subject alternative names). With
//!   `client_cert_file` and `client_key_file` the proxy shows that client
//!   certificate (mutual TLS, influxd behind a TLS-terminating proxy that
//!   asks for one). A failed handshake (untrusted certificate, wrong name,
//!   expired) is a [`TransportError::Connect`] naming the backend and
//!   rustls's reason: the backend counts as down, writes go to its write
//!   queue, queries fail over. Nothing is sent before the handshake
//!   succeeded.
//! - **The listener** ([`server_config`], [`accept`]): `listen_tls` gives the
//!   certificate chain and key; every connection's handshake must finish
//!   within `header_read_timeout_ms`, or the connection is closed.
//!
//! Both offer ALPN `http/1.1` only (the proxy speaks HTTP/1.1). TLS 1.2 and
//! 1.3, rustls's safe defaults.
//!
//! The files are read when the proxy starts ([`check`], errors name the
//! configuration key) and, for a backend a reload adds with settings not
//! seen before, at its first connection (an unreadable file is then a
//! connect error of that backend, retried at each connection).

use crate::config::Config;
use crate::tls::{BackendTls, ListenTls};
use crate::transport::{BackendAddr, TransportError};
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_rustls::pki_types::pem::{self, PemObject};
use futures_rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use futures_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use smol::net::TcpStream;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// A TLS file that could not be used: which key of the TLS settings
/// (`ca_file`, `client_cert_file`, `client_key_file`, `cert_file`,
/// `key_file`) and what is wrong, on one line (naming the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFileError {
    /// The settings key the problem is about.
    pub field: &'static str,
    /// What is wrong, naming the file.
    pub problem: String,
}

impl std::fmt::Display for TlsFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// The rustls client configuration of `tls` (see the module doc): its
/// roots, and its client certificate if any. Reads the files (blocking).
///
/// Errors: a file unreadable, with no PEM block of the right kind or bad
/// PEM, a CA certificate rustls cannot use, no `ca_file` and no usable
/// certificate in the system store, a client key that does not fit its
/// certificate.
pub fn client_config(tls: &BackendTls) -> Result<Arc<ClientConfig>, TlsFileError> {
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            for cert in certificates("ca_file", path)? {
                roots
                    .add(cert)
                    .map_err(|e| fail("ca_file", format!("{path}: unusable CA certificate: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                let why = found.errors.first().map_or_else(String::new, |e| format!(" ({e})"));
                return Err(fail(
                    "ca_file",
                    format!("no ca_file is set and the system trust store has no usable certificate{why}"),
                ));
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("ca_file", format!("rustls: {e}")))?
        .with_root_certificates(roots);
    let mut config = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = certificates("client_cert_file", cert)?;
            let key_der = private_key("client_key_file", key)?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| fail("client_key_file", format!("{key}: not usable with {cert}: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The rustls server configuration of the listener (`listen_tls`): its
/// certificate chain and key, no client certificates asked. Reads the files
/// (blocking). Errors: a file unreadable or without the right PEM block, a
/// key that does not fit the certificate.
pub fn server_config(tls: &ListenTls) -> Result<Arc<ServerConfig>, TlsFileError> {
    let chain = certificates("cert_file", &tls.cert_file)?;
    let key = private_key("key_file", &tls.key_file)?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("cert_file", format!("rustls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| fail("key_file", format!("{}: not usable with {}: {e}", tls.key_file, tls.cert_file)))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Every TLS setting of `config` made into rustls configurations, as the
/// proxy starts: the client configuration of each distinct backend setting
/// and the listener's, if any. Errors are one line,
/// `FILE: $.backends.a.tls.ca_file: cannot read ca.pem: No such file or
/// directory (os error 2)` (the path of the setting the backend uses:
/// its own `tls`, or `backend_tls`).
pub fn check(
    config_file: &str,
    config: &Config,
) -> Result<(ClientConfigs, Option<Arc<ServerConfig>>), String> {
    let configs = ClientConfigs::default();
    for (name, backend) in &config.backends {
        let Ok(addr) = BackendAddr::parse(name, &backend.url) else { continue };
        let Some(tls) = addr.with_tls(backend.tls.as_ref().or(config.backend_tls.as_ref())).tls else {
            continue;
        };
        if configs.cached(&tls).is_some() {
            continue;
        }
        let path = match (&backend.tls, &config.backend_tls) {
            (Some(_), _) => format!("$.backends{}.tls", crate::config::key_segment(name)),
            (None, Some(_)) => "$.backend_tls".to_string(),
            (None, None) => format!("$.backends{}.url", crate::config::key_segment(name)),
        };
        let made = client_config(&tls).map_err(|e| match (&backend.tls, &config.backend_tls) {
            (None, None) => format!("{config_file}: {path}: https backend: {}", e.problem),
            _ => format!("{config_file}: {path}.{}: {}", e.field, e.problem),
        })?;
        configs.insert(tls, made);
    }
    let listener = match &config.listen_tls {
        Some(tls) => Some(
            server_config(tls)
                .map_err(|e| format!("{config_file}: $.listen_tls.{}: {}", e.field, e.problem))?,
        ),
        None => None,
    };
    Ok((configs, listener))
}

/// The client configurations of the backends' TLS settings, made once per
/// distinct [`BackendTls`] (at start by [`check`], later at first use).
/// Failures are not kept: a fixed file is read again at the next connection.
#[derive(Debug, Default)]
pub struct ClientConfigs(RefCell<HashMap<BackendTls, Arc<ClientConfig>>>);

impl ClientConfigs {
    fn cached(&self, tls: &BackendTls) -> Option<Arc<ClientConfig>> {
        self.0.borrow().get(tls).cloned()
    }

    /// Keeps `config` as the client configuration of `tls`.
    pub fn insert(&self, tls: BackendTls, config: Arc<ClientConfig>) {
        self.0.borrow_mut().insert(tls, config);
    }

    /// The configuration of `tls`, made on smol's blocking pool (it reads
    /// files) if not made yet.
    pub async fn get(&self, tls: &BackendTls) -> Result<Arc<ClientConfig>, TlsFileError> {
        if let Some(config) = self.cached(tls) {
            return Ok(config);
        }
        let owned = tls.clone();
        let config = smol::unblock(move || client_config(&owned)).await?;
        self.insert(tls.clone(), config.clone());
        Ok(config)
    }
}

/// A connection to a backend: plain TCP for `http://`, TLS over TCP for
/// `https://`.
#[derive(Debug)]
pub enum BackendStream {
    /// `http://`.
    Plain(TcpStream),
    /// `https://`, after a successful handshake.
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

/// Completes the TLS handshake with `backend` on `tcp` (its URL's host as
/// the name verified and sent as SNI, unless it is an IP address). Error:
/// [`TransportError::Connect`] `host:port: TLS handshake: <rustls's reason>`,
/// e.g. `invalid peer certificate: UnknownIssuer`.
pub async fn connect(
    tcp: TcpStream,
    backend: &BackendAddr,
    config: Arc<ClientConfig>,
) -> Result<BackendStream, TransportError> {
    let authority = backend.authority();
    let name = ServerName::try_from(backend.host.clone())
        .map_err(|e| TransportError::Connect(format!("{authority}: not a TLS server name: {e}")))?;
    let stream = futures_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| TransportError::Connect(format!("{authority}: TLS handshake: {e}")))?;
    Ok(BackendStream::Tls(Box::new(stream)))
}

impl AsyncRead for BackendStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_flush(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_close(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// A client's TLS connection to the listener, shareable as async-h1 wants
/// (`Clone + Send + Sync`: its reader and writer are clones of one stream).
/// Each poll locks the stream for that poll only.
#[derive(Clone)]
pub struct ServerStream(Arc<Mutex<futures_rustls::server::TlsStream<TcpStream>>>);

/// Completes the server side of the TLS handshake on `tcp`. Error: the
/// handshake failed (the client's reason or rustls's); the caller closes the
/// connection.
pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<ServerStream> {
    let stream = futures_rustls::TlsAcceptor::from(config).accept(tcp).await?;
    Ok(ServerStream(Arc::new(Mutex::new(stream))))
}

impl ServerStream {
    fn with<R>(&self, f: impl FnOnce(Pin<&mut futures_rustls::server::TlsStream<TcpStream>>) -> R) -> R {
        // A poisoned lock only means a poll panicked; the stream is still whole.
        let mut guard = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(Pin::new(&mut *guard))
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        self.with(|s| s.poll_read(cx, buf))
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.with(|s| s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|s| s.poll_flush(cx))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.with(|s| s.poll_close(cx))
    }
}

/// `path` read whole, or why not.
fn read(field: &'static str, path: &str) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|e| fail(field, format!("cannot read {path}: {e}")))
}

/// Every `CERTIFICATE` block of the PEM file `path` (at least one).
fn certificates(field: &'static str, path: &str) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bytes = read(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| fail(field, format!("{path}: bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(fail(field, format!("{path}: no PEM CERTIFICATE block found")));
    }
    Ok(certs)
}

/// The first private key block of the PEM file `path` (`PRIVATE KEY`,
/// `RSA PRIVATE KEY` or `EC PRIVATE KEY`).
fn private_key(field: &'static str, path: &str) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let bytes = read(field, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => fail(
            field,
            format!(
                "{path}: no PEM private key block (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) found"
            ),
        ),
        e => fail(field, format!("{path}: bad PEM: {e}")),
    })
}

fn fail(field: &'static str, problem: String) -> TlsFileError {
    TlsFileError { field, problem: problem.split_whitespace().collect::<Vec<_>>().join(" ") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{Method, Request};
    use crate::native::transport::NativeTransport;
    use crate::test_influxd::start_with as start_influxd_with;
    use crate::transport::Transport;

    #[allow(dead_code)]
    mod pki {
        include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/pki.rs"));
    }

    fn pki() -> (tempfile::TempDir, pki::Pki) {
        let dir = tempfile::tempdir().unwrap();
        let made = pki::make(dir.path());
        (dir, made)
    }

    fn s(path: &std::path::Path) -> String {
        path.display().to_string()
    }

    fn trusting(ca: &std::path::Path) -> BackendTls {
        BackendTls { ca_file: Some(s(ca)), ..Default::default() }
    }

    /// influxd serving HTTPS with `cert` (its own `[http]` TLS settings).
    fn https_influxd(cert: &pki::CertFiles) -> crate::test_influxd::Influxd {
        start_influxd_with(&format!(
            "  https-enabled = true\n  https-certificate = \"{}\"\n  https-private-key = \"{}\"\n",
            cert.cert.display(),
            cert.key.display()
        ))
    }

    fn backend(port: u16, tls: BackendTls) -> BackendAddr {
        BackendAddr::parse("a", &format!("https://127.0.0.1:{port}")).unwrap().with_tls(Some(&tls))
    }

    fn query(q: &str, db: &str) -> Request {
        let mut r = Request::new(Method::Post, "/query");
        r.query = vec![("q".into(), q.into()), ("db".into(), db.into())];
        r
    }

    #[test]
    fn an_https_influxd_is_pinged_written_and_queried_with_its_certificate_verified() {
        let (_dir, pki) = pki();
        let influxd = https_influxd(&pki.server);
        let b = backend(influxd.port, trusting(&pki.ca));
        let t = NativeTransport::new(5_000, 4);
        smol::block_on(async {
            let ping = t.send(&b, Request::new(Method::Get, "/ping")).await.unwrap();
            assert_eq!(ping.status, 204);
            assert_eq!(t.send(&b, query("CREATE DATABASE db", "")).await.unwrap().status, 200);
            let mut write = Request::new(Method::Post, "/write");
            write.query = vec![("db".into(), "db".into()), ("precision".into(), "s".into())];
            write.body = b"cpu,host=a value=1.5 1700000000\n".to_vec();
            assert_eq!(t.send(&b, write).await.unwrap().status, 204);
            let r = t.send(&b, query("SELECT value FROM cpu", "db")).await.unwrap();
            assert_eq!(r.status, 200);
            let body = String::from_utf8(r.body).unwrap();
            assert!(body.contains("[\"2023-11-14T22:13:20Z\",1.5]"), "{body}");
        });
        assert_eq!(t.connections_opened(), 1, "the TLS connection is kept alive and reused");
        assert_eq!(t.idle_connections(&b), 1);
    }

    #[test]
    fn a_certificate_signed_by_another_ca_is_refused_naming_the_reason() {
        let (_dir, pki) = pki();
        let influxd = https_influxd(&pki.untrusted_server);
        let t = NativeTransport::new(5_000, 4);
        for tls in [trusting(&pki.ca), BackendTls::default()] {
            // The configured CA, then the system store: neither trusts it.
            let e = smol::block_on(t.send(&backend(influxd.port, tls), Request::new(Method::Get, "/ping")))
                .unwrap_err();
            match e {
                TransportError::Connect(m) => {
                    assert_eq!(
                        m,
                        format!(
                            "127.0.0.1:{}: TLS handshake: invalid peer certificate: UnknownIssuer",
                            influxd.port
                        )
                    )
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_certificate_for_another_name_is_refused() {
        let (_dir, pki) = pki();
        // Trusted CA, but the certificate names influx.example, not 127.0.0.1.
        let influxd = https_influxd(&pki.other_name);
        let b = backend(influxd.port, trusting(&pki.ca));
        let e = smol::block_on(NativeTransport::new(5_000, 4).send(&b, Request::new(Method::Get, "/ping")));
        match e {
            Err(TransportError::Connect(m)) => assert_eq!(
                m,
                format!(
                    "127.0.0.1:{}: TLS handshake: invalid peer certificate: certificate not valid for name \
                     \"127.0.0.1\"; certificate is only valid for DnsName(\"influx.example\")",
                    influxd.port
                )
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unusable_files_are_errors_naming_the_key_and_the_file() {
        let (dir, pki) = pki();
        let missing = dir.path().join("missing.pem");
        let e = client_config(&trusting(&missing)).unwrap_err();
        assert_eq!(e.field, "ca_file");
        assert!(e.problem.starts_with(&format!("cannot read {}: ", missing.display())), "{e}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let e = client_config(&trusting(&garbage)).unwrap_err();
        assert_eq!(e.to_string(), format!("ca_file: {}: no PEM CERTIFICATE block found", garbage.display()));

        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n").unwrap();
        let e = client_config(&trusting(&broken)).unwrap_err();
        assert!(e.problem.starts_with(&format!("{}: bad PEM: ", broken.display())), "{e}");

        // A certificate file where the key should be.
        let e = client_config(&BackendTls {
            client_cert_file: Some(s(&pki.client.cert)),
            client_key_file: Some(s(&pki.client.cert)),
            ..trusting(&pki.ca)
        })
        .unwrap_err();
        assert_eq!(e.field, "client_key_file");
        assert!(e.problem.contains("no PEM private key block"), "{e}");

        // The server's key with the client's certificate.
        let e = server_config(&ListenTls { cert_file: s(&pki.client.cert), key_file: s(&pki.server.key) })
            .unwrap_err();
        assert_eq!(e.field, "key_file");
        assert!(e.problem.contains("not usable with"), "{e}");

        assert!(client_config(&trusting(&pki.ca)).is_ok());
        assert!(server_config(&ListenTls { cert_file: s(&pki.server.cert), key_file: s(&pki.server.key) })
            .is_ok());
    }

    #[test]
    fn check_names_the_config_key_of_each_bad_file() {
        let (dir, pki) = pki();
        let missing = s(&dir.path().join("nope.pem"));
        let config = |extra: &str| {
            let text = format!(
                r#"{{"backends": {{"a": {{"url": "https://127.0.0.1:1"}}, "b-1": {{"url": "https://127.0.0.1:2", "tls": {{"ca_file": "{ca}"}}}}}},
                    "keymaps": {{"_default_": ["a", "b-1"]}} {extra}}}"#,
                ca = s(&pki.ca)
            );
            Config::parse("p.json", &text).unwrap()
        };
        let e =
            check("p.json", &config(&format!(r#", "backend_tls": {{"ca_file": "{missing}"}}"#))).unwrap_err();
        assert!(e.starts_with(&format!("p.json: $.backend_tls.ca_file: cannot read {missing}: ")), "{e}");
        let e = check(
            "p.json",
            &config(&format!(
                r#", "backend_tls": {{"ca_file": "{}"}}, "listen_tls": {{"cert_file": "{}", "key_file": "{missing}"}}"#,
                s(&pki.ca),
                s(&pki.server.cert)
            )),
        )
        .unwrap_err();
        assert!(e.starts_with(&format!("p.json: $.listen_tls.key_file: cannot read {missing}: ")), "{e}");
        let (configs, listener) =
            check("p.json", &config(&format!(r#", "backend_tls": {{"ca_file": "{}"}}"#, s(&pki.ca))))
                .unwrap();
        assert!(listener.is_none());
        assert_eq!(configs.0.borrow().len(), 1, "a and b-1 trust the same CA: one configuration");
        assert!(!e.contains('\n'));
    }

    /// A TLS server on a thread that asks for a client certificate signed by
    /// `ca` and answers each request `204` (one per connection).
    fn mutual_tls_server(pki: &pki::Pki) -> u16 {
        let mut roots = RootCertStore::empty();
        for cert in certificates("ca_file", &s(&pki.ca)).unwrap() {
            roots.add(cert).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                certificates("cert_file", &s(&pki.server.cert)).unwrap(),
                private_key("key_file", &s(&pki.server.key)).unwrap(),
            )
            .unwrap();
        let acceptor = futures_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let listener = smol::net::TcpListener::try_from(listener).unwrap();
            smol::block_on(async {
                while let Ok((tcp, _)) = listener.accept().await {
                    use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(mut tls) = acceptor.accept(tcp).await else { continue };
                    let mut buf = [0u8; 4096];
                    if tls.read(&mut buf).await.is_ok() {
                        let _ = tls.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").await;
                        let _ = tls.close().await;
                    }
                }
            });
        });
        port
    }

    #[test]
    fn a_client_certificate_is_shown_to_a_backend_that_asks_for_one() {
        let (_dir, pki) = pki();
        let port = mutual_tls_server(&pki);
        let with_cert = BackendTls {
            client_cert_file: Some(s(&pki.client.cert)),
            client_key_file: Some(s(&pki.client.key)),
            ..trusting(&pki.ca)
        };
        let t = NativeTransport::new(5_000, 4);
        let r =
            smol::block_on(t.send(&backend(port, with_cert), Request::new(Method::Get, "/ping"))).unwrap();
        assert_eq!(r.status, 204);
        // Without one, the server ends the handshake (TLS 1.3: the client
        // learns it when it reads the answer).
        let e = smol::block_on(t.send(&backend(port, trusting(&pki.ca)), Request::new(Method::Get, "/ping")))
            .unwrap_err();
        assert!(
            matches!(&e, TransportError::Connect(m) | TransportError::Io(m) if m.contains("CertificateRequired") || m.contains("alert")),
            "{e:?}"
        );
    }

    #[test]
    fn the_tls_listener_serves_https_and_closes_a_plain_http_client() {
        use crate::native::server::{serve, ServerOptions};
        let (_dir, pki) = pki();
        let listen = ListenTls { cert_file: s(&pki.server.cert), key_file: s(&pki.server.key) };
        let mut options = ServerOptions::new(1 << 20);
        options.tls = Some(server_config(&listen).unwrap());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let ex = smol::LocalExecutor::new();
            let listener = smol::net::TcpListener::try_from(listener).unwrap();
            let handler = |_request: Request| async { crate::http::Response::empty(204) };
            smol::block_on(ex.run(serve(&ex, listener, handler, options, std::future::pending())));
        });
        // The proxy's own client, trusting the test CA, as an HTTPS client.
        let t = NativeTransport::new(5_000, 4);
        let r = smol::block_on(t.send(&backend(port, trusting(&pki.ca)), Request::new(Method::Get, "/ping")))
            .unwrap();
        assert_eq!(r.status, 204);
        // Plain HTTP gets no HTTP answer: the handshake fails, the connection closes.
        let plain = BackendAddr::parse("a", &format!("http://127.0.0.1:{port}")).unwrap();
        let e = smol::block_on(t.send(&plain, Request::new(Method::Get, "/ping"))).unwrap_err();
        assert!(matches!(e, TransportError::Io(_)), "{e:?}");
    }
}
