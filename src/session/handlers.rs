//! The messages a [`SessionActor`] answers, one handler each.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::state::SessionState;
use super::{Completion, SessionActor, SessionStatus, CLOSE_FLUSH};
use std::sync::Arc;

use crate::error::Error;
use crate::event::{ActorFailure, GiveUpReason};
use crate::message::{Publish, QoS, SubscribeOptions};
use crate::topic::TopicFilter;

/// Publish a message through this session. Completes when QoS 0 is written to the socket
/// or QoS >= 1 is acknowledged (PUBACK / PUBCOMP).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct PublishMsg(pub Publish);

impl Handler<PublishMsg> for SessionActor {
    type Result = ResponseFuture<Result<(), Error>>;

    fn handle(&mut self, PublishMsg(publish): PublishMsg, ctx: &mut Context<Self>) -> Self::Result {
        self.answer_later(ctx, publish, false)
    }
}

/// [`PublishMsg`] or [`Enqueue`] with the caller's own answer channels: the handle awaits
/// the answer directly, so the actor spawns no task per publish and the caller is woken
/// once, when the answer is there (not also when the message was handled).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct PublishWith {
    /// The message.
    pub publish: Publish,
    /// Answered once the publish is accepted (queued; durable with a store) or refused.
    /// `None`: a refusal goes to `done`.
    pub accepted: Option<super::Responder>,
    /// Answered once the broker acknowledged it. `None` with `accepted` set (`enqueue`):
    /// a later failure becomes an event.
    pub done: Option<super::Responder>,
    /// Submitted through a [`PublishLane`](super::lane::PublishLane): refused while the
    /// lane is held, and holds it on a refusal that may pass.
    pub lane: Option<super::lane::LaneTicket>,
}

impl PublishWith {
    /// `publish` answered on `answer`: on acceptance (`enqueue`: a later failure becomes
    /// an event) or on the broker's acknowledgement.
    pub(crate) fn answering(publish: Publish, answer: super::Responder, enqueue: bool) -> Self {
        let (accepted, done) = if enqueue {
            (Some(answer), None)
        } else {
            (None, Some(answer))
        };
        PublishWith {
            publish,
            accepted,
            done,
            lane: None,
        }
    }
}

impl Handler<PublishWith> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: PublishWith, ctx: &mut Context<Self>) {
        self.take_publish(ctx, msg);
    }
}

impl SessionActor {
    /// Takes a publish in, the one way for every kind of publish message: refused (for
    /// the caller waiting for acceptance, or else for completion) when it cannot be
    /// admitted or its lane is held — a refusal that may pass holds the lane — otherwise
    /// queued. An enqueued publish nobody waits on to completion gets a watcher that turns
    /// a later failure into an event.
    fn take_publish(&mut self, ctx: &mut Context<Self>, msg: PublishWith) {
        let PublishWith {
            publish,
            accepted,
            done,
            lane,
        } = msg;
        let refusal = match &lane {
            Some(ticket) if ticket.is_held() => Some(Error::LaneHeld(self.name.to_string())),
            _ => self.admit(&publish).err(),
        };
        if let Some(e) = refusal {
            if let Some(ticket) = lane.filter(|_| !e.is_permanent()) {
                ticket.hold();
            }
            Completion { accepted, done }.refuse(e);
            return;
        }
        let done = match (&accepted, done) {
            (Some(_), None) => Some(self.watch_enqueued(ctx, publish.topic.clone())),
            (_, done) => done,
        };
        self.queue_admitted(ctx, publish, Completion { accepted, done });
    }

    /// [`take_publish`](Self::take_publish) answered through a future, for the public
    /// [`PublishMsg`] and [`Enqueue`] messages.
    fn answer_later(
        &mut self,
        ctx: &mut Context<Self>,
        publish: Publish,
        enqueue: bool,
    ) -> ResponseFuture<Result<(), Error>> {
        let name = self.name.to_string();
        let (answer, rx) = oneshot::channel();
        self.take_publish(ctx, PublishWith::answering(publish, answer, enqueue));
        Box::pin(async move { rx.await.unwrap_or(Err(Error::SessionClosed(name))) })
    }

    /// The completion of an enqueued publish: nobody waits for it, so a failure after
    /// acceptance is counted and announced as an event.
    fn watch_enqueued(&self, ctx: &mut Context<Self>, topic: String) -> super::Responder {
        let (done, outcome) = oneshot::channel::<Result<(), Error>>();
        let (bus, counters, session) = (
            self.p.bus.clone(),
            Arc::clone(&self.p.counters),
            Arc::clone(&self.name),
        );
        ctx.spawn(
            async move {
                if let Ok(Err(e)) = outcome.await {
                    report_failed_publish(&bus, &counters, session, topic, &e);
                }
            }
            .into_actor(self),
        );
        done
    }
}

/// Queue a message for publishing through this session. Completes once it is accepted:
/// written to the store's outbox (with a store, for QoS >= 1) or queued (without one).
/// What happens to it later — acknowledged, refused by the broker, too large for the
/// broker — is reported as a `publish_failed` event and the `publish_failures_total`
/// counter when it fails.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub struct Enqueue(pub Publish);

impl Handler<Enqueue> for SessionActor {
    type Result = ResponseFuture<Result<(), Error>>;

    fn handle(&mut self, Enqueue(publish): Enqueue, ctx: &mut Context<Self>) -> Self::Result {
        self.answer_later(ctx, publish, true)
    }
}

/// Counts and announces a queued publish that failed after it was accepted.
fn report_failed_publish(
    bus: &crate::event::EventBus,
    counters: &crate::metrics::counters::SessionCounters,
    session: Arc<str>,
    topic: String,
    e: &Error,
) {
    counters
        .publish_failures
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(session = %session, topic = %topic, error = %e, "queued publish failed");
    bus.emit(crate::event::Event::new(
        session,
        crate::event::EventData::PublishFailed {
            topic,
            error: e.to_string(),
        },
    ));
}

/// Subscribe the session to a filter. Completes on SUBACK when connected, at once
/// otherwise (the subscription is sent at every connect).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct Subscribe {
    /// The filter.
    pub filter: TopicFilter,
    /// The maximum QoS asked for.
    pub qos: QoS,
    /// MQTT 5 subscribe options (ignored by MQTT 3.1.1 sessions).
    pub options: SubscribeOptions,
}

impl Handler<Subscribe> for SessionActor {
    type Result = ResponseFuture<Result<(), Error>>;

    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Self::Result {
        let name = self.name.to_string();
        if self.life.is_closed() {
            return Box::pin(async move { Err(Error::SessionClosed(name)) });
        }
        let filter = msg.filter.as_str().to_string();
        let unchanged = self.subscriptions.insert(&filter, msg.qos, msg.options);
        self.publish_status();
        if unchanged || self.state != SessionState::Connected {
            return Box::pin(async { Ok(()) });
        }
        let Some(client) = &self.client else {
            return Box::pin(async { Ok(()) });
        };
        let (tx, rx) = oneshot::channel();
        match client.subscribe_now(&[(filter.clone(), msg.qos, msg.options)]) {
            Ok(()) => self.subscriptions.single_sent(filter, Some(tx)),
            Err(e) => {
                tracing::warn!(session = %self.name, filter = %filter, error = %e,
                    "cannot queue SUBSCRIBE now; it is sent at the next connect");
                return Box::pin(async { Ok(()) });
            }
        }
        Box::pin(async move { rx.await.unwrap_or(Err(Error::SessionClosed(name))) })
    }
}

/// A subscription the application asks for directly
/// ([`SessionHandle::subscribe`](crate::SessionHandle::subscribe)), handled by the router:
/// it counts next to the routes' needs for the same filter, so a direct unsubscribe never
/// ends a route's subscription, a direct QoS 0 never lowers a route's QoS 1, and removing
/// a route never removes a direct subscription. `want: None` withdraws it.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct DirectSubscription {
    /// The session.
    pub session: Arc<str>,
    /// The filter.
    pub filter: TopicFilter,
    /// The QoS and options asked for, or `None` to withdraw.
    pub want: Option<(QoS, SubscribeOptions)>,
}

/// Unsubscribe the session from a filter (sent at once when connected).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), Error>")]
pub(crate) struct Unsubscribe {
    /// The filter, as subscribed.
    pub filter: TopicFilter,
}

impl Handler<Unsubscribe> for SessionActor {
    type Result = Result<(), Error>;

    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) -> Self::Result {
        if self.life.is_closed() {
            return Err(Error::SessionClosed(self.name.to_string()));
        }
        let was_sent = self
            .subscriptions
            .remove(msg.filter.as_str(), self.state == SessionState::Connected);
        self.publish_status();
        if was_sent || !self.p.opts.connect.clean_session {
            match &self.client {
                Some(client) if self.state == SessionState::Connected => {
                    if let Err(e) = client.unsubscribe_now(msg.filter.as_str()) {
                        tracing::warn!(session = %self.name, filter = %msg.filter, error = %e, "cannot queue UNSUBSCRIBE");
                    }
                }
                // A persistent session's broker keeps its subscriptions while we are away:
                // unsubscribe at the next connect.
                _ if !self.p.opts.connect.clean_session => {
                    self.subscriptions.unsubscribe_later(msg.filter.as_str());
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Close the session: wait (briefly) for queued QoS >= 1 publishes, send DISCONNECT (so
/// the broker discards the will message), stop. The actor then answers `SessionClosed`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Close;

impl Handler<Close> for SessionActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Close, _: &mut Context<Self>) -> Self::Result {
        let connected = self.state == SessionState::Connected && !self.life.is_closed();
        let emptied = (!self.outbox.is_empty()).then(|| {
            let (tx, rx) = oneshot::channel();
            self.on_outbox_empty = Some(tx);
            rx
        });
        let (tx, rx) = oneshot::channel();
        if connected {
            self.on_disconnect_written = Some(tx);
        }
        let client = self.client.clone();
        let flush = CLOSE_FLUSH.min(self.p.opts.performance.write_timeout);
        let fut = async move {
            if !connected {
                return;
            }
            if let Some(emptied) = emptied {
                let _ = tokio::time::timeout(flush, emptied).await;
            }
            if let Some(c) = client {
                if c.disconnect_now().is_ok() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
                }
            }
        };
        Box::pin(
            fut.into_actor(self)
                .map(|_, act, ctx| act.finish_close(ctx)),
        )
    }
}

/// Why a session's run ended, as the actor tells its supervisor.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub(crate) enum EndReason {
    /// The actor (or its driver task) stopped unexpectedly; it waits for the verdict.
    Failed(ActorFailure),
    /// The session stopped trying on its own terms (attempts exhausted, connection lost
    /// without auto-reconnect): the supervisor retires it.
    GaveUp(GiveUpReason),
}

/// A session's run ended (sent by the [`SessionActor`] to its supervisor, which answers
/// with [`Resume`] or [`Retire`]).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct SessionEnded {
    /// The session.
    pub session: Arc<str>,
    /// Why.
    pub reason: EndReason,
}

/// The supervisor's verdict after a failure: start connecting again after `delay`.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Resume {
    /// How long to wait first (the restart backoff).
    pub delay: Duration,
}

impl Handler<Resume> for SessionActor {
    type Result = ();

    fn handle(&mut self, Resume { delay }: Resume, ctx: &mut Context<Self>) {
        if !self.life.on_resume() {
            return;
        }
        self.restarts += 1;
        tracing::info!(session = %self.name, restarts = self.restarts, ?delay, "restarting the session");
        self.start_driver(ctx, Some(delay));
        self.publish_status();
    }
}

/// The supervisor's verdict: stop for good (state `gave_up`, event `session_gave_up`).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Retire {
    /// Why.
    pub reason: GiveUpReason,
}

impl Handler<Retire> for SessionActor {
    type Result = ();

    fn handle(&mut self, Retire { reason }: Retire, ctx: &mut Context<Self>) {
        self.retire(ctx, reason);
    }
}

/// The session's current status.
#[derive(Debug, Message)]
#[rtype(result = "SessionStatus")]
pub struct GetStatus;

impl Handler<GetStatus> for SessionActor {
    type Result = MessageResult<GetStatus>;

    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.p.status.borrow().clone())
    }
}

/// Fault injection for tests: stops the actor as if it had failed, so that actix's
/// supervision restarts it (feature `fault-injection`).
#[cfg(feature = "fault-injection")]
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct InjectFailure;

#[cfg(feature = "fault-injection")]
impl Handler<InjectFailure> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: InjectFailure, ctx: &mut Context<Self>) {
        tracing::warn!(session = %self.name, "fault injected: stopping the session actor");
        self.failure = Some(ActorFailure::ActorStopped);
        ctx.stop();
    }
}
