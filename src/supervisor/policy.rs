//! The restart policy: what the supervisor does when a session's actor fails (a plain
//! type, no I/O, table-tested).
//!
//! Each failure is answered with a restart after a backoff delay (growing by `factor` per
//! consecutive failure, capped at `max_delay`, with ± `jitter`), unless more than
//! `max_restarts` failures fall within `window`: then the session gives up. A run that
//! lasted `healthy_after` resets the delay to `initial_delay`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::event::{ActorFailure, GiveUpReason};

/// How the supervisor restarts a session whose actor failed
/// ([`SessionManagerBuilder::supervision`](crate::SessionManagerBuilder::supervision)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct SupervisionOptions {
    /// Delay before the first restart. Default 500 ms.
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    /// Longest delay between restarts. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Growth of the delay per consecutive failure. Default 2.
    pub factor: f64,
    /// Random spread of each delay, as a fraction (0.2: ± 20 %). Default 0.2.
    pub jitter: f64,
    /// A run at least this long counts as healthy: the next failure starts over at
    /// `initial_delay`. Default 30 s.
    #[serde(with = "humantime_serde")]
    pub healthy_after: Duration,
    /// Most failures tolerated within `window`; one more and the session gives up.
    /// Default 10.
    pub max_restarts: u32,
    /// The window of `max_restarts`. Default 10 min.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

impl Default for SupervisionOptions {
    fn default() -> Self {
        SupervisionOptions {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            factor: 2.0,
            jitter: 0.2,
            healthy_after: Duration::from_secs(30),
            max_restarts: 10,
            window: Duration::from_secs(600),
        }
    }
}

impl SupervisionOptions {
    /// The delay before restart number `n` (from 1), for a random `unit` in [0, 1).
    /// The same curve as the reconnect backoff ([`Backoff`](crate::session::backoff::Backoff)).
    pub(crate) fn delay(&self, n: u32, unit: f64) -> Duration {
        crate::session::backoff::Backoff::curve(
            self.initial_delay,
            self.max_delay,
            self.factor,
            self.jitter,
        )
        .delay_after(n, unit)
    }
}

/// What the supervisor does about a failure.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Restart the actor after this delay.
    Restart(Duration),
    /// Stop for good.
    GiveUp(GiveUpReason),
}

/// The failures of one session.
#[derive(Debug, Default)]
pub(crate) struct RestartHistory {
    /// Failures within the window, oldest first.
    recent: VecDeque<Instant>,
    /// Failures since the last healthy run.
    consecutive: u32,
    /// When the current run started (the restart's delay elapsed).
    running_since: Option<Instant>,
}

impl RestartHistory {
    /// The session's actor failed at `now` (`what` says how); `unit` is a random number in
    /// [0, 1) for the jitter.
    pub(crate) fn on_failure(
        &mut self,
        opts: &SupervisionOptions,
        now: Instant,
        what: ActorFailure,
        unit: f64,
    ) -> Verdict {
        if self
            .running_since
            .is_some_and(|s| now.saturating_duration_since(s) >= opts.healthy_after)
        {
            self.consecutive = 0;
        }
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > opts.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        let in_window = u32::try_from(self.recent.len()).unwrap_or(u32::MAX);
        if in_window > opts.max_restarts {
            return Verdict::GiveUp(GiveUpReason::TooManyRestarts {
                restarts: in_window,
                window: opts.window,
                last_failure: what,
            });
        }
        self.consecutive += 1;
        let delay = opts.delay(self.consecutive, unit);
        self.running_since = Some(now + delay);
        Verdict::Restart(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> SupervisionOptions {
        SupervisionOptions {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            factor: 2.0,
            jitter: 0.0,
            healthy_after: Duration::from_secs(10),
            max_restarts: 5,
            window: Duration::from_secs(60),
        }
    }

    fn delay_ms(v: &Verdict) -> Option<u128> {
        match v {
            Verdict::Restart(d) => Some(d.as_millis()),
            Verdict::GiveUp(_) => None,
        }
    }

    #[test]
    fn delays_grow_reset_after_a_healthy_run_and_give_up_past_the_window_limit() {
        let o = opts();
        let t0 = Instant::now();
        let mut h = RestartHistory::default();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // (failure at second, expected delay in ms or give-up)
        let table: &[(u64, Option<u128>)] = &[
            (0, Some(100)),
            (1, Some(200)),
            (2, Some(400)),
            (3, Some(800)),
            (20, Some(100)), // the run from ~3.8 s to 20 s was healthy
            (21, None),      // the sixth failure within 60 s
        ];
        for &(s, want) in table {
            let v = h.on_failure(&o, at(s), ActorFailure::DriverEnded, 0.5);
            assert_eq!(delay_ms(&v), want, "failure at {s} s: {v:?}");
        }
    }

    #[test]
    fn failures_older_than_the_window_no_longer_count() {
        let o = opts();
        let t0 = Instant::now();
        let mut h = RestartHistory::default();
        for s in 0..5 {
            assert!(delay_ms(&h.on_failure(
                &o,
                t0 + Duration::from_secs(s),
                ActorFailure::ActorStopped,
                0.5
            ))
            .is_some());
        }
        let later = t0 + Duration::from_secs(200);
        assert!(delay_ms(&h.on_failure(&o, later, ActorFailure::ActorStopped, 0.5)).is_some());
    }

    #[test]
    fn the_delay_is_capped_and_jittered_within_its_spread() {
        let o = SupervisionOptions {
            jitter: 0.2,
            ..opts()
        };
        assert_eq!(o.delay(10, 0.5), Duration::from_millis(1000));
        assert_eq!(o.delay(1, 0.0), Duration::from_millis(80));
        assert_eq!(o.delay(1, 1.0), Duration::from_millis(120));
    }
}
