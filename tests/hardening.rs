//! Robustness, black box: hostile and broken clients, misbehaving functions and resource starvation
//! against the real binary. Each property is a function taking a [`Profile`] (what a mode does
//! where the modes differ), so a mode's variant is one `#[test]` line, and each runs in every mode
//! where it means something:
//!
//! - classic, serializing, streaming and http: stalled bodies, malformed requests, smuggling,
//!   clients that go away, CONNECT (against an [`Echo`] function, which every mode can run);
//! - classic, serializing and streaming: clients that never read, a log nobody reads, and the
//!   misbehaving functions (they are about the process a fork mode starts per request);
//! - one mode: what is settled before any mode's code runs (slowloris, fd exhaustion, seccomp,
//!   start errors: classic stands for all), stderr in the response (only classic has
//!   `combine_output`), and what only streaming holds (stalled streams).
//!
//! The figures each test measures are printed (see `--nocapture`) and quoted in the README's
//! "Reliability" section.
#![allow(unsafe_code)] // signals, the effective uid, a socket with a small receive buffer

mod common;

use std::collections::HashSet;
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::procfs::{blocked_on_a_pipe, blocked_reading, bytes_written, cpu_ticks, idle_usage, proc_stat, usage};
use common::stress::{Outcome, Slowloris, exchange, peer_closed};
use common::upstream::Function;
use common::*;

/// What these tests expect from a mode, where the modes differ (docs/modes.md's table). Each
/// fact was checked against the binary: a scenario run with another mode's profile fails.
struct Profile {
    mode: &'static str,
    /// What the client gets when its body stalls past `read_timeout` while the function echoes it.
    stalled_body: Stalled,
    /// Whether the function only starts once the whole body is in.
    buffers_body: bool,
    /// Whether the function's whole output is read before the answer (else it is streamed).
    buffers_output: bool,
    /// Whether answers about a run carry `X-Duration-Seconds`.
    duration_header: bool,
    /// Whether the function's stderr goes to the log by default (else into the response).
    logs_stderr: bool,
    /// What the log says for each request that reached the function.
    request_log: &'static str,
    /// Processes that live below the watchdog between requests (http mode's function server).
    resident: usize,
}

/// The end of a request whose body stalls.
enum Stalled {
    /// An answer with this status (nothing was sent before).
    Status(u16),
    /// A 200 whose body (the echo so far) is cut: the status went out with the first byte.
    Cut,
}

const CLASSIC: Profile = Profile {
    mode: "classic",
    stalled_body: Stalled::Status(400),
    buffers_body: true,
    buffers_output: true,
    duration_header: true,
    logs_stderr: false,
    request_log: "Forking fprocess.",
    resident: 0,
};
const SERIALIZING: Profile = Profile {
    mode: "serializing",
    stalled_body: Stalled::Status(400),
    buffers_body: true,
    buffers_output: true,
    duration_header: true,
    logs_stderr: true,
    request_log: "POST / - 200",
    resident: 0,
};
const STREAMING: Profile = Profile {
    mode: "streaming",
    stalled_body: Stalled::Cut,
    buffers_body: false,
    buffers_output: false,
    duration_header: false,
    logs_stderr: true,
    request_log: "POST / - 200",
    resident: 0,
};
/// Only the scenarios with an [`Echo`] function run in http mode (see the top of the file).
const HTTP: Profile = Profile {
    mode: "http",
    stalled_body: Stalled::Status(400),
    buffers_body: false,
    buffers_output: false,
    duration_header: true,
    logs_stderr: true,
    request_log: "POST / - 200",
    resident: 1,
};

impl Profile {
    fn options(&self, env: &[(&str, &str)]) -> Options {
        let mut options = Options::new(env);
        options.env.push(("mode".into(), self.mode.into()));
        options
    }

    fn start(&self, env: &[(&str, &str)]) -> Watchdog {
        Watchdog::start_with(self.options(env))
    }

    fn start_with_metrics(&self, env: &[(&str, &str)]) -> Watchdog {
        let mut options = self.options(env);
        options.metrics = true;
        Watchdog::start_with(options)
    }

    /// A watchdog, with metrics, in front of an [`Echo`] function.
    fn start_echo(&self, env: &[(&str, &str)]) -> Echo {
        if self.mode == "http" {
            let server = Function::answering("mirror");
            let mut options = server.options("", env);
            options.metrics = true;
            let wd = server.start_with(options);
            // The proxy keeps its connection to the function open for the next request: one made
            // now is part of the baseline the scenarios compare descriptors with.
            let r = wd.post("/", b"warm-up");
            assert_eq!((r.status, r.text().as_str()), (200, "warm-up"), "{}", wd.logs());
            let function = EchoFunction::Server(server);
            let before = read_lines(&function.requests_file()).len();
            return Echo { wd, function, before };
        }
        let dir = TempDir::new();
        let hold = marker(self, "hold");
        let requests = dir.path().join("requests");
        let fprocess = format!(
            "sh -c 'echo \"$Http_Method $Http_Path\" >> {}; case $Http_Path in /hold) exec {} 30;; *) exec cat;; esac'",
            requests.display(),
            dir.tagged_sleep(&hold)
        );
        let mut env = env.to_vec();
        env.push(("fprocess", &fprocess));
        let wd = self.start_with_metrics(&env);
        Echo { wd, function: EchoFunction::Script { dir, hold }, before: 0 }
    }
}

/// The function of the scenarios that every mode runs, http included: it notes each request that
/// reaches it (a line with its method and path), holds `/hold` until it is stopped, and echoes the
/// body of anything else.
struct Echo {
    wd: Watchdog,
    function: EchoFunction,
    /// Requests noted before the scenario began (http mode's warm-up).
    before: usize,
}

enum EchoFunction {
    /// A script per request (the fork modes); `hold` is the marker of the `sleep` that holds.
    Script { dir: TempDir, hold: String },
    /// tests/http_upstream.py (http mode), whose `hold` route marks `holding` and then `gone`.
    Server(Function),
}

impl EchoFunction {
    fn requests_file(&self) -> PathBuf {
        match self {
            EchoFunction::Script { dir, .. } => dir.path().join("requests"),
            EchoFunction::Server(server) => server.marker("requests"),
        }
    }
}

impl Echo {
    /// The requests that reached the function since the scenario began, one `METHOD /path` each.
    fn requests(&self) -> Vec<String> {
        read_lines(&self.function.requests_file()).split_off(self.before)
    }

    /// Whether a `/hold` request is running in the function.
    fn holding(&self) -> bool {
        match &self.function {
            EchoFunction::Script { hold, .. } => !processes_with(hold).is_empty(),
            EchoFunction::Server(server) => server.marker("holding").exists(),
        }
    }

    /// Whether the `/hold` request has ended in the function: its process is gone, or the server
    /// saw the connection close.
    fn released(&self) -> bool {
        match &self.function {
            EchoFunction::Script { hold, .. } => processes_with(hold).is_empty(),
            EchoFunction::Server(server) => server.marker("gone").exists(),
        }
    }
}

/// The lines of a file; none if it does not exist yet.
fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).map(|text| text.lines().map(str::to_owned).collect()).unwrap_or_default()
}

/// /proc reports memory in KiB.
const MIB_IN_KIB: u64 = 1024;

/// The watchdog still serves a normal request, correctly, and has not crashed.
fn assert_serving(wd: &mut Watchdog) {
    assert!(wd.try_status().is_none(), "watchdog exited:\n{}", wd.logs());
    let r = wd.post("/", b"still here");
    assert_eq!((r.status, r.text().as_str()), (200, "still here"), "normal request after the probe");
    assert!(!wd.logs().contains("panicked"), "{}", wd.logs());
}

/// No function process (below the watchdog but its resident ones, or anywhere with `marker` in its
/// command line), no zombie, and the fds are back to `fds`.
fn assert_no_leaks(p: &Profile, wd: &Watchdog, marker: Option<&str>, fds: usize) {
    wait_for(Duration::from_secs(5), "no survivors, zombies or leaked fds", || {
        let now = usage(wd.pid());
        let survivors = marker.map_or(0, |m| processes_with(m).len());
        let below = wd.descendants().len();
        (survivors == 0 && below <= p.resident && now.zombies == 0 && now.fds <= fds).then_some(())
    });
}

/// A name for the processes of one test, to find them (and only them) in /proc.
fn marker(p: &Profile, name: &str) -> String {
    format!("fwd-hard-{}-{name}-{}", p.mode, std::process::id())
}

// ---------------------------------------------------------------- hostile and broken clients

/// 500 connections dribble header bytes: the server stays fast and small, and closes each of
/// them after read_timeout.
fn slowloris(p: &Profile) {
    let read_timeout = Duration::from_secs(2);
    let mut wd = p.start(&[("fprocess", "cat"), ("read_timeout", "2s")]);
    let pid = wd.pid();
    let idle = idle_usage(pid, wd.port);
    let attack = Slowloris::start(wd.port, 500, Duration::from_millis(100));
    // The listener accepts in order: once a later connection is answered, all 500 are in.
    let mut slowest = Duration::ZERO;
    for i in 0..5 {
        let body = format!("during the attack {i}");
        let begin = Instant::now();
        let r = wd.post("/", body.as_bytes());
        slowest = slowest.max(begin.elapsed());
        assert_eq!((r.status, r.text()), (200, body));
    }
    let during = usage(pid);
    let open = attack.open();
    assert!(slowest < Duration::from_secs(1), "a normal request took {slowest:?} during the attack");
    assert!(during.rss_kib < 32 * MIB_IN_KIB, "RSS {} KiB during the attack", during.rss_kib);
    assert!(during.threads <= 16, "{} threads during the attack", during.threads);

    wait_for(read_timeout + Duration::from_secs(5), "every slow connection closed", || {
        (attack.open() == 0).then_some(())
    });
    let lived = attack.finish();
    assert_eq!(lived.closed, 500, "{lived:?}");
    assert!(lived.shortest >= read_timeout - Duration::from_millis(100), "closed before read_timeout: {lived:?}");
    eprintln!(
        "slowloris[{}]: 500 conns ({open} open at the sample); normal request max {:.1} ms; RSS {} KiB \
         (idle {} KiB), threads {}, fds {}; closed after {:.2}-{:.2} s (read_timeout 2 s)",
        p.mode,
        slowest.as_secs_f64() * 1e3,
        during.rss_kib,
        idle.rss_kib,
        during.threads,
        during.fds,
        lived.shortest.as_secs_f64(),
        lived.longest.as_secs_f64()
    );
    assert_serving(&mut wd);
}

#[test]
fn classic_slowloris() {
    slowloris(&CLASSIC);
}

/// A body that stops halfway (fixed length and chunked): cut off after read_timeout (a 400, or in
/// streaming the echo's 200 cut short), the connection closed, the function never started where
/// the mode buffers the body and never left running where it does not, and the books balanced.
fn stalled_body(p: &Profile) {
    let read_timeout = Duration::from_secs(1);
    let mut echo = p.start_echo(&[("read_timeout", "1s")]);
    let fds = idle_usage(echo.wd.pid(), echo.wd.port).fds;
    for head in [
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly ten b",
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\nonly ten b",
    ] {
        let mut conn = echo.wd.connect();
        conn.write_all(head.as_bytes()).unwrap();
        let begin = Instant::now();
        let mut reader = BufReader::new(&conn);
        match p.stalled_body {
            Stalled::Status(status) => {
                let r = read_response(&mut reader, false).expect("a response, not a silent close");
                assert_eq!(r.status, status, "{head:?}: {}", r.text());
            }
            Stalled::Cut => {
                let r = read_head(&mut reader).expect("the head, sent with the first output");
                assert_eq!(r.status, 200, "{head:?}");
                let mut echo = Vec::new();
                let end = Chunked::new(&mut reader).read_to_end(&mut echo);
                assert!(end.is_err(), "{head:?}: a complete response: {:?}", String::from_utf8_lossy(&echo));
                assert_eq!(echo, b"only ten b", "{head:?}");
            }
        }
        let waited = begin.elapsed();
        assert!(waited >= read_timeout - Duration::from_millis(100), "cut off early, after {waited:?}");
        assert!(waited < read_timeout + Duration::from_secs(3), "cut off late, after {waited:?}");
        wait_for(Duration::from_secs(2), "connection closed", || peer_closed(&mut conn).then_some(()));
        if p.buffers_body {
            let seen = echo.requests();
            assert!(seen.is_empty(), "the function started without its whole body: {seen:?}");
        }
        assert_eq!(in_flight(&echo.wd), 0.0);
        assert_no_leaks(p, &echo.wd, None, fds);
    }
    assert_serving(&mut echo.wd);
}

#[test]
fn classic_stalled_body() {
    stalled_body(&CLASSIC);
}

#[test]
fn serializing_stalled_body() {
    stalled_body(&SERIALIZING);
}

#[test]
fn streaming_stalled_body() {
    stalled_body(&STREAMING);
}

#[test]
fn http_stalled_body() {
    stalled_body(&HTTP);
}

/// Requests no server should accept: each gets a 4xx or a closed connection, the watchdog stays
/// up and small, and the next normal request works.
fn malformed_requests(p: &Profile) {
    let mut echo = p.start_echo(&[("read_timeout", "1s")]);
    let wd = &mut echo.wd;
    let huge_line = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(2 << 20));
    let many_headers = format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", "a: b\r\n".repeat(10_000));
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(1 << 20));
    let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "Content-Length: 100000000000 with little data",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000\r\n\r\nlittle".to_vec(),
        ),
        ("a 2 MiB header line", huge_line.into_bytes()),
        ("10 000 headers", many_headers.into_bytes()),
        ("a 1 MiB request target", long_uri.into_bytes()),
        ("a space in a header name", b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n".to_vec()),
        ("a NUL in a header name", b"GET / HTTP/1.1\r\nHost: x\r\nX\0Y: v\r\n\r\n".to_vec()),
        ("a header without a name", b"GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n".to_vec()),
        ("a NUL in a header value", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n".to_vec()),
        ("an invalid Content-Length", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n".to_vec()),
        (
            "two different Content-Lengths",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_vec(),
        ),
        (
            "a bad chunk size",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec(),
        ),
        (
            "Transfer-Encoding that is not chunked",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc".to_vec(),
        ),
        ("Transfer-Encoding in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec()),
        ("an unknown HTTP version", b"GET / HTTP/7.1\r\nHost: x\r\n\r\n".to_vec()),
        ("a TLS client hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".repeat(20)),
        ("text that is not HTTP", b"HELLO THERE\r\n\r\n".to_vec()),
        ("binary noise", noise),
    ];
    let mut rss_peak = 0;
    for (name, request) in &cases {
        let outcome = exchange(wd.port, request, Duration::from_secs(10));
        assert!(outcome.is_rejection(), "{name}: expected a 4xx or a close, got {outcome:?}");
        let seen = match &outcome {
            Outcome::Answered(r) => r.status.to_string(),
            _ => "closed".into(),
        };
        eprintln!("malformed[{}]: {name}: {seen}", p.mode);
        assert_serving(wd);
        rss_peak = rss_peak.max(usage(wd.pid()).hwm_kib);
    }
    assert!(rss_peak < 32 * MIB_IN_KIB, "peak RSS {rss_peak} KiB");
}

#[test]
fn classic_malformed_requests() {
    malformed_requests(&CLASSIC);
}

#[test]
fn serializing_malformed_requests() {
    malformed_requests(&SERIALIZING);
}

#[test]
fn streaming_malformed_requests() {
    malformed_requests(&STREAMING);
}

#[test]
fn http_malformed_requests() {
    malformed_requests(&HTTP);
}

/// Content-Length together with Transfer-Encoding (request smuggling): rejected, or the body read
/// as chunked and the connection closed after the answer, so the bytes after the body are never
/// taken as a second request (RFC 9112 §6.3).
fn length_and_chunked_together(p: &Profile) {
    let mut echo = p.start_echo(&[("read_timeout", "1s")]);
    let smuggled = "POST /smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    for headers in
        ["Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"]
    {
        let request = format!("POST /first HTTP/1.1\r\nHost: x\r\n{headers}\r\n5\r\nhello\r\n0\r\n\r\n{smuggled}");
        let mut conn = echo.wd.connect();
        conn.write_all(request.as_bytes()).unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        match read_response(&mut reader, false) {
            Ok(r) if (400..500).contains(&r.status) => {}
            Ok(r) => {
                assert_eq!((r.status, r.text().as_str()), (200, "hello"), "the body must be read as chunked");
                assert!(read_response(&mut reader, false).is_err(), "a second response: the connection stayed open");
            }
            Err(_) => {} // closed without an answer
        }
        wait_for(Duration::from_secs(3), "connection closed", || peer_closed(&mut conn).then_some(()));
    }
    assert_serving(&mut echo.wd);
    let seen = echo.requests();
    assert!(!seen.iter().any(|r| r.contains("/smuggled")), "the smuggled request reached the function: {seen:?}");
}

#[test]
fn classic_length_and_chunked_together() {
    length_and_chunked_together(&CLASSIC);
}

#[test]
fn serializing_length_and_chunked_together() {
    length_and_chunked_together(&SERIALIZING);
}

#[test]
fn streaming_length_and_chunked_together() {
    length_and_chunked_together(&STREAMING);
}

#[test]
fn http_length_and_chunked_together() {
    length_and_chunked_together(&HTTP);
}

/// A client that goes away while its function runs, or halfway through its upload: the function's
/// group is killed (http: the request to the function is cancelled), and the in-flight gauge and
/// the max_inflight slot come back.
fn client_disconnect(p: &Profile) {
    let mut echo = p.start_echo(&[("max_inflight", "1")]);
    let wd = &echo.wd;
    let fds = idle_usage(wd.pid(), wd.port).fds;
    let ready = |wd: &Watchdog| wd.get("/_/ready").status;
    assert_eq!((in_flight(wd), ready(wd)), (0.0, 200));

    for (what, request) in [
        ("while the function runs", "POST /hold HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
        ("halfway through the upload", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nhalf"),
    ] {
        let mut conn = wd.connect();
        conn.write_all(request.as_bytes()).unwrap();
        wait_for(Duration::from_secs(5), "request in flight", || (in_flight(wd) == 1.0).then_some(()));
        let holds = request.contains("/hold");
        if holds {
            wait_for(Duration::from_secs(5), "function started", || echo.holding().then_some(()));
        }
        assert_eq!(ready(wd), 429, "{what}: the slot is taken");
        assert_eq!(wd.post("/", b"x").status, 429, "{what}: the slot is taken");
        drop(conn);
        wait_for(Duration::from_secs(5), "gauge and slot back", || {
            (in_flight(wd) == 0.0 && ready(wd) == 200).then_some(())
        });
        if holds {
            wait_for(Duration::from_secs(5), "the function's request ended", || echo.released().then_some(()));
        }
        assert_no_leaks(p, wd, None, fds);
        let r = wd.post("/", b"next");
        assert_eq!((r.status, r.text().as_str()), (200, "next"), "{what}: a new request is admitted");
    }
    assert_serving(&mut echo.wd);
}

#[test]
fn classic_client_disconnect() {
    client_disconnect(&CLASSIC);
}

#[test]
fn serializing_client_disconnect() {
    client_disconnect(&SERIALIZING);
}

#[test]
fn streaming_client_disconnect() {
    client_disconnect(&STREAMING);
}

#[test]
fn http_client_disconnect() {
    client_disconnect(&HTTP);
}

/// A client that never reads its (large) response: the connection and the response's memory are
/// released after write_timeout, and other clients are served meanwhile. A mode that streams holds
/// little meanwhile: the function waits on its pipe.
fn client_never_reads(p: &Profile) {
    let fprocess = "sh -c 'case $Http_Path in /big) exec head -c 8388608 /dev/zero;; *) exec cat;; esac'";
    let mut wd =
        p.start_with_metrics(&[("fprocess", fprocess), ("write_timeout", "1s"), ("healthcheck_interval", "1s")]);
    let pid = wd.pid();
    let idle = idle_usage(pid, wd.port);
    let mut conn = wd.connect();
    conn.write_all(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").unwrap();
    let begin = Instant::now();
    // A mode that reads the whole output first holds it all; one that streams stops reading the
    // function once the socket is full, and the function blocks on its pipe.
    let held = wait_for(Duration::from_secs(5), "the response stuck in the socket", || {
        let now = usage(pid);
        let stuck = if p.buffers_output {
            now.rss_kib > idle.rss_kib + 4 * MIB_IN_KIB
        } else {
            wd.descendants().into_iter().any(blocked_on_a_pipe)
        };
        (now.fds > idle.fds && stuck).then_some(now)
    });
    if !p.buffers_output {
        assert!(held.rss_kib < idle.rss_kib + 4 * MIB_IN_KIB, "streamed, yet {} KiB held", held.rss_kib);
    }
    assert_serving(&mut wd);
    wait_for(Duration::from_secs(6), "the stuck connection dropped", || (usage(pid).fds <= idle.fds).then_some(()));
    let dropped_after = begin.elapsed();
    assert!(dropped_after >= Duration::from_millis(900), "dropped after {dropped_after:?}, write_timeout 1 s");
    assert_eq!(in_flight(&wd), 0.0);
    let mut received = Vec::new();
    let _ = conn.read_to_end(&mut received);
    assert!(received.len() < 8 << 20, "the whole response arrived after all");
    let after = usage(pid);
    eprintln!(
        "never-reading client[{}]: RSS {} KiB idle, {} KiB while stuck, {} KiB after; dropped after {:.2} s \
         (write_timeout 1 s); client got {} of 8388608 bytes",
        p.mode,
        idle.rss_kib,
        held.rss_kib,
        after.rss_kib,
        dropped_after.as_secs_f64(),
        received.len()
    );
}

#[test]
fn classic_client_never_reads() {
    client_never_reads(&CLASSIC);
}

#[test]
fn serializing_client_never_reads() {
    client_never_reads(&SERIALIZING);
}

#[test]
fn streaming_client_never_reads() {
    client_never_reads(&STREAMING);
}

/// More connections than file descriptors: accept fails with EMFILE for a while. The server backs
/// off instead of spinning, survives, and serves again once descriptors are free.
fn fd_exhaustion(p: &Profile) {
    let mut options = p.options(&[("fprocess", "cat"), ("read_timeout", "30s")]);
    // main.rs raises the soft limit to the hard one, so the hard limit must be low.
    options.wrapper = vec!["prlimit".into(), "--nofile=64:64".into()];
    let mut wd = Watchdog::start_with(options);
    let pid = wd.pid();
    let held: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut conn = TcpStream::connect(("127.0.0.1", wd.port)).expect("connect");
            conn.write_all(b"GET /_/health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            conn
        })
        .collect();
    wd.wait_for_log("accept: ", Duration::from_secs(10));
    let fds = usage(pid).fds;
    assert!(fds >= 60, "starved at {fds} fds?");

    let (before, begin) = (cpu_ticks(pid), Instant::now());
    // A sampling window, not a synchronisation: how much CPU does a starved server burn?
    std::thread::sleep(Duration::from_secs(2));
    let ticks = cpu_ticks(pid) - before;
    let window = begin.elapsed();
    assert!(ticks < 50, "{ticks} CPU ticks in {window:?} while starved: a busy loop");
    assert!(wd.try_status().is_none(), "died while starved:\n{}", wd.logs());

    drop(held);
    let begin = Instant::now();
    wait_for(Duration::from_secs(15), "service after the squeeze", || {
        let request = build_request("POST", "/", &[], b"back");
        match exchange(wd.port, &request, Duration::from_secs(2)) {
            Outcome::Answered(r) if r.status == 200 && r.body == b"back" => Some(()),
            _ => None,
        }
    });
    let recovered = begin.elapsed();
    let accept_errors = wd.logs().matches("accept: ").count();
    eprintln!(
        "fd exhaustion[{}]: 200 conns, RLIMIT_NOFILE 64: {accept_errors} accept errors logged, {ticks} CPU ticks in \
         {:.1} s while starved, served again {:.2} s after the clients let go",
        p.mode,
        window.as_secs_f64(),
        recovered.as_secs_f64()
    );
    assert_serving(&mut wd);
}

#[test]
fn classic_fd_exhaustion() {
    fd_exhaustion(&CLASSIC);
}

/// `CONNECT` asks for a tunnel that no mode opens: 405, and the request never reaches the function.
fn connect_is_refused(p: &Profile) {
    let echo = p.start_echo(&[]);
    let wd = &echo.wd;
    let r = send(wd.port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n").expect("an answer");
    assert_eq!(r.status, 405, "{:?} {}", r.headers, r.text());
    let seen = echo.requests();
    assert!(seen.is_empty(), "the function ran for CONNECT: {seen:?}");
    assert_eq!(wd.post("/", b"").status, 200, "the next request is served");
}

#[test]
fn classic_connect_is_refused() {
    connect_is_refused(&CLASSIC);
}

#[test]
fn streaming_connect_is_refused() {
    connect_is_refused(&STREAMING);
}

#[test]
fn http_connect_is_refused() {
    connect_is_refused(&HTTP);
}

#[test]
fn serializing_connect_is_refused() {
    connect_is_refused(&SERIALIZING);
}

/// How much the watchdog holds per stalled stream, with 300 of them: clients that never read an
/// endless response (`output`), or functions that never read an endless upload (`!output`).
/// Returns KiB per stream, once the RSS has not grown for a second.
fn stalled_streams(p: &Profile, output: bool) -> u64 {
    const STREAMS: u64 = 300;
    let fprocess = if output { "cat /dev/zero" } else { "sleep 60" };
    let wd = p.start(&[("fprocess", fprocess), ("write_timeout", "60s"), ("exec_timeout", "60s")]);
    let pid = wd.pid();
    let idle = idle_usage(pid, wd.port);
    let head: &[u8] = if output {
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    } else {
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000\r\n\r\n"
    };
    let mut conns: Vec<TcpStream> = (0..STREAMS)
        .map(|_| {
            let mut conn = wd.connect();
            conn.write_all(head).unwrap();
            conn.set_nonblocking(true).unwrap();
            conn
        })
        .collect();
    wait_for(Duration::from_secs(30), "every function started", || {
        (wd.descendants().len() as u64 >= STREAMS).then_some(())
    });
    // Uploads are pushed until nothing more is taken; then, as for responses, the watchdog's RSS
    // must not have grown for a second.
    let block = vec![b'u'; 64 * 1024];
    let mut last = (usage(pid).rss_kib, Instant::now());
    let settled = wait_for(Duration::from_secs(60), "the RSS to settle", || {
        if !output {
            for conn in &mut conns {
                while conn.write(&block).is_ok_and(|n| n > 0) {}
            }
        }
        let now = usage(pid).rss_kib;
        if now > last.0 {
            last = (now, Instant::now());
        }
        (last.1.elapsed() > Duration::from_secs(1)).then_some(now)
    });
    let each = settled.saturating_sub(idle.rss_kib) / STREAMS;
    let what = if output { "clients that never read" } else { "functions that never read their upload" };
    eprintln!(
        "stalled streams[{}]: {STREAMS} {what}: RSS {} KiB idle, {settled} KiB stalled: {each} KiB each",
        p.mode, idle.rss_kib
    );
    each
}

#[test]
fn streaming_stalled_responses_hold_bounded_memory() {
    // One 64 KiB chunk waits in hyper's buffer, plus the request's own state.
    let each = stalled_streams(&STREAMING, true);
    assert!(each <= 160, "{each} KiB per stalled response");
}

#[test]
fn streaming_stalled_uploads_hold_bounded_memory() {
    // A 64 KiB read in hyper's buffer, a chunk on its way and the one being written to the pipe
    // (about 205 KiB); the debug build adds about 40 KiB, the room for 1024 header lines that it
    // writes to on every parse.
    let each = stalled_streams(&STREAMING, false);
    assert!(each <= 256, "{each} KiB per stalled upload");
}

/// Nobody reads the watchdog's stdout and stderr (a stuck log collector), so its writes to them
/// block once the pipes are full. `/_/health`, `/_/ready` and `/metrics` keep answering
/// meanwhile; function requests wait for the log and all complete once it is read again, and
/// every line their functions wrote to stderr is in the log: none dropped.
///
/// The first request of each client starts while the log is still empty, and all their functions
/// write at once (they wait at a gate first): a burst of 24 x 20 000 short lines, about 14 MB of
/// log, well past the 4 MiB that the watchdog queues before it drops its own log lines.
fn log_nobody_reads(p: &Profile) {
    const CLIENTS: usize = 24;
    const REQUESTS: usize = 2;
    const ALL: usize = CLIENTS * REQUESTS;
    /// Short lines: the most log lines for the fewest bytes in a function's pipe.
    const LINES: usize = 20_000;
    let dir = TempDir::new();
    let (gate, lines) = (dir.path().join("gate"), dir.path().join("lines"));
    std::fs::write(&lines, "y\n".repeat(LINES)).unwrap();
    let fifo = std::ffi::CString::new(gate.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid path, and a FIFO that this test owns.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo: {}", std::io::Error::last_os_error());
    // Read and write: opening it never blocks, and the functions' reads wait for its lines.
    let mut opener = std::fs::OpenOptions::new().read(true).write(true).open(&gate).unwrap();
    // Every request logs a line or two, its function's 20 000 lines of stderr (about 600 KB of
    // log) and (write_debug) its output on stdout.
    let fprocess = format!("sh -c 'cat; read go < {}; cat {} >&2'", gate.display(), lines.display());
    let wd = p.start_with_metrics(&[("fprocess", &fprocess), ("combine_output", "false"), ("write_debug", "true")]);
    wd.hold_output();
    let (port, done) = (wd.port, std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0)));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let done = std::sync::Arc::clone(&done);
            std::thread::spawn(move || {
                for i in 0..REQUESTS {
                    let body = format!("client {c} request {i} ").repeat(20);
                    let r = send(port, &build_request("POST", "/", &[], body.as_bytes())).expect("answered");
                    assert_eq!((r.status, r.text()), (200, body));
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        })
        .collect();
    // As /proc names it.
    let gate = gate.canonicalize().unwrap();
    wait_for(Duration::from_secs(30), "a function per client at the gate", || {
        let waiting = wd.descendants().into_iter().filter(|&pid| blocked_reading(pid, &gate)).count();
        (waiting == CLIENTS).then_some(())
    });
    // A line for every request: the waiting ones go all at once, the later ones straight through.
    opener.write_all("go\n".repeat(ALL).as_bytes()).unwrap();
    wait_for(Duration::from_secs(60), "the watchdog blocked on its full log pipe", || {
        blocked_on_a_pipe(wd.pid()).then_some(())
    });
    let blocked_after = done.load(std::sync::atomic::Ordering::SeqCst);
    assert!(blocked_after < ALL, "the log blocked only after every request was done");

    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        for (port, path) in [(wd.port, "/_/health"), (wd.port, "/_/ready"), (wd.metrics_port.unwrap(), "/metrics")] {
            let begin = Instant::now();
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            match exchange(port, request.as_bytes(), Duration::from_secs(5)) {
                Outcome::Answered(r) => assert_eq!(r.status, 200, "{path} while the log is blocked"),
                other => panic!("{path} while the log is blocked: {other:?}"),
            }
            slowest = slowest.max(begin.elapsed());
        }
    }
    assert!(blocked_on_a_pipe(wd.pid()), "still blocked while the probes answered");
    let while_blocked = done.load(std::sync::atomic::Ordering::SeqCst);

    wd.release_output();
    for client in clients {
        client.join().expect("every request answered with its output");
    }
    wd.wait_for_log(p.request_log, Duration::from_secs(5));
    // The lines may come after the answers. From a watchdog that drops some, they never all come:
    // what came within 30 s is judged.
    let expected = ALL * LINES;
    let counted = || {
        let log = wd.logs();
        (log.lines().filter(|line| line.ends_with(" stderr: y")).count(), log)
    };
    let every_line = poll(Duration::from_secs(30), PACE, || Some(counted()).filter(|(logged, _)| *logged >= expected));
    let (logged, log) = every_line.unwrap_or_else(counted);
    let report = log.lines().find(|line| line.contains("log lines dropped"));
    assert_eq!(logged, expected, "stderr lines in the log; {}", report.unwrap_or("no drop reported"));
    assert!(report.is_none(), "{report:?}");
    eprintln!(
        "log nobody reads[{}]: blocked after {blocked_after} of {ALL} requests ({while_blocked} done while probed); \
         health, ready, metrics answered in at most {:.1} ms; all {ALL} done once the log was read, with all \
         {expected} lines of their stderr",
        p.mode,
        slowest.as_secs_f64() * 1000.0
    );
}

#[test]
fn classic_log_nobody_reads() {
    log_nobody_reads(&CLASSIC);
}

#[test]
fn serializing_log_nobody_reads() {
    log_nobody_reads(&SERIALIZING);
}

#[test]
fn streaming_log_nobody_reads() {
    log_nobody_reads(&STREAMING);
}

/// Clients that never read a streamed response: the watchdog holds little for each (hyper's buffer
/// is as big as the largest request head, 1 MiB, and would take that much of the stream), and the
/// function is slowed down, not the memory filled.
#[test]
fn streaming_clients_that_never_read_hold_little_memory() {
    let wd = STREAMING.start(&[("fprocess", "head -c 100000000 /dev/zero"), ("write_timeout", "60s")]);
    let idle = usage(wd.pid()).rss_kib;
    let clients: Vec<TcpStream> = (0..20)
        .map(|_| {
            let socket = connect_with_small_receive_buffer(wd.port);
            (&socket).write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            socket
        })
        .collect();
    // Once every function is blocked on its full pipe and writes nothing more, the socket buffers
    // and whatever the watchdog holds in between are full too, and nothing moves: one sample
    // tells. A function that ended had all its output taken (the watchdog holds it).
    let mut functions = HashSet::new();
    let mut before = Vec::new();
    let stuck = wait_for(Duration::from_secs(20), "every function stuck on its pipe, or ended", || {
        functions.extend(wd.descendants());
        let mut now: Vec<(u32, Writer)> = functions.iter().map(|&pid| (pid, writer(pid))).collect();
        now.sort_unstable_by_key(|&(pid, _)| pid);
        let still = now.iter().all(|(_, w)| *w != Writer::Writing) && now == before;
        before = now;
        (functions.len() >= clients.len() && still).then(|| before.clone())
    });
    let held = usage(wd.pid()).rss_kib;
    let per_client = held.saturating_sub(idle) / clients.len() as u64;
    let out: Vec<u64> =
        stuck.iter().filter_map(|(_, w)| if let Writer::Blocked(n) = w { Some(n >> 10) } else { None }).collect();
    eprintln!(
        "streaming, 20 clients that never read: RSS {idle} KiB idle, {held} KiB held, {per_client} KiB per client; \
         each function blocked after {}-{} KiB of output",
        out.iter().min().unwrap_or(&0),
        out.iter().max().unwrap_or(&0)
    );
    let ended = stuck.iter().filter(|(_, w)| *w == Writer::Ended).count();
    assert_eq!(ended, 0, "functions ended: all their 100 MB was taken although no client reads");
    assert!(per_client < 512, "{per_client} KiB per client that never reads");
    drop(clients);
}

/// What a function is doing with its output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Writer {
    /// Blocked on its full pipe, after writing this many bytes.
    Blocked(u64),
    Ended,
    Writing,
}

fn writer(pid: u32) -> Writer {
    match proc_stat(pid) {
        None => Writer::Ended,
        Some(p) if p.state == 'Z' => Writer::Ended,
        _ if blocked_on_a_pipe(pid) => bytes_written(pid).map_or(Writer::Writing, Writer::Blocked),
        _ => Writer::Writing,
    }
}

/// A connection with a small receive buffer, so that the watchdog's side fills up quickly.
fn connect_with_small_receive_buffer(port: u16) -> TcpStream {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: a fresh socket, owned by the TcpStream from here on.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 4096;
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, (&raw const size).cast(), 4);
        TcpStream::from_raw_fd(fd)
    };
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: a valid sockaddr_in for the socket above.
    let rc = unsafe {
        libc::connect(stream.as_raw_fd(), (&raw const addr).cast(), std::mem::size_of::<libc::sockaddr_in>() as u32)
    };
    assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
    stream
}

// ---------------------------------------------------------------- seccomp

/// Runs its arguments under a seccomp filter that fails `clone` with `CLONE_PIDFD` with the errno
/// given first, as container runtimes' filters do for flags they do not know.
const REFUSE_PIDFD: &str = r#"
import ctypes, errno, os, platform, struct, sys
arch, nr = {"x86_64": (0xC000003E, 56), "aarch64": (0xC00000B7, 220)}[platform.machine()]
deny = 0x00050000 | getattr(errno, sys.argv[1])
program = [  # (code, jt, jf, k)
    (0x20, 0, 0, 4), (0x15, 0, 5, arch),    # arch must match, else allow
    (0x20, 0, 0, 0), (0x15, 0, 3, nr),      # clone, else allow
    (0x20, 0, 0, 16), (0x45, 0, 1, 0x1000), # CLONE_PIDFD in the flags?
    (0x06, 0, 0, deny), (0x06, 0, 0, 0x7FFF0000),
]
filters = b"".join(struct.pack("HBBI", *f) for f in program)
buf = ctypes.create_string_buffer(filters)
fprog = struct.pack("HxxxxxxQ", len(program), ctypes.addressof(buf))
libc = ctypes.CDLL(None, use_errno=True)
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0) == 0, os.strerror(ctypes.get_errno())
os.execv(sys.argv[2], sys.argv[2:])
"#;

/// Where a seccomp filter refuses `clone` with `CLONE_PIDFD` (EPERM or ENOSYS, not the EINVAL of
/// old kernels), functions still start: without a pidfd.
#[test]
fn functions_start_where_seccomp_refuses_pidfds() {
    let tmp = TempDir::new();
    let script = tmp.path().join("refuse_pidfd.py");
    std::fs::write(&script, REFUSE_PIDFD).unwrap();
    for errno in ["EPERM", "ENOSYS"] {
        let mut options = Options::new(&[("fprocess", "cat")]);
        options.wrapper = vec!["python3".into(), script.display().to_string(), errno.into()];
        let wd = Watchdog::start_with(options);
        for _ in 0..3 {
            let r = wd.post("/", b"started");
            assert_eq!((r.status, r.text().as_str()), (200, "started"), "{errno}:\n{}", wd.logs());
        }
    }
}

// ---------------------------------------------------------------- misbehaving functions

/// A function that misbehaves: `script` is run by `sh -c`, with `{sleep}` replaced by a tagged
/// `sleep` so survivors can be found. `check` judges the response and how long the run took.
struct Fault<'a> {
    name: &'a str,
    script: &'a str,
    env: &'a [(&'a str, &'a str)],
    body: Vec<u8>,
    check: &'a dyn Fn(&Response, f64),
}

/// Runs `fault` and proves that it got a defined answer in time and left nothing behind:
/// no process, no zombie, no descriptor.
fn fault(p: &Profile, fault: Fault) -> Watchdog {
    let tmp = TempDir::new();
    let marker = marker(p, fault.name);
    let script = fault.script.replace("{sleep}", &tmp.tagged_sleep(&marker));
    let fprocess = format!("sh -c '{script}'");
    let mut env = vec![("fprocess", fprocess.as_str())];
    env.extend_from_slice(fault.env);
    let mut options = p.options(&env);
    options.log_limit = Some(1 << 20);
    let mut wd = Watchdog::start_with(options);
    let fds = idle_usage(wd.pid(), wd.port).fds;
    let begin = Instant::now();
    let r = wd.post("/", &fault.body);
    let took = begin.elapsed();
    (fault.check)(&r, run_time(p, &r, took));
    assert_no_leaks(p, &wd, Some(&marker), fds);
    let after = usage(wd.pid());
    eprintln!(
        "fault[{}] {}: {} in {:.3} s, {} body bytes; peak RSS {} KiB; no process, zombie or fd left",
        p.mode,
        fault.name,
        r.status,
        took.as_secs_f64(),
        r.body.len(),
        after.hwm_kib
    );
    assert!(wd.try_status().is_none(), "{}", wd.logs());
    wd
}

/// How long the function ran, in seconds: what `X-Duration-Seconds` says in the modes that send
/// it (no more than the client waited), else what the client waited.
fn run_time(p: &Profile, r: &Response, waited: Duration) -> f64 {
    let waited = waited.as_secs_f64();
    if !p.duration_header {
        return waited;
    }
    let header = r.header("X-Duration-Seconds").unwrap_or_else(|| panic!("no X-Duration-Seconds: {:?}", r.headers));
    let took: f64 = header.parse().unwrap_or_else(|e| panic!("X-Duration-Seconds {header:?}: {e}"));
    assert!(took <= waited, "X-Duration-Seconds {took} s, but the client waited {waited} s");
    took
}

fn expect(status: u16, body: &'static str) -> impl Fn(&Response, f64) {
    move |r: &Response, _| assert_eq!((r.status, r.text().as_str()), (status, body))
}

const HUNDRED_MIB: usize = 100 << 20;

/// The leader dies of a signal while a child still holds its stdout.
fn function_killed_by_a_signal(p: &Profile) {
    let check = expect(500, "signal: terminated\n");
    let script = "{sleep} 30 & kill -TERM $$";
    fault(p, Fault { name: "signal", script, env: &[], body: vec![], check: &check });
}

#[test]
fn classic_function_killed_by_a_signal() {
    function_killed_by_a_signal(&CLASSIC);
}

#[test]
fn serializing_function_killed_by_a_signal() {
    function_killed_by_a_signal(&SERIALIZING);
}

#[test]
fn streaming_function_killed_by_a_signal() {
    function_killed_by_a_signal(&STREAMING);
}

fn function_exits_before_reading_stdin(p: &Profile) {
    let check = expect(200, "early\n");
    let body = vec![b'x'; 16 << 20];
    fault(p, Fault { name: "no-stdin", script: "echo early", env: &[], body, check: &check });
}

#[test]
fn classic_function_exits_before_reading_stdin() {
    function_exits_before_reading_stdin(&CLASSIC);
}

#[test]
fn serializing_function_exits_before_reading_stdin() {
    function_exits_before_reading_stdin(&SERIALIZING);
}

#[test]
fn streaming_function_exits_before_reading_stdin() {
    function_exits_before_reading_stdin(&STREAMING);
}

fn function_closes_stdout_and_keeps_running(p: &Profile) {
    let check = |r: &Response, took: f64| {
        assert_eq!(r.status, 504, "{}", r.text());
        assert!((1.0..3.0).contains(&took), "answered after {took} s, write_timeout 1 s");
    };
    let env = [("write_timeout", "1s"), ("healthcheck_interval", "1s")];
    let script = "exec >&- 2>&-; exec {sleep} 30";
    fault(p, Fault { name: "closes-stdout", script, env: &env, body: vec![], check: &check });
}

#[test]
fn classic_function_closes_stdout_and_keeps_running() {
    function_closes_stdout_and_keeps_running(&CLASSIC);
}

#[test]
fn serializing_function_closes_stdout_and_keeps_running() {
    function_closes_stdout_and_keeps_running(&SERIALIZING);
}

#[test]
fn streaming_function_closes_stdout_and_keeps_running() {
    function_closes_stdout_and_keeps_running(&STREAMING);
}

/// 100 MiB of stderr go to the log as they come (in classic with `combine_output=false`; the other
/// modes always log stderr).
fn function_floods_stderr_into_the_log(p: &Profile) {
    let check = expect(200, "done\n");
    let script = "head -c 104857600 /dev/zero | tr \"\\0\" x >&2; echo done";
    let env = [("combine_output", "false")];
    let wd = fault(p, Fault { name: "stderr-log", script, env: &env, body: vec![], check: &check });
    wait_for(Duration::from_secs(30), "100 MiB of stderr in the log", || (wd.log_bytes() >= HUNDRED_MIB).then_some(()));
    let peak = usage(wd.pid()).hwm_kib;
    assert!(peak < 64 * MIB_IN_KIB, "the log is streamed, not buffered: peak RSS {peak} KiB");
}

#[test]
fn classic_function_floods_stderr_into_the_log() {
    function_floods_stderr_into_the_log(&CLASSIC);
}

#[test]
fn serializing_function_floods_stderr_into_the_log() {
    function_floods_stderr_into_the_log(&SERIALIZING);
}

#[test]
fn streaming_function_floods_stderr_into_the_log() {
    function_floods_stderr_into_the_log(&STREAMING);
}

/// Only classic can put stderr into the response (`combine_output`, on by default).
#[test]
fn classic_function_floods_stderr_into_the_response() {
    let check = |r: &Response, _| {
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), HUNDRED_MIB + 5);
        assert!(r.body[..HUNDRED_MIB].iter().all(|&b| b == b'x') && r.body.ends_with(b"done\n"));
    };
    let script = "head -c 104857600 /dev/zero | tr \"\\0\" x >&2; echo done";
    fault(&CLASSIC, Fault { name: "stderr-response", script, env: &[], body: vec![], check: &check });
}

/// A double fork: the daemon is re-parented away from the function but stays in its group.
fn function_leaves_a_daemon_holding_stdout(p: &Profile) {
    let check = |r: &Response, took: f64| {
        assert_eq!((r.status, r.text().as_str()), (200, "hi\n"));
        assert!(took < 1.0, "answered after {took} s");
    };
    let script = "({sleep} 30 &); echo hi";
    fault(p, Fault { name: "daemon-stdout", script, env: &[], body: vec![], check: &check });
}

#[test]
fn classic_function_leaves_a_daemon_holding_stdout() {
    function_leaves_a_daemon_holding_stdout(&CLASSIC);
}

#[test]
fn serializing_function_leaves_a_daemon_holding_stdout() {
    function_leaves_a_daemon_holding_stdout(&SERIALIZING);
}

#[test]
fn streaming_function_leaves_a_daemon_holding_stdout() {
    function_leaves_a_daemon_holding_stdout(&STREAMING);
}

fn function_leaves_a_daemon_holding_stderr(p: &Profile) {
    let check = expect(200, "hi\n");
    let script = "({sleep} 30 >/dev/null &); echo hi";
    let env = [("combine_output", "false")];
    fault(p, Fault { name: "daemon-stderr", script, env: &env, body: vec![], check: &check });
}

#[test]
fn classic_function_leaves_a_daemon_holding_stderr() {
    function_leaves_a_daemon_holding_stderr(&CLASSIC);
}

#[test]
fn serializing_function_leaves_a_daemon_holding_stderr() {
    function_leaves_a_daemon_holding_stderr(&SERIALIZING);
}

#[test]
fn streaming_function_leaves_a_daemon_holding_stderr() {
    function_leaves_a_daemon_holding_stderr(&STREAMING);
}

/// A daemon that leaves the process group (`setsid`) is out of the watchdog's reach (the README
/// says so); the request must still be answered in time and release its descriptors.
fn function_leaves_a_setsid_daemon(p: &Profile) {
    let tmp = TempDir::new();
    let marker = marker(p, "setsid");
    let fprocess = format!("sh -c 'setsid {} 30 & echo hi'", tmp.tagged_sleep(&marker));
    let wd = p.start(&[("fprocess", &fprocess)]);
    let fds = idle_usage(wd.pid(), wd.port).fds;
    let begin = Instant::now();
    let r = wd.post("/", b"");
    let took = run_time(p, &r, begin.elapsed());
    assert_eq!((r.status, r.text().as_str()), (200, "hi\n"));
    assert!(took < 1.0, "answered after {took} s");
    // Where stderr goes to the log, the log reads the daemon's (inherited) stderr until it closes
    // it: that one pipe stays open while the daemon lives, and no other.
    let log_pipe = usize::from(p.logs_stderr);
    wait_for(Duration::from_secs(5), "fds back", || (usage(wd.pid()).fds <= fds + log_pipe).then_some(()));
    let escaped = processes_with(&marker);
    for pid in &escaped {
        // SAFETY: plain syscall on a process this test started.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    assert_eq!(escaped.len(), 1, "the escaped daemon (documented limit)");
    wait_for(Duration::from_secs(5), "the daemon's stderr closed", || (usage(wd.pid()).fds <= fds).then_some(()));
}

#[test]
fn classic_function_leaves_a_setsid_daemon() {
    function_leaves_a_setsid_daemon(&CLASSIC);
}

#[test]
fn serializing_function_leaves_a_setsid_daemon() {
    function_leaves_a_setsid_daemon(&SERIALIZING);
}

#[test]
fn streaming_function_leaves_a_setsid_daemon() {
    function_leaves_a_setsid_daemon(&STREAMING);
}

// ---------------------------------------------------------------- start errors

/// A lock directory the watchdog cannot write to stops the start with a clear error.
#[test]
fn read_only_lock_directory_is_a_start_error() {
    let tmp = TempDir::new();
    let dir = tmp.path().join("read-only");
    std::fs::create_dir(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root ignores directory permissions; without CAP_DAC_OVERRIDE it must respect them.
    // SAFETY: geteuid has no preconditions.
    let wrapper: &[&str] = if unsafe { libc::geteuid() } == 0 {
        &["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    } else {
        &[]
    };
    if !wrapper.is_empty() {
        let probe = dir.join("probe");
        let ran = Command::new(wrapper[0]).args(&wrapper[1..]).arg("touch").arg(&probe).output();
        let denied = ran.is_ok_and(|o| String::from_utf8_lossy(&o.stderr).contains("Permission denied"));
        if !denied || probe.exists() {
            return skip("running as root and `setpriv` cannot drop CAP_DAC_OVERRIDE here");
        }
    }
    let start = |tmpdir: &std::path::Path| {
        run_once_wrapped(wrapper, &[("fprocess", "cat"), ("TMPDIR", &tmpdir.display().to_string())], &[])
    };

    let (code, stderr) = start(&dir);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("Cannot write {}/.lock: Permission denied", dir.display())), "{stderr}");
    assert!(!dir.join(".lock").exists());

    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let (code, stderr) = start(&file);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("Cannot write {}/.lock: Not a directory", file.display())), "{stderr}");
}

/// A timeout too large to add to the clock stops the start; it once made every request panic.
#[test]
fn overflowing_timeouts_are_start_errors() {
    for name in ["read_timeout", "write_timeout", "exec_timeout", "healthcheck_interval"] {
        for value in ["18446744073709551615", "3000000h"] {
            let (code, stderr) = run_once(&[("fprocess", "cat"), ("TMPDIR", "/nonexistent"), (name, value)], &[]);
            assert_eq!(code, Some(2), "{name}={value}: {stderr}");
            let expected = format!("{name}: too large, the limit is 2562047h47m16.854775807s, got \"{value}\"");
            assert!(stderr.contains(&expected), "{name}={value}: {stderr}");
        }
    }
}
