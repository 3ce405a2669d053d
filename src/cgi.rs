//! Request → `Http_*` environment variables for the function, as the classic watchdog builds them.

use hyper::header::{CONTENT_LENGTH, HOST, HeaderMap, TRANSFER_ENCODING};
use hyper::http::request::Parts;

use crate::process::Env;

/// Go's `CanonicalMIMEHeaderKey`: the first letter and every letter after `-` upper case, the rest
/// lower case (`x-lower-case` → `X-Lower-Case`, `x_under` → `X_under`, `x.dot` → `X.dot`).
pub fn canonical_name(name: &str) -> String {
    let mut out = Vec::with_capacity(name.len());
    push_canonical(&mut out, name, b'-');
    String::from_utf8_lossy(&out).into_owned()
}

/// Appends the canonical form of `name` (ASCII, as every header name is), writing `dash` for `-`.
fn push_canonical(out: &mut Vec<u8>, name: &str, dash: u8) {
    let mut upper = true;
    out.extend(name.bytes().map(|b| {
        let c = if upper { b.to_ascii_uppercase() } else { b.to_ascii_lowercase() };
        upper = b == b'-';
        if b == b'-' { dash } else { c }
    }));
}

/// `Http_` followed by the canonical header name with `-` replaced by `_`.
#[cfg(test)]
pub fn env_name(header: &str) -> String {
    let mut name = Vec::with_capacity(5 + header.len());
    push_env_name(&mut name, header);
    String::from_utf8_lossy(&name).into_owned()
}

fn push_env_name(out: &mut Vec<u8>, header: &str) {
    out.extend_from_slice(b"Http_");
    push_canonical(out, header, b'_');
}

/// The request's body length as Go reports it: -1 when chunked, 0 when absent.
fn content_length(headers: &HeaderMap, chunked: bool) -> i64 {
    if chunked {
        return -1;
    }
    headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn is_chunked(headers: &HeaderMap) -> bool {
    headers.get_all(TRANSFER_ENCODING).iter().any(|v| {
        v.to_str().is_ok_and(|v| v.rsplit(',').next().is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked")))
    })
}

/// The variables added to the parent environment, in the order the classic watchdog appends them;
/// a later entry overrides an earlier one with the same name. Anything `execve` cannot carry (a NUL
/// in a decoded path, say) is left out rather than failing the spawn.
pub fn environment(parts: &Parts) -> Env {
    let headers = &parts.headers;
    let chunked = is_chunked(headers);
    let mut env = Env::with_capacity(headers.keys_len() + 8, 512);
    let mut name = Vec::with_capacity(64);
    for header in headers.keys() {
        if header == HOST || header == TRANSFER_ENCODING || (header == CONTENT_LENGTH && chunked) {
            continue; // Go moves these out of the header map.
        }
        if let Some(value) = headers.get(header) {
            name.clear();
            push_env_name(&mut name, header.as_str());
            env.push(&name, value.as_bytes());
        }
    }
    let length = content_length(headers, chunked).to_string();
    let length = length.as_bytes();
    env.push(b"Http_Method", parts.method.as_str().as_bytes());
    env.push(b"Http_ContentLength", length);
    env.push(b"Http_Content_Length", length);
    if chunked {
        env.push(b"Http_Transfer_Encoding", b"chunked");
    }
    if let Some(query) = parts.uri.query().filter(|q| !q.is_empty()) {
        env.push(b"Http_Query", query.as_bytes());
    }
    let path = percent_decode(parts.uri.path());
    if !path.is_empty() {
        env.push(b"Http_Path", &path);
    }
    let host = headers.get(HOST).map(|h| h.as_bytes()).or(parts.uri.authority().map(|a| a.as_str().as_bytes()));
    if let Some(host) = host.filter(|h| !h.is_empty()) {
        env.push(b"Http_Host", host);
    }
    env
}

/// Decodes `%XX` escapes; a malformed escape is kept as written (as Go's URL parser would reject it,
/// hyper has already accepted the path, so be lenient).
pub fn percent_decode(path: &str) -> Vec<u8> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (bytes.get(i + 1).and_then(hex), bytes.get(i + 2).and_then(hex))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Request;

    fn env_of(req: Request<()>) -> Vec<(String, String)> {
        let (parts, ()) = req.into_parts();
        environment(&parts).vars().into_iter().map(|(k, v)| (k, String::from_utf8(v).unwrap())).collect()
    }

    #[test]
    fn canonical_names_follow_go() {
        assert_eq!(canonical_name("x-lower-case"), "X-Lower-Case");
        assert_eq!(canonical_name("123-abc"), "123-Abc");
        assert_eq!(canonical_name("x_under"), "X_under");
        assert_eq!(canonical_name("x.dot"), "X.dot");
        assert_eq!(env_name("content-type"), "Http_Content_Type");
        assert_eq!(env_name("x-call-id"), "Http_X_Call_Id");
    }

    #[test]
    fn classic_variables_in_order() {
        let req = Request::post("/some/path%20x?a=1&b=%20")
            .header("Host", "example.com:8080")
            .header("Content-Type", "text/plain")
            .header("Content-Length", "5")
            .header("X-A", "1")
            .header("X-A", "2")
            .header("Method", "fake")
            .body(())
            .unwrap();
        let env = env_of(req);
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "Http_Content_Type",
                "Http_Content_Length",
                "Http_X_A",
                "Http_Method",
                "Http_Method",
                "Http_ContentLength",
                "Http_Content_Length",
                "Http_Query",
                "Http_Path",
                "Http_Host"
            ]
        );
        let last = |name: &str| env.iter().rev().find(|(k, _)| k == name).unwrap().1.clone();
        assert_eq!(last("Http_X_A"), "1", "first value of a repeated header");
        assert_eq!(last("Http_Method"), "POST", "appended variables win");
        assert_eq!(last("Http_ContentLength"), "5");
        assert_eq!(last("Http_Query"), "a=1&b=%20", "raw query");
        assert_eq!(last("Http_Path"), "/some/path x", "decoded path");
        assert_eq!(last("Http_Host"), "example.com:8080");
    }

    #[test]
    fn chunked_request() {
        let req = Request::post("/").header("Transfer-Encoding", "chunked").body(()).unwrap();
        let env = env_of(req);
        assert!(env.contains(&("Http_ContentLength".into(), "-1".into())));
        assert!(env.contains(&("Http_Transfer_Encoding".into(), "chunked".into())));
        assert!(!env.iter().any(|(k, _)| k == "Http_Query"), "no query, no variable");
    }

    #[test]
    fn nul_never_reaches_the_environment() {
        let req = Request::get("/a%00b").body(()).unwrap();
        assert!(!env_of(req).iter().any(|(k, _)| k == "Http_Path"));
    }
}

#[cfg(test)]
pub(crate) mod proptests {
    use super::*;
    use hyper::Request;
    use hyper::header::{HeaderName, HeaderValue};
    use proptest::prelude::*;

    /// Header names as they arrive: any RFC 9110 token (hyper lower-cases them).
    pub fn header_name() -> impl Strategy<Value = HeaderName> {
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,24}".prop_map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap())
    }

    /// Header values as hyper accepts them: visible ASCII, space, tab and any byte from 0x80.
    pub fn header_value() -> impl Strategy<Value = HeaderValue> {
        let byte = prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff];
        prop::collection::vec(byte, 0..24).prop_map(|v| HeaderValue::from_bytes(&v).unwrap())
    }

    pub fn headers() -> impl Strategy<Value = Vec<(HeaderName, HeaderValue)>> {
        prop::collection::vec((header_name(), header_value()), 0..12)
    }

    /// A path with escapes of every byte (`%00`, `%3D`, …), and a query.
    fn target() -> impl Strategy<Value = String> {
        let piece =
            prop_oneof!["[a-zA-Z0-9/._~=-]{1,6}", any::<u8>().prop_map(|b| format!("%{b:02X}")), Just("%zz".into())];
        (prop::collection::vec(piece, 0..8), "[a-zA-Z0-9=&%]{0,12}")
            .prop_map(|(pieces, query)| format!("/{}?{query}", pieces.concat()))
    }

    proptest! {
        #[test]
        fn env_names_are_valid_for_any_header(name in header_name()) {
            let env = env_name(name.as_str());
            prop_assert!(env.starts_with("Http_") && env.len() > 5);
            prop_assert!(!env.contains(['=', '\0', '-']), "{env:?}");
        }

        #[test]
        fn canonical_names_ignore_case(name in "[A-Za-z0-9_.-]{1,24}") {
            let canonical = canonical_name(&name);
            prop_assert_eq!(&canonical_name(&name.to_ascii_lowercase()), &canonical);
            prop_assert_eq!(canonical_name(&canonical), canonical);
        }

        /// What reaches the function's environment can always be passed to execve: no `=` in a
        /// name, no NUL anywhere; and every header (but Host and Transfer-Encoding) is there.
        #[test]
        fn environment_is_always_valid(headers in headers(), target in target(), chunked in any::<bool>()) {
            let mut req = Request::post(target.as_str());
            for (name, value) in &headers {
                req = req.header(name, value);
            }
            if chunked {
                req = req.header(TRANSFER_ENCODING, "chunked");
            }
            let (parts, ()) = req.body(()).unwrap().into_parts();
            let env = environment(&parts).vars();
            for (name, value) in &env {
                prop_assert!(name.starts_with("Http_") && !name.contains(['=', '\0']), "{name:?}");
                prop_assert!(!value.contains(&0), "{name}={value:?}");
            }
            for name in parts.headers.keys().filter(|n| *n != HOST && *n != TRANSFER_ENCODING && *n != CONTENT_LENGTH) {
                let first = parts.headers.get(name).unwrap().as_bytes();
                let var = env_name(name.as_str());
                prop_assert!(env.iter().any(|(k, v)| *k == var && v == first), "{var} missing");
            }
            let path = percent_decode(parts.uri.path());
            let has_path = env.iter().any(|(k, v)| k == "Http_Path" && *v == path);
            prop_assert_eq!(has_path, !path.contains(&0), "Http_Path only when it has no NUL");
        }

        #[test]
        fn percent_decoding_inverts_encoding(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let encoded: String = bytes.iter().map(|b| format!("%{b:02x}")).collect();
            prop_assert_eq!(percent_decode(&encoded), bytes);
        }

        #[test]
        fn percent_decoding_never_panics(text in any::<String>()) {
            let _ = percent_decode(&text);
        }
    }
}
