//! fwbench: the helper programs of `bench/run.sh` (std only, never part of the watchdog's build).
//! The spawn ceiling is `spawn.c`, a bare C loop, so that its CPU per spawn is the floor.
//!
//! - `upstream ADDR`: a trivial HTTP/1.1 keep-alive server that echoes request bodies (the function
//!   of the http-mode row, and the "direct" baseline it is compared with).
//! - `start-time BIN RUNS`: time from exec of BIN to its first 200 on `/_/health`, median of RUNS.
//! - `wait PORT PID SECONDS`: waits until `/_/health` answers 200; exit 1 if PID dies first, 2 on
//!   timeout.
//! - `port`: prints a free TCP port on 127.0.0.1.

mod probe;
mod upstream;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["upstream", addr] => upstream::run(addr),
        ["start-time", bin, runs] => probe::start_time(bin, number(runs)),
        ["wait", port, pid, seconds] => return probe::wait(number(port), number(pid), number(seconds)),
        ["port"] => probe::free_port().map(|port| println!("{port}")),
        _ => Err("usage: fwbench upstream ADDR | start-time BIN RUNS | \
                  wait PORT PID SECONDS | port"
            .into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fwbench: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T = ()> = std::result::Result<T, String>;

fn number<T: std::str::FromStr>(text: &str) -> T {
    text.parse().unwrap_or_else(|_| {
        eprintln!("fwbench: expected a number, got {text:?}");
        std::process::exit(2)
    })
}
