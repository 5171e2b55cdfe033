//! `RouterActor` (crate-private): owns the route table and decides which broker
//! subscriptions each session needs.
//!
//! Route changes go through the actor; message dispatch does not. The actor keeps a
//! master route table (`dispatch.rs`: a filter trie of routes, `table.rs`) and, after
//! every change, publishes an immutable copy in an `ArcSwap` that every session's driver
//! reads without locking (`RouterDispatch`).
//!
//! Subscriptions are reference-counted per (session, filter): the first route needing a
//! filter on a session makes that session SUBSCRIBE, the last one leaving makes it
//! UNSUBSCRIBE, and the subscription QoS is the highest any of those routes asks for.
//! A broker keeps one subscription per filter and client, so the MQTT 5 subscribe
//! options are not part of the key: the subscription carries the union of the routes'
//! options ([`SubscribeOptions::union`]) and is re-sent when that union changes.
//! Routes for all sessions also cover sessions registered later.

pub mod builder;
pub(crate) mod consume;
// `pub` items here are re-exported by `bench_internals` (feature `bench-internals`).
#[cfg_attr(not(feature = "bench-internals"), allow(unreachable_pub))]
pub(crate) mod dispatch;
pub mod durable;
pub mod route;
pub(crate) mod table;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use arc_swap::ArcSwap;

use self::dispatch::{RouteEntry, RouteTable, Target};
use self::route::{RouteOptions, RouteScope, RouteStats, SubscribeOptions};
use crate::error::Error;
use crate::message::{Message as MqttMessage, QoS};
use crate::session::{SessionActor, Subscribe, Unsubscribe};
use crate::small_map::SmallMap;
use crate::store::StoreWorker;
use crate::topic::TopicFilter;

/// The router actor. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct RouterActor {
    table: Arc<ArcSwap<RouteTable>>,
    master: RouteTable,
    routes: HashMap<u64, Arc<RouteEntry>>,
    /// The names of `routes` (a name is taken by one route at a time).
    names: HashSet<Arc<str>>,
    /// Route ids by filter (one nearly always).
    by_filter: HashMap<String, Vec<u64>>,
    sessions: HashMap<Arc<str>, Addr<SessionActor>>,
    subscribed: HashMap<Arc<str>, SmallMap<String, (QoS, SubscribeOptions)>>,
    /// The manager's store worker (durable routes, subscription saves).
    hold: Option<StoreWorker>,
    durable: HashSet<Arc<str>>,
    /// Subscriptions the application made directly, per session and filter.
    direct: HashMap<Arc<str>, HashMap<String, (QoS, SubscribeOptions)>>,
    next_id: u64,
    /// `master` has routes that `table` does not have yet (see [`AddRoute`]).
    unpublished: bool,
}

type SessionReply = futures_util::future::BoxFuture<'static, Result<(), Error>>;

impl RouterActor {
    /// A router publishing its table into `table`. `store`, when given, keeps the durable
    /// routes of persistent sessions (every write through this worker).
    pub(crate) fn new(table: Arc<ArcSwap<RouteTable>>, store: Option<StoreWorker>) -> Self {
        let hold = store;
        RouterActor {
            hold,
            durable: HashSet::new(),
            table,
            master: RouteTable::default(),
            routes: HashMap::new(),
            names: HashSet::new(),
            by_filter: HashMap::new(),
            sessions: HashMap::new(),
            subscribed: HashMap::new(),
            direct: HashMap::new(),
            next_id: 0,
            unpublished: false,
        }
    }

    fn publish(&mut self) {
        self.table.store(Arc::new(self.master.clone()));
        self.unpublished = false;
    }

    /// Publishes the table if routes were added since it was last published.
    fn publish_added(&mut self) {
        if self.unpublished {
            self.publish();
        }
    }

    /// Brings the broker subscription of `session` to `filter` in line with the routes.
    fn sync_subscription(
        &mut self,
        session: &Arc<str>,
        filter: &TopicFilter,
    ) -> Option<SessionReply> {
        let addr = self.sessions.get(session)?.clone();
        let want = self
            .by_filter
            .get(filter.as_str())
            .into_iter()
            .flatten()
            .filter_map(|id| self.routes.get(id))
            .filter(|r| r.scope.covers(session))
            .map(|r| (r.qos, r.subscribe))
            .chain(
                self.direct
                    .get(session)
                    .and_then(|d| d.get(filter.as_str()))
                    .copied(),
            )
            .reduce(|(q1, o1), (q2, o2)| (q1.max(q2), o1.union(o2)));
        let subs = self.subscribed.entry(Arc::clone(session)).or_default();
        let have = subs.get(filter.as_str()).copied();
        if want == have {
            return None;
        }
        let filter = filter.clone();
        // The request goes into the session's mailbox now (`send` queues at once), not
        // when the returned future is first polled: a removal's UNSUBSCRIBE and the next
        // route's SUBSCRIBE of the same filter reach the session in the order decided
        // here, whichever future runs first.
        match want {
            Some((qos, options)) => {
                subs.insert(filter.as_str().to_string(), (qos, options));
                let request = addr.send(Subscribe {
                    filter,
                    qos,
                    options,
                });
                Some(Box::pin(async move {
                    request.await.map_err(|_| Error::Shutdown)?
                }))
            }
            None => {
                subs.remove(filter.as_str());
                let request = addr.send(Unsubscribe { filter });
                Some(Box::pin(async move {
                    request.await.map_err(|_| Error::Shutdown)?
                }))
            }
        }
    }

    fn sessions_covered(&self, scope: &RouteScope) -> Vec<Arc<str>> {
        match scope {
            RouteScope::AllSessions => self.sessions.keys().cloned().collect(),
            RouteScope::Session(s) => self
                .sessions
                .get_key_value(s)
                .map(|(k, _)| Arc::clone(k))
                .into_iter()
                .collect(),
        }
    }

    fn insert_entry(&mut self, entry: Arc<RouteEntry>) {
        self.by_filter
            .entry(entry.filter.as_str().to_string())
            .or_insert_with(|| Vec::with_capacity(1))
            .push(entry.id);
        self.master.trie.insert(&entry.filter, Arc::clone(&entry));
        self.names.insert(Arc::clone(&entry.name));
        self.routes.insert(entry.id, entry);
    }

    fn remove_entry(&mut self, id: u64) -> Option<Arc<RouteEntry>> {
        let entry = self.routes.remove(&id)?;
        self.names.remove(&entry.name);
        if let Some(ids) = self.by_filter.get_mut(entry.filter.as_str()) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_filter.remove(entry.filter.as_str());
            }
        }
        self.master.trie.remove(&entry.filter, |e| e.id == id);
        Some(entry)
    }

    /// Removes a route; a dropped (not stopped) named route of durable sessions stays as a
    /// placeholder that holds its messages.
    fn remove_route(&mut self, id: u64, forget: bool) -> Vec<SessionReply> {
        let Some(entry) = self.remove_entry(id) else {
            return Vec::new();
        };
        if !forget {
            self.keep_as_placeholder(&entry);
        }
        self.publish();
        tracing::debug!(route = %entry.name, filter = %entry.filter, "route removed");
        let sessions = self.sessions_covered(&entry.scope);
        let pending = sessions
            .iter()
            .filter_map(|s| self.sync_subscription(s, &entry.filter))
            .collect();
        for s in &sessions {
            self.save_subscriptions(s);
        }
        pending
    }
}

impl Actor for RouterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Route changes and session registrations arrive in bursts (many sessions added at
        // once); the default mailbox of 16 would push back on the supervisor needlessly.
        ctx.set_mailbox_capacity(1024);
    }
}

/// Register a route: where its messages go and what it listens to.
#[derive(Message)]
#[rtype(result = "Result<(u64, Arc<str>), Error>")]
pub(crate) struct AddRoute {
    /// The filter.
    pub filter: TopicFilter,
    /// Which sessions.
    pub scope: RouteScope,
    /// Options.
    pub opts: RouteOptions,
    /// Kind, for derived names (`handle`, `listen`, `actor`, ...).
    pub kind: &'static str,
    /// The route's queue.
    pub tx: flume::Sender<MqttMessage>,
    /// The queue's receiver, kept for drop-oldest overflow.
    pub oldest: Option<flume::Receiver<MqttMessage>>,
    /// An in-place callback: live messages go to it, and the queue takes only what a
    /// durable route held while it was not registered.
    pub inline: Option<dispatch::InlineCallback>,
    /// Counters.
    pub stats: Arc<RouteStats>,
}

impl std::fmt::Debug for AddRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddRoute")
            .field("filter", &self.filter)
            .field("scope", &self.scope)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Handler<AddRoute> for RouterActor {
    type Result = ResponseActFuture<Self, Result<(u64, Arc<str>), Error>>;

    fn handle(&mut self, msg: AddRoute, _: &mut Context<Self>) -> Self::Result {
        if let RouteScope::Session(s) = &msg.scope {
            if !self.sessions.contains_key(s) {
                let e = Error::UnknownSession(s.to_string());
                return Box::pin(async move { Err(e) }.into_actor(self));
            }
        }
        self.next_id += 1;
        let id = self.next_id;
        let name: Arc<str> = match &msg.opts.name {
            Some(n) => Arc::from(n.as_str()),
            None => Arc::from(format!("{}-{id}", msg.kind)),
        };
        let held_for = self.take_placeholders(&name, &msg.scope, &msg.tx);
        if self.names.contains(&name) {
            let e = Error::DuplicateRoute(name.to_string());
            return Box::pin(async move { Err(e) }.into_actor(self));
        }
        let entry = Arc::new(RouteEntry {
            id,
            name: Arc::clone(&name),
            filter: msg.filter.clone(),
            scope: msg.scope.clone(),
            qos: msg.opts.qos,
            subscribe: msg.opts.subscribe,
            overflow: msg.opts.overflow,
            target: match msg.inline {
                Some(callback) => Target::Inline { callback },
                None => Target::Queue {
                    tx: msg.tx.clone(),
                    oldest: msg.oldest,
                },
            },
            named: msg.opts.name.is_some(),
            stats: msg.stats,
        });
        for s in &held_for {
            self.deliver_held(s, &name, &msg.tx, &entry.stats);
        }
        self.insert_entry(entry);
        // The table is published, and the sessions subscribed, once the routes added
        // together are all in `master` (actix runs every message waiting in the mailbox
        // before the futures its handlers return): one copy of the table, and of each trie
        // node on the way to the new routes, per burst of routes instead of per route.
        // The table is published before any session subscribes, so a message the broker
        // sends on the new subscription finds its route.
        self.unpublished = true;
        let (filter, scope) = (msg.filter, msg.scope);
        let scoped = matches!(scope, RouteScope::Session(_));
        Box::pin(
            actix::fut::ready(())
                .then(move |(), act: &mut RouterActor, _| {
                    act.publish_added();
                    tracing::debug!(route = %name, %filter, "route added");
                    let covered = act.sessions_covered(&scope);
                    let pending: Vec<SessionReply> = covered
                        .iter()
                        .filter_map(|s| act.sync_subscription(s, &filter))
                        .collect();
                    for s in &covered {
                        act.save_subscriptions(s);
                    }
                    futures_util::future::join_all(pending)
                        .into_actor(act)
                        .map(move |results, _, _| (results, name))
                })
                .map(move |(results, name), act, _| {
                    let failed = results.into_iter().find_map(Result::err);
                    match failed {
                        Some(e) if scoped => {
                            for p in act.remove_route(id, true) {
                                actix::spawn(async move {
                                    let _ = p.await;
                                });
                            }
                            Err(e)
                        }
                        Some(e) => {
                            tracing::warn!(route = %name, error = %e, "a session could not subscribe for this route");
                            Ok((id, name))
                        }
                        None => Ok((id, name)),
                    }
                }),
        )
    }
}

/// Remove a route (sent when a [`Route`](route::Route) is stopped or dropped).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct RemoveRoute {
    /// The route's id.
    pub id: u64,
    /// Stopped on purpose (`Route::stop`): a durable route is forgotten too. When false
    /// (the handle was dropped), a durable route keeps holding its messages.
    pub forget: bool,
}

impl Handler<RemoveRoute> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: RemoveRoute, _: &mut Context<Self>) {
        for p in self.remove_route(msg.id, msg.forget) {
            actix::spawn(async move {
                if let Err(e) = p.await {
                    tracing::debug!(error = %e, "unsubscribe after route removal failed");
                }
            });
        }
    }
}

/// A session joined: subscribe it for every route covering all sessions.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct RegisterSession {
    /// Session name.
    pub name: Arc<str>,
    /// Its actor.
    pub addr: Addr<SessionActor>,
    /// Its named routes are durable (persistent session with resumed subscriptions and a store).
    pub durable: bool,
    /// A durable session's saved subscriptions (read from the store off the actors'
    /// threads by whoever adds the session).
    pub saved: Vec<crate::store::StoredSubscription>,
}

impl Handler<RegisterSession> for RouterActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: RegisterSession, _: &mut Context<Self>) -> Self::Result {
        self.sessions.insert(Arc::clone(&msg.name), msg.addr);
        if msg.durable && self.hold.is_some() {
            self.durable.insert(Arc::clone(&msg.name));
            self.restore_placeholders(&msg.name, msg.saved);
            self.publish();
        }
        Box::pin(self.subscribe_registered(&msg.name))
    }
}

impl RouterActor {
    /// Subscribes a session that just registered for every route covering it.
    fn subscribe_registered(&mut self, name: &Arc<str>) -> impl std::future::Future<Output = ()> {
        let filters: Vec<TopicFilter> = self
            .routes
            .values()
            .filter(|r| r.scope.covers(name))
            .map(|r| (r.filter.as_str().to_string(), r.filter.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_values()
            .collect();
        let pending: Vec<SessionReply> = filters
            .iter()
            .filter_map(|f| self.sync_subscription(name, f))
            .collect();
        async move {
            for r in futures_util::future::join_all(pending).await {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "subscription for a global route failed");
                }
            }
        }
    }
}

impl Handler<crate::session::DirectSubscription> for RouterActor {
    type Result = ResponseFuture<Result<(), Error>>;

    fn handle(
        &mut self,
        msg: crate::session::DirectSubscription,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let crate::session::DirectSubscription {
            session,
            filter,
            want,
        } = msg;
        let Some((session, _)) = self
            .sessions
            .get_key_value(&session)
            .map(|(k, v)| (Arc::clone(k), v.clone()))
        else {
            let e = Error::SessionClosed(session.to_string());
            return Box::pin(async move { Err(e) });
        };
        let claims = self.direct.entry(Arc::clone(&session)).or_default();
        match want {
            Some(w) => {
                claims.insert(filter.as_str().to_string(), w);
            }
            None => {
                claims.remove(filter.as_str());
            }
        }
        let pending = self.sync_subscription(&session, &filter);
        self.save_subscriptions(&session);
        Box::pin(async move {
            match pending {
                Some(p) => p.await,
                None => Ok(()),
            }
        })
    }
}

/// A session left: its own routes end, its subscription bookkeeping is dropped.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct UnregisterSession {
    /// Session name.
    pub name: Arc<str>,
}

impl Handler<UnregisterSession> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: UnregisterSession, _: &mut Context<Self>) {
        self.sessions.remove(&msg.name);
        self.subscribed.remove(&msg.name);
        self.direct.remove(&msg.name);
        self.durable.remove(&msg.name);
        let own: Vec<u64> = self
            .routes
            .values()
            .filter(|r| r.scope == RouteScope::Session(Arc::clone(&msg.name)))
            .map(|r| r.id)
            .collect();
        for id in own {
            // The session is gone: no unsubscribe to send.
            drop(self.remove_route(id, true));
        }
    }
}

/// Remove every route (manager shutdown): their consumers see the end of their queues.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct ClearRoutes;

impl Handler<ClearRoutes> for RouterActor {
    type Result = ();

    fn handle(&mut self, _: ClearRoutes, _: &mut Context<Self>) {
        self.routes.clear();
        self.names.clear();
        self.by_filter.clear();
        self.subscribed.clear();
        self.direct.clear();
        self.sessions.clear();
        self.durable.clear();
        self.master = RouteTable::default();
        self.publish();
    }
}
