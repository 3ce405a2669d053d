//! `max_inflight` and `max_queue`: at most N requests run the function at once; up to `max_queue`
//! more wait for a slot, first come first served; the next one gets 429. A slot is a guard, so it
//! is returned on every path: errors, panics, client disconnects. So is a place in the queue: a
//! request whose wait ends (its time limit passed, its client went away) leaves it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Limiter {
    max: usize,
    /// `max` permits; `None` for no limit.
    slots: Option<Arc<Semaphore>>,
    max_queue: usize,
    queued: AtomicUsize,
}

/// One admitted request; dropping it frees the slot.
pub struct Slot(#[allow(dead_code, reason = "held for its Drop")] Option<OwnedSemaphorePermit>);

/// Why no slot was had.
#[derive(Debug, PartialEq, Eq)]
pub enum NoSlot {
    /// Every slot is taken and the queue is full (or there is none).
    Full,
    /// The request waited until its time limit passed.
    TimedOut,
}

impl Limiter {
    /// `max = 0` admits everything (and `max_queue` is moot).
    pub fn new(max: usize, max_queue: usize) -> Arc<Limiter> {
        let slots = (max > 0).then(|| Arc::new(Semaphore::new(max)));
        Arc::new(Limiter { max, slots, max_queue, queued: AtomicUsize::new(0) })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// A slot now, or after waiting in the queue until `deadline`. Semaphore permits go to waiters
    /// in the order they came, so the queue is first come, first served. `queued` is called when
    /// the request joins the queue; what it returns is dropped when it leaves (for the metrics).
    pub async fn acquire<G>(
        &self,
        deadline: impl FnOnce() -> Option<tokio::time::Instant>,
        queued: impl FnOnce() -> G,
    ) -> Result<Slot, NoSlot> {
        let Some(slots) = &self.slots else { return Ok(Slot(None)) };
        if let Ok(permit) = Arc::clone(slots).try_acquire_owned() {
            return Ok(Slot(Some(permit)));
        }
        let _place = self.join_queue().ok_or(NoSlot::Full)?;
        let _queued = queued();
        let acquire = Arc::clone(slots).acquire_owned();
        let permit = match deadline() {
            Some(deadline) => tokio::time::timeout_at(deadline, acquire).await.map_err(|_| NoSlot::TimedOut)?,
            None => acquire.await,
        };
        // The semaphore is never closed: a permit is the only outcome.
        permit.map(|permit| Slot(Some(permit))).map_err(|_| NoSlot::Full)
    }

    fn join_queue(&self) -> Option<QueuePlace<'_>> {
        let max = self.max_queue;
        self.queued.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(QueuePlace(self))
    }

    /// Requests waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Whether a new request would get 429 now: every slot taken and the queue full.
    pub fn is_full(&self) -> bool {
        self.slots.as_ref().is_some_and(|slots| slots.available_permits() == 0) && self.queued() >= self.max_queue
    }
}

/// A place in the queue; dropping it leaves the queue.
struct QueuePlace<'a>(&'a Limiter);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
    }

    #[test]
    fn slots_are_returned_on_drop() {
        runtime().block_on(async {
            let limiter = Limiter::new(2, 0);
            let a = limiter.acquire(|| None, || ()).await;
            let b = limiter.acquire(|| None, || ()).await;
            assert!(a.is_ok() && b.is_ok() && limiter.is_full());
            assert_eq!(limiter.acquire(|| None, || ()).await.err(), Some(NoSlot::Full));
            drop(a);
            assert!(limiter.acquire(|| None, || ()).await.is_ok());
        });
    }

    #[test]
    fn zero_is_unlimited() {
        runtime().block_on(async {
            let limiter = Limiter::new(0, 5);
            let mut slots = Vec::new();
            for _ in 0..100 {
                slots.push(limiter.acquire(|| None, || ()).await.unwrap());
            }
            assert!(!limiter.is_full());
        });
    }

    #[test]
    fn the_queue_is_first_come_first_served_and_bounded() {
        runtime().block_on(async {
            let limiter = Limiter::new(1, 2);
            let held = limiter.acquire(|| None, || ()).await;
            let first = tokio::spawn({
                let limiter = Arc::clone(&limiter);
                async move { limiter.acquire(|| None, || ()).await.map(|_| 1) }
            });
            tokio::task::yield_now().await;
            let second = tokio::spawn({
                let limiter = Arc::clone(&limiter);
                async move { limiter.acquire(|| None, || ()).await.map(|_| 2) }
            });
            tokio::task::yield_now().await;
            assert_eq!(limiter.queued(), 2);
            assert!(limiter.is_full(), "every slot taken and the queue full");
            assert_eq!(limiter.acquire(|| None, || ()).await.err(), Some(NoSlot::Full));
            drop(held);
            assert_eq!(first.await.unwrap(), Ok(1), "the first to wait is the first served");
            assert_eq!(second.await.unwrap(), Ok(2));
            assert_eq!(limiter.queued(), 0);
        });
    }

    #[test]
    fn a_wait_ends_at_its_deadline_and_leaves_the_queue() {
        runtime().block_on(async {
            let limiter = Limiter::new(1, 1);
            let _held = limiter.acquire(|| None, || ()).await;
            let deadline = tokio::time::Instant::now() + Duration::from_millis(20);
            let joined = std::cell::Cell::new(false);
            let result = limiter.acquire(|| Some(deadline), || joined.set(true)).await;
            assert_eq!(result.err(), Some(NoSlot::TimedOut));
            assert!(joined.get());
            assert_eq!(limiter.queued(), 0);
        });
    }
}
