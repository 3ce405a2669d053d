//! mode=streaming, black box: the body streams into the function and its output streams back,
//! full duplex, in bounded memory; the status goes out with the first output byte.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn streaming(fprocess: &str, more: &[(&str, &str)]) -> Watchdog {
    let mut env = vec![("mode", "streaming"), ("fprocess", fprocess)];
    env.extend_from_slice(more);
    Watchdog::start(&env)
}

fn no_survivors(marker: &str) {
    wait_for(Duration::from_secs(5), "no survivors", || processes_with(marker).is_empty().then_some(()));
}

fn write_chunk(conn: &mut TcpStream, data: &[u8]) {
    conn.write_all(format!("{:x}\r\n", data.len()).as_bytes()).unwrap();
    conn.write_all(data).unwrap();
    conn.write_all(b"\r\n").unwrap();
}

// ---------------------------------------------------------------- success

#[test]
fn echoes_the_body_chunked_with_the_configured_content_type() {
    let wd = streaming("cat", &[]);
    let r = wd.post("/p?q=1", b"Hello, World!");
    assert_eq!((r.status, r.text().as_str()), (200, "Hello, World!"));
    assert!(r.is_chunked(), "{:?}", r.headers);
    assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    assert_eq!(r.header("X-Duration-Seconds"), None, "the status goes out before the duration is known");
    wd.wait_for_log("POST /p?q=1 - 200 - ContentLength: 13B (", Duration::from_secs(5));

    let wd = streaming("cat", &[("content_type", "text/event-stream")]);
    assert_eq!(wd.post("/", b"x").header("Content-Type"), Some("text/event-stream"));
}

#[test]
fn no_output_and_exit_zero_is_an_empty_200() {
    let wd = streaming("true", &[]);
    let r = wd.post("/", b"ignored");
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
    wd.wait_for_log("POST / - 200 - ContentLength: 0B (", Duration::from_secs(5));
}

#[test]
fn every_method_reaches_the_function_with_the_classic_environment() {
    let wd = streaming("env", &[("FROM_PARENT", "yes")]);
    let r = wd.request("PUT", "/some/path%20here?q=1", &[("X-Custom-Thing", "abc")], b"12345");
    let env = r.text();
    for line in [
        "FROM_PARENT=yes",
        "Http_X_Custom_Thing=abc",
        "Http_Method=PUT",
        "Http_ContentLength=5",
        "Http_Content_Length=5",
        "Http_Query=q=1",
        "Http_Path=/some/path here",
        "Http_Host=localhost",
    ] {
        assert!(env.lines().any(|l| l == line), "missing {line} in\n{env}");
    }
    for method in ["OPTIONS", "FOO", "DELETE"] {
        let r = wd.request(method, "/", &[], b"");
        assert_eq!(r.status, 200, "{method}");
        assert!(r.text().contains(&format!("Http_Method={method}")), "{method}");
    }

    let wd = streaming("env", &[("cgi_headers", "false"), ("FROM_PARENT", "yes")]);
    let env = wd.request("GET", "/p?q=1", &[("X-A", "1")], b"").text();
    assert!(env.contains("FROM_PARENT=yes") && !env.contains("Http_"), "{env}");
}

#[test]
fn ready_path_asks_the_function() {
    let wd = streaming("sh -c 'echo $Http_Method $Http_Path'", &[("ready_path", "/ready")]);
    let r = wd.get("/_/ready");
    assert_eq!((r.status, r.text().as_str()), (200, "GET /ready\n"));
}

#[test]
fn stderr_goes_to_the_log_and_kube_probes_are_not_logged() {
    let wd = streaming("sh -c 'echo out; echo oops >&2'", &[]);
    let r = wd.request("GET", "/probe", &[("User-Agent", "kube-probe/1.30")], b"");
    assert_eq!(r.text(), "out\n");
    wd.wait_for_log("stderr: oops", Duration::from_secs(5));
    let r = wd.request("GET", "/visible", &[], b"");
    assert_eq!(r.status, 200);
    wd.wait_for_log("GET /visible - 200 - ContentLength: 4B (", Duration::from_secs(5));
    assert!(!wd.logs().contains("GET /probe"), "{}", wd.logs());
}

// ---------------------------------------------------------------- streaming for real

/// 64 KiB of noise; block `i` of a stream is this block with `i` in its first 8 bytes, so lost,
/// repeated or reordered blocks are caught by plain slice comparison (fast even in debug builds).
fn noise_block() -> Vec<u8> {
    let mut block = vec![0u8; 64 * 1024];
    let mut x: u32 = 0x9e37_79b9;
    for b in block.iter_mut() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 16) as u8;
    }
    block
}

fn stamp(block: &mut [u8], index: u64) {
    block[..8].copy_from_slice(&index.to_le_bytes());
}

/// Streams `total` bytes through `cat` while reading the echo concurrently, neither side holding
/// more than a block; checks every byte. Returns (seconds, watchdog's peak RSS in KiB).
fn echo_through(wd: &Watchdog, total: u64) -> (f64, u64) {
    let block_len = 64 * 1024u64;
    assert_eq!(total % block_len, 0);
    let mut conn = wd.connect();
    let head = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n");
    conn.write_all(head.as_bytes()).unwrap();
    let begin = Instant::now();
    let mut writer = conn.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut block = noise_block();
        for i in 0..total / block_len {
            stamp(&mut block, i);
            writer.write_all(&block).expect("write the request body");
        }
    });

    let mut reader = BufReader::with_capacity(64 * 1024, &conn);
    let response = read_head(&mut reader).unwrap();
    assert_eq!(response.status, 200);
    assert!(response.is_chunked());
    let mut body = Chunked::new(reader);
    let mut expected = noise_block();
    let mut buf = vec![0u8; 64 * 1024];
    let mut received = 0u64;
    loop {
        let n = body.read(&mut buf).expect("read the echo");
        if n == 0 {
            break;
        }
        let mut piece = &buf[..n];
        while !piece.is_empty() {
            let offset = (received % block_len) as usize;
            stamp(&mut expected, received / block_len);
            let take = piece.len().min(block_len as usize - offset);
            assert!(piece[..take] == expected[offset..offset + take], "echo differs at byte {received}");
            received += take as u64;
            piece = &piece[take..];
        }
    }
    let seconds = begin.elapsed().as_secs_f64();
    sender.join().unwrap();
    assert_eq!(received, total, "echo length");
    let peak = proc_status(wd.pid(), "VmHWM").expect("VmHWM");
    (seconds, peak)
}

/// The acceptance run: about 3 s in a debug build.
#[test]
fn a_1_gib_echo_streams_in_bounded_memory() {
    let wd = streaming("cat", &[("exec_timeout", "5m"), ("write_timeout", "5m")]);
    let total = 1u64 << 30;
    let (seconds, peak_kib) = echo_through(&wd, total);
    eprintln!(
        "streamed 1 GiB through cat in {seconds:.2}s ({:.0} MiB/s); watchdog peak RSS {:.1} MiB",
        1024.0 / seconds,
        peak_kib as f64 / 1024.0
    );
    assert!(peak_kib < 32 * 1024, "watchdog peak RSS {peak_kib} KiB while streaming 1 GiB");
}

#[test]
fn lines_reach_the_client_as_they_are_written() {
    let tmp = TempDir::new();
    let marker = format!("fwd-lines-{}", std::process::id());
    let sleep = tmp.tagged_sleep(&marker);
    let fprocess = format!("sh -c 'for i in 1 2 3 4 5 6; do echo line $i; {sleep} 0.5; done'");
    let wd = streaming(&fprocess, &[]);
    let conn = {
        let mut conn = wd.connect();
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        conn
    };
    let begin = Instant::now();
    let mut reader = BufReader::new(&conn);
    let head = read_head(&mut reader).unwrap();
    assert_eq!(head.status, 200);
    let mut lines = BufReader::new(Chunked::new(reader)).lines();
    let first = lines.next().unwrap().unwrap();
    let first_at = begin.elapsed();
    assert_eq!(first, "line 1");
    assert!(!processes_with(&marker).is_empty(), "line 1 must arrive while the function still runs");
    let mut arrivals = vec![first_at];
    for (i, line) in lines.enumerate() {
        assert_eq!(line.unwrap(), format!("line {}", i + 2));
        arrivals.push(begin.elapsed());
    }
    assert_eq!(arrivals.len(), 6);
    eprintln!("lines arrived at {arrivals:?}");
}

#[test]
fn full_duplex_each_piece_is_echoed_before_the_next_is_sent() {
    let wd = streaming("cat", &[]);
    let mut conn = wd.connect();
    conn.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").unwrap();
    write_chunk(&mut conn, b"ping0\n");
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    assert_eq!(read_head(&mut reader).unwrap().status, 200);
    let mut lines = BufReader::new(Chunked::new(reader)).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ping0");
    for i in 1..5 {
        write_chunk(&mut conn, format!("ping{i}\n").as_bytes());
        assert_eq!(lines.next().unwrap().unwrap(), format!("ping{i}"));
    }
    conn.write_all(b"0\r\n\r\n").unwrap();
    assert!(lines.next().is_none(), "the response ends when the body does");
}

// ---------------------------------------------------------------- failures

#[test]
fn failures_before_any_output_are_500_with_the_error() {
    let wd = streaming("sh -c 'echo to stderr >&2; exit 3'", &[]);
    let r = wd.post("/", b"");
    assert_eq!((r.status, r.text().as_str()), (500, "exit status 3\n"));
    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
    wd.wait_for_log("POST / - 500 - ContentLength: 14B (", Duration::from_secs(5));
    wd.wait_for_log("stderr: to stderr", Duration::from_secs(5));
    wd.wait_for_log("Function failed: exit status 3", Duration::from_secs(5));

    let wd = streaming("no-such-program-xyz", &[]);
    let r = wd.post("/", b"");
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "exec: \"no-such-program-xyz\": executable file not found in $PATH\n");
    let wd = streaming("/nonexistent/bin", &[("max_inflight", "1")]);
    for _ in 0..3 {
        let r = wd.post("/", b"");
        assert_eq!((r.status, r.text().as_str()), (500, "fork/exec /nonexistent/bin: no such file or directory\n"));
    }
}

#[test]
fn exec_timeout_before_any_output_is_500_and_kills_the_group() {
    let tmp = TempDir::new();
    let marker = format!("fwd-stream-timeout-{}", std::process::id());
    let sleep = tmp.tagged_sleep(&marker);
    let wd = streaming(&format!("sh -c '{sleep} 30 & {sleep} 31'"), &[("exec_timeout", "500ms")]);
    let begin = Instant::now();
    let r = wd.post("/", b"");
    assert_eq!((r.status, r.text().as_str()), (500, "signal: killed\n"));
    assert!(begin.elapsed() < Duration::from_secs(5), "answered at the deadline, not when the children end");
    no_survivors(&marker);
    wd.wait_for_log("Killing process: ", Duration::from_secs(5));
}

/// A streamed response read to its end: the head, and the body with `Ok` when it ended with its
/// last chunk, `Err` (with what came) when the connection ended without it.
fn read_streamed(conn: &TcpStream) -> (Response, Result<Vec<u8>, Vec<u8>>) {
    let mut reader = BufReader::new(conn);
    let head = read_head(&mut reader).expect("a response head");
    assert!(head.is_chunked(), "{:?}", head.headers);
    let mut body = Vec::new();
    let ended = Chunked::new(reader).read_to_end(&mut body);
    (head, ended.map(|_| body.clone()).map_err(|_| body))
}

/// Every failure after the first output byte: the response ends without its last chunk, so that no
/// client takes it for complete; the log and the metrics have the status it would have had.
#[test]
fn a_failure_after_output_cuts_the_response_and_counts_its_real_status() {
    let tmp = TempDir::new();
    let marker = format!("fwd-stream-late-{}", std::process::id());
    let sleep = tmp.tagged_sleep(&marker);
    let late_sleep = format!("sh -c 'echo partial; exec {sleep} 30'");
    /// The failure, the function, its settings, the status it is counted with, a line in the log.
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u16, &'a str);
    let cases: [Case; 4] = [
        ("exit 3", "sh -c 'echo partial; exit 3'", &[], 500, "Function failed: exit status 3 (after 8B"),
        ("killed", "sh -c 'echo partial; kill -9 $$'", &[], 500, "Function failed: signal: killed (after 8B"),
        ("exec_timeout", &late_sleep, &[("exec_timeout", "1s")], 500, "Function failed: signal: killed (after 8B"),
        ("write_timeout", &late_sleep, &[("write_timeout", "1s"), ("exec_timeout", "0")], 504, "write_timeout"),
    ];
    for (what, fprocess, env, code, log) in cases {
        let mut options = Options::new(&[("mode", "streaming"), ("fprocess", fprocess)]);
        options.env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        options.metrics = true;
        let wd = Watchdog::start_with(options);
        let mut conn = wd.connect();
        conn.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").unwrap();
        let (head, body) = read_streamed(&conn);
        assert_eq!(head.status, 200, "{what}");
        match body {
            Ok(body) => panic!("{what}: a complete-looking response: {:?}", String::from_utf8_lossy(&body)),
            Err(got) => assert!(b"partial\n".starts_with(&got), "{what}: {:?}", String::from_utf8_lossy(&got)),
        }
        wd.wait_for_log(log, Duration::from_secs(5));
        wd.wait_for_log(&format!("POST / - {code} - ContentLength: 8B ("), Duration::from_secs(5));
        let series = format!("http_requests_total{{code=\"{code}\",method=\"post\"}}");
        wait_for(Duration::from_secs(5), "the real status in the metrics", || {
            (metric_value(&wd.metrics(), &series) == Some(1.0)).then_some(())
        });
        assert_eq!(metric_value(&wd.metrics(), "http_requests_in_flight"), Some(0.0), "{what}");
        no_survivors(&marker);
    }
}

/// SIGTERM in the middle of a stream, with no drain time left: the stream is cut, not ended.
#[test]
fn the_hard_stop_at_shutdown_cuts_a_stream() {
    let fprocess = "sh -c 'for i in $(seq 1 50); do echo line $i; sleep 0.1; done'";
    let env = [("write_timeout", "0"), ("exec_timeout", "0"), ("healthcheck_interval", "0")];
    let mut wd = streaming(fprocess, &env);
    let mut conn = wd.connect();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut reader = BufReader::new(&conn);
    assert_eq!(read_head(&mut reader).unwrap().status, 200);
    let mut lines = BufReader::new(Chunked::new(reader));
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line, "line 1\n");
    wd.signal(libc::SIGTERM);
    let mut rest = Vec::new();
    assert!(lines.read_to_end(&mut rest).is_err(), "a clean end after {:?}", String::from_utf8_lossy(&rest));
    assert_eq!(wd.wait_exit(Duration::from_secs(10)).code(), Some(0));
    assert!(wd.logs().contains("GET / - 503 - ContentLength: "), "{}", wd.logs());
}

/// A request body that breaks off after the output has started: the response is cut too.
#[test]
fn a_request_body_that_breaks_after_output_cuts_the_response() {
    let wd = streaming("cat", &[]);
    let mut conn = wd.connect();
    conn.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    write_chunk(&mut conn, b"ping\n");
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    assert_eq!(read_head(&mut reader).unwrap().status, 200);
    let mut lines = BufReader::new(Chunked::new(reader));
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    assert_eq!(line, "ping\n");
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    assert!(lines.read_to_end(&mut rest).is_err(), "a clean end after a broken body");
    wd.wait_for_log("POST / - 400 - ContentLength: 5B (", Duration::from_secs(5));
}

#[test]
fn write_timeout_before_any_output_is_504() {
    let tmp = TempDir::new();
    let marker = format!("fwd-stream-write-timeout-{}", std::process::id());
    let fprocess = format!("{} 30", tmp.tagged_sleep(&marker));
    let wd = streaming(&fprocess, &[("write_timeout", "1"), ("exec_timeout", "0")]);
    let r = wd.post("/", b"");
    assert_eq!(r.status, 504);
    assert!(r.text().contains("write_timeout"), "{}", r.text());
    no_survivors(&marker);
}

#[test]
fn client_disconnect_kills_the_group_before_and_after_output() {
    let tmp = TempDir::new();
    let complete = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    let unfinished = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n";
    for (i, (fprocess, request, output)) in [
        ("sh -c '{s} 30 & {s} 31'", complete, None),
        ("sh -c 'echo started; {s} 30 & {s} 31'", complete, Some("started\n")),
        ("sh -c '{s} 30 & {s} 31'", unfinished, None),
        ("sh -c 'echo started; {s} 30 & {s} 31'", unfinished, Some("started\n")),
    ]
    .into_iter()
    .enumerate()
    {
        let marker = format!("fwd-stream-disconnect-{i}-{}", std::process::id());
        let fprocess = fprocess.replace("{s}", &tmp.tagged_sleep(&marker));
        let wd = streaming(&fprocess, &[("max_inflight", "1")]);
        let mut conn = wd.connect();
        conn.write_all(request.as_bytes()).unwrap();
        wait_for(Duration::from_secs(5), "function to start", || (processes_with(&marker).len() == 3).then_some(()));
        if let Some(output) = output {
            let mut reader = BufReader::new(&conn);
            assert_eq!(read_head(&mut reader).unwrap().status, 200);
            let mut line = String::new();
            BufReader::new(Chunked::new(reader)).read_line(&mut line).unwrap();
            assert_eq!(line, output);
        }
        drop(conn);
        no_survivors(&marker);
        wait_for(Duration::from_secs(5), "limiter slot back", || (wd.get("/_/ready").status == 200).then_some(()));
    }
}

#[test]
fn a_stalled_request_body_is_400_and_kills_the_function() {
    let tmp = TempDir::new();
    let marker = format!("fwd-stream-stall-{}", std::process::id());
    let sleep = tmp.tagged_sleep(&marker);
    let wd = streaming(&format!("sh -c '{sleep} 30 & cat >/dev/null; echo done'"), &[("read_timeout", "500ms")]);
    let mut conn = wd.connect();
    conn.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly ten b").unwrap();
    let r = read_response(&mut BufReader::new(&conn), false).unwrap();
    assert_eq!(r.status, 400);
    assert!(r.text().contains("read_timeout"), "{}", r.text());
    assert_eq!(r.header("Connection"), Some("close"));
    no_survivors(&marker);
}

#[test]
fn a_function_that_ignores_its_input_still_answers() {
    let wd = streaming("sh -c 'echo done'", &[]);
    let r = wd.post("/", &vec![b'x'; 8 * 1024 * 1024]);
    assert_eq!((r.status, r.text().as_str()), (200, "done\n"));
}

#[test]
fn long_stderr_lines_are_split_and_prefix_logs_false_writes_them_raw() {
    let wd = streaming("sh -c 'echo 0123456789abcdefghij >&2; echo ok'", &[("log_buffer_size", "10")]);
    assert_eq!(wd.post("/", b"").text(), "ok\n");
    wd.wait_for_log("stderr: 0123456789", Duration::from_secs(5));
    wd.wait_for_log("stderr: abcdefghij", Duration::from_secs(5));

    let wd = streaming("sh -c 'echo raw-line >&2; echo ok'", &[("prefix_logs", "false")]);
    assert_eq!(wd.post("/", b"").text(), "ok\n");
    wait_for(Duration::from_secs(5), "raw stderr line", || wd.logs().lines().any(|l| l == "raw-line").then_some(()));
}

/// HEAD: the first output byte decides the status; then the function's group is killed, and the
/// `max_inflight` slot and the in-flight gauge come back only once it is gone.
#[test]
fn head_stops_the_function_and_holds_its_slot_until_it_is_gone() {
    let tmp = TempDir::new();
    let marker = format!("fwd-stream-head-{}", std::process::id());
    let fprocess = format!("sh -c 'echo first; exec {} 25'", tmp.tagged_sleep(&marker));
    let mut options = Options::new(&[("mode", "streaming"), ("fprocess", &fprocess), ("max_inflight", "1")]);
    options.metrics = true;
    let wd = Watchdog::start_with(options);
    for i in 0..20 {
        let r = wd.request("HEAD", "/", &[], b"");
        assert_eq!((r.status, r.header("Content-Type")), (200, Some("application/octet-stream")), "HEAD {i}");
        wait_for(Duration::from_secs(5), "the slot back", || (wd.get("/_/ready").status == 200).then_some(()));
        let running = processes_with(&marker);
        assert!(running.is_empty(), "HEAD {i}: the slot is free while {} functions run", running.len());
    }
    assert_eq!(metric_value(&wd.metrics(), "http_requests_in_flight"), Some(0.0));
    wd.wait_for_log("HEAD / - 200 - ContentLength: 0B (", Duration::from_secs(5));
}

/// An HTTP/1.0 client asking for keep-alive gets a streamed answer, which has no length: the
/// connection must close after it, and the answer must say so.
#[test]
fn an_http_1_0_keep_alive_request_is_told_close_when_the_answer_has_no_length() {
    let wd = streaming("echo hi", &[]);
    let mut conn = wd.connect();
    conn.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    let mut reader = BufReader::new(&conn);
    let head = read_head(&mut reader).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Connection"), Some("close"), "{:?}", head.headers);
    let mut body = Vec::new();
    reader.read_to_end(&mut body).expect("the body, then the close");
    assert_eq!(body, b"hi\n");
}

/// Without chunks (HTTP/1.0), only the close ends the body: an answer that fails halfway must end
/// with a reset, or the client would take the output so far for all of it.
#[test]
fn an_http_1_0_answer_that_fails_halfway_ends_with_a_reset() {
    let wd = streaming("sh -c 'echo partial; sleep 0.2; exit 3'", &[]);
    let mut conn = wd.connect();
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut reader = BufReader::new(&conn);
    let head = read_head(&mut reader).unwrap();
    assert_eq!((head.status, head.header("Connection")), (200, Some("close")));
    let mut body = Vec::new();
    let ended = reader.read_to_end(&mut body);
    assert!(ended.is_err(), "a clean close after {:?}: the cut answer looks complete", String::from_utf8_lossy(&body));
    wd.wait_for_log("GET / - 500 - ContentLength: 8B (", Duration::from_secs(5));
}

/// A request body that breaks off (the client half-closes or resets after half of it, or stalls
/// past read_timeout) must never reach the function as a whole one: the function is killed before
/// its stdin is closed. The function here counts its input (`wc -c`, which prints only at EOF) and
/// appends the count to a file; the file must stay empty. Repeated, since it is a race.
#[test]
fn a_body_that_breaks_off_never_reaches_the_function_as_complete() {
    let tmp = TempDir::new();
    let marker = format!("fwd-stream-cut-input-{}", std::process::id());
    let wc = ["/usr/bin/wc", "/bin/wc"].into_iter().find(|p| std::path::Path::new(p).exists()).expect("wc");
    let counter = tmp.path().join(&marker);
    std::os::unix::fs::symlink(wc, &counter).unwrap();
    let (started, counts) = (tmp.path().join("started"), tmp.path().join("counts"));
    let fprocess =
        format!("sh -c ': > {}.$Http_X_Try; exec {} -c >> {}'", started.display(), counter.display(), counts.display());
    let wd = streaming(&fprocess, &[("read_timeout", "300ms")]);
    let begin = Instant::now();
    let head = |i: usize| format!("POST / HTTP/1.1\r\nHost: x\r\nX-Try: {i}\r\nContent-Length: 1000\r\n\r\n");
    let half = [b'x'; 500];
    let start_try = |i: usize| {
        let mut conn = wd.connect();
        conn.write_all(head(i).as_bytes()).unwrap();
        conn.write_all(&half).unwrap();
        let started = std::path::PathBuf::from(format!("{}.{i}", started.display()));
        wait_for(Duration::from_secs(5), "the function to start", || started.exists().then_some(()));
        conn
    };
    for i in 0..100 {
        let conn = start_try(i);
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let r = read_response(&mut BufReader::new(&conn), false).expect("an answer to a half-closed request");
        assert_eq!(r.status, 400, "{}", r.text());
    }
    for i in 100..150 {
        let conn = start_try(i);
        socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO)).unwrap();
        drop(conn); // a reset
    }
    let stalled: Vec<TcpStream> = (150..170).map(start_try).collect();
    for conn in &stalled {
        let r = read_response(&mut BufReader::new(conn), false).expect("an answer to a stalled request");
        assert_eq!(r.status, 400, "{}", r.text());
    }
    no_survivors(&marker);
    let took = begin.elapsed();
    let counts = std::fs::read_to_string(&counts).unwrap_or_default();
    assert!(
        counts.is_empty(),
        "a truncated body reached the function as whole: counts {:?}",
        counts.lines().collect::<Vec<_>>()
    );
    eprintln!("170 broken bodies (100 half-closed, 50 reset, 20 stalled) in {:.2} s", took.as_secs_f64());
}
