//! The layers point one way (see ARCHITECTURE.md, "Layers"): this test reads every
//! `crate::…` path in `src/` and checks the graph of top-level modules.
//!
//! - No cycles between top-level modules.
//! - The core (`admin`, `auth`, `broker`, `vhost`, `exchange`, `queue`, `message`,
//!   `memory`, `disk`)
//!   never names `amqp`: it reaches channels only through the traits it defines.
//! - The store names nothing of the broker above it (only the leaf `util`).
//! - The management HTTP API sits beside the AMQP layer: it calls the core and never
//!   names `amqp`; neither the core nor `amqp` names it.
//! - The cluster layer (Raft) implements the core's seams (`membership::ClusterView`,
//!   `queue::quorum::ReplicaLog`): the core never names it, and it names neither the
//!   AMQP layer nor the management API.
//!
//! `cargo test --test layering -- --nocapture` prints the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules of the core: they must not depend on the AMQP layer.
const CORE: &[&str] = &[
    "admin",
    "auth",
    "broker",
    "clients",
    "membership",
    "vhost",
    "exchange",
    "queue",
    "message",
    "memory",
    "disk",
    "stats",
    "policy",
];
/// What the store may use.
const STORE_MAY_USE: &[&str] = &["util"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/queue/ready.rs` → `queue`), or None
/// for the crate root, the binary and the binaries' sources.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" | "bin" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// Every `crate::name` in `text`, including inside `use crate::{a, b::c}` groups.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for part in inner.split(',') {
                    let name = ident(part.trim());
                    if !name.is_empty() {
                        refs.insert(name);
                    }
                }
            } else {
                let name = ident(after);
                if !name.is_empty() {
                    refs.insert(name);
                }
            }
            rest = after;
        }
    }
    refs
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let Some(module) = top_module(&src, &f) else { continue };
        let text = std::fs::read_to_string(&f).expect("readable source");
        let deps = graph.entry(module.clone()).or_default();
        for r in crate_refs(&text) {
            if r != module {
                deps.insert(r);
            }
        }
    }
    graph
}

/// A cycle through `start`, if any (depth-first search).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = path.iter().position(|p| p == node) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in g.get(node).into_iter().flatten() {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(c) = visit(graph, node, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn top_level_modules_form_no_cycle() {
    let g = graph();
    for (m, deps) in &g {
        println!("{m} -> {}", deps.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    assert!(g.contains_key("amqp") && g.contains_key("queue"), "the source tree was read: {g:?}");
    if let Some(cycle) = find_cycle(&g) {
        panic!("import cycle between top-level modules: {}", cycle.join(" -> "));
    }
}

#[test]
fn core_does_not_know_the_amqp_layer() {
    let g = graph();
    for m in CORE {
        let deps = g.get(*m).unwrap_or_else(|| panic!("module {m} exists"));
        assert!(!deps.contains("amqp"), "{m} imports from amqp: {deps:?}");
        assert!(!deps.contains("server"), "{m} imports from server: {deps:?}");
        assert!(!deps.contains("management"), "{m} imports from management: {deps:?}");
        assert!(!deps.contains("cluster"), "{m} imports from cluster: {deps:?}");
    }
}

#[test]
fn the_cluster_layer_plugs_into_the_core_seams() {
    let g = graph();
    let deps = g.get("cluster").expect("module cluster exists");
    assert!(deps.contains("membership"), "cluster implements the core's ClusterView: {deps:?}");
    for above in ["amqp", "management", "server"] {
        assert!(!deps.contains(above), "cluster imports from {above}: {deps:?}");
    }
}

#[test]
fn management_sits_beside_the_amqp_layer() {
    let g = graph();
    let deps = g.get("management").expect("module management exists");
    assert!(!deps.contains("amqp"), "management imports from amqp: {deps:?}");
    assert!(deps.contains("admin"), "management calls the admin API: {deps:?}");
    let amqp = g.get("amqp").expect("module amqp exists");
    assert!(!amqp.contains("management"), "amqp imports from management: {amqp:?}");
}

#[test]
fn store_depends_on_nothing_above_it() {
    let g = graph();
    let deps = g.get("store").expect("module store exists");
    let extra: Vec<_> = deps.iter().filter(|d| !STORE_MAY_USE.contains(&d.as_str())).collect();
    assert!(extra.is_empty(), "store imports {extra:?}");
}

#[test]
fn the_checker_sees_cycles_and_groups() {
    let refs = crate_refs("use crate::{queue::Queue, vhost};\nlet x = crate::amqp::frame::f(); // crate::nope");
    assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["amqp", "queue", "vhost"]);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    assert!(find_cycle(&g).is_none());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&g), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
}
