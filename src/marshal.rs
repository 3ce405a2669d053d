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
    // hyper's names are lower case, so no two of them canonicalise to one key.
    names.sort();

    let mut out = Vec::with_capacity(64 + body.len() * 4 / 3 + names.len() * 32);
    out.extend_from_slice(b"{\"header\":{");
    for (i, (canonical, wire)) in names.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_string(&mut out, canonical.as_bytes());
        out.extend_from_slice(b":[");
        for (j, value) in headers.get_all(*wire).iter().enumerate() {
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

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::cgi::proptests::headers;
    use proptest::prelude::*;
    use serde_json::Value;

    /// Go's reading of bytes as text: a valid character at a time, else one U+FFFD per byte.
    fn go_text(bytes: &[u8]) -> String {
        let mut out = String::new();
        let mut i = 0;
        while i < bytes.len() {
            let valid = (1..=4.min(bytes.len() - i)).find_map(|n| std::str::from_utf8(&bytes[i..i + n]).ok());
            match valid {
                Some(c) => {
                    out.push_str(c);
                    i += c.len();
                }
                None => {
                    out.push('\u{fffd}');
                    i += 1;
                }
            }
        }
        out
    }

    fn unbase64(text: &str) -> Vec<u8> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let digits: Vec<u32> = text
            .trim_end_matches('=')
            .bytes()
            .map(|b| ALPHABET.iter().position(|&a| a == b).expect("base64 alphabet") as u32)
            .collect();
        let mut out = Vec::new();
        for group in digits.chunks(4) {
            let n = group.iter().enumerate().fold(0, |n, (i, d)| n | d << (18 - 6 * i));
            out.extend(n.to_be_bytes()[1..group.len()].iter());
        }
        out
    }

    proptest! {
        /// Any request gives valid JSON (checked by an independent parser) that carries every
        /// header value, in order, and the exact body; and Go's HTML escaping leaves no `<`, `>`
        /// or `&` in the text.
        #[test]
        fn json_round_trips(headers in headers(), body in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut map = HeaderMap::new();
            for (name, value) in headers {
                map.append(name, value);
            }
            let json = encode(&map, &body);
            prop_assert!(!json.iter().any(|b| b"<>&".contains(b)));
            let parsed: Value = serde_json::from_slice(&json).expect("valid JSON");

            let header = parsed["header"].as_object().expect("header object");
            let mut expected: Vec<String> =
                map.keys().filter(|k| *k != HOST && *k != TRANSFER_ENCODING).map(|k| canonical_name(k.as_str())).collect();
            expected.sort();
            prop_assert_eq!(header.keys().cloned().collect::<Vec<_>>(), expected);
            for name in map.keys().filter(|k| *k != HOST && *k != TRANSFER_ENCODING) {
                let values: Vec<Value> = map.get_all(name).iter().map(|v| Value::from(go_text(v.as_bytes()))).collect();
                prop_assert_eq!(&header[&canonical_name(name.as_str())], &Value::Array(values));
            }
            prop_assert_eq!(unbase64(parsed["body"]["raw"].as_str().expect("raw")), body);
        }

        #[test]
        fn go_text_escapes_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut out = Vec::new();
            json_string(&mut out, &bytes);
            let parsed: String = serde_json::from_slice(&out).expect("a JSON string");
            prop_assert_eq!(parsed, go_text(&bytes));
        }
    }
}
