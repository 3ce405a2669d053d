//! Support for robustness tests (tests/hardening.rs, tests/soak.rs): raw clients that misbehave on
//! purpose, a keep-alive client, and samples of the watchdog's resources from /proc. Nothing here
//! knows about modes, so mode variants of those tests can share it.

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Response, open_fds, proc_status, read_response, wait_for, zombies_of};

/// What the server did with a request.
#[derive(Debug)]
pub enum Outcome {
    Answered(Response),
    /// Closed (EOF or reset) without a complete response.
    Closed,
    /// Neither an answer nor a close within the limit.
    Silent,
}

impl Outcome {
    /// A 4xx answer or a closed connection: how a server should treat a broken request.
    pub fn is_rejection(&self) -> bool {
        match self {
            Outcome::Answered(r) => (400..500).contains(&r.status),
            Outcome::Closed => true,
            Outcome::Silent => false,
        }
    }
}

/// Sends raw `request` bytes on a new connection and waits up to `limit` for a response or a close.
/// The bytes are written from a thread, and write errors are ignored: the server may rightly close
/// before it has read them all. The write side is left open (no EOF), as a stalling client would.
pub fn exchange(port: u16, request: &[u8], limit: Duration) -> Outcome {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else { return Outcome::Closed };
    let _ = stream.set_read_timeout(Some(limit));
    let mut writer = stream.try_clone().expect("clone socket");
    let request = request.to_vec();
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    let outcome = match read_response(&mut BufReader::new(&stream), false) {
        Ok(response) => Outcome::Answered(response),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Outcome::Silent,
        Err(_) => Outcome::Closed,
    };
    let _ = stream.shutdown(Shutdown::Both);
    let _ = sender.join();
    outcome
}

/// Whether the peer has closed `stream`; bytes it sent meanwhile are read and dropped.
pub fn peer_closed(stream: &mut TcpStream) -> bool {
    let _ = stream.set_nonblocking(true);
    let mut buf = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break true,
        }
    };
    let _ = stream.set_nonblocking(false);
    closed
}

/// Slowloris: connections that send a request head one byte at a time and never finish it.
pub struct Slowloris {
    open: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    driver: JoinHandle<Lifetimes>,
}

/// How long the server kept the slow connections open, as seen by the client.
#[derive(Debug)]
pub struct Lifetimes {
    pub opened: usize,
    pub closed: usize,
    pub shortest: Duration,
    pub longest: Duration,
}

impl Slowloris {
    /// Opens `count` connections to `port` and keeps each dribbling a byte every `period` from a
    /// thread, until the server closes it or [`Slowloris::finish`] is called.
    pub fn start(port: u16, count: usize, period: Duration) -> Slowloris {
        let mut conns = Vec::with_capacity(count);
        for i in 0..count {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect slowloris");
            stream.write_all(format!("GET /slow-{i} HTTP/1.1\r\nHost: x\r\nX-Slow: ").as_bytes()).expect("send head");
            conns.push(Some((stream, Instant::now())));
        }
        let open = Arc::new(AtomicUsize::new(count));
        let stop = Arc::new(AtomicBool::new(false));
        let (open2, stop2) = (Arc::clone(&open), Arc::clone(&stop));
        let driver = std::thread::spawn(move || {
            let mut lifetimes =
                Lifetimes { opened: count, closed: 0, shortest: Duration::MAX, longest: Duration::ZERO };
            while !stop2.load(Ordering::SeqCst) && open2.load(Ordering::SeqCst) > 0 {
                for slot in conns.iter_mut() {
                    let Some((stream, since)) = slot else { continue };
                    // A failed write means the server is gone too; `peer_closed` confirms it.
                    let _ = stream.write_all(b"a");
                    if peer_closed(stream) {
                        let lived = since.elapsed();
                        lifetimes.closed += 1;
                        lifetimes.shortest = lifetimes.shortest.min(lived);
                        lifetimes.longest = lifetimes.longest.max(lived);
                        *slot = None;
                        open2.fetch_sub(1, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(period);
            }
            lifetimes
        });
        Slowloris { open, stop, driver }
    }

    /// Connections the server has not closed yet.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Stops dribbling, closes what is left and reports.
    pub fn finish(self) -> Lifetimes {
        self.stop.store(true, Ordering::SeqCst);
        self.driver.join().expect("slowloris driver")
    }
}

/// An HTTP/1.1 client on one keep-alive connection; reconnects when the server closes it.
pub struct Client {
    port: u16,
    conn: Option<(TcpStream, BufReader<TcpStream>)>,
}

impl Client {
    pub fn new(port: u16) -> Client {
        Client { port, conn: None }
    }

    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<Response> {
        let (writer, reader) = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let stream = TcpStream::connect(("127.0.0.1", self.port))?;
                stream.set_read_timeout(Some(Duration::from_secs(60)))?;
                let reader = BufReader::new(stream.try_clone()?);
                self.conn.insert((stream, reader))
            }
        };
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n", body.len())
            .into_bytes();
        head.extend_from_slice(body);
        let result = writer.write_all(&head).and_then(|()| read_response(reader, false));
        let keep =
            result.as_ref().is_ok_and(|r| !r.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close")));
        if !keep {
            self.conn = None;
        }
        result
    }
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
    const ESTABLISHED: &str = "01";
    const CLOSE_WAIT: &str = "08";
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port =
                fields.get(1).and_then(|a| a.rsplit(':').next()).and_then(|p| u16::from_str_radix(p, 16).ok());
            local_port == Some(port) && matches!(fields.get(3), Some(&ESTABLISHED | &CLOSE_WAIT))
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

/// The value of one series in a Prometheus text exposition, e.g. `http_requests_in_flight` or
/// `http_requests_total{code="200",method="post"}`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Connections to a server on `port` that are open on the client's side (established, or closed by
/// the server but not yet by the client), from the kernel's socket tables.
pub fn client_connections(port: u16) -> usize {
    const ESTABLISHED: &str = "01";
    const CLOSE_WAIT: &str = "08";
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port =
                fields.get(2).and_then(|a| a.rsplit(':').next()).and_then(|p| u16::from_str_radix(p, 16).ok());
            remote_port == Some(port) && matches!(fields.get(3), Some(&ESTABLISHED | &CLOSE_WAIT))
        })
        .count()
}
