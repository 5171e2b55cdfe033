//! Plain-number snapshots ([`ManagerMetrics`]) and the session reports the HTTP endpoints
//! serve ([`SessionInfo`], [`Readiness`]).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{redact_url, RouteStatsSnapshot, Sources};
use crate::event::ConnectionFailure;
use crate::metrics::counters::SessionMetrics;
use crate::session::handle::SessionHandle;
use crate::session::state::SessionState;

/// The manager's figures as plain numbers (serde-serialisable: every value is a number;
/// map keys are session, state, error kind and route names; absent optional figures are
/// left out). Rates are per second over the last few seconds of the monotonic clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ManagerMetrics {
    /// Sessions of the manager.
    pub sessions: u64,
    /// Sessions by state name (every state present).
    pub sessions_by_state: BTreeMap<String, u64>,
    /// Sessions connected to a broker.
    pub connected: u64,
    /// Sessions ready (connected, subscriptions restored).
    pub ready: u64,
    /// Seconds since the manager was built.
    pub uptime_seconds: f64,
    /// Messages received by all sessions.
    pub messages_received: u64,
    /// Payload bytes received by all sessions.
    pub bytes_received: u64,
    /// Messages sent by all sessions.
    pub messages_sent: u64,
    /// Payload bytes sent by all sessions.
    pub bytes_sent: u64,
    /// Messages received per second, all sessions.
    pub messages_received_per_second: f64,
    /// Payload bytes received per second, all sessions.
    pub bytes_received_per_second: f64,
    /// Messages sent per second, all sessions.
    pub messages_sent_per_second: f64,
    /// Payload bytes sent per second, all sessions.
    pub bytes_sent_per_second: f64,
    /// Connection attempts, all sessions.
    pub connection_attempts: u64,
    /// Successful reconnects, all sessions.
    pub reconnects: u64,
    /// Connection failures and losses, all sessions.
    pub connection_errors: u64,
    /// Messages dropped by sessions, all reasons.
    pub dropped_messages: u64,
    /// QoS >= 1 publishes waiting to be sent or acknowledged, all sessions.
    pub pending_messages: u64,
    /// QoS >= 1 publishes in flight, all sessions.
    pub inflight_messages: u64,
    /// Event handler calls that panicked.
    pub event_handler_panics: u64,
    /// Events not handed to handlers because their queue was full.
    pub events_dropped: u64,
    /// Each session's figures, by session name.
    pub per_session: BTreeMap<String, SessionMetrics>,
    /// Each route's figures, by route name (empty until a route source is set).
    pub routes: BTreeMap<String, RouteStatsSnapshot>,
}

impl ManagerMetrics {
    pub(crate) fn collect(src: &Sources) -> Self {
        let per_session: BTreeMap<String, SessionMetrics> = src
            .sessions
            .load()
            .values()
            .map(|h| (h.name().to_string(), h.metrics()))
            .collect();
        let sum = |f: fn(&SessionMetrics) -> u64| per_session.values().map(f).sum::<u64>();
        let sumf = |f: fn(&SessionMetrics) -> f64| per_session.values().map(f).sum::<f64>();
        let mut sessions_by_state: BTreeMap<String, u64> = SessionState::ALL
            .iter()
            .map(|s| (s.as_str().to_string(), 0))
            .collect();
        for m in per_session.values() {
            if let Some(st) = SessionState::ALL.iter().find(|s| s.code() == m.state) {
                *sessions_by_state
                    .entry(st.as_str().to_string())
                    .or_default() += 1;
            }
        }
        ManagerMetrics {
            sessions: per_session.len() as u64,
            sessions_by_state,
            connected: sum(|m| u64::from(m.up)),
            ready: sum(|m| u64::from(m.ready)),
            uptime_seconds: src.started.elapsed().as_secs_f64(),
            messages_received: sum(|m| m.messages_received),
            bytes_received: sum(|m| m.bytes_received),
            messages_sent: sum(|m| m.messages_sent),
            bytes_sent: sum(|m| m.bytes_sent),
            messages_received_per_second: sumf(|m| m.messages_received_per_second),
            bytes_received_per_second: sumf(|m| m.bytes_received_per_second),
            messages_sent_per_second: sumf(|m| m.messages_sent_per_second),
            bytes_sent_per_second: sumf(|m| m.bytes_sent_per_second),
            connection_attempts: sum(|m| m.connection_attempts),
            reconnects: sum(|m| m.reconnects),
            connection_errors: sum(|m| m.connection_errors),
            dropped_messages: sum(|m| {
                m.dropped_oversized
                    + m.dropped_on_disconnect
                    + m.dropped_consumer_full
                    + m.dropped_unrouted
            }),
            pending_messages: sum(|m| m.pending_messages),
            inflight_messages: sum(|m| m.inflight_messages),
            event_handler_panics: src.bus.handler_panics(),
            events_dropped: src.bus.dropped(),
            routes: src
                .route_stats()
                .into_iter()
                .map(|r| (r.name.clone(), r))
                .collect(),
            per_session,
        }
    }
}

fn unix_seconds(t: SystemTime) -> Option<f64> {
    t.duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs_f64())
}

fn redact_failure(f: ConnectionFailure) -> ConnectionFailure {
    ConnectionFailure {
        broker: redact_url(&f.broker),
        ..f
    }
}

/// One session as `GET /sessions` reports it (never a password).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The session's name.
    pub name: String,
    /// Connection state.
    pub state: SessionState,
    /// Connected with every subscription restored.
    pub ready: bool,
    /// The broker connected to (URL without password), if any.
    pub broker: Option<String>,
    /// The client id in use.
    pub client_id: String,
    /// Subscriptions the session keeps.
    pub subscriptions: usize,
    /// Unix time (seconds) the current connection was established.
    pub connected_since_seconds: Option<f64>,
    /// Unix time (seconds) the session entered its current state (how long it has been
    /// down, or up).
    pub state_since_seconds: Option<f64>,
    /// Times the supervisor restarted the session's actor.
    pub restarts: u32,
    /// The last connection failure.
    pub last_error: Option<ConnectionFailure>,
    /// Counters, rates and connection figures.
    pub metrics: SessionMetrics,
}

impl SessionInfo {
    /// The report of one session.
    pub fn of(handle: &SessionHandle) -> Self {
        let status = handle.status();
        SessionInfo {
            name: handle.name().to_string(),
            state: status.state,
            ready: status.ready,
            broker: status.broker.as_deref().map(redact_url),
            client_id: status.client_id.clone(),
            subscriptions: status.subscriptions,
            connected_since_seconds: status.connected_since.and_then(unix_seconds),
            state_since_seconds: unix_seconds(status.state_since),
            restarts: status.restarts,
            last_error: status.last_error.map(redact_failure),
            metrics: handle.metrics(),
        }
    }
}

/// A session that is not ready, as `GET /readyz` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotReadySession {
    /// The session's name.
    pub name: String,
    /// Its connection state.
    pub state: SessionState,
    /// Its last connection failure.
    pub last_error: Option<ConnectionFailure>,
}

/// Whether every required session is ready (`GET /readyz`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Readiness {
    /// The manager runs and every (required) session is ready.
    pub ready: bool,
    /// The manager runs (it was not shut down).
    pub running: bool,
    /// Sessions of the manager.
    pub sessions: usize,
    /// The (required) sessions that are not ready.
    pub not_ready: Vec<NotReadySession>,
}

impl Readiness {
    pub(crate) fn collect(src: &Sources, running: bool) -> Self {
        Self::collect_of(src, running, |_| true)
    }

    /// Readiness of the sessions for which `required` is true.
    pub(crate) fn collect_of(
        src: &Sources,
        running: bool,
        required: impl Fn(&str) -> bool,
    ) -> Self {
        let sessions = src.sessions.load();
        let not_ready: Vec<NotReadySession> = sessions
            .values()
            .filter(|h| !h.is_ready() && required(h.name()))
            .map(|h| {
                let st = h.status();
                NotReadySession {
                    name: h.name().to_string(),
                    state: st.state,
                    last_error: st.last_error.map(redact_failure),
                }
            })
            .collect();
        Readiness {
            ready: running && not_ready.is_empty(),
            running,
            sessions: sessions.len(),
            not_ready,
        }
    }
}
