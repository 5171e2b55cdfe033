//! The daemon under systemd: the notify protocol read from a socket the test binds
//! (READY, STATUS, RELOADING, WATCHDOG, STOPPING), `/readyz` with `required_for_ready`,
//! and the README's install steps run into a scratch root, the unit checked with
//! `systemd-analyze verify`.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-sessions");
const T: Duration = Duration::from_secs(20);

/// The notify socket: every datagram the daemon sent, in order.
struct NotifySocket {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        let socket = UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket {
            socket,
            seen: Vec::new(),
        }
    }

    /// Reads datagrams until one satisfies `pred` (returned) or `timeout` passes (panics
    /// with everything seen).
    fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(msg.clone());
                if pred(&msg) {
                    return msg;
                }
            }
        }
        panic!("no such notification in {timeout:?}; seen: {:?}", self.seen);
    }
}

/// `state` is one of the message's lines (`READY=1`, ...).
fn has(msg: &str, state: &str) -> bool {
    msg.lines().any(|l| l == state)
}

fn session(name: &str, port: u16, required: bool) -> String {
    format!(
        "[[sessions]]\nname = \"{name}\"\nbrokers = [\"mqtt://127.0.0.1:{port}\"]\n\
         required_for_ready = {required}\n\
         [sessions.reconnect]\ninitial_delay = \"100ms\"\nmax_delay = \"1s\"\n"
    )
}

fn spawn(config: &Path, env: &[(&str, &str)], log: &Path) -> Child {
    Command::new(BIN)
        .args(["-v", "run", "-c"])
        .arg(config)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

#[test]
fn the_notify_sequence_is_ready_status_watchdog_reloading_ready_stopping() {
    let broker = Mosquitto::start();
    let closed = free_port();
    let dir = tempfile::tempdir().unwrap();
    let http = free_port();
    let config = format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\n{}{}",
        session("up", broker.port(), true),
        // A broker that is not there: must delay neither READY=1 nor /readyz.
        session("away", closed, false),
    );
    let path = dir.path().join("config.toml");
    fs::write(&path, &config).unwrap();
    let mut notify = NotifySocket::bind(&dir.path().join("notify.sock"));
    let sock = dir.path().join("notify.sock");
    let log = dir.path().join("stderr.log");
    let started = Instant::now();
    let mut child = spawn(
        &path,
        &[
            ("NOTIFY_SOCKET", sock.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
        &log,
    );
    let stderr = || fs::read_to_string(&log).unwrap_or_default();

    notify.wait_for(T, |m| has(m, "READY=1"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "READY=1 waited for the unreachable broker: {:?}\n{}",
        started.elapsed(),
        stderr()
    );
    // The HTTP endpoint listens by then, and /readyz does not wait for "away".
    assert!(plain_get(http, "/healthz").is_some(), "{}", stderr());
    let ready = poll_until(T, || matches!(plain_get(http, "/readyz"), Some((200, _))));
    assert!(ready, "{:?}\n{}", plain_get(http, "/readyz"), stderr());

    notify.wait_for(T, |m| m.starts_with("STATUS=1/2 sessions ready"));
    notify.wait_for(T, |m| has(m, "WATCHDOG=1"));

    // A reload: RELOADING=1 with the monotonic time, then READY=1 and the result.
    fs::write(
        &path,
        config.replace("required_for_ready = false", "required_for_ready = true"),
    )
    .unwrap();
    assert!(send_signal(child.id(), "HUP"));
    let reloading = notify.wait_for(T, |m| has(m, "RELOADING=1"));
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")
            && l["MONOTONIC_USEC=".len()..].parse::<u64>().is_ok()),
        "{reloading:?}"
    );
    notify.wait_for(T, |m| has(m, "READY=1"));
    notify.wait_for(T, |m| m.contains("last reload: ok"));
    // "away" is now required: /readyz answers 503 and names it.
    let not_ready = poll_until(
        T,
        || matches!(plain_get(http, "/readyz"), Some((503, body)) if body.contains("away")),
    );
    assert!(not_ready, "{:?}", plain_get(http, "/readyz"));

    // A bad file: refused, and the STATUS line says so.
    fs::write(&path, "sessions = 3\n").unwrap();
    assert!(send_signal(child.id(), "HUP"));
    notify.wait_for(T, |m| m.contains("last reload: failed"));

    assert!(send_signal(child.id(), "TERM"));
    notify.wait_for(T, |m| has(m, "STOPPING=1"));
    let exited = poll_until(T, || child.try_wait().unwrap().is_some());
    assert!(exited, "{}", stderr());
    let log = stderr();
    assert!(log.contains("open-file limit"), "{log}");
}

#[test]
fn the_readme_install_steps_work_in_a_scratch_root_and_the_unit_verifies() {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let block = readme
        .split("<!-- install-steps -->\n```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("README.md has the install steps after <!-- install-steps -->");
    // systemctl talks to the running system: everything before it runs here. The binary
    // is this build's (the steps name the release build).
    let steps: Vec<String> = block
        .lines()
        .take_while(|l| !l.starts_with("systemctl"))
        .map(|l| l.replace("target/release/mqtt-sessions", BIN))
        .collect();
    assert!(steps.len() >= 4, "{block}");
    let root = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .args(["-euc", &steps.join("\n")])
        .env("ROOT", root.path())
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r = root.path();
    for f in [
        "usr/local/bin/mqtt-sessions",
        "etc/mqtt-sessions/config.toml",
        "etc/systemd/system/mqtt-sessions.service",
    ] {
        assert!(r.join(f).is_file(), "{f} not installed");
    }
    // The config must be readable by the unit's DynamicUser.
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(r.join("etc/mqtt-sessions/config.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o004, 0o004, "config.toml mode {mode:o}");

    let unit = fs::read_to_string(r.join("etc/systemd/system/mqtt-sessions.service")).unwrap();
    for key in [
        "Type=notify",
        "LimitNOFILE=",
        "ConfigurationDirectory=mqtt-sessions",
        "StateDirectory=mqtt-sessions",
        "WatchdogSec=",
        "CapabilityBoundingSet=\n",
        "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "PrivateDevices=yes",
        "MemoryDenyWriteExecute=yes",
        "UMask=",
    ] {
        assert!(unit.contains(key), "the unit lacks {key:?}");
    }
    // systemd-analyze checks that the commands exist: point it at the scratch root's.
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("systemd-analyze is missing: apt-get install systemd");
    // The unit names a bare `mqtt-sessions` (systemd finds it in /usr/local/bin or
    // /usr/bin); systemd-analyze would look on this machine: point it at the scratch root's.
    assert!(unit.contains("\nExecStart=mqtt-sessions "), "{unit}");
    let local = unit.replace(
        "=mqtt-sessions ",
        &format!("={} ", r.join("usr/local/bin/mqtt-sessions").display()),
    );
    let unit_path = r.join("mqtt-sessions.service");
    fs::write(&unit_path, local).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&unit_path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
