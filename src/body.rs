//! The body types that cross the HTTP front: what a mode receives and what it answers with, and
//! [`Cut`], how a streamed answer that fails after its head went out says what it would have been.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::StatusCode;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

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

/// A request body: from the wire, or none (for requests the watchdog makes up, such as the
/// function call behind `/_/ready`).
pub enum RequestBody {
    Wire(Incoming),
    Empty,
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            RequestBody::Wire(body) => Pin::new(body).poll_frame(cx),
            RequestBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Wire(body) => body.is_end_stream(),
            RequestBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Wire(body) => body.size_hint(),
            RequestBody::Empty => SizeHint::with_exact(0),
        }
    }
}
