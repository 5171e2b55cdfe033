//! The daemon's own metrics (configuration reloads, forwarding rules), read from
//! [`DaemonStats`] at scrape time and registered in the manager's registry next to the
//! library's.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{MetricFamily, MetricType};

use super::running::DaemonStats;
use crate::metrics::collector::{labels, value_metric};

/// (name suffix, help, kind) of every family.
const SPECS: [(&str, &str, MetricType); 5] = [
    ("config_reloads_total", "Configuration reloads applied (SIGHUP).", MetricType::COUNTER),
    (
        "config_reload_failures_total",
        "Configuration reloads refused because the new file was invalid; the previous configuration kept running.",
        MetricType::COUNTER,
    ),
    ("forward_messages_total", "Messages a forwarding rule published to its target (acknowledged for QoS >= 1).", MetricType::COUNTER),
    ("forward_retries_total", "Target publishes of a forwarding rule that failed and were retried.", MetricType::COUNTER),
    ("forward_dropped_total", "Messages a forwarding rule gave up on (they can never be published).", MetricType::COUNTER),
];

/// Collects the daemon's figures.
#[derive(Debug)]
pub(crate) struct DaemonCollector {
    stats: Arc<DaemonStats>,
    names: Vec<String>,
    descs: Vec<Desc>,
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
                    vec!["rule".to_string()]
                } else {
                    vec![]
                };
                Desc::new(name.clone(), help.to_string(), vars, Default::default())
            })
            .collect::<prometheus::Result<Vec<_>>>()?;
        Ok(DaemonCollector {
            stats,
            names,
            descs,
        })
    }
}

impl Collector for DaemonCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let rules = self.stats.forward();
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
                    _ => rules
                        .iter()
                        .map(|(rule, s)| {
                            let v = match *n {
                                "forward_messages_total" => s.forwarded,
                                "forward_retries_total" => s.retries,
                                _ => s.dropped,
                            };
                            value_metric(*kind, labels(&[("rule", rule)]), v as f64)
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
