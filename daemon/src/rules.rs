//! [`RuleTable`]: the forwarding rules as `GET /rules` (and the status page) shows them:
//! each rule's ends and filter from the configuration in force, with its counters.

use std::sync::{Arc, RwLock};

use super::config::Config;
use super::running::DaemonStats;
use mqtt_sessions::http::{RuleInfo, RulesSource};

/// The rules of the configuration in force (updated at start and after each reload) and
/// their counters.
#[derive(Debug)]
pub(crate) struct RuleTable {
    stats: Arc<DaemonStats>,
    /// (name, from, filter, to) of each rule.
    rules: RwLock<Vec<(String, String, String, String)>>,
}

impl RuleTable {
    pub(crate) fn new(stats: Arc<DaemonStats>) -> Self {
        RuleTable {
            stats,
            rules: RwLock::new(Vec::new()),
        }
    }

    /// Takes the rules of `config`.
    pub(crate) fn update(&self, config: &Config) {
        let rules = config
            .forward
            .iter()
            .map(|r| {
                (
                    r.name.get_ref().clone(),
                    r.from.get_ref().clone(),
                    r.filter.get_ref().clone(),
                    r.all_targets()
                        .iter()
                        .map(|t| t.to.get_ref().as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            })
            .collect();
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = rules;
    }
}

impl RulesSource for RuleTable {
    fn rules(&self) -> Vec<RuleInfo> {
        let counts = self.stats.forward();
        self.rules
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, from, filter, to)| {
                let c = counts.get(name);
                RuleInfo::new(
                    name,
                    from,
                    filter,
                    to,
                    [
                        c.map_or(0, |c| c.forwarded),
                        c.map_or(0, |c| c.retries),
                        c.map_or(0, |c| c.dropped),
                    ],
                )
                .backlog(
                    c.map_or(0, |c| c.in_flight),
                    c.map_or(0, |c| c.waiting),
                    std::time::Duration::from_secs_f64(c.map_or(0.0, |c| c.oldest_age_seconds)),
                )
                .peaks(c.map_or(0, |c| c.in_flight_peak), c.map_or(0, |c| c.looped))
            })
            .collect()
    }
}
