//! Connections to the function's server: hyper-util's HTTP connector, with a [`Handle`] on each
//! connection. A request finds the handle of the connection it went out on (through hyper-util's
//! `capture_connection`), so that it can shut that connection down when it ends before its
//! exchange is complete (hyper-util's pooled connection task owns the upload and would otherwise
//! keep writing it), and so that a failure can tell a connection that had served answers before
//! (one taken from the pool, which the function may have closed meanwhile) from a new one.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use hyper::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{CaptureConnection, Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::sys::{Abortable, Aborter};

/// Makes [`Io`]s: plain TCP connections, each with its [`Handle`].
#[derive(Clone)]
pub struct Connector(pub HttpConnector);

impl tower_service::Service<Uri> for Connector {
    type Response = Io;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Io, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.0.call(uri);
        Box::pin(async move { connecting.await.map(Io::new) })
    }
}

/// One connection to the function.
pub struct Io {
    io: TokioIo<Abortable>,
    handle: Handle,
}

impl Io {
    fn new(io: TokioIo<TcpStream>) -> Io {
        let stream = Abortable::new(io.into_inner());
        let shared = Shared { aborter: stream.aborter(), served: AtomicBool::new(false) };
        Io { io: TokioIo::new(stream), handle: Handle(Arc::new(shared)) }
    }
}

impl Connection for Io {
    fn connected(&self) -> Connected {
        self.io.inner().get_ref().connected().extra(self.handle.clone())
    }
}

impl Read for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl Write for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A handle on one connection, shared by the [`Io`] and every request that used it.
#[derive(Clone)]
pub struct Handle(Arc<Shared>);

struct Shared {
    /// Shuts the socket down, while the connection is open.
    aborter: Aborter,
    /// An answer came on this connection.
    served: AtomicBool,
}

impl Handle {
    /// The handle of the connection a request went out on, once it has one.
    pub fn of(capture: &CaptureConnection) -> Option<Handle> {
        let connected = capture.connection_metadata();
        let mut extras = hyper::http::Extensions::new();
        connected.as_ref()?.get_extras(&mut extras);
        extras.get::<Handle>().cloned()
    }

    /// Shuts the connection down both ways: whatever hyper's connection task was doing with it
    /// (writing an upload the function does not read, waiting for an answer) fails at once, and
    /// the task drops the request and closes the connection.
    pub fn abort(&self) {
        self.0.aborter.abort();
    }

    pub fn mark_served(&self) {
        self.0.served.store(true, Ordering::Relaxed);
    }

    /// Whether an answer came on this connection before: it was taken from the pool.
    pub fn has_served(&self) -> bool {
        self.0.served.load(Ordering::Relaxed)
    }
}
