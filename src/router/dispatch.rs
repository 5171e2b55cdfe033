//! The hot path: matching a received message against the route table snapshot and
//! handing it to every matching route, on the session's driver task.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::FutureExt;

use super::route::{
    route_queue, Listener, Overflow, ReceiverTable, Route, RouteOwner, RouteScope, RouteStats,
    SubscribeOptions,
};
use super::table::FilterTrie;
use crate::message::{Message, QoS};
use crate::metrics::counters::SessionCounters;
use crate::session::incoming::{Dispatcher, RoomWait, RoomWaits, WaitingForRoom};
use crate::store::{unix_ms, HeldLimit, HeldPush, StoreWorker, StoredMessage};
use crate::topic::TopicFilter;

/// One route as the dispatcher sees it.
#[derive(Debug)]
pub struct RouteEntry {
    /// Route id.
    pub id: u64,
    /// Route name.
    pub name: Arc<str>,
    /// Its filter.
    pub filter: TopicFilter,
    /// Which sessions it covers.
    pub scope: RouteScope,
    /// Subscription QoS it asks for.
    pub qos: QoS,
    /// MQTT 5 subscribe options it asks for.
    pub subscribe: SubscribeOptions,
    /// QoS 0 overflow policy.
    pub overflow: Overflow,
    /// Where its messages go.
    pub target: Target,
    /// The name was chosen by the application (so it can be durable across restarts).
    pub named: bool,
    /// Counters.
    pub stats: Arc<RouteStats>,
}

/// A route's in-place callback ([`RouteBuilder::handle_inline`](super::builder::RouteBuilder::handle_inline)).
pub(crate) type InlineCallback = Arc<dyn Fn(&Message) + Send + Sync>;

/// Where a route's messages go.
pub enum Target {
    /// The route's bounded queue.
    Queue {
        /// Sending side.
        tx: flume::Sender<Message>,
        /// A receiver kept only for [`Overflow::DropOldest`] (to pop the oldest when full).
        oldest: Option<flume::Receiver<Message>>,
    },
    /// A callback called where the message arrives: on the receiving session's worker,
    /// inside the dispatch, with no queue and no thread crossing.
    Inline {
        /// The callback.
        callback: InlineCallback,
    },
    /// A durable route restored from the store whose application has not registered it
    /// again yet: QoS >= 1 messages are held in the store until it does.
    Hold {
        /// The manager's store worker.
        queue: StoreWorker,
        /// Closed (holding the queue of the route that replaced the placeholder) when the
        /// application registers the route again; see `HoldGate`.
        gate: HoldGate,
        /// The session.
        session: Arc<str>,
    },
}

impl Drop for Target {
    fn drop(&mut self) {
        // A `DropOldest` route keeps a receiver of its own queue, so the queue outlives
        // the application's `Listener`: what entered it after the listener was dropped
        // (messages that waited for room) was never handed to the application. Leave it
        // unacknowledged, for the broker to send again, as the listener does with what it
        // still held. While the listener lives (a closed route still hands it what was
        // queued), the queue is its to drain.
        if let Target::Queue {
            oldest: Some(rx), ..
        } = self
        {
            if rx.receiver_count() > 1 {
                return;
            }
            for m in rx.try_iter() {
                m.leave_unacknowledged();
            }
        }
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Queue { tx, .. } => f.debug_struct("Queue").field("len", &tx.len()).finish(),
            Target::Inline { .. } => f.write_str("Inline"),
            Target::Hold { session, .. } => {
                f.debug_struct("Hold").field("session", session).finish()
            }
        }
    }
}

/// How many messages are held per durable route at most.
pub(crate) const HELD_MAX_PER_ROUTE: usize = 100_000;
/// How long a held message is kept at most.
pub(crate) const HELD_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl RouteEntry {
    /// Offers `msg` to this route. Returns `None` when the route's consumer is gone,
    /// otherwise `Some(wait)`, where `wait` is a future when the message must wait for
    /// room in the queue: a QoS >= 1 message (its acknowledgement waits), or a QoS 0
    /// message of a `Backpressure` route (the session stops reading for at most
    /// `max_stall`).
    #[inline]
    fn offer(&self, msg: &Message, max_stall: Duration) -> Option<Option<RoomWait>> {
        let (tx, oldest) = match &self.target {
            Target::Queue { tx, oldest } => (tx, oldest),
            Target::Inline { callback } => {
                self.call(callback, msg);
                return Some(None);
            }
            Target::Hold {
                queue,
                session,
                gate,
            } => return self.hold(queue, session, gate, msg),
        };
        if msg.qos != QoS::AtMostOnce && self.stats.waiting.load(Ordering::Acquire) > 0 {
            // Earlier messages wait for room: wait behind them.
            return Some(Some(self.wait_for_room(tx, msg.clone())));
        }
        match tx.try_send(msg.clone()) {
            Ok(()) => {
                self.stats.record_delivery(msg.received_at);
                if self.overflow == Overflow::Backpressure {
                    self.stats.overrun.store(false, Ordering::Relaxed);
                }
                Some(None)
            }
            Err(flume::TrySendError::Full(m)) => {
                if msg.qos == QoS::AtMostOnce {
                    if self.overflow == Overflow::Backpressure {
                        return Some(self.stall(tx, m, max_stall));
                    }
                    self.overflow_qos0(tx, oldest, m);
                    return Some(None);
                }
                Some(Some(self.wait_for_room(tx, m)))
            }
            Err(flume::TrySendError::Disconnected(_)) => {
                self.stats.dropped_closed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Calls an in-place callback with `msg`: the message is handled (a QoS >= 1 one may
    /// be acknowledged) once it returns, unless the callback kept a clone. A panic is
    /// caught and counted, and the message counts as handled.
    #[inline]
    fn call(&self, callback: &InlineCallback, msg: &Message) {
        self.stats.record_delivery(msg.received_at);
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(msg))).is_err() {
            self.stats.panics.fetch_add(1, Ordering::Relaxed);
            tracing::error!(route = %self.name, topic = %msg.topic, "in-place route handler panicked");
        }
    }

    /// A QoS >= 1 message that waits for room (the session's acknowledger drives the
    /// returned future, in arrival order). If the consumer goes first (a `Listener`
    /// dropped), the message is left unacknowledged, like those queued before it: the
    /// route took it, so no other route's handling may acknowledge it.
    fn wait_for_room(&self, tx: &flume::Sender<Message>, m: Message) -> RoomWait {
        let stats = Arc::clone(&self.stats);
        let waiting = WaitingForRoom::new(&stats.waiting);
        let at = m.received_at;
        Box::pin(tx.clone().into_send_async(m).map(move |r| {
            drop(waiting);
            match r {
                Ok(()) => stats.record_delivery(at),
                Err(flume::SendError(m)) => {
                    m.leave_unacknowledged();
                    stats.dropped_closed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }))
    }

    /// A QoS 0 message for a full `Backpressure` route: a future the session's driver
    /// awaits before it reads on, done when the message fits or after `max_stall` (then
    /// the message is dropped, counted as `stall`, and the route drops QoS 0 overflow at
    /// once until it has room again).
    fn stall(
        &self,
        tx: &flume::Sender<Message>,
        m: Message,
        max_stall: Duration,
    ) -> Option<RoomWait> {
        if max_stall.is_zero() || self.stats.overrun.load(Ordering::Relaxed) {
            self.stats.dropped_stall.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let stats = Arc::clone(&self.stats);
        let at = m.received_at;
        let send = tx.clone().into_send_async(m);
        Some(Box::pin(async move {
            match tokio::time::timeout(max_stall, send).await {
                Ok(Ok(())) => stats.record_delivery(at),
                Ok(Err(_)) => {
                    stats.dropped_closed.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    stats.dropped_stall.fetch_add(1, Ordering::Relaxed);
                    stats.overrun.store(true, Ordering::Relaxed);
                    tracing::debug!("route consumer stopped longer than max_stall; dropping QoS 0 overflow until it has room");
                }
            }
        }))
    }

    fn overflow_qos0(
        &self,
        tx: &flume::Sender<Message>,
        oldest: &Option<flume::Receiver<Message>>,
        m: Message,
    ) {
        self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
        if let (Overflow::DropOldest, Some(rx)) = (self.overflow, oldest) {
            let _ = rx.try_recv();
            let at = m.received_at;
            if tx.try_send(m).is_ok() {
                self.stats.record_delivery(at);
            }
        }
    }

    /// Holds a QoS >= 1 message in the store for a durable route not registered yet; the
    /// message is acknowledged to the broker once it is on disk. Once the route is
    /// registered again (the gate is closed), the message goes to its queue instead.
    fn hold(
        &self,
        queue: &StoreWorker,
        session: &Arc<str>,
        gate: &HoldGate,
        msg: &Message,
    ) -> Option<Option<RoomWait>> {
        if msg.qos == QoS::AtMostOnce {
            self.stats.dropped_closed.fetch_add(1, Ordering::Relaxed);
            return Some(None);
        }
        // Under the gate's lock: either the hold is submitted before the new route loads
        // the held messages (so the load sees it), or it goes to the new route's queue.
        let gate = gate
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = gate.as_ref() {
            let m = msg.clone();
            return match tx.try_send(m) {
                Ok(()) => {
                    self.stats.record_delivery(msg.received_at);
                    Some(None)
                }
                Err(flume::TrySendError::Full(m)) => Some(Some(self.wait_for_room(tx, m))),
                Err(flume::TrySendError::Disconnected(_)) => None,
            };
        }
        let (session, route) = (Arc::clone(session), Arc::clone(&self.name));
        let route_name = Arc::clone(&route);
        let stats = Arc::clone(&self.stats);
        let received_at = msg.received_at;
        let held = StoredMessage {
            topic: msg.topic.to_string(),
            payload: msg.payload.clone(),
            qos: msg.qos.as_u8(),
            retain: msg.retain,
            received_at_ms: unix_ms(received_at),
        };
        let write = queue.run(move |store| {
            let limit = HeldLimit {
                max_per_route: HELD_MAX_PER_ROUTE,
                max_age: HELD_MAX_AGE,
            };
            store.held_push(
                &session,
                &route_name,
                &held,
                limit,
                unix_ms(std::time::SystemTime::now()),
            )
        });
        drop(gate);
        Some(Some(Box::pin(async move {
            match write.await {
                Ok(Ok(HeldPush::Stored(_))) => stats.record_delivery(received_at),
                Ok(Ok(HeldPush::Full)) => {
                    stats.dropped_full.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(route = %route, "held messages of a durable route at their limit; message dropped");
                }
                Ok(Err(e)) => {
                    stats.dropped_closed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(route = %route, error = %e, "cannot hold a message for a durable route");
                }
                Err(e) => tracing::error!(route = %route, error = %e, "holding task failed"),
            }
        })))
    }
}

/// The gate of a placeholder route: open while it holds messages in the store; closed by
/// the router, with the queue of the route that replaces it, before that route loads what
/// was held. Holding and closing take the same lock, so no message is held after the load
/// was submitted (it would stay in the store until the next registration).
#[derive(Debug, Clone, Default)]
pub struct HoldGate(Arc<std::sync::Mutex<Option<flume::Sender<Message>>>>);

impl HoldGate {
    /// Closes the gate: from now on, messages go to `tx`.
    pub(crate) fn close(&self, tx: flume::Sender<Message>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tx);
    }
}

/// The route table as published by the router: an immutable snapshot.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    /// Routes by filter.
    pub trie: FilterTrie<Arc<RouteEntry>>,
}

impl RouteTable {
    /// Offers `msg`, received by `session`, to every matching route (what the benchmarks
    /// measure; sessions dispatch through their `Dispatcher`).
    #[cfg_attr(not(feature = "bench-internals"), allow(dead_code))]
    pub fn dispatch(&self, session: &str, msg: &Message) -> Option<RoomWait> {
        let mut waits = RoomWaits::default();
        self.offer(session, msg, Duration::ZERO, &mut waits);
        waits.finish()
    }

    /// Offers `msg` to every matching route; waits for room go into `waits`. Returns
    /// true when at least one route took it (or will, once it has room).
    pub fn offer(
        &self,
        session: &str,
        msg: &Message,
        max_stall: Duration,
        waits: &mut RoomWaits,
    ) -> bool {
        let mut taken = false;
        self.trie.for_each_match(&msg.topic, |e| {
            if e.scope.covers(session) {
                if let Some(wait) = e.offer(msg, max_stall) {
                    taken = true;
                    if let Some(w) = wait {
                        waits.push(w);
                    }
                }
            }
        });
        taken
    }
}

/// The receivers of every message one session receives
/// ([`SessionHandle::messages`](crate::SessionHandle::messages)): routes of their own,
/// outside the router's table (they subscribe to nothing and match every topic), offered
/// each message after the table's routes, with a route's queue, overflow policies,
/// counters and [`Listener`].
#[derive(Debug, Default)]
pub(crate) struct SessionSinks {
    entries: ArcSwap<Vec<Arc<RouteEntry>>>,
    next_id: AtomicU64,
    /// Messages dropped at a full receiver, counted for receivers already gone.
    dropped_gone: AtomicU64,
}

impl SessionSinks {
    /// A receiver of `capacity` messages (brought within 1..=[`MAX_CAPACITY`], with a
    /// warning, as a route's capacity is checked) with overflow policy `overflow`.
    ///
    /// [`MAX_CAPACITY`]: super::route::MAX_CAPACITY
    pub(crate) fn add(
        self: &Arc<Self>,
        session: &Arc<str>,
        capacity: usize,
        overflow: Overflow,
    ) -> Listener {
        let max = super::route::MAX_CAPACITY;
        let bounded = capacity.clamp(1, max);
        if bounded != capacity {
            tracing::warn!(session = %session, capacity, used = bounded,
                "messages receiver capacity must be between 1 and {max}; using {bounded}");
        }
        let (tx, oldest, rx) = route_queue(bounded, overflow);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let name: Arc<str> = Arc::from(format!("messages-{id}"));
        let filter = TopicFilter::new("#").expect("`#` is a valid filter");
        let stats = Arc::new(RouteStats::default());
        let entry = Arc::new(RouteEntry {
            id,
            name: Arc::clone(&name),
            filter: filter.clone(),
            scope: RouteScope::Session(Arc::clone(session)),
            qos: QoS::ExactlyOnce,
            subscribe: SubscribeOptions::default(),
            overflow,
            target: Target::Queue { tx, oldest },
            named: false,
            stats: Arc::clone(&stats),
        });
        self.entries.rcu(|old| {
            let mut v: Vec<_> = old.iter().cloned().collect();
            v.push(Arc::clone(&entry));
            v
        });
        let owner: std::sync::Weak<SessionSinks> = Arc::downgrade(self);
        Listener {
            rx,
            route: Route {
                id,
                name,
                filter,
                qos: QoS::ExactlyOnce,
                stats,
                owner: Some(RouteOwner::Session(owner)),
            },
        }
    }

    /// Messages dropped because a receiver was full (QoS 0 overflow), gone ones included.
    pub(crate) fn dropped(&self) -> u64 {
        let live: u64 = self.entries.load().iter().map(|e| dropped(&e.stats)).sum();
        self.dropped_gone.load(Ordering::Relaxed) + live
    }

    /// True when no receiver is open.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.load().is_empty()
    }

    /// Offers `msg` to every receiver (as [`RouteEntry::offer`]); waits for room go into
    /// `waits`. Returns true when at least one receiver took it (or will, once it has
    /// room).
    pub(crate) fn offer(&self, msg: &Message, max_stall: Duration, waits: &mut RoomWaits) -> bool {
        let entries = self.entries.load();
        let mut taken = false;
        for e in entries.iter() {
            match e.offer(msg, max_stall) {
                Some(wait) => {
                    taken = true;
                    if let Some(w) = wait {
                        waits.push(w);
                    }
                }
                None => self.remove_receiver(e.id),
            }
        }
        taken
    }
}

impl ReceiverTable for SessionSinks {
    /// Removes receiver `id` (its listener was closed or dropped, or its queue is gone).
    fn remove_receiver(&self, id: u64) {
        let mut gone = 0;
        self.entries.rcu(|old| {
            gone = 0;
            old.iter()
                .filter(|e| {
                    if e.id == id {
                        gone += dropped(&e.stats);
                    }
                    e.id != id
                })
                .cloned()
                .collect::<Vec<_>>()
        });
        self.dropped_gone.fetch_add(gone, Ordering::Relaxed);
    }
}

/// A receiver's messages dropped at overflow.
fn dropped(stats: &RouteStats) -> u64 {
    stats.dropped_full.load(Ordering::Relaxed) + stats.dropped_stall.load(Ordering::Relaxed)
}

/// At most this many QoS >= 1 messages of one session wait for a route at once (see
/// [`PerformanceOptions::unrouted_hold`](crate::PerformanceOptions::unrouted_hold)); past
/// it an unrouted message is dropped and counted at once. In practice the broker's
/// in-flight window stops the flow well before.
pub(crate) const MAX_UNROUTED: usize = 1000;

/// How often a message waiting for a route looks at the route table again.
const UNROUTED_RECHECK: Duration = Duration::from_millis(20);

/// What a session's driver hands every received message to: the routes of the shared
/// route table that cover the session, then the session-level receivers
/// ([`SessionHandle::messages`](crate::SessionHandle::messages)).
///
/// A QoS >= 1 message that neither takes waits, unacknowledged, for a route to appear
/// (up to `unrouted_hold`, at most [`MAX_UNROUTED`] at once); a QoS 0 one is dropped. Both
/// are counted as `unrouted` when dropped.
#[derive(Debug)]
pub(crate) struct RouterDispatch {
    /// The session.
    pub session: Arc<str>,
    /// The snapshot the router publishes.
    pub table: Arc<ArcSwap<RouteTable>>,
    /// The session-level receivers.
    pub sinks: Arc<SessionSinks>,
    /// The session's counters (`dropped_unrouted`).
    pub counters: Arc<SessionCounters>,
    /// How long an unrouted QoS >= 1 message waits for a route.
    pub unrouted_hold: Duration,
    /// Unrouted messages waiting now.
    pub unrouted: Arc<AtomicUsize>,
}

impl RouterDispatch {
    /// A dispatcher for `session` over the router's `table` and the session's receivers.
    pub(crate) fn new(
        session: Arc<str>,
        table: Arc<ArcSwap<RouteTable>>,
        sinks: Arc<SessionSinks>,
        counters: Arc<SessionCounters>,
        unrouted_hold: Duration,
    ) -> RouterDispatch {
        RouterDispatch {
            session,
            table,
            sinks,
            counters,
            unrouted_hold,
            unrouted: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn drop_unrouted(counters: &SessionCounters, session: &str, msg: &Message) {
        if counters.dropped_unrouted.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(session = %session, topic = %msg.topic, qos = %msg.qos,
                "message matched no route and was dropped (further drops are counted: dropped_messages_total{{reason=\"unrouted\"}})");
        } else {
            tracing::debug!(session = %session, topic = %msg.topic, "unrouted message dropped");
        }
    }

    /// A QoS >= 1 message no consumer took: waits for a route, unacknowledged (the
    /// returned future holds a clone of it), then hands it over or drops it.
    fn hold_unrouted(&self, msg: &Message, offered: Arc<RouteTable>) -> Option<RoomWait> {
        let held = self.unrouted.fetch_add(1, Ordering::AcqRel);
        if held >= MAX_UNROUTED || self.unrouted_hold.is_zero() {
            self.unrouted.fetch_sub(1, Ordering::AcqRel);
            Self::drop_unrouted(&self.counters, &self.session, msg);
            return None;
        }
        // The deadline runs from now: the acknowledger polls this future only after the
        // messages before it, and the holds must not add up.
        let deadline = tokio::time::Instant::now() + self.unrouted_hold;
        let (session, table, sinks) = (
            Arc::clone(&self.session),
            Arc::clone(&self.table),
            Arc::clone(&self.sinks),
        );
        let (counters, unrouted) = (Arc::clone(&self.counters), Arc::clone(&self.unrouted));
        let msg = msg.clone();
        // `seen`: the snapshot this message was just offered to; it is offered again once
        // the table has changed (the future may first run much later, after older ones).
        let mut seen = offered;
        Some(Box::pin(async move {
            loop {
                // Offer again first: this future may first run long after the message
                // arrived (the acknowledger polls in arrival order), and a route that
                // appeared meanwhile must get it even past the deadline.
                let current = table.load_full();
                if !Arc::ptr_eq(&current, &seen) || !sinks.is_empty() {
                    seen = current;
                    let mut waits = RoomWaits::default();
                    // QoS >= 1 only: no pause to bound.
                    let taken = seen.offer(&session, &msg, Duration::ZERO, &mut waits)
                        | sinks.offer(&msg, Duration::ZERO, &mut waits);
                    if taken {
                        drop(msg);
                        unrouted.fetch_sub(1, Ordering::AcqRel);
                        if let Some(w) = waits.finish() {
                            w.await;
                        }
                        return;
                    }
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    Self::drop_unrouted(&counters, &session, &msg);
                    break;
                }
                tokio::time::sleep_until(deadline.min(now + UNROUTED_RECHECK)).await;
            }
            unrouted.fetch_sub(1, Ordering::AcqRel);
        }))
    }
}

impl Dispatcher for RouterDispatch {
    #[inline]
    fn dispatch(&self, msg: &Message, max_stall: Duration) -> Option<RoomWait> {
        let mut waits = RoomWaits::default();
        let table = self.table.load();
        let taken = table.offer(&self.session, msg, max_stall, &mut waits)
            | self.sinks.offer(msg, max_stall, &mut waits);
        if taken {
            return waits.finish();
        }
        if msg.qos == QoS::AtMostOnce {
            Self::drop_unrouted(&self.counters, &self.session, msg);
            return None;
        }
        self.hold_unrouted(msg, Arc::clone(&table))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::route::MAX_CAPACITY;

    #[test]
    fn a_messages_receiver_is_bounded_as_a_route_is() {
        let sinks = Arc::new(SessionSinks::default());
        let s: Arc<str> = Arc::from("s");
        let capacity = |asked| sinks.add(&s, asked, Overflow::DropNewest).rx.capacity();
        assert_eq!(capacity(usize::MAX), Some(MAX_CAPACITY));
        assert_eq!(capacity(0), Some(1));
        assert_eq!(capacity(50), Some(50));
    }
}
