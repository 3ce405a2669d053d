//! Running the binary once, for a test of how it stops at its start (a refused configuration, a
//! port or lock file it cannot have): only the environment the test gives, its exit code and its
//! log, and killed, with everything it started, should it not stop.
#![allow(unsafe_code)] // SIGKILL to a watchdog that did not stop

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::procfs::descendants;
use super::tempdir::TempDir;
use super::wait::{PACE, poll};
use super::watchdog::{BIN, clean_env};

/// How long a watchdog that should stop at its start may take; it takes milliseconds.
const LIMIT: Duration = Duration::from_secs(10);

/// Runs the watchdog with `args` and only `env`, on top of a clean environment ([`clean_env`]), its own TMPDIR, `port=0`
/// and `metrics_port=0` (each unless `env` gives it), and returns its exit code and its log
/// (stderr). One still running after 10 s is killed, and its code is `None`.
pub fn run_once(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    run_once_wrapped(&[], env, args)
}

/// [`run_once`], under a command `wrapper` (program first, e.g. `setpriv ... --`).
pub fn run_once_wrapped(wrapper: &[&str], env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let tmp = TempDir::new();
    let mut command = match wrapper.split_first() {
        Some((program, wrapper_args)) => {
            let mut c = Command::new(program);
            c.args(wrapper_args).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    clean_env(&mut command).args(args);
    let given = |name: &str| env.iter().any(|(k, _)| *k == name);
    if !given("TMPDIR") {
        command.env("TMPDIR", tmp.path());
    }
    for name in ["port", "metrics_port"] {
        if !given(name) {
            command.env(name, "0");
        }
    }
    command.envs(env.iter().copied()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|e| panic!("start {}: {e}", BIN));
    // Read on a thread: a log larger than the pipe would otherwise block the watchdog.
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut log = Vec::new();
        let _ = stderr.read_to_end(&mut log);
        String::from_utf8_lossy(&log).into_owned()
    });
    let code = match poll(LIMIT, PACE, || child.try_wait().ok().flatten()) {
        Some(status) => status.code(),
        None => {
            for pid in descendants(child.id()) {
                // SAFETY: plain syscall.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    };
    (code, reader.join().expect("read the log"))
}
