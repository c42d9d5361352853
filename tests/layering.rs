//! The crate's modules are layered, one folder of `src/` per layer: a module
//! refers only to modules of its own layer or below. This reads the sources
//! and checks every path the code names from the crate root — `crate::a::b`,
//! each path of a braced `use crate::{a::b, c}`, `super::` paths that climb
//! to the root, and names that lib.rs re-exports at the root (`crate::Error`
//! is `worker::error::Error`) — against the layers named here and in
//! src/lib.rs.
//!
//! Comments are not read: a doc link may point anywhere, as a doc page links
//! to any other page.

use std::collections::BTreeMap;
use std::path::Path;

/// Top to bottom; a module belongs to the layer of the longest prefix of its
/// path that is listed.
const LAYERS: &[(&str, &[&str])] = &[
    // The service that fires reminders: calls by id through a registry.
    ("reminder service", &["state::reminders"]),
    ("facade", &["registry"]),
    // Workers for the API docs' examples (one receives reminders), and the
    // tests inside src/.
    ("documentation helpers", &["doc_support"]),
    // Persisted state: built on the worker machinery, used by no layer below.
    ("persisted state", &["state"]),
    ("worker loop", &["worker::supervise"]),
    ("worker machinery", &["worker"]),
    ("primitives", &["primitives"]),
    ("executor seam", &["executor"]),
];

/// The layer of a module path such as `worker::cell` (by longest prefix).
fn layer_of(path: &str) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (layer, (_, prefixes)) in LAYERS.iter().enumerate() {
        for prefix in *prefixes {
            let matches = path == *prefix || path.starts_with(&format!("{prefix}::"));
            if matches && best.is_none_or(|(len, _)| prefix.len() > len) {
                best = Some((prefix.len(), layer));
            }
        }
    }
    best.map(|(_, layer)| layer)
}

/// The code of `source` without its comments (line comments, doc comments
/// and block comments); string contents are kept, which is harmless here.
fn code_of(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("//") {
            rest = after.find('\n').map_or("", |end| &after[end..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |end| &after[end + 2..]);
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// The paths inside a braced group that starts at `group` (just after `{`),
/// each as written (`a::b`, `c`), with nested groups' prefixes joined on.
fn braced(group: &str, prefix: &str, into: &mut Vec<String>) {
    let mut depth = 0;
    let mut item = String::new();
    let mut items = Vec::new();
    for c in group.chars() {
        match c {
            '{' => {
                depth += 1;
                item.push(c);
            }
            '}' if depth == 0 => break,
            '}' => {
                depth -= 1;
                item.push(c);
            }
            ',' if depth == 0 => items.push(std::mem::take(&mut item)),
            _ => item.push(c),
        }
    }
    items.push(item);
    for item in items {
        let item: String = item.split_whitespace().collect();
        if item.is_empty() || item == "self" {
            continue;
        }
        match item.split_once("::{") {
            Some((head, inner)) => braced(inner, &join(prefix, head), into),
            None => {
                let path = item.split(" as ").next().unwrap_or(&item);
                let path = path.trim_end_matches("::*");
                into.push(join(prefix, path));
            }
        }
    }
}

fn join(prefix: &str, path: &str) -> String {
    if prefix.is_empty() {
        path.to_owned()
    } else {
        format!("{prefix}::{path}")
    }
}

/// Every path `code` names from the crate root, given the path of the
/// module it belongs to (for `super::`).
fn referenced(code: &str, module: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut i = 0;
    while i < code.len() {
        let rest = &code[i..];
        let preceded_by_ident = code[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let (root, after) = if preceded_by_ident {
            (None, rest)
        } else if let Some(after) = rest.strip_prefix("crate::") {
            (Some(Vec::new()), after)
        } else if rest.starts_with("super::") {
            // Climb one module per `super::`.
            let mut base = module.to_vec();
            let mut after = rest;
            while let Some(next) = after.strip_prefix("super::") {
                base.pop();
                after = next;
            }
            (Some(base), after)
        } else {
            (None, rest)
        };
        let Some(root) = root else {
            i += rest.chars().next().unwrap().len_utf8();
            continue;
        };
        let root = root.join("::");
        if let Some(group) = after.strip_prefix('{') {
            braced(group, &root, &mut found);
        } else {
            let path: String = after.chars().take_while(|&c| ident(c)).collect();
            let path = path.trim_end_matches(':');
            if !path.is_empty() {
                found.push(join(&root, path));
            }
        }
        i = code.len() - after.len();
    }
    found
}

/// The names lib.rs puts at the crate root with `pub use`, and the module
/// each comes from (`Error` → `worker::error`).
fn reexported(lib: &str) -> BTreeMap<String, String> {
    let code = code_of(lib);
    let mut names = BTreeMap::new();
    for statement in code.split(';') {
        let Some(path) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let mut paths = Vec::new();
        match path.split_once("::{") {
            Some((head, group)) => braced(group, head, &mut paths),
            None => paths.push(path.trim().to_owned()),
        }
        for path in paths {
            if let Some((module, name)) = path.rsplit_once("::") {
                names.insert(name.to_owned(), module.to_owned());
            }
        }
    }
    names
}

/// The module path of the source file at `relative` (`worker/cell.rs` →
/// `worker::cell`, `worker/mod.rs` → `worker`).
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().unwrap();
    let stem = file.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_owned());
    }
    parts
}

/// Every reference in `files` (path → source) that climbs above its own
/// layer, or names no layer, as a line of text each.
fn violations(files: &BTreeMap<String, String>) -> Vec<String> {
    let exported = reexported(&files["lib.rs"]);
    let mut wrong = Vec::new();
    for (path, source) in files {
        let module = module_path(Path::new(path));
        if module == ["lib"] {
            continue;
        }
        let own_path = module.join("::");
        let Some(own) = layer_of(&own_path) else {
            wrong.push(format!("{path}: module `{own_path}` is in no layer"));
            continue;
        };
        for named in referenced(&code_of(source), &module) {
            let first = named.split("::").next().unwrap_or("");
            // A name lib.rs re-exports stands for the module it comes from.
            let target = match exported.get(first) {
                Some(module) => module.clone(),
                None => named.clone(),
            };
            match layer_of(&target) {
                Some(layer) if layer < own => wrong.push(format!(
                    "{path}: `{own_path}` ({}) refers to `{named}` ({})",
                    LAYERS[own].0, LAYERS[layer].0
                )),
                Some(_) => {}
                // A path that stays inside the module's own file or the
                // crate root's macros (none today) names no layer.
                None if target.is_empty() => {}
                None => wrong.push(format!("{path}: `{named}` is in no layer")),
            }
        }
    }
    wrong
}

fn sources(root: &Path, dir: &Path, into: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(root, &path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            into.insert(relative, std::fs::read_to_string(&path).unwrap());
        }
    }
}

fn the_crate() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    sources(&src, &src, &mut files);
    files
}

#[test]
fn no_module_refers_to_a_layer_above_its_own() {
    let wrong = violations(&the_crate());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_folder_of_src_is_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() && name != "doc_support" {
            assert!(layer_of(&name).is_some(), "src/{name}/ is in no layer");
        }
    }
}

/// The crate with `extra` appended to the file at `path`.
fn with(path: &str, extra: &str) -> BTreeMap<String, String> {
    let mut files = the_crate();
    files.get_mut(path).expect("a source file").push_str(extra);
    files
}

#[test]
fn a_braced_import_from_a_layer_above_is_refused() {
    let files = with(
        "primitives/table.rs",
        "\nuse crate::{executor::Executor, registry::GenRegistry};\n",
    );
    let wrong = violations(&files);
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert!(wrong[0].contains("registry::GenRegistry"), "{wrong:?}");
}

#[test]
fn a_nested_braced_import_from_a_layer_above_is_refused() {
    let files = with(
        "worker/cell.rs",
        "\nuse crate::{worker::{handle::WorkerRef, supervise::Guard}};\n",
    );
    let wrong = violations(&files);
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert!(wrong[0].contains("worker::supervise::Guard"), "{wrong:?}");
}

#[test]
fn a_path_through_a_root_reexport_is_refused() {
    let files = with("worker/cell.rs", "\nfn f(_: crate::GenRegistry<()>) {}\n");
    let wrong = violations(&files);
    assert_eq!(wrong.len(), 1, "{wrong:?}");
    assert!(wrong[0].contains("GenRegistry"), "{wrong:?}");
}

#[test]
fn a_super_path_that_climbs_above_is_refused() {
    let files = with(
        "primitives/evict/ghost.rs",
        "\nuse super::super::super::Spec;\n",
    );
    let wrong = violations(&files);
    assert_eq!(wrong.len(), 1, "{wrong:?}");
}

#[test]
fn comments_are_not_references() {
    let files = with(
        "primitives/queue.rs",
        "\n/// See [`GenRegistry`](crate::GenRegistry).\n// crate::registry::spec\n",
    );
    assert!(violations(&files).is_empty());
}
