//! Exponential backoff with jitter for connection attempts (a plain type, no I/O).

use std::time::Duration;

/// Computes the delay before each connection attempt.
///
/// Attempt `n` (counted from 1) has a base delay of
/// `min(initial_delay * factor^(n-1), max_delay)`; the delay actually used is the base
/// plus a uniformly random `±jitter * base`, never below 1 ms and never above
/// `max_delay * (1 + jitter)`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    factor: f64,
    jitter: f64,
    attempt: u32,
}

impl Backoff {
    /// The delay curve of these parameters (`ReconnectOptions::backoff` gives a session's).
    pub(crate) fn curve(initial: Duration, max: Duration, factor: f64, jitter: f64) -> Self {
        Backoff {
            initial,
            max,
            factor: factor.max(1.0),
            jitter: jitter.clamp(0.0, 1.0),
            attempt: 0,
        }
    }

    /// Starts counting again (after a connection that stayed up).
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The base delay (before jitter) after failed attempt number `attempt` (from 1).
    pub(crate) fn base_delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let secs = self.initial.as_secs_f64() * self.factor.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The range the jittered delay after failed attempt `attempt` falls in.
    pub(crate) fn bounds(&self, attempt: u32) -> (Duration, Duration) {
        let base = self.base_delay(attempt);
        let lo = base
            .mul_f64(1.0 - self.jitter)
            .max(Duration::from_millis(1));
        (lo, base.mul_f64(1.0 + self.jitter))
    }

    /// Counts one more failed attempt and returns how long to wait before the next.
    /// `unit` is a random number in `[0, 1)` (pass `fastrand::f64()`).
    pub(crate) fn next_delay(&mut self, unit: f64) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        self.delay_after(self.attempt, unit)
    }

    /// The jittered delay after failed attempt `attempt` (from 1), for a random `unit` in
    /// `[0, 1)`: within [`bounds`](Self::bounds), without counting an attempt.
    pub(crate) fn delay_after(&self, attempt: u32, unit: f64) -> Duration {
        let (lo, hi) = self.bounds(attempt);
        lo + hi.saturating_sub(lo).mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(initial_ms: u64, max_ms: u64, factor: f64, jitter: f64) -> Backoff {
        Backoff::curve(
            Duration::from_millis(initial_ms),
            Duration::from_millis(max_ms),
            factor,
            jitter,
        )
    }

    #[test]
    fn base_delay_grows_by_factor_up_to_max() {
        let b = opts(100, 1000, 2.0, 0.0);
        let got: Vec<u128> = (1..=6).map(|n| b.base_delay(n).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_within_bounds_at_both_extremes() {
        let table = [(0.0, 80u128), (0.999_999, 120u128)];
        for (unit, expect_ms) in table {
            let mut b = opts(100, 1000, 2.0, 0.2);
            let d = b.next_delay(unit).as_millis();
            assert!(d.abs_diff(expect_ms) <= 1, "unit {unit}: {d} ms");
        }
    }

    #[test]
    fn factor_one_is_a_constant_delay() {
        let mut b = opts(250, 1000, 1.0, 0.0);
        for _ in 0..4 {
            assert_eq!(b.next_delay(0.5), Duration::from_millis(250));
        }
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let b = opts(1, 120_000, 10.0, 0.5);
        assert_eq!(b.base_delay(u32::MAX), Duration::from_millis(120_000));
    }

    #[test]
    fn reset_starts_the_curve_again() {
        let mut b = opts(100, 1000, 2.0, 0.0);
        let first: Vec<Duration> = (0..3).map(|_| b.next_delay(0.0)).collect();
        b.reset();
        let again: Vec<Duration> = (0..3).map(|_| b.next_delay(0.0)).collect();
        assert_eq!(first, again);
        assert_eq!(first[2], Duration::from_millis(400));
    }
}
