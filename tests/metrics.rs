//! The metrics server, black box: Prometheus text that a real parser accepts, counters that move
//! with traffic, the requests that count, and the metrics_port setting.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Checks the exposition with `promtool check metrics` (Debian's `prometheus` package, installed
/// by .ci/run). Returns false where promtool is missing (see `skip`: in CI that fails).
fn promtool_accepts(text: &str) -> bool {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        skip("promtool not installed (apt-get install prometheus); the format was not checked by a real parser");
        return false;
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Exit 1 and "error while linting" mean the text did not parse; lint findings exit 3.
    assert!(out.status.code() != Some(1) && !report.contains("error while linting"), "promtool: {report}\n{text}");
    assert!(report.trim().is_empty(), "promtool lint findings: {report}");
    true
}

const SERIES_200: &str = r#"http_requests_total{code="200",method="post"}"#;
const SERIES_500: &str = r#"http_requests_total{code="500",method="post"}"#;

#[test]
fn exposition_parses_and_counters_move_with_traffic() {
    let fprocess = "sh -c 'cat; test \"$Http_Path\" != /fail'";
    let wd = Watchdog::start_with(Options { metrics: true, ..Options::new(&[("fprocess", fprocess)]) });
    let before = wd.metrics();
    promtool_accepts(&before);
    assert_eq!(metric_value(&before, SERIES_200), None);
    assert_eq!(metric_value(&before, "http_requests_in_flight"), Some(0.0));
    assert!(metric_value(&before, "process_cpu_seconds_total").is_some_and(|v| v >= 0.0), "{before}");
    for name in ["process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds"] {
        assert!(metric_value(&before, name).is_some_and(|v| v > 0.0), "{name} in\n{before}");
    }

    for _ in 0..3 {
        assert_eq!(wd.post("/", b"x").status, 200);
    }
    assert_eq!(wd.post("/fail", b"x").status, 500);
    assert_eq!(wd.request("HEAD", "/", &[], b"").status, 405);
    // Not counted: health, readiness, redirects.
    wd.get("/_/health");
    wd.get("/_/ready");
    assert_eq!(wd.get("//a/../b").status, 301);

    let after = wd.metrics();
    promtool_accepts(&after);
    assert_eq!(metric_value(&after, SERIES_200), Some(3.0));
    assert_eq!(metric_value(&after, SERIES_500), Some(1.0));
    assert_eq!(metric_value(&after, r#"http_requests_total{code="405",method="head"}"#), Some(1.0));
    assert_eq!(metric_value(&after, r#"http_request_duration_seconds_count{code="200",method="post"}"#), Some(3.0));
    assert_eq!(
        metric_value(&after, r#"http_request_duration_seconds_bucket{code="200",method="post",le="+Inf"}"#),
        Some(3.0)
    );
    assert!(metric_value(&after, r#"http_request_duration_seconds_sum{code="200",method="post"}"#).unwrap() > 0.0);
    let total: usize = after.lines().filter(|l| l.starts_with("http_requests_total{")).count();
    assert_eq!(total, 3, "only function requests are counted:\n{after}");
    for le in ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10"] {
        let series = format!(r#"http_request_duration_seconds_bucket{{code="200",method="post",le="{le}"}}"#);
        assert!(metric_value(&after, &series).is_some(), "bucket {le}");
    }
    assert!(after.contains("# HELP http_requests_total total HTTP requests processed\n"));
    assert!(after.contains("# HELP http_request_duration_seconds Seconds spent serving HTTP requests.\n"));
    assert!(after.contains("# HELP http_requests_in_flight total HTTP requests in-flight\n"));
}

#[test]
fn in_flight_gauge_and_429s() {
    let fprocess = "sh -c 'sleep ${Http_Path#/}'";
    let wd = Watchdog::start_with(Options {
        metrics: true,
        ..Options::new(&[("fprocess", fprocess), ("max_inflight", "1")])
    });
    let port = wd.port;
    let slow = std::thread::spawn(move || send(port, &build_request("POST", "/1", &[], b"")).unwrap());
    wait_for(Duration::from_secs(5), "in flight 1", || {
        (metric_value(&wd.metrics(), "http_requests_in_flight") == Some(1.0)).then_some(())
    });
    assert_eq!(wd.post("/0", b"").status, 429);
    assert_eq!(slow.join().unwrap().status, 200);
    let text = wd.metrics();
    assert_eq!(metric_value(&text, "http_requests_in_flight"), Some(0.0));
    assert_eq!(metric_value(&text, r#"http_requests_total{code="429",method="post"}"#), Some(1.0));
}

#[test]
fn other_paths_are_404() {
    let wd = Watchdog::start_with(Options { metrics: true, ..Options::new(&[("fprocess", "cat")]) });
    let r = send(wd.metrics_port.unwrap(), b"GET /other HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    assert_eq!((r.status, r.text().as_str()), (404, "404 page not found\n"));
    let r = send(
        wd.metrics_port.unwrap(),
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(r.status, 200, "any method, as the reference");
}

#[test]
fn metrics_port_in_use_is_a_start_error_and_0_disables() {
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let tmp = TempDir::new();
    let tmpdir = tmp.path().display().to_string();
    let (code, stderr) = run_once(&[("fprocess", "cat"), ("metrics_port", &port), ("TMPDIR", &tmpdir)], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("metrics_port: cannot listen on port {port}")), "{stderr}");
    assert!(!stderr.contains("panic"), "{stderr}");
    assert!(!tmp.path().join(".lock").exists());

    let wd = Watchdog::start(&[("fprocess", "cat"), ("metrics_port", "0")]);
    assert!(!wd.logs().contains("Metrics listening"), "{}", wd.logs());
}

/// Where promtool is missing, the exposition test fails in CI (`CI=true`) and, elsewhere, passes
/// but says SKIPPED on stderr even though the harness captures what passing tests print. The
/// test binary runs that one test again, with a PATH that has `sh` and `cat` and no promtool.
#[test]
fn a_missing_promtool_fails_in_ci_and_shows_when_skipped() {
    let bin = TempDir::new();
    for tool in ["sh", "cat", "test"] {
        let found = ["/bin", "/usr/bin"].iter().map(|d| Path::new(d).join(tool)).find(|p| p.exists());
        std::os::unix::fs::symlink(found.expect(tool), bin.path().join(tool)).unwrap();
    }
    let run = |ci: Option<&str>| {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command.args(["exposition_parses_and_counters_move_with_traffic", "--exact"]).env("PATH", bin.path());
        command.env_remove("CI");
        if let Some(ci) = ci {
            command.env("CI", ci);
        }
        command.output().unwrap()
    };
    let in_ci = run(Some("true"));
    let stdout = String::from_utf8_lossy(&in_ci.stdout);
    assert!(!in_ci.status.success(), "CI=true and no promtool: the test must fail\n{stdout}");
    assert!(stdout.contains("promtool not installed"), "{stdout}");

    let local = run(None);
    let (stdout, stderr) = (String::from_utf8_lossy(&local.stdout), String::from_utf8_lossy(&local.stderr));
    assert!(local.status.success(), "without CI the test is skipped, not failed\n{stdout}{stderr}");
    assert!(
        stderr.contains("SKIPPED exposition_parses_and_counters_move_with_traffic: promtool not installed"),
        "the skip shows in every run:\n{stderr}"
    );
}
