//! Configuration: every environment variable the watchdog reads, as one table ([`vars::VARS`]:
//! names, modes, defaults, help, parse rule), and the [`Config`] parsed from it. This is the only
//! module that reads the environment for settings (`RUST_LOG` and `log_format`, and `TMPDIR` for
//! `--run-healthcheck` and `mode` for `--help`, are read through it before the rest).
//!
//! Names and defaults follow the OpenFaaS watchdogs. Unlike them, a value that does not parse is
//! an error that stops the start (they silently fall back to a default).

mod values;
pub mod vars;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use hyper::header::HeaderValue;

pub use values::{UpstreamUrl, duration, go_duration};
use vars::VARS;

/// How requests reach the function. (The discriminants index [`vars::Modes`].)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// One process per request, request and response buffered (the classic watchdog).
    #[default]
    Classic = 0,
    /// One process per request, body streamed to STDIN and STDOUT streamed back.
    Streaming = 1,
    /// One process per request, buffered, of-watchdog status codes.
    Serializing = 2,
    /// One long-running process that serves HTTP on `upstream_url`; requests are proxied to it.
    Http = 3,
    /// Files under `static_path`.
    Static = 4,
}

impl Mode {
    pub const ALL: [Mode; 5] = [Mode::Classic, Mode::Streaming, Mode::Serializing, Mode::Http, Mode::Static];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Classic => "classic",
            Mode::Streaming => "streaming",
            Mode::Serializing => "serializing",
            Mode::Http => "http",
            Mode::Static => "static",
        }
    }
}

/// The validated configuration. A field of a variable the mode does not use keeps its zero value.
#[derive(Clone, Debug, Default)]
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
    /// Per-request limit of the function; `None` = off.
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
    /// The function's output starts with a CGI header block.
    pub cgi_response: bool,
    /// Largest request body in bytes; `None` = no limit.
    pub max_request_body: Option<u64>,
    /// Largest output of a buffered function in bytes; `None` = no limit.
    pub max_response_body: Option<u64>,
    /// 0 = unlimited.
    pub max_inflight: usize,
    /// Requests that may wait for a `max_inflight` slot; 0 = none.
    pub max_queue: usize,
    pub lock_path: PathBuf,
    pub upstream_url: Option<UpstreamUrl>,
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

/// A parsed configuration and what the start should warn about.
pub struct Loaded {
    pub config: Config,
    /// Variables that are set but that the mode does not use (templates set `cgi_headers` in http
    /// mode, say): accepted, and named in one warning line.
    pub unused: Vec<&'static str>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Loaded, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`; an empty value counts as unset. Every variable
    /// the mode uses is set from its value, or else from its default for the mode.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Loaded, ConfigError> {
        let given = |var: &vars::Var| {
            var.aliases
                .iter()
                .chain([&var.name])
                .find_map(|&name| Some((name, lookup(name).filter(|v| !v.is_empty())?)))
        };
        let mut config = Config::default();
        let mut unused = Vec::new();
        // `mode` is first in the table: the defaults of the others depend on it.
        for var in VARS {
            let value = match given(var) {
                Some(_) if !var.modes.contains(config.mode) => {
                    unused.push(var.name);
                    continue;
                }
                Some(given) => Some(given),
                None => default_of(var, config.mode, &given).map(|value| (var.name, value)),
            };
            match (value, var.required) {
                (Some((name, value)), _) => (var.set)(&mut config, &value)
                    .map_err(|why| ConfigError(format!("{name}: {why}, got {value:?}")))?,
                (None, Some(why)) if var.modes.contains(config.mode) => {
                    return Err(ConfigError(format!("{}: {why}", var.name)));
                }
                (None, _) => {}
            }
        }
        Ok(Loaded { config, unused })
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

/// A variable's default in `mode`; one that follows another variable takes that one's value,
/// given or default.
fn default_of(
    var: &vars::Var,
    mode: Mode,
    given: &impl Fn(&vars::Var) -> Option<(&'static str, String)>,
) -> Option<String> {
    match var.default {
        vars::Default::Follows(name) => {
            let other = vars::find(name)?;
            given(other).map(|(_, value)| value).or_else(|| default_of(other, mode, given))
        }
        _ => var.default_in(mode).map(str::to_string),
    }
}

/// The lock file's path, for `--run-healthcheck`, which needs no other configuration.
pub fn lock_path_from_env() -> PathBuf {
    let default = vars::find("TMPDIR").and_then(|var| var.default_in(Mode::Classic)).unwrap_or("/tmp");
    let tmpdir = std::env::var("TMPDIR").ok().filter(|d| !d.is_empty());
    values::lock_path(tmpdir.as_deref().unwrap_or(default))
}

/// The mode `--help` shows the defaults of: `mode`'s value if it names one, else classic.
pub fn help_mode() -> Mode {
    values::mode(&std::env::var("mode").unwrap_or_default()).unwrap_or_default()
}

/// `log_format`, read before the rest so that the start itself (and a start error) is logged in
/// it. A value that does not parse gives text here, and the start error when the rest is read.
pub fn log_format() -> crate::logging::Format {
    std::env::var("log_format").ok().and_then(|value| values::log_format(&value).ok()).unwrap_or_default()
}

/// `RUST_LOG`, read before the rest so that the start itself is logged at the chosen level.
pub fn log_filter() -> Option<String> {
    std::env::var("RUST_LOG").ok()
}

#[cfg(test)]
mod tests {
    use super::values;
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned()).map(|loaded| loaded.config)
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
            assert_eq!(values::boolean(v), Ok(want), "{v}");
        }
        assert!(values::boolean("yes").is_err());
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
    use super::values::{MAX_DURATION, timeout};
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Every name `Config::from_lookup` reads, aliases included.
    fn names() -> Vec<&'static str> {
        VARS.iter().flat_map(|var| var.aliases.iter().copied().chain([var.name])).collect()
    }

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
        prop::collection::hash_map(prop::sample::select(names()).prop_map(String::from), value(), 0..12)
    }

    proptest! {
        /// Whatever the environment holds, the start either succeeds or fails with one line that
        /// names the variable.
        #[test]
        fn any_environment_gives_a_config_or_one_named_error(mut env in settings(), fprocess in value()) {
            env.entry("fprocess".into()).or_insert(fprocess);
            match Config::from_lookup(|k| env.get(k).cloned()) {
                Ok(Loaded { config, .. }) => {
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
                    prop_assert!(names().contains(&name), "does not start with a variable name: {message:?}");
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
            prop_assert_eq!(values::boolean(&word), Ok(word == "1" || word.eq_ignore_ascii_case("true")));
            prop_assume!(!["true", "false"].contains(&junk.as_str()));
            prop_assert!(values::boolean(&junk).is_err());
        }
    }
}
