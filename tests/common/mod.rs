//! Test support for the black-box tests: each `tests/*.rs` starts the real `fwatchdog` binary and
//! talks to it over 127.0.0.1. One module per concern; this file only declares them and re-exports
//! what the tests use every day, so that `use common::*;` is enough for most of them.
//!
//! - [`watchdog`]: start a watchdog (free port, own TMPDIR, log captured), talk to it, kill it
//!   and everything below it on drop; [`capture`] reads its stdout and stderr, [`tempdir`] makes
//!   scratch directories.
//! - [`once`]: run the binary once, for how it stops at its start (exit code and log).
//! - [`http`]: the raw HTTP/1.1 client (requests, responses, chunked bodies).
//! - [`procfs`]: `/proc` probes (processes, descendants, zombies, fds, RSS, connections).
//! - [`metrics`]: the Prometheus text parser.
//! - [`wait`]: polling with a deadline.
//! - [`stress`]: clients that misbehave on purpose (robustness tests).
//! - [`tools`]: external tools, and skipping (or failing in CI) when one is missing.
//! - [`upstream`]: the function server of `mode=http` (tests/http_upstream.py).

// Each test binary compiles all of common/ but uses a part of it: what one leaves unused, another
// uses. (Every binary uses `wait`.)
#[allow(dead_code, reason = "each test binary uses a part of it")]
mod capture;
#[allow(dead_code, reason = "each test binary uses a part of it")]
pub mod http;
#[allow(dead_code, reason = "each test binary uses a part of it")]
pub mod metrics;
#[allow(dead_code, reason = "each test binary uses a part of it")]
mod once;
#[allow(dead_code, reason = "each test binary uses a part of it")]
pub mod procfs;
#[allow(dead_code, reason = "each test binary uses a part of it")]
pub mod stress;
#[allow(dead_code, reason = "each test binary uses a part of it")]
mod tempdir;
#[allow(dead_code, reason = "each test binary uses a part of it")]
pub mod tools;
#[allow(dead_code, reason = "each test binary uses a part of it")]
pub mod upstream;
mod wait;
#[allow(dead_code, reason = "each test binary uses a part of it")]
pub mod watchdog;

#[allow(unused_imports, reason = "each test binary uses a part of it")]
pub use self::{
    http::{Chunked, Response, accepts, build_request, read_head, read_response, send},
    metrics::{in_flight, metric_value},
    once::{run_once, run_once_wrapped},
    procfs::{all_processes, descendants, open_fds, proc_status, processes_with, zombies_of},
    tempdir::TempDir,
    tools::skip,
    wait::{PACE, poll, wait_for, wait_for_paced},
    watchdog::{BIN, Options, Watchdog, bin_command, free_port},
};
