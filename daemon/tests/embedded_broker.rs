//! The embedded broker's safety rails: a `listen` address beyond loopback is refused
//! (with the file, line and reason) unless `allow_remote = true`, and a daemon running
//! one warns in its log that it has no authentication or TLS.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use mqtt_sessions_daemon::config::Config;

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-sessions");
const T: Duration = Duration::from_secs(30);

/// `mqtt-sessions ARGS...`: exit code and stderr.
fn run_bin(args: &[&str], file: &Path) -> (Option<i32>, String) {
    let out = run_with_timeout(Command::new(BIN).args(args).arg(file), None, T);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_listen_address_beyond_loopback_is_refused_without_allow_remote() {
    let cases = [
        ("127.0.0.1:1883", false, true),
        ("127.0.0.2:1883", false, true),
        ("[::1]:1883", false, true),
        ("[::ffff:127.0.0.1]:1883", false, true),
        ("0.0.0.0:1883", false, false),
        ("[::]:1883", false, false),
        ("192.0.2.7:1883", false, false),
        ("0.0.0.0:1883", true, true),
        ("[::]:1883", true, true),
    ];
    for (listen, allow, accepted) in cases {
        let text = format!("[embedded_broker]\nlisten = \"{listen}\"\nallow_remote = {allow}\n");
        let got = Config::parse(&text, Path::new("c.toml"));
        assert_eq!(
            got.is_ok(),
            accepted,
            "listen {listen}, allow_remote {allow}: {:?}",
            got.err().map(|e| e.to_string())
        );
    }
}

#[test]
fn check_config_and_run_name_the_line_and_the_reason_of_a_remote_listen() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        "shutdown_timeout = \"1s\"\n\n[embedded_broker]\nmax_connections = 10\nlisten = \"0.0.0.0:1883\"\n",
    )
    .unwrap();
    for args in [&["check-config"][..], &["run", "--config"][..]] {
        let (code, stderr) = run_bin(args, &file);
        assert_eq!(code, Some(78), "{args:?}: {stderr}");
        let at = format!("{}:5:10:", file.display());
        assert!(stderr.contains(&at), "{args:?}: no {at} in {stderr}");
        for reason in [
            "not a loopback address",
            "no authentication or TLS",
            "allow_remote = true",
        ] {
            assert!(
                stderr.contains(reason),
                "{args:?}: no {reason:?} in {stderr}"
            );
        }
    }
}

/// Starts a daemon whose embedded broker listens on `listen` (`{port}`: a free port), waits
/// for it to be ready and returns its log.
fn log_of_a_daemon_with_broker_on(listen: &str, allow_remote: bool) -> (String, u16) {
    let port = free_port();
    let listen = listen.replace("{port}", &port.to_string());
    let config = format!(
        "shutdown_timeout = \"2s\"\n[http]\nlisten = \"127.0.0.1:{{http}}\"\n\
         [embedded_broker]\nlisten = \"{listen}\"\nallow_remote = {allow_remote}\n\
         [[sessions]]\nname = \"local\"\nbrokers = [\"mqtt://127.0.0.1:{port}\"]\n"
    );
    let daemon = DaemonProcess::start(BIN, &config);
    daemon.wait_ready(T);
    // The broker takes connections from others too (the session above is one).
    publish(port, "probe", "x", 1, false);
    (daemon.stderr(), port)
}

#[test]
fn a_daemon_warns_that_its_embedded_broker_has_no_authentication() {
    let (log, port) = log_of_a_daemon_with_broker_on("127.0.0.1:{port}", false);
    let line = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("embedded broker has no authentication"))
        .unwrap_or_else(|| panic!("no warning in:\n{log}"));
    assert!(line.contains("no TLS"), "{line}");
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert!(line.contains("any local process"), "{line}");
}

#[test]
fn a_daemon_whose_embedded_broker_listens_beyond_loopback_says_who_can_connect() {
    let (log, port) = log_of_a_daemon_with_broker_on("0.0.0.0:{port}", true);
    let line = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("embedded broker has no authentication"))
        .unwrap_or_else(|| panic!("no warning in:\n{log}"));
    assert!(line.contains(&format!("0.0.0.0:{port}")), "{line}");
    assert!(line.contains("beyond loopback"), "{line}");
    assert!(line.contains("anyone who reaches this address"), "{line}");
}
