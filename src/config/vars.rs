//! The table of every environment variable the watchdog reads: its names, the modes that use it,
//! its default in each mode, its help text, and how its value sets the configuration. The parsed
//! [`Config`], `fwatchdog --help` and the table in `docs/configuration.md` all come from here.

use hyper::header::HeaderValue;

use super::{Config, Mode, values};
use crate::words;

/// A set of modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Modes(u8);

impl Modes {
    pub const ALL: Modes = Modes(0b11111);
    /// The modes that start `fprocess`: all but static.
    pub const PROCESS: Modes = Modes(0b01111);
    /// The modes that start a process per request.
    pub const FORK: Modes = Modes(0b00111);
    /// The modes that hold the whole response in memory: classic and serializing.
    pub const BUFFERED: Modes = Modes(0b00101);
    pub const CLASSIC: Modes = Modes(0b00001);
    pub const HTTP: Modes = Modes(0b01000);
    pub const STATIC: Modes = Modes(0b10000);

    pub fn contains(self, mode: Mode) -> bool {
        self.0 & (1 << mode as u8) != 0
    }
}

/// A variable's default.
#[derive(Clone, Copy, Debug)]
pub enum Default {
    /// The same value in every mode that uses it.
    Is(&'static str),
    /// One value in classic mode, another in the of-watchdog's modes (as the two Go watchdogs);
    /// `""` is unset.
    Classic { classic: &'static str, other: &'static str },
    /// The value of another variable.
    Follows(&'static str),
    /// Unset: the feature is off, or (with [`Var::required`]) the variable must be given.
    Unset,
}

/// One environment variable.
pub struct Var {
    pub name: &'static str,
    /// Other names for it (the of-watchdog's); one that is set wins over `name`.
    pub aliases: &'static [&'static str],
    pub modes: Modes,
    pub default: Default,
    /// Why the start fails when a mode that uses it finds it unset.
    pub required: Option<&'static str>,
    pub help: &'static str,
    /// Applies a value (given, or the default) to the configuration; the error says why the value
    /// is refused.
    pub set: fn(&mut Config, &str) -> Result<(), String>,
}

impl Var {
    /// The default as written in this mode, if the mode uses the variable and it has one.
    pub fn default_in(&self, mode: Mode) -> Option<&'static str> {
        if !self.modes.contains(mode) {
            return None;
        }
        match self.default {
            Default::Is(value) => Some(value),
            Default::Classic { classic, other } => {
                Some(if mode == Mode::Classic { classic } else { other }).filter(|value| !value.is_empty())
            }
            // Follows another variable: its value, given or default (`config::default_of`).
            Default::Follows(_) | Default::Unset => None,
        }
    }

    /// The default column of `--help` and the docs.
    pub fn default_text(&self, mode: Mode) -> String {
        if !self.modes.contains(mode) {
            return "-".into();
        }
        match (self.default, self.default_in(mode)) {
            (Default::Follows(name), _) => name.to_string(),
            (_, Some(value)) => value.to_string(),
            (_, None) if self.required.is_some() => "(required)".into(),
            (_, None) => "(unset)".into(),
        }
    }
}

/// The variable called `name` (not an alias).
pub fn find(name: &str) -> Option<&'static Var> {
    VARS.iter().find(|var| var.name == name)
}

fn flag(value: &str) -> Result<bool, String> {
    values::boolean(value)
}

/// Ignoring `jwt_auth` would silently publish a function its owner meant to protect.
fn refuse_jwt(value: &str) -> Result<(), String> {
    match flag(value)? {
        true => Err("OpenFaaS IAM (JWT) authentication is not supported by fwatchdog; unset it".into()),
        false => Ok(()),
    }
}

/// Every variable, in the order of the docs. `mode` comes first: the others' defaults depend on it.
pub static VARS: &[Var] = &[
    Var {
        name: "mode",
        aliases: &[],
        modes: Modes::ALL,
        default: Default::Is("classic"),
        required: None,
        help: "how requests reach the function: classic, streaming, serializing, http or static",
        set: |c, v| values::mode(v).map(|value| c.mode = value),
    },
    Var {
        name: "fprocess",
        aliases: &["function_process"],
        modes: Modes::PROCESS,
        default: Default::Unset,
        required: Some("provide the command to run, for example fprocess=cat"),
        help: "the function's command: split like shell words (quotes group), no shell runs",
        set: |c, v| {
            let argv = words::split(v)?;
            if argv.is_empty() {
                return Err("provide the command to run, for example fprocess=cat".into());
            }
            c.fprocess = v.to_string();
            c.argv = argv;
            Ok(())
        },
    },
    Var {
        name: "read_timeout",
        aliases: &[],
        modes: Modes::ALL,
        default: Default::Is("30s"),
        required: None,
        help: "deadline for a request's headers and body; idle keep-alive connections close after it too",
        set: |c, v| values::timeout(v).map(|value| c.read_timeout = value),
    },
    Var {
        name: "write_timeout",
        aliases: &[],
        modes: Modes::ALL,
        default: Default::Is("30s"),
        required: None,
        help: "deadline for the response: a function still running then is killed (504), and the longest drain",
        set: |c, v| values::timeout(v).map(|value| c.write_timeout = value),
    },
    Var {
        name: "healthcheck_interval",
        aliases: &[],
        modes: Modes::ALL,
        default: Default::Follows("write_timeout"),
        required: None,
        help: "after SIGTERM, how long the watchdog keeps serving while /_/health says 503",
        set: |c, v| values::duration(v).map(|value| c.healthcheck_interval = value),
    },
    Var {
        name: "exec_timeout",
        aliases: &[],
        modes: Modes::PROCESS,
        default: Default::Classic { classic: "0", other: "30s" },
        required: None,
        help: "time limit of the function for one request: its process group is killed; 0 = none",
        set: |c, v| values::timeout(v).map(|value| c.exec_timeout = value),
    },
    Var {
        name: "port",
        aliases: &[],
        modes: Modes::ALL,
        default: Default::Is("8080"),
        required: None,
        help: "HTTP port; 0 picks a free one (the log says which)",
        set: |c, v| values::port(v).map(|value| c.port = value),
    },
    Var {
        name: "metrics_port",
        aliases: &[],
        modes: Modes::ALL,
        default: Default::Is("8081"),
        required: None,
        help: "port of the Prometheus /metrics endpoint; 0 disables it",
        set: |c, v| values::port(v).map(|port| c.metrics_port = Some(port).filter(|&p| p != 0)),
    },
    Var {
        name: "max_inflight",
        aliases: &[],
        modes: Modes::ALL,
        default: Default::Is("0"),
        required: None,
        help: "function requests served at once; the next one waits in max_queue, else gets 429; 0 = no limit",
        set: |c, v| {
            c.max_inflight = v.parse().map_err(|_| "expected a whole number of requests (0 = unlimited)")?;
            Ok(())
        },
    },
    Var {
        name: "max_queue",
        aliases: &[],
        modes: Modes::ALL,
        default: Default::Is("0"),
        required: None,
        help: "requests beyond max_inflight that wait for a slot (first come, first served) instead of a 429",
        set: |c, v| {
            c.max_queue = v.parse().map_err(|_| "expected a whole number of requests (0 = no queue)")?;
            Ok(())
        },
    },
    Var {
        name: "suppress_lock",
        aliases: &[],
        modes: Modes::ALL,
        default: Default::Is("false"),
        required: None,
        help: "do not write the lock file $TMPDIR/.lock",
        set: |c, v| flag(v).map(|value| c.suppress_lock = value),
    },
    Var {
        name: "TMPDIR",
        aliases: &[],
        modes: Modes::ALL,
        default: Default::Is("/tmp"),
        required: None,
        help: "where the lock file .lock is written",
        set: |c, v| {
            c.lock_path = values::lock_path(v);
            Ok(())
        },
    },
    Var {
        name: "ready_path",
        aliases: &[],
        modes: Modes::ALL,
        default: Default::Unset,
        required: None,
        help: "/_/ready answers with the function's own answer to GET <ready_path> (a path starting with /)",
        set: |c, v| values::ready_path(v).map(|path| c.ready_path = Some(path)),
    },
    Var {
        name: "write_debug",
        aliases: &[],
        modes: Modes::CLASSIC,
        default: Default::Is("false"),
        required: None,
        help: "log the function's output, the query and the path",
        set: |c, v| flag(v).map(|value| c.write_debug = value),
    },
    Var {
        name: "cgi_headers",
        aliases: &[],
        modes: Modes::FORK,
        default: Default::Is("true"),
        required: None,
        help: "give the function Http_* environment variables for the request's headers, method, path, query",
        set: |c, v| flag(v).map(|value| c.cgi_headers = value),
    },
    Var {
        name: "combine_output",
        aliases: &[],
        modes: Modes::CLASSIC,
        default: Default::Is("true"),
        required: None,
        help: "stderr goes into the response with stdout; false: stderr goes to the log",
        set: |c, v| flag(v).map(|value| c.combine_output = value),
    },
    Var {
        name: "marshal_request",
        aliases: &[],
        modes: Modes::CLASSIC,
        default: Default::Is("false"),
        required: None,
        help: "send the request's headers and body as JSON on STDIN",
        set: |c, v| flag(v).map(|value| c.marshal_request = value),
    },
    Var {
        name: "debug_headers",
        aliases: &[],
        modes: Modes::CLASSIC,
        default: Default::Is("false"),
        required: None,
        help: "print request ([in]) and response ([out]) headers on stdout",
        set: |c, v| flag(v).map(|value| c.debug_headers = value),
    },
    Var {
        name: "content_type",
        aliases: &[],
        modes: Modes::FORK,
        default: Default::Classic { classic: "", other: "application/octet-stream" },
        required: None,
        help: "Content-Type of the function's answers; classic without it echoes the request's",
        set: |c, v| {
            let value = HeaderValue::from_str(v).map_err(|_| "expected a value that can be sent as a header")?;
            // Never empty: an empty value is unset, and classic's empty default is no default.
            c.content_type = Some(value);
            Ok(())
        },
    },
    Var {
        name: "cgi_response",
        aliases: &[],
        modes: Modes::FORK,
        default: Default::Is("false"),
        required: None,
        help: "the output starts with CGI header lines (`Status: 404`, `Cache-Control: ...`) and an empty line",
        set: |c, v| flag(v).map(|value| c.cgi_response = value),
    },
    Var {
        name: "max_request_body",
        aliases: &[],
        modes: Modes::PROCESS,
        default: Default::Is("0"),
        required: None,
        help: "largest request body (bytes, or 512KiB, 4MiB, 1GB); a larger one gets 413; 0 = no limit",
        set: |c, v| values::size(v).map(|size| c.max_request_body = size),
    },
    Var {
        name: "max_response_body",
        aliases: &[],
        modes: Modes::BUFFERED,
        default: Default::Is("0"),
        required: None,
        help: "largest output the function may write; past it the function is killed and the answer is 500; 0 = no limit",
        set: |c, v| values::size(v).map(|size| c.max_response_body = size),
    },
    Var {
        name: "prefix_logs",
        aliases: &[],
        modes: Modes::PROCESS,
        default: Default::Is("true"),
        required: None,
        help: "the function's log lines as `<time> stderr: <line>`; false: raw, to the watchdog's own streams",
        set: |c, v| flag(v).map(|value| c.prefix_logs = value),
    },
    Var {
        name: "log_buffer_size",
        aliases: &[],
        modes: Modes::PROCESS,
        default: Default::Is("65536"),
        required: None,
        help: "longest function log line before it is split (never dropped); -1 = unbounded",
        set: |c, v| values::log_buffer_size(v).map(|value| c.log_buffer_size = value),
    },
    Var {
        name: "log_callid",
        aliases: &["log_call_id"],
        modes: Modes::PROCESS,
        default: Default::Is("false"),
        required: None,
        help: "text logs: append ` [<X-Call-Id>]` to request lines and (fork modes) the function's log lines",
        set: |c, v| flag(v).map(|value| c.log_callid = value),
    },
    Var {
        name: "log_format",
        aliases: &[],
        modes: Modes::ALL,
        default: Default::Is("text"),
        required: None,
        help: "text: `<time> message` lines as the Go watchdogs; json: one JSON object per line (time, level, msg, fields)",
        // Applied before the rest is read (`config::log_format`): here it is only checked.
        set: |_, v| values::log_format(v).map(|_| ()),
    },
    Var {
        name: "upstream_url",
        aliases: &["http_upstream_url"],
        modes: Modes::HTTP,
        default: Default::Unset,
        required: Some(
            "mode=http needs the URL the function listens on, for example upstream_url=http://127.0.0.1:5000",
        ),
        help: "where the function listens; its path is a prefix for request paths",
        set: |c, v| values::UpstreamUrl::parse(v).map(|url| c.upstream_url = Some(url)),
    },
    Var {
        name: "buffer_http",
        aliases: &["http_buffer_req_body"],
        modes: Modes::HTTP,
        default: Default::Is("false"),
        required: None,
        help: "read the whole request body first and send it with a Content-Length (WSGI servers need one)",
        set: |c, v| flag(v).map(|value| c.buffer_http = value),
    },
    Var {
        name: "start_timeout",
        aliases: &[],
        modes: Modes::HTTP,
        default: Default::Is("60s"),
        required: None,
        help: "exit 1 if the function does not accept connections by then; 0 = no limit",
        set: |c, v| values::timeout(v).map(|value| c.start_timeout = value),
    },
    Var {
        name: "static_path",
        aliases: &[],
        modes: Modes::STATIC,
        default: Default::Is("/home/app/public"),
        required: None,
        help: "the directory served; it must exist at start",
        set: |c, v| {
            c.static_path = v.into();
            Ok(())
        },
    },
    Var {
        name: "jwt_auth",
        aliases: &[],
        modes: Modes::ALL,
        default: Default::Is("false"),
        required: None,
        help: "OpenFaaS IAM: not supported; true stops the start rather than serve a protected function open",
        set: |_, v| refuse_jwt(v),
    },
    Var {
        name: "jwt_auth_local",
        aliases: &[],
        modes: Modes::ALL,
        default: Default::Is("false"),
        required: None,
        help: "OpenFaaS IAM against a local gateway: not supported, as jwt_auth",
        set: |_, v| refuse_jwt(v),
    },
    Var {
        name: "RUST_LOG",
        aliases: &[],
        modes: Modes::ALL,
        default: Default::Is("info"),
        required: None,
        help: "the watchdog's own log level (debug shows connection errors); read first, for the start's own log",
        set: |_, _| Ok(()),
    },
];

/// The variable table of `docs/configuration.md`: a default column per mode (`-`: not used).
#[cfg(test)]
pub fn markdown() -> String {
    let mut out = String::from("| variable |");
    for mode in Mode::ALL {
        out.push_str(&format!(" {} |", mode.name()));
    }
    out.push_str(" meaning |\n|---|---|---|---|---|---|---|\n");
    for var in VARS {
        out.push_str(&format!("| `{}`", var.name));
        for alias in var.aliases {
            out.push_str(&format!(" (alias `{alias}`)"));
        }
        out.push_str(" |");
        for mode in Mode::ALL {
            let cell = match (var.modes.contains(mode), var.default, var.default_in(mode)) {
                (false, _, _) => "-".to_string(),
                (true, Default::Follows(name), _) => format!("= `{name}`"),
                (true, _, Some(value)) => format!("`{value}`"),
                (true, _, None) => var.default_text(mode),
            };
            out.push_str(&format!(" {cell} |"));
        }
        out.push_str(&format!(" {} |\n", var.help.replace('|', "\\|")));
    }
    out
}

/// Checks that the generated block of `doc` (between `<!-- {marker} -->` and `<!-- end -->`) is
/// `generated`; with `FWATCHDOG_UPDATE_DOCS` set, rewrites it instead.
#[cfg(test)]
pub fn check_generated(doc: &str, marker: &str, generated: &str) {
    let path = format!("{}/{doc}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{doc}: {e}"));
    let begin = format!("<!-- {marker} -->\n");
    let start = text.find(&begin).unwrap_or_else(|| panic!("{doc}: no {begin:?}")) + begin.len();
    let end = start + text[start..].find("<!-- end -->").unwrap_or_else(|| panic!("{doc}: no <!-- end -->"));
    if text[start..end] != *generated {
        assert!(
            std::env::var_os("FWATCHDOG_UPDATE_DOCS").is_some(),
            "{doc} is out of date; run FWATCHDOG_UPDATE_DOCS=1 cargo test docs_table"
        );
        std::fs::write(&path, format!("{}{generated}{}", &text[..start], &text[end..])).expect("rewrite the doc");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn load(mode: Mode, extra: &[(&str, &str)]) -> crate::config::Loaded {
        let mut vars = vec![("mode", mode.name()), ("fprocess", "cat"), ("upstream_url", "http://127.0.0.1:5000")];
        vars.extend_from_slice(extra);
        Config::from_lookup(|name| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()))
            .unwrap_or_else(|e| panic!("mode={}: {e}", mode.name()))
    }

    #[test]
    fn every_default_parses_in_every_mode() {
        for mode in Mode::ALL {
            let config = load(mode, &[]).config;
            assert_eq!(config.mode, mode);
            assert_eq!(config.healthcheck_interval, config.write_timeout.unwrap_or_default());
        }
    }

    #[test]
    fn variables_the_mode_does_not_use_are_named_not_refused() {
        let loaded = load(Mode::Http, &[("cgi_headers", "false"), ("combine_output", "bogus"), ("port", "9000")]);
        assert_eq!(loaded.unused, ["cgi_headers", "combine_output"]);
        assert_eq!(loaded.config.port, 9000);
        assert!(load(Mode::Classic, &[("upstream_url", "x")]).unused.contains(&"upstream_url"));
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = VARS.iter().flat_map(|v| v.aliases.iter().copied().chain([v.name])).collect();
        names.sort_unstable();
        let count = names.len();
        names.dedup();
        assert_eq!(names.len(), count);
    }

    /// `docs/configuration.md` carries the table generated from [`VARS`]. Run with
    /// `FWATCHDOG_UPDATE_DOCS=1` to rewrite it after changing the table.
    #[test]
    fn docs_table_matches_the_variables() {
        check_generated("docs/configuration.md", "variables: generated from src/config/vars.rs", &markdown());
    }
}
