//! The layout rules of ARCHITECTURE.md, checked over sda-core's own sources: the core knows nothing
//! of C (no `repr(C)`, no `extern "C"`, no cbindgen annotation, no C status name), its top-level
//! modules import each other without a cycle, and no source file is over 1,000 lines (the test
//! module at a file's end apart).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest a source file may be, its `#[cfg(test)]` module apart.
const MAX_LINES: usize = 1000;

/// Every `.rs` file under `dir`, recursively, in a stable order.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The file's text before its test module (by convention the last item of a file).
fn code_part(text: &str) -> &str {
    match text.find("\n#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// The top-level module a file belongs to (`config/keys.rs` → `config`; `lib.rs` → `lib`).
fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules a piece of code names through `crate::` paths, grouped imports included
/// (`use crate::{a::X, b};`). Comments are skipped.
fn crate_references(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start();
        if line.starts_with("//") {
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // Only the first level of the group names modules: `{a::X, b::{c, d}}` → a, b.
                let mut depth = 0;
                let mut name = String::new();
                let mut at_name = true;
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => at_name = true,
                        c if c.is_whitespace() && name.is_empty() => {}
                        c if at_name && (c.is_alphanumeric() || c == '_') => name.push(c),
                        _ => {
                            if !name.is_empty() {
                                out.insert(std::mem::take(&mut name));
                            }
                            at_name = false;
                        }
                    }
                }
                if !name.is_empty() {
                    out.insert(name);
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
    }
    out
}

/// The import graph between sda-core's top-level modules (tests apart).
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = src_dir();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src) {
        let module = top_module(&src, &file);
        let text = std::fs::read_to_string(&file).unwrap();
        let refs = crate_references(code_part(&text));
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(refs.into_iter().filter(|r| *r != module));
    }
    graph.remove("lib");
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for targets in graph.values_mut() {
        targets.retain(|t| modules.contains(t));
    }
    graph
}

/// A cycle in `graph`, as the path of modules that closes it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Active) => {
                let start = path.iter().position(|n| n == node).unwrap();
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Active);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn the_cycle_finder_finds_a_cycle_and_accepts_a_tree() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    assert_eq!(
        find_cycle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])),
        None
    );
    let cycle = find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])).unwrap();
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
    let refs =
        crate_references("use crate::{a::X, b::{c, d}, e};\nlet x = crate::f::g();\n// crate::h");
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        vec!["a", "b", "e", "f"]
    );
}

#[test]
fn no_import_cycle_between_the_cores_modules() {
    let graph = module_graph();
    assert!(graph.len() > 10, "the module graph was not read: {graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle between sda-core modules: {}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_core_knows_nothing_of_c() {
    let forbidden = ["repr(C)", "extern \"C\"", "cbindgen", "SDA_OK", "SDA_ERR_"];
    let mut found = Vec::new();
    for file in rust_files(&src_dir()) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            for word in forbidden {
                if line.contains(word) {
                    found.push(format!("{}:{}: {word}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "C-ABI matter in sda-core:\n{}",
        found.join("\n")
    );
}

#[test]
fn no_source_file_is_over_a_thousand_lines() {
    let mut long = Vec::new();
    for file in rust_files(&src_dir()) {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines = code_part(&text).lines().count();
        if lines > MAX_LINES {
            long.push(format!("{}: {lines} lines", file.display()));
        }
    }
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

/// Everything that differs between operating systems lives in `src/platform/`; elsewhere a
/// platform-specific item needs a `// platform:` comment above it saying why (it covers the item).
#[test]
fn only_the_platform_layer_knows_the_os() {
    let forbidden = [
        "cfg(target_os",
        "cfg(unix",
        "cfg(not(unix",
        "cfg(windows",
        "cfg(not(windows",
        "cfg(target_family",
        "cfg(target_vendor",
        "cfg_attr(target_os",
        "cfg_attr(not(target_os",
        "std::os::unix",
        "std::os::windows",
        "std::os::linux",
        "std::os::macos",
        "libc::",
    ];
    let platform = src_dir().join("platform");
    let mut found = Vec::new();
    for file in rust_files(&src_dir()) {
        if file.starts_with(&platform) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        // A `// platform:` comment covers the item after it: up to the `}` at its own indentation.
        let mut covered: Option<usize> = None;
        for (n, line) in text.lines().enumerate() {
            let indent = line.len() - line.trim_start().len();
            if line.trim_start().starts_with("// platform:") {
                covered = Some(indent);
                continue;
            }
            if covered.is_none() {
                for word in forbidden {
                    if line.contains(word) {
                        found.push(format!("{}:{}: {word}", file.display(), n + 1));
                    }
                }
            }
            if covered == Some(indent) && line.trim_start().starts_with('}') {
                covered = None;
            }
        }
    }
    assert!(
        found.is_empty(),
        "OS-specific code outside crates/sda-core/src/platform/ (move it there, or say why in a \
         `// platform:` comment on the line above):\n{}",
        found.join("\n")
    );
}
