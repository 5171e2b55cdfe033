//! MQTT 5 over TCP and TLS without rumqttc's event loop: the session's own socket,
//! CONNECT / CONNACK, and a poll over rumqttc's public protocol state
//! (`v5::MqttState`) and packet codec (`v5::mqttbytes`).
//!
//! Why: rumqttc 0.25's MQTT 5 event loop keeps its socket private and numbers every
//! publish itself, so the session could not choose (and record) a publish's packet id
//! before it is sent, nor hold a PUBREL until its `released` flag is on disk, nor write a
//! burst of acknowledgements in one go. This loop does what the MQTT 3.1.1 poll does
//! (`internals.rs`): publishes carry the packet id the outbox chose, SUBSCRIBE and
//! UNSUBSCRIBE ids are numbered above the outbox's window, a PUBREL is held when asked,
//! acknowledgements are written in bursts, a PINGREQ goes out every keep-alive. So the
//! outbox is the one owner of packet ids on both protocols.
//!
//! MQTT 5 over WebSocket keeps rumqttc's event loop (the link picks it when a broker of
//! the session is `ws://` or `wss://`).

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use rumqttc::v5;
use rumqttc::v5::mqttbytes::v5::{self as p5, Packet};
use rumqttc::v5::{ConnectionError, Event, MqttState, Request, StateError};
use rumqttc::Outgoing;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::internals::{ping_due, SubIds, READ_BURST, REQUEST_BURST};
use crate::options::{BrokerUrl, Transport};

/// A byte stream to a broker (TCP, or TLS over TCP).
trait Stream: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Stream for T {}

/// An open connection: the stream and its read and write buffers.
struct Socket {
    io: Box<dyn Stream>,
    read: BytesMut,
    write: BytesMut,
    /// The largest packet we accept (what CONNECT announced).
    max_in: Option<u32>,
    /// The largest packet the broker accepts (its CONNACK).
    max_out: Option<u32>,
}

impl Socket {
    fn new(io: Box<dyn Stream>, max_in: Option<u32>) -> Self {
        Socket {
            io,
            read: BytesMut::with_capacity(4096),
            write: BytesMut::with_capacity(4096),
            max_in,
            max_out: None,
        }
    }

    /// A whole packet from the read buffer, if one is there.
    fn parse(&mut self) -> Result<Option<Packet>, StateError> {
        match Packet::read(&mut self.read, self.max_in) {
            Ok(p) => Ok(Some(p)),
            Err(v5::mqttbytes::Error::InsufficientBytes(n)) => {
                self.read.reserve(n);
                Ok(None)
            }
            Err(e) => Err(StateError::from(e)),
        }
    }

    /// The next packet. Cancel-safe: bytes read stay in the buffer.
    async fn next(&mut self) -> Result<Packet, StateError> {
        loop {
            if let Some(p) = self.parse()? {
                return Ok(p);
            }
            if self.io.read_buf(&mut self.read).await? == 0 {
                return Err(StateError::ConnectionAborted);
            }
        }
    }

    /// The next packet if it is here already (buffered, or readable without waiting).
    fn next_now(&mut self) -> Result<Option<Packet>, StateError> {
        if let Some(p) = self.parse()? {
            return Ok(Some(p));
        }
        match self.io.read_buf(&mut self.read).now_or_never() {
            None => Ok(None),
            Some(Ok(0)) => Err(StateError::ConnectionAborted),
            Some(Ok(_)) => self.parse(),
            Some(Err(e)) => Err(e.into()),
        }
    }

    /// Adds a packet to the write buffer.
    fn put(&mut self, packet: &Packet) -> Result<(), StateError> {
        packet
            .write(&mut self.write, self.max_out)
            .map(drop)
            .map_err(StateError::from)
    }

    /// Writes the buffer out. What was written leaves the buffer as it goes, so a
    /// cancelled flush loses nothing and repeats nothing (the connection is abandoned
    /// all the same).
    async fn flush(&mut self) -> Result<(), StateError> {
        while !self.write.is_empty() {
            if self.io.write_buf(&mut self.write).await? == 0 {
                return Err(StateError::ConnectionAborted);
            }
        }
        self.io.flush().await?;
        Ok(())
    }
}

/// Opens a TCP or TLS connection to `broker` and exchanges CONNECT / CONNACK, within the
/// connection timeout. `options` are the session's rumqttc options for this broker
/// (client id, keep-alive, will, credentials, CONNECT properties); the broker's
/// CONNACK may change its keep-alive and session expiry there.
async fn open(
    options: &mut v5::MqttOptions,
    broker: &BrokerUrl,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<(Socket, p5::ConnAck), ConnectionError> {
    let timeout = Duration::from_secs(options.connection_timeout().max(1));
    tokio::time::timeout(timeout, async {
        let tcp = tokio::net::TcpStream::connect((broker.host.as_str(), broker.port)).await?;
        tcp.set_nodelay(true)?;
        let io: Box<dyn Stream> = match broker.transport {
            Transport::Tcp => Box::new(tcp),
            Transport::Tls => {
                let config = match tls {
                    Some(c) => Arc::clone(c),
                    None => {
                        tracing::error!(broker = %broker.url, "no TLS configuration prepared for a TLS broker; no certificate will be trusted");
                        crate::tls::trust_nothing_config()
                    }
                };
                let name = rustls::pki_types::ServerName::try_from(broker.host.clone())
                    .map_err(|e| ConnectionError::Tls(v5::TlsError::DNSName(e)))?;
                let connector = rumqttc::tokio_rustls::TlsConnector::from(config);
                Box::new(
                    connector
                        .connect(name, tcp)
                        .await
                        .map_err(|e| ConnectionError::Tls(v5::TlsError::Io(e)))?,
                )
            }
            // The link keeps rumqttc's event loop for WebSocket brokers.
            Transport::Ws | Transport::Wss => {
                return Err(ConnectionError::Io(std::io::Error::other(
                    "MQTT 5 over WebSocket runs on rumqttc's event loop",
                )))
            }
        };
        let mut socket = Socket::new(io, options.max_packet_size());
        let connect = p5::Connect {
            client_id: options.client_id(),
            keep_alive: u16::try_from(options.keep_alive().as_secs()).unwrap_or(u16::MAX),
            clean_start: options.clean_start(),
            properties: options.connect_properties(),
        };
        socket.put(&Packet::Connect(
            connect,
            options.last_will(),
            options.credentials(),
        ))?;
        socket.flush().await?;
        match socket.next().await? {
            Packet::ConnAck(ack) if ack.code == p5::ConnectReturnCode::Success => {
                if let Some(props) = &ack.properties {
                    if let Some(keep_alive) = props.server_keep_alive {
                        options.set_keep_alive(Duration::from_secs(u64::from(keep_alive)));
                    }
                    socket.max_out = props.max_packet_size;
                    if props.session_expiry_interval.is_some() {
                        options.set_session_expiry_interval(props.session_expiry_interval);
                    }
                }
                Ok((socket, ack))
            }
            Packet::ConnAck(ack) => Err(ConnectionError::ConnectionRefused(ack.code)),
            other => Err(ConnectionError::NotConnAck(Box::new(other))),
        }
    })
    .await?
}

/// The request channel of an MQTT 5 link of our own (the client side holds its sender).
pub(crate) type Requests = flume::Receiver<Request>;

/// An MQTT 5 connection polled by the session (see the [module docs](self)).
pub(crate) struct V5Loop {
    /// rumqttc's options for the current broker.
    pub(super) options: v5::MqttOptions,
    /// The protocol state: in-flight slots, PUBREL / PUBCOMP, keep-alive answers, the
    /// events of what was read and written.
    proto: MqttState,
    /// The connection, while there is one.
    socket: Option<Socket>,
    /// What a resumed session re-sends before anything else.
    resends: VecDeque<Request>,
    /// Requests from the session's client.
    pub(super) rx: Requests,
    /// Hold every PUBREL until `Request::PubRel` comes through the channel.
    hold_pubrel: bool,
    /// PUBRELs held on this connection.
    held: HashSet<u16>,
    /// SUBSCRIBE / UNSUBSCRIBE ids.
    sub_ids: SubIds,
    /// PINGREQ every keep-alive.
    ping: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The outbox's window of packet ids.
    window: u16,
}

/// What woke the poll.
enum Step {
    Read(Result<Packet, StateError>),
    Request(Result<Request, flume::RecvError>),
    Ping,
}

impl V5Loop {
    /// A loop for `options`, whose publishes use ids up to `window`, holding PUBRELs
    /// when `hold_pubrel`.
    pub(crate) fn new(
        options: v5::MqttOptions,
        rx: Requests,
        window: u16,
        hold_pubrel: bool,
    ) -> Self {
        V5Loop {
            options,
            proto: MqttState::new(window, true),
            socket: None,
            resends: VecDeque::new(),
            rx,
            hold_pubrel,
            held: HashSet::new(),
            sub_ids: SubIds::above(window),
            ping: None,
            window,
        }
    }

    /// Whether PUBRELs are held (a successful PUBREC is then reported).
    pub(crate) fn holds_pubrel(&self) -> bool {
        self.hold_pubrel
    }

    /// Connects to `broker`: returns the CONNACK.
    pub(crate) async fn connect(
        &mut self,
        broker: &BrokerUrl,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> Result<p5::ConnAck, ConnectionError> {
        self.socket = None;
        // Boxed: the TLS handshake's future is large, and the driver's task, which lives
        // as long as the session, would otherwise hold it for good.
        let (socket, ack) = Box::pin(open(&mut self.options, broker, tls)).await?;
        // The broker's Receive Maximum and Topic Alias Maximum go into the state; its
        // event is not one of ours.
        let before = self.proto.events.len();
        self.proto
            .handle_incoming_packet(Packet::ConnAck(ack.clone()))?;
        self.proto.events.truncate(before);
        self.socket = Some(socket);
        self.held.clear();
        let keep_alive = self.options.keep_alive();
        self.ping = (!keep_alive.is_zero()).then(|| Box::pin(tokio::time::sleep(keep_alive)));
        Ok(ack)
    }

    /// Queues what a resumed session re-sends first (PUBLISH with DUP, PUBREL).
    pub(crate) fn resend(&mut self, requests: impl IntoIterator<Item = Request>) {
        self.resends.extend(requests);
    }

    /// Tells the state that incoming QoS 2 ids were acknowledged with PUBREC on an
    /// earlier connection (see `Link::expect_pubrel`).
    pub(crate) fn expect_pubrel(&mut self, ids: &[u16]) {
        super::internals::expect_pubrel_v5(&mut self.proto, ids);
    }

    /// Writes acknowledgements, in order, with one flush.
    pub(crate) async fn write_acks(
        &mut self,
        acks: impl IntoIterator<Item = Request>,
    ) -> Result<(), ConnectionError> {
        let timeout = self.timeout();
        let Some(socket) = self.socket.as_mut() else {
            // Not connected: these belong to a connection that has ended.
            return Ok(());
        };
        for ack in acks {
            if let Some(packet) = self.proto.handle_outgoing_packet(ack)? {
                socket.put(&packet)?;
            }
            // Nobody waits for the acknowledgement's `Outgoing` event.
            self.proto.events.pop_back();
        }
        flush(socket, timeout).await
    }

    /// The connection ends (a failure, or declared dead): what the state held is
    /// dropped by [`reset`](Self::reset).
    pub(crate) fn abandon(&mut self) {
        self.socket = None;
        self.held.clear();
        self.ping = None;
    }

    /// Events read or written and not yet returned by `poll`.
    pub(crate) fn has_buffered(&self) -> bool {
        !self.proto.events.is_empty()
    }

    /// The next event the state had already queued.
    pub(crate) fn buffered(&mut self) -> Option<Event> {
        self.proto.events.pop_front()
    }

    /// Empties the queues and the protocol state after a connection ended (the outbox
    /// re-sends what matters); returns the requests the connection never took from the
    /// channel.
    pub(crate) fn reset(&mut self) -> Vec<Request> {
        self.resends.clear();
        self.proto = MqttState::new(self.window, true);
        self.abandon();
        self.rx.drain().collect()
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.options.connection_timeout().max(1))
    }

    /// One incoming packet through the state; returns what to write in answer.
    fn incoming(&mut self, packet: Packet) -> Result<Option<Packet>, StateError> {
        if self.hold_pubrel {
            if let Packet::PubRec(rec) = &packet {
                let pkid = rec.pkid;
                let answer = self.proto.handle_incoming_packet(packet)?;
                if answer.is_some() {
                    // The PUBREL waits for the session's release; so does its event.
                    if matches!(self.proto.events.back(), Some(Event::Outgoing(Outgoing::PubRel(p))) if *p == pkid)
                    {
                        self.proto.events.pop_back();
                    }
                    self.held.insert(pkid);
                }
                return Ok(None);
            }
        }
        self.proto.handle_incoming_packet(packet)
    }

    /// One request from the session's client; returns what to write.
    fn outgoing(&mut self, request: Request) -> Result<Option<Packet>, StateError> {
        match request {
            // Only ever a release of a held PUBREL (a resumed one goes through
            // `resends`).
            Request::PubRel(rel) => {
                if !self.held.remove(&rel.pkid) {
                    return Ok(None);
                }
                self.proto
                    .events
                    .push_back(Event::Outgoing(Outgoing::PubRel(rel.pkid)));
                Ok(Some(Packet::PubRel(rel)))
            }
            Request::Subscribe(mut s) => {
                if s.filters.is_empty() {
                    return Err(StateError::EmptySubscription);
                }
                s.pkid = self.sub_ids.take();
                self.proto
                    .events
                    .push_back(Event::Outgoing(Outgoing::Subscribe(s.pkid)));
                Ok(Some(Packet::Subscribe(s)))
            }
            Request::Unsubscribe(mut u) => {
                u.pkid = self.sub_ids.take();
                self.proto
                    .events
                    .push_back(Event::Outgoing(Outgoing::Unsubscribe(u.pkid)));
                Ok(Some(Packet::Unsubscribe(u)))
            }
            other => self.proto.handle_outgoing_packet(other),
        }
    }

    /// Polls the established connection until it yields an event. Cancel-safe where it
    /// waits (reading, receiving, the ping timer); a cancelled write ends the
    /// connection (the driver abandons it).
    pub(crate) async fn poll(&mut self) -> Result<Event, ConnectionError> {
        let timeout = self.timeout();
        loop {
            if let Some(event) = self.proto.events.pop_front() {
                return Ok(event);
            }
            // Checked before the resends are taken from their queue.
            if self.socket.is_none() {
                return Err(ConnectionError::MqttState(StateError::ConnectionAborted));
            }
            if !self.resends.is_empty() {
                while let Some(request) = self.resends.pop_front() {
                    if let Some(packet) = self.proto.handle_outgoing_packet(request)? {
                        self.socket_mut()?.put(&packet)?;
                    }
                }
                flush(self.socket_mut()?, timeout).await?;
                continue;
            }
            let step = {
                let Some(socket) = self.socket.as_mut() else {
                    return Err(ConnectionError::MqttState(StateError::ConnectionAborted));
                };
                let ping = self.ping.as_mut();
                tokio::select! {
                    r = socket.next() => Step::Read(r),
                    r = self.rx.recv_async() => Step::Request(r),
                    () = ping_due(ping) => Step::Ping,
                }
            };
            match step {
                Step::Read(r) => {
                    let mut packet = Some(r?);
                    let mut read = 0;
                    while let Some(p) = packet.take() {
                        if let Some(answer) = self.incoming(p)? {
                            self.socket_mut()?.put(&answer)?;
                        }
                        read += 1;
                        if read < READ_BURST {
                            packet = self.socket_mut()?.next_now()?;
                        }
                    }
                    flush(self.socket_mut()?, timeout).await?;
                }
                Step::Request(r) => {
                    let mut request = Some(r.map_err(|_| ConnectionError::RequestsDone)?);
                    let mut taken = 0;
                    let mut written = false;
                    while let Some(req) = request.take() {
                        if let Some(packet) = self.outgoing(req)? {
                            self.socket_mut()?.put(&packet)?;
                            written = true;
                        }
                        taken += 1;
                        if taken < REQUEST_BURST {
                            request = self.rx.try_recv().ok();
                        }
                    }
                    if written {
                        flush(self.socket_mut()?, timeout).await?;
                    }
                }
                Step::Ping => {
                    let keep_alive = self.options.keep_alive();
                    if let Some(p) = self.ping.as_mut() {
                        p.as_mut().reset(tokio::time::Instant::now() + keep_alive);
                    }
                    if let Some(packet) = self.proto.handle_outgoing_packet(Request::PingReq)? {
                        let socket = self.socket_mut()?;
                        socket.put(&packet)?;
                        flush(socket, timeout).await?;
                    }
                }
            }
        }
    }

    fn socket_mut(&mut self) -> Result<&mut Socket, StateError> {
        self.socket.as_mut().ok_or(StateError::ConnectionAborted)
    }
}

/// Flushes `socket`, bounded by `timeout` as rumqttc bounds its own.
async fn flush(socket: &mut Socket, timeout: Duration) -> Result<(), ConnectionError> {
    match tokio::time::timeout(timeout, socket.flush()).await {
        Ok(r) => r.map_err(ConnectionError::MqttState),
        Err(elapsed) => Err(ConnectionError::Timeout(elapsed)),
    }
}
