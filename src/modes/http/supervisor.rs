//! The function's own HTTP server as a long-running child: started once, its stdout and stderr sent
//! to the log, watched until it exits, and stopped with SIGTERM only after the watchdog has drained
//! (SIGKILL after [`STOP_GRACE`]).

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};

use crate::backoff::Backoff;
use crate::config::{Config, go_duration};
use crate::function_logs::Stream;
use crate::modes::log_output;
use crate::process::{self, Child, Env, Program, Spec, Stderr};

/// How long the function has between SIGTERM and SIGKILL when the watchdog stops. Fixed: the
/// drain before it already took `healthcheck_interval` and up to `write_timeout`, and ten seconds
/// is enough for a server to close its listeners and flush its logs.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// How the child ended.
#[derive(Clone, Copy)]
pub struct Exit {
    pub status: ExitStatus,
    /// It ended because the watchdog stopped it.
    pub stopped: bool,
}

/// The handle on the running child; the task in [`supervise`] owns the process itself.
pub struct Supervisor {
    exit: watch::Receiver<Option<Exit>>,
    stop: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

impl Supervisor {
    /// Starts `fprocess` in its own process group. Its stdin is a pipe that stays open and is
    /// never written (as in of-watchdog: some servers exit on EOF).
    pub fn spawn(cfg: &Config) -> Result<Supervisor, String> {
        let (program, args) = cfg.argv.split_first().map_or(("", &[][..]), |(p, a)| (p.as_str(), a));
        log::info!("Forking: {program}, arguments: {args:?}");
        let mut child =
            Child::spawn(&Spec { program: &Program::new(&cfg.argv), env: &Env::default(), stderr: Stderr::Piped })
                .map_err(|e| format!("fprocess: cannot start {:?}: {e}", cfg.fprocess))?;
        log_output(child.stdout.take(), Stream::Stdout, cfg);
        log_output(child.stderr.take(), Stream::Stderr, cfg);
        let (exit_tx, exit) = watch::channel(None);
        let (stop_tx, stop) = oneshot::channel();
        tokio::spawn(supervise(child, stop, exit_tx));
        Ok(Supervisor { exit, stop: std::sync::Mutex::new(Some(stop_tx)) })
    }

    /// Resolves when the child has exited, however that came about.
    pub fn exited(&self) -> impl Future<Output = Exit> + Send + 'static {
        let mut exit = self.exit.clone();
        async move {
            match exit.wait_for(Option::is_some).await.ok().and_then(|exit| *exit) {
                Some(exit) => exit,
                // The supervising task is gone only when the runtime shuts down.
                None => std::future::pending().await,
            }
        }
    }

    /// Asks the child to stop (SIGTERM, then SIGKILL after [`STOP_GRACE`]) and waits until it
    /// has been reaped.
    pub fn stop(&self) -> impl Future<Output = ()> + Send + 'static {
        let sender = self.stop.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(sender) = sender {
            let _ = sender.send(());
        }
        let exited = self.exited();
        async move {
            exited.await;
        }
    }
}

/// Owns the child until it is reaped; reports how it ended through `exit`.
async fn supervise(mut child: Child, stop: oneshot::Receiver<()>, exit: watch::Sender<Option<Exit>>) {
    // A dropped sender (the mode is gone) also means stop.
    let stopped = tokio::select! {
        () = child.exited() => false,
        _ = stop => true,
    };
    if stopped {
        child.signal_group(libc::SIGTERM);
        if tokio::time::timeout(STOP_GRACE, child.exited()).await.is_err() {
            log::info!("Function still running {} after SIGTERM: killing it", go_duration(STOP_GRACE));
            child.kill_group();
        }
    }
    // Reaping also kills whatever the function left running in its group.
    let status = child.wait().await;
    if stopped {
        log::info!("Function stopped: {}", process::describe(status));
    } else {
        log::error!("Forked function has terminated: {}", process::describe(status));
    }
    exit.send_replace(Some(Exit { status, stopped }));
}

/// The watchdog's exit code when the function died by itself: never 0, since the watchdog can no
/// longer serve; the function's own code when it has one, 128 + signal when it was killed.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) | (None, None) => 1,
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
    }
}

/// Waits until `host:port` accepts TCP connections.
pub async fn wait_listening(host: String, port: u16) {
    let start = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(5), Duration::from_millis(100));
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect((host.as_str(), port)));
        if let Ok(Ok(_)) = attempt.await {
            log::info!("Function accepts connections after {:.3}s", start.elapsed().as_secs_f64());
            return;
        }
        backoff.sleep().await;
    }
}

#[cfg(test)]
mod tests {
    use super::exit_code;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    #[test]
    fn exit_codes_are_never_zero() {
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 1);
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 128 + libc::SIGKILL);
    }
}
