//! Forwarding rules: what matches a filter on one session is published through another,
//! at least once, pipelined and in order.
//!
//! A rule is a queue route on its `from` session (subscribed at the highest QoS its
//! targets can need) and one task. The task takes the route's messages a burst at a time,
//! as long as every target's *lane* has room in its window, and submits each into every
//! target session in arrival order through the lane's [`PublishLane`], so up to `window`
//! messages per target are in flight at once. The sessions answer on one report channel
//! per rule ([`reports`]: accepted, then acknowledged, two reports per publish, read a
//! burst per wake-up): no task, future or channel per message. A refusal never lets a
//! later message overtake an earlier one (the lane is held, the refused message and those
//! behind it are submitted again in order, after a growing delay).
//!
//! Threads: the rule's task runs on its first target session's worker; the daemon puts the
//! sessions a rule joins on one worker (`performance.worker`), so that a forwarded
//! message, its publish, the target's acknowledgement and the source's acknowledgement
//! never cross threads.
//!
//! When a message counts as handled for a target (the source session acknowledges a
//! QoS >= 1 message to its broker only once every target handled it: each target holds
//! its own clone, and the acknowledger acknowledges in arrival order):
//! - with a store: once it is written to the target's durable outbox (store-and-forward:
//!   an outage of the target's link is absorbed by the outbox, up to its
//!   `max_pending_messages`, which the lane does not go past; then the rule stops taking,
//!   the route's queue fills, and the source broker's in-flight window stops the flow —
//!   backpressure, never a drop);
//! - without a store: once the target's broker acknowledged it (PUBACK / PUBCOMP); the
//!   lane keeps within `max_pending_messages` here too, which caps a `window` set above
//!   it.
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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{oneshot, watch};

use super::config::{ForwardConfig, ForwardTarget, Keep};
use super::template::Template;
use mqtt_sessions::error::Error;
use mqtt_sessions::manager::SessionManager;
use mqtt_sessions::message::{Message, MessageProperties, Publish, QoS};
use mqtt_sessions::options::{BrokerUrl, Protocol, SessionOptions};
use mqtt_sessions::router::route::Listener;
use mqtt_sessions::session::lane::{reports, Report, Reporter, Reports, Stage};
use mqtt_sessions::{PublishLane, SessionHandle};

/// First delay before submitting a refused message again.
const RETRY_INITIAL: Duration = Duration::from_millis(50);
/// Longest delay between retries.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Capacity of a rule's route queue.
const RULE_CAPACITY: usize = 256;
/// Most reports read per wake-up of a rule's task.
const REPORT_BURST: usize = 256;
/// Bits of a report's tag that hold a lane's sequence number; above them, the attempt
/// (8 bits) and the lane's index.
const SEQ_BITS: u32 = 48;
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

/// Whether a source session bounds what its broker sends it unacknowledged (MQTT 5 with
/// a Receive Maximum; see [`NO_STORE_WINDOW`]).
pub(crate) fn bounds_its_broker(source: &SessionOptions) -> bool {
    source.protocol == Protocol::V5 && source.performance.receive_maximum.is_some()
}

/// A lane's window towards `target`: the rule's `window`, else the target's `inflight`
/// (at most [`NO_STORE_WINDOW`] without a store from a source that does not bound its
/// broker); the target's `max_pending_messages` caps it (the lane stops taking there,
/// see [`Lane::room`]).
pub(crate) fn lane_window(
    window: Option<u16>,
    target: Option<&SessionOptions>,
    store: bool,
    bounded_source: bool,
) -> usize {
    window.map_or_else(
        || {
            let inflight = target.map_or(100, |o| usize::from(o.performance.inflight));
            if store || bounded_source {
                inflight
            } else {
                inflight.min(NO_STORE_WINDOW)
            }
        },
        usize::from,
    )
}
/// The MQTT 5 user property that lists the brokers (`host:port`, comma-separated) a
/// forwarded message has been on.
pub const HOPS_PROPERTY: &str = "mqtt-sessions-hops";

/// Live counters of one forwarding rule, per target session.
#[derive(Debug, Default)]
pub struct ForwardStats {
    targets: Mutex<BTreeMap<String, Arc<TargetStats>>>,
}

/// Live counters and backlog of one target of a rule (written by the rule's task, read
/// by the HTTP API and the metrics).
#[derive(Debug, Default)]
pub struct TargetStats {
    forwarded: AtomicU64,
    retries: AtomicU64,
    dropped: AtomicU64,
    looped: AtomicU64,
    in_flight: AtomicU64,
    in_flight_peak: AtomicU64,
    waiting: AtomicU64,
    /// When the oldest message not yet acknowledged by the target's broker was taken from
    /// the source (set by the rule's task once per burst).
    oldest: Mutex<Option<Instant>>,
}

impl TargetStats {
    fn snapshot(&self) -> ForwardStatsSnapshot {
        let oldest = self
            .oldest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
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
    /// Resolves (with an error) once the rule's task and every message it held are gone:
    /// the rule is drained.
    done: oneshot::Receiver<()>,
    cancel: watch::Sender<bool>,
    stats: Arc<ForwardStats>,
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
    /// Starts the rule: its route on the source session, and its task (one lane per
    /// target). `store`: the daemon has a store (a message is handled once durable in
    /// the target's outbox).
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
        let filter = mqtt_sessions::topic::TopicFilter::new(config.filter.get_ref().as_str())
            .map_err(Error::Topic)?;
        let source = manager.session(config.from.get_ref()).ok();
        let source_brokers = broker_ids(source.as_ref());
        // The source broker may hold more unacknowledged messages for the source session
        // than its queue limit when the session announced a Receive Maximum.
        let bounded_source = source
            .as_ref()
            .is_some_and(|h| bounds_its_broker(h.options()));
        // The rule's task runs on its first target session's worker, so that its
        // submissions and their answers stay on one thread.
        let mut home = None;
        let mut lanes = Vec::with_capacity(targets.len());
        for target in targets {
            let handle = manager.session(&target.to).ok();
            let options = handle.as_ref().map(SessionHandle::options);
            let window = lane_window(config.window, options, store, bounded_source);
            if home.is_none() {
                home = handle.as_ref().map(SessionHandle::arbiter);
            }
            let outbox = options.map_or(usize::MAX, |o| o.performance.max_pending_messages);
            lanes.push(Lane::new(
                target,
                window,
                outbox,
                broker_ids(handle.as_ref())
                    .into_iter()
                    .filter(|b| !source_brokers.contains(b))
                    .collect(),
            ));
        }
        let (done_tx, done) = oneshot::channel();
        let (cancel, cancel_rx) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let (reporter, reports) = reports();
        let task = RuleTask {
            rule: rule.clone(),
            forward_retained: config.forward_retained,
            manager: manager.clone(),
            filter,
            source_broker: source_brokers.first().cloned(),
            store,
            reporter,
            lanes,
            _done: done_tx,
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
            actix::spawn(task.run(listener, reports, stop_rx, cancel_rx));
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

/// A rule's task and everything it owns.
struct RuleTask {
    rule: String,
    forward_retained: bool,
    manager: SessionManager,
    filter: mqtt_sessions::topic::TopicFilter,
    /// The source session's broker (`host:port`), added to the hops property.
    source_broker: Option<String>,
    /// Handled once durable in the target's outbox (else: once its broker acknowledged).
    store: bool,
    /// Where the target sessions answer (the task reads the other end).
    reporter: Reporter,
    lanes: Vec<Lane>,
    /// Dropped when the task ends: the rule is drained.
    _done: oneshot::Sender<()>,
}

/// Where one message stands in one lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Taken, not submitted yet (submissions before it await an answer to a refusal).
    Queued,
    /// Submitted; the session's acceptance not reported yet.
    Submitted,
    /// Accepted by the target session; its broker's acknowledgement not reported yet.
    Accepted,
    /// Refused for a passing reason (or lost with the session): to be submitted again.
    Retry,
}

/// One message taken into one lane, until its target's broker acknowledged it.
struct Entry {
    /// When the task took it from the source.
    taken: Instant,
    /// The message: this target's share of its source acknowledgement, dropped once
    /// handled (durable in the target's outbox with a store; acknowledged without).
    msg: Option<Message>,
    stage: Step,
    /// Which submission of it the reports are about (a report of an earlier one is
    /// stale).
    attempt: u8,
    /// An acknowledgement report that came before the acceptance report (a refused
    /// submission's reports may come in either order).
    early_ack: Option<Result<(), Error>>,
}

/// One target of a rule: its window and the messages in it, in arrival order.
struct Lane {
    target: Target,
    /// The target's brokers (`host:port`) that the source does not use: a message that
    /// has been on one is not forwarded to it again. (A rule within one broker is checked
    /// by `check-config` instead: its message has always been there.)
    brokers: Vec<String>,
    /// Most messages taken and not yet handled.
    window: usize,
    /// Most messages taken and not yet acknowledged by the target's broker: the target
    /// session's `max_pending_messages` (with a store, handled messages wait in its
    /// outbox past the window; without, this caps a `window` set above it).
    outbox: usize,
    publish: PublishLane,
    /// The target session's handle, looked up again after it closed.
    session: Option<SessionHandle>,
    next_seq: u64,
    /// Taken and not yet acknowledged by the target's broker, by sequence number.
    entries: BTreeMap<u64, Entry>,
    /// Entries not yet handled (holding their place in the window).
    in_flight: usize,
    /// Submissions whose acceptance is not reported yet.
    unanswered: usize,
    /// Entries accepted by the target session, its broker's answer not reported yet.
    waiting: usize,
    /// Refused entries, to submit again in order once every submission is answered.
    retry: BTreeSet<u64>,
    /// Entries taken while refused ones wait: submitted after them.
    queued: VecDeque<u64>,
    /// The delay before the next round of retries.
    delay: Duration,
    /// When the next round of retries goes (set once every submission is answered).
    retry_at: Option<Instant>,
    /// The oldest entry's `taken`, as last published to the stats (the others are
    /// published as they are).
    oldest: Option<Instant>,
}

impl Lane {
    fn new(target: Target, window: usize, outbox: usize, brokers: Vec<String>) -> Lane {
        Lane {
            target,
            brokers,
            window: window.max(1),
            outbox: outbox.max(1),
            publish: PublishLane::new(),
            session: None,
            next_seq: 0,
            entries: BTreeMap::new(),
            in_flight: 0,
            unanswered: 0,
            waiting: 0,
            retry: BTreeSet::new(),
            queued: VecDeque::new(),
            delay: RETRY_INITIAL,
            retry_at: None,
            oldest: None,
        }
    }

    fn stats(&self) -> &TargetStats {
        &self.target.stats
    }

    /// Room left in the window (and in the target's outbox).
    fn room(&self) -> usize {
        let window = self.window.saturating_sub(self.in_flight);
        window.min(self.outbox.saturating_sub(self.entries.len()))
    }

    /// Takes `msg` in (its place in the window), and returns its sequence number.
    fn take(&mut self, msg: Message) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(
            seq,
            Entry {
                taken: Instant::now(),
                msg: Some(msg),
                stage: Step::Queued,
                attempt: 0,
                early_ack: None,
            },
        );
        self.in_flight += 1;
        seq
    }

    /// The entry is handled: its message is dropped (its share of the source
    /// acknowledgement released) and its place in the window freed.
    fn handled(&mut self, seq: u64) {
        if let Some(msg) = self.entries.get_mut(&seq).and_then(|e| e.msg.take()) {
            self.in_flight -= 1;
            drop(msg);
        }
    }

    /// The entry is done with: handled, and no longer tracked.
    fn settle(&mut self, seq: u64) {
        self.handled(seq);
        self.entries.remove(&seq);
    }

    /// Gives an entry up unforwarded: dropped and counted, with a warning.
    fn drop_entry(&mut self, rule: &str, seq: u64, e: &Error) {
        self.stats().dropped.fetch_add(1, Ordering::Relaxed);
        if let Some(topic) = self.entry_topic(seq) {
            tracing::warn!(rule = %rule, target = %self.target.to, topic = %topic, error = %e,
                "message cannot be forwarded; dropped");
        }
        self.settle(seq);
    }

    fn entry_topic(&self, seq: u64) -> Option<String> {
        self.entries
            .get(&seq)
            .and_then(|e| e.msg.as_ref())
            .map(|m| m.topic.to_string())
    }

    /// Gives an entry up unforwarded because the rule stops: the source broker delivers
    /// it again to the persistent session.
    fn give_back(&mut self, rule: &str, seq: u64) {
        self.stats().dropped.fetch_add(1, Ordering::Relaxed);
        if let Some(msg) = self.entries.remove(&seq).and_then(|e| e.msg) {
            tracing::warn!(rule = %rule, target = %self.target.to, topic = %msg.topic,
                "rule stopping; message left unacknowledged for the source broker to deliver again");
            msg.leave_unacknowledged();
            self.in_flight -= 1;
        }
    }

    /// Marks an entry for a retry, logging the refusal (the first of a run at `warn`).
    fn refused(&mut self, rule: &str, seq: u64, e: &Error) {
        let first = self.retry.is_empty();
        if first && !matches!(e, Error::LaneHeld(_)) {
            let topic = self.entry_topic(seq).unwrap_or_default();
            tracing::warn!(rule = %rule, target = %self.target.to, topic = %topic, error = %e,
                "forward refused by the target session; retrying in order");
        } else {
            tracing::debug!(rule = %rule, target = %self.target.to, error = %e, "forward held for a retry");
        }
        if matches!(e, Error::SessionClosed(_)) {
            self.session = None;
        }
        if let Some(entry) = self.entries.get_mut(&seq) {
            entry.stage = Step::Retry;
            entry.early_ack = None;
        }
        self.retry.insert(seq);
    }

    /// Publishes the window in use, the messages waiting for the target's broker and
    /// the oldest entry's age to the stats (once per burst: the window only grows while
    /// a burst is taken, so its peak is seen).
    fn publish_stats(&mut self) {
        let stats = &self.target.stats;
        let in_flight = self.in_flight as u64;
        stats.in_flight.store(in_flight, Ordering::Relaxed);
        stats.in_flight_peak.fetch_max(in_flight, Ordering::Relaxed);
        stats.waiting.store(self.waiting as u64, Ordering::Relaxed);
        let oldest = self.entries.first_key_value().map(|(_, e)| e.taken);
        if oldest != self.oldest {
            self.oldest = oldest;
            *self
                .target
                .stats
                .oldest
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = oldest;
        }
    }
}

impl RuleTask {
    /// The rule's task: takes the route's messages into the lanes while each has room,
    /// submits them, and follows the sessions' reports. Told to stop, it removes the
    /// route and goes on with what the route had queued already (the source sends no
    /// more) until every lane is empty; abandoned (`cancel`), it leaves what it has not
    /// submitted unacknowledged for the source broker to deliver again.
    async fn run(
        mut self,
        listener: Listener,
        mut reports: Reports,
        mut stop: watch::Receiver<bool>,
        mut cancel: watch::Receiver<bool>,
    ) {
        let mut listener = Some(listener);
        let mut stopping = false;
        let mut cancelled = false;
        let mut got = Vec::with_capacity(REPORT_BURST);
        let mut taken = Vec::new();
        loop {
            if cancelled {
                // Whatever is not submitted goes back to the source broker.
                listener = None;
                for i in 0..self.lanes.len() {
                    self.give_back_waiting(i);
                }
            } else {
                self.retry_due().await;
            }
            for lane in &mut self.lanes {
                lane.publish_stats();
            }
            if listener.is_none() && self.lanes.iter().all(|l| l.entries.is_empty()) {
                break;
            }
            let room = self.lanes.iter().map(Lane::room).min().unwrap_or(0);
            let next_retry = self.lanes.iter().filter_map(|l| l.retry_at).min();
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s), if !stopping => {
                    stopping = true;
                    if let Some(l) = listener.as_mut() {
                        l.close();
                    }
                }
                _ = cancel.wait_for(|c| *c), if !cancelled => cancelled = true,
                n = reports.recv_many(&mut got, REPORT_BURST) => {
                    if n == 0 {
                        // Unreachable while the task holds a reporter.
                        break;
                    }
                    for r in got.drain(..) {
                        self.on_report(r);
                    }
                }
                () = sleep_until(next_retry), if next_retry.is_some() => {}
                n = recv_many(listener.as_ref(), &mut taken, room), if room > 0 && listener.is_some() => {
                    if n == 0 {
                        listener = None;
                    }
                    for msg in taken.drain(..) {
                        self.take(msg).await;
                    }
                }
            }
        }
    }

    /// Takes `msg` into every target's lane and submits it there (or queues it behind
    /// refused ones).
    async fn take(&mut self, msg: Message) {
        if msg.retain && !self.forward_retained {
            // A retained message sent on (re)subscribe: forwarded when it was published.
            tracing::debug!(rule = %self.rule, topic = %msg.topic,
                "retained message from the subscription not forwarded (forward_retained = false)");
            return;
        }
        let been_on = hops(&msg);
        let mut into = Vec::with_capacity(self.lanes.len());
        for (i, lane) in self.lanes.iter().enumerate() {
            if lane.brokers.iter().any(|b| been_on.contains(&b.as_str())) {
                lane.stats().looped.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(rule = %self.rule, target = %lane.target.to, topic = %msg.topic,
                    "message has been on the target's broker already; not forwarded (loop)");
            } else {
                into.push(i);
            }
        }
        drop(been_on);
        for i in into {
            let seq = self.lanes[i].take(msg.clone());
            if self.lanes[i].retry.is_empty() && self.lanes[i].queued.is_empty() {
                self.submit(i, seq).await;
            } else {
                self.lanes[i].queued.push_back(seq);
            }
        }
    }

    /// Submits entry `seq` of lane `i` into its target session.
    async fn submit(&mut self, i: usize, seq: u64) {
        let lane = &mut self.lanes[i];
        let Some(entry) = lane.entries.get_mut(&seq) else {
            return;
        };
        entry.attempt = entry.attempt.wrapping_add(1);
        entry.stage = Step::Submitted;
        entry.early_ack = None;
        let tag = tag(i, entry.attempt, seq);
        let Some(msg) = entry.msg.as_ref() else {
            return;
        };
        if lane.session.is_none() {
            match self.manager.session(&lane.target.to) {
                Ok(s) => lane.session = Some(s),
                Err(e) => {
                    lane.publish.hold();
                    lane.refused(&self.rule, seq, &e);
                    return;
                }
            }
        }
        let Some(session) = lane.session.as_ref() else {
            return;
        };
        let v5 = session.options().protocol == Protocol::V5;
        let publish = publish_for(
            &lane.target,
            &self.filter,
            self.source_broker.as_deref(),
            msg,
            v5,
        );
        match session
            .submit_reporting(&lane.publish, publish, &self.reporter, tag)
            .await
        {
            Ok(()) => lane.unanswered += 1,
            Err(e) => lane.drop_entry(&self.rule, seq, &e),
        }
    }

    /// Follows one report of a target session.
    fn on_report(&mut self, report: Report) {
        let (i, attempt, seq) = untag(report.tag);
        let store = self.store;
        let rule = self.rule.as_str();
        let Some(lane) = self.lanes.get_mut(i) else {
            return;
        };
        let Some(entry) = lane.entries.get_mut(&seq) else {
            return;
        };
        if entry.attempt != attempt {
            return; // about an earlier submission
        }
        match (report.stage, entry.stage) {
            (Stage::Accepted, Step::Submitted) => {
                lane.unanswered -= 1;
                match report.result {
                    Ok(()) => {
                        if lane.retry.is_empty() {
                            lane.delay = RETRY_INITIAL;
                        }
                        entry.stage = Step::Accepted;
                        lane.waiting += 1;
                        let early = entry.early_ack.take();
                        if store {
                            // Durable in the target's outbox: handled (the source may
                            // acknowledge it).
                            lane.handled(seq);
                        }
                        if let Some(result) = early {
                            acknowledged(lane, rule, seq, result);
                        }
                    }
                    Err(e) if e.is_permanent() => lane.drop_entry(rule, seq, &e),
                    Err(e) => lane.refused(rule, seq, &e),
                }
            }
            (Stage::Acknowledged, Step::Submitted) => entry.early_ack = Some(report.result),
            (Stage::Acknowledged, Step::Accepted) => {
                acknowledged(lane, rule, seq, report.result);
            }
            _ => {}
        }
    }

    /// Submits the refused entries of every lane whose round of retries is due (all of
    /// its submissions answered, and its delay past), in order, then those queued behind
    /// them.
    async fn retry_due(&mut self) {
        let now = Instant::now();
        for i in 0..self.lanes.len() {
            let lane = &mut self.lanes[i];
            if lane.retry.is_empty() || lane.unanswered > 0 {
                lane.retry_at = None;
                continue;
            }
            let at = *lane.retry_at.get_or_insert(now + lane.delay);
            if at > now {
                continue;
            }
            lane.retry_at = None;
            lane.delay = (lane.delay * 2).min(RETRY_MAX);
            lane.publish.reopen();
            let again: Vec<u64> = std::mem::take(&mut lane.retry).into_iter().collect();
            let queued: Vec<u64> = lane.queued.drain(..).collect();
            lane.stats()
                .retries
                .fetch_add(again.len() as u64, Ordering::Relaxed);
            for seq in again.into_iter().chain(queued) {
                if self.lanes[i].retry.is_empty() {
                    self.submit(i, seq).await;
                } else {
                    // Refused again at once (the session is gone): keep the order.
                    self.lanes[i].queued.push_back(seq);
                }
            }
        }
    }

    /// The rule is abandoned: lane `i`'s refused and queued entries go back to the source
    /// broker (those submitted still get their answers).
    fn give_back_waiting(&mut self, i: usize) {
        let lane = &mut self.lanes[i];
        let back: Vec<u64> = std::mem::take(&mut lane.retry)
            .into_iter()
            .chain(lane.queued.drain(..))
            .collect();
        lane.retry_at = None;
        for seq in back {
            lane.give_back(&self.rule, seq);
        }
    }
}

/// The target broker's answer about entry `seq` (accepted by the target session).
fn acknowledged(lane: &mut Lane, rule: &str, seq: u64, result: Result<(), Error>) {
    let stats = &lane.target.stats;
    lane.waiting -= 1;
    match result {
        // A timed-out publish stays queued in the target's outbox and is still
        // delivered: retrying would only duplicate it.
        Ok(()) | Err(Error::PublishTimeout { .. }) => {
            stats.forwarded.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) if e.is_permanent() => {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(rule = %rule, target = %lane.target.to, error = %e,
                "target broker refused a forwarded message; dropped");
        }
        Err(e) => {
            if lane.entries.get(&seq).is_some_and(|e| e.msg.is_some()) {
                // Accepted into memory only, and the session went away with it.
                lane.publish.hold();
                lane.refused(rule, seq, &e);
                return;
            }
            // With a store it stays in the target's durable outbox, and the session that
            // takes the outbox over sends it.
            tracing::debug!(rule = %rule, target = %lane.target.to, error = %e,
                "forwarded message left in the target's durable outbox");
        }
    }
    lane.settle(seq);
}

/// A report's tag: lane `i`'s entry `seq`, submission `attempt`.
fn tag(i: usize, attempt: u8, seq: u64) -> u64 {
    ((i as u64) << (SEQ_BITS + 8))
        | (u64::from(attempt) << SEQ_BITS)
        | (seq & ((1 << SEQ_BITS) - 1))
}

/// The lane, attempt and sequence number of a report's tag.
fn untag(tag: u64) -> (usize, u8, u64) {
    (
        usize::try_from(tag >> (SEQ_BITS + 8)).unwrap_or(usize::MAX),
        ((tag >> SEQ_BITS) & 0xff) as u8,
        tag & ((1 << SEQ_BITS) - 1),
    )
}

/// Up to `limit` messages of the route's queue (at least one; 0 once it ended).
async fn recv_many(listener: Option<&Listener>, out: &mut Vec<Message>, limit: usize) -> usize {
    match listener {
        Some(l) => l.recv_many(out, limit).await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at` (forever without one).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The publish of `msg` through `target`.
fn publish_for(
    target: &Target,
    filter: &mqtt_sessions::topic::TopicFilter,
    source_broker: Option<&str>,
    msg: &Message,
    v5: bool,
) -> Publish {
    let mut publish = Publish::new(
        target.template.render(&msg.topic, &msg.session, filter),
        msg.payload.clone(),
    )
    .qos(target.qos.apply(msg.qos))
    .retain(target.retain.apply(msg.retain));
    if v5 {
        // MQTT 5 properties pass through; subscription identifiers belong to the source's
        // subscription; the hops property gains the source's broker.
        let mut props = msg
            .properties
            .as_deref()
            .cloned()
            .unwrap_or_else(MessageProperties::default);
        props.subscription_identifiers.clear();
        let mut been: Vec<String> = hops(msg).into_iter().map(str::to_string).collect();
        props.user_properties.retain(|(k, _)| k != HOPS_PROPERTY);
        if let Some(b) = source_broker {
            if !been.iter().any(|h| h == b) {
                been.push(b.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_gives_back_its_lane_attempt_and_sequence_number() {
        for (i, attempt, seq) in [(0, 0, 0), (3, 255, (1 << SEQ_BITS) - 1), (255, 7, 123_456)] {
            assert_eq!(untag(tag(i, attempt, seq)), (i, attempt, seq));
        }
    }
}
