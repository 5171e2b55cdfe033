//! Crate hygiene, checked from the lock file so that it cannot drift: the library's
//! default-feature dependency tree stays lean (no daemon dependency, at most
//! [`DEPENDENCY_BUDGET`] crates), and the workspace's `rust-version` is the highest
//! `rust-version` among the locked dependencies of its packages (those compiled for the
//! host's platform).
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
