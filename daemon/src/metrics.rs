//! The daemon's own metrics (configuration reloads, forwarding rules), read from
//! [`DaemonStats`] at scrape time and registered in the manager's registry next to the
//! library's.
//!
//! Every family is declared once, as a line of the `families!` table (variant, name,
//! kind, labels, help), which makes the [`Family`] enum, [`Family::ALL`] and
//! [`Family::spec`]. Its samples come from [`DaemonCollector::samples`], an exhaustive
//! `match` on [`Family`]: a family without samples does not compile, and a renamed metric
//! is renamed in the one line that names it (no string is matched anywhere).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

use super::forward::ForwardStatsSnapshot;
use super::running::{DaemonStats, ReloadOutcome};

/// Declares [`Family`] and its [`Family::ALL`] and [`Family::spec`] from one table.
macro_rules! families {
    ($($variant:ident => ($name:literal, $kind:ident, $labels:expr, $help:literal),)*) => {
        /// One metric family of the daemon, declared once in the `families!` table below.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Family {
            $(
                #[doc = concat!("`{prefix}_", $name, "`: ", $help)]
                $variant,
            )*
        }

        impl Family {
            /// Every family, in exposition order.
            pub(crate) const ALL: &'static [Family] = &[$(Family::$variant),*];

            /// The family's name, help, kind and labels.
            pub(crate) const fn spec(self) -> Spec {
                match self {
                    $(Family::$variant => Spec {
                        name: $name,
                        help: $help,
                        kind: MetricType::$kind,
                        labels: $labels,
                    },)*
                }
            }
        }
    };
}

/// What a family is: name (after the prefix), help, kind and label names.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    /// The name after `{prefix}_`.
    pub(crate) name: &'static str,
    /// The `# HELP` text.
    pub(crate) help: &'static str,
    /// Counter or gauge.
    pub(crate) kind: MetricType,
    /// Label names, in the order [`DaemonCollector::samples`] gives their values.
    pub(crate) labels: &'static [&'static str],
}

/// Labels of the per-rule, per-target families.
const RULE_TARGET: &[&str] = &["rule", "target"];

// The daemon's metric families: variant => (name after the prefix, kind, labels, help).
// A new family is one line here and one arm in `DaemonCollector::samples` (the compiler
// asks for it: that `match` has no catch-all).
families! {
    ConfigReloads => ("config_reloads_total", COUNTER, &[],
        "Configuration reloads applied (SIGHUP)."),
    ConfigReloadFailures => ("config_reload_failures_total", COUNTER, &[],
        "Configuration reloads refused because the new file was invalid; the previous configuration kept running."),
    ConfigLastReloadSuccessful => ("config_last_reload_successful", GAUGE, &[],
        "1 if the last configuration reload (or the start) applied the file without error, else 0."),
    ConfigLastReloadTimestamp => ("config_last_reload_timestamp_seconds", GAUGE, &[],
        "Unix time of the last configuration reload attempt (the start time before any)."),
    ForwardMessages => ("forward_messages_total", COUNTER, RULE_TARGET,
        "Messages a forwarding rule published through a target session (acknowledged for QoS >= 1)."),
    ForwardRetries => ("forward_retries_total", COUNTER, RULE_TARGET,
        "Publishes of a forwarding rule through a target session that failed and were retried."),
    ForwardDropped => ("forward_dropped_total", COUNTER, RULE_TARGET,
        "Messages a forwarding rule gave up on for a target session (they can never be published)."),
    ForwardLooped => ("forward_looped_total", COUNTER, RULE_TARGET,
        "Messages a forwarding rule did not forward because they had been on the target's broker already (MQTT 5 loop prevention)."),
    ForwardInFlight => ("forward_in_flight", GAUGE, RULE_TARGET,
        "Messages a forwarding rule took from its source and the target has not handled yet (durable in its outbox with a store, acknowledged by its broker without): the window in use."),
    ForwardWaiting => ("forward_waiting", GAUGE, RULE_TARGET,
        "Messages of a forwarding rule that the target session accepted and its broker has not acknowledged yet (queued in its outbox or awaiting PUBACK/PUBCOMP)."),
    ForwardOldestAge => ("forward_oldest_age_seconds", GAUGE, RULE_TARGET,
        "Age of the oldest message a forwarding rule took and the target's broker has not acknowledged yet (0 when none): the backlog's age."),
}

/// What one scrape reads from [`DaemonStats`] (once, for every family).
struct Snapshot {
    rules: BTreeMap<(String, String), ForwardStatsSnapshot>,
    last: Option<ReloadOutcome>,
}

/// Collects the daemon's figures.
#[derive(Debug)]
pub(crate) struct DaemonCollector {
    stats: Arc<DaemonStats>,
    /// `{prefix}_{name}` of each family of [`Family::ALL`], in that order.
    names: Vec<String>,
    descs: Vec<Desc>,
    /// Unix time the collector was made (the daemon's start).
    started: f64,
}

impl DaemonCollector {
    /// A collector with metric names `{prefix}_{name}`.
    pub(crate) fn new(stats: Arc<DaemonStats>, prefix: &str) -> prometheus::Result<Self> {
        let names: Vec<String> = Family::ALL
            .iter()
            .map(|f| format!("{prefix}_{}", f.spec().name))
            .collect();
        let descs = Family::ALL
            .iter()
            .zip(&names)
            .map(|(f, name)| {
                let spec = f.spec();
                let vars = spec.labels.iter().map(|l| l.to_string()).collect();
                Desc::new(
                    name.clone(),
                    spec.help.to_string(),
                    vars,
                    Default::default(),
                )
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

    /// The samples of one family: label values (as many as its spec's labels) and value.
    fn samples(&self, family: Family, now: &Snapshot) -> Vec<(Vec<String>, f64)> {
        let single = |v: f64| vec![(Vec::new(), v)];
        let per_target = |value: fn(&ForwardStatsSnapshot) -> f64| {
            now.rules
                .iter()
                .map(|((rule, target), s)| (vec![rule.clone(), target.clone()], value(s)))
                .collect()
        };
        match family {
            Family::ConfigReloads => {
                single(self.stats.config_reloads.load(Ordering::Relaxed) as f64)
            }
            Family::ConfigReloadFailures => {
                single(self.stats.config_reload_failures.load(Ordering::Relaxed) as f64)
            }
            Family::ConfigLastReloadSuccessful => {
                single(f64::from(u8::from(now.last.as_ref().is_none_or(|r| r.ok))))
            }
            Family::ConfigLastReloadTimestamp => single(
                now.last
                    .as_ref()
                    .map_or(self.started, |r| r.timestamp_seconds),
            ),
            Family::ForwardMessages => per_target(|s| s.forwarded as f64),
            Family::ForwardRetries => per_target(|s| s.retries as f64),
            Family::ForwardDropped => per_target(|s| s.dropped as f64),
            Family::ForwardLooped => per_target(|s| s.looped as f64),
            Family::ForwardInFlight => per_target(|s| s.in_flight as f64),
            Family::ForwardWaiting => per_target(|s| s.waiting as f64),
            Family::ForwardOldestAge => per_target(|s| s.oldest_age_seconds),
        }
    }
}

impl Collector for DaemonCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let now = Snapshot {
            rules: self.stats.forward_targets(),
            last: self.stats.last_reload(),
        };
        Family::ALL
            .iter()
            .zip(&self.names)
            .map(|(&family, name)| {
                let spec = family.spec();
                let metrics = self
                    .samples(family, &now)
                    .into_iter()
                    .map(|(values, v)| {
                        let pairs = spec
                            .labels
                            .iter()
                            .copied()
                            .zip(values.iter().map(String::as_str));
                        value_metric(spec.kind, labels(pairs), v)
                    })
                    .collect();
                let mut mf = MetricFamily::default();
                mf.set_name(name.clone());
                mf.set_help(spec.help.to_string());
                mf.set_field_type(spec.kind);
                mf.set_metric(metrics);
                mf
            })
            .collect()
    }
}

/// Label pairs in the order given.
fn labels<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Vec<LabelPair> {
    pairs
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names_are_unique_and_prometheus_valid() {
        let mut seen = std::collections::BTreeSet::new();
        for f in Family::ALL {
            let spec = f.spec();
            assert!(seen.insert(spec.name), "{} declared twice", spec.name);
            assert!(
                spec.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                spec.name
            );
            assert_eq!(
                spec.kind == MetricType::COUNTER,
                spec.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                spec.name
            );
        }
    }

    #[test]
    fn every_sample_has_a_value_per_label() {
        let stats = Arc::new(DaemonStats::default());
        let collector = DaemonCollector::new(Arc::clone(&stats), "t").expect("valid descs");
        let families = collector.collect();
        assert_eq!(families.len(), Family::ALL.len());
        for (mf, f) in families.iter().zip(Family::ALL) {
            assert_eq!(mf.name(), format!("t_{}", f.spec().name));
            for m in mf.get_metric() {
                assert_eq!(m.get_label().len(), f.spec().labels.len(), "{}", mf.name());
            }
        }
    }
}
