//! The README's design notes against the source: its module map names every module under `src/`,
//! its dependency list every dependency in `Cargo.toml`, so neither falls behind the code again.

use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The README bullet that starts with `start`, up to the next top-level bullet or heading, on one
/// line.
fn bullet(readme: &str, start: &str) -> String {
    let from = readme.find(start).unwrap_or_else(|| panic!("README has no line starting {start:?}"));
    let rest = &readme[from + start.len()..];
    let end = rest.find("\n- ").into_iter().chain(rest.find("\n#")).min().unwrap_or(rest.len());
    rest[..end].split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every module under `src/` as a path (`process`, `process/spawn`, `modes/fork/policy`).
fn modules(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let module = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
        if path.is_dir() {
            modules(&path, &module, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(if name == "mod" { prefix.to_string() } else { module });
        }
    }
}

/// The names of every dependency (not dev-dependency) in `Cargo.toml`.
fn dependencies(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_deps = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line == "[dependencies]" || (line.starts_with("[target.") && line.ends_with(".dependencies]"));
        } else if in_deps
            && !line.starts_with('#')
            && let Some((name, _)) = line.split_once('=')
        {
            names.push(name.trim().to_string());
        }
    }
    names
}

#[test]
fn the_module_map_names_every_module() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let map = bullet(&readme, "- Module map");
    let mut all = Vec::new();
    modules(&Path::new(ROOT).join("src"), "", &mut all);
    let missing: Vec<_> = all.iter().filter(|m| !map.contains(&format!("`{m}`"))).collect();
    assert!(missing.is_empty(), "README's module map does not name {missing:?}");
}

#[test]
fn the_dependency_list_names_every_dependency() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let list = bullet(&readme, "- Dependencies");
    let manifest = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).unwrap();
    let all = dependencies(&manifest);
    assert!(all.len() >= 10, "{all:?}");
    let missing: Vec<_> = all.iter().filter(|d| !list.contains(&format!("`{d}` ("))).collect();
    assert!(missing.is_empty(), "README's dependency list does not name {missing:?}, each with its reason");
}
