//! `max_request_body` and `max_response_body`, black box: a body over the limit is refused with
//! 413 before the function starts (or, for a chunked body, before its input could look complete),
//! and a buffered function whose output passes its limit is killed and answered 500, without the
//! watchdog holding much more than the limit.

mod common;

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use common::*;

const FORK_MODES: [&str; 3] = ["classic", "serializing", "streaming"];

fn start(env: &[(&str, &str)]) -> Watchdog {
    let mut options = Options::new(env);
    options.metrics = true;
    Watchdog::start_with(options)
}

#[test]
fn sizes_take_units_and_bad_ones_stop_the_start() {
    for (value, ok) in [
        ("1048576", true),
        ("512KiB", true),
        ("4MB", true),
        ("1GiB", true),
        ("0", true),
        ("10XB", false),
        ("1.5MB", false),
        ("-1", false),
    ] {
        let (code, log) =
            run_once(&[("fprocess", "cat"), ("max_request_body", value), ("TMPDIR", "/nonexistent")], &[]);
        let refused = format!("max_request_body: expected bytes, or a size like 512KiB, 4MiB or 1GB, got {value:?}");
        assert_eq!(log.contains(&refused), !ok, "{value}: {log}");
        // 2 is a configuration refused; an accepted one gets as far as the lock file, in a TMPDIR
        // that does not exist, and stops there with 1.
        match ok {
            true => {
                assert_eq!(code, Some(1), "{value} is accepted: {log}");
                assert!(log.contains("Cannot write /nonexistent/.lock"), "{value}: {log}");
            }
            false => assert_eq!(code, Some(2), "{value}: {log}"),
        }
    }
}

/// A Content-Length over the limit is refused before any byte of the body is sent: the answer
/// comes although the client sends none, and the function never starts.
#[test]
fn a_content_length_over_max_request_body_is_413_at_once() {
    let tmp = TempDir::new();
    let ran = tmp.path().join("ran");
    let fprocess = format!("sh -c 'touch {}; cat'", ran.display());
    for mode in FORK_MODES {
        let wd = start(&[("mode", mode), ("fprocess", &fprocess), ("max_request_body", "1KiB")]);
        let mut conn = wd.connect();
        conn.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1025\r\n\r\n").unwrap();
        let started = Instant::now();
        let r = read_response(&mut BufReader::new(&conn), false).expect("an answer without the body");
        assert_eq!(r.status, 413, "{mode}: {}", r.text());
        assert!(started.elapsed() < Duration::from_secs(5), "{mode}: waited for the body");
        assert!(r.text().contains("max_request_body (1024 bytes)"), "{mode}: {}", r.text());
        assert_eq!(r.header("Connection"), Some("close"), "{mode}");
        assert!(!ran.exists(), "{mode}: the function started");
        // The limit itself is fine.
        assert_eq!(wd.post("/", &[b'x'; 1024]).status, 200, "{mode}");
        wait_for(Duration::from_secs(5), "the 413 in the metrics", || {
            (metric_value(&wd.metrics(), r#"http_requests_total{code="413",method="post"}"#) == Some(1.0)).then_some(())
        });
        std::fs::remove_file(&ran).unwrap();
    }
}

/// A chunked body that crosses the limit: 413, and the function never takes it for complete (it
/// counts its input once it has all of it: no count may appear).
#[test]
fn a_chunked_body_that_crosses_the_limit_is_413() {
    let tmp = TempDir::new();
    let counted = tmp.path().join("counted");
    let fprocess = format!("sh -c 'wc -c > {}'", counted.display());
    for mode in FORK_MODES {
        let wd = start(&[("mode", mode), ("fprocess", &fprocess), ("max_request_body", "100")]);
        let mut conn = wd.connect();
        conn.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n32\r\n").unwrap();
        conn.write_all(&[b'a'; 50]).unwrap();
        conn.write_all(b"\r\n").unwrap();
        conn.write_all(b"3c\r\n").unwrap();
        conn.write_all(&[b'b'; 60]).unwrap();
        conn.write_all(b"\r\n").unwrap();
        let r = read_response(&mut BufReader::new(&conn), false).expect("an answer");
        assert_eq!(r.status, 413, "{mode}: {}", r.text());
        assert_eq!(r.header("Connection"), Some("close"), "{mode}");
        wait_for(Duration::from_secs(5), "the function gone", || wd.descendants().is_empty().then_some(()));
        let count = std::fs::read_to_string(&counted).unwrap_or_default();
        assert!(count.trim().is_empty(), "{mode}: the function took a cut input for whole: {count:?}");
        let _ = std::fs::remove_file(&counted);
    }
}

#[test]
fn an_output_over_max_response_body_kills_the_function_and_is_500() {
    let tmp = TempDir::new();
    let marker = format!("fwd-big-output-{}", std::process::id());
    let yes = tmp.path().join(&marker);
    std::os::unix::fs::symlink(
        ["/usr/bin/yes", "/bin/yes"].into_iter().find(|p| std::path::Path::new(p).exists()).expect("yes"),
        &yes,
    )
    .unwrap();
    for mode in ["classic", "serializing"] {
        // `yes` never ends by itself: only the limit ends the request.
        let wd = start(&[("mode", mode), ("fprocess", &yes.display().to_string()), ("max_response_body", "1MiB")]);
        let r = wd.post("/", b"");
        assert_eq!(r.status, 500, "{mode}");
        assert_eq!(
            r.text(),
            "The function's output passed max_response_body (1048576 bytes); it was killed.\n",
            "{mode}"
        );
        wait_for(Duration::from_secs(5), "the function killed", || processes_with(&marker).is_empty().then_some(()));
        let peak = proc_status(wd.pid(), "VmHWM").expect("VmHWM");
        assert!(peak < 16 * 1024, "{mode}: peak RSS {peak} KiB for a 1 MiB limit");
        // Within the limit: the whole output.
        let wd = start(&[("mode", mode), ("fprocess", "head -c 1048576 /dev/zero"), ("max_response_body", "1MiB")]);
        let r = wd.post("/", b"");
        assert_eq!((r.status, r.body.len()), (200, 1 << 20), "{mode}");
    }
}

/// The limit counts what comes off the wire in streaming mode too, while output flows: once the
/// response has started, crossing it cuts the response.
#[test]
fn streaming_cuts_a_response_whose_request_crosses_the_limit_later() {
    let wd = start(&[("mode", "streaming"), ("fprocess", "cat"), ("max_request_body", "100")]);
    let mut conn = wd.connect();
    conn.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n").unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let head = read_head(&mut reader).expect("a head once cat echoed");
    assert_eq!(head.status, 200);
    conn.write_all(b"64\r\n").unwrap();
    conn.write_all(&[b'x'; 100]).unwrap();
    conn.write_all(b"\r\n").unwrap();
    let mut body = Vec::new();
    assert!(Chunked::new(reader).read_to_end(&mut body).is_err(), "a cut response must not end cleanly");
    wd.wait_for_log("POST / - 413 - ", Duration::from_secs(5));
}
