//! `max_queue`, black box: requests beyond `max_inflight` wait for a slot, first come first served,
//! within their own time limit; a full queue is a 429 at once, `/_/ready` says 429 only then, and
//! the drain serves the queue.

mod common;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

/// A function that writes its request's `X-Id` to `order` when it starts, then waits for the file
/// `go` and answers with the id.
fn gated(dir: &Path) -> String {
    let (order, go) = (dir.join("order"), dir.join("go"));
    format!(
        "sh -c 'echo $Http_X_Id >> {}; while [ ! -e {} ]; do sleep 0.01; done; echo $Http_X_Id'",
        order.display(),
        go.display()
    )
}

fn start(env: &[(&str, &str)]) -> Watchdog {
    let mut options = Options::new(env);
    options.metrics = true;
    Watchdog::start_with(options)
}

fn metric(wd: &Watchdog, series: &str) -> f64 {
    metric_value(&wd.metrics(), series).unwrap_or_else(|| panic!("no {series}"))
}

/// Sends a POST with `X-Id: id` on a thread and returns its answer when it comes.
fn request(port: u16, id: &str) -> JoinHandle<std::io::Result<Response>> {
    let raw = build_request("POST", "/", &[("X-Id", id)], b"");
    std::thread::spawn(move || send(port, &raw))
}

fn wait_metric(wd: &Watchdog, series: &str, value: f64) {
    wait_for(Duration::from_secs(10), &format!("{series} {value}"), || (metric(wd, series) == value).then_some(()));
}

#[test]
fn queued_requests_are_served_first_come_first_served_and_a_full_queue_is_429_at_once() {
    let tmp = TempDir::new();
    let wd = start(&[("fprocess", &gated(tmp.path())), ("max_inflight", "1"), ("max_queue", "3")]);
    let first = request(wd.port, "A");
    wait_metric(&wd, "http_requests_in_flight", 1.0);
    assert_eq!(wd.get("/_/ready").status, 200, "the queue has room: a new request would wait, not get 429");
    let mut queued = Vec::new();
    for (n, id) in ["B", "C", "D"].into_iter().enumerate() {
        queued.push(request(wd.port, id));
        wait_metric(&wd, "http_requests_queued", (n + 1) as f64);
    }
    let refused = Instant::now();
    let r = wd.request("POST", "/", &[("X-Id", "E")], b"");
    assert_eq!(r.status, 429, "a full queue: {}", r.text());
    assert!(refused.elapsed() < Duration::from_secs(2), "refused at once");
    assert_eq!(r.text(), "Concurrent request limit exceeded. Max concurrent requests: 1\n");
    assert_eq!(r.header("X-OpenFaaS-Internal"), Some("faas-middleware"));
    assert_eq!(wd.get("/_/ready").status, 429, "a new request would get 429");

    std::fs::write(tmp.path().join("go"), b"").unwrap();
    for (id, answer) in ["A", "B", "C", "D"].into_iter().zip(std::iter::once(first).chain(queued)) {
        let r = answer.join().unwrap().expect("an answer");
        assert_eq!((r.status, r.text().trim()), (200, id));
    }
    let order = std::fs::read_to_string(tmp.path().join("order")).unwrap();
    assert_eq!(order.split_whitespace().collect::<Vec<_>>(), ["A", "B", "C", "D"], "first come, first served");
    wait_metric(&wd, "http_requests_queued", 0.0);
    assert_eq!(metric(&wd, "http_request_queue_seconds_count"), 3.0);
    assert_eq!(metric(&wd, r#"http_request_queue_seconds_bucket{le="0.005"}"#), 0.0, "they waited");
    assert_eq!(metric(&wd, r#"http_requests_total{code="429",method="post"}"#), 1.0);
}

// That waiting counts against a request's own time limit is shown in http mode, where a request
// can have a shorter one than the request it waits behind (tests/http_mode.rs,
// `a_queued_request_leaves_the_queue_at_its_own_time_limit`).

#[test]
fn a_client_that_goes_away_leaves_the_queue() {
    let tmp = TempDir::new();
    let wd = start(&[("fprocess", &gated(tmp.path())), ("max_inflight", "1"), ("max_queue", "1")]);
    let first = request(wd.port, "A");
    wait_metric(&wd, "http_requests_in_flight", 1.0);
    let mut gone = wd.connect();
    gone.write_all(&build_request("POST", "/", &[("X-Id", "gone")], b"")).unwrap();
    wait_metric(&wd, "http_requests_queued", 1.0);
    drop(gone);
    wait_metric(&wd, "http_requests_queued", 0.0);
    // Its place is free again.
    let second = request(wd.port, "B");
    wait_metric(&wd, "http_requests_queued", 1.0);
    std::fs::write(tmp.path().join("go"), b"").unwrap();
    assert_eq!(first.join().unwrap().unwrap().status, 200);
    assert_eq!(second.join().unwrap().unwrap().text().trim(), "B");
    let order = std::fs::read_to_string(tmp.path().join("order")).unwrap();
    assert_eq!(order.split_whitespace().collect::<Vec<_>>(), ["A", "B"], "the client that left never ran");
}

/// 200 concurrent requests against 2 slots and a queue of 20, a third of the clients giving up
/// early: every answer is a 200 or a 429, nothing is left queued or running, no process survives.
#[test]
fn a_burst_of_200_with_clients_giving_up() {
    let marker = format!("fwd-queue-burst-{}", std::process::id());
    let tmp = TempDir::new();
    let sleep = tmp.tagged_sleep(&marker);
    let wd =
        start(&[("fprocess", &format!("sh -c '{sleep} 0.05; echo done'")), ("max_inflight", "2"), ("max_queue", "20")]);
    let port = wd.port;
    let clients: Vec<JoinHandle<Option<u16>>> = (0..200)
        .map(|n| {
            std::thread::spawn(move || {
                let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
                let mut writer = stream.try_clone().ok()?;
                writer.write_all(&build_request("POST", "/", &[], b"")).ok()?;
                if n % 3 == 0 {
                    // Gives up before its answer could come.
                    stream.set_read_timeout(Some(Duration::from_millis(30))).ok()?;
                    let _ = read_response(&mut BufReader::new(&stream), false);
                    return None;
                }
                stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
                read_response(&mut BufReader::new(&stream), false).ok().map(|r| r.status)
            })
        })
        .collect();
    let statuses: Vec<u16> = clients.into_iter().filter_map(|c| c.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429), "{statuses:?}");
    assert!(statuses.contains(&200) && statuses.contains(&429), "{statuses:?}");
    wait_metric(&wd, "http_requests_queued", 0.0);
    wait_metric(&wd, "http_requests_in_flight", 0.0);
    wait_for(Duration::from_secs(10), "no function left", || processes_with(&marker).is_empty().then_some(()));
    assert_eq!(wd.post("/", b"").status, 200);
}

/// On SIGTERM the queue is served during the drain, like the requests in flight.
#[test]
fn the_drain_serves_the_queue() {
    let tmp = TempDir::new();
    let mut wd = start(&[
        ("fprocess", &gated(tmp.path())),
        ("max_inflight", "1"),
        ("max_queue", "2"),
        ("healthcheck_interval", "0"),
        ("write_timeout", "20s"),
    ]);
    let answers: Vec<_> = ["A", "B", "C"]
        .into_iter()
        .enumerate()
        .map(|(n, id)| {
            let answer = request(wd.port, id);
            if n == 0 {
                wait_metric(&wd, "http_requests_in_flight", 1.0);
            } else {
                wait_metric(&wd, "http_requests_queued", n as f64);
            }
            answer
        })
        .collect();
    wd.signal(libc::SIGTERM);
    wd.wait_for_log("draining", Duration::from_secs(5));
    std::fs::write(tmp.path().join("go"), b"").unwrap();
    for (id, answer) in ["A", "B", "C"].into_iter().zip(answers) {
        let r = answer.join().unwrap().expect("an answer");
        assert_eq!((r.status, r.text().trim()), (200, id));
    }
    assert!(wd.wait_exit(Duration::from_secs(10)).success());
}
