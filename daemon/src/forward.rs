//! Forwarding rules: what matches a filter on one session is published through another,
//! at least once.
//!
//! A rule is a route on its `from` session (subscribed at QoS 1) whose async handler
//! awaits the `to` session's publish completion before it returns: the target broker's
//! PUBACK/PUBCOMP, or, with a store, the publish written to the target's durable outbox.
//! The source session acknowledges a QoS >= 1 message to its broker only once that handler
//! has returned (the message's last clone is dropped), so a message is always held by
//! someone who will deliver it — the source broker, or the target's outbox — even when the
//! daemon is killed: at least once across a crash. A slow target slows the source (the
//! route's queue is bounded, and so is the source broker's in-flight window).
//!
//! A failed publish that may succeed later (queue full, target being restarted) is retried
//! with a growing delay. A publish that can never succeed (payload too large for the
//! target, ...) is dropped, counted and acknowledged. When the rule stops before a message
//! could be forwarded (shutdown, reload), the message is left unacknowledged, so that the
//! source broker delivers it again to the persistent session.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{oneshot, watch};

use super::config::ForwardConfig;
use super::template::Template;
use mqtt_sessions::error::Error;
use mqtt_sessions::manager::SessionManager;
use mqtt_sessions::message::{Message, MessageProperties, Publish, QoS};
use mqtt_sessions::router::route::Route;

/// First delay before retrying a failed forward.
const RETRY_INITIAL: Duration = Duration::from_millis(50);
/// Longest delay between retries.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Capacity of a rule's route queue.
const RULE_CAPACITY: usize = 256;

/// Live counters of one forwarding rule.
#[derive(Debug, Default)]
pub struct ForwardStats {
    forwarded: AtomicU64,
    retries: AtomicU64,
    dropped: AtomicU64,
}

/// A rule's counters as plain numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ForwardStatsSnapshot {
    /// Messages published through the target (acknowledged for QoS >= 1).
    pub forwarded: u64,
    /// Publish attempts that failed and were retried.
    pub retries: u64,
    /// Messages given up on (cannot ever be published, or the daemon stopped first).
    pub dropped: u64,
}

impl ForwardStats {
    /// A snapshot.
    pub fn snapshot(&self) -> ForwardStatsSnapshot {
        ForwardStatsSnapshot {
            forwarded: self.forwarded.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// A running rule: its route and the means to stop it.
#[derive(Debug)]
pub struct RunningRule {
    config: ForwardConfig,
    route: Option<Route>,
    /// Resolves (with an error) once the route's handler is gone: the queue is drained.
    done: oneshot::Receiver<()>,
    cancel: watch::Sender<bool>,
    stats: Arc<ForwardStats>,
}

/// What one rule's handler needs.
struct Forwarder {
    rule: String,
    manager: SessionManager,
    to: String,
    template: Template,
    filter: mqtt_sessions::topic::TopicFilter,
    qos: super::config::Keep<QoS>,
    retain: super::config::Keep<bool>,
    forward_retained: bool,
    stats: Arc<ForwardStats>,
    cancel: watch::Receiver<bool>,
    /// Dropped with the handler: tells [`RunningRule::drain`] the queue is empty.
    _done: oneshot::Sender<()>,
}

impl RunningRule {
    /// Registers the rule's route on its source session.
    pub async fn start(
        manager: &SessionManager,
        config: &ForwardConfig,
        stats: Arc<ForwardStats>,
    ) -> Result<RunningRule, Error> {
        let rule = config.name.get_ref().clone();
        let template = Template::parse(config.topic.get_ref())
            .map_err(|reason| Error::InvalidRoute(format!("forward rule {rule:?}: {reason}")))?;
        let (done_tx, done) = oneshot::channel();
        let (cancel, cancel_rx) = watch::channel(false);
        let fwd = Rc::new(Forwarder {
            rule: rule.clone(),
            manager: manager.clone(),
            to: config.to.get_ref().clone(),
            template,
            filter: mqtt_sessions::topic::TopicFilter::new(config.filter.get_ref().as_str())
                .map_err(Error::Topic)?,
            qos: config.qos,
            retain: config.retain,
            forward_retained: config.forward_retained,
            stats: Arc::clone(&stats),
            cancel: cancel_rx,
            _done: done_tx,
        });
        let route = manager
            .route(config.filter.get_ref())
            .session(config.from.get_ref())
            .qos(QoS::AtLeastOnce)
            .capacity(RULE_CAPACITY)
            .name(format!("forward.{rule}"))
            .handle_async(move |msg| {
                let fwd = Rc::clone(&fwd);
                async move { fwd.forward(msg).await }
            })
            .await?;
        tracing::info!(rule = %rule, from = %config.from.get_ref(), filter = %config.filter.get_ref(),
            to = %config.to.get_ref(), topic = %config.topic.get_ref(), "forward rule started");
        Ok(RunningRule {
            config: config.clone(),
            route: Some(route),
            done,
            cancel,
            stats,
        })
    }

    /// The rule as configured.
    pub fn config(&self) -> &ForwardConfig {
        &self.config
    }

    /// The rule's counters.
    pub fn stats(&self) -> ForwardStatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops taking messages, lets the queued ones be forwarded for up to `grace`, then
    /// stops retrying (messages still failing then are dropped and counted).
    pub async fn stop(mut self, grace: Duration) {
        drop(self.route.take());
        let drained = tokio::time::timeout(grace, &mut self.done).await.is_ok();
        if !drained {
            tracing::warn!(rule = %self.config.name.get_ref(), ?grace,
                "forward rule did not drain in time; abandoning retries");
            let _ = self.cancel.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.done).await;
        }
        let s = self.stats.snapshot();
        tracing::info!(rule = %self.config.name.get_ref(), forwarded = s.forwarded,
            retries = s.retries, dropped = s.dropped, "forward rule stopped");
    }
}

impl Forwarder {
    async fn forward(&self, msg: Message) {
        if msg.retain && !self.forward_retained {
            // A retained message sent on (re)subscribe: forwarded when it was published.
            tracing::debug!(rule = %self.rule, topic = %msg.topic,
                "retained message from the subscription not forwarded (forward_retained = false)");
            return;
        }
        let mut publish = Publish::new(
            self.template.render(&msg.topic, &msg.session, &self.filter),
            msg.payload.clone(),
        )
        .qos(self.qos.apply(msg.qos))
        .retain(self.retain.apply(msg.retain));
        // MQTT 5 properties pass through when the target speaks MQTT 5 too (the source
        // does, or the message would have none).
        if let Some(props) = &msg.properties {
            let v5 = self
                .manager
                .session(&self.to)
                .is_ok_and(|t| t.options().protocol == mqtt_sessions::options::Protocol::V5);
            if v5 {
                let mut props = MessageProperties::clone(props);
                // Subscription identifiers belong to the source's subscription.
                props.subscription_identifiers.clear();
                publish = publish.properties(props);
            }
        }
        let mut delay = RETRY_INITIAL;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = match self.manager.session(&self.to) {
                Ok(target) => target.publish(publish.clone()).await,
                Err(e) => Err(e),
            };
            let err = match result {
                // A timed-out publish stays queued in the target's outbox and is still
                // delivered: retrying would only duplicate it.
                Ok(()) | Err(Error::PublishTimeout { .. }) => {
                    self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(e) => e,
            };
            if matches!(err, Error::Shutdown) || *self.cancel.borrow() {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(rule = %self.rule, topic = %publish.topic, error = %err,
                    "rule stopping; message left unacknowledged for the source broker to deliver again");
                msg.leave_unacknowledged();
                return;
            }
            if is_permanent(&err) {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(rule = %self.rule, topic = %publish.topic, error = %err,
                    "message cannot be forwarded; dropped");
                return;
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            if attempt == 1 {
                tracing::warn!(rule = %self.rule, topic = %publish.topic, error = %err,
                    "forward failed; retrying");
            } else {
                tracing::debug!(rule = %self.rule, attempt, error = %err, "forward retry failed");
            }
            let mut cancel = self.cancel.clone();
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = cancel.wait_for(|c| *c) => {}
            }
            delay = (delay * 2).min(RETRY_MAX);
        }
    }
}

/// Errors that no retry can fix.
fn is_permanent(e: &Error) -> bool {
    matches!(
        e,
        Error::PayloadTooLarge { .. }
            | Error::Topic(_)
            | Error::InvalidQos(_)
            | Error::NotConnected { .. }
    )
}
