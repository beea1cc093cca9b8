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
    ("firewall", &["core", "system"]),
    ("dataplane", &["core", "system"]),
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

/// Where each `{` or `}` of code (not of a string, char or comment) is, with +1 or -1.
fn braces(text: &str) -> Vec<(usize, i32)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            // r"…", r#"…"#, br"…": ends at the quote and as many #.
            b'r' if (i == 0 || !b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'b')
                && matches!(b.get(i + 1), Some(b'"' | b'#')) =>
            {
                let mut j = i + 1;
                while b.get(j) == Some(&b'#') {
                    j += 1;
                }
                if b.get(j) == Some(&b'"') {
                    let end = format!("\"{}", "#".repeat(j - i - 1));
                    i = text[j + 1..]
                        .find(&end)
                        .map_or(b.len(), |k| j + 1 + k + end.len() - 1);
                }
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            // A char literal ('x', '\n', '{'), not a lifetime ('a).
            b'\'' if b.get(i + 1) == Some(&b'\\') => {
                i += 2;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
            }
            b'\'' if b.get(i + 2) == Some(&b'\'') => i += 2,
            b'{' => out.push((i, 1)),
            b'}' => out.push((i, -1)),
            _ => {}
        }
        i += 1;
    }
    out
}

/// `text` without its test modules: each `#[cfg(test)]` on a `mod … { … }` goes with the
/// whole module. Other `#[cfg(test)]` items (a test-only constant, a method) stay: what
/// follows them is checked like the rest.
fn without_test_modules(text: &str) -> String {
    let braces = braces(text);
    let mut out = String::new();
    let mut from = 0;
    for (at, _) in text.match_indices("#[cfg(test)]") {
        if at < from {
            continue;
        }
        let rest = text[at + "#[cfg(test)]".len()..].trim_start();
        let rest = match rest.strip_prefix("pub") {
            // pub, pub(crate), pub(super)
            Some(r) => r.trim_start_matches(|c: char| c == '(' || c.is_alphabetic() || c == ')'),
            None => rest,
        }
        .trim_start();
        let Some(decl) = rest.strip_prefix("mod ") else {
            continue;
        };
        let name_end = decl
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(decl.len());
        if !decl[name_end..].trim_start().starts_with('{') {
            continue; // `mod tests;`: a file of its own
        }
        let open = text.len() - decl.len() + name_end + decl[name_end..].find('{').unwrap();
        let mut depth = 0;
        let close = braces
            .iter()
            .skip_while(|(i, _)| *i < open)
            .find(|(_, d)| {
                depth += d;
                depth == 0
            })
            .map_or(text.len(), |(i, _)| i + 1);
        out.push_str(&text[from..at]);
        from = close;
    }
    out.push_str(&text[from..]);
    out
}

#[test]
fn only_test_modules_are_left_out() {
    let text = r#"
fn a() {}
#[cfg(test)]
const ONLY_IN_TESTS: u32 = 1;
fn b() { let s = "}"; let c = '}'; let r = r"{"; } // }
/* } */
#[cfg(test)]
mod tests {
    fn t<'a>(x: &'a str) { if true { let _ = "{"; } }
}
fn c() {}
#[cfg(test)]
pub(crate) mod helpers { fn h() {} }
fn d() {}
"#;
    let kept = without_test_modules(text);
    for f in ["fn a()", "ONLY_IN_TESTS", "fn b()", "fn c()", "fn d()"] {
        assert!(kept.contains(f), "{f} lost: {kept}");
    }
    assert!(
        !kept.contains("fn t<") && !kept.contains("fn h()"),
        "{kept}"
    );
    // The modules the old cut (at the first #[cfg(test)]) left unread are read whole.
    let known = modules();
    assert!(known["core::policy"].lines().count() > 700, "core::policy");
    assert!(known["fleet::spool"].lines().count() > 150, "fleet::spool");
    assert!(known.values().all(|code| !code.contains("mod tests")));
}

/// Every module of the library (`a::b` for src/a/b.rs and src/a/b/mod.rs) and its code
/// without the test modules.
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
                out.insert(module, without_test_modules(&text));
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

/// What every namespace test carries: `cargo test` as a normal user reports it ignored,
/// with the reason, instead of failing; scripts/test runs it (`--include-ignored`).
const NEEDS_ROOT: &str = r#"#[ignore = "needs root and network namespaces: scripts/test runs it"]"#;

/// The name of the function a line declares, if it does.
fn declares(line: &str) -> Option<&str> {
    let l = line.trim_start();
    let l = l
        .strip_prefix("pub(crate) ")
        .or_else(|| l.strip_prefix("pub "))
        .unwrap_or(l);
    let rest = l.strip_prefix("fn ")?;
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    Some(&rest[..end])
}

/// Whether `body` calls the free function `name`.
fn calls(body: &str, name: &str) -> bool {
    body.match_indices(&format!("{name}(")).any(|(i, _)| {
        let before = body[..i].chars().next_back();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '.')
    })
}

#[test]
fn every_namespace_test_says_it_needs_root() {
    // Every function of the integration tests but the lab's own: (file, name, the
    // attribute and doc lines above it, its body without comments). A body runs to the
    // next function.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration");
    let mut fns: Vec<(String, String, String, String)> = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let file = p.file_name().unwrap().to_str().unwrap().to_string();
        if file == "lab.rs" || p.extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let starts: Vec<usize> = (0..lines.len())
            .filter(|i| declares(lines[*i]).is_some())
            .collect();
        for (k, &i) in starts.iter().enumerate() {
            let end = starts.get(k + 1).copied().unwrap_or(lines.len());
            let above = lines[..i]
                .iter()
                .rev()
                .take_while(|l| {
                    l.trim_start().starts_with("#[") || l.trim_start().starts_with("///")
                })
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join("\n");
            let body = lines[i + 1..end]
                .iter()
                .map(|l| l.split("//").next().unwrap())
                .collect::<Vec<_>>()
                .join("\n");
            let name = declares(lines[i]).unwrap().to_string();
            fns.push((file.clone(), name, above, body));
        }
    }
    // The functions that build a lab, directly or through others (spelled in two parts so
    // that this test's own body does not count).
    let builds = [concat!("Lab::", "new("), concat!("require_", "root(")];
    let mut root: BTreeSet<&str> = BTreeSet::new();
    loop {
        let before = root.len();
        for (_, name, _, body) in &fns {
            if !root.contains(name.as_str())
                && (builds.iter().any(|b| body.contains(b)) || root.iter().any(|r| calls(body, r)))
            {
                root.insert(name);
            }
        }
        if root.len() == before {
            break;
        }
    }
    let tests = fns.iter().filter(|f| f.2.contains("#[test]"));
    let unmarked: Vec<String> = tests
        .clone()
        .filter(|f| root.contains(f.1.as_str()) && !f.2.contains(NEEDS_ROOT))
        .map(|f| format!("{}: {}", f.0, f.1))
        .collect();
    assert!(
        unmarked.is_empty(),
        "namespace tests without {NEEDS_ROOT}: {unmarked:#?}"
    );
    // And the marker hides no test that could run without root.
    let hidden: Vec<String> = tests
        .clone()
        .filter(|f| !root.contains(f.1.as_str()) && f.2.contains(NEEDS_ROOT))
        .map(|f| format!("{}: {}", f.0, f.1))
        .collect();
    assert!(hidden.is_empty(), "marked, but build no lab: {hidden:#?}");
    // The check sees what it should: a test through a helper, and the tests without a lab.
    assert!(root.contains("every_ipv4_scan_type_is_blocked"));
    assert!(tests.count() > root.len() / 2);
}
