//! PID 1: when the watchdog is a container's first process, orphaned grandchildren are re-parented
//! to it and must be reaped, and the kernel drops signals PID 1 has no handler for.
//!
//! A reaper inside the server would steal exit statuses from the server's own waits (a global
//! `waitpid(-1)` races with per-child waits). So, like tini, the work is split in two processes:
//! before any thread exists, PID 1 forks; the child runs the server as usual, and the parent
//! becomes a minimal init that forwards signals to it, reaps every zombie, and exits with the
//! server's exit code.
#![allow(unsafe_code)] // fork, signal masks, sigtimedwait and waitpid are libc calls

use std::mem::MaybeUninit;

use crate::logging;

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
    if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &watched, previous.as_mut_ptr()) } != 0 {
        logging::early(
            log::Level::Error,
            format_args!(
                "fwatchdog: running as PID 1 without a reaper: sigprocmask failed: {}",
                std::io::Error::last_os_error()
            ),
        );
        return;
    }
    // SAFETY: filled by the successful sigprocmask.
    let previous = unsafe { previous.assume_init() };
    // SAFETY: no threads exist yet, so the child may run arbitrary code after fork.
    match unsafe { libc::fork() } {
        0 => restore_mask(&previous),
        -1 => {
            logging::early(
                log::Level::Error,
                format_args!(
                    "fwatchdog: running as PID 1 without a reaper: fork failed: {}",
                    std::io::Error::last_os_error()
                ),
            );
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

/// Gives the server the signal mask it would have had without the init. If that fails the server
/// would never see SIGTERM (it stays blocked): it must not run like that.
fn restore_mask(previous: &libc::sigset_t) {
    // SAFETY: valid sigset pointer.
    if unsafe { libc::sigprocmask(libc::SIG_SETMASK, previous, std::ptr::null_mut()) } != 0 {
        logging::early(
            log::Level::Error,
            format_args!("fwatchdog: cannot restore the signal mask: {}", std::io::Error::last_os_error()),
        );
        std::process::exit(1);
    }
}

/// The init loop: wait for a signal (or a second, to reap anything missed), forward it, reap.
fn supervise(server: libc::pid_t, watched: &libc::sigset_t) -> ! {
    let timeout = libc::timespec { tv_sec: 1, tv_nsec: 0 };
    let mut reported = false;
    loop {
        match wait_signal(watched, &timeout) {
            Ok(Some(signal)) if FORWARDED.contains(&signal) => {
                if let Err(e) = forward(server, signal) {
                    logging::early(
                        log::Level::Error,
                        format_args!("fwatchdog init: cannot pass signal {signal} on to the server: {e}"),
                    );
                }
            }
            Ok(_) => {}
            Err(e) => {
                // Not a state that goes away by itself: say so once, and keep reaping each second
                // rather than spin.
                if !std::mem::replace(&mut reported, true) {
                    logging::early(
                        log::Level::Error,
                        format_args!("fwatchdog init: sigtimedwait: {e}; signals are no longer passed on"),
                    );
                }
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
        if let Some(code) = reap_all(server) {
            std::process::exit(code);
        }
    }
}

/// The next of the `watched` signals, `None` when `timeout` passed first (or the wait was
/// interrupted).
fn wait_signal(watched: &libc::sigset_t, timeout: &libc::timespec) -> std::io::Result<Option<libc::c_int>> {
    // SAFETY: valid set and timeout; a null siginfo pointer is allowed.
    let signal = unsafe { libc::sigtimedwait(watched, std::ptr::null_mut(), timeout) };
    if signal > 0 {
        return Ok(Some(signal));
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EAGAIN | libc::EINTR) => Ok(None),
        _ => Err(error),
    }
}

/// Sends `signal` to the server. A server that is already gone (ESRCH) is not an error: it is
/// reaped next.
fn forward(server: libc::pid_t, signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: plain syscall.
    if unsafe { libc::kill(server, signal) } == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::ESRCH) { Ok(()) } else { Err(error) }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_signal_wait_is_an_error_not_a_timeout() {
        let watched = signal_set();
        let short = libc::timespec { tv_sec: 0, tv_nsec: 1 };
        assert!(matches!(wait_signal(&watched, &short), Ok(None)), "a timeout is no signal");
        let invalid = libc::timespec { tv_sec: 0, tv_nsec: 2_000_000_000 };
        assert!(wait_signal(&watched, &invalid).is_err(), "EINVAL is reported");
    }

    #[test]
    fn forwarding_to_a_server_that_is_gone_is_not_an_error() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as libc::pid_t;
        child.wait().unwrap();
        assert!(forward(pid, 0).is_ok(), "ESRCH: it is reaped next");
        // SAFETY: getpid has no preconditions.
        let own = unsafe { libc::getpid() };
        assert!(forward(own, 12_345).is_err(), "EINVAL is reported");
    }
}
