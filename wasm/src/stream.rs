//! A wstd TCP stream as a `futures-io` stream, the shape async-h1 needs.
//!
//! wstd's `TcpStream` has its own `async fn read/write` traits; async-h1 wants
//! `futures_io::AsyncRead + AsyncWrite + Clone + Send + Sync + Unpin + 'static`
//! (the server clones the stream to read the head and write the answer; the
//! client needs all but `Clone`). [`Stream`] shares the socket by `Arc` (wstd's
//! stream types are `Send + Sync`: they are built on `std::sync`) and keeps at
//! most one in-flight read and one in-flight write future per clone, boxed,
//! behind a `Mutex` only so that the type is `Sync` (it is never contended: the
//! WASI executor is single-threaded, and `poll_*` reach it through `get_mut`).

use futures_lite::io::{AsyncRead, AsyncWrite};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wstd::io::{AsyncInputStream, AsyncOutputStream};
use wstd::net::TcpStream;

type Pending<T> = Pin<Box<dyn Future<Output = io::Result<T>> + Send>>;

/// One TCP connection; clones share the socket.
pub struct Stream {
    socket: Arc<TcpStream>,
    /// The read in flight and bytes it read beyond what the caller took.
    read: Mutex<ReadState>,
    /// The write in flight: bytes accepted from the caller not yet on the socket.
    write: Mutex<WriteState>,
}

#[derive(Default)]
struct ReadState {
    pending: Option<Pending<Vec<u8>>>,
    leftover: Vec<u8>,
}

impl Stream {
    pub fn new(socket: TcpStream) -> Stream {
        Stream {
            socket: Arc::new(socket),
            read: Mutex::default(),
            write: Mutex::default(),
        }
    }

    /// Connects to `addr` (`ip:port`).
    pub async fn connect(addr: std::net::SocketAddr) -> io::Result<Stream> {
        TcpStream::connect_addr(addr).await.map(Stream::new)
    }
}

impl Clone for Stream {
    /// A new handle on the same socket, with no read or write in flight.
    fn clone(&self) -> Stream {
        Stream {
            socket: self.socket.clone(),
            read: Mutex::default(),
            write: Mutex::default(),
        }
    }
}

fn poisoned() -> io::Error {
    io::Error::other("stream state poisoned")
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = self.get_mut();
        let state = this.read.get_mut().map_err(|_| poisoned())?;
        if state.leftover.is_empty() {
            let fut = state.pending.get_or_insert_with(|| {
                let socket = this.socket.clone();
                let len = buf.len();
                Box::pin(async move {
                    let mut chunk = vec![0; len];
                    let n = input(&socket)?.read(&mut chunk).await?;
                    chunk.truncate(n);
                    Ok(chunk)
                })
            });
            match fut.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => {
                    state.pending = None;
                    state.leftover = result?;
                }
            }
        }
        let n = state.leftover.len().min(buf.len());
        buf[..n].copy_from_slice(&state.leftover[..n]);
        state.leftover.drain(..n);
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Stream {
    /// Takes the whole of `buf` (copied) and reports it written only once it is
    /// in the socket's output stream. A caller that retries after `Pending`
    /// with another buffer is told how many bytes of the first one went out.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let state = this.write.get_mut().map_err(|_| poisoned())?;
        if state.flushing {
            futures_lite::ready!(state.drive(cx))?;
        }
        if state.pending.is_none() {
            let socket = this.socket.clone();
            let data = buf.to_vec();
            state.pending = Some(Box::pin(async move {
                output(&socket)?.write_all(&data).await?;
                Ok(data.len())
            }));
        }
        state.drive(cx)
    }

    /// Finishes a write in flight, then flushes the socket's output stream.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let state = this.write.get_mut().map_err(|_| poisoned())?;
        loop {
            if state.pending.is_some() {
                let was_flush = state.flushing;
                futures_lite::ready!(state.drive(cx))?;
                if was_flush {
                    return Poll::Ready(Ok(()));
                }
            }
            let socket = this.socket.clone();
            state.flushing = true;
            state.pending = Some(Box::pin(async move {
                output(&socket)?.flush().await?;
                Ok(0)
            }));
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

#[derive(Default)]
struct WriteState {
    /// A write (yields the bytes written) or a flush (yields 0) in flight.
    pending: Option<Pending<usize>>,
    flushing: bool,
}

impl WriteState {
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(fut) = self.pending.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        let result = futures_lite::ready!(fut.as_mut().poll(cx));
        self.pending = None;
        self.flushing = false;
        Poll::Ready(result)
    }
}

fn input(socket: &TcpStream) -> io::Result<&AsyncInputStream> {
    wstd::io::AsyncRead::as_async_input_stream(socket)
        .ok_or_else(|| io::Error::other("no input stream"))
}

fn output(socket: &TcpStream) -> io::Result<&AsyncOutputStream> {
    wstd::io::AsyncWrite::as_async_output_stream(socket)
        .ok_or_else(|| io::Error::other("no output stream"))
}
