//! The modes: how a request for the function becomes a response. Each mode is a [`Handler`] and
//! knows nothing about the others; the HTTP front (`server`) owns routing, health, limits and
//! metrics and hands every function request to the configured mode. The three fork modes are one
//! runner ([`fork`]) with a policy each.

mod fork;
mod http;
mod static_files;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::header::HeaderValue;
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};

use crate::admission::Admission;
pub use crate::body::BodyError;
use crate::body::{Body, RequestBody};
use crate::cgi;
use crate::config::{Config, Mode};
use crate::function_logs::{self, LogStyle, Stream};
use crate::process::{Child, Env};
use crate::shutdown::Cancel;
use crate::{json_log, logging};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What every mode implements.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request for the function.
    fn call(self: Arc<Self>, req: Request<RequestBody>, scope: Scope) -> BoxFuture<Response<Body>>;

    /// The longest a request may take, if the mode has a limit shorter than `write_timeout` that
    /// counts from its arrival (http mode: `exec_timeout`, `X-Timeout`); waiting for a
    /// `max_inflight` slot counts against it.
    fn time_limit(&self, _headers: &hyper::HeaderMap) -> Option<Duration> {
        None
    }

    /// Resolves if the mode can no longer serve (the http mode's server died); the watchdog then
    /// exits with the returned code. Default: never.
    fn failed(&self) -> BoxFuture<i32> {
        Box::pin(std::future::pending())
    }

    /// Resolves once the mode can serve (the http mode: its function accepts connections); the
    /// lock file is written only then. An error stops the watchdog. Default: at once.
    fn started(&self) -> BoxFuture<Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    /// Called once after the drain, before the watchdog exits: stop what the mode started.
    fn stop(&self) -> BoxFuture<()> {
        Box::pin(async {})
    }
}

/// What a function request brings from the HTTP front, and is bound by.
#[derive(Clone)]
pub struct Scope {
    /// When the request's headers had been read.
    pub start: Instant,
    /// Set when the watchdog stops waiting for in-flight requests: answer now and kill the function.
    pub cancel: Cancel,
    /// What the request holds while it runs; a mode keeps a clone wherever the request outlives
    /// its response future (see [`Admission`]).
    pub admission: Admission,
}

impl Scope {
    /// The instant `limit` after the request started, if there is a limit.
    pub fn deadline(&self, limit: Option<Duration>) -> Option<tokio::time::Instant> {
        limit.map(|l| tokio::time::Instant::from_std(self.start + l))
    }
}

/// Builds the configured mode (in http mode this starts the function; [`Handler::started`] waits
/// until it listens).
pub async fn start(cfg: &Arc<Config>) -> Result<Arc<dyn Handler>, String> {
    if let Some(policy) = fork::policy(cfg.mode) {
        return Ok(Arc::new(fork::Fork::new(Arc::clone(cfg), policy)));
    }
    match cfg.mode {
        Mode::Http => Ok(Arc::new(http::Http::start(cfg)?)),
        _ => Ok(Arc::new(static_files::StaticFiles::new(cfg)?)),
    }
}

/// The of-watchdog's per-request log line, `POST /p?q=1 - 200 - ContentLength: 13B (0.0020s)`,
/// captured from the request and written when the response is done. Requests from Kubernetes
/// probes (`User-Agent: kube-probe/…`) are not logged. As JSON the same text is `msg`, and the
/// line has the fields `method`, `path`, `query` (if any), `status`, `bytes`, `duration_s` and
/// `call_id` (if the request has an `X-Call-Id`).
pub struct AccessLog {
    method: hyper::Method,
    uri: String,
    /// See [`call_id`].
    call_id: Option<String>,
    quiet: bool,
    /// `200 OK` rather than `200` (http mode, as of-watchdog logs its upstream's status).
    reason: bool,
}

impl AccessLog {
    /// `log_callid`: text lines end in ` [<X-Call-Id>]`.
    pub fn new(parts: &hyper::http::request::Parts, log_callid: bool) -> AccessLog {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        AccessLog {
            method: parts.method.clone(),
            uri: parts.uri.path_and_query().map_or_else(|| parts.uri.path().to_string(), |pq| pq.as_str().to_string()),
            call_id: call_id(parts, log_callid),
            quiet: header("user-agent").is_some_and(|ua| ua.starts_with("kube-probe")),
            reason: false,
        }
    }

    /// The request's call id, as its log lines carry it ([`call_id`]).
    pub fn call_id(&self) -> Option<&str> {
        self.call_id.as_deref()
    }

    /// Logs the status with its reason phrase: `POST / - 200 OK - …`.
    pub fn with_reason(mut self) -> AccessLog {
        self.reason = true;
        self
    }

    /// Logs a response whose body is all there (its size is known).
    pub fn response(&self, response: &Response<Body>, start: Instant) {
        let bytes = response.body().size_hint().exact().unwrap_or(0);
        self.write(response.status(), bytes, start.elapsed());
    }

    pub fn write(&self, status: StatusCode, bytes: u64, elapsed: Duration) {
        if self.quiet {
            return;
        }
        let summary = Summary { log: self, status, bytes, elapsed };
        if logging::json() {
            return self.write_json(&summary);
        }
        let (open, call_id, close) = match &self.call_id {
            Some(id) => (" [", id.as_str(), "]"),
            None => ("", "", ""),
        };
        log::info!("{summary}{open}{call_id}{close}");
    }

    fn write_json(&self, summary: &Summary<'_>) {
        if !log::log_enabled!(log::Level::Info) {
            return;
        }
        let (path, query) = match self.uri.split_once('?') {
            Some((path, query)) => (path, Some(query).filter(|q| !q.is_empty())),
            None => (self.uri.as_str(), None),
        };
        let line = json_log::Line::new(log::Level::Info)
            .msg(format_args!("{summary}"))
            .str("method", self.method.as_str())
            .str("path", path)
            .opt_str("query", query)
            .raw("status", summary.status.as_u16())
            .raw("bytes", summary.bytes)
            .raw("duration_s", Seconds(summary.elapsed))
            .opt_str("call_id", self.call_id.as_deref());
        logging::log_line(line.finish());
    }
}

/// The text of the request line, without the call id: `POST /p - 200 - ContentLength: 13B (0.0020s)`.
struct Summary<'a> {
    log: &'a AccessLog,
    status: StatusCode,
    bytes: u64,
    elapsed: Duration,
}

impl std::fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // In u64: u128 division (`as_micros`) costs more than the rest of the line.
        let tenths_of_ms = (u64::from(self.elapsed.subsec_nanos()) + 50_000) / 100_000;
        let (secs, tenths_of_ms) = (self.elapsed.as_secs() + tenths_of_ms / 10_000, tenths_of_ms % 10_000);
        let reason = match self.status.canonical_reason() {
            Some(reason) if self.log.reason => reason,
            _ => "",
        };
        let space = if reason.is_empty() { "" } else { " " };
        write!(
            f,
            "{} {} - {}{space}{reason} - ContentLength: {} ({}.{:04}s)",
            self.log.method,
            self.log.uri,
            self.status.as_u16(),
            HumanSize(self.bytes),
            secs,
            tenths_of_ms
        )
    }
}

/// The call id a request's log lines carry, read once per request: with JSON logs its
/// `X-Call-Id`, when it has one; with text logs and `log_callid`, that or `none`; else nothing
/// (and nothing is allocated).
pub fn call_id(parts: &Parts, log_callid: bool) -> Option<String> {
    let header = || parts.headers.get("x-call-id").and_then(|v| v.to_str().ok());
    if logging::json() {
        header().map(str::to_string)
    } else if log_callid {
        Some(header().unwrap_or("none").to_string())
    } else {
        None
    }
}

/// docker/go-units `HumanSize`: decimal units, 4 significant digits (`10B`, `1.677kB`, `10MB`).
/// Integer arithmetic, written straight into the formatter: this runs for every request.
#[derive(Clone, Copy)]
pub struct HumanSize(pub u64);

impl std::fmt::Display for HumanSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
        let bytes = self.0;
        let (mut unit, mut scale) = (0, 1u64);
        while bytes / scale >= 1000 && unit < UNITS.len() - 1 {
            unit += 1;
            scale *= 1000;
        }
        let mut whole = bytes / scale;
        let mut decimals: u32 = match whole {
            100.. => 1,
            10.. => 2,
            _ => 3,
        };
        if unit == 0 {
            return write!(f, "{whole}B");
        }
        // The fraction rounded to `decimals` digits (scale is a multiple of 10^decimals), carried
        // into the whole part when it rounds up to one.
        let factor = 10u64.pow(decimals);
        let step = scale / factor;
        let mut fraction = (bytes % scale + step / 2) / step;
        if fraction >= factor {
            whole += 1;
            fraction = 0;
        }
        while decimals > 0 && fraction.is_multiple_of(10) {
            fraction /= 10;
            decimals -= 1;
        }
        match decimals {
            0 => write!(f, "{whole}{}", UNITS[unit]),
            width => write!(f, "{whole}.{fraction:0width$}{}", UNITS[unit], width = width as usize),
        }
    }
}

/// The instant `limit` from now, if there is a limit.
pub fn from_now(limit: Option<Duration>) -> Option<tokio::time::Instant> {
    limit.map(|limit| tokio::time::Instant::now() + limit)
}

/// `X-Duration-Seconds` (`%f`: six decimals) since the request started.
pub fn with_duration(mut response: Response<Body>, scope: &Scope) -> Response<Body> {
    response.headers_mut().insert("x-duration-seconds", Seconds(scope.start.elapsed()).header());
    response
}

/// Seconds as Go's `%f` prints them, with six decimals (`0.005888`), without float formatting.
#[derive(Clone, Copy)]
pub struct Seconds(pub Duration);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // In u64: u128 division (`as_nanos`) costs more than the rest of the formatting.
        let micros = (u64::from(self.0.subsec_nanos()) + 500) / 1000;
        let (secs, micros) = (self.0.as_secs() + micros / 1_000_000, micros % 1_000_000);
        write!(f, "{secs}.{micros:06}")
    }
}

impl Seconds {
    pub fn header(self) -> HeaderValue {
        HeaderValue::try_from(self.to_string()).unwrap_or_else(|_| HeaderValue::from_static("0.000000"))
    }
}

/// The function's environment additions: the `Http_*` variables unless `cgi_headers=false`.
pub fn function_env(cfg: &Config, parts: &Parts) -> Env {
    if cfg.cgi_headers { cgi::environment(parts) } else { Env::default() }
}

/// Sends the function's stderr, if piped, to the log, its lines tagged with the request's
/// `call_id` ([`call_id`]).
pub fn log_stderr(child: &mut Child, cfg: &Config, call_id: Option<&str>) {
    forward_output(child.stderr.take(), Stream::Stderr, cfg, call_id);
}

/// Sends one of the function's output streams, if piped, to the log as `prefix_logs` and
/// `log_buffer_size` say.
pub fn log_output(pipe: Option<tokio::net::unix::pipe::Receiver>, stream: Stream, cfg: &Config) {
    forward_output(pipe, stream, cfg, None);
}

fn forward_output(pipe: Option<tokio::net::unix::pipe::Receiver>, stream: Stream, cfg: &Config, call_id: Option<&str>) {
    if let Some(pipe) = pipe {
        let style = LogStyle { prefix: cfg.prefix_logs, max_line: cfg.log_buffer_size };
        tokio::spawn(function_logs::forward(pipe, stream, style, call_id.map(str::to_string)));
    }
}

/// Reads the whole request body, giving up at `deadline`.
pub async fn read_body(body: RequestBody, deadline: Option<tokio::time::Instant>) -> Result<Bytes, BodyError> {
    let collect = body.collect();
    let collected = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, collect).await.map_err(|_| BodyError::Timeout)?,
        None => collect.await,
    };
    collected.map(|c| c.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::HumanSize;

    fn human_size(bytes: u64) -> String {
        HumanSize(bytes).to_string()
    }

    #[test]
    fn human_size_matches_go_units() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(10), "10B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1677), "1.677kB");
        assert_eq!(human_size(10_000_000), "10MB");
        assert_eq!(human_size(1_234_567), "1.235MB");
        assert_eq!(human_size(1_048_576), "1.049MB");
        assert_eq!(human_size(999_999), "1000kB");
        assert_eq!(human_size(13), "13B");
        assert_eq!(human_size(10_000), "10kB");
    }

    #[test]
    fn seconds_have_six_decimals_like_go() {
        use super::Seconds;
        use std::time::Duration;
        assert_eq!(Seconds(Duration::from_nanos(5_888_400)).to_string(), "0.005888");
        assert_eq!(Seconds(Duration::from_nanos(5_888_500)).to_string(), "0.005889");
        assert_eq!(Seconds(Duration::from_millis(61_500)).to_string(), "61.500000");
        assert_eq!(Seconds(Duration::ZERO).to_string(), "0.000000");
    }
}
