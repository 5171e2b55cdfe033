//! Session events: typed data, delivered in order to handlers and streams.
//!
//! The [`EventBus`] hands every event to two consumers, neither of which can slow a session:
//! - a dispatcher thread that calls the registered handlers one after another, outside any
//!   lock (a handler may call back into the manager, or register and drop handlers); a
//!   panicking handler is caught and counted; its queue is bounded ([`EVENT_QUEUE`]) and an
//!   event that does not fit is counted as dropped, never blocking the session;
//! - a broadcast channel behind [`EventStream`]s (bounded, a lagging stream skips and counts).
//!
//! Three ways to read events, all bounded and none able to slow a session:
//! - handlers ([`EventBus::subscribe`], `SessionManager::on_event`): closures on the
//!   dispatcher thread;
//! - an [`EventStream`] (`SessionManager::events`): `recv().await`, or a
//!   [`futures_core::Stream`](futures_util::Stream) (`StreamExt`, or actix's
//!   `ctx.add_stream`, which reads it as fast as the actor handles it);
//! - an actix [`Recipient<Event>`](actix::Recipient) ([`EventBus::forward_to`],
//!   `SessionManager::events_to`): a task on an arbiter reads an [`EventStream`] and
//!   hands each event to the actor's mailbox, waiting for room there; an actor more than
//!   [`EVENT_QUEUE`] events behind skips the oldest, counted
//!   ([`EventForwarder::skipped`]).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot};
use tokio_util::sync::ReusableBoxFuture;

use crate::session::state::SessionState;

/// Capacity of the handler queue and of each event stream.
pub const EVENT_QUEUE: usize = 4096;

/// The kinds of event, with the Go original's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// `session_connecting`: a connection attempt to one broker starts.
    SessionConnecting,
    /// `session_connected`: a broker accepted the connection.
    SessionConnected,
    /// `session_ready`: connected and every subscription restored.
    SessionReady,
    /// `session_disconnected`: the connection ended or an attempt failed.
    SessionDisconnected,
    /// `session_reconnecting`: waiting before the next attempt.
    SessionReconnecting,
    /// `session_added`: the session was registered.
    SessionAdded,
    /// `session_removed`: the session was removed.
    SessionRemoved,
    /// `session_state_changed`: every state transition.
    SessionStateChanged,
    /// `session_gave_up`: the session stopped trying for good (state `gave_up`).
    SessionGaveUp,
    /// `publish_failed`: a publish queued with `enqueue` failed after it was accepted.
    PublishFailed,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 10] = [
        EventKind::SessionConnecting,
        EventKind::SessionConnected,
        EventKind::SessionReady,
        EventKind::SessionDisconnected,
        EventKind::SessionReconnecting,
        EventKind::SessionAdded,
        EventKind::SessionRemoved,
        EventKind::SessionStateChanged,
        EventKind::SessionGaveUp,
        EventKind::PublishFailed,
    ];

    /// The event's name as in the Go original (`session_connected`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::SessionConnecting => "session_connecting",
            EventKind::SessionConnected => "session_connected",
            EventKind::SessionReady => "session_ready",
            EventKind::SessionDisconnected => "session_disconnected",
            EventKind::SessionReconnecting => "session_reconnecting",
            EventKind::SessionAdded => "session_added",
            EventKind::SessionRemoved => "session_removed",
            EventKind::SessionStateChanged => "session_state_changed",
            EventKind::SessionGaveUp => "session_gave_up",
            EventKind::PublishFailed => "publish_failed",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of a connection failure; also the `kind` label of error metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The broker could not be reached, or the connection broke (I/O).
    Io,
    /// No answer in time (connect timeout, read timeout, missing PINGRESP).
    Timeout,
    /// The broker refused the CONNECT for a reason other than credentials.
    Refused,
    /// The broker refused the credentials.
    Auth,
    /// TLS handshake or certificate failure.
    Tls,
    /// The broker broke the protocol, or sent a packet this client cannot take.
    Protocol,
    /// The session's [`CredentialsProvider`](crate::CredentialsProvider) failed or took
    /// longer than the connect timeout; no CONNECT was sent.
    Credentials,
}

impl ErrorKind {
    /// The kind as a label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Io => "io",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Refused => "refused",
            ErrorKind::Auth => "auth",
            ErrorKind::Tls => "tls",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Credentials => "credentials",
        }
    }

    /// Every kind, in [`index`](Self::index) order (the `kind` label values of
    /// `connection_errors_total`).
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::Io,
        ErrorKind::Timeout,
        ErrorKind::Refused,
        ErrorKind::Auth,
        ErrorKind::Tls,
        ErrorKind::Protocol,
        ErrorKind::Credentials,
    ];

    /// The kind's position in [`ALL`](Self::ALL) (an array index for per-kind counters).
    pub fn index(self) -> usize {
        match self {
            ErrorKind::Io => 0,
            ErrorKind::Timeout => 1,
            ErrorKind::Refused => 2,
            ErrorKind::Auth => 3,
            ErrorKind::Tls => 4,
            ErrorKind::Protocol => 5,
            ErrorKind::Credentials => 6,
        }
    }
}

/// Why a connection ended or an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConnectionFailure {
    /// The class of failure.
    pub kind: ErrorKind,
    /// The broker concerned.
    pub broker: String,
    /// A readable description.
    pub message: String,
    /// The MQTT 5 reason code, when the broker gave one (a CONNACK refusal, or a
    /// DISCONNECT from the broker). MQTT 3.1.1 CONNACK refusals carry their MQTT 5
    /// counterpart (`NotAuthorized` is `0x87`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<crate::reason::ReasonCode>,
}

impl std::fmt::Display for ConnectionFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.broker,
            self.kind.as_str(),
            self.message
        )
    }
}

/// What an event says, by kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventData {
    /// A connection attempt to `broker` starts (attempt counted from 1).
    SessionConnecting {
        /// The broker tried.
        broker: String,
        /// The attempt number; each attempt walks the broker list once.
        attempt: u32,
    },
    /// The broker accepted the connection.
    SessionConnected {
        /// The broker that answered.
        broker: String,
        /// The broker still had a session for this client id.
        session_present: bool,
    },
    /// Connected and every subscription restored.
    SessionReady {
        /// The number of active subscriptions.
        subscriptions: usize,
    },
    /// The connection ended (`error` is none after a requested disconnect).
    SessionDisconnected {
        /// Why, when it was not requested.
        error: Option<ConnectionFailure>,
    },
    /// Waiting `delay` before attempt `attempt`.
    SessionReconnecting {
        /// The next attempt's number.
        attempt: u32,
        /// How long until it starts.
        #[serde(with = "humantime_serde")]
        delay: Duration,
    },
    /// The session was registered.
    SessionAdded,
    /// The session was removed.
    SessionRemoved,
    /// The state changed.
    SessionStateChanged {
        /// Before.
        old: SessionState,
        /// After.
        new: SessionState,
    },
    /// The session stopped trying for good.
    SessionGaveUp {
        /// Why.
        reason: GiveUpReason,
    },
    /// A publish queued with `enqueue` failed after it was accepted.
    PublishFailed {
        /// Its topic.
        topic: String,
        /// Why (the error `publish` would have returned).
        error: String,
    },
}

/// Why a session gave up ([`EventData::SessionGaveUp`], state
/// [`SessionState::GaveUp`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum GiveUpReason {
    /// `reconnect.max_attempts` connection attempts failed in a row.
    AttemptsExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last_error: Option<ConnectionFailure>,
    },
    /// The connection was lost and `connect.auto_reconnect` is off.
    ConnectionLost {
        /// Why it was lost.
        error: Option<ConnectionFailure>,
    },
    /// The session's actor failed more often than the supervision policy allows.
    TooManyRestarts {
        /// Failures counted within `window`.
        restarts: u32,
        /// The policy's window.
        #[serde(with = "humantime_serde")]
        window: Duration,
        /// The last failure.
        last_failure: ActorFailure,
    },
}

/// Why a session's actor failed (stopped without being closed or retired); the
/// supervisor restarts it, or retires it past its policy's limit
/// ([`GiveUpReason::TooManyRestarts`]). Serialised as its [`as_str`](Self::as_str) name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ActorFailure {
    /// `driver_ended`: the driver task (the rumqttc event loop) ended without giving up:
    /// it panicked or was aborted.
    DriverEnded,
    /// `actor_stopped`: the session actor stopped on its own (what
    /// `session::InjectFailure`, feature `fault-injection`, does).
    ActorStopped,
}

impl ActorFailure {
    /// The failure's name (`driver_ended`, `actor_stopped`).
    pub fn as_str(self) -> &'static str {
        match self {
            ActorFailure::DriverEnded => "driver_ended",
            ActorFailure::ActorStopped => "actor_stopped",
        }
    }
}

impl std::fmt::Display for ActorFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ActorFailure::DriverEnded => "the session driver ended unexpectedly",
            ActorFailure::ActorStopped => "the session actor stopped unexpectedly",
        })
    }
}

impl std::fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let last = |e: &Option<ConnectionFailure>| {
            e.as_ref()
                .map(|e| format!(" (last error: {}: {})", e.kind.as_str(), e.message))
                .unwrap_or_default()
        };
        match self {
            GiveUpReason::AttemptsExhausted {
                attempts,
                last_error,
            } => write!(
                f,
                "{attempts} connection attempts failed{}",
                last(last_error)
            ),
            GiveUpReason::ConnectionLost { error } => write!(
                f,
                "connection lost and auto_reconnect is off{}",
                last(error)
            ),
            GiveUpReason::TooManyRestarts {
                restarts,
                window,
                last_failure,
            } => write!(
                f,
                "its actor failed {restarts} times within {window:?} (last: {last_failure})"
            ),
        }
    }
}

impl EventData {
    /// The kind of this event.
    pub fn kind(&self) -> EventKind {
        match self {
            EventData::SessionConnecting { .. } => EventKind::SessionConnecting,
            EventData::SessionConnected { .. } => EventKind::SessionConnected,
            EventData::SessionReady { .. } => EventKind::SessionReady,
            EventData::SessionDisconnected { .. } => EventKind::SessionDisconnected,
            EventData::SessionReconnecting { .. } => EventKind::SessionReconnecting,
            EventData::SessionAdded => EventKind::SessionAdded,
            EventData::SessionRemoved => EventKind::SessionRemoved,
            EventData::SessionStateChanged { .. } => EventKind::SessionStateChanged,
            EventData::SessionGaveUp { .. } => EventKind::SessionGaveUp,
            EventData::PublishFailed { .. } => EventKind::PublishFailed,
        }
    }
}

/// One event of one session.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// The session concerned.
    pub session: Arc<str>,
    /// When it happened.
    pub time: SystemTime,
    /// What happened.
    #[serde(flatten)]
    pub data: EventData,
}

/// An event is an actix message, so that an actor can take events through a
/// [`Recipient<Event>`](actix::Recipient) ([`EventBus::forward_to`]).
impl actix::Message for Event {
    type Result = ();
}

impl Event {
    /// A new event, stamped now.
    pub fn new(session: Arc<str>, data: EventData) -> Self {
        Event {
            session,
            time: SystemTime::now(),
            data,
        }
    }

    /// The kind of this event.
    pub fn kind(&self) -> EventKind {
        self.data.kind()
    }
}

type Handler = Arc<dyn Fn(&Event) + Send + Sync>;

#[derive(Default)]
struct Handlers {
    next_id: u64,
    list: Vec<(u64, Option<EventKind>, Handler)>,
}

struct BusInner {
    handlers: RwLock<Handlers>,
    queue: SyncSender<Event>,
    stream: broadcast::Sender<Event>,
    panics: AtomicU64,
    dropped: AtomicU64,
    /// Handlers registered: with none, events do not wake the dispatcher thread.
    handler_count: AtomicUsize,
}

/// Fans events out to handlers and streams; cheap to clone.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("handler_panics", &self.handler_panics())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl EventBus {
    /// A bus with its dispatcher thread; the thread ends when the last clone is dropped.
    pub fn new() -> Self {
        let (queue, rx) = sync_channel::<Event>(EVENT_QUEUE);
        let (stream, _) = broadcast::channel(EVENT_QUEUE);
        let inner = Arc::new(BusInner {
            handlers: RwLock::new(Handlers::default()),
            queue,
            stream,
            panics: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            handler_count: AtomicUsize::new(0),
        });
        let weak = Arc::downgrade(&inner);
        let spawned = std::thread::Builder::new()
            .name("mqtt-sessions-events".into())
            .spawn(move || {
                while let Ok(event) = rx.recv() {
                    let Some(inner) = weak.upgrade() else { break };
                    let handlers: Vec<Handler> = match inner.handlers.read() {
                        Ok(h) => h
                            .list
                            .iter()
                            .filter(|(_, k, _)| k.is_none_or(|k| k == event.kind()))
                            .map(|(_, _, h)| Arc::clone(h))
                            .collect(),
                        Err(_) => Vec::new(),
                    };
                    for h in handlers {
                        if catch_unwind(AssertUnwindSafe(|| h(&event))).is_err() {
                            inner.panics.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(session = %event.session, kind = %event.kind(), "event handler panicked");
                        }
                    }
                }
            });
        if let Err(err) = spawned {
            tracing::error!(error = %err, "cannot start the event dispatcher thread; event handlers will not run");
        }
        EventBus { inner }
    }

    /// Publishes an event; never blocks.
    pub fn emit(&self, event: Event) {
        tracing::debug!(session = %event.session, kind = %event.kind(), data = ?event.data, "event");
        // Events cost nothing past this point when nobody listens: no clone for an
        // empty broadcast, no wake-up of the dispatcher thread without handlers (a
        // handler registered later sees the events from then on either way).
        if self.inner.stream.receiver_count() > 0 {
            let _ = self.inner.stream.send(event.clone());
        }
        if self.inner.handler_count.load(Ordering::Acquire) == 0 {
            return;
        }
        match self.inner.queue.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(ev)) => {
                self.inner.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(session = %ev.session, kind = %ev.kind(), "event handler queue full, event dropped for handlers");
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Registers a handler for one kind (or all kinds with `None`).
    pub fn subscribe(&self, kind: Option<EventKind>, handler: Handler) -> EventGuard {
        let mut h = match self.inner.handlers.write() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        h.next_id += 1;
        let id = h.next_id;
        h.list.push((id, kind, handler));
        self.inner
            .handler_count
            .store(h.list.len(), Ordering::Release);
        EventGuard {
            bus: Arc::downgrade(&self.inner),
            id,
        }
    }

    /// A stream of every event from now on.
    pub fn stream(&self) -> EventStream {
        EventStream::new(self.inner.stream.subscribe())
    }

    /// Hands every event from now on to `recipient`, an actix actor's mailbox, from a task
    /// on `arbiter`; see [`EventForwarder`]. The task ends when the forwarder is dropped
    /// or stopped, when the actor is gone, or with the bus.
    ///
    /// Bounded and non-blocking: the task reads an [`EventStream`] (the bus's broadcast
    /// ring, [`EVENT_QUEUE`] events) and hands each event over with `try_send`; when the
    /// actor's mailbox is full it waits for room (`send`), never the session. An actor
    /// that falls more than [`EVENT_QUEUE`] events behind skips the oldest ones, counted
    /// by [`EventForwarder::skipped`].
    pub fn forward_to(
        &self,
        recipient: actix::Recipient<Event>,
        arbiter: &actix_rt::ArbiterHandle,
    ) -> EventForwarder {
        let counts = Arc::new(ForwardCounts::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let mut events = self.stream();
        let c = Arc::clone(&counts);
        let task = async move {
            let forward = async {
                while let Some(ev) = events.recv().await {
                    c.skipped.store(events.lagged(), Ordering::Relaxed);
                    let handed = match recipient.try_send(ev) {
                        Ok(()) => true,
                        Err(actix::dev::SendError::Full(ev)) => recipient.send(ev).await.is_ok(),
                        Err(actix::dev::SendError::Closed(_)) => false,
                    };
                    if !handed {
                        break; // the actor is gone
                    }
                    c.delivered.fetch_add(1, Ordering::Relaxed);
                }
            };
            // Only an explicit stop ends it: a sender dropped unsent is `forget`.
            let stop = async {
                if stopped.await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = forward => {}
                () = stop => {}
            }
            c.running.store(false, Ordering::Release);
        };
        counts.running.store(true, Ordering::Release);
        if !arbiter.spawn(task) {
            counts.running.store(false, Ordering::Release);
            tracing::error!("the arbiter is gone: events are not forwarded to the actor");
        }
        EventForwarder {
            counts,
            stop: Some(stop),
        }
    }

    /// Handler calls that panicked.
    pub fn handler_panics(&self) -> u64 {
        self.inner.panics.load(Ordering::Relaxed)
    }

    /// Events that did not fit in the handler queue.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

/// Keeps an event handler registered; dropping it (or calling
/// [`unsubscribe`](Self::unsubscribe)) removes the handler.
#[derive(Debug)]
#[must_use = "the handler is removed when the guard is dropped"]
pub struct EventGuard {
    bus: std::sync::Weak<BusInner>,
    id: u64,
}

impl EventGuard {
    /// Removes the handler now.
    pub fn unsubscribe(self) {}

    /// Keeps the handler for the manager's whole life.
    pub fn forget(mut self) {
        self.bus = std::sync::Weak::new();
    }
}

impl Drop for EventGuard {
    fn drop(&mut self) {
        if let Some(inner) = self.bus.upgrade() {
            let mut h = match inner.handlers.write() {
                Ok(h) => h,
                Err(poisoned) => poisoned.into_inner(),
            };
            h.list.retain(|(id, _, _)| *id != self.id);
            inner.handler_count.store(h.list.len(), Ordering::Release);
        }
    }
}

/// What one receive of an [`EventStream`] yields, with the receiver handed back.
type Received = (
    Result<Event, broadcast::error::RecvError>,
    broadcast::Receiver<Event>,
);

async fn receive(mut rx: broadcast::Receiver<Event>) -> Received {
    let result = rx.recv().await;
    (result, rx)
}

/// A stream of all events (bounded by [`EVENT_QUEUE`]; a reader that falls behind
/// skips the oldest events and [`lagged`](Self::lagged) counts them).
///
/// Read it with [`recv`](Self::recv), or as a [`futures_core::Stream`](futures_util::Stream)
/// of [`Event`]s (`StreamExt::next`, combinators, actix's `ctx.add_stream`); it ends once
/// the manager is gone.
///
/// ```no_run
/// use futures_util::StreamExt;
/// use mqtt_sessions::{EventKind, SessionManager};
///
/// # async fn f(manager: SessionManager) {
/// let mut ready = manager.events().filter(|ev| {
///     std::future::ready(ev.kind() == EventKind::SessionReady)
/// });
/// while let Some(ev) = ready.next().await {
///     println!("{} ready", ev.session);
/// }
/// # }
/// ```
pub struct EventStream {
    /// The pending receive; the receiver travels inside it and comes back with each event.
    next: ReusableBoxFuture<'static, Received>,
    lagged: u64,
    ended: bool,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("lagged", &self.lagged)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    fn new(rx: broadcast::Receiver<Event>) -> Self {
        EventStream {
            next: ReusableBoxFuture::new(receive(rx)),
            lagged: 0,
            ended: false,
        }
    }

    /// The next event; `None` once the manager is gone.
    pub async fn recv(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Events skipped because this stream fell behind.
    pub fn lagged(&self) -> u64 {
        self.lagged
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if self.ended {
            return Poll::Ready(None);
        }
        loop {
            let (result, rx) = std::task::ready!(self.next.poll(cx));
            match result {
                Ok(ev) => {
                    self.next.set(receive(rx));
                    return Poll::Ready(Some(ev));
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.lagged += n;
                    self.next.set(receive(rx));
                }
                Err(broadcast::error::RecvError::Closed) => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
            }
        }
    }
}

impl futures_util::Stream for EventStream {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_event(cx)
    }
}

#[derive(Debug, Default)]
struct ForwardCounts {
    delivered: AtomicU64,
    skipped: AtomicU64,
    running: std::sync::atomic::AtomicBool,
}

/// Events forwarded to an actix actor ([`EventBus::forward_to`],
/// `SessionManager::events_to`), with what it cost: events handed to the actor's
/// mailbox, events skipped because the actor fell more than [`EVENT_QUEUE`] events
/// behind. Dropping it (or [`stop`](Self::stop)) stops the forwarding;
/// [`forget`](Self::forget) keeps it for as long as the actor and the manager live.
#[derive(Debug)]
#[must_use = "the forwarding stops when the forwarder is dropped"]
pub struct EventForwarder {
    counts: Arc<ForwardCounts>,
    stop: Option<oneshot::Sender<()>>,
}

impl EventForwarder {
    /// Events handed to the actor's mailbox.
    pub fn delivered(&self) -> u64 {
        self.counts.delivered.load(Ordering::Relaxed)
    }

    /// Events the actor missed because it fell more than [`EVENT_QUEUE`] events behind.
    pub fn skipped(&self) -> u64 {
        self.counts.skipped.load(Ordering::Relaxed)
    }

    /// Whether events are still forwarded (false once the actor is gone, the manager is
    /// gone, or the arbiter of the forwarding task stopped).
    pub fn is_running(&self) -> bool {
        self.counts.running.load(Ordering::Acquire)
    }

    /// Stops the forwarding now.
    pub fn stop(self) {}

    /// Keeps forwarding for as long as the actor and the manager live (the counts are
    /// no longer readable).
    pub fn forget(mut self) {
        // Dropped without a word: the task takes that as "keep going".
        drop(self.stop.take());
    }
}

impl Drop for EventForwarder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorKind;

    #[test]
    fn error_kind_index_is_the_position_in_all() {
        for (i, k) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i, "{k:?}");
        }
    }
}
