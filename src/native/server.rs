//! The proxy's HTTP/1.1 server: an accept loop on a smol `TcpListener`, each
//! connection a task on the local executor, served by
//! [`crate::http1::serve_connection`] (async-h1 with the request-head guard,
//! the body limit and the conversion to the core's [`Request`] and from its
//! [`Response`]; see that module for what is answered to bad requests).
//!
//! With [`ServerOptions::tls`] (`listen_tls`) every connection is TLS: its
//! handshake ([`crate::host_tls::accept`]) runs in the connection's task
//! and must end within `header_read_timeout`, or the connection is closed.
//!
//! Shutdown (the `shutdown` future of [`serve`] completing): stop accepting,
//! close idle kept-alive connections, let requests in flight finish (their
//! responses say `Connection: close`), wait at most `shutdown_grace`.

use crate::http::{Request, Response};
use crate::http1::{serve_connection, ConnectionHost, ConnectionOptions};
use futures_lite::FutureExt;
use smol::net::TcpListener;
use smol::{LocalExecutor, Timer};
use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// How the server treats its connections.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Largest request body, in bytes (the config's `max_body_bytes`).
    pub max_body_bytes: u64,
    /// A kept-alive connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Longest time from the first byte of a request to the end of its head
    /// (the config's `header_read_timeout_ms`); later -> 408.
    pub header_read_timeout: Duration,
    /// Longest time from the end of a request head to the end of its body,
    /// in total (the config's `body_read_timeout_ms`); later -> 408.
    pub body_read_timeout: Duration,
    /// At shutdown, how long requests in flight may take to finish.
    pub shutdown_grace: Duration,
    /// Serve HTTPS with this rustls configuration (`listen_tls`, made by
    /// [`crate::host_tls::check`]). `None`: plain HTTP.
    pub tls: Option<std::sync::Arc<futures_rustls::rustls::ServerConfig>>,
}

impl ServerOptions {
    /// Options with this body limit, a 60 s idle timeout
    /// ([`crate::http1::IDLE_TIMEOUT_MS`]), the config's default read
    /// timeouts (60 s for a head, 30 s for a body) and a 10 s shutdown grace.
    pub fn new(max_body_bytes: u64) -> ServerOptions {
        ServerOptions {
            max_body_bytes,
            idle_timeout: Duration::from_millis(crate::http1::IDLE_TIMEOUT_MS),
            header_read_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            tls: None,
        }
    }

    /// The options the config gives (`max_body_bytes`,
    /// `header_read_timeout_ms`, `body_read_timeout_ms`), the rest as
    /// [`ServerOptions::new`].
    pub fn from_config(config: &crate::config::Config) -> ServerOptions {
        ServerOptions {
            header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(config.body_read_timeout_ms),
            ..ServerOptions::new(config.max_body_bytes)
        }
    }
}

/// Serves HTTP/1.1 on `listener` until `shutdown` completes, then shuts down
/// gracefully (see the module doc). Each connection is a task on `ex`; each
/// request is answered by `handler`. Returns the number of connections still
/// busy when the grace period ran out (0 after a clean shutdown).
///
/// Errors accepting a connection (e.g. too many open files) do not stop the
/// server: it waits 100 ms and accepts again.
pub async fn serve<'a, H, Fut>(
    ex: &LocalExecutor<'a>,
    listener: TcpListener,
    handler: H,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> usize
where
    H: Fn(Request) -> Fut + 'a,
    Fut: Future<Output = Response> + 'a,
{
    let handler = Rc::new(handler);
    let shared = Rc::new(Shared { closing: Cell::new(false), active: Cell::new(0) });
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let connection = ConnectionOptions {
        max_body_bytes: options.max_body_bytes,
        idle_timeout_ms: ms(options.idle_timeout),
        header_read_timeout_ms: ms(options.header_read_timeout),
        body_read_timeout_ms: ms(options.body_read_timeout),
    };
    // Closed (by dropping the sender) to wake every idle connection at shutdown.
    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                (&mut shutdown).await;
                None
            })
            .await;
        match accepted {
            None => break,
            Some(Ok((stream, peer))) => {
                stream.set_nodelay(true).ok();
                let host = NativeConnection { shared: shared.clone(), stop: stop_rx.clone() };
                let (handler, connection) = (handler.clone(), connection.clone());
                let tls = options.tls.clone();
                shared.active.set(shared.active.get() + 1);
                ex.spawn(async move {
                    // The peer address as the socket gives it (for `/reload`'s loopback check).
                    let with_peer = |mut request: Request| {
                        request.peer = Some(peer.ip());
                        (*handler)(request)
                    };
                    match tls {
                        None => serve_connection(stream, &connection, &host, with_peer).await,
                        Some(config) => {
                            let deadline = host.sleep(connection.header_read_timeout_ms);
                            // A failed or stalled handshake: nothing to answer, closed.
                            if let Some(stream) = crate::host_tls::accept(stream, config, deadline).await {
                                serve_connection(stream, &connection, &host, with_peer).await;
                            }
                        }
                    }
                    host.shared.active.set(host.shared.active.get() - 1);
                })
                .detach();
            }
            Some(Err(_)) => {
                Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    shared.closing.set(true);
    drop(stop_tx);
    let deadline = Instant::now() + options.shutdown_grace;
    while shared.active.get() > 0 && Instant::now() < deadline {
        Timer::after(Duration::from_millis(10)).await;
    }
    shared.active.get()
}

/// State shared by the accept loop and the connections.
struct Shared {
    /// Shutting down: responses say `Connection: close`.
    closing: Cell<bool>,
    /// Open connections.
    active: Cell<usize>,
}

/// One connection's view of the server: smol timers and the shutdown.
struct NativeConnection {
    shared: Rc<Shared>,
    /// Closed at shutdown.
    stop: smol::channel::Receiver<()>,
}

impl ConnectionHost for NativeConnection {
    async fn sleep(&self, ms: u64) {
        Timer::after(Duration::from_millis(ms)).await;
    }

    fn closing(&self) -> bool {
        self.shared.closing.get()
    }

    async fn closed(&self) {
        self.stop.recv().await.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpStream as StdStream;

    /// A server on its own thread with [`handler`], stopped on drop.
    struct TestServer {
        port: u16,
        stop: Option<smol::channel::Sender<()>>,
        thread: Option<std::thread::JoinHandle<usize>>,
    }

    impl TestServer {
        fn start(max_body_bytes: u64) -> TestServer {
            TestServer::start_with(ServerOptions::new(max_body_bytes))
        }

        /// With 300 ms header and body read timeouts.
        fn start_with_short_timeouts() -> TestServer {
            let mut options = ServerOptions::new(1000);
            options.header_read_timeout = Duration::from_millis(300);
            options.body_read_timeout = Duration::from_millis(300);
            TestServer::start_with(options)
        }

        fn start_with(mut options: ServerOptions) -> TestServer {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let (stop, stopped) = smol::channel::bounded::<()>(1);
            let thread = std::thread::spawn(move || {
                let ex = LocalExecutor::new();
                let listener = TcpListener::try_from(listener).unwrap();
                options.shutdown_grace = Duration::from_secs(3);
                let shutdown = async move {
                    stopped.recv().await.ok();
                };
                smol::block_on(ex.run(serve(&ex, listener, handler, options, shutdown)))
            });
            TestServer { port, stop: Some(stop), thread: Some(thread) }
        }

        fn connect(&self) -> StdStream {
            let s = StdStream::connect(("127.0.0.1", self.port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        }

        /// Starts the shutdown; returns what `serve` returned.
        fn stop(&mut self) -> usize {
            self.stop.take();
            self.thread.take().map(|t| t.join().unwrap()).unwrap_or(0)
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                self.stop();
            }
        }
    }

    use crate::http1::tests::{echo, Answer};

    /// [`echo`], but `/slow` takes 300 ms.
    async fn handler(req: Request) -> Response {
        if req.path == "/slow" {
            Timer::after(Duration::from_millis(300)).await;
        }
        echo(req).await
    }

    /// Reads one response (Content-Length framed, or none for HEAD).
    fn read_answer(reader: &mut impl BufRead, head_request: bool) -> Answer {
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let status = status_line.split(' ').nth(1).unwrap_or_else(|| panic!("{status_line:?}"));
        let status = status.parse().unwrap();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            let (k, v) = line.trim_end().split_once(": ").unwrap();
            headers.push((k.to_ascii_lowercase(), v.to_string()));
        }
        let mut a = Answer { status, headers, body: Vec::new() };
        let len: usize = a.header("content-length").map_or(0, |v| v.parse().unwrap());
        if !head_request {
            a.body = vec![0; len];
            reader.read_exact(&mut a.body).unwrap();
        }
        a
    }

    fn send(stream: &mut StdStream, request: &[u8]) -> Answer {
        stream.write_all(request).unwrap();
        read_answer(&mut BufReader::new(stream.try_clone().unwrap()), request.starts_with(b"HEAD"))
    }

    fn assert_closed(stream: &mut StdStream) {
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    }

    fn assert_still_serving(server: &TestServer) {
        let a = send(&mut server.connect(), b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(a.status, 204);
        assert_eq!(a.header("x-influxdb-version"), Some("test"));
    }

    #[test]
    fn requests_over_a_socket_reach_the_handler_and_connections_are_kept_alive() {
        let server = TestServer::start(1000);
        let mut c = server.connect();
        let a = send(
            &mut c,
            b"POST /write?db=my%20db&precision=s&rp=a+b HTTP/1.1\r\nHost: x\r\nAuthorization: Token t\r\n\
              Content-Length: 11\r\n\r\ncpu value=1",
        );
        assert_eq!(a.status, 200);
        assert_eq!(a.header("content-type"), Some("application/json"));
        let v = a.json();
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/write");
        assert_eq!(v["query"], serde_json::json!([["db", "my db"], ["precision", "s"], ["rp", "a b"]]));
        assert!(v["headers"].as_array().unwrap().contains(&serde_json::json!(["authorization", "Token t"])));
        assert_eq!(v["body"], "cpu value=1");
        // The same connection serves the next requests, chunked bodies too.
        let a = send(
            &mut c,
            b"POST /write HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ncpu\r\n2\r\n v\r\n0\r\n\r\n",
        );
        assert_eq!(a.json()["body"], "cpu v");
        let a = send(&mut c, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(a.status, 204);
        assert_eq!(a.header("content-type"), None, "no invented content type");
    }

    /// The head guard over a real socket: the answer is read, then the
    /// connection ends cleanly (no reset), and the next one is served. (The
    /// guard's cases are tested in `crate::http1`.)
    #[test]
    fn a_header_block_over_8_kib_is_431_and_the_server_goes_on() {
        let server = TestServer::start(1000);
        let mut c = server.connect();
        let mut req = b"GET /query HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..100 {
            req.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(100)).as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        let a = send(&mut c, &req);
        assert_eq!(a.status, 431);
        assert_eq!(a.json()["error"], "request header fields too large (limit 8192 bytes)");
        assert_eq!(a.header("connection"), Some("close"));
        assert_closed(&mut c);
        assert_still_serving(&server);
    }

    #[test]
    fn shutdown_lets_requests_in_flight_finish_and_closes_idle_connections() {
        let mut server = TestServer::start(1000);
        let mut idle = server.connect();
        assert_eq!(send(&mut idle, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").status, 204);
        let mut busy = server.connect();
        busy.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let start = Instant::now();
        assert_eq!(server.stop(), 0, "every connection finished within the grace period");
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
        let a = read_answer(&mut BufReader::new(busy.try_clone().unwrap()), false);
        assert_eq!((a.status, a.header("connection")), (200, Some("close")));
        assert_closed(&mut busy);
        assert_closed(&mut idle);
        assert!(StdStream::connect(("127.0.0.1", server.port)).is_err(), "no longer accepting");
    }

    /// Reads until the connection ends (the end of the stream, or a reset
    /// after the server stopped lingering); panics if it is still open
    /// after the read timeout.
    fn assert_ends(stream: &mut StdStream) {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    panic!("the connection is still open: {e}")
                }
                Err(_) => return,
            }
        }
    }

    #[test]
    fn conflicting_content_lengths_are_400_and_the_connection_closed() {
        let server = TestServer::start(1000);
        let mut c = server.connect();
        let a = send(
            &mut c,
            b"POST /write?db=x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\ncpu v=1",
        );
        assert_eq!(a.status, 400);
        assert_eq!(a.error(), "malformed request head: conflicting Content-Length headers (\"5\", \"6\")");
        assert_eq!(a.header("connection"), Some("close"));
        assert_ends(&mut c);
        assert_still_serving(&server);
    }

    #[test]
    fn a_stalled_body_is_408_and_its_connection_closed() {
        let server = TestServer::start_with_short_timeouts();
        let mut c = server.connect();
        let a = send(&mut c, b"POST /write?db=x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\ncpu");
        assert_eq!(a.status, 408, "{a:?}");
        assert_eq!(a.error(), "timeout reading the request body (limit 300 ms)");
        assert_eq!(a.header("connection"), Some("close"));
        assert_eq!(a.header("x-influxdb-version"), Some(crate::INFLUXDB_COMPAT_VERSION));
        assert_ends(&mut c);
        assert_still_serving(&server);
    }

    /// The body timeout is a total: a client that keeps sending a little is
    /// cut off too.
    #[test]
    fn a_trickling_chunked_body_is_408_and_its_connection_closed() {
        let server = TestServer::start_with_short_timeouts();
        let mut c = server.connect();
        c.write_all(b"POST /write?db=x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        let mut writer = c.try_clone().unwrap();
        // One byte every 50 ms, until the server stops reading (at most 10 s).
        let trickle = std::thread::spawn(move || {
            for _ in 0..200 {
                if writer.write_all(b"1\r\na\r\n").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let a = read_answer(&mut BufReader::new(c.try_clone().unwrap()), false);
        assert_eq!(a.status, 408, "{a:?}");
        assert_eq!(a.error(), "timeout reading the request body (limit 300 ms)");
        assert_eq!(a.header("connection"), Some("close"));
        assert_ends(&mut c);
        drop(c);
        trickle.join().unwrap();
    }

    #[test]
    fn a_stalled_head_is_408_and_its_connection_closed() {
        let server = TestServer::start_with_short_timeouts();
        let mut c = server.connect();
        let a = send(&mut c, b"GET /ping HTTP/1.1\r\nHost: x\r\n");
        assert_eq!(a.status, 408, "{a:?}");
        assert_eq!(a.error(), "timeout reading the request head (limit 300 ms)");
        assert_eq!(a.header("connection"), Some("close"));
        assert_ends(&mut c);
        // A request that takes its time between the head and the next one is
        // not affected: the header timeout starts with a request's first byte.
        let mut c = server.connect();
        assert_eq!(send(&mut c, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").status, 204);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(send(&mut c, b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").status, 204);
    }
}
