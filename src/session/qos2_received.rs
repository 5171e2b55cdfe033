//! Incoming QoS 2 state of a persistent session: which packet ids reached the routes, so
//! that a PUBLISH the broker re-sends (DUP) after a reconnect or a restart is acknowledged
//! without being delivered again [MQTT-4.3.3-2 (MQTT 3.1.1 §4.3.3)].
//!
//! An id is `Delivering` from the first PUBLISH until its consumers are done, then
//! `Handled` (PUBREC sent, or owed) until the broker's PUBREL. With a store, `Handled` ids
//! are written (flushed) before the PUBREC leaves and removed at the PUBREL, so a
//! restarted process still recognises them. Only a re-sent PUBLISH (DUP 1) is ever
//! suppressed: a PUBLISH without DUP is a new message, even if its id is known (a lost
//! removal leaves a stale id behind; it must not swallow the next message with that id).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::store::StoreWorker;

/// Where one incoming QoS 2 packet id stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Handed to the routes; consumers not done yet. `resent`: the broker re-sent it on
    /// the current connection, so its PUBREC is owed there.
    Delivering { resent: bool },
    /// Consumers done; PUBREC sent or owed; waiting for PUBREL.
    Handled,
    /// PUBREL answered with PUBCOMP on the current connection. The broker may not have
    /// got the PUBCOMP if the connection ends now: it then sends PUBREL again after the
    /// reconnect, which must be answered too [MQTT-4.3.3], so the id is kept until then.
    Released,
}

/// What to do with an incoming QoS 2 PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Qos2Action {
    /// A new message: deliver it (and PUBREC once handled).
    Deliver,
    /// A re-send of a message already handled: PUBREC now, deliver nothing.
    AckNow,
    /// A re-send of a message still with its consumers: deliver nothing; the PUBREC goes
    /// when they are done.
    AckWhenHandled,
}

/// The packet ids (see the [module docs](self)); a plain type.
#[derive(Debug, Default)]
pub(crate) struct Qos2Ids {
    ids: HashMap<u16, Stage>,
}

impl Qos2Ids {
    /// State restored from the store: these ids were handled before the restart.
    pub(crate) fn with_handled(ids: impl IntoIterator<Item = u16>) -> Self {
        Qos2Ids {
            ids: ids.into_iter().map(|id| (id, Stage::Handled)).collect(),
        }
    }

    /// A QoS 2 PUBLISH arrived.
    pub(crate) fn on_publish(&mut self, pkid: u16, dup: bool) -> Qos2Action {
        match (self.ids.get_mut(&pkid), dup) {
            (Some(Stage::Handled), true) => Qos2Action::AckNow,
            // The broker sent PUBREL for it, so a PUBLISH with this id is a new message.
            (Some(Stage::Delivering { resent }), true) => {
                *resent = true;
                Qos2Action::AckWhenHandled
            }
            _ => {
                self.ids.insert(pkid, Stage::Delivering { resent: false });
                Qos2Action::Deliver
            }
        }
    }

    /// Its consumers are done with `pkid`. Returns true when the broker re-sent it on the
    /// current connection (its PUBREC is owed there, whatever connection it arrived on).
    pub(crate) fn on_handled(&mut self, pkid: u16) -> bool {
        let resent = matches!(
            self.ids.get(&pkid),
            Some(Stage::Delivering { resent: true })
        );
        self.ids.insert(pkid, Stage::Handled);
        resent
    }

    /// A consumer gave the message up: a re-send will be delivered again.
    pub(crate) fn on_abandoned(&mut self, pkid: u16) {
        if matches!(self.ids.get(&pkid), Some(Stage::Delivering { .. })) {
            self.ids.remove(&pkid);
        }
    }

    /// The broker's PUBREL for `pkid` was answered: the id is free again (kept as
    /// released until the next CONNACK). Returns true when it was handled.
    pub(crate) fn on_released(&mut self, pkid: u16) -> bool {
        self.ids.insert(pkid, Stage::Released) == Some(Stage::Handled)
    }

    /// A CONNACK. Without a session on the broker every id is forgotten; with one, the
    /// ids whose PUBREL may come (handled, or released on the connection that ended) are
    /// returned (ascending), released ids are forgotten, and re-sends are expected anew.
    pub(crate) fn on_connected(&mut self, session_present: bool) -> Vec<u16> {
        if !session_present {
            self.ids.clear();
            return Vec::new();
        }
        let mut expect = Vec::new();
        self.ids.retain(|id, stage| match stage {
            Stage::Delivering { resent } => {
                *resent = false;
                true
            }
            Stage::Handled => {
                expect.push(*id);
                true
            }
            Stage::Released => {
                expect.push(*id);
                false
            }
        });
        expect.sort_unstable();
        expect
    }

    /// Ids tracked.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

/// The session's [`Qos2Ids`], shared by its driver (on arrival) and acknowledger (on
/// release by the consumers), with the store that keeps the handled ids.
#[derive(Debug)]
pub(crate) struct Qos2Received {
    session: Arc<str>,
    state: Mutex<Qos2Ids>,
    store: Option<StoreWorker>,
}

impl Qos2Received {
    /// Shared state for `session`, starting from `handled` (read from the store).
    pub(crate) fn new(session: Arc<str>, handled: Vec<u16>, store: Option<StoreWorker>) -> Self {
        Qos2Received {
            session,
            state: Mutex::new(Qos2Ids::with_handled(handled)),
            store,
        }
    }

    /// Runs `f` on the state (a short, uncontended lock: driver and acknowledger share a
    /// thread).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Qos2Ids) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Consumers are done with `pkid`: recorded (with a store, on disk before this
    /// returns). Returns whether its PUBREC is owed on the current connection because
    /// the broker re-sent it.
    pub(crate) async fn handled(&self, pkid: u16) -> bool {
        let resent = self.with(|s| s.on_handled(pkid));
        if let Some(worker) = &self.store {
            let name = Arc::clone(&self.session);
            let write = worker.run(move |store| store.inbound_add(&name, pkid));
            match write.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(session = %self.session, pkid, error = %e,
                        "cannot record a handled QoS 2 message; a crash before its PUBREL may deliver it again");
                }
                Err(_) => tracing::error!(session = %self.session, "store worker gone"),
            }
        }
        resent
    }

    /// The broker released `pkid` (we sent PUBCOMP).
    pub(crate) fn released(&self, pkid: u16) {
        if self.with(|s| s.on_released(pkid)) {
            self.submit(move |store, name| store.inbound_remove(name, pkid));
        }
    }

    /// A CONNACK (see [`Qos2Ids::on_connected`]).
    pub(crate) fn connected(&self, session_present: bool) -> Vec<u16> {
        let (ids, had) = self.with(|s| {
            let had = s.len();
            (s.on_connected(session_present), had)
        });
        if !session_present && had > 0 {
            self.submit(|store, name| store.inbound_clear(name));
        }
        ids
    }

    fn submit(
        &self,
        f: impl FnOnce(&crate::store::Store, &str) -> Result<(), crate::store::StoreError>
            + Send
            + 'static,
    ) {
        if let Some(worker) = &self.store {
            let name = Arc::clone(&self.session);
            worker.submit(move |store| {
                if let Err(e) = f(store, &name) {
                    tracing::error!(session = %name, error = %e, "cannot update the handled QoS 2 ids");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_the_stage_and_the_dup_flag() {
        let mut s = Qos2Ids::default();
        assert_eq!(s.on_publish(1, false), Qos2Action::Deliver);
        // Re-sent while the consumers still have it: nothing delivered, PUBREC owed.
        assert_eq!(s.on_publish(1, true), Qos2Action::AckWhenHandled);
        assert!(s.on_handled(1));
        assert_eq!(s.on_publish(1, true), Qos2Action::AckNow);
        // Without DUP it is a new message under a recycled id.
        assert_eq!(s.on_publish(1, false), Qos2Action::Deliver);
        assert!(!s.on_handled(1));
        assert!(s.on_released(1));
        assert_eq!(s.on_publish(1, true), Qos2Action::Deliver);
        assert!(!s.on_handled(1));
        assert!(s.on_released(1));
        // Released on the connection that ended: its PUBREL may come again, once.
        assert_eq!(s.on_connected(true), vec![1]);
        assert_eq!(s.on_connected(true), Vec::<u16>::new());
    }

    #[test]
    fn an_abandoned_message_is_delivered_again() {
        let mut s = Qos2Ids::default();
        assert_eq!(s.on_publish(4, false), Qos2Action::Deliver);
        s.on_abandoned(4);
        assert_eq!(s.on_publish(4, true), Qos2Action::Deliver);
    }

    #[test]
    fn a_connack_keeps_or_forgets_the_ids() {
        let mut s = Qos2Ids::with_handled([9, 3]);
        assert_eq!(s.on_publish(5, false), Qos2Action::Deliver);
        assert_eq!(s.on_publish(5, true), Qos2Action::AckWhenHandled);
        assert_eq!(s.on_connected(true), vec![3, 9]);
        // The re-send of the previous connection no longer counts.
        assert!(!s.on_handled(5));
        assert_eq!(s.on_connected(false), Vec::<u16>::new());
        assert_eq!(s.len(), 0);
        assert_eq!(s.on_publish(3, true), Qos2Action::Deliver);
    }
}
