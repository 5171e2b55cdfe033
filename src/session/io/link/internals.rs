//! Everything of the session's that reaches past rumqttc's public API, written against
//! **rumqttc 0.25** (`Cargo.toml` pins the minor version). An upgrade reads this file first.
//!
//! rumqttc's event loops (`rumqttc::EventLoop`, `rumqttc::v5::EventLoop`) expose their
//! fields; this file uses three of them:
//! - `pending`: requests the event loop writes before anything from its client channel.
//!   The link puts a resumed session's PUBLISH (DUP, original packet id) and PUBREL there
//!   after a CONNACK [MQTT-4.4.0-1] ([`Link::resend`]), and counts what a dead connection
//!   left in it ([`Link::reset`]);
//! - `state` (`MqttState`): the protocol bookkeeping (in-flight slots, PUBREL / PUBCOMP,
//!   its event queue). The link tells it about incoming QoS 2 ids acknowledged on an earlier
//!   connection ([`Link::expect_pubrel`]), writes acknowledgements through it
//!   ([`Link::write_acks`]), takes the events it buffered before a failure
//!   ([`Link::buffered`]), and replaces it after a connection ends (rumqttc would otherwise
//!   re-send its own copy of what the outbox re-sends);
//! - `network`: dropped to force a new connection, and (MQTT 3.1.1) read and written by the
//!   session's own poll below.
//!
//! What an upgrade must check: that these fields still exist with the same meaning, that
//! `MqttState::handle_incoming_packet` / `handle_outgoing_packet` still push exactly one
//! event per packet at the back of `state.events` (the code takes it back), that
//! `Network::read` is still cancel-safe, and that `EventLoop::poll` still returns at the
//! CONNACK when the network is `None`. The MQTT 5 link of our own (`mqtt5.rs`) uses public
//! parts only, but the same assumptions about `v5::MqttState` (one event per packet, at the
//! back), and that `v5::mqttbytes::v5::Packet::read` leaves an incomplete packet in its
//! buffer. The tests of this file, `tests/mqtt5.rs`, `tests/session_state.rs` and
//! `tests/random_kill.rs` fail when one of these changes.
//!
//! ## MQTT 3.1.1: the session's own poll
//!
//! Once connected, an MQTT 3.1.1 link polls over rumqttc's `MqttState` and `Network`
//! itself ([`poll_v4`]).
//!
//! rumqttc 0.25's `EventLoop::poll` cannot give a persistent session with a store the
//! order it needs for QoS 2 across a crash (`docs/ARCHITECTURE.md`, "What state lives
//! where"):
//! - it answers a PUBREC with PUBREL inside the read that brought it (`MqttState::
//!   handle_incoming_pubrec` returns the PUBREL, `Network::readb` writes it, `poll`
//!   flushes it before it returns the event), so the PUBREL is on the wire before the
//!   session could record that the broker has the message;
//! - it takes requests only from its client channel, whose `publish*` methods always
//!   build packet id 0 (rumqttc then numbers the publish itself, so its id is known only
//!   once written);
//! - it numbers SUBSCRIBE and UNSUBSCRIBE from the same counter as publishes.
//!
//! So rumqttc still connects (its `poll` up to the CONNACK) and keeps the protocol
//! bookkeeping (`MqttState`: in-flight slots, PUBREL / PUBCOMP, keep-alive answers), but
//! afterwards this poll reads the network itself (`Network::read`, cancel-safe), takes
//! requests from a channel of its own ([`Requests`]: publishes carry the packet id the
//! outbox chose and recorded), holds a PUBREL, when asked to, until the session releases
//! it (the `released` flag is on disk), gives SUBSCRIBE and UNSUBSCRIBE ids above the
//! outbox's window, and sends PINGREQ every keep-alive as rumqttc does.

use std::collections::HashSet;
use std::pin::Pin;
use std::time::Duration;

use futures_util::FutureExt;
use rumqttc::v5;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::{ConnectionError, Event, Incoming, MqttState, Outgoing, Packet, Request, StateError};

use super::convert::{self, from_v4, from_v5};
use super::{
    fetch_credentials, BrokerAck, BrokerLimits, ConnAckInfo, Drained, EventLoop, Link, LinkError,
    LinkEvent, OwedAck,
};
use crate::session::outbox::Resend;

// rumqttc's `EventLoop::poll` futures take about 10 KB each (0.25, both protocols).
// Awaited inline they would make every session's driver task that large for its whole
// life, though an MQTT 3.1.1 link runs rumqttc's poll only to connect. So they are boxed:
// the 10 KB exists while a connection is made (and, on MQTT 5, during each poll).
impl Link {
    /// Connects to broker number `broker`: returns at CONNACK.
    pub(crate) async fn connect(&mut self, broker: usize) -> Result<ConnAckInfo, LinkError> {
        self.switch_to(broker);
        if let Some(provider) = &self.spec.opts.credentials_provider {
            let timeout = self.spec.opts.connect.connect_timeout;
            let c = fetch_credentials(provider, timeout)
                .await
                .map_err(LinkError::Credentials)?;
            let password = c.password.expose();
            match &mut self.el {
                EventLoop::V4(el) => {
                    el.mqtt_options.set_credentials(c.username, password);
                }
                EventLoop::V5(lp) => {
                    lp.options.set_credentials(c.username, password);
                }
                EventLoop::V5Ws(el) => {
                    el.options.set_credentials(c.username, password);
                }
            }
        }
        match &mut self.el {
            EventLoop::V4(el) => {
                el.network = None;
                match Box::pin(el.poll()).await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack))) => {
                        if let Some(lp) = &mut self.v4 {
                            lp.connected();
                        }
                        Ok(ConnAckInfo {
                            session_present: ack.session_present,
                            ..ConnAckInfo::default()
                        })
                    }
                    Ok(other) => Err(LinkError::NotConnAck(format!("{other:?}"))),
                    Err(e) => Err(LinkError::V4(e)),
                }
            }
            EventLoop::V5(lp) => {
                let broker = &self.spec.brokers[broker];
                match lp.connect(broker, self.spec.tls.as_ref()).await {
                    Ok(ack) => {
                        let expiry = lp.options.session_expiry_interval();
                        Ok(connack_info_v5(ack, expiry))
                    }
                    Err(e) => Err(LinkError::V5(e)),
                }
            }
            EventLoop::V5Ws(el) => {
                // The network is always gone here: a failed poll cleans it up, and so does
                // `abandon`.
                match Box::pin(el.poll()).await {
                    Ok(v5::Event::Incoming(p5::Packet::ConnAck(ack))) => {
                        let expiry = el.options.session_expiry_interval();
                        Ok(connack_info_v5(ack, expiry))
                    }
                    Ok(other) => Err(LinkError::NotConnAck(format!("{other:?}"))),
                    Err(e) => Err(LinkError::V5(e)),
                }
            }
        }
    }

    /// Polls an established connection once.
    pub(crate) async fn poll(&mut self) -> Result<LinkEvent, LinkError> {
        match &mut self.el {
            EventLoop::V4(el) => match &mut self.v4 {
                Some(lp) => {
                    let hold = lp.holds_pubrel();
                    poll_v4(el, lp)
                        .await
                        .map(|ev| map_v4(ev, hold))
                        .map_err(LinkError::V4)
                }
                None => Box::pin(el.poll())
                    .await
                    .map(from_v4)
                    .map_err(LinkError::V4),
            },
            EventLoop::V5(lp) => {
                let hold = lp.holds_pubrel();
                lp.poll()
                    .await
                    .map(|ev| map_v5(ev, hold))
                    .map_err(LinkError::V5)
            }
            // Boxed, as at connect (see `impl Link` here): one allocation per poll,
            // which the allocator hands back at once.
            EventLoop::V5Ws(el) => Box::pin(el.poll())
                .await
                .map(from_v5)
                .map_err(LinkError::V5),
        }
    }

    /// Queues what a resumed session re-sends before anything else [MQTT-4.4.0-1]:
    /// PUBLISH with its original packet id and DUP set, or PUBREL. These go straight into
    /// the event loop's pending queue, which `poll` drains first (on MQTT 5 rumqttc's
    /// client only sends new publishes, numbered by rumqttc; on MQTT 3.1.1 the link's own
    /// channel carries new requests only). Call it after the
    /// CONNACK, before the next `poll`. An id outside rumqttc's window (the session's
    /// `inflight` was lowered since) would make rumqttc fail: such an entry is skipped
    /// and reported back, to be sent again as new.
    pub(crate) fn resend(&mut self, items: Vec<Resend>, max: u16) -> Vec<u16> {
        let (items, skipped): (Vec<Resend>, Vec<Resend>) =
            items.into_iter().partition(|item| item.pkid() <= max);
        match &mut self.el {
            EventLoop::V4(el) => el.pending.extend(items.into_iter().map(|item| match item {
                Resend::Publish { pkid, publish } => {
                    let mut p = convert::publish_v4(&publish, pkid);
                    p.dup = true;
                    rumqttc::Request::Publish(p)
                }
                Resend::PubRel(pkid) => rumqttc::Request::PubRel(rumqttc::PubRel::new(pkid)),
            })),
            EventLoop::V5(lp) => lp.resend(items.into_iter().map(resend_v5)),
            EventLoop::V5Ws(el) => el.pending.extend(items.into_iter().map(resend_v5)),
        }
        skipped.iter().map(Resend::pkid).collect()
    }

    /// Tells rumqttc that the incoming QoS 2 messages `ids` were acknowledged with PUBREC
    /// on an earlier connection, so that the broker's PUBREL for them is answered with
    /// PUBCOMP. rumqttc forgets these ids whenever a connection ends (`MqttState::clean`)
    /// and treats a PUBREL it does not know as a protocol error that ends the connection;
    /// its state offers no other way in than a (synthetic) incoming PUBLISH, whose event
    /// is taken back at once. Call it after the CONNACK, before the next `poll`.
    pub(crate) fn expect_pubrel(&mut self, ids: &[u16]) {
        match &mut self.el {
            EventLoop::V4(el) => {
                for &pkid in ids {
                    let mut p = rumqttc::Publish::new("", rumqttc::QoS::ExactlyOnce, Vec::new());
                    p.pkid = pkid;
                    let before = el.state.events.len();
                    let _ = el
                        .state
                        .handle_incoming_packet(rumqttc::Incoming::Publish(p));
                    el.state.events.truncate(before);
                }
            }
            EventLoop::V5(lp) => lp.expect_pubrel(ids),
            EventLoop::V5Ws(el) => expect_pubrel_v5(&mut el.state, ids),
        }
    }

    /// True when [`Link::write_acks`] writes on this connection itself (not over MQTT 5
    /// on WebSocket: rumqttc's v5 event loop keeps its socket private).
    pub(crate) fn writes_acks(&self) -> bool {
        matches!(self.el, EventLoop::V4(_) | EventLoop::V5(_))
    }

    /// Writes the PUBACK / PUBREC of `tokens`, in order, and flushes once: a burst of
    /// acknowledgements in one `write`, where rumqttc's client channel would write each
    /// on its own. Call it between polls only. rumqttc's state sees each acknowledgement
    /// as if it came through its channel, minus the `Outgoing` event (nobody waits for
    /// it). The flush is bounded by the connection timeout, as rumqttc bounds its own.
    pub(crate) async fn write_acks(&mut self, tokens: &[OwedAck]) -> Result<(), LinkError> {
        let el = match &mut self.el {
            EventLoop::V4(el) => &mut **el,
            EventLoop::V5(lp) => {
                return lp
                    .write_acks(tokens.iter().map(|&t| convert::ack_request_v5(t)))
                    .await
                    .map_err(LinkError::V5);
            }
            EventLoop::V5Ws(el) => {
                // Not used (see `writes_acks`); kept correct all the same: the pending
                // queue goes out before the client channel, one request at a time.
                el.pending
                    .extend(tokens.iter().map(|&t| convert::ack_request_v5(t)));
                return Ok(());
            }
        };
        let timeout = Duration::from_secs(el.network_options.connection_timeout());
        let Some(network) = el.network.as_mut() else {
            // Not connected: these belong to a connection that has ended.
            return Ok(());
        };
        let state_err = |e| LinkError::V4(rumqttc::ConnectionError::MqttState(e));
        for &t in tokens {
            let packet = el
                .state
                .handle_outgoing_packet(convert::ack_request_v4(t))
                .map_err(state_err)?;
            let event = el.state.events.pop_back();
            debug_assert!(
                matches!(
                    event,
                    Some(rumqttc::Event::Outgoing(
                        rumqttc::Outgoing::PubAck(_) | rumqttc::Outgoing::PubRec(_)
                    ))
                ),
                "an acknowledgement queues its own Outgoing event last"
            );
            if let Some(packet) = packet {
                network.write(packet).await.map_err(state_err)?;
            }
        }
        match tokio::time::timeout(timeout, network.flush()).await {
            Ok(r) => r.map_err(state_err),
            Err(_) => Err(LinkError::V4(rumqttc::ConnectionError::FlushTimeout)),
        }
    }

    /// `poll` holds events it read or wrote already and returns them without waiting:
    /// whatever waits to be written (acknowledgements) can wait for the last of them,
    /// so that a burst goes out in one write.
    pub(crate) fn has_buffered(&self) -> bool {
        match &self.el {
            EventLoop::V4(el) => !el.state.events.is_empty(),
            EventLoop::V5(lp) => lp.has_buffered(),
            EventLoop::V5Ws(el) => !el.state.events.is_empty(),
        }
    }

    /// The connection is declared dead while a poll was in progress (read timeout).
    pub(crate) fn abandon(&mut self) {
        match &mut self.el {
            EventLoop::V4(el) => {
                // What rumqttc's state holds is dropped by `reset`, as are the requests.
                el.network = None;
                if let Some(lp) = &mut self.v4 {
                    lp.ended();
                }
            }
            EventLoop::V5(lp) => lp.abandon(),
            EventLoop::V5Ws(el) => el.clean(),
        }
    }

    /// The next event rumqttc had already buffered, after a failure.
    pub(crate) fn buffered(&mut self) -> Option<LinkEvent> {
        match &mut self.el {
            EventLoop::V4(el) => {
                let hold = self.v4.as_ref().is_some_and(|lp| lp.holds_pubrel());
                el.state.events.pop_front().map(|ev| map_v4(ev, hold))
            }
            EventLoop::V5(lp) => {
                let hold = lp.holds_pubrel();
                lp.buffered().map(|ev| map_v5(ev, hold))
            }
            EventLoop::V5Ws(el) => el.state.events.pop_front().map(from_v5),
        }
    }

    /// Empties rumqttc's queued requests and retransmission state after a connection
    /// ended (the outbox re-sends what matters); returns what was dropped.
    pub(crate) fn reset(&mut self, inflight: u16) -> Drained {
        let mut d = Drained::default();
        match &mut self.el {
            EventLoop::V4(el) => {
                for req in el.pending.drain(..) {
                    match req {
                        rumqttc::Request::Publish(p) => match (p.pkid, p.qos) {
                            (0, rumqttc::QoS::AtMostOnce) => d.qos0 += 1,
                            (0, _) => d.qos1 += 1,
                            _ => {}
                        },
                        rumqttc::Request::Subscribe(_) => d.subs += 1,
                        _ => {}
                    }
                }
                if let Some(lp) = &mut self.v4 {
                    // Requests the connection never took: all of them new (a resumed
                    // PUBLISH goes through `pending`).
                    for req in lp.rx.drain() {
                        match req {
                            rumqttc::Request::Publish(p) if p.qos == rumqttc::QoS::AtMostOnce => {
                                d.qos0 += 1;
                            }
                            rumqttc::Request::Publish(_) => d.qos1 += 1,
                            rumqttc::Request::Subscribe(_) => d.subs += 1,
                            _ => {}
                        }
                    }
                    lp.ended();
                }
                el.state = rumqttc::MqttState::new(inflight.saturating_add(1), true);
                el.network = None;
            }
            EventLoop::V5(lp) => {
                // Requests the connection never took: all of them new (a resumed
                // PUBLISH goes through the resend queue, which is dropped).
                for req in lp.reset() {
                    match req {
                        v5::Request::Publish(p) if p.qos == v5::mqttbytes::QoS::AtMostOnce => {
                            d.qos0 += 1;
                        }
                        v5::Request::Publish(_) => d.qos1 += 1,
                        v5::Request::Subscribe(_) => d.subs += 1,
                        _ => {}
                    }
                }
            }
            EventLoop::V5Ws(el) => {
                for req in el.pending.drain(..) {
                    match req {
                        v5::Request::Publish(p) => match (p.pkid, p.qos) {
                            (0, v5::mqttbytes::QoS::AtMostOnce) => d.qos0 += 1,
                            (0, _) => d.qos1 += 1,
                            _ => {}
                        },
                        v5::Request::Subscribe(_) => d.subs += 1,
                        _ => {}
                    }
                }
                el.state = v5::MqttState::new(inflight.saturating_add(1), true);
            }
        }
        d
    }
}

/// Tells an MQTT 5 state (ours, or rumqttc's event loop's over WebSocket) that the
/// incoming QoS 2 messages `ids` were acknowledged with PUBREC on an earlier connection:
/// a synthetic incoming PUBLISH each, whose event is taken back at once (see
/// `Link::expect_pubrel`).
pub(super) fn expect_pubrel_v5(state: &mut v5::MqttState, ids: &[u16]) {
    for &pkid in ids {
        let p = convert::ack_publish_v5(super::OwedAck {
            qos: crate::message::QoS::ExactlyOnce,
            pkid,
        });
        let before = state.events.len();
        let _ = state.handle_incoming_packet(p5::Packet::Publish(p));
        state.events.truncate(before);
    }
}

/// What a resumed MQTT 5 session re-sends: PUBLISH with DUP and its id, or PUBREL.
fn resend_v5(item: Resend) -> v5::Request {
    match item {
        Resend::Publish { pkid, publish } => {
            let mut p = convert::publish_v5(&publish, pkid);
            p.dup = true;
            v5::Request::Publish(p)
        }
        Resend::PubRel(pkid) => v5::Request::PubRel(p5::PubRel::new(pkid, None)),
    }
}

/// A successful MQTT 5 CONNACK, with the broker's limits; `expiry` is the session
/// expiry in effect when the broker names none.
fn connack_info_v5(ack: p5::ConnAck, expiry: Option<u32>) -> ConnAckInfo {
    let Some(props) = ack.properties else {
        return ConnAckInfo {
            session_present: ack.session_present,
            assigned_client_id: None,
            limits: BrokerLimits {
                session_expiry_interval: expiry,
                ..BrokerLimits::default()
            },
        };
    };
    ConnAckInfo {
        session_present: ack.session_present,
        assigned_client_id: props.assigned_client_identifier,
        limits: BrokerLimits {
            receive_maximum: props.receive_max,
            maximum_packet_size: props.max_packet_size,
            topic_alias_maximum: props.topic_alias_max,
            session_expiry_interval: props.session_expiry_interval.or(expiry),
        },
    }
}

/// An MQTT 5 event, with a successful PUBREC reported when its PUBREL is held.
fn map_v5(ev: v5::Event, hold: bool) -> LinkEvent {
    match ev {
        v5::Event::Incoming(p5::Packet::PubRec(r))
            if hold && !crate::session::io::failure::pubrec_code(&r.reason).is_failure() =>
        {
            LinkEvent::Ack(BrokerAck::Rec(r.pkid))
        }
        ev => from_v5(ev),
    }
}

/// An MQTT 3.1.1 event, with a PUBREC reported when its PUBREL is held.
fn map_v4(ev: rumqttc::Event, hold: bool) -> LinkEvent {
    match ev {
        rumqttc::Event::Incoming(rumqttc::Packet::PubRec(r)) if hold => {
            LinkEvent::Ack(BrokerAck::Rec(r.pkid))
        }
        ev => from_v4(ev),
    }
}

/// Packets read and answered in one go before one flush (as rumqttc's `readb`).
pub(super) const READ_BURST: usize = 10;
/// Requests already queued by the session's client (publishes, acknowledgements of
/// incoming messages) written in one go before one flush: a busy link then makes one
/// write system call for many packets instead of one each, and the broker reads them
/// together. What is not queued yet is not waited for.
pub(super) const REQUEST_BURST: usize = 64;

/// The request channel of an MQTT 3.1.1 link (the client side holds its sender).
pub(crate) type Requests = flume::Receiver<Request>;

/// The SUBSCRIBE / UNSUBSCRIBE ids of a link that polls itself (either protocol):
/// `first ..= u16::MAX`, above the outbox's window of publish ids, round and round.
#[derive(Debug)]
pub(super) struct SubIds {
    first: u16,
    next: u16,
}

impl SubIds {
    /// Ids above the outbox's `window`.
    pub(super) fn above(window: u16) -> Self {
        let first = window.saturating_add(1).max(1);
        SubIds { first, next: first }
    }

    /// The next id.
    pub(super) fn take(&mut self) -> u16 {
        let id = self.next;
        self.next = if id == u16::MAX { self.first } else { id + 1 };
        id
    }
}

/// What the session's MQTT 3.1.1 poll keeps besides rumqttc's event loop.
#[derive(Debug)]
pub(crate) struct V4Loop {
    /// Requests from the session's client.
    pub(super) rx: Requests,
    /// Hold every PUBREL until [`Request::PubRel`] comes through the channel (a
    /// persistent session with a store).
    hold_pubrel: bool,
    /// PUBRELs held on this connection, by packet id.
    held: HashSet<u16>,
    /// SUBSCRIBE / UNSUBSCRIBE ids.
    sub_ids: SubIds,
    /// PINGREQ every keep-alive (zero: never).
    keep_alive: Duration,
    ping: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl V4Loop {
    /// A loop whose publishes use ids up to `window` and that holds PUBRELs when
    /// `hold_pubrel`.
    pub(crate) fn new(rx: Requests, window: u16, hold_pubrel: bool, keep_alive: Duration) -> Self {
        V4Loop {
            rx,
            hold_pubrel,
            held: HashSet::new(),
            sub_ids: SubIds::above(window),
            keep_alive,
            ping: None,
        }
    }

    /// Whether PUBRELs are held (and a PUBREC reported as [`Incoming::PubRec`]).
    pub(crate) fn holds_pubrel(&self) -> bool {
        self.hold_pubrel
    }

    /// A new connection is up: the keep-alive clock starts, nothing is held.
    pub(crate) fn connected(&mut self) {
        self.held.clear();
        self.ping =
            (!self.keep_alive.is_zero()).then(|| Box::pin(tokio::time::sleep(self.keep_alive)));
    }

    /// The connection ended: nothing is held, no ping is due.
    pub(crate) fn ended(&mut self) {
        self.held.clear();
        self.ping = None;
    }

    /// One incoming packet through rumqttc's state; returns what to write in answer.
    fn incoming(
        &mut self,
        state: &mut MqttState,
        packet: Incoming,
    ) -> Result<Option<Packet>, StateError> {
        if self.hold_pubrel {
            if let Incoming::PubRec(rec) = &packet {
                let pkid = rec.pkid;
                let answer = state.handle_incoming_packet(packet)?;
                if answer.is_some() {
                    // The PUBREL rumqttc would write now, and its event, wait for the
                    // session's release.
                    if matches!(state.events.back(), Some(Event::Outgoing(Outgoing::PubRel(p))) if *p == pkid)
                    {
                        state.events.pop_back();
                    }
                    self.held.insert(pkid);
                }
                return Ok(None);
            }
        }
        state.handle_incoming_packet(packet)
    }

    /// One request from the session's client; returns what to write.
    fn outgoing(
        &mut self,
        state: &mut MqttState,
        request: Request,
    ) -> Result<Option<Packet>, StateError> {
        match request {
            // Only ever a release of a held PUBREL (a resumed one goes through `pending`).
            Request::PubRel(rel) => {
                if !self.held.remove(&rel.pkid) {
                    // Held on a connection that has ended: the resumed session sends it.
                    return Ok(None);
                }
                state
                    .events
                    .push_back(Event::Outgoing(Outgoing::PubRel(rel.pkid)));
                Ok(Some(Packet::PubRel(rel)))
            }
            Request::Subscribe(mut s) => {
                if s.filters.is_empty() {
                    return Err(StateError::EmptySubscription);
                }
                s.pkid = self.sub_ids.take();
                state
                    .events
                    .push_back(Event::Outgoing(Outgoing::Subscribe(s.pkid)));
                Ok(Some(Packet::Subscribe(s)))
            }
            Request::Unsubscribe(mut u) => {
                u.pkid = self.sub_ids.take();
                state
                    .events
                    .push_back(Event::Outgoing(Outgoing::Unsubscribe(u.pkid)));
                Ok(Some(Packet::Unsubscribe(u)))
            }
            other => state.handle_outgoing_packet(other),
        }
    }
}

/// Flushes rumqttc's `Network` (a type it does not export), bounded by `$timeout` as
/// rumqttc bounds its own.
macro_rules! flush {
    ($network:expr, $timeout:expr) => {
        match tokio::time::timeout($timeout, $network.flush()).await {
            Ok(r) => r.map_err(ConnectionError::MqttState)?,
            Err(_) => return Err(ConnectionError::FlushTimeout),
        }
    };
}

/// Resolves when the keep-alive timer fires; never without one.
pub(super) async fn ping_due(ping: Option<&mut Pin<Box<tokio::time::Sleep>>>) {
    match ping {
        Some(p) => p.await,
        None => std::future::pending().await,
    }
}

/// What woke the poll.
enum Step {
    Read(Result<Incoming, StateError>),
    Request(Result<Request, flume::RecvError>),
    Ping,
}

/// Polls an established MQTT 3.1.1 connection until it yields an event (see the [module
/// docs](self)). Cancel-safe where it waits (reading, receiving, the ping timer); a
/// cancelled write or flush ends the connection (the driver abandons it).
pub(crate) async fn poll_v4(
    el: &mut rumqttc::EventLoop,
    lp: &mut V4Loop,
) -> Result<Event, ConnectionError> {
    let timeout = Duration::from_secs(el.network_options.connection_timeout());
    loop {
        if let Some(event) = el.state.events.pop_front() {
            return Ok(event);
        }
        let network = el
            .network
            .as_mut()
            .ok_or(ConnectionError::MqttState(StateError::ConnectionAborted))?;
        // What a resumed session re-sends goes first (PUBLISH with DUP, PUBREL).
        if !el.pending.is_empty() {
            while let Some(request) = el.pending.pop_front() {
                if let Some(packet) = el.state.handle_outgoing_packet(request)? {
                    network.write(packet).await?;
                }
            }
            flush!(network, timeout);
            continue;
        }
        let step = {
            let ping = lp.ping.as_mut();
            // Not biased, as rumqttc's own `select!`: a busy socket must not starve the
            // requests, nor the requests the socket.
            tokio::select! {
                r = network.read() => Step::Read(r),
                r = lp.rx.recv_async() => Step::Request(r),
                () = ping_due(ping) => Step::Ping,
            }
        };
        match step {
            Step::Read(r) => {
                let mut packet = Some(r?);
                let mut read = 0;
                while let Some(p) = packet.take() {
                    if let Some(answer) = lp.incoming(&mut el.state, p)? {
                        network.write(answer).await?;
                    }
                    read += 1;
                    if read < READ_BURST {
                        packet = network.read().now_or_never().transpose()?;
                    }
                }
                flush!(network, timeout);
            }
            Step::Request(r) => {
                let mut request = Some(r.map_err(|_| ConnectionError::RequestsDone)?);
                let mut taken = 0;
                let mut written = false;
                while let Some(req) = request.take() {
                    if let Some(packet) = lp.outgoing(&mut el.state, req)? {
                        network.write(packet).await?;
                        written = true;
                    }
                    taken += 1;
                    if taken < REQUEST_BURST {
                        request = lp.rx.try_recv().ok();
                    }
                }
                if written {
                    flush!(network, timeout);
                }
            }
            Step::Ping => {
                if let Some(p) = lp.ping.as_mut() {
                    p.as_mut()
                        .reset(tokio::time::Instant::now() + lp.keep_alive);
                }
                if let Some(packet) = el
                    .state
                    .handle_outgoing_packet(Request::PingReq(rumqttc::PingReq))?
                {
                    network.write(packet).await?;
                    flush!(network, timeout);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qos2_publish(pkid: u16) -> Request {
        let mut p = rumqttc::Publish::new("t", rumqttc::QoS::ExactlyOnce, "x");
        p.pkid = pkid;
        Request::Publish(p)
    }

    #[test]
    fn a_held_pubrel_goes_out_only_when_released_on_its_connection() {
        let (_tx, rx) = flume::bounded(1);
        let mut lp = V4Loop::new(rx, 10, true, Duration::ZERO);
        let mut state = MqttState::new(10, true);
        // The outbox's id goes out as is.
        assert!(matches!(
            lp.outgoing(&mut state, qos2_publish(7)).unwrap(),
            Some(Packet::Publish(p)) if p.pkid == 7
        ));
        state.events.clear();
        let answer = lp
            .incoming(&mut state, Incoming::PubRec(rumqttc::PubRec::new(7)))
            .unwrap();
        assert!(answer.is_none(), "the PUBREL is held");
        assert!(matches!(
            state.events.pop_front(),
            Some(Event::Incoming(Incoming::PubRec(r))) if r.pkid == 7
        ));
        assert!(state.events.is_empty(), "no PUBREL reported written");
        let rel = || Request::PubRel(rumqttc::PubRel::new(7));
        assert!(matches!(
            lp.outgoing(&mut state, rel()).unwrap(),
            Some(Packet::PubRel(r)) if r.pkid == 7
        ));
        assert!(
            lp.outgoing(&mut state, rel()).unwrap().is_none(),
            "released once"
        );
        // PUBCOMP completes it in rumqttc's state.
        assert!(state
            .handle_incoming_packet(Incoming::PubComp(rumqttc::PubComp { pkid: 7 }))
            .is_ok());
        // A release for a connection that ended is dropped.
        lp.outgoing(&mut state, qos2_publish(8)).unwrap();
        lp.incoming(&mut state, Incoming::PubRec(rumqttc::PubRec::new(8)))
            .unwrap();
        lp.ended();
        let stale = Request::PubRel(rumqttc::PubRel::new(8));
        assert!(lp.outgoing(&mut state, stale).unwrap().is_none());
    }

    #[test]
    fn without_holding_the_pubrel_answers_the_pubrec() {
        let (_tx, rx) = flume::bounded(1);
        let mut lp = V4Loop::new(rx, 10, false, Duration::ZERO);
        let mut state = MqttState::new(10, true);
        lp.outgoing(&mut state, qos2_publish(3)).unwrap();
        let answer = lp
            .incoming(&mut state, Incoming::PubRec(rumqttc::PubRec::new(3)))
            .unwrap();
        assert!(matches!(answer, Some(Packet::PubRel(r)) if r.pkid == 3));
    }

    #[test]
    fn subscribe_ids_stay_above_the_outbox_window() {
        let (_tx, rx) = flume::bounded(1);
        let mut lp = V4Loop::new(rx, 65_533, false, Duration::ZERO);
        let mut state = MqttState::new(10, true);
        let mut ids = vec![];
        for _ in 0..4 {
            let sub = rumqttc::Subscribe::new("a/#", rumqttc::QoS::AtLeastOnce);
            match lp.outgoing(&mut state, Request::Subscribe(sub)).unwrap() {
                Some(Packet::Subscribe(s)) => ids.push(s.pkid),
                other => panic!("{other:?}"),
            }
        }
        let unsub = rumqttc::Unsubscribe::new("a/#");
        match lp
            .outgoing(&mut state, Request::Unsubscribe(unsub))
            .unwrap()
        {
            Some(Packet::Unsubscribe(u)) => ids.push(u.pkid),
            other => panic!("{other:?}"),
        }
        assert_eq!(ids, vec![65_534, 65_535, 65_534, 65_535, 65_534]);
    }
}
