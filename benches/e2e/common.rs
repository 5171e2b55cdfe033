//! What every variant shares: the clock, the payload layout, the subscriber's recorder,
//! percentiles and process figures (resident memory, load average, open-file limit).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Payload size of every benchmark message.
pub(crate) const PAYLOAD_LEN: usize = 64;

/// Topic filter the subscribing session listens on; publisher `i` publishes on
/// `bench/{i}/data`.
pub(crate) const FILTER: &str = "bench/#";

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Nanoseconds since the first call in this process (a monotonic clock shared by the
/// publishing and the subscribing threads, so a payload can carry its send time).
pub(crate) fn now_ns() -> u64 {
    u64::try_from(origin().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A 64-byte payload: publisher id, sequence number, send time (ns), zero padding.
pub(crate) fn payload(publisher: u32, seq: u64) -> Vec<u8> {
    let mut p = vec![0u8; PAYLOAD_LEN];
    p[0..4].copy_from_slice(&publisher.to_le_bytes());
    p[4..12].copy_from_slice(&seq.to_le_bytes());
    p[12..20].copy_from_slice(&now_ns().to_le_bytes());
    p
}

/// `(publisher, seq, sent_ns)` of a payload made by [`payload`].
pub(crate) fn parse(p: &[u8]) -> Option<(u32, u64, u64)> {
    let publisher = u32::from_le_bytes(p.get(0..4)?.try_into().ok()?);
    let seq = u64::from_le_bytes(p.get(4..12)?.try_into().ok()?);
    let sent = u64::from_le_bytes(p.get(12..20)?.try_into().ok()?);
    Some((publisher, seq, sent))
}

/// What the subscribing side saw: every variant records each message the same way.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    /// Messages received, duplicates included.
    pub(crate) received: u64,
    /// Distinct `(publisher, seq)` pairs received.
    pub(crate) distinct: u64,
    /// One bit per `(publisher, seq)`.
    seen: Vec<Vec<u64>>,
    /// `(sent_ns, latency_ns)` of every message, when `latency` is on.
    pub(crate) latencies: Vec<(u64, u64)>,
    /// Whether to keep latencies (latency scenarios only: fan-in runs would keep millions).
    pub(crate) latency: bool,
}

impl Recorder {
    /// Records one received payload.
    pub(crate) fn record(&mut self, payload: &[u8]) {
        let now = now_ns();
        self.received += 1;
        let Some((publisher, seq, sent)) = parse(payload) else {
            return;
        };
        let p = publisher as usize;
        if self.seen.len() <= p {
            self.seen.resize_with(p + 1, Vec::new);
        }
        let words = &mut self.seen[p];
        let (w, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if words.len() <= w {
            words.resize((w + 1).next_power_of_two(), 0);
        }
        if words[w] & bit == 0 {
            words[w] |= bit;
            self.distinct += 1;
        }
        if self.latency {
            self.latencies.push((sent, now.saturating_sub(sent)));
        }
    }
}

/// The recorder as the subscribing side shares it with the bench's control thread,
/// plus lock-free progress figures the control thread polls while waiting.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shared {
    rec: Arc<Mutex<Recorder>>,
    received: Arc<AtomicU64>,
    last_ns: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    diag: Arc<Mutex<String>>,
}

impl Shared {
    /// A recorder; `latency`: keep every message's latency.
    pub(crate) fn new(latency: bool) -> Self {
        let s = Shared::default();
        s.lock().latency = latency;
        s
    }

    /// Records one payload (called by the variant's consumer, once per message).
    pub(crate) fn record(&self, payload: &[u8]) {
        self.lock().record(payload);
        self.received.fetch_add(1, Ordering::Relaxed);
        self.last_ns.store(now_ns(), Ordering::Relaxed);
    }

    /// The recorder (uncontended in practice: one consumer thread at a time).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Recorder> {
        self.rec.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Messages received so far.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Sets the messages the consumer's queue dropped (mqtt-sessions routes count them).
    pub(crate) fn set_dropped(&self, n: u64) {
        self.dropped.store(n, Ordering::Relaxed);
    }

    /// Messages the consumer's queue dropped.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sets what the subscribing side says about its connection (received by the
    /// session, reconnects), shown when a QoS 1 run lost messages.
    pub(crate) fn set_diag(&self, d: String) {
        *self.diag.lock().unwrap_or_else(|e| e.into_inner()) = d;
    }

    /// See [`set_diag`](Self::set_diag).
    pub(crate) fn diag(&self) -> String {
        self.diag.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Time (ns, see [`now_ns`]) of the last message.
    pub(crate) fn last_ns(&self) -> u64 {
        self.last_ns.load(Ordering::Relaxed)
    }

    /// Waits until `distinct >= expected` (when given) or nothing arrived for `idle`,
    /// at most `max`.
    pub(crate) fn wait_drained(&self, expected: Option<u64>, idle: Duration, max: Duration) {
        let deadline = Instant::now() + max;
        let mut last = (self.received(), Instant::now());
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            if expected.is_some_and(|e| self.lock().distinct >= e) {
                return;
            }
            let r = self.received();
            if r != last.0 {
                last = (r, Instant::now());
            } else if last.1.elapsed() >= idle {
                return;
            }
        }
    }
}

/// The `q`-quantile (0..=1) of `sorted` (nearest rank), or 0 when empty.
pub(crate) fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Median of `values` (mean of the two middle ones for an even count), `None` if empty.
pub(crate) fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

/// A numeric field of `/proc/self/status` (or of process `pid`): kB for `VmRSS` and its
/// kind, a count for `Threads`.
pub(crate) fn status_kb(pid: Option<u32>, field: &str) -> u64 {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_string(),
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident memory of this process, kB.
pub(crate) fn rss_kb() -> u64 {
    status_kb(None, "VmRSS")
}

/// Threads of this process now (`Threads` of `/proc/self/status`, a count, not kB).
pub(crate) fn threads() -> u64 {
    status_kb(None, "Threads")
}

/// The 1-, 5- and 15-minute load averages.
pub(crate) fn loadavg() -> [f64; 3] {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = s.split_whitespace().map(|v| v.parse().unwrap_or(f64::NAN));
    [
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
    ]
}

/// The soft limit on open files of this process.
pub(crate) fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(1024)
}

/// A unique prefix for client ids of one run (no clash with a previous run's sessions
/// the broker may still be closing).
pub(crate) fn run_tag() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "b{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Clock ticks per second of the CPU times in `/proc/*/stat` (`getconf CLK_TCK`; 100, the
/// Linux `USER_HZ` of every mainstream architecture, when `getconf` is missing).
pub(crate) fn clock_ticks_per_s() -> u64 {
    static TCK: OnceLock<u64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// `utime + stime` (clock ticks) of a `/proc/.../stat` file: fields 14 and 15, counted
/// after the command name in parentheses (which may hold spaces).
fn stat_cpu_ticks(path: &str) -> u64 {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let Some((_, rest)) = s.rsplit_once(')') else {
        return 0;
    };
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let mut fields = rest.split_whitespace().skip(11);
    let mut next = || {
        fields
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    next() + next()
}

/// User + system CPU time of this whole process so far (every thread, including the
/// threads that have ended), clock ticks.
pub(crate) fn process_cpu_ticks() -> u64 {
    stat_cpu_ticks("/proc/self/stat")
}

/// User + system CPU time of process `pid` so far (every thread), clock ticks; 0 when
/// the process is gone.
pub(crate) fn pid_cpu_ticks(pid: u32) -> u64 {
    stat_cpu_ticks(&format!("/proc/{pid}/stat"))
}

/// User + system CPU time of the calling thread so far, clock ticks.
pub(crate) fn thread_cpu_ticks() -> u64 {
    stat_cpu_ticks("/proc/thread-self/stat")
}

/// Topic of session `i` in the many-sessions fan-in (`bench/{i}`); each session
/// subscribes to its own, exactly.
pub(crate) fn session_topic(i: u32) -> String {
    format!("bench/{i}")
}
