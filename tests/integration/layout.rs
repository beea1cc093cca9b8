//! The layout is the design: each folder of `src/` is a layer that may use only the layers
//! its `mod.rs` names, no module imports a module that imports it back, and the core does
//! no I/O and reads no clock. Checked on the source, so a change that breaks it fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each layer and what it may use (besides itself), as the folders' `mod.rs` say.
const LAYERS: &[(&str, &[&str])] = &[
    ("core", &[]),
    ("system", &["core"]),
    ("output", &["core", "system"]),
    ("firewall", &["core"]),
    ("dataplane", &["core"]),
    ("fleet", &["core", "config", "firewall", "system"]),
    ("config", &["core", "system", "firewall", "dataplane"]),
    (
        "control",
        &["core", "config", "firewall", "dataplane", "system"],
    ),
    (
        "daemon",
        &[
            "core",
            "config",
            "control",
            "dataplane",
            "firewall",
            "fleet",
            "output",
            "system",
        ],
    ),
];

/// What the pure core must never call.
const NOT_IN_CORE: &[&str] = &[
    "std::fs",
    "std::process",
    "std::net::UdpSocket",
    "std::net::TcpStream",
    "Instant::now",
    "SystemTime::now",
    "netlink",
    "nftnl",
    "nfq::",
    "libc::",
];

/// Every module of the library (`a::b` for src/a/b.rs and src/a/b/mod.rs) and its code
/// without the tests.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_stem().unwrap().to_str().unwrap().to_string();
            if p.is_dir() {
                walk(&p, &format!("{prefix}{name}::"), out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let module = if name == "mod" {
                    prefix.trim_end_matches("::").to_string()
                } else {
                    format!("{prefix}{name}")
                };
                let text = std::fs::read_to_string(&p).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap().to_string();
                out.insert(module, code);
            }
        }
    }
    let mut out = BTreeMap::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    walk(&src, "", &mut out);
    for root in ["lib", "main", "cli"] {
        out.remove(root);
    }
    out
}

/// The longest known module that `path` (segments) names.
fn resolve(path: &[&str], known: &BTreeMap<String, String>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| known.contains_key(m))
}

/// The modules each module refers to: `crate::…` and `super::…` paths, and a `mod.rs`'s
/// `use child::…`. Comments are left out.
fn imports(known: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let ident = |s: &str| -> Vec<String> {
        s.split("::")
            .map(|seg| {
                seg.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|seg| !seg.is_empty())
            .collect()
    };
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in known {
        let segs: Vec<&str> = module.split("::").collect();
        let mut targets = BTreeSet::new();
        for line in code.lines() {
            let line = line.split("//").next().unwrap();
            for (i, _) in line.match_indices("crate::") {
                let path = ident(&line[i + "crate::".len()..]);
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                targets.extend(resolve(&path, known));
            }
            for (i, _) in line.match_indices("super::") {
                if line[..i].ends_with("super::") {
                    continue; // the inner part of super::super::
                }
                let mut rest = &line[i..];
                let mut ups = 0;
                while let Some(r) = rest.strip_prefix("super::") {
                    rest = r;
                    ups += 1;
                }
                let base = &segs[..segs.len().saturating_sub(ups)];
                let tail = ident(rest);
                let path: Vec<&str> = base
                    .iter()
                    .copied()
                    .chain(tail.iter().map(String::as_str))
                    .collect();
                targets.extend(resolve(&path, known));
            }
            // `use child::…` in a module with children.
            if let Some(rest) = line.trim().strip_prefix("use ") {
                let path = ident(rest);
                if let Some(first) = path.first() {
                    let child = format!("{module}::{first}");
                    if known.contains_key(&child) {
                        let full: Vec<String> = segs
                            .iter()
                            .map(|s| s.to_string())
                            .chain(path.iter().cloned())
                            .collect();
                        let full: Vec<&str> = full.iter().map(String::as_str).collect();
                        targets.extend(resolve(&full, known));
                    }
                }
            }
        }
        targets.remove(module);
        out.insert(module.clone(), targets);
    }
    out
}

fn layer(module: &str) -> &str {
    module.split("::").next().unwrap()
}

#[test]
fn each_layer_uses_only_the_layers_below_it() {
    let known = modules();
    let graph = imports(&known);
    let mut wrong = Vec::new();
    for (from, targets) in &graph {
        let allowed = LAYERS
            .iter()
            .find(|(l, _)| *l == layer(from))
            .unwrap_or_else(|| panic!("{from}: a folder not in LAYERS"))
            .1;
        for to in targets {
            if layer(to) != layer(from) && !allowed.contains(&layer(to)) {
                wrong.push(format!("{from} uses {to}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    // The graph is not empty: the check would catch something.
    assert!(
        graph["daemon::responder"].contains("core::policy"),
        "{graph:?}"
    );
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = imports(&modules());
    // Any cycle, found by walking from every module.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            return Some(path[i..].iter().cloned().chain([m.to_string()]).collect());
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Some(cycle) = visit(m, &graph, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn the_core_does_no_io_and_reads_no_clock() {
    let mut found = Vec::new();
    for (module, code) in modules() {
        if layer(&module) != "core" {
            continue;
        }
        for (n, line) in code.lines().enumerate() {
            let line = line.split("//").next().unwrap();
            for bad in NOT_IN_CORE {
                if line.contains(bad) {
                    found.push(format!("{module}:{}: {bad}", n + 1));
                }
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn every_folder_says_what_it_may_use() {
    for (layer, allowed) in LAYERS {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src")
            .join(layer)
            .join("mod.rs");
        let text = std::fs::read_to_string(&path).unwrap();
        let said = text
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            said.contains("May use:"),
            "{}: no 'May use:'",
            path.display()
        );
        for a in *allowed {
            assert!(
                said.contains(&format!("`{a}`")),
                "{}: 'May use:' does not name `{a}`",
                path.display()
            );
        }
    }
}
