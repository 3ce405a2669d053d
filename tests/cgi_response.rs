//! `cgi_response=true`, black box: a fork-mode function sets its own status and headers with a CGI
//! header block (RFC 3875 §6) in classic, serializing and streaming mode, and a block that is not
//! valid is a 502 that says why.

mod common;

use std::io::{BufReader, Write};
use std::time::Duration;

use common::*;

const FORK_MODES: [&str; 3] = ["classic", "serializing", "streaming"];

fn start(mode: &str, fprocess: &str, env: &[(&str, &str)]) -> Watchdog {
    let mut options = Options::new(&[("mode", mode), ("fprocess", fprocess), ("cgi_response", "true")]);
    options.env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    options.metrics = true;
    Watchdog::start_with(options)
}

/// A function that prints `text` (with `printf`'s escapes) and exits with `code`.
fn printing(text: &str, code: i32) -> String {
    format!("sh -c 'printf \"{text}\"; exit {code}'")
}

#[test]
fn a_function_answers_404_with_its_own_headers_in_every_fork_mode() {
    let fprocess = printing(
        "Status: 404 Not Found\\r\\nCache-Control: max-age=60\\r\\nContent-Type: text/html\\r\\n\
         Content-Length: 99\\r\\nConnection: keep-alive\\r\\nX-Two: a\\r\\nX-Two: b\\r\\n\\r\\n<p>gone</p>",
        0,
    );
    for mode in FORK_MODES {
        let wd = start(mode, &fprocess, &[]);
        let r = wd.post("/missing", b"");
        assert_eq!((r.status, r.text().as_str()), (404, "<p>gone</p>"), "{mode}");
        assert_eq!(r.header("Cache-Control"), Some("max-age=60"), "{mode}");
        assert_eq!(r.header("Content-Type"), Some("text/html"), "{mode}: the function's own type wins");
        let twos: Vec<&str> =
            r.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("x-two")).map(|(_, v)| v.as_str()).collect();
        assert_eq!(twos, ["a", "b"], "{mode}");
        assert!(r.header("Status").is_none(), "{mode}: Status is not a header");
        assert_ne!(r.header("Content-Length"), Some("99"), "{mode}: the watchdog frames the body");
        assert_eq!(r.header("X-Duration-Seconds").is_some(), mode != "streaming", "{mode}");
        wait_for(Duration::from_secs(5), "the 404 in the metrics", || {
            (metric_value(&wd.metrics(), r#"http_requests_total{code="404",method="post"}"#) == Some(1.0)).then_some(())
        });
    }
}

#[test]
fn location_without_status_is_a_302_and_status_alone_is_enough() {
    for mode in FORK_MODES {
        let wd = start(mode, &printing("Location: /elsewhere\\n\\n", 0), &[]);
        let r = wd.get("/");
        assert_eq!((r.status, r.header("Location")), (302, Some("/elsewhere")), "{mode}");
        let wd = start(mode, &printing("Status: 201\\n\\ncreated", 0), &[]);
        let r = wd.post("/", b"");
        assert_eq!((r.status, r.text().as_str()), (201, "created"), "{mode}");
    }
}

/// Without a Content-Type from the function: `content_type`, then (classic) the request's, then the
/// mode's default.
#[test]
fn the_usual_content_type_applies_only_when_the_function_sends_none() {
    let fprocess = printing("Status: 200\\n\\n{}", 0);
    let typed = |mode: &str, env: &[(&str, &str)]| {
        let wd = start(mode, &fprocess, env);
        let r = wd.request("POST", "/", &[("Content-Type", "text/x-request")], b"{}");
        assert_eq!(r.status, 200, "{mode}");
        r.header("Content-Type").map(str::to_string)
    };
    assert_eq!(typed("classic", &[]).as_deref(), Some("text/x-request"));
    assert_eq!(typed("serializing", &[]).as_deref(), Some("application/octet-stream"));
    assert_eq!(typed("streaming", &[("content_type", "application/json")]).as_deref(), Some("application/json"));
    assert_eq!(typed("classic", &[("content_type", "application/json")]).as_deref(), Some("application/json"));
}

#[test]
fn a_block_that_is_not_valid_is_a_502_that_says_why() {
    let endless_header = "sh -c 'while :; do echo X-Again: and again; done'";
    let long_block =
        "sh -c 'i=0; while [ $i -lt 5000 ]; do echo X-Filler-$i: 0123456789; i=$((i+1)); done; echo; echo body'";
    let cases: [(&str, String, &str, &str); 5] = [
        ("plain text", printing("hello world\\n", 0), "is not `Name: value`", "\"hello world\""),
        ("bad status", printing("Status: abc\\n\\nbody", 0), "Status is not a status code", "\"Status: abc\""),
        ("never ends", printing("X-A: 1\\nX-B: 2\\n", 0), "the output ended before the empty line", "\"X-B: 2\""),
        ("endless", endless_header.to_string(), "not complete within 64 KiB", ""),
        ("too long", long_block.to_string(), "not complete within 64 KiB", ""),
    ];
    for mode in FORK_MODES {
        for (what, fprocess, why, line) in &cases {
            let wd = start(mode, fprocess, &[]);
            let r = wd.post("/", b"");
            assert_eq!(r.status, 502, "{mode} {what}: {}", r.text());
            assert!(r.text().contains(why) && r.text().lines().count() == 1, "{mode} {what}: {}", r.text());
            assert_eq!(r.header("X-OpenFaaS-Internal"), Some("of-watchdog"), "{mode} {what}");
            wd.wait_for_log("Function's CGI header block refused: ", Duration::from_secs(5));
            assert!(wd.logs().contains(why), "{mode} {what}: {}", wd.logs());
            if !line.is_empty() {
                wd.wait_for_log(line, Duration::from_secs(5));
            }
            // An endless block: the function was stopped, not left running.
            wait_for(Duration::from_secs(5), "the function gone", || wd.descendants().is_empty().then_some(()));
        }
    }
}

#[test]
fn a_function_that_fails_is_500_whatever_it_printed() {
    let fprocess = printing("Status: 200\\n\\nhello", 3);
    for mode in ["classic", "serializing"] {
        let wd = start(mode, &fprocess, &[]);
        let r = wd.post("/", b"");
        assert_eq!((r.status, r.text().as_str()), (500, "exit status 3\nStatus: 200\n\nhello"), "{mode}");
    }
    // Streaming sent the head as soon as the block was complete: the failure cuts the body.
    let wd = start("streaming", "sh -c 'printf \"Status: 202\\n\\nhello\"; sleep 0.2; exit 3'", &[]);
    let mut conn = wd.connect();
    conn.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut reader = BufReader::new(conn);
    let head = read_head(&mut reader).expect("a head");
    assert_eq!(head.status, 202);
    let mut body = Vec::new();
    let complete = std::io::Read::read_to_end(&mut Chunked::new(reader), &mut body);
    assert!(complete.is_err(), "a cut response must not end cleanly: {:?}", String::from_utf8_lossy(&body));
    wd.wait_for_log("POST / - 500 - ContentLength: 5B", Duration::from_secs(5));
}

/// Streaming: the head goes out once the block is complete, before the function is done, and the
/// body streams after it.
#[test]
fn streaming_sends_the_head_then_streams_the_body() {
    let tmp = TempDir::new();
    let go = tmp.path().join("go");
    let fprocess = format!(
        "sh -c 'printf \"Status: 201\\nX-Step: head\\n\\nfirst\\n\"; while [ ! -e {} ]; do sleep 0.01; done; echo second'",
        go.display()
    );
    let wd = start("streaming", &fprocess, &[]);
    let mut conn = wd.connect();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut reader = BufReader::new(conn);
    let head = read_head(&mut reader).expect("the head before the function is done");
    assert_eq!((head.status, head.header("X-Step")), (201, Some("head")));
    std::fs::write(&go, b"").unwrap();
    let mut body = String::new();
    std::io::Read::read_to_string(&mut Chunked::new(reader), &mut body).expect("a complete body");
    assert_eq!(body, "first\nsecond\n");
}

/// HEAD in streaming mode: the block decides the status, then the function is stopped.
#[test]
fn head_takes_the_status_from_the_block_and_stops_the_function() {
    let tmp = TempDir::new();
    let marker = format!("fwd-cgi-head-{}", std::process::id());
    let sleep = tmp.tagged_sleep(&marker);
    let wd = start("streaming", &format!("sh -c 'printf \"Status: 410\\n\\n\"; exec {sleep} 30'"), &[]);
    let r = wd.request("HEAD", "/", &[], b"");
    assert_eq!(r.status, 410);
    wait_for(Duration::from_secs(5), "the function stopped", || processes_with(&marker).is_empty().then_some(()));
}
