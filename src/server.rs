//! The HTTP front: the accept loop, routing (heads Go's server refuses get 400, then
//! `/_/health`, `/_/ready`, everything else to the mode), the framing of answers to HTTP/1.0, the
//! `max_inflight` admission, metrics around each function request, and the shutdown timeline from
//! the first signal to the exit code.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_LENGTH, HOST, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioTimer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::body::{Body, Cut, RequestBody};
use crate::config::{Config, go_duration};
use crate::conn::{self, Conn};
use crate::health::Health;
use crate::limiter::Limiter;
use crate::listener::{self, ACCEPT_RETRY};
use crate::logging;
use crate::metrics::Metrics;
use crate::modes::{self, Admission, Handler, Scope};
use crate::process;
use crate::shutdown::{Cancel, Signals, Stop};
use crate::{answers, path};

/// The largest request head (request line and headers), Go's figure (`MaxHeaderBytes` of 1 MiB
/// plus the 4096 bytes it adds): a bigger head gets 431. It is hyper's read buffer, which also
/// caps what hyper buffers of a response (see `conn::pace`).
pub const MAX_HEAD_BYTES: usize = (1 << 20) + 4096;
/// The most header lines in a head (more: 400). hyper counts them apart from the bytes (100 by
/// default) and, above 100, allocates room for this many on every parse of a head, so it cannot
/// be "no limit" (Go's): 1024 lines of 1 KiB each fill [`MAX_HEAD_BYTES`]. Measured against the
/// default: instructions per request within noise, no extra system calls; 500 slowloris
/// connections hold 4 MiB more (heap left fragmented by the per-parse arrays). A cap of
/// `MAX_HEAD_BYTES / 64` costs 8 MiB more there, and a `madvise` every 3 requests.
const MAX_HEADERS: usize = 1024;
/// After the drain deadline, how long cancelled requests get to send their answers.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// Everything a request handler needs, shared by all connections.
pub struct App {
    cfg: Arc<Config>,
    mode: Arc<dyn Handler>,
    health: Health,
    limiter: Arc<Limiter>,
    metrics: Arc<Metrics>,
    /// Set when in-flight requests must give up (drain deadline, second signal).
    cancel: Cancel,
    /// Open connections and admitted requests: the drain waits for both.
    connections: Arc<Connections>,
    http: http1::Builder,
}

/// Runs the watchdog until it is told to stop; returns the process exit code.
pub async fn run(cfg: Arc<Config>) -> i32 {
    let mut signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => return fatal(&format!("cannot install signal handlers: {e}")),
    };
    log::info!("{}", cfg.timeouts_line());

    let listener = match listener::bind(cfg.port).await {
        Ok(listener) => listener,
        Err(e) => return fatal(&format!("port: cannot listen on port {}: {e}", cfg.port)),
    };
    let metrics_listener = match cfg.metrics_port {
        Some(port) => match listener::bind(port).await {
            Ok(listener) => Some(listener),
            Err(e) => return fatal(&format!("metrics_port: cannot listen on port {port}: {e}")),
        },
        None => None,
    };

    let mode = match modes::start(&cfg).await {
        Ok(mode) => mode,
        Err(e) => return fatal(&e),
    };
    let app = Arc::new(App::new(Arc::clone(&cfg), mode));

    log::info!("Listening on port: {}", local_port(&listener));
    if let Some(listener) = metrics_listener {
        log::info!("Metrics listening on port: {}", local_port(&listener));
        tokio::spawn(serve_metrics(listener, Arc::clone(&app.metrics)));
    }
    // Serve from now on (`/_/health` says 503), but write the lock only once the mode has started.
    let connections = Arc::clone(&app.connections);
    let accepting = tokio::spawn(accept_loop(listener, Arc::clone(&app), Arc::clone(&connections)));
    let started = tokio::select! {
        started = app.mode.started() => started,
        stop = signals.next_stop() => Err(format!("{}: stopping before the function was ready", stop.name())),
    };
    if let Err(e) = started.and_then(|()| app.health.mark_accepting()) {
        app.mode.stop().await;
        return fatal(&e);
    }

    let code = lifecycle(&app, &mut signals, accepting, &connections).await;
    app.mode.stop().await;
    process::signal_all(libc::SIGKILL);
    app.health.remove_lock();
    code
}

fn fatal(message: &str) -> i32 {
    log::error!("{message}");
    1
}

/// From the first signal to the exit code (the timeline is in the README).
async fn lifecycle(
    app: &Arc<App>,
    signals: &mut Signals,
    accepting: tokio::task::JoinHandle<()>,
    connections: &Arc<Connections>,
) -> i32 {
    let stop = tokio::select! {
        stop = signals.next_stop() => stop,
        code = app.mode.failed() => {
            app.health.mark_not_accepting();
            return code;
        }
    };
    let interval = if stop == Stop::Term { app.cfg.healthcheck_interval } else { Duration::ZERO };
    log::info!("{}: no new connections in {}", stop.name(), go_duration(interval));
    app.health.mark_not_accepting();

    // Keep serving while the orchestrator notices that health went 503.
    if !interval.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            again = signals.next_stop() => return forced_exit(app, again),
        }
    }

    log::info!("No new connections allowed, draining: {} requests", app.metrics.in_flight_now());
    accepting.abort();
    let _ = accepting.await; // the listener is closed once the task is gone
    connections.close_all();

    let drain = app.cfg.write_timeout.unwrap_or_default();
    tokio::select! {
        drained = connections.wait_idle(drain) => {
            if !drained {
                log::info!(
                    "Drain deadline (write_timeout {}) passed: stopping {} requests",
                    go_duration(drain),
                    connections.count()
                );
                app.cancel.cancel();
                connections.wait_idle(CANCEL_GRACE).await;
            }
        }
        again = signals.next_stop() => return forced_exit(app, again),
    }
    log::info!("Exiting. Active connections: {}", connections.count());
    0
}

/// A second signal: no more waiting.
fn forced_exit(app: &App, stop: Stop) -> i32 {
    log::info!("{} again: exiting now", stop.name());
    app.cancel.cancel();
    process::signal_all(libc::SIGKILL);
    128 + if stop == Stop::Term { libc::SIGTERM } else { libc::SIGINT }
}

fn local_port(listener: &TcpListener) -> u16 {
    listener.local_addr().map_or(0, |a| a.port())
}

/// Accepts connections until aborted. Accept errors (out of file descriptors, most often) never
/// end the loop: it backs off and tries again.
async fn accept_loop(listener: TcpListener, app: Arc<App>, connections: Arc<Connections>) {
    let mut backoff = ACCEPT_RETRY;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff.reset();
                serve_connection(stream, &app, &connections);
            }
            Err(e) if is_per_connection(&e) => {}
            Err(e) => {
                let pause = backoff.next_pause();
                log::warn!("accept: {e}; retrying in {}", go_duration(pause));
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Errors that concern one connection that is already gone, not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::Interrupted)
}

fn serve_connection(stream: TcpStream, app: &Arc<App>, connections: &Arc<Connections>) {
    let _ = stream.set_nodelay(true);
    let io = Conn::new(stream, app.cfg.write_timeout, MAX_HEAD_BYTES);
    let handle = io.handle();
    let handler = Arc::clone(app);
    let service = service_fn(move |req| {
        let (app, handle) = (Arc::clone(&handler), Arc::clone(&handle));
        async move { Ok::<_, Infallible>(app.route(req, handle).await) }
    });
    let conn = app.http.serve_connection(io, service).with_upgrades();
    let guard = connections.open();
    tokio::spawn(async move {
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            () = guard.closing() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            // Slow, idle and vanished clients end here; that is routine, not an error.
            log::debug!("connection: {e}");
        }
        drop(guard);
    });
}

impl App {
    fn new(cfg: Arc<Config>, mode: Arc<dyn Handler>) -> App {
        let mut http = http1::Builder::new();
        // The buffer must hold the largest head; `max_header_size` makes the limit exact (a head
        // completed by a read that overfills the buffer would otherwise pass).
        http.timer(TokioTimer::new())
            .keep_alive(true)
            .max_buf_size(MAX_HEAD_BYTES)
            .max_header_size(MAX_HEAD_BYTES)
            .max_headers(MAX_HEADERS);
        // Without a read_timeout, idle and slow clients may hold their connection forever, as in Go.
        http.header_read_timeout(cfg.read_timeout);
        App {
            health: Health::new((!cfg.suppress_lock).then(|| cfg.lock_path.clone())),
            limiter: Limiter::new(cfg.max_inflight),
            metrics: Arc::new(Metrics::default()),
            cancel: Cancel::default(),
            connections: Connections::new(),
            http,
            mode,
            cfg,
        }
    }

    /// The answer to `req`, as it goes out on its connection (`conn`): framed for HTTP/1.0, and
    /// paced to what the socket takes.
    async fn route(self: Arc<Self>, req: Request<Incoming>, conn: Arc<conn::Handle>) -> Response<Body> {
        let version = req.version();
        let mut response = match malformed(&req) {
            Some(why) => answers::malformed_head(why),
            None => match req.uri().path() {
                "/_/health" => self.health(req.method()),
                "/_/ready" => self.ready(req).await,
                path => match path::clean(path) {
                    Some(clean) if req.method() != Method::CONNECT => answers::redirect(&clean, req.uri().query()),
                    _ => self.function(req).await,
                },
            },
        };
        let close_delimited = version == Version::HTTP_10 && frame_for_http_1_0(&mut response);
        response.map(|body| conn::pace(body, &conn, close_delimited))
    }

    /// `/_/health`: 200 `OK` while accepting (and the lock file exists, unless suppressed).
    fn health(&self, method: &Method) -> Response<Body> {
        if method != Method::GET {
            return answers::method_not_allowed(Some("GET"));
        }
        answers::health(self.health.is_healthy())
    }

    /// `/_/ready`: 503 when not accepting, 429 when `max_inflight` is reached, else the function's
    /// answer for `ready_path` if one is set, else 200. Not limited, not counted in metrics.
    async fn ready(&self, req: Request<Incoming>) -> Response<Body> {
        if req.method() != Method::GET {
            return answers::method_not_allowed(Some("GET"));
        }
        if !self.health.is_healthy() {
            return answers::status_only(StatusCode::SERVICE_UNAVAILABLE);
        }
        if self.limiter.is_full() {
            return answers::status_only(StatusCode::TOO_MANY_REQUESTS);
        }
        let Some(path) = &self.cfg.ready_path else { return answers::status_only(StatusCode::OK) };
        let (mut parts, _) = req.into_parts();
        parts.uri = path.clone();
        let probe = Request::from_parts(parts, RequestBody::Empty);
        Arc::clone(&self.mode).call(probe, self.scope(Instant::now(), Admission::default())).await
    }

    /// A request for the function: limiter, metrics, then the mode.
    async fn function(&self, req: Request<Incoming>) -> Response<Body> {
        let start = Instant::now();
        let tally = Tally { metrics: Arc::clone(&self.metrics), method: req.method().clone(), start };
        let (in_flight, open) = (self.metrics.in_flight(), self.connections.open());
        let Some(slot) = self.limiter.try_acquire() else {
            return tally.finish(answers::too_many_requests(self.limiter.max()), Admission::new((in_flight, open)));
        };
        let admission = Admission::new((in_flight, open, slot));
        // A log that nobody reads holds function requests back here (see `logging`).
        logging::room().await;
        let scope = self.scope(start, admission.clone());
        let response = Arc::clone(&self.mode).call(req.map(RequestBody::Wire), scope).await;
        tally.finish(response, admission)
    }

    fn scope(&self, start: Instant, admission: Admission) -> Scope {
        Scope { start, cancel: self.cancel.clone(), admission }
    }
}

/// An answer to HTTP/1.0 without a length can only end by closing the connection. It must say
/// `Connection: close` (hyper says `keep-alive` when the request asked for it), and if it fails
/// halfway the connection must be reset (see `conn::pace`), or the client would take what came for
/// the whole answer. Returns whether the answer is such a one.
fn frame_for_http_1_0(response: &mut Response<Body>) -> bool {
    use hyper::body::Body as _;
    if response.body().size_hint().exact().is_some() {
        return false;
    }
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    // An HTTP/1.1 head would get `keep-alive` appended by hyper.
    *response.version_mut() = Version::HTTP_10;
    true
}

/// Records a function request in the metrics once its response is complete.
struct Tally {
    metrics: Arc<Metrics>,
    method: Method,
    start: Instant,
}

impl Tally {
    /// Counts a buffered response now; a streamed one when its body ends, with the status carried
    /// by its [`Cut`] if it failed. The server's share of the admission is released at the same
    /// moment (the mode may still hold its own).
    fn finish(self, response: Response<Body>, admission: Admission) -> Response<Body> {
        let code = response.status().as_u16();
        let (parts, body) = response.into_parts();
        let body = match body {
            Body::Full(bytes) => {
                self.observe(code);
                drop(admission);
                Body::Full(bytes)
            }
            Body::Stream(stream) => Body::stream(OnEnd { body: stream, end: Some((self, code, admission)) }),
        };
        Response::from_parts(parts, body)
    }

    fn observe(&self, code: u16) {
        self.metrics.observe(&self.method, code, self.start.elapsed());
    }
}

/// A streamed body that reports to the metrics when it ends, fails or is dropped.
struct OnEnd<B> {
    body: B,
    end: Option<(Tally, u16, Admission)>,
}

impl<B> OnEnd<B> {
    /// `cut`: the status of an answer that failed after its head went out.
    fn end(&mut self, cut: Option<StatusCode>) {
        if let Some((tally, code, admission)) = self.end.take() {
            tally.observe(cut.map_or(code, |status| status.as_u16()));
            drop(admission);
        }
    }
}

impl<B> Drop for OnEnd<B> {
    fn drop(&mut self) {
        self.end(None);
    }
}

impl<B> hyper::body::Body for OnEnd<B>
where
    B: hyper::body::Body<Data = bytes::Bytes, Error = io::Error> + Unpin,
{
    type Data = bytes::Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, io::Error>>> {
        let this = self.get_mut();
        let poll = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        match &poll {
            std::task::Poll::Ready(None) => this.end(None),
            std::task::Poll::Ready(Some(Err(e))) => this.end(Cut::status_of(e)),
            _ => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// What Go's server refuses in a request head before any handler sees it, and hyper lets through:
/// a `Host` that RFC 9112 §3.2 does not allow (none in HTTP/1.1, more than one, or one with a byte
/// that cannot be in a host and port), and a `Content-Length` beyond Go's 2^63 - 1.
fn malformed(req: &Request<Incoming>) -> Option<&'static str> {
    let headers = req.headers();
    let mut hosts = headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if req.version() >= Version::HTTP_11 && req.method() != Method::CONNECT => {
            return Some("missing required Host header");
        }
        (Some(_), Some(_)) => return Some("too many Host headers"),
        (Some(host), None) if !host.as_bytes().iter().all(|&b| valid_host_byte(b)) => {
            return Some("malformed Host header");
        }
        _ => {}
    }
    let length = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if length.is_some_and(|length| length > i64::MAX as u64) {
        return Some("bad Content-Length");
    }
    None
}

/// Go's `httpguts.ValidHostHeader`: the bytes of a host (a name, an IPv4 or bracketed IPv6
/// address with a zone) and a port.
fn valid_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!$%&'()*+,-.:;=[]_~".contains(&b)
}

/// Open connections, and admitted requests (which may outlive theirs: a function being reaped, a
/// WebSocket tunnel), so the drain knows when it is done.
struct Connections {
    count: AtomicUsize,
    idle: Notify,
    closing: Cancel,
}

/// One open connection or admitted request; dropping it closes the books on it.
struct ConnectionGuard(Arc<Connections>);

impl Connections {
    fn new() -> Arc<Connections> {
        Arc::new(Connections { count: AtomicUsize::new(0), idle: Notify::new(), closing: Cancel::default() })
    }

    fn open(self: &Arc<Self>) -> ConnectionGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        ConnectionGuard(Arc::clone(self))
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Asks every connection to finish its current request and close.
    fn close_all(&self) {
        self.closing.cancel();
    }

    /// Waits until no connection is open; `false` if `limit` passed first.
    async fn wait_idle(&self, limit: Duration) -> bool {
        let idle = async {
            loop {
                let notified = self.idle.notified();
                if self.count() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, idle).await.is_ok()
    }
}

impl ConnectionGuard {
    async fn closing(&self) {
        self.0.closing.cancelled().await;
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The metrics listener: `/metrics` (any method), 404 elsewhere.
async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(5));
    let mut backoff = ACCEPT_RETRY;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            backoff.sleep().await;
            continue;
        };
        backoff.reset();
        let metrics = Arc::clone(&metrics);
        let service = service_fn(move |req: Request<Incoming>| {
            let response =
                if req.uri().path() == "/metrics" { answers::metrics(metrics.render()) } else { answers::not_found() };
            async move { Ok::<_, Infallible>(response) }
        });
        let conn = http.serve_connection(Conn::new(stream, Some(Duration::from_secs(5)), 0), service);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn host_bytes_are_checked_like_go() {
        assert!(b"example.com:8080".iter().all(|&b| valid_host_byte(b)));
        assert!(b"[fe80::1%25eth0]:80".iter().all(|&b| valid_host_byte(b)));
        assert!(b"a,b".iter().all(|&b| valid_host_byte(b)), "Go lets a comma through");
        for bad in [&b"a, b"[..], b"a b/c", b"a/b", b"a\\b", b"a@b", b"\x80"] {
            assert!(!bad.iter().all(|&b| valid_host_byte(b)), "{}", String::from_utf8_lossy(bad));
        }
    }
}
