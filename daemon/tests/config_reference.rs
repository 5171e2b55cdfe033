//! `docs/CONFIG.md` against the configuration types: every key of every section is listed
//! there and nothing else, each documented default is the one the types give, and every
//! example passes `check-config`.
//!
//! The keys of a section come from the types themselves: a probe file puts an unknown key
//! in that section and serde's refusal (`unknown field ..., expected one of ...`) names
//! every field the section has (`deny_unknown_fields` everywhere).
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use common::*;
use mqtt_sessions_daemon::config::Config;
use mqtt_sessions_daemon::size::ByteSize;

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-sessions");
const DOC: &str = include_str!("../../docs/CONFIG.md");
const PROBE: &str = "not_a_key_probe";

/// One documented section: its TOML header (`[[sessions]]`, `[sessions.connect]`; empty
/// for the top level) and its rows.
#[derive(Debug)]
struct Section {
    header: String,
    rows: BTreeMap<String, Row>,
}

#[derive(Debug, Clone)]
struct Row {
    kind: String,
    default: String,
}

impl Section {
    /// Dotted path: `sessions.connect`; empty for the top level.
    fn path(&self) -> String {
        self.header
            .trim_matches(|c| c == '[' || c == ']')
            .to_string()
    }

    fn is_array(&self) -> bool {
        self.header.starts_with("[[")
    }

    fn name(&self) -> String {
        if self.header.is_empty() {
            "Top level".into()
        } else {
            format!("`{}`", self.header)
        }
    }
}

/// The sections of CONFIG.md up to its examples: `## Top level`, then one
/// ``## `[header]` `` each, with a `| key | type | default | meaning |` table.
fn sections() -> Vec<Section> {
    let reference = DOC.split("\n## Examples").next().unwrap();
    let mut out: Vec<Section> = Vec::new();
    for line in reference.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            let header = match h.trim() {
                "Top level" => String::new(),
                other => other.trim_matches('`').to_string(),
            };
            assert!(
                header.is_empty() || header.starts_with('['),
                "CONFIG.md: section heading {h:?} is not a TOML header in backticks"
            );
            out.push(Section {
                header,
                rows: BTreeMap::new(),
            });
            continue;
        }
        let Some(section) = out.last_mut() else {
            continue;
        };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| `key` | type | default | meaning |" -> ["", key, type, default, meaning, ""]
        if cells.len() != 6 || !cells[1].starts_with('`') {
            continue;
        }
        let key = cells[1].trim_matches('`').to_string();
        assert!(
            !cells[2].is_empty() && !cells[4].is_empty(),
            "CONFIG.md {}: key `{key}` needs a type and a meaning",
            section.name()
        );
        let row = Row {
            kind: cells[2].to_string(),
            default: cells[3].to_string(),
        };
        assert!(
            section.rows.insert(key.clone(), row).is_none(),
            "CONFIG.md {}: key `{key}` listed twice",
            section.name()
        );
    }
    assert!(
        out.len() > 10,
        "CONFIG.md: only {} sections found",
        out.len()
    );
    out
}

/// The headers that must come before `section`'s own in a file: those of the arrays of
/// tables it lives in (`[[sessions]]` for `[sessions.connect.will]`).
fn ancestors(section: &Section, all: &[Section]) -> Vec<String> {
    let path = section.path();
    all.iter()
        .filter(|s| s.is_array() && path.starts_with(&format!("{}.", s.path())))
        .map(|s| s.header.clone())
        .collect()
}

/// The keys the configuration types accept in `section`.
fn keys_in_code(section: &Section, all: &[Section]) -> BTreeSet<String> {
    let mut probe = String::new();
    for h in ancestors(section, all) {
        probe.push_str(&format!("{h}\n"));
    }
    if !section.header.is_empty() {
        probe.push_str(&format!("{}\n", section.header));
    }
    probe.push_str(&format!("{PROBE} = 1\n"));
    let err = match toml::from_str::<Config>(&probe) {
        Ok(_) => panic!("{probe}: the probe key was accepted"),
        Err(e) => e.message().to_string(),
    };
    let expected = err
        .split_once(&format!("unknown field `{PROBE}`, "))
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| {
            panic!(
                "CONFIG.md {}: no such table in the configuration types ({err}); remove the section or fix its header",
                section.name()
            )
        });
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn config_md_lists_every_key_of_every_section_and_nothing_else() {
    let all = sections();
    let mut problems = Vec::new();
    for s in &all {
        let code = keys_in_code(s, &all);
        let doc: BTreeSet<String> = s.rows.keys().cloned().collect();
        for k in code.difference(&doc) {
            problems.push(format!(
                "{} has key `{k}`, missing from docs/CONFIG.md: add a row `| `{k}` | TYPE | DEFAULT | MEANING |` to the table of section {}",
                s.name(), s.name()
            ));
        }
        for k in doc.difference(&code) {
            problems.push(format!(
                "docs/CONFIG.md lists `{k}` in section {}, which the configuration no longer has: remove its row (or fix its name)",
                s.name()
            ));
        }
        // A table needs its own section.
        for (k, row) in &s.rows {
            let child = if s.path().is_empty() {
                k.clone()
            } else {
                format!("{}.{k}", s.path())
            };
            let header = match row.kind.as_str() {
                "table" => format!("[{child}]"),
                "array of tables" => format!("[[{child}]]"),
                _ => continue,
            };
            if !all.iter().any(|s| s.header == header) {
                problems.push(format!(
                    "docs/CONFIG.md: `{k}` in {} is a {}, but there is no section `## `{header}``: add one with its keys",
                    s.name(),
                    row.kind
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The smallest file with every documented section, each required key given a value.
fn file_with_every_section(all: &[Section]) -> String {
    let mut text = String::new();
    for s in all.iter().filter(|s| !s.header.is_empty()) {
        text.push_str(&format!("{}\n", s.header));
        for (k, row) in &s.rows {
            if row.default == "*required*" {
                let value = if row.kind.starts_with("array") {
                    "[]"
                } else {
                    "\"x\""
                };
                text.push_str(&format!("{k} = {value}\n"));
            }
        }
    }
    text
}

/// The value at `path` (`sessions.connect`) in `v`, the first element of any array.
fn table_at<'a>(v: &'a toml::Value, path: &str) -> Option<&'a toml::Table> {
    let mut at = v;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        at = at.get(part)?;
        if let Some(first) = at.as_array().and_then(|a| a.first()) {
            at = first;
        }
    }
    at.as_table()
}

/// Are `documented` (as written in CONFIG.md, without backticks) and `actual` the same
/// value of type `kind`?
fn same_value(kind: &str, documented: &str, actual: &toml::Value) -> bool {
    let doc: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {documented}")) {
        Ok(mut t) => t.remove("v").unwrap(),
        Err(_) => return false,
    };
    match kind {
        "duration" => {
            let d = |v: &toml::Value| v.as_str().and_then(|s| humantime::parse_duration(s).ok());
            d(&doc).is_some() && d(&doc) == d(actual)
        }
        "size" => {
            let b = |v: &toml::Value| match v {
                toml::Value::String(s) => ByteSize::parse(s).ok(),
                toml::Value::Integer(n) => usize::try_from(*n).ok().map(ByteSize),
                _ => None,
            };
            b(&doc).is_some() && b(&doc) == b(actual)
        }
        _ => &doc == actual,
    }
}

#[test]
fn documented_defaults_are_the_defaults_of_the_types() {
    let all = sections();
    let text = file_with_every_section(&all);
    let mut config: Config = toml::from_str(&text).unwrap_or_else(|e| panic!("{text}\n{e}"));
    // A rule's `topic`, `qos` and `retain` have their defaults in the single-target form
    // (as `print-config` shows them): take those of this rule made single-target.
    for r in &mut config.forward {
        let mut single = r.clone();
        single.targets.clear();
        single.to = Some(toml::Spanned::new(0..0, "x".to_string()));
        single.fill_defaults();
        (r.topic, r.qos, r.retain) = (single.topic, single.qos, single.retain);
    }
    let printed = toml::Value::try_from(&config).unwrap();
    let mut checked = 0;
    let mut problems = Vec::new();
    for s in &all {
        let Some(table) = table_at(&printed, &s.path()) else {
            panic!(
                "{text}\nsection {} not in the printed configuration",
                s.name()
            );
        };
        for (k, row) in &s.rows {
            let Some(documented) = row
                .default
                .strip_prefix('`')
                .and_then(|d| d.strip_suffix('`'))
            else {
                continue; // a default in words: nothing to compare
            };
            match table.get(k) {
                Some(actual) if same_value(&row.kind, documented, actual) => checked += 1,
                Some(actual) => problems.push(format!(
                    "docs/CONFIG.md {}: `{k}` defaults to {documented} there but to {actual} in the types: fix its default cell",
                    s.name()
                )),
                None => problems.push(format!(
                    "docs/CONFIG.md {}: `{k}` defaults to {documented} there but has no default in the types: write its default in words (*none*)",
                    s.name()
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 30, "only {checked} defaults compared");
}

#[test]
fn every_example_of_config_md_passes_check_config() {
    let examples: Vec<&str> = DOC
        .split("\n## Examples")
        .nth(1)
        .unwrap()
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("\n```").next().unwrap())
        .collect();
    assert!(examples.len() >= 5, "{} examples", examples.len());
    let titles = [
        "[sessions.tls]",
        "client_cert",
        "[sessions.connect.will]",
        "session_expiry",
        "max_attempts",
    ];
    for t in titles {
        assert!(
            examples.iter().any(|e| e.contains(t)),
            "no example with {t}"
        );
    }
    // The certificate files the examples name, made by a test CA.
    let pki = TestPki::new("config-md");
    let client = pki.client("gateway", "gateway");
    for (i, example) in examples.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        std::fs::create_dir(&tls).unwrap();
        std::fs::copy(&pki.ca_file, tls.join("ca.crt")).unwrap();
        std::fs::copy(&client.cert, tls.join("gateway.crt")).unwrap();
        std::fs::copy(&client.key, tls.join("gateway.key")).unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, example).unwrap();
        let out = run_with_timeout(
            Command::new(BIN)
                .arg("check-config")
                .arg(&file)
                .env("CLOUD_PASSWORD", "secret"),
            None,
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "example {} of CONFIG.md:\n{example}\n{}{}",
            i + 1,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
