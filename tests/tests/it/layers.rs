//! The module graphs of the node and the gateway have no cycles (ARCHITECTURE.md, "Layers").
//!
//! A module depends on another when its non-test code names `crate::<other>`. The check reads
//! the sources, so it runs without building anything and names the cycle it finds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules of the crate at `src` and those each one names.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    collect_sources(src, &mut files);
    assert!(!files.is_empty(), "no sources under {}", src.display());
    for file in files {
        let rel = file.strip_prefix(src).expect("under src");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .expect("a file name")
            .trim_end_matches(".rs")
            .to_string();
        if top == "main" || top == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        // Unit tests may reach anywhere; only the code that ships counts.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let deps = graph.entry(top.clone()).or_default();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (at, _) in line.match_indices("crate::") {
                let name: String = line[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if !name.is_empty() && name != top {
                    deps.insert(name);
                }
            }
        }
    }
    graph
}

fn collect_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source dir") {
        let path = entry.expect("a dir entry").path();
        if path.is_dir() {
            collect_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A cycle of `graph`, as the modules along it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(m) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = path
                    .iter()
                    .position(|p| p == m)
                    .expect("open modules are on the path");
                let mut cycle = path[from..].to_vec();
                cycle.push(m.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(m.to_string(), Mark::Open);
        path.push(m.to_string());
        for dep in graph.get(m).into_iter().flatten() {
            if graph.contains_key(dep) {
                if let Some(c) = visit(dep, graph, marks, path) {
                    return Some(c);
                }
            }
        }
        path.pop();
        marks.insert(m.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for m in graph.keys() {
        if let Some(c) = visit(m, graph, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

fn workspace(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// The check itself finds a cycle where there is one.
#[test]
fn a_cycle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a", "d"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(m, d)| (m.to_string(), d.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    let mut acyclic = graph.clone();
    acyclic.get_mut("c").expect("c").remove("a");
    assert_eq!(find_cycle(&acyclic), None);
}

/// No module of `node/src` depends, through others, on itself.
#[test]
fn the_node_modules_have_no_cycle() {
    let graph = module_graph(&workspace("node/src"));
    assert!(
        graph.contains_key("state") && graph.contains_key("driver"),
        "{graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("node/src has an import cycle: {}", cycle.join(" -> "));
    }
}

/// No module of `gateway/src` depends, through others, on itself.
#[test]
fn the_gateway_modules_have_no_cycle() {
    let graph = module_graph(&workspace("gateway/src"));
    assert!(
        graph.contains_key("api") && graph.contains_key("context"),
        "{graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("gateway/src has an import cycle: {}", cycle.join(" -> "));
    }
}
