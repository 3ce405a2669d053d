//! Prometheus metrics with the reference watchdogs' names, labels, help texts and buckets, plus the
//! standard `process_*` metrics, in the text exposition format (version 0.0.4), and the listener
//! that serves them on `metrics_port`.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request};
use hyper_util::rt::TokioTimer;

use crate::answers;
use crate::conn::Conn;
use crate::listener::Acceptor;
use crate::sys;

const BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const BUCKET_LABELS: [&str; 11] = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10"];

pub struct Metrics {
    series: Mutex<Vec<Series>>,
    in_flight: AtomicI64,
    queued: AtomicI64,
    /// Seconds spent waiting in the `max_queue` queue.
    queue_wait: Mutex<Histogram>,
}

/// One (code, method) pair: the counter and the histogram share it.
struct Series {
    code: u16,
    method: &'static str,
    seconds: Histogram,
}

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        self.count += 1;
        self.sum += seconds;
        for (bucket, bound) in self.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
    }

    /// The bucket, sum and count lines of `name` with `labels` (`code="200",` or empty).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (count, le) in self.buckets.iter().zip(BUCKET_LABELS) {
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", self.count);
        let labels = labels.trim_end_matches(',');
        let braces = |l: &str| if l.is_empty() { String::new() } else { format!("{{{l}}}") };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), float(self.sum));
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

/// Counts a request as waiting in the queue until dropped, then records how long it waited.
pub struct Queued {
    metrics: Arc<Metrics>,
    since: std::time::Instant,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.metrics.queued.fetch_sub(1, Ordering::Relaxed);
        let seconds = self.since.elapsed().as_secs_f64();
        self.metrics.queue_wait.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).observe(seconds);
    }
}

/// Counts a request as in flight until dropped.
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            series: Mutex::new(Vec::new()),
            in_flight: AtomicI64::new(0),
            queued: AtomicI64::new(0),
            queue_wait: Mutex::new(Histogram::default()),
        }
    }
}

impl Metrics {
    pub fn in_flight(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// A request joins the `max_queue` queue.
    pub fn queued(self: &Arc<Self>) -> Queued {
        self.queued.fetch_add(1, Ordering::Relaxed);
        Queued { metrics: Arc::clone(self), since: std::time::Instant::now() }
    }

    pub fn in_flight_now(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Records one finished request.
    pub fn observe(&self, method: &Method, code: u16, elapsed: Duration) {
        let method = method_label(method);
        let seconds = elapsed.as_secs_f64();
        let mut all = self.series.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Kept sorted by labels, the order of the exposition.
        let index = match all.binary_search_by(|s| (s.code, s.method).cmp(&(code, method))) {
            Ok(i) => i,
            Err(i) => {
                all.insert(i, Series { code, method, seconds: Histogram::default() });
                i
            }
        };
        all[index].seconds.observe(seconds);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let all = self.series.lock().unwrap_or_else(|poisoned| poisoned.into_inner());

        out.push_str("# HELP http_request_duration_seconds Seconds spent serving HTTP requests.\n");
        out.push_str("# TYPE http_request_duration_seconds histogram\n");
        for s in all.iter() {
            let labels = format!("code=\"{}\",method=\"{}\",", s.code, s.method);
            s.seconds.render(&mut out, "http_request_duration_seconds", &labels);
        }
        out.push_str("# HELP http_requests_in_flight total HTTP requests in-flight\n");
        out.push_str("# TYPE http_requests_in_flight gauge\n");
        let _ = writeln!(out, "http_requests_in_flight {}", self.in_flight_now());
        out.push_str("# HELP http_requests_total total HTTP requests processed\n");
        out.push_str("# TYPE http_requests_total counter\n");
        for s in all.iter() {
            let count = s.seconds.count;
            let _ = writeln!(out, "http_requests_total{{code=\"{}\",method=\"{}\"}} {count}", s.code, s.method);
        }
        drop(all);
        out.push_str("# HELP http_requests_queued HTTP requests waiting for a max_inflight slot\n");
        out.push_str("# TYPE http_requests_queued gauge\n");
        let _ = writeln!(out, "http_requests_queued {}", self.queued.load(Ordering::Relaxed));
        out.push_str("# HELP http_request_queue_seconds Seconds HTTP requests waited for a max_inflight slot.\n");
        out.push_str("# TYPE http_request_queue_seconds histogram\n");
        self.queue_wait.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).render(
            &mut out,
            "http_request_queue_seconds",
            "",
        );
        process_metrics(&mut out);
        out
    }
}

/// Lower case for the standard methods, `unknown` for anything else (as promhttp does).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "get",
        Method::POST => "post",
        Method::PUT => "put",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        Method::HEAD => "head",
        Method::OPTIONS => "options",
        Method::CONNECT => "connect",
        _ => "unknown",
    }
}

/// A sample value in the text format: integral values as integers, others as Rust's shortest
/// round-trip `Display` (Go writes large and tiny values with an exponent, `1.2e+06`, where this
/// writes digits; parsers take both).
fn float(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 { format!("{}", value as i64) } else { format!("{value}") }
}

fn process_metrics(out: &mut String) {
    let mut gauge = |name: &str, help: &str, kind: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", float(value));
    };
    let ticks = clock_ticks();
    let page = page_size();
    if let Some(stat) = self_stat() {
        gauge(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            "counter",
            (stat.utime + stat.stime) as f64 / ticks,
        );
        if let Some(boot) = boot_time() {
            gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                "gauge",
                boot as f64 + stat.start_ticks as f64 / ticks,
            );
        }
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            "gauge",
            (stat.rss_pages * page) as f64,
        );
        gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge", stat.vsize as f64);
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge("process_open_fds", "Number of open file descriptors.", "gauge", fds.count().saturating_sub(1) as f64);
    }
    if let Ok(limit) = sys::nofile_limit() {
        gauge("process_max_fds", "Maximum number of open file descriptors.", "gauge", limit.rlim_cur as f64);
    }
}

struct SelfStat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
    vsize: u64,
    rss_pages: u64,
}

fn self_stat() -> Option<SelfStat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = text.get(text.rfind(')')? + 2..)?.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(SelfStat {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
        vsize: field(23)?,
        rss_pages: field(24)?,
    })
}

fn boot_time() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

fn clock_ticks() -> f64 {
    sys::sysconf(libc::_SC_CLK_TCK).map_or(100.0, |ticks| ticks as f64)
}

fn page_size() -> u64 {
    sys::sysconf(libc::_SC_PAGESIZE).unwrap_or(4096)
}

/// The metrics listener: `/metrics` (any method), 404 elsewhere.
pub async fn serve(mut listener: Acceptor, metrics: Arc<Metrics>) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(5));
    loop {
        let stream = listener.next().await;
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
    fn histogram_and_counter_text() {
        let m = Arc::new(Metrics::default());
        m.observe(&Method::POST, 200, Duration::from_millis(20));
        m.observe(&Method::POST, 200, Duration::from_secs(3));
        m.observe(&Method::from_bytes(b"FOO").unwrap(), 405, Duration::ZERO);
        let _busy = m.in_flight();
        let text = m.render();
        assert!(text.contains("http_request_duration_seconds_bucket{code=\"200\",method=\"post\",le=\"0.01\"} 0\n"));
        assert!(text.contains("http_request_duration_seconds_bucket{code=\"200\",method=\"post\",le=\"0.025\"} 1\n"));
        assert!(text.contains("http_request_duration_seconds_bucket{code=\"200\",method=\"post\",le=\"5\"} 2\n"));
        assert!(text.contains("http_request_duration_seconds_bucket{code=\"200\",method=\"post\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("http_request_duration_seconds_count{code=\"200\",method=\"post\"} 2\n"));
        assert!(text.contains("http_request_duration_seconds_sum{code=\"200\",method=\"post\"} 3.02\n"));
        assert!(text.contains("http_requests_total{code=\"200\",method=\"post\"} 2\n"));
        assert!(text.contains("http_requests_total{code=\"405\",method=\"unknown\"} 1\n"));
        assert!(text.contains("http_requests_in_flight 1\n"));
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(text.contains("process_open_fds "));
        assert!(text.find("code=\"200\"").unwrap() < text.find("code=\"405\"").unwrap(), "sorted by labels");
    }

    #[test]
    fn in_flight_returns_to_zero() {
        let m = Arc::new(Metrics::default());
        drop(m.in_flight());
        assert_eq!(m.in_flight_now(), 0);
    }
}
