//! The daemon's HTTP section: HTTPS with basic auth and a bearer token from its config
//! (checked with `curl`), a password that is not a bcrypt hash refused with its line, and
//! the endpoints listening on loopback by default.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(15);

fn bcrypt_hash(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-sessions");

fn curl_blocking(ca: &std::path::Path, url: &str, args: &[&str]) -> u16 {
    let out = std::process::Command::new(require_binary("curl"))
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
        ])
        .arg(ca)
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn the_daemon_serves_https_with_the_credentials_of_its_config() {
    let broker = Mosquitto::start();
    let pki = TestPki::new("daemon-http");
    let files = pki.server("daemon-http", &["localhost"]);
    let hash = bcrypt_hash("pw");
    let config = format!(
        r#"
shutdown_timeout = "2s"
[http]
listen = "127.0.0.1:{{http}}"
open_paths = ["/healthz"]
bearer_token_file = "token"
tls = {{ cert_file = "{cert}", key_file = "{key}" }}
[http.basic_auth_users]
ops = "{hash}"

[[sessions]]
name = "edge"
brokers = ["{url}"]
"#,
        cert = files.cert.display(),
        key = files.key.display(),
        url = broker.url(),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "t0ken\n").unwrap();
    // The token file is relative to the config file: write the config there.
    let path = dir.path().join("config.toml");
    let http = free_port();
    std::fs::write(&path, config.replace("{http}", &http.to_string())).unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("https://localhost:{http}");
    let ca = pki.ca_file.clone();
    let up = poll_until(T, || {
        curl_blocking(&ca, &format!("{base}/healthz"), &[]) == 200
    });
    let checks = [
        ("/metrics", vec![], 401),
        ("/metrics", vec!["-u", "ops:nope"], 401),
        ("/metrics", vec!["-u", "ops:pw"], 200),
        ("/metrics", vec!["-H", "Authorization: Bearer t0ken"], 200),
        ("/", vec![], 401),
        ("/", vec!["-u", "ops:pw"], 200),
    ];
    let got: Vec<u16> = checks
        .iter()
        .map(|(p, args, _)| curl_blocking(&ca, &format!("{base}{p}"), args))
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "/healthz over https without credentials");
    let want: Vec<u16> = checks.iter().map(|c| c.2).collect();
    assert_eq!(got, want, "{checks:?}");

    // A password that is not a bcrypt hash: refused with its line.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[http]\n[http.basic_auth_users]\nops = \"pw\"\n[[sessions]]\nname = \"a\"\nbrokers = [\"mqtt://127.0.0.1:1\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("bad.toml:3:7") && err.contains("not a bcrypt hash"),
        "{err}"
    );
    assert!(!err.contains("\"pw\""), "the value is not repeated: {err}");
}

/// The daemon's real default: an `[http]` section without `listen` (the value
/// `default_http_listen` fills in), and the annotated default config `print-config` prints,
/// both listen on loopback only. Asked through `Config::parse`, the daemon's own parser.
#[test]
fn the_daemons_http_endpoints_default_to_loopback() {
    use mqtt_sessions_daemon::{Config, DEFAULT_CONFIG};
    let path = std::path::Path::new("test.toml");
    let c = Config::parse("[http]\n", path).unwrap();
    let listen = c.http.unwrap().listen;
    assert!(listen.ip().is_loopback(), "[http] default listen {listen}");
    // The library's own default, used by `http::serve_with`, agrees.
    assert_eq!(listen, mqtt_sessions::http::DEFAULT_ADDR);
    let c = Config::parse(DEFAULT_CONFIG, path).unwrap();
    if let Some(http) = c.http {
        assert!(
            http.listen.ip().is_loopback(),
            "print-config listens on {}",
            http.listen
        );
    }
    // Without an `[http]` section the daemon serves nothing at all.
    assert!(Config::parse("", path).unwrap().http.is_none());
}
