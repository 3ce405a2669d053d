//! Streamed runs ([`super::Io::Streamed`]): full duplex. The request body goes into the function's
//! STDIN as it arrives while its STDOUT goes back, chunked, as it is written. Output is read only
//! when the response asks for more, so a client that reads slowly slows the function down instead
//! of filling memory.
//!
//! The status goes out with the first output byte. A function that ends without writing anything
//! gets the whole answer the policy gives (200 on exit 0, else 500 with the error). A failure once
//! output has started (an exit status, a signal, a time limit, the hard stop, a request body that
//! broke off) cuts the response: it ends without its last chunk, so that no client takes it for
//! complete, and it is logged and counted with the status it would have had. HEAD: the first
//! output decides the status, then the function is stopped.
//!
//! A task per request (the pump) owns the run and moves the bytes; the response body only takes
//! chunks from it. When the client goes away the body is dropped, the pump sees its channel closed
//! and the run ends.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::http::request::Parts;
use hyper::{Method, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{Notify, mpsc};

use super::run::{self, Ending, Limits};
use super::{Fork, RequestLog, Verdict};
use crate::answers;
use crate::body::{Body, Cut, RequestBody};
use crate::cgi_response::{self, Head, Parsed};
use crate::modes::{BodyError, HumanSize, Scope, Seconds};
use crate::process::{Child, OUTPUT_GRACE};

/// The most output read at once: one pipe's worth.
const CHUNK: usize = 64 * 1024;

/// What the pump tells the response.
enum Event {
    /// Output, in order; never empty.
    Data(Bytes),
    /// `cgi_response`: the head the function's header block asks for, and the output after it
    /// (maybe empty). The first event of the stream.
    Head(Head, Bytes),
    /// All output was sent and the function is gone.
    End,
    /// Output was sent, then the run failed: the response ends without its last chunk. The status
    /// is the one it would have had.
    Cut(StatusCode),
    /// The function ended without output: this is the whole answer.
    Whole(Response<Body>),
}

/// Starts the function and answers with its output as it comes.
pub async fn respond(
    fork: Arc<Fork>,
    parts: Parts,
    body: RequestBody,
    scope: Scope,
    log: RequestLog,
) -> Response<Body> {
    let mut child = match fork.spawn(&parts, &scope, log.call_id()) {
        Ok(child) => child,
        Err(error) => return log.done(fork.failure(&error, &[], &scope), &scope),
    };
    let stdin = match child.stdin.take().map(pipe::Sender::from_owned_fd_unchecked).transpose() {
        Ok(stdin) => stdin,
        Err(e) => {
            let error = format!("cannot write to the function's stdin: {e}");
            return log.done(fork.failure(&error, &[], &scope), &scope);
        }
    };
    let is_head_request = parts.method == Method::HEAD;
    let (tx, mut events) = mpsc::channel(1);
    let demand = Arc::new(Notify::new());
    let limits = fork.limits(&scope);
    let pump = Pump {
        cgi: fork.cfg.cgi_response.then(Vec::new),
        fork: Arc::clone(&fork),
        scope: scope.clone(),
        log,
        tx,
        demand: Arc::clone(&demand),
        is_head_request,
        head_sent: false,
        status: StatusCode::OK,
        sent: 0,
    };
    tokio::spawn(pump.run(child, stdin, body, limits));
    let (cgi, first) = match events.recv().await {
        Some(Event::Data(first)) => (None, first),
        Some(Event::Head(cgi, first)) => (Some(cgi), first),
        Some(Event::Whole(response)) => return response,
        Some(Event::End | Event::Cut(_)) | None => return answers::output_lost(),
    };
    let body = match is_head_request {
        // HEAD: the pump stops the function once the first output has decided the status.
        true => Body::empty(),
        false => Body::stream(Output { first: Some(first).filter(|b| !b.is_empty()), events, demand, asked: false }),
    };
    fork.success_response(cgi, body, None, Seconds(scope.start.elapsed()))
}

/// One request's run, and the bytes to and from it.
struct Pump {
    fork: Arc<Fork>,
    scope: Scope,
    log: RequestLog,
    tx: mpsc::Sender<Event>,
    /// Notified by the response when it wants the next chunk.
    demand: Arc<Notify>,
    /// Only the first output is needed: it decides the status.
    is_head_request: bool,
    /// The response's head went out: from now on a failure cuts the response.
    head_sent: bool,
    /// The status of the head that went out (the CGI block's, or 200).
    status: StatusCode,
    /// Output bytes handed to the response so far.
    sent: u64,
    /// `cgi_response`: the output so far, while its header block is not complete.
    cgi: Option<Vec<u8>>,
}

impl Pump {
    async fn run(mut self, mut child: Child, stdin: Option<pipe::Sender>, body: RequestBody, limits: Limits) {
        let stdout = child.stdout.take();
        let fork = Arc::clone(&self.fork);
        let idle = fork.cfg.read_timeout;
        let outcome = run::run(child, stdin, limits, &fork.cfg, async |child: &Child, stdin: &mut _| {
            self.exchange(child, stdout, stdin, body, idle).await
        })
        .await;
        self.finish(outcome).await;
    }

    /// Moves output to the response and input to the function until the function has exited and
    /// its output has ended, or the client goes away, or the input breaks off.
    async fn exchange(
        &mut self,
        child: &Child,
        mut stdout: Option<pipe::Receiver>,
        stdin: &mut Option<pipe::Sender>,
        body: RequestBody,
        idle: Option<Duration>,
    ) -> Ending {
        // Created once: polling a fresh `exited()` would ask the kernel on every pass of the loop.
        let exit = child.exited();
        let feed = copy_body(body, stdin, idle);
        tokio::pin!(feed, exit);
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
                () = self.tx.closed() => return Ending::ClientGone,
                result = &mut feed, if feeding => match result {
                    Ok(()) => feeding = false,
                    Err(e) => return Ending::InputBroken(e),
                },
                () = self.demand.notified(), if !wanted => wanted = true,
                chunk = read_chunk(stdout.as_mut(), &mut buf, exited), if wanted && stdout.is_some() => match chunk {
                    Ok(Some(chunk)) => match self.take(chunk) {
                        Taken::More => {}
                        Taken::Sent => wanted = false,
                        Taken::HeadAnswered => return Ending::HeadAnswered,
                        Taken::ClientGone => return Ending::ClientGone,
                        Taken::Invalid(why) => return Ending::InvalidHead(why),
                    },
                    Ok(None) => stdout = None,
                    // Not the end of the output: a cut stream must not pass for a whole one.
                    Err(e) => return Ending::OutputFailed(e.to_string()),
                },
                () = &mut exit, if !exited => exited = true,
            }
        }
    }

    /// Hands a chunk of output to the response; with `cgi_response`, holds it until the header
    /// block is complete.
    fn take(&mut self, chunk: Bytes) -> Taken {
        let event = match &mut self.cgi {
            None => Event::Data(chunk),
            Some(held) => {
                held.extend_from_slice(&chunk);
                // Only a new line can complete or refuse the block (or its size, refuse it).
                if !chunk.contains(&b'\n') && held.len() <= cgi_response::MAX_HEAD {
                    return Taken::More;
                }
                match cgi_response::parse(held, false) {
                    Parsed::Partial => return Taken::More,
                    Parsed::Invalid { why, line } => {
                        cgi_response::log_refused(&why, &line);
                        return Taken::Invalid(why);
                    }
                    Parsed::Head { head, body } => {
                        self.status = head.status;
                        let rest = Bytes::from(std::mem::take(held)).slice(body..);
                        self.cgi = None;
                        Event::Head(head, rest)
                    }
                }
            }
        };
        let len = match &event {
            Event::Data(chunk) | Event::Head(_, chunk) => chunk.len() as u64,
            _ => 0,
        };
        // The response asked because it holds nothing: there is room.
        if self.tx.try_send(event).is_err() {
            return Taken::ClientGone;
        }
        self.head_sent = true;
        if self.is_head_request {
            return Taken::HeadAnswered;
        }
        self.sent += len;
        Taken::Sent
    }

    /// Ends the response: the whole answer if nothing was sent, else the end of the stream, or its
    /// cut when the run failed.
    async fn finish(mut self, outcome: run::Outcome) {
        let (fork, scope, log) = (&self.fork, &self.scope, &self.log);
        match outcome.ending {
            Ending::HeadAnswered => return log.streamed(self.status, 0, scope),
            Ending::ClientGone if !self.head_sent => return,
            Ending::ClientGone => return log.streamed(self.status, self.sent, scope),
            _ => {}
        }
        if !self.head_sent {
            // With `cgi_response`, what came of a header block that never completed.
            let output = self.cgi.take().unwrap_or_default();
            let answer = log.done(fork.answer(&outcome, output, None, scope, log), scope);
            let _ = self.tx.send(Event::Whole(answer)).await;
            return;
        }
        if let Some(error) = outcome.error() {
            log::info!("Function failed: {error} (after {} of output)", HumanSize(self.sent));
        }
        let (event, status) = match fork.verdict(&outcome) {
            Verdict::Success => (Event::End, self.status),
            verdict => {
                let status = verdict.status();
                log::info!("Response cut after {} of output: it failed with {}", HumanSize(self.sent), status.as_u16());
                (Event::Cut(status), status)
            }
        };
        log.streamed(status, self.sent, scope);
        let _ = self.tx.send(event).await;
    }
}

/// What became of a chunk of output.
enum Taken {
    /// Held: the CGI header block is not complete yet.
    More,
    Sent,
    /// HEAD: the first output decided the status.
    HeadAnswered,
    ClientGone,
    /// The CGI header block was refused.
    Invalid(String),
}

/// The next piece of output; `None` at its end. Once the function has exited, output that stays
/// silent for [`OUTPUT_GRACE`] has ended too: only a descendant can still hold it open.
async fn read_chunk(
    stdout: Option<&mut pipe::Receiver>,
    buf: &mut BytesMut,
    exited: bool,
) -> std::io::Result<Option<Bytes>> {
    let Some(stdout) = stdout else { return Ok(None) };
    buf.reserve(CHUNK);
    let read = stdout.read_buf(buf);
    let n = match exited {
        true => match tokio::time::timeout(OUTPUT_GRACE, read).await {
            Ok(n) => n?,
            Err(_) => return Ok(None),
        },
        false => read.await?,
    };
    Ok((n > 0).then(|| buf.split().freeze()))
}

/// Copies the request body into the function's stdin as it arrives, then closes stdin (sets it to
/// `None`). Waiting longer than `idle` for the next piece of body is an error, and then stdin is
/// left open: the run closes it only once the function is dead. A function that stops reading its
/// input is not an error: the rest of the body is just not wanted.
async fn copy_body(
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
            Some(Err(e)) => return Err(e),
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
            // The head comes first, and only once.
            Some(Event::Head(..)) => Some(Err(Cut::error(StatusCode::INTERNAL_SERVER_ERROR, "a second head"))),
            Some(Event::End) => None,
            Some(Event::Cut(status)) => Some(Err(Cut::error(status, "the function failed after its output started"))),
            // Only a panicking pump ends without saying so: don't pass a cut-off stream as whole.
            Some(Event::Whole(_)) | None => {
                Some(Err(Cut::error(StatusCode::INTERNAL_SERVER_ERROR, "the function's output was lost")))
            }
        })
    }
}
