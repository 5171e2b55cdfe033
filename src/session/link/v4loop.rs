//! MQTT 3.1.1: the session's own poll over rumqttc 0.25's `MqttState` and `Network`, once
//! connected.
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
use rumqttc::{ConnectionError, Event, Incoming, MqttState, Outgoing, Packet, Request, StateError};

/// Packets read and answered in one go before one flush (as rumqttc's `readb`).
const READ_BURST: usize = 10;
/// Requests already queued by the session's client (publishes, acknowledgements of
/// incoming messages) written in one go before one flush: a busy link then makes one
/// write system call for many packets instead of one each, and the broker reads them
/// together. What is not queued yet is not waited for.
const REQUEST_BURST: usize = 64;

/// The request channel of an MQTT 3.1.1 link (the client side holds its sender).
pub(crate) type Requests = flume::Receiver<Request>;

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
    /// SUBSCRIBE / UNSUBSCRIBE ids: `first ..= u16::MAX`, above the outbox's ids.
    first_sub_id: u16,
    next_sub_id: u16,
    /// PINGREQ every keep-alive (zero: never).
    keep_alive: Duration,
    ping: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl V4Loop {
    /// A loop whose publishes use ids up to `window` and that holds PUBRELs when
    /// `hold_pubrel`.
    pub(crate) fn new(rx: Requests, window: u16, hold_pubrel: bool, keep_alive: Duration) -> Self {
        let first = window.saturating_add(1).max(1);
        V4Loop {
            rx,
            hold_pubrel,
            held: HashSet::new(),
            first_sub_id: first,
            next_sub_id: first,
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

    fn sub_id(&mut self) -> u16 {
        let id = self.next_sub_id;
        self.next_sub_id = if id == u16::MAX {
            self.first_sub_id
        } else {
            id + 1
        };
        id
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
                s.pkid = self.sub_id();
                state
                    .events
                    .push_back(Event::Outgoing(Outgoing::Subscribe(s.pkid)));
                Ok(Some(Packet::Subscribe(s)))
            }
            Request::Unsubscribe(mut u) => {
                u.pkid = self.sub_id();
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

/// What woke the poll.
enum Step {
    Read(Result<Incoming, StateError>),
    Request(Result<Request, flume::RecvError>),
    Ping,
}

/// Polls an established MQTT 3.1.1 connection until it yields an event (see the [module
/// docs](self)). Cancel-safe where it waits (reading, receiving, the ping timer); a
/// cancelled write or flush ends the connection (the driver abandons it).
pub(crate) async fn poll(
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
                () = async {
                    match ping {
                        Some(p) => p.await,
                        None => std::future::pending().await,
                    }
                } => Step::Ping,
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
