//! The raw rumqttc forwarder, the forwarding scenario's out-of-process reference: what a
//! user would wire by hand with rumqttc to copy `in/#` on broker A to `out/{topic}` on
//! broker B at least once. It runs in a child process of its own (this bench executable
//! again, `--child-forwarder A_PORT B_PORT CLIENT_TAG`), so that the bench counts its CPU
//! time as it counts the daemon's.
//!
//! Two rumqttc clients, MQTT 3.1.1, the bench's raw settings (keep-alive 60 s,
//! TCP_NODELAY on): to A with a persistent session (clean session off) and manual
//! acknowledgements, subscribed to `in/#` at QoS 1 on every CONNACK; to B (through the
//! delay proxy) with a persistent session and an in-flight window of [`INFLIGHT`], as
//! the daemon's cloud session has. Each message from A is published to B at QoS 1 with
//! the same payload, and acknowledged to A only once B acknowledged its copy: B's event
//! loop reports `Outgoing::Publish(pkid)` in the order the publishes were requested, so
//! the source messages wait in a FIFO until they get their packet id on B, then in a
//! map by that id until B's PUBACK.
//!
//! One current-thread runtime (the daemon runs its forwarding on one worker thread too),
//! three tasks: A's event loop, which hands each message on through an unbounded
//! channel and never waits on B; the hand-over, which publishes to B and waits when B's
//! request channel is full; B's event loop, which acknowledges to A and waits when A's
//! request channel is full. A's event loop drains A's channel whatever B does, so
//! neither wait can close a circle. What waits in the unbounded channel is bounded by
//! what A sends before acknowledgements, A's own window for this client.
//!
//! The process ends when its standard input closes (the bench holds the other end, so
//! a bench that ends in any way takes it along) or when the bench kills it.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS};

use crate::raw::client_with;

/// What the forwarder subscribes to on A.
const SOURCE_FILTER: &str = "in/#";
/// Prepended to a message's topic on A to make its topic on B.
const TARGET_PREFIX: &str = "out/";
/// B's in-flight window: the daemon's cloud session's default for a rule's target.
const INFLIGHT: u16 = 1000;
/// Each client's request channel.
const REQUESTS: usize = 1000;
/// Pause after a failed connection before polling again (which reconnects).
const RETRY: Duration = Duration::from_millis(100);

/// Source messages waiting for B: handed to B's client and not yet given a packet id
/// (in order), then by packet id until B's PUBACK.
#[derive(Debug, Default)]
struct Awaiting {
    unsent: VecDeque<Publish>,
    inflight: HashMap<u16, Publish>,
}

/// The child process's side: `args` are A's port, the port of B's proxy and the
/// client-id prefix. Runs until standard input closes.
pub(crate) fn child_forwarder(args: &[String]) {
    let [a, b, tag] = args else {
        panic!("usage: --child-forwarder A_PORT B_PORT CLIENT_TAG");
    };
    let a: u16 = a.parse().expect("A_PORT");
    let b: u16 = b.parse().expect("B_PORT");
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("forwarder runtime");
    tokio::task::LocalSet::new().block_on(&rt, forward(a, b, tag));
}

/// The connection to A: persistent session, manual acknowledgements.
fn source(port: u16, tag: &str) -> (AsyncClient, EventLoop) {
    let mut mo = MqttOptions::new(format!("{tag}-fwd-edge"), "127.0.0.1", port);
    mo.set_clean_session(false)
        .set_manual_acks(true)
        .set_inflight(INFLIGHT);
    client_with(mo, REQUESTS)
}

/// The connection to B: persistent session (what was in flight is sent again after a
/// reconnection), a window of [`INFLIGHT`].
fn target(port: u16, tag: &str) -> (AsyncClient, EventLoop) {
    let mut mo = MqttOptions::new(format!("{tag}-fwd-cloud"), "127.0.0.1", port);
    mo.set_clean_session(false)
        .set_inflight(INFLIGHT)
        .set_request_channel_capacity(REQUESTS);
    client_with(mo, REQUESTS)
}

/// Connects to A (`a`) and B (`b`) and forwards until the process ends.
async fn forward(a: u16, b: u16, tag: &str) {
    let (client_a, mut el_a) = source(a, tag);
    let (client_b, mut el_b) = target(b, tag);
    let awaiting = Rc::new(RefCell::new(Awaiting::default()));
    let (hand_over, mut handed) = tokio::sync::mpsc::unbounded_channel::<Publish>();

    // A's event loop: subscribes on every CONNACK, hands every message on.
    let subscriber = client_a.clone();
    let from_a = tokio::task::spawn_local(async move {
        loop {
            match el_a.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = hand_over.send(p);
                }
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let c = subscriber.clone();
                    tokio::task::spawn_local(async move {
                        if let Err(e) = c.subscribe(SOURCE_FILTER, QoS::AtLeastOnce).await {
                            eprintln!("forwarder: subscribe on A: {e}");
                        }
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("forwarder: connection to A: {e}");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    });

    // The hand-over: each message to B, in the order of `Awaiting::unsent`.
    let queue = Rc::clone(&awaiting);
    let to_b = tokio::task::spawn_local(async move {
        while let Some(p) = handed.recv().await {
            let topic = format!("{TARGET_PREFIX}{}", p.topic);
            let payload = p.payload.clone();
            queue.borrow_mut().unsent.push_back(p);
            if let Err(e) = client_b
                .publish_bytes(topic, QoS::AtLeastOnce, false, payload)
                .await
            {
                // Refused before it reached B's event loop: it never gets a packet id.
                queue.borrow_mut().unsent.pop_back();
                eprintln!("forwarder: publish to B: {e}");
            }
        }
    });

    // B's event loop: a packet id for each publish in order, A's acknowledgement on B's.
    let from_b = tokio::task::spawn_local(async move {
        loop {
            match el_b.poll().await {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                    let mut w = awaiting.borrow_mut();
                    // A packet id already waiting is a publish sent again after a
                    // reconnection, not the next one.
                    if !w.inflight.contains_key(&pkid) {
                        if let Some(p) = w.unsent.pop_front() {
                            w.inflight.insert(pkid, p);
                        }
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    let source = awaiting.borrow_mut().inflight.remove(&ack.pkid);
                    if let Some(p) = source {
                        if let Err(e) = client_a.ack(&p).await {
                            eprintln!("forwarder: acknowledge to A: {e}");
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    eprintln!("forwarder: connection to B: {e}");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    });

    let _ = tokio::join!(from_a, to_b, from_b);
}
