//! The classic watchdog, black box: the real binary, real HTTP on 127.0.0.1, real processes.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn echo() -> Watchdog {
    Watchdog::start(&[("fprocess", "cat")])
}

// ---------------------------------------------------------------- configuration and command line

#[test]
fn invalid_configuration_stops_the_start_with_one_line() {
    for (env, needle) in [
        (
            ("exec_timeout", "abc"),
            r#"exec_timeout: expected seconds or a duration like 10s, 1m30s or 500ms, got "abc""#,
        ),
        (("port", "99999"), r#"port: expected a port number from 0 to 65535, got "99999""#),
        (("cgi_headers", "maybe"), r#"cgi_headers: expected true, false, 1 or 0, got "maybe""#),
        (("max_inflight", "lots"), "max_inflight: "),
    ] {
        let (code, stderr) = run_once(&[("fprocess", "cat"), env], &[]);
        assert_eq!(code, Some(2), "{env:?}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| !l.contains("Version:")).collect();
        assert_eq!(errors.len(), 1, "one line for {env:?}: {stderr}");
        assert!(errors[0].contains(needle), "{env:?}: {stderr}");
    }
}

#[test]
fn fprocess_is_required_and_quotes_must_balance() {
    let (code, stderr) = run_once(&[], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("fprocess"), "{stderr}");
    let (code, stderr) = run_once(&[("fprocess", "sh -c 'echo hi")], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("fprocess: unbalanced single quote"), "{stderr}");
}

#[test]
fn version_help_and_unknown_flags() {
    for flag in ["-version", "--version"] {
        let (code, stderr) = run_once(&[], &[flag]);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(stderr.starts_with("Version: "), "{stderr}");
    }
    let out = bin_command(&["--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    // Every variable of the docs' table (generated from the same table as --help), aliases too.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md")).unwrap();
    let names: Vec<&str> = doc
        .lines()
        .filter(|line| line.starts_with("| `"))
        .flat_map(|line| line.split('|').nth(1).unwrap_or("").split('`').skip(1).step_by(2))
        .collect();
    assert!(names.len() > 25 && names.contains(&"fprocess") && names.contains(&"function_process"), "{names:?}");
    for name in names {
        assert!(help.contains(&format!("  {name} ")), "--help lists {name}:\n{help}");
    }
    let (code, stderr) = run_once(&[], &["--bogus"]);
    assert_eq!(code, Some(2), "{stderr}");
}

#[test]
fn run_healthcheck_follows_the_lock_file_and_needs_no_config() {
    let tmp = TempDir::new();
    let check = |flag: &str| bin_command(&[flag]).env("TMPDIR", tmp.path()).output().unwrap();
    let out = check("--run-healthcheck");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unable to find lock file."));
    std::fs::write(tmp.path().join(".lock"), b"").unwrap();
    assert_eq!(check("-run-healthcheck").status.code(), Some(0));
    assert_eq!(check("--run-healthcheck").status.code(), Some(0));
}

#[test]
fn startup_log_and_lock_file() {
    let wd = echo();
    let log = wd.logs();
    assert!(log.contains("Timeouts: read: 30s write: 30s hard: 0s health: 30s."), "{log}");
    assert!(log.contains(&format!("Listening on port: {}", wd.port)), "{log}");
    assert!(log.contains("Writing lock-file to: "), "{log}");
    assert!(wd.lock_path().exists());
    // Lines carry Go's log timestamp: 2026/11/22 00:00:00
    let first = log.lines().next().unwrap();
    assert!(first.as_bytes()[4] == b'/' && first.as_bytes()[13] == b':', "{first}");
}

#[test]
fn bind_failure_exits_non_zero_without_a_lock_file() {
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let tmp = TempDir::new();
    let tmpdir = tmp.path().display().to_string();
    let (code, stderr) = run_once(&[("fprocess", "cat"), ("port", &port), ("TMPDIR", &tmpdir)], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("port: cannot listen on port {port}")), "{stderr}");
    assert!(!tmp.path().join(".lock").exists());
}

#[test]
fn missing_lock_directory_is_a_start_error() {
    let (code, stderr) = run_once(&[("fprocess", "cat"), ("TMPDIR", "/nonexistent/dir")], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("Cannot write /nonexistent/dir/.lock"), "{stderr}");
}

// ---------------------------------------------------------------- health

#[test]
fn health_endpoint() {
    let wd = echo();
    let r = wd.get("/_/health");
    assert_eq!((r.status, r.text().as_str()), (200, "OK"));
    for method in ["POST", "HEAD", "OPTIONS"] {
        assert_eq!(wd.request(method, "/_/health", &[], b"").status, 405, "{method}");
    }
    std::fs::remove_file(wd.lock_path()).unwrap();
    assert_eq!(wd.get("/_/health").status, 503, "no lock file, not healthy");
}

#[test]
fn suppress_lock_is_healthy_without_a_lock_file() {
    let wd = Watchdog::start(&[("fprocess", "cat"), ("suppress_lock", "true")]);
    assert_eq!(wd.get("/_/health").status, 200);
    assert!(!wd.lock_path().exists());
    assert!(wd.logs().contains("\"suppress_lock\" is enabled"));
}

// ---------------------------------------------------------------- request handling

#[test]
fn echoes_the_body_with_duration_and_no_content_type() {
    let wd = echo();
    let r = wd.post("/", b"Hello, World!");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "Hello, World!");
    let duration = r.header("X-Duration-Seconds").expect("X-Duration-Seconds");
    let (whole, decimals) = duration.split_once('.').unwrap();
    assert!(whole.parse::<u64>().is_ok() && decimals.len() == 6, "{duration}");
    assert_eq!(r.header("Content-Type"), None);
    // The log arrives through a pipe: wait for it rather than race it.
    wd.wait_for_log("Wrote 13 Bytes - Duration: ", Duration::from_secs(5));
    assert!(wd.logs().contains("Forking fprocess."), "{}", wd.logs());
}

#[test]
fn content_type_is_the_configured_one_else_the_requests() {
    let wd = echo();
    let r = wd.request("POST", "/", &[("Content-Type", "text/x-mine")], b"x");
    assert_eq!(r.header("Content-Type"), Some("text/x-mine"));
    let wd = Watchdog::start(&[("fprocess", "cat"), ("content_type", "application/json")]);
    let r = wd.request("POST", "/", &[("Content-Type", "text/x-mine")], b"{}");
    assert_eq!(r.header("Content-Type"), Some("application/json"));
}

#[test]
fn large_and_binary_bodies_round_trip_byte_exact() {
    let wd = echo();
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    assert!(binary.contains(&0));
    let r = wd.post("/", &binary);
    assert_eq!(r.status, 200);
    assert!(r.body == binary, "binary body changed");

    let mut big = vec![0u8; 20 * 1024 * 1024];
    let mut x: u32 = 12345;
    for b in big.iter_mut() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 16) as u8;
    }
    let r = wd.post("/", &big);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), big.len());
    assert!(r.body == big, "20 MiB body changed");
}

#[test]
fn chunked_request_body() {
    let wd = Watchdog::start(&[("fprocess", "sh -c 'cat; echo; echo $Http_ContentLength $Http_Transfer_Encoding'")]);
    let raw = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let r = send(wd.port, raw).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello world\n-1 chunked\n");
}

#[test]
fn methods() {
    let wd = Watchdog::start(&[("fprocess", "sh -c 'echo $Http_Method'")]);
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        let r = wd.request(method, "/", &[], b"");
        assert_eq!((r.status, r.text()), (200, format!("{method}\n")));
    }
    for method in ["HEAD", "OPTIONS", "TRACE", "FOO"] {
        let r = wd.request(method, "/", &[], b"");
        assert_eq!(r.status, 405, "{method}");
        assert!(r.body.is_empty());
    }
}

#[test]
fn cgi_environment() {
    let wd = Watchdog::start(&[("fprocess", "env"), ("FROM_PARENT", "yes")]);
    let r = wd.request(
        "POST",
        "/some/path%20here?q=1&r=%20",
        &[("X-Custom-Thing", "abc"), ("X-Multi", "one"), ("X-Multi", "two"), ("Method", "fake")],
        b"12345",
    );
    assert_eq!(r.status, 200);
    let env = r.text();
    let has = |line: &str| env.lines().any(|l| l == line);
    for line in [
        "FROM_PARENT=yes",
        "Http_X_Custom_Thing=abc",
        "Http_X_Multi=one",
        "Http_Method=POST",
        "Http_ContentLength=5",
        "Http_Content_Length=5",
        "Http_Query=q=1&r=%20",
        "Http_Path=/some/path here",
        "Http_Host=localhost",
    ] {
        assert!(has(line), "missing {line} in\n{env}");
    }
    assert!(!env.contains("Http_Transfer_Encoding"));
    assert!(!env.contains("Http_Method=fake"), "appended variables win over headers");
}

#[test]
fn cgi_headers_false_passes_only_the_parent_environment() {
    let wd = Watchdog::start(&[("fprocess", "env"), ("cgi_headers", "FALSE"), ("FROM_PARENT", "yes")]);
    let env = wd.request("GET", "/p?q=1", &[("X-A", "1")], b"").text();
    assert!(env.contains("FROM_PARENT=yes"));
    assert!(!env.contains("Http_"), "{env}");
}

#[test]
fn marshal_request_writes_the_reference_json() {
    let wd = Watchdog::start(&[("fprocess", "cat"), ("marshal_request", "true")]);
    let r = wd.request(
        "POST",
        "/",
        &[("User-Agent", "curl/7.88.1"), ("Accept", "*/*"), ("Content-Type", "text/plain"), ("X-A", "1"), ("X-A", "2")],
        b"hello",
    );
    assert_eq!(
        r.text(),
        r#"{"header":{"Accept":["*/*"],"Connection":["close"],"Content-Length":["5"],"Content-Type":["text/plain"],"User-Agent":["curl/7.88.1"],"X-A":["1","2"]},"body":{"raw":"aGVsbG8="}}"#
    );
}

#[test]
fn failures_are_500_with_error_and_output() {
    let wd = Watchdog::start(&[("fprocess", "sh -c 'echo to stdout; echo to stderr >&2; exit 3'")]);
    let r = wd.post("/", b"");
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "exit status 3\nto stdout\nto stderr\n");

    let wd = Watchdog::start(&[
        ("fprocess", "sh -c 'echo to stdout; echo to stderr >&2; exit 3'"),
        ("combine_output", "false"),
    ]);
    let r = wd.post("/", b"");
    assert_eq!(r.text(), "exit status 3\nto stdout\n");
    wd.wait_for_log("stderr: to stderr", Duration::from_secs(5));

    let wd = Watchdog::start(&[("fprocess", "sh -c 'kill -9 $$'")]);
    assert_eq!(wd.post("/", b"").text(), "signal: killed\n");
}

#[test]
fn combine_output_false_logs_stderr_on_success() {
    let wd = Watchdog::start(&[("fprocess", "sh -c 'echo out; echo oops >&2'"), ("combine_output", "0")]);
    let r = wd.post("/", b"");
    assert_eq!((r.status, r.text().as_str()), (200, "out\n"));
    wd.wait_for_log("stderr: oops", Duration::from_secs(5));
}

#[test]
fn missing_programs_are_reported_like_go() {
    let wd = Watchdog::start(&[("fprocess", "no-such-program-xyz")]);
    let r = wd.post("/", b"");
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "exec: \"no-such-program-xyz\": executable file not found in $PATH\n");
    let wd = Watchdog::start(&[("fprocess", "/nonexistent/bin"), ("write_debug", "true"), ("max_inflight", "1")]);
    for _ in 0..3 {
        // write_debug with a missing binary crashed the reference and leaked its limiter slot.
        let r = wd.post("/", b"");
        assert_eq!((r.status, r.text().as_str()), (500, "fork/exec /nonexistent/bin: no such file or directory\n"));
    }
}

#[test]
fn a_child_that_never_reads_stdin_gets_its_output_returned() {
    let wd = Watchdog::start(&[("fprocess", "sh -c 'echo done'")]);
    let r = wd.post("/", &vec![b'x'; 10 * 1024 * 1024]);
    assert_eq!((r.status, r.text().as_str()), (200, "done\n"));
    let wd = Watchdog::start(&[("fprocess", "sh -c 'sleep 0.2; echo late'")]);
    let r = wd.post("/", &vec![b'x'; 4 * 1024 * 1024]);
    assert_eq!((r.status, r.text().as_str()), (200, "late\n"));
}

#[test]
fn write_debug_and_debug_headers() {
    let wd = Watchdog::start(&[("fprocess", "cat"), ("write_debug", "true"), ("debug_headers", "true")]);
    let r = wd.request("POST", "/p?q=1", &[("X-Trace", "t1"), ("Content-Type", "text/plain")], b"debug-me");
    assert_eq!(r.status, 200);
    wait_for(Duration::from_secs(5), "debug output", || {
        let out = wd.stdout();
        (out.contains("[in] X-Trace=[t1]") && out.contains("[out] X-Duration-Seconds=[") && out.contains("debug-me"))
            .then_some(())
    });
    wd.wait_for_log("Query  q=1", Duration::from_secs(5));
    wd.wait_for_log("Path  /p", Duration::from_secs(5));
}

/// write_debug puts the function's output on the watchdog's stdout whole and at once, a last line
/// without a newline too (it stayed in Rust's line buffer), and logs `Duration: …` instead of
/// `Wrote N Bytes …`, as Go does: one or the other.
#[test]
fn write_debug_writes_the_whole_output_at_once_and_logs_its_duration() {
    let wd = Watchdog::start(&[("fprocess", "cat"), ("write_debug", "true")]);
    let r = wd.post("/", b"first line\nno newline at the end");
    assert_eq!(r.status, 200);
    wait_for(Duration::from_secs(5), "the whole output on stdout", || {
        wd.stdout().contains("first line\nno newline at the end").then_some(())
    });
    wd.wait_for_log("Duration: ", Duration::from_secs(5));
    assert!(!wd.logs().contains("Wrote "), "Go logs the output or its size, not both:\n{}", wd.logs());

    let quiet = echo();
    assert_eq!(quiet.post("/", b"12345").status, 200);
    quiet.wait_for_log("Wrote 5 Bytes - Duration: ", Duration::from_secs(5));
    assert!(quiet.stdout().is_empty(), "without write_debug nothing goes to stdout: {:?}", quiet.stdout());
}

#[test]
fn unclean_paths_redirect_like_go() {
    let wd = echo();
    let r = wd.request("GET", "//a/../b?x=1", &[], b"");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("Location"), Some("/b?x=1"));
}

// ---------------------------------------------------------------- timeouts and process control

#[test]
fn exec_timeout_kills_the_whole_tree_and_answers_408_promptly() {
    let tmp = TempDir::new();
    let marker = format!("fwd-exec-timeout-{}", std::process::id());
    let sleep = tmp.tagged_sleep(&marker);
    let fprocess = format!("sh -c '{sleep} 30 & echo started; {sleep} 31'");
    let wd = Watchdog::start(&[("fprocess", &fprocess), ("exec_timeout", "500ms")]);
    let begin = Instant::now();
    let r = wd.post("/", b"");
    let elapsed = begin.elapsed();
    assert_eq!((r.status, r.text().as_str()), (408, "Killed process.\n"));
    let server_side: f64 = r.header("X-Duration-Seconds").unwrap().parse().unwrap();
    assert!(server_side < 0.6, "408 sent {server_side}s after the request (limit 0.5s + 100ms)");
    assert!(elapsed < Duration::from_millis(1500), "client waited {elapsed:?}");
    wait_for(Duration::from_secs(2), "no survivors", || processes_with(&marker).is_empty().then_some(()));
    wd.wait_for_log(&format!("Killing process: {fprocess}"), Duration::from_secs(5));
}

#[test]
fn write_timeout_answers_504_and_kills_the_function() {
    let tmp = TempDir::new();
    let marker = format!("fwd-write-timeout-{}", std::process::id());
    let fprocess = format!("{} 30", tmp.tagged_sleep(&marker));
    let wd = Watchdog::start(&[("fprocess", &fprocess), ("write_timeout", "1"), ("healthcheck_interval", "1")]);
    let r = wd.post("/", b"");
    assert_eq!(r.status, 504);
    assert_eq!(r.text().lines().count(), 1, "one line: {:?}", r.text());
    assert!(r.text().contains("write_timeout"));
    wait_for(Duration::from_secs(2), "no survivors", || processes_with(&marker).is_empty().then_some(()));
}

#[test]
fn stalled_body_is_400_and_never_starts_the_function() {
    let tmp = TempDir::new();
    let started = tmp.path().join("started");
    let fprocess = format!("touch {}", started.display());
    let wd = Watchdog::start(&[("fprocess", &fprocess), ("read_timeout", "500ms")]);
    let mut conn = wd.connect();
    conn.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly ten b").unwrap();
    let begin = Instant::now();
    let r = read_response(&mut std::io::BufReader::new(&conn), false).unwrap();
    assert_eq!(r.status, 400);
    assert!(begin.elapsed() < Duration::from_secs(3));
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(!started.exists(), "the function must not start without its whole body");
}

#[test]
fn client_disconnect_kills_the_function() {
    let tmp = TempDir::new();
    let marker = format!("fwd-disconnect-{}", std::process::id());
    let sleep = tmp.tagged_sleep(&marker);
    let fprocess = format!("sh -c '{sleep} 30 & {sleep} 31'");
    let wd = Watchdog::start(&[("fprocess", &fprocess), ("max_inflight", "1")]);
    let mut conn = wd.connect();
    conn.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").unwrap();
    wait_for(Duration::from_secs(5), "function to start", || (processes_with(&marker).len() == 3).then_some(()));
    drop(conn);
    wait_for(Duration::from_secs(5), "function group killed", || processes_with(&marker).is_empty().then_some(()));
    // The limiter slot came back: a new request is admitted (and answered by the next function).
    let wd_port = wd.port;
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", wd_port)).unwrap();
    conn.write_all(b"GET /_/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[test]
fn max_inflight_rejects_the_next_request_with_429() {
    let wd = Watchdog::start(&[("fprocess", "sh -c 'sleep 1; echo slow'"), ("max_inflight", "1")]);
    let port = wd.port;
    let first = std::thread::spawn(move || send(port, &build_request("POST", "/", &[], b"")).unwrap());
    wait_for(Duration::from_secs(5), "first request running", || {
        processes_with("sleep 1").iter().any(|p| descendants(wd.pid()).contains(p)).then_some(())
    });
    let second = wd.post("/", b"");
    assert_eq!(second.status, 429);
    assert_eq!(second.text(), "Concurrent request limit exceeded. Max concurrent requests: 1\n");
    assert_eq!(second.header("X-OpenFaaS-Internal"), Some("faas-middleware"));
    assert_eq!(first.join().unwrap().text(), "slow\n");
    assert_eq!(wd.post("/", b"").status, 200, "slot released");
}

#[test]
fn functions_run_in_their_own_process_group() {
    let wd = Watchdog::start(&[("fprocess", "sh -c 'ps -o pgid= -p $$; ps -o pgid= -p $PPID'")]);
    let text = wd.post("/", b"").text();
    let ids: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(ids.len(), 2, "{text}");
    assert_ne!(ids[0], ids[1], "function group differs from the watchdog's");
}

#[test]
fn no_zombies_or_leaked_fds_after_500_requests() {
    let wd = Watchdog::start(&[("fprocess", "sh -c 'cat; sleep 0.01 & exit 0'")]);
    let _ = wd.post("/", b"warm");
    let fds_before = open_fds(wd.pid());
    let port = wd.port;
    let workers: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..125 {
                    let body = format!("req-{t}-{i}");
                    let r = send(port, &build_request("POST", "/", &[], body.as_bytes())).unwrap();
                    assert_eq!((r.status, r.text()), (200, body));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    wait_for(Duration::from_secs(5), "fds back and no zombies", || {
        (open_fds(wd.pid()) <= fds_before && zombies_of(wd.pid()) == 0 && wd.descendants().is_empty()).then_some(())
    });
}

/// The watchdog raises its own soft limit on open files to the hard one; its functions get the
/// limits it was started with, as Go's children do.
#[test]
fn functions_get_the_open_files_limit_the_watchdog_was_started_with() {
    let mut options = Options::new(&[("fprocess", "sh -c 'ulimit -Sn; ulimit -Hn'")]);
    options.wrapper = ["prlimit", "--nofile=1024:4096", "--"].map(String::from).to_vec();
    if Command::new("prlimit").arg("--version").output().is_err() {
        return skip("no `prlimit` (util-linux)");
    }
    let wd = Watchdog::start_with(options);
    let limit = std::fs::read_to_string(format!("/proc/{}/limits", wd.pid())).unwrap();
    let open_files = limit.lines().find(|l| l.starts_with("Max open files")).unwrap().to_string();
    assert!(
        open_files.split_whitespace().filter(|w| *w == "4096").count() == 2,
        "the watchdog raised its own: {open_files}"
    );
    let r = wd.post("/", b"");
    assert_eq!((r.status, r.text().as_str()), (200, "1024\n4096\n"));
}

#[test]
fn functions_start_with_no_blocked_signals_and_sigpipe_not_ignored() {
    let wd = Watchdog::start(&[("fprocess", "grep -E ^Sig(Blk|Ign): /proc/self/status")]);
    let text = wd.post("/", b"").text();
    let mask = |name: &str, status: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {status}"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(mask("SigBlk:", &text), 0, "{text}");
    // The watchdog (a Rust program) ignores SIGPIPE; its functions must not. Other ignored signals
    // can only come from whoever started the watchdog, as with any exec (and not even those the
    // watchdog handles itself, such as SIGINT in a background job).
    let ours = mask("SigIgn:", &std::fs::read_to_string("/proc/self/status").unwrap());
    let ignored = mask("SigIgn:", &text);
    assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0, "SIGPIPE ignored: {text}");
    assert_eq!(ignored & !ours, 0, "ignores signals nobody ignored before: {text}");
}

#[test]
fn programs_are_looked_up_on_path_again_when_they_appear_or_move() {
    let tmp = TempDir::new();
    let path = format!("{}:{}", tmp.path().display(), std::env::var("PATH").unwrap_or_default());
    let wd = Watchdog::start(&[("fprocess", "late-tool-xyz"), ("PATH", &path)]);
    let r = wd.post("/", b"");
    assert_eq!((r.status, r.text().as_str()), (500, "exec: \"late-tool-xyz\": executable file not found in $PATH\n"));
    tmp.script("late-tool-xyz", "#!/bin/sh\necho first\n");
    assert_eq!(wd.post("/", b"").text(), "first\n");
    std::fs::remove_file(tmp.path().join("late-tool-xyz")).unwrap();
    assert_eq!(wd.post("/", b"").status, 500, "the remembered path is gone");
    tmp.script("late-tool-xyz", "#!/bin/sh\necho second\n");
    assert_eq!(wd.post("/", b"").text(), "second\n");
}

#[test]
fn a_script_without_interpreter_line_is_an_exec_format_error() {
    let tmp = TempDir::new();
    let script = tmp.script("no-shebang", "echo hi\n");
    let wd = Watchdog::start(&[("fprocess", &script)]);
    let r = wd.post("/", b"");
    assert_eq!((r.status, r.text()), (500, format!("fork/exec {script}: exec format error\n")));
}

#[test]
fn functions_get_blocking_stdio() {
    // The watchdog's own pipe ends are non-blocking; the function's must not be, or a plain
    // `read` in the function fails with EAGAIN.
    for combine in ["true", "false"] {
        let wd = Watchdog::start(&[
            ("fprocess", "grep -h ^flags: /proc/self/fdinfo/0 /proc/self/fdinfo/1 /proc/self/fdinfo/2"),
            ("combine_output", combine),
        ]);
        let text = wd.post("/", b"").text();
        let flags: Vec<u32> = text
            .lines()
            .filter_map(|l| l.strip_prefix("flags:"))
            .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
            .collect();
        assert_eq!(flags.len(), 3, "{text}");
        assert!(flags.iter().all(|f| f & libc::O_NONBLOCK as u32 == 0), "combine_output={combine}: {text}");
    }
}
