//! PID 1: when the watchdog is a container's first process, orphaned grandchildren are re-parented
//! to it and must be reaped, and the kernel drops signals PID 1 has no handler for.
//!
//! A reaper inside the server would steal exit statuses from the server's own waits (a global
//! `waitpid(-1)` races with per-child waits). So, like tini, the work is split in two processes:
//! before any thread exists, PID 1 forks; the child runs the server as usual, and the parent
//! becomes a minimal init that forwards signals to it, reaps every zombie, and exits with the
//! server's exit code.

use std::mem::MaybeUninit;

/// Signals forwarded from the init to the server.
const FORWARDED: [libc::c_int; 6] =
    [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2, libc::SIGQUIT];

/// Returns in the process that should run the server. As PID 1 that is a forked child, and the
/// calling process never returns from here.
pub fn split_if_pid1() {
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } != 1 {
        return;
    }
    let watched = signal_set();
    let mut previous = MaybeUninit::<libc::sigset_t>::uninit();
    // Block first, so a signal that arrives between fork and sigwait is kept pending, not lost.
    // SAFETY: valid sigset pointers; the process is still single-threaded.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &watched, previous.as_mut_ptr()) };
    // SAFETY: as above; `previous` was filled by sigprocmask.
    let previous = unsafe { previous.assume_init() };
    // SAFETY: no threads exist yet, so the child may run arbitrary code after fork.
    match unsafe { libc::fork() } {
        0 => restore_mask(&previous),
        -1 => {
            eprintln!("fwatchdog: running as PID 1 without a reaper: fork failed: {}", std::io::Error::last_os_error());
            restore_mask(&previous);
        }
        server => supervise(server, &watched),
    }
}

fn signal_set() -> libc::sigset_t {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set; sigaddset with valid signal numbers.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for signal in FORWARDED.iter().chain(&[libc::SIGCHLD]) {
            libc::sigaddset(set.as_mut_ptr(), *signal);
        }
        set.assume_init()
    }
}

fn restore_mask(previous: &libc::sigset_t) {
    // SAFETY: valid sigset pointer.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, previous, std::ptr::null_mut()) };
}

/// The init loop: wait for a signal (or a second, to reap anything missed), forward it, reap.
fn supervise(server: libc::pid_t, watched: &libc::sigset_t) -> ! {
    let timeout = libc::timespec { tv_sec: 1, tv_nsec: 0 };
    loop {
        // SAFETY: valid set and timeout; a null siginfo pointer is allowed.
        let signal = unsafe { libc::sigtimedwait(watched, std::ptr::null_mut(), &timeout) };
        if FORWARDED.contains(&signal) {
            // SAFETY: plain syscall.
            unsafe { libc::kill(server, signal) };
        }
        if let Some(code) = reap_all(server) {
            std::process::exit(code);
        }
    }
}

/// Reaps every exited child; returns the exit code once the server is among them.
fn reap_all(server: libc::pid_t) -> Option<i32> {
    let mut server_code = None;
    loop {
        let mut status = 0;
        // SAFETY: valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return server_code;
        }
        if pid == server {
            server_code =
                Some(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) });
        }
    }
}
