//! `docs/grafana-dashboard.json` against a real Prometheus (Debian's `prometheus`) scraping
//! a running daemon, once per `[metrics] per_session` mode: every query of every panel
//! returns data, and the `$session` variable has values where per-session series exist.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-sessions");
const T: Duration = Duration::from_secs(60);

/// A Prometheus server on a free port scraping `target` every second; killed on drop.
struct Prometheus {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: u16) -> Prometheus {
        let bin = require_binary("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: mqtt-sessions\n    static_configs:\n      - targets: [\"127.0.0.1:{target}\"]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Prometheus {
            port,
            child,
            _dir: dir,
        }
    }

    /// `GET /api/v1/...` as JSON (`None` while Prometheus is not up).
    fn api(&self, path_and_query: &str) -> Option<Value> {
        let (code, body) = plain_get(self.port, path_and_query)?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }

    /// The result of an instant query.
    fn query(&self, expr: &str) -> Vec<Value> {
        let q: String = url::form_urlencoded::byte_serialize(expr.as_bytes()).collect();
        self.api(&format!("/api/v1/query?query={q}"))
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }

    /// The values of `label` among the series matching `selector`.
    fn label_values(&self, selector: &str, label: &str) -> Vec<String> {
        let m: String = url::form_urlencoded::byte_serialize(selector.as_bytes()).collect();
        self.api(&format!("/api/v1/label/{label}/values?match[]={m}"))
            .and_then(|v| v["data"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every target expression of the dashboard, with its panel's title.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana-dashboard.json"
    );
    let d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            p["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(move |t| t["expr"].as_str().map(|e| (title.clone(), e.to_string())))
        })
        .collect()
}

/// The variables as Grafana sends them with "All" selected, and a rate interval that
/// spans a few one-second scrapes.
fn expand(expr: &str) -> String {
    expr.replace("$job", ".*")
        .replace("$instance", ".*")
        .replace("$session", ".*")
        .replace("$__rate_interval", "15s")
}

fn check_mode(mode: &str) {
    let broker = Mosquitto::start();
    let closed = free_port();
    let config = format!(
        r#"
[http]
listen = "127.0.0.1:{{http}}"
[metrics]
per_session = "{mode}"

[[sessions]]
name = "a"
brokers = ["{url}"]
client_id = "dash-{mode}-a"

[[sessions]]
name = "b"
brokers = ["{url}"]
client_id = "dash-{mode}-b"

[[sessions]]
name = "backup"
brokers = ["mqtt://127.0.0.1:{closed}"]
required_for_ready = false
[sessions.reconnect]
initial_delay = "100ms"
max_delay = "1s"

[[forward]]
name = "copy"
from = "a"
filter = "in/#"
to = "b"
topic = "out/{{topic}}"
qos = 1
"#,
        url = broker.url()
    );
    let d = DaemonProcess::start(BIN, &config);
    d.wait_ready(T);
    let prom = Prometheus::start(d.http);
    // Traffic for the rate and latency panels, spread over several scrapes.
    let queries = dashboard_queries();
    assert!(queries.len() >= 25, "{queries:?}");
    let mut missing = queries.clone();
    let mut i = 0;
    let done = poll_until(T, || {
        publish(broker.port(), "in/x", &format!("m{i}"), 1, false);
        i += 1;
        missing.retain(|(_, e)| prom.query(&expand(e)).is_empty());
        missing.is_empty()
    });
    assert!(
        done,
        "per_session = {mode:?}: queries without data: {missing:#?}\n{}",
        d.stderr()
    );
    // The variables: job and instance in every mode, session names where they exist.
    assert_eq!(
        prom.label_values("mqtt_sessions_build_info", "job"),
        ["mqtt-sessions"]
    );
    let sessions = prom.label_values(
        r#"mqtt_sessions_messages_received_total{job=~".*",instance=~".*"}"#,
        "session",
    );
    if mode == "off" {
        assert!(sessions.is_empty(), "{sessions:?}");
    } else {
        assert_eq!(sessions, ["a", "b", "backup"], "{mode}");
    }
    // The backup session is down, yet not counted among the required sessions.
    let down = prom.query(
        r#"sum(mqtt_sessions_required_sessions{state=~"disconnected|connecting|reconnecting"})"#,
    );
    assert_eq!(down[0]["value"][1], "0", "{down:?}");
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus_with_per_session_full() {
    check_mode("full");
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus_with_per_session_counters() {
    check_mode("counters");
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_prometheus_with_per_session_off() {
    check_mode("off");
}
