//! A wstd TCP stream as a `futures-io` stream, the shape async-h1 needs.
//!
//! wstd's `TcpStream` has its own `async fn read/write` traits; async-h1 wants
//! `futures_io::AsyncRead + AsyncWrite + Clone + Send + Sync + Unpin + 'static`
//! (the server clones the stream to read the head and write the answer; the
//! client needs all but `Clone`). [`Stream`] shares the socket by `Arc` (wstd's
//! stream types are `Send + Sync`: they are built on `std::sync`).
//!
//! No copies and no allocation per call: `poll_read` and `poll_write` run
//! wstd's `read`/`write` on the caller's buffer and poll it once, in place.
//! That is sound because both only wait *before* touching the buffer (wstd
//! waits for readiness, then makes one non-blocking `wasi:io/streams` call),
//! so dropping them while pending loses nothing:
//! - a pending read leaves its readiness wait inside wstd's input stream,
//!   which keeps the waker registered until the next `poll_read`;
//! - a pending write (`check-write` said 0: the host is still writing earlier
//!   bytes in the background) would drop its wait, so the stream keeps an
//!   owned flush future instead (a flush on a socket completes when those
//!   earlier bytes are written), and writes again once it is done.
//!
//! The `Mutex` around that future exists only so that the type is `Sync`; it
//! is never contended (the WASI executor is single-threaded, and `poll_*`
//! reach it through `get_mut`).

use futures_lite::io::{AsyncRead, AsyncWrite};
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wstd::io::{AsyncInputStream, AsyncOutputStream};
use wstd::net::TcpStream;

type Pending = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// Largest read asked of the host at once (bytes). wasmtime allocates the
/// requested size for every read, whatever is available; 256 KiB holds what
/// a loopback socket typically has ready.
const MAX_READ: usize = 256 * 1024;

/// One TCP connection; clones share the socket.
pub struct Stream {
    socket: Arc<TcpStream>,
    /// A flush in flight: asked for by `poll_flush`, or waiting for the
    /// output stream to take bytes again after `check-write` said 0.
    flush: Mutex<Option<Pending>>,
}

impl Stream {
    pub fn new(socket: TcpStream) -> Stream {
        Stream { socket: Arc::new(socket), flush: Mutex::default() }
    }

    /// Connects to `addr` (`ip:port`).
    pub async fn connect(addr: std::net::SocketAddr) -> io::Result<Stream> {
        TcpStream::connect_addr(addr).await.map(Stream::new)
    }
}

impl Clone for Stream {
    /// A new handle on the same socket, with no flush in flight.
    fn clone(&self) -> Stream {
        Stream { socket: self.socket.clone(), flush: Mutex::default() }
    }
}

fn poisoned() -> io::Error {
    io::Error::other("stream state poisoned")
}

impl AsyncRead for Stream {
    /// At most one `wasi:io/streams` read, of at most `buf.len()` (and
    /// [`MAX_READ`]) bytes, straight into `buf`; `Ok(0)` at end of stream.
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let len = buf.len().min(MAX_READ);
        let read = pin!(input(&self.socket)?.read(&mut buf[..len]));
        read.poll(cx)
    }
}

impl AsyncWrite for Stream {
    /// Hands as much of `buf` to the socket's output stream as it takes now
    /// (wasmtime takes all of it: what the socket does not accept at once it
    /// writes in the background) and reports that count.
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = self.get_mut();
        let flush = this.flush.get_mut().map_err(|_| poisoned())?;
        loop {
            if let Some(pending) = flush.as_mut() {
                let done = futures_lite::ready!(pending.as_mut().poll(cx));
                *flush = None;
                done?;
            }
            let write = pin!(output(&this.socket)?.write(buf));
            if let Poll::Ready(written) = write.poll(cx) {
                return Poll::Ready(written);
            }
            // Nothing was written: wait until the host has written what it
            // holds, then try again.
            *flush = Some(start_flush(&this.socket));
        }
    }

    /// Resolves once every byte written so far is on the socket.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flush = this.flush.get_mut().map_err(|_| poisoned())?;
        let pending = match flush {
            Some(pending) => pending,
            None => flush.insert(start_flush(&this.socket)),
        };
        let done = futures_lite::ready!(pending.as_mut().poll(cx));
        *flush = None;
        Poll::Ready(done)
    }

    /// Flushes, then shuts down the sending side of the socket (the peer
    /// reads end of stream, as after `shutdown(SHUT_WR)`); reading goes on.
    /// Every clone shares the socket: none can write afterwards.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        futures_lite::ready!(Pin::new(&mut *this).poll_flush(cx))?;
        // wstd 0.6 shuts a socket down only by dropping a half from `split`:
        // dropping the write half shuts down sending; the read half would shut
        // down receiving when dropped, so it is forgotten instead (it is only a
        // reference, nothing leaks).
        let (read, write) = this.socket.split();
        drop(write);
        std::mem::forget(read);
        Poll::Ready(Ok(()))
    }
}

/// A future that flushes the socket's output stream and resolves once it
/// can take bytes again; owns what it needs.
fn start_flush(socket: &Arc<TcpStream>) -> Pending {
    let socket = socket.clone();
    Box::pin(async move { output(&socket)?.flush().await })
}

fn input(socket: &TcpStream) -> io::Result<&AsyncInputStream> {
    wstd::io::AsyncRead::as_async_input_stream(socket).ok_or_else(|| io::Error::other("no input stream"))
}

fn output(socket: &TcpStream) -> io::Result<&AsyncOutputStream> {
    wstd::io::AsyncWrite::as_async_output_stream(socket).ok_or_else(|| io::Error::other("no output stream"))
}

#[cfg(test)]
mod tests {
    //! These run inside wasmtime (`cargo test --target wasm32-wasip2`).
    use super::*;
    use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
    use wstd::iter::AsyncIterator;
    use wstd::net::TcpListener;

    #[test]
    fn close_half_closes_the_connection() {
        wstd::runtime::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut client = Stream::connect(listener.local_addr().unwrap()).await.unwrap();
            let mut server = Stream::new(listener.incoming().next().await.unwrap().unwrap());
            let mut reader = server.clone();
            server.write_all(b"bye").await.unwrap();
            server.close().await.unwrap();
            // The client reads what was sent, then the end of the stream.
            let mut got = Vec::new();
            let eof = async { client.read_to_end(&mut got).await.map(Some) };
            let later = async {
                wstd::task::sleep(std::time::Duration::from_secs(5).into()).await;
                Ok(None)
            };
            assert_eq!(futures_lite::future::or(eof, later).await.unwrap(), Some(3), "no end of stream");
            assert_eq!(got, b"bye");
            // The server still reads what the client sends after that.
            client.write_all(b"late").await.unwrap();
            client.flush().await.unwrap();
            let mut buf = [0u8; 4];
            reader.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"late");
        });
    }
}
