//! The crate's modules are layered: a module refers only to modules of its
//! own layer or below. This reads the sources and checks every `crate::`
//! path against the layers named here (and in src/lib.rs).

use std::collections::BTreeMap;
use std::path::Path;

/// Top to bottom.
const LAYERS: &[(&str, &[&str])] = &[
    ("facade", &["registry", "spec", "directory", "doc_support"]),
    ("worker loop", &["supervise"]),
    (
        "worker API and shared state",
        &[
            "worker", "context", "handle", "error", "event", "options", "restart", "shared", "cell",
        ],
    ),
    (
        "primitives",
        &[
            "executor", "table", "timer", "timers", "current", "evict", "queue",
        ],
    ),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

/// Every module named after `crate::` in `source`.
fn referenced(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in source.match_indices("crate::") {
        let rest = &source[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.push(name);
        }
    }
    found
}

/// The names `pub use` puts at the crate root, from lib.rs.
fn reexported(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|line| line.trim().strip_prefix("pub use "))
        .flat_map(|path| {
            let items = path.trim_end_matches(';');
            let items = match items.split_once('{') {
                Some((_, list)) => list.trim_end_matches('}').to_owned(),
                None => items.rsplit("::").next().unwrap_or("").to_owned(),
            };
            items
                .split(',')
                .map(|item| item.trim().to_owned())
                .filter(|item| !item.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn sources(dir: &Path, into: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.insert(
                path.display().to_string(),
                std::fs::read_to_string(&path).unwrap(),
            );
        }
    }
}

#[test]
fn no_module_refers_to_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    sources(&src, &mut files);
    let exported = reexported(&files[&src.join("lib.rs").display().to_string()]);
    let mut wrong = Vec::new();
    for (path, source) in &files {
        let relative = Path::new(path).strip_prefix(&src).unwrap();
        let module = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if module == "lib" {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            wrong.push(format!("{path}: module `{module}` is in no layer"));
            continue;
        };
        for name in referenced(source) {
            // Items re-exported at the crate root (`crate::Error` in docs).
            if exported.contains(&name) {
                continue;
            }
            match layer_of(&name) {
                Some(layer) if layer < own => wrong.push(format!(
                    "{path}: `{module}` ({}) refers to `{name}` ({})",
                    LAYERS[own].0, LAYERS[layer].0
                )),
                Some(_) => {}
                None if name == module => {}
                None => wrong.push(format!("{path}: `crate::{name}` is in no layer")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
