//! # mqtt-sessions
//!
//! Many MQTT client sessions at once — to one broker or many — under actix actor
//! supervision: each session connects with backoff across a list of brokers, restores
//! its subscriptions after every reconnect, queues QoS >= 1 publishes while disconnected
//! and reports typed events.
//!
//! ```no_run
//! use std::time::Duration;
//! use mqtt_sessions::{EventKind, QoS, SessionManager, SessionOptions};
//!
//! #[actix::main]
//! async fn main() -> Result<(), mqtt_sessions::Error> {
//!     let manager = SessionManager::new()?;
//!     let _guard = manager.on_event(EventKind::SessionReady, |ev| println!("{} ready", ev.session));
//!     let plant = manager.add_session(SessionOptions::new("plant-1", "mqtt://127.0.0.1:1883")).await?;
//!     let messages = plant.messages();
//!     plant.subscribe("sensors/#", QoS::AtLeastOnce).await?;
//!     manager.wait_for_session("plant-1", Duration::from_secs(10)).await?;
//!     if let Some(msg) = messages.recv().await {
//!         println!("{} on {}: {:?}", msg.session, msg.topic, msg.payload_str());
//!     }
//!     manager.shutdown().await;
//!     Ok(())
//! }
//! ```
//!
//! # Layout
//!
//! - [`manager`]: [`SessionManager`], the cloneable façade; reads take a short read lock
//!   on the session registry (an `RwLock` only the supervisor writes), changes go to the
//!   supervisor.
//! - [`supervisor`]: the `Supervisor` actor (crate-private); owns the set of
//!   sessions, refuses duplicate names and client ids, starts each session under actix
//!   supervision.
//! - [`session`]: the [`SessionActor`](session::SessionActor), a shell around the
//!   session's sans-IO core (`session::core`, crate-private: every decision — state
//!   machine, subscriptions, outbox, group commit — as inputs in and effects out, with no
//!   actix, tokio or rumqttc), its driver task (which polls the connection) and its
//!   acknowledger (PUBACK/PUBREC in arrival order, once every consumer of a message has
//!   dropped it: see [`Message`]'s acknowledgement rules and `delivery`); plain logic also
//!   in [`session::state`], `session::backoff` and `session::outbox`. MQTT 3.1.1 and
//!   MQTT 5 (`protocol = "5"`) share all of it: `session::io` (crate-private) is the one
//!   folder that names rumqttc: the link (a protocol-neutral client and connection; the
//!   link polls its connections itself over rumqttc's public protocol state, MQTT 5 over
//!   WebSocket excepted), the driver, the acknowledger and the failure mapping.
//!   The session layer names no router or supervisor type: it talks to them through
//!   `Recipient`s of messages it declares (`SessionEnded`,
//!   `DirectSubscription`, both crate-private).
//! - `request` (crate-private): MQTT 5 request/response ([`SessionManager::request`],
//!   [`SessionManager::respond`]) on a per-session response route, above both the router
//!   and the sessions.
//! - [`reason`]: [`ReasonCode`], the MQTT 5 reason codes carried by errors and events.
//! - [`router`]: the `RouterActor` (crate-private; route table, reference-counted
//!   subscriptions), the dispatch path (a route table snapshot in an `ArcSwap`: no actor hop,
//!   no lock on the table) and the route consumers (callback pool, async task, actix actor,
//!   channel).
//! - [`topic`]: topic name and filter validation and matching.
//! - [`store`]: the sled [`Store`](store::Store) (subscriptions, session metadata, the
//!   durable outbox, held messages) with its versioned schema and `migrations/`; the
//!   router's durable routes ([`router::durable`]) hold messages there.
//! - [`tls`]: [`TlsOptions`] and the rustls client configuration built from them (CA file
//!   or system roots, mutual TLS, `server_name`, `skip_verify`, ALPN), checked when a
//!   session is added and shared by all its connection attempts.
//! - [`metrics`]: the Prometheus collector that reads every session's counters at scrape
//!   time (one registry per manager), the [`ManagerMetrics`] snapshot with rates, and the
//!   [`RouteStatsSource`] extension point for per-route figures.
//! - `http` (feature `http`, on by default): the actix-web endpoints `/metrics`,
//!   `/healthz`, `/readyz`, `/sessions` (paged), `/events` (Server-Sent Events) and the
//!   live status page `/`, to mount on an application's `App` or serve on their own
//!   (loopback by default; TLS, basic auth with bcrypt hashes, bearer token).
//! - [`options`], [`message`], [`event`], [`error`], [`credentials`], [`reason`]: the public
//!   data types. [`event`]'s streams are `futures::Stream`s, and
//!   [`SessionManager::events_to`] hands events to an actix `Recipient<Event>`.
//!
//! Dependencies point one way and no two files import each other, directly or around a
//! circle (`docs/ARCHITECTURE.md`, section "Threads", lists the layers; `tests/hygiene.rs`
//! checks it).
//!
//! The `mqtt-sessions` daemon (TOML config, forwarding rules, reload on SIGHUP, the
//! embedded broker, systemd notification) is a separate package, `mqtt-sessions-daemon`,
//! built on this library's public API: depending on this crate never compiles it.
//!
//! `docs/ARCHITECTURE.md` describes each actor, its messages and its guarantees.
//!
//! # Features
//!
//! | feature | default | what |
//! | --- | --- | --- |
//! | `http` | yes | the `http` module: the actix-web endpoints (`/metrics`, `/healthz`, `/readyz`, `/sessions`, `/events`, the status page), TLS and credentials |
//! | `fault-injection` | no | `session::FaultInjection`: makes a session actor fail on purpose (supervision tests only) |
//!
//! Items that need a feature carry a badge in these docs.

// Feature badges on docs.rs (`--cfg docsrs`, nightly): `doc_cfg` labels every item behind
// a `cfg(feature = ...)`.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod credentials;
mod delivery;

/// The README's Rust blocks, compiled (and the ones without `no_run` run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
pub mod error;
pub mod event;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
pub mod manager;
pub mod message;
pub mod metrics;
pub mod options;
pub mod reason;
mod request;
pub mod router;
pub mod session;
mod small_map;
pub mod store;
pub mod supervisor;
pub mod tls;
pub mod topic;
pub(crate) mod workers;

/// What the criterion benchmarks (`benches/matching.rs`, `benches/store.rs`) measure
/// directly: the route table, the filter trie and the store's removal of an outbox entry
/// without its packet id. Feature `bench-internals`; not part of the API and not covered
/// by semver.
#[cfg(feature = "bench-internals")]
#[doc(hidden)]
pub mod bench_internals {
    pub use crate::router::dispatch::{RouteEntry, RouteTable, Target};
    pub use crate::router::table::FilterTrie;

    /// [`Store::outbox_remove`](crate::store::Store::outbox_remove) without the packet
    /// id's removal (what a session does when none of its ids can be on disk).
    pub fn outbox_remove_entry(
        store: &crate::store::Store,
        session: &str,
        seq: u64,
    ) -> crate::store::Result<bool> {
        store.outbox_remove_entry(session, seq)
    }
}

pub use credentials::{Credentials, CredentialsError, CredentialsProvider, Secret};
pub use error::{Error, Result};
pub use event::{
    ActorFailure, ConnectionFailure, ErrorKind, Event, EventData, EventForwarder, EventGuard,
    EventKind, EventStream, GiveUpReason,
};
pub use manager::{SessionManager, SessionManagerBuilder};
pub use message::{InvalidQos, Message, MessageProperties, Publish, QoS};
pub use metrics::counters::SessionMetrics;
pub use metrics::{ManagerMetrics, PerSessionMetrics, RouteStatsSnapshot, RouteStatsSource};
pub use options::{
    ConnectOptions, OptionsError, PerformanceOptions, Protocol, ReconnectOptions, SessionOptions,
    TlsOptions, WillOptions,
};
pub use reason::ReasonCode;
pub use router::builder::RouteBuilder;
pub use router::route::{
    Listener, Overflow, RetainHandling, Route, RouteCounts, RouteOptions, SubscribeOptions,
};
pub use session::handle::SessionHandle;
pub use session::lane::{PublishLane, Submitted};
pub use session::state::SessionState;
pub use session::SessionStatus;
pub use supervisor::SupervisionOptions;
pub use tls::TlsError;
pub use topic::{TopicError, TopicFilter};
