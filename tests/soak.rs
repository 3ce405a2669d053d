//! Soak, black box: thousands of requests from 8 concurrent keep-alive clients, mixing success,
//! non-zero exit, exec timeout and client abort. Afterwards nothing may have leaked (processes,
//! zombies, descriptors, memory, in-flight count) and every answer must have been the right one.
//!
//! `soak_1000` runs by default; `soak_10000` with `cargo test --test soak -- --ignored`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::http::Client;
use common::procfs::{Usage, idle_usage, usage};
use common::*;

const WORKERS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Ok,
    Fail,
    Timeout,
    Abort,
}

/// Requests `0..WARM_UP` bring the watchdog to its steady state before the baseline is taken.
const WARM_UP: usize = 400;

/// What request `i` of a run does: one in 200 times out (but none in the warm-up, where they would
/// only cost time), one in 20 is aborted, 3 in 20 fail, the rest succeed. exec_timeout is
/// generous (3 s) so that a busy machine does not turn successes into timeouts.
fn kind(i: usize) -> Kind {
    if i.is_multiple_of(200) && i >= WARM_UP {
        return Kind::Timeout;
    }
    match i % 20 {
        1 => Kind::Abort,
        2..=4 => Kind::Fail,
        _ => Kind::Ok,
    }
}

/// Requests `0..BIG_FIRST` (part of the warm-up) all carry big bodies, so the allocator has seen the
/// most memory the mix can need at once before the RSS baseline is taken.
const BIG_FIRST: usize = 64;

/// A body of a length that varies from a few bytes to more than a pipe holds, unique to `i`.
fn body(i: usize) -> Vec<u8> {
    let len = if i < BIG_FIRST || i % 50 == 7 { 256 * 1024 } else { (i * 7919) % 20_000 };
    format!("request {i};").bytes().cycle().take(len.max(12)).collect()
}

/// Runs requests `first..first + count` from `WORKERS` keep-alive clients and returns how many of
/// each kind got which status (`0` for an abort, which reads nothing). Panics on any wrong answer.
fn drive(port: u16, first: usize, count: usize) -> BTreeMap<(Kind, u16), usize> {
    // A shared queue, so that no worker gets all the slow requests.
    let next = Arc::new(AtomicUsize::new(first));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let next = Arc::clone(&next);
            std::thread::spawn(move || {
                let mut client = Client::new(port);
                let mut seen = BTreeMap::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= first + count {
                        return seen;
                    }
                    *seen.entry((kind(i), one(&mut client, port, i))).or_insert(0) += 1;
                }
            })
        })
        .collect();
    let mut all = BTreeMap::new();
    for (key, n) in workers.into_iter().flat_map(|w| w.join().expect("soak worker")) {
        *all.entry(key).or_insert(0) += n;
    }
    all
}

fn one(client: &mut Client, port: u16, i: usize) -> u16 {
    let kind = kind(i);
    if kind == Kind::Abort {
        // A client that gives up at some point after sending: before, while or after the
        // function starts. (The pause is client behaviour, not synchronisation.)
        let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        conn.write_all(&build_request("POST", "/abort", &[], b"abort me")).expect("send");
        std::thread::sleep(Duration::from_millis((i % 4) as u64));
        return 0;
    }
    let path = match kind {
        Kind::Ok => "/ok".to_string(),
        Kind::Fail => format!("/fail?{i}"),
        _ => "/timeout".to_string(),
    };
    let body = body(i);
    let r = client.request("POST", &path, &body).unwrap_or_else(|e| panic!("request {i} ({kind:?}): {e}"));
    let right = match kind {
        Kind::Ok => r.status == 200 && r.body == body,
        Kind::Fail => r.status == 500 && r.text() == format!("exit status 3\nfailed {i}\n"),
        _ => r.status == 408 && r.text() == "Killed process.\n",
    };
    assert!(
        right,
        "request {i} ({kind:?}): {} {:?}",
        r.status,
        String::from_utf8_lossy(&r.body[..r.body.len().min(200)])
    );
    r.status
}

/// Waits until no request is in flight, no function process is left and the descriptors are back
/// to at most `fds`; returns the watchdog's resources then.
fn settled(wd: &Watchdog, marker: &str, fds: usize) -> Usage {
    wait_for(Duration::from_secs(10), "the watchdog to settle", || {
        let now = usage(wd.pid());
        let quiet = metric_value(&wd.metrics(), "http_requests_in_flight") == Some(0.0);
        (quiet
            && now.fds <= fds
            && now.zombies == 0
            && wd.descendants().is_empty()
            && processes_with(marker).is_empty())
        .then_some(now)
    })
}

fn totals(wd: &Watchdog) -> BTreeMap<u16, f64> {
    let text = wd.metrics();
    [200, 408, 500]
        .into_iter()
        .map(|code| {
            let series = format!("http_requests_total{{code=\"{code}\",method=\"post\"}}");
            (code, metric_value(&text, &series).unwrap_or(0.0))
        })
        .collect()
}

fn soak(mode: &str, total: usize) {
    let tmp = TempDir::new();
    let marker = format!("fwd-soak-{mode}-{total}-{}", std::process::id());
    let script = tmp.script(
        "function",
        &format!(
            "#!/bin/sh\ncase \"$Http_Path\" in\n  /ok) exec cat ;;\n  /fail) cat >/dev/null; echo \"failed $Http_Query\"; exit 3 ;;\n  *) exec {} 30 ;;\nesac\n",
            tmp.tagged_sleep(&marker)
        ),
    );
    let mut options =
        Options::new(&[("fprocess", &script), ("mode", mode), ("exec_timeout", "3s"), ("read_timeout", "10s")]);
    options.metrics = true;
    let mut wd = Watchdog::start_with(options);
    let start_fds = idle_usage(wd.pid(), wd.port).fds;

    drive(wd.port, 0, WARM_UP);
    let base = settled(&wd, &marker, start_fds);
    let base_totals = totals(&wd);

    let begin = Instant::now();
    let seen = drive(wd.port, WARM_UP, total);
    let took = begin.elapsed();
    let end = settled(&wd, &marker, base.fds);
    let end_totals = totals(&wd);
    assert!(wd.try_status().is_none(), "{}", wd.logs());

    let count = |k: Kind| (WARM_UP..WARM_UP + total).filter(|&i| kind(i) == k).count();
    let expected: BTreeMap<(Kind, u16), usize> = [
        ((Kind::Ok, 200), count(Kind::Ok)),
        ((Kind::Fail, 500), count(Kind::Fail)),
        ((Kind::Timeout, 408), count(Kind::Timeout)),
        ((Kind::Abort, 0), count(Kind::Abort)),
    ]
    .into_iter()
    .collect();
    assert_eq!(seen, expected, "answers by (kind, status)");
    let delta = |code: u16| (end_totals[&code] - base_totals[&code]) as usize;
    assert_eq!((delta(200), delta(500)), (count(Kind::Ok), count(Kind::Fail)), "metrics by status");
    // An abort the watchdog did not notice before exec_timeout is answered (into the void) with 408.
    assert!((count(Kind::Timeout)..=count(Kind::Timeout) + count(Kind::Abort)).contains(&delta(408)));
    let rss_delta = end.rss_kib as i64 - base.rss_kib as i64;
    assert!(rss_delta <= 2048, "RSS grew by {rss_delta} KiB ({} -> {} KiB)", base.rss_kib, end.rss_kib);

    eprintln!(
        "soak[{mode}] {total} requests, {WORKERS} connections: {:.1} s ({:.0} req/s); 200: {}, 500: {}, 408: {}, \
         aborted: {} (metrics 408: {}); RSS {} -> {} KiB ({rss_delta:+} KiB); fds {} -> {} (start {start_fds}); \
         zombies {}; in flight 0",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64(),
        count(Kind::Ok),
        count(Kind::Fail),
        count(Kind::Timeout),
        count(Kind::Abort),
        delta(408),
        base.rss_kib,
        end.rss_kib,
        base.fds,
        end.fds,
        end.zombies,
    );
}

#[test]
fn soak_1000() {
    soak("classic", 1000);
}

#[test]
#[ignore = "long (about 30-40 s): cargo test --test soak -- --ignored"]
fn soak_10000() {
    soak("classic", 10_000);
}
