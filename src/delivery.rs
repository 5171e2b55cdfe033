//! Delivery tracking: when a received QoS >= 1 message may be acknowledged to its broker.
//!
//! Every QoS >= 1 [`Message`](crate::Message) a session receives carries a [`AckGuard`]:
//! a reference-counted guard shared by all clones of the message. When the last clone is
//! dropped — every route's consumer has finished with it: a callback returned, an async
//! handler completed, an actor replied, the application dropped what a listener gave it —
//! the guard reports [`Outcome::Handled`] and the session sends the PUBACK/PUBREC (in
//! arrival order). A consumer that gives a message up without handling it calls
//! [`Message::leave_unacknowledged`](crate::Message::leave_unacknowledged): the guard then
//! reports [`Outcome::Abandoned`], nothing is acknowledged, and the broker re-sends the
//! message at the next connection of a persistent session.
//!
//! The same guard serves messages held in the store for a durable route: there its release
//! deletes the held copy ([`AckGuard::then`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::oneshot;

/// How a message's consumers ended with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every consumer finished with it: acknowledge.
    Handled,
    /// A consumer gave it up unhandled: do not acknowledge.
    Abandoned,
}

/// What runs when the last clone of a message is dropped.
enum Release {
    /// Tell the session's acknowledger.
    Signal(oneshot::Sender<Outcome>),
    /// Run a closure (durable held messages: delete the stored copy).
    Then(Box<dyn FnOnce(Outcome) + Send + Sync>),
}

struct Inner {
    release: Option<Release>,
    abandoned: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let outcome = if self.abandoned.load(Ordering::Acquire) {
            Outcome::Abandoned
        } else {
            Outcome::Handled
        };
        match self.release.take() {
            // The acknowledger may be gone (connection closed): nothing to do then.
            Some(Release::Signal(tx)) => drop(tx.send(outcome)),
            Some(Release::Then(f)) => f(outcome),
            None => {}
        }
    }
}

/// The acknowledgement guard of one received message (absent for QoS 0 and detached
/// copies). Clones share it. Compares equal to any other guard, so that two messages
/// compare by their contents only.
#[derive(Clone, Default)]
pub(crate) struct AckGuard(Option<Arc<Inner>>);

impl AckGuard {
    /// No guard: dropping the message acknowledges nothing.
    pub(crate) const NONE: AckGuard = AckGuard(None);

    /// A guard whose release is reported on the returned receiver.
    pub(crate) fn signal() -> (AckGuard, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        (AckGuard::with(Release::Signal(tx)), rx)
    }

    /// A guard that runs `f` on release.
    pub(crate) fn then(f: impl FnOnce(Outcome) + Send + Sync + 'static) -> AckGuard {
        AckGuard::with(Release::Then(Box::new(f)))
    }

    fn with(release: Release) -> AckGuard {
        AckGuard(Some(Arc::new(Inner {
            release: Some(release),
            abandoned: AtomicBool::new(false),
        })))
    }

    /// True when the message's acknowledgement waits for this guard.
    pub(crate) fn is_pending(&self) -> bool {
        self.0.is_some()
    }

    /// Marks the message as given up: its release will not acknowledge it.
    pub(crate) fn abandon(&self) {
        if let Some(inner) = &self.0 {
            inner.abandoned.store(true, Ordering::Release);
        }
    }
}

impl PartialEq for AckGuard {
    fn eq(&self, _: &AckGuard) -> bool {
        true
    }
}

impl Eq for AckGuard {}

impl std::fmt::Debug for AckGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("AckGuard(none)"),
            Some(i) => write!(
                f,
                "AckGuard(holders: {}, abandoned: {})",
                Arc::strong_count(i),
                i.abandoned.load(Ordering::Relaxed)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_clone_releases_once() {
        let (d, mut rx) = AckGuard::signal();
        let copy = d.clone();
        drop(d);
        assert!(rx.try_recv().is_err(), "released while a clone lives");
        drop(copy);
        assert_eq!(rx.try_recv().ok(), Some(Outcome::Handled));
    }

    #[test]
    fn an_abandoned_message_reports_abandoned() {
        let (d, mut rx) = AckGuard::signal();
        let copy = d.clone();
        copy.abandon();
        drop(copy);
        drop(d);
        assert_eq!(rx.try_recv().ok(), Some(Outcome::Abandoned));
    }

    #[test]
    fn a_closure_release_runs_with_the_outcome() {
        let seen = Arc::new(std::sync::Mutex::new(None));
        let s = Arc::clone(&seen);
        let d = AckGuard::then(move |o| *s.lock().unwrap_or_else(|e| e.into_inner()) = Some(o));
        assert!(d.is_pending());
        drop(d);
        assert_eq!(
            *seen.lock().unwrap_or_else(|e| e.into_inner()),
            Some(Outcome::Handled)
        );
        assert!(!AckGuard::NONE.is_pending());
    }
}
