//! The fork modes, classic, serializing and streaming: one process per request, run by one runner.
//! It checks the method, gives the function its environment, starts it, feeds it the request body,
//! collects or streams its output, races the time limits, kills and reaps it, and answers; a
//! [`Policy`] per mode chooses between the ways of doing each step and the answer to each outcome.
//!
//! `exec_timeout` counts from the function's start in all three (in streaming mode that is as soon
//! as the request is admitted: the body is not read first), `write_timeout` from the request's
//! arrival.

mod policy;
mod run;
mod stream;

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};

use super::{
    AccessLog, BodyError, BoxFuture, Handler, Scope, Seconds, call_id, from_now, function_env, log_stderr, read_body,
    with_duration,
};
use crate::body::{Body, RequestBody};
use crate::cgi_response::{self, Head, Parsed};
use crate::config::{Config, go_duration};
use crate::function_logs::{self, Stream};
use crate::logging::{self, Output};
use crate::process::{self, Child, Exchanged, Program, Spec, Stderr};
use crate::{answers, json_log};
use crate::{cgi, marshal};
use policy::Policy;
pub use policy::of as policy;
use policy::{Io, Log, TimeoutAnswer};
use run::{Ending, Interrupted, Limits, Outcome};

pub struct Fork {
    cfg: Arc<Config>,
    program: Program,
    policy: &'static Policy,
}

impl Handler for Fork {
    fn call(self: Arc<Self>, req: Request<RequestBody>, scope: Scope) -> BoxFuture<Response<Body>> {
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let log = RequestLog::new(self.policy, &self.cfg, &parts);
            if !self.policy.methods.allow(&parts.method) {
                return log.done(answers::method_not_allowed(self.policy.methods.list()), &scope);
            }
            if self.cfg.debug_headers {
                print_headers("[in]", &parts.headers);
            }
            match self.policy.io {
                Io::Buffered => {
                    let response = self.buffered(&parts, body, &scope, &log).await;
                    log.done(response, &scope)
                }
                Io::Streamed => stream::respond(self, parts, body, scope, log).await,
            }
        })
    }
}

impl Fork {
    pub fn new(cfg: Arc<Config>, policy: &'static Policy) -> Fork {
        Fork { program: Program::new(&cfg.argv), cfg, policy }
    }

    /// Reads the body, runs the function with it and answers with its output.
    async fn buffered(&self, parts: &Parts, body: RequestBody, scope: &Scope, log: &RequestLog) -> Response<Body> {
        let cfg = &*self.cfg;
        log.forking();
        // From now, not from the arrival: a wait in the max_queue queue is not the client's delay.
        let body = match read_body(body, from_now(cfg.read_timeout)).await {
            Ok(body) => body,
            Err(e) => {
                log.debug(format_args!("Error={e}, ReadLen=0"));
                return e.answer();
            }
        };
        log.debug(format_args!("Query  {}", parts.uri.query().unwrap_or("")));
        log.debug(format_args!("Path  {}", parts.uri.path()));
        let input = if cfg.marshal_request { Bytes::from(marshal::encode(&parts.headers, &body)) } else { body };
        let mut child = match self.spawn(parts, scope, log.call_id()) {
            Ok(child) => child,
            Err(error) => return self.failure(&error, &[], scope),
        };
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let mut output = Vec::new();
        let outcome = run::run(child, stdin, self.limits(scope), cfg, async |child: &Child, stdin: &mut _| {
            let mut check = OutputCheck::new(cfg);
            let cap = check.limit.map(|limit| limit.saturating_add(1));
            let exchanged = process::exchange(child, stdin, stdout, input, &mut output, cap, |out| check.stop(out));
            match exchanged.await {
                Exchanged::Whole => Ending::Exited,
                Exchanged::Stopped => check.ending(&output),
                Exchanged::Failed(e) => Ending::OutputFailed(e.to_string()),
            }
        })
        .await;
        self.answer(&outcome, output, parts.headers.get(CONTENT_TYPE), scope, log)
    }

    /// Starts the function for one request; it holds the request's admission until it is reaped.
    /// Its logged output carries `call_id`.
    fn spawn(&self, parts: &Parts, scope: &Scope, call_id: Option<&str>) -> Result<Child, String> {
        let env = function_env(&self.cfg, parts);
        // `combine_output` is classic's; the other modes never set it.
        let stderr = if self.cfg.combine_output { Stderr::Merged } else { Stderr::Piped };
        let mut child = Child::spawn(&Spec { program: &self.program, env: &env, stderr }).map_err(|e| e.to_string())?;
        child.hold_until_reaped(scope.admission.clone());
        log_stderr(&mut child, &self.cfg, call_id);
        Ok(child)
    }

    /// The limits of a run that starts now.
    fn limits(&self, scope: &Scope) -> Limits {
        Limits {
            exec: from_now(self.cfg.exec_timeout),
            write: scope.deadline(self.cfg.write_timeout),
            cancel: scope.cancel.clone(),
        }
    }

    /// What the policy makes of how a run ended.
    fn verdict<'a>(&self, outcome: &'a Outcome) -> Verdict<'a> {
        match (&outcome.ending, outcome.error()) {
            (Ending::Interrupted(Interrupted::ExecTimeout), _)
                if self.policy.exec_timeout == TimeoutAnswer::RequestTimeout =>
            {
                Verdict::ExecTimeout
            }
            (Ending::Interrupted(Interrupted::WriteTimeout), _) => Verdict::WriteTimeout,
            (Ending::Interrupted(Interrupted::Cancelled), _) => Verdict::ShuttingDown,
            (Ending::InputBroken(e), _) => Verdict::BadInput(e),
            (Ending::InvalidHead(why), _) => Verdict::InvalidHead(why),
            (Ending::OutputTooLarge, _) => Verdict::OutputTooLarge,
            (Ending::OutputFailed(e), _) => Verdict::Failed(format!("reading the function's output: {e}")),
            (_, Some(error)) => Verdict::Failed(error),
            (_, None) => Verdict::Success,
        }
    }

    /// The answer to a run, when nothing of it was sent yet.
    fn answer(
        &self,
        outcome: &Outcome,
        output: Vec<u8>,
        request_type: Option<&HeaderValue>,
        scope: &Scope,
        log: &RequestLog,
    ) -> Response<Body> {
        match self.verdict(outcome) {
            Verdict::Success => self.success(output, request_type, scope, log),
            Verdict::Failed(error) => self.failure(&error, &output, scope),
            Verdict::ExecTimeout => self.timed(answers::request_timeout(), scope),
            Verdict::WriteTimeout => {
                let limit = format!("write_timeout ({})", go_duration(self.cfg.write_timeout.unwrap_or_default()));
                self.timed(answers::gateway_timeout(&limit), scope)
            }
            Verdict::ShuttingDown => self.timed(answers::shutting_down(), scope),
            Verdict::BadInput(e) => e.answer(),
            Verdict::InvalidHead(why) => self.timed(answers::invalid_cgi_head(why), scope),
            Verdict::OutputTooLarge => {
                let limit = self.cfg.max_response_body.unwrap_or_default();
                log::info!("Function failed: its output passed max_response_body ({limit} bytes)");
                self.timed(answers::output_too_large(limit), scope)
            }
        }
    }

    /// 200 with the function's output; with `cgi_response`, the status and headers of the header
    /// block it starts with, and the rest as the body.
    fn success(
        &self,
        output: Vec<u8>,
        request_type: Option<&HeaderValue>,
        scope: &Scope,
        log: &RequestLog,
    ) -> Response<Body> {
        let cfg = &*self.cfg;
        let seconds = Seconds(scope.start.elapsed());
        let mut output = Bytes::from(output);
        if cfg.write_debug {
            log.output(&output, cfg.log_buffer_size);
        }
        let mut cgi = None;
        if cfg.cgi_response {
            match cgi_response::parse(&output, true) {
                Parsed::Head { head, body } => {
                    output = output.slice(body..);
                    cgi = Some(head);
                }
                Parsed::Invalid { why, line } => return self.invalid_head(&why, &line, scope),
                Parsed::Partial => return self.invalid_head("the header block is not complete", "", scope),
            }
        }
        let length = output.len();
        let response = self.success_response(cgi, Body::from(output), request_type, seconds);
        if cfg.debug_headers {
            print_headers("[out]", response.headers());
        }
        if self.policy.log == Log::Classic {
            // Go logs one or the other: the output when it was written out, else its size.
            if cfg.write_debug {
                log::info!("Duration: {seconds}s");
            } else {
                log::info!("Wrote {length} Bytes - Duration: {seconds}s");
            }
        }
        response
    }

    /// The head of a successful answer, with `body`: 200, or the function's CGI status and
    /// headers; the configured Content-Type, else (classic) the request's, unless the function
    /// sent its own; `X-Duration-Seconds` as the mode sends it.
    fn success_response(
        &self,
        cgi: Option<Head>,
        body: Body,
        request_type: Option<&HeaderValue>,
        seconds: Seconds,
    ) -> Response<Body> {
        let mut response = Response::new(body);
        if let Some(head) = cgi {
            *response.status_mut() = head.status;
            *response.headers_mut() = head.headers;
        }
        let echoed = request_type.filter(|_| self.policy.echo_request_type);
        if !response.headers().contains_key(CONTENT_TYPE)
            && let Some(content_type) = self.cfg.content_type.as_ref().or(echoed)
        {
            response.headers_mut().insert(CONTENT_TYPE, content_type.clone());
        }
        if self.policy.duration_header {
            response.headers_mut().insert("x-duration-seconds", seconds.header());
        }
        response
    }

    /// 502 for output that does not start with a valid CGI header block.
    fn invalid_head(&self, why: &str, line: &str, scope: &Scope) -> Response<Body> {
        cgi_response::log_refused(why, line);
        self.timed(answers::invalid_cgi_head(why), scope)
    }

    /// 500 with `<error>\n<output>`.
    fn failure(&self, error: &str, output: &[u8], scope: &Scope) -> Response<Body> {
        if self.cfg.write_debug {
            log::info!("Success=false, Error={error}");
            if logging::json() {
                if log::log_enabled!(log::Level::Info) {
                    // One object however many lines, and every byte kept (`msg_base64`).
                    let message = [b"Out=", output].concat();
                    logging::log_line(json_log::Line::new(log::Level::Info).msg_bytes(&message).finish());
                }
            } else {
                log::info!("Out={}", String::from_utf8_lossy(output));
            }
        } else {
            log::info!("Function failed: {error}");
        }
        let mut response = self.timed(answers::function_failed(error, output), scope);
        if self.policy.failure_has_content_type
            && let Some(content_type) = &self.cfg.content_type
        {
            response.headers_mut().insert(CONTENT_TYPE, content_type.clone());
        }
        response
    }

    /// With `X-Duration-Seconds`, if the mode sends it.
    fn timed(&self, response: Response<Body>, scope: &Scope) -> Response<Body> {
        if self.policy.duration_header { with_duration(response, scope) } else { response }
    }
}

/// What the buffered exchange watches in the output as it comes: `max_response_body`, and with
/// `cgi_response` a header block that cannot be valid (refused as soon as that is known, not
/// after the whole output).
struct OutputCheck {
    limit: Option<usize>,
    /// The header block is still to be checked.
    head_pending: bool,
    /// How much of the output was looked at for the header block.
    seen: usize,
}

impl OutputCheck {
    fn new(cfg: &Config) -> OutputCheck {
        let limit = cfg.max_response_body.map(|limit| usize::try_from(limit).unwrap_or(usize::MAX));
        OutputCheck { limit, head_pending: cfg.cgi_response, seen: 0 }
    }

    /// Whether to stop reading `output`.
    fn stop(&mut self, output: &[u8]) -> bool {
        if self.limit.is_some_and(|limit| output.len() > limit) {
            return true;
        }
        // Only a new line can complete or refuse the block (or its size, refuse it).
        let new = &output[self.seen.min(output.len())..];
        self.seen = output.len();
        if !self.head_pending || (!new.contains(&b'\n') && output.len() <= cgi_response::MAX_HEAD) {
            return false;
        }
        match cgi_response::parse(output, false) {
            Parsed::Invalid { .. } => true,
            Parsed::Head { .. } => {
                self.head_pending = false;
                false
            }
            Parsed::Partial => false,
        }
    }

    /// Why reading stopped.
    fn ending(&self, output: &[u8]) -> Ending {
        if !self.head_pending {
            return Ending::OutputTooLarge;
        }
        match cgi_response::parse(output, false) {
            Parsed::Invalid { why, line } => {
                cgi_response::log_refused(&why, &line);
                Ending::InvalidHead(why)
            }
            _ => Ending::OutputTooLarge,
        }
    }
}

/// The answer to a run, before it is built.
pub(super) enum Verdict<'a> {
    Success,
    /// The function failed: 500 with the error and the output.
    Failed(String),
    /// `exec_timeout` with [`TimeoutAnswer::RequestTimeout`]: 408.
    ExecTimeout,
    /// 504.
    WriteTimeout,
    /// The hard stop at shutdown: 503.
    ShuttingDown,
    /// The request body broke off: 400 (413 past `max_request_body`).
    BadInput(&'a BodyError),
    /// `cgi_response`: the output did not start with a valid header block: 502.
    InvalidHead(&'a str),
    /// The output passed `max_response_body`: 500.
    OutputTooLarge,
}

impl Verdict<'_> {
    fn status(&self) -> StatusCode {
        match self {
            Verdict::Success => StatusCode::OK,
            Verdict::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Verdict::ExecTimeout => StatusCode::REQUEST_TIMEOUT,
            Verdict::WriteTimeout => StatusCode::GATEWAY_TIMEOUT,
            Verdict::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Verdict::BadInput(e) => e.status(),
            Verdict::InvalidHead(_) => StatusCode::BAD_GATEWAY,
            Verdict::OutputTooLarge => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What the log says about one request, as the mode's [`Log`] style wants it. With JSON logs
/// classic has the request line too: it is the line with the request's fields, and classic's own
/// lines (`Forking fprocess.`, `Wrote N Bytes …`) have none.
struct RequestLog {
    style: Log,
    write_debug: bool,
    access: Option<AccessLog>,
    /// The call id, when there is no `access` to hold it ([`crate::modes::call_id`]).
    call_id: Option<String>,
}

impl RequestLog {
    fn new(policy: &Policy, cfg: &Config, parts: &Parts) -> RequestLog {
        let access = (policy.log == Log::Access || logging::json()).then(|| AccessLog::new(parts, cfg.log_callid));
        let call_id = if access.is_none() { call_id(parts, cfg.log_callid) } else { None };
        RequestLog { style: policy.log, write_debug: cfg.write_debug, access, call_id }
    }

    /// The call id that the function's logged output carries.
    fn call_id(&self) -> Option<&str> {
        self.access.as_ref().map_or(self.call_id.as_deref(), AccessLog::call_id)
    }

    /// `write_debug`: the function's output on stdout. Text: whole and at once, as Go's
    /// `os.Stdout.Write` (a last line without a newline too); JSON: a line of the log per line.
    fn output(&self, output: &Bytes, max_line: Option<usize>) {
        let bytes = match logging::json() {
            true => Bytes::from(function_logs::json_lines(output, Stream::Stdout, max_line, self.call_id())),
            false => output.clone(),
        };
        logging::pass_on(Output::Stdout, bytes);
    }

    /// Classic: `Forking fprocess.` once the request is taken.
    fn forking(&self) {
        if self.style == Log::Classic {
            log::info!("Forking fprocess.");
        }
    }

    /// A `write_debug` line.
    fn debug(&self, line: std::fmt::Arguments<'_>) {
        if self.write_debug {
            log::info!("{line}");
        }
    }

    /// The request's line, for an answer whose body is all there.
    fn done(&self, response: Response<Body>, scope: &Scope) -> Response<Body> {
        if let Some(access) = &self.access {
            access.response(&response, scope.start);
        }
        response
    }

    /// The request's line, for a streamed answer once it is over.
    fn streamed(&self, status: StatusCode, bytes: u64, scope: &Scope) {
        if let Some(access) = &self.access {
            access.write(status, bytes, scope.start.elapsed());
        }
    }
}

/// `debug_headers`: `[in] Name=[value]`, one line per header, on stdout.
fn print_headers(direction: &str, headers: &HeaderMap) {
    if logging::json() {
        return print_headers_json(direction, headers);
    }
    let mut out = String::new();
    for name in headers.keys() {
        let values: Vec<String> =
            headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        let _ = writeln!(out, "{direction} {}=[{}]", cgi::canonical_name(name.as_str()), values.join(" "));
    }
    logging::pass_on(Output::Stdout, Bytes::from(out));
}

/// [`print_headers`] as JSON log lines, with the values' bytes kept.
fn print_headers_json(direction: &str, headers: &HeaderMap) {
    let mut out = Vec::new();
    let mut line = Vec::new();
    for name in headers.keys() {
        line.clear();
        line.extend_from_slice(format!("{direction} {}=[", cgi::canonical_name(name.as_str())).as_bytes());
        for (i, value) in headers.get_all(name).iter().enumerate() {
            if i > 0 {
                line.push(b' ');
            }
            line.extend_from_slice(value.as_bytes());
        }
        line.push(b']');
        out.extend_from_slice(&json_log::Line::new(log::Level::Info).msg_bytes(&line).finish());
    }
    logging::pass_on(Output::Stdout, Bytes::from(out));
}

impl policy::Methods {
    /// The `Allow` header of a 405, when the allowed methods are a short list.
    fn list(self) -> Option<&'static str> {
        match self {
            policy::Methods::Classic => Some("GET, POST, PUT, PATCH, DELETE"),
            policy::Methods::AllButConnect => None,
        }
    }
}
