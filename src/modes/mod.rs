//! The modes: how a request for the function becomes a response. Each mode implements [`Mode`]
//! and knows nothing about the others; the HTTP front (`server`) owns routing, health, limits and
//! metrics and hands every function request to the configured mode.

mod classic;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};

use crate::body::{Body, RequestBody};
use crate::config::{Config, Mode as ModeName};
use crate::shutdown::Cancel;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What every mode implements.
pub trait Mode: Send + Sync + 'static {
    /// Answers one request for the function.
    fn call(self: Arc<Self>, req: Request<RequestBody>, ctx: Ctx) -> BoxFuture<Response<Body>>;

    /// Resolves if the mode can no longer serve (the http mode's server died); the watchdog then
    /// exits with the returned code. Default: never.
    fn failed(&self) -> BoxFuture<i32> {
        Box::pin(std::future::pending())
    }

    /// Called once after the drain, before the watchdog exits: stop what the mode started.
    fn stop(&self) -> BoxFuture<()> {
        Box::pin(async {})
    }
}

/// Per-request context from the HTTP front.
#[derive(Clone)]
pub struct Ctx {
    /// When the request's headers had been read.
    pub start: Instant,
    /// Set when the watchdog stops waiting for in-flight requests: answer now and kill the function.
    pub cancel: Cancel,
}

impl Ctx {
    /// The instant `limit` after the request started, if there is a limit.
    pub fn deadline(&self, limit: Option<Duration>) -> Option<tokio::time::Instant> {
        limit.map(|l| tokio::time::Instant::from_std(self.start + l))
    }
}

/// Builds the configured mode (in http mode this starts the function and waits until it listens).
pub async fn start(cfg: &Arc<Config>) -> Result<Arc<dyn Mode>, String> {
    match cfg.mode {
        ModeName::Classic => Ok(Arc::new(classic::Classic::new(Arc::clone(cfg)))),
        other => Err(format!("mode: {} is not implemented yet", other.name())),
    }
}

/// A plain-text response, the shape of every error the watchdog itself produces.
pub fn text(status: StatusCode, body: impl Into<Body>) -> Response<Body> {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// A response with no body and no Content-Type.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

/// Why a request body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// `read_timeout` passed before the body was complete.
    Timeout,
    /// The client sent a broken body or went away.
    Broken(hyper::Error),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Timeout => f.write_str("i/o timeout: the request body was not received within read_timeout"),
            BodyError::Broken(e) => write!(f, "reading the request body: {e}"),
        }
    }
}

/// Reads the whole request body, giving up at `deadline`.
pub async fn read_body(body: RequestBody, deadline: Option<tokio::time::Instant>) -> Result<Bytes, BodyError> {
    let collect = body.collect();
    let collected = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, collect).await.map_err(|_| BodyError::Timeout)?,
        None => collect.await,
    };
    collected.map(|c| c.to_bytes()).map_err(BodyError::Broken)
}
