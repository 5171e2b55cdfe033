//! Forwarding rules: what matches a filter on one session is published through another,
//! at least once.
//!
//! A rule is a route on its `from` session (subscribed at QoS 1) whose async handler
//! publishes each message through every target at once and returns when each target's
//! publish completed: the target broker's PUBACK/PUBCOMP, or, with a store, the publish
//! written to the target's durable outbox. Each target's publish holds its own clone of
//! the message until it completed; the source session acknowledges a QoS >= 1 message to
//! its broker only once the last clone is dropped — after the slowest target. So a message
//! is always held by someone who will deliver it — the source broker, or every target's
//! outbox — even when the daemon is killed: at least once across a crash (a target that
//! had it already may get it twice). A slow target slows the source (the route's queue is
//! bounded, and so is the source broker's in-flight window).
//!
//! A failed publish that may succeed later (queue full, target being restarted) is retried
//! with a growing delay. A publish that can never succeed (payload too large for the
//! target, ...) is dropped, counted and acknowledged. When the rule stops before a message
//! could be forwarded (shutdown, reload), the message is left unacknowledged, so that the
//! source broker delivers it again to the persistent session.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{oneshot, watch};

use super::config::{ForwardConfig, ForwardTarget, Keep};
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

/// Live counters of one forwarding rule, per target session.
#[derive(Debug, Default)]
pub struct ForwardStats {
    targets: Mutex<BTreeMap<String, Arc<TargetStats>>>,
}

/// Live counters of one target of a rule.
#[derive(Debug, Default)]
pub struct TargetStats {
    forwarded: AtomicU64,
    retries: AtomicU64,
    dropped: AtomicU64,
}

impl TargetStats {
    fn snapshot(&self) -> ForwardStatsSnapshot {
        ForwardStatsSnapshot {
            forwarded: self.forwarded.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// A rule's (or one target's) counters as plain numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ForwardStatsSnapshot {
    /// Messages published through the target (acknowledged for QoS >= 1); for a rule,
    /// the sum over its targets.
    pub forwarded: u64,
    /// Publish attempts that failed and were retried.
    pub retries: u64,
    /// Messages given up on (cannot ever be published, or the daemon stopped first).
    pub dropped: u64,
}

impl ForwardStats {
    /// The rule's totals: the sums over its targets.
    pub fn snapshot(&self) -> ForwardStatsSnapshot {
        self.by_target()
            .values()
            .fold(ForwardStatsSnapshot::default(), |a, t| {
                ForwardStatsSnapshot {
                    forwarded: a.forwarded + t.forwarded,
                    retries: a.retries + t.retries,
                    dropped: a.dropped + t.dropped,
                }
            })
    }

    /// The counters of each target, by target session.
    pub fn by_target(&self) -> BTreeMap<String, ForwardStatsSnapshot> {
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.snapshot()))
            .collect()
    }

    /// The counters of target `to` (made on first use; kept across reloads, as counters
    /// must not go back).
    pub fn target(&self, to: &str) -> Arc<TargetStats> {
        let mut targets = self.targets.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(targets.entry(to.to_string()).or_default())
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
    filter: mqtt_sessions::topic::TopicFilter,
    forward_retained: bool,
    targets: Vec<Target>,
    cancel: watch::Receiver<bool>,
    /// Dropped with the handler: tells [`RunningRule::drain`] the queue is empty.
    _done: oneshot::Sender<()>,
}

/// One target of a rule, ready to publish.
struct Target {
    to: String,
    template: Template,
    qos: Keep<QoS>,
    retain: Keep<bool>,
    stats: Arc<TargetStats>,
}

impl Target {
    fn new(rule: &str, t: &ForwardTarget, stats: &ForwardStats) -> Result<Target, Error> {
        let template = Template::parse(t.topic.get_ref())
            .map_err(|reason| Error::InvalidRoute(format!("forward rule {rule:?}: {reason}")))?;
        Ok(Target {
            to: t.to.get_ref().clone(),
            template,
            qos: t.qos,
            retain: t.retain,
            stats: stats.target(t.to.get_ref()),
        })
    }
}

impl RunningRule {
    /// Registers the rule's route on its source session.
    pub async fn start(
        manager: &SessionManager,
        config: &ForwardConfig,
        stats: Arc<ForwardStats>,
    ) -> Result<RunningRule, Error> {
        let rule = config.name.get_ref().clone();
        let targets = config
            .all_targets()
            .iter()
            .map(|t| Target::new(&rule, t, &stats))
            .collect::<Result<Vec<_>, _>>()?;
        if targets.is_empty() {
            return Err(Error::InvalidRoute(format!(
                "forward rule {rule:?}: no target"
            )));
        }
        let to = targets
            .iter()
            .map(|t| t.to.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let (done_tx, done) = oneshot::channel();
        let (cancel, cancel_rx) = watch::channel(false);
        let fwd = Rc::new(Forwarder {
            rule: rule.clone(),
            manager: manager.clone(),
            filter: mqtt_sessions::topic::TopicFilter::new(config.filter.get_ref().as_str())
                .map_err(Error::Topic)?,
            forward_retained: config.forward_retained,
            targets,
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
            to = %to, "forward rule started");
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
    /// Publishes `msg` through every target at once; returns when each is done with it.
    async fn forward(&self, msg: Message) {
        if msg.retain && !self.forward_retained {
            // A retained message sent on (re)subscribe: forwarded when it was published.
            tracing::debug!(rule = %self.rule, topic = %msg.topic,
                "retained message from the subscription not forwarded (forward_retained = false)");
            return;
        }
        match self.targets.as_slice() {
            [one] => self.forward_to(one, msg).await,
            targets => {
                // One clone per target, each dropped when that target's publish completed:
                // the source's acknowledgement waits for the last of them.
                let each = targets.iter().map(|t| self.forward_to(t, msg.clone()));
                let all = futures_util::future::join_all(each);
                drop(msg);
                all.await;
            }
        }
    }

    /// Publishes `msg` through `target`, retrying what may succeed later; drops `msg`
    /// (its share of the acknowledgement) only once done.
    async fn forward_to(&self, target: &Target, msg: Message) {
        let mut publish = Publish::new(
            target
                .template
                .render(&msg.topic, &msg.session, &self.filter),
            msg.payload.clone(),
        )
        .qos(target.qos.apply(msg.qos))
        .retain(target.retain.apply(msg.retain));
        // MQTT 5 properties pass through when the target speaks MQTT 5 too (the source
        // does, or the message would have none).
        if let Some(props) = &msg.properties {
            let v5 = self
                .manager
                .session(&target.to)
                .is_ok_and(|t| t.options().protocol == mqtt_sessions::options::Protocol::V5);
            if v5 {
                let mut props = MessageProperties::clone(props);
                // Subscription identifiers belong to the source's subscription.
                props.subscription_identifiers.clear();
                publish = publish.properties(props);
            }
        }
        let stats = &target.stats;
        let mut delay = RETRY_INITIAL;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = match self.manager.session(&target.to) {
                Ok(session) => session.publish(publish.clone()).await,
                Err(e) => Err(e),
            };
            let err = match result {
                // A timed-out publish stays queued in the target's outbox and is still
                // delivered: retrying would only duplicate it.
                Ok(()) | Err(Error::PublishTimeout { .. }) => {
                    stats.forwarded.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(e) => e,
            };
            if matches!(err, Error::Shutdown) || *self.cancel.borrow() {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(rule = %self.rule, target = %target.to, topic = %publish.topic, error = %err,
                    "rule stopping; message left unacknowledged for the source broker to deliver again");
                msg.leave_unacknowledged();
                return;
            }
            if is_permanent(&err) {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(rule = %self.rule, target = %target.to, topic = %publish.topic, error = %err,
                    "message cannot be forwarded; dropped");
                return;
            }
            stats.retries.fetch_add(1, Ordering::Relaxed);
            if attempt == 1 {
                tracing::warn!(rule = %self.rule, target = %target.to, topic = %publish.topic, error = %err,
                    "forward failed; retrying");
            } else {
                tracing::debug!(rule = %self.rule, target = %target.to, attempt, error = %err,
                    "forward retry failed");
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
