//! The connections to the function's server: a pool of HTTP/1.1 connections (hyper's
//! `client::conn::http1`), each owned by one request at a time.
//!
//! A request checks a connection out ([`Pool::checkout`]: the idle one returned last, else a new
//! one) and drives it itself, in the task that serves the client's connection, while it sends the
//! request ([`Conn::send`]) and relays the answer ([`Conn::drive`]); nothing else ever polls it,
//! so no task runs per connection and no request hops between tasks. Once the answer is complete
//! the request gives the connection back ([`Pool::put`]), and it stays only if hyper can use it
//! again (both messages complete, keep-alive). A request that ends before that drops its
//! connection, which closes it: an upload still going stops, and the function sees the
//! connection end. Idle connections are closed after [`IDLE`] by a reaper task.

use std::error::Error;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::body::Body;

/// Idle connections to the function are closed after this, before the function's server closes
/// them itself (Gunicorn's default is 2 s, Node's 5 s): a request sent on a connection the server
/// is closing fails (and is sent again if it can be). The reference uses the same 500 ms.
pub const IDLE: Duration = Duration::from_millis(500);

/// Where connections to the function come from and go back to.
pub struct Pool {
    host: String,
    port: u16,
    http: http1::Builder,
    state: Mutex<State>,
    /// Wakes the reaper when a connection goes idle while it waits for one.
    reaper: Notify,
}

#[derive(Default)]
struct State {
    /// Oldest first: connections go back at the end, and are checked out from there.
    idle: Vec<Idle>,
    /// The reaper waits for a connection to go idle (the pool was empty when it last looked).
    reaper_waiting: bool,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// The connection's own future: hyper's state machine for it, which reads and writes the socket
/// whenever it is polled. Boxed, as hyper does not name its type.
type Driver = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// One connection to the function, owned by the request using it (or by the pool).
pub struct Conn {
    send: SendRequest<Body>,
    /// Dropped once it has finished: the connection is closed, or was handed to a WebSocket
    /// tunnel.
    driver: Option<Driver>,
    /// It came from the pool: it had answered before, and the function may have closed it since.
    pub reused: bool,
}

/// Why a request got no answer on a connection.
pub enum Failure {
    /// No connection to the function.
    Connect(String, io::Error),
    /// hyper gave up on the exchange. With the request when it never went out.
    Exchange(hyper::Error, Option<Box<Request<Body>>>),
    /// The connection ended without an answer and without saying why.
    Closed,
}

impl Pool {
    /// The pool for the server at `host`:`port`, with its reaper (which needs the runtime).
    pub fn new(host: &str, port: u16) -> Arc<Pool> {
        let mut http = http1::Builder::new();
        // Header names go out as `Content-Type`, not hyper's `content-type`, as Go's client writes
        // them: servers that compare names case-sensitively exist.
        http.title_case_headers(true);
        let pool = Arc::new(Pool {
            host: host.to_string(),
            port,
            http,
            state: Mutex::new(State::default()),
            reaper: Notify::new(),
        });
        tokio::spawn(reap(Arc::clone(&pool)));
        pool
    }

    /// An idle connection that is still open, else a new one.
    pub async fn checkout(&self) -> Result<Conn, Failure> {
        match self.idle() {
            Some(conn) => Ok(conn),
            None => self.connect().await,
        }
    }

    /// The connection that went idle last, if one is still open and young enough.
    fn idle(&self) -> Option<Conn> {
        loop {
            let Idle { mut conn, since } = lock(&self.state).idle.pop()?;
            // A connection idle for that long has company: the older ones are the reaper's.
            if since.elapsed() < IDLE && conn.still_open() {
                conn.reused = true;
                return Some(conn);
            }
        }
    }

    async fn connect(&self) -> Result<Conn, Failure> {
        let address = || format!("{}:{}", self.host, self.port);
        let stream =
            TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| Failure::Connect(address(), e))?;
        let _ = stream.set_nodelay(true);
        let (send, connection) =
            self.http.handshake(TokioIo::new(stream)).await.map_err(|e| Failure::Exchange(e, None))?;
        Ok(Conn { send, driver: Some(Box::pin(connection.with_upgrades())), reused: false })
    }

    /// Takes a connection back after its request: kept if hyper can send another request on it.
    pub fn put(&self, mut conn: Conn) {
        // Ready for another request: hyper has finished the exchange and asked for the next one,
        // most often while the answer's body was read.
        let ready = conn.send.is_ready() || conn.still_open() && conn.send.is_ready();
        if !ready || conn.driver.is_none() {
            return;
        }
        let wake = {
            let mut state = lock(&self.state);
            state.idle.push(Idle { conn, since: Instant::now() });
            std::mem::take(&mut state.reaper_waiting)
        };
        if wake {
            self.reaper.notify_one();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Closes idle connections once they have been idle for [`IDLE`]; sleeps while there are none.
async fn reap(pool: Arc<Pool>) {
    loop {
        let (expired, next) = {
            let mut state = lock(&pool.state);
            let now = Instant::now();
            let old = state.idle.iter().take_while(|idle| now.duration_since(idle.since) >= IDLE).count();
            let expired: Vec<Idle> = state.idle.drain(..old).collect();
            let next = state.idle.first().map(|idle| idle.since + IDLE);
            state.reaper_waiting = next.is_none();
            (expired, next)
        };
        drop(expired);
        match next {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => pool.reaper.notified().await,
        }
    }
}

impl Conn {
    /// Sends `request` and drives the connection until the answer's head comes.
    pub async fn send(&mut self, request: Request<Body>) -> Result<Response<Incoming>, Failure> {
        let mut response = std::pin::pin!(self.send.try_send_request(request));
        std::future::poll_fn(|cx| {
            self.drive(cx);
            match response.as_mut().poll(cx) {
                Poll::Ready(result) => Poll::Ready(result.map_err(|mut e| {
                    let unsent = e.take_message().map(Box::new);
                    Failure::Exchange(e.into_error(), unsent)
                })),
                // A driver that has finished is dropped at once, which answers the request (a
                // request it never took comes back unsent): this is only a guard.
                Poll::Pending if self.driver.is_none() => Poll::Ready(Err(Failure::Closed)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Lets hyper read and write what it can on the connection: the request and its body, the
    /// answer and its body. Errors reach the request or the answer's body.
    pub fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(driver) = &mut self.driver
            && driver.as_mut().poll(cx).is_ready()
        {
            self.driver = None;
        }
    }

    /// Polls the idle connection once, without a waker to call (nobody waits on an idle
    /// connection; the next request to use it polls it with its own): hyper then reads the end
    /// the function may have sent, and the connection is known closed.
    fn still_open(&mut self) -> bool {
        self.drive(&mut Context::from_waker(Waker::noop()));
        self.driver.is_some()
    }

    /// What is left of the connection after a `101 Switching Protocols`: hyper hands the socket to
    /// the answer's `OnUpgrade` once its driver has finished, which this does.
    pub async fn upgrade(self) {
        if let Some(driver) = self.driver {
            let _ = driver.await;
        }
    }
}

impl Failure {
    /// Whether the function's server closed or reset the connection before the answer's head was
    /// complete.
    pub fn closed_before_answer(&self) -> bool {
        let error = match self {
            Failure::Exchange(error, _) => error,
            Failure::Closed => return true,
            Failure::Connect(..) => return false,
        };
        if error.is_incomplete_message() {
            return true;
        }
        let mut source = error.source();
        while let Some(cause) = source {
            if let Some(e) = cause.downcast_ref::<io::Error>()
                && matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted
                )
            {
                return true;
            }
            source = cause.source();
        }
        false
    }

    /// The request, if it never went out: it can be sent on another connection as it is.
    pub fn take_unsent(&mut self) -> Option<Request<Body>> {
        match self {
            Failure::Exchange(_, unsent) => unsent.take().map(|request| *request),
            _ => None,
        }
    }
}

impl std::fmt::Display for Failure {
    /// The error and its causes on one line: `connection closed before message completed`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Failure::Connect(address, e) => format!("connect to {address}: {e}"),
            Failure::Exchange(e, _) => one_line(e),
            Failure::Closed => "the connection closed before an answer".into(),
        };
        f.write_str(&text)
    }
}

/// An error and its causes on one line.
pub fn one_line(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.replace(['\r', '\n'], " ")
}
