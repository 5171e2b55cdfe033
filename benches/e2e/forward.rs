//! The forwarding scenario: what a publisher sends to an edge broker A under `in/#`
//! reaches a cloud broker B as `out/in/...`, carried by mosquitto's own bridge (in A),
//! by a raw rumqttc forwarder or by the `mqtt-sessions` daemon's forwarding rule, all
//! through the same delay proxy in front of B.
//!
//! The raw rumqttc forwarder ([`crate::raw_forwarder`]) is the reference for any
//! forwarder outside the broker: what a user would wire by hand with rumqttc (one client
//! on A with manual acknowledgements, one on B with the daemon's window of 1,000, each
//! message acknowledged to A on B's PUBACK), in a process of its own, this bench
//! executable again. It pays what the daemon pays and the bridge, inside A, does not: a
//! second socket hop (A → forwarder → B instead of A → B) and a process that must wake
//! for each burst. So it is the floor of an out-of-process forwarder on this machine,
//! and the distance between it and the daemon is the daemon's own cost.
//!
//! Everything is fresh for each run of each variant: broker B (never drops, as every
//! bench broker), a [`Proxy`] in front of it adding the one-way delay, broker A at
//! mosquitto's defaults (bridge variant: plus a `connection` section to the proxy), the
//! forwarder process (the raw forwarder; or the daemon, with a `[store]` in a temp dir
//! for `daemon + store`), a raw rumqttc subscriber on B (`out/in/#`, QoS 1). Probes
//! cross first (the path is up), then one raw rumqttc publisher into A (QoS 1, 64-byte
//! payloads carrying a sequence number and the send time) runs two phases:
//!
//! 1. **Throughput**: a fixed number of messages, with at most [`WINDOW`] of them
//!    published and not yet received at B. So the forwarder always has hundreds waiting
//!    (it is the bottleneck, never the publisher), and A's queue for the forwarder stays
//!    within mosquitto's default limit of 1,000 queued messages per client, past which A
//!    would drop (a publisher flat out at QoS 1 gets
//!    its PUBACKs from A at once, whatever the forwarder does, so it would overflow that
//!    queue within milliseconds and every variant would lose messages to A, not to the
//!    forwarder). msgs/s = distinct messages received / (last receive − first publish).
//! 2. **Latency**: [`LATENCY_RATE`] msg/s, paced, [`WARMUP`] then the measurement; p50
//!    and p99 of publish → receipt at B (one process-wide monotonic clock) over the
//!    measured messages. Paced well below any forwarder's capacity, so that the
//!    figures are the path's own latency, not the time spent queued behind a backlog.
//!
//! Lost = published (acknowledged by A) − distinct received at B, over both phases;
//! duplicates = received − distinct.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use rumqttc::{Event, Packet, QoS};
use tokio::sync::Semaphore;

use crate::broker::{Broker, Limits};
use crate::common::{clock_ticks_per_s, now_ns, payload, pid_cpu_ticks, quantile, run_tag, Shared};
use crate::proxy::Proxy;
use crate::raw::{client, connected_publisher};
use crate::sample::{Sample, Variant};
use crate::SubscriberThread;

/// Throughput phase: at most this many messages published and not yet received at B.
///
/// What the forwarder has not yet acknowledged to A (A's in-flight window and queue for
/// it) is about this plus what reached B within the last one-way delay, whose
/// acknowledgement is still on its way back. At 500 that stays within A's default
/// `max_queued_messages` (1,000, on top of the in-flight window) while acknowledgements
/// come back in time (a run where A dropped says so in its note); and the publisher is
/// not the daemon's limit: 500 messages per end-to-end latency (~12.5 ms at 20 ms of
/// round trip) is about 40,000 msgs/s.
pub(crate) const WINDOW: usize = 500;
/// Latency phase: messages per second.
pub(crate) const LATENCY_RATE: u32 = 200;
/// Latency phase: published before the measurement starts.
pub(crate) const WARMUP: Duration = Duration::from_millis(500);
/// Throughput phase: publishing stops when nothing crossed for this long (lost messages).
const STALL: Duration = Duration::from_secs(10);
/// How long the path may take to come up (a probe crossing).
const READY: Duration = Duration::from_secs(30);

/// The publisher's topic on A.
const TOPIC: &str = "in/bench/data";
/// Probes on A, until one crosses.
const PROBE: &str = "in/probe";
/// The subscriber's filter on B.
const TARGET_FILTER: &str = "out/in/#";
/// Forwarded benchmark messages on B start with this.
const TARGET_DATA: &str = "out/in/bench/";
/// A forwarded probe on B.
const TARGET_PROBE: &str = "out/in/probe";

/// The bridge's configuration in A: mosquitto's defaults but for the address and the
/// topic mapping (`in/X` on A is `out/in/X` on B, QoS 1, out only).
pub(crate) fn bridge_section(proxy_port: u16) -> String {
    format!(
        "connection cloud\n\
         address 127.0.0.1:{proxy_port}\n\
         topic # out 1 in/ out/in/\n"
    )
}

/// A diagnostic, not part of the measured set-up: `E2E_FORWARD_INFLIGHT=N` gives the
/// daemon's cloud session `inflight = N` (hence the rule's window) instead of the
/// forwarding default (1,000), to see whether that window bounds a run. Runs made with it say so in their note.
const INFLIGHT_ENV: &str = "E2E_FORWARD_INFLIGHT";

fn inflight_override() -> Option<u16> {
    std::env::var(INFLIGHT_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
}

/// Overrides the throughput phase's message count (for a profile long enough to see the
/// steady state); runs made with it say so in their note.
pub(crate) const MESSAGES_ENV: &str = "E2E_FORWARD_MESSAGES";

pub(crate) fn messages_override() -> Option<u64> {
    std::env::var(MESSAGES_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
}

/// The daemon's configuration: `edge` → A over MQTT 5 (persistent: clean session off;
/// as a rule's source it announces a Receive Maximum, so A's queue limit counts only
/// what waits past that window), `cloud` → B through the proxy, one rule `in/#` →
/// `out/{topic}` at QoS 1; the daemon's defaults otherwise (the cloud session's
/// `inflight` 1,000, hence the rule's window; see [`INFLIGHT_ENV`]).
pub(crate) fn daemon_config(http: u16, a: u16, b: u16, store: Option<&Path>, tag: &str) -> String {
    let cloud_performance = inflight_override().map_or_else(String::new, |n| {
        format!("[sessions.performance]\ninflight = {n}\n")
    });
    let store = store.map_or_else(String::new, |p| {
        format!("[store]\npath = \"{}\"\n", p.display())
    });
    format!(
        r#"# generated by benches/e2e/forward.rs
shutdown_timeout = "5s"
[http]
listen = "127.0.0.1:{http}"
{store}
[[sessions]]
name = "edge"
brokers = ["mqtt://127.0.0.1:{a}"]
client_id = "{tag}-edge"
protocol = "5"
[sessions.connect]
clean_session = false
[sessions.reconnect]
initial_delay = "100ms"
max_delay = "1s"

[[sessions]]
name = "cloud"
brokers = ["mqtt://127.0.0.1:{b}"]
client_id = "{tag}-cloud"
[sessions.reconnect]
initial_delay = "100ms"
max_delay = "1s"
{cloud_performance}
[[forward]]
name = "edge-to-cloud"
from = "edge"
filter = "in/#"
to = "cloud"
topic = "out/{{topic}}"
qos = 1
"#
    )
}

/// The newest modification time of the `.rs` files under `dir`, and that file.
fn newest_source(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut newest: Option<(SystemTime, PathBuf)> = None;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
                    if newest.as_ref().is_none_or(|(n, _)| t > *n) {
                        newest = Some((t, p));
                    }
                }
            }
        }
    }
    newest
}

/// The `mqtt-sessions` daemon binary of this build: `$MQTT_SESSIONS_DAEMON`, or
/// `mqtt-sessions` in the profile directory of this bench executable
/// (`target/<profile>/deps/e2e-…` → `target/<profile>/mqtt-sessions`), checked to be
/// newer than every source file of the library and the daemon; else how to build it.
pub(crate) fn daemon_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("MQTT_SESSIONS_DAEMON") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "MQTT_SESSIONS_DAEMON={}: no such file",
                p.display()
            ))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{}: not in target/<profile>/deps", exe.display()))?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let build = format!(
        "cargo build --locked -p mqtt-sessions-daemon{}",
        if release { " --release" } else { "" }
    );
    let bin = profile_dir.join("mqtt-sessions");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .map_err(|_| {
            format!(
                "the forward scenario runs the daemon binary {}, which is missing: build it with `{build}` (scripts/bench does)",
                bin.display()
            )
        })?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in [root.join("src"), root.join("daemon").join("src")] {
        if let Some((t, file)) = newest_source(&dir) {
            if t > built {
                return Err(format!(
                    "the daemon binary {} is older than {}: rebuild it with `{build}` (scripts/bench does)",
                    bin.display(),
                    file.display()
                ));
            }
        }
    }
    Ok(bin)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One HTTP/1.0 GET on 127.0.0.1:`port`: status and body, `None` if unreachable.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// A running forwarder process (the daemon, or the raw rumqttc forwarder) with its
/// stderr (and the daemon's config and store) in a temp dir; killed on drop.
struct Forwarder {
    child: Child,
    /// The daemon's `[http]` port; `None` for the raw forwarder.
    http: Option<u16>,
    /// Its name in the run's note: `daemon` or `forwarder`.
    name: &'static str,
    dir: tempfile::TempDir,
}

/// A temp dir for a forwarder process's files, removed on drop.
fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mqtt-sessions-bench-")
        .tempdir()
        .expect("temp dir for the forwarder")
}

impl Forwarder {
    /// The daemon.
    fn daemon(bin: &Path, a: u16, b: u16, store: bool, tag: &str) -> Forwarder {
        let dir = temp_dir();
        let http = free_port();
        let store_dir = dir.path().join("store");
        let config = daemon_config(http, a, b, store.then_some(store_dir.as_path()), tag);
        let path = dir.path().join("daemon.toml");
        std::fs::write(&path, config).expect("write daemon.toml");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr.log");
        let child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        Forwarder {
            child,
            http: Some(http),
            name: "daemon",
            dir,
        }
    }

    /// The raw rumqttc forwarder: this executable with `--child-forwarder`. Its standard
    /// input is a pipe this process holds: it ends when that closes, so it does not
    /// outlive the bench even when the bench is killed.
    fn raw(a: u16, b: u16, tag: &str) -> Forwarder {
        let dir = temp_dir();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("stderr.log");
        let exe = std::env::current_exe().expect("current exe");
        let child = Command::new(&exe)
            .args(["--child-forwarder", &a.to_string(), &b.to_string(), tag])
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} --child-forwarder: {e}", exe.display()));
        Forwarder {
            child,
            http: None,
            name: "forwarder",
            dir,
        }
    }

    /// The last lines of the process's stderr.
    fn stderr_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls the daemon while a run lasts, every 250 ms: the highest value of every number
/// `GET /rules` reports (the rule's counters and backlog), and of the sessions'
/// `inflight_messages` and `pending_messages` from `GET /sessions` (the cloud session's:
/// the edge session publishes nothing).
struct Sampler {
    stop: Arc<AtomicBool>,
    join: JoinHandle<Vec<(String, f64)>>,
}

/// Folds every number of `v` named by `keep` (all when `None`) into `max`.
fn fold_numbers(v: &serde_json::Value, keep: Option<&[&str]>, max: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Array(a) => a.iter().for_each(|x| fold_numbers(x, keep, max)),
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                match x.as_f64() {
                    Some(n) if keep.is_none_or(|keep| keep.contains(&k.as_str())) => {
                        match max.iter_mut().find(|(name, _)| name == k) {
                            Some((_, m)) => *m = m.max(n),
                            None => max.push((k.clone(), n)),
                        }
                    }
                    Some(_) => {}
                    None => fold_numbers(x, keep, max),
                }
            }
        }
        _ => {}
    }
}

impl Sampler {
    fn start(http: u16) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let join = std::thread::spawn(move || {
            let mut max = Vec::new();
            let sessions: &[&str] = &["inflight_messages", "pending_messages"];
            while !s.load(Ordering::Relaxed) {
                for (path, keep) in [("/rules", None), ("/sessions", Some(sessions))] {
                    if let Some((200, body)) = http_get(http, path) {
                        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                            fold_numbers(&v, keep, &mut max);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            max
        });
        Sampler { stop, join }
    }

    /// `name max, …` of what the daemon reported.
    fn stop(self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        let max = self.join.join().unwrap_or_default();
        max.iter()
            .map(|(k, v)| format!("{k} {v:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The subscriber on B: records every forwarded benchmark message and gives the
/// publisher's window a slot back for each new one; flags the first probe.
fn spawn_subscriber(
    port: u16,
    tag: String,
    shared: Shared,
    window: Arc<Semaphore>,
    probe_seen: Arc<AtomicBool>,
) -> SubscriberThread {
    SubscriberThread::spawn(move |ready, mut stop| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("subscriber runtime")
            .block_on(async move {
                let (c, mut el) = client(&format!("{tag}-sub"), port, 100);
                c.subscribe(TARGET_FILTER, QoS::AtLeastOnce)
                    .await
                    .expect("subscribe");
                let mut ready = Some(ready);
                let mut errors = 0u64;
                loop {
                    let ev = tokio::select! {
                        ev = el.poll() => ev,
                        _ = &mut stop => break,
                    };
                    match ev {
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            if p.topic.starts_with(TARGET_DATA) {
                                let before = shared.lock().distinct;
                                shared.record(&p.payload);
                                if shared.lock().distinct > before {
                                    window.add_permits(1);
                                }
                            } else if p.topic == TARGET_PROBE {
                                probe_seen.store(true, Ordering::Relaxed);
                            }
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            if let Some(r) = ready.take() {
                                let _ = r.send(());
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            errors += 1;
                            tracing::warn!(error = %e, "subscriber on B: connection failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                shared.set_diag(format!("subscriber connection errors {errors}"));
                let _ = c.try_disconnect();
            });
    })
}

/// What the publisher's side of a run needs.
struct Plan {
    port: u16,
    messages: u64,
    latency: Duration,
    tag: String,
    shared: Shared,
    window: Arc<Semaphore>,
    probe_seen: Arc<AtomicBool>,
    /// Processes whose CPU time the throughput phase counts (A, and the forwarder
    /// process: the daemon or the raw forwarder).
    pids: Vec<u32>,
}

/// What the publisher's side saw.
#[derive(Debug, Default)]
struct Outcome {
    /// A probe crossed.
    ready: bool,
    /// Throughput phase: first publish.
    start_ns: u64,
    /// Throughput phase: messages acknowledged by A.
    published: u64,
    /// Throughput phase: distinct messages received at B, then the time of the last.
    distinct: u64,
    last_ns: u64,
    /// Throughput phase: publishing stopped because nothing crossed for [`STALL`].
    stalled: bool,
    /// Throughput phase: CPU ticks of each of `pids`.
    cpu_ticks: Vec<u64>,
    /// Latency phase: messages sent from this time on are measured.
    measure_from_ns: u64,
    /// Both phases: messages acknowledged by A.
    acked: u64,
}

/// Waits (async) until `shared` has `expected` distinct messages or nothing arrived for
/// `idle`, at most `max`.
async fn drained(shared: &Shared, expected: u64, idle: Duration, max: Duration) {
    let deadline = Instant::now() + max;
    let mut last = (shared.received(), Instant::now());
    while Instant::now() < deadline && shared.lock().distinct < expected {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = shared.received();
        if r != last.0 {
            last = (r, Instant::now());
        } else if last.1.elapsed() >= idle {
            return;
        }
    }
}

/// Waits (async) until `counter` reaches `n`, at most `max`.
async fn reaches(counter: &AtomicU64, n: u64, max: Duration) {
    let deadline = Instant::now() + max;
    while counter.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The publisher into A, on its own thread and runtime: probes, then both phases.
fn publish(plan: Plan) -> Outcome {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("publisher runtime")
            .block_on(publish_phases(plan))
    })
    .join()
    .expect("publisher thread")
}

async fn publish_phases(plan: Plan) -> Outcome {
    let mut out = Outcome::default();
    let (c, acked, poller) = connected_publisher(&format!("{}-pub", plan.tag), plan.port).await;

    // The path is up once a probe crossed.
    let deadline = Instant::now() + READY;
    let mut probes = 0u64;
    while !plan.probe_seen.load(Ordering::Relaxed) && Instant::now() < deadline {
        let _ = c
            .publish(PROBE, QoS::AtLeastOnce, false, b"probe".to_vec())
            .await;
        probes += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Acknowledgements counted from here on are benchmark messages only.
    reaches(&acked, probes, Duration::from_secs(5)).await;
    acked.store(0, Ordering::Relaxed);
    out.ready = plan.probe_seen.load(Ordering::Relaxed);
    if !out.ready {
        poller.abort();
        return out;
    }

    // Throughput: a fixed number of messages, at most WINDOW not yet received at B.
    let cpu_before: Vec<u64> = plan.pids.iter().map(|&p| pid_cpu_ticks(p)).collect();
    out.start_ns = now_ns();
    let mut issued = 0u64;
    for seq in 0..plan.messages {
        match tokio::time::timeout(STALL, plan.window.acquire()).await {
            Ok(Ok(permit)) => permit.forget(),
            _ => {
                out.stalled = true;
                break;
            }
        }
        if c.publish(TOPIC, QoS::AtLeastOnce, false, payload(0, seq))
            .await
            .is_err()
        {
            break;
        }
        issued += 1;
    }
    reaches(&acked, issued, Duration::from_secs(30)).await;
    out.published = acked.load(Ordering::Relaxed);
    drained(
        &plan.shared,
        out.published,
        Duration::from_secs(5),
        Duration::from_secs(60),
    )
    .await;
    out.cpu_ticks = plan
        .pids
        .iter()
        .zip(&cpu_before)
        .map(|(&p, &b)| pid_cpu_ticks(p).saturating_sub(b))
        .collect();
    out.distinct = plan.shared.lock().distinct;
    out.last_ns = plan.shared.last_ns();

    // Latency: paced, warm-up then measurement.
    let mut tick = tokio::time::interval(Duration::from_secs(1) / LATENCY_RATE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    out.measure_from_ns = now_ns() + u64::try_from(WARMUP.as_nanos()).unwrap_or(u64::MAX);
    let mut seq = 0u64;
    while started.elapsed() < WARMUP + plan.latency {
        tick.tick().await;
        if c.publish(TOPIC, QoS::AtLeastOnce, false, payload(1, seq))
            .await
            .is_err()
        {
            break;
        }
        seq += 1;
        issued += 1;
    }
    reaches(&acked, issued, Duration::from_secs(30)).await;
    out.acked = acked.load(Ordering::Relaxed);
    let _ = c.try_disconnect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    poller.abort();
    out
}

/// One run of `variant` (bridge, raw forwarder, daemon, daemon + store) with `one_way`
/// delay each way on the link to B: `messages` in the throughput phase, `latency` of
/// measurement.
pub(crate) fn run(
    variant: Variant,
    one_way: Duration,
    messages: u64,
    latency: Duration,
    daemon_bin: &Path,
) -> Sample {
    let tag = run_tag();
    let b = Broker::start();
    let proxy = Proxy::start(b.port(), one_way);
    let bridge = variant == Variant::Bridge;
    let a = Broker::start_with(
        Limits::Defaults,
        &if bridge {
            bridge_section(proxy.port())
        } else {
            String::new()
        },
    );
    let forwarder = match variant {
        Variant::Bridge => None,
        Variant::RawForwarder => Some(Forwarder::raw(a.port(), proxy.port(), &tag)),
        _ => Some(Forwarder::daemon(
            daemon_bin,
            a.port(),
            proxy.port(),
            variant == Variant::DaemonStore,
            &tag,
        )),
    };
    let shared = Shared::new(true);
    let window = Arc::new(Semaphore::new(WINDOW));
    let probe_seen = Arc::new(AtomicBool::new(false));
    let sub = spawn_subscriber(
        b.port(),
        tag.clone(),
        shared.clone(),
        Arc::clone(&window),
        Arc::clone(&probe_seen),
    );
    assert!(
        sub.wait_ready(Duration::from_secs(30)),
        "forward: subscriber on B not ready"
    );
    let sampler = forwarder.as_ref().and_then(|f| f.http).map(Sampler::start);
    let mut pids = vec![a.pid()];
    pids.extend(forwarder.as_ref().map(|f| f.child.id()));
    let out = publish(Plan {
        port: a.port(),
        messages,
        latency,
        tag,
        shared: shared.clone(),
        window,
        probe_seen,
        pids,
    });
    let rules = sampler.map(Sampler::stop);
    if out.ready {
        shared.wait_drained(
            Some(out.acked),
            Duration::from_secs(5),
            Duration::from_secs(60),
        );
    }
    sub.stop();
    let diag = shared.diag();
    let rec = shared.lock();
    let mut notes = Vec::new();
    if !out.ready {
        notes.push(format!("no probe crossed in {READY:?}"));
        if let Some(f) = &forwarder {
            notes.push(format!("{}: {}", f.name, f.stderr_tail()));
        }
        let log = a.log();
        if !log.trim().is_empty() {
            notes.push(format!("A: {}", log.lines().last().unwrap_or("")));
        }
        return Sample {
            note: Some(notes.join("; ")),
            ..Sample::default()
        };
    }
    let secs = out.last_ns.saturating_sub(out.start_ns) as f64 / 1e9;
    let mut lat: Vec<u64> = rec
        .latencies
        .iter()
        .filter(|(sent, _)| *sent >= out.measure_from_ns)
        .map(|(_, l)| *l)
        .collect();
    lat.sort_unstable();
    let tck = clock_ticks_per_s() as f64;
    let per_msg = |ticks: u64| ticks as f64 * 1e6 / tck / out.distinct.max(1) as f64;
    let lost = out.acked.saturating_sub(rec.distinct);
    if out.stalled {
        notes.push(format!("nothing crossed for {STALL:?}: publishing stopped"));
    }
    if let Some(n) =
        inflight_override().filter(|_| forwarder.as_ref().is_some_and(|f| f.http.is_some()))
    {
        notes.push(format!(
            "diagnostic: cloud session inflight = {n} ({INFLIGHT_ENV})"
        ));
    }
    if let Some(n) = messages_override() {
        notes.push(format!("diagnostic: {n} messages ({MESSAGES_ENV})"));
    }
    if a.log().contains("Outgoing messages are being dropped") {
        notes.push("A dropped outgoing messages (its queue limit)".to_string());
    }
    if lost > 0 {
        notes.push(format!("lost at QoS 1! {diag}"));
        if let Some(f) = &forwarder {
            notes.push(format!("{}: {}", f.name, f.stderr_tail()));
        }
    }
    notes.push(format!(
        "{} in {:.1} s, {} latency samples; CPU µs/msg: A {:.1}{}",
        out.distinct,
        secs,
        lat.len(),
        per_msg(out.cpu_ticks.first().copied().unwrap_or(0)),
        forwarder
            .as_ref()
            .zip(out.cpu_ticks.get(1))
            .map_or_else(String::new, |(f, &t)| format!(
                ", {} {:.1}",
                f.name,
                per_msg(t)
            ))
    ));
    if let Some(r) = rules.filter(|r| !r.is_empty()) {
        notes.push(format!("daemon max: {r}"));
    }
    Sample {
        msgs_per_s: (secs > 0.0).then(|| out.distinct as f64 / secs),
        published: Some(out.acked),
        received: Some(rec.distinct),
        lost: Some(lost),
        duplicates: Some(rec.received.saturating_sub(rec.distinct)),
        p50_us: Some(quantile(&lat, 0.50) as f64 / 1e3),
        p99_us: Some(quantile(&lat, 0.99) as f64 / 1e3),
        cpu_us_per_msg: Some(per_msg(out.cpu_ticks.iter().sum())),
        note: Some(notes.join("; ")),
        ..Sample::default()
    }
}
