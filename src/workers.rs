//! The manager's worker threads: a pool of actix arbiters that run the sessions.
//!
//! Each session's actor, its driver task (the rumqttc event loop) and its acknowledger
//! live on one worker, chosen when the session is added: the worker running the fewest
//! sessions (the lowest index on a tie), so sessions spread over every core and a busy
//! session shares its thread with as few others as possible. The thread that created the
//! manager runs the supervisor and the router, never a session's I/O.

use std::sync::atomic::{AtomicUsize, Ordering};

use actix::{Arbiter, ArbiterHandle};

/// How many workers a manager starts when not told: one per core.
pub(crate) fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Most workers a manager may have.
pub(crate) const MAX_WORKERS: usize = 1024;

struct Worker {
    arbiter: ArbiterHandle,
    sessions: AtomicUsize,
}

/// The pool. See the [module docs](self).
pub(crate) struct Workers {
    workers: Vec<Worker>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let load: Vec<usize> = self
            .workers
            .iter()
            .map(|w| w.sessions.load(Ordering::Relaxed))
            .collect();
        f.debug_struct("Workers").field("sessions", &load).finish()
    }
}

impl Workers {
    /// Starts `n` arbiters (at least one, at most [`MAX_WORKERS`]) on the current actix
    /// system.
    /// Each worker logs through the `tracing` subscriber in force on the calling thread
    /// (a scoped one included), as the sessions did before they moved to workers.
    pub(crate) fn start(n: usize) -> Workers {
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        let workers = (0..n.clamp(1, MAX_WORKERS))
            .map(|_| {
                let arbiter = Arbiter::new().handle();
                let d = dispatch.clone();
                arbiter.spawn(async move {
                    // For the thread's whole life: the guard is never dropped.
                    std::mem::forget(tracing::dispatcher::set_default(&d));
                });
                Worker {
                    arbiter,
                    sessions: AtomicUsize::new(0),
                }
            })
            .collect();
        Workers { workers }
    }

    /// Chooses the worker for a new session (`preferred`, modulo the number of workers,
    /// else the least loaded) and counts it there.
    pub(crate) fn place(&self, preferred: Option<usize>) -> (usize, ArbiterHandle) {
        let index = preferred.map_or_else(
            || {
                least_loaded(
                    self.workers
                        .iter()
                        .map(|w| w.sessions.load(Ordering::Relaxed)),
                )
            },
            |i| i % self.workers.len(),
        );
        let w = &self.workers[index];
        w.sessions.fetch_add(1, Ordering::Relaxed);
        (index, w.arbiter.clone())
    }

    /// A session placed on `index` is gone.
    pub(crate) fn release(&self, index: usize) {
        if let Some(w) = self.workers.get(index) {
            let _ = w
                .sessions
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// Do all workers answer? Spawns a no-op task on each arbiter and waits up to
    /// `timeout` for every one of them to run it (the daemon's systemd watchdog: a wedged
    /// worker thread fails this).
    pub(crate) async fn ping_all(&self, timeout: std::time::Duration) -> bool {
        let pings = self.workers.iter().map(|w| {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let sent = w.arbiter.spawn(async move {
                let _ = tx.send(());
            });
            async move { sent && rx.await.is_ok() }
        });
        tokio::time::timeout(timeout, futures_util::future::join_all(pings))
            .await
            .is_ok_and(|answers| answers.into_iter().all(|ok| ok))
    }

    /// Stops every worker once what it runs now has ended (their sessions are closed
    /// first).
    pub(crate) fn stop(&self) {
        for w in &self.workers {
            w.arbiter.stop();
        }
    }
}

/// The index of the smallest load (the first one on a tie); 0 for none.
fn least_loaded(loads: impl Iterator<Item = usize>) -> usize {
    loads
        .enumerate()
        .min_by_key(|&(i, n)| (n, i))
        .map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::least_loaded;

    #[test]
    fn a_session_goes_to_the_least_loaded_worker_first_on_a_tie() {
        let cases: &[(&[usize], usize)] = &[
            (&[], 0),
            (&[0], 0),
            (&[0, 0, 0], 0),
            (&[3, 1, 2], 1),
            (&[2, 5, 2], 0),
            (&[4, 4, 3], 2),
        ];
        for &(loads, want) in cases {
            assert_eq!(least_loaded(loads.iter().copied()), want, "{loads:?}");
        }
    }
}
