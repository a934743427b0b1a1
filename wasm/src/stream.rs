//! A wstd TCP stream as a `futures-io` stream, the shape async-h1 needs.
//!
//! wstd's `TcpStream` has its own `async fn read/write` traits; async-h1 wants
//! `futures_io::AsyncRead + AsyncWrite + Clone + Send + Sync + Unpin + 'static`
//! (the server clones the stream to read the head and write the answer; the
//! client needs all but `Clone`). [`Stream`] shares the socket by `Arc` (wstd's
//! stream types are `Send + Sync`: they are built on `std::sync`).
//!
//! **Writes are gathered until a flush.** WASI 0.2 cannot set `TCP_NODELAY`
//! (wasi-sockets has no such option; wasmtime leaves Nagle's algorithm on),
//! and Nagle's algorithm holds a short segment back while an earlier short
//! segment is unacknowledged, which the peer, waiting for the rest of the
//! message before it answers, acknowledges only when its delayed-ACK timer
//! fires (40 ms on Linux). A message handed to the socket in several writes
//! (async-h1 encodes in 8 KiB pieces; the backend client in 256 KiB ones)
//! ends in such a held segment: every request to a backend took 40 ms more.
//! So `poll_write` only appends to this handle's buffer, and the whole message
//! goes to the socket when it is flushed (or when [`GATHER_BYTES`] are
//! buffered; or when the handle is dropped, for writers that never flush, such
//! as async-h1's `100 Continue`), in `wasi:io/streams` writes back to back
//! (wasmtime 49 takes 64 KiB per write and sends each at once while the socket
//! has room). The kernel then sees one stream of data with one short segment
//! at its end, which Nagle's algorithm sends at once (the previous message's
//! was acknowledged by the peer's answer).
//!
//! Reads run wstd's `read` on the caller's buffer and poll it once, in place.
//! That is sound because it only waits *before* touching the buffer (wstd
//! waits for readiness, then makes one non-blocking `wasi:io/streams` call),
//! so dropping it while pending loses nothing: the readiness wait stays inside
//! wstd's input stream, which keeps the waker registered until the next
//! `poll_read`. A write that finds the output stream full (`check-write` said
//! 0: the host is still writing earlier bytes in the background) would drop
//! its wait, so the stream keeps an owned flush future instead (a flush on a
//! socket completes when those earlier bytes are written), and writes again
//! once it is done.
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

/// Bytes gathered by one handle before they are handed to the socket even
/// without a flush (1 MiB): a whole request or answer of usual size goes out
/// in one write, a larger one in writes of about this size. (Larger costs
/// memory twice, in the component and in wasmtime, which copies each write
/// to write it in the background.)
const GATHER_BYTES: usize = 1 << 20;

/// One TCP connection; clones share the socket.
pub struct Stream {
    socket: Arc<TcpStream>,
    /// A flush in flight: asked for by `poll_flush`, or waiting for the
    /// output stream to take bytes again after `check-write` said 0.
    flush: Mutex<Option<Pending>>,
    /// Written but not yet handed to the socket: `out[sent..]`.
    out: Vec<u8>,
    sent: usize,
    /// `wasi:io/streams` writes made by this handle (what the tests check).
    #[cfg(test)]
    writes: usize,
}

impl Stream {
    pub fn new(socket: TcpStream) -> Stream {
        Stream::on(Arc::new(socket))
    }

    fn on(socket: Arc<TcpStream>) -> Stream {
        Stream {
            socket,
            flush: Mutex::default(),
            out: Vec::new(),
            sent: 0,
            #[cfg(test)]
            writes: 0,
        }
    }

    /// Connects to `addr` (`ip:port`).
    pub async fn connect(addr: std::net::SocketAddr) -> io::Result<Stream> {
        TcpStream::connect_addr(addr).await.map(Stream::new)
    }
}

impl Clone for Stream {
    /// A new handle on the same socket, with no flush in flight and nothing
    /// buffered.
    fn clone(&self) -> Stream {
        Stream::on(self.socket.clone())
    }
}

impl Drop for Stream {
    /// Hands what is still buffered to the socket, for writers that never
    /// flush (async-h1's `100 Continue`): at once as far as `check-write`
    /// allows, and the rest, if the output stream is busy (seen under CPU
    /// load: `check-write` said 0 and the bytes were lost), by a detached
    /// task that waits for it. Nothing is buffered after a flush. Streams
    /// are only dropped inside the wstd runtime (every connection is a task
    /// of it), which the task needs.
    fn drop(&mut self) {
        let Ok(output) = output(&self.socket) else { return };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while self.sent < self.out.len() {
            // Ready at once unless the output stream is full.
            let written = pin!(output.write(&self.out[self.sent..])).poll(&mut cx);
            match written {
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(_)) => return,
                Poll::Pending => {
                    let (socket, rest) = (self.socket.clone(), self.out.split_off(self.sent));
                    wstd::runtime::spawn(async move {
                        if let Ok(out) = self::output(&socket) {
                            if out.write_all(&rest).await.is_ok() {
                                let _ = out.flush().await;
                            }
                        }
                    })
                    .detach();
                    return;
                }
            }
        }
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

impl Stream {
    /// Hands every buffered byte to the socket's output stream (each
    /// `wasi:io/streams` write as large as `check-write` allows: wasmtime
    /// takes all of it and writes what the socket does not take at once in
    /// the background); ready once the buffer is empty.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flush = self.flush.get_mut().map_err(|_| poisoned())?;
        while self.sent < self.out.len() {
            if let Some(pending) = flush.as_mut() {
                let done = futures_lite::ready!(pending.as_mut().poll(cx));
                *flush = None;
                done?;
            }
            let write = pin!(output(&self.socket)?.write(&self.out[self.sent..]));
            match write.poll(cx) {
                Poll::Ready(written) => {
                    self.sent += written?;
                    #[cfg(test)]
                    {
                        self.writes += 1;
                    }
                }
                // Nothing was written: wait until the host has written what
                // it holds, then try again.
                Poll::Pending => *flush = Some(start_flush(&self.socket)),
            }
        }
        // wasmtime copied the bytes: the buffer is given back, so that a
        // connection idle in a pool holds none.
        self.out = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Stream {
    /// Appends `buf` to this handle's buffer (see the module doc: the socket
    /// gets it at the next flush); first hands the buffer to the socket if it
    /// holds [`GATHER_BYTES`] already.
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() >= GATHER_BYTES {
            futures_lite::ready!(this.poll_send(cx))?;
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    /// Hands the buffer to the socket, then resolves once every byte written
    /// so far is on the socket.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        futures_lite::ready!(this.poll_send(cx))?;
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

    /// A connected pair: (client, server side).
    async fn pair() -> (Stream, Stream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = Stream::connect(listener.local_addr().unwrap()).await.unwrap();
        let server = Stream::new(listener.incoming().next().await.unwrap().unwrap());
        (client, server)
    }

    /// `len` bytes read from `stream`, or `None` after 30 s (what normally
    /// takes microseconds; 5 s was once too short in a full test run on a
    /// loaded machine).
    async fn read_within(stream: &mut Stream, len: usize) -> Option<Vec<u8>> {
        let mut got = vec![0u8; len];
        let read = async { stream.read_exact(&mut got).await.ok() };
        let later = async {
            wstd::task::sleep(std::time::Duration::from_secs(30).into()).await;
            None
        };
        futures_lite::future::or(read, later).await.map(|()| got)
    }

    #[test]
    fn a_message_written_in_pieces_goes_to_the_socket_at_the_flush() {
        // What keeps Nagle's algorithm from holding the end of a message back
        // for the peer's delayed ACK (see the module doc): 70 pieces of 8 KiB,
        // as async-h1 encodes a body, reach the socket only at the flush, in
        // writes back to back.
        wstd::runtime::block_on(async {
            let (mut client, mut server) = pair().await;
            let piece: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
            for _ in 0..70 {
                client.write_all(&piece).await.unwrap();
            }
            assert_eq!(client.writes, 0, "nothing is handed to the socket before the flush");
            client.flush().await.unwrap();
            assert!(client.writes >= 1 && client.out.is_empty(), "all handed over at the flush");
            let got = read_within(&mut server, 70 * 8192).await.expect("all bytes arrive");
            assert!(got.chunks(8192).all(|c| c == piece), "the bytes arrive in order, unchanged");
        });
    }

    #[test]
    fn more_than_gather_bytes_go_out_before_the_flush_and_in_order() {
        wstd::runtime::block_on(async {
            let (mut client, mut server) = pair().await;
            let total = GATHER_BYTES * 5 / 2;
            let message: Vec<u8> = (0..total).map(|i| (i % 253) as u8).collect();
            let writer = async {
                for piece in message.chunks(100_000) {
                    client.write_all(piece).await.unwrap();
                }
            };
            // The first GATHER_BYTES arrive before any flush.
            let (first, ()) = futures_lite::future::zip(read_within(&mut server, GATHER_BYTES), writer).await;
            assert_eq!(first.as_deref(), Some(&message[..GATHER_BYTES]));
            assert!(client.writes >= 2, "{} writes", client.writes);
            client.flush().await.unwrap();
            let rest = read_within(&mut server, total - GATHER_BYTES).await;
            assert_eq!(rest.as_deref(), Some(&message[GATHER_BYTES..]));
        });
    }

    #[test]
    fn bytes_left_unflushed_are_sent_when_the_handle_is_dropped() {
        // As async-h1 writes `100 Continue`: write_all on a clone, no flush.
        wstd::runtime::block_on(async {
            let (mut client, server) = pair().await;
            let mut clone = server.clone();
            clone.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.unwrap();
            drop(clone);
            let got = read_within(&mut client, 25).await;
            assert_eq!(got.as_deref(), Some(&b"HTTP/1.1 100 Continue\r\n\r\n"[..]));
            drop(server);
        });
    }

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
