//! Durable routes: named routes of persistent sessions survive a restart of the process.
//!
//! For a session with `connect.persistent` and `resume_subscriptions`, the router saves
//! the session's subscriptions with the names of the named routes behind them whenever
//! they change. When a session of that name registers in a new process, each saved route
//! name becomes a *placeholder* route (a crate-private `Target::Hold`) on its filter, so
//! the session subscribes at its first connect — before the application registers its
//! routes again — and the QoS >= 1 messages that arrive meanwhile are held in the store
//! (bounded, with an expiry, counted). When the application registers a route of that name, the
//! placeholder gives way and the held messages are delivered to it first.
//!
//! Dropping a durable route's handle turns it back into a placeholder (messages keep being
//! held, e.g. during a graceful shutdown); [`Route::stop`](super::route::Route::stop)
//! forgets it (the subscription goes, and so does its saved entry).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::dispatch::{HoldGate, RouteEntry, Target, HELD_MAX_AGE};
use super::route::{Overflow, RouteScope, RouteStats, SubscribeOptions};
use super::RouterActor;
use crate::delivery::{AckGuard, Outcome};
use crate::message::{Message, QoS};

use crate::store::{unix_ms, StoredSubscription};
use crate::topic::TopicFilter;

impl RouterActor {
    /// Adds placeholders for the saved named routes of a durable session (`saved`: its
    /// subscriptions, read from the store by the store worker).
    pub(super) fn restore_placeholders(
        &mut self,
        session: &Arc<str>,
        saved: Vec<StoredSubscription>,
    ) {
        let Some(hold) = self.hold.clone() else {
            return;
        };
        let addr = self.sessions.get(session).cloned();
        for sub in saved {
            let Ok(filter) = TopicFilter::new(sub.filter.as_str()) else {
                continue;
            };
            if sub.routes.is_empty() {
                // Only unnamed routes wanted it, and they ended with the previous process;
                // a persistent session's broker still has it, so unsubscribe.
                if let Some(addr) = &addr {
                    addr.do_send(crate::session::Unsubscribe {
                        filter: filter.clone(),
                    });
                }
                continue;
            }
            let qos = QoS::try_from(sub.qos).unwrap_or(QoS::AtLeastOnce);
            for name in sub.routes {
                if self
                    .routes
                    .values()
                    .any(|r| *r.name == *name && r.scope.covers(session))
                {
                    continue;
                }
                self.next_id += 1;
                let entry = Arc::new(RouteEntry {
                    id: self.next_id,
                    name: Arc::from(name.as_str()),
                    filter: filter.clone(),
                    scope: RouteScope::Session(Arc::clone(session)),
                    qos,
                    subscribe: SubscribeOptions::default(),
                    overflow: Overflow::DropNewest,
                    target: Target::Hold {
                        queue: hold.clone(),
                        session: Arc::clone(session),
                        gate: HoldGate::default(),
                    },
                    named: true,
                    stats: Arc::new(RouteStats::default()),
                });
                tracing::info!(session = %session, route = %name, filter = %filter, "durable route restored; holding its messages until it is registered");
                self.insert_entry(entry);
            }
        }
    }

    /// Removes the placeholders named `name` covered by `scope`, closing their gates onto
    /// `tx` (the new route's queue) first; returns their sessions.
    pub(super) fn take_placeholders(
        &mut self,
        name: &str,
        scope: &RouteScope,
        tx: &flume::Sender<Message>,
    ) -> Vec<Arc<str>> {
        let ids: Vec<(u64, Arc<str>)> = self
            .routes
            .values()
            .filter(|r| &*r.name == name)
            .filter_map(|r| match (&r.target, &r.scope) {
                (Target::Hold { gate, .. }, RouteScope::Session(s)) if scope.covers(s) => {
                    gate.close(tx.clone());
                    Some((r.id, Arc::clone(s)))
                }
                _ => None,
            })
            .collect();
        for (id, _) in &ids {
            self.remove_entry(*id);
        }
        ids.into_iter().map(|(_, s)| s).collect()
    }

    /// Turns a removed named route of durable sessions back into placeholders.
    pub(super) fn keep_as_placeholder(&mut self, gone: &RouteEntry) {
        let Some(hold) = self.hold.clone() else {
            return;
        };
        if !gone.named {
            return;
        }
        let sessions: Vec<Arc<str>> = self
            .sessions_covered(&gone.scope)
            .into_iter()
            .filter(|s| self.durable.contains(s))
            .collect();
        for s in sessions {
            self.next_id += 1;
            let entry = Arc::new(RouteEntry {
                id: self.next_id,
                name: Arc::clone(&gone.name),
                filter: gone.filter.clone(),
                scope: RouteScope::Session(Arc::clone(&s)),
                qos: gone.qos,
                subscribe: gone.subscribe,
                overflow: Overflow::DropNewest,
                target: Target::Hold {
                    queue: hold.clone(),
                    session: s,
                    gate: HoldGate::default(),
                },
                named: true,
                stats: Arc::clone(&gone.stats),
            });
            self.insert_entry(entry);
        }
    }

    /// Saves the durable session's subscriptions with the named routes behind them.
    pub(super) fn save_subscriptions(&self, session: &Arc<str>) {
        let (Some(hold), true) = (&self.hold, self.durable.contains(session)) else {
            return;
        };
        let mut subs: Vec<StoredSubscription> = Vec::new();
        for (filter, ids) in &self.by_filter {
            let routes: Vec<&RouteEntry> = ids
                .iter()
                .filter_map(|id| self.routes.get(id))
                .filter(|r| r.named && r.scope.covers(session))
                .map(|r| &**r)
                .collect();
            // Every filter the session is subscribed to is saved; those without a named
            // route (routes: []) are unsubscribed after a restart.
            let Some((qos, _options)) = self
                .subscribed
                .get(session)
                .and_then(|subs| subs.get(filter))
                .copied()
            else {
                continue;
            };
            let mut names: Vec<String> = routes.iter().map(|r| r.name.to_string()).collect();
            names.sort();
            names.dedup();
            subs.push(StoredSubscription {
                filter: filter.clone(),
                qos: qos.as_u8(),
                routes: names,
            });
        }
        subs.sort_by(|a, b| a.filter.cmp(&b.filter));
        let session = Arc::clone(session);
        // On the store worker: an fsync never runs on the router's thread, and saves of
        // one session are written in the order they were made.
        hold.submit(move |store| {
            if let Err(e) = store.subscriptions_save(&session, &subs) {
                tracing::error!(session = %session, error = %e, "cannot save durable subscriptions");
            }
        });
    }

    /// Delivers the messages held for route `name` of `session` into `tx`, oldest first,
    /// after every hold submitted before (see [`StoreWorker`](crate::store::StoreWorker)). Each stays in the store until
    /// the route has handled it: its [`AckGuard`] guard deletes it on release (through the
    /// hold worker), and leaves it for the next registration when abandoned.
    pub(super) fn deliver_held(
        &self,
        session: &Arc<str>,
        name: &str,
        tx: &flume::Sender<Message>,
        stats: &Arc<RouteStats>,
    ) {
        let Some(hold) = &self.hold else { return };
        let (s, n) = (Arc::clone(session), name.to_string());
        let loaded = hold
            .run(move |store| store.held_load(&s, &n, unix_ms(SystemTime::now()), HELD_MAX_AGE));
        let (session, name, tx, stats, hold) = (
            Arc::clone(session),
            name.to_string(),
            tx.clone(),
            Arc::clone(stats),
            hold.clone(),
        );
        actix::spawn(async move {
            let loaded = match loaded.await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::error!(session = %session, route = %name, error = %e, "cannot read held messages");
                    return;
                }
                Err(_) => return,
            };
            if loaded.expired > 0 {
                stats
                    .dropped_full
                    .fetch_add(loaded.expired as u64, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(session = %session, route = %name, expired = loaded.expired, "held messages expired");
            }
            if !loaded.messages.is_empty() {
                tracing::info!(session = %session, route = %name, count = loaded.messages.len(), "delivering held messages");
            }
            let route: Arc<str> = Arc::from(name.as_str());
            for (seq, m) in loaded.messages {
                let (q, s, r) = (hold.clone(), Arc::clone(&session), Arc::clone(&route));
                let delivery = AckGuard::then(move |outcome| {
                    if outcome == Outcome::Handled {
                        // Ordered after the load on the hold worker; no fsync on this thread.
                        q.submit(move |store| {
                            if let Err(e) = store.held_remove(&s, &r, seq) {
                                tracing::error!(session = %s, route = %r, error = %e, "cannot delete a handled held message");
                            }
                        });
                    }
                });
                let msg = Message {
                    session: Arc::clone(&session),
                    topic: Arc::from(m.topic.as_str()),
                    payload: m.payload,
                    qos: QoS::try_from(m.qos).unwrap_or(QoS::AtLeastOnce),
                    retain: m.retain,
                    dup: false,
                    packet_id: 0,
                    received_at: UNIX_EPOCH + Duration::from_millis(m.received_at_ms),
                    // Held messages keep no MQTT 5 properties (the store's frame has none).
                    properties: None,
                    delivery,
                };
                let at = msg.received_at;
                if let Err(flume::SendError(m)) = tx.send_async(msg).await {
                    // The route went away again: the message stays held.
                    m.leave_unacknowledged();
                    break;
                }
                stats.record_delivery(at);
            }
        });
    }
}
