//! What makes classic, serializing and streaming three modes: a [`Policy`] each, a few facts that
//! the one fork runner ([`super::Fork`]) follows. Everything else (the function's environment,
//! spawn, the time limits, kill, reap, the 504 of `write_timeout`, the 503 of the hard stop, the
//! 400 of a broken body) is the same in the three. `docs/modes.md` shows them side by side.

use hyper::Method;

use crate::config::Mode;

pub struct Policy {
    pub mode: Mode,
    /// The methods that reach the function; the others get 405.
    pub methods: Methods,
    pub io: Io,
    pub log: Log,
    /// The answer when `exec_timeout` kills the function before it answered.
    pub exec_timeout: TimeoutAnswer,
    /// A success without a configured `content_type` echoes the request's Content-Type (the classic
    /// watchdog's rule); otherwise it has the configured one, or none.
    pub echo_request_type: bool,
    /// A 500 has the configured `content_type` (the of-watchdog's serializing mode) instead of
    /// `text/plain`.
    pub failure_has_content_type: bool,
    /// Answers carry `X-Duration-Seconds`. (A stream's head goes out with its first byte, before
    /// the duration is known.)
    pub duration_header: bool,
}

/// Which methods reach the function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Methods {
    /// GET, POST, PUT, PATCH and DELETE, as the classic watchdog.
    Classic,
    /// Every method but CONNECT: no function can open a tunnel, and a 2xx would say one is open.
    AllButConnect,
}

impl Methods {
    pub fn allow(self, method: &Method) -> bool {
        match self {
            Methods::Classic => {
                matches!(*method, Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
            }
            Methods::AllButConnect => *method != Method::CONNECT,
        }
    }
}

/// How the request body reaches the function and its output the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Io {
    /// The body is read whole (within `read_timeout`) before the function starts; its output is
    /// read whole before the answer, whose status follows from how the function ended.
    Buffered,
    /// Full duplex: the body flows into STDIN as it arrives while STDOUT flows back; the status
    /// goes out with the first output byte, and a later failure cuts the response.
    Streamed,
}

/// What the log says about a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Log {
    /// The classic watchdog's lines: `Forking fprocess.`, `Wrote N Bytes - Duration: Xs`, and with
    /// `write_debug` the output itself.
    Classic,
    /// The of-watchdog's one line per request: `POST /p - 200 - ContentLength: 13B (0.0020s)`.
    Access,
}

/// The answer to a function killed by `exec_timeout` before it answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutAnswer {
    /// 408 `Killed process.` (the classic watchdog).
    RequestTimeout,
    /// 500 `signal: killed` and the output so far, as any function killed by a signal.
    Killed,
}

/// The policy of a fork mode; `None` for the others.
pub fn of(mode: Mode) -> Option<&'static Policy> {
    [&CLASSIC, &SERIALIZING, &STREAMING].into_iter().find(|policy| policy.mode == mode)
}

pub const CLASSIC: Policy = Policy {
    mode: Mode::Classic,
    methods: Methods::Classic,
    io: Io::Buffered,
    log: Log::Classic,
    exec_timeout: TimeoutAnswer::RequestTimeout,
    echo_request_type: true,
    failure_has_content_type: false,
    duration_header: true,
};

pub const SERIALIZING: Policy = Policy {
    mode: Mode::Serializing,
    methods: Methods::AllButConnect,
    io: Io::Buffered,
    log: Log::Access,
    exec_timeout: TimeoutAnswer::Killed,
    echo_request_type: false,
    failure_has_content_type: true,
    duration_header: true,
};

pub const STREAMING: Policy = Policy {
    mode: Mode::Streaming,
    methods: Methods::AllButConnect,
    io: Io::Streamed,
    log: Log::Access,
    exec_timeout: TimeoutAnswer::Killed,
    echo_request_type: false,
    failure_has_content_type: false,
    duration_header: false,
};

/// The table of `docs/modes.md` that shows the three policies side by side.
#[cfg(test)]
pub fn markdown() -> String {
    let policies = [&CLASSIC, &SERIALIZING, &STREAMING];
    let mut out = String::from("| |");
    for policy in policies {
        out.push_str(&format!(" {} |", policy.mode.name()));
    }
    out.push_str("\n|---|---|---|---|\n");
    let mut row = |name: &str, cell: &dyn Fn(&Policy) -> &'static str| {
        out.push_str(&format!("| {name} |"));
        for policy in policies {
            out.push_str(&format!(" {} |", cell(policy)));
        }
        out.push('\n');
    };
    row("methods that reach the function", &|p| match p.methods {
        Methods::Classic => "GET, POST, PUT, PATCH, DELETE; others 405",
        Methods::AllButConnect => "all but CONNECT (405)",
    });
    row("request body", &|p| match p.io {
        Io::Buffered => "read whole first (`read_timeout`), then written to STDIN",
        Io::Streamed => "into STDIN as it arrives (`read_timeout` per piece)",
    });
    row("output", &|p| match p.io {
        Io::Buffered => "read whole, then answered",
        Io::Streamed => "streamed; the status goes with the first byte",
    });
    row("stderr", &|p| match p.mode {
        Mode::Classic => "into the response (`combine_output=false`: the log)",
        _ => "the log",
    });
    row("`exec_timeout` counts from", &|_| "the function's start");
    row("`write_timeout` counts from", &|_| "the request's arrival");
    row("exit 0", &|p| match (p.io, p.echo_request_type) {
        (Io::Streamed, _) => "200, the output as it comes, `content_type`",
        (Io::Buffered, true) => "200, the output, `content_type` or the request's Content-Type",
        (Io::Buffered, false) => "200, the output, `content_type`",
    });
    row("non-zero exit, signal, cannot start", &|p| match (p.io, p.failure_has_content_type) {
        (Io::Streamed, _) => "500 `<error>` if nothing was sent yet; else the response is cut",
        (Io::Buffered, true) => "500 `<error>\\n<output>` with `content_type`",
        (Io::Buffered, false) => "500 `<error>\\n<output>` (text/plain)",
    });
    row("`exec_timeout`", &|p| match (p.exec_timeout, p.io) {
        (TimeoutAnswer::RequestTimeout, _) => "408 `Killed process.`",
        (TimeoutAnswer::Killed, Io::Buffered) => "500 `signal: killed\\n<output so far>`",
        (TimeoutAnswer::Killed, Io::Streamed) => "500 `signal: killed`, or the response is cut",
    });
    row("`write_timeout`", &|p| match p.io {
        Io::Buffered => "504",
        Io::Streamed => "504, or the response is cut",
    });
    row("the hard stop at shutdown", &|p| match p.io {
        Io::Buffered => "503",
        Io::Streamed => "503, or the response is cut",
    });
    row("a request body that breaks off", &|p| match p.io {
        Io::Buffered => "400; the function never starts",
        Io::Streamed => "400, or the response is cut; the function is killed before its STDIN closes",
    });
    row("`X-Duration-Seconds`", &|p| if p.duration_header { "on every answer about a run" } else { "none" });
    row("log", &|p| match p.log {
        Log::Classic => "`Forking fprocess.`, `Wrote N Bytes - Duration: Xs`",
        Log::Access => "`POST /p - 200 - ContentLength: 13B (0.0020s)`",
    });
    out
}

#[cfg(test)]
mod tests {
    /// `docs/modes.md` carries the table generated from the policies. Run with
    /// `FWATCHDOG_UPDATE_DOCS=1` to rewrite it after changing them.
    #[test]
    fn docs_table_matches_the_policies() {
        crate::config::vars::check_generated(
            "docs/modes.md",
            "policies: generated from src/modes/fork/policy.rs",
            &super::markdown(),
        );
    }
}
