//! The answers the watchdog makes itself, as opposed to the function's own: one constructor each,
//! so that every mode says the same thing the same way.
//!
//! Those that stand in for the function's answer (the function was not asked, or was stopped)
//! carry `X-OpenFaaS-Internal`, as the Go watchdogs' 429 and their http mode's 500/504 do, so that
//! a caller such as a queue worker can tell them from the function's: `faas-middleware` on the 429
//! (its value in both Go watchdogs), `of-watchdog` on the others. A function that failed by itself
//! (the 500 with its error and output) and the health, readiness and static answers carry none.

use std::fmt::Display;

use hyper::header::{ALLOW, CONNECTION, CONTENT_TYPE, HeaderValue, LOCATION};
use hyper::{Response, StatusCode};

use crate::body::Body;
use crate::path;

const INTERNAL: &str = "x-openfaas-internal";

/// A plain-text answer.
fn text(status: StatusCode, body: impl Into<Body>) -> Response<Body> {
    let mut response = status_only(status);
    *response.body_mut() = body.into();
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// Marks an answer the watchdog gives in place of the function's.
fn internal(mut response: Response<Body>) -> Response<Body> {
    response.headers_mut().insert(INTERNAL, HeaderValue::from_static("of-watchdog"));
    response
}

/// A status and nothing else: the answers of `/_/ready`, 304, a function's empty 200.
pub fn status_only(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

/// `/_/health`: `200 OK`, or 503 with no body.
pub fn health(healthy: bool) -> Response<Body> {
    if healthy { text(StatusCode::OK, "OK") } else { status_only(StatusCode::SERVICE_UNAVAILABLE) }
}

/// 405, with the methods that are allowed when there is a short list of them.
pub fn method_not_allowed(allow: Option<&'static str>) -> Response<Body> {
    let mut response = status_only(StatusCode::METHOD_NOT_ALLOWED);
    if let Some(allow) = allow {
        response.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    }
    response
}

/// 301 to `location` (a path as sent, percent-encoded), with the request's query kept.
pub fn redirect(location: &str, query: Option<&str>) -> Response<Body> {
    let location = path::escape(location);
    let location = match query {
        Some(q) => format!("{location}?{q}"),
        None => location,
    };
    let mut response = status_only(StatusCode::MOVED_PERMANENTLY);
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

/// 429 while `max_inflight` requests are running: the faas-middleware limiter's answer.
pub fn too_many_requests(max: usize) -> Response<Body> {
    let mut response = text(
        StatusCode::TOO_MANY_REQUESTS,
        format!("Concurrent request limit exceeded. Max concurrent requests: {max}\n"),
    );
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(INTERNAL, HeaderValue::from_static("faas-middleware"));
    response
}

/// Go's answer to a request head it refuses (a bad `Host`, say): `400 Bad Request: <why>`, and the
/// connection closed.
pub fn malformed_head(why: &str) -> Response<Body> {
    let mut response = text(StatusCode::BAD_REQUEST, format!("400 Bad Request: {why}"));
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// 400 for a request whose body could not be read (or any request the function cannot be
/// given); the connection is closed after it.
pub fn bad_request(error: &dyn Display) -> Response<Body> {
    let mut response = internal(text(StatusCode::BAD_REQUEST, format!("{error}\n")));
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// 413 for a request body larger than `max_request_body`; the connection is closed after it, so
/// that the rest of the body is never read.
pub fn payload_too_large(limit: u64) -> Response<Body> {
    let mut response = internal(text(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("The request body is larger than max_request_body ({limit} bytes).\n"),
    ));
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// 408 `Killed process.`: the classic watchdog's answer to `exec_timeout`.
pub fn request_timeout() -> Response<Body> {
    internal(text(StatusCode::REQUEST_TIMEOUT, "Killed process.\n"))
}

/// 500 for a function that failed (exited non-zero, was killed, could not start): the error,
/// then whatever it wrote.
pub fn function_failed(error: &str, output: &[u8]) -> Response<Body> {
    let mut body = Vec::with_capacity(error.len() + 1 + output.len());
    body.extend_from_slice(error.as_bytes());
    body.push(b'\n');
    body.extend_from_slice(output);
    text(StatusCode::INTERNAL_SERVER_ERROR, body)
}

/// 500 when the function's output passed `max_response_body` (it was killed).
pub fn output_too_large(limit: u64) -> Response<Body> {
    internal(text(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("The function's output passed max_response_body ({limit} bytes); it was killed.\n"),
    ))
}

/// 500 when the watchdog lost track of the function's answer (a task that panicked).
pub fn output_lost() -> Response<Body> {
    internal(text(StatusCode::INTERNAL_SERVER_ERROR, "The function's output was lost.\n"))
}

/// 502 when the function's own server failed (http mode).
pub fn bad_gateway(why: &str) -> Response<Body> {
    internal(text(StatusCode::BAD_GATEWAY, format!("Upstream HTTP request error: {why}\n")))
}

/// 502 when the function's CGI header block (`cgi_response`) is not valid.
pub fn invalid_cgi_head(why: &str) -> Response<Body> {
    internal(text(StatusCode::BAD_GATEWAY, format!("The function's CGI header block was refused: {why}\n")))
}

/// 504 when the function did not answer within `limit` (`write_timeout`, or in http mode
/// `exec_timeout` and `X-Timeout`); it was stopped.
pub fn gateway_timeout(limit: &dyn Display) -> Response<Body> {
    internal(text(
        StatusCode::GATEWAY_TIMEOUT,
        format!("The function did not answer within {limit}; it was stopped.\n"),
    ))
}

/// 503 for a request still running when the watchdog stops waiting at shutdown.
pub fn shutting_down() -> Response<Body> {
    internal(text(StatusCode::SERVICE_UNAVAILABLE, "The watchdog is shutting down; the request was stopped.\n"))
}

/// 500 when the watchdog itself failed (a task that panicked): Go's `http.Error` text.
pub fn internal_error() -> Response<Body> {
    text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")
}

/// Go's `http.NotFound`, for static mode.
pub fn not_found() -> Response<Body> {
    let mut response = text(StatusCode::NOT_FOUND, "404 page not found\n");
    response.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    response
}

/// The metrics endpoint's answer.
pub fn metrics(exposition: String) -> Response<Body> {
    let mut response = text(StatusCode::OK, exposition);
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}
