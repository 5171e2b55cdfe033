//! Forwarding rules: what matches a filter on one session is published through another,
//! at least once, pipelined and in order.
//!
//! A rule is a queue route on its `from` session (subscribed at the highest QoS its
//! targets can need). The rule's task takes each message from the route's queue and
//! hands it to one *lane* per target, waiting only for room in that lane's window. Each
//! target's lane submits the messages into the target session in arrival order through a
//! [`PublishLane`], so up to `window` of them are in flight at once, and a refusal
//! never lets a later message overtake an earlier one (the lane is held, the refused
//! message and those behind it are submitted again in order).
//!
//! Threads: each lane runs on its target session's worker, and the rule's task beside its
//! first lane; the daemon puts the sessions a rule joins on one worker
//! (`performance.worker`), so that a forwarded message, its publish, the target's
//! acknowledgement and the source's acknowledgement never cross threads.
//!
//! When a message counts as handled for a target (the source session acknowledges a
//! QoS >= 1 message to its broker only once every target handled it: each target holds
//! its own clone, and the acknowledger acknowledges in arrival order):
//! - with a store: once it is written to the target's durable outbox (store-and-forward:
//!   an outage of the target's link is absorbed by the outbox, up to its
//!   `max_pending_messages`; past that the window fills, the route's queue fills, and the
//!   source broker's in-flight window stops the flow — backpressure, never a drop);
//! - without a store: once the target's broker acknowledged it (PUBACK / PUBCOMP).
//!
//! So a message is always held by someone who will deliver it — the source broker, or
//! every target's durable outbox — even when the daemon is killed: at least once across
//! a crash (a target that had it already may get it twice).
//!
//! A publish that can never succeed (payload too large for the target, ...) is dropped,
//! counted and acknowledged. When the rule stops before a message could be forwarded
//! (shutdown, reload), the message is left unacknowledged, so that the source broker
//! delivers it again to the persistent session.
//!
//! Loops: on MQTT 5, a forwarded message carries the brokers it has been on in a user
//! property ([`HOPS_PROPERTY`]); a rule does not forward a message to a broker it has
//! been on already (so two daemons with rules A→B and B→A carry a message across once).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

use super::config::{ForwardConfig, ForwardTarget, Keep};
use super::template::Template;
use mqtt_sessions::error::Error;
use mqtt_sessions::manager::SessionManager;
use mqtt_sessions::message::{Message, MessageProperties, Publish, QoS};
use mqtt_sessions::options::{BrokerUrl, Protocol};
use mqtt_sessions::router::route::Listener;
use mqtt_sessions::{PublishLane, SessionHandle, Submitted};

/// First delay before submitting a refused message again.
const RETRY_INITIAL: Duration = Duration::from_millis(50);
/// Longest delay between retries.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Capacity of a rule's route queue.
const RULE_CAPACITY: usize = 256;
/// Most messages in a rule's window by default without a store, when the source session
/// cannot bound what its broker sends (MQTT 3.1.1, or MQTT 5 without a Receive Maximum).
/// Every message in the window is then also unacknowledged at the source broker, and
/// mosquitto drops a client's QoS >= 1 messages once it holds more than its queue limit
/// (`max_queued_messages`, 1,000 by default) plus the client's in-flight window (20 for
/// such a client): the window and the rule's route queue stay inside it. An MQTT 5 source
/// with a Receive Maximum (the daemon sets one for a rule's source) moves that limit up
/// by as much, and a store takes messages out of the window once durable in the target's
/// outbox: then the window is the target's `inflight`.
const NO_STORE_WINDOW: usize = 500;
/// The MQTT 5 user property that lists the brokers (`host:port`, comma-separated) a
/// forwarded message has been on.
pub const HOPS_PROPERTY: &str = "mqtt-sessions-hops";

/// Live counters of one forwarding rule, per target session.
#[derive(Debug, Default)]
pub struct ForwardStats {
    targets: Mutex<BTreeMap<String, Arc<TargetStats>>>,
}

/// Live counters and backlog of one target of a rule.
#[derive(Debug, Default)]
pub struct TargetStats {
    forwarded: AtomicU64,
    retries: AtomicU64,
    dropped: AtomicU64,
    looped: AtomicU64,
    in_flight: AtomicU64,
    in_flight_peak: AtomicU64,
    waiting: AtomicU64,
    /// When each message not yet acknowledged by the target's broker was taken from the
    /// source, by the lane's sequence number.
    taken: Mutex<BTreeMap<u64, Instant>>,
}

impl TargetStats {
    fn snapshot(&self) -> ForwardStatsSnapshot {
        let oldest = self
            .taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .next()
            .map_or(0.0, |t| t.elapsed().as_secs_f64());
        ForwardStatsSnapshot {
            forwarded: self.forwarded.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            looped: self.looped.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            in_flight_peak: self.in_flight_peak.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            oldest_age_seconds: oldest,
        }
    }

    fn took(&self, seq: u64) {
        self.taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(seq, Instant::now());
        let n = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.in_flight_peak.fetch_max(n, Ordering::Relaxed);
    }

    fn settled(&self, seq: u64) {
        self.taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&seq);
    }
}

/// A rule's (or one target's) counters and backlog as plain numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ForwardStatsSnapshot {
    /// Messages published through the target (acknowledged by its broker for QoS >= 1);
    /// for a rule, the sum over its targets.
    pub forwarded: u64,
    /// Submissions refused for a passing reason (queue full, target restarting) and made
    /// again.
    pub retries: u64,
    /// Messages given up on (cannot ever be published, or the daemon stopped first).
    pub dropped: u64,
    /// Messages not forwarded because they had been on the target's broker already (MQTT
    /// 5 loop prevention).
    pub looped: u64,
    /// Messages taken from the source and not yet handled by the target (not yet durable
    /// in its outbox with a store, not yet acknowledged by its broker without): the
    /// window in use.
    pub in_flight: u64,
    /// The most messages ever in flight at once.
    pub in_flight_peak: u64,
    /// Messages the target session accepted that its broker has not acknowledged yet
    /// (queued in its outbox, or sent and awaiting PUBACK / PUBCOMP).
    pub waiting: u64,
    /// Age, in seconds, of the oldest message taken from the source and not yet
    /// acknowledged by the target's broker (0 when there is none).
    pub oldest_age_seconds: f64,
}

impl ForwardStatsSnapshot {
    fn add(self, t: &ForwardStatsSnapshot) -> ForwardStatsSnapshot {
        ForwardStatsSnapshot {
            forwarded: self.forwarded + t.forwarded,
            retries: self.retries + t.retries,
            dropped: self.dropped + t.dropped,
            looped: self.looped + t.looped,
            in_flight: self.in_flight + t.in_flight,
            in_flight_peak: self.in_flight_peak.max(t.in_flight_peak),
            waiting: self.waiting + t.waiting,
            oldest_age_seconds: self.oldest_age_seconds.max(t.oldest_age_seconds),
        }
    }
}

impl ForwardStats {
    /// The rule's totals: the sums over its targets (the peak and the oldest age: the
    /// highest).
    pub fn snapshot(&self) -> ForwardStatsSnapshot {
        self.by_target()
            .values()
            .fold(ForwardStatsSnapshot::default(), |a, t| a.add(t))
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
    /// Tells the rule's task to stop taking messages (it closes the route and forwards
    /// what the route had queued).
    stop: watch::Sender<bool>,
    /// Resolves (with an error) once the rule's task, the lanes and every message they held
    /// are gone: the rule is drained.
    done: oneshot::Receiver<()>,
    cancel: watch::Sender<bool>,
    stats: Arc<ForwardStats>,
}

/// Held by everything that holds a rule's messages; the rule is drained when the last
/// one is dropped.
type Drain = Arc<oneshot::Sender<()>>;

/// What one rule's handler needs.
struct Forwarder {
    rule: String,
    forward_retained: bool,
    lanes: Vec<LaneInput>,
    _drain: Drain,
}

/// The handler's side of one target's lane.
struct LaneInput {
    to: String,
    /// The target's brokers (`host:port`) that the source does not use: a message that
    /// has been on one is not forwarded to it again. (A rule within one broker is checked
    /// by `check-config` instead: its message has always been there.)
    brokers: Vec<String>,
    window: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Item>,
    stats: Arc<TargetStats>,
    next_seq: std::cell::Cell<u64>,
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

    /// The QoS the source subscription needs for this target: `keep` may need QoS 2.
    fn source_qos(&self) -> QoS {
        match self.qos {
            Keep::Keep => QoS::ExactlyOnce,
            Keep::Set(q) => q,
        }
    }
}

/// One message on its way through one target's lane.
struct Item {
    /// Arrival order in the lane.
    seq: u64,
    /// The message (this target's share of its acknowledgement: dropped once handled).
    msg: Message,
    /// Its slot in the window.
    slot: Slot,
}

/// A message's place in a lane's window: counted in flight while it lives.
struct Slot {
    _permit: OwnedSemaphorePermit,
    stats: Arc<TargetStats>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The `host:port` of each of `session`'s brokers.
fn broker_ids(session: Option<&SessionHandle>) -> Vec<String> {
    session
        .map(|s| {
            let o = s.options();
            o.brokers
                .iter()
                .filter_map(|b| BrokerUrl::parse(&o.name, b).ok())
                .map(|b| b.authority())
                .collect()
        })
        .unwrap_or_default()
}

impl RunningRule {
    /// Starts the rule: one lane per target, and the route on its source session.
    /// `store`: the daemon has a store (a message is handled once durable in the
    /// target's outbox).
    pub async fn start(
        manager: &SessionManager,
        config: &ForwardConfig,
        stats: Arc<ForwardStats>,
        store: bool,
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
        let source_qos = targets
            .iter()
            .map(Target::source_qos)
            .max()
            .unwrap_or(QoS::AtLeastOnce);
        let to = targets
            .iter()
            .map(|t| t.to.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let (done_tx, done) = oneshot::channel();
        let drain: Drain = Arc::new(done_tx);
        let (cancel, cancel_rx) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let filter = mqtt_sessions::topic::TopicFilter::new(config.filter.get_ref().as_str())
            .map_err(Error::Topic)?;
        let source = manager.session(config.from.get_ref()).ok();
        let source_brokers = broker_ids(source.as_ref());
        // The source broker may hold more unacknowledged messages for the source session
        // than its queue limit when the session announced a Receive Maximum.
        let bounded_source = source.as_ref().is_some_and(|h| {
            let o = h.options();
            o.protocol == Protocol::V5 && o.performance.receive_maximum.is_some()
        });
        // Each lane runs on its target session's worker, so that its submissions and
        // their answers stay on one thread; the rule's task runs beside its first lane.
        let mut home = None;
        let mut lanes = Vec::with_capacity(targets.len());
        for target in targets {
            let handle = manager.session(&target.to).ok();
            let window = config.window.map_or_else(
                || {
                    let inflight = handle
                        .as_ref()
                        .map_or(100, |h| usize::from(h.options().performance.inflight));
                    if store || bounded_source {
                        inflight
                    } else {
                        inflight.min(NO_STORE_WINDOW)
                    }
                },
                usize::from,
            );
            let (tx, rx) = mpsc::unbounded_channel();
            lanes.push(LaneInput {
                to: target.to.clone(),
                brokers: broker_ids(handle.as_ref())
                    .into_iter()
                    .filter(|b| !source_brokers.contains(b))
                    .collect(),
                window: Arc::new(Semaphore::new(window)),
                tx,
                stats: Arc::clone(&target.stats),
                next_seq: std::cell::Cell::new(0),
            });
            let lane = Lane {
                rule: rule.clone(),
                manager: manager.clone(),
                filter: filter.clone(),
                source_broker: source_brokers.first().cloned(),
                target,
                store,
                cancel: cancel_rx.clone(),
                _drain: Arc::clone(&drain),
            };
            let arbiter = handle.map_or_else(actix::Arbiter::current, |h| h.arbiter());
            home.get_or_insert_with(|| arbiter.clone());
            if !arbiter.spawn_fn(move || {
                actix::spawn(run_lane(Rc::new(lane), rx));
            }) {
                return Err(Error::Shutdown);
            }
        }
        let fwd_cancel = cancel_rx.clone();
        let fwd = Forwarder {
            rule: rule.clone(),
            forward_retained: config.forward_retained,
            lanes,
            _drain: drain,
        };
        let listener = manager
            .route(config.filter.get_ref())
            .session(config.from.get_ref())
            .qos(source_qos)
            .capacity(RULE_CAPACITY)
            .name(format!("forward.{rule}"))
            .listen()
            .await?;
        let home = home.unwrap_or_else(actix::Arbiter::current);
        if !home.spawn_fn(move || {
            actix::spawn(fwd.run(listener, stop_rx, fwd_cancel));
        }) {
            return Err(Error::Shutdown);
        }
        tracing::info!(rule = %rule, from = %config.from.get_ref(), filter = %config.filter.get_ref(),
            to = %to, qos = %source_qos, store, "forward rule started");
        Ok(RunningRule {
            config: config.clone(),
            stop,
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

    /// Stops taking messages, lets those taken be forwarded for up to `grace`, then
    /// stops retrying (messages not handled by then are left unacknowledged for the
    /// source broker to deliver again, and counted as dropped).
    pub async fn stop(mut self, grace: Duration) {
        let _ = self.stop.send(true);
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

/// The brokers listed in `msg`'s hops property.
fn hops(msg: &Message) -> Vec<&str> {
    msg.properties
        .iter()
        .flat_map(|p| p.user_properties.iter())
        .filter(|(k, _)| k == HOPS_PROPERTY)
        .flat_map(|(_, v)| v.split(','))
        .filter(|h| !h.is_empty())
        .collect()
}

impl Forwarder {
    /// The rule's task: takes each message of the route's queue into the lanes. Told to
    /// stop, it removes the route and goes on with what the route had queued already
    /// (the source sends no more), until the queue ends; a message it cannot take into a
    /// lane (the rule is abandoned: `cancel`) is left unacknowledged for the source broker
    /// to deliver again.
    async fn run(
        self,
        mut listener: Listener,
        mut stop: watch::Receiver<bool>,
        mut cancel: watch::Receiver<bool>,
    ) {
        let mut stopping = false;
        loop {
            let msg = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s), if !stopping => {
                    stopping = true;
                    listener.close();
                    continue;
                }
                m = listener.recv() => match m {
                    Some(m) => m,
                    None => break,
                },
            };
            if !self.take(msg, &mut cancel).await {
                break;
            }
        }
    }

    /// Takes `msg` into every target's lane (waiting for room in each window) and
    /// returns: the lanes forward it and release its acknowledgement. False when the rule
    /// was abandoned while it waited (the message is then left unacknowledged, for the
    /// source broker to deliver again) or its lanes are gone.
    async fn take(&self, msg: Message, cancel: &mut watch::Receiver<bool>) -> bool {
        if msg.retain && !self.forward_retained {
            // A retained message sent on (re)subscribe: forwarded when it was published.
            tracing::debug!(rule = %self.rule, topic = %msg.topic,
                "retained message from the subscription not forwarded (forward_retained = false)");
            return true;
        }
        let been_on = hops(&msg);
        for lane in &self.lanes {
            if lane.brokers.iter().any(|b| been_on.contains(&b.as_str())) {
                lane.stats.looped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(rule = %self.rule, target = %lane.to, topic = %msg.topic,
                    "message has been on the target's broker already; not forwarded (loop)");
                continue;
            }
            let permit = tokio::select! {
                biased;
                p = Arc::clone(&lane.window).acquire_owned() => p.ok(),
                _ = cancel.wait_for(|c| *c) => None,
            };
            let Some(permit) = permit else {
                msg.leave_unacknowledged();
                return false;
            };
            let seq = lane.next_seq.get();
            lane.next_seq.set(seq + 1);
            lane.stats.took(seq);
            let item = Item {
                seq,
                msg: msg.clone(),
                slot: Slot {
                    _permit: permit,
                    stats: Arc::clone(&lane.stats),
                },
            };
            if let Err(mpsc::error::SendError(item)) = lane.tx.send(item) {
                // The lane is gone (the rule is stopping): the source delivers it again.
                lane.stats.settled(item.seq);
                item.msg.leave_unacknowledged();
                return false;
            }
        }
        true
    }
}

/// One target's lane: submits the rule's messages into the target session, in order,
/// up to the window at once.
struct Lane {
    rule: String,
    manager: SessionManager,
    filter: mqtt_sessions::topic::TopicFilter,
    /// The source session's broker (`host:port`), added to the hops property.
    source_broker: Option<String>,
    target: Target,
    /// Handled once durable in the target's outbox (else: once its broker acknowledged).
    store: bool,
    cancel: watch::Receiver<bool>,
    _drain: Drain,
}

/// What a submission's task reports to its lane.
enum Back {
    /// The target session accepted it (or refused it for good: dropped and counted).
    Answered,
    /// Refused for a passing reason: to be submitted again, in order.
    Refused(Item, Error),
    /// Accepted, then lost with the target session (no store): to be submitted again.
    Lost(Item, Error),
}

/// The lane's loop: submits what the rule's task takes, in order; after a refusal, waits
/// until every submission has been answered, then submits the refused messages again
/// in their order (after a growing delay) before anything new.
async fn run_lane(lane: Rc<Lane>, mut input: mpsc::UnboundedReceiver<Item>) {
    let state = LaneState {
        publish: PublishLane::new(),
        session: RefCell::new(None),
    };
    let (back_tx, mut back) = mpsc::unbounded_channel::<Back>();
    let mut unanswered = 0usize;
    let mut retry: BTreeMap<u64, Item> = BTreeMap::new();
    let mut delay = RETRY_INITIAL;
    let mut cancel = lane.cancel.clone();
    let mut cancel_open = true;
    let mut input_open = true;
    loop {
        if !retry.is_empty() && unanswered == 0 {
            if *cancel.borrow() {
                for (_, item) in std::mem::take(&mut retry) {
                    lane.give_back(item);
                }
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = cancel.wait_for(|c| *c), if cancel_open => { continue; }
            }
            delay = (delay * 2).min(RETRY_MAX);
            state.publish.reopen();
            for (_, item) in std::mem::take(&mut retry) {
                lane.target.stats.retries.fetch_add(1, Ordering::Relaxed);
                unanswered += 1;
                lane.submit(&state, item, &back_tx).await;
            }
            continue;
        }
        if !input_open && unanswered == 0 && retry.is_empty() {
            break;
        }
        tokio::select! {
            Some(b) = back.recv() => match b {
                Back::Answered => {
                    unanswered -= 1;
                    if retry.is_empty() {
                        delay = RETRY_INITIAL;
                    }
                }
                Back::Refused(item, e) => {
                    unanswered -= 1;
                    lane.refused(&item, &e, retry.is_empty());
                    retry.insert(item.seq, item);
                }
                Back::Lost(item, e) => {
                    state.publish.hold();
                    lane.refused(&item, &e, retry.is_empty());
                    retry.insert(item.seq, item);
                }
            },
            item = input.recv(), if input_open && retry.is_empty() => match item {
                Some(item) => {
                    unanswered += 1;
                    lane.submit(&state, item, &back_tx).await;
                }
                None => input_open = false,
            },
            r = cancel.changed(), if cancel_open => {
                if r.is_err() {
                    cancel_open = false;
                }
            }
        }
    }
}

/// A lane's connection to its target session.
struct LaneState {
    publish: PublishLane,
    /// The target session's handle, looked up again after it closed.
    session: RefCell<Option<SessionHandle>>,
}

impl Lane {
    /// Logs a refusal (the first of a run at `warn`).
    fn refused(&self, item: &Item, e: &Error, first: bool) {
        if first && !matches!(e, Error::LaneHeld(_)) {
            tracing::warn!(rule = %self.rule, target = %self.target.to, topic = %item.msg.topic, error = %e,
                "forward refused by the target session; retrying in order");
        } else {
            tracing::debug!(rule = %self.rule, target = %self.target.to, error = %e, "forward held for a retry");
        }
    }

    /// Gives a message up unforwarded because the rule stops: the source broker delivers
    /// it again to the persistent session.
    fn give_back(&self, item: Item) {
        self.target.stats.dropped.fetch_add(1, Ordering::Relaxed);
        self.target.stats.settled(item.seq);
        tracing::warn!(rule = %self.rule, target = %self.target.to, topic = %item.msg.topic,
            "rule stopping; message left unacknowledged for the source broker to deliver again");
        item.msg.leave_unacknowledged();
    }

    /// The publish of `msg` through this target.
    fn publish_for(&self, msg: &Message, v5: bool) -> Publish {
        let t = &self.target;
        let mut publish = Publish::new(
            t.template.render(&msg.topic, &msg.session, &self.filter),
            msg.payload.clone(),
        )
        .qos(t.qos.apply(msg.qos))
        .retain(t.retain.apply(msg.retain));
        if v5 {
            // MQTT 5 properties pass through; subscription identifiers belong to the
            // source's subscription; the hops property gains the source's broker.
            let mut props = msg
                .properties
                .as_deref()
                .cloned()
                .unwrap_or_else(MessageProperties::default);
            props.subscription_identifiers.clear();
            let mut been: Vec<String> = hops(msg).into_iter().map(str::to_string).collect();
            props.user_properties.retain(|(k, _)| k != HOPS_PROPERTY);
            if let Some(b) = &self.source_broker {
                if !been.contains(b) {
                    been.push(b.clone());
                }
            }
            if !been.is_empty() {
                props
                    .user_properties
                    .push((HOPS_PROPERTY.to_string(), been.join(",")));
            }
            if !props.is_empty() {
                publish = publish.properties(props);
            }
        }
        publish
    }

    /// Submits `item` into the target session and starts the task that follows it; that
    /// task reports on `back` exactly once for its acceptance.
    async fn submit(
        self: &Rc<Self>,
        state: &LaneState,
        item: Item,
        back: &mpsc::UnboundedSender<Back>,
    ) {
        let cached = state.session.borrow().clone();
        let session = match cached {
            Some(s) => Ok(s),
            None => self.manager.session(&self.target.to),
        };
        let session = match session {
            Ok(s) => s,
            Err(e) => {
                state.publish.hold();
                let _ = back.send(Back::Refused(item, e));
                return;
            }
        };
        let v5 = session.options().protocol == Protocol::V5;
        let publish = self.publish_for(&item.msg, v5);
        match session.submit(&state.publish, publish).await {
            Ok(submitted) => {
                *state.session.borrow_mut() = Some(session);
                actix::spawn(Rc::clone(self).follow(item, submitted, back.clone()));
            }
            Err(e) if e.is_permanent() => {
                self.dropped(&item, &e);
                drop(item);
                let _ = back.send(Back::Answered);
            }
            Err(e) => {
                *state.session.borrow_mut() = None;
                state.publish.hold();
                let _ = back.send(Back::Refused(item, e));
            }
        }
    }

    fn dropped(&self, item: &Item, e: &Error) {
        self.target.stats.dropped.fetch_add(1, Ordering::Relaxed);
        self.target.stats.settled(item.seq);
        tracing::warn!(rule = %self.rule, target = %self.target.to, topic = %item.msg.topic, error = %e,
            "message cannot be forwarded; dropped");
    }

    /// Follows one submission: its acceptance (reported to the lane), then its
    /// acknowledgement by the target's broker. Releases the message's share of the
    /// source acknowledgement once it is handled (durable with a store, acknowledged
    /// without).
    async fn follow(
        self: Rc<Self>,
        item: Item,
        mut submitted: Submitted,
        back: mpsc::UnboundedSender<Back>,
    ) {
        let stats = &self.target.stats;
        match submitted.accepted().await {
            Err(e) if e.is_permanent() => {
                self.dropped(&item, &e);
                drop(item);
                let _ = back.send(Back::Answered);
                return;
            }
            Err(e) => {
                if let Err(mpsc::error::SendError(Back::Refused(item, _))) =
                    back.send(Back::Refused(item, e))
                {
                    self.give_back(item);
                }
                return;
            }
            Ok(()) => {
                let _ = back.send(Back::Answered);
            }
        }
        stats.waiting.fetch_add(1, Ordering::Relaxed);
        let Item { seq, msg, slot } = item;
        let mut held = Some((msg, slot));
        if self.store {
            // Durable in the target's outbox: handled (the source may acknowledge it).
            held = None;
        }
        let result = submitted.acknowledged().await;
        stats.waiting.fetch_sub(1, Ordering::Relaxed);
        match result {
            // A timed-out publish stays queued in the target's outbox and is still
            // delivered: retrying would only duplicate it.
            Ok(()) | Err(Error::PublishTimeout { .. }) => {
                stats.forwarded.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.is_permanent() => {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(rule = %self.rule, target = %self.target.to, error = %e,
                    "target broker refused a forwarded message; dropped");
            }
            Err(e) => {
                if let Some((msg, slot)) = held.take() {
                    // Accepted into memory only, and the session went away with it.
                    let item = Item { seq, msg, slot };
                    if let Err(mpsc::error::SendError(Back::Lost(item, _))) =
                        back.send(Back::Lost(item, e))
                    {
                        self.give_back(item);
                    }
                    return;
                }
                // With a store it stays in the target's durable outbox, and the session
                // that takes the outbox over sends it.
                tracing::debug!(rule = %self.rule, target = %self.target.to, error = %e,
                    "forwarded message left in the target's durable outbox");
            }
        }
        stats.settled(seq);
        drop(held);
    }
}
