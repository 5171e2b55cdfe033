//! The daemon's own metrics (configuration reloads, forwarding rules), read from
//! [`DaemonStats`] at scrape time and registered in the manager's registry next to the
//! library's.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

use super::running::DaemonStats;

/// (name suffix, help, kind) of every family.
const SPECS: [(&str, &str, MetricType); 7] = [
    ("config_reloads_total", "Configuration reloads applied (SIGHUP).", MetricType::COUNTER),
    (
        "config_reload_failures_total",
        "Configuration reloads refused because the new file was invalid; the previous configuration kept running.",
        MetricType::COUNTER,
    ),
    (
        "config_last_reload_successful",
        "1 if the last configuration reload (or the start) applied the file without error, else 0.",
        MetricType::GAUGE,
    ),
    (
        "config_last_reload_timestamp_seconds",
        "Unix time of the last configuration reload attempt (the start time before any).",
        MetricType::GAUGE,
    ),
    ("forward_messages_total", "Messages a forwarding rule published through a target session (acknowledged for QoS >= 1).", MetricType::COUNTER),
    ("forward_retries_total", "Publishes of a forwarding rule through a target session that failed and were retried.", MetricType::COUNTER),
    ("forward_dropped_total", "Messages a forwarding rule gave up on for a target session (they can never be published).", MetricType::COUNTER),
];

/// Collects the daemon's figures.
#[derive(Debug)]
pub(crate) struct DaemonCollector {
    stats: Arc<DaemonStats>,
    names: Vec<String>,
    descs: Vec<Desc>,
    /// Unix time the collector was made (the daemon's start).
    started: f64,
}

impl DaemonCollector {
    /// A collector with metric names `{prefix}_{suffix}`.
    pub(crate) fn new(stats: Arc<DaemonStats>, prefix: &str) -> prometheus::Result<Self> {
        let names: Vec<String> = SPECS
            .iter()
            .map(|(n, _, _)| format!("{prefix}_{n}"))
            .collect();
        let descs = SPECS
            .iter()
            .zip(&names)
            .map(|((n, help, _), name)| {
                let vars = if n.starts_with("forward_") {
                    vec!["rule".to_string(), "target".to_string()]
                } else {
                    vec![]
                };
                Desc::new(name.clone(), help.to_string(), vars, Default::default())
            })
            .collect::<prometheus::Result<Vec<_>>>()?;
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Ok(DaemonCollector {
            stats,
            names,
            descs,
            started,
        })
    }
}

impl Collector for DaemonCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let rules = self.stats.forward_targets();
        let last = self.stats.last_reload();
        SPECS
            .iter()
            .zip(&self.names)
            .map(|((n, help, kind), name)| {
                let metrics = match *n {
                    "config_reloads_total" => {
                        vec![value_metric(
                            *kind,
                            vec![],
                            self.stats.config_reloads.load(Ordering::Relaxed) as f64,
                        )]
                    }
                    "config_reload_failures_total" => vec![value_metric(
                        *kind,
                        vec![],
                        self.stats.config_reload_failures.load(Ordering::Relaxed) as f64,
                    )],
                    "config_last_reload_successful" => vec![value_metric(
                        *kind,
                        vec![],
                        f64::from(u8::from(last.as_ref().is_none_or(|r| r.ok))),
                    )],
                    "config_last_reload_timestamp_seconds" => vec![value_metric(
                        *kind,
                        vec![],
                        last.as_ref().map_or(self.started, |r| r.timestamp_seconds),
                    )],
                    _ => rules
                        .iter()
                        .map(|((rule, target), s)| {
                            let v = match *n {
                                "forward_messages_total" => s.forwarded,
                                "forward_retries_total" => s.retries,
                                _ => s.dropped,
                            };
                            value_metric(
                                *kind,
                                labels(&[("rule", rule), ("target", target)]),
                                v as f64,
                            )
                        })
                        .collect(),
                };
                let mut mf = MetricFamily::default();
                mf.set_name(name.clone());
                mf.set_help(help.to_string());
                mf.set_field_type(*kind);
                mf.set_metric(metrics);
                mf
            })
            .collect()
    }
}

/// Label pairs in the order given.
fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
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

/// One counter or gauge sample.
fn value_metric(kind: MetricType, labels: Vec<LabelPair>, v: f64) -> Metric {
    let mut m = Metric::default();
    m.set_label(labels);
    if kind == MetricType::COUNTER {
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
