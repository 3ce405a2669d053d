//! Test support: start the real `fwatchdog` binary with its own ports and TMPDIR, talk HTTP/1.1 to
//! it over raw sockets on 127.0.0.1, read its log, and clean up every process it started.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod stress;
pub mod tools;

pub const BIN: &str = env!("CARGO_BIN_EXE_fwatchdog");

/// A fresh directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("fwatchdog-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes an executable script into the directory and returns its path.
    pub fn script(&self, name: &str, body: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join(name);
        std::fs::write(&path, body).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path.display().to_string()
    }
}

impl TempDir {
    /// A `sleep` whose command line carries `tag`, so tests can find it (and its survivors) in /proc.
    pub fn tagged_sleep(&self, tag: &str) -> String {
        let path = self.0.join(tag);
        let sleep = ["/bin/sleep", "/usr/bin/sleep"].into_iter().find(|p| Path::new(p).exists()).expect("sleep");
        std::os::unix::fs::symlink(sleep, &path).expect("symlink sleep");
        path.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

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

/// For a test that cannot run here because `why` (a tool is missing or not permitted). In CI
/// (`CI=true`) that fails the test: CI installs every tool, so a missing one is a broken setup
/// that would otherwise pass unnoticed. Elsewhere the test is skipped, and says so on the
/// terminal, past the harness's capture of `eprintln!`, so that every run shows it. The caller
/// returns right after.
pub fn skip(why: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    if in_ci() {
        panic!("{test}: {why} (CI=true: a missing tool fails the test instead of skipping it)");
    }
    let _ = writeln!(io::stderr().lock(), "SKIPPED {test}: {why}");
}

/// Whether the tests run in CI (`CI=true`, as CI services set it; `.ci/run` sets it too).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
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

/// Whether the readers of the watchdog's output must stop reading.
#[derive(Default)]
struct Hold {
    held: Mutex<bool>,
    released: std::sync::Condvar,
}

impl Hold {
    fn wait_while_held(&self) {
        let mut held = self.held.lock().unwrap();
        while *held {
            held = self.released.wait(held).unwrap();
        }
    }

    fn set(&self, held: bool) {
        *self.held.lock().unwrap() = held;
        self.released.notify_all();
    }
}

impl Watchdog {
    /// Starts a watchdog with `env` (port, metrics_port and TMPDIR are chosen unless given) and
    /// waits until it is healthy.
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
        command.env("metrics_port", metrics_port.map_or("0".to_string(), |p| p.to_string()));
        if !given("port") {
            command.env("port", "0");
        }
        if !given("TMPDIR") {
            command.env("TMPDIR", tmp.path());
        }
        command.env_remove("RUST_LOG");
        for (k, v) in &options.env {
            command.env(k, v);
        }
        if let Some(dir) = &options.dir {
            command.current_dir(dir);
        }
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("start fwatchdog");
        let log = Arc::new(Mutex::new(Capture { limit: options.log_limit, ..Capture::default() }));
        let stdout = Arc::new(Mutex::new(Capture::default()));
        let held = Arc::new(Hold::default());
        collect(child.stderr.take().expect("stderr"), Arc::clone(&log), Arc::clone(&held));
        collect(child.stdout.take().expect("stdout"), Arc::clone(&stdout), Arc::clone(&held));
        let mut wd = Watchdog { child: Some(child), port: 0, metrics_port, tmp, log, stdout, held, status: None };
        wd.port = wait_for(Duration::from_secs(10), "Listening on port", || {
            if let Some(status) = wd.try_status() {
                panic!("fwatchdog exited with {status} during start:\n{}", wd.logs());
            }
            // The digits after it: a JSON log line goes on with `"}`.
            let after = wd.logs().lines().find_map(|l| Some(l.split("Listening on port: ").nth(1)?.to_string()))?;
            after.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        });
        if options.wait_healthy {
            wait_for(Duration::from_secs(10), "healthy", || {
                if let Some(status) = wd.try_status() {
                    panic!("fwatchdog exited with {status} during start:\n{}", wd.logs());
                }
                wd.try_get("/_/health").ok().filter(|r| r.status == 200)
            });
            // Healthy means the start is logged, but the log reaches us through a pipe and a thread.
            wait_for(Duration::from_secs(5), "the start to be logged", || {
                let log = wd.logs();
                (log.contains("Writing lock-file to: ") || log.contains("\"suppress_lock\" is enabled")).then_some(())
            });
        }
        wd
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn logs(&self) -> String {
        self.log.lock().unwrap().text.clone()
    }

    /// How many bytes the watchdog has written to its log so far (all of them, even past `log_limit`).
    pub fn log_bytes(&self) -> usize {
        self.log.lock().unwrap().total
    }

    /// What the watchdog wrote to its stdout (debug headers, write_debug output).
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().text.clone()
    }

    /// Waits for `needle` in the log: it reaches us through a pipe and a thread, so even a line
    /// written before the response may not be here yet when the response is.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.logs().contains(needle) {
            assert!(Instant::now() < deadline, "no log line {needle:?} within {limit:?}; log:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(5));
        }
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

    /// Waits for the watchdog to exit.
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

/// Output read from the watchdog.
#[derive(Default)]
struct Capture {
    text: String,
    /// Bytes read in all.
    total: usize,
    /// Keep roughly the newest `limit` bytes of `text`.
    limit: Option<usize>,
    /// The stream reached its end (the watchdog closed it, usually by exiting).
    ended: bool,
}

fn collect(mut stream: impl Read + Send + 'static, into: Arc<Mutex<Capture>>, held: Arc<Hold>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            held.wait_while_held();
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => {
                    into.lock().unwrap().ended = true;
                    return;
                }
                Ok(n) => {
                    let mut capture = into.lock().unwrap();
                    capture.total += n;
                    capture.text.push_str(&String::from_utf8_lossy(&buf[..n]));
                    if let Some(limit) = capture.limit.filter(|&l| capture.text.len() > 2 * l) {
                        let mut cut = capture.text.len() - limit;
                        while !capture.text.is_char_boundary(cut) {
                            cut += 1;
                        }
                        capture.text.drain(..cut);
                    }
                }
            }
        }
    });
}

/// One entry of /proc/<pid>/stat.
pub struct ProcStat {
    pub pid: u32,
    pub ppid: u32,
    pub pgrp: u32,
    pub state: char,
}

pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
    })
}

pub fn all_processes() -> Vec<ProcStat> {
    std::fs::read_dir("/proc")
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).filter_map(proc_stat).collect())
        .unwrap_or_default()
}

/// Processes whose parent chain leads to `root`.
pub fn descendants(root: u32) -> Vec<u32> {
    let all = all_processes();
    let parent: HashMap<u32, u32> = all.iter().map(|p| (p.pid, p.ppid)).collect();
    all.iter()
        .filter(|p| {
            let mut cur = p.ppid;
            for _ in 0..64 {
                if cur == root {
                    return true;
                }
                match parent.get(&cur) {
                    Some(&next) if next != 0 => cur = next,
                    _ => return false,
                }
            }
            false
        })
        .map(|p| p.pid)
        .collect()
}

/// Processes whose command line contains `needle` (to find survivors by a unique marker).
pub fn processes_with(needle: &str) -> Vec<u32> {
    all_processes()
        .into_iter()
        .filter(|p| p.state != 'Z')
        .filter(|p| {
            std::fs::read(format!("/proc/{}/cmdline", p.pid))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
                .unwrap_or(false)
        })
        .map(|p| p.pid)
        .collect()
}

/// Zombie children of `pid`.
pub fn zombies_of(pid: u32) -> usize {
    all_processes().iter().filter(|p| p.ppid == pid && p.state == 'Z').count()
}

pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// A value from /proc/<pid>/status, e.g. `VmRSS` (in kB) or `Threads`.
pub fn proc_status(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The value of one sample in a Prometheus text exposition, e.g.
/// `metric_value(text, r#"http_requests_total{code="200",method="post"}"#)`.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Whether something accepts connections on 127.0.0.1:`port`.
pub fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).is_ok()
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    }
}

pub fn build_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    let chunked = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding"));
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !chunked && (!body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH")) {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Sends raw bytes on a new connection and reads one response. The request is written from a
/// separate thread so that a large body can't deadlock against a large response.
pub fn send(port: u16, request: &[u8]) -> io::Result<Response> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut writer = stream.try_clone()?;
    let request = request.to_vec();
    let head_only = request.starts_with(b"HEAD ");
    let sender = std::thread::spawn(move || writer.write_all(&request));
    let response = read_response(&mut BufReader::new(&stream), head_only);
    let _ = stream.shutdown(Shutdown::Both);
    let _ = sender.join();
    response
}

/// Reads one response from a connection.
pub fn read_response(reader: &mut impl BufRead, head_only: bool) -> io::Result<Response> {
    let mut response = read_head(reader)?;
    if head_only || response.status == 204 || response.status == 304 {
        return Ok(response);
    }
    if response.is_chunked() {
        Chunked::new(reader).read_to_end(&mut response.body)?;
    } else if let Some(length) = response.header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        response.body.resize(length, 0);
        reader.read_exact(&mut response.body)?;
    } else {
        reader.read_to_end(&mut response.body)?;
    }
    Ok(response)
}

/// Reads a response's status line and headers (skipping `100 Continue`) and leaves `reader` at the
/// start of the body; the returned body is empty.
pub fn read_head(reader: &mut impl BufRead) -> io::Result<Response> {
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a response"));
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if let Some((k, v)) = trimmed.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        if status != 100 {
            return Ok(Response { status, headers, body: Vec::new() });
        }
    }
}

/// A chunked body decoded as it is read, for bodies too big to hold or that arrive over time.
/// Reading past the last chunk gives EOF; a connection that ends before it is an error.
pub struct Chunked<R> {
    inner: R,
    /// Bytes left in the current chunk.
    left: usize,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    pub fn new(inner: R) -> Chunked<R> {
        Chunked { inner, left: 0, done: false }
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.inner.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "chunked body cut short"));
        }
        Ok(line)
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let line = self.line()?;
            self.left = usize::from_str_radix(line.trim(), 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad chunk size {line:?}")))?;
            if self.left == 0 {
                self.line()?; // the empty line after the last chunk (no trailers are sent)
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "chunked body cut short"));
        }
        self.left -= n;
        if self.left == 0 {
            self.line()?; // the CRLF after the chunk's data
        }
        Ok(n)
    }
}
