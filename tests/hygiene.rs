//! Crate hygiene, checked from the lock file so that it cannot drift: the library's
//! default-feature dependency tree stays lean (no daemon dependency, at most
//! [`DEPENDENCY_BUDGET`] crates), and the workspace's `rust-version` is the highest
//! `rust-version` among the locked dependencies of its packages (those compiled for the
//! host's platform); no two files of the library, the daemon or the e2e bench import
//! each other, directly or around a circle; and only `src/session/io/` names rumqttc, with
//! what reaches into its event loops' fields in `src/session/io/link/internals.rs` alone.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Crates in `cargo tree -p mqtt-sessions -e normal` with the default features, the
/// library itself included. Measured at 178 (0.1.0: 284 when the daemon was a default
/// feature of this package); the margin absorbs a patch release adding a crate or two.
/// Raise it only for a dependency worth its weight, and say so in the CHANGELOG.
const DEPENDENCY_BUDGET: usize = 185;

/// Crates only the daemon needs: never in the library's default tree.
const DAEMON_ONLY: [&str; 5] = ["clap", "toml", "tracing-subscriber", "rumqttd", "awc"];

fn cargo(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // These commands run offline (a test must not download); on a machine that never
    // fetched this workspace's crates they cannot, and say so.
    let hint = if stderr.contains("--offline") {
        "\nThe crates of Cargo.lock are not all downloaded: run `cargo fetch --locked` \
         (scripts/test does) and test again."
    } else {
        ""
    };
    assert!(out.status.success(), "cargo {args:?}: {stderr}{hint}");
    String::from_utf8(out.stdout).unwrap()
}

/// The target triple of the host (`rustc -vV`), whose crates a build downloads.
fn host_triple() -> String {
    let out = Command::new("rustc").arg("-vV").output().unwrap();
    assert!(out.status.success(), "rustc -vV failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .unwrap()
        .to_string()
}

/// The library's normal dependency tree with `features`: one `name vX.Y.Z` entry per
/// crate (repeated subtrees, marked `(*)`, count once).
fn library_tree(features: &[&str]) -> BTreeSet<String> {
    let mut args = vec![
        "tree",
        "-p",
        "mqtt-sessions",
        "-e",
        "normal",
        "--prefix",
        "none",
        "--locked",
        "--offline",
    ];
    args.extend_from_slice(features);
    cargo(&args)
        .lines()
        .map(|l| l.trim_end_matches(" (*)").trim_end_matches(" (proc-macro)"))
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The crate names of a [`library_tree`].
fn crate_names(tree: &BTreeSet<String>) -> BTreeSet<&str> {
    tree.iter()
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

#[test]
fn the_library_default_tree_has_no_daemon_dependency_and_stays_in_budget() {
    let crates = library_tree(&[]);
    let names = crate_names(&crates);
    for name in DAEMON_ONLY {
        assert!(
            !names.contains(name),
            "{name} is in the library's default tree"
        );
    }
    eprintln!("library default-feature tree: {} crates", crates.len());
    assert!(
        crates.len() <= DEPENDENCY_BUDGET,
        "{} crates in the library's default tree, budget {DEPENDENCY_BUDGET}:\n{}",
        crates.len(),
        crates.iter().cloned().collect::<Vec<_>>().join("\n")
    );
    // Without `http`, actix-web goes too.
    let bare = library_tree(&["--no-default-features"]);
    assert!(!crate_names(&bare).contains("actix-web"), "{bare:?}");
}

fn version(s: &str) -> Vec<u64> {
    s.split('.').map(|p| p.parse().unwrap()).collect()
}

#[test]
fn rust_version_is_the_highest_of_the_locked_dependencies() {
    // Filtered to the host's platform: unfiltered, `cargo metadata` needs the source of
    // every platform's crates (Windows' among them), which a build here never downloads.
    let host = host_triple();
    let meta: Value = serde_json::from_str(&cargo(&[
        "metadata",
        "--format-version",
        "1",
        "--locked",
        "--offline",
        "--filter-platform",
        &host,
    ]))
    .unwrap();
    let packages: BTreeMap<&str, &Value> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    let nodes: BTreeMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let members: Vec<&str> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    // What building the workspace's packages compiles: normal and build dependencies,
    // transitively (dev-dependencies only build the tests).
    let mut seen = BTreeSet::new();
    let mut stack = members.clone();
    while let Some(id) = stack.pop() {
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let compiled = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null() || k["kind"] == "build");
            let pkg = dep["pkg"].as_str().unwrap();
            if compiled && !members.contains(&pkg) && seen.insert(pkg) {
                stack.push(pkg);
            }
        }
    }
    let (highest, by) = seen
        .iter()
        .filter_map(|id| {
            let p = packages[id];
            let rv = p["rust_version"].as_str()?;
            Some((version(rv), format!("{} {}", p["name"], p["version"])))
        })
        .max()
        .unwrap();
    let ours = env!("CARGO_PKG_RUST_VERSION");
    let mut ours_v = version(ours);
    ours_v.resize(highest.len().max(ours_v.len()), 0);
    let mut highest_v = highest.clone();
    highest_v.resize(ours_v.len(), 0);
    assert_eq!(
        ours_v, highest_v,
        "rust-version is {ours}, but the locked dependencies need {highest:?} ({by}): set \
         `rust-version` in [workspace.package] to it"
    );
}

// ---- No import circles between files ----
//
// Each crate's files form a graph: file A → file B when A names an item of B through a
// `crate::`, `super::` or `self::` path (in a `use` item or in code), resolved through the
// `use` bindings of the module it passes (so `crate::QoS` leads to `message.rs`, where
// `lib.rs` re-exports it from). A module file and the files of its own submodules are one
// unit (a parent declares its children; children may name their parent's items), so
// edges between them are not counted. Test modules (`#[cfg(test)] mod tests { .. }`) are
// left out. The check: no circle of such edges, in the library, the daemon and the e2e
// bench.

/// A file's module path from its crate root: `src/session/io/link/mod.rs` is
/// `["session", "io", "link"]`, `src/lib.rs` is `[]`.
type ModPath = Vec<String>;

/// A crate's files, the names each module binds with `use`, and the file edges.
struct FileGraph {
    files: BTreeMap<ModPath, std::path::PathBuf>,
    edges: BTreeMap<ModPath, BTreeMap<ModPath, BTreeSet<String>>>,
}

/// `text` with comments and the contents of string and char literals blanked (so that
/// paths and braces are only those of the code), and inline test modules removed.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(b' ');
        } else if rest.starts_with(b"r#\"") || rest.starts_with(b"r\"") {
            let hashes = rest[1..].iter().take_while(|&&c| c == b'#').count();
            let mut close = vec![b'"'];
            close.extend(std::iter::repeat_n(b'#', hashes));
            i += 2 + hashes;
            while i < b.len() && !b[i..].starts_with(&close) {
                i += 1;
            }
            i += close.len();
            out.extend_from_slice(b"\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.extend_from_slice(b"\"\"");
        } else if b[i] == b'\'' && (rest.get(1) == Some(&b'\\') || rest.get(2) == Some(&b'\'')) {
            // A char literal ('x', '\n', '\u{..}'); a lifetime has no closing quote.
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.extend_from_slice(b"' '");
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let mut code = String::from_utf8(out).unwrap();
    // Inline test modules: `#[cfg(test)]` then `mod name {` .. the matching `}`.
    while let Some(at) = code.find("#[cfg(test)]") {
        let after = code[at + 12..].trim_start();
        let Some(rest) = after.strip_prefix("mod ") else {
            code.replace_range(at..at + 12, "");
            continue;
        };
        let Some(open) = rest
            .find(['{', ';'])
            .filter(|&o| rest.as_bytes()[o] == b'{')
        else {
            code.replace_range(at..at + 12, "");
            continue;
        };
        let start = code.len() - rest.len() + open;
        let mut depth = 0;
        let mut end = code.len();
        for (k, c) in code[start..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = start + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        code.replace_range(at..end, "");
    }
    code
}

/// The paths of a `use` tree (`a::{b, c::{d as e, self}}`), each with the name it binds.
fn expand_use(tree: &str) -> Vec<(Vec<String>, String)> {
    fn split_top(s: &str) -> Vec<&str> {
        let (mut depth, mut from, mut parts) = (0, 0, Vec::new());
        for (i, c) in s.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&s[from..i]);
                    from = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[from..]);
        parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
    }
    fn walk(prefix: &[String], tree: &str, out: &mut Vec<(Vec<String>, String)>) {
        let tree = tree.trim();
        if let Some(open) = tree.find('{') {
            let head: Vec<String> = tree[..open]
                .split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            let inner = &tree[open + 1..tree.rfind('}').unwrap()];
            let p: Vec<String> = prefix.iter().cloned().chain(head).collect();
            for part in split_top(inner) {
                walk(&p, part, out);
            }
            return;
        }
        let (path, alias) = match tree.split_once(" as ") {
            Some((p, a)) => (p.trim(), Some(a.trim().to_string())),
            None => (tree, None),
        };
        let mut segs: Vec<String> = prefix.to_vec();
        segs.extend(path.split("::").map(|s| s.trim().to_string()));
        if segs.last().is_some_and(|s| s == "self") {
            segs.pop();
        }
        if segs.last().is_some_and(|s| s == "*") {
            return;
        }
        let name = alias.unwrap_or_else(|| segs.last().cloned().unwrap_or_default());
        out.push((segs, name));
    }
    let mut out = Vec::new();
    walk(&[], tree, &mut out);
    out
}

/// Whether `c` may be part of an identifier.
fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl FileGraph {
    /// Reads the crate whose root file (`lib.rs` or `main.rs`) is in `root`.
    fn read(root: &std::path::Path, root_file: &str) -> FileGraph {
        let mut files = BTreeMap::new();
        for path in rust_files(root) {
            let rel = path.strip_prefix(root).unwrap();
            let mut segs: ModPath = rel
                .iter()
                .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            let last = segs.last().unwrap().clone();
            if segs.len() == 1 && (last == "lib" || last == "main") {
                if last != root_file {
                    continue; // the other crate root of this folder (the daemon's binary)
                }
                segs.clear();
            } else if last == "mod" {
                segs.pop();
            }
            files.insert(segs, path);
        }
        let sources: BTreeMap<ModPath, String> = files
            .iter()
            .map(|(m, p)| (m.clone(), code_only(&std::fs::read_to_string(p).unwrap())))
            .collect();

        // Every module's `use` bindings (name → absolute path), and the paths it names.
        let mut bindings: BTreeMap<ModPath, BTreeMap<String, Vec<String>>> = BTreeMap::new();
        let mut named: BTreeMap<ModPath, Vec<Vec<String>>> = BTreeMap::new();
        let absolute = |module: &ModPath, segs: &[String]| -> Option<Vec<String>> {
            let mut base: Vec<String> = module.clone();
            let mut rest = segs;
            match rest.first().map(String::as_str) {
                Some("crate") => {
                    base.clear();
                    rest = &rest[1..];
                }
                Some("self") => rest = &rest[1..],
                Some("super") => {
                    while rest.first().is_some_and(|s| s == "super") {
                        base.pop()?;
                        rest = &rest[1..];
                    }
                }
                Some(first) => {
                    // A path from a child module declared here (`use handlers::X`).
                    let mut child = module.clone();
                    child.push(first.to_string());
                    if !files.contains_key(&child) {
                        return None; // another crate, or a name in scope
                    }
                }
                None => return None,
            }
            base.extend(rest.iter().cloned());
            Some(base)
        };
        for (module, code) in &sources {
            let mut code = code.clone();
            // `use` items.
            let mut from = 0;
            while let Some(k) = code[from..].find("use ") {
                let at = from + k;
                let before = code[..at].chars().next_back();
                if before.is_some_and(ident_char) {
                    from = at + 4;
                    continue;
                }
                let end = at + code[at..].find(';').unwrap();
                for (segs, name) in expand_use(&code[at + 4..end]) {
                    if let Some(abs) = absolute(module, &segs) {
                        bindings
                            .entry(module.clone())
                            .or_default()
                            .insert(name, abs.clone());
                        named.entry(module.clone()).or_default().push(abs);
                    }
                }
                code.replace_range(at..end, &" ".repeat(end - at));
                from = end;
            }
            // Paths in code.
            for start in ["crate::", "super::", "self::"] {
                let mut from = 0;
                while let Some(k) = code[from..].find(start) {
                    let at = from + k;
                    from = at + start.len();
                    if code[..at].chars().next_back().is_some_and(ident_char) {
                        continue;
                    }
                    let len = code[at..]
                        .find(|c: char| !(ident_char(c) || c == ':'))
                        .unwrap_or(code.len() - at);
                    let segs: Vec<String> = code[at..at + len]
                        .split("::")
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect();
                    if let Some(abs) = absolute(module, &segs) {
                        named.entry(module.clone()).or_default().push(abs);
                    }
                }
            }
        }

        // Resolve each named path to the file defining it, through `use` bindings.
        let resolve = |mut path: Vec<String>| -> ModPath {
            for _ in 0..16 {
                let k = (0..=path.len())
                    .rev()
                    .find(|&k| files.contains_key(&path[..k]))
                    .unwrap_or(0);
                let module = path[..k].to_vec();
                let via = path
                    .get(k)
                    .and_then(|name| bindings.get(&module).and_then(|b| b.get(name)));
                match via {
                    Some(target) if target[..] != path[..k + 1] => {
                        let mut next = target.clone();
                        next.extend(path[k + 1..].iter().cloned());
                        path = next;
                    }
                    _ => return module,
                }
            }
            path
        };
        let mut edges: BTreeMap<ModPath, BTreeMap<ModPath, BTreeSet<String>>> = BTreeMap::new();
        for (module, paths) in named {
            for path in paths {
                let target = resolve(path.clone());
                let related = target.starts_with(&module) || module.starts_with(&target);
                if !related {
                    edges
                        .entry(module.clone())
                        .or_default()
                        .entry(target)
                        .or_default()
                        .insert(path.last().cloned().unwrap_or_default());
                }
            }
        }
        FileGraph { files, edges }
    }

    fn file(&self, m: &ModPath) -> String {
        self.files[m].display().to_string()
    }

    /// Whether `from` uses a name of `to`.
    fn uses(&self, from: &str, to: &str) -> bool {
        let find = |f: &str| {
            self.files
                .iter()
                .find(|(_, p)| p.ends_with(f))
                .map(|(m, _)| m)
        };
        let (Some(a), Some(b)) = (find(from), find(to)) else {
            return false;
        };
        self.edges.get(a).is_some_and(|e| e.contains_key(b))
    }

    /// Every circle: the strongly connected components of more than one file, each with
    /// its edges (`a -> b: names`).
    fn circles(&self) -> Vec<Vec<String>> {
        // Tarjan's algorithm (recursive: the graphs are small).
        struct Tarjan<'g> {
            g: &'g FileGraph,
            index: BTreeMap<&'g ModPath, usize>,
            low: BTreeMap<&'g ModPath, usize>,
            stack: Vec<&'g ModPath>,
            on_stack: BTreeSet<&'g ModPath>,
            found: Vec<Vec<&'g ModPath>>,
        }
        impl<'g> Tarjan<'g> {
            fn visit(&mut self, v: &'g ModPath) {
                let n = self.index.len();
                self.index.insert(v, n);
                self.low.insert(v, n);
                self.stack.push(v);
                self.on_stack.insert(v);
                for w in self.g.edges.get(v).into_iter().flat_map(|e| e.keys()) {
                    if !self.index.contains_key(w) {
                        self.visit(w);
                        let lw = self.low[w];
                        let lv = self.low.get_mut(v).unwrap();
                        *lv = (*lv).min(lw);
                    } else if self.on_stack.contains(w) {
                        let iw = self.index[w];
                        let lv = self.low.get_mut(v).unwrap();
                        *lv = (*lv).min(iw);
                    }
                }
                if self.low[v] == self.index[v] {
                    let mut scc = Vec::new();
                    while let Some(w) = self.stack.pop() {
                        self.on_stack.remove(w);
                        scc.push(w);
                        if w == v {
                            break;
                        }
                    }
                    if scc.len() > 1 {
                        self.found.push(scc);
                    }
                }
            }
        }
        let mut t = Tarjan {
            g: self,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            found: Vec::new(),
        };
        for v in self.files.keys() {
            if !t.index.contains_key(v) {
                t.visit(v);
            }
        }
        t.found
            .iter()
            .map(|scc| {
                let members: BTreeSet<&ModPath> = scc.iter().copied().collect();
                let mut lines = Vec::new();
                for a in &members {
                    for (b, names) in &self.edges[*a] {
                        if members.contains(b) {
                            let names: Vec<&str> = names.iter().map(String::as_str).collect();
                            lines.push(format!(
                                "{} -> {}: {}",
                                self.file(a),
                                self.file(b),
                                names.join(", ")
                            ));
                        }
                    }
                }
                lines
            })
            .collect()
    }
}

#[test]
fn no_two_files_import_each_other_directly_or_around_a_circle() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // Each crate, with fewer edges than it has today (a reader that read nothing fails).
    let crates = [
        (root.join("src"), "lib", 150),
        (root.join("daemon/src"), "lib", 15),
        (root.join("benches/e2e"), "main", 12),
    ];
    let mut report = Vec::new();
    for (dir, root_file, at_least) in &crates {
        let g = FileGraph::read(dir, root_file);
        let edges: usize = g.edges.values().map(BTreeMap::len).sum();
        println!("{}: {} files, {edges} edges", dir.display(), g.files.len());
        assert!(
            edges >= *at_least,
            "{}: only {edges} edges read",
            dir.display()
        );
        for circle in g.circles() {
            report.push(circle.join("\n  "));
        }
    }
    // The reader sees what it must: a sample of known edges, and none that is not there.
    let lib = FileGraph::read(&root.join("src"), "lib");
    assert!(lib.uses("src/options.rs", "src/credentials.rs"));
    assert!(lib.uses("src/error.rs", "src/options.rs"));
    assert!(lib.uses("src/request.rs", "src/router/builder.rs"));
    assert!(
        lib.uses("src/session/handle.rs", "src/message.rs"),
        "through lib.rs' re-export"
    );
    assert!(!lib.uses("src/message.rs", "src/error.rs"));
    assert!(!lib.uses("src/session/state.rs", "src/event.rs"));
    assert!(
        report.is_empty(),
        "import circles:\n  {}",
        report.join("\n\n  ")
    );
}

#[test]
fn the_circle_check_finds_a_circle_and_ignores_a_module_and_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let w = |f: &str, text: &str| {
        let p = dir.path().join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w("lib.rs", "mod a;\nmod b;\nmod c;\npub use a::A;\n");
    // a -> b (code path), b -> c (use tree), c -> a (through lib.rs' re-export).
    w("a.rs", "pub struct A;\nfn f() { let _ = crate::b::B; }\n");
    w("b.rs", "use crate::{c::{self, C as Cee}};\npub struct B;\n");
    w(
        "c.rs",
        "// use crate::b::B; (a comment)\nuse crate::A;\npub struct C;\n\
         #[cfg(test)]\nmod tests {\n    use super::super::b::B;\n}\n",
    );
    // A module and its child naming each other: one unit, no circle.
    w("d/mod.rs", "mod e;\nuse self::e::E;\npub struct D;\n");
    w("d/e.rs", "use super::D;\npub struct E;\n");
    let g = FileGraph::read(dir.path(), "lib");
    let circles = g.circles();
    assert_eq!(circles.len(), 1, "{circles:?}");
    let text = circles[0].join("\n");
    assert!(
        text.contains("a.rs -> ") && text.contains("b.rs: B"),
        "{text}"
    );
    assert!(
        text.contains("b.rs -> ") && text.contains("c.rs: C, c"),
        "{text}"
    );
    assert!(
        text.contains("c.rs -> ") && text.contains("a.rs: A"),
        "{text}"
    );
    assert!(
        !g.uses("c.rs", "b.rs"),
        "a comment or a test module is not an import"
    );
}

/// The Rust files under `dir`, recursively, sorted.
fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
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

/// Whether `code` names `word` as a whole identifier.
fn names(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + word.len()..].chars().next();
        !before.is_some_and(ident_char) && !after.is_some_and(ident_char)
    })
}

/// The fields of rumqttc's event loops that are its internals (`pending`, `state`,
/// `network`) read or written in `code`: `.name` not followed by a call.
fn event_loop_fields(code: &str) -> Vec<&'static str> {
    ["pending", "state", "network"]
        .into_iter()
        .filter(|field| {
            let dotted = format!(".{field}");
            code.match_indices(&dotted).any(|(at, _)| {
                let after = code[at + dotted.len()..].trim_start();
                !after.starts_with(|c: char| ident_char(c) || c == '(')
            })
        })
        .collect()
}

#[test]
fn the_session_core_names_no_runtime_no_actor_and_no_mqtt_client() {
    let session = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/session");
    let core = rust_files(&session.join("core"));
    assert!(core.len() >= 4, "the core's files: {core:?}");
    let words = ["actix", "tokio", "rumqttc", "flume", "sled"];
    let named = |file: &std::path::Path| -> Vec<&str> {
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        words.into_iter().filter(|w| names(&code, w)).collect()
    };
    // The reader sees them where they are: the shell names actix and tokio.
    let shell = named(&session.join("actor.rs"));
    assert!(
        shell.contains(&"actix") && shell.contains(&"tokio"),
        "the reader no longer sees the shell's imports: {shell:?}"
    );
    let found: Vec<String> = core
        .iter()
        .filter_map(|f| {
            let n = named(f);
            (!n.is_empty()).then(|| format!("{}: {n:?}", f.display()))
        })
        .collect();
    assert!(
        found.is_empty(),
        "src/session/core/ decides in plain code; it names:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn only_the_session_io_folder_names_rumqttc_and_one_file_reaches_into_it() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let io = src.join("session/io");
    let internals = io.join("link/internals.rs");
    let (mut outside, mut inside, mut reaching) = (Vec::new(), 0, Vec::new());
    for file in rust_files(&src) {
        let code = code_only(&std::fs::read_to_string(&file).unwrap());
        if !names(&code, "rumqttc") {
            continue;
        }
        if !file.starts_with(&io) {
            outside.push(file.display().to_string());
            continue;
        }
        inside += 1;
        let fields = event_loop_fields(&code);
        if file != internals && !fields.is_empty() {
            reaching.push(format!("{}: {fields:?}", file.display()));
        }
    }
    // The reader sees what it must: rumqttc in the link's files, the internals where they are.
    assert!(
        inside >= 5,
        "rumqttc found in only {inside} files of {}",
        io.display()
    );
    let internal_code = code_only(&std::fs::read_to_string(&internals).unwrap());
    assert_eq!(
        event_loop_fields(&internal_code),
        ["pending", "state", "network"],
        "the field reader no longer sees {}",
        internals.display()
    );
    assert!(
        outside.is_empty(),
        "only src/session/io/ may name rumqttc; also named in:\n  {}",
        outside.join("\n  ")
    );
    assert!(
        reaching.is_empty(),
        "rumqttc's event-loop fields are used only in {}; also in:\n  {}",
        internals.display(),
        reaching.join("\n  ")
    );
}

#[test]
fn the_rumqttc_readers_see_names_and_fields_not_their_lookalikes() {
    assert!(names("use rumqttc::v5;", "rumqttc"));
    assert!(!names("use my_rumqttc::v5; let rumqttc_x = 1;", "rumqttc"));
    assert!(!names(
        &code_only("// rumqttc\nlet a = \"rumqttc\";"),
        "rumqttc"
    ));
    assert_eq!(
        event_loop_fields("el.pending.extend(x); el.state = s; let n = el.network_options();"),
        ["pending", "state"]
    );
    assert!(event_loop_fields("x.state_of(); y.pending_count").is_empty());
}
