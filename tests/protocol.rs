//! The HTTP front, black box, as Go's server behaves in front of every mode: how big a request
//! head may be, which `Host` and `Content-Length` values are refused before any mode sees the
//! request, and redirects that cannot lead to another site.

mod common;

use std::time::Duration;

use common::*;

/// A function that leaves a mark for every request that reaches it, then echoes.
fn marking(tmp: &TempDir) -> (String, std::path::PathBuf) {
    let marks = tmp.path().join("marks");
    (format!("sh -c 'echo x >> {}; cat'", marks.display()), marks)
}

fn raw(wd: &Watchdog, request: &str) -> Response {
    send(wd.port, request.as_bytes()).unwrap_or_else(|e| panic!("{request:?}: {e}"))
}

// ---------------------------------------------------------------- header limits

/// Go takes 1 MiB (+ 4096 bytes) of request line and headers, however many headers that is; so do
/// we (hyper alone took at most 100 headers). Past it: 431, the connection closed.
#[test]
fn request_heads_up_to_1_mib_are_taken_whatever_their_number_of_headers() {
    // Without Http_* variables: execve takes at most 128 KiB in one variable, 2 MiB in all.
    let wd = Watchdog::start(&[("fprocess", "cat"), ("cgi_headers", "false")]);
    let many: String = (0..100).map(|i| format!("X-Many-{i}: {i}\r\n")).collect();
    let r = raw(&wd, &format!("POST / HTTP/1.1\r\nHost: x\r\n{many}X-A: 1\r\nX-B: 2\r\nContent-Length: 2\r\n\r\nok"));
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "103 headers");

    // 1000 headers of 1000 bytes: about 1 MB.
    let value = "v".repeat(1000);
    let big: String = (0..1000).map(|i| format!("X-{i:04}: {value}\r\n")).collect();
    assert!(big.len() > 1_000_000 && big.len() < (1 << 20));
    let r = raw(&wd, &format!("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{big}\r\n"));
    assert_eq!(r.status, 200, "a head of {} bytes", big.len());

    // The number of header lines has a ceiling of its own (hyper's, see README): 400, like
    // Apache's LimitRequestFields.
    let lines: String = (0..1100).map(|i| format!("X-{i}: 1\r\n")).collect();
    let r = raw(&wd, &format!("GET / HTTP/1.1\r\nHost: x\r\n{lines}\r\n"));
    assert_eq!(r.status, 400, "1100 header lines");

    let over = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat((1 << 20) + 4096));
    let r = raw(&wd, &over);
    assert_eq!(r.status, 431, "a head over 1 MiB + 4096 bytes");
    assert_eq!(wd.post("/", b"still serving").text(), "still serving");
}

/// A Content-Length that Go cannot count (over 2^63 - 1) is a bad request: 400 at once, never the
/// 431 that hyper gives the two largest values, and no wait for a body that cannot come.
#[test]
fn content_lengths_beyond_2_pow_63_are_400_at_once() {
    let tmp = TempDir::new();
    let (fprocess, marks) = marking(&tmp);
    let wd = Watchdog::start(&[("fprocess", &fprocess), ("read_timeout", "30s")]);
    for length in ["18446744073709551615", "18446744073709551614", "18446744073709551613", "9223372036854775808"] {
        let started = std::time::Instant::now();
        let r = raw(&wd, &format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\nabc"));
        assert_eq!(r.status, 400, "Content-Length: {length}: {}", r.text());
        assert!(started.elapsed() < Duration::from_secs(10), "answered without waiting for the body");
    }
    assert!(!marks.exists(), "the function never ran");

    // The largest length Go accepts is taken: the body is waited for, up to read_timeout.
    let wd = Watchdog::start(&[("fprocess", "cat"), ("read_timeout", "1s")]);
    let r = raw(&wd, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775807\r\n\r\nabc");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("read_timeout"), "{}", r.text());
}

// ---------------------------------------------------------------- Host

/// RFC 9112 §3.2, as Go's server applies it before any handler: in HTTP/1.1 exactly one Host, and
/// only bytes that can be in a host and port. Everything else is 400 and never reaches the
/// function, `/_/health` included.
#[test]
fn a_missing_doubled_or_malformed_host_is_400() {
    let tmp = TempDir::new();
    let (fprocess, marks) = marking(&tmp);
    let wd = Watchdog::start(&[("fprocess", &fprocess)]);
    let bad = [
        ("two Host headers", "Host: a\r\nHost: b\r\n", "too many Host headers"),
        ("no Host in HTTP/1.1", "", "missing required Host header"),
        ("a list", "Host: a, b\r\n", "malformed Host header"),
        ("a space and a slash", "Host: a b/c\r\n", "malformed Host header"),
    ];
    for path in ["/", "/_/health", "/_/ready"] {
        for (what, host, why) in bad {
            let r = raw(&wd, &format!("POST {path} HTTP/1.1\r\n{host}Content-Length: 2\r\n\r\nhi"));
            assert_eq!(r.status, 400, "{what} on {path}");
            assert_eq!(r.text(), format!("400 Bad Request: {why}"), "{what} on {path}");
            assert_eq!(r.header("Connection"), Some("close"));
        }
    }
    assert!(!marks.exists(), "a bad Host reached the function");
    for (what, request) in [
        ("HTTP/1.0 without Host", "POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi"),
        ("a host and port", "POST / HTTP/1.1\r\nHost: example.com:8080\r\nContent-Length: 2\r\n\r\nhi"),
        ("an IPv6 address", "POST / HTTP/1.1\r\nHost: [::1]:8080\r\nContent-Length: 2\r\n\r\nhi"),
    ] {
        assert_eq!(raw(&wd, request).status, 200, "{what}");
    }
}

/// The check sits in front of every mode, not in one of them.
#[test]
fn a_bad_host_is_400_in_static_mode_too() {
    let tmp = TempDir::new();
    std::fs::write(tmp.path().join("index.html"), "home").unwrap();
    let wd = Watchdog::start(&[("mode", "static"), ("static_path", tmp.path().to_str().unwrap())]);
    assert_eq!(raw(&wd, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").status, 200);
    let r = raw(&wd, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (400, "400 Bad Request: too many Host headers"));
}

// ---------------------------------------------------------------- redirects

/// `/\evil.com/.` is cleaned to `/\evil.com`, which a browser reads as `//evil.com`: another site.
/// The Location escapes the backslash as Go does.
#[test]
fn a_backslash_in_a_redirect_is_escaped() {
    let wd = Watchdog::start(&[("fprocess", "cat")]);
    let r = raw(&wd, "GET /\\evil.com/. HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("Location"), Some("/%5Cevil.com"));
    let r = raw(&wd, "GET /a//b%20c/./d?q=\\ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!((r.status, r.header("Location")), (301, Some("/a/b%20c/d?q=\\")), "escapes and queries are kept");
}
