//! The session layer: one MQTT connection per [`SessionActor`], its driver task, and the
//! plain types they are built from.
//!
//! The actor owns a rumqttc client whose event loop runs in a separate task, the
//! `driver`. The driver reports connection events (`io::driver::DriverEvent`) through a
//! bounded channel attached with `add_stream`; the actor turns them into state
//! transitions, [`crate::Event`]s and counters, restores subscriptions after a
//! connect, and feeds the outbox (`outbox.rs`) into rumqttc. Incoming messages never pass
//! through the actor: the driver hands them to the session's dispatcher directly, and its
//! acknowledger sends PUBACK/PUBREC once their consumers are done with them.
//!
//! Files: the actor's state is declared here; `actor.rs` holds its life cycle (start,
//! status, supervision), `driver_events.rs` what it does with the driver's events,
//! `publishing.rs` the outbox and the group commit, `handlers.rs` its messages. Plain,
//! table-tested logic: [`state`], `lifecycle.rs`, `backoff.rs`, `outbox.rs`,
//! `subscriptions.rs`, `status.rs`, `commit.rs`. Everything that speaks to rumqttc (the link, the driver, the
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
mod driver_events;
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
mod publishing;
pub mod state;
pub(crate) mod status;
mod subscriptions;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use tokio::sync::{oneshot, watch};

#[cfg(feature = "fault-injection")]
pub use self::handlers::InjectFailure;
pub(crate) use self::handlers::{
    Close, DirectSubscription, EndReason, Resume, Retire, SessionEnded, Subscribe, Unsubscribe,
};
pub use self::handlers::{Enqueue, GetStatus, PublishMsg};
pub use self::io::link::BrokerLimits;
pub use self::status::SessionStatus;

use self::commit::GroupCommit;
use self::incoming::Dispatcher;
use self::io::link::Client;
use self::lifecycle::Lifecycle;
use self::outbox::Outbox;
use self::state::SessionState;
use self::subscriptions::Subscriptions;
use crate::error::Error;
use crate::event::{ActorFailure, ConnectionFailure, EventBus};
use crate::message::Publish;
use crate::metrics::counters::SessionCounters;
use crate::options::{BrokerUrl, SessionOptions};
use crate::store::{SessionMeta, StoreWorker, StoredPacketId, StoredPublish};

/// Capacity of the driver → actor event channel.
const DRIVER_EVENTS: usize = 1024;
/// How long a graceful close waits for queued QoS >= 1 publishes to be acknowledged.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);

/// Answers one caller (a publish, a subscribe).
type Responder = oneshot::Sender<Result<(), Error>>;

/// Who learns what of one publish: `accepted` once it is queued (durable, with a store),
/// `done` once the broker acknowledged it (or it failed).
#[derive(Debug, Default)]
struct Completion {
    accepted: Option<Responder>,
    done: Option<Responder>,
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

/// The actor owning one MQTT connection. See the [module docs](self).
pub struct SessionActor {
    name: Arc<str>,
    p: SessionParts,
    state: SessionState,
    /// What the actor may do next: run a driver, wait for a verdict, nothing (closed or
    /// gave up). Replaces the flags that had to agree (`lifecycle.rs`, table-tested).
    life: Lifecycle,
    connected_broker: Option<usize>,
    connected_since: Option<SystemTime>,
    state_since: SystemTime,
    last_error: Option<ConnectionFailure>,
    ever_connected: bool,
    client: Option<Client>,
    driver: Option<tokio::task::JoinHandle<()>>,
    broker_limits: BrokerLimits,
    stream: Option<SpawnHandle>,
    subscriptions: Subscriptions<Responder>,
    outbox: Outbox<Responder>,
    /// A persistent session's incoming QoS 2 state, shared with each driver (`None` with a
    /// clean session). It outlives drivers and actor restarts.
    inbound: Option<Arc<qos2_received::Qos2Received>>,
    /// A graceful close waiting for the outbox to empty.
    on_outbox_empty: Option<oneshot::Sender<()>>,
    /// The one-second tick, running while publishes are queued.
    tick: Option<SpawnHandle>,
    on_disconnect_written: Option<oneshot::Sender<()>>,
    /// QoS >= 1 publishes on their way to the store's outbox (with a store).
    durable: GroupCommit<(Publish, Completion)>,
    /// Handed publishes whose packet ids are being recorded (a persistent session with a
    /// store, MQTT 3.1.1): nothing is handed after them until they go to rumqttc.
    recording: bool,
    /// Held PUBRELs to release that rumqttc's channel had no room for (retried by `pump`).
    releases: Vec<u16>,
    /// Store sequence numbers of completed publishes, to remove from the store's outbox
    /// in one job (see `remove_stored`).
    removals: Vec<u64>,
    meta: SessionMeta,
    restarts: u32,
    /// Why the actor is stopping, when it stops itself after a failure (reported to the
    /// supervisor on restart; `ActorStopped` when not set).
    failure: Option<ActorFailure>,
}

impl std::fmt::Debug for SessionActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionActor")
            .field("name", &self.name)
            .field("state", &self.state)
            .field("life", &self.life)
            .finish_non_exhaustive()
    }
}
