//! Signals and cancellation: which signal asks the watchdog to stop, which are passed on to the
//! running functions, the [`Cancel`] flag that tells in-flight requests to give up, and the
//! [`Drain`] that counts what the watchdog waits for before it exits.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::Notify;

use crate::process;

/// A one-way flag that in-flight requests can wait on.
#[derive(Clone, Default)]
pub struct Cancel(Arc<CancelInner>);

#[derive(Default)]
struct CancelInner {
    set: AtomicBool,
    notify: Notify,
}

impl Cancel {
    pub fn cancel(&self) {
        self.0.set.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Whether [`Cancel::cancel`] has been called: one atomic load, for a check on every frame.
    pub fn is_cancelled(&self) -> bool {
        self.0.set.load(Ordering::SeqCst)
    }

    /// Resolves once [`Cancel::cancel`] has been called.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.0.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// A request to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: the orchestrator scales down; wait `healthcheck_interval` so it notices.
    Term,
    /// SIGINT: Ctrl-C while debugging; drain without the wait.
    Int,
}

impl Stop {
    pub fn name(self) -> &'static str {
        match self {
            Stop::Term => "SIGTERM",
            Stop::Int => "SIGINT",
        }
    }
}

/// The signals the watchdog handles.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr1: Signal,
    usr2: Signal,
    quit: Signal,
}

impl Signals {
    pub fn install() -> io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// Waits for SIGTERM or SIGINT. Meanwhile SIGHUP, SIGUSR1, SIGUSR2 and SIGQUIT are passed on to
    /// the process group of every running function (as tini does) and do not stop the watchdog.
    pub async fn next_stop(&mut self) -> Stop {
        loop {
            let forward = tokio::select! {
                _ = self.term.recv() => return Stop::Term,
                _ = self.int.recv() => return Stop::Int,
                _ = self.hup.recv() => libc::SIGHUP,
                _ = self.usr1.recv() => libc::SIGUSR1,
                _ = self.usr2.recv() => libc::SIGUSR2,
                _ = self.quit.recv() => libc::SIGQUIT,
            };
            process::signal_all(forward);
        }
    }
}

/// What the drain waits for: open connections, and admitted requests (which may outlive their
/// connection: a function being reaped, a WebSocket tunnel).
pub struct Drain {
    count: AtomicUsize,
    idle: Notify,
    closing: Cancel,
}

/// One open connection or admitted request; dropping it closes the books on it.
pub struct DrainGuard(Arc<Drain>);

impl Drain {
    pub fn new() -> Arc<Drain> {
        Arc::new(Drain { count: AtomicUsize::new(0), idle: Notify::new(), closing: Cancel::default() })
    }

    pub fn enter(self: &Arc<Self>) -> DrainGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        DrainGuard(Arc::clone(self))
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Asks every connection to finish its current request and close.
    pub fn close_all(&self) {
        self.closing.cancel();
    }

    /// Waits until nothing is left to drain; `false` if `limit` passed first.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let idle = async {
            loop {
                let notified = self.idle.notified();
                if self.count() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, idle).await.is_ok()
    }
}

impl DrainGuard {
    /// Resolves once the drain asks connections to close.
    pub async fn closing(&self) {
        self.0.closing.cancelled().await;
    }
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
