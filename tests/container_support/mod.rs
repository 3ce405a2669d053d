//! A private Docker engine for the container tests: one `dockerd` per test run, with its data root,
//! exec root, socket, pid file and configuration in one temporary directory, and a teardown that
//! removes every container, stops the daemon and deletes the directory, also when a test fails.
//! Plus the containers the tests run in it, each on the host's network with a free port.
#![allow(dead_code)]
#![allow(unsafe_code)] // the daemon's parent-death signal, signals, unmounts, the effective uid

use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::tools;
use crate::common::{Response, build_request, free_port, poll, send, wait_for_paced};

/// What is not tested when the engine cannot be started.
const UNTESTED: &str = "the watchdog image and function images under a real Docker engine (tests/container.rs)";

pub struct Engine {
    dir: PathBuf,
    daemon: Option<Child>,
    host: String,
    /// Prefix of every image and container name: the test's process id keeps runs apart.
    pub prefix: String,
    /// Static busybox (Debian's busybox-static), for images with a shell.
    pub busybox: PathBuf,
}

impl Engine {
    /// Starts a Docker daemon of our own (about a second here; the vfs storage driver and no
    /// networking of its own, so that it needs nothing but root). None, after saying what was not
    /// tested, where the tools are missing outside CI; in CI a missing tool fails the test.
    pub fn start() -> Option<Engine> {
        for (tool, package) in [("docker", "docker.io"), ("dockerd", "docker.io"), ("make", "make")] {
            if tools::on_path(tool).is_none() {
                tools::missing(&format!("{tool} (apt-get install {package})"), UNTESTED);
                return None;
            }
        }
        let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"]
            .map(PathBuf::from)
            .into_iter()
            .find(|b| tools::elf(b).is_ok_and(|elf| elf.is_static))
        else {
            tools::missing("a static busybox (apt-get install busybox-static)", UNTESTED);
            return None;
        };
        // SAFETY: plain syscall.
        if unsafe { libc::geteuid() } != 0 {
            tools::missing("root (dockerd runs as root)", UNTESTED);
            return None;
        }

        // Unix socket paths are short (108 bytes): containerd's lives under the exec root.
        let base = std::env::temp_dir();
        let base = if base.as_os_str().len() > 40 { PathBuf::from("/tmp") } else { base };
        let dir = base.join(format!("fwd-docker-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("config")).expect("create the engine's directory");
        fs::write(dir.join("daemon.json"), "{}\n").expect("write daemon.json");
        let log = fs::File::create(dir.join("dockerd.log")).expect("create dockerd.log");
        let namespace = format!("fwatchdog-test-{}", std::process::id());
        let path = |name: &str| dir.join(name).display().to_string();
        let host = format!("unix://{}", path("docker.sock"));
        let mut command = Command::new("dockerd");
        command
            .args(["--storage-driver=vfs", "--iptables=false", "--bridge=none"])
            .args(["--data-root", &path("root"), "--exec-root", &path("exec"), "--pidfile", &path("dockerd.pid")])
            .args(["--config-file", &path("daemon.json"), "-H", &host])
            .args(["--containerd-namespace", &namespace, "--containerd-plugins-namespace", &format!("{namespace}-p")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup dockerd.log"))
            .stderr(log);
        // SAFETY: only an async-signal-safe system call between fork and exec. A test run that is
        // killed (so no teardown runs) still stops the daemon.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let daemon = command.spawn().expect("start dockerd");
        let mut engine = Engine { dir, daemon: Some(daemon), host, prefix: namespace, busybox };
        let started = Instant::now();
        wait_for_paced(Duration::from_secs(90), DOCKER_PACE, "dockerd to answer", || {
            if let Some(status) = engine.daemon.as_mut().and_then(|d| d.try_wait().ok().flatten()) {
                panic!("dockerd exited with {status} during start:\n{}", engine.daemon_log());
            }
            engine.docker(&["version", "--format", "{{.Server.Version}}"]).status.success().then_some(())
        });
        eprintln!("dockerd answered after {:.1} s", started.elapsed().as_secs_f64());
        Some(engine)
    }

    /// The `docker` CLI, talking to this engine only.
    pub fn command(&self) -> Command {
        let mut command = Command::new("docker");
        command
            .env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", self.dir.join("config"))
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .stdin(Stdio::null());
        command
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run docker")
    }

    /// Runs `docker ARGS`, fails the test with its output unless it succeeds, and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(out.status.success(), "docker {} failed ({}):\n{}", args.join(" "), out.status, output_text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `make ARGS` with the docker CLI pointed at this engine.
    pub fn make(&self, args: &[&str]) {
        let config = self.dir.join("config").display().to_string();
        tools::make(args, &[("DOCKER_HOST", &self.host), ("DOCKER_CONFIG", &config)]);
    }

    /// Builds image `tag` from `dockerfile`, in a context holding `files` (path in the context,
    /// source file) and `rootfs/tmp`, a world-writable sticky directory for images to copy to
    /// `/tmp`, as a base image would have it (COPY does not keep the mode of the directory it
    /// is given, only of what is in it).
    pub fn build(&self, tag: &str, dockerfile: &str, files: &[(&str, &Path)]) {
        use std::os::unix::fs::PermissionsExt;
        let context = self.dir.join("contexts").join(tag.replace([':', '/'], "_"));
        let _ = fs::remove_dir_all(&context);
        fs::create_dir_all(context.join("rootfs/tmp")).expect("create build context");
        fs::set_permissions(context.join("rootfs/tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod tmp");
        for (name, source) in files {
            let target = context.join(name);
            fs::create_dir_all(target.parent().expect("a parent")).expect("create build context");
            fs::copy(source, &target).unwrap_or_else(|e| panic!("copy {} into the context: {e}", source.display()));
        }
        fs::write(context.join("Dockerfile"), dockerfile).expect("write Dockerfile");
        let context = context.display().to_string();
        let out = self.docker(&["build", "-q", "-t", tag, &context]);
        assert!(out.status.success(), "docker build of {tag} failed:\n{dockerfile}\n{}", output_text(&out));
    }

    fn daemon_log(&self) -> String {
        let log = fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Containers first, killed: stopping the daemon would wait out each one's stop timeout.
        if let Ok(out) = self.command().args(["ps", "-aq"]).output() {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect();
            if !ids.is_empty() {
                let _ = self.command().args(["rm", "-f", "-v"]).args(&ids).output();
            }
        }
        if let Some(mut daemon) = self.daemon.take() {
            // SAFETY: plain syscall.
            unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
            poll(Duration::from_secs(30), Duration::from_millis(20), || daemon.try_wait().ok().flatten());
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        // containerd and its shims, should any outlive the daemon: their command lines name our
        // directory.
        let needle = self.dir.display().to_string();
        for pid in crate::common::processes_with(&needle) {
            // SAFETY: plain syscall.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        for mount in mounts_under(&self.dir) {
            let Ok(path) = std::ffi::CString::new(mount) else { continue };
            // SAFETY: a valid C string.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            let _ = writeln!(std::io::stderr(), "could not remove {}: {e}", self.dir.display());
        }
    }
}

/// Mount points under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<String> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|escaped| escaped.replace("\\040", " "))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts
}

pub fn output_text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// How often a wait checks when each check runs the docker CLI (tens of milliseconds each).
pub const DOCKER_PACE: Duration = Duration::from_millis(100);

/// A container started with `docker run -d`, on the host's network with its own free `port` (and
/// no metrics port, which would be the same 8081 for all). Removed on drop.
pub struct Container<'a> {
    engine: &'a Engine,
    pub name: String,
    pub port: u16,
}

impl<'a> Container<'a> {
    /// `docker run -d --network host ARGS... IMAGE`, with `env` as `-e` options; `args` come
    /// before the image, so they are docker's options, and anything after `--` the command.
    pub fn run(engine: &'a Engine, name: &str, image: &str, args: &[&str], env: &[(&str, &str)]) -> Container<'a> {
        let port = free_port();
        let name = format!("{}-{name}", engine.prefix);
        let mut command = vec!["run", "-d", "--name", &name, "--network", "host"];
        let port_env = format!("port={port}");
        command.extend(["-e", &port_env, "-e", "metrics_port=0"]);
        let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for e in &env {
            command.extend(["-e", e]);
        }
        let (options, cmd) = match args.iter().position(|&a| a == "--") {
            Some(i) => (&args[..i], &args[i + 1..]),
            None => (args, &[][..]),
        };
        command.extend(options);
        command.push(image);
        command.extend(cmd);
        engine.ok(&command);
        Container { engine, name, port }
    }

    /// `docker inspect --format FORMAT`.
    pub fn inspect(&self, format: &str) -> String {
        self.engine.ok(&["inspect", "--format", format, &self.name])
    }

    pub fn logs(&self) -> String {
        output_text(&self.engine.docker(&["logs", &self.name]))
    }

    /// Waits until Docker's own HEALTHCHECK says `healthy`; fails at once if the container exits.
    pub fn wait_healthy(&self) {
        wait_for_paced(Duration::from_secs(60), DOCKER_PACE, &format!("{} to be healthy", self.name), || {
            let state = self.inspect("{{.State.Status}} {{.State.Health.Status}}");
            assert!(state.starts_with("running"), "{} is {state}; its log:\n{}", self.name, self.logs());
            (state == "running healthy").then_some(())
        });
    }

    /// Waits for the container to stop and returns its exit code.
    pub fn wait_exit(&self, limit: Duration) -> i64 {
        wait_for_paced(limit, DOCKER_PACE, &format!("{} to exit", self.name), || {
            let state = self.inspect("{{.State.Running}} {{.State.ExitCode}}");
            state.strip_prefix("false ").and_then(|code| code.parse().ok())
        })
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        let mut command = vec!["exec", &self.name];
        command.extend(args);
        self.engine.docker(&command)
    }

    /// `ps -o pid,ppid,stat,comm` in the container (busybox): one (pid, ppid, state, command) each.
    pub fn processes(&self) -> Vec<(u32, u32, String, String)> {
        let out = self.exec(&["ps", "-o", "pid,ppid,stat,comm"]);
        assert!(out.status.success(), "ps in {}: {}", self.name, output_text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let pid = fields.next()?.parse().ok()?;
                let ppid = fields.next()?.parse().ok()?;
                Some((pid, ppid, fields.next()?.to_string(), fields.collect::<Vec<_>>().join(" ")))
            })
            .collect()
    }

    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Response {
        send(self.port, &build_request(method, path, &[], body))
            .unwrap_or_else(|e| panic!("{method} {path} to {}: {e}\nits log:\n{}", self.name, self.logs()))
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.engine.docker(&["rm", "-f", "-v", &self.name]);
    }
}
