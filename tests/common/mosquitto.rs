//! A real `mosquitto` broker process per test.

use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::poll::{poll_until, poll_until_async, POLL_INTERVAL};

/// How long `start`, `restart`, `stop`, `pause` and `resume` wait at most.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// How to get the broker and client binaries (used in panic messages).
pub const INSTALL_HINT: &str =
    "install them with `apt-get install -y mosquitto mosquitto-clients` \
     (or run scripts/test, which installs them)";

const LOG_FILE: &str = "mosquitto.log";
const STDERR_FILE: &str = "mosquitto.stderr";
const CONF_FILE: &str = "mosquitto.conf";
const PASSWD_FILE: &str = "passwd";

/// Finds an executable by name in `PATH`, `/usr/sbin` or `/usr/bin`; panics
/// with installation instructions if it is missing.
#[track_caller]
pub fn require_binary(name: &str) -> PathBuf {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path_var)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")]);
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{name}` not found in PATH, /usr/sbin or /usr/bin: run scripts/test, which installs \
         every tool the tests use, or `apt-get install -y` its Debian package (mosquitto, \
         mosquitto-clients, curl, prometheus, chromium, chromium-driver)"
    );
}

/// Returns a currently free TCP port on 127.0.0.1 (binds port 0, reads the
/// port, drops the listener). Another process may take it before you do:
/// callers must cope with a clash (as [`Mosquitto::start`] does).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
        .port()
}

/// Runs `cmd` to completion, feeding it `stdin`, capturing stdout and stderr;
/// kills it and panics if it runs longer than `timeout`.
#[track_caller]
pub fn run_with_timeout(cmd: &mut Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e} ({INSTALL_HINT})"));
    let writer = match (stdin, child.stdin.take()) {
        (Some(data), Some(mut pipe)) => Some(std::thread::spawn(move || {
            // A write error means the child exited early; its status says why.
            let _ = pipe.write_all(&data);
        })),
        _ => None,
    };
    let mut out_pipe = child.stdout.take().expect("piped stdout");
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let mut status = None;
    let finished = poll_until(timeout, || {
        status = child.try_wait().expect("try_wait on a child process");
        status.is_some()
    });
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
    }
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{what} did not finish within {timeout:?} (killed)\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// Sends `signal` (e.g. `"TERM"`, `"STOP"`, `"CONT"`) to `pid` with the
/// shell's `kill` (no libc needed). Returns whether `kill` succeeded.
pub fn send_signal(pid: u32, signal: &str) -> bool {
    Command::new("sh")
        .args([
            "-c",
            "kill -s \"$1\" \"$2\"",
            "sh",
            signal,
            &pid.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The state letter of a process from `/proc/PID/stat` (`R`, `S`, `T` for
/// stopped, `Z` for zombie, …), or `None` if there is no such process.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": comm may contain spaces and parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

/// Configuration of a [`Mosquitto`] broker (builder).
#[derive(Debug, Clone)]
pub struct MosquittoConfig {
    extra: Vec<String>,
    max_queued_messages: u64,
    max_inflight_messages: u32,
    persistence: bool,
    autosave_interval: u32,
    allow_anonymous: bool,
    users: Vec<(String, String)>,
    log_types: Vec<String>,
}

impl Default for MosquittoConfig {
    fn default() -> Self {
        Self {
            extra: Vec::new(),
            max_queued_messages: 100_000,
            max_inflight_messages: 20,
            persistence: false,
            autosave_interval: 1,
            allow_anonymous: true,
            users: Vec::new(),
            log_types: vec!["all".to_owned()],
        }
    }
}

impl MosquittoConfig {
    /// Defaults: anonymous access allowed, no persistence,
    /// `max_queued_messages 100000` (mosquitto's own default of 1000 drops
    /// QoS 1 messages to slow subscribers), `max_inflight_messages 20`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends raw config lines (may contain several lines, e.g. a TLS
    /// `listener` block). They go after the generated lines; `{dir}` is
    /// replaced by the broker's temp dir.
    pub fn extra(mut self, lines: &str) -> Self {
        self.extra.push(lines.to_owned());
        self
    }

    /// Sets `max_queued_messages` (per client).
    pub fn max_queued_messages(mut self, n: u64) -> Self {
        self.max_queued_messages = n;
        self
    }

    /// Sets `max_inflight_messages` (per client).
    pub fn max_inflight_messages(mut self, n: u32) -> Self {
        self.max_inflight_messages = n;
        self
    }

    /// Turns persistence on or off. When on, the database lives in the
    /// broker's temp dir, survives [`Mosquitto::restart`], and is saved on
    /// SIGTERM and every `autosave_interval` seconds (default 1, so a
    /// [`Mosquitto::kill9`] loses at most about a second).
    pub fn persistence(mut self, on: bool) -> Self {
        self.persistence = on;
        self
    }

    /// Sets `autosave_interval` in seconds (used when persistence is on).
    pub fn autosave_interval(mut self, secs: u32) -> Self {
        self.autosave_interval = secs;
        self
    }

    /// Logs only these `log_type`s (default `all`: every packet, which a long run at
    /// hundreds of messages per second turns into gigabytes). Keep `notice`: starting
    /// waits for its "running" line.
    pub fn log_types(mut self, types: &[&str]) -> Self {
        self.log_types = types.iter().map(|t| (*t).to_owned()).collect();
        self
    }

    /// Sets `allow_anonymous`.
    pub fn allow_anonymous(mut self, allow: bool) -> Self {
        self.allow_anonymous = allow;
        self
    }

    /// Adds a user to a password file (made with `mosquitto_passwd -b` in the
    /// broker's temp dir) and turns `password_file` on. Combine with
    /// `.allow_anonymous(false)` to require authentication.
    pub fn password(mut self, user: &str, pass: &str) -> Self {
        self.users.push((user.to_owned(), pass.to_owned()));
        self
    }

    fn render(&self, port: u16, dir: &Path) -> String {
        let d = dir.display();
        let mut c = String::new();
        c.push_str("# generated by tests/common/mosquitto.rs\n");
        c.push_str(&format!("listener {port} 127.0.0.1\n"));
        c.push_str(&format!("allow_anonymous {}\n", self.allow_anonymous));
        c.push_str(&format!("log_dest file {d}/{LOG_FILE}\n"));
        for t in &self.log_types {
            c.push_str(&format!("log_type {t}\n"));
        }
        c.push_str("log_timestamp true\n");
        c.push_str("connection_messages true\n");
        c.push_str(&format!(
            "max_queued_messages {}\n",
            self.max_queued_messages
        ));
        c.push_str(&format!(
            "max_inflight_messages {}\n",
            self.max_inflight_messages
        ));
        if self.persistence {
            c.push_str("persistence true\n");
            c.push_str(&format!("persistence_location {d}/\n"));
            c.push_str("persistence_file mosquitto.db\n");
            c.push_str(&format!("autosave_interval {}\n", self.autosave_interval));
        } else {
            c.push_str("persistence false\n");
        }
        if !self.users.is_empty() {
            c.push_str(&format!("password_file {d}/{PASSWD_FILE}\n"));
        }
        // Started as root, mosquitto would otherwise switch to user
        // `mosquitto`, which cannot read our root-owned 0700 temp dir.
        c.push_str("user root\n");
        for extra in &self.extra {
            c.push_str(&extra.replace("{dir}", &d.to_string()));
            c.push('\n');
        }
        c
    }
}

/// A running `mosquitto` broker on 127.0.0.1, owned by one test.
///
/// Its config, log and persistence database live in a [`TempDir`] that is
/// removed on drop; dropping also kills (SIGKILL) and reaps the process.
/// All methods take `&self`, so it can be shared (e.g. in an `Arc`).
pub struct Mosquitto {
    dir: TempDir,
    port: u16,
    config: MosquittoConfig,
    bin: PathBuf,
    child: Mutex<Option<Child>>,
}

impl fmt::Debug for Mosquitto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mosquitto")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .field("pid", &self.lock().as_ref().map(Child::id))
            .finish()
    }
}

enum Startup {
    Ready,
    /// The process exited (e.g. the port was taken): status and log excerpt.
    Exited(ExitStatus),
    TimedOut,
}

impl Mosquitto {
    /// Starts a broker with the default [`MosquittoConfig`]; panics (with the
    /// broker's log) if it does not come up.
    #[track_caller]
    pub fn start() -> Mosquitto {
        Self::start_with(MosquittoConfig::default())
    }

    /// Starts a broker with `config` on a free loopback port, waits until it
    /// accepts connections (retrying on another port, up to 3 times, if it
    /// exits early, e.g. because a parallel test took the port), and panics
    /// with the broker's log if it does not come up.
    #[track_caller]
    pub fn start_with(config: MosquittoConfig) -> Mosquitto {
        let bin = require_binary("mosquitto");
        let dir = tempfile::Builder::new()
            .prefix("mosquitto-test-")
            .tempdir()
            .expect("create a temp dir for mosquitto");
        if !config.users.is_empty() {
            write_password_file(&dir.path().join(PASSWD_FILE), &config.users);
        }
        let mut broker = Mosquitto {
            dir,
            port: 0,
            config,
            bin,
            child: Mutex::new(None),
        };
        let mut failures = String::new();
        for attempt in 1..=3 {
            broker.port = free_port();
            let log_start = broker.log_len();
            match broker.spawn_and_wait(log_start) {
                Startup::Ready => return broker,
                Startup::Exited(status) => failures.push_str(&format!(
                    "attempt {attempt} on port {}: mosquitto exited with {status}\n",
                    broker.port
                )),
                Startup::TimedOut => {
                    broker.kill_child();
                    failures.push_str(&format!(
                        "attempt {attempt} on port {}: not ready after {BROKER_TIMEOUT:?}\n",
                        broker.port
                    ));
                }
            }
        }
        panic!(
            "mosquitto did not start:\n{failures}{}",
            broker.diagnostics()
        );
    }

    /// The TCP port the broker listens on (stays the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's host: `"127.0.0.1"`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The broker's URL: `"mqtt://127.0.0.1:PORT"`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The broker's socket address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The broker's temp dir (config, log, password file, persistence DB).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The configuration the broker was started with.
    pub fn config(&self) -> &MosquittoConfig {
        &self.config
    }

    /// Pid of the current broker process; panics if it is not running.
    #[track_caller]
    pub fn pid(&self) -> u32 {
        self.lock()
            .as_ref()
            .map(Child::id)
            .expect("mosquitto is not running")
    }

    /// Whether the broker process exists (a paused broker is running).
    pub fn is_running(&self) -> bool {
        let mut guard = self.lock();
        match guard.as_mut() {
            Some(child) => match child.try_wait() {
                Ok(None) => true,
                _ => {
                    *guard = None;
                    false
                }
            },
            None => false,
        }
    }

    /// Whether the broker process is stopped by SIGSTOP (see [`Self::pause`]).
    pub fn is_paused(&self) -> bool {
        self.current_pid()
            .and_then(process_state)
            .is_some_and(|s| s == 'T')
    }

    /// Stops the broker gracefully (SIGTERM, then SIGCONT in case it is
    /// paused) and waits for it to exit; with persistence on it saves its
    /// database first. Falls back to SIGKILL and panics after
    /// [`BROKER_TIMEOUT`]. No-op if it is not running.
    #[track_caller]
    pub fn stop(&self) {
        let Some(pid) = self.current_pid() else {
            return;
        };
        send_signal(pid, "TERM");
        send_signal(pid, "CONT");
        if !poll_until(BROKER_TIMEOUT, || !self.is_running()) {
            self.kill_child();
            panic!(
                "mosquitto (pid {pid}) ignored SIGTERM for {BROKER_TIMEOUT:?}; killed it\n{}",
                self.diagnostics()
            );
        }
    }

    /// Kills the broker with SIGKILL (no clean shutdown, no final DB save)
    /// and reaps it. No-op if it is not running.
    pub fn kill9(&self) {
        self.kill_child();
    }

    /// Sets `user`'s password in the broker's password file (`mosquitto_passwd -b`); the
    /// running broker reads it at its next [`Self::restart`]. The broker must have been
    /// started with at least one [`MosquittoConfig::password`].
    #[track_caller]
    pub fn set_password(&self, user: &str, pass: &str) {
        assert!(
            !self.config.users.is_empty(),
            "set_password on a broker without a password file"
        );
        let bin = require_binary("mosquitto_passwd");
        let out = run_with_timeout(
            Command::new(&bin)
                .arg("-b")
                .arg(self.dir.path().join(PASSWD_FILE))
                .arg(user)
                .arg(pass),
            None,
            BROKER_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "mosquitto_passwd -b for user {user:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the broker again on the same port with the same config, log and
    /// persistence dir (stopping it with SIGTERM first if it is running), and
    /// waits until it accepts connections. Retries while the port is still
    /// busy, up to [`BROKER_TIMEOUT`]; panics with the log otherwise.
    #[track_caller]
    pub fn restart(&self) {
        if self.is_running() {
            self.stop();
        }
        let deadline = Instant::now() + BROKER_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            let log_start = self.log_len();
            match self.spawn_and_wait(log_start) {
                Startup::Ready => return,
                Startup::Exited(status) => {
                    last = format!("mosquitto exited with {status}");
                    std::thread::sleep(POLL_INTERVAL * 5);
                }
                Startup::TimedOut => {
                    self.kill_child();
                    last = "not ready in time".to_owned();
                    break;
                }
            }
        }
        panic!(
            "mosquitto did not restart on port {} within {BROKER_TIMEOUT:?}: {last}\n{}",
            self.port,
            self.diagnostics()
        );
    }

    /// Freezes the broker with SIGSTOP and waits until `/proc` shows it
    /// stopped. The kernel still completes TCP handshakes on its port, but no
    /// MQTT packet is answered until [`Self::resume`].
    #[track_caller]
    pub fn pause(&self) {
        let pid = self.pid();
        assert!(send_signal(pid, "STOP"), "kill -STOP {pid} failed");
        assert!(
            poll_until(BROKER_TIMEOUT, || process_state(pid) == Some('T')),
            "mosquitto (pid {pid}) not stopped after SIGSTOP: state {:?}",
            process_state(pid)
        );
    }

    /// Resumes a paused broker with SIGCONT and waits until `/proc` no longer
    /// shows it stopped.
    #[track_caller]
    pub fn resume(&self) {
        let pid = self.pid();
        assert!(send_signal(pid, "CONT"), "kill -CONT {pid} failed");
        assert!(
            poll_until(BROKER_TIMEOUT, || process_state(pid) != Some('T')),
            "mosquitto (pid {pid}) still stopped after SIGCONT"
        );
    }

    /// The whole broker log so far (all restarts, `log_type all`).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    /// Current length of the log in bytes; pass it to
    /// [`Self::wait_for_log_since`] to look only at later lines.
    pub fn log_len(&self) -> u64 {
        fs::metadata(self.log_path()).map(|m| m.len()).unwrap_or(0)
    }

    /// The log from byte offset `since` (see [`Self::log_len`]) on.
    pub fn log_since(&self, since: u64) -> String {
        let mut buf = Vec::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            if f.seek(SeekFrom::Start(since)).is_ok() {
                let _ = f.read_to_end(&mut buf);
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Path of the broker log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE)
    }

    /// Polls the log until it contains `needle` (anywhere, since the first
    /// start). Returns whether it did within `timeout`. Blocking.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_log_since(0, needle, timeout)
    }

    /// Polls the log from byte offset `since` until it contains `needle`.
    /// Reads only new bytes on each poll. Blocking.
    pub fn wait_for_log_since(&self, since: u64, needle: &str, timeout: Duration) -> bool {
        let mut scanner = LogScanner::new(self.log_path(), since);
        poll_until(timeout, || scanner.contains(needle))
    }

    /// Async [`Self::wait_for_log`]: lets other tasks run while waiting.
    pub async fn wait_for_log_async(&self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_log_since_async(0, needle, timeout).await
    }

    /// Async [`Self::wait_for_log_since`].
    pub async fn wait_for_log_since_async(
        &self,
        since: u64,
        needle: &str,
        timeout: Duration,
    ) -> bool {
        let scanner = Mutex::new(LogScanner::new(self.log_path(), since));
        poll_until_async(timeout, || {
            let found = scanner
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(needle);
            async move { found }
        })
        .await
    }

    /// With persistence on: waits until a database save that *started after
    /// this call* has completed, i.e. until the log shows two
    /// "Saving in-memory database" lines past the current end (mosquitto
    /// saves synchronously and logs only the start of a save). Afterwards a
    /// [`Self::kill9`] keeps everything the broker had acknowledged before
    /// the call. Takes about two `autosave_interval`s; blocking.
    pub fn wait_for_autosave(&self, timeout: Duration) -> bool {
        let mark = self.log_len();
        poll_until(timeout, || {
            self.log_since(mark)
                .matches("Saving in-memory database")
                .count()
                >= 2
        })
    }

    /// Async [`Self::wait_for_autosave`].
    pub async fn wait_for_autosave_async(&self, timeout: Duration) -> bool {
        let mark = self.log_len();
        poll_until_async(timeout, || {
            let n = self
                .log_since(mark)
                .matches("Saving in-memory database")
                .count();
            async move { n >= 2 }
        })
        .await
    }

    /// Config, stderr and log of the broker, for panic messages.
    pub fn diagnostics(&self) -> String {
        let read = |name: &str| {
            String::from_utf8_lossy(&fs::read(self.dir.path().join(name)).unwrap_or_default())
                .into_owned()
        };
        let log = self.log();
        // Keep panic messages readable: the tail of a big log is what matters.
        let tail_start = log.len().saturating_sub(16_000);
        let tail_start = (tail_start..log.len())
            .find(|&i| log.is_char_boundary(i))
            .unwrap_or(log.len());
        format!(
            "--- {CONF_FILE} ---\n{}--- mosquitto stderr ---\n{}--- {LOG_FILE} (last {} bytes) ---\n{}",
            read(CONF_FILE),
            read(STDERR_FILE),
            log.len() - tail_start,
            &log[tail_start..]
        )
    }

    fn lock(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn current_pid(&self) -> Option<u32> {
        if self.is_running() {
            self.lock().as_ref().map(Child::id)
        } else {
            None
        }
    }

    fn kill_child(&self) {
        if let Some(mut child) = self.lock().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Writes the config for `self.port`, spawns mosquitto and waits until it
    /// logged "running" after `log_start` and the port accepts connections.
    fn spawn_and_wait(&self, log_start: u64) -> Startup {
        let dir = self.dir.path();
        let conf = dir.join(CONF_FILE);
        fs::write(&conf, self.config.render(self.port, dir)).expect("write mosquitto.conf");
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(dir.join(STDERR_FILE))
            .expect("open mosquitto.stderr");
        let stdout = stderr.try_clone().expect("dup mosquitto.stderr");
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&conf)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot spawn {}: {e} ({INSTALL_HINT})", self.bin.display())
            });
        *self.lock() = Some(child);

        let mut scanner = LogScanner::new(self.log_path(), log_start);
        let mut logged_running = false;
        let mut exited = None;
        let addr = self.addr();
        let ready = poll_until(BROKER_TIMEOUT, || {
            if let Some(child) = self.lock().as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    exited = Some(status);
                    return true;
                }
            }
            // "running" is logged only after the listener was bound: this
            // rules out connecting to another test's broker on a reused port.
            logged_running = logged_running || scanner.contains(" running");
            logged_running && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        match (ready, exited) {
            (_, Some(status)) => {
                self.lock().take();
                Startup::Exited(status)
            }
            (true, None) => Startup::Ready,
            (false, None) => Startup::TimedOut,
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill_child();
    }
}

fn write_password_file(path: &Path, users: &[(String, String)]) {
    let bin = require_binary("mosquitto_passwd");
    for (i, (user, pass)) in users.iter().enumerate() {
        let mut cmd = Command::new(&bin);
        cmd.arg("-b");
        if i == 0 {
            cmd.arg("-c");
        }
        cmd.arg(path).arg(user).arg(pass);
        let out = run_with_timeout(&mut cmd, None, BROKER_TIMEOUT);
        assert!(
            out.status.success(),
            "mosquitto_passwd -b for user {user:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Incremental search in a growing log file: each call reads only new bytes.
struct LogScanner {
    path: PathBuf,
    pos: u64,
    buf: Vec<u8>,
}

impl LogScanner {
    fn new(path: PathBuf, since: u64) -> Self {
        Self {
            path,
            pos: since,
            buf: Vec::new(),
        }
    }

    fn contains(&mut self, needle: &str) -> bool {
        let needle = needle.as_bytes();
        if let Ok(mut f) = File::open(&self.path) {
            if f.seek(SeekFrom::Start(self.pos)).is_ok() {
                let mut new = Vec::new();
                if let Ok(n) = f.read_to_end(&mut new) {
                    self.pos += n as u64;
                    self.buf.extend_from_slice(&new);
                }
            }
        }
        if needle.is_empty() {
            return true;
        }
        let found = self.buf.windows(needle.len()).any(|w| w == needle);
        // Keep only a tail that could still start a match.
        let keep = needle.len().saturating_sub(1);
        if !found && self.buf.len() > keep {
            self.buf.drain(..self.buf.len() - keep);
        }
        found
    }
}
