//! The of-watchdog's streaming mode: one process per request, full duplex. The request body goes
//! into the function's STDIN as it arrives while its STDOUT goes back, chunked, as it is written.
//! Output is read only when the response asks for more, so a client that reads slowly slows the
//! function down instead of filling memory.
//!
//! The status is sent with the first output byte. A function that ends without writing anything
//! gets 200 on exit 0, else 500 with the error (the reference always answers 200). A failure once
//! output has started (an exit status, a signal, a time limit, the hard stop at shutdown, a request
//! body that broke off) cuts the response: it ends without its last chunk, so that no client takes
//! it for complete, and it is logged and counted with the status it would have had.
//!
//! A task per request (the pump) owns the process and moves the bytes; the response body only
//! takes chunks from it. When the client goes away the body is dropped, the pump sees its channel
//! closed and kills the process group. On every ending the group is killed and the leader reaped
//! before the function's stdin is closed, so that an input that broke off never looks complete to
//! it; the request's admission (its `max_inflight` slot) goes with the leader.

use std::io;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::header::CONTENT_TYPE;
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{Notify, mpsc};

use super::{
    AccessLog, BodyError, BoxFuture, Ctx, Interrupted, Mode, bad_body, connect_refused, function_env, human_size,
    log_stderr, text,
};
use crate::body::{Body, Cut, RequestBody};
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
    /// Output was sent, then the function failed: the response ends without its last chunk. The
    /// status is the one it would have had.
    Cut(StatusCode),
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
    /// HEAD: the first output decided the status, and no body is sent.
    HeadSent,
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

    async fn handle(&self, req: Request<RequestBody>, mut ctx: Ctx) -> Response<Body> {
        let cfg = &self.cfg;
        let (parts, body) = req.into_parts();
        let access = AccessLog::new(&parts, cfg.log_callid);
        if parts.method == Method::CONNECT {
            let response = connect_refused();
            access.response(&response, ctx.start);
            return response;
        }
        let head = parts.method == Method::HEAD;
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
        child.hold_until_reaped(std::mem::take(&mut ctx.admission));
        let stdin = match child.stdin.take().map(pipe::Sender::from_owned_fd_unchecked).transpose() {
            Ok(stdin) => stdin,
            Err(e) => return not_started(format!("cannot write to the function's stdin: {e}")),
        };
        log_stderr(&mut child, cfg);

        let (tx, mut events) = mpsc::channel(1);
        let demand = Arc::new(Notify::new());
        let pump = Pump { cfg: Arc::clone(cfg), ctx, access, tx, demand: Arc::clone(&demand), head, sent: 0 };
        tokio::spawn(pump.run(child, stdin, body));
        match events.recv().await {
            // HEAD: the pump stops the function once its first output has decided the status.
            Some(Event::Data(_)) if head => output(cfg, Body::empty()),
            Some(Event::Data(first)) => {
                output(cfg, Body::stream(Output { first: Some(first), events, demand, asked: false }))
            }
            Some(Event::Whole(response)) => response,
            Some(Event::End | Event::Cut(_)) | None => {
                text(StatusCode::INTERNAL_SERVER_ERROR, "The function's output was lost.\n")
            }
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
    /// Notified by the response when it wants the next chunk.
    demand: Arc<Notify>,
    /// A HEAD request: only the first output is needed.
    head: bool,
    /// Output bytes handed to the response so far.
    sent: u64,
}

impl Pump {
    async fn run(mut self, mut child: Child, mut stdin: Option<pipe::Sender>, body: RequestBody) {
        let cfg = Arc::clone(&self.cfg);
        let stdout = child.stdout.take();
        let feed = feed(body, &mut stdin, cfg.read_timeout);
        let cancel = self.ctx.cancel.clone();
        let interrupted =
            Interrupted::first(self.ctx.deadline(cfg.exec_timeout), self.ctx.deadline(cfg.write_timeout), &cancel);
        let ending = self.pump(&child, stdout, feed, interrupted).await;
        match &ending {
            Ending::Exited | Ending::HeadSent => {}
            Ending::Interrupted(why) => why.log(&cfg),
            Ending::Input(e) => log::info!("Killing process: {} - {e}", cfg.fprocess),
            Ending::ClientGone => log::info!("Killing process: {} - the client went away", cfg.fprocess),
        }
        // Whatever is left of the group goes with the leader: nothing outlives the response. Only
        // then is stdin closed: a function blocked reading it must die, not see the end of an input
        // that broke off.
        let status = child.kill().await;
        drop(stdin);
        self.finish(ending, status).await;
    }

    /// Moves output to the response and input to the function until the function has exited and
    /// its output has ended, or something stops it first.
    async fn pump(
        &mut self,
        child: &Child,
        mut stdout: Option<pipe::Receiver>,
        feed: impl Future<Output = Result<(), BodyError>>,
        interrupted: impl Future<Output = Interrupted>,
    ) -> Ending {
        // Created once: polling a fresh `exited()` would ask the kernel on every pass of the loop.
        let exit = child.exited();
        tokio::pin!(feed, interrupted, exit);
        let mut feeding = true;
        let mut exited = false;
        // The first output is always wanted (it decides the status); after it, a chunk is read
        // only when the response asks for one, so nothing waits between the pipe and hyper.
        let mut wanted = true;
        let mut buf = BytesMut::new();
        loop {
            if exited && stdout.is_none() {
                return Ending::Exited;
            }
            tokio::select! {
                biased;
                why = &mut interrupted => return Ending::Interrupted(why),
                () = self.tx.closed() => return Ending::ClientGone,
                result = &mut feed, if feeding => match result {
                    Ok(()) => feeding = false,
                    Err(e) => return Ending::Input(e),
                },
                () = self.demand.notified(), if !wanted => wanted = true,
                chunk = read_chunk(stdout.as_mut(), &mut buf, exited), if wanted && stdout.is_some() => match chunk {
                    Some(chunk) => {
                        wanted = false;
                        let len = chunk.len() as u64;
                        // The response asked because it holds nothing: there is room.
                        if self.tx.try_send(Event::Data(chunk)).is_err() {
                            return Ending::ClientGone;
                        }
                        if self.head {
                            return Ending::HeadSent;
                        }
                        self.sent += len;
                    }
                    None => stdout = None,
                },
                () = &mut exit, if !exited => exited = true,
            }
        }
    }

    /// Logs how it went and ends the response: the whole answer if no output was sent, else the
    /// end of the stream, or its cut when the function failed.
    async fn finish(self, ending: Ending, status: ExitStatus) {
        let start = self.ctx.start;
        if !status.success() && !matches!(ending, Ending::HeadSent) {
            let error = process::describe(status);
            match self.sent {
                0 => log::info!("Function failed: {error}"),
                n => log::info!("Function failed: {error} (after {} of output)", human_size(n)),
            }
        }
        let answer = match ending {
            Ending::HeadSent => return self.access.write(StatusCode::OK, 0, start.elapsed()),
            Ending::ClientGone if self.sent == 0 => return,
            Ending::ClientGone => return self.access.write(StatusCode::OK, self.sent, start.elapsed()),
            Ending::Input(e) => bad_body(&e),
            Ending::Interrupted(why) => why.answer(&self.cfg).unwrap_or_else(|| failure("signal: killed")),
            Ending::Exited if status.success() => output(&self.cfg, Body::empty()),
            Ending::Exited => failure(&process::describe(status)),
        };
        if self.sent == 0 {
            self.access.response(&answer, start);
            let _ = self.tx.send(Event::Whole(answer)).await;
            return;
        }
        let status = answer.status();
        let event = if status == StatusCode::OK {
            Event::End
        } else {
            log::info!("Response cut after {} of output: it failed with {}", human_size(self.sent), status.as_u16());
            Event::Cut(status)
        };
        self.access.write(status, self.sent, start.elapsed());
        let _ = self.tx.send(event).await;
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

/// Copies the request body into the function's stdin as it arrives, then closes stdin (sets it to
/// `None`). Waiting longer than `idle` for the next piece of body is an error, and then stdin is
/// left open: the caller closes it only once the function is dead. A function that stops reading
/// its input is not an error: the rest of the body is just not wanted.
async fn feed(
    mut body: RequestBody,
    stdin: &mut Option<pipe::Sender>,
    idle: Option<Duration>,
) -> Result<(), BodyError> {
    while let Some(pipe) = stdin.as_mut() {
        let frame = match idle {
            Some(limit) => tokio::time::timeout(limit, body.frame()).await.map_err(|_| BodyError::Timeout)?,
            None => body.frame().await,
        };
        let data = match frame {
            None => break,
            Some(Err(e)) => return Err(BodyError::Broken(e)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue, // trailers
            },
        };
        if pipe.write_all(&data).await.is_err() {
            break;
        }
    }
    *stdin = None;
    Ok(())
}

/// The response body: chunks from the pump, each asked for when hyper wants more.
struct Output {
    first: Option<Bytes>,
    events: mpsc::Receiver<Event>,
    demand: Arc<Notify>,
    /// The pump was asked for a chunk that has not come yet.
    asked: bool,
}

impl hyper::body::Body for Output {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        let Poll::Ready(event) = this.events.poll_recv(cx) else {
            if !this.asked {
                this.asked = true;
                this.demand.notify_one();
            }
            return Poll::Pending;
        };
        this.asked = false;
        Poll::Ready(match event {
            Some(Event::Data(chunk)) => Some(Ok(Frame::data(chunk))),
            Some(Event::End) => None,
            Some(Event::Cut(status)) => Some(Err(Cut::error(status, "the function failed after its output started"))),
            // Only a panicking pump ends without saying so: don't pass a cut-off stream as whole.
            Some(Event::Whole(_)) | None => {
                Some(Err(Cut::error(StatusCode::INTERNAL_SERVER_ERROR, "the function's output was lost")))
            }
        })
    }
}
