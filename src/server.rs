//! The HTTP front: the accept loop, routing (heads Go's server refuses get 400, then `/_/health`,
//! `/_/ready`, everything else through the admission to the mode), and the shutdown timeline from
//! the first signal to the exit code.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::{Body as _, Incoming};
use hyper::header::{CONTENT_LENGTH, HOST};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioTimer;
use tokio::net::TcpStream;

use crate::admission::{Admission, Gate};
use crate::body::{Body, RequestBody};
use crate::config::{Config, go_duration};
use crate::conn::{self, Conn};
use crate::health::Health;
use crate::limiter::Limiter;
use crate::listener::{self, Acceptor};
use crate::logging;
use crate::metrics::{self, Metrics};
use crate::modes::{self, Handler, Scope};
use crate::process;
use crate::shutdown::{Cancel, Drain, Signals, Stop};
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
    gate: Gate,
    metrics: Arc<Metrics>,
    /// Set when in-flight requests must give up (drain deadline, second signal).
    cancel: Cancel,
    /// Open connections and admitted requests: the drain waits for both.
    drain: Arc<Drain>,
    http: http1::Builder,
}

/// Runs the watchdog until it is told to stop; returns the process exit code.
pub async fn run(cfg: Arc<Config>) -> i32 {
    let mut signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => return fatal(&format!("cannot install signal handlers: {e}")),
    };
    log::info!("{}", cfg.timeouts_line());

    let listener = match listener::bind(cfg.port) {
        Ok(listener) => listener,
        Err(e) => return fatal(&format!("port: cannot listen on port {}: {e}", cfg.port)),
    };
    let metrics_listener = match cfg.metrics_port {
        Some(port) => match listener::bind(port) {
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

    log::info!("Listening on port: {}", listener.local_port());
    if let Some(listener) = metrics_listener {
        log::info!("Metrics listening on port: {}", listener.local_port());
        tokio::spawn(metrics::serve(listener, Arc::clone(&app.metrics)));
    }
    // Serve from now on (`/_/health` says 503), but write the lock only once the mode has started.
    let accepting = tokio::spawn(accept_loop(listener, Arc::clone(&app)));
    let started = tokio::select! {
        started = app.mode.started() => started,
        stop = signals.next_stop() => Err(format!("{}: stopping before the function was ready", stop.name())),
    };
    if let Err(e) = started.and_then(|()| app.health.write_lock_and_accept()) {
        app.mode.stop().await;
        return fatal(&e);
    }

    let mut code = lifecycle(&app, &mut signals, accepting).await;
    // Stopping the mode may take a while (http mode: up to STOP_GRACE); a signal cuts it short.
    tokio::select! {
        () = app.mode.stop() => {}
        again = signals.next_stop() => code = forced_exit(&app, again),
    }
    process::signal_all(libc::SIGKILL);
    code
}

fn fatal(message: &str) -> i32 {
    log::error!("{message}");
    1
}

/// From the first signal to the exit code (the timeline is in docs/operations.md).
async fn lifecycle(app: &Arc<App>, signals: &mut Signals, accepting: tokio::task::JoinHandle<()>) -> i32 {
    let drain = &app.drain;
    let stop = tokio::select! {
        stop = signals.next_stop() => stop,
        code = app.mode.failed() => {
            app.health.stop_accepting_and_remove_lock();
            return code;
        }
    };
    let interval = if stop == Stop::Term { app.cfg.healthcheck_interval } else { Duration::ZERO };
    log::info!("{}: no new connections in {}", stop.name(), go_duration(interval));
    app.health.stop_accepting_and_remove_lock();

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
    drain.close_all();

    let deadline = app.cfg.write_timeout.unwrap_or_default();
    tokio::select! {
        drained = drain.wait_idle(deadline) => {
            if !drained {
                log::info!(
                    "Drain deadline (write_timeout {}) passed: stopping {} requests",
                    go_duration(deadline),
                    app.metrics.in_flight_now()
                );
                app.cancel.cancel();
                drain.wait_idle(CANCEL_GRACE).await;
            }
        }
        again = signals.next_stop() => return forced_exit(app, again),
    }
    log::info!("Exiting. Active connections: {}", drain.count());
    0
}

/// A second signal: no more waiting.
fn forced_exit(app: &App, stop: Stop) -> i32 {
    log::info!("{} again: exiting now", stop.name());
    app.cancel.cancel();
    process::signal_all(libc::SIGKILL);
    128 + if stop == Stop::Term { libc::SIGTERM } else { libc::SIGINT }
}

/// Accepts connections until aborted.
async fn accept_loop(mut listener: Acceptor, app: Arc<App>) {
    loop {
        serve_connection(listener.next().await, &app);
    }
}

fn serve_connection(stream: TcpStream, app: &Arc<App>) {
    let _ = stream.set_nodelay(true);
    let io = Conn::new(stream, app.cfg.write_timeout, MAX_HEAD_BYTES);
    let handle = io.handle();
    let handler = Arc::clone(app);
    let service = service_fn(move |req| {
        let (app, handle) = (Arc::clone(&handler), Arc::clone(&handle));
        async move { Ok::<_, Infallible>(app.route(req, handle).await) }
    });
    let conn = app.http.serve_connection(io, service).with_upgrades();
    let guard = app.drain.enter();
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
        let (metrics, drain) = (Arc::new(Metrics::default()), Drain::new());
        App {
            health: Health::new((!cfg.suppress_lock).then(|| cfg.lock_path.clone())),
            gate: Gate::new(Limiter::new(cfg.max_inflight, cfg.max_queue), Arc::clone(&metrics), Arc::clone(&drain)),
            metrics,
            cancel: Cancel::default(),
            drain,
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
        let close_delimited = version == Version::HTTP_10 && conn::frame_for_http_1_0(&mut response);
        response.map(|body| conn::pace(body, &conn, close_delimited))
    }

    /// `/_/health`: 200 `OK` while accepting (and the lock file exists, unless suppressed).
    fn health(&self, method: &Method) -> Response<Body> {
        if method != Method::GET {
            return answers::method_not_allowed(Some("GET"));
        }
        answers::health(self.health.is_healthy())
    }

    /// `/_/ready`: 503 when not accepting, 429 when a new request would get 429 (`max_inflight`
    /// reached and the `max_queue` queue full), else the function's
    /// answer for `ready_path` if one is set, else 200. Not limited, not counted in metrics.
    async fn ready(&self, req: Request<Incoming>) -> Response<Body> {
        if req.method() != Method::GET {
            return answers::method_not_allowed(Some("GET"));
        }
        if !self.health.is_healthy() {
            return answers::status_only(StatusCode::SERVICE_UNAVAILABLE);
        }
        if self.gate.is_full() {
            return answers::status_only(StatusCode::TOO_MANY_REQUESTS);
        }
        let Some(path) = &self.cfg.ready_path else { return answers::status_only(StatusCode::OK) };
        let (mut parts, _) = req.into_parts();
        parts.uri = path.clone();
        let probe = Request::from_parts(parts, RequestBody::Empty);
        Arc::clone(&self.mode).call(probe, self.scope(Instant::now(), Admission::default())).await
    }

    /// A request for the function: admission, then the mode; written to the metrics once done.
    async fn function(&self, req: Request<Incoming>) -> Response<Body> {
        let start = Instant::now();
        let body_limit = self.cfg.max_request_body;
        if let Some(limit) = body_limit
            && req.body().size_hint().lower() > limit
        {
            // At once: no byte of the body is read, and the function never starts.
            return self.gate.refuse(req.method(), start, answers::payload_too_large(limit));
        }
        // Waiting for a slot counts against the request's own time limit.
        let deadline = || {
            let limit = [self.cfg.write_timeout, self.mode.time_limit(req.headers())].into_iter().flatten().min();
            limit.map(|limit| tokio::time::Instant::from_std(start + limit))
        };
        let (admission, entry) = match self.gate.admit(req.method(), start, deadline, &self.cancel).await {
            Ok(admitted) => admitted,
            Err(refused) => return refused.answer(),
        };
        // A log that nobody reads holds function requests back here (see `logging`).
        logging::room().await;
        let scope = self.scope(start, admission.clone());
        let response = Arc::clone(&self.mode).call(req.map(|body| RequestBody::wire(body, body_limit)), scope).await;
        entry.finish(response, admission)
    }

    fn scope(&self, start: Instant, admission: Admission) -> Scope {
        Scope { start, cancel: self.cancel.clone(), admission }
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
