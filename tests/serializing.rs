//! mode=serializing, black box: request and response buffered, of-watchdog headers, 500 with the
//! error line and then the output.

mod common;

use std::io::{BufReader, Write};
use std::time::{Duration, Instant};

use common::*;

fn serializing(fprocess: &str, more: &[(&str, &str)]) -> Watchdog {
    let mut env = vec![("mode", "serializing"), ("fprocess", fprocess)];
    env.extend_from_slice(more);
    Watchdog::start(&env)
}

fn assert_duration_header(r: &Response) {
    let duration = r.header("X-Duration-Seconds").expect("X-Duration-Seconds");
    let (whole, decimals) = duration.split_once('.').unwrap();
    assert!(whole.parse::<u64>().is_ok() && decimals.len() == 6, "{duration}");
}

#[test]
fn echoes_with_content_type_length_and_duration() {
    let wd = serializing("cat", &[]);
    let r = wd.post("/p?q=1", b"Hello, World!");
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
    assert_eq!(r.header("Content-Length"), Some("13"));
    assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    assert_duration_header(&r);
    wd.wait_for_log("POST /p?q=1 - 200 - ContentLength: 13B (", Duration::from_secs(5));

    let wd = serializing("cat", &[("content_type", "application/json")]);
    let r = wd.request("POST", "/", &[("Content-Type", "text/x-mine")], b"{}");
    assert_eq!(r.header("Content-Type"), Some("application/json"), "the configured type, never the request's");
}

#[test]
fn failures_are_500_with_the_error_then_the_output() {
    let wd = serializing("sh -c 'echo to stdout; echo to stderr >&2; exit 3'", &[]);
    let r = wd.post("/", b"");
    assert_eq!((r.status, r.text().as_str()), (500, "exit status 3\nto stdout\n"), "stderr is not in the body");
    assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    assert_duration_header(&r);
    wd.wait_for_log("POST / - 500 - ContentLength: 24B (", Duration::from_secs(5));
    // stderr is forwarded by its own task, so it may land after the access line.
    wd.wait_for_log("stderr: to stderr", Duration::from_secs(5));
    wd.wait_for_log("Function failed: exit status 3", Duration::from_secs(5));

    let wd = serializing("no-such-program-xyz", &[]);
    let r = wd.post("/", b"");
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "exec: \"no-such-program-xyz\": executable file not found in $PATH\n");

    let wd = serializing("sh -c 'kill -9 $$'", &[]);
    assert_eq!(wd.post("/", b"").text(), "signal: killed\n");
}

#[test]
fn exec_timeout_is_500_with_the_output_so_far_and_kills_the_group() {
    let tmp = TempDir::new();
    let marker = format!("fwd-ser-timeout-{}", std::process::id());
    let sleep = tmp.tagged_sleep(&marker);
    let wd = serializing(&format!("sh -c 'echo started; {sleep} 30 & {sleep} 31'"), &[("exec_timeout", "500ms")]);
    let begin = Instant::now();
    let r = wd.post("/", b"");
    assert_eq!((r.status, r.text().as_str()), (500, "signal: killed\nstarted\n"));
    assert!(begin.elapsed() < Duration::from_secs(5), "answered at the deadline, not when the children end");
    wait_for(Duration::from_secs(5), "no survivors", || processes_with(&marker).is_empty().then_some(()));
}

#[test]
fn write_timeout_is_504_and_kills_the_function() {
    let tmp = TempDir::new();
    let marker = format!("fwd-ser-write-timeout-{}", std::process::id());
    let fprocess = format!("{} 30", tmp.tagged_sleep(&marker));
    let wd = serializing(&fprocess, &[("write_timeout", "1"), ("exec_timeout", "0")]);
    let r = wd.post("/", b"");
    assert_eq!(r.status, 504);
    assert!(r.text().contains("write_timeout"), "{}", r.text());
    wait_for(Duration::from_secs(5), "no survivors", || processes_with(&marker).is_empty().then_some(()));
}

#[test]
fn every_method_reaches_the_function_with_the_classic_environment() {
    let wd = serializing("env", &[("FROM_PARENT", "yes")]);
    let r = wd.request("PATCH", "/a%20b?q=1", &[("X-Custom-Thing", "abc")], b"12345");
    let env = r.text();
    for line in [
        "FROM_PARENT=yes",
        "Http_X_Custom_Thing=abc",
        "Http_Method=PATCH",
        "Http_ContentLength=5",
        "Http_Query=q=1",
        "Http_Path=/a b",
        "Http_Host=localhost",
    ] {
        assert!(env.lines().any(|l| l == line), "missing {line} in\n{env}");
    }
    for method in ["OPTIONS", "FOO"] {
        assert_eq!(wd.request(method, "/", &[], b"").status, 200, "{method}");
    }
    let wd = serializing("env", &[("cgi_headers", "0")]);
    assert!(!wd.get("/?q=1").text().contains("Http_"));
}

#[test]
fn large_binary_bodies_round_trip() {
    let wd = serializing("cat", &[]);
    let body: Vec<u8> = (0..=255u8).cycle().take(5 * 1024 * 1024 + 7).collect();
    let r = wd.post("/", &body);
    assert_eq!(r.status, 200);
    assert!(r.body == body, "body changed");
}

#[test]
fn a_stalled_body_is_400_and_never_starts_the_function() {
    let tmp = TempDir::new();
    let started = tmp.path().join("started");
    let wd = serializing(&format!("touch {}", started.display()), &[("read_timeout", "500ms")]);
    let mut conn = wd.connect();
    conn.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly ten b").unwrap();
    let r = read_response(&mut BufReader::new(&conn), false).unwrap();
    assert_eq!(r.status, 400);
    assert!(!started.exists(), "the function must not start without its whole body");
}

#[test]
fn log_callid_and_prefix_logs() {
    let wd = serializing("sh -c 'echo raw-line >&2'", &[("log_callid", "true"), ("prefix_logs", "false")]);
    wd.request("GET", "/a", &[("X-Call-Id", "call-1")], b"");
    wd.wait_for_log("GET /a - 200 - ContentLength: 0B (", Duration::from_secs(5));
    wd.get("/b");
    wd.wait_for_log("GET /b - 200 - ContentLength: 0B (", Duration::from_secs(5));
    wait_for(Duration::from_secs(5), "raw stderr lines", || {
        (wd.logs().lines().filter(|l| *l == "raw-line").count() == 2).then_some(())
    });
    let log = wd.logs();
    let line = |path: &str| log.lines().find(|l| l.contains(path)).unwrap_or_default().to_string();
    assert!(line("GET /a ").ends_with("s) [call-1]"), "{log}");
    assert!(line("GET /b ").ends_with("s) [none]"), "{log}");
    assert!(log.lines().any(|l| l == "raw-line"), "prefix_logs=false: the raw line\n{log}");
}
