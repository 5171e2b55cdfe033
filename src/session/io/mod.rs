//! The session's I/O: everything that speaks to rumqttc, and the only place in the crate
//! that names it (a test in `tests/hygiene.rs` fails when another file does).
//!
//! - [`link`]: one protocol-neutral face over rumqttc's MQTT 3.1.1 and MQTT 5 clients
//!   (the request side [`link::Client`], the event-loop side [`link::Link`]), the
//!   conversions of packets and options, and, in `link/internals.rs` alone, what reaches
//!   past rumqttc's public API (named there with the rumqttc version it was written for);
//! - [`driver`]: the task that owns the link, reconnects with backoff, hands incoming
//!   messages to the session's dispatcher and reports the rest to the actor as
//!   [`driver::DriverEvent`]s;
//! - [`ack`]: the acknowledger, which writes PUBACK / PUBREC in arrival order once a
//!   message's consumers are done with it;
//! - [`failure`]: rumqttc's errors and reason codes mapped to this crate's typed
//!   [`ConnectionFailure`](crate::event::ConnectionFailure) and
//!   [`ReasonCode`](crate::ReasonCode).
//!
//! What crosses out of this folder is the crate's own types: [`link::LinkEvent`],
//! [`link::Written`], [`link::BrokerAck`], [`link::BrokerLimits`], [`driver::DriverEvent`].
//! rumqttc upgrades touch this folder only; `link/internals.rs` says what to check first.

pub(crate) mod ack;
pub(crate) mod driver;
pub(crate) mod failure;
pub(crate) mod link;
