//! One request's way to the function's server and back.
//!
//! The request goes out with the upstream URL joined to its path, its hop-by-hop headers dropped
//! and its body streamed (with `buffer_http`: read first and sent with a Content-Length). The
//! response comes back as it arrives, chunk by chunk, so server-sent events and NDJSON reach the
//! client at once; an accepted WebSocket handshake becomes a tunnel. One time limit ([`Limit`])
//! covers the whole exchange: before the response headers it gives 504, after them it cuts the
//! body or closes the tunnel. A failure of the function's server is a 502 with one line, and a
//! body that breaks after the headers ends the connection: never a complete-looking 200.
//!
//! A request owns its exchange and its connection to the function ([`pool`]): when it ends before
//! the exchange is complete, the connection is closed, which also ends the upload and so the
//! client's connection if its body was not read to the end. A request that can be sent again (no
//! body that is gone, a method safe to repeat) and that fails on a pooled connection before any
//! answer came is sent again on another one, as Go's transport does; so is one that never went
//! out.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_LENGTH, HOST, HeaderMap, HeaderName, HeaderValue, TRANSFER_ENCODING, UPGRADE};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::time::Sleep;

use super::Http;
use super::headers::{Limit, check_framing, remove_hop_by_hop, target, websocket_upgrade};
use super::pool::{Conn, Failure, Pool, one_line};
use crate::admission::Admission;
use crate::answers;
use crate::body::{Body, Cut, RequestBody};
use crate::modes::{AccessLog, BodyError, Scope, from_now, read_body, with_duration};
use crate::shutdown::Cancel;

/// How many times a request is sent again after pooled connections failed it. Each retry uses up a
/// connection that had served before, so the pool bounds the retries anyway; this bounds them
/// against a function that keeps closing fresh connections once they have answered once.
const RETRIES: usize = 4;

/// Why no answer came from the function.
enum NoAnswer {
    /// The client's body broke, did not arrive within `read_timeout` (400) or passed
    /// `max_request_body` (413).
    Body(BodyError),
    /// The function's server failed: 502.
    Upstream(Failure),
}

/// The request as it goes to the function, before its body is attached.
struct Outgoing {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    /// The client framed a body (Content-Length or Transfer-Encoding), even an empty one.
    framed: bool,
}

impl Outgoing {
    /// The request with `body`; `keep`: the head is kept for sending the request again.
    fn request(&mut self, body: Body, keep: bool) -> Request<Body> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        if keep {
            *request.uri_mut() = self.uri.clone();
            *request.headers_mut() = self.headers.clone();
        } else {
            *request.uri_mut() = std::mem::take(&mut self.uri);
            *request.headers_mut() = std::mem::take(&mut self.headers);
        }
        request
    }

    /// Whether the request may be sent twice: Go's rule, a method that is safe to repeat or an
    /// idempotency key.
    fn repeatable(&self) -> bool {
        // Names made once: a lookup by `&str` parses the name every time.
        static KEY: HeaderName = HeaderName::from_static("idempotency-key");
        static X_KEY: HeaderName = HeaderName::from_static("x-idempotency-key");
        matches!(self.method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
            || self.headers.contains_key(&KEY)
            || self.headers.contains_key(&X_KEY)
    }
}

impl Http {
    pub(super) async fn forward(&self, mut req: Request<RequestBody>, scope: Scope) -> Response<Body> {
        let upgrade = websocket_upgrade(req.headers());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let log = AccessLog::new(&parts, self.cfg.log_callid).with_reason();
        if parts.method == Method::CONNECT {
            return finish(log, &scope, answers::method_not_allowed(None));
        }
        // One timer for the whole exchange: the wait for the answer, then its body or its tunnel.
        let mut limit = Limit::of(&self.cfg, &parts.headers).map(|l| Deadline {
            timer: Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(scope.start + l.after))),
            limit: l,
        });
        let uri = match target(&self.upstream, parts.uri) {
            Ok(uri) => uri,
            Err(e) => return finish(log, &scope, answers::bad_request(&format!("invalid request target: {e}"))),
        };
        let framed = parts.headers.contains_key(CONTENT_LENGTH) || parts.headers.contains_key(TRANSFER_ENCODING);
        let mut headers = parts.headers;
        // `curl -X POST` frames no body; Go's client says `Content-Length: 0` for these methods, and
        // Express's body parser (the node templates) needs it to hand the handler "" and not {}.
        if !framed && matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        remove_hop_by_hop(&mut headers, upgrade);
        // An HTTP/1.0 client may send no Host; the function's server gets its own, as Go sends it.
        if !headers.contains_key(HOST) {
            headers.insert(HOST, self.host.clone());
        }
        let outgoing = Outgoing { method: parts.method, uri, headers, framed };

        // When the time runs out or the watchdog stops waiting, the exchange is dropped here, and
        // with it the connection to the function: it is closed.
        let result = tokio::select! {
            result = self.send(outgoing, body) => result,
            limit = expired(&mut limit) => {
                log::info!("Upstream HTTP killed due to {limit}");
                return finish(log, &scope, answers::gateway_timeout(&limit));
            }
            () = scope.cancel.cancelled() => return finish(log, &scope, answers::shutting_down()),
        };
        let (mut response, conn) = match result {
            Ok(answered) => answered,
            Err(NoAnswer::Body(why)) => return finish(log, &scope, why.answer()),
            Err(NoAnswer::Upstream(e)) => return bad_gateway(log, &scope, &e.to_string()),
        };

        let status = response.status();
        let tunnel = match (status, client_upgrade) {
            (StatusCode::SWITCHING_PROTOCOLS, Some(client)) => Some((client, hyper::upgrade::on(&mut response))),
            (StatusCode::SWITCHING_PROTOCOLS, None) => {
                return bad_gateway(log, &scope, "the function switched protocols without being asked");
            }
            _ => None,
        };
        let (mut head, body) = response.into_parts();
        if let Err(why) = check_framing(&mut head.headers) {
            return bad_gateway(log, &scope, &why);
        }
        let upgrade = tunnel.as_ref().and_then(|_| head.headers.get(UPGRADE).cloned());
        remove_hop_by_hop(&mut head.headers, upgrade);
        // hyper answers HTTP/1.0 clients in 1.0 by itself; a 1.0 upstream must not downgrade others.
        head.version = Version::HTTP_11;
        let body = match tunnel {
            Some((client, upstream)) => {
                log.write(status, 0, scope.start.elapsed());
                let cancel = scope.cancel.clone();
                let upstream = async move {
                    conn.upgrade().await;
                    upstream.await
                };
                tokio::spawn(tunnel_between(client, upstream, limit, cancel, scope.admission.clone()));
                Body::empty()
            }
            None => Body::stream(Relay::new(body, conn, Arc::clone(&self.pool), limit, &scope, log, status)),
        };
        with_duration(Response::from_parts(head, body), &scope)
    }

    /// Sends the request once the function listens, and waits for the response headers. Returns
    /// them with the connection they came on, which the answer's body still needs.
    async fn send(&self, mut out: Outgoing, body: RequestBody) -> Result<(Response<Incoming>, Conn), NoAnswer> {
        // Requests that arrive while the function is still starting wait for it, before their
        // body's read_timeout starts: the wait is not the client's delay.
        if !*self.ready.borrow() {
            let _ = self.ready.subscribe().wait_for(|ready| *ready).await;
        }
        // Only a streamed body can fail while it is sent.
        let mut failure = None;
        // A body held in memory (or none) can be sent again.
        let (body, again) = match body {
            RequestBody::Empty => (Body::empty(), Some(Bytes::new())),
            body if self.cfg.buffer_http => {
                let deadline = from_now(self.cfg.read_timeout);
                let bytes = read_body(body, deadline).await.map_err(NoAnswer::Body)?;
                // WSGI servers read nothing from a body without a length (of-watchdog sends chunked).
                if out.framed || !bytes.is_empty() {
                    out.headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                }
                (Body::from(bytes.clone()), Some(bytes))
            }
            body if body.is_end_stream() => (Body::empty(), Some(Bytes::new())),
            body => {
                let deadline = from_now(self.cfg.read_timeout);
                let failed = failure.insert(Arc::new(Mutex::new(None)));
                (Body::stream(ClientBody { body, deadline, timer: None, failure: Arc::clone(failed) }), None)
            }
        };
        let again = again.filter(|_| out.repeatable());

        let mut request = out.request(body, again.is_some());
        let mut retries = 0;
        loop {
            let mut conn = self.pool.checkout().await.map_err(NoAnswer::Upstream)?;
            let mut error = match conn.send(request).await {
                Ok(response) => return Ok((response, conn)),
                Err(e) => e,
            };
            let reused = conn.reused;
            drop(conn);
            if let Some(why) = failure.as_deref().and_then(|failure| lock(failure).take()) {
                return Err(NoAnswer::Body(why));
            }
            // Go's transport: a request that met a pooled connection the function had closed is
            // sent again on another one if it never went out, or if nothing of its answer came and
            // it can be repeated.
            if !reused || retries == RETRIES {
                return Err(NoAnswer::Upstream(error));
            }
            request = match (error.take_unsent(), &again) {
                (Some(unsent), _) => unsent,
                (None, Some(bytes)) if error.closed_before_answer() => out.request(Body::from(bytes.clone()), true),
                _ => return Err(NoAnswer::Upstream(error)),
            };
            log::debug!("Upstream connection closed before an answer, sending again: {error}");
            retries += 1;
        }
    }
}

/// An answer the watchdog makes itself, with `X-Duration-Seconds` and its log line.
fn finish(log: AccessLog, scope: &Scope, response: Response<Body>) -> Response<Body> {
    let response = with_duration(response, scope);
    log.response(&response, scope.start);
    response
}

fn bad_gateway(log: AccessLog, scope: &Scope, why: &str) -> Response<Body> {
    log::info!("Upstream HTTP request error: {why}");
    finish(log, scope, answers::bad_gateway(why))
}

/// A request's time limit and the timer for its deadline.
struct Deadline {
    timer: Pin<Box<Sleep>>,
    limit: Limit,
}

/// Resolves with the request's limit when its deadline passes; without a limit, never.
async fn expired(deadline: &mut Option<Deadline>) -> Limit {
    match deadline {
        Some(deadline) => {
            deadline.timer.as_mut().await;
            deadline.limit
        }
        None => std::future::pending().await,
    }
}

/// The client's body on its way to the function. Fails after `read_timeout`, and records why it
/// failed so that the answer is a 400, not a 502.
struct ClientBody {
    body: RequestBody,
    /// When `read_timeout` passes.
    deadline: Option<tokio::time::Instant>,
    /// The timer for `deadline`, made the first time the body has to wait: most bodies are
    /// there with their request's head, and need none.
    timer: Option<Pin<Box<Sleep>>>,
    failure: Arc<Mutex<Option<BodyError>>>,
}

impl ClientBody {
    fn timed_out(&self) -> bool {
        match (&self.timer, self.deadline) {
            (Some(timer), _) => timer.is_elapsed(),
            (None, Some(deadline)) => deadline <= tokio::time::Instant::now(),
            (None, None) => false,
        }
    }

    /// Has the task woken when `read_timeout` passes; whether it has.
    fn wake_on_timeout(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.deadline else { return false };
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer.as_mut().poll(cx).is_ready()
    }

    fn fail(&self, error: BodyError) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let message = error.to_string();
        lock(&self.failure).get_or_insert(error);
        Poll::Ready(Some(Err(io::Error::other(message))))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl HttpBody for ClientBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.timed_out() {
            return this.fail(BodyError::Timeout);
        }
        let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) else {
            return if this.wake_on_timeout(cx) { this.fail(BodyError::Timeout) } else { Poll::Pending };
        };
        match frame {
            Some(Ok(frame)) => Poll::Ready(Some(Ok(frame))),
            Some(Err(e)) => this.fail(e),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What a body's `poll_frame` returns.
type FramePoll = Poll<Option<Result<Frame<Bytes>, io::Error>>>;

/// The function's response body on its way to the client, frame by frame as it arrives. Cut
/// (the connection fails, see [`Cut`]) when the request's limit passes, the watchdog stops waiting
/// or the function's body breaks; writes the access log line when it is done or dropped, with the
/// status a cut answer would have had. It drives the connection the body comes on, and gives it
/// back to the pool when the body is complete (else the connection is closed with it).
struct Relay {
    body: Incoming,
    /// Taken when the relay ends.
    conn: Option<Conn>,
    pool: Arc<Pool>,
    /// The whole body came.
    ended: bool,
    limit: Option<Deadline>,
    cancel: Cancel,
    /// Waits for [`Relay::cancel`]; made the first time the body has to wait.
    cancelled: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    log: AccessLog,
    status: StatusCode,
    start: Instant,
    bytes: u64,
}

impl Relay {
    fn new(
        body: Incoming,
        conn: Conn,
        pool: Arc<Pool>,
        limit: Option<Deadline>,
        scope: &Scope,
        log: AccessLog,
        status: StatusCode,
    ) -> Relay {
        Relay {
            body,
            conn: Some(conn),
            pool,
            ended: false,
            limit,
            cancel: scope.cancel.clone(),
            cancelled: None,
            log,
            status,
            start: scope.start,
            bytes: 0,
        }
    }

    /// The cut when the limit has passed or the watchdog stopped waiting, whether or not more of
    /// the body is there. Only asked here: they are waited on only when the body waits.
    fn cut_if_stopped(&mut self) -> Option<FramePoll> {
        if let Some(Deadline { timer, limit }) = &self.limit
            && timer.is_elapsed()
        {
            log::info!("Upstream HTTP killed due to {limit}: response cut after {} bytes", self.bytes);
            let reason = format!("{limit} passed");
            return Some(self.cut(StatusCode::GATEWAY_TIMEOUT, reason));
        }
        if self.cancel.is_cancelled() {
            return Some(self.cut(StatusCode::SERVICE_UNAVAILABLE, "the watchdog is shutting down".into()));
        }
        None
    }

    /// Has the task woken when the limit passes or the watchdog stops waiting.
    fn wake_on_stop(&mut self, cx: &mut Context<'_>) {
        if let Some(Deadline { timer, .. }) = &mut self.limit {
            let _ = timer.as_mut().poll(cx);
        }
        let cancel = &self.cancel;
        let cancelled = self.cancelled.get_or_insert_with(|| {
            let cancel = cancel.clone();
            Box::pin(async move { cancel.cancelled().await })
        });
        let _ = cancelled.as_mut().poll(cx);
    }

    /// Fails the body: the client's connection ends before the body does.
    fn cut(&mut self, status: StatusCode, reason: String) -> FramePoll {
        self.status = status;
        Poll::Ready(Some(Err(Cut::error(status, reason))))
    }
}

impl HttpBody for Relay {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if let Some(cut) = this.cut_if_stopped() {
            return cut;
        }
        if let Some(conn) = &mut this.conn {
            conn.drive(cx);
        }
        let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) else {
            this.wake_on_stop(cx);
            return this.cut_if_stopped().unwrap_or(Poll::Pending);
        };
        match frame {
            Some(Ok(frame)) => {
                this.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                let error = one_line(&e);
                log::info!("Upstream HTTP response error after {} bytes: {error}", this.bytes);
                this.cut(StatusCode::BAD_GATEWAY, error)
            }
            None => {
                this.ended = true;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // hyper stops polling a body that says it has ended, so the last frame may have been it.
        if let Some(conn) = self.conn.take()
            && (self.ended || self.body.is_end_stream())
        {
            self.pool.put(conn);
        }
        self.log.write(self.status, self.bytes, self.start.elapsed());
    }
}

/// Copies bytes both ways between the client and the function once both sides have switched
/// protocols, until either side closes, the request's limit passes or the watchdog stops waiting
/// (the drain deadline). The tunnel holds its request's admission for its whole life.
async fn tunnel_between(
    client: OnUpgrade,
    upstream: impl Future<Output = hyper::Result<hyper::upgrade::Upgraded>>,
    mut limit: Option<Deadline>,
    cancel: Cancel,
    _admission: Admission,
) {
    let copy = async {
        let (client, upstream) = tokio::try_join!(client, upstream).map_err(|e| e.to_string())?;
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await.map_err(|e| e.to_string())
    };
    tokio::select! {
        result = copy => {
            if let Err(e) = result {
                log::debug!("WebSocket tunnel: {e}");
            }
        }
        limit = expired(&mut limit) => log::info!("WebSocket closed: {limit} passed"),
        () = cancel.cancelled() => log::info!("WebSocket closed: the watchdog is shutting down"),
    }
}
