//! `docs/alerts.yml`: valid for Prometheus (`promtool check rules`), and its unit tests
//! (`docs/alerts-test.yml`, `promtool test rules`) fire "session down" after 5 minutes.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::Path;
use std::process::Command;

fn promtool(args: &[&str]) -> String {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(&docs)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): install it with `apt-get install prometheus` (scripts/test fetches it without starting a server)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_alert_rules_pass_promtool_check_rules() {
    let out = promtool(&["check", "rules", "alerts.yml"]);
    assert!(out.contains("SUCCESS: 6 rules found"), "{out}");
}

#[test]
fn a_session_down_for_five_minutes_fires_its_alert_in_promtool_test_rules() {
    let tests =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/alerts-test.yml"))
            .unwrap();
    assert!(tests.contains("alertname: MqttSessionDown"), "{tests}");
    let out = promtool(&["test", "rules", "alerts-test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}
