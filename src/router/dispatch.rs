//! The hot path: matching a received message against the route table snapshot and
//! handing it to every matching route, on the session's driver task.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use futures_util::FutureExt;

use super::route::{Overflow, RouteScope, RouteStats};
use super::table::FilterTrie;
use crate::message::{Message, QoS};
use crate::session::incoming::{Dispatcher, Pending};
use crate::topic::TopicFilter;

/// One route as the dispatcher sees it.
#[derive(Debug)]
pub struct RouteEntry {
    /// Route id.
    pub id: u64,
    /// Route name.
    pub name: Arc<str>,
    /// Its filter.
    pub filter: TopicFilter,
    /// Which sessions it covers.
    pub scope: RouteScope,
    /// Subscription QoS it asks for.
    pub qos: QoS,
    /// QoS 0 overflow policy.
    pub overflow: Overflow,
    /// The route's queue.
    pub tx: flume::Sender<Message>,
    /// A receiver kept only for [`Overflow::DropOldest`] (to pop the oldest when full).
    pub oldest: Option<flume::Receiver<Message>>,
    /// Counters.
    pub stats: Arc<RouteStats>,
}

impl RouteEntry {
    /// Offers `msg` to this route; returns a future when a QoS >= 1 message must wait for room.
    #[inline]
    fn offer(&self, msg: &Message) -> Option<Pending> {
        match self.tx.try_send(msg.clone()) {
            Ok(()) => {
                record_delivery_at(&self.stats, msg.received_at);
                None
            }
            Err(flume::TrySendError::Full(m)) => {
                if msg.qos == QoS::AtMostOnce {
                    self.overflow_qos0(m);
                    return None;
                }
                let stats = Arc::clone(&self.stats);
                let fut = self.tx.clone().into_send_async(m).map(move |r| match r {
                    Ok(()) => stats.record_delivery(),
                    Err(_) => {
                        stats.dropped_closed.fetch_add(1, Ordering::Relaxed);
                    }
                });
                Some(Box::pin(fut))
            }
            Err(flume::TrySendError::Disconnected(_)) => {
                self.stats.dropped_closed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn overflow_qos0(&self, m: Message) {
        self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
        if let (Overflow::DropOldest, Some(rx)) = (self.overflow, &self.oldest) {
            let _ = rx.try_recv();
            if self.tx.try_send(m).is_ok() {
                self.stats.record_delivery();
            }
        }
    }
}

/// Counts a delivery made during dispatch, stamping the route's last-message time with
/// the message's receive time. [`RouteStats::record_delivery`] reads the clock instead;
/// on this path that was one clock read per matching route per message, on top of the
/// driver's own: `benches/matching.rs` (`dispatch/*`, `receive/*`) measured ~25 ns per
/// route saved (docs/BENCHMARKS.md). The two times differ by the dispatch's own few
/// hundred nanoseconds, far below the millisecond resolution of the figure.
#[inline]
fn record_delivery_at(stats: &RouteStats, at: SystemTime) {
    stats.delivered.fetch_add(1, Ordering::Relaxed);
    let ms = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    stats.last_message_ms.store(ms, Ordering::Relaxed);
}

/// The route table as published by the router: an immutable snapshot.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    /// Routes by filter.
    pub trie: FilterTrie<Arc<RouteEntry>>,
}

impl RouteTable {
    /// Offers `msg`, received by `session`, to every matching route.
    pub fn dispatch(&self, session: &str, msg: &Message) -> Option<Pending> {
        let mut first: Option<Pending> = None;
        let mut more: Vec<Pending> = Vec::new();
        self.trie.for_each_match(&msg.topic, |e| {
            if e.scope.covers(session) {
                if let Some(w) = e.offer(msg) {
                    match first {
                        None => first = Some(w),
                        Some(_) => more.push(w),
                    }
                }
            }
        });
        let first = first?;
        if more.is_empty() {
            return Some(first);
        }
        Some(Box::pin(async move {
            first.await;
            for w in more {
                w.await;
            }
        }))
    }
}

/// A session's view of the shared route table.
#[derive(Debug)]
pub struct RouterDispatch {
    /// The session.
    pub session: Arc<str>,
    /// The snapshot the router publishes.
    pub table: Arc<ArcSwap<RouteTable>>,
}

impl Dispatcher for RouterDispatch {
    #[inline]
    fn dispatch(&self, msg: &Message) -> Option<Pending> {
        self.table.load().dispatch(&self.session, msg)
    }
}
