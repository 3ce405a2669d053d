//! Starting and stopping the real `fwatchdog` binary: a free port, its own TMPDIR, its log captured,
//! requests to it over 127.0.0.1, and on drop the watchdog and every process below it killed.
#![allow(unsafe_code)] // signals to the watchdog and the processes below it

use std::io;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::capture::{Capture, Hold, collect};
use super::http::{Response, build_request, send};
use super::procfs::descendants;
use super::tempdir::TempDir;
use super::wait::{PACE, poll, wait_for};

pub const BIN: &str = env!("CARGO_BIN_EXE_fwatchdog");

/// A port that is free and that nothing else will be handed: it comes from below Linux's
/// ephemeral range (32768 and up), where port 0 binds and the source ports of outgoing connections
/// land, so neither another test's listener nor a client's connection can take it before whoever
/// we pick it for binds it. The counter keeps the tests of one process apart, the pid those of
/// different processes.
pub fn free_port() -> u16 {
    const FIRST: u32 = 12_000;
    const COUNT: u32 = 20_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(7919);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < COUNT, "no free port left in {FIRST}..{}", FIRST + COUNT);
        let port = (FIRST + base.wrapping_add(n) % COUNT) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// What the watchdog (and so its functions) keeps of the test runner's environment: what finding
/// programs needs, nothing that configures it. A developer's exported `mode`, `read_timeout` or
/// `upstream_url` would otherwise change every test.
const KEPT_ENV: [&str; 2] = ["PATH", "HOME"];

/// Clears `command`'s environment but for [`KEPT_ENV`]; the test adds what it sets.
pub fn clean_env(command: &mut Command) -> &mut Command {
    command.env_clear();
    for name in KEPT_ENV {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command
}

/// The watchdog, run with `args` and a clean environment (see [`clean_env`]).
pub fn bin_command(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    clean_env(&mut command).args(args);
    command
}

/// How to start a watchdog.
pub struct Options {
    pub env: Vec<(String, String)>,
    /// Wait until `/_/health` answers 200 before returning.
    pub wait_healthy: bool,
    /// Ask for a metrics port (a free one); otherwise metrics are disabled.
    pub metrics: bool,
    /// Extra command wrapper (e.g. `unshare ...`), program first.
    pub wrapper: Vec<String>,
    /// Working directory of the watchdog, and so of its functions; default: the test's.
    pub dir: Option<PathBuf>,
    /// Keep only about this many bytes of the log (the newest); for functions that flood it.
    pub log_limit: Option<usize>,
    /// The watchdog binary to run; default: the one this test suite was built with.
    pub binary: Option<PathBuf>,
}

impl Options {
    pub fn new(env: &[(&str, &str)]) -> Options {
        Options {
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            wait_healthy: true,
            metrics: false,
            wrapper: Vec::new(),
            dir: None,
            log_limit: None,
            binary: None,
        }
    }
}

/// A running watchdog; killed, with everything it started, on drop.
pub struct Watchdog {
    pub child: Option<Child>,
    pub port: u16,
    pub metrics_port: Option<u16>,
    pub tmp: TempDir,
    log: Arc<Mutex<Capture>>,
    stdout: Arc<Mutex<Capture>>,
    /// While set, the watchdog's stdout and stderr are not read (a stuck log collector).
    held: Arc<Hold>,
    status: Option<ExitStatus>,
}

impl Watchdog {
    /// Starts a watchdog with `env` (port, metrics_port and TMPDIR are chosen unless given) on top
    /// of a clean environment (see [`clean_env`]), and waits until it is healthy.
    pub fn start(env: &[(&str, &str)]) -> Watchdog {
        Watchdog::start_with(Options::new(env))
    }

    pub fn start_with(options: Options) -> Watchdog {
        let tmp = TempDir::new();
        let given = |name: &str| options.env.iter().any(|(k, _)| k == name);
        let binary = options.binary.clone().unwrap_or_else(|| PathBuf::from(BIN));
        let mut command = match options.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        let metrics_port = if given("metrics_port") {
            options.env.iter().find(|(k, _)| k == "metrics_port").and_then(|(_, v)| v.parse().ok()).filter(|&p| p != 0)
        } else if options.metrics {
            Some(free_port())
        } else {
            None
        };
        clean_env(&mut command);
        command.env("metrics_port", metrics_port.map_or("0".to_string(), |p| p.to_string()));
        if !given("port") {
            command.env("port", "0");
        }
        if !given("TMPDIR") {
            command.env("TMPDIR", tmp.path());
        }
        for (k, v) in &options.env {
            command.env(k, v);
        }
        if let Some(dir) = &options.dir {
            command.current_dir(dir);
        }
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("start fwatchdog");
        let log = Arc::new(Mutex::new(Capture::limited(options.log_limit)));
        let stdout = Arc::new(Mutex::new(Capture::default()));
        let held = Arc::new(Hold::default());
        collect(child.stderr.take().expect("stderr"), Arc::clone(&log), Arc::clone(&held));
        collect(child.stdout.take().expect("stdout"), Arc::clone(&stdout), Arc::clone(&held));
        let mut wd = Watchdog { child: Some(child), port: 0, metrics_port, tmp, log, stdout, held, status: None };
        wd.port = wait_for(Duration::from_secs(10), "Listening on port", || {
            if let Some(status) = wd.try_status() {
                panic!("fwatchdog exited with {status} during start:\n{}", wd.logs());
            }
            // The digits after it: in a JSON log line a quote follows them.
            let after = wd.logs().lines().find_map(|l| Some(l.split("Listening on port: ").nth(1)?.to_string()))?;
            after.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        });
        if options.wait_healthy {
            wd.wait_healthy(Duration::from_secs(10));
            // Healthy means the start is logged, but the log reaches us through a pipe and a thread.
            wait_for(Duration::from_secs(5), "the start to be logged", || {
                let log = wd.logs();
                (log.contains("Writing lock-file to: ") || log.contains("\"suppress_lock\" is enabled")).then_some(())
            });
        }
        wd
    }

    /// Waits until `/_/health` answers 200; fails at once, with the log, if the watchdog exits.
    pub fn wait_healthy(&mut self, limit: Duration) {
        wait_for(limit, "healthy", || {
            if let Some(status) = self.try_status() {
                panic!("fwatchdog exited with {status} during start:\n{}", self.logs());
            }
            self.try_get("/_/health").ok().filter(|r| r.status == 200).map(drop)
        });
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().text()
    }

    /// How many bytes the watchdog has written to its log so far (all of them, even past `log_limit`).
    pub fn log_bytes(&self) -> usize {
        self.log.lock().unwrap().total
    }

    /// What the watchdog wrote to its stdout (debug headers, write_debug output).
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().text()
    }

    /// Waits for `needle` in the log: it reaches us through a pipe and a thread, so even a line
    /// written before the response may not be here yet when the response is.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) {
        let found = poll(limit, PACE, || self.logs().contains(needle).then_some(()));
        assert!(found.is_some(), "no log line {needle:?} within {limit:?}; log:\n{}", self.logs());
    }

    /// Stops reading the watchdog's stdout and stderr, as a stuck log collector would: once the
    /// pipes are full, its writes to them block. (A read already waiting still completes.)
    pub fn hold_output(&self) {
        self.held.set(true);
    }

    /// Reads the watchdog's stdout and stderr again.
    pub fn release_output(&self) {
        self.held.set(false);
    }

    pub fn lock_path(&self) -> PathBuf {
        self.tmp.path().join(".lock")
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: plain syscall.
        unsafe { libc::kill(self.pid() as i32, signal) };
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        }
        self.status
    }

    /// Waits for the watchdog to exit and for its log to be read to the end.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let status = wait_for(limit, "fwatchdog to exit", || self.try_status());
        wait_for(Duration::from_secs(5), "the log to end", || self.log.lock().unwrap().ended.then_some(()));
        status
    }

    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        stream
    }

    pub fn try_get(&self, path: &str) -> io::Result<Response> {
        send(self.port, &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").into_bytes())
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Response {
        self.request("POST", path, &[], body)
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        send(self.port, &build_request(method, path, headers, body))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\nlog:\n{}", self.logs()))
    }

    pub fn metrics(&self) -> String {
        let port = self.metrics_port.expect("started with metrics");
        let response = send(port, b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .expect("scrape metrics");
        assert_eq!(response.status, 200);
        response.text()
    }

    /// Every process below the watchdog (its functions and their children).
    pub fn descendants(&self) -> Vec<u32> {
        descendants(self.pid())
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let mut all = descendants(child.id());
            all.push(child.id());
            for pid in all {
                // SAFETY: plain syscall.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
            let _ = child.wait();
        }
    }
}
