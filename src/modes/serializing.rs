//! The of-watchdog's serializing mode: one process per request, the request body read whole and
//! written to its STDIN, its STDOUT read whole and returned. 200 with the output on exit 0; 500
//! with `<error>\n<output>` otherwise (the reference drops the output). The function's stderr goes
//! to the log.

use std::sync::Arc;

use hyper::header::CONTENT_TYPE;
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use tokio::time::Instant;

use super::{
    AccessLog, BoxFuture, Ctx, Interrupted, Mode, bad_body, connect_refused, error_and_output, function_env,
    log_stderr, read_body, with_duration,
};
use crate::body::{Body, RequestBody};
use crate::config::Config;
use crate::process::{self, Child, Program, Spec, Stderr};

pub struct Serializing {
    cfg: Arc<Config>,
    program: Program,
}

impl Mode for Serializing {
    fn call(self: Arc<Self>, req: Request<RequestBody>, ctx: Ctx) -> BoxFuture<Response<Body>> {
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let access = AccessLog::new(&parts, self.cfg.log_callid);
            let response = self.handle(parts, body, &ctx).await;
            access.response(&response, ctx.start);
            response
        })
    }
}

impl Serializing {
    pub fn new(cfg: Arc<Config>) -> Serializing {
        Serializing { program: Program::new(&cfg.argv), cfg }
    }

    async fn handle(&self, parts: Parts, body: RequestBody, ctx: &Ctx) -> Response<Body> {
        let cfg = &*self.cfg;
        if parts.method == Method::CONNECT {
            return connect_refused();
        }
        let input = match read_body(body, ctx.deadline(cfg.read_timeout)).await {
            Ok(input) => input,
            Err(e) => return bad_body(&e),
        };
        let env = function_env(cfg, &parts);
        let mut child = match Child::spawn(&Spec { program: &self.program, env: &env, stderr: Stderr::Piped }) {
            Ok(child) => child,
            Err(e) => return self.answer(Err(e.to_string()), Vec::new(), ctx),
        };
        child.hold_until_reaped(ctx.admission.clone());
        log_stderr(&mut child, cfg);

        let exec_deadline = cfg.exec_timeout.map(|t| Instant::now() + t);
        let mut output = Vec::new();
        let interrupted = tokio::select! {
            () = process::exchange(&mut child, input, &mut output) => None,
            why = Interrupted::first(exec_deadline, ctx.deadline(cfg.write_timeout), &ctx.cancel) => Some(why),
        };
        if let Some(why) = interrupted {
            why.log(cfg);
            child.kill().await;
            if let Some(response) = why.answer(cfg) {
                return with_duration(response, ctx);
            }
            // exec_timeout: the SIGKILL is how the function ended; its output so far is kept.
            return self.answer(Err("signal: killed".into()), output, ctx);
        }
        let status = child.reap();
        let result = if status.success() { Ok(()) } else { Err(process::describe(status)) };
        self.answer(result, output, ctx)
    }

    /// 200 with the output, or 500 with `<error>\n<output>`; both with `content_type` and
    /// `X-Duration-Seconds`, as the reference.
    fn answer(&self, result: Result<(), String>, output: Vec<u8>, ctx: &Ctx) -> Response<Body> {
        let (status, body) = match result {
            Ok(()) => (StatusCode::OK, output),
            Err(error) => {
                log::info!("Function failed: {error}");
                (StatusCode::INTERNAL_SERVER_ERROR, error_and_output(&error, output))
            }
        };
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        if let Some(content_type) = &self.cfg.content_type {
            response.headers_mut().insert(CONTENT_TYPE, content_type.clone());
        }
        with_duration(response, ctx)
    }
}
