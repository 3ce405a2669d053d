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
//! A request owns its exchange: when it ends before the exchange is complete, the connection to
//! the function is shut down ([`Link`]), which also ends the upload and so the client's
//! connection if its body was not read to the end. A request that can be sent again (no body that
//! is gone, a method safe to repeat) and that fails on a pooled connection before any answer came
//! is sent again on another one, as Go's transport does.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_LENGTH, HeaderMap, HeaderValue, TRANSFER_ENCODING, UPGRADE};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::{
    self,
    connect::{CaptureConnection, HttpConnector, capture_connection},
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::time::Sleep;

use super::Http;
use super::connector::{Connector, Handle};
use super::headers::{Limit, check_framing, remove_hop_by_hop, uri_for, websocket_upgrade};
use crate::admission::Admission;
use crate::answers;
use crate::body::{Body, Cut, RequestBody};
use crate::modes::{AccessLog, BodyError, Scope, read_body, with_duration};
use crate::shutdown::Cancel;

pub type Client = legacy::Client<Connector, Upload>;

/// Idle pooled connections to the function are closed after this, before the function's server
/// closes them itself (Gunicorn's default is 2 s, Node's 5 s): a request sent on a connection the
/// server is closing fails (and is sent again if it can be). The reference uses the same 500 ms.
const POOL_IDLE: Duration = Duration::from_millis(500);

/// How many times a request is sent again after pooled connections failed it. Each retry uses up a
/// connection that had served before, so the pool bounds the retries anyway; this bounds them
/// against a function that keeps closing fresh connections once they have answered once.
const RETRIES: usize = 4;

/// A pooled keep-alive HTTP/1.1 client. Header names go out as `Content-Type`, not hyper's
/// `content-type`, as Go's client writes them: servers that compare names case-sensitively exist.
pub fn client() -> Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE)
        .pool_timer(TokioTimer::new())
        .http1_title_case_headers(true)
        .build(Connector(connector))
}

/// Why no answer came from the function.
enum NoAnswer {
    /// The client's body broke, did not arrive within `read_timeout` (400) or passed
    /// `max_request_body` (413).
    Body(BodyError),
    /// The function's server failed: 502.
    Upstream(legacy::Error),
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
    fn request(&mut self, body: Upload, keep: bool) -> Request<Upload> {
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
        matches!(self.method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
            || self.headers.contains_key("idempotency-key")
            || self.headers.contains_key("x-idempotency-key")
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
        let limit =
            Limit::of(&self.cfg, &parts.headers).map(|l| (tokio::time::Instant::from_std(scope.start + l.after), l));
        let uri = match uri_for(&self.upstream, &parts.uri) {
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
        let outgoing = Outgoing { method: parts.method, uri, headers, framed };

        let link = Link::default();
        let result = tokio::select! {
            result = self.send(outgoing, body, &scope, &link) => result,
            limit = expired(limit) => {
                // While the request still holds its connection (see `Link::end`).
                link.end();
                log::info!("Upstream HTTP killed due to {limit}");
                return finish(log, &scope, answers::gateway_timeout(&limit));
            }
            () = scope.cancel.cancelled() => {
                link.end();
                return finish(log, &scope, answers::shutting_down());
            }
        };
        let mut response = match result {
            Ok(response) => response,
            Err(NoAnswer::Body(why)) => return finish(log, &scope, why.answer()),
            Err(NoAnswer::Upstream(e)) => return bad_gateway(log, &scope, &one_line(&e)),
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
                tokio::spawn(tunnel_between(client, upstream, limit, cancel, scope.admission.clone()));
                Body::empty()
            }
            None => Body::stream(Relay::new(body, limit, &scope, log, status, link)),
        };
        with_duration(Response::from_parts(head, body), &scope)
    }

    /// Sends the request once the function listens, and waits for the response headers.
    async fn send(
        &self,
        mut out: Outgoing,
        body: RequestBody,
        scope: &Scope,
        link: &Link,
    ) -> Result<Response<Incoming>, NoAnswer> {
        let failure = Arc::new(Mutex::new(None));
        // A body held in memory (or none) can be sent again.
        let (body, again) = match body {
            RequestBody::Empty => (Body::empty(), Some(Bytes::new())),
            body if self.cfg.buffer_http => {
                let deadline = scope.deadline(self.cfg.read_timeout);
                let bytes = read_body(body, deadline).await.map_err(NoAnswer::Body)?;
                // WSGI servers read nothing from a body without a length (of-watchdog sends chunked).
                if out.framed || !bytes.is_empty() {
                    out.headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                }
                (Body::from(bytes.clone()), Some(bytes))
            }
            body if body.is_end_stream() => (Body::empty(), Some(Bytes::new())),
            body => {
                let timeout = scope.deadline(self.cfg.read_timeout).map(|d| Box::pin(tokio::time::sleep_until(d)));
                (Body::stream(ClientBody { body, timeout, failure: Arc::clone(&failure) }), None)
            }
        };
        let again = again.filter(|_| out.repeatable());

        // Requests that arrive while the function is still starting wait for it.
        if !*self.ready.borrow() {
            let _ = self.ready.subscribe().wait_for(|ready| *ready).await;
        }
        let mut body = Upload::new(body, Arc::clone(&link.sent));
        let mut retries = 0;
        loop {
            let mut request = out.request(body, again.is_some());
            link.went_out(capture_connection(&mut request));
            let error = match self.client.request(request).await {
                Ok(response) => {
                    link.responded.store(true, Ordering::Release);
                    if let Some(handle) = response.extensions().get::<Handle>() {
                        handle.mark_served();
                    }
                    return Ok(response);
                }
                Err(e) => e,
            };
            if let Some(why) = lock(&failure).take() {
                return Err(NoAnswer::Body(why));
            }
            // Go's transport: a request that met a pooled connection the function had closed is
            // sent again on another one, if nothing of its answer came and it can be repeated.
            let pooled = link.handle().is_some_and(|h| h.has_served());
            match &again {
                Some(bytes) if pooled && retries < RETRIES && closed_before_answer(&error) => {
                    log::debug!("Upstream connection closed before an answer, sending again: {}", one_line(&error));
                    retries += 1;
                    body = Upload::new(Body::from(bytes.clone()), Arc::clone(&link.sent));
                }
                _ => return Err(NoAnswer::Upstream(error)),
            }
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

/// Resolves with the request's limit when its deadline passes; without a limit, never.
async fn expired(limit: Option<(tokio::time::Instant, Limit)>) -> Limit {
    match limit {
        Some((deadline, limit)) => {
            tokio::time::sleep_until(deadline).await;
            limit
        }
        None => std::future::pending().await,
    }
}

/// An error and its causes on one line: `client error (Connect): tcp connect error: Connection refused`.
fn one_line(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.replace(['\r', '\n'], " ")
}

/// Whether hyper gave up on a request because the function's server closed or reset the
/// connection before the answer's head was complete.
fn closed_before_answer(error: &legacy::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_incomplete_message) {
            return true;
        }
        if let Some(e) = cause.downcast_ref::<io::Error>()
            && matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted
            )
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// The connection a request went out on, and how far its exchange got. Everything the request
/// owns ends with it ([`Link::end`], at the latest when dropped). hyper-util's pooled connection
/// task owns the upload and would keep writing it (blocked, to a function that does not read it)
/// with the client's connection waiting behind it; shutting the connection down fails that task,
/// which drops both.
#[derive(Default)]
struct Link {
    capture: Mutex<Option<CaptureConnection>>,
    /// hyper has taken the whole request body.
    sent: Arc<AtomicBool>,
    /// The answer's head came.
    responded: AtomicBool,
    ended: AtomicBool,
}

impl Link {
    /// The request (this attempt of it) went out; the connection is known once hyper-util has one.
    fn went_out(&self, capture: CaptureConnection) {
        *lock(&self.capture) = Some(capture);
    }

    fn handle(&self) -> Option<Handle> {
        Handle::of(lock(&self.capture).as_ref()?)
    }

    /// Shuts the connection down unless the exchange went far enough for hyper to end it cleanly:
    /// the answer's head came and hyper has the whole body (an answer dropped halfway makes hyper
    /// close the connection itself). Until then the connection is busy with this request, so it
    /// cannot have been handed to another one; the same holds before the answer while the request
    /// is still waiting for it, which is why a request that gives up calls this before it lets go.
    fn end(&self) {
        if self.ended.swap(true, Ordering::AcqRel) {
            return;
        }
        let done = self.responded.load(Ordering::Acquire) && self.sent.load(Ordering::Acquire);
        if !done && let Some(handle) = self.handle() {
            handle.abort();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.end();
    }
}

/// The request body as hyper takes it, noting in `sent` when it has all of it.
pub struct Upload {
    body: Body,
    sent: Arc<AtomicBool>,
}

impl Upload {
    fn new(body: Body, sent: Arc<AtomicBool>) -> Upload {
        sent.store(body.is_end_stream(), Ordering::Release);
        Upload { body, sent }
    }
}

impl HttpBody for Upload {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.body).poll_frame(cx);
        let taken_whole = match &poll {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.body.is_end_stream(),
            _ => false,
        };
        if taken_whole {
            this.sent.store(true, Ordering::Release);
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The client's body on its way to the function. Fails after `read_timeout`, and records why it
/// failed so that the answer is a 400, not a 502.
struct ClientBody {
    body: RequestBody,
    timeout: Option<Pin<Box<Sleep>>>,
    failure: Arc<Mutex<Option<BodyError>>>,
}

impl ClientBody {
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
        if let Some(timeout) = &mut this.timeout
            && timeout.as_mut().poll(cx).is_ready()
        {
            return this.fail(BodyError::Timeout);
        }
        match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
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

/// The function's response body on its way to the client, frame by frame as it arrives. Cut
/// (the connection fails, see [`Cut`]) when the request's limit passes, the watchdog stops waiting
/// or the function's body breaks; writes the access log line when it is done or dropped, with the
/// status a cut answer would have had.
struct Relay {
    body: Incoming,
    limit: Option<(Pin<Box<Sleep>>, Limit)>,
    cancel: Pin<Box<dyn Future<Output = ()> + Send>>,
    log: AccessLog,
    status: StatusCode,
    start: Instant,
    bytes: u64,
    /// Ended when the answer is done: an upload still going then is stopped.
    link: Link,
}

impl Relay {
    fn new(
        body: Incoming,
        limit: Option<(tokio::time::Instant, Limit)>,
        scope: &Scope,
        log: AccessLog,
        status: StatusCode,
        link: Link,
    ) -> Relay {
        let cancel = scope.cancel.clone();
        Relay {
            body,
            limit: limit.map(|(deadline, limit)| (Box::pin(tokio::time::sleep_until(deadline)), limit)),
            cancel: Box::pin(async move { cancel.cancelled().await }),
            log,
            status,
            start: scope.start,
            bytes: 0,
            link,
        }
    }

    /// Fails the body: the client's connection ends before the body does.
    fn cut(&mut self, status: StatusCode, reason: String) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.status = status;
        Poll::Ready(Some(Err(Cut::error(status, reason))))
    }
}

impl HttpBody for Relay {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if let Some((timer, limit)) = &mut this.limit
            && timer.as_mut().poll(cx).is_ready()
        {
            log::info!("Upstream HTTP killed due to {limit}: response cut after {} bytes", this.bytes);
            let reason = format!("{limit} passed");
            return this.cut(StatusCode::GATEWAY_TIMEOUT, reason);
        }
        if this.cancel.as_mut().poll(cx).is_ready() {
            return this.cut(StatusCode::SERVICE_UNAVAILABLE, "the watchdog is shutting down".into());
        }
        match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
            Some(Ok(frame)) => {
                this.bytes += frame.data_ref().map_or(0, |d| d.len() as u64);
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                let error = one_line(&e);
                log::info!("Upstream HTTP response error after {} bytes: {error}", this.bytes);
                this.cut(StatusCode::BAD_GATEWAY, error)
            }
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

impl Drop for Relay {
    fn drop(&mut self) {
        self.link.end();
        self.log.write(self.status, self.bytes, self.start.elapsed());
    }
}

/// Copies bytes both ways between the client and the function once both sides have switched
/// protocols, until either side closes, the request's limit passes or the watchdog stops waiting
/// (the drain deadline). The tunnel holds its request's admission for its whole life.
async fn tunnel_between(
    client: OnUpgrade,
    upstream: OnUpgrade,
    limit: Option<(tokio::time::Instant, Limit)>,
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
        limit = expired(limit) => log::info!("WebSocket closed: {limit} passed"),
        () = cancel.cancelled() => log::info!("WebSocket closed: the watchdog is shutting down"),
    }
}
