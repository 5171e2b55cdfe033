//! The scenario list and how one run of one variant is measured.
//!
//! To add a scenario: add a [`Kind`] (or reuse one) and an entry in [`all`]; to add a
//! variant, a [`Variant`] and its arm in [`run`].

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use rumqttc::QoS as RawQoS;

use crate::broker::Broker;
use crate::common::{clock_ticks_per_s, process_cpu_ticks, quantile, run_tag, Shared};
use crate::library::{self, Consumer, SessionsPlan};
use crate::raw::{self, PubPlan, SessionsResult};
use crate::sample::{Sample, Variant};

/// How long each kind of run lasts.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Runs per scenario and variant (the table shows medians).
    pub(crate) runs: usize,
    /// Publishing time of a fan-in run.
    pub(crate) fanin: Duration,
    /// Latency: warm-up, then measurement, at `rate` msg/s.
    pub(crate) warmup: Duration,
    /// Latency measurement time.
    pub(crate) measure: Duration,
    /// Sessions in the many-sessions scenario.
    pub(crate) sessions: usize,
    /// Connects in flight for the raw clients and the application-bounded library run.
    pub(crate) concurrency: usize,
    /// Publishing time of the publish-throughput scenario.
    pub(crate) publish: Duration,
    /// Forwarding: messages of the throughput phase.
    pub(crate) forward_messages: u64,
    /// Forwarding: measurement time of the latency phase (after its warm-up).
    pub(crate) forward_latency: Duration,
    /// The daemon binary the forwarding scenario runs (found by `main` when a forwarding
    /// scenario is selected).
    pub(crate) daemon: Option<PathBuf>,
}

impl Config {
    /// Full runs (`quick`: a smoke run of a few seconds per scenario).
    pub(crate) fn new(quick: bool) -> Self {
        if quick {
            Config {
                runs: 1,
                fanin: Duration::from_millis(500),
                warmup: Duration::from_millis(200),
                measure: Duration::from_secs(1),
                sessions: 500,
                concurrency: 64,
                publish: Duration::from_millis(500),
                forward_messages: 2_000,
                forward_latency: Duration::from_secs(1),
                daemon: None,
            }
        } else {
            Config {
                runs: 3,
                fanin: Duration::from_secs(3),
                warmup: Duration::from_secs(1),
                measure: Duration::from_secs(5),
                sessions: 10_000,
                concurrency: 64,
                publish: Duration::from_secs(3),
                forward_messages: 100_000,
                forward_latency: Duration::from_secs(5),
                daemon: None,
            }
        }
    }
}

/// What a scenario measures.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// `publishers` raw publishers flat out at `qos`, one subscribing session counting.
    FanIn {
        /// Publishing clients.
        publishers: u32,
        /// QoS of the publishes and the subscription.
        qos: RawQoS,
    },
    /// `publishers` raw publishers flat out at `qos`, spreading their messages over
    /// `sessions` topics; `sessions` subscribers, each on its own topic, counting (raw: as
    /// many rumqttc clients on a multi-thread runtime; library: as many sessions).
    FanInSessions {
        /// Subscribing sessions (and topics).
        sessions: u32,
        /// Publishing clients.
        publishers: u32,
        /// QoS of the publishes and the subscriptions.
        qos: RawQoS,
    },
    /// One raw publisher at `rate` msg/s; publish→route latency at the subscriber.
    Latency {
        /// QoS of the publishes and the subscription.
        qos: RawQoS,
        /// Messages per second.
        rate: u32,
    },
    /// Many idle sessions in one process (a child process per run); in some variants with
    /// a route each.
    Sessions,
    /// One raw publisher at `rate` msg/s spread over `sessions` sessions that share one
    /// worker with a neighbour session fed at its own pace; publish→route latency at those
    /// sessions (see [`crate::neighbour`]).
    Neighbour {
        /// Sessions measured (besides the neighbour).
        sessions: u32,
        /// Messages per second, over all of them.
        rate: u32,
    },
    /// One session publishing QoS 1 flat out; publish→PUBACK completions per second.
    PublishQos1,
    /// One session publishing QoS 2 flat out; publish→PUBCOMP completions per second.
    /// With a store the session is persistent, so that every packet id and every PUBREC
    /// goes to disk before the PUBLISH / PUBREL is written (no raw rumqttc row).
    PublishQos2,
    /// Forwarding from an edge broker to a cloud broker through a delay proxy adding
    /// `one_way` each way: mosquitto's bridge against a raw rumqttc forwarder and the
    /// daemon's rule (see [`crate::forward`]).
    Forward {
        /// Delay added each way on the link to the cloud broker.
        one_way: Duration,
    },
    /// Not measurable yet; the reason.
    #[allow(
        dead_code,
        reason = "for scenarios that wait on a feature; none does today"
    )]
    Pending(&'static str),
}

/// One row group of the table.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    /// Short name (filters match on it).
    pub(crate) name: String,
    /// What it measures.
    pub(crate) kind: Kind,
    /// Variants, the reference first (raw rumqttc; for forwarding, mosquitto's bridge):
    /// the ratio column is relative to it.
    pub(crate) variants: Vec<Variant>,
}

/// Subscribing sessions of the many-sessions fan-in.
const FAN_IN_SESSIONS: u32 = 100;

/// Measured sessions of the slow-neighbour scenario (the neighbour is one more).
const NEIGHBOUR_SESSIONS: u32 = 4;

/// Every scenario, in table order.
pub(crate) fn all(cfg: &Config) -> Vec<Scenario> {
    let sub = vec![
        Variant::Raw,
        Variant::RawHop,
        Variant::Listen,
        Variant::Handle,
        Variant::HandleInline,
    ];
    let mut v = Vec::new();
    for (qos, q) in [(RawQoS::AtMostOnce, 0), (RawQoS::AtLeastOnce, 1)] {
        for publishers in [1, 8] {
            v.push(Scenario {
                name: format!("fan-in qos{q} x{publishers}"),
                kind: Kind::FanIn { publishers, qos },
                variants: sub.clone(),
            });
        }
    }
    for (qos, q) in [(RawQoS::AtMostOnce, 0), (RawQoS::AtLeastOnce, 1)] {
        v.push(Scenario {
            name: format!("fan-in qos{q} x{FAN_IN_SESSIONS} sessions"),
            kind: Kind::FanInSessions {
                sessions: FAN_IN_SESSIONS,
                publishers: 8,
                qos,
            },
            variants: vec![
                Variant::Raw,
                Variant::LibraryWorkers1,
                Variant::LibraryWorkersN,
                Variant::LibraryWorkersNInline,
            ],
        });
    }
    for (qos, q) in [(RawQoS::AtMostOnce, 0), (RawQoS::AtLeastOnce, 1)] {
        v.push(Scenario {
            name: format!("latency qos{q} 1000/s"),
            kind: Kind::Latency { qos, rate: 1000 },
            variants: sub.clone(),
        });
    }
    v.push(Scenario {
        name: format!("neighbour latency qos0 1000/s x{NEIGHBOUR_SESSIONS}"),
        kind: Kind::Neighbour {
            sessions: NEIGHBOUR_SESSIONS,
            rate: 1000,
        },
        variants: vec![
            Variant::NeighbourQuiet,
            Variant::NeighbourSpinInline,
            Variant::NeighbourSpinHandle,
        ],
    });
    v.push(Scenario {
        name: "publish qos1".into(),
        kind: Kind::PublishQos1,
        variants: vec![
            Variant::Raw,
            Variant::Library,
            Variant::LibraryOnWorker,
            Variant::LibraryStore,
        ],
    });
    v.push(Scenario {
        name: "publish qos2".into(),
        kind: Kind::PublishQos2,
        variants: vec![Variant::Library, Variant::LibraryStore],
    });
    v.push(Scenario {
        name: format!("sessions x{}", cfg.sessions),
        kind: Kind::Sessions,
        variants: vec![
            Variant::Raw,
            Variant::Library,
            Variant::LibraryBounded,
            Variant::LibraryHandleRoutes,
            Variant::LibraryInlineRoutes,
        ],
    });
    for rtt_ms in [0u64, 20] {
        v.push(Scenario {
            name: format!("forward +{rtt_ms} ms rtt"),
            kind: Kind::Forward {
                one_way: Duration::from_millis(rtt_ms / 2),
            },
            variants: vec![
                Variant::Bridge,
                Variant::RawForwarder,
                Variant::Daemon,
                Variant::DaemonStore,
            ],
        });
    }
    v
}

/// Runs `variant` of `scenario` once.
pub(crate) fn run(sc: &Scenario, variant: Variant, broker: &Broker, cfg: &Config) -> Sample {
    match &sc.kind {
        Kind::FanIn { publishers, qos } => {
            through_subscriber(variant, broker, *publishers, *qos, None, cfg.fanin, None)
        }
        Kind::FanInSessions {
            sessions,
            publishers,
            qos,
        } => through_subscriber(
            variant,
            broker,
            *publishers,
            *qos,
            Some(*sessions),
            cfg.fanin,
            None,
        ),
        Kind::Latency { qos, rate } => through_subscriber(
            variant,
            broker,
            1,
            *qos,
            None,
            cfg.warmup + cfg.measure,
            Some((*rate, cfg.warmup)),
        ),
        Kind::Neighbour { sessions, rate } => through_subscriber(
            variant,
            broker,
            1,
            RawQoS::AtMostOnce,
            Some(*sessions),
            cfg.warmup + cfg.measure,
            Some((*rate, cfg.warmup)),
        ),
        Kind::PublishQos1 => {
            let tag = run_tag();
            let rate = match variant {
                Variant::Raw => raw::publish_qos1(broker.port(), cfg.publish, &tag),
                Variant::LibraryStore => library::publish(
                    &broker.url(),
                    cfg.publish,
                    100,
                    &tag,
                    mqtt_sessions::QoS::AtLeastOnce,
                    library::Store::Clean,
                ),
                Variant::LibraryOnWorker => library::publish_on_worker(
                    &broker.url(),
                    cfg.publish,
                    100,
                    &tag,
                    mqtt_sessions::QoS::AtLeastOnce,
                ),
                _ => library::publish(
                    &broker.url(),
                    cfg.publish,
                    100,
                    &tag,
                    mqtt_sessions::QoS::AtLeastOnce,
                    library::Store::None,
                ),
            };
            Sample {
                msgs_per_s: Some(rate),
                ..Sample::default()
            }
        }
        Kind::PublishQos2 => {
            let store = match variant {
                Variant::LibraryStore => library::Store::Persistent,
                _ => library::Store::None,
            };
            let rate = library::publish(
                &broker.url(),
                cfg.publish,
                100,
                &run_tag(),
                mqtt_sessions::QoS::ExactlyOnce,
                store,
            );
            Sample {
                msgs_per_s: Some(rate),
                ..Sample::default()
            }
        }
        Kind::Sessions => sessions_in_child(variant, broker, cfg),
        Kind::Forward { one_way } => crate::forward::run(
            variant,
            *one_way,
            crate::forward::messages_override().unwrap_or(cfg.forward_messages),
            cfg.forward_latency,
            cfg.daemon
                .as_deref()
                .expect("the daemon binary, found by main"),
        ),
        Kind::Pending(why) => Sample {
            note: Some((*why).to_string()),
            ..Sample::default()
        },
    }
}

/// One run through subscribers: one subscribing session on [`FILTER`](crate::common::FILTER)
/// (`sessions: None`) or `sessions` subscribers each on its own topic, and `publishers`
/// raw publishers for `duration` (flat out, or at a rate with `latency`).
///
/// The CPU figure (fan-in only) is the growth of this process's `utime + stime`
/// (`/proc/self/stat`: every thread, ended ones included) from the moment the
/// subscribers are ready to the moment every message is in (QoS 1) or nothing arrived
/// for 1 s (QoS 0), less the publishers' thread's own `utime + stime`, divided by the
/// messages received (duplicates included). It so counts the subscribing side of the
/// variant (its runtime or the manager's threads, routes, consumers and the recording
/// of every message, which all variants share) and the bench's control thread (a poll
/// every 20 ms); not mosquitto (another process) and not the publishers. Resolution:
/// one clock tick (10 ms) in a window of seconds.
#[allow(
    clippy::too_many_arguments,
    reason = "one private helper, called three ways"
)]
fn through_subscriber(
    variant: Variant,
    broker: &Broker,
    publishers: u32,
    qos: RawQoS,
    sessions: Option<u32>,
    duration: Duration,
    latency: Option<(u32, Duration)>,
) -> Sample {
    let tag = run_tag();
    let shared = Shared::new(latency.is_some());
    let lib_qos = match qos {
        RawQoS::AtMostOnce => mqtt_sessions::QoS::AtMostOnce,
        RawQoS::AtLeastOnce => mqtt_sessions::QoS::AtLeastOnce,
        RawQoS::ExactlyOnce => mqtt_sessions::QoS::ExactlyOnce,
    };
    let workers = match variant {
        Variant::LibraryWorkers1 => 1,
        _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let sub = match (variant, sessions) {
        (Variant::Raw, Some(n)) => {
            raw::spawn_subscribers_multi_thread(broker.port(), qos, n, tag.clone(), shared.clone())
        }
        (
            Variant::NeighbourQuiet | Variant::NeighbourSpinInline | Variant::NeighbourSpinHandle,
            Some(n),
        ) => crate::neighbour::spawn(broker, variant, lib_qos, n, tag.clone(), shared.clone()),
        (_, Some(n)) => library::spawn_session_subscribers(
            broker.url(),
            lib_qos,
            n,
            workers,
            if variant == Variant::LibraryWorkersNInline {
                Consumer::Inline
            } else {
                Consumer::Listen
            },
            tag.clone(),
            shared.clone(),
        ),
        (Variant::Raw, None) => {
            raw::spawn_subscriber(broker.port(), qos, tag.clone(), shared.clone(), false)
        }
        (Variant::RawHop, _) => {
            raw::spawn_subscriber(broker.port(), qos, tag.clone(), shared.clone(), true)
        }
        (Variant::Handle, None) => library::spawn_subscriber(
            broker.url(),
            lib_qos,
            Consumer::Handle,
            tag.clone(),
            shared.clone(),
        ),
        (Variant::HandleInline, None) => library::spawn_subscriber(
            broker.url(),
            lib_qos,
            Consumer::Inline,
            tag.clone(),
            shared.clone(),
        ),
        (_, None) => library::spawn_subscriber(
            broker.url(),
            lib_qos,
            Consumer::Listen,
            tag.clone(),
            shared.clone(),
        ),
    };
    assert!(
        sub.wait_ready(Duration::from_secs(30)),
        "{} subscriber not ready",
        variant.as_str()
    );
    let cpu_before = process_cpu_ticks();
    let pubs = raw::run_publishers(PubPlan {
        port: broker.port(),
        publishers,
        qos,
        duration,
        rate: latency.map(|(r, _)| r),
        tag,
        topics: sessions,
    });
    let expected = (qos != RawQoS::AtMostOnce).then_some(pubs.published);
    // QoS 1 waits longer for stragglers: a loss must not be a late arrival.
    let idle = Duration::from_secs(if expected.is_some() { 5 } else { 1 });
    shared.wait_drained(expected, idle, Duration::from_secs(60));
    let cpu_ticks = process_cpu_ticks()
        .saturating_sub(cpu_before)
        .saturating_sub(pubs.cpu_ticks);
    sub.stop();
    let rec = shared.lock();
    let secs = (shared.last_ns().saturating_sub(pubs.start_ns)) as f64 / 1e9;
    let mut s = Sample {
        msgs_per_s: (secs > 0.0).then(|| rec.received as f64 / secs),
        published: Some(pubs.published),
        received: Some(rec.distinct),
        lost: Some(pubs.published.saturating_sub(rec.distinct)),
        cpu_us_per_msg: (latency.is_none() && rec.received > 0)
            .then(|| cpu_ticks as f64 * 1e6 / clock_ticks_per_s() as f64 / rec.received as f64),
        ..Sample::default()
    };
    if !matches!(variant, Variant::Raw | Variant::RawHop) {
        s.dropped = Some(shared.dropped());
    }
    if qos != RawQoS::AtMostOnce && s.lost.is_some_and(|l| l > 0) {
        s.note = Some(format!("lost at QoS 1! {}", shared.diag()));
    }
    if sessions.is_some() && s.note.is_none() {
        s.note = Some(shared.diag());
    }
    if let Some((_, warmup)) = latency {
        let from = pubs.start_ns + u64::try_from(warmup.as_nanos()).unwrap_or(u64::MAX);
        let mut lat: Vec<u64> = rec
            .latencies
            .iter()
            .filter(|(sent, _)| *sent >= from)
            .map(|(_, l)| *l)
            .collect();
        lat.sort_unstable();
        s.p50_us = Some(quantile(&lat, 0.50) as f64 / 1e3);
        s.p99_us = Some(quantile(&lat, 0.99) as f64 / 1e3);
        let last_sent = rec
            .latencies
            .iter()
            .map(|(sent, _)| *sent)
            .max()
            .unwrap_or(from);
        let mut note = format!(
            "{} samples over {:.1} s",
            lat.len(),
            last_sent.saturating_sub(from) as f64 / 1e9
        );
        if sessions.is_some() {
            note.push_str(&format!("; {}", shared.diag()));
        }
        s.note = Some(note);
    }
    s
}

/// Many sessions run in a fresh process each time, so that resident memory starts from
/// the same point and nothing of a previous run stays allocated.
fn sessions_in_child(variant: Variant, broker: &Broker, cfg: &Config) -> Sample {
    let limit = crate::common::open_files_limit() as usize;
    // Every session holds one socket; keep room for the runtime's own descriptors.
    let n = cfg.sessions.min(limit.saturating_sub(256));
    let exe = std::env::current_exe().expect("current exe");
    let out = Command::new(exe)
        .args([
            "--child-sessions",
            variant.arg(),
            &broker.port().to_string(),
            &n.to_string(),
            &cfg.concurrency.to_string(),
        ])
        .output()
        .expect("run the sessions child process");
    // Let the broker close the previous run's connections before the next one.
    std::thread::sleep(Duration::from_secs(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(r) = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<SessionsResult>(l).ok())
    else {
        return Sample {
            note: Some(format!(
                "child failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            )),
            ..Sample::default()
        };
    };
    let mut note = r.note.clone();
    if n < cfg.sessions {
        note.push_str(&format!(
            "; only {n} sessions: open-file limit {limit} (run under `ulimit -n 65536`)"
        ));
    }
    Sample {
        ready_s: Some(r.ready_s),
        ready: Some(r.ready),
        kb_per_session: Some(
            r.rss_after_kb.saturating_sub(r.rss_before_kb) as f64 / r.sessions.max(1) as f64,
        ),
        threads: Some(r.threads),
        note: Some(note),
        ..Sample::default()
    }
}

/// The child process's side of [`sessions_in_child`]: `args` are variant, port, n,
/// concurrency. Prints one JSON line.
pub(crate) fn child_sessions(args: &[String]) {
    let [variant, port, n, concurrency] = args else {
        panic!("usage: --child-sessions VARIANT PORT N CONCURRENCY");
    };
    let variant = Variant::from_arg(variant).expect("variant");
    let port: u16 = port.parse().expect("port");
    let n: usize = n.parse().expect("n");
    let concurrency: usize = concurrency.parse().expect("concurrency");
    let url = format!("mqtt://127.0.0.1:{port}");
    let timeout = Duration::from_secs(120);
    let r = match variant {
        Variant::Raw => raw::sessions(port, n, concurrency, timeout),
        Variant::LibraryBounded => {
            library::sessions(&url, n, SessionsPlan::Bounded(concurrency), timeout)
        }
        Variant::LibraryHandleRoutes => {
            library::sessions(&url, n, SessionsPlan::RouteEach(Consumer::Handle), timeout)
        }
        Variant::LibraryInlineRoutes => {
            library::sessions(&url, n, SessionsPlan::RouteEach(Consumer::Inline), timeout)
        }
        _ => library::sessions(&url, n, SessionsPlan::Storm, timeout),
    };
    println!("{}", serde_json::to_string(&r).expect("json"));
}
