//! fwatchdog: turns any UNIX program into an HTTP function. A drop-in replacement for the OpenFaaS
//! watchdogs; see README.md.
//!
//! `main` handles the command line, becomes a tiny init when it is PID 1, loads the configuration
//! and runs the server on a tokio runtime built by hand (after the PID-1 fork, never before).

mod admission;
mod answers;
mod backoff;
mod body;
mod cgi;
mod cgi_response;
mod config;
mod conn;
mod function_logs;
mod health;
mod init;
mod json_log;
mod limiter;
mod listener;
mod logging;
mod marshal;
mod metrics;
mod modes;
mod path;
mod process;
mod server;
mod shutdown;
mod sys;
mod words;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use config::Config;

/// musl's own allocator maps and unmaps memory on every request; see .cargo/config.toml.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const SHA: &str = match option_env!("FWATCHDOG_SHA") {
    Some(sha) => sha,
    None => "unknown",
};

fn main() -> ExitCode {
    // Go's flag package accepts one or two dashes; so do we.
    match std::env::args().nth(1).as_deref().map(|a| a.trim_start_matches('-')) {
        None => {}
        Some("version") => {
            eprintln!("Version: {VERSION}\tSHA: {SHA}");
            return ExitCode::SUCCESS;
        }
        Some("run-healthcheck") => return healthcheck(),
        Some("help" | "h") => {
            print!("{}", usage());
            return ExitCode::SUCCESS;
        }
        Some(_) => {
            eprint!("flag provided but not defined: {}\n{}", std::env::args().nth(1).unwrap_or_default(), usage());
            return ExitCode::from(2);
        }
    }

    sys::open_standard_streams();
    // Before the first line: the init's own, the start's and a start error are in the format too.
    logging::set_format(config::log_format());
    init::split_if_pid1();
    logging::init(config::log_filter());
    log::info!("Version: {VERSION}\tSHA: {SHA}");
    let code = serve();
    // A log that nobody reads must not keep the watchdog from exiting.
    logging::flush(LOG_FLUSH_LIMIT);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// How long the exit waits for the log to be written out.
const LOG_FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// Loads the configuration and runs the server; returns the exit code.
fn serve() -> i32 {
    let cfg = match Config::from_env() {
        Ok(loaded) => {
            if !loaded.unused.is_empty() {
                log::warn!(
                    "Warning: mode={} does not use {}; ignoring them",
                    loaded.config.mode.name(),
                    loaded.unused.join(", ")
                );
            }
            loaded.config
        }
        Err(e) => {
            log::error!("{e}");
            return 2;
        }
    };
    raise_fd_limit();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            log::error!("cannot start the runtime: {e}");
            return 1;
        }
    };
    let code = runtime.block_on(server::run(Arc::new(cfg)));
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

/// `--run-healthcheck`: exit 0 iff the lock file exists. Needs no other configuration, so it works
/// as a Docker `HEALTHCHECK` in images without a shell.
fn healthcheck() -> ExitCode {
    if health::lock_exists(&config::lock_path_from_env()) {
        ExitCode::SUCCESS
    } else {
        eprintln!("unable to find lock file.");
        ExitCode::FAILURE
    }
}

/// `--help`: every variable with its default in the mode `mode` names (classic if unset).
fn usage() -> String {
    let mode = config::help_mode();
    let mut text = format!(
        "Usage: fwatchdog [--version | --run-healthcheck | --help]\n\n\
         Runs fprocess for every HTTP request: the body on its STDIN, its STDOUT as the response.\n\
         Configured by environment variables; defaults for mode={} (\"-\": not used in this mode):\n\n",
        mode.name()
    );
    for var in config::vars::VARS {
        let default = var.default_text(mode);
        text.push_str(&format!("  {:<22} {default:<22} {}\n", var.name, var.help));
        for alias in var.aliases {
            text.push_str(&format!("  {alias:<22} {default:<22} alias of {}; wins when both are set\n", var.name));
        }
    }
    text
}

/// Rust, unlike Go, leaves the soft limit on open files low; every connection and pipe needs one.
/// Functions get the original limit back, as Go gives its children: a program may rely on it
/// (`select()` breaks above 1024 descriptors) or size tables by it.
fn raise_fd_limit() {
    let Ok(limit) = sys::nofile_limit() else { return };
    if limit.rlim_cur >= limit.rlim_max {
        return;
    }
    match sys::set_nofile_limit(&libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max }) {
        Ok(()) => process::give_children_fd_limit(limit),
        Err(e) => log::warn!("cannot raise the open files limit to {}: {e}", limit.rlim_max),
    }
}
