//! The function of the `mode=http` tests: tests/http_upstream.py, a real HTTP server started by
//! the watchdog as `fprocess` (python3), that reports what it received, misbehaves on request and
//! leaves marker files (and a line per request in `requests`) in its directory.

use std::path::PathBuf;
use std::time::Duration;

use super::procfs::processes_with;
use super::tempdir::TempDir;
use super::wait::wait_for;
use super::watchdog::{Options, Watchdog, free_port};

const UPSTREAM: &str = include_str!("../http_upstream.py");

/// The function: the upstream script, its port and the directory where it leaves marker files.
pub struct Function {
    dir: TempDir,
    pub port: u16,
    /// What it answers at a path it has no route for (`inspect` unless set).
    default_route: Option<&'static str>,
}

impl Function {
    pub fn new() -> Function {
        let dir = TempDir::new();
        std::fs::write(dir.path().join("upstream.py"), UPSTREAM).expect("write upstream.py");
        Function { dir, port: free_port(), default_route: None }
    }

    /// A function that answers every path it has no route for with `route` (e.g. `mirror`).
    pub fn answering(route: &'static str) -> Function {
        Function { default_route: Some(route), ..Function::new() }
    }

    pub fn fprocess(&self) -> String {
        let script = self.dir.path().join("upstream.py");
        let route = self.default_route.unwrap_or("inspect");
        format!("python3 -u {} {} {} {route}", script.display(), self.port, self.dir.path().display())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn marker(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn wait_marker(&self, name: &str, limit: Duration) -> String {
        wait_for(limit, &format!("marker {name}"), || std::fs::read_to_string(self.marker(name)).ok())
    }

    /// Processes still running this function's script.
    pub fn survivors(&self) -> Vec<u32> {
        processes_with(&self.dir.path().join("upstream.py").display().to_string())
    }

    /// A watchdog for this function; `base` is the path of `upstream_url`.
    pub fn options(&self, base: &str, env: &[(&str, &str)]) -> Options {
        let mut options =
            Options::new(&[("mode", "http"), ("fprocess", &self.fprocess()), ("upstream_url", &self.url(base))]);
        options.env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        options.wait_healthy = false;
        options
    }

    /// Starts a watchdog and waits until it is healthy (the function's Python may take a while
    /// to start on a loaded machine).
    pub fn start_at(&self, base: &str, env: &[(&str, &str)]) -> Watchdog {
        self.start_with(self.options(base, env))
    }

    pub fn start_with(&self, options: Options) -> Watchdog {
        let mut wd = Watchdog::start_with(options);
        wd.wait_healthy(Duration::from_secs(30));
        wd
    }

    pub fn start(&self, env: &[(&str, &str)]) -> Watchdog {
        self.start_at("", env)
    }
}
