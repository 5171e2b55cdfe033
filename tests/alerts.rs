//! `docs/alerts.yml`: valid for Prometheus (`promtool check rules`), and its unit tests
//! (`docs/alerts-test.yml`, `promtool test rules`, one test per `[metrics] per_session`
//! mode) fire each alert once per daemon and condition, never for a backup session.
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
    assert!(out.contains("SUCCESS: 7 rules found"), "{out}");
}

#[test]
fn every_alert_fires_once_per_condition_in_each_per_session_mode_in_promtool_test_rules() {
    let tests =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/alerts-test.yml"))
            .unwrap();
    for mode in ["full", "counters", "off"] {
        assert!(
            tests.contains(&format!("# per_session = \"{mode}\"")),
            "no test for {mode}"
        );
    }
    for alert in [
        "MqttSessionsDown",
        "MqttSessionsGaveUp",
        "MqttSessionsPendingNearLimit",
        "MqttForwardingDrops",
        "MqttForwardingBacklogOld",
        "MqttSessionsConfigReloadFailed",
        "MqttSessionsFileDescriptorsNearLimit",
    ] {
        let tested = tests.matches(&format!("alertname: {alert}\n")).count();
        assert!(
            tested >= 3,
            "{alert} is tested {tested} times, not in every mode"
        );
    }
    // Alerts name no session: they fire once per daemon.
    assert!(!tests.contains("              session:"), "{tests}");
    let out = promtool(&["test", "rules", "alerts-test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}
