//! Clients that misbehave on purpose, for the robustness tests (tests/hardening.rs, tests/soak.rs):
//! requests sent without waiting for the server to read them, answers told apart from closes and
//! silence, and slowloris connections that never finish their head. Nothing here knows about
//! modes, so every mode's variant of those tests shares it.

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::http::{Response, read_response};

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
