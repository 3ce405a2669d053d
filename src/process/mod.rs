//! The functions' processes: starting them, signalling their process groups, watching their
//! exit, reaping them. (The only other child the watchdog has is the server itself when it runs
//! as PID 1: `init` forks it, and reaps it along with every orphan, in a process of its own.)
//!
//! Every function runs as the leader of its own process group, so one `killpg` reaches everything
//! it started. The leader's exit is observed through a pidfd *without* reaping it; while the
//! leader is an unreaped zombie its pid (the group id) cannot be reused, so killing the group is
//! always safe until [`Child::reap`]. A [`Child`] dropped before it was reaped (a client went away,
//! a deadline fired) kills its group and is reaped in the background: no process outlives its
//! request and no zombie is left behind. What a request holds while its function lives (its
//! `max_inflight` slot) can be handed to the [`Child`], which lets go of it only once reaped.

#![allow(unsafe_code)] // clone, signals, waits and pipes are libc calls; each block says why

mod spawn;

pub use spawn::{Env, Program, give_children_fd_limit};

use crate::admission::Admission;
use std::fmt;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

use crate::backoff::Backoff;
use crate::sys;

/// How long output may still arrive after the function exited, from descendants that inherited
/// its stdout; then they are killed. (The reference watchdogs wait for them without limit.) The
/// two kinds of mode count it differently, on purpose:
/// - buffered (classic, serializing; [`exchange`]): in total, from the exit. The answer goes out
///   only once the output has ended, so a descendant that keeps writing must not hold it back.
/// - streaming (`modes::fork::stream`): per read, as silence: after the exit, a read that waits
///   this long ends the output. The client already gets the output as it comes, so a descendant
///   that keeps writing keeps it coming (up to `exec_timeout`, when set), as the function did.
pub const OUTPUT_GRACE: Duration = Duration::from_millis(100);

/// See [`exited_while_output_open`].
const EXIT_WATCH_DELAY: Duration = Duration::from_millis(20);

/// Process groups of every function not yet reaped, for signals that reach them all (forwarded
/// signals, the hard stop at exit). Removed under the lock before reaping, so a group id here is
/// never stale.
static GROUPS: Mutex<Vec<libc::pid_t>> = Mutex::new(Vec::new());

fn groups() -> std::sync::MutexGuard<'static, Vec<libc::pid_t>> {
    GROUPS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sends `signal` to the process group of every running function.
pub fn signal_all(signal: libc::c_int) {
    for &pgid in groups().iter() {
        // SAFETY: plain syscall; see GROUPS for why the id is ours.
        unsafe { libc::killpg(pgid, signal) };
    }
}

/// Where the function's stderr goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stderr {
    /// Into the same pipe as stdout (one pipe, output interleaved as written).
    Merged,
    /// Its own pipe, in [`Child::stderr`].
    Piped,
}

/// What to start.
pub struct Spec<'a> {
    pub program: &'a Program,
    /// Added to the watchdog's environment; later entries win.
    pub env: &'a Env,
    pub stderr: Stderr,
}

/// A failure to start the function, worded like Go's `os/exec` (clients of the reference
/// watchdogs see these strings).
#[derive(Debug)]
pub struct SpawnError {
    program: String,
    failure: spawn::Failure,
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let program = &self.program;
        match &self.failure {
            spawn::Failure::NotFound if program.contains('/') => {
                write!(f, "fork/exec {program}: no such file or directory")
            }
            spawn::Failure::NotFound => write!(f, "exec: {program:?}: executable file not found in $PATH"),
            spawn::Failure::Os(e) => match e.raw_os_error() {
                Some(code) => write!(f, "fork/exec {program}: {}", errno_text(code)),
                None => write!(f, "fork/exec {program}: {e}"),
            },
        }
    }
}

impl std::error::Error for SpawnError {}

/// A running (or exited, not yet reaped) function.
pub struct Child {
    pid: libc::pid_t,
    exit: ExitWatch,
    status: Option<ExitStatus>,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    /// Dropped once the leader is reaped ([`Child::hold_until_reaped`]).
    held: Admission,
}

/// How the leader's exit is noticed. Most functions have exited by the time their output ends,
/// so the pidfd is registered with the reactor only when a wait actually has to block.
#[derive(Default)]
struct ExitWatch {
    /// Declared before `pidfd`: it must be deregistered before the descriptor closes.
    registered: OnceLock<Option<AsyncFd<RawPidfd>>>,
    /// `None` on kernels without pidfds (or where seccomp forbids them): then `waitid` is polled.
    pidfd: Option<OwnedFd>,
}

/// The pidfd as the reactor sees it; the descriptor itself is owned by [`ExitWatch::pidfd`].
struct RawPidfd(RawFd);

impl AsRawFd for RawPidfd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

impl ExitWatch {
    fn reactor(&self) -> Option<&AsyncFd<RawPidfd>> {
        self.registered
            .get_or_init(|| {
                let fd = self.pidfd.as_ref()?.as_raw_fd();
                // SAFETY: the descriptor stays open, unchanged, until after this AsyncFd is dropped
                // (field order).
                unsafe { AsyncFd::register_with_interest(RawPidfd(fd), tokio::io::Interest::READABLE) }.ok()
            })
            .as_ref()
    }
}

impl Child {
    /// Starts the function in a new process group with piped stdin and stdout. Must be called
    /// from within the tokio runtime.
    pub fn spawn(spec: &Spec<'_>) -> Result<Child, SpawnError> {
        let error = |failure| SpawnError { program: spec.program.name().to_string(), failure };
        let os_error = |e| error(spawn::Failure::Os(e));
        let (stdin_read, stdin_write) = pipe_pair().map_err(os_error)?;
        let (stdout_read, stdout_write) = pipe_pair().map_err(os_error)?;
        let (stderr_read, stderr_write) = match spec.stderr {
            Stderr::Merged => (None, None),
            Stderr::Piped => pipe_pair().map(|(read, write)| (Some(read), Some(write))).map_err(os_error)?,
        };
        let stdio = spawn::Stdio {
            stdin: stdin_read.as_raw_fd(),
            stdout: stdout_write.as_raw_fd(),
            stderr: stderr_write.as_ref().unwrap_or(&stdout_write).as_raw_fd(),
        };
        let spawned = spec.program.spawn(spec.env, &stdio).map_err(error)?;
        groups().push(spawned.pid);
        // The child's ends: closed here, or EOF never comes.
        drop((stdin_read, stdout_write, stderr_write));

        let mut child = Child {
            pid: spawned.pid,
            exit: ExitWatch { registered: OnceLock::new(), pidfd: spawned.pidfd },
            status: None,
            stdin: None,
            stdout: None,
            stderr: None,
            held: Admission::default(),
        };
        // From here on `child` owns the process: an early return kills and reaps it.
        child.stdin = Some(stdin_write);
        child.stdout = Some(receiver(stdout_read).map_err(os_error)?);
        child.stderr = stderr_read.map(receiver).transpose().map_err(os_error)?;
        Ok(child)
    }

    /// Keeps `held` until the leader is reaped, on every path: a request's slot is not free while
    /// its function may still run.
    pub fn hold_until_reaped(&mut self, held: Admission) {
        self.held = held;
    }

    /// Sends `signal` to every process in the function's group. Does nothing once reaped.
    pub fn signal_group(&self, signal: libc::c_int) {
        if self.status.is_none() {
            // SAFETY: plain syscall; the leader is not reaped, so the group id is still ours.
            unsafe { libc::killpg(self.pid, signal) };
        }
    }

    /// SIGKILL to the whole group.
    pub fn kill_group(&self) {
        self.signal_group(libc::SIGKILL);
    }

    /// Waits until the group leader has exited, without reaping it.
    pub async fn exited(&self) {
        if self.status.is_some() {
            return;
        }
        // A pidfd becomes readable when the process exits. Without one, or on an error from the
        // reactor, poll.
        while !self.has_exited() {
            let Some(pidfd) = self.exit.reactor() else { return self.poll_exit().await };
            match pidfd.readable().await {
                Ok(mut guard) => guard.clear_ready(),
                Err(_) => return self.poll_exit().await,
            }
        }
    }

    async fn poll_exit(&self) {
        let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(50));
        while !self.has_exited() {
            backoff.sleep().await;
        }
    }

    /// Whether the leader has exited (it stays a zombie until reaped).
    fn has_exited(&self) -> bool {
        // SAFETY: siginfo_t is plain C data, for which all zeroes is a valid value. Zero si_pid
        // is how a WNOHANG wait with nothing to report is told apart (waitid(2)).
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid out-pointer; WNOWAIT leaves the child waitable.
        let rc = unsafe {
            libc::waitid(libc::P_PID, self.pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT)
        };
        // ECHILD would mean someone else reaped it: treat as exited rather than wait forever.
        // SAFETY: si_pid reads the pid in the layout waitid fills for a child's state change, and
        // is still the zero set above when there was none.
        rc != 0 || unsafe { info.si_pid() } != 0
    }

    /// Kills what is left of the group and reaps the leader. Call after [`Child::exited`]; before
    /// that, it blocks until the leader dies of the SIGKILL.
    pub fn reap(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        {
            let mut groups = groups();
            // SAFETY: plain syscall; the leader is not reaped yet.
            unsafe { libc::killpg(self.pid, libc::SIGKILL) };
            if let Some(i) = groups.iter().position(|&p| p == self.pid) {
                groups.swap_remove(i);
            }
        }
        let status = waitpid_blocking(self.pid);
        self.status = Some(status);
        self.held = Admission::default();
        status
    }

    /// Waits for the leader to exit, then kills leftovers in its group and reaps it.
    pub async fn wait(&mut self) -> ExitStatus {
        self.exited().await;
        self.reap()
    }

    /// Kills the whole group now and reaps the leader once it is gone.
    pub async fn kill(&mut self) -> ExitStatus {
        self.kill_group();
        self.wait().await
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        self.kill_group();
        if self.has_exited() {
            self.reap();
            return;
        }
        // SIGKILL is delivered asynchronously; reap it once it is gone, off this thread. The task
        // holds only the pid and the exit watch until it runs: a runtime that is shutting down
        // drops new tasks unpolled, and a whole `Child` dropped there would come back here, again
        // and again until the stack overflows.
        let (pid, exit, held) = (self.pid, std::mem::take(&mut self.exit), std::mem::take(&mut self.held));
        let reaper = move || Child { pid, exit, status: None, stdin: None, stdout: None, stderr: None, held };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { reaper().wait().await });
            }
            Err(_) => {
                reaper().reap();
            }
        }
    }
}

/// Go's wording: `exit status 3`, `signal: killed`.
pub fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    if let Some(errno) = status.stopped_signal() {
        return format!("wait: {}", errno_text(errno));
    }
    let signal = status.signal().unwrap_or(0);
    let name = match signal {
        libc::SIGHUP => "hangup",
        libc::SIGINT => "interrupt",
        libc::SIGQUIT => "quit",
        libc::SIGILL => "illegal instruction",
        libc::SIGTRAP => "trace/breakpoint trap",
        libc::SIGABRT => "aborted",
        libc::SIGBUS => "bus error",
        libc::SIGFPE => "floating point exception",
        libc::SIGKILL => "killed",
        libc::SIGUSR1 => "user defined signal 1",
        libc::SIGSEGV => "segmentation fault",
        libc::SIGUSR2 => "user defined signal 2",
        libc::SIGPIPE => "broken pipe",
        libc::SIGALRM => "alarm clock",
        libc::SIGTERM => "terminated",
        _ => return format!("signal: {signal}"),
    };
    let core = if status.core_dumped() { " (core dumped)" } else { "" };
    format!("signal: {name}{core}")
}

/// The C library's text for an errno, lower-cased like Go's (`no such file or directory`).
fn errno_text(code: i32) -> String {
    let text = io::Error::from_raw_os_error(code).to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    chars.next().map(|c| c.to_lowercase().chain(chars).collect()).unwrap_or_default()
}

/// Reaps `pid`. A failed wait (ECHILD: someone else reaped it) is logged and becomes a failure,
/// never a success: the function's real end is unknown.
fn waitpid_blocking(pid: libc::pid_t) -> ExitStatus {
    match spawn::reap_now(pid) {
        Ok(status) => ExitStatus::from_raw(status),
        Err(e) => {
            log::error!("waitpid({pid}): {e}");
            wait_failed(&e)
        }
    }
}

/// A failed wait as an `ExitStatus`, which has no such case: our waits never ask for stopped
/// children (no `WUNTRACED`), so a "stopped" status can only be this, and it carries the errno
/// where the signal would be. [`describe`] words it like Go: `wait: no child processes`.
fn wait_failed(error: &io::Error) -> ExitStatus {
    let errno = error.raw_os_error().unwrap_or(libc::ECHILD) & 0xff;
    ExitStatus::from_raw((errno << 8) | 0x7f)
}

/// A pipe whose ends are both close-on-exec (the child gets its end through dup2) and non-blocking
/// (the child makes its end blocking again; see `spawn::Stdio`).
fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [RawFd; 2] = [-1; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn receiver(fd: OwnedFd) -> io::Result<pipe::Receiver> {
    pipe::Receiver::from_owned_fd_unchecked(fd)
}

/// Writes `data` to a non-blocking stdin pipe, then closes it (`*stdin = None`). A function that
/// exits or closes its stdin early is not an error (the classic watchdog ignores EPIPE too).
/// Dropped part-way, it leaves `stdin` open: its owner closes it only once the function is dead,
/// so that a function never takes an input that was cut short for a whole one.
async fn write_input(stdin: &mut Option<OwnedFd>, data: &[u8]) {
    let Some(fd) = stdin.as_ref() else { return };
    let mut written = 0;
    // Most bodies fit in the pipe: written directly, without registering with the reactor.
    let mut registered = None;
    while written < data.len() {
        match sys::write(fd.as_fd(), &data[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let ready = match &registered {
                    Some(ready) => ready,
                    // SAFETY: the descriptor stays open, unchanged, while this registration lives:
                    // it is dropped before `*stdin = None` below, or with this future, which the
                    // owner of `stdin` outlives.
                    None => match unsafe { AsyncFd::register_with_interest(fd.as_fd(), tokio::io::Interest::WRITABLE) }
                    {
                        Ok(ready) => registered.insert(ready),
                        // No way to wait for room: the input stays open (and incomplete) until the
                        // function is stopped.
                        Err(_) => return std::future::pending().await,
                    },
                };
                if let Ok(mut guard) = ready.writable().await {
                    guard.clear_ready();
                }
            }
            Err(_) => break,
        }
    }
    drop(registered);
    *stdin = None;
}

/// How a buffered exchange ended.
pub enum Exchanged {
    /// All of the output was read and the function has exited.
    Whole,
    /// `stop` stopped reading.
    Stopped,
    /// Reading the output failed.
    Failed(io::Error),
}

/// The buffered exchange: writes `input` to the function's stdin (and closes it) while reading its
/// stdout into `output`, until stdout has ended and the function has exited. When the function
/// exits while a descendant still holds stdout, output is taken for [`OUTPUT_GRACE`] more, no
/// longer. Dropping the future part-way leaves what was read in `output`, and `stdin` open.
///
/// `stop` sees the output after every read; when it says so, reading stops. `cap`: the most bytes
/// `output` may hold (the buffer never grows past it); `stop` should stop it there.
pub async fn exchange(
    child: &Child,
    stdin: &mut Option<OwnedFd>,
    stdout: Option<pipe::Receiver>,
    input: Bytes,
    output: &mut Vec<u8>,
    cap: Option<usize>,
    stop: impl FnMut(&[u8]) -> bool,
) -> Exchanged {
    alongside(collect(stdout, child, output, cap, stop), write_input(stdin, &input)).await
}

async fn collect(
    stdout: Option<pipe::Receiver>,
    child: &Child,
    output: &mut Vec<u8>,
    cap: Option<usize>,
    stop: impl FnMut(&[u8]) -> bool,
) -> Exchanged {
    if let Some(mut stdout) = stdout {
        let read = read_all(&mut stdout, output, cap, stop);
        tokio::pin!(read);
        let read = tokio::select! {
            read = &mut read => read,
            () = exited_while_output_open(child) => {
                tokio::time::timeout(OUTPUT_GRACE, &mut read).await.unwrap_or(Exchanged::Whole)
            }
        };
        if !matches!(read, Exchanged::Whole) {
            return read;
        }
    }
    child.exited().await;
    Exchanged::Whole
}

/// Most functions end their output by exiting, and then one `waitid` after the end of output
/// confirms the exit. Watching the exit while output is still open (for descendants that keep
/// stdout after the function exited) costs a reactor registration, so it starts only once the
/// function has been running for a moment.
async fn exited_while_output_open(child: &Child) {
    tokio::time::sleep(EXIT_WATCH_DELAY).await;
    child.exited().await;
}

/// Reads to the end of `pipe` ([`Exchanged::Whole`]), or until `stop` says so; never holds more
/// than `cap` bytes.
async fn read_all(
    pipe: &mut pipe::Receiver,
    out: &mut Vec<u8>,
    cap: Option<usize>,
    mut stop: impl FnMut(&[u8]) -> bool,
) -> Exchanged {
    loop {
        // Most functions answer in a few hundred bytes: start small, then double (by at most
        // 1 MiB a step) so that big outputs still take few reads.
        if out.len() == out.capacity() {
            let step = out.capacity().clamp(512, 1 << 20);
            let step = cap.map_or(step, |cap| step.min(cap.saturating_sub(out.len())));
            if step == 0 {
                return Exchanged::Stopped;
            }
            out.reserve_exact(step);
        }
        match pipe.read_buf(out).await {
            Ok(0) => return Exchanged::Whole,
            Ok(_) if stop(out) => return Exchanged::Stopped,
            Ok(_) => {}
            Err(e) => return Exchanged::Failed(e),
        }
    }
}

/// Runs `main` to completion while also driving `side`; returns `main`'s output whether or not
/// `side` has finished (a function that exits without reading its input leaves the writer behind).
async fn alongside<T>(main: impl Future<Output = T>, side: impl Future<Output = ()>) -> T {
    tokio::pin!(main, side);
    let mut side_done = false;
    std::future::poll_fn(|cx| {
        if !side_done && side.as_mut().poll(cx).is_ready() {
            side_done = true;
        }
        main.as_mut().poll(cx)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_wording() {
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "exit status 3");
        assert_eq!(describe(ExitStatus::from_raw(libc::SIGKILL)), "signal: killed");
        let error = |program: &str, failure| SpawnError { program: program.into(), failure }.to_string();
        let os = |code| spawn::Failure::Os(io::Error::from_raw_os_error(code));
        assert_eq!(error("foo", spawn::Failure::NotFound), r#"exec: "foo": executable file not found in $PATH"#);
        assert_eq!(error("/no/bin", os(libc::ENOENT)), "fork/exec /no/bin: no such file or directory");
        assert_eq!(error("/etc/passwd", os(libc::EACCES)), "fork/exec /etc/passwd: permission denied");
    }

    #[test]
    fn a_failed_wait_is_a_failure_never_exit_status_0() {
        // Not our child: waitpid fails with ECHILD.
        let status = waitpid_blocking(std::process::id() as libc::pid_t);
        assert!(!status.success(), "{status:?}");
        assert_eq!(status.code(), None);
        assert_eq!(describe(status), "wait: no child processes");
    }
}
