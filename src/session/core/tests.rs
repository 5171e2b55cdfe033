//! The core's transitions as tables: each step is one input and everything it causes,
//! the wire calls first (they happen during the input) and then the effects, in order,
//! written as short lines. No broker, no runtime.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::event::ErrorKind;
use crate::options::SessionOptions;
use crate::session::outbox::Outbox;

/// The connection's request side, recorded; `room` requests fit before it is full.
struct FakeWire {
    attached: bool,
    room: usize,
    log: Vec<String>,
}

impl FakeWire {
    fn new() -> Self {
        FakeWire {
            attached: true,
            room: usize::MAX,
            log: Vec::new(),
        }
    }

    fn take(&mut self) -> bool {
        if !self.attached || self.room == 0 {
            return false;
        }
        self.room -= 1;
        true
    }
}

impl Wire for FakeWire {
    fn attached(&self) -> bool {
        self.attached
    }

    fn publish(&mut self, p: &Publish, pkid: u16) -> bool {
        let ok = self.take();
        if ok {
            self.log.push(format!("wire publish {} #{pkid}", p.topic));
        }
        ok
    }

    fn release(&mut self, pkid: u16) -> bool {
        let ok = self.take();
        if ok {
            self.log.push(format!("wire pubrel #{pkid}"));
        }
        ok
    }

    fn subscribe(&mut self, subs: &[(String, QoS, SubscribeOptions)]) -> bool {
        let ok = self.take();
        if ok {
            let filters: Vec<&str> = subs.iter().map(|(f, _, _)| f.as_str()).collect();
            self.log
                .push(format!("wire subscribe {}", filters.join(" ")));
        }
        ok
    }

    fn unsubscribe(&mut self, filter: &str) -> bool {
        let ok = self.take();
        if ok {
            self.log.push(format!("wire unsubscribe {filter}"));
        }
        ok
    }
}

/// The first word of a `Debug` rendering: a variant's name.
fn variant(x: &impl std::fmt::Debug) -> String {
    let s = format!("{x:?}");
    s.split([' ', '(', '{']).next().unwrap_or("").to_string()
}

fn op(op: &StoreOp) -> String {
    match op {
        StoreOp::PushMany(p) => format!("push {}", p.len()),
        StoreOp::SetPacketIds { ids, flush } => {
            let ids: Vec<String> = ids
                .iter()
                .map(|i| {
                    let rel = if i.released { " released" } else { "" };
                    format!("{}#{}{rel}", i.seq, i.pkid)
                })
                .collect();
            let flush = if *flush { " flushed" } else { "" };
            format!("ids {}{flush}", ids.join(" "))
        }
        StoreOp::Remove { seqs, ids } => {
            let ids = if *ids { " with ids" } else { "" };
            format!("remove {seqs:?}{ids}")
        }
        StoreOp::PutMeta(_) => "meta".into(),
    }
}

fn line(e: &Effect<u32>) -> String {
    match e {
        Effect::Answer(r, Ok(())) => format!("answer {r} ok"),
        Effect::Answer(r, Err(e)) => format!("answer {r} {}", variant(e)),
        Effect::Emit(EventData::SessionStateChanged { new, .. }) => format!("state {new}"),
        Effect::Emit(d) => format!("emit {}", variant(d)),
        Effect::Store(o) => format!("store {}", op(o)),
        Effect::StoreThen(o, then) => format!("store {} then {}", op(o), variant(then)),
        Effect::FlushRemovalsSoon => "flush removals soon".into(),
        Effect::StartTick => "start tick".into(),
        Effect::StopTick => "stop tick".into(),
        Effect::StartDriver(None) => "start driver".into(),
        Effect::StartDriver(Some(d)) => format!("start driver after {d:?}"),
        Effect::StopDriver => "stop driver".into(),
        Effect::Resend(items) => {
            let items: Vec<String> = items
                .iter()
                .map(|i| match i {
                    Resend::Publish { pkid, publish } => format!("{} #{pkid}", publish.topic),
                    Resend::PubRel(pkid) => format!("pubrel #{pkid}"),
                })
                .collect();
            format!("resend [{}]", items.join(", "))
        }
        Effect::ReportEnd(EndReason::Failed(f)) => format!("report failed {}", variant(f)),
        Effect::ReportEnd(EndReason::GaveUp(r)) => format!("report gave up {}", variant(r)),
        Effect::Stop => "stop".into(),
    }
}

/// A core for `opts`, with a supervisor or not, with a store or not.
struct Harness {
    core: SessionCore<u32>,
    wire: FakeWire,
}

fn options() -> SessionOptions {
    let mut o = SessionOptions::new("s", "mqtt://127.0.0.1:1883");
    o.performance.inflight = 4;
    o.performance.max_pending_messages = 3;
    o
}

fn harness(opts: SessionOptions, store: bool, supervisor: bool) -> Harness {
    let brokers: Arc<[BrokerUrl]> = opts
        .brokers
        .iter()
        .map(|b| BrokerUrl::parse("s", b).unwrap())
        .collect();
    let mut core = SessionCore::new(
        CoreParts {
            outbox: Outbox::new(opts.performance.max_pending_messages),
            opts: Arc::new(opts),
            brokers,
            client_id: Arc::from("s"),
            counters: Arc::new(SessionCounters::default()),
            has_store: store,
            has_supervisor: supervisor,
            meta: SessionMeta::default(),
            ids_on_disk: false,
        },
        Now::current(),
    );
    let first: Vec<String> = core.take_effects().iter().map(line).collect();
    let expected: Vec<String> = if store {
        vec!["store meta".into()]
    } else {
        vec![]
    };
    assert_eq!(
        first, expected,
        "a new core saves its metadata (with a store)"
    );
    Harness {
        core,
        wire: FakeWire::new(),
    }
}

impl Harness {
    /// Feeds `input`; returns the wire calls and effects as lines.
    fn on(&mut self, input: Input<u32>) -> Vec<String> {
        let effects = self.core.on(input, Now::current(), &mut self.wire);
        let mut lines = std::mem::take(&mut self.wire.log);
        lines.extend(effects.iter().map(line));
        lines
    }

    /// Feeds each input and checks what it caused.
    fn table(&mut self, steps: Vec<(Input<u32>, &[&str])>) {
        for (i, (input, want)) in steps.into_iter().enumerate() {
            let what = format!("{input:?}");
            let got = self.on(input);
            assert_eq!(got, want, "step {i}: {what}");
        }
    }

    /// Started, a driver for MQTT 3.1.1 (the outbox chooses ids), an attempt, connected with no
    /// subscriptions; the effects are not checked here.
    fn connect(&mut self, session_present: bool) {
        self.on(Input::Started);
        self.on(driver_started());
        self.on(attempt());
        self.on(connected(session_present));
    }
}

fn publish(n: u32, topic: &str, qos: QoS) -> Input<u32> {
    Input::Publish {
        publish: Publish::new(topic, "x").qos(qos),
        completion: Completion {
            accepted: None,
            done: Some(n),
        },
        lane: None,
    }
}

fn enqueue(n: u32, topic: &str) -> Input<u32> {
    Input::Publish {
        publish: Publish::new(topic, "x").qos(QoS::AtLeastOnce),
        completion: Completion {
            accepted: Some(n),
            done: None,
        },
        lane: None,
    }
}

/// A driver for MQTT 3.1.1 (the outbox chooses the packet ids).
fn driver_started() -> Input<u32> {
    Input::DriverStarted {
        takes_packet_ids: true,
    }
}

/// The first attempt, at the first broker.
fn attempt() -> Input<u32> {
    Input::Attempt {
        broker: 0,
        attempt: 1,
    }
}

fn connected(session_present: bool) -> Input<u32> {
    Input::Connected {
        broker: 0,
        session_present,
        assigned_client_id: None,
        limits: BrokerLimits::default(),
    }
}

fn failure() -> ConnectionFailure {
    ConnectionFailure {
        kind: ErrorKind::Io,
        broker: "mqtt://127.0.0.1:1883".into(),
        message: "reset".into(),
        reason: None,
    }
}

fn lost(qos1: usize) -> Input<u32> {
    Input::Lost {
        failure: failure(),
        drained_qos1: qos1,
        drained_qos0: 0,
        drained_subs: 0,
    }
}

fn puback(pkid: u16) -> Input<u32> {
    Input::Ack(BrokerAck::Pub {
        pkid,
        refused: None,
    })
}

fn stored(then: Then, result: Result<Vec<u64>, String>) -> Input<u32> {
    Input::Stored { then, result }
}

#[test]
fn connect_then_a_publish_completes_on_its_puback() {
    let mut h = harness(options(), false, true);
    h.table(vec![
        (Input::Started, &["start driver"]),
        (driver_started(), &[]),
        (attempt(), &["emit SessionConnecting", "state connecting"]),
        // Queued while connecting; the tick watches the deadline.
        (publish(1, "a", QoS::AtLeastOnce), &["start tick"]),
        (
            connected(false),
            &[
                "wire publish a #1",
                "emit SessionConnected",
                "state connected",
                "resend []",
                "emit SessionReady",
            ],
        ),
        (Input::Written(Written::Publish(1)), &[]),
        (puback(1), &["answer 1 ok"]),
        (Input::Tick, &["stop tick"]),
        // A PUBACK for nothing in flight changes nothing.
        (puback(1), &[]),
    ]);
}

#[test]
fn what_admission_refuses() {
    let mut h = harness(options(), false, true);
    h.table(vec![
        (Input::Started, &["start driver"]),
        (publish(1, "a", QoS::AtMostOnce), &["answer 1 NotConnected"]),
        (publish(2, "a/+", QoS::AtLeastOnce), &["answer 2 Topic"]),
        (publish(3, "a", QoS::AtLeastOnce), &["start tick"]),
        (publish(4, "a", QoS::AtLeastOnce), &[]),
        (publish(5, "a", QoS::AtLeastOnce), &[]),
        // max_pending_messages = 3.
        (publish(6, "a", QoS::AtLeastOnce), &["answer 6 QueueFull"]),
    ]);
}

#[test]
fn a_full_wire_stops_the_pump_and_the_next_input_goes_on() {
    let mut h = harness(options(), false, true);
    h.connect(false);
    h.wire.room = 1;
    h.table(vec![
        (
            publish(1, "a", QoS::AtLeastOnce),
            &["wire publish a #1", "start tick"],
        ),
        (publish(2, "b", QoS::AtLeastOnce), &[]),
    ]);
    h.wire.room = 10;
    h.table(vec![(Input::Tick, &["wire publish b #2"])]);
}

#[test]
fn a_dropped_connection_resends_with_the_same_id_only_when_the_broker_kept_the_session() {
    for (session_present, clean, after) in [
        // Persistent session, broker kept it: resumed under its id, DUP, before the rest.
        (true, false, vec!["resend [a #1]"]),
        // Persistent session, broker kept nothing: sent again as new (a new id).
        (false, false, vec!["wire publish a #2", "resend []"]),
        // Clean session: sent again as new.
        (false, true, vec!["wire publish a #2", "resend []"]),
    ] {
        let mut o = options();
        o.connect.clean_session = clean;
        let mut h = harness(o, false, true);
        h.connect(false);
        h.table(vec![
            (
                publish(1, "a", QoS::AtLeastOnce),
                &["wire publish a #1", "start tick"],
            ),
            (Input::Written(Written::Publish(1)), &[]),
            (lost(0), &["emit SessionDisconnected", "state reconnecting"]),
        ]);
        let got = h.on(connected(session_present));
        let got: Vec<&str> = got
            .iter()
            .map(String::as_str)
            .filter(|l| l.starts_with("wire") || l.starts_with("resend"))
            .collect();
        assert_eq!(
            got, after,
            "session_present {session_present}, clean {clean}"
        );
        let id = if session_present { 1 } else { 2 };
        h.table(vec![
            (Input::Written(Written::Publish(id)), &[]),
            (puback(id), &["answer 1 ok"]),
        ]);
    }
}

#[test]
fn qos0_not_written_when_the_connection_drops_is_refused_and_counted() {
    let mut h = harness(options(), false, true);
    h.connect(false);
    h.table(vec![
        (
            publish(1, "a", QoS::AtMostOnce),
            &["wire publish a #0", "start tick"],
        ),
        (
            Input::Lost {
                failure: failure(),
                drained_qos1: 0,
                drained_qos0: 1,
                drained_subs: 0,
            },
            &[
                "answer 1 NotConnected",
                "emit SessionDisconnected",
                "state reconnecting",
            ],
        ),
    ]);
    assert_eq!(
        h.core
            .counters
            .dropped_on_disconnect
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn giving_up_with_and_without_a_supervisor() {
    // A supervisor decides: the core reports and waits; `Retire` ends it.
    let mut h = harness(options(), false, true);
    h.on(Input::Started);
    h.table(vec![
        (publish(1, "a", QoS::AtLeastOnce), &["start tick"]),
        (
            Input::DriverGaveUp {
                attempts: 3,
                lost: false,
            },
            &["report gave up AttemptsExhausted"],
        ),
        (
            Input::Retire(GiveUpReason::AttemptsExhausted {
                attempts: 3,
                last_error: None,
            }),
            &[
                "stop driver",
                "answer 1 SessionGaveUp",
                "state gave_up",
                "emit SessionGaveUp",
            ],
        ),
        (
            publish(2, "a", QoS::AtLeastOnce),
            &["answer 2 SessionGaveUp"],
        ),
        // A second verdict, a late resume, a restart: nothing starts.
        (
            Input::Retire(GiveUpReason::AttemptsExhausted {
                attempts: 3,
                last_error: None,
            }),
            &[],
        ),
        (
            Input::Resume {
                delay: Duration::ZERO,
            },
            &[],
        ),
        (Input::Started, &[]),
    ]);
    // No supervisor: the session retires itself.
    let mut h = harness(options(), false, false);
    h.on(Input::Started);
    h.table(vec![(
        Input::DriverGaveUp {
            attempts: 0,
            lost: true,
        },
        &["stop driver", "state gave_up", "emit SessionGaveUp"],
    )]);
}

#[test]
fn close_while_connecting_fails_what_waits_and_starts_nothing_after() {
    let mut h = harness(options(), false, true);
    h.table(vec![
        (Input::Started, &["start driver"]),
        (attempt(), &["emit SessionConnecting", "state connecting"]),
        (publish(1, "a", QoS::AtLeastOnce), &["start tick"]),
        (
            Input::Close,
            &[
                "stop driver",
                "answer 1 SessionClosed",
                "state closed",
                "stop",
            ],
        ),
        // Supervision restarts the stopped actor idle.
        (Input::Restarting, &[]),
        (Input::Started, &[]),
        (
            publish(2, "a", QoS::AtLeastOnce),
            &["answer 2 SessionClosed"],
        ),
        (Input::Close, &[]),
    ]);
}

#[test]
fn close_while_connected_says_disconnected() {
    let mut h = harness(options(), false, true);
    h.connect(false);
    h.table(vec![(
        Input::Close,
        &[
            "stop driver",
            "emit SessionDisconnected",
            "state closed",
            "stop",
        ],
    )]);
}

#[test]
fn restart_verdicts() {
    // With a supervisor: the restart is reported and nothing starts until `Resume`.
    let mut h = harness(options(), false, true);
    h.connect(false);
    h.table(vec![
        (
            publish(1, "a", QoS::AtLeastOnce),
            &["wire publish a #1", "start tick"],
        ),
        (Input::DriverEnded, &["stop"]),
        (
            Input::Restarting,
            &[
                "report failed DriverEnded",
                "emit SessionDisconnected",
                "state reconnecting",
                "state disconnected",
            ],
        ),
        (Input::Started, &["start tick"]),
        (
            Input::Resume {
                delay: Duration::from_millis(5),
            },
            &["start driver after 5ms"],
        ),
        // One verdict per failure.
        (
            Input::Resume {
                delay: Duration::from_millis(5),
            },
            &[],
        ),
        (driver_started(), &[]),
    ]);
    // The publish handed to the dead connection goes again on the next one.
    h.on(attempt());
    let got = h.on(connected(false));
    assert_eq!(got.first().map(String::as_str), Some("wire publish a #2"));
    assert_eq!(h.core.status_view().restarts, 1);

    // Without a supervisor: restarted after the reconnect backoff.
    let mut h = harness(options(), false, false);
    h.on(Input::Started);
    h.table(vec![
        (Input::InjectFailure, &["stop"]),
        // Not reported (nobody to tell); it was not connected: no state change.
        (Input::Restarting, &[]),
    ]);
    let got = h.on(Input::Started);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("start driver after"), "{got:?}");
    // A driver that ends after the session gave up is no failure.
    let mut h = harness(options(), false, false);
    h.on(Input::Started);
    h.on(Input::DriverGaveUp {
        attempts: 1,
        lost: false,
    });
    h.table(vec![(Input::DriverEnded, &[])]);
}

/// What a connected session with a store does with its first QoS 1 publish (`a`): on the
/// wire at once, written to the store meanwhile.
const FIRST_SENT_EARLY: &[&str] = &[
    "wire publish a #1",
    "store push 1 then Committed",
    "start tick",
];

#[test]
fn with_a_store_a_qos1_publish_goes_out_while_it_is_written_and_is_accepted_once_durable() {
    let mut h = harness(options(), true, true);
    h.connect(false);
    h.table(vec![
        (enqueue(1, "a"), FIRST_SENT_EARLY),
        // Arrive while the first write runs: on the wire at once, written next.
        (enqueue(2, "b"), &["wire publish b #2"]),
        (enqueue(3, "c"), &["wire publish c #3"]),
        (Input::Written(Written::Publish(1)), &[]),
        (Input::Written(Written::Publish(2)), &[]),
        (Input::Written(Written::Publish(3)), &[]),
        // b completes before its write started: it is never written.
        (puback(2), &[]),
        (
            stored(Then::Committed, Ok(vec![10])),
            &["answer 1 ok", "store push 1 then Committed"],
        ),
        (puback(1), &["flush removals soon"]),
        // c completes while it is written: it leaves the store once the write is done.
        (puback(3), &[]),
        (
            stored(Then::Committed, Ok(vec![11])),
            &["answer 2 ok", "answer 3 ok"],
        ),
        // Removals go before any other write of the session.
        (Input::FlushRemovals, &["store remove [10, 11]"]),
        (Input::FlushRemovals, &[]),
    ]);
}

#[test]
fn with_a_store_a_qos2_publish_and_what_follows_it_are_durable_before_they_are_queued() {
    let mut h = harness(options(), true, true);
    h.connect(false);
    h.table(vec![
        (
            publish(1, "a", QoS::ExactlyOnce),
            &["store push 1 then Committed", "start tick"],
        ),
        // Behind a held publish a QoS 1 one waits too, so that the order holds.
        (enqueue(2, "b"), &[]),
        (
            stored(Then::Committed, Ok(vec![10])),
            &["wire publish a #1", "store push 1 then Committed"],
        ),
        (
            stored(Then::Committed, Ok(vec![11])),
            &["wire publish b #2", "answer 2 ok"],
        ),
        // Nothing held any more: the next QoS 1 publish goes out at once.
        (
            enqueue(3, "c"),
            &["wire publish c #3", "store push 1 then Committed"],
        ),
        (Input::Written(Written::Publish(1)), &[]),
        (Input::Written(Written::Publish(2)), &[]),
        (puback(2), &["flush removals soon"]),
        (Input::FlushRemovals, &["store remove [11]"]),
    ]);
}

#[test]
fn a_failed_store_write_refuses_the_held_publishes_and_tells_those_sent_early() {
    let mut h = harness(options(), true, true);
    h.connect(false);
    h.table(vec![
        (enqueue(1, "a"), FIRST_SENT_EARLY),
        // Not durable: its caller hears so; it stays queued (and on the wire).
        (
            stored(Then::Committed, Err("disk full".into())),
            &["answer 1 StoreWrite"],
        ),
        (Input::Written(Written::Publish(1)), &[]),
        // Never in the store: nothing to remove.
        (puback(1), &[]),
        (
            publish(2, "b", QoS::ExactlyOnce),
            &["store push 1 then Committed"],
        ),
        (
            stored(Then::Committed, Err("disk full".into())),
            &["answer 2 StoreWrite"],
        ),
        (Input::Tick, &["stop tick"]),
        // QoS 0 never goes to the store.
        (
            publish(3, "a", QoS::AtMostOnce),
            &["wire publish a #0", "start tick"],
        ),
    ]);
}

#[test]
fn a_persistent_session_with_a_store_records_ids_before_the_wire_and_the_pubrec_before_the_pubrel()
{
    let mut o = options();
    o.connect.clean_session = false;
    let mut h = harness(o, true, true);
    h.connect(false);
    h.table(vec![
        (
            publish(1, "a", QoS::ExactlyOnce),
            &["store push 1 then Committed", "start tick"],
        ),
        (
            stored(Then::Committed, Ok(vec![7])),
            &["store ids 7#1 flushed then IdsRecorded"],
        ),
        // Nothing more is handed while the ids are recorded.
        (
            publish(2, "b", QoS::AtLeastOnce),
            &["store push 1 then Committed"],
        ),
        (stored(Then::Committed, Ok(vec![8])), &[]),
        (
            stored(Then::IdsRecorded, Ok(vec![])),
            &["wire publish a #1", "store ids 8#2 then IdsRecorded"],
        ),
        (
            stored(Then::IdsRecorded, Ok(vec![])),
            &["wire publish b #2"],
        ),
        (Input::Written(Written::Publish(1)), &[]),
        // PUBREC: the `released` flag is on disk before the PUBREL goes.
        (
            Input::Ack(BrokerAck::Rec(1)),
            &["store ids 7#1 released flushed then Released"],
        ),
        (stored(Then::Released(1), Ok(vec![])), &["wire pubrel #1"]),
        (
            Input::Ack(BrokerAck::Comp(1)),
            &["flush removals soon", "answer 1 ok"],
        ),
        // Its id goes from the store with it.
        (Input::FlushRemovals, &["store remove [7] with ids"]),
    ]);
}

#[test]
fn failed_id_records_put_the_batch_back_in_the_queue() {
    let mut o = options();
    o.connect.clean_session = false;
    let mut h = harness(o, true, true);
    h.connect(false);
    h.on(publish(1, "a", QoS::AtLeastOnce));
    h.table(vec![
        (
            stored(Then::Committed, Ok(vec![7])),
            &["store ids 7#1 then IdsRecorded"],
        ),
        // Back to waiting, and handed again at once (a new id, one more record).
        (
            stored(Then::IdsRecorded, Err("io".into())),
            &["store ids 7#2 then IdsRecorded"],
        ),
        (
            stored(Then::IdsRecorded, Ok(vec![])),
            &["wire publish a #2"],
        ),
    ]);
}

#[test]
fn subscriptions_go_at_once_when_connected_and_at_every_connect() {
    let mut h = harness(options(), false, true);
    h.on(Input::Started);
    let sub = |n: u32| Input::Subscribe {
        filter: "t/#".into(),
        qos: QoS::AtLeastOnce,
        options: SubscribeOptions::default(),
        responder: n,
    };
    h.table(vec![
        // Disconnected: registered, answered now, sent at the connect.
        (sub(1), &["answer 1 ok"]),
        (driver_started(), &[]),
        (attempt(), &["emit SessionConnecting", "state connecting"]),
        (
            connected(false),
            &[
                "wire subscribe t/#",
                "emit SessionConnected",
                "state connected",
                "resend []",
            ],
        ),
        (Input::Written(Written::Subscribe(1)), &[]),
        (
            Input::Ack(BrokerAck::Sub {
                pkid: 1,
                codes: vec![Ok(QoS::AtLeastOnce)],
            }),
            &["emit SessionReady"],
        ),
        // The same again changes nothing.
        (sub(2), &["answer 2 ok"]),
        (
            Input::Unsubscribe {
                filter: "t/#".into(),
                responder: 3,
            },
            &["wire unsubscribe t/#", "answer 3 ok"],
        ),
    ]);
}
