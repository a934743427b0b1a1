//! The HTTP/1.1 server of the WASI host: an accept loop on a wstd
//! `TcpListener`, each connection a task on the wstd executor, served by
//! [`influx_proxy::http1::serve_connection`] (async-h1 with the request-head
//! guard, the body limit and the conversion to and from the core's messages,
//! the same code as the native host) and answered by [`Proxy::handle`].
//! With `listen_tls` every connection is TLS (the shared
//! [`influx_proxy::host_tls::accept`]): its handshake runs in the
//! connection's task within `header_read_timeout_ms`; a failed or stalled
//! one closes the connection with nothing answered.
//!
//! [`Proxy::handle`]: influx_proxy::proxy::Proxy::handle

use crate::stream::Stream;
use crate::{now_ms, Host};
use influx_proxy::host_tls::ServerConfig;
use influx_proxy::http::{Request, Response};
use influx_proxy::http1::{serve_connection, ConnectionHost, ConnectionOptions};
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use wstd::iter::AsyncIterator;
use wstd::net::TcpListener;

/// Pause after a failed accept (as the native host).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Accepts connections on `listener` forever, one task per connection, each
/// request answered by [`Proxy::handle`] (options from the config:
/// `max_body_bytes`, `header_read_timeout_ms`, `body_read_timeout_ms`),
/// over TLS with `tls` (`listen_tls`, made by
/// [`influx_proxy::host_tls::check`]). Errors accepting a connection (e.g.
/// too many open files) do not stop the server: it waits 100 ms and
/// accepts again.
///
/// [`Proxy::handle`]: influx_proxy::proxy::Proxy::handle
pub async fn serve(proxy: Rc<Host>, listener: TcpListener, tls: Option<Arc<ServerConfig>>) {
    let options = ConnectionOptions::from_config(proxy.topology().config());
    accept_loop(listener, options, tls, move |request| {
        let proxy = proxy.clone();
        async move { proxy.handle(request, now_ms()).await }
    })
    .await;
}

/// The accept loop of [`serve`], with any handler (the tests' too).
async fn accept_loop<H, Fut>(
    listener: TcpListener,
    options: ConnectionOptions,
    tls: Option<Arc<ServerConfig>>,
    handler: H,
) where
    H: Fn(Request) -> Fut + 'static,
    Fut: Future<Output = Response> + 'static,
{
    let handler = Rc::new(handler);
    let mut incoming = listener.incoming();
    while let Some(conn) = incoming.next().await {
        let conn = match conn {
            Ok(conn) => conn,
            // A failed accept (e.g. too many open files) does not stop the
            // server: wait, then accept again (the listener stays ready, so
            // accepting again at once would spin and starve every other task
            // on this single executor).
            Err(_) => {
                wstd::task::sleep(ACCEPT_RETRY.into()).await;
                continue;
            }
        };
        let (handler, options, tls) = (handler.clone(), options.clone(), tls.clone());
        // The peer address as the socket gives it (for `/reload`'s loopback check).
        let peer = conn.peer_addr().ok().and_then(|a| crate::peer_ip(&a));
        wstd::runtime::spawn(async move {
            let with_peer = |mut request: Request| {
                request.peer = peer;
                (*handler)(request)
            };
            let stream = Stream::new(conn);
            match tls {
                None => serve_connection(stream, &options, &WasiTimers, with_peer).await,
                Some(config) => {
                    let deadline = WasiTimers.sleep(options.header_read_timeout_ms);
                    // A failed or stalled handshake: nothing to answer, closed.
                    if let Some(stream) = influx_proxy::host_tls::accept(stream, config, deadline).await {
                        serve_connection(stream, &options, &WasiTimers, with_peer).await;
                    }
                }
            }
        })
        .detach();
    }
}

/// What a connection needs from this host: wstd's timers. (No shutdown:
/// WASI has no signals, stopping wasmtime ends the component at once.)
struct WasiTimers;

impl ConnectionHost for WasiTimers {
    async fn sleep(&self, ms: u64) {
        wstd::task::sleep(Duration::from_millis(ms).into()).await;
    }
}

#[cfg(test)]
mod tests {
    //! These run inside wasmtime (`cargo test --target wasm32-wasip2`): a
    //! scripted client against the server on a free port, in the same
    //! component. (The request-head guard's cases are tested in the root
    //! crate's `http1`; these check that this host applies it.)
    use super::*;
    use futures_lite::io::{AsyncReadExt, AsyncWriteExt};

    /// Every request that reaches the handler is answered 204.
    async fn no_content(_: Request) -> Response {
        Response::empty(204)
    }

    /// The server with 300 ms read timeouts on a free port: its address and
    /// the accepting task (dropped to stop it).
    async fn start() -> (std::net::SocketAddr, wstd::runtime::Task<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let options = ConnectionOptions {
            max_body_bytes: 1000,
            idle_timeout_ms: 60_000,
            header_read_timeout_ms: 300,
            body_read_timeout_ms: 300,
        };
        (addr, wstd::runtime::spawn(accept_loop(listener, options, None, no_content)))
    }

    /// Sends `request` and reads until the server closes the connection, for
    /// at most 5 s: what was read, or `None` if the connection was still
    /// open then.
    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> Option<String> {
        let mut client = Stream::connect(addr).await.unwrap();
        client.write_all(request).await.unwrap();
        client.flush().await.unwrap();
        let mut got = Vec::new();
        let read = async {
            client.read_to_end(&mut got).await.ok();
            true
        };
        let later = async {
            wstd::task::sleep(Duration::from_secs(5).into()).await;
            false
        };
        let closed = futures_lite::future::or(read, later).await;
        closed.then(|| String::from_utf8_lossy(&got).into_owned())
    }

    #[test]
    fn expect_100_continue_is_answered_before_the_body_is_sent() {
        // async-h1 writes `100 Continue` on a clone of the stream and never
        // flushes it: the stream must still send it (see stream.rs), or a
        // client waiting for it before sending the body waits forever.
        wstd::runtime::block_on(async {
            let (addr, _server) = start().await;
            let mut client = Stream::connect(addr).await.unwrap();
            client
                .write_all(b"POST /write?db=x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
                .await
                .unwrap();
            client.flush().await.unwrap();
            // Read until the interim answer, for at most 5 s.
            let mut got = Vec::new();
            let interim = async {
                let mut chunk = [0u8; 256];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&chunk[..n]),
                    }
                }
                true
            };
            let later = async {
                wstd::task::sleep(Duration::from_secs(5).into()).await;
                false
            };
            assert!(futures_lite::future::or(interim, later).await, "no answer within 5 s");
            let head = String::from_utf8_lossy(&got).into_owned();
            assert!(head.starts_with("HTTP/1.1 100 Continue\r\n"), "{head:?}");
        });
    }

    #[test]
    fn a_stalled_body_is_408_and_its_connection_closed() {
        wstd::runtime::block_on(async {
            let (addr, _server) = start().await;
            let answer =
                exchange(addr, b"POST /write?db=x HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\ncpu")
                    .await
                    .expect("the connection is closed within 5 s");
            assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
            assert!(answer.contains("connection: close"), "{answer:?}");
            assert!(
                answer.ends_with("{\"error\":\"timeout reading the request body (limit 300 ms)\"}\n"),
                "{answer:?}"
            );
        });
    }

    #[test]
    fn a_stalled_head_is_408_and_its_connection_closed() {
        wstd::runtime::block_on(async {
            let (addr, _server) = start().await;
            let answer = exchange(addr, b"GET /ping HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("the connection is closed within 5 s");
            assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
            assert!(
                answer.contains("{\"error\":\"timeout reading the request head (limit 300 ms)\"}"),
                "{answer:?}"
            );
        });
    }

    #[test]
    fn conflicting_content_lengths_are_400() {
        wstd::runtime::block_on(async {
            let (addr, _server) = start().await;
            let answer = exchange(
                addr,
                b"POST /write?db=x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\ncpu v=1",
            )
            .await
            .expect("the connection is closed within 5 s");
            assert!(answer.starts_with("HTTP/1.1 400 "), "{answer:?}");
            assert!(answer.contains("connection: close"), "{answer:?}");
            assert!(answer.contains("conflicting Content-Length"), "{answer:?}");
        });
    }
}
