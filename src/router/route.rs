//! Routes: what a consumer holds ([`Route`], [`Listener`]) and how each is configured
//! ([`RouteOptions`]) and counted ([`RouteStats`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use actix::Addr;
use serde::Serialize;

use super::{RemoveRoute, RouterActor};
use crate::message::{Message, QoS};
pub use crate::message::{RetainHandling, SubscribeOptions};
use crate::topic::TopicFilter;

/// Default capacity of a route's queue.
pub const DEFAULT_ROUTE_CAPACITY: usize = 100;

/// What a full route does with a QoS 0 message (QoS >= 1 messages are never dropped:
/// the session waits for room before acknowledging them, and the broker's in-flight
/// window stops the flow meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Overflow {
    /// Stop reading from the session's connection until the queue has room, so that the
    /// broker holds the messages (as a plain MQTT client that is slow to read would). The
    /// pause is bounded by the session's `performance.max_stall` (half the keep-alive by
    /// default), so the keep-alive never lapses; a consumer still stopped then makes the
    /// route drop QoS 0 messages, counted as `stall`, until it has room again. The default.
    #[default]
    Backpressure,
    /// Drop the message that does not fit.
    DropNewest,
    /// Drop the oldest queued message to make room.
    DropOldest,
}

/// A route's bounded queue: the sender the session offers into, the receiver a
/// [`Overflow::DropOldest`] route keeps to drop its oldest message, and the consumer's
/// receiver.
/// Largest route queue (and [`SessionHandle::messages_with`] receiver).
///
/// [`SessionHandle::messages_with`]: crate::SessionHandle::messages_with
pub(crate) const MAX_CAPACITY: usize = 1_000_000;

pub(crate) fn route_queue(
    capacity: usize,
    overflow: Overflow,
) -> (
    flume::Sender<Message>,
    Option<flume::Receiver<Message>>,
    flume::Receiver<Message>,
) {
    let (tx, rx) = flume::bounded(capacity);
    let oldest = (overflow == Overflow::DropOldest).then(|| rx.clone());
    (tx, oldest, rx)
}

/// How a route is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouteOptions {
    /// The route's name (metrics label, durable subscriptions). Derived from its kind and
    /// id when absent (`listen-3`).
    pub name: Option<String>,
    /// The QoS to subscribe with. Default 1 (at least once): with manual acknowledgement
    /// nothing is lost between the broker and the route.
    pub qos: QoS,
    /// Capacity of the route's queue. Default [`DEFAULT_ROUTE_CAPACITY`].
    pub capacity: usize,
    /// QoS 0 overflow policy. Default [`Overflow::Backpressure`].
    pub overflow: Overflow,
    /// MQTT 5 subscribe options (no local, retain as published, retain handling);
    /// ignored by MQTT 3.1.1 sessions. Default: the MQTT defaults.
    pub subscribe: SubscribeOptions,
}

impl Default for RouteOptions {
    fn default() -> Self {
        RouteOptions {
            name: None,
            qos: QoS::AtLeastOnce,
            capacity: DEFAULT_ROUTE_CAPACITY,
            overflow: Overflow::Backpressure,
            subscribe: SubscribeOptions::default(),
        }
    }
}

/// Which sessions a route listens to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RouteScope {
    /// Every session, including sessions added later.
    AllSessions,
    /// One session.
    Session(Arc<str>),
}

impl RouteScope {
    /// Does a message received by `session` concern this route?
    #[inline]
    pub fn covers(&self, session: &str) -> bool {
        match self {
            RouteScope::AllSessions => true,
            RouteScope::Session(s) => &**s == session,
        }
    }
}

/// Live counters of one route.
#[derive(Debug, Default)]
pub struct RouteStats {
    pub(crate) delivered: AtomicU64,
    pub(crate) dropped_full: AtomicU64,
    pub(crate) dropped_closed: AtomicU64,
    pub(crate) dropped_stall: AtomicU64,
    /// A `Backpressure` route whose consumer outlasted a session's pause: it drops QoS 0
    /// overflow until its queue has room again.
    pub(crate) overrun: std::sync::atomic::AtomicBool,
    /// QoS >= 1 messages waiting for room: later messages queue behind them, so that the
    /// route sees the session's messages in the order they arrived.
    pub(crate) waiting: Arc<std::sync::atomic::AtomicUsize>,
    pub(crate) panics: AtomicU64,
    pub(crate) last_message_ms: AtomicU64,
}

impl RouteStats {
    /// Counts one delivery; `received_at` (the message's receive time, read once per
    /// message by the driver) becomes the route's last-message time, so the dispatch path
    /// reads no clock per route.
    pub(crate) fn record_delivery(&self, received_at: SystemTime) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.last_message_ms
            .store(crate::store::unix_ms(received_at), Ordering::Relaxed);
    }

    /// A snapshot as plain numbers.
    pub fn snapshot(&self) -> RouteCounts {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let last = get(&self.last_message_ms);
        RouteCounts {
            delivered: get(&self.delivered),
            dropped_full: get(&self.dropped_full),
            dropped_closed: get(&self.dropped_closed),
            dropped_stall: get(&self.dropped_stall),
            handler_panics: get(&self.panics),
            last_message_timestamp_seconds: (last > 0).then(|| last as f64 / 1000.0),
        }
    }
}

/// A route's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteCounts {
    /// Messages accepted into the route's queue.
    pub delivered: u64,
    /// QoS 0 messages dropped because the route's queue was full.
    pub dropped_full: u64,
    /// Messages that arrived after the route's consumer had gone.
    pub dropped_closed: u64,
    /// QoS 0 messages a `Backpressure` route dropped after the session had paused for
    /// `max_stall` without the consumer making room.
    pub dropped_stall: u64,
    /// Calls of the route's handler that panicked.
    pub handler_panics: u64,
    /// Unix time (seconds) of the last delivery.
    pub last_message_timestamp_seconds: Option<f64>,
}

/// A registered route. Dropping it (or calling [`stop`](Self::stop)) removes it; when the
/// last route needing a subscription goes, the session unsubscribes.
#[derive(Debug)]
#[must_use = "a route stops when dropped; keep it, or call `detach` to keep it for the manager's life"]
pub struct Route {
    pub(crate) id: u64,
    pub(crate) name: Arc<str>,
    pub(crate) filter: TopicFilter,
    pub(crate) qos: QoS,
    pub(crate) stats: Arc<RouteStats>,
    /// Who removes the route when its handle goes (`None` once stopped or detached).
    pub(crate) owner: Option<RouteOwner>,
}

/// Who holds a route in its table: the router (routes by filter), or one session's
/// receivers ([`SessionHandle::messages`](crate::SessionHandle::messages)).
#[derive(Debug)]
pub(crate) enum RouteOwner {
    /// The manager's router.
    Router(Addr<RouterActor>),
    /// A session's receivers (a weak reference: the session may be gone first).
    Session(std::sync::Weak<dyn ReceiverTable>),
}

/// The receivers of one session, which remove one by id (declared here, implemented by
/// `dispatch::SessionSinks`, so that this file needs nothing of the dispatch).
pub(crate) trait ReceiverTable: Send + Sync + std::fmt::Debug {
    /// Removes receiver `id`.
    fn remove_receiver(&self, id: u64);
}

impl RouteOwner {
    /// Removes route `id` from its owner's table; `forget` also forgets a durable route.
    fn remove(self, id: u64, forget: bool) {
        match self {
            // A control message sent once per route: `do_send` is fine here (it cannot
            // await in `drop`, and the count of routes bounds it).
            RouteOwner::Router(r) => r.do_send(RemoveRoute { id, forget }),
            RouteOwner::Session(sinks) => {
                if let Some(sinks) = sinks.upgrade() {
                    sinks.remove_receiver(id);
                }
            }
        }
    }
}

impl Route {
    /// The route's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The route's id (unique within its manager).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The topic filter.
    pub fn filter(&self) -> &TopicFilter {
        &self.filter
    }

    /// The QoS the route subscribed with.
    pub fn qos(&self) -> QoS {
        self.qos
    }

    /// Delivered / dropped counts and the last delivery time.
    pub fn stats(&self) -> RouteCounts {
        self.stats.snapshot()
    }

    /// Removes the route now. For a durable route (a named route of a persistent session
    /// with a store) this also forgets it: its subscription goes and nothing more is held
    /// for it. Dropping the handle instead keeps a durable route holding its messages
    /// until a route of the same name registers again (e.g. after a restart).
    pub fn stop(mut self) {
        if let Some(owner) = self.owner.take() {
            owner.remove(self.id, true);
        }
    }

    /// Keeps the route running until the manager shuts down, without a handle.
    pub fn detach(mut self) {
        self.owner = None;
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take() {
            owner.remove(self.id, false);
        }
    }
}

/// A route whose messages arrive in a bounded channel ([`SessionManager::listen`](crate::SessionManager::listen)),
/// or a session's receiver of every message it gets
/// ([`SessionHandle::messages`](crate::SessionHandle::messages)).
///
/// A QoS >= 1 message is acknowledged to the broker once the application has dropped it
/// (see [`Message`]'s acknowledgement rules). When the listener is dropped, the messages
/// still queued and those waiting for room in its full queue are left unacknowledged
/// ([`Message::leave_unacknowledged`]: the broker of a persistent session delivers them
/// again at its next connection; other routes still acknowledge later messages). A
/// message the session puts into the queue at the very moment the listener is dropped,
/// after it emptied the queue, can be acknowledged with no one having handled it (a
/// narrow race: `flume` has no way to close a queue from the receiving side; an
/// [`Overflow::DropOldest`] route, whose queue stays open until the route is removed,
/// leaves what entered it meanwhile unacknowledged when it goes). Without
/// that race: [`close`](Self::close), then read until `None`, calling
/// [`Message::leave_unacknowledged`] on what is not handled.
#[derive(Debug)]
pub struct Listener {
    pub(crate) rx: flume::Receiver<Message>,
    pub(crate) route: Route,
}

impl Listener {
    /// The next message; `None` once the route was removed (e.g. its session was removed).
    pub async fn recv(&self) -> Option<Message> {
        self.rx.recv_async().await.ok()
    }

    /// Waits for at least one message, then moves up to `limit` queued messages into
    /// `out` (one wake-up for a burst, not one per message). Returns how many it moved; 0
    /// once the route was removed (or when `limit` is 0).
    ///
    /// ```no_run
    /// # async fn f(listener: mqtt_sessions::Listener) {
    /// let mut batch = Vec::with_capacity(64);
    /// while listener.recv_many(&mut batch, 64).await > 0 {
    ///     for m in batch.drain(..) {
    ///         // handle `m`; dropping it acknowledges it
    ///         drop(m);
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn recv_many(&self, out: &mut Vec<Message>, limit: usize) -> usize {
        if limit == 0 {
            return 0;
        }
        let Ok(first) = self.rx.recv_async().await else {
            return 0;
        };
        let before = out.len();
        out.push(first);
        out.extend(self.rx.try_iter().take(limit - 1));
        out.len() - before
    }

    /// A message if one is queued.
    pub fn try_recv(&self) -> Option<Message> {
        self.rx.try_recv().ok()
    }

    /// Blocking receive, for a consumer on its own thread.
    pub fn recv_blocking(&self) -> Option<Message> {
        self.rx.recv().ok()
    }

    /// Blocking receive with a deadline; `None` on timeout or when the route ended.
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Option<Message> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Removes the route but keeps its queue: [`recv`](Self::recv) returns what was
    /// queued already, then `None` (once the sessions have let go of the route). For a
    /// consumer that stops taking new messages and finishes the ones it was given; like
    /// dropping the [`Route`], a durable route keeps holding its messages for the next
    /// registration.
    pub fn close(&mut self) {
        if let Some(owner) = self.route.owner.take() {
            owner.remove(self.route.id, false);
        }
    }

    /// The route behind this listener.
    pub fn route(&self) -> &Route {
        &self.route
    }

    /// The messages as a `Stream` (the route stops when the stream is dropped).
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Message> {
        futures_util::stream::unfold(self, |listener| async move {
            let m = listener.rx.recv_async().await.ok()?;
            Some((m, listener))
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // What is still queued was never handed to the application: leave it
        // unacknowledged, so that the broker delivers it again to a persistent session.
        // (Messages waiting for room are left unacknowledged by their wait, once the
        // receiver is gone. One the session's thread puts in the queue between this loop
        // and the receiver's drop stays in the channel and counts as handled when the
        // channel goes: closing that gap needs a queue item that leaves its message
        // unacknowledged when dropped unreceived.)
        for m in self.rx.try_iter() {
            m.leave_unacknowledged();
        }
    }
}
