//! `cgi_response=true`: the header block a function writes before its body, as a CGI script does
//! (RFC 3875 §6): lines `Name: value` ending in CRLF or LF, then an empty line.
//!
//! `Status: 404` or `Status: 404 Not Found` sets the status; `Location:` without `Status:` gives
//! 302; every other field becomes a response header, except those that belong to the connection or
//! to the framing of the body (hop-by-hop fields, `Content-Length`, `Transfer-Encoding`): the
//! watchdog sets those. A block that is not valid, or that is not complete within [`MAX_HEAD`]
//! bytes, is refused with one line saying why.

use hyper::StatusCode;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, LOCATION};

/// The largest header block.
pub const MAX_HEAD: usize = 64 * 1024;

/// Fields the watchdog decides, never the function.
const THE_WATCHDOGS: [&str; 8] =
    ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "content-length"];

/// A parsed header block.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
}

/// What the start of the output holds.
#[derive(Debug)]
pub enum Parsed {
    /// A whole block; the body starts at `body` in the output.
    Head { head: Head, body: usize },
    /// No empty line yet, and fewer than [`MAX_HEAD`] bytes: more output may complete it.
    Partial,
    /// Not a header block. `why` is one line for the client; `line` the offending line, cut to 80
    /// bytes, for the log.
    Invalid { why: String, line: String },
}

/// The log line for a refused block: why, and the offending line.
pub fn log_refused(why: &str, line: &str) {
    log::info!("Function's CGI header block refused: {why}: {line:?}");
}

/// Parses the header block at the start of `output`. `ended`: no more output will come.
pub fn parse(output: &[u8], ended: bool) -> Parsed {
    let mut headers = HeaderMap::new();
    let mut status = None;
    let mut at = 0;
    loop {
        // No line of a valid block ends past MAX_HEAD: no need to look further.
        let window = &output[at..output.len().min(MAX_HEAD + 1)];
        let Some(newline) = window.iter().position(|&b| b == b'\n') else {
            return incomplete(output, ended);
        };
        let end = at + newline;
        let line = output[at..end].strip_suffix(b"\r").unwrap_or(&output[at..end]);
        if end + 1 > MAX_HEAD {
            return too_large();
        }
        if line.is_empty() {
            let status =
                status.unwrap_or(if headers.contains_key(LOCATION) { StatusCode::FOUND } else { StatusCode::OK });
            return Parsed::Head { head: Head { status, headers }, body: end + 1 };
        }
        match field(line) {
            Some((name, value)) if name == "status" => match status_of(&value) {
                Some(code) => status = Some(code),
                None => return invalid("Status is not a status code like 404", line),
            },
            Some((name, value)) => {
                if !THE_WATCHDOGS.contains(&name.as_str()) {
                    headers.append(name, value);
                }
            }
            None => return invalid("a line of the header block is not `Name: value`", line),
        }
        at = end + 1;
    }
}

fn incomplete(output: &[u8], ended: bool) -> Parsed {
    if output.len() > MAX_HEAD {
        return too_large();
    }
    if !ended {
        return Parsed::Partial;
    }
    let last = output.strip_suffix(b"\n").unwrap_or(output).rsplit(|&b| b == b'\n').next().unwrap_or_default();
    invalid(
        "the output ended before the empty line that ends the header block",
        last.strip_suffix(b"\r").unwrap_or(last),
    )
}

fn too_large() -> Parsed {
    Parsed::Invalid {
        why: format!("the header block is not complete within {} KiB", MAX_HEAD / 1024),
        line: String::new(),
    }
}

fn invalid(why: &str, line: &[u8]) -> Parsed {
    let line = String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
    Parsed::Invalid { why: why.to_string(), line }
}

/// `Name: value`, with a name that is a valid header name and a value that is a valid header value
/// (surrounding whitespace trimmed).
fn field(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = HeaderName::from_bytes(&line[..colon]).ok()?;
    let value = line[colon + 1..].trim_ascii();
    Some((name, HeaderValue::from_bytes(value).ok()?))
}

/// `404` or `404 Not Found`.
fn status_of(value: &HeaderValue) -> Option<StatusCode> {
    let text = value.to_str().ok()?;
    let code = text.split_once(' ').map_or(text, |(code, _)| code);
    (code.len() == 3).then(|| StatusCode::from_bytes(code.as_bytes()).ok()).flatten().filter(|s| s.as_u16() >= 200)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(output: &str) -> (Head, String) {
        match parse(output.as_bytes(), true) {
            Parsed::Head { head, body } => (head, output[body..].to_string()),
            other => panic!("{output:?}: {other:?}"),
        }
    }

    fn why(output: &[u8], ended: bool) -> String {
        match parse(output, ended) {
            Parsed::Invalid { why, line } => format!("{why} [{line}]"),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(output)),
        }
    }

    #[test]
    fn status_headers_and_body() {
        let (head, body) = head("Status: 404 Not Found\r\nCache-Control: max-age=60\r\nX-A: 1\nX-A: 2\n\nnot here\n");
        assert_eq!(head.status, StatusCode::NOT_FOUND);
        assert_eq!(head.headers.get("cache-control").unwrap(), "max-age=60");
        assert_eq!(head.headers.get_all("x-a").iter().count(), 2);
        assert!(!head.headers.contains_key("status"));
        assert_eq!(body, "not here\n");
        assert_eq!(head_status("Status: 201\n\n"), StatusCode::CREATED);
    }

    fn head_status(output: &str) -> StatusCode {
        head(output).0.status
    }

    #[test]
    fn location_without_status_is_a_redirect() {
        assert_eq!(head_status("Location: /elsewhere\n\n"), StatusCode::FOUND);
        assert_eq!(head_status("Location: /elsewhere\nStatus: 301\n\n"), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(head_status("\nbody"), StatusCode::OK);
    }

    #[test]
    fn framing_and_connection_fields_are_the_watchdogs() {
        let (head, _) =
            head("Content-Length: 5\nTransfer-Encoding: chunked\nConnection: close\nContent-Type: text/html\n\n");
        assert_eq!(head.headers.len(), 1);
        assert_eq!(head.headers.get("content-type").unwrap(), "text/html");
    }

    #[test]
    fn invalid_blocks_say_why_and_name_the_line() {
        assert!(
            why(b"hello world\n\n", true).starts_with("a line of the header block is not `Name: value` [hello world]")
        );
        assert!(why(b"Status: abc\n\n", true).starts_with("Status is not a status code like 404 [Status: abc]"));
        assert!(why(b"Status: 99\n\n", true).contains("Status is not"));
        assert!(why(b"Status: 4040\n\n", true).contains("Status is not"));
        assert!(why(b"X-A: 1\nX-B: 2\r\n", true).ends_with("the header block [X-B: 2]"));
        assert!(why(b"", true).starts_with("the output ended before the empty line"));
        let long = format!("X-Long: {}\n", "a".repeat(200));
        assert!(why(format!("{long}bad line\n").as_bytes(), true).ends_with("[bad line]"));
        assert_eq!(
            why(format!("Bad {long}").as_bytes(), true).len(),
            "a line of the header block is not `Name: value` []".len() + 80
        );
    }

    #[test]
    fn a_block_that_never_ends_is_refused_past_64_kib() {
        let endless = "X-A: 1\n".repeat(MAX_HEAD / 7 + 1);
        assert!(matches!(parse(&endless.as_bytes()[..1000], false), Parsed::Partial));
        assert!(why(endless.as_bytes(), false).starts_with("the header block is not complete within 64 KiB"));
        let line = format!("X-A: {}", "a".repeat(MAX_HEAD + 10));
        assert!(why(line.as_bytes(), false).starts_with("the header block is not complete within 64 KiB"));
    }
}
