//! A child process running one test of the current test binary (the `child_process`
//! test): for tests that kill a process of the crate with SIGKILL.
//!
//! Each binary's `child_process` is `#[ignore]`d, so the suite lists it as ignored instead
//! of reporting a pass for a test that ran nothing; [`ChildProc::spawn`] runs it with
//! `--ignored --exact` and its environment variable set, and [`child_spec`] makes it fail
//! when run by hand without that variable.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::poll_until_async;

/// How long [`ChildProc`]'s waits last.
const CHILD_WAIT: Duration = Duration::from_secs(30);

/// The value of the child process's environment variable `env`, set by the parent test.
///
/// # Panics
///
/// When `env` is not set: the test was run by hand (`--ignored`), not by its parent, and
/// must not report a pass for running nothing.
pub fn child_spec(env: &str) -> String {
    std::env::var(env).unwrap_or_else(|_| {
        panic!(
            "child_process is run by the other tests of this binary, with {env} set; \
             run those instead"
        )
    })
}

/// The set-up shared by the store-backed crash children: the spec `gen<N> <dir> <url>`
/// read from `env`, a manager on `<dir>/store`, a persistent session `app` with client id
/// `client` (clean session off, persistent), and `<dir>/handled.log` opened for appending.
pub struct StoreChild {
    /// The generation (`N` of `gen<N>`; a spec `gen<N>:5` runs the session on MQTT 5).
    pub generation: String,
    /// The test's directory.
    pub dir: std::path::PathBuf,
    /// The manager.
    pub manager: mqtt_sessions::SessionManager,
    /// The session `app`.
    pub session: mqtt_sessions::SessionHandle,
    /// `<dir>/handled.log`, for the consumer's record.
    pub log: Mutex<std::fs::File>,
}

impl StoreChild {
    /// Reads the spec from `env` and starts everything (see the type's docs).
    pub async fn start(env: &str, client: &str) -> StoreChild {
        let spec = child_spec(env);
        let parts: Vec<&str> = spec.splitn(3, ' ').collect();
        let mode = parts[0].trim_start_matches("gen");
        let (generation, v5) = match mode.split_once(':') {
            Some((g, "5")) => (g.to_string(), true),
            _ => (mode.to_string(), false),
        };
        let (dir, url) = (std::path::PathBuf::from(parts[1]), parts[2]);
        let manager = mqtt_sessions::SessionManager::builder()
            .store(dir.join("store"))
            .build()
            .unwrap();
        let mut o = super::fast_opts("app", url).client_id(client);
        o.connect.clean_session = false;
        o.connect.persistent = true;
        if v5 {
            o.protocol = mqtt_sessions::Protocol::V5;
            // A persistent MQTT 5 session outlives the connection only with an expiry.
            o.connect.session_expiry = Some(std::time::Duration::from_secs(3600));
        }
        let session = manager.add_session(o).await.unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("handled.log"))
            .unwrap();
        StoreChild {
            generation,
            dir,
            manager,
            session,
            log: Mutex::new(log),
        }
    }
}

/// A child process whose stdout lines are collected.
pub struct ChildProc {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl ChildProc {
    /// Runs this test binary's `child_process` test with `env` set to
    /// `"{mode} {dir} {url}"`.
    pub fn spawn(env: &str, mode: &str, dir: &std::path::Path, url: &str) -> ChildProc {
        Self::spawn_tapped(env, mode, dir, url, |_| false)
    }

    /// [`Self::spawn`], with each stdout line shown to `tap` first: the lines it returns
    /// `true` for are taken (not collected), so that a child printing a line per message
    /// for an hour is counted as it goes instead of kept.
    pub fn spawn_tapped(
        env: &str,
        mode: &str,
        dir: &std::path::Path,
        url: &str,
        tap: impl Fn(&str) -> bool + Send + 'static,
    ) -> ChildProc {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "child_process",
                "--ignored",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(env, format!("{mode} {} {url}", dir.display()))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if !tap(&line) {
                    sink.lock().unwrap().push(line);
                }
            }
        });
        ChildProc { child, lines }
    }

    pub fn lines_with(&self, prefix: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            // libtest prints "test child_process ... " without a newline before the child's
            // first line, so look for the prefix anywhere in the line.
            .filter_map(|l| l.split_once(prefix).map(|(_, rest)| rest.to_string()))
            .collect()
    }

    pub async fn wait_line(&self, prefix: &str, n: usize) -> bool {
        poll_until_async(CHILD_WAIT, || {
            let c = self.lines_with(prefix).len();
            async move { c >= n }
        })
        .await
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn wait_exit(&mut self) -> bool {
        poll_until_async(CHILD_WAIT, || {
            let done = self.child.try_wait().ok().flatten().is_some();
            async move { done }
        })
        .await
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        self.kill9();
    }
}
