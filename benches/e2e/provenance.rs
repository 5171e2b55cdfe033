//! Where a run comes from, read when the bench starts, before it measures: the commit, and
//! whether the work tree differs from it (the rule of `scripts/provenance`: any change that
//! `git status --porcelain` lists, untracked files included, outside `docs/` and `*.md`),
//! and the start time; the end time is added when the results are written.
//! `scripts/figures --check` refuses results whose tree was dirty or that lack these fields.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The commit, dirty flag and start time of a run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Provenance {
    /// `git rev-parse --short HEAD` (`unknown` outside a git checkout).
    pub(crate) commit: String,
    /// Whether the tree had changes (true when git could not tell).
    pub(crate) dirty: bool,
    /// The first 20 changes, as `git status --porcelain` prints them.
    pub(crate) dirty_paths: Vec<String>,
    /// When the run started, UTC (`2026-12-07T04:30:00Z`).
    pub(crate) started: String,
}

/// Runs git in the package's directory; `None` when it cannot.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Reads the provenance of a run starting now.
pub(crate) fn read() -> Provenance {
    let started = utc_now();
    let commit = git(&["rev-parse", "--short", "HEAD"]).map(|s| s.trim().to_string());
    let status = git(&[
        "status",
        "--porcelain",
        "--untracked-files=all",
        "--",
        ".",
        ":(exclude)docs",
        ":(exclude)*.md",
    ]);
    let changes: Vec<String> = status
        .as_deref()
        .unwrap_or("")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    Provenance {
        dirty: commit.is_none() || status.is_none() || !changes.is_empty(),
        commit: commit.unwrap_or_else(|| "unknown".to_string()),
        dirty_paths: changes.into_iter().take(20).collect(),
        started,
    }
}

/// The current time, UTC, as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// (year, month, day) of `z` days since 1970-01-01, proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
