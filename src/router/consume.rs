//! The consumers at the far end of a route's queue: a callback on the shared pool of
//! callback threads, an async task, or an actix actor.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::Recipient;
use futures_util::FutureExt;

use super::route::RouteStats;
use crate::message::Message;

/// Most messages of one route a pool thread handles per hand-over, before the route goes
/// back in line (so a busy route shares the pool with the others).
const CALLBACK_BATCH: usize = 64;

/// The pool size asked for before the pool started (0: the default).
static REQUESTED_THREADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Largest pool.
const MAX_CALLBACK_THREADS: usize = 4096;

/// Asks for a pool of `n` threads (clamped to 1..=4096); too late once the pool runs.
pub(crate) fn set_callback_threads(n: usize) {
    let n = n.clamp(1, MAX_CALLBACK_THREADS);
    REQUESTED_THREADS.store(n, Ordering::Relaxed);
    if let Some(Ok(size)) = POOL.get().map(|p| p.as_ref().map(|(_, size)| *size)) {
        if size != n {
            tracing::warn!(
                running = size,
                asked = n,
                "the callback pool is already running; its size stays (it is one per process)"
            );
        }
    }
}

/// Most threads the shared pool runs blocking callbacks on at once, whatever the number
/// of `handle` routes: as asked ([`SessionManagerBuilder::callback_threads`](crate::SessionManagerBuilder::callback_threads)),
/// else twice the machine's cores, at least 4.
fn callback_threads() -> usize {
    match REQUESTED_THREADS.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map_or(4, |n| (2 * n.get()).max(4)),
        n => n,
    }
}

/// The pool: its runtime's handle and its size.
type Pool = Result<(tokio::runtime::Handle, usize), std::io::Error>;
static POOL: std::sync::OnceLock<Pool> = std::sync::OnceLock::new();

/// The process's pool for blocking route callbacks: a current-thread tokio runtime on one
/// thread of its own (`mqtt-route-callbacks`) that moves each route's messages, and its
/// blocking threads (at most `callback_threads()`, idle ones end after 10 s) that run the
/// callbacks. Made on first use; an error (no thread could be started) is kept and
/// returned to every `handle` call.
fn callback_pool() -> Result<&'static tokio::runtime::Handle, &'static std::io::Error> {
    POOL.get_or_init(|| {
        let size = callback_threads();
        let rt = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(size)
            .thread_name("mqtt-route-callback")
            .enable_time()
            .build()?;
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("mqtt-route-callbacks".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))?;
        Ok((handle, size))
    })
    .as_ref()
    .map(|(handle, _)| handle)
}

/// Runs a synchronous callback for each message of a route, one after another, on the
/// shared pool of callback threads (`callback_pool`): a route's callback runs on at most
/// one pool thread at a time, so its messages stay in order and a slow or blocked callback
/// holds one thread, never the whole pool, and never stalls a session's event loop. The
/// number of threads does not grow with the number of routes. A panic is caught and
/// counted; the message is handled (acknowledged) once the callback returned.
pub(crate) fn spawn_callback<F>(
    name: &str,
    rx: flume::Receiver<Message>,
    stats: Arc<RouteStats>,
    f: F,
) -> std::io::Result<()>
where
    F: Fn(&Message) + Send + 'static,
{
    let pool = callback_pool().map_err(|e| std::io::Error::new(e.kind(), e.to_string()))?;
    let route = name.to_string();
    // The callback logs through the subscriber of the thread registering it.
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    pool.spawn(async move {
        // The callback travels to a pool thread with each message and comes back with it.
        let mut f = Some(f);
        while let Ok(m) = rx.recv_async().await {
            let Some(callback) = f.take() else { break };
            let (stats, route, dispatch) = (Arc::clone(&stats), route.clone(), dispatch.clone());
            let queue = rx.clone();
            let ran = tokio::task::spawn_blocking(move || {
                let _log = tracing::dispatcher::set_default(&dispatch);
                // This message, then what queued behind it meanwhile (up to a batch), on
                // this pool thread: one hand-over per burst, not per message.
                let burst = std::iter::once(m).chain(queue.try_iter().take(CALLBACK_BATCH - 1));
                for m in burst {
                    if catch_unwind(AssertUnwindSafe(|| callback(&m))).is_err() {
                        stats.panics.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(route = %route, topic = %m.topic, "route handler panicked");
                    }
                }
                callback
            })
            .await;
            match ran {
                Ok(callback) => f = Some(callback),
                // The pool is shutting down with the process.
                Err(_) => break,
            }
        }
    });
    Ok(())
}

/// Runs an async handler on the current actix arbiter, one message after another.
pub(crate) fn spawn_async<F, Fut>(
    name: &str,
    rx: flume::Receiver<Message>,
    stats: Arc<RouteStats>,
    f: F,
) where
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
pub(crate) fn spawn_actor(
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
