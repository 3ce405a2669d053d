//! What a watchdog writes to its stdout and stderr, read by one thread per stream into memory, and
//! the switch that stops those threads reading (to play a stuck log collector).

use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};

/// Output read from the watchdog.
#[derive(Default)]
pub struct Capture {
    pub text: String,
    /// Bytes read in all.
    pub total: usize,
    /// Keep roughly the newest `limit` bytes of `text`.
    pub limit: Option<usize>,
    /// The stream reached its end (the watchdog closed it, usually by exiting).
    pub ended: bool,
}

impl Capture {
    /// Keeps about the newest `limit` bytes.
    pub fn limited(limit: Option<usize>) -> Capture {
        Capture { limit, ..Capture::default() }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.total += bytes.len();
        self.text.push_str(&String::from_utf8_lossy(bytes));
        if let Some(limit) = self.limit.filter(|&l| self.text.len() > 2 * l) {
            let mut cut = self.text.len() - limit;
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            self.text.drain(..cut);
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
