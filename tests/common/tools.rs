//! External tools that some tests need (a Docker engine, qemu, a cross compiler, `setpriv`):
//! finding them, saying what a missing one leaves untested (skipped outside CI, a failure in CI),
//! and reading a binary's ELF header to tell what it was built for.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// For a test that cannot run here because `why` (a tool is missing or not permitted). In CI
/// (`CI=true`) that fails the test: CI installs every tool, so a missing one is a broken setup
/// that would otherwise pass unnoticed. Elsewhere the test is skipped, and says so on the
/// terminal, past the harness's capture of `eprintln!`, so that every run shows it. The caller
/// returns right after.
pub fn skip(why: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    if in_ci() {
        panic!("{test}: {why} (CI=true: a missing tool fails the test instead of skipping it)");
    }
    let _ = writeln!(io::stderr().lock(), "SKIPPED {test}: {why}");
}

/// Whether the tests run in CI (`CI=true`, as CI services set it; `.ci/run` sets it too).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// A tool the test needs is missing: the test is skipped, or fails in CI, naming what was not
/// tested (see [`skip`]). The caller returns right after.
pub fn missing(tool: &str, untested: &str) {
    skip(&format!("{tool} is missing, so this was not tested: {untested}"));
}

/// The path of `program` on PATH.
pub fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `e_machine` values.
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;

/// What a 64-bit little-endian ELF executable was built for.
#[derive(Debug, PartialEq)]
pub struct Elf {
    pub machine: u16,
    /// No program interpreter (PT_INTERP): nothing is loaded at run time, not even a libc.
    pub is_static: bool,
}

pub fn elf(path: &Path) -> io::Result<Elf> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}", path.display()));
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(1 << 16).read_to_end(&mut bytes)?;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return Err(invalid("not a 64-bit little-endian ELF file"));
    }
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(54) as usize, u16_at(56) as usize);
    const PT_INTERP: u32 = 3;
    let mut is_static = true;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let header = bytes.get(at..at + 4).ok_or_else(|| invalid("program headers past the first 64 KiB"))?;
        if u32::from_le_bytes(header.try_into().expect("4 bytes")) == PT_INTERP {
            is_static = false;
        }
    }
    Ok(Elf { machine: u16_at(18), is_static })
}

/// The repository's root, where the Makefile is.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `make ARGS` in the repository's root with `env` added, and fails the test with make's
/// output if it fails. A release build inside it takes a minute or two when the sources changed;
/// it is a no-op when they did not (.ci/run runs `make dist` before the tests).
pub fn make(args: &[&str], env: &[(&str, &str)]) {
    let out = std::process::Command::new("make")
        .arg("--no-print-directory")
        .args(args)
        .envs(env.iter().copied())
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("make {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "make {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
