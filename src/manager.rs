//! [`SessionManager`]: the friendly, cloneable façade over the [`Supervisor`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use arc_swap::ArcSwap;
use bytes::Bytes;

use crate::error::Error;
use crate::event::{Event, EventBus, EventGuard, EventKind, EventStream};
use crate::message::{Message, Publish, QoS};
use crate::options::SessionOptions;
use crate::router::builder::RouteBuilder;
use crate::router::dispatch::RouteTable;
use crate::router::route::{Listener, Route};
use crate::router::RouterActor;
use crate::session::handle::SessionHandle;
use crate::session::state::SessionState;
use crate::store::Store;
use crate::supervisor::{AddSession, Registry, RemoveSession, Shutdown, Supervisor};

/// Default bound of connection attempts in flight at once.
pub const DEFAULT_MAX_CONCURRENT_CONNECTS: usize = 64;

/// Builds a [`SessionManager`].
#[derive(Debug)]
#[must_use]
pub struct SessionManagerBuilder {
    max_concurrent_connects: usize,
    store_path: Option<std::path::PathBuf>,
}

impl Default for SessionManagerBuilder {
    fn default() -> Self {
        SessionManagerBuilder {
            max_concurrent_connects: DEFAULT_MAX_CONCURRENT_CONNECTS,
            store_path: None,
        }
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

    /// How many connection attempts may be in flight at once across all sessions
    /// (default 64): thousands of sessions starting together must not overrun a broker's
    /// accept queue (mosquitto's listen backlog is 100).
    pub fn max_concurrent_connects(mut self, n: usize) -> Self {
        self.max_concurrent_connects = n.max(1);
        self
    }

    /// Starts the manager's actors on the current actix system.
    pub fn build(self) -> Result<SessionManager, Error> {
        if actix_rt::System::try_current().is_none() {
            return Err(Error::NoActixSystem);
        }
        let store = self.store_path.as_deref().map(Store::open).transpose()?;
        let registry: Registry = Arc::new(ArcSwap::from_pointee(BTreeMap::new()));
        let bus = EventBus::new();
        let routes = Arc::new(ArcSwap::from_pointee(RouteTable::default()));
        let router = RouterActor::new(Arc::clone(&routes), store.clone()).start();
        let sup = Supervisor::new(
            Arc::clone(&registry),
            bus.clone(),
            router.clone(),
            routes,
            self.max_concurrent_connects,
            store.clone(),
        )
        .start();
        Ok(SessionManager {
            sup,
            router,
            registry,
            bus,
        })
    }
}

/// Many MQTT sessions under one supervisor. Cheap to clone, `Send + Sync`.
///
/// Must be created inside a running actix system (`#[actix::main]`, `#[actix_web::main]`,
/// `actix_rt::System::new().block_on(..)`); the returned handle may then be used from
/// any thread.
///
/// ```no_run
/// use std::time::Duration;
/// use mqtt_sessions::{QoS, SessionManager, SessionOptions};
///
/// #[actix::main]
/// async fn main() -> Result<(), mqtt_sessions::Error> {
///     let manager = SessionManager::new()?;
///     manager.add_session(SessionOptions::new("plant-1", "mqtt://127.0.0.1:1883")).await?;
///     manager.wait_for_session("plant-1", Duration::from_secs(10)).await?;
///     manager.publish_to("plant-1", "plant/1/status", "online", QoS::AtLeastOnce).await?;
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
        let waits = handles
            .iter()
            .map(|h| h.wait_ready(deadline.saturating_duration_since(Instant::now())));
        let results = futures_util::future::join_all(waits).await;
        let not_ready: Vec<String> = handles
            .iter()
            .zip(results)
            .filter(|(_, r)| r.is_err())
            .map(|(h, _)| h.name().to_string())
            .collect();
        if not_ready.is_empty() {
            Ok(())
        } else {
            Err(Error::WaitTimeout { timeout, not_ready })
        }
    }

    /// Publishes `payload` on `topic` through one session; see [`SessionHandle::publish`].
    pub async fn publish_to(
        &self,
        session: &str,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
    ) -> Result<(), Error> {
        self.publish(session, Publish::new(topic, payload).qos(qos))
            .await
    }

    /// Publishes a [`Publish`] (retain, QoS, ...) through one session.
    pub async fn publish(&self, session: &str, publish: Publish) -> Result<(), Error> {
        self.session(session)?.publish(publish).await
    }

    /// Publishes through every session at once; one result per session.
    pub async fn publish_to_all(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        qos: QoS,
    ) -> BTreeMap<String, Result<(), Error>> {
        let publish = Publish::new(topic, payload).qos(qos);
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
    /// added later), on the route's own thread. Subscribes at QoS 1.
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

    /// A stream of every event from now on.
    pub fn events(&self) -> EventStream {
        self.bus.stream()
    }

    /// Event handler calls that panicked so far.
    pub fn event_handler_panics(&self) -> u64 {
        self.bus.handler_panics()
    }

    /// Disconnects every session (DISCONNECT after a short flush of queued publishes) and
    /// refuses new ones.
    pub async fn shutdown(&self) {
        let _ = self.sup.send(Shutdown).await;
    }
}
