//! [`RateWindow`]: message and byte rates from periodic samples of monotonic totals,
//! on the monotonic clock ([`Instant`]). A plain type: the caller passes the time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How far back a rate looks: the rate is the change since the newest sample at least
/// this old (or the oldest sample, if younger).
pub(crate) const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Minimum spacing of samples.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// The shortest time a rate is averaged over: younger windows divide by this instead, so
/// that a burst just after a start does not show as a huge rate.
pub(crate) const MIN_WINDOW: Duration = Duration::from_secs(1);

/// The totals a rate is computed for: messages received, bytes received, messages sent,
/// bytes sent.
pub(crate) type Totals = [u64; 4];

/// Recent samples of [`Totals`]. While every total is still zero (a session that has not
/// received or sent anything yet) it keeps no samples: it only remembers since when, and
/// allocates nothing.
#[derive(Debug, Clone)]
pub(crate) struct RateWindow {
    samples: VecDeque<(Instant, Totals)>,
    /// When the window started.
    start: Instant,
    /// The last time every total was seen at zero (while `samples` is empty).
    zero_until: Instant,
}

impl RateWindow {
    /// A window whose totals are all zero at `start`.
    pub(crate) fn new(start: Instant) -> Self {
        RateWindow {
            samples: VecDeque::new(),
            start,
            zero_until: start,
        }
    }

    /// The sample all-zero totals stand for while no sample is kept: zeros held from
    /// `start` to `zero_until`, so any time in between will do; the one a full window
    /// before `now` is what a kept sample would have been.
    fn zero_sample(&self, now: Instant) -> (Instant, Totals) {
        let t = now
            .checked_sub(RATE_WINDOW)
            .unwrap_or(self.start)
            .clamp(self.start, self.zero_until);
        (t, [0; 4])
    }

    /// Records `totals` at `now` if the newest sample is at least [`SAMPLE_EVERY`] old,
    /// and forgets samples no rate needs any more.
    pub(crate) fn record(&mut self, now: Instant, totals: Totals) {
        if self.samples.is_empty() {
            if totals == [0; 4] {
                self.zero_until = self.zero_until.max(now);
                return;
            }
            let first = self.zero_sample(now);
            self.samples.reserve_exact(8);
            self.samples.push_back(first);
        }
        let due = self
            .samples
            .back()
            .is_none_or(|(t, _)| now.saturating_duration_since(*t) >= SAMPLE_EVERY);
        if due {
            self.samples.push_back((now, totals));
        }
        // Keep the newest sample that is at least RATE_WINDOW old, drop older ones.
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Per-second rates of `totals` at `now`, over the window (at least [`MIN_WINDOW`]).
    pub(crate) fn rates(&self, now: Instant, totals: Totals) -> [f64; 4] {
        let zero;
        let base = match self
            .samples
            .iter()
            .rev()
            .find(|(t, _)| now.saturating_duration_since(*t) >= RATE_WINDOW)
            .or_else(|| self.samples.front())
        {
            Some(b) => b,
            None => {
                zero = self.zero_sample(now);
                &zero
            }
        };
        let (t, old) = base;
        let dt = now
            .saturating_duration_since(*t)
            .max(MIN_WINDOW)
            .as_secs_f64();
        let mut out = [0.0; 4];
        for ((o, new), old) in out.iter_mut().zip(totals).zip(old) {
            *o = new.saturating_sub(*old) as f64 / dt;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn a_young_window_divides_by_the_minimum_window() {
        let t0 = Instant::now();
        let w = RateWindow::new(t0);
        assert_eq!(
            w.rates(t0 + secs(0.1), [10, 100, 0, 0]),
            [10.0, 100.0, 0.0, 0.0]
        );
        assert_eq!(
            w.rates(t0 + secs(2.0), [10, 100, 4, 0]),
            [5.0, 50.0, 2.0, 0.0]
        );
    }

    #[test]
    fn rates_cover_the_last_window_once_enough_samples_exist() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(t0);
        // 100 messages/s for 10 s, then 10 messages/s.
        let mut n = 0;
        for s in 1..=10 {
            n += 100;
            w.record(t0 + secs(f64::from(s)), [n, 0, 0, 0]);
        }
        for s in 11..=20 {
            n += 10;
            w.record(t0 + secs(f64::from(s)), [n, 0, 0, 0]);
        }
        let r = w.rates(t0 + secs(20.0), [n, 0, 0, 0]);
        assert!((r[0] - 10.0).abs() < 1e-9, "{r:?}");
        assert!(
            w.samples.len() <= 8,
            "old samples are forgotten: {}",
            w.samples.len()
        );
    }

    #[test]
    fn samples_closer_than_the_sampling_period_are_not_kept() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(t0);
        for ms in 1..100 {
            w.record(t0 + Duration::from_millis(ms), [ms, 0, 0, 0]);
        }
        // Only the all-zero start: no sample a second apart yet.
        assert_eq!(w.samples.len(), 1);
    }

    #[test]
    fn an_idle_window_keeps_nothing_and_traffic_after_a_long_idle_spreads_over_the_window() {
        let t0 = Instant::now();
        let mut w = RateWindow::new(t0);
        for s in 1..=60 {
            w.record(t0 + secs(f64::from(s)), [0; 4]);
        }
        assert_eq!(w.samples.capacity(), 0, "nothing allocated while idle");
        assert_eq!(w.rates(t0 + secs(60.0), [0; 4]), [0.0; 4]);
        // 50 messages in the half second after a minute of nothing: over the 5 s window,
        // as a kept all-zero sample from 5 s earlier would give.
        let now = t0 + secs(60.5);
        assert_eq!(w.rates(now, [50, 0, 0, 0])[0], 10.0);
        w.record(now, [50, 0, 0, 0]);
        assert_eq!(w.rates(now, [50, 0, 0, 0])[0], 10.0);
        assert_eq!(w.rates(t0 + secs(62.0), [50, 0, 0, 0])[0], 50.0 / 6.5);
    }
}
