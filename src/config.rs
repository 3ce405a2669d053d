//! Configuration: every environment variable the watchdog reads, its default, its parse rule and
//! its error message. Nothing else in the crate reads the environment for settings.
//!
//! Names and defaults follow the OpenFaaS watchdogs. Unlike them, a value that does not parse is
//! an error that stops the start (they silently fall back to a default).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use hyper::header::HeaderValue;

use crate::words;

/// How requests reach the function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One process per request, request and response buffered (the classic watchdog).
    Classic,
    /// One process per request, body streamed to STDIN and STDOUT streamed back.
    Streaming,
    /// One process per request, buffered, of-watchdog status codes.
    Serializing,
    /// One long-running process that serves HTTP on `upstream_url`; requests are proxied to it.
    Http,
    /// Files under `static_path`.
    Static,
}

impl Mode {
    fn needs_process(self) -> bool {
        self != Mode::Static
    }
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub mode: Mode,
    /// `fprocess` as written (for logs).
    pub fprocess: String,
    /// `fprocess` split into words; empty only in static mode.
    pub argv: Vec<String>,
    /// Deadline for reading a request's headers and body; `None` = no limit.
    pub read_timeout: Option<Duration>,
    /// Deadline for producing a response; `None` = no limit.
    pub write_timeout: Option<Duration>,
    /// Time between SIGTERM and closing the listener.
    pub healthcheck_interval: Duration,
    /// Per-process limit; `None` = off.
    pub exec_timeout: Option<Duration>,
    pub port: u16,
    /// `None` = metrics server disabled.
    pub metrics_port: Option<u16>,
    pub write_debug: bool,
    pub cgi_headers: bool,
    pub combine_output: bool,
    pub marshal_request: bool,
    pub debug_headers: bool,
    pub suppress_lock: bool,
    /// Validated at start: the value is sent as a header on every response.
    pub content_type: Option<HeaderValue>,
    /// 0 = unlimited.
    pub max_inflight: usize,
    pub lock_path: PathBuf,
    pub upstream_url: Option<String>,
    pub static_path: PathBuf,
    pub buffer_http: bool,
    pub prefix_logs: bool,
    /// Longest function log line before it is split; `None` = unbounded.
    pub log_buffer_size: Option<usize>,
    pub log_callid: bool,
    pub ready_path: Option<hyper::Uri>,
    /// http mode: how long the function may take to accept connections; `None` = no limit.
    pub start_timeout: Option<Duration>,
}

/// A configuration error: names the variable and the offending value.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// One row of the `--help` table: name, default, meaning.
pub const VARIABLES: &[(&str, &str, &str)] = &[
    ("fprocess", "(required)", "command run per request; quotes group words, no shell"),
    ("function_process", "", "alias of fprocess; wins when both are set"),
    ("mode", "classic", "classic, streaming, serializing, http or static"),
    ("read_timeout", "30s", "deadline for reading request headers and body"),
    ("write_timeout", "30s", "deadline for the response; 504 when the function is slower"),
    ("healthcheck_interval", "write_timeout", "time between SIGTERM and closing the listener"),
    ("exec_timeout", "0 (classic), 30s", "kill the function's process group after this; 0 = off"),
    ("port", "8080", "HTTP port (0 = any free port)"),
    ("metrics_port", "8081", "Prometheus metrics port; 0 disables"),
    ("max_inflight", "0", "concurrent requests before 429; 0 = unlimited"),
    ("write_debug", "false", "log function output, query and path"),
    ("cgi_headers", "true", "pass request headers as Http_* environment variables"),
    ("combine_output", "true", "classic: stderr goes into the response with stdout"),
    ("marshal_request", "false", "classic: send headers and body as JSON on STDIN"),
    ("debug_headers", "false", "classic: print request and response headers"),
    ("suppress_lock", "false", "do not write the lock file $TMPDIR/.lock"),
    ("content_type", "(none), octet-stream", "response Content-Type"),
    ("upstream_url", "", "http mode: where the function listens (alias http_upstream_url)"),
    ("static_path", "/home/app/public", "static mode: the directory served"),
    ("buffer_http", "false", "http mode: buffer the request body (alias http_buffer_req_body)"),
    ("prefix_logs", "true", "prefix function log lines with time and stream name"),
    ("log_buffer_size", "65536", "longest function log line before it is split; -1 = unbounded"),
    ("log_callid", "false", "append X-Call-Id to request logs (alias log_call_id)"),
    ("ready_path", "", "path on the function that /_/ready consults"),
    ("start_timeout", "60s", "http mode: exit non-zero if the function does not listen by then"),
    ("TMPDIR", "/tmp", "directory of the lock file"),
];

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`; an empty value counts as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let env = Env(&|name| lookup(name).filter(|v| !v.is_empty()));

        let mode = env.parse("mode", Mode::Classic, parse_mode)?;
        for unsupported in ["jwt_auth", "jwt_auth_local"] {
            // Ignoring it would silently publish a function its owner meant to protect.
            if env.parse(unsupported, false, parse_bool)? {
                return Err(ConfigError(format!(
                    "{unsupported}: OpenFaaS IAM (JWT) authentication is not supported by fwatchdog; unset it"
                )));
            }
        }

        let fprocess = env.get("function_process").or_else(|| env.get("fprocess")).unwrap_or_default();
        let argv = words::split(&fprocess).map_err(|e| ConfigError(format!("fprocess: {e} in {fprocess:?}")))?;
        if argv.is_empty() && mode.needs_process() {
            return Err(ConfigError("fprocess: provide the command to run, for example fprocess=cat".into()));
        }

        let write_timeout = env.parse("write_timeout", Some(Duration::from_secs(30)), timeout)?;
        let default_exec = if mode == Mode::Classic { None } else { Some(Duration::from_secs(30)) };
        let default_content_type = match mode {
            Mode::Streaming | Mode::Serializing => Some(HeaderValue::from_static("application/octet-stream")),
            _ => None,
        };
        let upstream_url = env.get("http_upstream_url").or_else(|| env.get("upstream_url"));
        if mode == Mode::Http {
            match &upstream_url {
                None => {
                    return Err(ConfigError(
                        "upstream_url: mode=http needs the URL the function listens on, for example upstream_url=http://127.0.0.1:5000".into(),
                    ));
                }
                Some(url) => {
                    check_upstream_url(url).map_err(|why| ConfigError(format!("upstream_url: {why}, got {url:?}")))?
                }
            }
        }

        Ok(Config {
            mode,
            argv,
            fprocess,
            read_timeout: env.parse("read_timeout", Some(Duration::from_secs(30)), timeout)?,
            write_timeout,
            healthcheck_interval: env.parse("healthcheck_interval", write_timeout.unwrap_or_default(), duration)?,
            exec_timeout: env.parse("exec_timeout", default_exec, timeout)?,
            port: env.parse("port", 8080, parse_port)?,
            metrics_port: env.parse("metrics_port", Some(8081), |v| parse_port(v).map(|p| (p != 0).then_some(p)))?,
            write_debug: env.parse("write_debug", false, parse_bool)?,
            cgi_headers: env.parse("cgi_headers", true, parse_bool)?,
            combine_output: env.parse("combine_output", true, parse_bool)?,
            marshal_request: env.parse("marshal_request", false, parse_bool)?,
            debug_headers: env.parse("debug_headers", false, parse_bool)?,
            suppress_lock: env.parse("suppress_lock", false, parse_bool)?,
            content_type: env.parse("content_type", default_content_type, |v| {
                HeaderValue::from_str(v).map(Some).map_err(|_| "expected a value that can be sent as a header".into())
            })?,
            max_inflight: env.parse("max_inflight", 0, |v| {
                v.parse::<usize>().map_err(|_| "expected a whole number of requests (0 = unlimited)".into())
            })?,
            lock_path: lock_path(env.get("TMPDIR")),
            upstream_url,
            static_path: env.get("static_path").map_or_else(|| PathBuf::from("/home/app/public"), PathBuf::from),
            buffer_http: env.parse("http_buffer_req_body", false, parse_bool)?
                || env.parse("buffer_http", false, parse_bool)?,
            prefix_logs: env.parse("prefix_logs", true, parse_bool)?,
            log_buffer_size: env.parse("log_buffer_size", Some(65536), parse_log_buffer_size)?,
            log_callid: env.parse("log_callid", false, parse_bool)? || env.parse("log_call_id", false, parse_bool)?,
            ready_path: env.parse("ready_path", None, parse_ready_path)?,
            start_timeout: env.parse("start_timeout", Some(Duration::from_secs(60)), timeout)?,
        })
    }

    /// The startup line of the reference watchdogs, e.g. `read: 30s write: 30s hard: 0s health: 30s`.
    pub fn timeouts_line(&self) -> String {
        let d = |t: Option<Duration>| go_duration(t.unwrap_or_default());
        format!(
            "Timeouts: read: {} write: {} hard: {} health: {}.",
            d(self.read_timeout),
            d(self.write_timeout),
            d(self.exec_timeout),
            go_duration(self.healthcheck_interval)
        )
    }
}

/// An `http://host[:port][/path]` URL: the http mode joins request paths to its path.
fn check_upstream_url(url: &str) -> Result<(), String> {
    const EXPECTED: &str = "expected a URL like http://127.0.0.1:5000 (optionally with a path)";
    let uri: hyper::Uri = url.parse().map_err(|_| EXPECTED.to_string())?;
    let authority = uri.authority().map_or("", |a| a.as_str());
    let after_host = authority.rsplit_once(']').map_or(authority, |(_, rest)| rest);
    let bad_port = after_host.contains(':') && uri.port_u16().is_none();
    if uri.scheme_str() != Some("http") || uri.host().is_none_or(str::is_empty) || bad_port || authority.contains('@') {
        return Err(EXPECTED.into());
    }
    if uri.query().is_some() {
        return Err("a query cannot be joined with the request's; remove it".into());
    }
    Ok(())
}

/// The path (and query) that `/_/ready` sends to the function.
fn parse_ready_path(value: &str) -> Result<Option<hyper::Uri>, String> {
    const EXPECTED: &str = "expected a path like /ready";
    if !value.starts_with('/') {
        return Err(EXPECTED.into());
    }
    value.parse().map(Some).map_err(|_| EXPECTED.into())
}

/// `$TMPDIR/.lock`, the file whose presence means "healthy".
pub fn lock_path(tmpdir: Option<String>) -> PathBuf {
    tmpdir.filter(|d| !d.is_empty()).map_or_else(|| PathBuf::from("/tmp"), PathBuf::from).join(".lock")
}

/// Environment access that turns parse failures into errors naming the variable.
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
    }

    fn parse<T>(&self, name: &str, default: T, parse: impl Fn(&str) -> Result<T, String>) -> Result<T, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(value) => parse(&value).map_err(|why| ConfigError(format!("{name}: {why}, got {value:?}"))),
        }
    }
}

fn parse_mode(value: &str) -> Result<Mode, String> {
    match value {
        "classic" => Ok(Mode::Classic),
        "streaming" => Ok(Mode::Streaming),
        "serializing" => Ok(Mode::Serializing),
        "http" => Ok(Mode::Http),
        "static" => Ok(Mode::Static),
        _ => Err("expected classic, streaming, serializing, http or static".into()),
    }
}

/// `true`/`false`/`1`/`0` in any case. (The references accept only the exact `"true"` and treat
/// everything else as false, so `cgi_headers=1` turned the feature off.)
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err("expected true, false, 1 or 0".into()),
    }
}

fn parse_port(value: &str) -> Result<u16, String> {
    value.parse::<u16>().map_err(|_| "expected a port number from 0 to 65535".into())
}

fn parse_log_buffer_size(value: &str) -> Result<Option<usize>, String> {
    match value.parse::<i64>() {
        Ok(n) if n < 0 => Ok(None),
        Ok(0) => Err("expected a positive number of bytes, or -1 for unbounded".into()),
        Ok(n) => Ok(Some(usize::try_from(n).map_err(|_| "too large")?)),
        Err(_) => Err("expected a number of bytes, or -1 for unbounded".into()),
    }
}

/// A timeout where 0 means "none".
fn timeout(value: &str) -> Result<Option<Duration>, String> {
    duration(value).map(|d| (!d.is_zero()).then_some(d))
}

/// Go's longest duration (`math.MaxInt64` nanoseconds, about 292 years). Larger values can make
/// `Instant + timeout` overflow, which panics in every request.
const MAX_DURATION: Duration = Duration::from_nanos(i64::MAX as u64);

/// Whole seconds (`"10"`) or a Go duration (`"1m30s"`, `"500ms"`, `"1.5h"`), at most
/// [`MAX_DURATION`].
pub fn duration(value: &str) -> Result<Duration, String> {
    parse_duration(value)?
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| format!("too large, the limit is {}", go_duration(MAX_DURATION)))
}

/// `None` when the value is too large.
fn parse_duration(value: &str) -> Result<Option<Duration>, String> {
    const EXPECTED: &str = "expected seconds or a duration like 10s, 1m30s or 500ms";
    let digits = value.strip_prefix('+').unwrap_or(value);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(digits.parse::<u64>().ok().map(Duration::from_secs));
    }
    let mut rest = digits;
    if rest.is_empty() || rest.starts_with('-') {
        return Err(EXPECTED.into());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let number: f64 = number.parse().map_err(|_| EXPECTED.to_string())?;
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(EXPECTED.into()),
        };
        total += number * seconds;
        rest = after;
    }
    Ok(Duration::try_from_secs_f64(total).ok())
}

/// Formats like Go's `time.Duration.String`: `30s`, `1m30s`, `1h0m0s`, `500ms`, `1.5s`, `0s`.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (div, unit) = match nanos {
            n if n < 1_000 => (1, "ns"),
            n if n < 1_000_000 => (1_000, "µs"),
            _ => (1_000_000, "ms"),
        };
        return format!("{}{unit}", trim_fraction(nanos, div));
    }
    let secs = nanos / 1_000_000_000;
    let frac = nanos % 1_000_000_000;
    let seconds = trim_fraction(u128::from((secs % 60) as u64) * 1_000_000_000 + frac, 1_000_000_000);
    match (secs / 3600, secs / 60 % 60) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// `value / div` with the fraction written without trailing zeros.
fn trim_fraction(value: u128, div: u128) -> String {
    let whole = value / div;
    let frac = value % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    fn error(vars: &[(&str, &str)]) -> String {
        load(vars).unwrap_err().0
    }

    #[test]
    fn defaults_match_the_classic_watchdog() {
        let c = load(&[("fprocess", "cat")]).unwrap();
        assert_eq!(c.mode, Mode::Classic);
        assert_eq!(c.argv, ["cat"]);
        assert_eq!(c.read_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.write_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.healthcheck_interval, Duration::from_secs(30));
        assert_eq!(c.exec_timeout, None);
        assert_eq!(c.port, 8080);
        assert_eq!(c.metrics_port, Some(8081));
        assert!(c.cgi_headers && c.combine_output);
        assert!(!c.write_debug && !c.marshal_request && !c.debug_headers && !c.suppress_lock);
        assert_eq!(c.content_type, None);
        assert_eq!(c.max_inflight, 0);
        assert_eq!(c.lock_path, PathBuf::from("/tmp/.lock"));
        assert_eq!(c.timeouts_line(), "Timeouts: read: 30s write: 30s hard: 0s health: 30s.");
    }

    #[test]
    fn of_watchdog_modes_change_defaults() {
        let c = load(&[("fprocess", "cat"), ("mode", "streaming")]).unwrap();
        assert_eq!(c.exec_timeout, Some(Duration::from_secs(30)));
        assert_eq!(c.content_type, Some(HeaderValue::from_static("application/octet-stream")));
        assert!(load(&[("mode", "static")]).is_ok(), "static needs no fprocess");
    }

    #[test]
    fn healthcheck_interval_follows_write_timeout() {
        let c = load(&[("fprocess", "cat"), ("write_timeout", "7")]).unwrap();
        assert_eq!(c.healthcheck_interval, Duration::from_secs(7));
    }

    #[test]
    fn function_process_wins_over_fprocess() {
        let c = load(&[("fprocess", "cat"), ("function_process", "wc -c")]).unwrap();
        assert_eq!(c.argv, ["wc", "-c"]);
    }

    #[test]
    fn empty_counts_as_unset() {
        let c = load(&[("fprocess", "cat"), ("port", ""), ("exec_timeout", "")]).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.exec_timeout, None);
    }

    #[test]
    fn invalid_values_name_variable_and_value() {
        assert_eq!(
            error(&[("fprocess", "cat"), ("exec_timeout", "abc")]),
            r#"exec_timeout: expected seconds or a duration like 10s, 1m30s or 500ms, got "abc""#
        );
        assert_eq!(
            error(&[("fprocess", "cat"), ("port", "99999")]),
            r#"port: expected a port number from 0 to 65535, got "99999""#
        );
        assert_eq!(
            error(&[("fprocess", "cat"), ("cgi_headers", "maybe")]),
            r#"cgi_headers: expected true, false, 1 or 0, got "maybe""#
        );
        assert!(error(&[("fprocess", "cat"), ("max_inflight", "-1")]).starts_with("max_inflight: "));
        assert!(error(&[("fprocess", "cat"), ("content_type", "text/plain\n")]).starts_with("content_type: "));
        assert!(error(&[("fprocess", "cat"), ("mode", "inproc")]).starts_with("mode: "));
        for bad in ["healthz", "/a b"] {
            assert_eq!(
                error(&[("fprocess", "cat"), ("ready_path", bad)]),
                format!("ready_path: expected a path like /ready, got {bad:?}")
            );
        }
        let c = load(&[("fprocess", "cat"), ("ready_path", "/ready?deep=1")]).unwrap();
        assert_eq!(c.ready_path.map(|u| u.to_string()).as_deref(), Some("/ready?deep=1"));
        assert!(error(&[("fprocess", "sh -c 'x")]).starts_with("fprocess: unbalanced single quote"));
        assert!(error(&[]).starts_with("fprocess: "));
        assert!(error(&[("fprocess", "cat"), ("jwt_auth", "true")]).starts_with("jwt_auth: "));
        assert!(error(&[("fprocess", "cat"), ("mode", "http")]).starts_with("upstream_url: "));
        for bad in ["https://h:5000", "127.0.0.1:5000", "http://", "http://h/a?b=1", "http://h:port"] {
            let e = error(&[("fprocess", "cat"), ("mode", "http"), ("upstream_url", bad)]);
            assert!(e.starts_with("upstream_url: ") && e.ends_with(&format!("got {bad:?}")), "{e}");
        }
        let c = load(&[("fprocess", "cat"), ("mode", "http"), ("upstream_url", "http://[::1]:5000/base/")]).unwrap();
        assert_eq!(c.start_timeout, Some(Duration::from_secs(60)));
    }

    #[test]
    fn booleans_accept_any_case() {
        for (v, want) in [
            ("true", true),
            ("TRUE", true),
            ("True", true),
            ("1", true),
            ("false", false),
            ("FALSE", false),
            ("0", false),
        ] {
            assert_eq!(parse_bool(v), Ok(want), "{v}");
        }
        assert!(parse_bool("yes").is_err());
    }

    #[test]
    fn durations() {
        let s = Duration::from_secs;
        assert_eq!(duration("10"), Ok(s(10)));
        assert_eq!(duration("+5"), Ok(s(5)));
        assert_eq!(duration("0"), Ok(s(0)));
        assert_eq!(duration("20s"), Ok(s(20)));
        assert_eq!(duration("1m30s"), Ok(s(90)));
        assert_eq!(duration("1.5h"), Ok(s(5400)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2us"), Ok(Duration::from_micros(2)));
        for bad in ["abc", "-5", "-5s", "2.5", " 5", "5x", "s", "1m30", "."] {
            assert!(duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn go_duration_format() {
        let s = Duration::from_secs;
        assert_eq!(go_duration(s(0)), "0s");
        assert_eq!(go_duration(s(30)), "30s");
        assert_eq!(go_duration(s(90)), "1m30s");
        assert_eq!(go_duration(s(5400)), "1h30m0s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_micros(2)), "2µs");
    }

    #[test]
    fn log_buffer_size() {
        assert_eq!(load(&[("fprocess", "cat"), ("log_buffer_size", "-1")]).unwrap().log_buffer_size, None);
        assert_eq!(load(&[("fprocess", "cat"), ("log_buffer_size", "10")]).unwrap().log_buffer_size, Some(10));
        assert!(error(&[("fprocess", "cat"), ("log_buffer_size", "abc")]).starts_with("log_buffer_size: "));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Every name `Config::from_lookup` reads, aliases included.
    const NAMES: &[&str] = &[
        "fprocess",
        "function_process",
        "mode",
        "jwt_auth",
        "jwt_auth_local",
        "read_timeout",
        "write_timeout",
        "healthcheck_interval",
        "exec_timeout",
        "port",
        "metrics_port",
        "max_inflight",
        "write_debug",
        "cgi_headers",
        "combine_output",
        "marshal_request",
        "debug_headers",
        "suppress_lock",
        "content_type",
        "upstream_url",
        "http_upstream_url",
        "static_path",
        "buffer_http",
        "http_buffer_req_body",
        "prefix_logs",
        "log_buffer_size",
        "log_callid",
        "log_call_id",
        "ready_path",
        "start_timeout",
        "TMPDIR",
    ];

    /// Values near the edges of every parse rule, and junk.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[-+]?[0-9]{0,25}(\\.[0-9]{0,12})?(ns|us|µs|ms|s|m|h|d)?",
            "([0-9]{1,6}(\\.[0-9]{1,3})?(ns|us|ms|s|m|h)){1,4}",
            "(?i)(true|false|1|0|yes)",
            "-?[0-9]{1,20}",
            any::<u64>().prop_map(|n| n.to_string()),
            "(classic|streaming|serializing|http|static|Classic)",
            "http://[a-z0-9.:]{0,20}",
            "[a-z '\"\\\\]{0,20}",
        ]
    }

    fn settings() -> impl Strategy<Value = HashMap<String, String>> {
        prop::collection::hash_map(prop::sample::select(NAMES).prop_map(String::from), value(), 0..12)
    }

    proptest! {
        /// Whatever the environment holds, the start either succeeds or fails with one line that
        /// names the variable.
        #[test]
        fn any_environment_gives_a_config_or_one_named_error(mut env in settings(), fprocess in value()) {
            env.entry("fprocess".into()).or_insert(fprocess);
            match Config::from_lookup(|k| env.get(k).cloned()) {
                Ok(config) => {
                    prop_assert!(config.mode == Mode::Static || !config.argv.is_empty());
                    // Every accepted timeout can become a deadline (an overflow panics per request).
                    let timeouts = [config.read_timeout, config.write_timeout, config.exec_timeout, config.start_timeout];
                    for limit in timeouts.into_iter().flatten().chain([config.healthcheck_interval]) {
                        prop_assert!(std::time::Instant::now().checked_add(limit).is_some(), "{limit:?}");
                    }
                }
                Err(ConfigError(message)) => {
                    prop_assert!(!message.contains('\n'), "more than one line: {message:?}");
                    let name = message.split(':').next().unwrap_or("");
                    prop_assert!(NAMES.contains(&name), "does not start with a variable name: {message:?}");
                }
            }
        }

        #[test]
        fn durations_never_panic(text in value()) {
            let _ = duration(&text);
            let _ = timeout(&text);
        }

        /// An accepted duration can be added to a point in time: as large as Go allows, no larger.
        #[test]
        fn accepted_durations_fit_a_deadline(seconds in any::<u64>(), unit in "(s|m|h)") {
            for text in [seconds.to_string(), format!("{seconds}{unit}")] {
                if let Ok(d) = duration(&text) {
                    prop_assert!(d <= MAX_DURATION, "{text:?}");
                    prop_assert!(std::time::Instant::now().checked_add(d).is_some(), "{text:?}");
                }
            }
        }

        #[test]
        fn whole_seconds(seconds in any::<u32>()) {
            prop_assert_eq!(duration(&seconds.to_string()), Ok(Duration::from_secs(u64::from(seconds))));
        }

        /// What `go_duration` prints (the startup log line), `duration` reads back exactly.
        #[test]
        fn go_durations_round_trip(nanos in 0u64..400 * 3600 * 1_000_000_000) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(duration(&go_duration(d)), Ok(d), "{}", go_duration(d));
        }

        #[test]
        fn booleans_in_any_case(
            word in "(true|false|1|0)",
            upper in prop::collection::vec(any::<bool>(), 5),
            junk in "[a-z]{2,6}",
        ) {
            let word: String =
                word.chars().zip(upper).map(|(c, up)| if up { c.to_ascii_uppercase() } else { c }).collect();
            prop_assert_eq!(parse_bool(&word), Ok(word == "1" || word.eq_ignore_ascii_case("true")));
            prop_assume!(!["true", "false"].contains(&junk.as_str()));
            prop_assert!(parse_bool(&junk).is_err());
        }
    }
}
