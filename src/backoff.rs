//! Waiting between tries of something that failed or is not ready yet: a pause that starts short
//! and doubles up to a ceiling, and is short again after a success. The accept loops (after an
//! accept error: out of descriptors, most often), the exit poll of a child without a pidfd, and the
//! wait for the http-mode function to listen all wait this way.

use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Pauses from `min`, doubling up to `max`.
    pub const fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max, next: min }
    }

    /// The pause to take now; the next one is twice as long, up to the ceiling.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = pause.saturating_mul(2).min(self.max);
        pause
    }

    /// Sleeps for [`Backoff::next_pause`].
    pub async fn sleep(&mut self) {
        tokio::time::sleep(self.next_pause()).await;
    }

    /// After a success: the next pause is the shortest again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling_and_starts_again_after_a_reset() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(5), ms(500));
        let pauses: Vec<_> = (0..9).map(|_| backoff.next_pause()).collect();
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 320, 500, 500].map(ms));
        backoff.reset();
        assert_eq!(backoff.next_pause(), ms(5));
        let mut fixed = Backoff::new(ms(50), ms(50));
        assert_eq!([fixed.next_pause(), fixed.next_pause()], [ms(50); 2]);
    }
}
