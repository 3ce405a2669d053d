//! The manifests in deploy/: they parse, their probes and ports are the watchdog's, they set only
//! variables the watchdog knows (`fwatchdog --help`), and Kubernetes gives the watchdog the time it
//! needs to drain. YAML is read with PyYAML (Debian's python3-yaml, which .ci/run installs).

mod common;
mod example_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use example_support::*;

/// Prints every scalar of every YAML document as `<document> TAB <dotted path> TAB <JSON value>`.
const FLATTEN: &str = r#"
import json, sys, yaml

def flatten(prefix, value):
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
    if items is None or not value:
        yield prefix, value
        return
    for key, item in items:
        yield from flatten(f"{prefix}.{key}" if prefix else str(key), item)

with open(sys.argv[1]) as f:
    for n, document in enumerate(yaml.safe_load_all(f)):
        for path, value in flatten("", document):
            print(n, path, json.dumps(value), sep="\t")
"#;

/// One YAML document: dotted path (`spec.template.spec.containers.0.name`) → the value as JSON.
struct Doc(BTreeMap<String, String>);

impl Doc {
    fn get(&self, path: &str) -> Option<&str> {
        self.0.get(path).map(String::as_str)
    }

    /// The string at `path`; panics if it is missing or not a string.
    fn str(&self, path: &str) -> &str {
        match self.get(path) {
            Some(json) if json.starts_with('"') => json.trim_matches('"'),
            other => panic!("{path}: expected a string, found {other:?}"),
        }
    }

    fn int(&self, path: &str) -> i64 {
        let json = self.get(path).unwrap_or_else(|| panic!("{path}: missing"));
        json.parse().unwrap_or_else(|_| panic!("{path}: expected a whole number, found {json}"))
    }

    /// The entries of the list at `path` as paths: `path.0`, `path.1`, ...
    fn items(&self, path: &str) -> Vec<String> {
        (0..).map(|i| format!("{path}.{i}")).take_while(|item| !self.under(item).is_empty()).collect()
    }

    /// Everything below `path`: the rest of each path (which may hold dots, as label keys do) → value.
    fn under(&self, path: &str) -> BTreeMap<&str, &str> {
        let prefix = format!("{path}.");
        self.0.iter().filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?, v.as_str()))).collect()
    }

    /// The keys directly under the map at `path`, for maps whose keys hold no dots.
    fn keys(&self, path: &str) -> BTreeSet<&str> {
        self.under(path).into_keys().filter_map(|rest| rest.split('.').next()).collect()
    }
}

fn load(path: &Path) -> Vec<Doc> {
    let out = Command::new(python_with_yaml())
        .args(["-c", FLATTEN])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("run python3: {e}"));
    assert!(out.status.success(), "{} does not parse:\n{}", path.display(), String::from_utf8_lossy(&out.stderr));
    let mut docs: Vec<Doc> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut fields = line.splitn(3, '\t');
        let (Some(n), Some(key), Some(value)) = (fields.next(), fields.next(), fields.next()) else {
            panic!("unexpected line from the YAML reader: {line:?}");
        };
        let n: usize = n.parse().expect("document number");
        docs.resize_with(docs.len().max(n + 1), || Doc(BTreeMap::new()));
        docs[n].0.insert(key.to_string(), value.to_string());
    }
    docs
}

fn python_with_yaml() -> &'static str {
    ["python3", "/usr/bin/python3"]
        .into_iter()
        .find(|python| Command::new(python).args(["-c", "import yaml"]).output().is_ok_and(|o| o.status.success()))
        .expect("the deploy tests read YAML with PyYAML: apt-get install python3-yaml")
}

/// What the watchdog in an image runs with: the manifest's `env`, else the image's Dockerfile, else
/// the default from `fwatchdog --help`.
struct Settings {
    manifest: BTreeMap<String, String>,
    image: BTreeMap<String, String>,
    defaults: BTreeMap<String, String>,
}

impl Settings {
    fn get(&self, name: &str) -> String {
        let value = [&self.manifest, &self.image, &self.defaults].iter().find_map(|m| m.get(name)).cloned();
        let value = value.unwrap_or_else(|| panic!("{name} is not a watchdog variable"));
        if name == "healthcheck_interval" && value == "write_timeout" { self.get("write_timeout") } else { value }
    }

    fn seconds(&self, name: &str) -> f64 {
        seconds(&self.get(name))
    }

    fn port(&self, name: &str) -> i64 {
        self.get(name).parse().unwrap_or_else(|_| panic!("{name}: not a port: {}", self.get(name)))
    }
}

#[test]
fn kubernetes_deployment_and_service_fit_the_watchdog() {
    let docs = load(&root().join("deploy/kubernetes.yaml"));
    let kind = |kind: &str| docs.iter().find(|d| d.get("kind") == Some(&format!("\"{kind}\""))).expect(kind);
    let (deployment, service) = (kind("Deployment"), kind("Service"));
    let pod = "spec.template.spec";
    let containers = deployment.items(&format!("{pod}.containers"));
    assert_eq!(containers.len(), 1, "one container");
    let c = &containers[0];

    // The image is one of the examples; its Dockerfile's settings apply unless the manifest overrides them.
    let image = deployment.str(&format!("{c}.image"));
    let example = image.rsplit('/').next().and_then(|i| i.split(':').next()).unwrap_or_default();
    assert!(example_dir(example).join("Dockerfile").exists(), "{image} is not built from examples/");
    let defaults = known_variables();
    let mut manifest = BTreeMap::new();
    for var in deployment.items(&format!("{c}.env")) {
        let name = deployment.str(&format!("{var}.name"));
        assert!(defaults.contains_key(name), "env {name} is not in fwatchdog --help");
        let value = deployment.str(&format!("{var}.value")); // Kubernetes needs strings here
        manifest.insert(name.to_string(), value.to_string());
    }
    let image_env = dockerfile_env(&example_dir(example).join("Dockerfile")).into_iter().collect();
    let settings = Settings { manifest, image: image_env, defaults };

    // Ports and probes: numbers, or names of the container's ports.
    let port_number = |doc: &Doc, path: &str| -> i64 {
        let target = doc.get(path).unwrap_or_else(|| panic!("{path}: missing"));
        if target.starts_with('"') {
            let name = target.trim_matches('"');
            let port = deployment
                .items(&format!("{c}.ports"))
                .into_iter()
                .find(|p| deployment.str(&format!("{p}.name")) == name);
            deployment.int(&format!("{}.containerPort", port.unwrap_or_else(|| panic!("{path}: no port named {name}"))))
        } else {
            doc.int(path)
        }
    };
    let (http, metrics) = (settings.port("port"), settings.port("metrics_port"));
    assert_eq!((http, metrics), (8080, 8081), "the watchdog's default ports");
    let container_ports: BTreeSet<i64> =
        deployment.items(&format!("{c}.ports")).iter().map(|p| deployment.int(&format!("{p}.containerPort"))).collect();
    assert_eq!(container_ports, BTreeSet::from([http, metrics]));
    for (probe, path) in [("livenessProbe", "/_/health"), ("readinessProbe", "/_/ready")] {
        assert_eq!(deployment.str(&format!("{c}.{probe}.httpGet.path")), path, "{probe}");
        assert_eq!(port_number(deployment, &format!("{c}.{probe}.httpGet.port")), http, "{probe}");
    }
    let scrape_port = "spec.template.metadata.annotations.prometheus.io/port";
    if deployment.get(scrape_port).is_some() {
        assert_eq!(deployment.str(scrape_port), metrics.to_string(), "Prometheus scrapes the metrics port");
    }

    // Drain: serving on for healthcheck_interval after SIGTERM, then up to write_timeout for the
    // requests in flight. Kubernetes must not SIGKILL before.
    let needed = settings.seconds("healthcheck_interval") + settings.seconds("write_timeout");
    let grace = deployment.int(&format!("{pod}.terminationGracePeriodSeconds"));
    assert!(
        grace as f64 >= needed,
        "terminationGracePeriodSeconds {grace} < healthcheck_interval + write_timeout = {needed}"
    );

    for resource in ["limits.cpu", "limits.memory", "requests.cpu", "requests.memory"] {
        assert!(deployment.get(&format!("{c}.resources.{resource}")).is_some(), "resources.{resource}");
    }
    if deployment.get(&format!("{c}.securityContext.readOnlyRootFilesystem")) == Some("true") {
        let tmpdir = settings.get("TMPDIR");
        let mounts = deployment.items(&format!("{c}.volumeMounts"));
        assert!(
            mounts.iter().any(|m| deployment.str(&format!("{m}.mountPath")) == tmpdir),
            "a read-only root needs a writable {tmpdir} for the lock file"
        );
    }

    // The Service selects the pods and reaches the watchdog's port.
    let (selector, labels) = (service.under("spec.selector"), deployment.under("spec.template.metadata.labels"));
    assert!(
        !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
        "{selector:?} vs {labels:?}"
    );
    let service_ports = service.items("spec.ports");
    assert_eq!(service_ports.len(), 1);
    assert_eq!(port_number(service, &format!("{}.targetPort", service_ports[0])), http);
}

#[test]
fn openfaas_stack_deploys_every_example_with_known_variables() {
    let docs = load(&root().join("deploy/stack.yml"));
    assert_eq!(docs.len(), 1);
    let stack = &docs[0];
    assert_eq!(stack.str("provider.name"), "openfaas");
    let known = known_variables();
    let functions = stack.keys("functions");
    assert_eq!(functions.iter().map(|f| f.to_string()).collect::<Vec<_>>(), examples(), "one function per example");
    for function in functions {
        let f = format!("functions.{function}");
        assert_eq!(stack.str(&format!("{f}.lang")), "dockerfile");
        assert_eq!(stack.get(&format!("{f}.skip_build")), Some("true"), "{function}: built with docker build");
        let handler = stack.str(&format!("{f}.handler"));
        assert!(root().join(handler).join("Dockerfile").exists(), "{function}: handler {handler}");
        assert!(stack.str(&format!("{f}.image")).contains(function), "{function}: image");
        for name in stack.keys(&format!("{f}.environment")) {
            assert!(known.contains_key(name), "{function}: {name} is not in fwatchdog --help");
            stack.str(&format!("{f}.environment.{name}")); // a string, as OpenFaaS expects
        }
    }
}

/// Seconds in a watchdog duration: whole seconds (`10`) or Go units (`1m30s`, `500ms`).
fn seconds(value: &str) -> f64 {
    if let Ok(whole) = value.parse::<u64>() {
        return whole as f64;
    }
    let (mut total, mut rest) = (0.0, value);
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let unit = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => panic!("not a duration: {value:?}"),
        };
        total += number.parse::<f64>().unwrap_or_else(|_| panic!("not a duration: {value:?}")) * unit;
        rest = after;
    }
    total
}

#[test]
fn durations_in_seconds() {
    assert_eq!(seconds("10"), 10.0);
    assert_eq!(seconds("1m30s"), 90.0);
    assert_eq!(seconds("500ms"), 0.5);
    assert_eq!(seconds("1.5h"), 5400.0);
}
