//! TLS for both hosts (feature `host-tls`, enabled by `native` and by the
//! `wasm/` crate), on rustls with the ring provider through futures-rustls,
//! generic over the host's TCP stream (smol's natively, wstd's on WASI):
//!
//! - **`https://` backends** ([`client_config`], [`ClientConfigs`],
//!   [`connect`], [`BackendStream`]): the backend's certificate chain is
//!   verified by rustls (webpki) against the `ca_file` of its
//!   [`BackendTls`], or, with the feature `system-roots` (native only), the
//!   operating system's trust store (rustls-native-certs) when there is
//!   none; without it (the wasm build: WASI gives a component no access to
//!   the host's trust store) a `ca_file` is required. The name checked is
//!   the URL's host (a DNS name or an IP address, in the certificate's
//!   subject alternative names). With `client_cert_file` and
//!   `client_key_file` the proxy shows that client certificate (mutual
//!   TLS, influxd behind a TLS-terminating proxy that asks for one). A
//!   failed handshake (untrusted certificate, wrong name, expired) is a
//!   [`TransportError::Connect`] naming the backend and rustls's reason:
//!   the backend counts as down, writes go to its write queue, queries fail
//!   over. Nothing is sent before the handshake succeeded.
//! - **The listener** ([`server_config`], [`accept`], [`ServerStream`]):
//!   `listen_tls` gives the certificate chain and key; each host bounds
//!   every connection's handshake by `header_read_timeout_ms`, or closes
//!   the connection.
//!
//! Both offer ALPN `http/1.1` only (the proxy speaks HTTP/1.1). TLS 1.2 and
//! 1.3, rustls's safe defaults. Certificate dates are checked against the
//! wall clock (`std::time::SystemTime`, `wasi:clocks/wall-clock` on WASI).
//!
//! The files are read with `std::fs` (on WASI: inside preopened
//! directories) when the proxy starts ([`check`], errors name the
//! configuration key) and, for a backend a reload adds with settings not
//! seen before, at its first connection (an unreadable file is then a
//! connect error of that backend, retried at each connection).

use crate::config::Config;
use crate::tls::{BackendTls, ListenTls};
use crate::transport::{BackendAddr, TransportError};
use futures_lite::io::{AsyncRead, AsyncWrite};
use futures_rustls::pki_types::pem::{self, PemObject};
use futures_rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use futures_rustls::rustls::{self, RootCertStore};
/// rustls's configurations, as the hosts hold them.
pub use futures_rustls::rustls::{ClientConfig, ServerConfig};
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
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
/// certificate in the system store (or, without the feature
/// `system-roots`, as in the wasm build, no `ca_file` at all), a client key
/// that does not fit its certificate.
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
        None => system_roots(&mut roots)?,
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

/// Adds the operating system's trust store (rustls-native-certs) to `roots`.
/// Error: it has no certificate rustls can use.
#[cfg(feature = "system-roots")]
fn system_roots(roots: &mut RootCertStore) -> Result<(), TlsFileError> {
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found.errors.first().map_or_else(String::new, |e| format!(" ({e})"));
        return Err(fail(
            "ca_file",
            format!("no ca_file is set and the system trust store has no usable certificate{why}"),
        ));
    }
    Ok(())
}

/// Without the feature `system-roots` (the wasm build: WASI gives a
/// component no trust store of the host's) there are no system roots: a
/// `ca_file` is required.
#[cfg(not(feature = "system-roots"))]
fn system_roots(_: &mut RootCertStore) -> Result<(), TlsFileError> {
    Err(fail("ca_file", NO_SYSTEM_ROOTS.to_string()))
}

/// Why an `https://` backend needs a `ca_file` without the feature
/// `system-roots` (the wasm build).
#[cfg(not(feature = "system-roots"))]
pub const NO_SYSTEM_ROOTS: &str = "no ca_file is set, and this build has no system trust store (the wasm \
                                    build cannot read the host's): set backend_tls.ca_file or the backend's tls.ca_file";

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

    /// The configuration of `tls`, made by `make` if not made yet: the host
    /// runs [`client_config`] (it reads files, blocking) where it sees fit,
    /// on a blocking pool (native) or in place (WASI, no threads).
    pub async fn get<Fut>(
        &self,
        tls: &BackendTls,
        make: impl FnOnce(BackendTls) -> Fut,
    ) -> Result<Arc<ClientConfig>, TlsFileError>
    where
        Fut: Future<Output = Result<Arc<ClientConfig>, TlsFileError>>,
    {
        if let Some(config) = self.cached(tls) {
            return Ok(config);
        }
        let config = make(tls.clone()).await?;
        self.insert(tls.clone(), config.clone());
        Ok(config)
    }
}

/// A connection to a backend over the host's TCP stream `S`: plain for
/// `http://`, TLS for `https://`.
#[derive(Debug)]
pub enum BackendStream<S> {
    /// `http://`.
    Plain(S),
    /// `https://`, after a successful handshake.
    Tls(Box<futures_rustls::client::TlsStream<S>>),
}

/// Completes the TLS handshake with `backend` on `tcp` (its URL's host as
/// the name verified and sent as SNI, unless it is an IP address). Error:
/// [`TransportError::Connect`] `host:port: TLS handshake: <rustls's reason>`,
/// e.g. `invalid peer certificate: UnknownIssuer`.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    tcp: S,
    backend: &BackendAddr,
    config: Arc<ClientConfig>,
) -> Result<BackendStream<S>, TransportError> {
    let authority = backend.authority();
    let name = ServerName::try_from(backend.host.clone())
        .map_err(|e| TransportError::Connect(format!("{authority}: not a TLS server name: {e}")))?;
    let stream = futures_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| TransportError::Connect(format!("{authority}: TLS handshake: {e}")))?;
    Ok(BackendStream::Tls(Box::new(stream)))
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for BackendStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for BackendStream<S> {
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

/// A client's TLS connection to the listener over the host's TCP stream
/// `S`, shareable as async-h1 wants (`Clone + Send + Sync` when `S` is
/// `Send`: its reader and writer are clones of one stream). Each poll locks
/// the stream for that poll only.
pub struct ServerStream<S>(Arc<Mutex<futures_rustls::server::TlsStream<S>>>);

impl<S> Clone for ServerStream<S> {
    fn clone(&self) -> Self {
        ServerStream(self.0.clone())
    }
}

/// Completes the server side of the TLS handshake on `tcp` before
/// `deadline` ends (the host's timer for `header_read_timeout_ms`). `None`:
/// the handshake failed (the client's reason or rustls's) or stalled; the
/// caller closes the connection with nothing answered.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    tcp: S,
    config: Arc<ServerConfig>,
    deadline: impl std::future::Future<Output = ()>,
) -> Option<ServerStream<S>> {
    let handshake = async {
        let stream = futures_rustls::TlsAcceptor::from(config).accept(tcp).await.ok()?;
        Some(ServerStream(Arc::new(Mutex::new(stream))))
    };
    futures_lite::future::or(handshake, async {
        deadline.await;
        None
    })
    .await
}

impl<S: AsyncRead + AsyncWrite + Unpin> ServerStream<S> {
    fn with<R>(&self, f: impl FnOnce(Pin<&mut futures_rustls::server::TlsStream<S>>) -> R) -> R {
        // A poisoned lock only means a poll panicked; the stream is still whole.
        let mut guard = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(Pin::new(&mut *guard))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ServerStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        self.with(|s| s.poll_read(cx, buf))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ServerStream<S> {
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
pub(crate) fn certificates(
    field: &'static str,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
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
pub(crate) fn private_key(field: &'static str, path: &str) -> Result<PrivateKeyDer<'static>, TlsFileError> {
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

/// The unit tests' certificates (this module's and the native host's): a
/// test CA made at test time (tests/support/pki.rs) and helpers over it.
#[cfg(test)]
pub(crate) mod test_pki {
    use crate::tls::BackendTls;

    #[allow(dead_code)]
    pub(crate) mod pki {
        include!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/pki.rs"));
    }

    /// A new test PKI in a temporary directory (kept while the first is).
    pub(crate) fn pki() -> (tempfile::TempDir, pki::Pki) {
        let dir = tempfile::tempdir().unwrap();
        let made = pki::make(dir.path());
        (dir, made)
    }

    /// `path` as the config's text.
    pub(crate) fn s(path: &std::path::Path) -> String {
        path.display().to_string()
    }

    /// Backend TLS settings trusting only `ca`.
    pub(crate) fn trusting(ca: &std::path::Path) -> BackendTls {
        BackendTls { ca_file: Some(s(ca)), ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::test_pki::{pki, s, trusting};
    use super::*;

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
}
