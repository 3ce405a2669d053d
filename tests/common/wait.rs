//! Polling with a deadline: how the tests wait for anything (a log line, a process, a gauge), never
//! with a sleep of a guessed length.

use std::time::{Duration, Instant};

/// How often [`wait_for`] checks: often enough that a test waits hardly longer than it must.
pub const PACE: Duration = Duration::from_millis(5);

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
    wait_for_paced(limit, PACE, what, check)
}

/// [`wait_for`], checking every `pace`: for checks that cost something themselves (a docker CLI
/// run, a query to another server).
pub fn wait_for_paced<T>(limit: Duration, pace: Duration, what: &str, check: impl FnMut() -> Option<T>) -> T {
    poll(limit, pace, check).unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

/// Polls `check` every `pace` until it returns `Some`, or returns `None` after `limit`: for a
/// caller that has more to say when time is up, or something to clean up first.
pub fn poll<T>(limit: Duration, pace: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(pace);
    }
}
