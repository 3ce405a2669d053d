//! Per-connection IO: the accepted TCP stream, adapted for hyper, with a write-progress timeout,
//! the right status for the request heads hyper refuses as "too large", and what the responses
//! sent on the connection share with it ([`Handle`]): how far a streamed response may run ahead of
//! the socket, and a reset instead of a plain close for an answer that failed halfway.
//!
//! hyper has no write timeout of its own; without one, a client that never reads its response
//! holds the connection and the response's memory forever. The timer here is armed only while a
//! write is blocked, so the common path (the socket buffer takes the whole write) costs nothing.
//!
//! hyper answers `431 Request Header Fields Too Large` by itself to every head it cannot take:
//! one bigger than its buffer, but also one with more header lines than it has room for, or a
//! `Content-Length` it cannot count (`18446744073709551615`). Only the first is a 431; Go answers
//! 400 to the others. A head too big for the buffer is the only case where hyper has read that
//! many bytes since it last wrote, so that is how they are told apart, and the others' answer goes
//! out as `400 Bad Request`.
//!
//! hyper's buffer must hold the largest request head (1 MiB), and the same figure bounds what it
//! buffers of a response: for a client that reads slowly it would take up to 16 chunks of a
//! streamed body (1 MiB) where it took one. [`pace`] asks a streamed body for more only once the
//! socket has taken all of hyper's last write, and then at most [`AHEAD`] bytes before the next
//! one, so that a slow client still slows the function down instead of filling memory: a client
//! that stops reading leaves hyper holding what its last write did not take, one chunk. Reads are
//! kept to [`MAX_READ`] for the same reason: the pieces of a request body are as big as the reads
//! that brought them.
//!
//! An answer whose body is delimited by the end of the connection (HTTP/1.0 without a length)
//! looks complete however it ends; when it fails, [`pace`] marks the connection, and its close
//! becomes a reset (RST), which every client reports as an error.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper::header::{CONNECTION, HeaderValue};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::{Response, Version};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf, Take};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::body::Body;

/// How much of a streamed response body hyper may be handed between two writes: what it held with
/// a 64 KiB buffer.
pub const AHEAD: u64 = 64 * 1024;

/// The most read from the socket at once. hyper's reads grow up to its buffer (1 MiB) while a
/// client sends fast, and each piece of a request body it hands on then holds as much: a function
/// that stops reading its upload would hold several times what it did with a 64 KiB buffer.
const MAX_READ: usize = 64 * 1024;

/// The start of hyper's own 431 answer (the rest is the `Date` header and the blank line).
const HYPER_431: &[u8] =
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: ";
/// `date: ` takes a 29-byte date and `\r\n\r\n`.
const HYPER_431_LEN: usize = HYPER_431.len() + 29 + 4;
const STATUS_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n";
const STATUS_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\n";

/// The connection as hyper drives it. hyper-util's `TokioIo` turns hyper's reads and writes into
/// the [`Stream`]'s: lending hyper's uninitialised read buffer to tokio takes unchecked code, and
/// that code is hyper-util's, not ours.
pub struct Conn(TokioIo<Stream>);

/// The connection's IO, as a tokio stream.
struct Stream {
    /// The socket. Its reads go through `Take` only to be kept to [`MAX_READ`] each (the limit is
    /// set again before every read).
    io: Take<TcpStream>,
    write_timeout: Option<Duration>,
    /// Running while a write is blocked; dropped as soon as a write makes progress.
    stalled: Option<Pin<Box<Sleep>>>,
    /// The largest request head hyper takes (its read buffer); 0 leaves hyper's 431s alone.
    max_head: usize,
    /// Bytes read since the last write: at least `max_head` when hyper's buffer overflowed.
    read_since_write: usize,
    /// A 400 going out in place of hyper's 431: the bytes left to send, and the length of the
    /// answer hyper asked for (what it is told was written once they are out).
    replacement: Option<(Vec<u8>, usize)>,
    /// Shared with the responses sent on this connection.
    handle: Arc<Handle>,
}

/// What one connection shares with the responses sent on it: whether the socket took all of
/// hyper's last write, the [`pace`]d body waiting for it to take more, and whether the
/// connection's close must be a reset.
#[derive(Default)]
pub struct Handle {
    /// The socket did not take all of hyper's last write. hyper offers everything it holds in
    /// every write (its queue is at most 16 buffers, a writev takes 64), so it still holds some.
    behind: AtomicBool,
    /// Writes so far: a paced body counts what it handed to hyper since the last one.
    writes: AtomicU64,
    /// A paced body waits for the socket: `waiting` holds its waker. Looked at on every write,
    /// where most connections (every answer that is not a stream) never wait.
    parked: AtomicBool,
    waiting: Mutex<Option<Waker>>,
    reset: AtomicBool,
}

impl Handle {
    /// Asks for the connection to be reset rather than closed when it ends.
    fn reset_on_close(&self) {
        self.reset.store(true, Ordering::Relaxed);
    }

    /// A write of `offered` bytes of which the socket took `taken`.
    fn wrote(&self, offered: usize, taken: usize) {
        self.behind.store(taken < offered, Ordering::Relaxed);
        self.writes.fetch_add(1, Ordering::Relaxed);
        if taken > 0 && self.parked.swap(false, Ordering::AcqRel) {
            let waiting = self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
            if let Some(waker) = waiting {
                waker.wake();
            }
        }
    }
}

impl Conn {
    /// `max_head`: the largest request head hyper takes (its read buffer), or 0 to leave hyper's
    /// 431s alone.
    pub fn new(stream: TcpStream, write_timeout: Option<Duration>, max_head: usize) -> Conn {
        let handle = Arc::default();
        let io = stream.take(MAX_READ as u64);
        Conn(TokioIo::new(Stream {
            io,
            write_timeout,
            stalled: None,
            max_head,
            read_since_write: 0,
            replacement: None,
            handle,
        }))
    }

    /// The handle the responses sent on this connection are [`pace`]d with.
    pub fn handle(&self) -> Arc<Handle> {
        Arc::clone(&self.0.inner().handle)
    }
}

impl Stream {
    fn count(&self, offered: usize, poll: &Poll<io::Result<usize>>) {
        match poll {
            Poll::Ready(Ok(n)) => self.handle.wrote(offered, *n),
            Poll::Pending => self.handle.wrote(offered, 0),
            Poll::Ready(Err(_)) => {}
        }
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

    /// Starts sending a 400 instead of `buf` when `buf` is hyper's 431 for a head that was not too
    /// big. Returns whether it did.
    fn replace_431(&mut self, buf: &[u8]) -> bool {
        if self.replacement.is_none()
            && self.read_since_write < self.max_head
            && buf.len() == HYPER_431_LEN
            && buf.starts_with(HYPER_431)
        {
            let mut answer = STATUS_400.to_vec();
            answer.extend_from_slice(&buf[STATUS_431.len()..]);
            self.replacement = Some((answer, buf.len()));
        }
        self.replacement.is_some()
    }

    /// Sends the replacement answer; once it is all out, reports the original as written.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            let Some((left, original)) = &mut self.replacement else { return Poll::Ready(Ok(0)) };
            if left.is_empty() {
                let original = *original;
                self.replacement = None;
                return Poll::Ready(Ok(original));
            }
            let poll = Pin::new(self.io.get_mut()).poll_write(cx, left);
            match ready!(self.guard(cx, poll)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    if let Some((left, _)) = &mut self.replacement {
                        left.drain(..n);
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.handle.reset.load(Ordering::Relaxed) {
            // A zero linger makes the close that follows send a reset.
            let _ = socket2::SockRef::from(self.io.get_ref()).set_linger(Some(Duration::ZERO));
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        this.io.set_limit(MAX_READ as u64);
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        this.read_since_write = this.read_since_write.saturating_add(buf.filled().len() - before);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let replace = this.replace_431(buf);
        this.read_since_write = 0;
        if replace {
            return this.poll_replacement(cx);
        }
        let poll = Pin::new(this.io.get_mut()).poll_write(cx, buf);
        this.count(buf.len(), &poll);
        this.guard(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        let replace = match (filled.next(), filled.next()) {
            (Some(only), None) => this.replace_431(only),
            _ => false,
        };
        this.read_since_write = 0;
        if replace {
            return this.poll_replacement(cx);
        }
        let poll = Pin::new(this.io.get_mut()).poll_write_vectored(cx, bufs);
        this.count(bufs.iter().map(|b| b.len()).sum(), &poll);
        this.guard(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.get_ref().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(this.io.get_mut()).poll_flush(cx);
        this.guard(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(this.io.get_mut()).poll_shutdown(cx);
        this.guard(cx, poll)
    }
}

impl Read for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl Write for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// An answer to HTTP/1.0 without a length can only end by closing the connection. It must say
/// `Connection: close` (hyper says `keep-alive` when the request asked for it), and if it fails
/// halfway the connection must be reset (see `conn::pace`), or the client would take what came for
/// the whole answer. Returns whether the answer is such a one.
pub fn frame_for_http_1_0(response: &mut Response<Body>) -> bool {
    use hyper::body::Body as _;
    if response.body().size_hint().exact().is_some() {
        return false;
    }
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    // An HTTP/1.1 head would get `keep-alive` appended by hyper.
    *response.version_mut() = Version::HTTP_10;
    true
}

/// `body`, made to wait while the socket has not taken all of hyper's last write, or hyper was
/// handed [`AHEAD`] bytes of it since. A body known up front is left as it is. `close_delimited`:
/// the body ends where the connection does (HTTP/1.0 without a length), so if it fails the
/// connection is reset, or the client would take what came for the whole answer.
pub fn pace(body: Body, conn: &Arc<Handle>, close_delimited: bool) -> Body {
    match body {
        Body::Stream(_) => {
            let conn = Arc::clone(conn);
            let writes = conn.writes.load(Ordering::Relaxed);
            Body::stream(Paced { body, conn, writes, since: 0, close_delimited })
        }
        full => full,
    }
}

struct Paced {
    body: Body,
    conn: Arc<Handle>,
    /// The connection's write count when `since` started.
    writes: u64,
    /// Body bytes handed to hyper since its last write.
    since: u64,
    close_delimited: bool,
}

impl Paced {
    /// Whether hyper holds enough: what its last write left, or [`AHEAD`] since. Measured afresh at
    /// each write, never as a running total of what the socket took against what was handed over:
    /// the head and the chunk framing count on the socket's side only, and over a long stream that
    /// error would add up until the bound is gone.
    fn ahead(&mut self) -> bool {
        let writes = self.conn.writes.load(Ordering::Relaxed);
        if writes != self.writes {
            (self.writes, self.since) = (writes, 0);
        }
        self.conn.behind.load(Ordering::Relaxed) || self.since >= AHEAD
    }
}

impl hyper::body::Body for Paced {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.ahead() {
            *this.conn.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(cx.waker().clone());
            this.conn.parked.store(true, Ordering::Release);
            // The socket may have taken more meanwhile (the connection's writes run on this task,
            // but be sure rather than sleep forever).
            if this.ahead() {
                return Poll::Pending;
            }
        }
        let frame = ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => this.since += frame.data_ref().map_or(0, |d| d.len() as u64),
            Some(Err(_)) if this.close_delimited => this.conn.reset_on_close(),
            _ => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
