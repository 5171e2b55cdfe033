//! Per-session counters, written by the driver and the actor with relaxed atomics and read
//! as a [`SessionMetrics`] snapshot (or by the Prometheus collector, at scrape time).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::latency::LatencyHistogram;
use super::rates::{RateWindow, Totals};
use crate::event::ErrorKind;
use crate::session::status::SessionStatus;

/// Live counters of one session.
#[derive(Debug)]
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
    /// Connection failures and losses (the sum of [`errors_by_kind`](Self::errors_by_kind)).
    pub connection_errors: AtomicU64,
    /// Connection failures and losses by [`ErrorKind::index`]; use
    /// [`record_error`](Self::record_error) to count one.
    pub errors_by_kind: [AtomicU64; ErrorKind::ALL.len()],
    /// Incoming messages dropped for exceeding `max_message_size`.
    pub dropped_oversized: AtomicU64,
    /// QoS 0 publishes dropped because the connection ended before they were written.
    pub dropped_on_disconnect: AtomicU64,
    /// Incoming messages that matched no route and no receiver (QoS >= 1: after waiting
    /// `performance.unrouted_hold` for one, or past the hold's bound).
    pub dropped_unrouted: AtomicU64,
    /// Publishes queued with `enqueue` that failed after they were accepted.
    pub publish_failures: AtomicU64,
    /// The name of the thread the driver runs on (set when it starts).
    pub driver_thread: std::sync::OnceLock<String>,
    /// Unix time in milliseconds of the last message received (0 = never).
    pub last_message_ms: AtomicU64,
    /// Outbox entries (set by the actor).
    pub pending: AtomicU64,
    /// Outbox entries in flight (set by the actor).
    pub inflight: AtomicU64,
    /// Publish → acknowledgement latency of QoS >= 1 publishes (observed by the actor).
    pub ack_latency: LatencyHistogram,
    /// Samples for message and byte rates (touched once a second and when read, never
    /// on the message path).
    rates: Mutex<RateWindow>,
}

impl Default for SessionCounters {
    fn default() -> Self {
        SessionCounters {
            messages_received: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            messages_sent: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            connection_attempts: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            connection_errors: AtomicU64::new(0),
            errors_by_kind: Default::default(),
            dropped_oversized: AtomicU64::new(0),
            dropped_on_disconnect: AtomicU64::new(0),
            dropped_unrouted: AtomicU64::new(0),
            publish_failures: AtomicU64::new(0),
            driver_thread: std::sync::OnceLock::new(),
            last_message_ms: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            inflight: AtomicU64::new(0),
            ack_latency: LatencyHistogram::default(),
            rates: Mutex::new(RateWindow::new(Instant::now())),
        }
    }
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl SessionCounters {
    /// Counts one received message of `bytes` payload bytes, received at `at`.
    pub fn record_received(&self, bytes: usize, at: SystemTime) {
        self.messages_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_received
            .fetch_add(bytes as u64, Ordering::Relaxed);
        self.last_message_ms
            .store(crate::store::unix_ms(at), Ordering::Relaxed);
    }

    /// Counts one connection failure or loss of `kind`.
    pub fn record_error(&self, kind: ErrorKind) {
        self.connection_errors.fetch_add(1, Ordering::Relaxed);
        self.errors_by_kind[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Connection failures and losses of `kind`.
    pub fn errors_of(&self, kind: ErrorKind) -> u64 {
        get(&self.errors_by_kind[kind.index()])
    }

    /// Records the outbox's size.
    pub fn set_outbox(&self, pending: usize, inflight: usize) {
        self.pending.store(pending as u64, Ordering::Relaxed);
        self.inflight.store(inflight as u64, Ordering::Relaxed);
    }

    /// Unix time (seconds) of the last message received, if any.
    pub fn last_message_timestamp_seconds(&self) -> Option<f64> {
        let last = get(&self.last_message_ms);
        (last > 0).then(|| last as f64 / 1000.0)
    }

    fn totals(&self) -> Totals {
        [
            get(&self.messages_received),
            get(&self.bytes_received),
            get(&self.messages_sent),
            get(&self.bytes_sent),
        ]
    }

    /// Takes a rate sample now if one is due (called by the actor every second).
    pub fn sample_rates(&self, now: Instant) {
        let totals = self.totals();
        self.rates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(now, totals);
    }

    /// A snapshot of every counter, with rates at `now`. The connection fields (`state`,
    /// `up`, `ready`, `uptime_seconds`, `restarts`) and `dropped_consumer_full` are zero:
    /// [`SessionHandle::metrics`](crate::SessionHandle::metrics) fills them in.
    pub fn snapshot(&self) -> SessionMetrics {
        let now = Instant::now();
        let totals = self.totals();
        let rates = {
            let mut w = self.rates.lock().unwrap_or_else(|e| e.into_inner());
            w.record(now, totals);
            w.rates(now, totals)
        };
        let lat = self.ack_latency.snapshot();
        SessionMetrics {
            state: 0,
            up: 0,
            ready: 0,
            uptime_seconds: 0.0,
            restarts: 0,
            messages_received: totals[0],
            bytes_received: totals[1],
            messages_sent: totals[2],
            bytes_sent: totals[3],
            messages_received_per_second: rates[0],
            bytes_received_per_second: rates[1],
            messages_sent_per_second: rates[2],
            bytes_sent_per_second: rates[3],
            connection_attempts: get(&self.connection_attempts),
            reconnects: get(&self.reconnects),
            connection_errors: get(&self.connection_errors),
            connection_errors_by_kind: ErrorKind::ALL
                .iter()
                .map(|k| (k.as_str().to_string(), self.errors_of(*k)))
                .collect(),
            dropped_oversized: get(&self.dropped_oversized),
            dropped_on_disconnect: get(&self.dropped_on_disconnect),
            dropped_unrouted: get(&self.dropped_unrouted),
            publish_failures: get(&self.publish_failures),
            dropped_consumer_full: 0,
            pending_messages: get(&self.pending),
            inflight_messages: get(&self.inflight),
            publish_acks: lat.count,
            publish_ack_latency_seconds_sum: lat.sum_seconds,
            publish_ack_latency_p50_seconds: lat.quantile(0.5),
            publish_ack_latency_p99_seconds: lat.quantile(0.99),
            last_message_timestamp_seconds: self.last_message_timestamp_seconds(),
        }
    }

    /// [`snapshot`](Self::snapshot) completed with the connection fields from `status` and
    /// the consumer drops counted by the session's sinks.
    pub(crate) fn snapshot_with(
        &self,
        status: &SessionStatus,
        dropped_consumer_full: u64,
    ) -> SessionMetrics {
        let mut m = self.snapshot();
        m.state = status.state.code();
        m.up = u8::from(status.broker.is_some());
        m.ready = u8::from(status.ready);
        m.uptime_seconds = uptime_seconds(status);
        m.restarts = status.restarts;
        m.dropped_consumer_full = dropped_consumer_full;
        m
    }
}

/// Seconds since the current connection was established (0 when not connected).
pub(crate) fn uptime_seconds(status: &SessionStatus) -> f64 {
    status
        .connected_since
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A session's figures as plain numbers (serde-serialisable; every field is a number, an
/// absent optional figure is left out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SessionMetrics {
    /// The state's code ([`SessionState::code`](crate::SessionState::code): 0
    /// disconnected, 1 connecting, 2 connected, 3 reconnecting, 4 closed).
    pub state: u8,
    /// 1 while connected to a broker, else 0.
    pub up: u8,
    /// 1 while ready (connected, subscriptions restored), else 0.
    pub ready: u8,
    /// Seconds since the current connection was established (0 when not connected).
    pub uptime_seconds: f64,
    /// Times the supervisor restarted the session's actor.
    pub restarts: u32,
    /// Messages received.
    pub messages_received: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Messages received per second, over the last few seconds.
    pub messages_received_per_second: f64,
    /// Payload bytes received per second, over the last few seconds.
    pub bytes_received_per_second: f64,
    /// Messages sent per second, over the last few seconds.
    pub messages_sent_per_second: f64,
    /// Payload bytes sent per second, over the last few seconds.
    pub bytes_sent_per_second: f64,
    /// Connection attempts (one per broker tried).
    pub connection_attempts: u64,
    /// Successful reconnects.
    pub reconnects: u64,
    /// Connection failures and losses.
    pub connection_errors: u64,
    /// Connection failures and losses by [`ErrorKind`] label value (every kind present).
    pub connection_errors_by_kind: BTreeMap<String, u64>,
    /// Incoming messages dropped for exceeding `max_message_size`.
    pub dropped_oversized: u64,
    /// QoS 0 publishes lost because the connection ended before they were written.
    pub dropped_on_disconnect: u64,
    /// Incoming messages that matched no route and no receiver (see
    /// [`PerformanceOptions::unrouted_hold`](crate::PerformanceOptions::unrouted_hold)).
    pub dropped_unrouted: u64,
    /// Publishes queued with `enqueue` that failed after they were accepted.
    pub publish_failures: u64,
    /// QoS 0 messages dropped because a session message receiver was full.
    pub dropped_consumer_full: u64,
    /// QoS >= 1 publishes waiting to be sent or acknowledged.
    pub pending_messages: u64,
    /// QoS >= 1 publishes sent and not yet acknowledged.
    pub inflight_messages: u64,
    /// QoS >= 1 publishes acknowledged (observations of the latency histogram).
    pub publish_acks: u64,
    /// Sum of the publish → acknowledgement latencies, in seconds.
    pub publish_ack_latency_seconds_sum: f64,
    /// Median publish → acknowledgement latency (seconds, estimated from the histogram).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_ack_latency_p50_seconds: Option<f64>,
    /// 99th percentile publish → acknowledgement latency (seconds, estimated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_ack_latency_p99_seconds: Option<f64>,
    /// Unix time (seconds) of the last message received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message_timestamp_seconds: Option<f64>,
}
