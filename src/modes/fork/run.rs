//! One run of the function: the time limits and the hard stop race the exchange of bytes (which
//! the caller supplies: buffered or streamed), and however the run ends, what is left of the
//! function's process group is killed and its leader reaped before its stdin closes. A function
//! blocked reading an input that broke off must die, not see the input end and take it for whole.

use std::process::ExitStatus;

use tokio::time::Instant;

use crate::config::Config;
use crate::config::go_duration;
use crate::modes::BodyError;
use crate::process::{Child, describe};
use crate::shutdown::Cancel;

/// How the exchange of bytes ended.
#[derive(Debug)]
pub enum Ending {
    /// The function exited and its output ended.
    Exited,
    /// The watchdog stopped it: a time limit, or the hard stop at shutdown.
    Interrupted(Interrupted),
    /// The request body broke off or stalled.
    InputBroken(BodyError),
    /// The client went away.
    ClientGone,
    /// HEAD: the first output decided the status, and no body is sent.
    HeadAnswered,
    /// The output did not start with a valid CGI header block (`cgi_response`).
    InvalidHead(String),
    /// The output passed `max_response_body`.
    OutputTooLarge,
    /// Reading the output failed.
    OutputFailed(String),
}

/// Why the watchdog stopped a function before it finished by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupted {
    ExecTimeout,
    WriteTimeout,
    /// The hard stop at shutdown.
    Cancelled,
}

impl Interrupted {
    /// Resolves with the first interruption to come: the hard stop, else the earlier of `exec` and
    /// `write` (equal deadlines report `exec_timeout`), on one timer.
    async fn first(limits: &Limits) -> Interrupted {
        let (at, why) = match (limits.exec, limits.write) {
            (Some(exec), Some(write)) if write < exec => (Some(write), Interrupted::WriteTimeout),
            (None, Some(write)) => (Some(write), Interrupted::WriteTimeout),
            (exec, _) => (exec, Interrupted::ExecTimeout),
        };
        tokio::select! {
            biased;
            () = limits.cancel.cancelled() => Interrupted::Cancelled,
            () = sleep_until(at) => why,
        }
    }
}

/// Sleeps until `deadline`; without one, forever.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// How a run ended, with the leader's exit status (the SIGKILL's, when it was stopped).
pub struct Outcome {
    pub ending: Ending,
    pub status: ExitStatus,
}

impl Outcome {
    /// The error of a run that did not succeed (`exit status 3`, `signal: killed`); `None` when
    /// the function exited 0 by itself, or stopped after answering a HEAD.
    pub fn error(&self) -> Option<String> {
        match self.ending {
            Ending::Exited if self.status.success() => None,
            Ending::HeadAnswered => None,
            _ => Some(describe(self.status)),
        }
    }
}

/// What can stop a run before the function ends by itself.
pub struct Limits {
    /// `exec_timeout`, counted from the function's start.
    pub exec: Option<Instant>,
    /// `write_timeout`, counted from the request's arrival.
    pub write: Option<Instant>,
    /// The hard stop at shutdown.
    pub cancel: Cancel,
}

/// Runs `exchange` against `limits`, then ends the run: kills and reaps, then drops `stdin` (the
/// exchange closes it itself once the input is complete).
pub async fn run<S>(
    mut child: Child,
    mut stdin: S,
    limits: Limits,
    cfg: &Config,
    exchange: impl AsyncFnOnce(&Child, &mut S) -> Ending,
) -> Outcome {
    let ending = tokio::select! {
        biased;
        why = Interrupted::first(&limits) => Ending::Interrupted(why),
        ending = exchange(&child, &mut stdin) => ending,
    };
    match &ending {
        Ending::Exited | Ending::HeadAnswered => {}
        Ending::Interrupted(Interrupted::ExecTimeout) => log::info!("Killing process: {}", cfg.fprocess),
        Ending::Interrupted(Interrupted::WriteTimeout) => log::info!(
            "Killing process: {} - no response within write_timeout ({})",
            cfg.fprocess,
            go_duration(cfg.write_timeout.unwrap_or_default())
        ),
        Ending::Interrupted(Interrupted::Cancelled) => {
            log::info!("Killing process: {} - the watchdog is shutting down", cfg.fprocess)
        }
        Ending::InputBroken(e) => log::info!("Killing process: {} - {e}", cfg.fprocess),
        Ending::ClientGone => log::info!("Killing process: {} - the client went away", cfg.fprocess),
        Ending::InvalidHead(_) => log::info!("Killing process: {} - its CGI header block was refused", cfg.fprocess),
        Ending::OutputTooLarge => log::info!("Killing process: {} - its output passed max_response_body", cfg.fprocess),
        Ending::OutputFailed(e) => log::info!("Killing process: {} - reading its output failed: {e}", cfg.fprocess),
    }
    // An exited leader is reaped at once; reaping kills whatever it left running in its group.
    let status = match ending {
        Ending::Exited => child.reap(),
        _ => child.kill().await,
    };
    drop(stdin);
    Outcome { ending, status }
}
