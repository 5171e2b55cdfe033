//! Independent MQTT clients: `mosquitto_sub` and `mosquitto_pub`.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::mosquitto::{require_binary, run_with_timeout, send_signal};
use super::poll::{poll_until, poll_until_async, DEFAULT_TIMEOUT};

/// How long `publish` waits for `mosquitto_pub` (`publish_many` adds time
/// per message).
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// Marks message lines in `mosquitto_sub` output, to tell them apart from the
/// `-d` debug lines on the same stdout.
const MSG_MARK: char = '\u{1e}';

/// Options for a [`Sub`] (builder). Defaults: QoS 0, clean session, random
/// client id.
#[derive(Debug, Clone)]
pub struct SubOptions {
    port: u16,
    filters: Vec<String>,
    qos: u8,
    client_id: Option<String>,
    persistent: bool,
    credentials: Option<(String, String)>,
    args: Vec<String>,
}

impl SubOptions {
    /// Subscribes to `filter` on the broker at 127.0.0.1:`port`.
    pub fn new(port: u16, filter: &str) -> Self {
        Self {
            port,
            filters: vec![filter.to_owned()],
            qos: 0,
            client_id: None,
            persistent: false,
            credentials: None,
            args: Vec::new(),
        }
    }

    /// Also subscribes to `filter` (same SUBSCRIBE packet).
    pub fn filter(mut self, filter: &str) -> Self {
        self.filters.push(filter.to_owned());
        self
    }

    /// Subscription QoS (`-q`).
    pub fn qos(mut self, qos: u8) -> Self {
        self.qos = qos;
        self
    }

    /// Client id (`-i`).
    pub fn client_id(mut self, id: &str) -> Self {
        self.client_id = Some(id.to_owned());
        self
    }

    /// Persistent session (`-c -i ID`): the broker keeps the subscription and
    /// queues QoS ≥ 1 messages while this client is away.
    pub fn persistent(mut self, id: &str) -> Self {
        self.persistent = true;
        self.client_id = Some(id.to_owned());
        self
    }

    /// Username and password (`-u`, `-P`).
    pub fn credentials(mut self, user: &str, pass: &str) -> Self {
        self.credentials = Some((user.to_owned(), pass.to_owned()));
        self
    }

    /// Any further `mosquitto_sub` argument (e.g. `-V mqttv5`, `--cafile …`).
    /// Do not pass `-v`, `-F` or `-d`: the harness sets those.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// Spawns the subscriber and waits (up to [`DEFAULT_TIMEOUT`]) until its
    /// SUBACK arrived, so every message published afterwards is seen. Panics
    /// with its output otherwise.
    #[track_caller]
    pub fn spawn(self) -> Sub {
        let sub = self.spawn_no_wait();
        if !sub.wait_ready(DEFAULT_TIMEOUT) {
            panic!(
                "mosquitto_sub not subscribed within {DEFAULT_TIMEOUT:?} (exit: {:?})\n{}",
                sub.exit_status(),
                sub.debug_lines().join("\n")
            );
        }
        sub
    }

    /// Spawns the subscriber without waiting for its SUBACK (e.g. to test a
    /// refused connection: see [`Sub::exit_status`], [`Sub::debug_lines`]).
    #[track_caller]
    pub fn spawn_no_wait(self) -> Sub {
        let bin = require_binary("mosquitto_sub");
        // mosquitto_sub flushes after each message but not after its -d
        // lines (SUBACK): line-buffer its stdout. stdbuf (coreutils) execs
        // it, so the pid stays that of mosquitto_sub.
        let mut cmd = Command::new(require_binary("stdbuf"));
        cmd.arg("-oL").arg(bin);
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        for f in &self.filters {
            cmd.args(["-t", f]);
        }
        cmd.args(["-q", &self.qos.to_string()]);
        if let Some(id) = &self.client_id {
            cmd.args(["-i", id]);
        }
        if self.persistent {
            cmd.arg("-c");
        }
        if let Some((u, p)) = &self.credentials {
            cmd.args(["-u", u, "-P", p]);
        }
        cmd.args(&self.args);
        // -d debug lines (CONNACK, SUBACK, …) and messages share stdout;
        // messages are marked so they can be told apart.
        cmd.arg("-d").arg("-F").arg(format!("{MSG_MARK}%t %p"));
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {what}: {e}"));

        let shared = Arc::new(SubShared::default());
        let stdout = child.stdout.take().expect("piped stdout");
        let s = Arc::clone(&shared);
        let out_thread = std::thread::spawn(move || {
            for line in lossy_lines(stdout) {
                if let Some(msg) = line.strip_prefix(MSG_MARK) {
                    lock(&s.lines).push(msg.to_owned());
                } else {
                    if line.contains("received SUBACK") {
                        s.ready.store(true, Ordering::SeqCst);
                    }
                    lock(&s.debug).push(line);
                }
            }
        });
        let stderr = child.stderr.take().expect("piped stderr");
        let s = Arc::clone(&shared);
        let err_thread = std::thread::spawn(move || {
            for line in lossy_lines(stderr) {
                lock(&s.debug).push(format!("stderr: {line}"));
            }
        });
        Sub {
            what,
            child: Mutex::new(child),
            shared,
            threads: Mutex::new(vec![out_thread, err_thread]),
        }
    }
}

#[derive(Default)]
struct SubShared {
    lines: Mutex<Vec<String>>,
    debug: Mutex<Vec<String>>,
    ready: AtomicBool,
}

/// A running `mosquitto_sub`, collecting received messages as
/// `"topic payload"` lines (one per message; multi-line payloads are split).
/// Killed on drop.
pub struct Sub {
    what: String,
    child: Mutex<Child>,
    shared: Arc<SubShared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl fmt::Debug for Sub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sub")
            .field("cmd", &self.what)
            .field("count", &self.count())
            .finish()
    }
}

impl Sub {
    /// Subscribes to `filter` at `qos` and waits for the SUBACK (see
    /// [`SubOptions::spawn`]).
    #[track_caller]
    pub fn spawn(port: u16, filter: &str, qos: u8) -> Sub {
        SubOptions::new(port, filter).qos(qos).spawn()
    }

    /// Options builder, same as [`SubOptions::new`].
    pub fn options(port: u16, filter: &str) -> SubOptions {
        SubOptions::new(port, filter)
    }

    /// Waits until the SUBACK was received; returns whether it was within
    /// `timeout` (false early if the process exited).
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        poll_until(timeout, || self.is_ready() || self.exit_status().is_some());
        self.is_ready()
    }

    /// Whether the SUBACK was received.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::SeqCst)
    }

    /// All messages received so far, as `"topic payload"`.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.shared.lines).clone()
    }

    /// The payloads received so far (the part after the first space).
    pub fn payloads(&self) -> Vec<String> {
        self.lines()
            .into_iter()
            .map(|l| {
                l.split_once(' ')
                    .map(|(_, p)| p.to_owned())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Number of messages received so far.
    pub fn count(&self) -> usize {
        lock(&self.shared.lines).len()
    }

    /// Waits until at least `n` messages arrived; returns whether they did
    /// within `timeout`. Blocking.
    pub fn wait_for_count(&self, n: usize, timeout: Duration) -> bool {
        poll_until(timeout, || self.count() >= n)
    }

    /// Async [`Self::wait_for_count`]: lets other tasks run while waiting.
    pub async fn wait_for_count_async(&self, n: usize, timeout: Duration) -> bool {
        poll_until_async(timeout, || {
            let c = self.count();
            async move { c >= n }
        })
        .await
    }

    /// Waits until a received line equals `line` (`"topic payload"`).
    /// Blocking.
    pub fn wait_for_line(&self, line: &str, timeout: Duration) -> bool {
        poll_until(timeout, || {
            lock(&self.shared.lines).iter().any(|l| l == line)
        })
    }

    /// Async [`Self::wait_for_line`].
    pub async fn wait_for_line_async(&self, line: &str, timeout: Duration) -> bool {
        poll_until_async(timeout, || {
            let found = lock(&self.shared.lines).iter().any(|l| l == line);
            async move { found }
        })
        .await
    }

    /// `mosquitto_sub`'s `-d` debug output and stderr (for diagnostics).
    pub fn debug_lines(&self) -> Vec<String> {
        lock(&self.shared.debug).clone()
    }

    /// Exit status, if the process has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_wait()
            .ok()
            .flatten()
    }

    /// Pid of the `mosquitto_sub` process.
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    /// Disconnects cleanly (SIGTERM: `mosquitto_sub` sends DISCONNECT) and
    /// waits for the process and its reader threads; received lines stay
    /// readable. Falls back to SIGKILL after [`DEFAULT_TIMEOUT`].
    pub fn stop(&self) {
        if self.exit_status().is_none() {
            send_signal(self.pid(), "TERM");
            if !poll_until(DEFAULT_TIMEOUT, || self.exit_status().is_some()) {
                self.kill();
            }
        }
        self.join_readers();
    }

    /// Kills the process (SIGKILL: no DISCONNECT, so a persistent session
    /// stays and a will is sent) and waits for it and its reader threads.
    pub fn kill(&self) {
        {
            let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_readers();
    }

    fn join_readers(&self) {
        let threads: Vec<_> = lock(&self.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Publishes one message with `mosquitto_pub` to 127.0.0.1:`port` and waits
/// for it to exit (for QoS ≥ 1, after the broker acknowledged it). An empty
/// `payload` is sent as a zero-length message (`-n`, e.g. to clear a retained
/// message). Panics with `mosquitto_pub`'s stderr on failure.
#[track_caller]
pub fn publish(port: u16, topic: &str, payload: &str, qos: u8, retain: bool) {
    let mut args = vec![
        "-t".to_owned(),
        topic.to_owned(),
        "-q".to_owned(),
        qos.to_string(),
    ];
    if payload.is_empty() {
        args.push("-n".to_owned());
    } else {
        args.push("-m".to_owned());
        args.push(payload.to_owned());
    }
    if retain {
        args.push("-r".to_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    pub_checked(port, &args, None, PUBLISH_TIMEOUT);
}

/// Publishes `n` messages to `topic` at `qos` with a single `mosquitto_pub
/// -l` (one message per stdin line); payloads are `"0"`, `"1"`, …,
/// `"{n-1}"`, in that order. Waits for it to exit; panics on failure.
#[track_caller]
pub fn publish_many(port: u16, topic: &str, n: usize, qos: u8) {
    let lines: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    publish_lines(port, topic, &lines, qos);
}

/// Publishes each of `payloads` (which must not contain newlines) as one
/// message to `topic` with a single `mosquitto_pub -l`. Panics on failure.
#[track_caller]
pub fn publish_lines(port: u16, topic: &str, payloads: &[String], qos: u8) {
    assert!(
        payloads.iter().all(|p| !p.contains('\n')),
        "publish_lines: payloads must not contain newlines"
    );
    if payloads.is_empty() {
        return;
    }
    let mut input = payloads.join("\n");
    input.push('\n');
    let timeout = PUBLISH_TIMEOUT + Duration::from_millis(payloads.len() as u64);
    let qos = qos.to_string();
    pub_checked(
        port,
        &["-t", topic, "-q", &qos, "-l"],
        Some(input.into_bytes()),
        timeout,
    );
}

/// Runs `mosquitto_pub -h 127.0.0.1 -p PORT <args>` (e.g. with `-u`/`-P` or
/// `-V mqttv5`) and returns its output without checking the exit status.
#[track_caller]
pub fn mosquitto_pub(port: u16, args: &[&str], stdin: Option<Vec<u8>>) -> Output {
    let bin = require_binary("mosquitto_pub");
    let mut cmd = Command::new(bin);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    run_with_timeout(&mut cmd, stdin, PUBLISH_TIMEOUT)
}

#[track_caller]
fn pub_checked(port: u16, args: &[&str], stdin: Option<Vec<u8>>, timeout: Duration) {
    let bin = require_binary("mosquitto_pub");
    let mut cmd = Command::new(bin);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    let what = format!("{cmd:?}");
    let out = run_with_timeout(&mut cmd, stdin, timeout);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lines of a pipe, decoded lossily (payloads need not be UTF-8).
fn lossy_lines(pipe: impl std::io::Read) -> impl Iterator<Item = String> {
    let mut reader = BufReader::new(pipe);
    std::iter::from_fn(move || {
        let mut buf = Vec::new();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                Some(String::from_utf8_lossy(&buf).into_owned())
            }
        }
    })
}
