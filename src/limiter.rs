//! `max_inflight`: at most N requests run the function at once; the next one gets 429.
//! A slot is a guard, so it is returned on every path: errors, panics, client disconnects.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Limiter {
    max: usize,
    running: AtomicUsize,
}

/// One admitted request; dropping it frees the slot.
pub struct Slot(Option<Arc<Limiter>>);

impl Limiter {
    /// `max = 0` admits everything.
    pub fn new(max: usize) -> Arc<Limiter> {
        Arc::new(Limiter { max, running: AtomicUsize::new(0) })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        if self.max == 0 {
            return Some(Slot(None));
        }
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .ok()
            .map(|_| Slot(Some(Arc::clone(self))))
    }

    pub fn is_full(&self) -> bool {
        self.max > 0 && self.running.load(Ordering::Acquire) >= self.max
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(limiter) = &self.0 {
            limiter.running.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Limiter;

    #[test]
    fn slots_are_returned_on_drop() {
        let limiter = Limiter::new(2);
        let a = limiter.try_acquire().unwrap();
        let _b = limiter.try_acquire().unwrap();
        assert!(limiter.is_full());
        assert!(limiter.try_acquire().is_none());
        drop(a);
        assert!(limiter.try_acquire().is_some());
    }

    #[test]
    fn zero_is_unlimited() {
        let limiter = Limiter::new(0);
        let slots: Vec<_> = (0..100).map(|_| limiter.try_acquire().unwrap()).collect();
        assert!(!limiter.is_full());
        drop(slots);
    }
}
