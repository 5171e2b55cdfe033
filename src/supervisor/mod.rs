//! `Supervisor` (crate-private): owns the set of sessions of one manager.
//!
//! It is the only writer of the session registry: adding and removing sessions go
//! through it, so the duplicate-name and duplicate-client-id checks cannot race. It
//! starts each [`SessionActor`] under actix supervision ([`actix::Supervisor`]), which
//! restarts an actor that stops unexpectedly; the actor itself waits a backoff delay
//! before reconnecting after a restart. Readers (`list`, `session`, `status`) take a short
//! read lock on the session registry and never wait for this actor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::error::Error;
use crate::event::{Event, EventBus, EventData};
use crate::metrics::counters::SessionCounters;
use crate::options::SessionOptions;
use crate::router::dispatch::SessionSinks;
use crate::router::dispatch::{RouteTable, RouterDispatch};
use crate::router::{ClearRoutes, RegisterSession, RouterActor, UnregisterSession};
use crate::session::handle::SessionHandle;
use crate::session::{
    Close, EndReason, Resume, Retire, SessionActor, SessionEnded, SessionParts, SessionStatus,
};
use crate::store::{Store, StoreWorker};
use crate::workers::Workers;

pub use self::policy::SupervisionOptions;
use self::policy::{RestartHistory, Verdict};

mod policy;

/// The shared session registry: session name → handle.
pub(crate) type Registry = Arc<SessionRegistry>;

/// The sessions of a manager by name. Only the supervisor writes it (one short write lock
/// per add or remove: no copy of the map, so adding the 10,000th session costs what the
/// first did); readers take a short read lock and clone what they need.
#[derive(Debug, Default)]
pub(crate) struct SessionRegistry {
    map: std::sync::RwLock<BTreeMap<String, SessionHandle>>,
}

impl SessionRegistry {
    /// Read access to the map; keep it short (never across an `.await`).
    pub(crate) fn load(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, SessionHandle>> {
        self.map
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, SessionHandle>> {
        self.map
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// (client id, broker `host:port`): a client id in use on a broker.
type ClientKey = (String, String);

/// The supervisor actor. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Supervisor {
    registry: Registry,
    bus: EventBus,
    router: Addr<RouterActor>,
    routes: Arc<ArcSwap<RouteTable>>,
    connect_limit: Arc<tokio::sync::Semaphore>,
    store: Option<StoreWorker>,
    /// The worker threads the sessions run on.
    workers: Arc<Workers>,
    /// The restart policy and each session's failures.
    supervision: SupervisionOptions,
    histories: std::collections::HashMap<String, RestartHistory>,
    /// Client ids in use, by broker, to refuse duplicates in O(1).
    client_ids: std::collections::HashMap<ClientKey, String>,
    shut_down: bool,
}

/// How a [`Supervisor`] runs its sessions.
#[derive(Debug, Clone)]
pub(crate) struct SupervisorSettings {
    /// At most this many connection attempts run at once.
    pub(crate) max_concurrent_connects: usize,
    /// The worker threads the sessions run on (the manager's pool).
    pub(crate) workers: Arc<Workers>,
    /// The restart policy.
    pub(crate) supervision: SupervisionOptions,
    /// The store worker, with a store.
    pub(crate) store: Option<StoreWorker>,
}

impl Supervisor {
    /// A supervisor publishing its sessions into `registry`; incoming messages of its
    /// sessions are dispatched through the route table `routes` kept by `router`.
    pub(crate) fn new(
        registry: Registry,
        bus: EventBus,
        router: Addr<RouterActor>,
        routes: Arc<ArcSwap<RouteTable>>,
        settings: SupervisorSettings,
    ) -> Self {
        Supervisor {
            registry,
            bus,
            router,
            routes,
            connect_limit: Arc::new(tokio::sync::Semaphore::new(
                settings.max_concurrent_connects.max(1),
            )),
            store: settings.store,
            workers: settings.workers,
            supervision: settings.supervision,
            histories: std::collections::HashMap::new(),
            client_ids: std::collections::HashMap::new(),
            shut_down: false,
        }
    }

    fn check_unique(
        &self,
        opts: &SessionOptions,
        client_id: &str,
        brokers: &[crate::options::BrokerUrl],
    ) -> Result<(), Error> {
        if self.registry.load().contains_key(&opts.name) {
            return Err(Error::DuplicateSession(opts.name.clone()));
        }
        // An empty client id (MQTT 5) asks the broker for a fresh one: never a duplicate.
        if client_id.is_empty() {
            return Ok(());
        }
        for b in brokers {
            if let Some(existing) = self.client_ids.get(&(client_id.to_string(), b.authority())) {
                return Err(Error::DuplicateClientId {
                    session: opts.name.clone(),
                    existing: existing.clone(),
                    client_id: client_id.to_string(),
                    broker: b.authority(),
                });
            }
        }
        Ok(())
    }

    fn client_keys(client_id: &str, brokers: &[crate::options::BrokerUrl]) -> Vec<ClientKey> {
        if client_id.is_empty() {
            return Vec::new();
        }
        brokers
            .iter()
            .map(|b| (client_id.to_string(), b.authority()))
            .collect()
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

/// Register a session and start connecting it (returns before any network I/O).
#[derive(Debug, Message)]
#[rtype(result = "Result<SessionHandle, Error>")]
pub(crate) struct AddSession(pub SessionOptions);

impl Handler<AddSession> for Supervisor {
    type Result = ResponseActFuture<Self, Result<SessionHandle, Error>>;

    fn handle(&mut self, AddSession(opts): AddSession, _: &mut Context<Self>) -> Self::Result {
        // Cheap refusals first; the uniqueness checks run again when the session is
        // registered below (other adds may have run meanwhile).
        if let Err(e) = self.precheck(&opts) {
            return Box::pin(actix::fut::ready(Err(e)));
        }
        let worker = self.store.clone();
        // Reading TLS files and the store never runs on this thread; the checks that read
        // nothing run here (a hop to the blocking pool per session was most of the time
        // `add_session` took).
        let load = async move {
            let brokers = opts.check_without_files()?;
            let (opts, tls) = if brokers.iter().any(|b| b.transport.is_tls()) {
                actix_rt::task::spawn_blocking(move || {
                    let tls = opts.tls_config(&brokers).map(|tls| (brokers, tls));
                    (opts, tls)
                })
                .await
                .map_err(|e| Error::Spawn(std::io::Error::other(e.to_string())))?
            } else {
                (opts, Ok((brokers, None)))
            };
            let (brokers, tls) = tls?;
            let validated = crate::options::Validated { brokers, tls };
            let stored = match worker {
                Some(w) => {
                    let name = opts.name.clone();
                    let durable = opts.connect.persistent && opts.connect.resume_subscriptions;
                    w.run(move |store| Stored::load(store, &name, durable))
                        .await
                        .map_err(|_| Error::Shutdown)??
                }
                None => Stored::default(),
            };
            Ok::<_, Error>((opts, validated, stored))
        };
        Box::pin(load.into_actor(self).then(|loaded, act, ctx| {
            let me = ctx.address().recipient();
            let added =
                loaded.and_then(|(opts, validated, stored)| act.add(opts, validated, stored, me));
            let router = act.router.clone();
            async move {
                let (handle, saved) = added?;
                // Subscriptions of global routes reach the actor's mailbox before it
                // first connects, so its first `session_ready` already includes them.
                router
                    .send(RegisterSession {
                        name: Arc::clone(&handle.name),
                        addr: handle.addr.clone(),
                        durable: handle.opts.connect.persistent
                            && handle.opts.connect.resume_subscriptions,
                        saved,
                    })
                    .await?;
                Ok(handle)
            }
            .into_actor(act)
        }))
    }
}

/// What the store holds for a session being added (read by the store worker).
#[derive(Debug, Default)]
struct Stored {
    outbox: Vec<(u64, crate::store::StoredPublish)>,
    /// Packet ids of the outbox entries and handled incoming QoS 2 ids (MQTT session state).
    packet_ids: Vec<crate::store::StoredPacketId>,
    inbound: Vec<u16>,
    subscriptions: Vec<crate::store::StoredSubscription>,
    meta: crate::store::SessionMeta,
}

impl Stored {
    fn load(store: &Store, session: &str, durable: bool) -> Result<Stored, Error> {
        Ok(Stored {
            outbox: store.outbox_load(session)?,
            packet_ids: store.outbox_packet_ids(session)?,
            inbound: store.inbound_load(session)?,
            subscriptions: if durable {
                store.subscriptions_load(session)?
            } else {
                Vec::new()
            },
            meta: store.session_meta_get(session)?.unwrap_or_default(),
        })
    }
}

impl Supervisor {
    /// The refusals that need no I/O: shut down, bad name, duplicate name.
    fn precheck(&self, opts: &SessionOptions) -> Result<(), Error> {
        if self.shut_down {
            return Err(Error::Shutdown);
        }
        if self.registry.load().contains_key(&opts.name) {
            return Err(Error::DuplicateSession(opts.name.clone()));
        }
        Ok(())
    }

    /// Registers and starts a validated session; returns its handle and its saved
    /// subscriptions (for the router).
    fn add(
        &mut self,
        opts: SessionOptions,
        validated: crate::options::Validated,
        stored: Stored,
        me: Recipient<SessionEnded>,
    ) -> Result<(SessionHandle, Vec<crate::store::StoredSubscription>), Error> {
        if self.shut_down {
            return Err(Error::Shutdown);
        }
        let crate::options::Validated { brokers, tls } = validated;
        let client_id = opts.effective_client_id();
        self.check_unique(&opts, &client_id, &brokers)?;
        let keys = Self::client_keys(&client_id, &brokers);
        let restored_outbox = stored.outbox;
        let opts = Arc::new(opts);
        let name: Arc<str> = Arc::from(opts.name.as_str());
        let (status_tx, status_rx) = watch::channel(SessionStatus::initial(
            client_id.clone(),
            tls.is_some() && opts.tls.as_ref().is_some_and(|t| t.skip_verify),
        ));
        let counters = Arc::new(SessionCounters::default());
        // Visible from the moment `add_session` returns (the actor starts on its worker).
        counters.set_outbox(restored_outbox.len(), 0);
        let sinks = Arc::new(SessionSinks::default());
        let parts = SessionParts {
            opts: Arc::clone(&opts),
            brokers: brokers.into(),
            tls,
            client_id: client_id.into(),
            bus: self.bus.clone(),
            dispatcher: Arc::new(RouterDispatch::new(
                Arc::clone(&name),
                Arc::clone(&self.routes),
                Arc::clone(&sinks),
                Arc::clone(&counters),
                opts.performance.unrouted_hold,
            )),
            counters: Arc::clone(&counters),
            status: status_tx,
            connect_limit: Arc::clone(&self.connect_limit),
            store: self.store.clone(),
            restored_outbox,
            restored_ids: stored.packet_ids,
            restored_inbound: stored.inbound,
            meta: stored.meta,
            supervisor: Some(me),
        };
        self.bus
            .emit(Event::new(Arc::clone(&name), EventData::SessionAdded));
        let (worker, arbiter) = self.workers.place(opts.performance.worker);
        let addr = actix::Supervisor::start_in_arbiter(&arbiter, move |_| SessionActor::new(parts));
        let handle = SessionHandle {
            name,
            addr,
            status: status_rx,
            counters,
            opts,
            sinks,
            worker,
            arbiter,
            router: self.router.clone().recipient(),
        };
        self.registry
            .write()
            .insert(handle.name().to_string(), handle.clone());
        for k in keys {
            self.client_ids.insert(k, handle.name().to_string());
        }
        tracing::info!(session = %handle.name(), worker, "session added");
        Ok((handle, stored.subscriptions))
    }
}

impl Handler<SessionEnded> for Supervisor {
    type Result = ();

    /// Applies the restart policy: `Resume` after a backoff delay, or `Retire` when the
    /// session gave up on its own or failed too often.
    fn handle(&mut self, SessionEnded { session, reason }: SessionEnded, _: &mut Context<Self>) {
        let Some(addr) = self.registry.load().get(&*session).map(|h| h.addr.clone()) else {
            return; // removed meanwhile
        };
        let verdict = match reason {
            EndReason::GaveUp(r) => Verdict::GiveUp(r),
            EndReason::Failed(what) => self
                .histories
                .entry(session.to_string())
                .or_default()
                .on_failure(&self.supervision, Instant::now(), what, fastrand::f64()),
        };
        match verdict {
            Verdict::Restart(delay) => {
                tracing::warn!(session = %session, ?delay, "session failed; restarting it after a delay");
                addr.do_send(Resume { delay });
            }
            Verdict::GiveUp(reason) => addr.do_send(Retire { reason }),
        }
    }
}

/// Remove a session: graceful DISCONNECT, then forget it. Its stored state (outbox,
/// subscriptions, held messages) is deleted unless `keep_state`; its metadata is kept.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct RemoveSession {
    /// The session.
    pub name: String,
    /// Keep its stored state for a later session of the same name.
    pub keep_state: bool,
}

impl Handler<RemoveSession> for Supervisor {
    type Result = ResponseFuture<Result<(), Error>>;

    fn handle(
        &mut self,
        RemoveSession { name, keep_state }: RemoveSession,
        _: &mut Context<Self>,
    ) -> Self::Result {
        let removed = self.registry.write().remove(&name);
        self.histories.remove(&name);
        if let Some(h) = &removed {
            self.workers.release(h.worker);
        }
        self.client_ids.retain(|_, owner| *owner != name);
        let bus = self.bus.clone();
        let router = self.router.clone();
        let store = self.store.clone().filter(|_| !keep_state);
        Box::pin(async move {
            let handle = removed.ok_or_else(|| Error::UnknownSession(name.clone()))?;
            let _ = router
                .send(UnregisterSession {
                    name: Arc::clone(&handle.name),
                })
                .await;
            let _ = handle.addr.send(Close).await;
            if let Some(worker) = store {
                let n = name.clone();
                worker
                    .run(move |store| store.delete_session_state(&n, true))
                    .await
                    .map_err(|_| Error::Shutdown)??;
            }
            tracing::info!(session = %name, "session removed");
            bus.emit(Event::new(
                Arc::from(name.as_str()),
                EventData::SessionRemoved,
            ));
            Ok(())
        })
    }
}

/// Close every session and refuse new ones.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Shutdown;

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.shut_down = true;
        let all = std::mem::take(&mut *self.registry.write());
        self.client_ids.clear();
        let bus = self.bus.clone();
        let router = self.router.clone();
        let workers = Arc::clone(&self.workers);
        let store = self.store.clone();
        Box::pin(async move {
            let closes = all.values().map(|h| {
                let bus = bus.clone();
                async move {
                    let _ = h.addr.send(Close).await;
                    bus.emit(Event::new(Arc::clone(&h.name), EventData::SessionRemoved));
                }
            });
            futures_util::future::join_all(closes).await;
            // Then end every route: consumers see their queues close.
            let _ = router.send(ClearRoutes).await;
            workers.stop();
            // Last: everything written so far reaches the disk.
            if let Some(worker) = store {
                if let Ok(Err(e)) = worker.run(|store| store.flush()).await {
                    tracing::error!(error = %e, "final store flush failed");
                }
            }
            tracing::info!(sessions = all.len(), "all sessions closed");
        })
    }
}
