//! Where a session actor is in its life (a plain type, no I/O): one value instead of a
//! set of flags that had to agree.
//!
//! ```text
//!            ┌──────────── resume ────────────┐
//!            ▼                                │
//!  Running { ready } ──driver gave up──▶ DriverGaveUp
//!      │  ▲ ready / not ready               │
//!      │                                    │ restart (actix)
//!      └──────────── restart (actix) ───────┴──▶ AwaitingVerdict
//!  Running, DriverGaveUp, AwaitingVerdict ──retire──▶ GaveUp(reason) ──close──▶ Closed
//!  any but Closed ──close──▶ Closed (final)
//! ```
//!
//! [`SessionState`](super::state::SessionState) is the connection's state as users see it
//! (connecting, connected, ...); this is what the actor may do next: run a driver, wait for
//! its supervisor, or nothing ever again. A transition that does not apply returns `false`
//! and changes nothing, which is how the actor ignores a late verdict or a second close.

use crate::event::GiveUpReason;

/// The actor's life; see the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lifecycle {
    /// A driver runs (or is about to): connecting, connected or waiting to retry.
    Running {
        /// Connected, and every active subscription was acknowledged (`session_ready`).
        ready: bool,
    },
    /// The driver stopped trying (attempts exhausted, or the connection was lost without
    /// auto-reconnect) and the supervisor was told; its verdict (retire) follows.
    DriverGaveUp,
    /// Restarted in place after a failure: no driver until the supervisor's verdict.
    AwaitingVerdict,
    /// Stopped trying for good (the supervisor's retire); only a close leaves it.
    GaveUp(GiveUpReason),
    /// Closed; final.
    Closed,
}

impl Lifecycle {
    /// A new actor: it starts a driver.
    pub(crate) fn new() -> Self {
        Lifecycle::Running { ready: false }
    }

    /// Whether the session is ready (connected and subscribed).
    pub(crate) fn ready(&self) -> bool {
        matches!(self, Lifecycle::Running { ready: true })
    }

    /// Whether the session was closed.
    pub(crate) fn is_closed(&self) -> bool {
        matches!(self, Lifecycle::Closed)
    }

    /// Why the session gave up, if it did.
    pub(crate) fn gave_up(&self) -> Option<&GiveUpReason> {
        match self {
            Lifecycle::GaveUp(reason) => Some(reason),
            _ => None,
        }
    }

    /// Whether a driver is expected to run: the end of its event stream is then a failure.
    pub(crate) fn expects_driver(&self) -> bool {
        matches!(self, Lifecycle::Running { .. })
    }

    /// Every subscription was acknowledged on a connection that is up (`connected`).
    /// True when the session just became ready (the `session_ready` event is due).
    pub(crate) fn on_ready(&mut self, connected: bool) -> bool {
        match self {
            Lifecycle::Running { ready } if connected && !*ready => {
                *ready = true;
                true
            }
            _ => false,
        }
    }

    /// The connection ended (lost, or the actor let go of it).
    pub(crate) fn on_disconnected(&mut self) {
        if let Lifecycle::Running { ready } = self {
            *ready = false;
        }
    }

    /// The driver stopped trying.
    pub(crate) fn on_driver_gave_up(&mut self) {
        if let Lifecycle::Running { .. } = self {
            *self = Lifecycle::DriverGaveUp;
        }
    }

    /// actix restarts the actor after a failure. True when the supervisor must now be
    /// told and asked for a verdict (not after the session closed or gave up).
    pub(crate) fn on_restart(&mut self) -> bool {
        match self {
            Lifecycle::Running { .. } | Lifecycle::DriverGaveUp | Lifecycle::AwaitingVerdict => {
                *self = Lifecycle::AwaitingVerdict;
                true
            }
            Lifecycle::GaveUp(_) | Lifecycle::Closed => false,
        }
    }

    /// The supervisor's verdict: run again. True when a driver is to start now.
    pub(crate) fn on_resume(&mut self) -> bool {
        match self {
            Lifecycle::AwaitingVerdict => {
                *self = Lifecycle::new();
                true
            }
            _ => false,
        }
    }

    /// Stop for good. True when the session gives up now (not when it was closed or had
    /// given up already).
    pub(crate) fn on_retire(&mut self, reason: GiveUpReason) -> bool {
        match self {
            Lifecycle::GaveUp(_) | Lifecycle::Closed => false,
            _ => {
                *self = Lifecycle::GaveUp(reason);
                true
            }
        }
    }

    /// Close the session. True when it closes now (false when it was closed already).
    pub(crate) fn on_close(&mut self) -> bool {
        if self.is_closed() {
            return false;
        }
        *self = Lifecycle::Closed;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Lifecycle as L;
    use super::*;

    fn reason() -> GiveUpReason {
        GiveUpReason::AttemptsExhausted {
            attempts: 3,
            last_error: None,
        }
    }

    /// Each input applied to each life: what the transition answers and the life after.
    #[test]
    fn transition_table() {
        #[derive(Debug, Clone, Copy)]
        enum In {
            ReadyConnected,
            ReadyNotConnected,
            Disconnected,
            DriverGaveUp,
            Restart,
            Resume,
            Retire,
            Close,
        }
        let apply = |mut l: L, input: In| -> (bool, L) {
            let answer = match input {
                In::ReadyConnected => l.on_ready(true),
                In::ReadyNotConnected => l.on_ready(false),
                In::Disconnected => {
                    l.on_disconnected();
                    false
                }
                In::DriverGaveUp => {
                    l.on_driver_gave_up();
                    false
                }
                In::Restart => l.on_restart(),
                In::Resume => l.on_resume(),
                In::Retire => l.on_retire(reason()),
                In::Close => l.on_close(),
            };
            (answer, l)
        };
        let idle = L::Running { ready: false };
        let ready = L::Running { ready: true };
        let gave_up = L::GaveUp(reason());
        let table = [
            // Readiness: only a running session on a live connection, once.
            (idle.clone(), In::ReadyConnected, true, ready.clone()),
            (ready.clone(), In::ReadyConnected, false, ready.clone()),
            (idle.clone(), In::ReadyNotConnected, false, idle.clone()),
            (
                L::AwaitingVerdict,
                In::ReadyConnected,
                false,
                L::AwaitingVerdict,
            ),
            (ready.clone(), In::Disconnected, false, idle.clone()),
            (gave_up.clone(), In::Disconnected, false, gave_up.clone()),
            // The driver gives up: the supervisor decides; a restart asks it too.
            (ready.clone(), In::DriverGaveUp, false, L::DriverGaveUp),
            (L::Closed, In::DriverGaveUp, false, L::Closed),
            (L::DriverGaveUp, In::Restart, true, L::AwaitingVerdict),
            (ready.clone(), In::Restart, true, L::AwaitingVerdict),
            (L::AwaitingVerdict, In::Restart, true, L::AwaitingVerdict),
            (gave_up.clone(), In::Restart, false, gave_up.clone()),
            (L::Closed, In::Restart, false, L::Closed),
            // Verdicts: resume only what waits for one; retire anything not over.
            (L::AwaitingVerdict, In::Resume, true, idle.clone()),
            (idle.clone(), In::Resume, false, idle.clone()),
            (L::DriverGaveUp, In::Resume, false, L::DriverGaveUp),
            (gave_up.clone(), In::Resume, false, gave_up.clone()),
            (L::DriverGaveUp, In::Retire, true, gave_up.clone()),
            (L::AwaitingVerdict, In::Retire, true, gave_up.clone()),
            (ready.clone(), In::Retire, true, gave_up.clone()),
            (gave_up.clone(), In::Retire, false, gave_up.clone()),
            (L::Closed, In::Retire, false, L::Closed),
            // Close: from anywhere, once, even during a connect or a wait for a verdict.
            (idle.clone(), In::Close, true, L::Closed),
            (L::AwaitingVerdict, In::Close, true, L::Closed),
            (gave_up.clone(), In::Close, true, L::Closed),
            (L::Closed, In::Close, false, L::Closed),
            (L::Closed, In::ReadyConnected, false, L::Closed),
        ];
        for (from, input, answer, to) in table {
            assert_eq!(
                apply(from.clone(), input),
                (answer, to.clone()),
                "{from:?} --{input:?}-->"
            );
        }
    }

    #[test]
    fn what_each_life_allows() {
        let table = [
            (L::Running { ready: false }, false, false, None, true),
            (L::Running { ready: true }, true, false, None, true),
            (L::DriverGaveUp, false, false, None, false),
            (L::AwaitingVerdict, false, false, None, false),
            (L::GaveUp(reason()), false, false, Some(reason()), false),
            (L::Closed, false, true, None, false),
        ];
        for (l, ready, closed, gave_up, driver) in table {
            assert_eq!(l.ready(), ready, "{l:?}");
            assert_eq!(l.is_closed(), closed, "{l:?}");
            assert_eq!(l.gave_up().cloned(), gave_up, "{l:?}");
            assert_eq!(l.expects_driver(), driver, "{l:?}");
        }
    }
}
