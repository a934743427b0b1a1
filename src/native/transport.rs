//! [`NativeTransport`]: the core's requests to backends over smol TCP
//! streams. Everything but the primitives (the keep-alive pool, the retry on a
//! fresh connection, `pool_max_open`, the request timeout, reading responses
//! safely and within `backend_max_response_bytes`) is
//! [`crate::http1::client::BackendClient`], shared with the WASI host; this
//! module provides connect (with `TCP_NODELAY`, then TLS for an `https://`
//! backend: [`crate::host_tls`]), sleep (smol timers) and the idle probe
//! (a non-blocking `peek`, or a read polled once through TLS).

use crate::host_tls::{self, ClientConfigs};
use crate::http::{Request, Response};
use crate::http1::client::{BackendClient, BackendHost};
use crate::native::tls::{self, BackendStream};
use crate::transport::{BackendAddr, Transport, TransportError};
use futures_lite::future;
use futures_lite::io::AsyncReadExt;
use smol::net::TcpStream;
use smol::Timer;
use std::time::Duration;

/// The primitives of the native host, and the TLS client configurations of
/// its `https://` backends.
#[derive(Debug, Default)]
pub struct NativeHost {
    tls: ClientConfigs,
}

impl BackendHost for NativeHost {
    type Stream = BackendStream;

    async fn connect(&self, backend: &BackendAddr) -> Result<BackendStream, TransportError> {
        let authority = backend.authority();
        // An https backend's files first: no connection for nothing.
        let tls_config = match &backend.tls {
            Some(settings) => Some(
                tls::client_config_of(&self.tls, settings)
                    .await
                    .map_err(|e| TransportError::Connect(format!("{authority}: TLS settings: {e}")))?,
            ),
            None => None,
        };
        let stream = TcpStream::connect(authority.as_str())
            .await
            .map_err(|e| TransportError::Connect(format!("{authority}: {e}")))?;
        // Requests are written whole; Nagle would only delay small ones.
        stream.set_nodelay(true).ok();
        match tls_config {
            Some(config) => host_tls::connect(stream, backend, config).await,
            None => Ok(BackendStream::Plain(stream)),
        }
    }

    async fn sleep(&self, ms: u64) {
        Timer::after(Duration::from_millis(ms)).await;
    }

    /// Alive when a non-blocking `peek` finds nothing: no EOF, no error, no
    /// stray bytes. Through TLS, a read polled once (TLS records such as
    /// session tickets are taken by rustls and are not application bytes).
    async fn alive(&self, stream: &mut BackendStream) -> bool {
        let mut probe = [0u8; 1];
        match stream {
            BackendStream::Plain(tcp) => future::poll_once(tcp.peek(&mut probe)).await.is_none(),
            BackendStream::Tls(tls) => future::poll_once(tls.read(&mut probe)).await.is_none(),
        }
    }
}

/// HTTP/1.1 client of the backends with per-backend keep-alive pools (see
/// [`crate::http1::client`] for its rules).
///
/// Not `Send`: it lives on the proxy's single executor thread, like the
/// [`crate::proxy::Proxy`] that owns it.
#[derive(Debug)]
pub struct NativeTransport(BackendClient<NativeHost>);

impl NativeTransport {
    /// A transport whose requests time out after `request_timeout_ms` (the
    /// whole request, in ms) and that keeps at most `pool_max_idle` idle
    /// connections per backend (0 = no keep-alive reuse).
    pub fn new(request_timeout_ms: u64, pool_max_idle: usize) -> NativeTransport {
        NativeTransport(BackendClient::new(NativeHost::default(), request_timeout_ms, pool_max_idle))
    }

    /// This transport with `configs` as the TLS client configurations of its
    /// `https://` backends (made by [`host_tls::check`] at start; settings not in
    /// it are made at first use).
    pub fn with_tls(self, configs: ClientConfigs) -> NativeTransport {
        NativeTransport(self.0.map_host(|_| NativeHost { tls: configs }))
    }

    /// At most `max_open` (at least 1) requests hold a connection to one
    /// backend at once (`pool_max_open`). Default 64.
    pub fn with_max_open(self, max_open: usize) -> NativeTransport {
        NativeTransport(self.0.with_max_open(max_open))
    }

    /// Response bodies over `bytes` end as [`TransportError::ResponseTooLarge`]
    /// (`backend_max_response_bytes`). Default 64 MiB.
    pub fn with_max_response_bytes(self, bytes: u64) -> NativeTransport {
        NativeTransport(self.0.with_max_response_bytes(bytes))
    }

    /// Idle pooled connections to `backend` right now.
    pub fn idle_connections(&self, backend: &BackendAddr) -> usize {
        self.0.idle_connections(backend)
    }

    /// TCP connections opened so far (to every backend), for tests and metrics.
    pub fn connections_opened(&self) -> u64 {
        self.0.connections_opened()
    }
}

impl Transport for NativeTransport {
    async fn send(&self, backend: &BackendAddr, request: Request) -> Result<Response, TransportError> {
        self.0.send(backend, request).await
    }

    async fn send_shared(
        &self,
        backend: &BackendAddr,
        request: Request,
        body: crate::http::SharedBytes,
    ) -> Result<Response, TransportError> {
        self.0.send_shared(backend, request, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Method;
    use futures_lite::future;
    use std::io::{BufRead, BufReader, Read as _, Write as _};
    use std::net::{TcpListener as StdListener, TcpStream as StdStream};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Instant;

    use crate::test_influxd::{free_port, start as start_influxd, start_with as start_influxd_with};

    fn backend(port: u16) -> BackendAddr {
        BackendAddr::parse("a", &format!("http://127.0.0.1:{port}")).unwrap()
    }

    fn get(path: &str, query: &[(&str, &str)]) -> Request {
        let mut r = Request::new(Method::Get, path);
        r.query = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        r
    }

    #[test]
    fn ping_write_and_query_a_real_influxd_over_one_kept_alive_connection() {
        let influxd = start_influxd();
        let b = backend(influxd.port);
        let t = NativeTransport::new(5_000, 4);
        smol::block_on(async {
            let ping = t.send(&b, get("/ping", &[])).await.unwrap();
            assert_eq!(ping.status, 204);
            assert!(ping.header("x-influxdb-version").is_some(), "{:?}", ping.headers);
            assert!(ping.headers.iter().all(|(k, _)| *k == k.to_ascii_lowercase()));

            let mut create = Request::new(Method::Post, "/query");
            create.query = vec![("q".into(), "CREATE DATABASE \"test db\"".into())];
            assert_eq!(t.send(&b, create).await.unwrap().status, 200);

            let mut write = Request::new(Method::Post, "/write");
            write.query = vec![("db".into(), "test db".into()), ("precision".into(), "s".into())];
            write.headers = vec![("Content-Type".into(), "text/plain; charset=utf-8".into())];
            write.body = b"cpu,host=a value=1.5 1700000000\ncpu,host=b value=2 1700000000\n".to_vec();
            let w = t.send(&b, write).await.unwrap();
            assert_eq!(w.status, 204, "{}", String::from_utf8_lossy(&w.body));

            let q = get("/query", &[("db", "test db"), ("q", "SELECT value FROM cpu WHERE host = 'a'")]);
            let q = t.send(&b, q).await.unwrap();
            assert_eq!(q.status, 200);
            let body = String::from_utf8(q.body).unwrap();
            assert!(body.contains("[\"2023-11-14T22:13:20Z\",1.5]"), "{body}");

            let bad = t.send(&b, get("/query", &[("db", "test db"), ("q", "SELEC")])).await.unwrap();
            assert_eq!(bad.status, 400);
            assert!(String::from_utf8_lossy(&bad.body).contains("error"));
        });
        assert_eq!(t.connections_opened(), 1, "every request should reuse the kept-alive connection");
        assert_eq!(t.idle_connections(&b), 1);
    }

    #[test]
    fn a_base_path_is_put_before_the_request_path() {
        let influxd = start_influxd();
        let b = BackendAddr::parse("a", &format!("http://127.0.0.1:{}/prefix", influxd.port)).unwrap();
        let t = NativeTransport::new(5_000, 4);
        // influxd serves no /prefix/ping: the 404 proves the prefix was sent.
        let r = smol::block_on(t.send(&b, get("/ping", &[]))).unwrap();
        assert_eq!(r.status, 404);
    }

    /// A scripted fake backend on a std thread: for each accepted connection,
    /// `script` gets the stream and the number of the connection (from 0).
    fn fake_backend(script: impl Fn(StdStream, usize) + Send + 'static) -> u16 {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for (i, conn) in listener.incoming().enumerate() {
                match conn {
                    Ok(c) => script(c, i),
                    Err(_) => return,
                }
            }
        });
        port
    }

    /// Reads one request head (and a Content-Length body); `None` at EOF.
    fn read_request(reader: &mut BufReader<StdStream>) -> Option<String> {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body).ok()?;
        head.push_str(&String::from_utf8_lossy(&body));
        Some(head)
    }

    const NO_CONTENT: &[u8] = b"HTTP/1.1 204 No Content\r\nX-Influxdb-Version: fake\r\n\r\n";

    #[test]
    fn a_request_failing_on_a_reused_connection_is_sent_again_on_a_fresh_one() {
        let (tx, rx) = std::sync::mpsc::channel();
        let port = fake_backend(move |conn, i| {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut conn = conn;
            let first = read_request(&mut reader).unwrap();
            tx.send(first).unwrap();
            conn.write_all(NO_CONTENT).unwrap();
            if i == 0 {
                // Read the second request, then close without answering:
                // what a backend does when its idle timeout fires.
                let second = read_request(&mut reader).unwrap();
                tx.send(second).unwrap();
            } else {
                while read_request(&mut reader).is_some() {
                    conn.write_all(NO_CONTENT).unwrap();
                }
            }
        });
        let b = backend(port);
        let t = NativeTransport::new(5_000, 4);
        smol::block_on(async {
            assert_eq!(t.send(&b, get("/ping", &[])).await.unwrap().status, 204);
            let mut write = Request::new(Method::Post, "/write");
            write.query = vec![("db".into(), "x".into())];
            write.body = b"cpu value=1".to_vec();
            assert_eq!(t.send(&b, write).await.unwrap().status, 204);
        });
        let seen: Vec<String> = rx.try_iter().collect();
        // The ping and the write on connection 0, the write again on connection 1.
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen[1].starts_with("POST /write?db=x HTTP/1.1") && seen[1].ends_with("cpu value=1"));
        assert_eq!(seen[1], seen[2], "the retry sends the same request");
        assert!(!seen[0].contains("content-type"), "no invented content type: {}", seen[0]);
        assert_eq!(t.connections_opened(), 2);
    }

    #[test]
    fn a_fresh_connection_closed_without_an_answer_is_an_io_error_not_retried() {
        let port = fake_backend(|conn, _| {
            let mut reader = BufReader::new(conn);
            read_request(&mut reader);
        });
        let t = NativeTransport::new(5_000, 4);
        let e = smol::block_on(t.send(&backend(port), get("/ping", &[]))).unwrap_err();
        assert!(matches!(e, TransportError::Io(_)), "{e:?}");
        assert_eq!(t.connections_opened(), 1);
    }

    #[test]
    fn connection_close_responses_and_full_pools_do_not_keep_connections() {
        let port = fake_backend(|conn, i| {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                while read_request(&mut reader).is_some() {
                    if i == 0 {
                        let _ = conn.write_all(
                            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
                        );
                        return;
                    }
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                }
            });
        });
        let b = backend(port);
        let t = NativeTransport::new(5_000, 1);
        smol::block_on(async {
            let r = t.send(&b, get("/query", &[])).await.unwrap();
            assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
            assert_eq!(t.idle_connections(&b), 0, "Connection: close must not be pooled");
            // Two requests at once need two connections; only one is kept.
            let (x, y) = future::zip(t.send(&b, get("/query", &[])), t.send(&b, get("/query", &[]))).await;
            assert_eq!((x.unwrap().body, y.unwrap().body), (b"ok".to_vec(), b"ok".to_vec()));
        });
        assert_eq!(t.connections_opened(), 3);
        assert_eq!(t.idle_connections(&b), 1);
    }

    #[test]
    fn a_backend_that_never_answers_times_out() {
        let (tx, rx) = std::sync::mpsc::channel::<StdStream>();
        let port = fake_backend(move |conn, _| tx.send(conn).unwrap());
        let t = NativeTransport::new(200, 4);
        let start = Instant::now();
        let e = smol::block_on(t.send(&backend(port), get("/ping", &[]))).unwrap_err();
        assert_eq!(e, TransportError::Timeout);
        assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
        assert_eq!(t.idle_connections(&backend(port)), 0);
        drop(rx);
    }

    #[test]
    fn a_refused_connection_is_a_connect_error() {
        let port = free_port();
        let t = NativeTransport::new(2_000, 4);
        match smol::block_on(t.send(&backend(port), get("/ping", &[]))) {
            Err(TransportError::Connect(m)) => {
                assert!(m.contains(&format!("127.0.0.1:{port}")), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn client_headers_are_passed_on_and_hop_by_hop_headers_are_not() {
        let (tx, rx) = std::sync::mpsc::channel();
        let port = fake_backend(move |conn, _| {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut conn = conn;
            tx.send(read_request(&mut reader).unwrap()).unwrap();
            conn.write_all(NO_CONTENT).unwrap();
        });
        let mut r = Request::new(Method::Post, "/write");
        r.query = vec![("db".into(), "a&b".into()), ("rp".into(), "one week".into())];
        r.headers = vec![
            ("Authorization".into(), "Token abc".into()),
            ("Content-Encoding".into(), "gzip".into()),
            ("Accept-Encoding".into(), "gzip".into()),
            ("Connection".into(), "close".into()),
            ("Transfer-Encoding".into(), "chunked".into()),
            ("X-Bad".into(), "caf\u{e9}".into()),
        ];
        r.body = b"0123456789".to_vec();
        let resp = smol::block_on(NativeTransport::new(5_000, 4).send(&backend(port), r)).unwrap();
        assert_eq!(resp.status, 204);
        let head = rx.recv().unwrap().to_ascii_lowercase();
        assert!(head.starts_with("post /write?db=a%26b&rp=one%20week http/1.1\r\n"), "{head}");
        for line in [
            &format!("host: 127.0.0.1:{port}\r\n")[..],
            "authorization: token abc\r\n",
            "content-encoding: gzip\r\n",
            "accept-encoding: gzip\r\n",
            "content-length: 10\r\n",
        ] {
            assert!(head.contains(line), "{line:?} missing in {head}");
        }
        assert!(
            !head.contains("connection:") && !head.contains("transfer-encoding") && !head.contains("x-bad")
        );
    }

    #[test]
    fn requests_beyond_max_open_wait_for_a_free_connection() {
        use std::sync::atomic::AtomicUsize;
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (n, m) = (now.clone(), most.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().take(3) {
                let Ok(mut stream) = stream else { continue };
                let (n, m) = (n.clone(), m.clone());
                std::thread::spawn(move || {
                    let open = n.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(open, Ordering::SeqCst);
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|k| k > 2) {
                        line.clear();
                    }
                    std::thread::sleep(Duration::from_millis(150));
                    n.fetch_sub(1, Ordering::SeqCst);
                    let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
                });
            }
        });
        let t = NativeTransport::new(5_000, 0).with_max_open(1);
        let b = backend(port);
        let (x, y) = smol::block_on(future::zip(
            t.send(&b, Request::new(Method::Get, "/ping")),
            t.send(&b, Request::new(Method::Get, "/ping")),
        ));
        assert_eq!((x.unwrap().status, y.unwrap().status), (204, 204));
        assert_eq!(most.load(Ordering::SeqCst), 1, "two connections were open at once");
    }

    #[test]
    fn a_response_body_cut_short_is_an_io_error() {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|k| k > 2) {
                    line.clear();
                }
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcd");
            }
        });
        let t = NativeTransport::new(5_000, 4);
        match smol::block_on(t.send(&backend(port), Request::new(Method::Get, "/query"))) {
            Err(TransportError::Io(e)) => assert!(e.contains("cut off after 4 of 10"), "{e}"),
            other => panic!("expected an Io error, got {other:?}"),
        }
    }

    /// A fake backend that reads one request on each connection and answers
    /// `answer` (then keeps the connection open, reading, until the client
    /// closes it).
    fn answering(answer: &'static [u8]) -> u16 {
        fake_backend(move |conn, _| {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                if read_request(&mut reader).is_some() {
                    let _ = conn.write_all(answer);
                    while read_request(&mut reader).is_some() {}
                }
            });
        })
    }

    #[test]
    fn a_backend_that_hangs_after_the_head_times_out_and_its_connection_is_dropped() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n",
        ] {
            let b = backend(answering(answer));
            let t = NativeTransport::new(300, 4);
            let e = smol::block_on(t.send(&b, get("/query", &[]))).unwrap_err();
            assert_eq!(e, TransportError::Timeout, "{}", String::from_utf8_lossy(answer));
            assert_eq!(t.idle_connections(&b), 0);
        }
    }

    #[test]
    fn conflicting_response_content_lengths_are_an_io_error() {
        let b =
            backend(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef"));
        let t = NativeTransport::new(5_000, 4);
        match smol::block_on(t.send(&b, get("/query", &[]))) {
            Err(TransportError::Io(e)) => {
                assert!(e.contains("conflicting response Content-Length values 5 and 6"), "{e}");
                assert!(e.contains(&b.url), "names the backend: {e}");
            }
            other => panic!("expected an Io error, got {other:?}"),
        }
        assert_eq!(t.idle_connections(&b), 0);
    }

    #[test]
    fn a_non_ascii_response_header_is_kept_percent_encoded() {
        let b = backend(answering(
            "HTTP/1.1 404 Not Found\r\nX-Influxdb-Error: database not found: \"données\"\r\n\
             Content-Length: 2\r\n\r\n{}"
                .as_bytes()
                .to_vec()
                .leak(),
        ));
        let r = smol::block_on(NativeTransport::new(5_000, 4).send(&b, get("/query", &[]))).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"{}"[..]));
        assert_eq!(r.header("x-influxdb-error"), Some("database not found: \"donn%C3%A9es\""));
    }

    #[test]
    fn answers_over_backend_max_response_bytes_are_refused_by_length_and_while_chunked() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\nstart of a huge body"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n",
        ] {
            let mut answer = answer.to_vec();
            if answer.ends_with(b"400\r\n") {
                // Chunks of 1 KiB, endlessly (well over the limit).
                for _ in 0..200 {
                    answer.extend_from_slice(&[b'x'; 1024]);
                    answer.extend_from_slice(b"\r\n400\r\n");
                }
            }
            let b = backend(answering(answer.leak()));
            let t = NativeTransport::new(5_000, 4).with_max_response_bytes(64 * 1024);
            let e = smol::block_on(t.send(&b, get("/query", &[]))).unwrap_err();
            assert_eq!(e, TransportError::ResponseTooLarge { limit: 64 * 1024 });
            assert_eq!(e.to_string(), "answer larger than backend_max_response_bytes (65536 bytes)");
            assert_eq!(t.idle_connections(&b), 0);
        }
    }

    #[test]
    fn a_non_ascii_error_header_from_a_real_influxd_reaches_the_caller() {
        let influxd = start_influxd();
        let b = backend(influxd.port);
        let t = NativeTransport::new(5_000, 4);
        let mut write = Request::new(Method::Post, "/write");
        write.query = vec![("db".into(), "données".into())];
        write.body = b"cpu value=1".to_vec();
        let r = smol::block_on(t.send(&b, write)).unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(String::from_utf8_lossy(&r.body), "{\"error\":\"database not found: \\\"données\\\"\"}\n");
        assert_eq!(r.header("x-influxdb-error"), Some("database not found: \"donn%C3%A9es\""));
        assert_eq!(t.idle_connections(&b), 1, "the connection is kept");
    }

    #[test]
    fn influxd_s_early_413_for_a_body_over_its_max_body_size_reaches_the_caller() {
        // influxd answers 413 and closes once the body passes max-body-size,
        // before reading the rest: the send fails, the answer is still read.
        let influxd = start_influxd_with("  max-body-size = 1000\n");
        let b = backend(influxd.port);
        let t = NativeTransport::new(10_000, 4);
        let mut create = Request::new(Method::Post, "/query");
        create.query = vec![("q".into(), "CREATE DATABASE db".into())];
        assert_eq!(smol::block_on(t.send(&b, create)).unwrap().status, 200);
        let mut write = Request::new(Method::Post, "/write");
        write.query = vec![("db".into(), "db".into())];
        write.body = "cpu value=1\n".repeat(2_000_000).into_bytes();
        match smol::block_on(t.send(&b, write)) {
            Ok(r) => {
                assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
                assert!(String::from_utf8_lossy(&r.body).contains("Request Entity Too Large"), "{r:?}");
            }
            Err(e) => panic!("influxd's 413 was lost: {e}"),
        }
    }
}
