//! Metrics: a Prometheus exposition read at scrape time, and plain-number snapshots.
//!
//! Each [`SessionManager`](crate::SessionManager) registers one collector in its own
//! [`prometheus::Registry`] (given to the builder, or a fresh one; never the global
//! default registry). The collector keeps no state of its own: when scraped it walks the
//! session registry (under its read lock) and reads their atomic counters, status and
//! latency histograms, so the message path pays nothing beyond its relaxed atomic adds,
//! and a removed session's series disappear with it.
//!
//! The same figures come as plain numbers in [`ManagerMetrics`] (with message and byte
//! rates) and [`SessionMetrics`](crate::SessionMetrics); [`SessionInfo`] and
//! [`Readiness`] are what the HTTP endpoints (`crate::http`, feature `http`) serve.
//!
//! Every metric name starts with the manager's prefix ([`DEFAULT_PREFIX`] unless set with
//! [`SessionManagerBuilder::metrics_prefix`](crate::SessionManagerBuilder::metrics_prefix)).
//! Labels are bounded: `session` (session name), `state`, `kind` ([`ErrorKind`](crate::ErrorKind)),
//! `reason`, `route` (route name), `version`; never topics or client ids.
//!
//! # Route metrics
//!
//! Per-route figures come from a [`RouteStatsSource`] the manager holds (none by default):
//! `<prefix>_route_delivered_total{route}`, `<prefix>_route_dropped_total{route,reason}`
//! (`reason` = `full` or `panic`) and `<prefix>_route_last_message_timestamp_seconds{route}`,
//! plus [`ManagerMetrics::routes`].

pub(crate) mod collector;
pub(crate) mod counters;
pub(crate) mod latency;
pub(crate) mod rates;
mod snapshot;

use std::sync::{Arc, RwLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};

pub use self::collector::{metric_names, LABEL_SESSION};
pub use self::snapshot::{ManagerMetrics, NotReadySession, Readiness, SessionInfo};
use crate::error::Error;
use crate::event::EventBus;
use crate::supervisor::Registry;

/// The metric name prefix used unless the builder sets another.
pub const DEFAULT_PREFIX: &str = "mqtt_sessions";

/// Which per-session series a manager exports (`metrics.per_session` in the daemon's
/// configuration). Each session costs, in series: `Full` 45 (the counters, gauges,
/// errors by kind, drops by reason, and the 20-series publish→ack latency histogram),
/// `Counters` 25 (the same without the histogram), `Off` none — manager-wide totals
/// (errors by kind and drops by reason added up) and the count of sessions by state
/// remain. In `Counters` and `Off` the publish→ack latency is one histogram of every
/// session's observations, without a `session` label. The `README` gives the figures at
/// 10,000 sessions (`tests/series.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum PerSessionMetrics {
    /// Every per-session series, including the publish→ack latency histogram.
    #[default]
    Full,
    /// Per-session counters and gauges; one latency histogram for all sessions.
    Counters,
    /// No per-session series: the count of sessions by state, the manager-wide totals and
    /// one latency histogram for all sessions.
    Off,
}

impl PerSessionMetrics {
    /// The setting's name as written in a configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            PerSessionMetrics::Full => "full",
            PerSessionMetrics::Counters => "counters",
            PerSessionMetrics::Off => "off",
        }
    }
}

/// The figures of one route, as the route table reports them.
///
/// Route names must be unique within a manager (they become the `route` label); figures
/// of routes reported under the same name are added up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteStatsSnapshot {
    /// The route's name (the `route` label; a key of [`ManagerMetrics::routes`], so it is
    /// not repeated in the serialised form).
    #[serde(skip)]
    pub name: String,
    /// Messages handed to the route's target.
    pub delivered: u64,
    /// Messages dropped because the route's bounded target was full.
    pub dropped_full: u64,
    /// Messages dropped because the route's handler panicked.
    pub dropped_panic: u64,
    /// QoS 0 messages dropped by a `Backpressure` route whose consumer stayed stopped
    /// longer than the session may pause (`performance.max_stall`).
    #[serde(default)]
    pub dropped_stall: u64,
    /// Messages that arrived after the route's consumer had gone.
    #[serde(default)]
    pub dropped_closed: u64,
    /// Unix time (seconds) of the last message delivered to the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message_timestamp_seconds: Option<f64>,
}

/// Where per-route figures come from: the extension point through which the router
/// (or an application dispatching messages itself) exposes route metrics.
///
/// Called at scrape time and by [`SessionManager::metrics`](crate::SessionManager::metrics),
/// from any thread; it should read counters, not wait for an actor.
pub trait RouteStatsSource: Send + Sync + 'static {
    /// The figures of every current route.
    fn route_stats(&self) -> Vec<RouteStatsSnapshot>;
}

/// A [`RouteStatsSource`] with no routes: pass it to
/// [`SessionManagerBuilder::route_stats_source`](crate::SessionManagerBuilder::route_stats_source)
/// to export no per-route figures. (The default source is the manager's own route table.)
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRoutes;

impl RouteStatsSource for NoRoutes {
    fn route_stats(&self) -> Vec<RouteStatsSnapshot> {
        Vec::new()
    }
}

impl<F> RouteStatsSource for F
where
    F: Fn() -> Vec<RouteStatsSnapshot> + Send + Sync + 'static,
{
    fn route_stats(&self) -> Vec<RouteStatsSnapshot> {
        self()
    }
}

/// What the collector and the snapshots read: shared by a manager's clones.
pub(crate) struct Sources {
    pub(crate) sessions: Registry,
    pub(crate) bus: EventBus,
    pub(crate) routes: RwLock<Arc<dyn RouteStatsSource>>,
    pub(crate) started: Instant,
    /// The metric name prefix.
    #[cfg_attr(
        not(feature = "http"),
        allow(dead_code, reason = "read by the HTTP layer")
    )]
    pub(crate) prefix: String,
    /// Which per-session series are exported.
    pub(crate) per_session: PerSessionMetrics,
    /// State another layer attaches to the manager once and shares between its clones
    /// (the HTTP layer's own metrics, registered once per manager).
    #[cfg_attr(
        not(feature = "http"),
        allow(dead_code, reason = "read by the HTTP layer")
    )]
    pub(crate) extension: std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>,
}

impl Sources {
    /// Route figures, merged by name and sorted.
    pub(crate) fn route_stats(&self) -> Vec<RouteStatsSnapshot> {
        let source = Arc::clone(&self.routes.read().unwrap_or_else(|e| e.into_inner()));
        let mut stats = source.route_stats();
        stats.sort_by(|a, b| a.name.cmp(&b.name));
        stats.dedup_by(|later, first| {
            if later.name != first.name {
                return false;
            }
            first.delivered += later.delivered;
            first.dropped_full += later.dropped_full;
            first.dropped_panic += later.dropped_panic;
            first.dropped_stall += later.dropped_stall;
            first.dropped_closed += later.dropped_closed;
            first.last_message_timestamp_seconds = match (
                first.last_message_timestamp_seconds,
                later.last_message_timestamp_seconds,
            ) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            true
        });
        stats
    }
}

/// The metrics of one manager: its prometheus registry and the collector's sources.
#[derive(Clone)]
pub(crate) struct Metrics {
    registry: prometheus::Registry,
    sources: Arc<Sources>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers a collector named with `prefix` over `sessions` in `registry`.
    pub(crate) fn new(
        registry: prometheus::Registry,
        prefix: &str,
        sessions: Registry,
        bus: EventBus,
        routes: Arc<dyn RouteStatsSource>,
        per_session: PerSessionMetrics,
    ) -> Result<Self, Error> {
        let sources = Arc::new(Sources {
            sessions,
            bus,
            routes: RwLock::new(routes),
            started: Instant::now(),
            prefix: prefix.to_string(),
            per_session,
            extension: std::sync::OnceLock::new(),
        });
        let err = |source| Error::MetricsRegistration {
            prefix: prefix.to_string(),
            source,
        };
        let collector =
            collector::SessionsCollector::new(prefix, Arc::clone(&sources)).map_err(err)?;
        registry.register(Box::new(collector)).map_err(err)?;
        Ok(Metrics { registry, sources })
    }

    pub(crate) fn registry(&self) -> &prometheus::Registry {
        &self.registry
    }

    pub(crate) fn sources(&self) -> &Sources {
        &self.sources
    }

    /// Replaces the source of route figures.
    pub(crate) fn set_route_stats_source(&self, source: Arc<dyn RouteStatsSource>) {
        *self
            .sources
            .routes
            .write()
            .unwrap_or_else(|e| e.into_inner()) = source;
    }

    /// The registry's metrics in the Prometheus text format (every collector registered in
    /// it, including the application's own).
    pub(crate) fn encode_text(&self) -> String {
        let mut out = String::new();
        if let Err(err) =
            prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)
        {
            tracing::error!(error = %err, "cannot encode metrics");
        }
        out
    }
}

/// `url` with any password removed (for reports that must never show one).
pub(crate) fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => raw.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_removes_only_the_password() {
        let table = [
            ("mqtt://u:secret@h:1883", "mqtt://u@h:1883"),
            ("mqtt://u@h:1883", "mqtt://u@h:1883"),
            ("mqtt://h:1883", "mqtt://h:1883"),
            ("not a url", "not a url"),
        ];
        for (raw, want) in table {
            assert_eq!(redact_url(raw), want, "{raw}");
        }
    }

    #[test]
    fn route_stats_of_the_same_name_are_added_up() {
        let s = Sources {
            sessions: Arc::default(),
            bus: EventBus::new(),
            routes: RwLock::new(Arc::new(|| {
                vec![
                    RouteStatsSnapshot {
                        name: "b".into(),
                        delivered: 1,
                        ..Default::default()
                    },
                    RouteStatsSnapshot {
                        name: "a".into(),
                        delivered: 2,
                        dropped_full: 1,
                        last_message_timestamp_seconds: Some(5.0),
                        ..Default::default()
                    },
                    RouteStatsSnapshot {
                        name: "a".into(),
                        delivered: 3,
                        dropped_panic: 4,
                        last_message_timestamp_seconds: Some(7.0),
                        ..Default::default()
                    },
                ]
            })),
            started: Instant::now(),
            prefix: DEFAULT_PREFIX.to_string(),
            per_session: PerSessionMetrics::Full,
            extension: std::sync::OnceLock::new(),
        };
        let got = s.route_stats();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (
                got[0].name.as_str(),
                got[0].delivered,
                got[0].dropped_full,
                got[0].dropped_panic
            ),
            ("a", 5, 1, 4)
        );
        assert_eq!(got[0].last_message_timestamp_seconds, Some(7.0));
        assert_eq!(got[1].name, "b");
    }
}
