//! The metrics as a real Prometheus server sees them: Debian's `prometheus` scrapes the watchdog's
//! metrics port every second, and the test asks Prometheus's query API what it stored. Skipped,
//! with a message, where `prometheus` is not installed (`apt-get install prometheus`; .ci/run does),
//! and failed there in CI.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// Answers 500 when the body is `fail`, else 200 with the body.
const FPROCESS: &str = r#"sh -c 'input=$(cat); echo "$input"; test "$input" != fail'"#;

#[test]
fn prometheus_scrapes_request_counts_and_durations() {
    let Some(binary) = on_path("prometheus") else {
        return skip("no `prometheus` on PATH (apt-get install prometheus)");
    };
    let wd = Watchdog::start_with(Options { metrics: true, ..Options::new(&[("fprocess", FPROCESS)]) });
    let prometheus = Prometheus::start(&binary, wd.metrics_port.expect("metrics port"));
    prometheus.until("the first successful scrape", r#"sum(up{job="fwatchdog"})"#, |s| s == [("", 1.0)]);

    // Two rounds with a scrape in between, so that rate() sees the counters grow.
    let traffic = |ok: usize, fail: usize, get: usize| {
        for _ in 0..ok {
            assert_eq!(wd.post("/", b"ok").status, 200);
        }
        for _ in 0..fail {
            assert_eq!(wd.post("/", b"fail").status, 500);
        }
        for _ in 0..get {
            assert_eq!(wd.get("/").status, 200);
        }
    };
    traffic(8, 2, 1);
    prometheus.until("the first round", "sum(http_requests_total)", |s| s == [("", 11.0)]);
    traffic(7, 3, 1);
    let expected = [
        (r#""code":"200","method":"get""#, 2.0),
        (r#""code":"200","method":"post""#, 15.0),
        (r#""code":"500","method":"post""#, 5.0),
    ];
    prometheus.until("the second round", "sum by (code, method) (http_requests_total)", |s| {
        let mut s = s.to_vec();
        s.sort_by(|a, b| a.0.cmp(b.0));
        s == expected
    });

    prometheus
        .until("every request in the histogram", "sum(http_request_duration_seconds_count)", |s| s == [("", 22.0)]);
    prometheus.until("nothing in flight", "sum(http_requests_in_flight)", |s| s == [("", 0.0)]);
    let median = "histogram_quantile(0.5, sum by (le) (rate(http_request_duration_seconds_bucket[1m])))";
    // Each request runs a shell for milliseconds; 10 s is the largest bucket.
    prometheus.until(
        "a finite median duration",
        median,
        |s| matches!(s, [("", q)] if q.is_finite() && *q > 0.0 && *q < 10.0),
    );
    prometheus.until("process metrics", "process_resident_memory_bytes > 0", |s| s.len() == 1);
}

/// A Prometheus server on 127.0.0.1 with its own storage, killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Prometheus {
    fn start(binary: &Path, target_port: u16) -> Prometheus {
        let dir = TempDir::new();
        let config = dir.path().join("prometheus.yml");
        let scrape = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: fwatchdog\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
        );
        std::fs::write(&config, scrape).expect("write prometheus.yml");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("create prometheus.log");
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let mut prometheus = Prometheus { child, port, dir };
        let ready = |p: &mut Prometheus| -> Option<()> {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("prometheus exited with {status}:\n{}", p.log());
            }
            send(p.port, &build_request("GET", "/-/ready", &[], b"")).ok().filter(|r| r.status == 200).map(drop)
        };
        wait_for(Duration::from_secs(20), "prometheus to be ready", || ready(&mut prometheus));
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The raw JSON answer of an instant query.
    fn query(&self, expr: &str) -> String {
        let path = format!("/api/v1/query?query={}", percent_encode(expr));
        let response = send(self.port, &build_request("GET", &path, &[], b"")).expect("query prometheus");
        response.text()
    }

    /// Polls `expr` every 100 ms until `check` accepts its samples (labels as JSON text, value);
    /// Prometheus scrapes every second, so what the watchdog counted shows up within a few.
    fn until(&self, what: &str, expr: &str, check: impl Fn(&[(&str, f64)]) -> bool) {
        let mut answer = String::new();
        let found = poll(Duration::from_secs(15), Duration::from_millis(100), || {
            answer = self.query(expr);
            check(&samples(&answer)).then_some(())
        });
        if found.is_none() {
            panic!("timed out waiting for {what}: {expr}\nlast answer: {answer}\nprometheus log:\n{}", self.log());
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The samples of a successful vector answer: each `{"metric":{<labels>},"value":[<time>,"<value>"]}`
/// as (labels, value). Enough for these queries, whose label values hold no braces or quotes.
fn samples(answer: &str) -> Vec<(&str, f64)> {
    if !answer.starts_with(r#"{"status":"success""#) {
        return Vec::new();
    }
    answer
        .split(r#"{"metric":{"#)
        .skip(1)
        .filter_map(|sample| {
            let (labels, rest) = sample.split_once('}')?;
            let value = rest.split_once(r#""value":["#)?.1.split_once(",\"")?.1.split_once('"')?.0;
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(program)).find(|path| path.is_file())
}
