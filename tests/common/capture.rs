//! What a watchdog writes to its stdout and stderr, read by one thread per stream into memory, and
//! the switch that stops those threads reading (to play a stuck log collector).

use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};

/// Output read from the watchdog, kept as the bytes it wrote: a read can end inside a multi-byte
/// character, so the text is decoded only when asked for ([`Capture::text`]), never per read.
#[derive(Default)]
pub struct Capture {
    bytes: Vec<u8>,
    /// Bytes read in all.
    pub total: usize,
    /// Keep roughly the newest `limit` bytes.
    pub limit: Option<usize>,
    /// The stream reached its end (the watchdog closed it, usually by exiting).
    pub ended: bool,
}

impl Capture {
    /// Keeps about the newest `limit` bytes.
    pub fn limited(limit: Option<usize>) -> Capture {
        Capture { limit, ..Capture::default() }
    }

    /// What was kept, as text; bytes that are not UTF-8 (the watchdog wrote them) become U+FFFD.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len();
        self.bytes.extend_from_slice(bytes);
        if let Some(limit) = self.limit.filter(|&l| self.bytes.len() > 2 * l) {
            // Past any continuation bytes, so that what is kept starts with a whole character.
            let mut cut = self.bytes.len() - limit;
            while self.bytes.get(cut).is_some_and(|&b| b & 0xC0 == 0x80) {
                cut += 1;
            }
            self.bytes.drain(..cut);
        }
    }
}

/// Whether the readers of the watchdog's output must stop reading.
#[derive(Default)]
pub struct Hold {
    held: Mutex<bool>,
    released: Condvar,
}

impl Hold {
    fn wait_while_held(&self) {
        let mut held = self.held.lock().unwrap();
        while *held {
            held = self.released.wait(held).unwrap();
        }
    }

    pub fn set(&self, held: bool) {
        *self.held.lock().unwrap() = held;
        self.released.notify_all();
    }
}

/// Reads `stream` into `into` from a thread until it ends, pausing while `held` is set.
pub fn collect(mut stream: impl Read + Send + 'static, into: Arc<Mutex<Capture>>, held: Arc<Hold>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            held.wait_while_held();
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => {
                    into.lock().unwrap().ended = true;
                    return;
                }
                Ok(n) => into.lock().unwrap().push(&buf[..n]),
            }
        }
    });
}
