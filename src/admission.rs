//! Admitting a function request, and writing it down when it is done: its `max_inflight` slot
//! (at once, or after a wait in the `max_queue` queue, or a 429), its place in
//! `http_requests_in_flight` and in the drain, and its line in the request metrics.
//!
//! What an admitted request holds is one [`Admission`]. The server keeps one clone until the
//! response is complete; a mode keeps another for as long as something the request started still
//! lives (a function not yet reaped, a WebSocket tunnel). It is released with the last clone, so
//! the slot, the gauge and the function's life are one.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper::{Method, Response, StatusCode};

use crate::answers;
use crate::body::{Body, Cut};
use crate::limiter::{Limiter, NoSlot, Slot};
use crate::metrics::{InFlight, Metrics};
use crate::shutdown::{Cancel, Drain, DrainGuard};

/// Where function requests are admitted.
pub struct Gate {
    limiter: Arc<Limiter>,
    metrics: Arc<Metrics>,
    drain: Arc<Drain>,
}

/// What an admitted request holds (see the module's doc); empty for requests that are not
/// admitted through the [`Gate`] (the function call behind `/_/ready`).
#[derive(Clone, Default)]
pub struct Admission {
    /// Released with the last clone.
    _held: Option<Arc<Held>>,
}

struct Held {
    _slot: Slot,
    _in_flight: InFlight,
    _drain: DrainGuard,
}

/// A request the [`Gate`] did not admit.
pub struct Refused {
    entry: Entry,
    why: Why,
}

enum Why {
    /// `max_inflight` requests run and the queue is full, or the wait passed the time limit.
    TooMany(usize),
    /// The hard stop at shutdown came while the request waited.
    ShuttingDown,
}

impl Refused {
    /// The 429 (503 at the hard stop), written to the metrics.
    pub fn answer(self) -> Response<Body> {
        let answer = match self.why {
            Why::TooMany(max) => answers::too_many_requests(max),
            Why::ShuttingDown => answers::shutting_down(),
        };
        self.entry.finish(answer, Admission::default())
    }
}

/// A function request on its way to the metrics: written when its response is complete.
pub struct Entry {
    metrics: Arc<Metrics>,
    method: Method,
    start: Instant,
}

impl Gate {
    pub fn new(limiter: Arc<Limiter>, metrics: Arc<Metrics>, drain: Arc<Drain>) -> Gate {
        Gate { limiter, metrics, drain }
    }

    /// Admits a request that arrived at `start`: at once while fewer than `max_inflight` run,
    /// else after waiting in the `max_queue` queue, no later than `deadline()` (asked only then).
    /// A waiting request is part of the drain already.
    pub async fn admit(
        &self,
        method: &Method,
        start: Instant,
        deadline: impl FnOnce() -> Option<tokio::time::Instant>,
        cancel: &Cancel,
    ) -> Result<(Admission, Entry), Refused> {
        let entry = self.entry(method, start);
        let drain = self.drain.enter();
        let acquired = tokio::select! {
            // A free slot is taken without a look at the shutdown, which all requests share.
            biased;
            acquired = self.limiter.acquire(deadline, || self.metrics.queued()) => acquired,
            () = cancel.cancelled() => return Err(Refused { entry, why: Why::ShuttingDown }),
        };
        match acquired {
            Ok(slot) => {
                let held = Held { _slot: slot, _in_flight: self.metrics.in_flight(), _drain: drain };
                Ok((Admission { _held: Some(Arc::new(held)) }, entry))
            }
            Err(why) => {
                if why == NoSlot::TimedOut {
                    log::debug!("left the max_queue queue: the request's time limit passed");
                }
                Err(Refused { entry, why: Why::TooMany(self.limiter.max()) })
            }
        }
    }

    /// A request answered without being admitted (its answer written to the metrics).
    pub fn refuse(&self, method: &Method, start: Instant, answer: Response<Body>) -> Response<Body> {
        self.entry(method, start).finish(answer, Admission::default())
    }

    fn entry(&self, method: &Method, start: Instant) -> Entry {
        Entry { metrics: Arc::clone(&self.metrics), method: method.clone(), start }
    }

    /// Whether a new request would get 429 now (every slot taken, the queue full).
    pub fn is_full(&self) -> bool {
        self.limiter.is_full()
    }
}

impl Entry {
    /// Writes a response with its whole body now; a streamed one when its body ends, with the
    /// status carried by its [`Cut`] if it failed. The server's clone of the admission is let go
    /// at the same moment (the mode may still hold its own).
    pub fn finish(self, response: Response<Body>, admission: Admission) -> Response<Body> {
        let code = response.status().as_u16();
        let (parts, body) = response.into_parts();
        let body = match body {
            Body::Full(bytes) => {
                self.write(code);
                drop(admission);
                Body::Full(bytes)
            }
            Body::Stream(stream) => Body::stream(Measured { body: stream, end: Some((self, code, admission)) }),
        };
        Response::from_parts(parts, body)
    }

    fn write(&self, code: u16) {
        self.metrics.observe(&self.method, code, self.start.elapsed());
    }
}

/// A streamed body whose request is written to the metrics when it ends, fails or is dropped.
struct Measured<B> {
    body: B,
    end: Option<(Entry, u16, Admission)>,
}

impl<B> Measured<B> {
    /// `cut`: the status of an answer that failed after its head went out.
    fn end(&mut self, cut: Option<StatusCode>) {
        if let Some((entry, code, admission)) = self.end.take() {
            entry.write(cut.map_or(code, |status| status.as_u16()));
            drop(admission);
        }
    }
}

impl<B> Drop for Measured<B> {
    fn drop(&mut self) {
        self.end(None);
    }
}

impl<B> HttpBody for Measured<B>
where
    B: HttpBody<Data = Bytes, Error = io::Error> + Unpin,
{
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.body).poll_frame(cx);
        match &poll {
            Poll::Ready(None) => this.end(None),
            Poll::Ready(Some(Err(e))) => this.end(Cut::status_of(e)),
            _ => {}
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
