//! The arm64 release binary (`make dist-arm64`: dist/fwatchdog-arm64), smoke-tested on this
//! machine under qemu-aarch64-static (Debian's qemu-user-static): it is a static aarch64 binary,
//! and it serves a classic and a streaming echo and /_/health, and exits 0 on SIGTERM. The functions
//! it starts are the host's own programs, which the kernel runs natively.
//! Needs qemu-user-static and gcc-aarch64-linux-gnu (.ci/run installs both); elsewhere it is
//! skipped with a line saying so.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::tools::{self, EM_AARCH64};
use common::*;

/// The binary, built by make if missing or older than the sources; None (after saying so, or
/// failing in CI) where the tools are missing.
fn arm64_binary() -> Option<PathBuf> {
    const UNTESTED: &str = "the arm64 binary under qemu (tests/arm64.rs)";
    for (tool, package) in [
        ("qemu-aarch64-static", "qemu-user-static"),
        ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
        ("make", "make"),
    ] {
        if tools::on_path(tool).is_none() {
            tools::missing(&format!("{tool} (apt-get install {package})"), UNTESTED);
            return None;
        }
    }
    tools::make(&["dist-arm64"], &[]);
    Some(tools::repo_root().join("dist/fwatchdog-arm64"))
}

fn under_qemu(binary: &Path, env: &[(&str, &str)]) -> Watchdog {
    let mut options = Options::new(env);
    options.wrapper = vec!["qemu-aarch64-static".into()];
    options.binary = Some(binary.to_path_buf());
    Watchdog::start_with(options)
}

#[test]
fn arm64_binary_is_static_and_serves_under_qemu() {
    let Some(binary) = arm64_binary() else { return };
    let elf = tools::elf(&binary).expect("read dist/fwatchdog-arm64");
    assert_eq!(elf, tools::Elf { machine: EM_AARCH64, is_static: true }, "dist/fwatchdog-arm64");
    let checksum =
        std::fs::read_to_string(tools::repo_root().join("dist/fwatchdog-arm64.sha256")).expect("read .sha256");
    assert!(checksum.ends_with("  fwatchdog-arm64\n"), "sha256sum -c format: {checksum:?}");

    let mut classic = under_qemu(&binary, &[("fprocess", "cat"), ("healthcheck_interval", "0")]);
    let health = classic.get("/_/health");
    assert_eq!((health.status, health.text().as_str()), (200, "OK"));
    let r = classic.post("/", b"hello from arm64");
    assert_eq!((r.status, r.text().as_str()), (200, "hello from arm64"), "log:\n{}", classic.logs());
    assert!(classic.lock_path().exists());

    let streaming = under_qemu(&binary, &[("mode", "streaming"), ("fprocess", "cat")]);
    let body = vec![b'x'; 200_000];
    let r = streaming.post("/", &body);
    assert_eq!(r.status, 200, "log:\n{}", streaming.logs());
    assert!(r.is_chunked(), "streamed: {:?}", r.headers);
    assert!(r.body == body, "echoed {} of {} bytes", r.body.len(), body.len());

    // qemu passes the signal on to the emulated program and exits with its status.
    classic.signal(libc::SIGTERM);
    let status = classic.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "log:\n{}", classic.logs());
    assert!(!classic.lock_path().exists(), "the lock file is removed on SIGTERM");
    assert!(classic.logs().contains("SIGTERM"), "log:\n{}", classic.logs());
}
