//! The `mqtt-sessions` binary run as a child process on a config written to a temp dir,
//! its HTTP endpoint on a free port (`{http}` in the config text).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{free_port, poll_until};

/// A running daemon; killed on drop.
pub struct DaemonProcess {
    pub dir: TempDir,
    pub http: u16,
    child: Child,
}

impl DaemonProcess {
    /// Writes `config` (`{http}` replaced by a free port, `{dir}` by the temp dir) and
    /// starts `mqtt-sessions run` on it.
    pub fn start(bin: &str, config: &str) -> DaemonProcess {
        Self::start_with_env(bin, config, &[])
    }

    /// [`start`](Self::start) with these environment variables set for the daemon.
    pub fn start_with_env(bin: &str, config: &str, env: &[(&str, &str)]) -> DaemonProcess {
        let dir = tempfile::tempdir().unwrap();
        let http = free_port();
        let config = config
            .replace("{http}", &http.to_string())
            .replace("{dir}", &dir.path().display().to_string());
        fs::write(dir.path().join("config.toml"), config).unwrap();
        let stderr = fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new(bin)
            .args(["-v", "run", "--config"])
            .arg(dir.path().join("config.toml"))
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        DaemonProcess { dir, http, child }
    }

    /// The daemon's process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Writes a new config (`{http}` replaced by the same port) over the old one.
    pub fn rewrite(&self, config: &str) {
        let config = config.replace("{http}", &self.http.to_string());
        fs::write(self.config_path(), config).unwrap();
    }

    /// Sends it a signal (`"TERM"`, `"HUP"`, `"KILL"`...).
    pub fn signal(&self, sig: &str) {
        assert!(
            super::send_signal(self.child.id(), sig),
            "kill -{sig} failed"
        );
    }

    /// One GET on its HTTP endpoint: status and body, `None` if unreachable.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        plain_get(self.http, path)
    }

    /// Its exit status, once it exited within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        poll_until(timeout, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status
    }

    /// The daemon's log so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// A path in its temp dir.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    /// Waits until `/readyz` answers 200; panics with the log otherwise.
    pub fn wait_ready(&self, timeout: Duration) {
        let ok = poll_until(timeout, || {
            matches!(plain_get(self.http, "/readyz"), Some((200, _)))
        });
        assert!(ok, "daemon not ready in {timeout:?}:\n{}", self.stderr());
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 GET on 127.0.0.1:`port`: status and body, `None` if unreachable.
pub fn plain_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// Writes `bytes` to `path`, creating its directory.
pub fn write_file(path: &Path, bytes: &[u8]) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).unwrap();
    }
    fs::write(path, bytes).unwrap();
}
