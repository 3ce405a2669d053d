//! The function's stdout/stderr → the watchdog's log, one line at a time.
//!
//! A line longer than `max_line` is logged in pieces of `max_line` bytes; the pipe is always read
//! to its end, so an over-long line never stops the logging (the of-watchdog stops reading after
//! one and the function then hangs). The pipe is read only while the watchdog's own output has
//! room ([`logging::room`]): a log that nobody reads slows the function down (as in Go), and never
//! blocks a thread of the watchdog.

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use crate::logging::{self, Output};

/// How lines are written.
#[derive(Clone, Copy, Debug)]
pub struct LogStyle {
    /// `true`: through the watchdog's log with a timestamp and `<stream>: `; `false`: the raw line
    /// to the watchdog's own stdout or stderr.
    pub prefix: bool,
    /// Longest line before it is split; `None` = unbounded.
    pub max_line: Option<usize>,
}

/// Which of the function's streams a pipe carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn output(self) -> Output {
        match self {
            Stream::Stdout => Output::Stdout,
            Stream::Stderr => Output::Stderr,
        }
    }
}

/// Reads `pipe` to its end, logging every line.
pub async fn forward(mut pipe: pipe::Receiver, stream: Stream, style: LogStyle) {
    let mut lines = LineSplitter::new(style.max_line);
    let mut buf = vec![0u8; 16 * 1024];
    // Raw lines of one read go out together.
    let mut raw = Vec::new();
    loop {
        logging::room().await;
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => lines.push(&buf[..n], |line| emit(line, stream, style, &mut raw)),
        }
        pass_on(&mut raw, stream);
    }
    lines.finish(|line| emit(line, stream, style, &mut raw));
    pass_on(&mut raw, stream);
}

fn emit(line: &[u8], stream: Stream, style: LogStyle, raw: &mut Vec<u8>) {
    if style.prefix {
        log::info!("{}: {}", stream.name(), String::from_utf8_lossy(line));
    } else {
        raw.extend_from_slice(line);
        raw.push(b'\n');
    }
}

fn pass_on(raw: &mut Vec<u8>, stream: Stream) {
    if !raw.is_empty() {
        logging::pass_on(stream.output(), Bytes::from(std::mem::take(raw)));
    }
}

/// Cuts a byte stream into lines of at most `max` bytes (without the `\n`).
pub struct LineSplitter {
    partial: Vec<u8>,
    max: Option<usize>,
    /// A line was just cut at `max`: a newline right after it ends that line, not a new one.
    cut: bool,
}

impl LineSplitter {
    pub fn new(max: Option<usize>) -> Self {
        LineSplitter { partial: Vec::new(), max, cut: false }
    }

    pub fn push(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8])) {
        while !data.is_empty() {
            if std::mem::take(&mut self.cut) && data[0] == b'\n' {
                data = &data[1..];
                continue;
            }
            let room = self.max.map_or(usize::MAX, |m| m - self.partial.len());
            let window = &data[..data.len().min(room)];
            if let Some(nl) = window.iter().position(|&b| b == b'\n') {
                self.emit_with(&data[..nl], &mut emit);
                data = &data[nl + 1..];
            } else if window.len() == room {
                self.emit_with(window, &mut emit);
                data = &data[room..];
                self.cut = true;
            } else {
                self.partial.extend_from_slice(data);
                return;
            }
        }
    }

    fn emit_with(&mut self, tail: &[u8], emit: &mut impl FnMut(&[u8])) {
        if self.partial.is_empty() {
            emit(tail);
        } else {
            self.partial.extend_from_slice(tail);
            emit(&self.partial);
            self.partial.clear();
        }
    }

    /// Emits a last line that had no newline.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            emit(&self.partial);
            self.partial.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LineSplitter;

    fn split(max: Option<usize>, pieces: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        let mut s = LineSplitter::new(max);
        for p in pieces {
            s.push(p.as_bytes(), |l| out.push(String::from_utf8(l.to_vec()).unwrap()));
        }
        s.finish(|l| out.push(String::from_utf8(l.to_vec()).unwrap()));
        out
    }

    #[test]
    fn lines_across_reads() {
        assert_eq!(split(None, &["a\nb", "c\n", "\nd"]), ["a", "bc", "", "d"]);
    }

    #[test]
    fn long_lines_are_split_never_dropped() {
        assert_eq!(split(Some(3), &["abcdefg\nhi", "jkl\n"]), ["abc", "def", "g", "hij", "kl"]);
        assert_eq!(split(Some(3), &["abc\n"]), ["abc"]);
        assert_eq!(split(Some(3), &["abc", "\nd"]), ["abc", "d"]);
        assert_eq!(split(Some(3), &["abc\n\n"]), ["abc", ""]);
    }
}
