//! [`RouteBuilder`]: registers a route with options, then picks its consumer.

use std::future::Future;
use std::sync::Arc;

use actix::{Addr, Recipient};

use super::consume;
use super::dispatch::InlineCallback;
use super::route::{
    route_queue, Listener, Overflow, RetainHandling, Route, RouteOptions, RouteOwner, RouteScope,
    RouteStats, SubscribeOptions, MAX_CAPACITY,
};
use super::{AddRoute, RouterActor};
use crate::error::Error;
use crate::message::{Message, QoS};
use crate::topic::TopicFilter;

/// Builds one route: `manager.route("sensors/#").session("plant-1").qos(QoS::AtMostOnce).listen()`.
#[derive(Debug)]
#[must_use = "a route builder does nothing until a consumer (`listen`, `handle`, ...) is chosen"]
pub struct RouteBuilder {
    router: Addr<RouterActor>,
    filter: Result<TopicFilter, Error>,
    scope: RouteScope,
    opts: RouteOptions,
}

impl RouteBuilder {
    pub(crate) fn new(router: Addr<RouterActor>, filter: &str) -> Self {
        RouteBuilder {
            router,
            filter: TopicFilter::new(filter).map_err(Error::from),
            scope: RouteScope::AllSessions,
            opts: RouteOptions::default(),
        }
    }

    /// Only messages received by this session (default: every session, including later ones).
    pub fn session(mut self, name: &str) -> Self {
        self.scope = RouteScope::Session(Arc::from(name));
        self
    }

    /// Names the route (letters, digits, `_`, `-`, `.`; unique within the manager).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.opts.name = Some(name.into());
        self
    }

    /// The QoS to subscribe with (default 1).
    pub fn qos(mut self, qos: QoS) -> Self {
        self.opts.qos = qos;
        self
    }

    /// Capacity of the route's queue (default 100).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.opts.capacity = capacity;
        self
    }

    /// What a full queue does with QoS 0 messages (default drop newest).
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.opts.overflow = overflow;
        self
    }

    /// MQTT 5 no local: do not receive what this session publishes itself (ignored by
    /// MQTT 3.1.1 sessions). Routes sharing a filter share one subscription; see
    /// [`SubscribeOptions`] for how their options combine.
    pub fn no_local(mut self, on: bool) -> Self {
        self.opts.subscribe.no_local = on;
        self
    }

    /// MQTT 5 retain as published: keep the retain flag of forwarded messages.
    pub fn retain_as_published(mut self, on: bool) -> Self {
        self.opts.subscribe.retain_as_published = on;
        self
    }

    /// MQTT 5 retain handling: when the broker sends retained messages.
    pub fn retain_handling(mut self, handling: RetainHandling) -> Self {
        self.opts.subscribe.retain_handling = handling;
        self
    }

    /// All MQTT 5 subscribe options at once.
    pub fn subscribe_options(mut self, subscribe: SubscribeOptions) -> Self {
        self.opts.subscribe = subscribe;
        self
    }

    /// All options at once.
    pub fn options(mut self, opts: RouteOptions) -> Self {
        self.opts = opts;
        self
    }

    async fn register(
        self,
        kind: &'static str,
    ) -> Result<(Route, flume::Receiver<Message>), Error> {
        self.register_with(kind, None).await
    }

    async fn register_with(
        self,
        kind: &'static str,
        inline: Option<InlineCallback>,
    ) -> Result<(Route, flume::Receiver<Message>), Error> {
        let filter = self.filter?;
        let opts = self.opts;
        if opts.capacity == 0 || opts.capacity > MAX_CAPACITY {
            return Err(Error::InvalidRoute(format!(
                "capacity {} must be between 1 and {MAX_CAPACITY}",
                opts.capacity
            )));
        }
        if let Some(name) = &opts.name {
            crate::options::validate_name(name).map_err(|e| Error::InvalidRoute(e.to_string()))?;
        }
        let (tx, oldest, rx) = route_queue(opts.capacity, opts.overflow);
        let stats = Arc::new(RouteStats::default());
        let qos = opts.qos;
        let (id, name) = self
            .router
            .send(AddRoute {
                filter: filter.clone(),
                scope: self.scope,
                opts,
                kind,
                tx,
                oldest,
                inline,
                stats: Arc::clone(&stats),
            })
            .await??;
        let route = Route {
            id,
            name,
            filter,
            qos,
            stats,
            owner: Some(RouteOwner::Router(self.router)),
        };
        Ok((route, rx))
    }

    /// Delivers into a bounded channel.
    pub async fn listen(self) -> Result<Listener, Error> {
        let (route, rx) = self.register("listen").await?;
        Ok(Listener { rx, route })
    }

    /// Calls `f` for every message, in order, on the shared pool of callback threads (at
    /// most 2 × cores threads for all `handle` routes; a route's callback runs on one of
    /// them at a time, so a slow callback slows only this route; QoS >= 1 messages wait for
    /// it, QoS 0 overflow is dropped and counted).
    pub async fn handle<F>(self, f: F) -> Result<Route, Error>
    where
        F: Fn(&Message) + Send + 'static,
    {
        let (route, rx) = self.register("handle").await?;
        consume::spawn_callback(route.name(), rx, Arc::clone(&route.stats), f)
            .map_err(Error::Spawn)?;
        Ok(route)
    }

    /// Calls `f` for every message *where it arrives*: on the receiving session's worker
    /// thread, inside its dispatch, with no queue and no thread crossing. The cheapest
    /// consumer (a QoS >= 1 message is acknowledged as `f` returns, written with the
    /// session's next burst of acknowledgements), and the one to use for callbacks that
    /// take microseconds: count, filter, decode, hand over to your own queue, publish.
    ///
    /// While `f` runs, every session on that worker waits (a worker carries many
    /// sessions): a callback that blocks or takes milliseconds belongs in
    /// [`handle`](Self::handle) (the shared pool of callback threads) instead.
    /// `docs/BENCHMARKS.md` measures what a slow one costs the other sessions.
    ///
    /// `f` is `Sync`: a route covering several sessions is called from their workers at
    /// once. For one session, messages come in the order they arrived. A panic is caught
    /// and counted (`handler_panics`) and the message counts as handled. The capacity
    /// option sizes only the queue that a durable route's held messages (kept in the
    /// store while the route was not registered) come through after a restart; they are
    /// handed to `f` on the pool of callback threads.
    ///
    /// ```no_run
    /// # async fn f(manager: mqtt_sessions::SessionManager) -> Result<(), mqtt_sessions::Error> {
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use std::sync::Arc;
    ///
    /// let bytes = Arc::new(AtomicU64::new(0));
    /// let counted = Arc::clone(&bytes);
    /// let route = manager
    ///     .route("plant/+/power")
    ///     .handle_inline(move |m| {
    ///         counted.fetch_add(m.payload.len() as u64, Ordering::Relaxed);
    ///     })
    ///     .await?;
    /// # drop(route); Ok(()) }
    /// ```
    pub async fn handle_inline<F>(self, f: F) -> Result<Route, Error>
    where
        F: Fn(&Message) + Send + Sync + 'static,
    {
        let callback: InlineCallback = Arc::new(f);
        let (route, rx) = self
            .register_with("handle_inline", Some(Arc::clone(&callback)))
            .await?;
        consume::spawn_callback(route.name(), rx, Arc::clone(&route.stats), move |m| {
            callback(m)
        })
        .map_err(Error::Spawn)?;
        Ok(route)
    }

    /// Awaits `f(message)` for every message, one after another, on the actix arbiter.
    pub async fn handle_async<F, Fut>(self, f: F) -> Result<Route, Error>
    where
        F: Fn(Message) -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let (route, rx) = self.register("handle_async").await?;
        consume::spawn_async(route.name(), rx, Arc::clone(&route.stats), f);
        Ok(route)
    }

    /// Sends every message to an actix actor (`send().await`: its mailbox applies backpressure).
    pub async fn to_actor(self, recipient: Recipient<Message>) -> Result<Route, Error> {
        let (route, rx) = self.register("actor").await?;
        consume::spawn_actor(route.name(), rx, Arc::clone(&route.stats), recipient);
        Ok(route)
    }
}
