//! The JSON log format (`log_format=json`): one object per line, `{"time":…,"level":…,"msg":…}`
//! and, for some lines, more fields. This module owns the line's shape and its escaping: the JSON
//! string escaper, the RFC 3339 time and the base64 of bytes that are not UTF-8. Where a line goes
//! is [`crate::logging`]'s business.
//!
//! Bytes that are not UTF-8 (a function's output can be anything) cannot be a JSON string. `msg`
//! then has `\ufffd` for each invalid sequence, as a lossy decoder would, and the line carries
//! `msg_base64`: the message's exact bytes, so that nothing is lost. Every line is plain ASCII
//! apart from the valid UTF-8 text it carries.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

/// One line being built: `{"time":"…","level":"…"`, then `msg` and the other fields in the order
/// they are added, then `}` and the newline ([`Line::finish`]).
pub struct Line {
    buf: String,
}

impl Line {
    /// A line stamped now.
    pub fn new(level: log::Level) -> Line {
        Line::at(SystemTime::now(), level)
    }

    pub fn at(now: SystemTime, level: log::Level) -> Line {
        let mut buf = String::with_capacity(160);
        buf.push_str("{\"time\":\"");
        push_time(&mut buf, now);
        buf.push_str("\",\"level\":\"");
        buf.push_str(level_name(level));
        buf.push('"');
        Line { buf }
    }

    /// `msg`, formatted straight into the line (no copy of the message is made).
    pub fn msg(mut self, message: fmt::Arguments<'_>) -> Line {
        self.key("msg");
        self.buf.push('"');
        let _ = Escaper(&mut self.buf).write_fmt(message);
        self.buf.push('"');
        self
    }

    /// `msg` from bytes that may not be UTF-8; if they are not, `msg_base64` carries them exactly.
    pub fn msg_bytes(mut self, message: &[u8]) -> Line {
        self.key("msg");
        self.buf.push('"');
        let whole = escape_bytes(&mut self.buf, message);
        self.buf.push('"');
        if !whole {
            self.key("msg_base64");
            self.buf.push('"');
            base64(&mut self.buf, message);
            self.buf.push('"');
        }
        self
    }

    /// A string field.
    pub fn str(mut self, key: &str, value: &str) -> Line {
        self.key(key);
        self.buf.push('"');
        escape(&mut self.buf, value);
        self.buf.push('"');
        self
    }

    /// A string field, when there is a value.
    pub fn opt_str(self, key: &str, value: Option<&str>) -> Line {
        match value {
            Some(value) => self.str(key, value),
            None => self,
        }
    }

    /// A field written as `value` displays: a JSON number (an integer, or digits with a point) or
    /// literal (`true`).
    pub fn raw(mut self, key: &str, value: impl fmt::Display) -> Line {
        self.key(key);
        let _ = write!(self.buf, "{value}");
        self
    }

    /// The line's bytes, newline included.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.push_str("}\n");
        self.buf.into_bytes()
    }

    /// `,"key":`. Keys are this program's own names, which need no escaping.
    fn key(&mut self, key: &str) {
        debug_assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'), "{key}");
        self.buf.push_str(",\"");
        self.buf.push_str(key);
        self.buf.push_str("\":");
    }
}

fn level_name(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "error",
        log::Level::Warn => "warn",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    }
}

/// Appends `text` as the inside of a JSON string: `"` and `\` escaped, control characters (and
/// DEL) as `\n`, `\r`, `\t` or `\u00XX`. Everything else is copied as it is, in runs.
pub fn escape(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let short = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f | 0x7f => "",
            _ => continue,
        };
        // Only ASCII bytes stop the scan, so `i` is a character boundary.
        out.push_str(&text[start..i]);
        if short.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(short);
        }
        start = i + 1;
    }
    out.push_str(&text[start..]);
}

/// [`escape`] for bytes: each sequence that is not UTF-8 becomes `\ufffd`. Whether they all were
/// UTF-8.
pub fn escape_bytes(out: &mut String, bytes: &[u8]) -> bool {
    let mut whole = true;
    for chunk in bytes.utf8_chunks() {
        escape(out, chunk.valid());
        if !chunk.invalid().is_empty() {
            // Escaped rather than the character itself: the line stays ASCII where bytes were lost,
            // so a reader can tell a replacement the watchdog made from one the function wrote.
            out.push_str("\\ufffd");
            whole = false;
        }
    }
    whole
}

/// A `fmt::Write` that escapes what is written through it.
struct Escaper<'a>(&'a mut String);

impl fmt::Write for Escaper<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        escape(self.0, text);
        Ok(())
    }
}

/// Appends `bytes` in standard base64 (RFC 4648 §4, with padding).
pub fn base64(out: &mut String, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let digit = |n: u32| char::from(ALPHABET[(n & 63) as usize]);
    for group in bytes.chunks(3) {
        let n = group.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        out.push(digit(n >> 18));
        out.push(digit(n >> 12));
        out.push(if group.len() > 1 { digit(n >> 6) } else { '=' });
        out.push(if group.len() > 2 { digit(n) } else { '=' });
    }
}

/// `2026-11-30T06:49:03.123Z`: RFC 3339, UTC, milliseconds. (Lines use [`push_time`].)
#[cfg(test)]
pub fn rfc3339(now: SystemTime) -> String {
    let mut out = String::with_capacity(24);
    push_time(&mut out, now);
    out
}

/// Appends the time as [`rfc3339`] writes it.
fn push_time(out: &mut String, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs || text.is_empty() {
            *cached = secs;
            text.clear();
            let (year, month, day) = crate::logging::civil_from_days((secs / 86_400) as i64);
            let rem = secs % 86_400;
            let _ =
                write!(text, "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", rem / 3600, rem / 60 % 60, rem % 60);
        }
        out.push_str(text);
    });
    let _ = write!(out, ".{:03}Z", since.subsec_millis());
}

thread_local! {
    /// The last second formatted, per thread: a busy watchdog logs many lines per second.
    static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        escape(&mut out, text);
        out
    }

    #[test]
    fn escapes_quotes_backslashes_and_control_characters() {
        assert_eq!(escaped("plain"), "plain");
        assert_eq!(escaped(r#"say "hi" \o/"#), r#"say \"hi\" \\o/"#);
        assert_eq!(escaped("a\nb\r\tc"), "a\\nb\\r\\tc");
        assert_eq!(escaped("\0\u{1}\u{1f}\u{7f}"), "\\u0000\\u0001\\u001f\\u007f");
        assert_eq!(escaped("héllo → ✓"), "héllo → ✓");
    }

    #[test]
    fn every_string_round_trips_through_a_json_parser() {
        use proptest::prelude::*;
        proptest!(|(text in any::<String>())| {
            let json = format!("\"{}\"", escaped(&text));
            let parsed: String = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(format!("{json}: {e}")))?;
            prop_assert_eq!(parsed, text);
        });
    }

    #[test]
    fn bytes_that_are_not_utf8_are_marked_and_kept_in_base64() {
        let line = Line::at(UNIX_EPOCH, log::Level::Info).msg_bytes(b"ok \xff\xfe \xc3\x28 \xc3\xa9").finish();
        let text = String::from_utf8(line).expect("the line is UTF-8");
        assert!(!text.contains('\u{fffd}'), "replacements are escaped, not written: {text}");
        let value: serde_json::Value = serde_json::from_str(&text).expect(&text);
        assert_eq!(value["msg"], "ok \u{fffd}\u{fffd} \u{fffd}( é");
        assert_eq!(value["msg_base64"], "b2sg//4gwyggw6k=");
        let line = Line::at(UNIX_EPOCH, log::Level::Info).msg_bytes("fine é".as_bytes()).finish();
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["msg"], "fine é");
        assert!(value.get("msg_base64").is_none(), "only when bytes were replaced");
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (bytes, expected) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")]
        {
            let mut out = String::new();
            base64(&mut out, bytes.as_bytes());
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn time_is_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_millis(951_782_400_000 + 3_723_456)),
            "2000-02-29T01:02:03.456Z"
        );
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_millis(1_796_021_343_123)), "2026-11-30T06:49:03.123Z");
        // The cached second is reused, the milliseconds are not.
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_millis(1_796_021_343_999)), "2026-11-30T06:49:03.999Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_millis(1_796_021_344_000)), "2026-11-30T06:49:04.000Z");
    }

    #[test]
    fn a_line_is_one_object_with_time_level_msg_and_fields() {
        let line = Line::at(UNIX_EPOCH + Duration::from_millis(5), log::Level::Warn)
            .msg(format_args!("two\nlines {}", "\"quoted\""))
            .str("method", "POST")
            .raw("status", 200)
            .raw("duration_s", "0.002000")
            .opt_str("call_id", None)
            .finish();
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"time\":\"1970-01-01T00:00:00.005Z\",\"level\":\"warn\",\"msg\":\"two\\nlines \\\"quoted\\\"\",\
             \"method\":\"POST\",\"status\":200,\"duration_s\":0.002000}\n"
        );
    }
}
