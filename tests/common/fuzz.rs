//! The driver of the fuzz harnesses (`tests/fuzz.rs`, `daemon/tests/fuzz_config.rs`):
//! proptest batches, time-boxed by `MQTT_SESSIONS_FUZZ_SECS`, with a case count and the
//! outcomes a harness tallied, reported as a figure.

use std::cell::Cell;
use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Runs `test` on inputs from `strategy`: 256 cases, or batches of 256 until
/// `MQTT_SESSIONS_FUZZ_SECS` seconds have passed. Each batch has a fresh random seed.
pub fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    fuzz_reaching(name, strategy, &[], test);
}

/// Batches run past the time box, at most, while an outcome of [`fuzz_reaching`] is still
/// below its share (a short run's few cases can fall short by chance).
const EXTRA_BATCHES: u32 = 15;

/// [`fuzz`], and each outcome `what` of `reach` (a name given to [`tally`]) must have been
/// counted in at least `share` of the cases: evidence that the inputs reach that path
/// (an error path above all), not only that nothing panicked. While one falls short when
/// the time is up, up to [`EXTRA_BATCHES`] more batches run; then the harness fails.
pub fn fuzz_reaching<S: Strategy>(
    name: &str,
    strategy: S,
    reach: &[(&str, f64)],
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let secs: u64 = std::env::var("MQTT_SESSIONS_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let cases = Cell::new(0u64);
    TALLY.with(|t| t.take());
    let mut extra = 0;
    loop {
        let mut runner = TestRunner::new(Config {
            cases: 256,
            failure_persistence: None,
            ..Config::default()
        });
        if let Err(e) = runner.run(&strategy, |v| {
            cases.set(cases.get() + 1);
            test(v)
        }) {
            panic!("{name}: {e}");
        }
        if Instant::now() < deadline {
            continue;
        }
        let short = short_of(reach, cases.get());
        if short.is_empty() {
            break;
        }
        assert!(
            extra < EXTRA_BATCHES,
            "{name}: after {} cases, outcomes reached less often than required: {}; counted: {:?}",
            cases.get(),
            short.join(", "),
            TALLY.with(|t| t.borrow().clone())
        );
        extra += 1;
    }
    let mut figures =
        serde_json::json!({"cases": cases.get(), "seconds": started.elapsed().as_secs_f64()});
    for (k, v) in TALLY.with(|t| t.take()) {
        figures[k] = v.into();
    }
    super::figure(&format!("fuzz-{name}"), figures);
}

/// The outcomes of `reach` counted in less than their share of `cases`, described.
fn short_of(reach: &[(&str, f64)], cases: u64) -> Vec<String> {
    let counted = TALLY.with(|t| t.borrow().clone());
    reach
        .iter()
        .filter_map(|&(what, share)| {
            let n = counted.get(what).copied().unwrap_or(0);
            let want = (share * cases as f64).ceil().max(1.0) as u64;
            (n < want).then(|| format!("{what} {n} (want ≥ {want}, {:.1} %)", share * 100.0))
        })
        .collect()
}

thread_local! {
    /// Outcomes counted by a harness (how often each typed error was reached), reported
    /// with its case count: evidence that the mutations reach the code under test.
    static TALLY: std::cell::RefCell<std::collections::BTreeMap<String, u64>> =
        std::cell::RefCell::default();
}

/// Counts one outcome `what` of the running harness (reported with its figure).
pub fn tally(what: &str) {
    TALLY.with(|t| *t.borrow_mut().entry(what.to_string()).or_default() += 1);
}
