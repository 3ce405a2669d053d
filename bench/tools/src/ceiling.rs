//! The spawn ceiling: threads that each, in a loop, start `cat` with piped stdin and stdout
//! (`Command` uses posix_spawn), write 13 bytes, read them back and wait for it. What a
//! fork-per-request server does per request minus all HTTP work.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::Result;

const BODY: &[u8] = b"Hello, World!";

pub fn run(threads: usize, seconds: f64) -> Result {
    let cpu_before = own_cpu_ticks()?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..threads.max(1)).map(|_| thread::spawn(move || spawn_until(deadline))).collect();
    let mut total = 0u64;
    for worker in workers {
        total += worker.join().map_err(|_| "a spawn thread panicked".to_string())??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Only this process (all threads), not the reaped `cat`s: the spawner's share of a round trip.
    let cpu_us = (own_cpu_ticks()? - cpu_before) as f64 * 1e6 / TICKS_PER_SECOND;
    println!(
        "spawns={total} seconds={elapsed:.3} cpu_us_per_spawn={:.1} per_s={:.1}",
        cpu_us / total.max(1) as f64,
        total as f64 / elapsed
    );
    Ok(())
}

/// USER_HZ: the unit of the times in /proc/PID/stat (100 on every Linux architecture we run on).
const TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime of this process (fields 14 and 15 of /proc/self/stat), children excluded.
fn own_cpu_ticks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(|e| format!("reading /proc/self/stat: {e}"))?;
    let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, rest)| rest.split(' ').collect()).unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    field(14).zip(field(15)).map(|(user, system)| user + system).ok_or_else(|| "unexpected /proc/self/stat".into())
}

fn spawn_until(deadline: Instant) -> Result<u64> {
    let mut done = 0;
    let mut output = Vec::with_capacity(64);
    while Instant::now() < deadline {
        output.clear();
        round_trip(&mut output).map_err(|e| format!("spawning cat: {e}"))?;
        if output != BODY {
            return Err(format!("cat echoed {output:?}"));
        }
        done += 1;
    }
    Ok(done)
}

fn round_trip(output: &mut Vec<u8>) -> std::io::Result<()> {
    let mut child = Command::new("cat").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(BODY)?;
    } // dropped: cat sees EOF
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_to_end(output)?;
    }
    child.wait()?;
    Ok(())
}
