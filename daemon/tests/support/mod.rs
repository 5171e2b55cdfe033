//! What the daemon tests share: a daemon process on a config in a temp dir, config
//! snippets (sessions, rules) and ways to count what a subscriber got.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses part of it"
)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::common::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_mqtt-sessions");
pub const T: Duration = Duration::from_secs(30);

/// The daemon of this package ([`BIN`]) as a [`DaemonProcess`] (config and stderr in a
/// temp dir, killed on drop; its methods through `Deref`), with the waits the daemon
/// tests use.
pub struct Daemon(pub DaemonProcess);

impl std::ops::Deref for Daemon {
    type Target = DaemonProcess;

    fn deref(&self) -> &DaemonProcess {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut DaemonProcess {
        &mut self.0
    }
}

impl Daemon {
    /// Writes `config` (with `{http}` replaced by a free port) and starts `run` on it.
    pub fn start(config: &str) -> Daemon {
        Self::start_with_env(config, &[])
    }

    /// [`start`](Self::start) with these environment variables set for the daemon.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon(DaemonProcess::start_with_env(BIN, config, env))
    }

    /// Waits (at most [`T`]) until `/readyz` answers 200; panics with the log otherwise.
    pub async fn wait_ready(&self) {
        let ok = poll_until_async(T, || async {
            matches!(self.get("/readyz"), Some((200, _)))
        })
        .await;
        assert!(ok, "daemon not ready in {T:?}:\n{}", self.stderr());
    }

    /// The `messages_received` of one session, from `/sessions`.
    pub fn received(&self, session: &str) -> u64 {
        let (_, body) = self.get("/sessions").unwrap();
        let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == session)
            .and_then(|r| r["metrics"]["messages_received"].as_u64())
            .unwrap_or(0)
    }
}

/// One HTTP/1.0 GET on 127.0.0.1:`port`: status and body, `None` if unreachable.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    plain_get(port, path)
}

/// A `[[sessions]]` block with quick reconnects.
pub fn session(name: &str, client_id: &str, port: u16) -> String {
    format!(
        r#"
[[sessions]]
name = "{name}"
brokers = ["mqtt://127.0.0.1:{port}"]
client_id = "{client_id}"
[sessions.connect]
keep_alive = "5s"
connect_timeout = "2s"
[sessions.reconnect]
initial_delay = "100ms"
max_delay = "1s"
[sessions.performance]
max_pending_messages = 20000
"#
    )
}

pub fn rule(name: &str, from: &str, filter: &str, to: &str, topic: &str) -> String {
    format!(
        "\n[[forward]]\nname = \"{name}\"\nfrom = \"{from}\"\nfilter = \"{filter}\"\nto = \"{to}\"\ntopic = \"{topic}\"\nqos = 1\n"
    )
}

pub const HTTP: &str = "shutdown_timeout = \"10s\"\n[http]\nlisten = \"127.0.0.1:{http}\"\n";

pub fn check_config(path: &Path) -> (Option<i32>, String, String) {
    let out = run_with_timeout(
        Command::new(BIN).arg("check-config").arg(path),
        None,
        Duration::from_secs(30),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn persistent_session(name: &str, client_id: &str, port: u16) -> String {
    session(name, client_id, port).replace(
        "[sessions.connect]\n",
        "[sessions.connect]\nclean_session = false\npersistent = true\n",
    )
}

/// The distinct payloads `sub` received, and how many arrived more than once.
pub fn distinct_and_duplicates(sub: &Sub) -> (BTreeSet<String>, usize) {
    let all = sub.payloads();
    let distinct: BTreeSet<String> = all.iter().cloned().collect();
    let dups = all.len() - distinct.len();
    (distinct, dups)
}

/// Waits until `sub` has `n` distinct payloads.
pub async fn wait_distinct(sub: &Sub, n: usize, timeout: Duration) -> bool {
    poll_until_async(timeout, || {
        let c = distinct_and_duplicates(sub).0.len();
        async move { c >= n }
    })
    .await
}

/// Reports the run and fails naming the missing payloads.
pub fn assert_none_missing(what: &str, sub: &Sub, n: usize) {
    let (distinct, dups) = distinct_and_duplicates(sub);
    let missing: Vec<usize> = (0..n)
        .filter(|i| !distinct.contains(&i.to_string()))
        .collect();
    println!(
        "{what}: {n} sent, {} received, {} missing, {dups} duplicates",
        sub.count(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "{what}: {} of {n} missing: {:?}",
        missing.len(),
        &missing[..missing.len().min(50)]
    );
}

pub fn sub_once(port: u16, filter: &str, format: &str, wait_secs: u32) -> Option<String> {
    let out = run_with_timeout(
        Command::new(require_binary("mosquitto_sub")).args([
            "-p",
            &port.to_string(),
            "-V",
            "mqttv5",
            "-t",
            filter,
            "-q",
            "2",
            "-C",
            "1",
            "-W",
            &wait_secs.to_string(),
            "-F",
            format,
        ]),
        None,
        T,
    );
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!text.is_empty()).then_some(text)
}
