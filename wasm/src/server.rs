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

/// Header validation for outgoing requests too (see [`crate::transport`]).
pub(crate) use influx_proxy::http1::header;

/// A kept-alive connection with no request for this long is closed, in ms
/// (as the native host: async-h1's time limit for reading a request head).
const IDLE_TIMEOUT_MS: u64 = 60_000;

/// Accepts connections on `listener` forever, one task per connection.
pub async fn serve(proxy: Rc<Host>, listener: TcpListener) {
    let options =
        ConnectionOptions { max_body_bytes: proxy.config().max_body_bytes, idle_timeout_ms: IDLE_TIMEOUT_MS };
    let mut incoming = listener.incoming();
    while let Some(conn) = incoming.next().await {
        let conn = match conn {
            Ok(conn) => conn,
            // A failed accept (e.g. the client already went away) concerns
            // that client only.
            Err(_) => continue,
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
