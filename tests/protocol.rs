//! The HTTP front, black box, as Go's server behaves in front of every mode: how big a request
//! head may be, which `Host` and `Content-Length` values are refused before any mode sees the
//! request, and redirects that cannot lead to another site.

mod common;

use common::*;

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

