//! `mode=http`, black box: the real binary proxying to a real HTTP server (tests/http_upstream.py,
//! run with python3) that it starts as `fprocess`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::procfs::{client_connections, established_client_connections, server_connections};
use common::upstream::Function;
use common::*;

/// What tests/http_upstream.py's `inspect` route saw.
struct Report(String);

impl Report {
    fn of(response: &Response) -> Report {
        assert_eq!(response.status, 200, "inspect: {}", response.text());
        Report(response.text())
    }

    fn field(&self, name: &str) -> &str {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} in {}", self.0))
    }

    fn headers(&self, name: &str) -> Vec<&str> {
        self.0
            .lines()
            .filter_map(|l| l.strip_prefix("header "))
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers(name).first().copied()
    }
}

fn headers_named<'a>(response: &'a Response, name: &str) -> Vec<&'a str> {
    response.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
}

// ---------------------------------------------------------------- proxying

#[test]
fn method_path_query_headers_and_status_pass_through() {
    let function = Function::new();
    let wd = function.start_at("/base/", &[]);

    let report =
        Report::of(&wd.request("GET", "/deep/inspect?q=1&r=%20x", &[("X-Custom", "one"), ("X-Custom", "two")], b""));
    assert_eq!(report.field("path"), "/base/deep/inspect?q=1&r=%20x", "one slash between base and path");
    assert_eq!(report.headers("X-Custom"), ["one", "two"], "every value, in order");
    assert_eq!(report.header("Host"), Some("localhost"), "the client's Host is kept");
    assert!(report.0.contains("header X-Custom: one"), "names go out in Go's canonical case:\n{}", report.0);
    assert_eq!(Report::of(&wd.get("/")).field("path"), "/base/");

    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "FOO"] {
        let report = Report::of(&wd.request(method, "/inspect", &[], b""));
        assert_eq!(report.field("method"), method);
    }
    let head = wd.request("HEAD", "/inspect", &[], b"");
    assert_eq!(head.status, 200);
    assert!(head.header("Content-Length").is_some_and(|l| l != "0"), "{:?}", head.headers);

    for code in [201, 302, 404, 500] {
        let r = wd.get(&format!("/status?code={code}"));
        assert_eq!(r.status, code);
        assert_eq!(r.text(), format!("status {code}"));
        assert_eq!(r.header("X-Reply"), Some("yes"));
        assert_eq!(headers_named(&r, "Set-Cookie"), ["a=1", "b=2"]);
        assert!(r.header("X-Duration-Seconds").is_some_and(|d| d.parse::<f64>().is_ok()), "{:?}", r.headers);
        assert_eq!(r.header("X-OpenFaaS-Internal"), None, "the function's own answer");
    }
    assert_eq!(wd.get("/status?code=302").header("Location"), Some("/elsewhere"), "redirects are not followed");
}

#[test]
fn bodies_pass_byte_exact_both_ways() {
    let function = Function::new();
    let wd = function.start(&[]);
    let binary: Vec<u8> = (0..=255u8).collect();
    let r = wd.post("/mirror", &binary);
    assert_eq!((r.status, &r.body), (200, &binary));

    let large: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let r = wd.post("/mirror", &large);
    assert_eq!(r.status, 200);
    assert!(r.body == large, "8 MiB came back altered ({} bytes)", r.body.len());

    let report = Report::of(&wd.post("/inspect", b"hello"));
    assert_eq!(report.field("length"), "5");
    assert_eq!(report.header("Content-Length"), Some("5"), "a length the client sent is kept");

    let chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let r = wd.request("POST", "/mirror", &[("Transfer-Encoding", "chunked")], chunked);
    assert_eq!(r.text(), "hello world");
}

#[test]
fn hop_by_hop_headers_are_dropped_both_ways() {
    let function = Function::new();
    let wd = function.start(&[]);
    let sent = [
        ("Connection", "X-Drop"),
        ("X-Drop", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),
        ("X-Keep", "1"),
    ];
    let report = Report::of(&wd.request("GET", "/inspect", &sent, b""));
    for dropped in ["Connection", "X-Drop", "Keep-Alive", "Proxy-Connection", "TE", "Upgrade"] {
        assert_eq!(report.header(dropped), None, "{dropped} reached the function:\n{}", report.0);
    }
    assert_eq!(report.header("X-Keep"), Some("1"));

    let r = wd.get("/hop");
    assert_eq!((r.status, r.text().as_str()), (200, "hop"));
    for dropped in ["X-Secret", "Keep-Alive", "Proxy-Connection", "Upgrade"] {
        assert_eq!(r.header(dropped), None, "{dropped} reached the client: {:?}", r.headers);
    }
    assert!(headers_named(&r, "Connection").iter().all(|v| !v.contains("X-Secret")), "{:?}", r.headers);
    assert_eq!(r.header("X-Visible"), Some("1"));
}

/// `curl -X POST` frames no body at all; the function gets `Content-Length: 0`, as of-watchdog
/// (Go's client) sends for POST, PUT and PATCH: Express's body parser needs it to hand the node
/// templates' handlers "" and not {}.
#[test]
fn a_post_put_or_patch_without_a_body_gets_content_length_0() {
    let function = Function::new();
    for env in [&[][..], &[("buffer_http", "true")][..]] {
        let wd = function.start(env);
        for method in ["POST", "PUT", "PATCH"] {
            let r =
                send(wd.port, format!("{method} /inspect HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
            let report = Report::of(&r.unwrap());
            assert_eq!(report.header("Content-Length"), Some("0"), "{method} {env:?}");
            assert_eq!(report.header("Transfer-Encoding"), None, "{method} {env:?}");
        }
        for method in ["GET", "DELETE"] {
            let r =
                send(wd.port, format!("{method} /inspect HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
            assert_eq!(Report::of(&r.unwrap()).header("Content-Length"), None, "{method} {env:?}");
        }
    }
}

#[test]
fn buffer_http_sends_a_content_length() {
    let chunked: &[u8] = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let te = [("Transfer-Encoding", "chunked")];

    let function = Function::new();
    let streamed = function.start(&[]);
    let report = Report::of(&streamed.request("POST", "/inspect", &te, chunked));
    assert_eq!(report.field("length"), "11");
    assert_eq!(report.header("Transfer-Encoding"), Some("chunked"), "without buffering the body streams");
    drop(streamed);

    for flag in ["buffer_http", "http_buffer_req_body"] {
        let function = Function::new();
        let wd = function.start(&[(flag, "true")]);
        let report = Report::of(&wd.request("POST", "/inspect", &te, chunked));
        assert_eq!(report.field("length"), "11", "{flag}");
        assert_eq!(report.header("Content-Length"), Some("11"), "{flag}:\n{}", report.0);
        assert_eq!(report.header("Transfer-Encoding"), None, "{flag}");
        let empty = Report::of(&wd.post("/inspect", b""));
        assert_eq!(empty.header("Content-Length"), Some("0"), "{flag}");
        assert_eq!(Report::of(&wd.get("/inspect")).header("Content-Length"), None, "no body, no length");
    }
}

// ---------------------------------------------------------------- timeouts and failures

fn assert_internal(r: &Response, status: u16, needle: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("X-OpenFaaS-Internal"), Some("of-watchdog"));
    assert!(r.header("X-Duration-Seconds").is_some());
    let text = r.text();
    assert!(text.contains(needle), "{needle:?} in {text:?}");
    assert!(text.ends_with('\n') && text.matches('\n').count() == 1, "one line: {text:?}");
}

#[test]
fn exec_timeout_and_x_timeout_answer_504() {
    let function = Function::new();
    let wd = function.start(&[("exec_timeout", "1s")]);
    assert_internal(&wd.get("/slow?ms=5000"), 504, "exec_timeout (1s)");
    let r = wd.request("GET", "/slow?ms=5000", &[("X-Timeout", "20s")], b"");
    assert_internal(&r, 504, "exec_timeout (1s)");
    wd.wait_for_log("Upstream HTTP killed due to exec_timeout (1s)", Duration::from_secs(5));
    drop(wd);

    let function = Function::new();
    let wd = function.start(&[("exec_timeout", "0")]);
    let r = wd.request("GET", "/slow?ms=5000", &[("X-Timeout", "500ms")], b"");
    assert_internal(&r, 504, "X-Timeout (500ms)");
    assert_eq!(wd.get("/slow?ms=200").text(), "slow done", "no limit but write_timeout");
}

#[test]
fn upstream_failures_are_502_with_one_line() {
    let function = Function::new();
    let wd = function.start(&[]);
    for route in ["/close", "/garbage"] {
        let r = wd.get(route);
        assert_internal(&r, 502, "Upstream HTTP request error: ");
    }
    assert_eq!(wd.get("/inspect").status, 200, "the function still serves");
}

#[test]
fn a_request_body_slower_than_read_timeout_is_400() {
    for buffer in ["false", "true"] {
        let function = Function::new();
        let wd = function.start(&[("read_timeout", "1s"), ("buffer_http", buffer)]);
        let mut client = wd.connect();
        client.write_all(b"POST /inspect HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\nabc").unwrap();
        let r = read_response(&mut BufReader::new(client), false).expect("an answer, not a hang");
        assert_internal(&r, 400, "i/o timeout: the request body was not received within read_timeout");
        assert_eq!(r.header("Connection"), Some("close"), "buffer_http={buffer}");
    }
}

#[test]
fn a_body_that_breaks_after_the_headers_never_looks_complete() {
    let function = Function::new();
    let wd = function.start(&[]);
    for route in ["/truncated", "/truncated-chunked"] {
        let request = format!("GET {route} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        match send(wd.port, request.as_bytes()) {
            Err(_) => {}
            Ok(r) => panic!("{route}: a complete response: {} {:?} {:?}", r.status, r.headers, r.text()),
        }
    }
    wd.wait_for_log("Upstream HTTP response error after 10 bytes", Duration::from_secs(10));
}

#[test]
fn client_disconnect_cancels_the_upstream_request() {
    let function = Function::new();
    let wd = function.start(&[]);
    let mut client = wd.connect();
    client.write_all(b"GET /hold HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    function.wait_marker("holding", Duration::from_secs(10));
    drop(client);
    function.wait_marker("gone", Duration::from_secs(10));
}

// ---------------------------------------------------------------- streams and WebSockets

/// Reads a chunked body until `needle` has arrived; `None` if the connection ends first.
fn read_until(reader: &mut impl BufRead, seen: &mut Vec<u8>, needle: &[u8]) -> Option<()> {
    while !seen.windows(needle.len()).any(|w| w == needle) {
        let mut line = String::new();
        reader.read_line(&mut line).ok().filter(|&n| n > 0)?;
        let size = usize::from_str_radix(line.trim(), 16).ok()?;
        if size == 0 {
            return None;
        }
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk).ok()?;
        seen.extend_from_slice(&chunk[..size]);
    }
    Some(())
}

fn open_stream(wd: &Watchdog, path: &str, accept: &str) -> BufReader<TcpStream> {
    let mut stream = wd.connect();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: {accept}\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream);
    let head = read_response(&mut reader, true).expect("response head");
    assert_eq!(head.status, 200);
    assert!(head.header("X-Duration-Seconds").is_some());
    reader
}

#[test]
fn server_sent_events_and_ndjson_arrive_as_they_are_written() {
    let function = Function::new();
    let wd = function.start(&[]);
    for (kind, go) in [("text/event-stream", "go-sse"), ("application/x-ndjson", "go-ndjson")] {
        let mut reader = open_stream(&wd, &format!("/stream?type={kind}&go={go}"), kind);
        let mut seen = Vec::new();
        // The function holds event two back until `go` exists: event one must arrive on its own.
        read_until(&mut reader, &mut seen, b"data: one\n\n").unwrap_or_else(|| panic!("{kind}: event one"));
        assert!(!seen.windows(3).any(|w| w == b"two"));
        std::fs::write(function.marker(go), b"").unwrap();
        read_until(&mut reader, &mut seen, b"data: two\n\n").unwrap_or_else(|| panic!("{kind}: event two"));
    }
}

#[test]
fn exec_timeout_cuts_streams() {
    let function = Function::new();
    let wd = function.start(&[("exec_timeout", "3s")]);
    let mut reader = open_stream(&wd, "/stream?go=never", "text/event-stream");
    let mut seen = Vec::new();
    read_until(&mut reader, &mut seen, b"data: one\n\n").expect("event one");
    assert_eq!(read_until(&mut reader, &mut seen, b"data: two"), None, "the stream must end without its last chunk");
    wd.wait_for_log("Upstream HTTP killed due to exec_timeout (3s): response cut", Duration::from_secs(10));
}

/// Opens a WebSocket to `/ws` (RFC 6455's example key) and returns the connection after the 101.
fn websocket(wd: &Watchdog) -> BufReader<TcpStream> {
    let mut stream = wd.connect();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .unwrap();
    let mut reader = BufReader::new(stream);
    let head = read_response(&mut reader, true).expect("handshake");
    assert_eq!(head.status, 101, "{:?}", head.headers);
    assert_eq!(head.header("Sec-WebSocket-Accept"), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    assert!(head.header("Upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")));
    reader
}

/// A masked client frame.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads one unmasked server frame: (opcode, payload).
fn read_frame(reader: &mut impl Read) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    reader.read_exact(&mut head)?;
    let mut length = usize::from(head[1] & 0x7f);
    if length == 126 {
        let mut extended = [0u8; 2];
        reader.read_exact(&mut extended)?;
        length = usize::from(u16::from_be_bytes(extended));
    }
    let mut payload = vec![0; length];
    reader.read_exact(&mut payload)?;
    Ok((head[0] & 0x0f, payload))
}

#[test]
fn websockets_are_tunnelled() {
    let function = Function::new();
    let wd = function.start(&[]);
    let mut reader = websocket(&wd);
    for message in ["hello", "second message"] {
        reader.get_mut().write_all(&frame(1, message.as_bytes())).unwrap();
        let (opcode, payload) = read_frame(&mut reader).expect("echo");
        assert_eq!((opcode, String::from_utf8_lossy(&payload).into_owned()), (1, format!("echo: {message}")));
    }
    reader.get_mut().write_all(&frame(8, b"")).unwrap();
    assert_eq!(read_frame(&mut reader).expect("close").0, 8);
    wd.wait_for_log("GET /ws - 101 Switching Protocols - ", Duration::from_secs(10));
}

#[test]
fn exec_timeout_closes_tunnels() {
    let function = Function::new();
    let wd = function.start(&[("exec_timeout", "3s")]);
    let mut reader = websocket(&wd);
    reader.get_mut().write_all(&frame(1, b"ping")).unwrap();
    assert_eq!(read_frame(&mut reader).expect("echo").1, b"echo: ping");
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).expect("the tunnel is closed, not left hanging");
    wd.wait_for_log("WebSocket closed: exec_timeout (3s) passed", Duration::from_secs(10));
}

// ---------------------------------------------------------------- logs and readiness

#[test]
fn function_output_and_access_log_lines() {
    let function = Function::new();
    let wd = function.start(&[("log_callid", "true")]);
    wd.wait_for_log("stdout: upstream says hello on stdout", Duration::from_secs(10));
    wd.wait_for_log("stderr: upstream says hello on stderr", Duration::from_secs(10));
    wd.request("POST", "/mirror?x=1", &[("X-Call-Id", "call-7")], b"12345");
    // With the reason phrase, as of-watchdog logs its upstream's status.
    wd.wait_for_log("POST /mirror?x=1 - 200 OK - ContentLength: 5B (", Duration::from_secs(10));
    wd.request("GET", "/status?code=201", &[], b"");
    wd.wait_for_log("GET /status?code=201 - 201 Created - ContentLength: 10B (", Duration::from_secs(10));
    let line = wd.logs().lines().find(|l| l.contains("POST /mirror?x=1")).unwrap().to_string();
    assert!(line.ends_with("s) [call-7]"), "{line}");
    wd.request("GET", "/mirror?probe=1", &[("User-Agent", "kube-probe/1.30")], b"");
    wd.request("GET", "/mirror?after=1", &[], b"");
    wd.wait_for_log("GET /mirror?after=1 - 200", Duration::from_secs(10));
    assert!(!wd.logs().contains("probe=1"), "kube-probe requests are not logged");

    let function = Function::new();
    let raw = function.start(&[("prefix_logs", "false")]);
    wait_for(Duration::from_secs(10), "raw stdout", || {
        raw.stdout().lines().any(|l| l == "upstream says hello on stdout").then_some(())
    });
    wait_for(Duration::from_secs(10), "raw stderr", || {
        raw.logs().lines().any(|l| l == "upstream says hello on stderr").then_some(())
    });
}

#[test]
fn ready_path_asks_the_function() {
    let function = Function::new();
    let wd = function.start_at("/base", &[("ready_path", "/healthz"), ("buffer_http", "true")]);
    assert_eq!(wd.get("/_/ready").status, 204);
    assert_eq!(wd.get("/_/health").status, 200);
}

#[test]
fn the_lock_is_written_only_once_the_function_listens() {
    let function = Function::new();
    let gate = function.marker("listen-now");
    let mut options = function.options("", &[("LISTEN_AFTER", &gate.display().to_string())]);
    options.metrics = true;
    let wd = Watchdog::start_with(options);
    wd.wait_for_log("stdout: upstream says hello on stdout", Duration::from_secs(10));
    assert_eq!(wd.get("/_/health").status, 503);
    assert_eq!(wd.get("/_/ready").status, 503);
    assert!(!wd.lock_path().exists());

    // A request that arrives meanwhile waits for the function instead of failing.
    let port = wd.port;
    let early = std::thread::spawn(move || send(port, &build_request("GET", "/inspect", &[], b"")));
    wait_for(Duration::from_secs(10), "the early request in flight", || {
        wd.metrics().contains("http_requests_in_flight 1").then_some(())
    });
    assert!(!wd.lock_path().exists());
    std::fs::write(&gate, b"").unwrap();
    wait_for(Duration::from_secs(10), "healthy", || (wd.get("/_/health").status == 200).then_some(()));
    assert!(wd.lock_path().exists());
    assert_eq!(early.join().unwrap().expect("early request").status, 200);
    wd.wait_for_log("Function accepts connections after ", Duration::from_secs(5));
}

// ---------------------------------------------------------------- the function's life

#[test]
fn a_function_that_never_listens_stops_the_start() {
    let function = Function::new();
    let never = function.marker("never");
    let options = function.options("", &[("LISTEN_AFTER", &never.display().to_string()), ("start_timeout", "1s")]);
    let mut wd = Watchdog::start_with(options);
    let status = wd.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "{status}");
    let needle = format!("start_timeout: the function did not accept connections on {} within 1s", function.url(""));
    assert!(wd.logs().contains(&needle), "{}", wd.logs());
    assert!(!wd.lock_path().exists());
    wait_for(Duration::from_secs(10), "no survivors", || function.survivors().is_empty().then_some(()));
}

#[test]
fn sigterm_during_the_start_stops_the_function() {
    let function = Function::new();
    let never = function.marker("never");
    let options = function.options("", &[("LISTEN_AFTER", &never.display().to_string()), ("start_timeout", "0")]);
    let mut wd = Watchdog::start_with(options);
    wd.wait_for_log("stdout: upstream says hello on stdout", Duration::from_secs(10));
    wd.signal(libc::SIGTERM);
    assert!(!wd.wait_exit(Duration::from_secs(20)).success());
    assert!(wd.logs().contains("SIGTERM: stopping before the function was ready"), "{}", wd.logs());
    function.wait_marker("sigterm", Duration::from_secs(1));
    wait_for(Duration::from_secs(10), "no survivors", || function.survivors().is_empty().then_some(()));
}

#[test]
fn a_function_that_exits_or_cannot_start_stops_the_start() {
    let tmp = TempDir::new();
    let tmpdir = tmp.path().display().to_string();
    let run = |fprocess: &str| {
        let env = [("TMPDIR", tmpdir.as_str()), ("mode", "http"), ("upstream_url", "http://127.0.0.1:9")];
        run_once(&[&env[..], &[("fprocess", fprocess)]].concat(), &[])
    };
    let (code, log) = run("sh -c 'exit 3'");
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("fprocess exited before it accepted connections on http://127.0.0.1:9: exit status 3"),
        "{log}"
    );
    let (code, log) = run("/nonexistent/server");
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("fork/exec /nonexistent/server: no such file or directory"), "{log}");
    assert!(!tmp.path().join(".lock").exists());
}

#[test]
fn the_function_dying_stops_the_watchdog_with_a_non_zero_code() {
    for (code, want) in [(3, 3), (0, 1)] {
        let function = Function::new();
        let mut wd = function.start(&[]);
        let port = wd.port;
        // Health polled throughout: once it stops being 200 it must never be 200 again.
        let health = std::thread::spawn(move || {
            let mut seen = Vec::new();
            loop {
                match send(port, &build_request("GET", "/_/health", &[], b"")) {
                    Ok(r) => seen.push(r.status),
                    Err(_) => return seen,
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let r = send(wd.port, &build_request("GET", &format!("/crash?code={code}"), &[], b""));
        assert!(r.as_ref().map_or(true, |r| r.status != 200), "crash answered {:?}", r.map(|r| r.status));
        let status = wd.wait_exit(Duration::from_secs(20));
        assert_eq!(status.code(), Some(want), "function exit {code}:\n{}", wd.logs());
        let seen = health.join().unwrap();
        let first_bad = seen.iter().position(|&s| s != 200).unwrap_or(seen.len());
        assert!(seen[first_bad..].iter().all(|&s| s != 200), "health came back: {seen:?}");
        assert!(wd.logs().contains(&format!("Forked function has terminated: exit status {code}")), "{}", wd.logs());
        assert!(!wd.lock_path().exists());
    }
}

#[test]
fn sigterm_reaches_the_function_only_after_the_drain() {
    let function = Function::new();
    let mut wd = function.start(&[("healthcheck_interval", "3s"), ("write_timeout", "20s")]);
    let port = wd.port;
    let slow = std::thread::spawn(move || send(port, &build_request("GET", "/slow?ms=5000", &[], b"")));
    function.wait_marker("slow-started", Duration::from_secs(10));
    wd.signal(libc::SIGTERM);
    wd.wait_for_log("SIGTERM: no new connections in 3s", Duration::from_secs(10));
    assert_eq!(wd.get("/inspect").status, 200, "still served during healthcheck_interval");
    assert_eq!(wd.get("/_/health").status, 503);

    let r = slow.join().unwrap().expect("the in-flight request gets its answer");
    assert_eq!((r.status, r.text().as_str()), (200, "slow done"));
    let answered: f64 = function.wait_marker("slow-answered", Duration::from_secs(1)).parse().unwrap();
    let terminated: f64 = function.wait_marker("sigterm", Duration::from_secs(20)).parse().unwrap();
    assert!(terminated > answered, "SIGTERM at {terminated}, before the answer at {answered}");
    assert_eq!(wd.wait_exit(Duration::from_secs(20)).code(), Some(0), "{}", wd.logs());
    assert!(wd.logs().contains("Function stopped: exit status 0"), "{}", wd.logs());
}

#[test]
fn a_function_that_ignores_sigterm_is_killed_after_the_grace() {
    let function = Function::new();
    let mut wd = function.start(&[("healthcheck_interval", "0"), ("IGNORE_TERM", "1")]);
    wd.signal(libc::SIGTERM);
    assert_eq!(wd.wait_exit(Duration::from_secs(40)).code(), Some(0), "{}", wd.logs());
    let log = wd.logs();
    assert!(log.contains("Function still running 10s after SIGTERM: killing it"), "{log}");
    assert!(log.contains("Function stopped: signal: killed"), "{log}");
    assert!(function.survivors().is_empty());
}

// ---------------------------------------------------------------- integrity

/// Content-Length together with a chunked body: Transfer-Encoding wins (RFC 9112 §6.3), and the
/// client gets the whole body with one framing, never a truncated body that looks complete.
#[test]
fn conflicting_framing_from_the_function_is_never_truncated() {
    let function = Function::new();
    let wd = function.start(&[]);
    let r = wd.get("/length-and-chunked");
    assert_eq!((r.status, r.text().as_str()), (200, "hello world"), "{:?}", r.headers);
    assert!(r.header("Content-Length").is_none_or(|l| l == "11"), "{:?}", r.headers);
}

/// A transfer coding the watchdog does not decode is a 502, not raw gzip bytes passed off as the body.
#[test]
fn a_transfer_coding_other_than_chunked_is_502() {
    let function = Function::new();
    let wd = function.start(&[]);
    let r = wd.get("/gzip-chunked");
    assert_internal(&r, 502, "Upstream HTTP request error: ");
    assert!(r.text().contains("gzip"), "{}", r.text());
    assert_eq!(wd.get("/inspect").status, 200, "the function still serves");
}

/// Clients upload a body the function never reads and never answers: after the 504, the upload, the
/// connection to the function and the client's connection (its body was not read to the end) all end.
#[test]
fn an_upload_the_function_never_reads_ends_with_its_request() {
    let function = Function::new();
    let wd = function.start(&[("exec_timeout", "1s")]);
    wait_for(Duration::from_secs(5), "no connection to the function", || {
        (client_connections(function.port) == 0).then_some(())
    });
    let clients: Vec<(TcpStream, std::thread::JoinHandle<()>)> = (0..5)
        .map(|_| {
            let mut conn = wd.connect();
            conn.write_all(b"POST /stall HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10000000000\r\n\r\n").unwrap();
            let mut writer = conn.try_clone().unwrap();
            let upload = std::thread::spawn(move || {
                let block = vec![b'u'; 64 * 1024];
                while writer.write_all(&block).is_ok() {}
            });
            (conn, upload)
        })
        .collect();
    for (conn, _) in &clients {
        let r = read_response(&mut BufReader::new(conn), false).expect("the 504");
        assert_internal(&r, 504, "exec_timeout (1s)");
    }
    let answered = std::time::Instant::now();
    for (conn, upload) in clients {
        conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        match (&conn).read_to_end(&mut rest) {
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("the client's connection is still open {:?} after its 504", answered.elapsed())
            }
            _ => {}
        }
        wait_for(Duration::from_secs(5), "the upload to fail", || upload.is_finished().then_some(()));
    }
    wait_for(Duration::from_secs(5), "the connections to the function closed", || {
        (client_connections(function.port) == 0).then_some(())
    });
    assert_eq!(server_connections(wd.port), 0);
    eprintln!("5 unread uploads: everything closed {:.2} s after the 504s", answered.elapsed().as_secs_f64());
}

/// A function server that closes idle keep-alive connections without saying `Connection: close`
/// (its keep-alive timeout runs out): a request without a body that meets such a connection is
/// sent again on a new one, as Go does. A request whose body was sent is not repeated: 502.
///
/// A pool may drop a connection as soon as the function closes it (hyper's does), so a request
/// meets one only when the close and the request cross: a race that a timer cannot win every
/// time. The function closes the connection as the request arrives instead (`close-reused`).
#[test]
fn requests_on_pooled_connections_the_function_closed_are_retried() {
    let function = Function::new();
    let wd = function.start(&[]);
    // A connection the function closed while it was idle: once the close has reached the
    // watchdog's side (CLOSE_WAIT, or gone from the pool), the next request is answered.
    for i in 0..3 {
        assert_eq!(wd.get("/idle-close?ms=20").status, 200, "GET {i}:\n{}", wd.logs());
        wait_for(Duration::from_secs(5), "the function's close at the watchdog's end", || {
            (established_client_connections(function.port) == 0).then_some(())
        });
        let r = wd.get("/inspect");
        assert_eq!(r.status, 200, "GET {i} after the close: {}\n{}", r.text(), wd.logs());
    }

    // `close-reused` answers the first request on a connection and closes the connection when
    // another one arrives on it. A GET that meets a pooled connection goes again on a new one. (A
    // connection goes back to the pool a moment after its answer, and a request sent before
    // opens another: the GETs go on until three met a pooled one.)
    let seen = || std::fs::read_to_string(function.marker("close-reused")).unwrap_or_default();
    let mut gets = 0;
    while seen().matches("GET 0 closed").count() < 3 {
        assert!(gets < 30, "{gets} GETs, and not 3 of them met a pooled connection:\n{}", seen());
        let r = wd.get("/close-reused");
        assert_eq!((r.status, r.text().as_str()), (200, "first on its connection"), "GET {gets}:\n{}", wd.logs());
        gets += 1;
    }
    assert_eq!(seen().matches("GET 0 answered").count(), gets, "each GET answered once:\n{}", seen());

    // A POST that meets a pooled connection: its body goes out, the connection is closed, and it
    // is not sent again: 502. (One on a new connection is answered: they go on until one meets a
    // pooled connection.)
    let before = seen().len();
    let mut posts = 0;
    loop {
        assert!(posts < 30, "{posts} POSTs, and none met a pooled connection:\n{}", seen());
        let r = wd.post("/close-reused", b"once");
        posts += 1;
        if r.status != 200 {
            assert_internal(&r, 502, "Upstream HTTP request error: ");
            break;
        }
    }
    let expected = format!("{}POST 4 closed\n", "POST 4 answered\n".repeat(posts - 1));
    assert_eq!(&seen()[before..], expected, "each POST sent once");
    eprintln!("pooled connections closed by the function: met by 3 of {gets} GETs (retried), 1 of {posts} POSTs (502)");
}

/// Connections to the function are kept for the next request (keep-alive), and closed once idle
/// for 500 ms.
#[test]
fn connections_to_the_function_are_reused_then_closed_when_idle() {
    let function = Function::new();
    let wd = function.start(&[]);
    let peers: Vec<String> = (0..5).map(|_| wd.get("/peer").text()).collect();
    // Requests more than 500 ms apart (a very busy machine) would rightly get new connections.
    assert!(peers.windows(2).any(|pair| pair[0] == pair[1]), "a connection per request: {peers:?}");
    wait_for(Duration::from_secs(5), "the idle connection to the function closed", || {
        (client_connections(function.port) == 0).then_some(())
    });
}

/// A WebSocket tunnel is a request in flight for its whole life: it holds a `max_inflight` slot,
/// counts in `http_requests_in_flight`, and is part of the drain (closed at its deadline).
#[test]
fn a_websocket_tunnel_holds_its_slot_and_is_part_of_the_drain() {
    let function = Function::new();
    let env = [("max_inflight", "1"), ("write_timeout", "0"), ("exec_timeout", "0"), ("healthcheck_interval", "2s")];
    let mut options = function.options("", &env);
    options.metrics = true;
    let mut wd = function.start_with(options);

    let mut tunnel = websocket(&wd);
    assert_eq!(in_flight(&wd), 1.0);
    assert_eq!(wd.get("/inspect").status, 429, "the tunnel holds the only slot");
    assert_eq!(wd.get("/_/ready").status, 429);
    tunnel.get_mut().write_all(&frame(8, b"")).unwrap();
    assert_eq!(read_frame(&mut tunnel).expect("close").0, 8);
    tunnel.read_to_end(&mut Vec::new()).expect("the function closes its side");
    drop(tunnel);
    wait_for(Duration::from_secs(5), "the slot back", || (in_flight(&wd) == 0.0).then_some(()));
    assert_eq!(wd.get("/inspect").status, 200);

    let mut tunnel = websocket(&wd);
    wd.signal(libc::SIGTERM);
    wd.wait_for_log("SIGTERM: no new connections in 2s", Duration::from_secs(5));
    tunnel.get_mut().write_all(&frame(1, b"still there")).unwrap();
    assert_eq!(read_frame(&mut tunnel).expect("echo during the drain").1, b"echo: still there");
    let mut rest = Vec::new();
    tunnel.read_to_end(&mut rest).expect("the tunnel is closed at the drain deadline");
    assert_eq!(wd.wait_exit(Duration::from_secs(10)).code(), Some(0));
    let log = wd.logs();
    assert!(log.contains("draining: 1 requests"), "{log}");
    assert!(log.contains("WebSocket closed: the watchdog is shutting down"), "{log}");
}

/// `OPTIONS *` asks about the server, not a path: it reaches the function as `*`.
#[test]
fn options_asterisk_reaches_the_function_as_asterisk() {
    let function = Function::new();
    let wd = function.start_at("/base", &[]);
    let r = send(wd.port, b"OPTIONS * HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let report = Report::of(&r);
    assert_eq!((report.field("method"), report.field("path")), ("OPTIONS", "*"));
}

/// `max_request_body` in http mode: a Content-Length over it is 413 before any byte is sent on, and
/// a chunked body that crosses it on its way to the function is 413 too (the function's connection
/// is cut, so it never sees the body end).
#[test]
fn max_request_body_is_413_in_http_mode() {
    let function = Function::new();
    let wd = function.start(&[("max_request_body", "100")]);
    let mut conn = wd.connect();
    conn.write_all(b"POST /mirror HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n").unwrap();
    let r = read_response(&mut BufReader::new(&conn), false).expect("an answer without the body");
    assert_eq!((r.status, r.header("Connection")), (413, Some("close")), "{}", r.text());
    let mut conn = wd.connect();
    conn.write_all(b"POST /mirror HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n32\r\n").unwrap();
    conn.write_all(&[b'a'; 50]).unwrap();
    conn.write_all(b"\r\n33\r\n").unwrap();
    conn.write_all(&[b'b'; 51]).unwrap();
    conn.write_all(b"\r\n").unwrap();
    let r = read_response(&mut BufReader::new(&conn), false).expect("an answer");
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(wd.post("/mirror", &[b'c'; 100]).body, vec![b'c'; 100]);
}

/// `max_queue`: waiting for a slot counts against the request's own time limit (here its
/// `X-Timeout`): when it passes, the request leaves the queue with the 429.
#[test]
fn a_queued_request_leaves_the_queue_at_its_own_time_limit() {
    let function = Function::new();
    let wd = function.start_with({
        let mut options = function.options("", &[("max_inflight", "1"), ("max_queue", "1")]);
        options.metrics = true;
        options
    });
    wd.get("/inspect");
    let port = wd.port;
    let _stalled = std::thread::spawn(move || send(port, &build_request("GET", "/stall?s=5", &[], b"")));
    wait_for(Duration::from_secs(10), "the stalled request in flight", || {
        (metric_value(&wd.metrics(), "http_requests_in_flight") == Some(1.0)).then_some(())
    });
    let started = std::time::Instant::now();
    let r = wd.request("GET", "/inspect", &[("X-Timeout", "1s")], b"");
    let waited = started.elapsed();
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("X-OpenFaaS-Internal"), Some("faas-middleware"));
    assert!(waited >= Duration::from_millis(800) && waited < Duration::from_secs(4), "waited {waited:?}");
    assert_eq!(metric_value(&wd.metrics(), "http_requests_queued"), Some(0.0));
}
