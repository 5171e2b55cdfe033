//! [`SessionStatus`]: what a session publishes about its connection, and the check that
//! publishes it only when it changed (the actor looks after every message it handles,
//! publishes included, so building a new status each time would cost a few allocations
//! per publish).

use std::time::SystemTime;

use serde::Serialize;

use super::io::link::BrokerLimits;
use super::state::SessionState;
use crate::event::{ConnectionFailure, GiveUpReason};

/// A snapshot of a session's connection, published on every change.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SessionStatus {
    /// Connection state.
    pub state: SessionState,
    /// Connected and every subscription restored.
    pub ready: bool,
    /// The broker connected to, if any.
    pub broker: Option<String>,
    /// The client id in use (on an MQTT 5 session with an empty client id, the one the
    /// broker assigned, once connected).
    pub client_id: String,
    /// What the broker's last CONNACK allowed (MQTT 5; empty on MQTT 3.1.1).
    pub broker_limits: BrokerLimits,
    /// When the current connection was established.
    pub connected_since: Option<SystemTime>,
    /// When the session entered its current [`state`](Self::state).
    pub state_since: SystemTime,
    /// The last connection failure.
    pub last_error: Option<ConnectionFailure>,
    /// Times the supervisor restarted the session's actor.
    pub restarts: u32,
    /// TLS certificate verification is off (`tls.skip_verify`): the broker's identity is
    /// not checked.
    pub tls_skip_verify: bool,
    /// Subscriptions the session keeps (restored after every reconnect).
    pub subscriptions: usize,
    /// Why the session gave up, in state [`SessionState::GaveUp`].
    pub gave_up: Option<GiveUpReason>,
}

impl SessionStatus {
    /// The status of a session that has not started connecting.
    pub(crate) fn initial(client_id: String, tls_skip_verify: bool) -> SessionStatus {
        SessionStatus {
            state: SessionState::Disconnected,
            ready: false,
            broker: None,
            client_id,
            broker_limits: BrokerLimits::default(),
            connected_since: None,
            state_since: SystemTime::now(),
            last_error: None,
            restarts: 0,
            tls_skip_verify,
            subscriptions: 0,
            gave_up: None,
        }
    }
}

/// The actor's view of its status, borrowed: compared with the published one without
/// building a new [`SessionStatus`].
#[derive(Debug)]
pub(crate) struct StatusView<'a> {
    pub(crate) state: SessionState,
    pub(crate) ready: bool,
    pub(crate) broker: Option<&'a str>,
    pub(crate) client_id: &'a str,
    pub(crate) broker_limits: &'a BrokerLimits,
    pub(crate) connected_since: Option<SystemTime>,
    pub(crate) state_since: SystemTime,
    pub(crate) last_error: Option<&'a ConnectionFailure>,
    pub(crate) restarts: u32,
    pub(crate) tls_skip_verify: bool,
    pub(crate) subscriptions: usize,
    pub(crate) gave_up: Option<&'a GiveUpReason>,
}

impl StatusView<'_> {
    /// True when `published` no longer says what this view says.
    pub(crate) fn differs_from(&self, published: &SessionStatus) -> bool {
        published.state != self.state
            || published.ready != self.ready
            || published.broker.as_deref() != self.broker
            || published.client_id != self.client_id
            || &published.broker_limits != self.broker_limits
            || published.connected_since != self.connected_since
            || published.state_since != self.state_since
            || published.last_error.as_ref() != self.last_error
            || published.restarts != self.restarts
            || published.tls_skip_verify != self.tls_skip_verify
            || published.subscriptions != self.subscriptions
            || published.gave_up.as_ref() != self.gave_up
    }

    /// The status this view describes.
    pub(crate) fn to_status(&self) -> SessionStatus {
        SessionStatus {
            state: self.state,
            ready: self.ready,
            broker: self.broker.map(str::to_string),
            client_id: self.client_id.to_string(),
            broker_limits: self.broker_limits.clone(),
            connected_since: self.connected_since,
            state_since: self.state_since,
            last_error: self.last_error.cloned(),
            restarts: self.restarts,
            tls_skip_verify: self.tls_skip_verify,
            subscriptions: self.subscriptions,
            gave_up: self.gave_up.cloned(),
        }
    }
}

/// Publishes `view` on `tx` when it differs from what `tx` holds; returns whether it did.
/// Receivers are woken only when it matters to [`wakes_waiters`] (readiness, closing,
/// giving up): the other fields are read with `borrow`, and a session's connect would
/// otherwise wake every `wait_ready` caller two or three times for nothing.
pub(crate) fn publish_if_changed(
    tx: &tokio::sync::watch::Sender<SessionStatus>,
    view: &StatusView<'_>,
) -> bool {
    let changed = view.differs_from(&tx.borrow());
    if changed {
        tx.send_if_modified(|s| {
            let next = view.to_status();
            let wake = wakes_waiters(s, &next);
            *s = next;
            wake
        });
    }
    changed
}

/// Whether going from `old` to `new` concerns a `wait_ready` caller: readiness changed,
/// or the session closed or gave up (or stopped being so).
pub(crate) fn wakes_waiters(old: &SessionStatus, new: &SessionStatus) -> bool {
    let final_state = |s: &SessionStatus| {
        matches!(s.state, SessionState::Closed | SessionState::GaveUp) || s.gave_up.is_some()
    };
    old.ready != new.ready || final_state(old) != final_state(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ErrorKind;

    fn base() -> SessionStatus {
        SessionStatus {
            state_since: SystemTime::UNIX_EPOCH,
            ..SessionStatus::initial("cid".into(), false)
        }
    }

    fn view(limits: &BrokerLimits) -> StatusView<'_> {
        StatusView {
            state: SessionState::Disconnected,
            ready: false,
            broker: None,
            client_id: "cid",
            broker_limits: limits,
            connected_since: None,
            state_since: SystemTime::UNIX_EPOCH,
            last_error: None,
            restarts: 0,
            tls_skip_verify: false,
            subscriptions: 0,
            gave_up: None,
        }
    }

    #[test]
    fn every_field_counts_as_a_change_and_nothing_else_does() {
        let limits = BrokerLimits::default();
        let failure = ConnectionFailure {
            kind: ErrorKind::Io,
            broker: "mqtt://b:1883".into(),
            message: "refused".into(),
            reason: None,
        };
        assert!(
            !view(&limits).differs_from(&base()),
            "the same status is no change"
        );
        macro_rules! change {
            ($what:literal, |$v:ident| $set:expr) => {{
                let mut $v = view(&limits);
                $set;
                assert!($v.differs_from(&base()), "{} is a change", $what);
            }};
        }
        change!("state", |v| v.state = SessionState::Connecting);
        change!("ready", |v| v.ready = true);
        change!("broker", |v| v.broker = Some("mqtt://b:1883"));
        change!("client id", |v| v.client_id = "other");
        change!("since", |v| v.connected_since =
            Some(SystemTime::UNIX_EPOCH));
        change!("state since", |v| v.state_since = SystemTime::now());
        change!("error", |v| v.last_error = Some(&failure));
        change!("restarts", |v| v.restarts = 1);
        change!("skip verify", |v| v.tls_skip_verify = true);
        change!("subscriptions", |v| v.subscriptions = 3);
        let reason = GiveUpReason::ConnectionLost { error: None };
        change!("gave up", |v| v.gave_up = Some(&reason));
    }

    #[test]
    fn publishing_sends_only_changes() {
        let (tx, rx) = tokio::sync::watch::channel(base());
        let limits = BrokerLimits::default();
        let mut v = view(&limits);
        assert!(!publish_if_changed(&tx, &v));
        v.state = SessionState::Connected;
        assert!(publish_if_changed(&tx, &v));
        assert_eq!(rx.borrow().state, SessionState::Connected);
    }

    #[test]
    fn only_readiness_closing_and_giving_up_wake_waiters() {
        let (tx, mut rx) = tokio::sync::watch::channel(base());
        rx.mark_unchanged();
        let limits = BrokerLimits::default();
        let mut v = view(&limits);
        v.state = SessionState::Connecting;
        assert!(publish_if_changed(&tx, &v));
        v.state = SessionState::Connected;
        v.subscriptions = 2;
        assert!(publish_if_changed(&tx, &v));
        assert!(!rx.has_changed().unwrap(), "no waiter woken for these");
        assert_eq!(rx.borrow().subscriptions, 2, "yet the value is current");
        v.ready = true;
        assert!(publish_if_changed(&tx, &v));
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        v.ready = false;
        v.state = SessionState::GaveUp;
        assert!(publish_if_changed(&tx, &v));
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        v.state = SessionState::Closed;
        assert!(publish_if_changed(&tx, &v));
        assert!(
            !rx.has_changed().unwrap(),
            "gave up, then closed: both final"
        );
    }
}
