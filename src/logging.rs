//! Everything the watchdog writes to its own stdout and stderr: its log (`YYYY/MM/DD HH:MM:SS
//! message` on stderr, the format of Go's `log` package that the reference watchdogs use, in UTC)
//! and the bytes it passes on (function output with `prefix_logs=false`, `write_debug`,
//! `debug_headers`). `RUST_LOG` sets the level (default info; `config` reads it). With
//! `log_format=json` ([`Format::Json`]) every line is a JSON object instead ([`crate::json_log`]);
//! lines with fields of their own (a request's, a function's output) are built by their owners and
//! queued with [`log_line`].
//!
//! No caller ever blocks on the pipes: a line is written at once only when that cannot block
//! (nothing is waiting before it and the pipe has room, the common case: one write to a file, one
//! non-blocking write to a pipe, a `poll` and a write to anything else; no thread switch), and
//! otherwise goes into a queue that a writer thread empties, so a log
//! collector that stops reading blocks that thread and nothing else. The queue is bounded, and
//! what a full queue means depends on who writes:
//! - function requests wait, without holding a runtime thread, for [`room`] before they start,
//!   and a function's output is read from its pipe only when there is room: back-pressure, as
//!   when Go's watchdogs block on a full log, and nothing is lost;
//! - bytes passed on ([`pass_on`]) are always queued: their callers waited for room, and they
//!   are already in memory;
//! - any other log line (connection errors, the shutdown) is dropped once the queue holds
//!   [`LIMIT`] bytes, and the drop is counted and reported when the log moves again;
//! - `/_/health`, `/_/ready` and `/metrics` neither log nor wait, so they keep answering.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::sys;

/// Below this many queued bytes there is [`room`] for function requests and function output.
pub const ROOM: usize = 256 * 1024;
/// Beyond this many queued bytes, log lines other than function output are dropped.
pub const LIMIT: usize = 4 * 1024 * 1024;

/// Where queued bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
}

impl Output {
    /// Runs `f` with the descriptor, lent by std's handle for it. Its buffer (stdout's) is not
    /// used: the bytes go to the descriptor as they are.
    fn with_fd<T>(self, f: impl FnOnce(BorrowedFd<'_>) -> T) -> T {
        match self {
            Output::Stdout => f(std::io::stdout().as_fd()),
            Output::Stderr => f(std::io::stderr().as_fd()),
        }
    }
}

static QUEUE: Queue = Queue::new(true);

/// How log lines are written (`log_format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// `YYYY/MM/DD HH:MM:SS message`, as the Go watchdogs.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Set once, before anything is logged; read for every line.
static JSON: AtomicBool = AtomicBool::new(false);

/// Chooses the format of every line from now on. Called first thing, before the log has lines.
pub fn set_format(format: Format) {
    JSON.store(format == Format::Json, Ordering::Relaxed);
}

/// Whether lines are JSON objects.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Queues a finished line for stderr, as any log line: dropped when the queue is full.
pub fn log_line(line: Vec<u8>) {
    QUEUE.push(Output::Stderr, line, true);
}

/// Lines of a function's output for the log (each as [`function_line_text`] or
/// `function_logs::json_line` made it). Never dropped: their forwarder waits for [`room`] before
/// each batch and keeps batches small, which bounds what the forwarders queue beyond [`ROOM`].
pub fn function_lines(lines: Vec<u8>) {
    QUEUE.push(Output::Stderr, lines, false);
}

/// Appends a text log line (with its timestamp) for `message`, at info, to `out`.
pub fn function_line_text(out: &mut Vec<u8>, message: std::fmt::Arguments<'_>) {
    append_line(out, log::Level::Info, &message);
}

/// A line for stderr written at once, without the queue and the filter: for the init process
/// (PID 1), which never starts the log. Text lines are written as they were (no timestamp).
pub fn early(level: log::Level, message: std::fmt::Arguments<'_>) {
    let line = match json() {
        true => crate::json_log::Line::new(level).msg(message).finish(),
        false => format!("{message}\n").into_bytes(),
    };
    write_fd(Output::Stderr, &line);
}

/// Installs the logger (`filter_spec`: the level, `RUST_LOG`'s value), routes panic messages into the log, and
/// starts the writer thread. Without the thread (it could not be started), lines are written
/// by their callers, as before.
pub fn init(filter_spec: Option<String>) {
    let mut filter = env_filter::Builder::new();
    filter.filter_level(log::LevelFilter::Info);
    if let Some(spec) = filter_spec.filter(|spec| !spec.is_empty()) {
        filter.parse(&spec);
    }
    let logger = Logger { filter: filter.build() };
    log::set_max_level(logger.filter.filter());
    let _ = log::set_boxed_logger(Box::new(logger));
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => format!("\n{backtrace}"),
            _ => String::new(),
        };
        log::error!("thread '{}' {info}{backtrace}", thread.name().unwrap_or("<unnamed>"));
    }));
    // Queued from now on: the thread takes what is there when it starts.
    QUEUE.running.store(true, Ordering::Release);
    if let Err(e) = std::thread::Builder::new().name("log".into()).spawn(|| QUEUE.run(write_fd)) {
        QUEUE.running.store(false, Ordering::Release);
        log::warn!("cannot start the log writer ({e}); writing the log directly");
    }
}

/// Queues `bytes` for the watchdog's stdout or stderr, as they are. Never blocks, never drops.
pub fn pass_on(output: Output, bytes: Bytes) {
    QUEUE.push(output, bytes, false);
}

/// Resolves once the queue has room (at once, nearly always). Function requests and function
/// output wait here, so a log that nobody reads slows them down instead of filling memory.
pub async fn room() {
    QUEUE.room().await;
}

/// Waits until everything queued has been written, for at most `limit` (a log that nobody reads
/// must not keep the watchdog from exiting). Whether it all went out.
pub fn flush(limit: Duration) -> bool {
    QUEUE.flush(limit)
}

/// `log` records, formatted and queued.
struct Logger {
    filter: env_filter::Filter,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.filter.matches(record) {
            QUEUE.push(Output::Stderr, record_line(record.level(), record.args()), true);
        }
    }

    fn flush(&self) {}
}

/// A line of the log in the chosen format.
fn record_line(level: log::Level, message: &std::fmt::Arguments<'_>) -> Vec<u8> {
    line_in(if json() { Format::Json } else { Format::Text }, level, message)
}

fn line_in(format: Format, level: log::Level, message: &std::fmt::Arguments<'_>) -> Vec<u8> {
    match format {
        Format::Json => crate::json_log::Line::new(level).msg(*message).finish(),
        Format::Text => format_line(level, message),
    }
}

/// One text log line, the only place where the text format is decided.
fn format_line(level: log::Level, message: &std::fmt::Arguments<'_>) -> Vec<u8> {
    let mut line = Vec::with_capacity(128);
    append_line(&mut line, level, message);
    line
}

fn append_line(out: &mut Vec<u8>, level: log::Level, message: &std::fmt::Arguments<'_>) {
    let level = match level {
        log::Level::Error | log::Level::Warn | log::Level::Info => "",
        log::Level::Debug => "debug: ",
        log::Level::Trace => "trace: ",
    };
    STAMP.with_borrow_mut(|stamp| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if stamp.0 != now || stamp.1.is_empty() {
            *stamp = (now, timestamp(UNIX_EPOCH + Duration::from_secs(now)));
        }
        out.extend_from_slice(stamp.1.as_bytes());
    });
    out.push(b' ');
    out.extend_from_slice(level.as_bytes());
    let _ = std::io::Write::write_fmt(out, *message);
    out.push(b'\n');
}

thread_local! {
    /// The last second formatted, per thread: a busy watchdog logs many lines per second.
    static STAMP: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
}

/// Bytes on their way to stdout or stderr, and the writer that takes them there.
struct Queue {
    state: Mutex<State>,
    /// Wakes the writer.
    work: Condvar,
    /// Wakes [`Queue::flush`] once everything is written.
    idle: Condvar,
    /// `State::bytes`, readable without the lock: [`Queue::room`]'s fast path.
    pending: AtomicUsize,
    /// Wakes [`Queue::room`] waiters once the queue is below [`ROOM`].
    room: Notify,
    /// A writer thread runs; without one, callers write themselves.
    running: AtomicBool,
    /// Callers may write to the real stdout and stderr themselves when that cannot block (not in
    /// the unit tests, whose writer is not the real one).
    direct: bool,
}

struct State {
    entries: VecDeque<(Output, Bytes)>,
    /// Queued, or taken by the writer and not yet written.
    bytes: usize,
    /// Log lines dropped since the last report.
    dropped: u64,
    /// The writer sleeps and must be woken for new entries.
    writer_asleep: bool,
}

impl Queue {
    const fn new(direct: bool) -> Queue {
        Queue {
            state: Mutex::new(State { entries: VecDeque::new(), bytes: 0, dropped: 0, writer_asleep: false }),
            work: Condvar::new(),
            idle: Condvar::new(),
            pending: AtomicUsize::new(0),
            room: Notify::const_new(),
            running: AtomicBool::new(false),
            direct,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `bytes`; a `droppable` entry is dropped (and counted) when the queue is full. A
    /// line written at once is never turned into `Bytes` (an allocation of its own).
    fn push(&self, output: Output, bytes: impl AsRef<[u8]> + Into<Bytes>, droppable: bool) {
        if !self.running.load(Ordering::Acquire) {
            write_fd(output, bytes.as_ref());
            return;
        }
        let mut state = self.lock();
        // Under the lock, and only with nothing queued or being written: the order is kept.
        if self.direct && state.bytes == 0 && write_now(output, bytes.as_ref()) {
            return;
        }
        if droppable && state.bytes > 0 && state.bytes + bytes.as_ref().len() > LIMIT {
            state.dropped += 1;
            return;
        }
        let bytes = bytes.into();
        state.bytes += bytes.len();
        self.pending.store(state.bytes, Ordering::Relaxed);
        state.entries.push_back((output, bytes));
        // Waking a sleeping thread is a system call: only when it does sleep.
        if std::mem::take(&mut state.writer_asleep) {
            drop(state);
            self.work.notify_one();
        }
    }

    async fn room(&self) {
        loop {
            if self.pending.load(Ordering::Relaxed) <= ROOM {
                return;
            }
            let notified = self.room.notified();
            tokio::pin!(notified);
            // Registered before the second look, so a wake-up in between is not lost.
            notified.as_mut().enable();
            if self.pending.load(Ordering::Relaxed) <= ROOM {
                return;
            }
            notified.await;
        }
    }

    fn flush(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut state = self.lock();
        while state.bytes > 0 || state.dropped > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.running.load(Ordering::Acquire) {
                return false;
            }
            state = self.idle.wait_timeout(state, left).unwrap_or_else(|poisoned| poisoned.into_inner()).0;
        }
        true
    }

    /// The writer: takes everything queued, writes it with `write`, and again, forever. Only this
    /// thread ever blocks on the pipes.
    fn run(&self, mut write: impl FnMut(Output, &[u8])) {
        self.running.store(true, Ordering::Release);
        let mut batch = VecDeque::new();
        let mut buf = Vec::new();
        loop {
            let dropped = {
                let mut state = self.lock();
                while state.entries.is_empty() && state.dropped == 0 {
                    state.writer_asleep = true;
                    state = self.work.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                std::mem::swap(&mut batch, &mut state.entries);
                state.dropped
            };
            let written = write_batch(&mut batch, &mut buf, &mut write);
            if dropped > 0 {
                let notice = record_line(
                    log::Level::Warn,
                    &format_args!("{dropped} log lines dropped: the log was not read fast enough"),
                );
                write(Output::Stderr, &notice);
            }
            let mut state = self.lock();
            state.bytes -= written;
            // Counted until reported, so that a flush waits for the report too.
            state.dropped -= dropped;
            self.pending.store(state.bytes, Ordering::Relaxed);
            if state.bytes <= ROOM {
                self.room.notify_waiters();
            }
            if state.bytes == 0 && state.dropped == 0 {
                self.idle.notify_all();
            }
        }
    }
}

/// Writes and empties `batch`: consecutive small entries for the same output in one write.
/// Returns the bytes it took from the queue.
fn write_batch(
    batch: &mut VecDeque<(Output, Bytes)>,
    buf: &mut Vec<u8>,
    write: &mut impl FnMut(Output, &[u8]),
) -> usize {
    /// Entries larger than this are written as they are, not copied.
    const COPY_BELOW: usize = 16 * 1024;
    let mut taken = 0;
    let mut current = Output::Stderr;
    for (output, bytes) in batch.drain(..) {
        taken += bytes.len();
        if output != current || bytes.len() >= COPY_BELOW {
            if !buf.is_empty() {
                write(current, buf);
                buf.clear();
            }
            current = output;
        }
        if bytes.len() >= COPY_BELOW {
            write(output, &bytes);
        } else {
            buf.extend_from_slice(&bytes);
        }
    }
    if !buf.is_empty() {
        write(current, buf);
        buf.clear();
    }
    // A burst can leave a large buffer behind; keep what ordinary traffic needs.
    buf.shrink_to(64 * 1024);
    taken
}

/// Writes `bytes` if that cannot block: they fit in one atomic pipe write, and the descriptor has
/// room for that much now. Whether it did.
fn write_now(output: Output, bytes: &[u8]) -> bool {
    if bytes.len() > libc::PIPE_BUF {
        return false;
    }
    match output.sink() {
        Sink::File => write_fd(output, bytes),
        // All or nothing: a write of at most PIPE_BUF bytes to a pipe is atomic.
        Sink::Pipe(pipe) => return std::io::Write::write(&mut &*pipe, bytes).is_ok_and(|n| n == bytes.len()),
        Sink::SharedPipe => return output.with_fd(|fd| sys::write(fd, bytes)).is_ok_and(|n| n == bytes.len()),
        Sink::Other => {
            let ready =
                output.with_fd(|fd| sys::poll(fd, libc::POLLOUT, 0).is_ok_and(|events| events & libc::POLLOUT != 0));
            if !ready {
                return false;
            }
            write_fd(output, bytes);
        }
    }
    true
}

/// What stdout or stderr is, found once: how a line can be written without waiting.
enum Sink {
    /// A regular file: a write never waits for a reader.
    File,
    /// A pipe (a container's log), opened again on its own non-blocking description: a full pipe
    /// refuses the write (`EAGAIN`) instead of blocking, and the descriptors that others share
    /// stay as they are.
    Pipe(std::fs::File),
    /// A pipe that cannot be opened again (a container runtime makes the log pipe as root, mode
    /// 0600, and the watchdog often runs as another user): the inherited descriptor itself is made
    /// non-blocking. Only the watchdog and its PID-1 init write to it, both through code that
    /// waits on `EAGAIN`; functions have pipes of their own.
    SharedPipe,
    /// Anything else (a terminal, a socket): `poll` first says whether there is room.
    Other,
}

impl Output {
    fn sink(self) -> &'static Sink {
        static SINKS: [OnceLock<Sink>; 2] = [OnceLock::new(), OnceLock::new()];
        let (slot, fd) = match self {
            Output::Stdout => (&SINKS[0], 1),
            Output::Stderr => (&SINKS[1], 2),
        };
        slot.get_or_init(|| {
            use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
            let kind = self.with_fd(|fd| fd.try_clone_to_owned().map(std::fs::File::from)).and_then(|f| f.metadata());
            match kind.map(|meta| meta.file_type()) {
                Ok(kind) if kind.is_file() => Sink::File,
                Ok(kind) if kind.is_fifo() => {
                    let reopened = std::fs::OpenOptions::new()
                        .write(true)
                        .custom_flags(libc::O_NONBLOCK)
                        .open(format!("/proc/self/fd/{fd}"));
                    match reopened {
                        Ok(pipe) => Sink::Pipe(pipe),
                        Err(_) if self.with_fd(sys::set_nonblocking).is_ok() => Sink::SharedPipe,
                        Err(_) => Sink::Other,
                    }
                }
                _ => Sink::Other,
            }
        })
    }
}

/// Writes all of `bytes` to stdout or stderr, waiting as long as the pipe needs. Nothing is
/// buffered on the way (Rust's stdout would hold a last line without a newline). A stream that
/// cannot be written (closed, broken) loses the bytes: there is nowhere to say so.
fn write_fd(output: Output, bytes: &[u8]) {
    output.with_fd(|fd| write_all(fd, bytes));
}

fn write_all(fd: BorrowedFd<'_>, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match sys::write(fd, bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // Someone made the descriptor non-blocking: wait until it takes more.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let _ = sys::poll(fd, libc::POLLOUT, -1);
            }
            Err(_) => return,
        }
    }
}

/// `2026/11/22 13:04:05` in UTC.
pub fn timestamp(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!("{year:04}/{month:02}/{day:02} {:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::mpsc;

    #[test]
    fn formats_utc_like_go_log() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970/01/01 00:00:00");
        assert_eq!(timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400 + 3723)), "2000/02/29 01:02:03");
        assert_eq!(timestamp(UNIX_EPOCH + Duration::from_secs(1_795_305_600)), "2026/11/22 00:00:00");
    }

    #[test]
    fn a_line_is_stamp_level_message() {
        let line = String::from_utf8(format_line(log::Level::Info, &format_args!("Forking fprocess."))).unwrap();
        assert!(line.ends_with(" Forking fprocess.\n") && line.len() == 20 + "Forking fprocess.\n".len(), "{line:?}");
        let line = String::from_utf8(format_line(log::Level::Debug, &format_args!("x"))).unwrap();
        assert!(line.ends_with(" debug: x\n"), "{line:?}");
    }

    #[test]
    fn a_panic_message_with_its_backtrace_is_one_json_line() {
        let message = "thread 'main' panicked at src/x.rs:1:2:\nboom \"quoted\"\nstack backtrace:\n   0: f\n";
        let line = line_in(Format::Json, log::Level::Error, &format_args!("{message}"));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        let value: serde_json::Value = serde_json::from_slice(&line).expect("JSON");
        assert_eq!((value["level"].as_str(), value["msg"].as_str()), (Some("error"), Some(message)));
        let text = line_in(Format::Text, log::Level::Error, &format_args!("x"));
        assert_eq!(text, format_line(log::Level::Error, &format_args!("x")), "text lines are as they were");
    }

    /// A writer whose pipe is "blocked" until the test lets each write through.
    fn blocked_writer(queue: &Arc<Queue>) -> (mpsc::Receiver<(Output, Vec<u8>)>, mpsc::SyncSender<()>) {
        let (written_tx, written) = mpsc::channel();
        let (go, go_rx) = mpsc::sync_channel::<()>(0);
        let q = Arc::clone(queue);
        std::thread::spawn(move || {
            q.run(|output, bytes| {
                let _ = go_rx.recv();
                let _ = written_tx.send((output, bytes.to_vec()));
            })
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !queue.running.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "the writer never started");
            std::thread::yield_now();
        }
        (written, go)
    }

    #[test]
    fn a_blocked_writer_never_blocks_callers_and_drops_only_log_lines_past_the_limit() {
        let queue = Arc::new(Queue::new(false));
        let (written, go) = blocked_writer(&queue);
        let line = Bytes::from(vec![b'x'; 1024]);
        // Far more than LIMIT: every push returns at once although nothing is written.
        for _ in 0..(2 * LIMIT / line.len()) {
            queue.push(Output::Stderr, line.clone(), true);
        }
        queue.push(Output::Stdout, Bytes::from(vec![b'o'; LIMIT]), false);
        let queued = queue.lock().bytes;
        assert!(queued > LIMIT && queued <= 2 * LIMIT + line.len(), "passed-on bytes are kept: {queued}");
        assert!(queue.lock().dropped > 0, "log lines past the limit are dropped");

        // Let the pipe move: everything queued arrives, then the drop is reported.
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !queue.flush(Duration::ZERO) {
            assert!(Instant::now() < deadline, "the queue never emptied");
            let _ = go.try_send(());
            while let Ok(w) = written.try_recv() {
                out.push(w);
            }
            std::thread::yield_now();
        }
        while let Ok(w) = written.try_recv() {
            out.push(w);
        }
        let stdout: usize = out.iter().filter(|(o, _)| *o == Output::Stdout).map(|(_, b)| b.len()).sum();
        assert_eq!(stdout, LIMIT, "passed-on bytes are never dropped");
        // The report follows the lines written before it. Whether the passed-on block comes
        // before or after it depends on when the writer took its batches.
        let (_, last) = out.iter().rfind(|(o, _)| *o == Output::Stderr).expect("stderr was written");
        let last = String::from_utf8_lossy(&last[last.len().saturating_sub(100)..]).into_owned();
        assert!(last.contains("log lines dropped: the log was not read fast enough"), "{last}");
    }

    #[test]
    fn room_waits_until_the_writer_catches_up() {
        let queue = Arc::new(Queue::new(false));
        let (_written, go) = blocked_writer(&queue);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_millis(10), queue.room()).await.expect("an empty queue has room");
            queue.push(Output::Stdout, Bytes::from(vec![b'o'; 2 * ROOM]), false);
            assert!(
                tokio::time::timeout(Duration::from_millis(50), queue.room()).await.is_err(),
                "a full queue has no room"
            );
            let q = Arc::clone(&queue);
            let waiter = tokio::spawn(async move { q.room().await });
            // Each message lets one write through.
            std::thread::spawn(move || while go.send(()).is_ok() {});
            tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("room once written").unwrap();
        });
    }

    #[test]
    fn batches_join_small_entries_and_keep_the_order() {
        let mut batch: VecDeque<(Output, Bytes)> = VecDeque::from(vec![
            (Output::Stderr, Bytes::from_static(b"a\n")),
            (Output::Stderr, Bytes::from_static(b"b\n")),
            (Output::Stdout, Bytes::from_static(b"out")),
            (Output::Stderr, Bytes::from(vec![b'z'; 20_000])),
            (Output::Stderr, Bytes::from_static(b"c\n")),
        ]);
        let mut writes = Vec::new();
        let taken = write_batch(&mut batch, &mut Vec::new(), &mut |o, b: &[u8]| writes.push((o, b.to_vec())));
        assert_eq!(taken, 2 + 2 + 3 + 20_000 + 2);
        let shape: Vec<(Output, usize)> = writes.iter().map(|(o, b)| (*o, b.len())).collect();
        assert_eq!(shape, [(Output::Stderr, 4), (Output::Stdout, 3), (Output::Stderr, 20_000), (Output::Stderr, 2)]);
    }
}
