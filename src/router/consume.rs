//! The consumers at the far end of a route's queue: a callback thread, an async task, or
//! an actix actor.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::Recipient;
use futures_util::FutureExt;

use super::route::RouteStats;
use crate::message::Message;

/// Runs a synchronous callback on its own thread, one message after another, until the
/// route ends. A slow or blocking callback never stalls a session's event loop; a panic is
/// caught and counted.
pub fn spawn_callback<F>(
    name: &str,
    rx: flume::Receiver<Message>,
    stats: Arc<RouteStats>,
    f: F,
) -> std::io::Result<()>
where
    F: Fn(&Message) + Send + 'static,
{
    let route = name.to_string();
    // The callback's thread logs through the subscriber of the thread registering it.
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    std::thread::Builder::new()
        .name(format!("mqtt-route-{name}"))
        .spawn(move || {
            let _log = tracing::dispatcher::set_default(&dispatch);
            while let Ok(m) = rx.recv() {
                if catch_unwind(AssertUnwindSafe(|| f(&m))).is_err() {
                    stats.panics.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(route = %route, topic = %m.topic, "route handler panicked");
                }
            }
        })
        .map(drop)
}

/// Runs an async handler on the current actix arbiter, one message after another.
pub fn spawn_async<F, Fut>(name: &str, rx: flume::Receiver<Message>, stats: Arc<RouteStats>, f: F)
where
    F: Fn(Message) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let route = name.to_string();
    actix::spawn(async move {
        while let Ok(m) = rx.recv_async().await {
            let topic = Arc::clone(&m.topic);
            if AssertUnwindSafe(f(m)).catch_unwind().await.is_err() {
                stats.panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!(route = %route, topic = %topic, "async route handler panicked");
            }
        }
    });
}

/// Forwards to an actix actor with `send().await`, so the actor's mailbox capacity
/// applies backpressure; a message is handled once the actor's handler is done with it.
/// Once the actor is gone, messages are left unacknowledged (and counted as dropped)
/// until the route is stopped.
pub fn spawn_actor(
    name: &str,
    rx: flume::Receiver<Message>,
    stats: Arc<RouteStats>,
    recipient: Recipient<Message>,
) {
    let route = name.to_string();
    actix::spawn(async move {
        let mut gone = false;
        while let Ok(m) = rx.recv_async().await {
            if !gone {
                // A second reference to the same acknowledgement guard: actix gives no
                // message back from a closed mailbox.
                let kept = m.clone();
                if recipient.send(m).await.is_ok() {
                    continue;
                }
                gone = true;
                tracing::warn!(route = %route, "route's actor is gone; its messages are left unacknowledged until the route stops");
                kept.leave_unacknowledged();
            } else {
                m.leave_unacknowledged();
            }
            stats.dropped_closed.fetch_add(1, Ordering::Relaxed);
        }
    });
}
