//! Starting a function: what glibc's `posix_spawn` does, minus the parts that cost the watchdog
//! CPU on every request.
//!
//! The child is created with `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)` on a stack that each
//! thread allocates once, and runs only async-signal-safe system calls until `execve`: a new
//! process group, stdio, signal dispositions, the signal mask. Compared with
//! `std::process::Command` this saves, per spawn: glibc's stack `mmap`/`munmap` (the `munmap`
//! interrupts every CPU running one of our threads), six `getrlimit` from validating the `dup2`
//! file actions, a separate `pidfd_open`, a `dup` for merged stderr, rebuilding the whole
//! environment in a map, the PATH search in the child, and a hundred `sigaction` calls in the
//! child (every signal instead of the few that have handlers).

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// A program to run, prepared once: its argument vector as C strings and, for a bare name, the
/// path found on `$PATH` (looked up again after an `execve` that could not find it).
pub struct Program {
    name: String,
    argv: Vec<CString>,
    /// The path `execve` gets: the name when it has a `/`, else what `$PATH` gave (then `None`
    /// until looked up, and again after an `execve` that could not find it).
    resolved: Mutex<Option<Arc<CStr>>>,
}

/// The child's standard streams: descriptors in the parent, `dup2`ed to 0, 1 and 2 and made
/// blocking there (the parent may create its pipes non-blocking: only its own ends need that, and
/// the child's ends are separate open files).
pub struct Stdio {
    pub stdin: RawFd,
    pub stdout: RawFd,
    /// May be the same as `stdout`.
    pub stderr: RawFd,
}

/// A started child.
pub struct Spawned {
    pub pid: libc::pid_t,
    /// `None` on kernels without `CLONE_PIDFD` (< 5.2).
    pub pidfd: Option<OwnedFd>,
}

/// Why a spawn failed: the `execve` (or setup) error, or a bare name not found on `$PATH`.
#[derive(Debug)]
pub enum Failure {
    NotFound,
    Os(io::Error),
}

/// Everything the child needs, prepared by the parent. The child only reads it, except `error`.
#[repr(C)]
struct ChildArgs {
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    stdio: [RawFd; 3],
    reset: *const c_int,
    reset_len: usize,
    /// The open files limit to give the child, or null to leave the watchdog's.
    nofile: *const libc::rlimit,
    /// Written by the child when `execve` (or a step before it) fails; read by the parent after
    /// the child has exec'd or exited (`CLONE_VFORK` suspends the parent until then).
    error: c_int,
}

/// The child's stack, allocated (zeroed, on the heap) once per thread and reused by every spawn
/// from that thread. It has no guard page, so a child that ran past its end would silently write
/// into the heap below it. It cannot come near: only `child_main` runs on it, one frame without
/// recursion, allocation or unwinding, calling thin libc wrappers around system calls (no lazy
/// symbol binding either: the glibc build is linked with BIND_NOW, the musl one statically); no
/// handler of ours can run on it (every signal stays blocked until the dispositions are reset,
/// and a fault while blocked kills the child outright). Measured: 488 bytes used in the musl
/// release build that images ship, 661 with glibc, 1.6 KiB in a glibc debug build;
/// `the_child_uses_a_small_part_of_its_stack` fails above 8 KiB. A guard page (`mmap` and `mprotect` instead of the heap) would cost two system calls and
/// a mapping per thread, and an `munmap`, which interrupts every CPU running one of our threads,
/// whenever a blocking-pool thread exits.
const STACK_SIZE: usize = 64 * 1024;

thread_local! {
    static STACK: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Cleared once the kernel (or a seccomp filter) has refused `CLONE_PIDFD`.
static PIDFD_SUPPORTED: AtomicBool = AtomicBool::new(true);

/// The open files limit the watchdog started with, for its children; see [`give_children_fd_limit`].
static CHILD_FD_LIMIT: OnceLock<libc::rlimit> = OnceLock::new();

/// Every function started from now on gets `limit` as its open files limit: the watchdog raises
/// its own soft limit, and must not hand the raised one down (Go restores it for children too).
pub fn give_children_fd_limit(limit: libc::rlimit) {
    let _ = CHILD_FD_LIMIT.set(limit);
}

impl Program {
    pub fn new(argv: &[String]) -> Program {
        let name = argv.first().cloned().unwrap_or_default();
        // Values from the environment cannot contain NUL, so nothing is lost here.
        let argv = argv.iter().filter_map(|a| CString::new(a.as_bytes()).ok()).collect();
        let direct = name.contains('/').then(|| CString::new(name.as_bytes()).ok()).flatten();
        Program { name, argv, resolved: Mutex::new(direct.map(Arc::from)) }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The path to execute: the name itself when it contains a `/`, else the first executable
    /// file of that name on `$PATH` (as Go's `exec.LookPath`).
    fn path(&self) -> Result<Arc<CStr>, Failure> {
        let mut cached = self.resolved.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(path) = &*cached {
            return Ok(Arc::clone(path));
        }
        if self.name.contains('/') {
            return Err(Failure::NotFound);
        }
        let path: Arc<CStr> = find_on_path(&self.name).ok_or(Failure::NotFound)?.into();
        *cached = Some(Arc::clone(&path));
        Ok(path)
    }

    /// After `execve` could not find it: look a bare name up on `$PATH` again next time.
    fn forget_path(&self) {
        if !self.name.contains('/') {
            *self.resolved.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// Starts the program in a new process group with `stdio`, the watchdog's environment plus
    /// `env` (later entries win). The descriptors in `stdio` stay open in the parent.
    pub fn spawn(&self, env: &Env, stdio: &Stdio) -> Result<Spawned, Failure> {
        if self.name.is_empty() {
            return Err(Failure::NotFound);
        }
        let path = self.path()?;
        let mut argv: Vec<*const c_char> = self.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let envp = env.pointers();
        let reset = signals_with_handlers();
        let mut args = ChildArgs {
            path: path.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            stdio: [stdio.stdin, stdio.stdout, stdio.stderr],
            reset: reset.as_ptr(),
            reset_len: reset.len(),
            nofile: CHILD_FD_LIMIT.get().map_or(std::ptr::null(), |limit| limit as *const libc::rlimit),
            error: 0,
        };
        let spawned = clone_child(&mut args).map_err(Failure::Os)?;
        // SAFETY: the child has exec'd or exited: nothing writes `error` any more.
        let error = unsafe { std::ptr::read_volatile(&args.error) };
        if error == 0 {
            return Ok(spawned);
        }
        // The child ran `_exit(127)`: reap it (it is already a zombie) and report why.
        if let Err(e) = reap_now(spawned.pid) {
            log::error!("waitpid({}) after a failed exec: {e}", spawned.pid);
        }
        if error == libc::ENOENT {
            self.forget_path();
        }
        Err(Failure::Os(io::Error::from_raw_os_error(error)))
    }
}

/// `clone` with the parent's signals blocked, so no handler of ours can run in the child before it
/// has reset the dispositions.
fn clone_child(args: &mut ChildArgs) -> io::Result<Spawned> {
    STACK.with(|stack| {
        let mut stack = stack.borrow_mut();
        if stack.is_empty() {
            stack.resize(STACK_SIZE, 0);
        }
        // The stack grows down from its (16-byte aligned) top.
        let top = (stack.as_mut_ptr() as usize + STACK_SIZE) & !15;
        let mut all = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        let mut previous = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: valid pointers; on success the mask is restored below on every path.
        let rc = unsafe {
            libc::sigfillset(all.as_mut_ptr());
            libc::pthread_sigmask(libc::SIG_BLOCK, all.as_ptr(), previous.as_mut_ptr())
        };
        if rc != 0 {
            // Not blocked, so a handler could run in the child: don't start it.
            return Err(io::Error::from_raw_os_error(rc));
        }
        let with_pidfd = PIDFD_SUPPORTED.load(Ordering::Relaxed);
        let result = match clone_once(args, top, with_pidfd) {
            Err(error) if with_pidfd && refuses_pidfd(&error) => {
                // Once more without; if that works, CLONE_PIDFD was the problem: never again.
                let retry = clone_once(args, top, false);
                if retry.is_ok() {
                    PIDFD_SUPPORTED.store(false, Ordering::Relaxed);
                }
                retry
            }
            result => result,
        };
        // SAFETY: restores the mask saved above.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, previous.as_ptr(), std::ptr::null_mut()) };
        if rc != 0 {
            // This thread now has every signal blocked; signals still reach the other threads.
            log::error!("pthread_sigmask: cannot restore the signal mask: {}", io::Error::from_raw_os_error(rc));
        }
        result
    })
}

/// Whether a failed `clone` may be the kernel refusing `CLONE_PIDFD`: `EINVAL` before Linux 5.2;
/// `EPERM` or `ENOSYS` from seccomp filters that allow only the flags they know (container
/// runtimes).
fn refuses_pidfd(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EINVAL | libc::EPERM | libc::ENOSYS))
}

/// One `clone` of the child onto the stack whose top is `top`.
fn clone_once(args: &mut ChildArgs, top: usize, with_pidfd: bool) -> io::Result<Spawned> {
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD | if with_pidfd { libc::CLONE_PIDFD } else { 0 };
    let mut pidfd: c_int = -1;
    // SAFETY: the child runs `child_main` on the stack below `top`, this thread's STACK, which
    // nothing else uses meanwhile (see STACK_SIZE for why it is big enough). It gets `args`, which
    // outlives its use: with CLONE_VFORK this thread resumes only after the child's execve or
    // _exit. Until then the child reads `args` and writes `args.error`, and touches no other
    // memory of ours. With CLONE_PIDFD the kernel stores the pidfd in `pidfd`.
    let pid = unsafe {
        libc::clone(child_main, top as *mut c_void, flags, (args as *mut ChildArgs).cast(), &mut pidfd as *mut c_int)
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: with CLONE_PIDFD the kernel created this descriptor for us.
    let pidfd = (with_pidfd && pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
    Ok(Spawned { pid, pidfd })
}

/// Reaps `pid`, which has exited or is about to; retries when interrupted.
pub fn reap_now(pid: libc::pid_t) -> io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: plain syscall with a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return Ok(status);
        }
        let error = io::Error::last_os_error();
        if rc >= 0 || error.kind() != io::ErrorKind::Interrupted {
            return Err(if rc >= 0 { io::Error::other(format!("waitpid returned {rc}")) } else { error });
        }
    }
}

/// The child, between `clone` and `execve`. Runs on the borrowed stack in the parent's memory, so
/// it must not allocate, lock, unwind or touch anything but `args`: only plain system calls.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive while the parent is suspended, and only
    // this child uses it meanwhile; it is only read, but for `error`. Its pointers are valid
    // throughout: `path` and the strings of `argv` and `envp` are held by `Program::spawn`'s
    // frame, and both arrays end with a null; `reset` has `reset_len` signal numbers, in a
    // static; `nofile` is null or a static rlimit. Every call is an async-signal-safe wrapper of
    // one system call: nothing allocates, locks or unwinds in this copy of the parent's memory.
    // errno is the parent thread's (the child shares its TLS), which the parent does not read
    // after a successful clone; the errno of a failure reaches it through `error`.
    unsafe {
        let args = &mut *arg.cast::<ChildArgs>();
        // dup2 onto 0, 1 and 2, each made blocking (the parent's pipes are created non-blocking).
        let stdio_ready =
            |(&from, to): (&RawFd, c_int)| libc::dup2(from, to) == to && libc::fcntl(to, libc::F_SETFL, 0) == 0;
        let ok = libc::setpgid(0, 0) == 0
            && args.stdio.iter().zip(0..).all(stdio_ready)
            && (args.nofile.is_null() || libc::setrlimit(libc::RLIMIT_NOFILE, args.nofile) == 0);
        if ok {
            // Handlers would run the parent's code in this copy of its memory, and SIGPIPE is
            // ignored by Rust programs: everything back to the default, then no signal blocked.
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            for i in 0..args.reset_len {
                libc::sigaction(*args.reset.add(i), &default, std::ptr::null_mut());
            }
            libc::sigaction(libc::SIGPIPE, &default, std::ptr::null_mut());
            let mut none = std::mem::zeroed::<libc::sigset_t>();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::execve(args.path, args.argv, args.envp);
        }
        std::ptr::write_volatile(&mut args.error, (*libc::__errno_location()).max(1));
        libc::_exit(127)
    }
}

/// Signals whose disposition is a handler (tokio's, std's), found once: those must be reset in
/// the child before it unblocks signals. Handlers are installed at start, before the first spawn.
fn signals_with_handlers() -> &'static [c_int] {
    static SIGNALS: OnceLock<Vec<c_int>> = OnceLock::new();
    SIGNALS.get_or_init(|| {
        (1..=libc::SIGRTMAX())
            .filter(|&signal| {
                let mut current = std::mem::MaybeUninit::<libc::sigaction>::uninit();
                // SAFETY: queries only; an invalid or reserved signal number just fails.
                let ok = unsafe { libc::sigaction(signal, std::ptr::null(), current.as_mut_ptr()) } == 0;
                // SAFETY: filled by the successful call.
                ok && !matches!(unsafe { current.assume_init() }.sa_sigaction, libc::SIG_DFL | libc::SIG_IGN)
            })
            .collect()
    })
}

/// The watchdog's own environment as `NAME=value` C strings, read once, with its names sorted
/// for lookups.
struct Base {
    entries: Vec<CString>,
    /// (name, index into `entries`), sorted by name.
    names: Vec<(Vec<u8>, usize)>,
}

fn base_environment() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut base = Base { entries: Vec::new(), names: Vec::new() };
        for (name, value) in std::env::vars_os() {
            let mut entry = name.as_bytes().to_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            if let Ok(entry) = CString::new(entry) {
                base.names.push((name.into_vec(), base.entries.len()));
                base.entries.push(entry);
            }
        }
        base.names.sort();
        base
    })
}

/// Environment variables a child gets on top of the watchdog's own, packed as `NAME=value\0`
/// entries in one buffer. A later entry wins over an earlier one of the same name.
#[derive(Default)]
pub struct Env {
    buf: Vec<u8>,
    /// Where each entry starts in `buf`, and its name's length.
    entries: Vec<(usize, usize)>,
}

impl Env {
    pub fn with_capacity(vars: usize, bytes: usize) -> Env {
        Env { buf: Vec::with_capacity(bytes), entries: Vec::with_capacity(vars) }
    }

    /// Adds `name=value`. What `execve` cannot carry is skipped: an empty name, a name with `=` or
    /// NUL, a value with NUL.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        if name.is_empty() || name.contains(&b'=') || name.contains(&0) || value.contains(&0) {
            return;
        }
        self.entries.push((self.buf.len(), name.len()));
        self.buf.extend_from_slice(name);
        self.buf.push(b'=');
        self.buf.extend_from_slice(value);
        self.buf.push(0);
    }

    fn name(&self, &(start, len): &(usize, usize)) -> &[u8] {
        &self.buf[start..start + len]
    }

    /// The entries as (name, value), in order, for tests.
    #[cfg(test)]
    pub fn vars(&self) -> Vec<(String, Vec<u8>)> {
        self.entries
            .iter()
            .map(|&(start, len)| {
                let end = start + self.buf[start..].iter().position(|&b| b == 0).unwrap_or(0);
                (
                    String::from_utf8_lossy(&self.buf[start..start + len]).into_owned(),
                    self.buf[start + len + 1..end].to_vec(),
                )
            })
            .collect()
    }

    /// The `envp` array: the base entries not overridden, then the entries not overridden by a
    /// later one. Valid while `self` lives.
    fn pointers(&self) -> Vec<*const c_char> {
        let base = base_environment();
        let overridden: Vec<usize> = self
            .entries
            .iter()
            .filter_map(|e| base.names.binary_search_by(|(n, _)| n.as_slice().cmp(self.name(e))).ok())
            .map(|i| base.names[i].1)
            .collect();
        let mut envp = Vec::with_capacity(base.entries.len() + self.entries.len() + 1);
        for (i, entry) in base.entries.iter().enumerate() {
            if !overridden.contains(&i) {
                envp.push(entry.as_ptr());
            }
        }
        for (i, entry) in self.entries.iter().enumerate() {
            let name = self.name(entry);
            if !self.entries[i + 1..].iter().any(|later| self.name(later) == name) {
                envp.push(self.buf[entry.0..].as_ptr().cast::<c_char>());
            }
        }
        envp.push(std::ptr::null());
        envp
    }
}

/// Go's `exec.LookPath` for a bare name: the first regular file with an execute bit on `$PATH`.
fn find_on_path(name: &str) -> Option<CString> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find_map(|dir| {
        let dir = if dir.as_os_str().is_empty() { Path::new(".").to_path_buf() } else { dir };
        let candidate = dir.join(name);
        let executable = std::fs::metadata(&candidate)
            .is_ok_and(|m| m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0);
        executable.then(|| CString::new(candidate.into_os_string().into_vec()).ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn entries(env: &Env) -> Vec<String> {
        env.pointers()
            .into_iter()
            .take_while(|p| !p.is_null())
            // SAFETY: each pointer before the null is a C string in `env` or the base environment.
            .map(|p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn later_additions_win_and_override_the_base() {
        let path = std::env::var("PATH").unwrap_or_default();
        let mut env = Env::default();
        env.push(b"Http_A", b"1");
        env.push(b"Http_A", b"2");
        env.push(b"PATH", b"/x");
        env.push(b"bad=name", b"v");
        env.push(b"nul", b"a\0b");
        env.push(b"", b"empty");
        let all = entries(&env);
        assert!(all.contains(&"Http_A=2".to_string()) && !all.contains(&"Http_A=1".to_string()));
        assert_eq!(all.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
        assert!(all.contains(&"PATH=/x".to_string()) && (path.is_empty() || !all.contains(&format!("PATH={path}"))));
        assert!(!all.iter().any(|e| e.starts_with("bad") || e.starts_with("nul") || e.starts_with('=')));
        assert_eq!(all.len(), base_environment().entries.len() + 1 + usize::from(path.is_empty()));
    }

    /// Bytes of this thread's child stack that a child has written so far (the stack starts
    /// zeroed, and the child's frames grow down from its top).
    fn child_stack_used() -> usize {
        STACK.with(|stack| {
            let stack = stack.borrow();
            stack.iter().position(|&b| b != 0).map_or(0, |lowest| stack.len() - lowest)
        })
    }

    #[test]
    fn the_child_uses_a_small_part_of_its_stack() {
        // A thread of its own: a fresh, zeroed stack.
        let used = std::thread::spawn(|| {
            give_children_fd_limit(crate::sys::nofile_limit().unwrap());
            let null = std::fs::File::options().read(true).write(true).open("/dev/null").unwrap();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&null);
            let stdio = Stdio { stdin: fd, stdout: fd, stderr: fd };
            // Every step up to execve, then the failure path (errno, `_exit`) too.
            let child = Program::new(&["true".into()]).spawn(&Env::default(), &stdio).unwrap();
            reap_now(child.pid).unwrap();
            let missing = Program::new(&["/no/such/program".into()]).spawn(&Env::default(), &stdio);
            assert!(matches!(missing, Err(Failure::Os(e)) if e.raw_os_error() == Some(libc::ENOENT)));
            child_stack_used()
        })
        .join()
        .unwrap();
        eprintln!("child stack: {used} of {STACK_SIZE} bytes used");
        assert!(used > 0 && used <= STACK_SIZE / 8, "{used} bytes of {STACK_SIZE}");
    }

    #[test]
    fn bare_names_are_found_on_path() {
        let sh = find_on_path("sh").expect("sh on PATH");
        assert!(sh.to_bytes().ends_with(b"/sh"));
        assert!(find_on_path("no-such-program-xyz").is_none());
    }
}
