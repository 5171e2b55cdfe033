//! Per-session counters, written by the driver and the actor with relaxed atomics and read
//! as a [`SessionMetrics`] snapshot.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Live counters of one session.
#[derive(Debug, Default)]
pub struct SessionCounters {
    /// Messages received (within `max_message_size`).
    pub messages_received: AtomicU64,
    /// Payload bytes received.
    pub bytes_received: AtomicU64,
    /// Messages sent (QoS 0 handed to the socket, QoS >= 1 acknowledged).
    pub messages_sent: AtomicU64,
    /// Payload bytes sent.
    pub bytes_sent: AtomicU64,
    /// Connection attempts (one per broker tried).
    pub connection_attempts: AtomicU64,
    /// Connections established after the first one.
    pub reconnects: AtomicU64,
    /// Connection failures and losses.
    pub connection_errors: AtomicU64,
    /// Incoming messages dropped for exceeding `max_message_size`.
    pub dropped_oversized: AtomicU64,
    /// QoS 0 publishes dropped because the connection ended before they were written.
    pub dropped_on_disconnect: AtomicU64,
    /// Unix time in milliseconds of the last message received (0 = never).
    pub last_message_ms: AtomicU64,
    /// Outbox entries (set by the actor).
    pub pending: AtomicU64,
    /// Outbox entries in flight (set by the actor).
    pub inflight: AtomicU64,
}

impl SessionCounters {
    /// Records "a message arrived now".
    pub fn touch_received(&self) {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_message_ms.store(ms, Ordering::Relaxed);
    }

    /// Records the outbox's size.
    pub fn set_outbox(&self, pending: usize, inflight: usize) {
        self.pending.store(pending as u64, Ordering::Relaxed);
        self.inflight.store(inflight as u64, Ordering::Relaxed);
    }

    /// A snapshot of every counter.
    pub fn snapshot(&self) -> SessionMetrics {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let last = get(&self.last_message_ms);
        SessionMetrics {
            messages_received: get(&self.messages_received),
            bytes_received: get(&self.bytes_received),
            messages_sent: get(&self.messages_sent),
            bytes_sent: get(&self.bytes_sent),
            connection_attempts: get(&self.connection_attempts),
            reconnects: get(&self.reconnects),
            connection_errors: get(&self.connection_errors),
            dropped_oversized: get(&self.dropped_oversized),
            dropped_on_disconnect: get(&self.dropped_on_disconnect),
            pending_messages: get(&self.pending),
            inflight_messages: get(&self.inflight),
            last_message_timestamp_seconds: (last > 0).then(|| last as f64 / 1000.0),
        }
    }
}

/// A session's figures as plain numbers (serde-serialisable).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionMetrics {
    /// Messages received.
    pub messages_received: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Connection attempts (one per broker tried).
    pub connection_attempts: u64,
    /// Successful reconnects.
    pub reconnects: u64,
    /// Connection failures and losses.
    pub connection_errors: u64,
    /// Incoming messages dropped for exceeding `max_message_size`.
    pub dropped_oversized: u64,
    /// QoS 0 publishes lost because the connection ended before they were written.
    pub dropped_on_disconnect: u64,
    /// QoS >= 1 publishes waiting to be sent or acknowledged.
    pub pending_messages: u64,
    /// QoS >= 1 publishes sent and not yet acknowledged.
    pub inflight_messages: u64,
    /// Unix time (seconds) of the last message received.
    pub last_message_timestamp_seconds: Option<f64>,
}
