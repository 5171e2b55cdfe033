//! The messages a [`SessionActor`] answers, one handler each.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::core::{EndReason, Input};
use super::state::SessionState;
use super::{SessionActor, SessionStatus, Waiter, CLOSE_FLUSH};
use std::sync::Arc;

use crate::error::Error;
use crate::event::GiveUpReason;
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
    pub accepted: Option<Waiter>,
    /// Answered once the broker acknowledged it. `None` with `accepted` set (`enqueue`):
    /// a later failure becomes an event.
    pub done: Option<Waiter>,
    /// Submitted through a [`PublishLane`](super::lane::PublishLane): refused while the
    /// lane is held, and holds it on a refusal that may pass.
    pub lane: Option<super::lane::LaneTicket>,
}

impl PublishWith {
    /// `publish` answered on `answer`: on acceptance (`enqueue`: a later failure becomes
    /// an event) or on the broker's acknowledgement.
    pub(crate) fn answering(publish: Publish, answer: super::Responder, enqueue: bool) -> Self {
        let answer = Waiter::Caller(answer);
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
    /// A publish answered through a future, for the public [`PublishMsg`] and
    /// [`Enqueue`] messages.
    fn answer_later(
        &mut self,
        ctx: &mut Context<Self>,
        publish: Publish,
        enqueue: bool,
    ) -> ResponseFuture<Result<(), Error>> {
        let (answer, rx) = oneshot::channel();
        self.take_publish(ctx, PublishWith::answering(publish, answer, enqueue));
        self.answer_from(rx)
    }

    /// The future of an answer the core gives later.
    fn answer_from(
        &self,
        rx: oneshot::Receiver<Result<(), Error>>,
    ) -> ResponseFuture<Result<(), Error>> {
        let name = self.core.name().to_string();
        Box::pin(async move { rx.await.unwrap_or(Err(Error::SessionClosed(name))) })
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

    fn handle(&mut self, msg: Subscribe, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.feed(
            Input::Subscribe {
                filter: msg.filter.as_str().to_string(),
                qos: msg.qos,
                options: msg.options,
                responder: Waiter::Caller(tx),
            },
            ctx,
        );
        self.answer_from(rx)
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
    type Result = ResponseFuture<Result<(), Error>>;

    fn handle(&mut self, msg: Unsubscribe, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let filter = msg.filter.as_str().to_string();
        self.feed(
            Input::Unsubscribe {
                filter,
                responder: Waiter::Caller(tx),
            },
            ctx,
        );
        self.answer_from(rx)
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
        let connected =
            self.core.state() == SessionState::Connected && !self.core.life().is_closed();
        let emptied = (self.core.outbox_len() > 0).then(|| {
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
                .map(|_, act, ctx| act.feed(Input::Close, ctx)),
        )
    }
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
        self.feed(Input::Resume { delay }, ctx);
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
        self.feed(Input::Retire(reason), ctx);
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
        self.feed(Input::InjectFailure, ctx);
    }
}
