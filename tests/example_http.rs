//! The http-mode example (examples/hello-http): a long-running Python HTTP server behind
//! `mode=http`, run through the real binary with its Dockerfile's settings.

mod common;
mod example_support;

use std::time::Duration;

use common::*;
use example_support::*;

#[test]
fn hello_http_serves_every_request_from_one_long_running_server() {
    let upstream_url = format!("http://127.0.0.1:{}", free_port());
    let wd = start("hello-http", &example_dir("hello-http"), &[("upstream_url", &upstream_url)]);
    let post = |body: &[u8]| send(wd.port, &build_request("POST", "/", &[], body));

    // The watchdog is meant to wait for the server before it reports healthy; allow for one that
    // does not, since starting Python takes a moment.
    let first =
        wait_for(Duration::from_secs(10), "the server to answer", || post(b"World").ok().filter(|r| r.status == 200));
    assert_eq!(first.text(), "Hello, http. You said: World", "log:\n{}", wd.logs());
    assert_eq!(first.header("Content-Type"), Some("text/plain; charset=utf-8"));

    // State survives between requests: the same process answers, counting.
    let served = |r: &Response| r.header("X-Served").and_then(|n| n.parse::<u64>().ok()).expect("X-Served");
    let big: Vec<u8> = (0..=255u8).cycle().take(1 << 20).collect();
    let second = post(&big).expect("second request");
    assert_eq!(second.status, 200);
    assert!(second.body == [b"Hello, http. You said: ".as_slice(), &big].concat(), "1 MiB body changed");
    assert_eq!(served(&second), served(&first) + 1);

    // The function chooses status and headers.
    let r = wd.get("/");
    assert_eq!((r.status, r.header("Allow")), (405, Some("POST")));

    let servers: Vec<u32> = wd.descendants().into_iter().filter(|&pid| is_python(pid)).collect();
    assert_eq!(servers.len(), 1, "one server process below the watchdog: {servers:?}");
}

fn is_python(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains("server.py"))
}
