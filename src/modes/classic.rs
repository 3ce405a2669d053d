//! The classic watchdog: one process per request, the request body buffered and written to its
//! STDIN, its output buffered and returned; 200 on exit 0, 500 with the error and the output
//! otherwise, 408 when `exec_timeout` kills it.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::time::Instant;

use super::{BoxFuture, Ctx, Mode, empty, read_body, text};
use crate::body::{Body, RequestBody};
use crate::config::{Config, go_duration};
use crate::function_logs::{self, LogStyle, Stream};
use crate::process::{self, Child, Spec, Stderr};
use crate::{cgi, marshal};

/// How long output may still arrive after the function exited, from descendants that inherited
/// its stdout; then they are killed. (The reference waits for them without limit.)
const OUTPUT_GRACE: Duration = Duration::from_millis(100);

pub struct Classic {
    cfg: Arc<Config>,
}

/// Why a function's run ended before it finished by itself.
enum Interrupted {
    ExecTimeout,
    WriteTimeout,
    Cancelled,
}

impl Mode for Classic {
    fn call(self: Arc<Self>, req: Request<RequestBody>, ctx: Ctx) -> BoxFuture<Response<Body>> {
        Box::pin(async move { self.handle(req, ctx).await })
    }
}

impl Classic {
    pub fn new(cfg: Arc<Config>) -> Classic {
        Classic { cfg }
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
                let mut response = text(StatusCode::BAD_REQUEST, format!("{e}\n"));
                response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                return response;
            }
        };
        if cfg.write_debug {
            log::info!("Query  {}", parts.uri.query().unwrap_or(""));
            log::info!("Path  {}", parts.uri.path());
        }
        let env = if cfg.cgi_headers { cgi::environment(&parts) } else { Vec::new() };
        let input = if cfg.marshal_request { Bytes::from(marshal::encode(&parts.headers, &body)) } else { body };
        drop(parts.extensions);

        let stderr = if cfg.combine_output { Stderr::Merged } else { Stderr::Piped };
        let mut child = match Child::spawn(&Spec { argv: &cfg.argv, env: &env, stderr }) {
            Ok(child) => child,
            Err(e) => return self.failure(&e.to_string(), Vec::new(), &ctx),
        };
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
                child.kill_group();
                child.wait().await;
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
        if let Some(stderr) = child.stderr.take() {
            let style = LogStyle { prefix: true, max_line: self.cfg.log_buffer_size };
            tokio::spawn(function_logs::forward(stderr, Stream::Stderr, style));
        }
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let child = &*child;
        let feed = async move {
            if let Some(stdin) = stdin {
                process::feed(stdin, &input).await;
            }
        };
        let work = alongside(collect(stdout, child), feed);
        tokio::select! {
            output = work => Ok(output),
            () = sleep_until(exec_deadline) => Err(Interrupted::ExecTimeout),
            () = sleep_until(write_deadline) => Err(Interrupted::WriteTimeout),
            () = ctx.cancel.cancelled() => Err(Interrupted::Cancelled),
        }
    }

    fn success(&self, output: Vec<u8>, request_type: Option<&HeaderValue>, ctx: &Ctx) -> Response<Body> {
        let cfg = &*self.cfg;
        let seconds = ctx.start.elapsed().as_secs_f64();
        let length = output.len();
        if cfg.write_debug {
            let _ = std::io::stdout().lock().write_all(&output);
        }
        let mut response = Response::new(Body::from(output));
        let headers = response.headers_mut();
        headers.insert("x-duration-seconds", duration_header(seconds));
        let content_type = cfg.content_type.as_deref().and_then(|t| HeaderValue::from_str(t).ok());
        if let Some(content_type) = content_type.or_else(|| request_type.cloned()) {
            headers.insert(CONTENT_TYPE, content_type);
        }
        if cfg.debug_headers {
            print_headers("[out]", headers);
        }
        if cfg.write_debug {
            log::info!("Duration: {seconds:.6}s");
        }
        log::info!("Wrote {length} Bytes - Duration: {seconds:.6}s");
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
        let mut body = Vec::with_capacity(error.len() + 1 + output.len());
        body.extend_from_slice(error.as_bytes());
        body.push(b'\n');
        body.extend_from_slice(&output);
        with_duration(text(StatusCode::INTERNAL_SERVER_ERROR, body), ctx)
    }

    fn interrupted(&self, why: Interrupted, ctx: &Ctx) -> Response<Body> {
        let cfg = &*self.cfg;
        let response = match why {
            Interrupted::ExecTimeout => {
                log::info!("Killing process: {}", cfg.fprocess);
                text(StatusCode::REQUEST_TIMEOUT, "Killed process.\n")
            }
            Interrupted::WriteTimeout => {
                let limit = go_duration(cfg.write_timeout.unwrap_or_default());
                log::info!("Killing process: {} - no response within write_timeout ({limit})", cfg.fprocess);
                text(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("Function did not respond within write_timeout ({limit}); it was killed.\n"),
                )
            }
            Interrupted::Cancelled => {
                log::info!("Killing process: {} - the watchdog is shutting down", cfg.fprocess);
                text(StatusCode::SERVICE_UNAVAILABLE, "The watchdog is shutting down; the function was stopped.\n")
            }
        };
        with_duration(response, ctx)
    }
}

/// Reads stdout to its end and waits for the function to exit. When the function exits while a
/// descendant still holds stdout, output is taken for [`OUTPUT_GRACE`] more, no longer.
async fn collect(stdout: Option<pipe::Receiver>, child: &Child) -> Vec<u8> {
    let mut output = Vec::new();
    if let Some(mut stdout) = stdout {
        let read = read_all(&mut stdout, &mut output);
        tokio::pin!(read);
        tokio::select! {
            () = &mut read => {}
            () = child.exited() => {
                let _ = tokio::time::timeout(OUTPUT_GRACE, &mut read).await;
            }
        }
    }
    child.exited().await;
    output
}

async fn read_all(pipe: &mut pipe::Receiver, out: &mut Vec<u8>) {
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity().clamp(8192, 1 << 20));
        }
        match pipe.read_buf(out).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Runs `main` to completion while also driving `side`; returns `main`'s output whether or not
/// `side` has finished (a function that exits without reading its input leaves the writer behind).
async fn alongside<T>(main: impl Future<Output = T>, side: impl Future<Output = ()>) -> T {
    tokio::pin!(main, side);
    let mut side_done = false;
    std::future::poll_fn(|cx| {
        if !side_done && side.as_mut().poll(cx).is_ready() {
            side_done = true;
        }
        main.as_mut().poll(cx)
    })
    .await
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn duration_header(seconds: f64) -> HeaderValue {
    HeaderValue::from_str(&format!("{seconds:.6}")).unwrap_or_else(|_| HeaderValue::from_static("0.000000"))
}

fn with_duration(mut response: Response<Body>, ctx: &Ctx) -> Response<Body> {
    let seconds = ctx.start.elapsed().as_secs_f64();
    response.headers_mut().insert("x-duration-seconds", duration_header(seconds));
    response
}

/// `debug_headers`: `[in] Name=[value]`, one line per header, on stdout.
fn print_headers(direction: &str, headers: &HeaderMap) {
    let mut out = std::io::stdout().lock();
    for name in headers.keys() {
        let values: Vec<String> =
            headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
        let _ = writeln!(out, "{direction} {}=[{}]", cgi::canonical_name(name.as_str()), values.join(" "));
    }
}
