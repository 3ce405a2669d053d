//! The design notes against the source: `docs/design.md`'s module map names every module under
//! `src/`, and its dependency table every dependency in `Cargo.toml`, so neither falls behind.

use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The section of `docs/design.md` under the heading `heading`, up to the next heading.
fn section(heading: &str) -> String {
    let design = std::fs::read_to_string(Path::new(ROOT).join("docs/design.md")).unwrap();
    let start = design.find(&format!("\n## {heading}\n")).unwrap_or_else(|| panic!("no `## {heading}`"));
    let rest = &design[start + heading.len() + 5..];
    rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
}

/// Every source file under `dir`, relative to `src/` (`main.rs`, `modes/fork/policy.rs`).
fn sources(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            sources(&path, &format!("{prefix}{name}/"), out);
        } else if name.ends_with(".rs") {
            out.push(format!("{prefix}{name}"));
        }
    }
}

/// Whether the map names `file`: by its path, or as a file of its directory's row (a directory's
/// `mod.rs` by the row alone).
fn named(map: &str, file: &str) -> bool {
    match file.rsplit_once('/') {
        None => map.contains(&format!("`{file}`")),
        Some((dir, name)) => {
            map.contains(&format!("`{file}`"))
                || (map.contains(&format!("`{dir}/`")) && (name == "mod.rs" || map.contains(&format!("`{name}`"))))
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
    let map = section("Module map");
    let mut all = Vec::new();
    sources(&Path::new(ROOT).join("src"), "", &mut all);
    assert!(all.len() >= 30, "{all:?}");
    let missing: Vec<_> = all.iter().filter(|file| !named(&map, file)).collect();
    assert!(missing.is_empty(), "docs/design.md's module map does not name {missing:?}");
}

#[test]
fn the_dependency_table_names_every_dependency() {
    let table = section("Dependencies");
    let manifest = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).unwrap();
    let all = dependencies(&manifest);
    assert!(all.len() >= 10, "{all:?}");
    let missing: Vec<_> = all.iter().filter(|d| !table.contains(&format!("| `{d}`"))).collect();
    assert!(missing.is_empty(), "docs/design.md's dependency table has no row for {missing:?}");
}
