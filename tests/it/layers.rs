//! The source tree keeps its layers (ARCHITECTURE.md, "Invariants"): each top-level
//! module imports only the layers below it, no modules import each other in a circle,
//! and each third-party system is imported by its one module. Read from the sources, so
//! a `use` that breaks the map fails here, naming the file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, bottom up, and the top-level modules each may import besides itself.
const ALLOWED: &[(&str, &[&str])] = &[
    ("sample", &[]),
    ("release", &[]),
    ("fs", &["release"]),
    ("swarm", &["release", "fs"]),
    ("mount", &["release", "fs", "swarm"]),
    ("cmd", &["release", "fs", "swarm", "mount", "sample"]),
];

/// Third-party crates that one module alone may import, and that module's path prefix.
const ONLY_IN: &[(&str, &str)] = &[
    ("librqbit", "swarm/"),
    ("librqbit_core", "swarm/"),
    ("fuser", "mount/fuse.rs"),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a source file: `mount/fuse.rs` -> [mount, fuse], `fs/mod.rs` -> [fs].
fn module_of(rel: &Path) -> Vec<String> {
    let mut m: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if m.last().is_some_and(|l| l == "mod" || l == "lib") {
        m.pop();
    }
    m
}

/// The code of a file without comments, doc comments and test modules' `super::*`.
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path the code names after `root::` (`crate` or `super`), as segment lists; a
/// brace group (`super::{a, b::c}`) gives one path per item.
fn paths_after(code: &str, root: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let pat = format!("{root}::");
    let mut from = 0;
    while let Some(i) = code[from..].find(&pat) {
        let start = from + i;
        from = start + pat.len();
        if code[..start].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let rest = &code[from..];
        let items: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group[..group.find('}').unwrap_or(group.len())]
                .split(',')
                .collect(),
            None => vec![rest],
        };
        for item in items {
            let segs: Vec<String> = item
                .trim()
                .split("::")
                .map(|s| s.chars().take_while(|&c| is_ident(c)).collect::<String>())
                .take_while(|s| !s.is_empty())
                .collect();
            if !segs.is_empty() {
                out.push(segs);
            }
        }
    }
    out
}

/// The longest prefix of `path` that names a module of the crate.
fn resolve(path: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|p| modules.contains(p))
}

struct Crate {
    /// Module -> the modules its file names (not itself, its ancestors or descendants).
    edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
    /// Module -> its file, relative to src/.
    files: BTreeMap<Vec<String>, PathBuf>,
    texts: Vec<(PathBuf, String)>,
}

fn read_crate() -> Crate {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut by_module = BTreeMap::new();
    let mut texts = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(src()).unwrap().to_path_buf();
        if rel == Path::new("main.rs") {
            continue;
        }
        by_module.insert(module_of(&rel), rel.clone());
        texts.push((rel, code(&std::fs::read_to_string(f).unwrap())));
    }
    let modules: BTreeSet<Vec<String>> = by_module.keys().cloned().collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (rel, text) in &texts {
        let me = module_of(rel);
        let mut named = Vec::new();
        for p in paths_after(text, "crate") {
            named.extend(resolve(&p, &modules));
        }
        for p in paths_after(text, "super") {
            if p.first().is_some_and(|s| s == "super") {
                continue;
            }
            let mut full = me[..me.len().saturating_sub(1)].to_vec();
            full.extend(p);
            named.extend(resolve(&full, &modules));
        }
        let set = edges.entry(me.clone()).or_default();
        for n in named {
            if !n.starts_with(&me) && !me.starts_with(&n) {
                set.insert(n);
            }
        }
    }
    Crate {
        edges,
        files: by_module,
        texts,
    }
}

#[test]
fn each_layer_imports_only_the_layers_below_it() {
    let c = read_crate();
    let mut wrong = Vec::new();
    for (from, tos) in &c.edges {
        let Some(top) = from.first() else { continue };
        let allowed = ALLOWED
            .iter()
            .find(|(m, _)| m == top)
            .unwrap_or_else(|| {
                panic!("src/{top}: a top-level module the layer map (ALLOWED) does not know")
            })
            .1;
        for to in tos {
            if &to[0] != top && !allowed.contains(&to[0].as_str()) {
                wrong.push(format!(
                    "src/{} imports {} (a {} module may import only {:?})",
                    c.files[from].display(),
                    to.join("::"),
                    top,
                    allowed
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "layers broken:\n{}", wrong.join("\n"));
    // The map is not vacuous: the layers do import each other where ARCHITECTURE says.
    let mount_fuse = vec!["mount".to_string(), "fuse".to_string()];
    assert!(c.edges[&mount_fuse].contains(&vec!["fs".to_string()]));
}

#[test]
fn no_modules_import_each_other_in_a_circle() {
    let c = read_crate();
    // Project every edge onto the children of the two modules' closest common ancestor:
    // mount::fuse -> mount::status is an edge between siblings; mount::fuse -> fs is an
    // edge between the top-level modules mount and fs.
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (from, tos) in &c.edges {
        for to in tos {
            let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
            let a = from[..=common.min(from.len() - 1)].to_vec();
            let b = to[..=common.min(to.len() - 1)].to_vec();
            if a != b {
                graph.entry(a).or_default().insert(b);
            }
        }
    }
    fn visit(
        n: &Vec<String>,
        g: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<Vec<String>>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(n.clone());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.clone());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.clone());
        None
    }
    let mut done = BTreeSet::new();
    for n in graph.keys() {
        if let Some(cycle) = visit(n, &graph, &mut Vec::new(), &mut done) {
            let names: Vec<String> = cycle.iter().map(|m| m.join("::")).collect();
            panic!(
                "modules import each other in a circle: {}",
                names.join(" -> ")
            );
        }
    }
    assert!(graph.len() > 5, "the import graph was not read: {graph:?}");
}

#[test]
fn each_third_party_system_is_imported_by_its_one_module() {
    let c = read_crate();
    let mut wrong = Vec::new();
    for (rel, text) in &c.texts {
        for (krate, home) in ONLY_IN {
            let named = text
                .match_indices(&format!("{krate}::"))
                .any(|(i, _)| !text[..i].chars().next_back().is_some_and(is_ident));
            if named && !rel.to_string_lossy().starts_with(home) {
                wrong.push(format!(
                    "src/{} names {krate} (only src/{home} may)",
                    rel.display()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
