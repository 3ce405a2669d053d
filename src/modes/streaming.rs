//! The of-watchdog's streaming mode: one process per request, full duplex. The request body goes
//! into the function's STDIN as it arrives while its STDOUT goes back, chunked, as it is written;
//! nothing is held beyond one chunk each way, whatever the size.
//!
//! The status is sent with the first output byte. A function that ends without writing anything
//! gets 200 on exit 0, else 500 with the error (the reference always answers 200). Once output has
//! started the status cannot change: the response ends normally with what was written and the
//! failure is logged.
//!
//! A task per request (the pump) owns the process and moves the bytes; the response body only
//! takes chunks from it. When the client goes away the body is dropped, the pump sees its channel
//! closed and kills the process group.

use std::io;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

use super::{
    AccessLog, BodyError, BoxFuture, Ctx, Interrupted, Mode, bad_body, function_env, human_size, log_stderr, text,
};
use crate::body::{Body, RequestBody};
use crate::config::Config;
use crate::process::{self, Child, OUTPUT_GRACE, Program, Spec, Stderr};

/// The most output read at once: one pipe's worth.
const CHUNK: usize = 64 * 1024;

pub struct Streaming {
    cfg: Arc<Config>,
    program: Program,
}

/// What the pump tells the response.
enum Event {
    /// Output, in order; never empty.
    Data(Bytes),
    /// All output was sent and the function is gone.
    End,
    /// The function ended without output: this is the whole answer.
    Whole(Response<Body>),
}

/// How the pump's work ended.
enum Ending {
    /// The function exited and its output ended.
    Exited,
    Interrupted(Interrupted),
    /// The request body broke off or stalled; the function must not see a truncated input as whole.
    Input(BodyError),
    /// The response was dropped: the client went away.
    ClientGone,
}

impl Mode for Streaming {
    fn call(self: Arc<Self>, req: Request<RequestBody>, ctx: Ctx) -> BoxFuture<Response<Body>> {
        Box::pin(async move { self.handle(req, ctx).await })
    }
}

impl Streaming {
    pub fn new(cfg: Arc<Config>) -> Streaming {
        Streaming { program: Program::new(&cfg.argv), cfg }
    }

    async fn handle(&self, req: Request<RequestBody>, ctx: Ctx) -> Response<Body> {
        let cfg = &self.cfg;
        let (parts, body) = req.into_parts();
        let head = parts.method == Method::HEAD;
        let access = AccessLog::new(&parts, cfg.log_callid);
        let env = function_env(cfg, &parts);
        let not_started = |error: String| {
            log::info!("Function failed: {error}");
            let response = failure(&error);
            access.response(&response, ctx.start);
            response
        };
        let mut child = match Child::spawn(&Spec { program: &self.program, env: &env, stderr: Stderr::Piped }) {
            Ok(child) => child,
            Err(e) => return not_started(e.to_string()),
        };
        let stdin = match child.stdin.take().map(pipe::Sender::from_owned_fd_unchecked).transpose() {
            Ok(stdin) => stdin,
            Err(e) => return not_started(format!("cannot write to the function's stdin: {e}")),
        };
        log_stderr(&mut child, cfg);

        let (tx, mut events) = mpsc::channel(1);
        let pump = Pump { cfg: Arc::clone(cfg), ctx, access, tx, sent: 0 };
        tokio::spawn(pump.run(child, stdin, body));
        match events.recv().await {
            Some(Event::Data(_)) if head => {
                // hyper sends no body for HEAD and drops it unread, which would stop the function
                // at its first byte: let it finish, as for GET, and discard its output.
                tokio::spawn(async move { while let Some(Event::Data(_)) = events.recv().await {} });
                output(cfg, Body::empty())
            }
            Some(Event::Data(first)) => output(cfg, Body::stream(Output { first: Some(first), events })),
            Some(Event::Whole(response)) => response,
            Some(Event::End) | None => text(StatusCode::INTERNAL_SERVER_ERROR, "The function's output was lost.\n"),
        }
    }
}

/// 200 with the function's output.
fn output(cfg: &Config, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    if let Some(content_type) = &cfg.content_type {
        response.headers_mut().insert(CONTENT_TYPE, content_type.clone());
    }
    response
}

/// 500 with the error, for a function that failed before writing anything.
fn failure(error: &str) -> Response<Body> {
    text(StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n"))
}

/// One request's process and the bytes to and from it.
struct Pump {
    cfg: Arc<Config>,
    ctx: Ctx,
    access: AccessLog,
    tx: mpsc::Sender<Event>,
    /// Output bytes handed to the response so far.
    sent: u64,
}

impl Pump {
    async fn run(mut self, mut child: Child, stdin: Option<pipe::Sender>, body: RequestBody) {
        let cfg = Arc::clone(&self.cfg);
        let stdout = child.stdout.take();
        let feed = feed(body, stdin, cfg.read_timeout);
        let interrupted = Interrupted::first(
            self.ctx.deadline(cfg.exec_timeout),
            self.ctx.deadline(cfg.write_timeout),
            &self.ctx.cancel,
        );
        let ending = pump(&child, stdout, feed, interrupted, &self.tx, &mut self.sent).await;
        match &ending {
            Ending::Exited => {}
            Ending::Interrupted(why) => why.log(&cfg),
            Ending::Input(e) => log::info!("Killing process: {} - {e}", cfg.fprocess),
            Ending::ClientGone => log::info!("Killing process: {} - the client went away", cfg.fprocess),
        }
        // Whatever is left of the group goes with the leader: nothing outlives the response.
        let status = child.kill().await;
        self.finish(ending, status).await;
    }

    /// Logs how it went and ends the response.
    async fn finish(self, ending: Ending, status: ExitStatus) {
        if !status.success() {
            let error = process::describe(status);
            match self.sent {
                0 => log::info!("Function failed: {error}"),
                n => log::info!("Function failed: {error} (after {} of output, sent with status 200)", human_size(n)),
            }
        }
        if self.sent > 0 {
            self.access.write(StatusCode::OK, self.sent, self.ctx.start.elapsed());
            let _ = self.tx.send(Event::End).await;
            return;
        }
        let response = match ending {
            Ending::ClientGone => return,
            Ending::Input(e) => bad_body(&e),
            Ending::Interrupted(why) => why.answer(&self.cfg).unwrap_or_else(|| failure("signal: killed")),
            Ending::Exited if status.success() => output(&self.cfg, Body::empty()),
            Ending::Exited => failure(&process::describe(status)),
        };
        self.access.response(&response, self.ctx.start);
        let _ = self.tx.send(Event::Whole(response)).await;
    }
}

/// Moves output to the response and input to the function until the function has exited and its
/// output has ended, or something stops it first.
async fn pump(
    child: &Child,
    mut stdout: Option<pipe::Receiver>,
    feed: impl Future<Output = Result<(), BodyError>>,
    interrupted: impl Future<Output = Interrupted>,
    tx: &mpsc::Sender<Event>,
    sent: &mut u64,
) -> Ending {
    // Created once: polling a fresh `exited()` would ask the kernel on every pass of the loop.
    let exit = child.exited();
    tokio::pin!(feed, interrupted, exit);
    let mut feeding = true;
    let mut exited = false;
    // A chunk read but not yet taken by the response: while it waits, no more is read, so a
    // client that reads slowly slows the function down instead of filling memory.
    let mut pending: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    loop {
        if exited && stdout.is_none() && pending.is_none() {
            return Ending::Exited;
        }
        tokio::select! {
            biased;
            why = &mut interrupted => return Ending::Interrupted(why),
            () = tx.closed() => return Ending::ClientGone,
            result = &mut feed, if feeding => match result {
                Ok(()) => feeding = false,
                Err(e) => return Ending::Input(e),
            },
            permit = tx.reserve(), if pending.is_some() => match (permit, pending.take()) {
                (Ok(permit), Some(chunk)) => {
                    *sent += chunk.len() as u64;
                    permit.send(Event::Data(chunk));
                }
                _ => return Ending::ClientGone,
            },
            chunk = read_chunk(stdout.as_mut(), &mut buf, exited), if stdout.is_some() && pending.is_none() => {
                match chunk {
                    Some(chunk) => pending = Some(chunk),
                    None => stdout = None,
                }
            },
            () = &mut exit, if !exited => exited = true,
        }
    }
}

/// The next piece of output; `None` at its end. Once the function has exited, output that stays
/// silent for [`OUTPUT_GRACE`] has ended too: only a descendant can still hold it open.
async fn read_chunk(stdout: Option<&mut pipe::Receiver>, buf: &mut BytesMut, exited: bool) -> Option<Bytes> {
    let stdout = stdout?;
    buf.reserve(CHUNK);
    let read = stdout.read_buf(buf);
    let n = if exited { tokio::time::timeout(OUTPUT_GRACE, read).await.ok()? } else { read.await };
    match n {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(buf.split().freeze()),
    }
}

/// Copies the request body into the function's stdin as it arrives, then closes stdin. Waiting
/// longer than `idle` for the next piece of body is an error. A function that stops reading its
/// input is not an error: the rest of the body is just not wanted.
async fn feed(mut body: RequestBody, stdin: Option<pipe::Sender>, idle: Option<Duration>) -> Result<(), BodyError> {
    let Some(mut stdin) = stdin else { return Ok(()) };
    loop {
        let frame = match idle {
            Some(limit) => tokio::time::timeout(limit, body.frame()).await.map_err(|_| BodyError::Timeout)?,
            None => body.frame().await,
        };
        let data = match frame {
            None => return Ok(()),
            Some(Err(e)) => return Err(BodyError::Broken(e)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers
            },
        };
        if stdin.write_all(&data).await.is_err() {
            return Ok(());
        }
    }
}

/// The response body: chunks from the pump, as they come.
struct Output {
    first: Option<Bytes>,
    events: mpsc::Receiver<Event>,
}

impl hyper::body::Body for Output {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        Poll::Ready(match ready!(this.events.poll_recv(cx)) {
            Some(Event::Data(chunk)) => Some(Ok(Frame::data(chunk))),
            Some(Event::End) => None,
            // Only a panicking pump ends without saying so: don't pass a cut-off stream as whole.
            Some(Event::Whole(_)) | None => Some(Err(io::Error::other("the function's output was cut short"))),
        })
    }
}
