//! Support for the tests of examples/ and deploy/: an example's Dockerfile settings, starting the
//! watchdog the way the example's image does, and the variables `fwatchdog --help` lists.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::{Options, Watchdog, bin_command};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn example_dir(name: &str) -> PathBuf {
    root().join("examples").join(name)
}

/// Every directory under examples/, sorted.
pub fn examples() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("examples"))
        .expect("read examples/")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// The `ENV name=value ...` settings of a Dockerfile's final stage, in order (values may be quoted).
pub fn dockerfile_env(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let final_stage = text.rsplit_once("\nFROM ").map_or(text.as_str(), |(_, stage)| stage);
    final_stage
        .lines()
        .filter_map(|line| line.strip_prefix("ENV "))
        .flat_map(words)
        .map(|word| match word.split_once('=') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            None => panic!("{}: write ENV name=value, not {word:?}", path.display()),
        })
        .collect()
}

/// Splits at spaces outside double quotes and drops the quotes: enough for one-line ENV settings.
fn words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' | '\t' if !quoted => words.extend((!word.is_empty()).then(|| std::mem::take(&mut word))),
            _ => word.push(c),
        }
    }
    words.extend((!word.is_empty()).then_some(word));
    words
}

/// Starts the watchdog as `example`'s image would: its Dockerfile's ENV (then `env`, which wins),
/// with `dir` as the working directory (the image's WORKDIR, where its fprocess finds its files).
pub fn start(example: &str, dir: &Path, env: &[(&str, &str)]) -> Watchdog {
    let mut options = Options::new(env);
    let mut all = dockerfile_env(&example_dir(example).join("Dockerfile"));
    all.append(&mut options.env);
    options.env = all;
    options.dir = Some(dir.to_path_buf());
    Watchdog::start_with(options)
}

/// The variables `fwatchdog --help` lists, each with its default column.
pub fn known_variables() -> BTreeMap<String, String> {
    let out = bin_command(&["--help"]).output().expect("run fwatchdog --help");
    assert!(out.status.success());
    // Rows are "  <name, 22 wide> <default, 22 wide> <meaning>".
    let rows: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("  "))
        .filter_map(|row| {
            let name = row.split_whitespace().next()?;
            Some((name.to_string(), row.get(23..45).unwrap_or("").trim().to_string()))
        })
        .collect();
    assert!(rows.get("port").is_some_and(|d| d == "8080"), "--help layout changed: {rows:?}");
    rows
}
