//! [`HttpStats`]: the HTTP layer's own metrics (event-stream clients, slow clients cut
//! off, refused credentials), registered once per manager in its registry.

use std::sync::Arc;

use prometheus::{IntCounter, IntGauge, Opts};

use crate::manager::SessionManager;

/// Counters of the HTTP layer, shared by every worker serving one manager.
#[derive(Debug)]
pub(crate) struct HttpStats {
    /// `GET /events` clients connected now.
    pub(crate) sse_clients: IntGauge,
    /// `GET /events` clients disconnected because they did not keep up.
    pub(crate) sse_dropped: IntCounter,
    /// Requests refused for missing or wrong credentials.
    pub(crate) auth_failures: IntCounter,
}

impl HttpStats {
    /// The stats of `manager`, registered in its registry on first use.
    pub(crate) fn of(manager: &SessionManager) -> Arc<HttpStats> {
        let sources = manager.metrics_sources();
        let any = sources
            .extension
            .get_or_init(|| Arc::new(HttpStats::register(manager, &sources.prefix)));
        Arc::clone(any)
            .downcast::<HttpStats>()
            .unwrap_or_else(|_| Arc::new(HttpStats::unregistered(&sources.prefix)))
    }

    fn unregistered(prefix: &str) -> HttpStats {
        // The prefix was checked when the manager registered its collector with it, and
        // the suffixes are constant: these names are valid.
        const VALID: &str = "a valid metric name (the prefix was checked by the manager)";
        let gauge = |n: &str, h: &str| {
            IntGauge::with_opts(Opts::new(format!("{prefix}_{n}"), h)).expect(VALID)
        };
        let counter = |n: &str, h: &str| {
            IntCounter::with_opts(Opts::new(format!("{prefix}_{n}"), h)).expect(VALID)
        };
        HttpStats {
            sse_clients: gauge(
                "http_sse_clients",
                "Clients connected to the event stream (GET /events).",
            ),
            sse_dropped: counter(
                "http_sse_clients_dropped_total",
                "Event stream clients disconnected because they did not read fast enough.",
            ),
            auth_failures: counter(
                "http_auth_failures_total",
                "HTTP requests refused for missing or wrong credentials.",
            ),
        }
    }

    fn register(manager: &SessionManager, prefix: &str) -> HttpStats {
        let stats = HttpStats::unregistered(prefix);
        let registry = manager.registry();
        let results = [
            registry.register(Box::new(stats.sse_clients.clone())),
            registry.register(Box::new(stats.sse_dropped.clone())),
            registry.register(Box::new(stats.auth_failures.clone())),
        ];
        for r in results {
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot register the HTTP metrics");
            }
        }
        stats
    }

    /// Counts a refused request.
    pub(crate) fn auth_failure(&self) {
        self.auth_failures.inc();
    }
}
