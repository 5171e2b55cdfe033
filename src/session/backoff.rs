//! Exponential backoff with jitter for connection attempts (a plain type, no I/O).

use std::time::Duration;

use crate::options::ReconnectOptions;

/// Computes the delay before each connection attempt.
///
/// Attempt `n` (counted from 1) has a base delay of
/// `min(initial_delay * factor^(n-1), max_delay)`; the delay actually used is the base
/// plus a uniformly random `±jitter * base`, never below 1 ms and never above
/// `max_delay * (1 + jitter)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    factor: f64,
    jitter: f64,
    max_attempts: Option<u32>,
    attempt: u32,
}

impl Backoff {
    /// A backoff following `opts` (expected to be validated).
    pub fn new(opts: &ReconnectOptions) -> Self {
        Backoff {
            max_attempts: opts.max_attempts,
            ..Backoff::curve(opts.initial_delay, opts.max_delay, opts.factor, opts.jitter)
        }
    }

    /// The same delay curve without an attempt limit (the supervisor's restart delays).
    pub(crate) fn curve(initial: Duration, max: Duration, factor: f64, jitter: f64) -> Self {
        Backoff {
            initial,
            max,
            factor: factor.max(1.0),
            jitter: jitter.clamp(0.0, 1.0),
            max_attempts: None,
            attempt: 0,
        }
    }

    /// Failed attempts counted since the last [`reset`](Self::reset).
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// True once `max_attempts` failed attempts have been counted.
    pub fn exhausted(&self) -> bool {
        self.max_attempts.is_some_and(|m| self.attempt >= m)
    }

    /// Starts counting again (after a connection that stayed up).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The base delay (before jitter) after failed attempt number `attempt` (from 1).
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let secs = self.initial.as_secs_f64() * self.factor.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The range the jittered delay after failed attempt `attempt` falls in.
    pub fn bounds(&self, attempt: u32) -> (Duration, Duration) {
        let base = self.base_delay(attempt);
        let lo = base
            .mul_f64(1.0 - self.jitter)
            .max(Duration::from_millis(1));
        (lo, base.mul_f64(1.0 + self.jitter))
    }

    /// Counts one more failed attempt and returns how long to wait before the next.
    /// `unit` is a random number in `[0, 1)` (pass `fastrand::f64()`).
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        self.delay_after(self.attempt, unit)
    }

    /// The jittered delay after failed attempt `attempt` (from 1), for a random `unit` in
    /// `[0, 1)`: within [`bounds`](Self::bounds), without counting an attempt.
    pub fn delay_after(&self, attempt: u32, unit: f64) -> Duration {
        let (lo, hi) = self.bounds(attempt);
        lo + hi.saturating_sub(lo).mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(initial_ms: u64, max_ms: u64, factor: f64, jitter: f64) -> ReconnectOptions {
        ReconnectOptions {
            initial_delay: Duration::from_millis(initial_ms),
            max_delay: Duration::from_millis(max_ms),
            factor,
            jitter,
            max_attempts: Some(5),
        }
    }

    #[test]
    fn base_delay_grows_by_factor_up_to_max() {
        let b = Backoff::new(&opts(100, 1000, 2.0, 0.0));
        let got: Vec<u128> = (1..=6).map(|n| b.base_delay(n).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_within_bounds_at_both_extremes() {
        let table = [(0.0, 80u128), (0.999_999, 120u128)];
        for (unit, expect_ms) in table {
            let mut b = Backoff::new(&opts(100, 1000, 2.0, 0.2));
            let d = b.next_delay(unit).as_millis();
            assert!(d.abs_diff(expect_ms) <= 1, "unit {unit}: {d} ms");
        }
    }

    #[test]
    fn factor_one_is_a_constant_delay() {
        let mut b = Backoff::new(&opts(250, 1000, 1.0, 0.0));
        for _ in 0..4 {
            assert_eq!(b.next_delay(0.5), Duration::from_millis(250));
        }
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let b = Backoff::new(&opts(1, 120_000, 10.0, 0.5));
        assert_eq!(b.base_delay(u32::MAX), Duration::from_millis(120_000));
    }

    #[test]
    fn max_attempts_and_reset() {
        let mut b = Backoff::new(&opts(1, 10, 2.0, 0.0));
        for _ in 0..5 {
            assert!(!b.exhausted());
            b.next_delay(0.0);
        }
        assert!(b.exhausted());
        b.reset();
        assert_eq!(b.attempts(), 0);
        assert!(!b.exhausted());
    }
}
