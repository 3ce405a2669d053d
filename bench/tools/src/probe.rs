//! Talking to a watchdog from outside: `/_/health` over a raw socket, the exec-to-healthy time,
//! waiting for a started watchdog, and free ports.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::Result;

/// Time allowed from exec to healthy before a start counts as failed.
const START_LIMIT: Duration = Duration::from_secs(5);
/// Pause between health polls while timing a start: short enough to resolve well below a
/// millisecond, long enough not to steal the CPU the starting watchdog needs.
const START_POLL: Duration = Duration::from_micros(20);

/// Starts `bin` `runs` times (environment inherited, plus its own `port`, `metrics_port` and
/// `TMPDIR` each time) and prints the median, min and max time from exec to the first 200.
pub fn start_time(bin: &str, runs: usize) -> Result {
    let base = std::env::temp_dir().join(format!("fwbench-start-{}", std::process::id()));
    let mut times = Vec::with_capacity(runs);
    let mut result = Ok(());
    for run in 0..runs.max(1) {
        match time_one_start(bin, &base.join(run.to_string())) {
            Ok(time) => times.push(time),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    result?;
    times.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "median_us={:.0} min_us={:.0} max_us={:.0} runs={}",
        us(times[times.len() / 2]),
        us(times[0]),
        us(times[times.len() - 1]),
        times.len()
    );
    Ok(())
}

fn time_one_start(bin: &str, tmpdir: &std::path::Path) -> Result<Duration> {
    std::fs::create_dir_all(tmpdir).map_err(|e| format!("cannot create {}: {e}", tmpdir.display()))?;
    let port = free_port()?;
    let mut command = Command::new(bin);
    command
        .env("port", port.to_string())
        .env("metrics_port", free_port()?.to_string())
        .env("TMPDIR", tmpdir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let started = Instant::now();
    let mut child = command.spawn().map_err(|e| format!("cannot start {bin}: {e}"))?;
    let outcome = poll_healthy(port, &mut child, started);
    let _ = child.kill();
    let _ = child.wait();
    outcome.map_err(|why| format!("{bin} {why}"))
}

fn poll_healthy(port: u16, child: &mut Child, started: Instant) -> Result<Duration> {
    loop {
        if health_status(port) == Some(200) {
            return Ok(started.elapsed());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited ({status}) before it was healthy"));
        }
        if started.elapsed() > START_LIMIT {
            return Err(format!("was not healthy within {START_LIMIT:?}"));
        }
        thread::sleep(START_POLL);
    }
}

/// Waits until the watchdog on `port` is healthy. Exit code 0: healthy, 1: `pid` died first,
/// 2: still not healthy after `seconds`.
pub fn wait(port: u16, pid: u32, seconds: f64) -> ExitCode {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    loop {
        if health_status(port) == Some(200) {
            return ExitCode::SUCCESS;
        }
        if !alive(pid) {
            return ExitCode::from(1);
        }
        if Instant::now() > deadline {
            return ExitCode::from(2);
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// The status code of `GET /_/health`, or `None` if nothing answered.
fn health_status(port: u16) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"GET /_/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 32];
    let mut len = 0;
    while len < "HTTP/1.1 200".len() {
        match stream.read(&mut head[len..]).ok()? {
            0 => break,
            n => len += n,
        }
    }
    std::str::from_utf8(&head[..len]).ok()?.split(' ').nth(1)?.parse().ok()
}

/// Whether `pid` exists and is not a zombie (a child of the script stays one until reaped).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

pub fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}
