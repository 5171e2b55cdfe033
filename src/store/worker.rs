//! [`StoreWorker`]: the one thread that runs a manager's store writes, in order.
//!
//! Every store operation that writes (and so may wait for an fsync) is submitted here by
//! the actors instead of running on their arbiter thread: the outbox group commit,
//! acknowledged publishes leaving the outbox, session metadata, subscription saves, held
//! messages, a session's state deletion, and the final flush at shutdown. One thread keeps
//! them in submission order (a held-message take sees every hold submitted before it; a
//! removal never overtakes the write it removes) and keeps a slow disk away from every
//! session's keep-alive and message path.
//!
//! Group commit: the worker takes every job waiting (up to [`GROUP_MAX`]) as one group.
//! While a group runs, [`Store::flush`] only notes that a flush is owed; the worker then
//! flushes once for the whole group and only after that hands out the group's answers
//! ([`StoreWorker::run`]). So a burst of writes that each must be durable before they are
//! acknowledged (held messages of a durable route, outbox batches, ...) costs one fsync,
//! not one each, and an answer never claims what is not on disk yet: when the group's
//! flush fails, its answers are withheld (their receivers see the worker as gone, which
//! callers report as a store error).
//!
//! A flush interval ([`StoreWorker::start`]; none by default): under
//! sustained load the worker then flushes at most once per interval, a flush that would
//! come sooner after the previous one first waiting for the rest of it (a group that
//! owes no flush never waits). A session writes its
//! next batch of publishes only once the previous one is durable, so with a steady
//! stream of publishes the wait lets each batch grow instead of paying an fsync for a
//! handful of them (on a virtual disk an fsync costs the writing threads about 100 µs of
//! CPU). It costs latency where a caller waits for each durable write before the next
//! (a closed loop: one session's QoS 2 publishes with a store, 100 outstanding, lost a
//! third of their rate at 1 ms), so the library leaves it off and the daemon, whose
//! forwarding is a steady stream, sets 5 ms. A store less busy than one flush per
//! interval never waits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::Store;

/// Answers of a group, sent once the group's flush (if any) succeeded.
type Answers = Vec<Box<dyn FnOnce() + Send>>;

type Job = Box<dyn FnOnce(&Store, &mut Answers) + Send>;

/// The most jobs run as one group (one flush).
pub(crate) const GROUP_MAX: usize = 512;
/// The longest store flush interval taken
/// ([`SessionManagerBuilder::store_flush_interval`](crate::SessionManagerBuilder::store_flush_interval)).
pub const MAX_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

std::thread_local! {
    /// On the worker thread, while a group runs: whether a flush is owed.
    static GROUP: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Inside a group on the worker thread: notes the flush as owed and returns true (the
/// caller skips its own flush). False elsewhere.
pub(super) fn defer_flush() -> bool {
    GROUP.with(|g| match g.get() {
        Some(_) => {
            g.set(Some(true));
            true
        }
        None => false,
    })
}

/// A handle on the store worker; cheap to clone. The thread ends when the last handle is
/// dropped, after the jobs already submitted.
#[derive(Clone)]
pub struct StoreWorker {
    store: Store,
    jobs: flume::Sender<Job>,
    queued: Arc<AtomicUsize>,
}

impl std::fmt::Debug for StoreWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWorker")
            .field("store", &self.store)
            .field("queued", &self.queued())
            .finish()
    }
}

impl StoreWorker {
    /// Starts the worker thread over `store`; under sustained load it flushes at most
    /// once per `interval` (zero: as soon as a group is done; at most
    /// [`MAX_FLUSH_INTERVAL`]; see the [module docs](self)).
    pub fn start(store: Store, interval: std::time::Duration) -> std::io::Result<StoreWorker> {
        let interval = interval.min(MAX_FLUSH_INTERVAL);
        // Unbounded on purpose, and bounded in effect: every job stands for something
        // bounded elsewhere — a QoS >= 1 publish (the outbox holds at most
        // `max_pending_messages` per session), a received message not yet acknowledged
        // (the broker's in-flight window), a route or session change. A bounded channel
        // would need an await at submission, and an await would lose the submission order
        // that the guarantees above rest on. `queued()` counts what waits.
        let (jobs, rx) = flume::unbounded::<Job>();
        let queued = Arc::new(AtomicUsize::new(0));
        let (s, q) = (store.clone(), Arc::clone(&queued));
        // Logs through the subscriber of the thread that starts it.
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        std::thread::Builder::new()
            .name("mqtt-sessions-store".into())
            .spawn(move || {
                let _log = tracing::dispatcher::set_default(&dispatch);
                let mut answers: Answers = Vec::new();
                let mut flushed: Option<std::time::Instant> = None;
                while let Ok(first) = rx.recv() {
                    let mut group = vec![first];
                    group.extend(rx.try_iter().take(GROUP_MAX - 1));
                    q.fetch_sub(group.len(), Ordering::Relaxed);
                    GROUP.with(|g| g.set(Some(false)));
                    for job in group {
                        job(&s, &mut answers);
                    }
                    let owed = GROUP.with(|g| g.replace(None)) == Some(true);
                    if owed {
                        // Under load, the rest of the interval since the last flush (a
                        // group that owes none, removals say, never waits).
                        if let Some(wait) = flushed.and_then(|t| interval.checked_sub(t.elapsed())) {
                            std::thread::sleep(wait);
                        }
                        flushed = (!interval.is_zero()).then(std::time::Instant::now);
                        if let Err(e) = s.flush() {
                            tracing::error!(error = %e, withheld = answers.len(),
                                "store flush failed; the writes of this group are not reported done");
                            answers.clear();
                            continue;
                        }
                    }
                    for answer in answers.drain(..) {
                        answer();
                    }
                }
            })?;
        Ok(StoreWorker {
            store,
            jobs,
            queued,
        })
    }

    /// Jobs submitted and not started.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Runs `f` on the worker after every job submitted before; its result arrives on the
    /// returned receiver (closed, without a value, only if the worker thread died).
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> T + Send + 'static,
    ) -> tokio::sync::oneshot::Receiver<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.push(Box::new(move |store, answers| {
            let result = f(store);
            answers.push(Box::new(move || {
                let _ = tx.send(result);
            }));
        }));
        rx
    }

    /// Runs `f` on the worker after every job submitted before, without waiting for it.
    pub fn submit(&self, f: impl FnOnce(&Store) + Send + 'static) {
        self.push(Box::new(move |store, _| f(store)));
    }

    fn push(&self, job: Job) {
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.jobs.send(job).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("store worker gone; a store write was not made");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_in_submission_order_and_report_their_results() {
        let w = StoreWorker::start(
            Store::memory().expect("memory store"),
            std::time::Duration::ZERO,
        )
        .expect("thread");
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        for i in 0..100 {
            let s = Arc::clone(&seen);
            w.submit(move |_| s.lock().unwrap_or_else(|e| e.into_inner()).push(i));
        }
        let last = w.run(|store| store.flush().is_ok());
        assert_eq!(last.blocking_recv().ok(), Some(true));
        assert_eq!(
            *seen.lock().unwrap_or_else(|e| e.into_inner()),
            (0..100).collect::<Vec<_>>()
        );
        assert_eq!(w.queued(), 0);
    }

    #[test]
    fn with_an_interval_a_flush_waits_for_the_rest_of_it_after_the_previous_one() {
        let interval = std::time::Duration::from_millis(40);
        let w =
            StoreWorker::start(Store::memory().expect("memory store"), interval).expect("thread");
        let start = std::time::Instant::now();
        // The first flush does not wait (no flush before it).
        let first = w.run(|store| store.flush().is_ok());
        assert_eq!(first.blocking_recv().ok(), Some(true));
        // A group that owes no flush is answered too (whatever the interval).
        let plain = w.run(|_| 7);
        assert_eq!(plain.blocking_recv().ok(), Some(7));
        // The second flush comes at least one interval after the first, which came after
        // `start`.
        let second = w.run(|store| store.flush().is_ok());
        assert_eq!(second.blocking_recv().ok(), Some(true));
        assert!(
            start.elapsed() >= interval,
            "two flushes {:?} apart, less than the interval",
            start.elapsed()
        );
    }
}
