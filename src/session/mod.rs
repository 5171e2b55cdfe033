//! The session layer: one MQTT connection per [`SessionActor`], its driver task, and the
//! plain types they are built from.
//!
//! A session's decisions are made by its `SessionCore` (`core/`), in plain code with no
//! actix, tokio or rumqttc: inputs in, effects out, table-tested. The actor is the shell
//! around it: it owns the connection's request side (a rumqttc client, in `io/`) and the
//! driver task that polls the connection, turns its messages, the driver's events and
//! the store's answers into the core's inputs, and carries out the effects (answers,
//! events, store writes, timers, the driver, the supervisor). Incoming messages never pass
//! through the actor: the driver hands them to the session's dispatcher directly, and its
//! acknowledger sends PUBACK/PUBREC once their consumers are done with them.
//!
//! Files: the actor is declared here; `actor.rs` holds its life cycle and how it carries
//! out effects, `handlers.rs` its messages. Plain, table-tested logic: `core/` (the
//! decisions), [`state`], `lifecycle.rs`, `backoff.rs`, `outbox.rs`, `subscriptions.rs`,
//! `status.rs`, `commit.rs`. Everything that speaks to rumqttc (the link, the driver, the
//! acknowledger, the failure mapping) is in `io/`, the only folder that names it.
//!
//! Guarantees:
//! - every state transition emits `session_state_changed`; `session_ready` follows
//!   `session_connected` once every active subscription was acknowledged;
//! - QoS >= 1 publishes complete on PUBACK/PUBCOMP and survive reconnects (re-sent after
//!   the next CONNACK) and actor restarts; QoS 0 publishes are refused while disconnected;
//! - the actor is `Supervised`: if it stops unexpectedly, actix restarts it in place (same
//!   outbox, same subscriptions) and it reconnects after a backoff delay.

mod actor;
pub(crate) mod backoff;
mod commit;
mod core;
pub mod handle;
mod handlers;
pub(crate) mod lifecycle;
mod qos2_received;
// `RoomWaits` is `pub` for `bench_internals` (feature `bench-internals`).
#[cfg_attr(not(feature = "bench-internals"), allow(unreachable_pub))]
pub(crate) mod incoming;
pub(crate) mod io;
pub mod lane;
pub(crate) mod outbox;
pub mod state;
pub(crate) mod status;
mod subscriptions;

pub(crate) use self::core::EndReason;
#[cfg(feature = "fault-injection")]
pub use self::handlers::InjectFailure;
pub(crate) use self::handlers::{
    Close, DirectSubscription, Resume, Retire, SessionEnded, Subscribe, Unsubscribe,
};
pub use self::handlers::{Enqueue, GetStatus, PublishMsg};
pub use self::io::link::BrokerLimits;
pub use self::status::SessionStatus;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{oneshot, watch};

use self::core::SessionCore;
use self::incoming::Dispatcher;
use self::io::link::Client;
use self::outbox::Resend;
use crate::error::Error;
use crate::event::EventBus;
use crate::metrics::counters::SessionCounters;
use crate::options::{BrokerUrl, SessionOptions};
use crate::store::{SessionMeta, StoreWorker, StoredPacketId, StoredPublish};

/// Capacity of the driver → actor event channel.
const DRIVER_EVENTS: usize = 1024;
/// How long a graceful close waits for queued QoS >= 1 publishes to be acknowledged.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);

/// Answers one caller (a publish, a subscribe).
type Responder = oneshot::Sender<Result<(), Error>>;

/// Who waits for the core's answer about one request.
#[derive(Debug)]
pub(crate) enum Waiter {
    /// A caller, on its channel.
    Caller(Responder),
    /// A caller's report channel ([`lane::reports`]): a tagged answer.
    Report(lane::ReportTo),
    /// Nobody: an enqueued publish after its acceptance. A failure is counted and
    /// announced as a `publish_failed` event (for this topic).
    Enqueued(String),
}

/// Everything a [`SessionActor`] is built from (given by the supervisor).
pub(crate) struct SessionParts {
    /// Validated options.
    pub opts: Arc<SessionOptions>,
    /// Parsed broker URLs (shared with each driver's link).
    pub brokers: Arc<[BrokerUrl]>,
    /// TLS configuration for the TLS brokers (built once by validation, reused for every
    /// attempt). When it is missing, TLS brokers are tried with a configuration that
    /// trusts no certificate: never in clear text.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The client id in use.
    pub client_id: Arc<str>,
    /// Event bus of the manager.
    pub bus: EventBus,
    /// Where incoming messages go.
    pub dispatcher: Arc<dyn Dispatcher>,
    /// Shared counters.
    pub counters: Arc<SessionCounters>,
    /// Status publisher.
    pub status: watch::Sender<SessionStatus>,
    /// Connection attempts in flight across the manager are bounded by this semaphore.
    pub connect_limit: Arc<tokio::sync::Semaphore>,
    /// The manager's store worker, if it has a store: every write goes through it.
    pub store: Option<StoreWorker>,
    /// Publishes found in the store's outbox for this session (replayed first, in order).
    pub restored_outbox: Vec<(u64, StoredPublish)>,
    /// The packet ids those publishes went out with (a persistent session resumes them
    /// with these ids when the broker kept its session).
    pub restored_ids: Vec<StoredPacketId>,
    /// Incoming QoS 2 packet ids handled and acknowledged with PUBREC before the restart,
    /// still waiting for the broker's PUBREL.
    pub restored_inbound: Vec<u16>,
    /// The session's stored metadata (last connected / disconnected).
    pub meta: SessionMeta,
    /// Where the actor reports why it ended (its supervisor). Without one, a failed actor
    /// restarts after its reconnect backoff and a session that gives up just stops.
    pub supervisor: Option<Recipient<SessionEnded>>,
}

impl std::fmt::Debug for SessionParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionParts")
            .field("name", &self.opts.name)
            .finish_non_exhaustive()
    }
}

/// The actor owning one MQTT connection: the shell around the session's core. See the
/// [module docs](self).
pub struct SessionActor {
    /// The session's decisions.
    core: SessionCore<Waiter>,
    p: SessionParts,
    /// The connection's request side (while a driver runs).
    client: Option<Client>,
    driver: Option<tokio::task::JoinHandle<()>>,
    /// The driver's events.
    stream: Option<SpawnHandle>,
    /// The one-second tick, running while publishes are queued.
    tick: Option<SpawnHandle>,
    /// A persistent session's incoming QoS 2 state, shared with each driver (`None` with a
    /// clean session). It outlives drivers and actor restarts.
    inbound: Option<Arc<qos2_received::Qos2Received>>,
    /// The driver waits for what a new connection re-sends first.
    resume: Option<oneshot::Sender<Vec<Resend>>>,
    /// A graceful close waiting for the outbox to empty.
    on_outbox_empty: Option<oneshot::Sender<()>>,
    /// A graceful close waiting for its DISCONNECT to be written.
    on_disconnect_written: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for SessionActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionActor")
            .field("name", self.core.name())
            .field("state", &self.core.state())
            .field("life", self.core.life())
            .finish_non_exhaustive()
    }
}
