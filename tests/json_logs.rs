//! `log_format=json`, black box: every line the watchdog writes is one JSON object with `time`,
//! `level` and `msg`; the request line has the request's fields; the function's logged lines say
//! which stream and which request they come from; bytes that are not UTF-8 are escaped and kept;
//! and `log_callid` tags the fork modes' function lines in text logs too.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// Every complete line of `text`, each checked to be a JSON object with an RFC 3339 `time` (UTC,
/// milliseconds), a `level` and a string `msg`. A line that is not says so, with the whole log.
fn objects(text: &str) -> Vec<Value> {
    // The last line may still be on its way.
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .map(|line| {
            let value: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\nlog:\n{text}"));
            let time = value["time"].as_str().unwrap_or_else(|| panic!("no time: {line}"));
            assert!(is_rfc3339_utc_millis(time), "time {time:?} in {line}");
            let level = value["level"].as_str().unwrap_or_else(|| panic!("no level: {line}"));
            assert!(LEVELS.contains(&level), "level {level:?} in {line}");
            assert!(value["msg"].is_string(), "no msg: {line}");
            value
        })
        .collect()
}

/// `2026-11-30T06:49:03.123Z`.
fn is_rfc3339_utc_millis(time: &str) -> bool {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd.dddZ";
    time.len() == SHAPE.len()
        && time.bytes().zip(SHAPE).all(|(b, &s)| if s == b'd' { b.is_ascii_digit() } else { b == s })
}

/// Waits for a line of the log for which `pick` is true, and returns it.
fn wait_line(wd: &Watchdog, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
    wait_for(Duration::from_secs(10), what, || objects(&wd.logs()).into_iter().find(|v| pick(v)))
}

fn msg(value: &Value) -> &str {
    value["msg"].as_str().unwrap_or_default()
}

/// The exact bytes of a function's line: `msg_base64` when present, else `msg`.
fn bytes_of(value: &Value) -> Vec<u8> {
    match value["msg_base64"].as_str() {
        Some(encoded) => base64_decode(encoded),
        None => msg(value).as_bytes().to_vec(),
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let digits: Vec<u32> = text
        .bytes()
        .filter(|&b| b != b'=')
        .map(|b| ALPHABET.iter().position(|&a| a == b).unwrap_or_else(|| panic!("not base64: {text}")) as u32)
        .collect();
    let mut out = Vec::new();
    for group in digits.chunks(4) {
        let n = group.iter().enumerate().fold(0u32, |n, (i, &d)| n | d << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..group.len()]);
    }
    out
}

/// Stops the watchdog and waits until its log has ended, so that every line it wrote is checked.
fn stop(wd: &mut Watchdog) {
    wd.signal(libc::SIGTERM);
    assert!(wd.wait_exit(Duration::from_secs(20)).success(), "log:\n{}", wd.logs());
}

fn start(mode: &str, fprocess: &str, more: &[(&str, &str)]) -> Watchdog {
    let mut env = vec![("mode", mode), ("fprocess", fprocess), ("log_format", "json"), ("healthcheck_interval", "0")];
    env.extend_from_slice(more);
    Watchdog::start(&env)
}

/// A function that logs a line on stderr and echoes its input.
const LOGS_AND_ECHOES: &str = "sh -c 'echo from the function >&2; cat'";

#[test]
fn every_line_is_json_with_request_fields_in_the_fork_modes() {
    for mode in ["classic", "streaming", "serializing"] {
        let extra: &[(&str, &str)] = if mode == "classic" { &[("combine_output", "false")] } else { &[] };
        let mut wd = start(mode, LOGS_AND_ECHOES, extra);
        let call_id = format!("call-{mode}");
        let response = wd.request("POST", "/p/q?x=1", &[("X-Call-Id", &call_id)], b"hello json");
        assert_eq!((response.status, response.text().as_str()), (200, "hello json"), "{mode}");
        // Refused before the function starts: still one request line.
        assert_eq!(wd.request("CONNECT", "/c", &[], b"").status, 405, "{mode}");

        let line = wait_line(&wd, "the request line", |v| v["status"] == 200);
        assert_eq!(line["method"], "POST", "{mode}: {line}");
        assert_eq!(line["path"], "/p/q", "{mode}: {line}");
        assert_eq!(line["query"], "x=1", "{mode}: {line}");
        assert_eq!(line["bytes"], 10, "{mode}: {line}");
        assert_eq!(line["call_id"], call_id.as_str(), "{mode}: {line}");
        let duration = line["duration_s"].as_f64().unwrap_or_else(|| panic!("{mode}: duration_s: {line}"));
        assert!((0.0..10.0).contains(&duration), "{mode}: {line}");
        assert!(msg(&line).starts_with("POST /p/q?x=1 - 200 - ContentLength: 10B ("), "{mode}: {line}");
        let refused = wait_line(&wd, "the 405's line", |v| v["status"] == 405);
        assert_eq!((&refused["method"], &refused["bytes"]), (&Value::from("CONNECT"), &Value::from(0)), "{mode}");
        assert!(refused.get("call_id").is_none(), "no X-Call-Id, no call_id: {refused}");

        let output = wait_line(&wd, "the function's line", |v| msg(v) == "from the function");
        assert_eq!(output["stream"], "stderr", "{mode}: {output}");
        assert_eq!(output["call_id"], call_id.as_str(), "{mode}: {output}");
        assert_eq!(output["level"], "info", "{mode}: {output}");

        stop(&mut wd);
        let all = objects(&wd.logs());
        assert!(wd.logs().ends_with('\n'), "{mode}: the log ends with a whole line");
        assert!(all.iter().any(|v| msg(v).starts_with("SIGTERM")), "{mode}: the shutdown is logged too");
        objects(&wd.stdout());
    }
}

#[test]
fn classic_keeps_its_own_lines_and_write_debug_output_is_json_on_stdout() {
    let mut wd = start(
        "classic",
        "printf 'one\\ntwo'",
        &[("write_debug", "true"), ("debug_headers", "true"), ("combine_output", "false")],
    );
    let response = wd.request("GET", "/", &[("X-Call-Id", "dbg-1")], b"");
    assert_eq!((response.status, response.text().as_str()), (200, "one\ntwo"));
    wait_line(&wd, "Forking fprocess.", |v| msg(v) == "Forking fprocess.");
    wait_line(&wd, "classic's Duration line", |v| msg(v).starts_with("Duration: "));
    wait_line(&wd, "the request line", |v| v["status"] == 200 && v["call_id"] == "dbg-1");
    stop(&mut wd);
    objects(&wd.logs());
    let stdout = objects(&wd.stdout());
    let output: Vec<&Value> = stdout.iter().filter(|v| v["stream"] == "stdout").collect();
    assert_eq!(output.iter().map(|v| msg(v)).collect::<Vec<_>>(), ["one", "two"], "a line each, the last too");
    assert!(output.iter().all(|v| v["call_id"] == "dbg-1"), "{output:?}");
    assert!(stdout.iter().any(|v| msg(v) == "[in] X-Call-Id=[dbg-1]"), "debug_headers: {stdout:?}");
}

#[test]
fn a_failed_functions_output_with_write_debug_is_one_object_with_every_byte() {
    let dir = TempDir::new();
    let script = dir.script("f.sh", "#!/bin/sh\nprintf 'first\\nsecond \\377'\nexit 3\n");
    let mut wd = start("classic", &script, &[("write_debug", "true")]);
    assert_eq!(wd.get("/").status, 500);
    let out = wait_line(&wd, "the Out= line", |v| msg(v).starts_with("Out="));
    assert_eq!(msg(&out), "Out=first\nsecond \u{fffd}", "{out}");
    assert_eq!(bytes_of(&out), b"Out=first\nsecond \xff", "{out}");
    wait_line(&wd, "the request line", |v| v["status"] == 500);
    stop(&mut wd);
    objects(&wd.logs());
}

#[test]
fn http_mode_lines_are_json_with_the_functions_output_and_the_status_text() {
    if tools::on_path("python3").is_none() {
        return tools::missing("python3", "log_format=json in http mode");
    }
    let dir = TempDir::new();
    std::fs::write(dir.path().join("upstream.py"), include_str!("http_upstream.py")).unwrap();
    let port = free_port();
    let fprocess = format!("python3 -u {} {port} {}", dir.path().join("upstream.py").display(), dir.path().display());
    let upstream = format!("http://127.0.0.1:{port}");
    let mut options = Options::new(&[
        ("mode", "http"),
        ("fprocess", &fprocess),
        ("upstream_url", &upstream),
        ("log_format", "json"),
        ("healthcheck_interval", "0"),
    ]);
    options.wait_healthy = false;
    let mut wd = Watchdog::start_with(options);
    wait_for(Duration::from_secs(30), "healthy", || (wd.try_get("/_/health").ok()?.status == 200).then_some(()));

    let response = wd.request("POST", "/mirror", &[("X-Call-Id", "h-1")], b"twelve bytes");
    assert_eq!(response.status, 200);
    let line = wait_line(&wd, "the request line", |v| v["path"] == "/mirror");
    assert_eq!((&line["status"], &line["bytes"], &line["call_id"]), (&200.into(), &12.into(), &"h-1".into()), "{line}");
    assert!(msg(&line).starts_with("POST /mirror - 200 OK - ContentLength: 12B"), "{line}");
    assert_eq!(wd.get("/status?code=404").status, 404);
    let line = wait_line(&wd, "the 404's line", |v| v["status"] == 404);
    assert_eq!((&line["path"], &line["query"]), (&"/status".into(), &"code=404".into()), "{line}");

    for stream in ["stdout", "stderr"] {
        let text = format!("upstream says hello on {stream}");
        let output = wait_line(&wd, &text, |v| msg(v) == text);
        assert_eq!(output["stream"], stream, "{output}");
        assert!(output.get("call_id").is_none(), "the function serves every request: {output}");
    }
    stop(&mut wd);
    objects(&wd.logs());
    objects(&wd.stdout());
}

#[test]
fn bytes_that_are_not_utf8_are_escaped_and_kept() {
    // `caf\xe9` (Latin-1), two stray bytes, then a real `é`, on stderr; then 20 000 `€` (3 bytes
    // each), a line long enough that the reads of its pipe end inside characters.
    let euros = "€".repeat(20_000);
    let dir = TempDir::new();
    let script = dir.script(
        "f.sh",
        &format!("#!/bin/sh\nprintf 'caf\\351 \\377\\376 ok \\303\\251\\n' >&2\nprintf '%s\\n' '{euros}' >&2\n"),
    );
    let mut wd = start("serializing", &script, &[]);
    assert_eq!(wd.post("/", b"").status, 200);
    let line = wait_line(&wd, "the function's line", |v| v["stream"] == "stderr");
    assert_eq!(msg(&line), "caf\u{fffd} \u{fffd}\u{fffd} ok é", "{line}");
    assert_eq!(bytes_of(&line), b"caf\xe9 \xff\xfe ok \xc3\xa9", "msg_base64 holds the bytes as written: {line}");
    let long = wait_line(&wd, "the long line", |v| v["stream"] == "stderr" && msg(v) != msg(&line));
    let replaced = msg(&long).matches('\u{fffd}').count();
    assert!(msg(&long) == euros, "the long line is {} bytes, {replaced} U+FFFD", msg(&long).len());
    assert!(long.get("msg_base64").is_none(), "valid UTF-8 needs no msg_base64");
    stop(&mut wd);
    objects(&wd.logs());
    // Our capture replaces bytes that are not UTF-8 with U+FFFD: none may have come from the watchdog.
    assert!(!wd.logs().contains('\u{fffd}'), "the watchdog wrote bytes that are not UTF-8:\n{}", wd.logs());
}

#[test]
fn a_split_long_line_is_one_object_per_piece_and_its_bytes_add_up() {
    // 99 ASCII bytes then `é`: the first cut at 100 bytes falls inside the `é`.
    let long = format!("{}é{}", "a".repeat(99), "b".repeat(149));
    let dir = TempDir::new();
    let script = dir.script("f.sh", &format!("#!/bin/sh\nprintf '%s\\nshort\\n' '{long}' >&2\n"));
    let mut wd = start("streaming", &script, &[("log_buffer_size", "100")]);
    assert_eq!(wd.post("/", b"").status, 200);
    wait_line(&wd, "the short line", |v| msg(v) == "short");
    stop(&mut wd);
    let pieces: Vec<Value> = objects(&wd.logs()).into_iter().filter(|v| v["stream"] == "stderr").collect();
    assert_eq!(pieces.len(), 4, "three pieces of 100, 100 and 50 bytes, then the short line: {pieces:?}");
    let lengths: Vec<usize> = pieces.iter().map(|v| bytes_of(v).len()).collect();
    assert_eq!(lengths, [100, 100, 50, 5]);
    let joined: Vec<u8> = pieces[..3].iter().flat_map(bytes_of).collect();
    assert_eq!(String::from_utf8(joined).unwrap(), long, "the pieces' bytes make the line again");
    assert!(pieces[0].get("msg_base64").is_some() && pieces[1].get("msg_base64").is_some(), "{pieces:?}");
    let cut: Vec<bool> = pieces.iter().map(|v| v["cut"] == true).collect();
    assert_eq!(cut, [true, true, false, false], "a piece that the next one continues says so: {pieces:?}");
}

#[test]
fn log_callid_tags_the_fork_modes_function_lines_in_text_logs() {
    for mode in ["classic", "streaming", "serializing"] {
        let mut env = vec![("mode", mode), ("fprocess", LOGS_AND_ECHOES), ("log_callid", "true")];
        if mode == "classic" {
            env.push(("combine_output", "false"));
        }
        let wd = Watchdog::start(&env);
        assert_eq!(wd.request("POST", "/", &[("X-Call-Id", "text-7")], b"x").status, 200);
        wd.wait_for_log("stderr: from the function [text-7]\n", Duration::from_secs(10));
        assert_eq!(wd.post("/", b"x").status, 200);
        wd.wait_for_log("stderr: from the function [none]\n", Duration::from_secs(10));
    }
    // Without log_callid the line is as before.
    let wd = Watchdog::start(&[("mode", "streaming"), ("fprocess", LOGS_AND_ECHOES)]);
    assert_eq!(wd.request("POST", "/", &[("X-Call-Id", "text-8")], b"x").status, 200);
    wd.wait_for_log("stderr: from the function\n", Duration::from_secs(10));
}

#[test]
fn prefix_logs_false_passes_the_functions_lines_on_as_they_are() {
    // A function that writes its own JSON lines keeps them, unwrapped.
    let mut wd = start("streaming", r#"sh -c 'echo "{\"own\":1}" >&2'"#, &[("prefix_logs", "false")]);
    assert_eq!(wd.post("/", b"").status, 200);
    wd.wait_for_log("\n{\"own\":1}\n", Duration::from_secs(10));
    stop(&mut wd);
    let log = wd.logs();
    let (own, watchdog): (Vec<&str>, Vec<&str>) = log.lines().partition(|line| *line == "{\"own\":1}");
    assert_eq!(own.len(), 1, "{log}");
    objects(&(watchdog.join("\n") + "\n"));
}

#[test]
fn a_bad_log_format_is_a_start_error_and_start_errors_are_json() {
    let (code, log) = start_error(&[("log_format", "xml")]);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("log_format: expected text or json, got \"xml\""), "{log}");

    let (code, log) = start_error(&[("log_format", "json"), ("exec_timeout", "abc")]);
    assert_eq!(code, Some(2), "{log}");
    let all = objects(&log);
    let error = all.iter().find(|v| v["level"] == "error").unwrap_or_else(|| panic!("{log}"));
    assert!(msg(error).starts_with("exec_timeout: "), "{error}");
}

/// Runs a watchdog of `cat` that should stop during its start: its exit code and its log.
fn start_error(env: &[(&str, &str)]) -> (Option<i32>, String) {
    run_once(&[&[("fprocess", "cat")], env].concat(), &[])
}
