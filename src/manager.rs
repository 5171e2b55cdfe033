//! [`SessionManager`]: the friendly, cloneable façade over the supervisor actor (crate-private).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::error::Error;
use crate::event::{Event, EventBus, EventForwarder, EventGuard, EventKind, EventStream};
use crate::message::{Message, Publish, QoS};
use crate::metrics::{
    ManagerMetrics, Metrics, Readiness, RouteStatsSource, SessionInfo, DEFAULT_PREFIX,
};
use crate::options::SessionOptions;
use crate::request::{self, RequestRegistry};
use crate::router::builder::RouteBuilder;
use crate::router::dispatch::RouteTable;
use crate::router::route::{Listener, Route};
use crate::router::RouterActor;
use crate::session::handle::SessionHandle;
use crate::session::state::SessionState;
use crate::store::{Store, StoreWorker};
use crate::supervisor::{AddSession, Registry, RemoveSession, Shutdown, Supervisor};

/// Default bound of connection attempts in flight at once.
pub const DEFAULT_MAX_CONCURRENT_CONNECTS: usize = 64;

/// Builds a [`SessionManager`].
#[must_use]
pub struct SessionManagerBuilder {
    max_concurrent_connects: usize,
    store_path: Option<std::path::PathBuf>,
    store_flush_interval: std::time::Duration,
    metrics_registry: Option<prometheus::Registry>,
    metrics_prefix: String,
    route_stats: Option<Arc<dyn RouteStatsSource>>,
    workers: usize,
    supervision: crate::supervisor::SupervisionOptions,
    #[cfg(feature = "fault-injection")]
    flush_delay: Option<std::time::Duration>,
    per_session: crate::metrics::PerSessionMetrics,
}

impl Default for SessionManagerBuilder {
    fn default() -> Self {
        SessionManagerBuilder {
            workers: crate::workers::default_workers(),
            supervision: crate::supervisor::SupervisionOptions::default(),
            #[cfg(feature = "fault-injection")]
            flush_delay: None,
            max_concurrent_connects: DEFAULT_MAX_CONCURRENT_CONNECTS,
            store_path: None,
            store_flush_interval: std::time::Duration::ZERO,
            metrics_registry: None,
            metrics_prefix: DEFAULT_PREFIX.to_string(),
            route_stats: None,
            per_session: crate::metrics::PerSessionMetrics::default(),
        }
    }
}

impl std::fmt::Debug for SessionManagerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManagerBuilder")
            .field("metrics_prefix", &self.metrics_prefix)
            .field("own_registry", &self.metrics_registry.is_some())
            .finish_non_exhaustive()
    }
}

impl SessionManagerBuilder {
    /// Persist sessions in a sled store in this directory (created with mode 0700):
    /// outboxes of QoS >= 1 publishes, durable subscriptions, session metadata. Without
    /// it the manager keeps everything in memory. One process at a time may open a store.
    pub fn store(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.store_path = Some(path.into());
        self
    }

    /// With a store: under sustained load, flush at most once per `interval` (default
    /// zero: every group of writes is flushed as soon as it is done; at most
    /// [`MAX_FLUSH_INTERVAL`](crate::store::MAX_FLUSH_INTERVAL), a longer one is
    /// brought down to it). A flush that would come sooner after the previous one waits
    /// for the rest of the interval, so that more writes share it. Worth it for a steady
    /// stream of durable publishes (the daemon's forwarding uses 5 ms: its CPU per message
    /// forwarded with a store at 20 ms of round trip went from about 25 to 14 µs); it costs latency to a caller that
    /// waits for each durable publish before the next.
    pub fn store_flush_interval(mut self, interval: std::time::Duration) -> Self {
        self.store_flush_interval = interval;
        self
    }

    /// How many worker threads (actix arbiters) run the sessions (default: one per core,
    /// `std::thread::available_parallelism`; 1 to 1024). Each session lives on one of
    /// them, the least loaded when it is added; the thread that builds the manager runs
    /// no session I/O.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.clamp(1, crate::workers::MAX_WORKERS);
        self
    }

    /// Most threads the process's shared pool of `handle` callbacks runs at once
    /// (default: twice the cores, at least 4). The pool is one per process, started by
    /// the first `handle` route: a size given after that is ignored (with a warning),
    /// and the first manager's size holds for every later one.
    pub fn callback_threads(self, n: usize) -> Self {
        crate::router::consume::set_callback_threads(n);
        self
    }

    /// How a session whose actor fails is restarted: backoff with jitter, reset after a
    /// healthy run, and a limit of restarts within a window past which it gives up
    /// (state `gave_up`, event `session_gave_up`). See [`SupervisionOptions`](crate::SupervisionOptions).
    pub fn supervision(mut self, options: crate::supervisor::SupervisionOptions) -> Self {
        self.supervision = options;
        self
    }

    /// Makes every flush of the store take `delay` longer, as a slow disk would (feature
    /// `fault-injection`, for tests; never in production builds).
    #[cfg(feature = "fault-injection")]
    pub fn inject_flush_delay(mut self, delay: std::time::Duration) -> Self {
        self.flush_delay = Some(delay);
        self
    }

    /// How many connection attempts may be in flight at once across all sessions
    /// (default 64): thousands of sessions starting together must not overrun a broker's
    /// accept queue (mosquitto's listen backlog is 100).
    pub fn max_concurrent_connects(mut self, n: usize) -> Self {
        self.max_concurrent_connects = n.max(1);
        self
    }

    /// Registers the manager's metrics in `registry` (for example the application's own)
    /// instead of a fresh registry. The global default registry is never used unless
    /// passed here explicitly.
    pub fn registry(mut self, registry: prometheus::Registry) -> Self {
        self.metrics_registry = Some(registry);
        self
    }

    /// The prefix of every metric name (default [`DEFAULT_PREFIX`], `mqtt_sessions`); two
    /// managers sharing one registry need different prefixes.
    pub fn metrics_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.metrics_prefix = prefix.into();
        self
    }

    /// Which per-session series the metrics export (default
    /// [`Full`](crate::metrics::PerSessionMetrics::Full)); see
    /// [`PerSessionMetrics`](crate::metrics::PerSessionMetrics).
    pub fn metrics_per_session(mut self, mode: crate::metrics::PerSessionMetrics) -> Self {
        self.per_session = mode;
        self
    }

    /// Where per-route metrics come from (default: the manager's own routes, read from
    /// its route table); see [`RouteStatsSource`].
    pub fn route_stats_source(mut self, source: Arc<dyn RouteStatsSource>) -> Self {
        self.route_stats = Some(source);
        self
    }

    /// Starts the manager's actors on the current actix system.
    ///
    /// Errors: [`Error::NoActixSystem`], [`Error::MetricsRegistration`].
    pub fn build(self) -> Result<SessionManager, Error> {
        if actix_rt::System::try_current().is_none() {
            return Err(Error::NoActixSystem);
        }
        let store = self.store_path.as_deref().map(Store::open).transpose()?;
        #[cfg(feature = "fault-injection")]
        if let (Some(s), Some(d)) = (&store, self.flush_delay) {
            s.inject_flush_delay(d);
        }
        let interval = self.store_flush_interval;
        let store = store
            .map(|s| StoreWorker::start(s, interval))
            .transpose()
            .map_err(Error::Spawn)?;
        let registry: Registry = Arc::new(crate::supervisor::SessionRegistry::default());
        let bus = EventBus::new();
        let routes = Arc::new(ArcSwap::from_pointee(RouteTable::default()));
        let route_stats: Arc<dyn RouteStatsSource> = match self.route_stats {
            Some(s) => s,
            None => Arc::new(TableStats(Arc::clone(&routes))),
        };
        let metrics = Metrics::new(
            self.metrics_registry.unwrap_or_default(),
            &self.metrics_prefix,
            Arc::clone(&registry),
            bus.clone(),
            route_stats,
            self.per_session,
        )?;
        let workers = Arc::new(crate::workers::Workers::start(self.workers));
        let router = RouterActor::new(Arc::clone(&routes), store.clone()).start();
        let sup = Supervisor::new(
            Arc::clone(&registry),
            bus.clone(),
            router.clone(),
            routes,
            crate::supervisor::SupervisorSettings {
                max_concurrent_connects: self.max_concurrent_connects,
                workers: Arc::clone(&workers),
                supervision: self.supervision,
                store: store.clone(),
            },
        )
        .start();
        let running = Arc::new(AtomicBool::new(true));
        sample_rates(Arc::downgrade(&registry), Arc::clone(&running));
        Ok(SessionManager {
            sup,
            router,
            registry,
            bus,
            metrics,
            running,
            requests: Arc::default(),
            workers,
        })
    }
}

/// Samples every session's message and byte rates once a second, from its counters
/// (atomics): one timer for the whole manager, so an idle session costs its worker no
/// wake-up. Ends when the manager shuts down or its registry is gone.
fn sample_rates(
    registry: std::sync::Weak<crate::supervisor::SessionRegistry>,
    running: Arc<AtomicBool>,
) {
    actix_rt::spawn(async move {
        let mut every = tokio::time::interval(crate::metrics::rates::SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(registry) = registry.upgrade() else {
                return;
            };
            if !running.load(Ordering::Relaxed) {
                return;
            }
            let counters: Vec<_> = registry
                .load()
                .values()
                .map(|h| Arc::clone(&h.counters))
                .collect();
            drop(registry);
            let now = Instant::now();
            for c in counters {
                c.sample_rates(now);
            }
        }
    });
}

/// Many MQTT sessions under one supervisor. Cheap to clone, `Send + Sync`.
///
/// Must be created inside a running actix system (`#[actix::main]`, `#[actix_web::main]`,
/// `actix_rt::System::new().block_on(..)`); the returned handle may then be used from
/// any thread.
///
/// ```no_run
/// use std::time::Duration;
/// use mqtt_sessions::{Publish, QoS, SessionManager, SessionOptions};
///
/// #[actix::main]
/// async fn main() -> Result<(), mqtt_sessions::Error> {
///     let manager = SessionManager::new()?;
///     manager.add_session(SessionOptions::new("plant-1", "mqtt://127.0.0.1:1883")).await?;
///     manager.wait_for_session("plant-1", Duration::from_secs(10)).await?;
///     let status = Publish::new("plant/1/status", "online").qos(QoS::AtLeastOnce);
///     manager.publish("plant-1", status).await?;
///     manager.shutdown().await;
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct SessionManager {
    sup: Addr<Supervisor>,
    router: Addr<RouterActor>,
    registry: Registry,
    bus: EventBus,
    metrics: Metrics,
    running: Arc<AtomicBool>,
    requests: Arc<RequestRegistry>,
    workers: Arc<crate::workers::Workers>,
}

impl std::fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager")
            .field("sessions", &self.registry.load().len())
            .finish_non_exhaustive()
    }
}

impl SessionManager {
    /// A manager with default settings.
    pub fn new() -> Result<Self, Error> {
        Self::builder().build()
    }

    /// A builder for a manager.
    pub fn builder() -> SessionManagerBuilder {
        SessionManagerBuilder::default()
    }

    /// Registers a session and starts connecting it in the background; returns without
    /// waiting for the network. A failing first connect is retried with backoff.
    ///
    /// Errors: invalid options, [`Error::DuplicateSession`], [`Error::DuplicateClientId`],
    /// [`Error::Shutdown`].
    pub async fn add_session(&self, opts: SessionOptions) -> Result<SessionHandle, Error> {
        self.sup.send(AddSession(opts)).await?
    }

    /// Disconnects the session gracefully (DISCONNECT: no will message) and forgets it.
    pub async fn remove_session(&self, name: &str) -> Result<(), Error> {
        self.sup
            .send(RemoveSession {
                name: name.to_string(),
                keep_state: false,
            })
            .await?
    }

    /// Like [`remove_session`](Self::remove_session), but keeps the session's stored
    /// state (outbox, subscriptions, held messages) for a later session of the same name.
    pub async fn remove_session_keep_state(&self, name: &str) -> Result<(), Error> {
        self.sup
            .send(RemoveSession {
                name: name.to_string(),
                keep_state: true,
            })
            .await?
    }

    /// Names of all sessions, sorted.
    pub fn list_sessions(&self) -> Vec<String> {
        self.registry.load().keys().cloned().collect()
    }

    /// A handle on one session.
    pub fn session(&self, name: &str) -> Result<SessionHandle, Error> {
        self.registry
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownSession(name.to_string()))
    }

    /// The state of every session.
    pub fn status(&self) -> BTreeMap<String, SessionState> {
        self.registry
            .load()
            .iter()
            .map(|(n, h)| (n.clone(), h.state()))
            .collect()
    }

    /// Waits until the session is ready: connected and its subscriptions restored.
    pub async fn wait_for_session(&self, name: &str, timeout: Duration) -> Result<(), Error> {
        self.session(name)?.wait_ready(timeout).await
    }

    /// Waits until every current session is ready; the error names those that are not.
    pub async fn wait_for_all_sessions(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let handles: Vec<SessionHandle> = self.registry.load().values().cloned().collect();
        // One session at a time: those that became ready meanwhile cost nothing, and only
        // the one waited on can wake this task (thousands of connecting sessions would
        // otherwise each wake the caller's thread).
        let mut not_ready = Vec::new();
        for h in &handles {
            if h.is_ready() {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || h.wait_ready(left).await.is_err() {
                not_ready.push(h.name().to_string());
            }
        }
        if not_ready.is_empty() {
            Ok(())
        } else {
            Err(Error::WaitTimeout { timeout, not_ready })
        }
    }

    /// Publishes a [`Publish`] (retain, QoS, ...) through one session and waits for the
    /// broker's acknowledgement; see [`SessionHandle::publish`].
    pub async fn publish(&self, session: &str, publish: Publish) -> Result<(), Error> {
        self.session(session)?.publish(publish).await
    }

    /// Queues a [`Publish`] through one session and returns once it is accepted (durable
    /// with a store); see [`SessionHandle::enqueue`].
    pub async fn enqueue(&self, session: &str, publish: Publish) -> Result<(), Error> {
        self.session(session)?.enqueue(publish).await
    }

    /// Publishes `publish` through every session at once and waits for each one's
    /// acknowledgement (as [`SessionHandle::publish`]); one result per session.
    pub async fn publish_to_all(&self, publish: Publish) -> BTreeMap<String, Result<(), Error>> {
        let handles: Vec<SessionHandle> = self.registry.load().values().cloned().collect();
        let sends = handles.iter().map(|h| h.publish(publish.clone()));
        let results = futures_util::future::join_all(sends).await;
        handles
            .iter()
            .map(|h| h.name().to_string())
            .zip(results)
            .collect()
    }

    /// A builder for a route on `filter` with options (session, name, QoS, capacity,
    /// overflow policy) and a consumer of your choice.
    pub fn route(&self, filter: &str) -> RouteBuilder {
        RouteBuilder::new(self.router.clone(), filter)
    }

    /// Calls `f` for every message matching `filter` on every session (including sessions
    /// added later), on the shared pool of callback threads (one route on one thread at a
    /// time, in order). Subscribes at QoS 1.
    pub async fn handle<F>(&self, filter: &str, f: F) -> Result<Route, Error>
    where
        F: Fn(&Message) + Send + 'static,
    {
        self.route(filter).handle(f).await
    }

    /// Like [`handle`](Self::handle), for one session.
    pub async fn handle_to<F>(&self, session: &str, filter: &str, f: F) -> Result<Route, Error>
    where
        F: Fn(&Message) + Send + 'static,
    {
        self.route(filter).session(session).handle(f).await
    }

    /// Calls `f` for every message matching `filter` on every session, in place: on the
    /// receiving session's worker, with no queue and no thread crossing. For callbacks
    /// that take microseconds; see [`RouteBuilder::handle_inline`]. Subscribes at QoS 1.
    pub async fn handle_inline<F>(&self, filter: &str, f: F) -> Result<Route, Error>
    where
        F: Fn(&Message) + Send + Sync + 'static,
    {
        self.route(filter).handle_inline(f).await
    }

    /// Awaits `f(message)` for every message matching `filter` on every session.
    pub async fn handle_async<F, Fut>(&self, filter: &str, f: F) -> Result<Route, Error>
    where
        F: Fn(Message) -> Fut + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        self.route(filter).handle_async(f).await
    }

    /// Like [`handle_async`](Self::handle_async), for one session.
    pub async fn handle_async_to<F, Fut>(
        &self,
        session: &str,
        filter: &str,
        f: F,
    ) -> Result<Route, Error>
    where
        F: Fn(Message) -> Fut + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        self.route(filter).session(session).handle_async(f).await
    }

    /// A bounded channel of the messages matching `filter` on every session.
    pub async fn listen(&self, filter: &str) -> Result<Listener, Error> {
        self.route(filter).listen().await
    }

    /// Like [`listen`](Self::listen), for one session.
    pub async fn listen_to(&self, session: &str, filter: &str) -> Result<Listener, Error> {
        self.route(filter).session(session).listen().await
    }

    /// Delivers the messages matching `filter` on every session to an actix actor.
    pub async fn route_to(
        &self,
        filter: &str,
        recipient: actix::Recipient<Message>,
    ) -> Result<Route, Error> {
        self.route(filter).to_actor(recipient).await
    }

    /// Like [`route_to`](Self::route_to), for one session.
    pub async fn route_to_session(
        &self,
        session: &str,
        filter: &str,
        recipient: actix::Recipient<Message>,
    ) -> Result<Route, Error> {
        self.route(filter)
            .session(session)
            .to_actor(recipient)
            .await
    }

    /// Calls `handler` for every event of `kind`, on the manager's event thread, in order,
    /// outside any lock (it may call back into the manager). A panic is caught and counted.
    /// The handler stays registered while the returned guard lives.
    pub fn on_event(
        &self,
        kind: EventKind,
        handler: impl Fn(&Event) + Send + Sync + 'static,
    ) -> EventGuard {
        self.bus.subscribe(Some(kind), Arc::new(handler))
    }

    /// Like [`on_event`](Self::on_event), for every kind.
    pub fn on_any_event(&self, handler: impl Fn(&Event) + Send + Sync + 'static) -> EventGuard {
        self.bus.subscribe(None, Arc::new(handler))
    }

    /// A stream of every event from now on: [`EventStream::recv`], or a
    /// `futures::Stream` (an actor can read it with `ctx.add_stream`).
    pub fn events(&self) -> EventStream {
        self.bus.stream()
    }

    /// Hands every event from now on to an actix actor, as [`Event`] messages in order,
    /// from a task on the caller's arbiter, for as long as the returned forwarder lives.
    /// Bounded and non-blocking (see [`EventBus::forward_to`]): a slow actor never slows
    /// a session; one more than [`EVENT_QUEUE`](crate::event::EVENT_QUEUE) events behind
    /// skips the oldest, counted by [`EventForwarder::skipped`].
    ///
    /// Errors: [`Error::NoActixSystem`] when called outside an actix arbiter.
    pub fn events_to(&self, recipient: actix::Recipient<Event>) -> Result<EventForwarder, Error> {
        let arbiter = actix_rt::Arbiter::try_current().ok_or(Error::NoActixSystem)?;
        Ok(self.bus.forward_to(recipient, &arbiter))
    }

    /// Event handler calls that panicked so far.
    pub fn event_handler_panics(&self) -> u64 {
        self.bus.handler_panics()
    }

    /// Disconnects every session (DISCONNECT after a short flush of queued publishes) and
    /// refuses new ones.
    pub async fn shutdown(&self) {
        self.running.store(false, Ordering::Relaxed);
        let _ = self.sup.send(Shutdown).await;
    }

    /// True until [`shutdown`](Self::shutdown) is called (and while the supervisor lives).
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Relaxed) && self.sup.connected()
    }

    /// The prometheus registry holding the manager's metrics (a cheap handle on the same
    /// registry): gather it, or register the application's own metrics in it.
    pub fn registry(&self) -> prometheus::Registry {
        self.metrics.registry().clone()
    }

    /// Every metric of the manager's registry in the Prometheus text format (version
    /// 0.0.4), as `GET /metrics` serves it.
    pub fn metrics_text(&self) -> String {
        self.metrics.encode_text()
    }

    /// The manager's figures as plain numbers, with message and byte rates.
    pub fn metrics(&self) -> ManagerMetrics {
        ManagerMetrics::collect(self.metrics.sources())
    }

    /// A report of every session (state, broker, counters, rates, last error), sorted by
    /// name, as `GET /sessions` serves it.
    pub fn session_infos(&self) -> Vec<SessionInfo> {
        self.registry.load().values().map(SessionInfo::of).collect()
    }

    /// Whether the manager runs and every session is ready, as `GET /readyz` reports it.
    pub fn readiness(&self) -> Readiness {
        Readiness::collect(self.metrics.sources(), self.is_running())
    }

    /// Readiness counting only the sessions for which `required` is true (the others are
    /// neither waited for nor listed); [`readiness`](Self::readiness) requires them all.
    pub fn readiness_of(&self, required: impl Fn(&str) -> bool) -> Readiness {
        Readiness::collect_of(self.metrics.sources(), self.is_running(), required)
    }

    /// Does every worker thread answer a liveness ping within `timeout`? (A session's
    /// actor that blocks its thread makes this false; the daemon's systemd watchdog
    /// stops on it.)
    pub async fn workers_alive(&self, timeout: Duration) -> bool {
        self.workers.ping_all(timeout).await
    }

    /// What the metrics read (for the HTTP layer's own figures).
    #[cfg(feature = "http")]
    pub(crate) fn metrics_sources(&self) -> &crate::metrics::Sources {
        self.metrics.sources()
    }

    // ---- MQTT 5 request/response (`request.rs`) ----

    /// Sends a request and waits for its response (MQTT 5 request/response).
    ///
    /// Publishes `payload` on `topic` at QoS 1 through `session`, with this session's
    /// response topic and fresh correlation data, and returns the first message that
    /// comes back on the response topic with that correlation data. Many requests may run
    /// at once. The responder answers with [`respond`](Self::respond) (or any MQTT 5
    /// client that copies the correlation data to a publish on the response topic).
    ///
    /// Errors: [`Error::Mqtt5Required`] on an MQTT 3.1.1 session,
    /// [`Error::RequestTimeout`] when no response came within `timeout` (the time to
    /// publish included), and the errors of [`publish`](Self::publish).
    pub async fn request(
        &self,
        session: &str,
        topic: &str,
        payload: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Message, Error> {
        let publish = Publish::new(topic, payload).qos(QoS::AtLeastOnce);
        self.request_with(session, publish, timeout).await
    }

    /// Like [`request`](Self::request), with a [`Publish`] of your own (QoS, user
    /// properties, content type, ...); its response topic and correlation data are
    /// replaced.
    pub async fn request_with(
        &self,
        session: &str,
        publish: Publish,
        timeout: Duration,
    ) -> Result<Message, Error> {
        let h = self.session(session)?;
        request::request(&self.requests, &self.router, h, publish, timeout).await
    }

    /// Answers a request received by a route: publishes `payload` at QoS 1 through
    /// `session` on the request's response topic, with its correlation data.
    ///
    /// Errors: [`Error::NotARequest`] when `request` has no response topic,
    /// [`Error::Mqtt5Required`] when `session` is an MQTT 3.1.1 session (it could not
    /// carry the correlation data), and the errors of [`publish`](Self::publish).
    pub async fn respond(
        &self,
        session: &str,
        request: &Message,
        payload: impl Into<Bytes>,
    ) -> Result<(), Error> {
        let h = self.session(session)?;
        request::respond(h, request, payload.into()).await
    }

    /// Replaces the source of per-route metrics (see [`RouteStatsSource`]).
    pub fn set_route_stats_source(&self, source: Arc<dyn RouteStatsSource>) {
        self.metrics.set_route_stats_source(source);
    }
}

/// Route figures for the metrics, read from the router's current table snapshot.
struct TableStats(Arc<ArcSwap<RouteTable>>);

impl RouteStatsSource for TableStats {
    fn route_stats(&self) -> Vec<crate::metrics::RouteStatsSnapshot> {
        let table = self.0.load();
        table
            .trie
            .iter()
            .map(|(_, route)| {
                let c = route.stats.snapshot();
                crate::metrics::RouteStatsSnapshot {
                    name: route.name.to_string(),
                    delivered: c.delivered,
                    dropped_full: c.dropped_full,
                    dropped_panic: c.handler_panics,
                    dropped_stall: c.dropped_stall,
                    dropped_closed: c.dropped_closed,
                    last_message_timestamp_seconds: c.last_message_timestamp_seconds,
                }
            })
            .collect()
    }
}
