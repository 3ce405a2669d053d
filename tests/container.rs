//! The watchdog where it lives: in a container, under a real Docker engine (Debian's docker.io,
//! a daemon of the test's own). `make image` builds the watchdog image; function images are built
//! from it the OpenFaaS way (`FROM <watchdog image> AS watchdog`, `COPY --from=watchdog /fwatchdog
//! /usr/bin/fwatchdog`) on top of a static busybox (for a shell and `ps`) or of nothing at all.
//! No registry is needed: every image is built from local files.
//!
//! One test, one daemon: the scenarios run side by side against it, every failing one is reported
//! by name, and the daemon is stopped and its directory removed whatever happened. Needs root,
//! docker.io and busybox-static (.ci/run installs them); elsewhere it is skipped with a line
//! saying so, and in CI a missing tool fails it.

mod common;
mod container_support;

use std::time::{Duration, Instant};

use common::{tools, wait_for_paced};
use container_support::*;

/// The images the scenarios run.
struct Images {
    /// `make image`: the watchdog image itself.
    watchdog: String,
    /// A function image with a shell (busybox): HEALTHCHECK `[ -e /tmp/.lock ]`, fprocess `cat`.
    shell: String,
    /// A function image with nothing but the watchdog and /tmp: HEALTHCHECK
    /// `["fwatchdog", "--run-healthcheck"]`, fprocess `fwatchdog --version`.
    bare: String,
}

/// A function that takes 2 s on `/slow`, and says (in /tmp/started) when it has started.
const SLOW_ON_REQUEST: &str = r#"sh -c 'if [ "$Http_Path" = /slow ]; then touch /tmp/started; sleep 2; fi; cat'"#;

#[test]
fn function_images_under_docker() {
    let Some(engine) = Engine::start() else { return };
    let started = Instant::now();
    let images = build_images(&engine);
    eprintln!("images built in {:.1} s", started.elapsed().as_secs_f64());
    type Scenario = fn(&Engine, &Images);
    let scenarios: [(&str, Scenario); 7] = [
        ("the watchdog image: /fwatchdog, its entrypoint, labels", watchdog_image),
        ("healthy under HEALTHCHECK [ -e /tmp/.lock ], answers", healthy_by_lock_file_and_answers),
        ("healthy under HEALTHCHECK fwatchdog --run-healthcheck without a shell", healthy_without_a_shell),
        ("docker stop during a slow request: 200, exit 0", docker_stop_drains),
        ("--read-only --tmpfs /tmp --user 65534:65534", read_only_as_nobody),
        ("PID 1: orphans reaped, docker kill -s TERM drains", pid1_reaps_orphans_and_drains),
        ("--memory 32m: the function dies, the watchdog serves", memory_limit),
    ];
    let started = Instant::now();
    let (engine_ref, images) = (&engine, &images);
    let failures: Vec<String> = std::thread::scope(|s| {
        let running: Vec<_> =
            scenarios.iter().map(|&(name, scenario)| (name, s.spawn(move || scenario(engine_ref, images)))).collect();
        running
            .into_iter()
            .filter_map(|(name, handle)| {
                let panic = handle.join().err()?;
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Some(format!("{name}: {message}"))
            })
            .collect()
    });
    eprintln!("scenarios took {:.1} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    drop(engine);
    eprintln!("engine removed in {:.1} s", started.elapsed().as_secs_f64());
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n\n{}",
        failures.len(),
        scenarios.len(),
        failures.join("\n\n")
    );
}

fn build_images(engine: &Engine) -> Images {
    let prefix = &engine.prefix;
    let watchdog = format!("{prefix}-watchdog:latest");
    engine.make(&["image", &format!("IMAGE={watchdog}")]);

    let busybox = format!("{prefix}-busybox:latest");
    engine.build(
        &busybox,
        "FROM scratch\nCOPY rootfs/ /\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
        &[("rootfs/bin/busybox", &engine.busybox)],
    );
    let shell = format!("{prefix}-function-shell:latest");
    engine.build(
        &shell,
        &format!(
            r#"FROM {watchdog} AS watchdog
FROM {busybox}
COPY --from=watchdog /fwatchdog /usr/bin/fwatchdog
ENV fprocess="cat"
HEALTHCHECK --interval=500ms --timeout=10s CMD [ -e /tmp/.lock ] || exit 1
CMD ["fwatchdog"]
"#
        ),
        &[],
    );
    let bare = format!("{prefix}-function-bare:latest");
    engine.build(
        &bare,
        &format!(
            r#"FROM {watchdog} AS watchdog
FROM scratch
COPY rootfs/ /
COPY --from=watchdog /fwatchdog /usr/bin/fwatchdog
ENV fprocess="fwatchdog --version"
HEALTHCHECK --interval=500ms --timeout=10s CMD ["fwatchdog", "--run-healthcheck"]
CMD ["fwatchdog"]
"#
        ),
        &[],
    );
    Images { watchdog, shell, bare }
}

// ---------------------------------------------------------------- scenarios

fn watchdog_image(engine: &Engine, images: &Images) {
    let image = &images.watchdog;
    let inspect = |format: &str| engine.ok(&["image", "inspect", "--format", format, image]);
    assert_eq!(inspect("{{json .Config.Entrypoint}}"), r#"["/fwatchdog"]"#);
    let label = |name: &str| inspect(&format!(r#"{{{{index .Config.Labels "org.opencontainers.image.{name}"}}}}"#));
    assert_eq!(label("version"), env!("CARGO_PKG_VERSION"));
    assert!(!label("source").is_empty(), "a source label");
    let revision = label("revision");
    assert_eq!(revision.len(), 40, "revision label: {revision:?}");

    // The binary and nothing else: the image is exactly as large as it.
    let arch = inspect("{{.Architecture}}");
    let binary = tools::repo_root().join(format!("dist/fwatchdog-{arch}"));
    let size = std::fs::metadata(&binary).unwrap_or_else(|e| panic!("{}: {e}", binary.display())).len();
    assert_eq!(inspect("{{.Size}}"), size.to_string(), "image size vs {}", binary.display());

    // The entrypoint runs it; the version carries the commit.
    let out = engine.docker(&["run", "--rm", image, "--version"]);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.trim(), format!("Version: {}\tSHA: {revision}", env!("CARGO_PKG_VERSION")));
}

fn healthy_by_lock_file_and_answers(engine: &Engine, images: &Images) {
    let c = Container::run(engine, "lock-file", &images.shell, &[], &[]);
    c.wait_healthy();
    let r = c.request("POST", "/", b"hello");
    assert_eq!((r.status, r.text().as_str()), (200, "hello"));
}

fn healthy_without_a_shell(engine: &Engine, images: &Images) {
    let c = Container::run(engine, "bare", &images.bare, &[], &[]);
    c.wait_healthy();
    let out = c.exec(&["sh", "-c", "true"]);
    assert!(!out.status.success(), "the image has no shell, yet: {}", output_text(&out));
    let r = c.request("GET", "/", b"");
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with(&format!("Version: {}\t", env!("CARGO_PKG_VERSION"))), "{}", r.text());
}

/// Starts a `/slow` request, waits until its function runs, and returns the request's thread.
fn slow_request(c: &Container) -> std::thread::JoinHandle<std::io::Result<common::Response>> {
    let port = c.port;
    let request = std::thread::spawn(move || common::send(port, &common::build_request("POST", "/slow", &[], b"slow")));
    wait_for_paced(Duration::from_secs(30), DOCKER_PACE, "the slow function to start", || {
        c.exec(&["test", "-e", "/tmp/started"]).status.success().then_some(())
    });
    request
}

/// Waits for the container to stop; returns the slow request's response and the exit code.
fn slow_response(
    c: &Container,
    request: std::thread::JoinHandle<std::io::Result<common::Response>>,
) -> (common::Response, i64) {
    let exit = c.wait_exit(Duration::from_secs(60));
    match request.join().expect("the request's thread") {
        Ok(r) => (r, exit),
        Err(e) => panic!("the slow request: {e}; the container exited with {exit}; its log:\n{}", c.logs()),
    }
}

fn docker_stop_drains(engine: &Engine, images: &Images) {
    let env = [("fprocess", SLOW_ON_REQUEST), ("healthcheck_interval", "1s"), ("write_timeout", "20s")];
    let c = Container::run(engine, "stop", &images.shell, &[], &env);
    c.wait_healthy();
    let request = slow_request(&c);
    let grace = 30;
    let started = Instant::now();
    engine.ok(&["stop", "--time", &grace.to_string(), &c.name]);
    let took = started.elapsed();
    let (r, exit) = slow_response(&c, request);
    assert_eq!((r.status, r.text().as_str()), (200, "slow"), "log:\n{}", c.logs());
    assert_eq!(exit, 0, "log:\n{}", c.logs());
    assert!(took < Duration::from_secs(grace), "docker stop took {took:?}");
    assert!(c.logs().contains("SIGTERM"), "log:\n{}", c.logs());
}

fn read_only_as_nobody(engine: &Engine, images: &Images) {
    let args = ["--read-only", "--tmpfs", "/tmp", "--user", "65534:65534"];
    let c = Container::run(engine, "read-only", &images.shell, &args, &[("fprocess", "sh -c 'id -u; cat'")]);
    c.wait_healthy();
    let r = c.request("POST", "/", b"hello");
    assert_eq!((r.status, r.text().as_str()), (200, "65534\nhello"), "log:\n{}", c.logs());
}

fn pid1_reaps_orphans_and_drains(engine: &Engine, images: &Images) {
    // The probe's control: under a PID 1 that does not reap (busybox sleep), an orphan's exit
    // leaves a zombie, and `ps` shows it.
    let control = Container::run(engine, "no-init", &images.shell, &["--entrypoint", "sleep", "--", "120"], &[]);
    let out = control.exec(&["sh", "-c", "sleep 0.1 & exit 0"]);
    assert!(out.status.success(), "{}", output_text(&out));
    wait_for_paced(Duration::from_secs(20), DOCKER_PACE, "a zombie under a PID 1 that does not reap", || {
        control.processes().iter().any(|p| p.2.starts_with('Z')).then_some(())
    });
    drop(control);

    // Each request leaves a `sleep 3` that escapes the function's process group.
    let orphan = "setsid sleep 3 </dev/null >/dev/null 2>&1 &";
    let fprocess =
        format!(r#"sh -c '{orphan} if [ "$Http_Path" = /slow ]; then touch /tmp/started; sleep 2; fi; cat'"#);
    let env = [("fprocess", fprocess.as_str()), ("healthcheck_interval", "1s"), ("write_timeout", "20s")];
    let c = Container::run(engine, "pid1", &images.shell, &[], &env);
    c.wait_healthy();
    let first = c.processes();
    assert!(first.iter().any(|p| p.0 == 1 && p.3 == "fwatchdog"), "the watchdog is PID 1: {first:?}");
    for _ in 0..5 {
        assert_eq!(c.request("POST", "/", b"x").status, 200);
    }
    let orphans = c.processes().into_iter().filter(|p| p.3 == "sleep").collect::<Vec<_>>();
    assert!(!orphans.is_empty() && orphans.iter().all(|p| p.1 == 1), "orphans, re-parented to PID 1: {orphans:?}");
    // Every orphan exits after its 3 s; none may be left as a zombie.
    wait_for_paced(Duration::from_secs(30), DOCKER_PACE, "every orphan to be reaped", || {
        let left = c.processes();
        (!left.iter().any(|p| p.3 == "sleep")).then_some(())
    });
    let zombies: Vec<_> = c.processes().into_iter().filter(|p| p.2.starts_with('Z')).collect();
    assert!(zombies.is_empty(), "zombies: {zombies:?}");

    let request = slow_request(&c);
    engine.ok(&["kill", "--signal", "TERM", &c.name]);
    let (r, exit) = slow_response(&c, request);
    assert_eq!((r.status, r.text().as_str()), (200, "slow"), "log:\n{}", c.logs());
    assert_eq!(exit, 0, "log:\n{}", c.logs());
}

fn memory_limit(engine: &Engine, images: &Images) {
    // The function reads its request, then on /big (exec, so the function itself) allocates and
    // touches 64 MiB. Reading first matters: a function that fills the limit within milliseconds
    // of its start races the watchdog, which registers the function's pipes with its reactor just
    // after the start, and a charge that fails there can, through a kernel race, make the OOM killer
    // take the watchdog as a second victim while the function's memory is being freed (seen once
    // in about 60 runs, in CI's load: dmesg showed tokio-rt-worker invoking the OOM killer twice).
    let fprocess = r#"sh -c 'cat >/dev/null; if [ "$Http_Path" = /big ]; then exec dd if=/dev/zero of=/dev/null bs=64M count=1; fi; echo served'"#;
    let args = ["--memory", "32m", "--memory-swap", "32m"];
    if engine.ok(&["info", "--format", "{{.MemoryLimit}}"]) != "true" {
        // This engine cannot apply memory limits: it says so, runs without one, and the function
        // gets its 64 MiB.
        let out = engine.docker(&["run", "--rm", &args[0..2].join("="), &images.shell, "sh", "-c", "true"]);
        let text = output_text(&out);
        assert!(text.to_lowercase().contains("memory"), "the engine's refusal: {text}");
        let c = Container::run(engine, "memory", &images.shell, &args, &[("fprocess", fprocess)]);
        c.wait_healthy();
        assert_eq!(c.request("POST", "/big", b"").status, 200, "log:\n{}", c.logs());
        // Untested then: skipped with a line saying so, and a failure in CI, as a missing tool is.
        tools::skip(&format!("this Docker engine cannot apply memory limits ({})", text.trim()));
        return;
    }
    let c = Container::run(engine, "memory", &images.shell, &args, &[("fprocess", fprocess)]);
    c.wait_healthy();
    let r = c.request("POST", "/big", b"");
    assert_eq!(r.status, 500, "{}\nlog:\n{}", r.text(), c.logs());
    assert!(r.text().starts_with("signal: killed"), "{}", r.text());
    let r = c.request("POST", "/", b"");
    assert_eq!((r.status, r.text().as_str()), (200, "served\n"));
    assert_eq!(c.request("GET", "/_/health", b"").status, 200);
    assert_eq!(c.inspect("{{.State.Status}}"), "running");
}
