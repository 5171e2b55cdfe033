//! Fleet-wide gauges for alerts and dashboards that work with every `[metrics]
//! per_session` mode: the sessions `/readyz` waits for (`required_for_ready = true`) by
//! state, and the fullest publish queue among them. Backup sessions
//! (`required_for_ready = false`) are left out, so an alert on these fires once per
//! daemon and never for a backup link. Read from the manager when scraped.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use mqtt_sessions::SessionManager;
use mqtt_sessions::SessionState;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// Name suffix and help of the two families.
const REQUIRED: (&str, &str) = (
    "required_sessions",
    "Sessions /readyz waits for (required_for_ready = true), by state (every state, 0 when none); backup sessions are not counted.",
);
const FILL: (&str, &str) = (
    "pending_fill_ratio_max",
    "The fullest publish queue among the sessions /readyz waits for: pending_messages / max_pending_messages, 0 to 1.",
);

/// Collects the fleet gauges of one manager.
pub(crate) struct FleetCollector {
    manager: SessionManager,
    /// The sessions with `required_for_ready = false` (kept up to date on reload).
    optional: Arc<RwLock<BTreeSet<String>>>,
    descs: [Desc; 2],
}

impl std::fmt::Debug for FleetCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetCollector").finish_non_exhaustive()
    }
}

impl FleetCollector {
    /// A collector with metric names `{prefix}_{suffix}`.
    pub(crate) fn new(
        manager: SessionManager,
        optional: Arc<RwLock<BTreeSet<String>>>,
        prefix: &str,
    ) -> prometheus::Result<Self> {
        let desc = |(name, help): (&str, &str), labels: Vec<String>| {
            Desc::new(
                format!("{prefix}_{name}"),
                help.to_string(),
                labels,
                Default::default(),
            )
        };
        Ok(FleetCollector {
            manager,
            optional,
            descs: [
                desc(REQUIRED, vec!["state".to_string()])?,
                desc(FILL, Vec::new())?,
            ],
        })
    }
}

impl Collector for FleetCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut by_state = [0u64; SessionState::ALL.len()];
        let mut fill = 0.0_f64;
        {
            let optional = self.optional.read().unwrap_or_else(|e| e.into_inner());
            for (name, state) in self.manager.status() {
                if optional.contains(&name) {
                    continue;
                }
                if let Some(n) = by_state.get_mut(usize::from(state.code())) {
                    *n += 1;
                }
                if let Ok(h) = self.manager.session(&name) {
                    let max = h.options().performance.max_pending_messages;
                    let pending = h.counters().pending.load(Ordering::Relaxed);
                    if max > 0 {
                        fill = fill.max(pending as f64 / max as f64);
                    }
                }
            }
        }
        let required = SessionState::ALL
            .iter()
            .map(|s| {
                gauge(
                    Some(("state", s.as_str())),
                    by_state[usize::from(s.code())] as f64,
                )
            })
            .collect();
        vec![
            family(&self.descs[0], required),
            family(&self.descs[1], vec![gauge(None, fill.min(1.0))]),
        ]
    }
}

fn family(desc: &Desc, metrics: Vec<Metric>) -> MetricFamily {
    let mut mf = MetricFamily::default();
    mf.set_name(desc.fq_name.clone());
    mf.set_help(desc.help.clone());
    mf.set_field_type(MetricType::GAUGE);
    mf.set_metric(metrics);
    mf
}

fn gauge(label: Option<(&str, &str)>, v: f64) -> Metric {
    let mut m = Metric::default();
    if let Some((name, value)) = label {
        let mut l = LabelPair::default();
        l.set_name(name.to_string());
        l.set_value(value.to_string());
        m.set_label(vec![l]);
    }
    let mut g = Gauge::default();
    g.set_value(v);
    m.set_gauge(g);
    m
}
