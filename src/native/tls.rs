//! TLS for the native host: the shared rustls code ([`crate::host_tls`],
//! also used by the WASI host) over smol's `TcpStream`. What is native
//! here: the stream type, and where a backend's client configuration is
//! made at first use (smol's blocking pool, since it reads files).

use crate::host_tls::{client_config, ClientConfigs, TlsFileError};
use crate::tls::BackendTls;
use futures_rustls::rustls::ClientConfig;
use smol::net::TcpStream;
use std::sync::Arc;

/// A connection to a backend: plain TCP for `http://`, TLS over TCP for
/// `https://`.
pub type BackendStream = crate::host_tls::BackendStream<TcpStream>;

/// A client's TLS connection to the listener.
pub type ServerStream = crate::host_tls::ServerStream<TcpStream>;

/// The client configuration of `tls` from `configs`, made on smol's
/// blocking pool (it reads files) if not made yet.
pub async fn client_config_of(
    configs: &ClientConfigs,
    tls: &BackendTls,
) -> Result<Arc<ClientConfig>, TlsFileError> {
    configs.get(tls, |owned| smol::unblock(move || client_config(&owned))).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_tls::{certificates, private_key, server_config};
    use crate::http::{Method, Request};
    use crate::native::transport::NativeTransport;
    use crate::test_influxd::start_with as start_influxd_with;
    use crate::tls::ListenTls;
    use crate::transport::Transport;
    use crate::transport::{BackendAddr, TransportError};
    use futures_rustls::rustls::{self, RootCertStore, ServerConfig};

    use crate::host_tls::test_pki::{pki, s, trusting};

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
