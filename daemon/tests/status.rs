//! `mqtt-sessions status` against a real daemon whose `[http]` section asks for basic auth
//! and a bearer token: credentials read from files and environment variables (never from
//! argv), the URL's `user:password@` still accepted with a warning, `--json`, and a
//! rules table. Then against the library's endpoints served in-process: an IPv6 URL, and
//! one request per endpoint per run (counted by a middleware).
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use mqtt_sessions::{SessionManager, SessionOptions};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-sessions");
const T: Duration = Duration::from_secs(30);
const TOKEN: &str = "t0ken-that-must-not-leak";
const PASSWORD: &str = "pa55word-that-must-not-leak";

/// `mqtt-sessions status ARGS` with `env` set: (exit code, stdout, stderr).
fn status_with_env(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .arg("status")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status(args: &[&str]) -> (Option<i32>, String, String) {
    status_with_env(args, &[])
}

/// A daemon with basic auth (`ops` / [`PASSWORD`]) and a bearer token ([`TOKEN`], from a
/// file in `secrets`), two sessions on one mosquitto and a rule between them.
fn daemon(broker: &Mosquitto, secrets: &std::path::Path) -> DaemonProcess {
    std::fs::write(secrets.join("daemon-token"), format!("{TOKEN}\n")).unwrap();
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let config = format!(
        r#"
[http]
listen = "127.0.0.1:{{http}}"
bearer_token_file = "{token}"
[http.basic_auth_users]
ops = "{hash}"

[[sessions]]
name = "edge"
brokers = ["{url}"]
client_id = "status-edge"

[[sessions]]
name = "cloud"
brokers = ["{url}"]
client_id = "status-cloud"

[[forward]]
name = "up"
from = "edge"
filter = "in/#"
to = "cloud"
topic = "out/{{topic}}"
"#,
        token = secrets.join("daemon-token").display(),
        url = broker.url(),
    );
    let d = DaemonProcess::start(BIN, &config);
    // /readyz is protected too: wait with the token.
    let url = d.base_url();
    let file = secrets.join("daemon-token");
    let file = file.to_str().unwrap();
    let ready = poll_until(T, || {
        status(&["--url", &url, "--token-file", file]).0 == Some(0)
    });
    assert!(ready, "daemon not answering:\n{}", d.stderr());
    d
}

/// Environment variables of one run.
type Env<'a> = &'a [(&'a str, &'a str)];

fn assert_no_secret(outputs: &[&str]) {
    for o in outputs {
        assert!(
            !o.contains(TOKEN) && !o.contains(PASSWORD),
            "a secret leaked: {o}"
        );
    }
}

#[test]
fn status_authenticates_with_a_token_or_password_from_a_file_or_the_environment() {
    let broker = Mosquitto::start();
    let secrets = tempfile::tempdir().unwrap();
    let d = daemon(&broker, secrets.path());
    let url = d.base_url();
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let password_file = secrets.path().join("password");
    std::fs::write(&password_file, PASSWORD).unwrap();
    let token_file = token_file.to_str().unwrap();
    let password_file = password_file.to_str().unwrap();

    let ways: [(&[&str], Env<'_>); 4] = [
        (&["--token-file", token_file], &[]),
        (&["--token-env", "STATUS_TOKEN"], &[("STATUS_TOKEN", TOKEN)]),
        (&["--user", "ops", "--password-file", password_file], &[]),
        (
            &["--user", "ops", "--password-env", "STATUS_PASSWORD"],
            &[("STATUS_PASSWORD", PASSWORD)],
        ),
    ];
    for (args, env) in ways {
        let mut all = vec!["--url", url.as_str()];
        all.extend_from_slice(args);
        let (code, out, err) = status_with_env(&all, env);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(out.starts_with("SESSION"), "{args:?}: {out}");
        assert!(
            out.lines().any(|l| l.starts_with("edge"))
                && out.lines().any(|l| l.starts_with("cloud")),
            "{args:?}: {out}"
        );
        // The rules table, from /rules.
        let rule = out
            .lines()
            .find(|l| l.starts_with("up "))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            rule.contains("edge") && rule.contains("cloud") && rule.contains("in/#"),
            "{out}"
        );
        // With its backlog: in flight, waiting, the oldest message's age.
        let header = out
            .lines()
            .find(|l| l.starts_with("RULE"))
            .unwrap_or_default();
        assert!(
            header.contains("IN FLIGHT") && header.contains("WAITING") && header.contains("OLDEST"),
            "{out}"
        );
        assert!(err.is_empty(), "{args:?}: unexpected stderr {err}");
        assert_no_secret(&[&out, &err]);
    }

    // --json: both answers, as the daemon sent them.
    let (code, out, err) = status(&["--url", &url, "--token-file", token_file, "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let json: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let names: Vec<&str> = json["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{out}");
    assert!(names.contains(&"edge") && names.contains(&"cloud"), "{out}");
    assert_eq!(json["rules"][0]["name"], "up", "{out}");
    assert!(json["rules"][0]["forwarded"].is_u64(), "{out}");
    assert!(json["rules"][0]["oldest_age_ms"].is_u64(), "{out}");

    // Credentials in the URL still work, with a warning.
    let with_user = url.replace("http://", &format!("http://ops:{PASSWORD}@"));
    let (code, out, err) = status(&["--url", &with_user]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("SESSION"), "{out}");
    assert!(
        err.contains("warning") && err.contains("process list"),
        "{err}"
    );
    assert!(!err.contains(PASSWORD), "{err}");

    // Wrong or missing credentials: exit 69 and what to do.
    let wrong = secrets.path().join("wrong");
    std::fs::write(&wrong, "nope").unwrap();
    let (code, _, err) = status(&["--url", &url, "--token-file", wrong.to_str().unwrap()]);
    assert_eq!(code, Some(69), "{err}");
    assert!(
        err.contains("HTTP 401") && err.contains("--token-file"),
        "{err}"
    );
    let (code, _, err) = status(&["--url", &url]);
    assert_eq!(code, Some(69), "{err}");
    assert!(err.contains("HTTP 401"), "{err}");
    // A token source that is not there: a clear error, no request.
    let (code, _, err) = status(&["--url", &url, "--token-env", "STATUS_UNSET_VARIABLE"]);
    assert_eq!(code, Some(69), "{err}");
    assert!(err.contains("STATUS_UNSET_VARIABLE"), "{err}");
    // A password is never taken from argv, and a user needs one.
    let (code, _, err) = status(&["--url", &url, "--user", "ops"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = status(&["--url", &url, "--password", PASSWORD]);
    assert_eq!(code, Some(2), "{err}");
    // One kind of credentials at a time.
    let (code, _, err) = status(&[
        "--url",
        &url,
        "--token-file",
        token_file,
        "--user",
        "ops",
        "--password-file",
        password_file,
    ]);
    assert_eq!(code, Some(2), "{err}");
}

/// Requests per path seen by an in-process server of the library's endpoints, on `[::1]`,
/// with one session (to a broker that is never there); its port and the counts.
fn serve_counted_on_ipv6_loopback() -> (u16, Arc<Mutex<BTreeMap<String, usize>>>) {
    let listener = TcpListener::bind("[::1]:0").expect("IPv6 loopback");
    let port = listener.local_addr().unwrap().port();
    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let seen = Arc::clone(&counts);
    let (ready, started) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let manager = SessionManager::new().unwrap();
            manager
                .add_session(SessionOptions::new("edge-v6", "mqtt://127.0.0.1:1"))
                .await
                .unwrap();
            let server = actix_web::HttpServer::new(move || {
                let seen = Arc::clone(&seen);
                actix_web::App::new()
                    .wrap_fn(move |req, srv| {
                        *seen
                            .lock()
                            .unwrap()
                            .entry(req.path().to_string())
                            .or_insert(0) += 1;
                        actix_web::dev::Service::call(srv, req)
                    })
                    .configure(mqtt_sessions::http::configure(manager.clone()))
            })
            .workers(1)
            .listen(listener)
            .unwrap()
            .run();
            ready.send(()).unwrap();
            let _ = server.await;
        });
    });
    started.recv_timeout(T).unwrap();
    (port, counts)
}

#[test]
fn status_asks_each_endpoint_once_on_an_ipv6_loopback_url() {
    let (port, counts) = serve_counted_on_ipv6_loopback();
    let (code, table, err) = status(&["--url", &format!("http://[::1]:{port}")]);
    assert_eq!(code, Some(0), "{err}");
    let header = table.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("SESSION") && header.contains("IN/S"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("edge-v6"))
        .unwrap_or_else(|| panic!("no row for the session: {table}"));
    // The daemon's own rates: numbers, not `-`.
    assert!(row.contains("0.0"), "{row}");
    let seen = counts.lock().unwrap().clone();
    assert_eq!(seen.get("/sessions"), Some(&1), "{seen:?}");
    assert_eq!(seen.get("/rules"), Some(&1), "{seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 2, "{seen:?}");

    // The old --interval is accepted (scripts keep running) and changes nothing.
    let (code, _, err) = status(&["--url", &format!("http://[::1]:{port}"), "--interval", "1"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("--interval is ignored"), "{err}");
    assert_eq!(counts.lock().unwrap().get("/sessions"), Some(&2));

    // Nothing listening: an error, not a hang.
    let closed = TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, _, err) = status(&["--url", &format!("http://[::1]:{closed}")]);
    assert_eq!(code, Some(69), "{err}");
    assert!(
        err.contains("cannot reach") && err.contains("[::1]"),
        "{err}"
    );
}
