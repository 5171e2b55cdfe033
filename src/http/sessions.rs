//! `GET /sessions` with server-side filtering, sorting and paging, `GET /overview` (the
//! totals the status page charts) and `GET /rules` (forwarding rules, when a source is set).

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::auth::Authorized;
use super::State;
use crate::metrics::SessionInfo;
use crate::session::state::SessionState;

/// The largest page `GET /sessions?limit=` returns.
pub const MAX_PAGE: usize = 1000;

/// The response header carrying the number of sessions that matched the filters (before
/// `offset` and `limit`).
pub const TOTAL_COUNT_HEADER: &str = "x-total-count";

/// `GET /sessions` query: every parameter is optional; without any, every session.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SessionQuery {
    /// Rows to skip.
    #[serde(default)]
    offset: Option<usize>,
    /// Rows to return (at most [`MAX_PAGE`]).
    #[serde(default)]
    limit: Option<usize>,
    /// Comma-separated state names (`connected,reconnecting`).
    #[serde(default)]
    state: Option<String>,
    /// Case-insensitive text found in the name, broker, client id or last error.
    #[serde(default)]
    q: Option<String>,
    /// Sort key: `name` (default), `state`, `broker`, `since`, `error`, `in`, `out`,
    /// `queued`, `subscriptions`.
    #[serde(default)]
    sort: Option<String>,
    /// `asc` (default) or `desc`.
    #[serde(default)]
    order: Option<String>,
}

/// Why a query was refused (`400`).
#[derive(Debug, thiserror::Error)]
enum QueryError {
    #[error("unknown state {0:?} (disconnected, connecting, connected, reconnecting, closed)")]
    State(String),
    #[error("unknown sort key {0:?} (name, state, broker, since, error, in, out, queued, subscriptions)")]
    Sort(String),
    #[error("order must be asc or desc, not {0:?}")]
    Order(String),
}

impl SessionQuery {
    /// Filters, sorts and pages `rows`; returns the page and the number that matched.
    fn apply(&self, rows: Vec<SessionInfo>) -> Result<(Vec<SessionInfo>, usize), QueryError> {
        let states = match self.state.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(list) => Some(
                list.split(',')
                    .map(|s| {
                        SessionState::ALL
                            .iter()
                            .copied()
                            .find(|st| st.as_str() == s.trim())
                            .ok_or_else(|| QueryError::State(s.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        let needle = self
            .q
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
            .map(str::to_lowercase);
        let key = self.sort.as_deref().unwrap_or("name");
        let cmp = comparator(key).ok_or_else(|| QueryError::Sort(key.to_string()))?;
        let desc = match self.order.as_deref().unwrap_or("asc") {
            "asc" => false,
            "desc" => true,
            other => return Err(QueryError::Order(other.to_string())),
        };
        let mut rows: Vec<SessionInfo> = rows
            .into_iter()
            .filter(|r| states.as_ref().is_none_or(|s| s.contains(&r.state)))
            .filter(|r| needle.as_deref().is_none_or(|n| matches_text(r, n)))
            .collect();
        let total = rows.len();
        rows.sort_by(|a, b| {
            let o = cmp(a, b).then_with(|| a.name.cmp(&b.name));
            if desc {
                o.reverse()
            } else {
                o
            }
        });
        let offset = self.offset.unwrap_or(0).min(rows.len());
        let limit = self.limit.map_or(usize::MAX, |l| l.min(MAX_PAGE));
        let page = rows.into_iter().skip(offset).take(limit).collect();
        Ok((page, total))
    }
}

fn matches_text(r: &SessionInfo, needle: &str) -> bool {
    let has = |s: &str| s.to_lowercase().contains(needle);
    has(&r.name)
        || r.broker.as_deref().is_some_and(has)
        || has(&r.client_id)
        || r.last_error
            .as_ref()
            .is_some_and(|e| has(&e.message) || has(e.kind.as_str()))
}

type Cmp = fn(&SessionInfo, &SessionInfo) -> Ordering;

fn by_f64(a: f64, b: f64) -> Ordering {
    a.partial_cmp(&b).unwrap_or(Ordering::Equal)
}

fn comparator(key: &str) -> Option<Cmp> {
    Some(match key {
        "name" => |a, b| a.name.cmp(&b.name),
        "state" => |a, b| a.state.code().cmp(&b.state.code()),
        "broker" => |a, b| a.broker.cmp(&b.broker),
        "since" => |a, b| {
            by_f64(
                a.state_since_seconds.unwrap_or(0.0),
                b.state_since_seconds.unwrap_or(0.0),
            )
        },
        "error" => |a, b| {
            let m = |r: &SessionInfo| r.last_error.as_ref().map(|e| e.message.clone());
            m(a).cmp(&m(b))
        },
        "in" => |a, b| {
            by_f64(
                a.metrics.messages_received_per_second,
                b.metrics.messages_received_per_second,
            )
        },
        "out" => |a, b| {
            by_f64(
                a.metrics.messages_sent_per_second,
                b.metrics.messages_sent_per_second,
            )
        },
        "queued" => |a, b| a.metrics.pending_messages.cmp(&b.metrics.pending_messages),
        "subscriptions" => |a, b| a.subscriptions.cmp(&b.subscriptions),
        _ => return None,
    })
}

/// `GET /sessions[?offset=&limit=&state=&q=&sort=&order=]`: a JSON array of
/// [`SessionInfo`], the number that matched in [`TOTAL_COUNT_HEADER`].
pub(crate) async fn sessions(
    _: Authorized,
    state: web::Data<State>,
    query: web::Query<SessionQuery>,
) -> HttpResponse {
    match query.apply(state.manager.session_infos()) {
        Ok((page, total)) => HttpResponse::Ok()
            .insert_header((TOTAL_COUNT_HEADER, total.to_string()))
            .json(page),
        Err(e) => HttpResponse::BadRequest()
            .content_type("text/plain; charset=utf-8")
            .body(format!("{e}\n")),
    }
}

/// The manager's totals as `GET /overview` reports them.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Overview {
    /// Unix time (seconds) of this report.
    pub time: f64,
    /// Sessions of the manager.
    pub sessions: u64,
    /// Sessions by state name.
    pub sessions_by_state: BTreeMap<String, u64>,
    /// Sessions ready.
    pub ready: u64,
    /// Messages received per second, all sessions.
    pub messages_received_per_second: f64,
    /// Messages sent per second, all sessions.
    pub messages_sent_per_second: f64,
    /// QoS >= 1 publishes waiting, all sessions.
    pub pending_messages: u64,
    /// Routes by name: delivered and dropped.
    pub routes: BTreeMap<String, crate::metrics::RouteStatsSnapshot>,
    /// Clients of `GET /events` now.
    pub event_stream_clients: i64,
}

/// `GET /overview`.
pub(crate) async fn overview(_: Authorized, state: web::Data<State>) -> HttpResponse {
    let m = state.manager.metrics();
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    HttpResponse::Ok().json(Overview {
        time,
        sessions: m.sessions,
        sessions_by_state: m.sessions_by_state,
        ready: m.ready,
        messages_received_per_second: m.messages_received_per_second,
        messages_sent_per_second: m.messages_sent_per_second,
        pending_messages: m.pending_messages,
        routes: m.routes,
        event_stream_clients: state.stats.sse_clients.get(),
    })
}

/// `GET /rules`: the forwarding rules of the [`RulesSource`](super::RulesSource), or `[]`.
pub(crate) async fn rules(_: Authorized, state: web::Data<State>) -> HttpResponse {
    let rules = state.rules.as_ref().map(|r| r.rules()).unwrap_or_default();
    HttpResponse::Ok().json(rules)
}
