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
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..threads.max(1)).map(|_| thread::spawn(move || spawn_until(deadline))).collect();
    let mut total = 0u64;
    for worker in workers {
        total += worker.join().map_err(|_| "a spawn thread panicked".to_string())??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!("spawns={total} seconds={elapsed:.3} per_s={:.1}", total as f64 / elapsed);
    Ok(())
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
