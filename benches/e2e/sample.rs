//! What one run is made with ([`Variant`]: who does the work) and what it yields
//! ([`Sample`]: one measurement), shared by the scenarios, the forwarding runs and the
//! report.

use serde::Serialize;

/// Who does the work in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Variant {
    /// Raw rumqttc.
    Raw,
    /// Raw rumqttc whose poll loop hands each message to a consumer on another thread
    /// through a bounded tokio channel: what one thread hop costs, without the library.
    RawHop,
    /// mqtt-sessions, `listen`.
    Listen,
    /// mqtt-sessions, `handle`.
    Handle,
    /// mqtt-sessions, `handle_inline`: the callback runs on the session's worker, inside
    /// its dispatch.
    HandleInline,
    /// mqtt-sessions, the library's own path (`add_session` storm, `publish`).
    Library,
    /// mqtt-sessions with at most `concurrency` sessions connecting (application-side).
    LibraryBounded,
    /// mqtt-sessions with a sled store: a publish completes once it is on disk.
    LibraryStore,
    /// mqtt-sessions, publishing from a task on the session's own worker
    /// (`SessionHandle::arbiter`): no thread crossing on the way to the outbox.
    LibraryOnWorker,
    /// mqtt-sessions, every session with its own `handle` route (callbacks on the shared
    /// pool of callback threads).
    LibraryHandleRoutes,
    /// mqtt-sessions, every session with its own `handle_inline` route.
    LibraryInlineRoutes,
    /// mqtt-sessions, every session on one worker thread (`workers(1)`).
    #[serde(rename = "library-workers-1")]
    LibraryWorkers1,
    /// mqtt-sessions, one worker thread per core (`workers(nproc)`, the default).
    LibraryWorkersN,
    /// mqtt-sessions, `workers(nproc)`, every session's messages taken with
    /// `handle_inline` instead of `listen`.
    LibraryWorkersNInline,
    /// Slow neighbour, the reference: sessions on one worker taking their messages with
    /// `handle_inline`, beside a neighbour session whose `handle_inline` callback only counts.
    NeighbourQuiet,
    /// Slow neighbour: the neighbour's `handle_inline` callback spins ~1 ms per message on
    /// the worker the other sessions share.
    NeighbourSpinInline,
    /// Slow neighbour: the same spinning callback in `handle` (the shared pool of callback
    /// threads), off the worker.
    NeighbourSpinHandle,
    /// Forwarding: mosquitto's own bridge (a `connection` section in the edge broker).
    Bridge,
    /// Forwarding: a raw rumqttc forwarder in a process of its own (`raw_forwarder.rs`),
    /// acknowledging each message to A on B's PUBACK: the reference for any forwarder
    /// outside the broker.
    RawForwarder,
    /// Forwarding: the `mqtt-sessions` daemon's rule, no store (handled on the target's
    /// PUBACK).
    Daemon,
    /// Forwarding: the daemon's rule with a `[store]` (handled once durable in the
    /// target's outbox).
    DaemonStore,
}

impl Variant {
    /// The name in the table.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Variant::Raw => "raw rumqttc",
            Variant::RawHop => "raw rumqttc + thread hop",
            Variant::Listen => "listen",
            Variant::Handle => "handle",
            Variant::HandleInline => "handle_inline",
            Variant::Library => "mqtt-sessions",
            Variant::LibraryBounded => "mqtt-sessions (64 at once)",
            Variant::LibraryStore => "mqtt-sessions + store",
            Variant::LibraryOnWorker => "mqtt-sessions, from the session's worker",
            Variant::LibraryHandleRoutes => "mqtt-sessions, a handle route each",
            Variant::LibraryInlineRoutes => "mqtt-sessions, a handle_inline route each",
            Variant::LibraryWorkers1 => "mqtt-sessions, workers 1",
            Variant::LibraryWorkersN => "mqtt-sessions, workers nproc",
            Variant::LibraryWorkersNInline => "mqtt-sessions, workers nproc, handle_inline",
            Variant::NeighbourQuiet => "handle_inline, quiet neighbour",
            Variant::NeighbourSpinInline => "neighbour spins 1 ms in handle_inline",
            Variant::NeighbourSpinHandle => "neighbour spins 1 ms in handle",
            Variant::Bridge => "mosquitto bridge",
            Variant::RawForwarder => "raw rumqttc forwarder",
            Variant::Daemon => "daemon",
            Variant::DaemonStore => "daemon + store",
        }
    }

    /// The name in a child process's arguments.
    pub(crate) fn arg(self) -> &'static str {
        match self {
            Variant::Raw => "raw",
            Variant::RawHop => "raw-hop",
            Variant::Listen => "listen",
            Variant::Handle => "handle",
            Variant::HandleInline => "handle-inline",
            Variant::Library => "library",
            Variant::LibraryBounded => "library-bounded",
            Variant::LibraryStore => "library-store",
            Variant::LibraryOnWorker => "library-on-worker",
            Variant::LibraryHandleRoutes => "library-handle-routes",
            Variant::LibraryInlineRoutes => "library-inline-routes",
            Variant::LibraryWorkers1 => "library-workers-1",
            Variant::LibraryWorkersN => "library-workers-n",
            Variant::LibraryWorkersNInline => "library-workers-n-inline",
            Variant::NeighbourQuiet => "neighbour-quiet",
            Variant::NeighbourSpinInline => "neighbour-spin-inline",
            Variant::NeighbourSpinHandle => "neighbour-spin-handle",
            Variant::Bridge => "bridge",
            Variant::RawForwarder => "raw-forwarder",
            Variant::Daemon => "daemon",
            Variant::DaemonStore => "daemon-store",
        }
    }

    /// The inverse of [`arg`](Self::arg).
    pub(crate) fn from_arg(s: &str) -> Option<Variant> {
        [
            Variant::Raw,
            Variant::RawHop,
            Variant::Listen,
            Variant::Handle,
            Variant::HandleInline,
            Variant::Library,
            Variant::LibraryBounded,
            Variant::LibraryStore,
            Variant::LibraryOnWorker,
            Variant::LibraryHandleRoutes,
            Variant::LibraryInlineRoutes,
            Variant::LibraryWorkers1,
            Variant::LibraryWorkersN,
            Variant::LibraryWorkersNInline,
            Variant::NeighbourQuiet,
            Variant::NeighbourSpinInline,
            Variant::NeighbourSpinHandle,
            Variant::Bridge,
            Variant::RawForwarder,
            Variant::Daemon,
            Variant::DaemonStore,
        ]
        .into_iter()
        .find(|v| v.arg() == s)
    }
}

/// One measurement; absent figures do not apply to the scenario.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub(crate) struct Sample {
    /// Messages per second.
    pub(crate) msgs_per_s: Option<f64>,
    /// Messages published (written for QoS 0, acknowledged for QoS 1).
    pub(crate) published: Option<u64>,
    /// Distinct messages received.
    pub(crate) received: Option<u64>,
    /// `published - distinct received`.
    pub(crate) lost: Option<u64>,
    /// Messages received more than once (forwarding: `received - distinct`).
    pub(crate) duplicates: Option<u64>,
    /// QoS 0 messages the route's queue dropped (mqtt-sessions only), included in `lost`.
    pub(crate) dropped: Option<u64>,
    /// Latency median, µs.
    pub(crate) p50_us: Option<f64>,
    /// Latency 99th percentile, µs.
    pub(crate) p99_us: Option<f64>,
    /// Seconds until every session was ready.
    pub(crate) ready_s: Option<f64>,
    /// Sessions ready at the end.
    pub(crate) ready: Option<usize>,
    /// Resident memory per session, kB.
    pub(crate) kb_per_session: Option<f64>,
    /// Many sessions only: threads of the process holding them (`Threads` of
    /// `/proc/<pid>/status`); with a route per session, after every route got a message.
    #[serde(default)]
    pub(crate) threads: Option<u64>,
    /// Fan-in only: user + system CPU time of this bench process per message received,
    /// µs, over the measured window (subscriber ready → every message in), less the
    /// publishers' thread; see `scenarios::through_subscriber`.
    pub(crate) cpu_us_per_msg: Option<f64>,
    /// Free text.
    pub(crate) note: Option<String>,
}
