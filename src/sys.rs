//! The system calls that neither std nor socket2 offers, each behind a safe function: the standard
//! streams kept open, the open files limit, `sysconf`, and `poll` and `write` on a borrowed
//! descriptor. Child processes are `process`'s business and the PID-1 init is `init`'s; everything
//! else that needs the kernel directly comes through here.
#![allow(unsafe_code)] // what std and socket2 do not wrap; each block says why it is sound

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Makes sure descriptors 0, 1 and 2 are open (on /dev/null if a supervisor closed them), so that
/// no pipe or socket of ours is ever given one of those numbers: a function's stdio is set up by
/// `dup2` onto 0, 1 and 2, which would otherwise clobber it.
pub fn open_standard_streams() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only asks about `fd`, whatever it is; `open` takes a NUL-terminated path
        // and returns the lowest free number, which is `fd` (the lower ones are open by now). The
        // descriptor it returns is meant to stay open for the life of the process, so nothing
        // owns it.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) < 0 {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
}

/// The watchdog's open files limit (soft and hard).
pub fn nofile_limit() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid rlimit for the kernel to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        Ok(limit)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the watchdog's open files limit.
pub fn set_nofile_limit(limit: &libc::rlimit) -> io::Result<()> {
    // SAFETY: `limit` is a valid rlimit, only read.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, limit) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// `sysconf(name)`: `None` when the system has no (positive) value for it.
pub fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf only reads a configuration value; an unknown name is an error, not UB.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value).ok().filter(|&value| value > 0)
}

/// `poll` on one descriptor: its `revents`, the events of `events` that it has plus any of
/// `POLLERR`, `POLLHUP`, `POLLNVAL` (0 when `timeout_ms` passed first;
/// 0 only asks, -1 waits as long as it takes).
pub fn poll(fd: BorrowedFd<'_>, events: libc::c_short, timeout_ms: libc::c_int) -> io::Result<libc::c_short> {
    let mut pollfd = libc::pollfd { fd: fd.as_raw_fd(), events, revents: 0 };
    // SAFETY: one valid pollfd, for a descriptor that is open while it is borrowed.
    match unsafe { libc::poll(&mut pollfd, 1, timeout_ms) } {
        rc if rc < 0 => Err(io::Error::last_os_error()),
        _ => Ok(pollfd.revents),
    }
}

/// Makes writes to `fd` return `EAGAIN` instead of blocking, for every descriptor that shares its
/// open file description.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL and F_SETFL only read and set the status flags of a descriptor that is open
    // while it is borrowed.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One `write(2)` of `bytes` to `fd`, unbuffered: how many bytes it took.
pub fn write(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: the kernel reads `bytes.len()` bytes from a valid slice, into a descriptor that is
    // open while it is borrowed.
    let n = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_write_to_a_pipe_reaches_its_other_end_and_poll_says_it_has_room() {
        let (reader, writer) = std::io::pipe().unwrap();
        assert_eq!(poll(writer.as_fd(), libc::POLLOUT, 0).unwrap() & libc::POLLOUT, libc::POLLOUT);
        assert_eq!(poll(reader.as_fd(), libc::POLLIN, 0).unwrap(), 0, "nothing to read yet: a timeout");
        assert_eq!(write(writer.as_fd(), b"hello").unwrap(), 5);
        let mut got = [0u8; 5];
        std::io::Read::read_exact(&mut &reader, &mut got).unwrap();
        assert_eq!(&got, b"hello");
        drop(reader);
        assert_eq!(write(writer.as_fd(), b"x").unwrap_err().raw_os_error(), Some(libc::EPIPE));
    }

    #[test]
    fn limits_and_sysconf() {
        let limit = nofile_limit().unwrap();
        assert!(limit.rlim_cur > 0 && limit.rlim_cur <= limit.rlim_max);
        assert!(sysconf(libc::_SC_PAGESIZE).is_some_and(|size| size >= 4096));
        assert_eq!(sysconf(-1), None);
    }
}
