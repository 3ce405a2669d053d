//! The classic watchdog: one process per request, the request body buffered and written to its
//! STDIN, its output buffered and returned; 200 on exit 0, 500 with the error and the output
//! otherwise, 408 when `exec_timeout` kills it.

use std::fmt::Write;
use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::time::Instant;

use super::{
    BoxFuture, Ctx, Interrupted, Mode, Seconds, bad_body, empty, error_and_output, function_env, log_stderr, read_body,
    text, with_duration,
};
use crate::body::{Body, RequestBody};
use crate::config::Config;
use crate::logging::{self, Output};
use crate::process::{self, Child, Program, Spec, Stderr};
use crate::{cgi, marshal};

pub struct Classic {
    cfg: Arc<Config>,
    program: Program,
}

impl Mode for Classic {
    fn call(self: Arc<Self>, req: Request<RequestBody>, ctx: Ctx) -> BoxFuture<Response<Body>> {
        Box::pin(async move { self.handle(req, ctx).await })
    }
}

impl Classic {
    pub fn new(cfg: Arc<Config>) -> Classic {
        Classic { program: Program::new(&cfg.argv), cfg }
    }

    async fn handle(&self, req: Request<RequestBody>, ctx: Ctx) -> Response<Body> {
        let cfg = &*self.cfg;
        if !matches!(*req.method(), Method::GET | Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
            return empty(StatusCode::METHOD_NOT_ALLOWED);
        }
        let (parts, body) = req.into_parts();
        if cfg.debug_headers {
            print_headers("[in]", &parts.headers);
        }
        log::info!("Forking fprocess.");
        let body = match read_body(body, ctx.deadline(cfg.read_timeout)).await {
            Ok(body) => body,
            Err(e) => {
                if cfg.write_debug {
                    log::info!("Error={e}, ReadLen=0");
                }
                return bad_body(&e);
            }
        };
        if cfg.write_debug {
            log::info!("Query  {}", parts.uri.query().unwrap_or(""));
            log::info!("Path  {}", parts.uri.path());
        }
        let env = function_env(cfg, &parts);
        let input = if cfg.marshal_request { Bytes::from(marshal::encode(&parts.headers, &body)) } else { body };
        drop(parts.extensions);

        let stderr = if cfg.combine_output { Stderr::Merged } else { Stderr::Piped };
        let mut child = match Child::spawn(&Spec { program: &self.program, env: &env, stderr }) {
            Ok(child) => child,
            Err(e) => return self.failure(&e.to_string(), Vec::new(), &ctx),
        };
        child.hold_until_reaped(ctx.admission.clone());
        let exec_deadline = cfg.exec_timeout.map(|t| Instant::now() + t);
        let run = self.run(&mut child, input, exec_deadline, ctx.deadline(cfg.write_timeout), &ctx);
        match run.await {
            Ok(output) => {
                let status = child.reap();
                if status.success() {
                    self.success(output, parts.headers.get(CONTENT_TYPE), &ctx)
                } else {
                    self.failure(&process::describe(status), output, &ctx)
                }
            }
            Err(why) => {
                child.kill().await;
                self.interrupted(why, &ctx)
            }
        }
    }

    /// Feeds STDIN, collects the output and waits for the function, unless a deadline or the
    /// shutdown comes first.
    async fn run(
        &self,
        child: &mut Child,
        input: Bytes,
        exec_deadline: Option<Instant>,
        write_deadline: Option<Instant>,
        ctx: &Ctx,
    ) -> Result<Vec<u8>, Interrupted> {
        log_stderr(child, &self.cfg);
        let mut output = Vec::new();
        tokio::select! {
            () = process::exchange(child, input, &mut output) => {}
            why = Interrupted::first(exec_deadline, write_deadline, &ctx.cancel) => return Err(why),
        }
        Ok(output)
    }

    fn success(&self, output: Vec<u8>, request_type: Option<&HeaderValue>, ctx: &Ctx) -> Response<Body> {
        let cfg = &*self.cfg;
        let seconds = Seconds(ctx.start.elapsed());
        let length = output.len();
        let output = Bytes::from(output);
        if cfg.write_debug {
            // Whole and at once, like Go's `os.Stdout.Write`: no line buffering holds back a last
            // line without a newline.
            logging::pass_on(Output::Stdout, output.clone());
        }
        let mut response = Response::new(Body::from(output));
        let headers = response.headers_mut();
        headers.insert("x-duration-seconds", seconds.header());
        if let Some(content_type) = cfg.content_type.as_ref().or(request_type).cloned() {
            headers.insert(CONTENT_TYPE, content_type);
        }
        if cfg.debug_headers {
            print_headers("[out]", headers);
        }
        // Go logs one or the other: the output when it was written out, else its size.
        if cfg.write_debug {
            log::info!("Duration: {seconds}s");
        } else {
            log::info!("Wrote {length} Bytes - Duration: {seconds}s");
        }
        response
    }

    /// 500 with `<error>\n<output>`.
    fn failure(&self, error: &str, output: Vec<u8>, ctx: &Ctx) -> Response<Body> {
        if self.cfg.write_debug {
            log::info!("Success=false, Error={error}");
            log::info!("Out={}", String::from_utf8_lossy(&output));
        } else {
            log::info!("Function failed: {error}");
        }
        with_duration(text(StatusCode::INTERNAL_SERVER_ERROR, error_and_output(error, output)), ctx)
    }

    fn interrupted(&self, why: Interrupted, ctx: &Ctx) -> Response<Body> {
        why.log(&self.cfg);
        let response = why.answer(&self.cfg).unwrap_or_else(|| text(StatusCode::REQUEST_TIMEOUT, "Killed process.\n"));
        with_duration(response, ctx)
    }
}

/// `debug_headers`: `[in] Name=[value]`, one line per header, on stdout.
fn print_headers(direction: &str, headers: &HeaderMap) {
    let mut out = String::new();
    for name in headers.keys() {
        let values: Vec<String> =
            headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        let _ = writeln!(out, "{direction} {}=[{}]", cgi::canonical_name(name.as_str()), values.join(" "));
    }
    logging::pass_on(Output::Stdout, Bytes::from(out));
}
