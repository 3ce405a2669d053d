//! Per-connection IO: the accepted TCP stream, adapted for hyper, with a write-progress timeout,
//! and a reset instead of a plain close for an answer that failed halfway.
//!
//! hyper has no write timeout of its own; without one, a client that never reads its response
//! holds the connection and the response's memory forever. The timer here is armed only while a
//! write is blocked, so the common path (the socket buffer takes the whole write) costs nothing.
//!
//! An answer whose body is delimited by the end of the connection (HTTP/1.0 without a length)
//! looks complete however it ends; when it failed, the connection is reset (RST), which every
//! client reports as an error.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Sleep;

pub struct Conn {
    io: TokioIo<TcpStream>,
    write_timeout: Option<Duration>,
    /// Running while a write is blocked; dropped as soon as a write makes progress.
    stalled: Option<Pin<Box<Sleep>>>,
    reset: ResetOnClose,
}

/// Asks for the connection to be reset rather than closed when it ends.
#[derive(Clone, Default)]
pub struct ResetOnClose(Arc<AtomicBool>);

impl ResetOnClose {
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Conn {
    pub fn new(stream: TcpStream, write_timeout: Option<Duration>) -> Conn {
        Conn { io: TokioIo::new(stream), write_timeout, stalled: None, reset: ResetOnClose::default() }
    }

    /// The handle that turns this connection's close into a reset.
    pub fn reset_on_close(&self) -> ResetOnClose {
        self.reset.clone()
    }

    /// Wraps a blocked (`Pending`) write in the stall timer; progress disarms it.
    fn guard<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let Some(limit) = self.write_timeout else { return Poll::Pending };
                let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                ready!(timer.as_mut().poll(cx));
                self.stalled = None;
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "write_timeout: client stopped reading")))
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if self.reset.0.load(Ordering::Relaxed) {
            let linger = libc::linger { l_onoff: 1, l_linger: 0 };
            // SAFETY: setsockopt with a valid pointer and length on the socket we own; a zero
            // linger makes the close that follows send a reset.
            unsafe {
                libc::setsockopt(
                    self.io.inner().as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&raw const linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                );
            }
        }
    }
}

impl Read for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        this.guard(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.guard(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_flush(cx);
        this.guard(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_shutdown(cx);
        this.guard(cx, poll)
    }
}
