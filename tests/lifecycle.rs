//! Lifecycle, black box: SIGTERM/SIGINT drains, second signals, forwarded signals, readiness and
//! the watchdog as PID 1 in a fresh PID namespace.
#![allow(unsafe_code)] // SIGTERM to the PID-1 watchdog

mod common;

use std::io::Write;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// A function that sleeps for as many seconds as its path says (`/2` → 2 s), then prints `done`.
const SLEEPY: &str = "sh -c 'sleep ${Http_Path#/}; echo done'";

fn in_background(port: u16, path: &str) -> thread::JoinHandle<std::io::Result<Response>> {
    let request = build_request("POST", path, &[], b"");
    thread::spawn(move || send(port, &request))
}

fn running_sleeps(wd: &Watchdog) -> usize {
    wd.descendants()
        .iter()
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0")))
        .count()
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_0() {
    let mut wd = Watchdog::start(&[("fprocess", SLEEPY), ("healthcheck_interval", "2"), ("write_timeout", "20")]);
    // They outlast the interval, so the drain finds them in flight.
    let slow: Vec<_> = (0..3).map(|_| in_background(wd.port, "/4")).collect();
    wait_for(Duration::from_secs(5), "3 functions running", || (running_sleeps(&wd) == 3).then_some(()));

    let signalled = Instant::now();
    wd.signal(libc::SIGTERM);
    wait_for(Duration::from_secs(2), "health 503", || (wd.get("/_/health").status == 503).then_some(()));
    assert!(!wd.lock_path().exists(), "lock file removed with the signal");
    let ready = wd.get("/_/ready");
    assert_eq!(ready.status, 503);
    // Still serving during healthcheck_interval.
    let during = wd.post("/0", b"");
    assert_eq!((during.status, during.text().as_str()), (200, "done\n"));
    assert!(signalled.elapsed() < Duration::from_secs(2), "checked within the interval");

    wait_for(Duration::from_secs(5), "new connections refused", || (!accepts(wd.port)).then_some(()));
    assert!(signalled.elapsed() >= Duration::from_millis(1900), "listener closed only after the interval");
    for request in slow {
        let r = request.join().unwrap().expect("in-flight request answered");
        assert_eq!((r.status, r.text().as_str()), (200, "done\n"));
    }
    let status = wd.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", wd.logs());
    let log = wd.logs();
    assert!(log.contains("SIGTERM: no new connections in 2s"), "{log}");
    assert!(log.contains("No new connections allowed, draining: 3 requests"), "{log}");
    assert!(log.contains("Exiting."), "{log}");
    assert!(!wd.lock_path().exists());
    let removing = format!("Removing lock-file : {}", wd.lock_path().display());
    assert_eq!(log.matches(&removing).count(), 1, "logged once, as Go does:\n{log}");
}

#[test]
fn sigint_drains_without_the_healthcheck_wait() {
    let mut wd = Watchdog::start(&[("fprocess", SLEEPY), ("healthcheck_interval", "30")]);
    let slow = in_background(wd.port, "/1");
    wait_for(Duration::from_secs(5), "function running", || (running_sleeps(&wd) == 1).then_some(()));
    let signalled = Instant::now();
    wd.signal(libc::SIGINT);
    let r = slow.join().unwrap().expect("in-flight request answered");
    assert_eq!((r.status, r.text().as_str()), (200, "done\n"));
    assert_eq!(wd.wait_exit(Duration::from_secs(10)).code(), Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(10), "did not wait healthcheck_interval");
    assert!(wd.logs().contains("SIGINT: no new connections in 0s"));
    assert!(!wd.lock_path().exists());
    assert_eq!(wd.logs().matches("Removing lock-file : ").count(), 1, "{}", wd.logs());
}

#[test]
fn a_second_signal_exits_at_once_and_kills_the_functions() {
    let tmp = TempDir::new();
    let marker = format!("fwd-second-signal-{}", std::process::id());
    let fprocess = format!("sh -c '{} 30; echo done'", tmp.tagged_sleep(&marker));
    let mut wd = Watchdog::start(&[("fprocess", &fprocess), ("healthcheck_interval", "30")]);
    let slow = in_background(wd.port, "/");
    wait_for(Duration::from_secs(5), "function running", || (!processes_with(&marker).is_empty()).then_some(()));
    wd.signal(libc::SIGTERM);
    wd.wait_for_log("SIGTERM: no new connections in 30s", Duration::from_secs(5));
    wd.signal(libc::SIGTERM);
    let status = wd.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{}", wd.logs());
    wait_for(Duration::from_secs(2), "no survivors", || processes_with(&marker).is_empty().then_some(()));
    assert!(!wd.lock_path().exists());
    let _ = slow.join();
}

#[test]
fn zero_intervals_do_not_hang_and_unfinished_requests_are_answered() {
    let tmp = TempDir::new();
    let marker = format!("fwd-zero-drain-{}", std::process::id());
    let fprocess = format!("sh -c '{} 30; echo done'", tmp.tagged_sleep(&marker));
    let mut wd = Watchdog::start(&[("fprocess", &fprocess), ("healthcheck_interval", "0"), ("write_timeout", "0")]);
    let slow = in_background(wd.port, "/");
    wait_for(Duration::from_secs(5), "function running", || (!processes_with(&marker).is_empty()).then_some(()));
    wd.signal(libc::SIGTERM);
    let r = slow.join().unwrap().expect("the request is answered, not dropped");
    assert_eq!(r.status, 503);
    assert!(r.text().contains("shutting down"), "{}", r.text());
    assert_eq!(wd.wait_exit(Duration::from_secs(5)).code(), Some(0));
    wait_for(Duration::from_secs(2), "no survivors", || processes_with(&marker).is_empty().then_some(()));
    assert!(!wd.lock_path().exists());
}

#[test]
fn idle_keep_alive_connections_do_not_delay_the_exit() {
    let mut wd = Watchdog::start(&[("fprocess", "cat")]);
    let mut idle = wd.connect();
    idle.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi").unwrap();
    let r = read_response(&mut std::io::BufReader::new(&idle), false).unwrap();
    assert_eq!(r.status, 200);
    let signalled = Instant::now();
    wd.signal(libc::SIGINT);
    assert_eq!(wd.wait_exit(Duration::from_secs(5)).code(), Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(3));
}

#[test]
fn other_signals_reach_the_running_functions() {
    let tmp = TempDir::new();
    let trapped = tmp.path().join("trapped");
    let fprocess = format!(
        "sh -c 'trap \"echo got-usr1; exit 0\" USR1; touch {}; while :; do sleep 1 & wait; done'",
        trapped.display()
    );
    let wd = Watchdog::start(&[("fprocess", &fprocess)]);
    let request = in_background(wd.port, "/");
    // Before its trap is set, SIGUSR1 would kill sh: signal only once the function says it is.
    wait_for(Duration::from_secs(10), "the function to set its trap", || trapped.exists().then_some(()));
    wd.signal(libc::SIGUSR1);
    let r = request.join().unwrap().unwrap();
    assert_eq!((r.status, r.text().as_str()), (200, "got-usr1\n"));
    assert_eq!(wd.get("/_/health").status, 200, "SIGUSR1 does not stop the watchdog");
}

// ---------------------------------------------------------------- readiness

#[test]
fn ready_follows_health_and_the_limiter() {
    let wd = Watchdog::start(&[("fprocess", SLEEPY), ("max_inflight", "1")]);
    assert_eq!(wd.get("/_/ready").status, 200);
    assert_eq!(wd.request("POST", "/_/ready", &[], b"").status, 405);
    let slow = in_background(wd.port, "/1");
    wait_for(Duration::from_secs(5), "function running", || (running_sleeps(&wd) == 1).then_some(()));
    assert_eq!(wd.get("/_/ready").status, 429, "limiter full");
    assert_eq!(slow.join().unwrap().unwrap().status, 200);
    assert_eq!(wd.get("/_/ready").status, 200);
}

#[test]
fn ready_path_asks_the_function() {
    let fprocess = "sh -c 'echo \"$Http_Path\"; test \"$Http_Path\" != /not-ready'";
    let wd = Watchdog::start(&[("fprocess", fprocess), ("ready_path", "/ready"), ("max_inflight", "1")]);
    let r = wd.get("/_/ready");
    assert_eq!((r.status, r.text().as_str()), (200, "/ready\n"));
    let wd = Watchdog::start_with(Options {
        metrics: true,
        ..Options::new(&[("fprocess", fprocess), ("ready_path", "/not-ready")])
    });
    assert_eq!(wd.get("/_/ready").status, 500);
    let metrics = wd.metrics();
    assert!(!metrics.contains("http_requests_total{"), "readiness checks are not counted:\n{metrics}");
}

// ---------------------------------------------------------------- PID 1

fn unshare_works() -> bool {
    let ok = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip("`unshare --pid --fork --mount-proc` is not permitted here; PID-1 behaviour untested");
    }
    ok
}

fn as_pid1(env: &[(&str, &str)]) -> Watchdog {
    let mut options = Options::new(env);
    options.wrapper = ["unshare", "--pid", "--fork", "--mount-proc"].map(String::from).to_vec();
    Watchdog::start_with(options)
}

/// The watchdog's PID 1 (the init) as seen from the host: the child of `unshare`.
fn init_pid(wd: &Watchdog) -> u32 {
    all_processes().into_iter().find(|p| p.ppid == wd.pid()).map(|p| p.pid).expect("init process")
}

#[test]
fn as_pid1_reaps_orphans_and_runs_the_server_as_its_child() {
    if !unshare_works() {
        return;
    }
    let fprocess = "sh -c 'setsid sleep 0.01 </dev/null >/dev/null 2>&1 & echo $PPID; cat'";
    let mut wd = as_pid1(&[("fprocess", fprocess), ("healthcheck_interval", "1")]);
    let r = wd.post("/", b"x");
    assert_eq!((r.status, r.text().as_str()), (200, "2\nx"), "the server is PID 2, under the init");

    let port = wd.port;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            thread::spawn(move || {
                for _ in 0..125 {
                    let r = send(port, &build_request("POST", "/", &[], b"y")).unwrap();
                    assert_eq!(r.status, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let init = init_pid(&wd);
    wait_for(Duration::from_secs(5), "0 zombies in the namespace", || {
        let zombies = all_processes()
            .iter()
            .filter(|p| p.state == 'Z' && (p.ppid == init || descendants(init).contains(&p.pid)))
            .count();
        (zombies == 0).then_some(())
    });

    // SIGTERM to PID 1 is forwarded; the server drains and everything exits 0.
    // SAFETY: plain syscall.
    unsafe { libc::kill(init as i32, libc::SIGTERM) };
    wait_for(Duration::from_secs(5), "health 503", || {
        wd.try_get("/_/health").map_or(Some(()), |r| (r.status == 503).then_some(()))
    });
    assert_eq!(wd.wait_exit(Duration::from_secs(45)).code(), Some(0), "{}", wd.logs());
}
