//! Health: the "accepting connections" flag and the lock file `$TMPDIR/.lock` that Docker
//! `HEALTHCHECK`s and `--run-healthcheck` look for.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

pub struct Health {
    accepting: AtomicBool,
    /// `None` with `suppress_lock=true`.
    lock: Option<PathBuf>,
}

impl Health {
    pub fn new(lock: Option<PathBuf>) -> Health {
        Health { accepting: AtomicBool::new(false), lock }
    }

    /// Writes the lock file (unless suppressed) and starts reporting healthy.
    pub fn write_lock_and_accept(&self) -> Result<(), String> {
        match &self.lock {
            Some(path) => {
                log::info!("Writing lock-file to: {}", path.display());
                std::fs::write(path, b"").map_err(|e| {
                    format!(
                        "Cannot write {}: {e}. Create the directory, point TMPDIR at a writable one, or set suppress_lock=true",
                        path.display()
                    )
                })?;
            }
            None => log::warn!(
                "Warning: \"suppress_lock\" is enabled. No automated health-checks will be in place for your function."
            ),
        }
        self.accepting.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Starts reporting unhealthy and removes the lock file. Called once, at the start of the
    /// shutdown.
    pub fn stop_accepting_and_remove_lock(&self) {
        self.accepting.store(false, Ordering::SeqCst);
        if let Some(path) = &self.lock {
            log::info!("Removing lock-file : {}", path.display());
            if let Err(e) = std::fs::remove_file(path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                log::error!("Unable to mark server as unhealthy: {e}");
            }
        }
    }

    fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    /// What `/_/health` reports: accepting and, unless suppressed, the lock file is present.
    pub fn is_healthy(&self) -> bool {
        self.is_accepting() && self.lock.as_deref().is_none_or(lock_exists)
    }
}

pub fn lock_exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}
