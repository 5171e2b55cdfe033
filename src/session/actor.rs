//! The [`SessionActor`] as the shell around its `SessionCore`: construction, feeding the
//! core, carrying out its effects, the driver task, `Actor` and `Supervised`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::core::{CoreParts, Effect, Input, Now, SessionCore, StoreOp, Then, Wire};
use super::handlers::{PublishWith, SessionEnded};
use super::io::driver::{Driver, DriverEvent, DriverSetup};
use super::io::link::{Client, Link, LinkSpec, Written};
use super::outbox::Outbox;
use super::qos2_received::Qos2Received;
use super::status::publish_if_changed;
use super::{SessionActor, SessionParts, Waiter, DRIVER_EVENTS};
use crate::error::Error;
use crate::event::{Event, EventBus};
use crate::message::{Publish, QoS, SubscribeOptions};
use crate::metrics::counters::SessionCounters;
use crate::store::{Store, StoreError};

impl SessionActor {
    /// A session actor (not started).
    pub(crate) fn new(mut p: SessionParts) -> Self {
        let limit = p.opts.performance.max_pending_messages;
        let persistent = !p.opts.connect.clean_session;
        let mut outbox = Outbox::new(limit);
        // Packet ids are only resumed by a persistent session, and only within rumqttc's
        // window (a lowered `inflight` sends the others again as new).
        let max_pkid = super::io::link::packet_id_window(&p.opts);
        let ids_on_disk = !p.restored_ids.is_empty();
        let ids: HashMap<u64, (u16, bool)> = std::mem::take(&mut p.restored_ids)
            .into_iter()
            .filter(|id| persistent && id.pkid <= max_pkid)
            .map(|id| (id.seq, (id.pkid, id.released)))
            .collect();
        let mut resumed = HashSet::new();
        for (seq, sp) in std::mem::take(&mut p.restored_outbox) {
            let qos = QoS::try_from(sp.qos).unwrap_or(QoS::AtLeastOnce);
            let publish = Publish::new(sp.topic, sp.payload)
                .qos(qos)
                .retain(sp.retain);
            match ids.get(&seq) {
                // Two entries can never share an id in flight; keep the first.
                Some(&(pkid, released)) if resumed.insert(pkid) => {
                    outbox.push_stored_with_id(publish, seq, pkid, released);
                }
                _ => {
                    outbox.push_stored(publish, seq, None);
                }
            }
        }
        let inbound = persistent.then(|| {
            Arc::new(Qos2Received::new(
                Arc::from(p.opts.name.as_str()),
                std::mem::take(&mut p.restored_inbound),
                p.store.clone(),
            ))
        });
        if !outbox.is_empty() {
            tracing::info!(session = %p.opts.name, count = outbox.len(), "replaying publishes from the store's outbox");
        }
        let mut core = SessionCore::new(
            CoreParts {
                opts: Arc::clone(&p.opts),
                brokers: Arc::clone(&p.brokers),
                client_id: Arc::clone(&p.client_id),
                counters: Arc::clone(&p.counters),
                has_store: p.store.is_some(),
                has_supervisor: p.supervisor.is_some(),
                outbox,
                meta: std::mem::take(&mut p.meta),
                ids_on_disk,
            },
            Now::current(),
        );
        // The core's first effects: its metadata goes to the store.
        let first = core.take_effects();
        let actor = SessionActor {
            core,
            p,
            client: None,
            driver: None,
            stream: None,
            tick: None,
            inbound,
            resume: None,
            on_outbox_empty: None,
            on_disconnect_written: None,
        };
        for e in first {
            if let Effect::Store(op) = e {
                actor.store(op);
            }
        }
        actor
    }

    /// Feeds one input to the core, carries out its effects, publishes the status.
    pub(super) fn feed(&mut self, input: Input<Waiter>, ctx: &mut Context<Self>) {
        let mut wire = ClientWire(self.client.as_ref());
        let mut effects = self.core.on(input, Now::current(), &mut wire);
        for e in effects.drain(..) {
            self.apply(e, ctx);
        }
        self.core.recycle(effects);
        self.publish_status();
    }

    /// Carries out one effect of the core.
    fn apply(&mut self, effect: Effect<Waiter>, ctx: &mut Context<Self>) {
        match effect {
            Effect::Answer(Waiter::Caller(tx), res) => {
                let _ = tx.send(res);
            }
            Effect::Answer(Waiter::Report(to), res) => to.send(res),
            Effect::Answer(Waiter::Enqueued(topic), res) => {
                if let Err(e) = res {
                    let session = Arc::clone(self.core.name());
                    report_failed_publish(&self.p.bus, &self.p.counters, session, topic, &e);
                }
            }
            Effect::Emit(data) => self
                .p
                .bus
                .emit(Event::new(Arc::clone(self.core.name()), data)),
            Effect::Store(op) => self.store(op),
            Effect::StoreThen(op, then) => {
                let Some(worker) = &self.p.store else {
                    let result = Err("no store".to_string());
                    return self.feed(Input::Stored { then, result }, ctx);
                };
                let name = Arc::clone(self.core.name());
                let write = worker.run(move |store| run(store, &name, op));
                // The answer comes back through the mailbox, not a future of this
                // context: a restart in place drops the context's futures, and the core
                // waits for this answer.
                let addr = ctx.address();
                actix::spawn(async move {
                    let result = match write.await {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(_) => Err("store worker gone".to_string()),
                    };
                    addr.do_send(Stored { then, result });
                });
            }
            Effect::FlushRemovalsSoon => {
                ctx.spawn(fut::ready(()).map(|(), act: &mut Self, ctx| {
                    act.feed(Input::FlushRemovals, ctx);
                }));
            }
            Effect::StartTick => {
                if self.tick.is_none() {
                    self.tick = Some(ctx.run_interval(Duration::from_secs(1), |act, ctx| {
                        act.feed(Input::Tick, ctx);
                    }));
                }
            }
            Effect::StopTick => {
                if let Some(h) = self.tick.take() {
                    ctx.cancel_future(h);
                }
            }
            Effect::StartDriver(delay) => self.start_driver(ctx, delay),
            Effect::StopDriver => self.stop_driver(ctx),
            Effect::Resend(items) => {
                if let Some(tx) = self.resume.take() {
                    let _ = tx.send(items);
                }
            }
            Effect::ReportEnd(reason) => {
                if let Some(sup) = &self.p.supervisor {
                    // A control message, one per failure: `do_send` is fine here.
                    sup.do_send(SessionEnded {
                        session: Arc::clone(self.core.name()),
                        reason,
                    });
                }
            }
            Effect::Stop => ctx.stop(),
        }
    }

    /// A store write nobody waits for, through the store worker (in order).
    fn store(&self, op: StoreOp) {
        let Some(worker) = &self.p.store else { return };
        let name = Arc::clone(self.core.name());
        worker.submit(move |store| {
            let what = op.what();
            if let Err(e) = run(store, &name, op) {
                tracing::error!(session = %name, error = %e, "cannot {what}");
            }
        });
    }

    /// Publishes the status (only when it changed: this runs after every input) and
    /// tells a graceful close when the outbox is empty.
    pub(super) fn publish_status(&mut self) {
        publish_if_changed(&self.p.status, &self.core.status_view());
        if self.core.outbox_len() == 0 {
            if let Some(tx) = self.on_outbox_empty.take() {
                let _ = tx.send(());
            }
        }
    }

    fn start_driver(&mut self, ctx: &mut Context<Self>, initial_delay: Option<Duration>) {
        let (client, link) = Link::new(LinkSpec {
            opts: Arc::clone(&self.p.opts),
            client_id: Arc::clone(self.core.client_id()),
            brokers: Arc::clone(&self.p.brokers),
            tls: self.p.tls.clone(),
            hold_pubrel: self.p.store.is_some() && !self.p.opts.connect.clean_session,
        });
        let takes_packet_ids = client.takes_packet_ids();
        // flume allocates its buffer as events arrive (tokio's bounded channel starts with
        // a block of 32 slots): an idle session keeps almost nothing here.
        let (tx, rx) = flume::bounded(DRIVER_EVENTS);
        let d = Driver::new(DriverSetup {
            session: Arc::clone(self.core.name()),
            opts: Arc::clone(&self.p.opts),
            brokers: Arc::clone(&self.p.brokers),
            link,
            client: client.clone(),
            events: tx,
            dispatcher: Arc::clone(&self.p.dispatcher),
            counters: Arc::clone(&self.p.counters),
            initial_delay,
            connect_limit: Arc::clone(&self.p.connect_limit),
            inbound: self.inbound.clone(),
        });
        self.client = Some(client);
        self.driver = Some(tokio::task::spawn_local(d.run()));
        self.stream = Some(ctx.add_stream(rx.into_stream()));
        self.feed(Input::DriverStarted { takes_packet_ids }, ctx);
    }

    fn stop_driver(&mut self, ctx: &mut Context<Self>) {
        if let Some(h) = self.stream.take() {
            ctx.cancel_future(h);
        }
        if let Some(d) = self.driver.take() {
            d.abort();
        }
        self.client = None;
    }

    /// A publish message, whoever sent it: an enqueued publish nobody waits on to
    /// completion has its later failure announced as an event.
    pub(super) fn take_publish(&mut self, ctx: &mut Context<Self>, msg: PublishWith) {
        let PublishWith {
            publish,
            accepted,
            done,
            lane,
        } = msg;
        let done = match (&accepted, done) {
            (Some(_), None) => Some(Waiter::Enqueued(publish.topic.clone())),
            (_, done) => done,
        };
        let completion = super::core::Completion { accepted, done };
        self.feed(
            Input::Publish {
                publish,
                completion,
                lane,
            },
            ctx,
        );
    }
}

/// The connection's request side, as the core sees it.
struct ClientWire<'a>(Option<&'a Client>);

impl Wire for ClientWire<'_> {
    fn attached(&self) -> bool {
        self.0.is_some()
    }

    fn publish(&mut self, publish: &Publish, pkid: u16) -> bool {
        self.0.is_some_and(|c| c.publish_now(publish, pkid))
    }

    fn release(&mut self, pkid: u16) -> bool {
        self.0.is_some_and(|c| c.release(pkid))
    }

    fn subscribe(&mut self, subs: &[(String, QoS, SubscribeOptions)]) -> bool {
        self.0.is_some_and(|c| c.subscribe_now(subs).is_ok())
    }

    fn unsubscribe(&mut self, filter: &str) -> bool {
        self.0.is_some_and(|c| c.unsubscribe_now(filter).is_ok())
    }
}

/// Runs one store write of session `name`; answers the sequence numbers of pushed
/// publishes (empty for the other writes).
fn run(store: &Store, name: &str, op: StoreOp) -> Result<Vec<u64>, StoreError> {
    match op {
        StoreOp::PushMany(publishes) => store.outbox_push_many(name, &publishes),
        StoreOp::SetPacketIds { ids, flush } => {
            for id in ids {
                store.outbox_set_packet_id(name, id, flush)?;
            }
            Ok(Vec::new())
        }
        StoreOp::Remove { seqs, ids } => {
            // One failed removal does not keep the others. (One sled operation each:
            // a batch costs more CPU per key than single removals.)
            let mut first_err = None;
            for seq in seqs {
                let removed = if ids {
                    store.outbox_remove(name, seq)
                } else {
                    store.outbox_remove_entry(name, seq)
                };
                if let Err(e) = removed {
                    first_err.get_or_insert(e);
                }
            }
            first_err.map_or(Ok(Vec::new()), Err)
        }
        StoreOp::PutMeta(meta) => store.session_meta_put(name, &meta).map(|()| Vec::new()),
    }
}

/// Counts and announces a queued publish that failed after it was accepted.
fn report_failed_publish(
    bus: &EventBus,
    counters: &SessionCounters,
    session: Arc<str>,
    topic: String,
    e: &Error,
) {
    counters
        .publish_failures
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(session = %session, topic = %topic, error = %e, "queued publish failed");
    bus.emit(Event::new(
        session,
        crate::event::EventData::PublishFailed {
            topic,
            error: e.to_string(),
        },
    ));
}

impl StreamHandler<DriverEvent> for SessionActor {
    fn handle(&mut self, ev: DriverEvent, ctx: &mut Context<Self>) {
        let input = match ev {
            DriverEvent::Attempt { broker, attempt } => Input::Attempt { broker, attempt },
            DriverEvent::AttemptFailed(f) => Input::AttemptFailed(f),
            DriverEvent::Waiting { attempt, delay } => Input::Waiting { attempt, delay },
            DriverEvent::GaveUp { attempts, lost } => Input::DriverGaveUp { attempts, lost },
            DriverEvent::Connected {
                broker,
                session_present,
                assigned_client_id,
                limits,
                resume,
            } => {
                self.resume = resume;
                Input::Connected {
                    broker,
                    session_present,
                    assigned_client_id,
                    limits,
                }
            }
            DriverEvent::Lost {
                failure,
                drained_qos1,
                drained_qos0,
                drained_subs,
            } => Input::Lost {
                failure,
                drained_qos1,
                drained_qos0,
                drained_subs,
            },
            DriverEvent::Written(w) => {
                if w == Written::Disconnect {
                    if let Some(tx) = self.on_disconnect_written.take() {
                        let _ = tx.send(());
                    }
                }
                Input::Written(w)
            }
            DriverEvent::Ack(ack) => Input::Ack(ack),
        };
        self.feed(input, ctx);
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.feed(Input::DriverEnded, ctx);
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.feed(Input::Started, ctx);
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        self.feed(Input::Stopped, ctx);
        if let Some(d) = self.driver.take() {
            d.abort();
        }
    }
}

impl Supervised for SessionActor {
    fn restarting(&mut self, ctx: &mut Context<Self>) {
        // The context already dropped its streams and timers; cancelling their handles
        // here would cancel the new ones, which reuse the same handle numbers.
        self.stream = None;
        self.tick = None;
        if let Some(d) = self.driver.take() {
            d.abort();
        }
        self.client = None;
        self.resume = None;
        self.feed(Input::Restarting, ctx);
    }
}

impl StoreOp {
    /// What the write does, for a log line.
    fn what(&self) -> &'static str {
        match self {
            StoreOp::PushMany(_) => "write publishes to the store",
            StoreOp::SetPacketIds { .. } => "record a publish's packet id",
            StoreOp::Remove { .. } => "remove a publish from the store's outbox",
            StoreOp::PutMeta(_) => "save session metadata",
        }
    }
}

/// A store write the core waits for ended (see [`Effect::StoreThen`]).
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Stored {
    then: Then,
    result: Result<Vec<u64>, String>,
}

impl Handler<Stored> for SessionActor {
    type Result = ();

    fn handle(&mut self, Stored { then, result }: Stored, ctx: &mut Context<Self>) {
        self.feed(Input::Stored { then, result }, ctx);
    }
}
