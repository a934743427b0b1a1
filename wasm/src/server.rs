//! The HTTP/1.1 server of the WASI host: an accept loop on a wstd
//! `TcpListener`, each connection a task on the wstd executor, served by
//! [`influx_proxy::http1::serve_connection`] (async-h1 with the request-head
//! guard, the body limit and the conversion to and from the core's messages,
//! the same code as the native host) and answered by [`Proxy::handle`].
//!
//! [`Proxy::handle`]: influx_proxy::proxy::Proxy::handle

use crate::stream::Stream;
use crate::{now_ms, Host};
use influx_proxy::http1::{serve_connection, ConnectionHost, ConnectionOptions};
use std::rc::Rc;
use std::time::Duration;
use wstd::iter::AsyncIterator;
use wstd::net::TcpListener;

/// A kept-alive connection with no request for this long is closed, in ms
/// (as the native host: async-h1's time limit for reading a request head).
const IDLE_TIMEOUT_MS: u64 = 60_000;

/// Pause after a failed accept (as the native host).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Accepts connections on `listener` forever, one task per connection.
/// Errors accepting a connection (e.g. too many open files) do not stop the
/// server: it waits 100 ms and accepts again.
pub async fn serve(proxy: Rc<Host>, listener: TcpListener) {
    let options =
        ConnectionOptions { max_body_bytes: proxy.config().max_body_bytes, idle_timeout_ms: IDLE_TIMEOUT_MS };
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
        let (proxy, options) = (proxy.clone(), options.clone());
        wstd::runtime::spawn(async move {
            let handler = |request| proxy.handle(request, now_ms());
            serve_connection(Stream::new(conn), &options, &WasiTimers, handler).await;
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
