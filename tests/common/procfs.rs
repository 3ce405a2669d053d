//! What /proc says about processes: the watchdog's descendants, survivors found by a marker in
//! their command line, zombies, open descriptors, memory, threads, CPU time, and the TCP
//! connections a port holds, what a process has written, and what it waits for.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::wait::wait_for;

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

/// The watchdog's resources at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub rss_kib: u64,
    /// Peak RSS since start.
    pub hwm_kib: u64,
    pub threads: u64,
    pub fds: usize,
    pub zombies: usize,
}

pub fn usage(pid: u32) -> Usage {
    Usage {
        rss_kib: proc_status(pid, "VmRSS").unwrap_or(0),
        hwm_kib: proc_status(pid, "VmHWM").unwrap_or(0),
        threads: proc_status(pid, "Threads").unwrap_or(0),
        fds: open_fds(pid),
        zombies: zombies_of(pid),
    }
}

/// Connections a server on `port` holds open (established, or closed by the peer but not yet by
/// the server), from the kernel's socket tables.
pub fn server_connections(port: u16) -> usize {
    open_connections(port, LOCAL_ADDRESS)
}

/// Connections to a server on `port` that are open on the client's side (established, or closed by
/// the server but not yet by the client), from the kernel's socket tables.
pub fn client_connections(port: u16) -> usize {
    open_connections(port, REMOTE_ADDRESS)
}

/// Connections to a server on `port` that are established on the client's side: neither closed by
/// the server (that makes them CLOSE_WAIT) nor by the client.
pub fn established_client_connections(port: u16) -> usize {
    connections(port, REMOTE_ADDRESS, &[ESTABLISHED])
}

/// Columns of /proc/net/tcp: `sl local_address rem_address st ...`.
const LOCAL_ADDRESS: usize = 1;
const REMOTE_ADDRESS: usize = 2;
const STATE: usize = 3;
/// Values of its `st` column.
const ESTABLISHED: &str = "01";
const CLOSE_WAIT: &str = "08";

/// Sockets whose address in column `side` has `port` and that are established or in CLOSE_WAIT.
fn open_connections(port: u16, side: usize) -> usize {
    connections(port, side, &[ESTABLISHED, CLOSE_WAIT])
}

/// Sockets whose address in column `side` has `port` and that are in one of `states`.
fn connections(port: u16, side: usize, states: &[&str]) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let address_port =
                fields.get(side).and_then(|a| a.rsplit(':').next()).and_then(|p| u16::from_str_radix(p, 16).ok());
            address_port == Some(port) && fields.get(STATE).is_some_and(|state| states.contains(state))
        })
        .count()
}

/// The watchdog's resources once it holds no connection on `port`: a baseline to compare with.
pub fn idle_usage(pid: u32, port: u16) -> Usage {
    wait_for(Duration::from_secs(5), "no open connection", || (server_connections(port) == 0).then_some(()));
    usage(pid)
}

/// User + system CPU time of `pid`, in clock ticks (usually 100 per second).
pub fn cpu_ticks(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process exists");
    let fields: Vec<&str> = text.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    // After the command: state is field 3 of the man page, utime 14 and stime 15.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(14) + field(15)
}

/// Bytes `pid` has written so far, to anything (`wchar` of /proc/<pid>/io).
pub fn bytes_written(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("wchar:")?.trim().parse().ok())
}

/// Whether a thread of `pid` is blocked writing to a full pipe.
pub fn blocked_on_a_pipe(pid: u32) -> bool {
    waits_in(pid, "pipe_write")
}

/// Whether `pid` is blocked reading the FIFO at `fifo` (one of its descriptors), which is empty.
pub fn blocked_reading(pid: u32, fifo: &Path) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    let holds = fds.filter_map(Result::ok).any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == fifo));
    holds && waits_in(pid, "pipe_read")
}

/// Whether a thread of `pid` sleeps in the kernel function `wchan`.
fn waits_in(pid: u32, wchan: &str) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks
        .filter_map(Result::ok)
        .any(|task| std::fs::read_to_string(task.path().join("wchan")).is_ok_and(|name| name.contains(wchan)))
}
