//! `marshal_request=true`: the request's headers and body as the JSON document the classic
//! watchdog writes to the function's STDIN:
//! `{"header":{"Name":["value",…],…},"body":{"raw":"<base64>"}}`, names sorted, Go's escaping.

use hyper::header::{HOST, HeaderMap, TRANSFER_ENCODING};

use crate::cgi::canonical_name;

pub fn encode(headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    let mut names: Vec<(String, &str)> = headers
        .keys()
        .filter(|name| *name != HOST && *name != TRANSFER_ENCODING)
        .map(|name| (canonical_name(name.as_str()), name.as_str()))
        .collect();
    names.sort();
    // Two wire names can canonicalise to one key (rare): Go merges their values under that key.
    names.dedup_by(|a, b| a.0 == b.0);

    let mut out = Vec::with_capacity(64 + body.len() * 4 / 3 + names.len() * 32);
    out.extend_from_slice(b"{\"header\":{");
    for (i, (canonical, _)) in names.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(&mut out, canonical.as_bytes());
        out.extend_from_slice(b":[");
        let values =
            headers.keys().filter(|k| canonical_name(k.as_str()) == *canonical).flat_map(|k| headers.get_all(k).iter());
        for (j, value) in values.enumerate() {
            if j > 0 {
                out.push(b',');
            }
            json_string(&mut out, value.as_bytes());
        }
        out.push(b']');
    }
    out.extend_from_slice(b"},\"body\":{\"raw\":\"");
    base64(&mut out, body);
    out.extend_from_slice(b"\"}}");
    out
}

/// A JSON string as Go's `encoding/json` writes it: `<`, `>`, `&`, U+2028 and U+2029 escaped,
/// each byte of invalid UTF-8 replaced by U+FFFD.
fn json_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}') => {
                    out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
                }
                c => {
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        // Go replaces each invalid byte on its own.
        for _ in chunk.invalid() {
            out.extend_from_slice(b"\\ufffd");
        }
    }
    out.push(b'"');
}

/// Standard base64 with padding.
pub fn base64(out: &mut Vec<u8>, data: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut chunks = data.chunks_exact(3);
    for c in &mut chunks {
        let n = u32::from(c[0]) << 16 | u32::from(c[1]) << 8 | u32::from(c[2]);
        out.extend([18, 12, 6, 0].map(|s| ALPHABET[(n >> s & 63) as usize]));
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend([ALPHABET[(n >> 18) as usize], ALPHABET[(n >> 12 & 63) as usize], b'=', b'=']);
        }
        [a, b] => {
            let n = u32::from(a) << 16 | u32::from(b) << 8;
            out.extend([
                ALPHABET[(n >> 18) as usize],
                ALPHABET[(n >> 12 & 63) as usize],
                ALPHABET[(n >> 6 & 63) as usize],
                b'=',
            ]);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn b64(data: &[u8]) -> String {
        let mut out = Vec::new();
        base64(&mut out, data);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn matches_the_reference_example() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("localhost:8080"));
        h.insert("user-agent", HeaderValue::from_static("curl/7.88.1"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        h.insert("content-length", HeaderValue::from_static("5"));
        let json = String::from_utf8(encode(&h, b"hello")).unwrap();
        assert_eq!(
            json,
            r#"{"header":{"Accept":["*/*"],"Content-Length":["5"],"Content-Type":["text/plain"],"User-Agent":["curl/7.88.1"],"X-A":["1","2"]},"body":{"raw":"aGVsbG8="}}"#
        );
    }

    #[test]
    fn go_escaping() {
        let mut out = Vec::new();
        json_string(&mut out, b"<a&b>\"\\\x01\xff\xe2\x80\xa8");
        assert_eq!(String::from_utf8(out).unwrap(), r#""\u003ca\u0026b\u003e\"\\\u0001\ufffd\u2028""#);
    }

    #[test]
    fn empty_request() {
        assert_eq!(String::from_utf8(encode(&HeaderMap::new(), b"")).unwrap(), r#"{"header":{},"body":{"raw":""}}"#);
    }
}
