//! [`SessionsCollector`]: the prometheus [`Collector`] that reads sessions at scrape time.

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

use super::{PerSessionMetrics, Sources};
use crate::event::ErrorKind;
use crate::metrics::latency::LATENCY_BUCKETS;
use crate::session::state::SessionState;
use crate::session::SessionStatus;

/// The label naming a session.
pub const LABEL_SESSION: &str = "session";

/// One metric family: name (without the prefix), help, type, label names.
struct Spec {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
}

const fn spec(
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
) -> Spec {
    Spec {
        name,
        help,
        kind,
        labels,
    }
}

use MetricType::{COUNTER, GAUGE, HISTOGRAM};

const S: &[&str] = &[LABEL_SESSION];

// The families; `collect` has one arm per name (a missing arm logs an error, and the
// test `every_metric_family_appears_in_the_exposition_of_a_busy_manager` catches it).
const BUILD_INFO: Spec = spec(
    "build_info",
    "Always 1; the version label is the mqtt-sessions crate version.",
    GAUGE,
    &["version"],
);
const SESSIONS: Spec = spec(
    "sessions",
    "Sessions of the manager by connection state.",
    GAUGE,
    &["state"],
);
const SESSION_UP: Spec = spec(
    "session_up",
    "1 while the session is connected to a broker, else 0.",
    GAUGE,
    S,
);
const SESSION_STATE: Spec = spec(
    "session_state",
    "Connection state code: 0 disconnected, 1 connecting, 2 connected, 3 reconnecting, 4 closed.",
    GAUGE,
    S,
);
const SESSION_READY: Spec = spec(
    "session_ready",
    "1 while the session is connected with every subscription restored, else 0.",
    GAUGE,
    S,
);
const SESSION_UPTIME: Spec = spec(
    "session_uptime_seconds",
    "Seconds since the session's current connection was established (0 when not connected).",
    GAUGE,
    S,
);
const SESSION_RESTARTS: Spec = spec(
    "session_restarts_total",
    "Times the supervisor restarted the session's actor.",
    COUNTER,
    S,
);
const RECEIVED: Spec = spec(
    "messages_received_total",
    "Messages received by the session.",
    COUNTER,
    S,
);
const RECEIVED_BYTES: Spec = spec(
    "received_bytes_total",
    "Payload bytes received by the session.",
    COUNTER,
    S,
);
const SENT: Spec = spec(
    "messages_sent_total",
    "Messages sent by the session (QoS 0 written, QoS 1 and 2 acknowledged).",
    COUNTER,
    S,
);
const SENT_BYTES: Spec = spec(
    "sent_bytes_total",
    "Payload bytes sent by the session.",
    COUNTER,
    S,
);
const ATTEMPTS: Spec = spec(
    "connection_attempts_total",
    "Connection attempts of the session (one per broker tried).",
    COUNTER,
    S,
);
const RECONNECTS: Spec = spec(
    "reconnects_total",
    "Connections the session established after its first one.",
    COUNTER,
    S,
);
const ERRORS: Spec = spec(
    "connection_errors_total",
    "Failed connection attempts and lost connections of the session, by kind.",
    COUNTER,
    &[LABEL_SESSION, "kind"],
);
const PENDING: Spec = spec(
    "pending_messages",
    "QoS 1 and 2 publishes of the session waiting to be sent or acknowledged.",
    GAUGE,
    S,
);
const INFLIGHT: Spec = spec(
    "inflight_messages",
    "QoS 1 and 2 publishes of the session sent and not yet acknowledged.",
    GAUGE,
    S,
);
const DROPPED: Spec = spec("dropped_messages_total", "Messages the session dropped, by reason: oversized (incoming above max_message_size), disconnect (QoS 0 publish not written before the connection ended), consumer_full (QoS 0 message for a full receiver), unrouted (a message that matched no route: QoS 0 at once, QoS >= 1 after waiting unrouted_hold for a route).", COUNTER, &[LABEL_SESSION, "reason"]);
const PUBLISH_FAILURES: Spec = spec(
    "publish_failures_total",
    "Publishes queued with enqueue that failed after they were accepted (refused by the broker, too large for it, timed out).",
    COUNTER,
    S,
);
const LAST_MESSAGE: Spec = spec(
    "last_message_timestamp_seconds",
    "Unix time of the last message the session received.",
    GAUGE,
    S,
);
const ACK_LATENCY: Spec = spec(
    "publish_ack_latency_seconds",
    "Time from writing a QoS 1 or 2 publish to its acknowledgement (PUBACK or PUBCOMP).",
    HISTOGRAM,
    S,
);
const HANDLER_PANICS: Spec = spec(
    "event_handler_panics_total",
    "Event handler calls that panicked.",
    COUNTER,
    &[],
);
const EVENTS_DROPPED: Spec = spec(
    "events_dropped_total",
    "Events not handed to event handlers because their queue was full.",
    COUNTER,
    &[],
);
const ROUTE_DELIVERED: Spec = spec(
    "route_delivered_total",
    "Messages delivered to the route's target.",
    COUNTER,
    &["route"],
);
const ROUTE_DROPPED: Spec = spec(
    "route_dropped_total",
    "Messages the route dropped, by reason: full (bounded target full), panic (handler panicked).",
    COUNTER,
    &["route", "reason"],
);
const ROUTE_LAST_MESSAGE: Spec = spec(
    "route_last_message_timestamp_seconds",
    "Unix time of the last message delivered to the route.",
    GAUGE,
    &["route"],
);

const SPECS: &[&Spec] = &[
    &BUILD_INFO,
    &SESSIONS,
    &SESSION_UP,
    &SESSION_STATE,
    &SESSION_READY,
    &SESSION_UPTIME,
    &SESSION_RESTARTS,
    &RECEIVED,
    &RECEIVED_BYTES,
    &SENT,
    &SENT_BYTES,
    &ATTEMPTS,
    &RECONNECTS,
    &ERRORS,
    &PENDING,
    &INFLIGHT,
    &DROPPED,
    &PUBLISH_FAILURES,
    &LAST_MESSAGE,
    &ACK_LATENCY,
    &HANDLER_PANICS,
    &EVENTS_DROPPED,
    &ROUTE_DELIVERED,
    &ROUTE_DROPPED,
    &ROUTE_LAST_MESSAGE,
];

/// Every metric family name the manager exposes, with `prefix` (histograms without their
/// `_bucket`, `_sum` and `_count` suffixes).
pub fn metric_names(prefix: &str) -> Vec<String> {
    SPECS
        .iter()
        .map(|s| format!("{prefix}_{}", s.name))
        .collect()
}

/// Families that only make sense per session (no total): left out when per-session
/// metrics are off.
const NOT_SUMMED: &[&str] = &[
    "session_up",
    "session_state",
    "session_ready",
    "session_uptime_seconds",
    "last_message_timestamp_seconds",
];

/// Series of `pairs` (label name and value, then the value) with the session label,
/// or, with per-session metrics off, added up over the sessions by their other label.
fn labelled(
    kind: MetricType,
    mode: PerSessionMetrics,
    label: &str,
    all: &[&'static str],
    values: Vec<(&str, &str, f64)>,
) -> Vec<Metric> {
    if mode == PerSessionMetrics::Off {
        // Every label value, even with no session: a stable set of series.
        let mut totals: std::collections::BTreeMap<&str, f64> =
            all.iter().map(|v| (*v, 0.0)).collect();
        for (_, v, n) in &values {
            *totals.entry(v).or_default() += n;
        }
        return totals
            .into_iter()
            .map(|(v, n)| value_metric(kind, labels(&[(label, v)]), n))
            .collect();
    }
    values
        .into_iter()
        .map(|(session, v, n)| {
            value_metric(kind, labels(&[(LABEL_SESSION, session), (label, v)]), n)
        })
        .collect()
}

/// Reads every session's counters when scraped. See the [module docs](super).
pub(crate) struct SessionsCollector {
    names: Vec<String>,
    descs: Vec<Desc>,
    sources: Arc<Sources>,
}

impl SessionsCollector {
    pub(crate) fn new(prefix: &str, sources: Arc<Sources>) -> prometheus::Result<Self> {
        let mut names = Vec::new();
        let mut descs = Vec::new();
        for s in SPECS {
            let name = format!("{prefix}_{}", s.name);
            descs.push(Desc::new(
                name.clone(),
                s.help.to_string(),
                s.labels.iter().map(|l| l.to_string()).collect(),
                Default::default(),
            )?);
            names.push(name);
        }
        Ok(SessionsCollector {
            names,
            descs,
            sources,
        })
    }
}

/// What the collector reads of one session.
struct Row {
    name: String,
    status: SessionStatus,
    counters: Arc<crate::metrics::counters::SessionCounters>,
    consumer_dropped: u64,
}

pub(crate) fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(n, v)| {
            let mut l = LabelPair::default();
            l.set_name(n.to_string());
            l.set_value(v.to_string());
            l
        })
        .collect()
}

pub(crate) fn value_metric(kind: MetricType, labels: Vec<LabelPair>, v: f64) -> Metric {
    let mut m = Metric::default();
    m.set_label(labels);
    if kind == COUNTER {
        let mut c = Counter::default();
        c.set_value(v);
        m.set_counter(c);
    } else {
        let mut g = Gauge::default();
        g.set_value(v);
        m.set_gauge(g);
    }
    m
}

fn load(a: &std::sync::atomic::AtomicU64) -> f64 {
    a.load(std::sync::atomic::Ordering::Relaxed) as f64
}

impl SessionsCollector {
    fn family(&self, i: usize, metrics: Vec<Metric>) -> MetricFamily {
        let s = SPECS[i];
        let mut mf = MetricFamily::default();
        mf.set_name(self.names[i].clone());
        mf.set_help(s.help.to_string());
        mf.set_field_type(s.kind);
        mf.set_metric(metrics);
        mf
    }

    /// One value per session, labelled with the session only; with per-session metrics
    /// off, one unlabelled total.
    fn per_session(
        rows: &[Row],
        kind: MetricType,
        mode: PerSessionMetrics,
        f: impl Fn(&Row) -> Option<f64>,
    ) -> Vec<Metric> {
        if mode == PerSessionMetrics::Off {
            let total = rows.iter().filter_map(&f).sum();
            return vec![value_metric(kind, Vec::new(), total)];
        }
        rows.iter()
            .filter_map(|r| {
                f(r).map(|v| value_metric(kind, labels(&[(LABEL_SESSION, &r.name)]), v))
            })
            .collect()
    }

    fn histogram(r: &Row) -> Metric {
        let mut m = Self::histogram_metric(r.counters.ack_latency.snapshot());
        m.set_label(labels(&[(LABEL_SESSION, &r.name)]));
        m
    }

    /// The latency histogram of all sessions together (the `counters` and `off` modes).
    fn total_histogram(rows: &[Row]) -> Metric {
        let mut total = crate::metrics::latency::LatencySnapshot::default();
        for r in rows {
            let snap = r.counters.ack_latency.snapshot();
            for (t, c) in total.cumulative.iter_mut().zip(snap.cumulative) {
                *t += c;
            }
            total.count += snap.count;
            total.sum_seconds += snap.sum_seconds;
        }
        Self::histogram_metric(total)
    }

    fn histogram_metric(snap: crate::metrics::latency::LatencySnapshot) -> Metric {
        let mut h = Histogram::default();
        h.set_sample_count(snap.count);
        h.set_sample_sum(snap.sum_seconds);
        h.set_bucket(
            LATENCY_BUCKETS
                .iter()
                .zip(snap.cumulative)
                .map(|(&le, c)| {
                    let mut b = Bucket::default();
                    b.set_upper_bound(le);
                    b.set_cumulative_count(c);
                    b
                })
                .collect(),
        );
        let mut m = Metric::default();
        m.set_histogram(h);
        m
    }
}

impl Collector for SessionsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let src = &self.sources;
        let rows: Vec<Row> = src
            .sessions
            .load()
            .values()
            .map(|h| Row {
                name: h.name().to_string(),
                status: h.status(),
                counters: Arc::clone(&h.counters),
                consumer_dropped: h.dropped_messages(),
            })
            .collect();
        let routes = src.route_stats();
        let mode = src.per_session;
        let mut out = Vec::with_capacity(self.names.len());
        for (i, s) in SPECS.iter().enumerate() {
            let k = s.kind;
            let skipped = match mode {
                PerSessionMetrics::Full => false,
                PerSessionMetrics::Counters => false,
                PerSessionMetrics::Off => NOT_SUMMED.contains(&s.name),
            };
            if skipped {
                continue;
            }
            let metrics = match s.name {
                "build_info" => vec![value_metric(
                    k,
                    labels(&[("version", env!("CARGO_PKG_VERSION"))]),
                    1.0,
                )],
                "sessions" => SessionState::ALL
                    .iter()
                    .map(|st| {
                        let n = rows.iter().filter(|r| r.status.state == *st).count();
                        value_metric(k, labels(&[("state", st.as_str())]), n as f64)
                    })
                    .collect(),
                "session_up" => Self::per_session(&rows, k, mode, |r| {
                    Some(f64::from(u8::from(r.status.broker.is_some())))
                }),
                "session_state" => {
                    Self::per_session(&rows, k, mode, |r| Some(f64::from(r.status.state.code())))
                }
                "session_ready" => Self::per_session(&rows, k, mode, |r| {
                    Some(f64::from(u8::from(r.status.ready)))
                }),
                "session_uptime_seconds" => Self::per_session(&rows, k, mode, |r| {
                    Some(crate::metrics::counters::uptime_seconds(&r.status))
                }),
                "session_restarts_total" => {
                    Self::per_session(&rows, k, mode, |r| Some(f64::from(r.status.restarts)))
                }
                "messages_received_total" => Self::per_session(&rows, k, mode, |r| {
                    Some(load(&r.counters.messages_received))
                }),
                "received_bytes_total" => {
                    Self::per_session(&rows, k, mode, |r| Some(load(&r.counters.bytes_received)))
                }
                "messages_sent_total" => {
                    Self::per_session(&rows, k, mode, |r| Some(load(&r.counters.messages_sent)))
                }
                "sent_bytes_total" => {
                    Self::per_session(&rows, k, mode, |r| Some(load(&r.counters.bytes_sent)))
                }
                "connection_attempts_total" => Self::per_session(&rows, k, mode, |r| {
                    Some(load(&r.counters.connection_attempts))
                }),
                "reconnects_total" => {
                    Self::per_session(&rows, k, mode, |r| Some(load(&r.counters.reconnects)))
                }
                "publish_failures_total" => {
                    Self::per_session(&rows, k, mode, |r| Some(load(&r.counters.publish_failures)))
                }
                "connection_errors_total" => labelled(
                    k,
                    mode,
                    "kind",
                    &ErrorKind::ALL.map(ErrorKind::as_str),
                    rows.iter()
                        .flat_map(|r| {
                            ErrorKind::ALL.iter().map(move |kind| {
                                (
                                    r.name.as_str(),
                                    kind.as_str(),
                                    r.counters.errors_of(*kind) as f64,
                                )
                            })
                        })
                        .collect(),
                ),
                "pending_messages" => {
                    Self::per_session(&rows, k, mode, |r| Some(load(&r.counters.pending)))
                }
                "inflight_messages" => {
                    Self::per_session(&rows, k, mode, |r| Some(load(&r.counters.inflight)))
                }
                "dropped_messages_total" => labelled(
                    k,
                    mode,
                    "reason",
                    &["oversized", "disconnect", "unrouted", "consumer_full"],
                    rows.iter()
                        .flat_map(|r| {
                            [
                                ("oversized", load(&r.counters.dropped_oversized)),
                                ("disconnect", load(&r.counters.dropped_on_disconnect)),
                                ("unrouted", load(&r.counters.dropped_unrouted)),
                                ("consumer_full", r.consumer_dropped as f64),
                            ]
                            .map(|(reason, v)| (r.name.as_str(), reason, v))
                        })
                        .collect(),
                ),
                "last_message_timestamp_seconds" => Self::per_session(&rows, k, mode, |r| {
                    r.counters.last_message_timestamp_seconds()
                }),
                "publish_ack_latency_seconds" if mode == PerSessionMetrics::Full => {
                    rows.iter().map(Self::histogram).collect()
                }
                // One histogram of every session's observations, without a session label.
                "publish_ack_latency_seconds" => vec![Self::total_histogram(&rows)],
                "event_handler_panics_total" => {
                    vec![value_metric(k, Vec::new(), src.bus.handler_panics() as f64)]
                }
                "events_dropped_total" => {
                    vec![value_metric(k, Vec::new(), src.bus.dropped() as f64)]
                }
                "route_delivered_total" => routes
                    .iter()
                    .map(|r| value_metric(k, labels(&[("route", &r.name)]), r.delivered as f64))
                    .collect(),
                "route_dropped_total" => routes
                    .iter()
                    .flat_map(|r| {
                        [
                            ("full", r.dropped_full),
                            ("panic", r.dropped_panic),
                            ("stall", r.dropped_stall),
                            ("closed", r.dropped_closed),
                        ]
                        .map(|(reason, v)| {
                            value_metric(
                                k,
                                labels(&[("route", &r.name), ("reason", reason)]),
                                v as f64,
                            )
                        })
                    })
                    .collect(),
                "route_last_message_timestamp_seconds" => routes
                    .iter()
                    .filter_map(|r| {
                        r.last_message_timestamp_seconds
                            .map(|t| value_metric(k, labels(&[("route", &r.name)]), t))
                    })
                    .collect(),
                other => {
                    tracing::error!(family = other, "metric family without a collector arm");
                    Vec::new()
                }
            };
            out.push(self.family(i, metrics));
        }
        out
    }
}
