//! What the proxy changes on the way through: the upstream URL of a request, the hop-by-hop
//! headers it drops (RFC 9110 §7.6.1), WebSocket upgrades it keeps, the framing of the function's
//! answers, and the time limit of a request (`exec_timeout`, lowered by `X-Timeout`, and
//! `write_timeout`).

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use hyper::Uri;
use hyper::header::{
    CONNECTION, CONTENT_LENGTH, EXPECT, HeaderMap, HeaderName, HeaderValue, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use hyper::http::uri::InvalidUri;

use crate::config::{self, Config, UpstreamUrl, go_duration};

/// Headers that describe one connection, not the message: never forwarded. (`Upgrade` comes back
/// for WebSocket handshakes; `Expect` was already answered to the client by the server.)
/// Names that are not among the standard headers are built once (lookups by `&str` hash them on
/// every request).
fn hop_by_hop() -> &'static [HeaderName; 8] {
    static NAMES: OnceLock<[HeaderName; 8]> = OnceLock::new();
    NAMES.get_or_init(|| {
        [
            CONNECTION,
            HeaderName::from_static("keep-alive"),
            HeaderName::from_static("proxy-connection"),
            TE,
            TRAILER,
            TRANSFER_ENCODING,
            UPGRADE,
            EXPECT,
        ]
    })
}

/// The request target that goes to the function, in origin-form: the upstream URL's base path and
/// the request's path and query, joined with one slash (`http://h:5000/base/` and `/a?q=1` give
/// `/base/a?q=1`; the reference gives `/base//a?q=1`). `*` (`OPTIONS *`, about the server as a
/// whole) stays `*`, and without a base path an origin-form target (nearly every request) goes out
/// as it came.
pub fn target(upstream: &UpstreamUrl, request: Uri) -> Result<Uri, InvalidUri> {
    let path = request.path_and_query().map_or("/", |pq| pq.as_str());
    if path == "*" || upstream.base.is_empty() && request.scheme().is_none() && path.starts_with('/') {
        return Ok(request);
    }
    let slash = if path.starts_with('/') { "" } else { "/" };
    format!("{}{slash}{path}", upstream.base).parse()
}

/// Drops the hop-by-hop headers and every header that `Connection` names. With `upgrade`, the
/// value of `Upgrade` is kept and announced again with `Connection: upgrade`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<HeaderValue>) {
    // Most messages have none of them (a header `Connection` names needs `Connection`): one look
    // at each name, no hashing, no lookups.
    if headers.keys().any(|name| hop_by_hop().contains(name)) {
        remove_named_and_hop_by_hop(headers);
    }
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol);
    }
}

fn remove_named_and_hop_by_hop(headers: &mut HeaderMap) {
    // `Connection: keep-alive` or `close`, the common case, names nothing left to remove (and an
    // empty Vec does not allocate).
    let named: Vec<HeaderName> = tokens(headers, &CONNECTION)
        .filter(|t| {
            !t.eq_ignore_ascii_case("close") && !hop_by_hop().iter().any(|h| t.eq_ignore_ascii_case(h.as_str()))
        })
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in hop_by_hop() {
        headers.remove(name);
    }
}

/// Makes the framing of the function's answer one the client can trust. hyper has read an answer
/// with `Transfer-Encoding` as chunked, so a `Content-Length` beside it is wrong and must go (RFC
/// 9112 §6.3), or the client would take the first bytes of the body for all of it. A transfer
/// coding other than chunked (`gzip, chunked`) would reach the client as undecoded bytes: an error.
pub fn check_framing(headers: &mut HeaderMap) -> Result<(), String> {
    if !headers.contains_key(TRANSFER_ENCODING) {
        return Ok(());
    }
    if tokens(headers, &TRANSFER_ENCODING).any(|t| !t.eq_ignore_ascii_case("chunked")) {
        let codings: Vec<_> =
            headers.get_all(TRANSFER_ENCODING).iter().map(|v| String::from_utf8_lossy(v.as_bytes())).collect();
        return Err(format!(
            "the function answered with Transfer-Encoding: {}; only chunked is supported",
            codings.join(", ")
        ));
    }
    headers.remove(CONTENT_LENGTH);
    Ok(())
}

/// The `Upgrade` value when the request asks for a WebSocket (`Connection: upgrade` and
/// `Upgrade: websocket`, in any case). Other protocols (`h2c`) are not tunnelled.
pub fn websocket_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let upgrades = tokens(headers, &CONNECTION).any(|t| t.eq_ignore_ascii_case("upgrade"));
    let websocket = tokens(headers, &UPGRADE).any(|t| t.split('/').next().is_some_and(is_websocket));
    (upgrades && websocket).then(|| headers.get(UPGRADE).cloned()).flatten()
}

fn is_websocket(protocol: &str) -> bool {
    protocol.eq_ignore_ascii_case("websocket")
}

/// The comma-separated tokens of every `name` header.
fn tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The time a request may take, and the setting that chose it (for the 504 and the log).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub after: Duration,
    pub by: &'static str,
}

impl Limit {
    /// The shortest of `exec_timeout`, `X-Timeout` and `write_timeout`. `X-Timeout` (seconds or a
    /// Go duration) can only shorten the limit, and applies when `exec_timeout` is off too; a
    /// value that does not parse is ignored, as in of-watchdog.
    pub fn of(cfg: &Config, headers: &HeaderMap) -> Option<Limit> {
        // A name made once: a lookup by `&str` parses the name every time.
        static X_TIMEOUT: HeaderName = HeaderName::from_static("x-timeout");
        let x_timeout = headers
            .get(&X_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| config::duration(v.trim()).ok())
            .filter(|d| !d.is_zero());
        [
            cfg.exec_timeout.map(|after| Limit { after, by: "exec_timeout" }),
            x_timeout.map(|after| Limit { after, by: "X-Timeout" }),
            cfg.write_timeout.map(|after| Limit { after, by: "write_timeout" }),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|l| l.after)
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.by, go_duration(self.after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(base: &str, request: &str) -> String {
        target(&UpstreamUrl::parse(base).unwrap(), request.parse().unwrap()).unwrap().to_string()
    }

    #[test]
    fn paths_join_with_one_slash() {
        assert_eq!(join("http://h:5000", "/a?q=1"), "/a?q=1");
        assert_eq!(join("http://h:5000/", "/a?q=1"), "/a?q=1");
        assert_eq!(join("http://h:5000/base", "/a/b?q=1&r=%20"), "/base/a/b?q=1&r=%20");
        assert_eq!(join("http://h:5000/base/", "/a?q=1"), "/base/a?q=1");
        assert_eq!(join("http://h:5000/base/", "/"), "/base/");
        assert_eq!(join("http://h/base", "http://client.example/x?y"), "/base/x?y");
        assert_eq!(join("http://h", "http://client.example/x?y"), "/x?y");
        assert_eq!(UpstreamUrl::parse("http://[::1]:5000/b/").unwrap().to_string(), "http://[::1]:5000/b");
        assert_eq!(UpstreamUrl::parse("http://[::1]:5000/b/").unwrap().host(), "::1");
        assert_eq!(UpstreamUrl::parse("http://h").unwrap().port(), 80);
        assert_eq!(join("http://h:5000/base", "*"), "*");
    }

    #[test]
    fn framing_drops_a_length_beside_chunked_and_refuses_other_codings() {
        let mut map = headers(&[("content-length", "5"), ("transfer-encoding", "chunked")]);
        assert_eq!(check_framing(&mut map), Ok(()));
        assert_eq!(names(&map), ["transfer-encoding"]);
        let mut map = headers(&[("content-length", "5")]);
        assert_eq!(check_framing(&mut map), Ok(()));
        assert_eq!(names(&map), ["content-length"]);
        for coding in ["gzip, chunked", "gzip", "chunked, identity"] {
            let mut map = headers(&[("transfer-encoding", coding)]);
            let error = check_framing(&mut map).unwrap_err();
            assert!(error.contains(coding), "{error}");
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn names(map: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_dropped() {
        let mut map = headers(&[
            ("connection", "keep-alive, X-Private"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("expect", "100-continue"),
            ("x-private", "1"),
            ("x-other", "2"),
            ("x-kept", "3"),
            ("content-type", "text/plain"),
        ]);
        remove_hop_by_hop(&mut map, None);
        assert_eq!(names(&map), ["content-type", "x-kept"]);
    }

    #[test]
    fn websocket_upgrades_are_recognised_and_kept() {
        let map = headers(&[("connection", "keep-alive, Upgrade"), ("upgrade", "WebSocket")]);
        let upgrade = websocket_upgrade(&map);
        assert_eq!(upgrade.as_ref().map(|v| v.to_str().unwrap()), Some("WebSocket"));
        let mut map = map;
        remove_hop_by_hop(&mut map, upgrade);
        assert_eq!(map.get("connection").unwrap(), "upgrade");
        assert_eq!(map.get("upgrade").unwrap(), "WebSocket");
        assert!(websocket_upgrade(&headers(&[("upgrade", "websocket")])).is_none(), "needs Connection: upgrade");
        assert!(websocket_upgrade(&headers(&[("connection", "upgrade"), ("upgrade", "h2c")])).is_none());
    }

    #[test]
    fn the_shortest_limit_wins_and_x_timeout_only_lowers() {
        let cfg = |exec: Option<u64>, write: Option<u64>| Config {
            exec_timeout: exec.map(Duration::from_secs),
            write_timeout: write.map(Duration::from_secs),
            ..Config::default()
        };
        let limit = |after: Duration, by| Some(Limit { after, by });
        let s = Duration::from_secs;
        let x = |v: &str| headers(&[("x-timeout", v)]);
        assert_eq!(Limit::of(&cfg(Some(10), Some(30)), &HeaderMap::new()), limit(s(10), "exec_timeout"));
        assert_eq!(Limit::of(&cfg(Some(10), Some(30)), &x("500ms")), limit(Duration::from_millis(500), "X-Timeout"));
        assert_eq!(Limit::of(&cfg(Some(10), Some(30)), &x("20")), limit(s(10), "exec_timeout"));
        assert_eq!(Limit::of(&cfg(None, Some(30)), &x("2s")), limit(s(2), "X-Timeout"));
        assert_eq!(Limit::of(&cfg(None, Some(5)), &x("bogus")), limit(s(5), "write_timeout"));
        assert_eq!(Limit::of(&cfg(Some(10), None), &x("0")), limit(s(10), "exec_timeout"));
        assert_eq!(Limit::of(&cfg(None, None), &HeaderMap::new()), None);
        assert_eq!(limit(s(90), "exec_timeout").unwrap().to_string(), "exec_timeout (1m30s)");
    }
}
