//! [`Transport`] for the WASI host: the shared HTTP/1.1 client of the
//! backends ([`influx_proxy::http1::client::BackendClient`]: keep-alive pool,
//! retry on a fresh connection, `pool_max_open`, the request timeout, bounded
//! and guarded response reading) over primitives of this host only: wstd TCP
//! (`wasi:sockets`) to connect, then TLS for an `https://` backend (the
//! shared [`influx_proxy::host_tls`], the native host's code), and wstd
//! timers (`wasi:clocks`) to sleep. The idle probe is the shared default (a
//! read polled once; through TLS, records such as session tickets are taken
//! by rustls and are not application bytes).
//!
//! Limits of the WASI build, each answered as a [`TransportError::Connect`]
//! rather than a panic: backends must resolve to IPv4 addresses (wstd 0.6
//! cannot connect over IPv6 yet), and host names need wasmtime's
//! `-S allow-ip-name-lookup`.

use crate::stream::Stream;
use influx_proxy::host_tls::{self, BackendStream, ClientConfigs};
use influx_proxy::http::{Request, Response};
use influx_proxy::http1::client::{BackendClient, BackendHost};
use influx_proxy::transport::{BackendAddr, Transport, TransportError};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The primitives of the WASI host, and the TLS client configurations of
/// its `https://` backends.
#[derive(Debug, Default)]
pub struct WasiHost {
    tls: ClientConfigs,
}

impl BackendHost for WasiHost {
    type Stream = BackendStream<Stream>;

    /// A TCP connection to the backend's first IPv4 address; for an
    /// `https://` backend, TLS over it (its files read first, in place: WASI
    /// has no threads to read them on).
    async fn connect(&self, backend: &BackendAddr) -> Result<Self::Stream, TransportError> {
        let tls_config = match &backend.tls {
            Some(settings) => Some(
                self.tls
                    .get(settings, |owned| std::future::ready(host_tls::client_config(&owned)))
                    .await
                    .map_err(|e| {
                        TransportError::Connect(format!("{}: TLS settings: {e}", backend.authority()))
                    })?,
            ),
            None => None,
        };
        let addrs = resolve(&backend.host).await.map_err(|e| {
            TransportError::Connect(format!("{}: cannot resolve {}: {e}", backend.url, backend.host))
        })?;
        let ip = addrs.into_iter().find(IpAddr::is_ipv4).ok_or_else(|| {
            TransportError::Connect(format!(
                "{}: no IPv4 address (the wasm build cannot connect over IPv6 yet)",
                backend.url
            ))
        })?;
        let tcp = Stream::connect(SocketAddr::new(ip, backend.port))
            .await
            .map_err(|e| TransportError::Connect(format!("{}: {e}", backend.url)))?;
        match tls_config {
            Some(config) => host_tls::connect(tcp, backend, config).await,
            None => Ok(BackendStream::Plain(tcp)),
        }
    }

    async fn sleep(&self, ms: u64) {
        wstd::task::sleep(Duration::from_millis(ms).into()).await;
    }
}

/// Sends requests to backends. Single-threaded, like the proxy that owns it.
pub struct WasiTransport(BackendClient<WasiHost>);

impl WasiTransport {
    /// `timeout_ms`: the config's `request_timeout_ms` (the whole request);
    /// `max_idle`: its `pool_max_idle`.
    pub fn new(timeout_ms: u64, max_idle: usize) -> WasiTransport {
        WasiTransport(BackendClient::new(WasiHost::default(), timeout_ms, max_idle))
    }

    /// This transport with `configs` as the TLS client configurations of its
    /// `https://` backends (made by [`host_tls::check`] at start; settings
    /// not in it are made at first use).
    pub fn with_tls(self, configs: ClientConfigs) -> WasiTransport {
        WasiTransport(self.0.map_host(|_| WasiHost { tls: configs }))
    }

    /// At most `max_open` (at least 1) requests hold a connection to one
    /// backend at once (the config's `pool_max_open`); more wait, within
    /// their timeout. Default 64.
    pub fn with_max_open(self, max_open: usize) -> WasiTransport {
        WasiTransport(self.0.with_max_open(max_open))
    }

    /// Response bodies over `bytes` end as [`TransportError::ResponseTooLarge`]
    /// (the config's `backend_max_response_bytes`). Default 64 MiB.
    pub fn with_max_response_bytes(self, bytes: u64) -> WasiTransport {
        WasiTransport(self.0.with_max_response_bytes(bytes))
    }
}

impl Transport for WasiTransport {
    async fn send(&self, backend: &BackendAddr, request: Request) -> Result<Response, TransportError> {
        self.0.send(backend, request).await
    }

    async fn send_shared(
        &self,
        backend: &BackendAddr,
        request: Request,
        body: influx_proxy::http::SharedBytes,
    ) -> Result<Response, TransportError> {
        self.0.send_shared(backend, request, body).await
    }
}

/// The addresses of `host`: an IP literal as is, a name through
/// `wasi:sockets/ip-name-lookup` (Rust's std does not resolve names on
/// wasip2; wasmtime answers only with `-S allow-ip-name-lookup`).
async fn resolve(host: &str) -> Result<Vec<IpAddr>, String> {
    use wasip2::sockets::ip_name_lookup::{resolve_addresses, IpAddress};
    use wasip2::sockets::network::ErrorCode;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let network = wasip2::sockets::instance_network::instance_network();
    let lookup = resolve_addresses(&network, host).map_err(|e| e.to_string())?;
    let ready = wstd::runtime::AsyncPollable::new(lookup.subscribe());
    let mut addrs = Vec::new();
    loop {
        match lookup.resolve_next_address() {
            Ok(Some(IpAddress::Ipv4((a, b, c, d)))) => addrs.push(IpAddr::from([a, b, c, d])),
            Ok(Some(IpAddress::Ipv6((a, b, c, d, e, f, g, h)))) => {
                addrs.push(IpAddr::from([a, b, c, d, e, f, g, h]))
            }
            Ok(None) => break,
            Err(ErrorCode::WouldBlock) => ready.wait_for().await,
            Err(e) => return Err(e.to_string()),
        }
    }
    // The pollable is a child of the lookup: drop it first.
    drop(ready);
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    //! These run inside wasmtime (`cargo test --target wasm32-wasip2`), against
    //! small async-h1 servers in the same component.
    use super::*;
    use influx_proxy::http::Method;
    use influx_proxy::http::SharedBytes;
    use influx_proxy::http1::client::to_backend_request;
    use std::cell::Cell;
    use std::rc::Rc;
    use wstd::iter::AsyncIterator;
    use wstd::net::TcpListener;

    #[test]
    fn outgoing_request_has_base_path_query_and_body() {
        let backend = BackendAddr::parse("a", "http://127.0.0.1:8087/influx").unwrap();
        let mut request = Request::new(Method::Post, "/write");
        request.query = vec![("db".into(), "my db".into()), ("precision".into(), "s".into())];
        request.headers =
            vec![("content-encoding".into(), "gzip".into()), ("content-length".into(), "3".into())];
        request.body = b"abc".to_vec();
        let body = SharedBytes::from(request.body.clone());
        let mut out = to_backend_request(&backend, &request, &body).unwrap();
        assert_eq!(out.url().as_str(), "http://127.0.0.1:8087/influx/write?db=my%20db&precision=s");
        assert_eq!(out.header("content-encoding").map(|v| v.as_str()), Some("gzip"));
        assert_eq!(out.len(), Some(3));
        assert_eq!(futures_lite::future::block_on(out.body_bytes()).unwrap(), b"abc");
    }

    /// A backend on a free port that answers every request with its path,
    /// query and body, closing each connection after `requests_per_conn`
    /// requests; returns its URL, the number of connections accepted, and the
    /// accepting task (drop it to stop the backend: wstd's `block_on` returns
    /// only when no task waits on anything).
    async fn echo_backend(requests_per_conn: usize) -> (String, Rc<Cell<usize>>, wstd::runtime::Task<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let conns = Rc::new(Cell::new(0));
        let counter = conns.clone();
        let acceptor = wstd::runtime::spawn(async move {
            let mut incoming = listener.incoming();
            while let Some(Ok(conn)) = incoming.next().await {
                counter.set(counter.get() + 1);
                wstd::runtime::spawn(async move {
                    let mut server = async_h1::server::Server::new(
                        Stream::new(conn),
                        |mut req: http_types::Request| async move {
                            let body = req.body_string().await?;
                            let mut res = http_types::Response::new(200);
                            res.insert_header(
                                "x-seen",
                                format!("{}?{}", req.url().path(), req.url().query().unwrap_or("")),
                            );
                            res.set_body(body);
                            Ok(res)
                        },
                    );
                    for _ in 0..requests_per_conn {
                        if !matches!(
                            server.accept_one().await,
                            Ok(async_h1::server::ConnectionStatus::KeepAlive)
                        ) {
                            break;
                        }
                    }
                })
                .detach();
            }
        });
        (url, conns, acceptor)
    }

    fn write(body: &str) -> Request {
        let mut request = Request::new(Method::Post, "/write");
        request.query = vec![("db".into(), "x".into())];
        request.body = body.as_bytes().to_vec();
        request
    }

    #[test]
    fn keeps_connections_alive_and_returns_whole_responses() {
        wstd::runtime::block_on(async {
            let (url, conns, _backend) = echo_backend(usize::MAX).await;
            let backend = BackendAddr::parse("a", &format!("{url}/base")).unwrap();
            let transport = WasiTransport::new(5_000, 2);
            for body in ["cpu v=1", "cpu v=2", ""] {
                let r = transport.send(&backend, write(body)).await.unwrap();
                assert_eq!(
                    (r.status, r.header("x-seen"), r.body.as_slice()),
                    (200, Some("/base/write?db=x"), body.as_bytes())
                );
            }
            assert_eq!(conns.get(), 1, "one kept-alive connection for three requests");
        });
    }

    #[test]
    fn retries_once_when_a_pooled_connection_was_closed() {
        wstd::runtime::block_on(async {
            let (url, conns, _backend) = echo_backend(1).await;
            let backend = BackendAddr::parse("a", &url).unwrap();
            let transport = WasiTransport::new(5_000, 2);
            assert_eq!(transport.send(&backend, write("a")).await.unwrap().body, b"a");
            assert_eq!(transport.send(&backend, write("b")).await.unwrap().body, b"b");
            assert_eq!(conns.get(), 2);
        });
    }

    /// A backend on a free port that reads request heads (requests without
    /// a body) and writes `answers[i]` to the i-th request of every
    /// connection, then closes the connection after the last one (or keeps it
    /// open, reading, if `keep_open`); returns its address, the number of
    /// connections accepted and the accepting task.
    async fn scripted_backend(
        answers: &'static [&'static str],
        keep_open: bool,
    ) -> (BackendAddr, Rc<Cell<usize>>, wstd::runtime::Task<()>) {
        use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = BackendAddr::parse("a", &format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let conns = Rc::new(Cell::new(0));
        let counter = conns.clone();
        let acceptor = wstd::runtime::spawn(async move {
            let mut incoming = listener.incoming();
            while let Some(Ok(conn)) = incoming.next().await {
                counter.set(counter.get() + 1);
                wstd::runtime::spawn(async move {
                    let mut stream = Stream::new(conn);
                    let mut buf = Vec::new();
                    for answer in answers {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0u8; 1024];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        stream.write_all(answer.as_bytes()).await.unwrap();
                        stream.flush().await.unwrap();
                    }
                    if keep_open {
                        let mut chunk = [0u8; 1024];
                        while let Ok(1..) = stream.read(&mut chunk).await {}
                    }
                })
                .detach();
            }
        });
        (backend, conns, acceptor)
    }

    fn ping() -> Request {
        Request::new(Method::Get, "/ping")
    }

    #[test]
    fn no_retry_once_part_of_a_response_arrived() {
        // The second answer on each connection breaks off mid-body, or mid-head.
        let cases: [&'static [&'static str]; 2] = [
            &[
                "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\npart",
            ],
            &["HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", "HTTP/1.1 200 OK\r\ncontent-le"],
        ];
        for answers in cases {
            wstd::runtime::block_on(async {
                let (backend, conns, _backend) = scripted_backend(answers, false).await;
                let transport = WasiTransport::new(5_000, 2);
                assert_eq!(transport.send(&backend, ping()).await.unwrap().body, b"ok");
                let e = transport.send(&backend, ping()).await.unwrap_err();
                assert!(matches!(e, TransportError::Io(_)), "{e:?}");
                assert_eq!(conns.get(), 1, "not sent again on a fresh connection: {answers:?}");
            });
        }
    }

    #[test]
    fn only_framed_responses_keep_their_connection() {
        // (answers per connection, whether the backend keeps the connection
        // open after them, connections the backend sees for two requests)
        let cases: [(&'static [&'static str], bool, usize); 5] = [
            (&["HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"; 2], true, 1),
            (&["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"; 2], true, 1),
            (&["HTTP/1.1 204 No Content\r\n\r\n"; 2], true, 1),
            // Not framed: the body ends with the connection (RFC 9112
            // section 6.3), which the backend closes after it.
            (&["HTTP/1.1 200 OK\r\n\r\nok"], false, 2),
            (&["HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"; 2], true, 2),
        ];
        for (answers, keep_open, expected) in cases {
            wstd::runtime::block_on(async {
                let (backend, conns, _backend) = scripted_backend(answers, keep_open).await;
                let transport = WasiTransport::new(5_000, 2);
                for _ in 0..2 {
                    let r = transport.send(&backend, ping()).await.unwrap();
                    assert_eq!(r.status, answers[0][9..12].parse::<u16>().unwrap(), "{answers:?}");
                    assert_eq!(r.body, if r.status == 204 { &b""[..] } else { b"ok" }, "{answers:?}");
                }
                assert_eq!(conns.get(), expected, "{answers:?}");
            });
        }
    }

    #[test]
    fn head_response_body_is_not_waited_for() {
        wstd::runtime::block_on(async {
            let (backend, conns, _backend) =
                scripted_backend(&["HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"; 2], true).await;
            let transport = WasiTransport::new(2_000, 2);
            for _ in 0..2 {
                let r = transport.send(&backend, Request::new(Method::Head, "/ping")).await.unwrap();
                assert_eq!((r.status, r.body.len()), (200, 0));
            }
            assert_eq!(conns.get(), 1);
        });
    }

    #[test]
    fn silent_backend_times_out() {
        wstd::runtime::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let backend =
                BackendAddr::parse("a", &format!("http://{}", listener.local_addr().unwrap())).unwrap();
            let transport = WasiTransport::new(100, 2);
            assert_eq!(transport.send(&backend, write("a")).await, Err(TransportError::Timeout));
        });
    }

    #[test]
    fn ip_literals_need_no_lookup() {
        wstd::runtime::block_on(async {
            assert_eq!(resolve("127.0.0.1").await.unwrap(), vec![IpAddr::from([127, 0, 0, 1])]);
            assert_eq!(resolve("::1").await.unwrap(), vec!["::1".parse::<IpAddr>().unwrap()]);
        });
    }

    #[test]
    fn host_names_are_resolved() {
        wstd::runtime::block_on(async {
            let addrs = resolve("localhost").await.unwrap();
            assert!(addrs.iter().all(IpAddr::is_loopback) && !addrs.is_empty(), "{addrs:?}");
        });
    }

    #[test]
    fn refused_connection_is_a_connect_error() {
        wstd::runtime::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            drop(listener);
            let backend = BackendAddr::parse("a", &format!("http://{addr}")).unwrap();
            let transport = WasiTransport::new(5_000, 2);
            let e = transport.send(&backend, write("a")).await.unwrap_err();
            assert!(matches!(e, TransportError::Connect(_)), "{e:?}");
        });
    }

    #[test]
    fn a_backend_that_hangs_after_the_head_times_out() {
        let cases: [&'static [&'static str]; 3] = [
            &["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"],
            &["HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n"],
            &["HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"],
        ];
        for answers in cases {
            wstd::runtime::block_on(async {
                let (backend, _conns, _backend) = scripted_backend(answers, true).await;
                let transport = WasiTransport::new(300, 2);
                assert_eq!(
                    transport.send(&backend, ping()).await,
                    Err(TransportError::Timeout),
                    "{answers:?}"
                );
            });
        }
    }

    #[test]
    fn conflicting_content_lengths_and_cut_bodies_are_io_errors() {
        let cases: [(&'static [&'static str], &str); 2] = [
            (
                &["HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nabcdef"],
                "conflicting response Content-Length values 5 and 6",
            ),
            (&["HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabcd"], "cut off after 4 of 10 bytes"),
        ];
        for (answers, expected) in cases {
            wstd::runtime::block_on(async {
                let (backend, _conns, _backend) = scripted_backend(answers, false).await;
                match WasiTransport::new(5_000, 2).send(&backend, ping()).await {
                    Err(TransportError::Io(e)) => assert!(e.contains(expected), "{e}"),
                    other => panic!("expected an Io error, got {other:?}"),
                }
            });
        }
    }

    #[test]
    fn a_non_ascii_response_header_does_not_abort_the_component() {
        wstd::runtime::block_on(async {
            let (backend, conns, _backend) = scripted_backend(
                &["HTTP/1.1 404 Not Found\r\nx-influxdb-error: database not found: \"données\"\r\n\
                   content-length: 2\r\n\r\n{}"; 2],
                true,
            )
            .await;
            let transport = WasiTransport::new(5_000, 2);
            for _ in 0..2 {
                let r = transport.send(&backend, ping()).await.unwrap();
                assert_eq!((r.status, r.body.as_slice()), (404, &b"{}"[..]));
                assert_eq!(r.header("x-influxdb-error"), Some("database not found: \"donn%C3%A9es\""));
            }
            assert_eq!(conns.get(), 1, "the connection is kept");
        });
    }

    #[test]
    fn answers_over_backend_max_response_bytes_are_refused() {
        const CHUNKED: &str = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                               40\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n\
                               40\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n";
        let cases: [&'static [&'static str]; 2] =
            [&["HTTP/1.1 200 OK\r\ncontent-length: 100000000\r\n\r\nstart of a huge body"], &[CHUNKED]];
        for answers in cases {
            wstd::runtime::block_on(async {
                let (backend, _conns, _backend) = scripted_backend(answers, true).await;
                let transport = WasiTransport::new(5_000, 2).with_max_response_bytes(100);
                let e = transport.send(&backend, ping()).await.unwrap_err();
                assert_eq!(e, TransportError::ResponseTooLarge { limit: 100 }, "{answers:?}");
            });
        }
    }

    #[test]
    fn an_answer_sent_before_the_whole_request_was_read_is_returned() {
        // As influxd does for a body over its max-body-size: 413, then the
        // connection is closed with most of the body unread.
        wstd::runtime::block_on(async {
            let (backend, _conns, _backend) = scripted_backend(
                &["HTTP/1.1 413 Request Entity Too Large\r\nconnection: close\r\ncontent-length: 37\r\n\r\n\
                   {\"error\":\"Request Entity Too Large\"}\n"],
                false,
            )
            .await;
            let transport = WasiTransport::new(5_000, 2);
            let r = transport.send(&backend, write(&"cpu value=1\n".repeat(1_000_000))).await.unwrap();
            assert_eq!(
                (r.status, r.body.as_slice()),
                (413, &b"{\"error\":\"Request Entity Too Large\"}\n"[..])
            );
        });
    }
}
