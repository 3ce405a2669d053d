//! The function's stdout/stderr → the watchdog's log, one line at a time.
//!
//! A line longer than `max_line` is logged in pieces of `max_line` bytes; the pipe is always read
//! to its end, so an over-long line never stops the logging (the of-watchdog stops reading after
//! one and the function then hangs). The pipe is read only while the watchdog's own output has
//! room ([`logging::room`]): a log that nobody reads slows the function down (as in Go), and never
//! blocks a thread of the watchdog.
//!
//! A logged line says which stream it came from and, in the fork modes, which request's function
//! wrote it: text `<time> stderr: <line> [<call id>]` (the tag with `log_callid`), JSON
//! `{…,"msg":"<line>","stream":"stderr","call_id":"…"}` ([`json_line`]). Each piece of a split
//! line is a line of its own, and so one JSON object; all but the last piece say `"cut":true`.

use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use crate::json_log;
use crate::logging::{self, Output};

/// The most bytes of output whose lines wait together for room in the log, and are queued as one
/// batch: at most 1024 lines, some 40 KB formatted. It bounds what a forwarder queues past
/// [`logging::ROOM`], so a burst of function output cannot push the watchdog's own lines out.
const PIECE: usize = 1024;

/// How lines are written.
#[derive(Clone, Copy, Debug)]
pub struct LogStyle {
    /// `true`: through the watchdog's log with a timestamp and `<stream>: ` (or as a JSON object);
    /// `false`: the raw line to the watchdog's own stdout or stderr, in either log format.
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

/// Reads `pipe` to its end, logging every line; `call_id` tags them (see [`crate::modes::call_id`]).
pub async fn forward(mut pipe: pipe::Receiver, stream: Stream, style: LogStyle, call_id: Option<String>) {
    let mut lines = LineSplitter::new(style.max_line);
    // Most functions never write to stderr: the buffer comes with the first output.
    let mut buf = Vec::new();
    let mut out = Pending::default();
    let call_id = call_id.as_deref();
    loop {
        logging::room().await;
        if buf.is_empty() {
            if pipe.readable().await.is_err() {
                break;
            }
            buf = vec![0u8; 16 * 1024];
        }
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Log lines go in pieces: what waits for room is a piece's lines, not a whole read's (a
        // 16 KiB read of `y\n` is 8192 lines, about 300 KB formatted). Raw lines keep their size.
        let piece = if style.prefix { PIECE } else { n };
        for piece in buf[..n].chunks(piece) {
            lines.push(piece, |line, cut| out.add(line, cut, stream, style, call_id));
            out.send(stream).await;
        }
    }
    lines.finish(|line, cut| out.add(line, cut, stream, style, call_id));
    out.send(stream).await;
}

/// The lines of one piece of output, on their way to the log together.
#[derive(Default)]
struct Pending {
    /// Log lines, formatted.
    lines: Vec<u8>,
    /// Raw lines (`prefix_logs=false`).
    raw: Vec<u8>,
}

impl Pending {
    fn add(&mut self, line: &[u8], cut: bool, stream: Stream, style: LogStyle, call_id: Option<&str>) {
        if !style.prefix {
            self.raw.extend_from_slice(line);
            self.raw.push(b'\n');
            return;
        }
        if !log::log_enabled!(log::Level::Info) {
            return;
        }
        match logging::json() {
            true => self.lines.extend_from_slice(&json_line(line, cut, stream, call_id)),
            false => {
                let text = String::from_utf8_lossy(line);
                logging::function_line_text(&mut self.lines, format_args!("{}: {text}{}", stream.name(), Tag(call_id)));
            }
        }
    }

    /// Queues the lines once the log has room for them.
    async fn send(&mut self, stream: Stream) {
        if !self.lines.is_empty() {
            logging::room().await;
            logging::function_lines(std::mem::take(&mut self.lines));
        }
        if !self.raw.is_empty() {
            logging::room().await;
            logging::pass_on(stream.output(), Bytes::from(std::mem::take(&mut self.raw)));
        }
    }
}

/// A line of the function's output as a JSON log line: the line is `msg` (with `msg_base64` if it
/// is not UTF-8), plus `stream`, `call_id`, and `"cut":true` for a piece that the next one continues.
pub fn json_line(line: &[u8], cut: bool, stream: Stream, call_id: Option<&str>) -> Vec<u8> {
    let line = json_log::Line::new(log::Level::Info).msg_bytes(line).str("stream", stream.name());
    let line = line.opt_str("call_id", call_id);
    match cut {
        true => line.raw("cut", true),
        false => line,
    }
    .finish()
}

/// All of `output`, cut into lines as [`forward`] does, as JSON log lines (`write_debug`).
pub fn json_lines(output: &[u8], stream: Stream, max_line: Option<usize>, call_id: Option<&str>) -> Vec<u8> {
    let mut lines = LineSplitter::new(max_line);
    let mut out = Vec::new();
    lines.push(output, |line, cut| out.extend_from_slice(&json_line(line, cut, stream, call_id)));
    lines.finish(|line, cut| out.extend_from_slice(&json_line(line, cut, stream, call_id)));
    out
}

/// ` [<call id>]` after a text line, or nothing.
struct Tag<'a>(Option<&'a str>);

impl std::fmt::Display for Tag<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(id) => write!(f, " [{id}]"),
            None => Ok(()),
        }
    }
}

/// Cuts a byte stream into lines of at most `max` bytes (without the `\n`). Each is emitted with
/// whether it was cut at `max` (the next one goes on with the same line).
pub struct LineSplitter {
    partial: Vec<u8>,
    max: Option<usize>,
}

impl LineSplitter {
    pub fn new(max: Option<usize>) -> Self {
        LineSplitter { partial: Vec::new(), max }
    }

    /// A piece of `max` bytes is emitted once the byte after it is known: a newline there ends the
    /// line (and is not a new, empty one), anything else means it was cut. So a line of exactly
    /// `max` bytes at the end of a read waits for the next read, or the end.
    pub fn push(&mut self, mut data: &[u8], mut emit: impl FnMut(&[u8], bool)) {
        while !data.is_empty() {
            let room = self.max.map_or(usize::MAX, |m| m - self.partial.len());
            let window = &data[..data.len().min(room)];
            if let Some(nl) = window.iter().position(|&b| b == b'\n') {
                self.emit_with(&data[..nl], false, &mut emit);
                data = &data[nl + 1..];
            } else if window.len() == room && data.len() > room {
                let ends = data[room] == b'\n';
                self.emit_with(window, !ends, &mut emit);
                data = &data[room + usize::from(ends)..];
            } else {
                self.partial.extend_from_slice(data);
                return;
            }
        }
    }

    fn emit_with(&mut self, tail: &[u8], cut: bool, emit: &mut impl FnMut(&[u8], bool)) {
        if self.partial.is_empty() {
            emit(tail, cut);
        } else {
            self.partial.extend_from_slice(tail);
            emit(&self.partial, cut);
            self.partial.clear();
        }
    }

    /// Emits a last line that had no newline.
    pub fn finish(&mut self, mut emit: impl FnMut(&[u8], bool)) {
        if !self.partial.is_empty() {
            emit(&self.partial, false);
            self.partial.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LineSplitter;

    /// The lines, a cut one marked with a `+` after it.
    fn split(max: Option<usize>, pieces: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        let mut s = LineSplitter::new(max);
        let mut take =
            |l: &[u8], cut: bool| out.push(String::from_utf8(l.to_vec()).unwrap() + if cut { "+" } else { "" });
        for p in pieces {
            s.push(p.as_bytes(), &mut take);
        }
        s.finish(&mut take);
        out
    }

    #[test]
    fn lines_across_reads() {
        assert_eq!(split(None, &["a\nb", "c\n", "\nd"]), ["a", "bc", "", "d"]);
    }

    #[test]
    fn long_lines_are_split_never_dropped() {
        assert_eq!(split(Some(3), &["abcdefg\nhi", "jkl\n"]), ["abc+", "def+", "g", "hij+", "kl"]);
        assert_eq!(split(Some(3), &["abc\n"]), ["abc"]);
        assert_eq!(split(Some(3), &["abc", "\nd"]), ["abc", "d"]);
        assert_eq!(split(Some(3), &["abc", "d\n"]), ["abc+", "d"]);
        assert_eq!(split(Some(3), &["ab", "c", "", "de"]), ["abc+", "de"]);
        assert_eq!(split(Some(3), &["abc\n\n"]), ["abc", ""]);
    }

    #[test]
    fn the_pieces_give_the_output_back_however_it_was_read() {
        use proptest::prelude::*;
        let data = proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'x'), any::<u8>()], 0..200);
        proptest!(|(data in data, max in 1usize..8, cuts in proptest::collection::vec(0usize..200, 0..6))| {
            let mut splitter = LineSplitter::new(Some(max));
            let mut back = Vec::new();
            let mut take = |line: &[u8], cut: bool| {
                assert!(line.len() <= max);
                back.extend_from_slice(line);
                if !cut {
                    back.push(b'\n');
                }
            };
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut start = 0;
            for end in cuts.into_iter().chain([data.len()]) {
                splitter.push(&data[start..end], &mut take);
                start = end;
            }
            splitter.finish(&mut take);
            // A last line without a newline gets one.
            let mut expected = data.clone();
            if expected.last().is_some_and(|&b| b != b'\n') {
                expected.push(b'\n');
            }
            prop_assert_eq!(back, expected);
        });
    }
}
