//! The body types that cross the HTTP front: what a mode receives and what it answers with, and
//! [`Cut`], how a streamed answer that fails after its head went out says what it would have been.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::{Response, StatusCode};

use crate::answers;

/// A response body: bytes known up front (no allocation beyond the bytes), or a stream.
pub enum Body {
    Full(Option<Bytes>),
    Stream(UnsyncBoxBody<Bytes, io::Error>),
}

impl Body {
    pub fn empty() -> Body {
        Body::Full(None)
    }

    pub fn stream<B>(body: B) -> Body
    where
        B: HttpBody<Data = Bytes, Error = io::Error> + Send + 'static,
    {
        Body::Stream(UnsyncBoxBody::new(body))
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Body {
        Body::Full((!bytes.is_empty()).then_some(bytes))
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Body {
        Body::from(Bytes::from(bytes))
    }
}

impl From<String> for Body {
    fn from(text: String) -> Body {
        Body::from(Bytes::from(text))
    }
}

impl From<&'static str> for Body {
    fn from(text: &'static str) -> Body {
        Body::from(Bytes::from_static(text.as_bytes()))
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(bytes) => bytes.is_none(),
            Body::Stream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Stream(body) => body.size_hint(),
        }
    }
}

/// The error a streamed response body fails with when the answer goes wrong after its head was
/// sent: hyper then ends the connection without the end of the body (no last chunk, or fewer bytes
/// than the Content-Length), so that no client takes a cut answer for a complete one. It carries
/// the status the answer would have had, for the metrics.
#[derive(Debug)]
pub struct Cut {
    pub status: StatusCode,
    reason: String,
}

impl Cut {
    pub fn error(status: StatusCode, reason: impl Into<String>) -> io::Error {
        io::Error::other(Cut { status, reason: reason.into() })
    }

    /// The status carried by a body's error, if it is a [`Cut`].
    pub fn status_of(error: &io::Error) -> Option<StatusCode> {
        error.get_ref()?.downcast_ref::<Cut>().map(|cut| cut.status)
    }
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "response cut ({}): {}", self.status.as_u16(), self.reason)
    }
}

impl std::error::Error for Cut {}

/// Why a request body could not be taken.
#[derive(Debug)]
pub enum BodyError {
    /// `read_timeout` passed before the body was complete.
    Timeout,
    /// The client sent a broken body or went away.
    Broken(hyper::Error),
    /// The body passed `max_request_body` (this many bytes).
    TooLarge(u64),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Timeout => f.write_str("i/o timeout: the request body was not received within read_timeout"),
            BodyError::Broken(e) => write!(f, "reading the request body: {e}"),
            BodyError::TooLarge(limit) => write!(f, "the request body is larger than max_request_body ({limit} bytes)"),
        }
    }
}

impl BodyError {
    /// The answer to a request whose body could not be taken: 413 for one that is too large, else
    /// 400; the connection is closed after it.
    pub fn answer(&self) -> Response<Body> {
        match self {
            BodyError::TooLarge(limit) => answers::payload_too_large(*limit),
            _ => answers::bad_request(self),
        }
    }

    /// The status of [`BodyError::answer`].
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// A request body: from the wire (no more than `limit` bytes of it), or none (for requests the
/// watchdog makes up, such as the function call behind `/_/ready`).
pub enum RequestBody {
    Wire { body: Incoming, limit: Option<u64>, taken: u64 },
    Empty,
}

impl RequestBody {
    pub fn wire(body: Incoming, limit: Option<u64>) -> RequestBody {
        RequestBody::Wire { body, limit, taken: 0 }
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let RequestBody::Wire { body, limit, taken } = self.get_mut() else { return Poll::Ready(None) };
        let frame = match ready!(Pin::new(body).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(BodyError::Broken(e)))),
            None => return Poll::Ready(None),
        };
        *taken += frame.data_ref().map_or(0, |data| data.len() as u64);
        match limit {
            Some(limit) if *taken > *limit => Poll::Ready(Some(Err(BodyError::TooLarge(*limit)))),
            _ => Poll::Ready(Some(Ok(frame))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Wire { body, .. } => body.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Wire { body, .. } => body.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}
