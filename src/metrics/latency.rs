//! [`LatencyHistogram`]: a lock-free, fixed-bucket histogram of durations (publish →
//! acknowledgement latency), written by the session actor and read at scrape time.
//!
//! It lives with the session's counters rather than in a prometheus `HistogramVec` so
//! that a removed session's series disappear with it (the metrics collector reads every
//! live session's histogram when scraped) and observing costs two relaxed atomic adds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the buckets: from 50 µs (loopback acknowledgements) to 10 s.
pub(crate) const LATENCY_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// A histogram over [`LATENCY_BUCKETS`] (plus an implicit `+Inf` bucket).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Non-cumulative counts; the last slot is the `+Inf` overflow.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// A consistent-enough copy of a [`LatencyHistogram`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySnapshot {
    /// Cumulative counts per bound of [`LATENCY_BUCKETS`] (`le` semantics).
    pub cumulative: [u64; LATENCY_BUCKETS.len()],
    /// Observations.
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS.partition_point(|&le| le < secs);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot with cumulative bucket counts. The count is taken as the sum of the
    /// buckets, so the `+Inf` bucket always equals it even while observations race.
    pub fn snapshot(&self) -> LatencySnapshot {
        let mut cumulative = [0; LATENCY_BUCKETS.len()];
        let mut acc = 0;
        for (slot, b) in cumulative.iter_mut().zip(&self.buckets) {
            acc += b.load(Ordering::Relaxed);
            *slot = acc;
        }
        acc += self.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        LatencySnapshot {
            cumulative,
            count: acc,
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

impl LatencySnapshot {
    /// Estimates quantile `q` (0..=1) by linear interpolation inside the bucket holding
    /// it, as PromQL's `histogram_quantile` does; `None` without observations. Values
    /// in the `+Inf` bucket are reported as the highest bound.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut prev_count = 0u64;
        let mut prev_bound = 0.0;
        for (&le, &c) in LATENCY_BUCKETS.iter().zip(&self.cumulative) {
            if c as f64 >= rank && c > prev_count {
                let within = (rank - prev_count as f64) / (c - prev_count) as f64;
                return Some(prev_bound + (le - prev_bound) * within.clamp(0.0, 1.0));
            }
            prev_count = c;
            prev_bound = le;
        }
        Some(prev_bound)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_is_not_smaller() {
        let h = LatencyHistogram::default();
        let table = [
            (Duration::from_micros(10), 0),
            (Duration::from_micros(50), 0),
            (Duration::from_micros(51), 1),
            (Duration::from_millis(1), 4),
            (Duration::from_secs(10), 16),
        ];
        for (d, _) in table {
            h.observe(d);
        }
        h.observe(Duration::from_secs(60));
        let s = h.snapshot();
        assert_eq!(s.count, 6);
        assert_eq!(s.cumulative[0], 2);
        assert_eq!(s.cumulative[1], 3);
        assert_eq!(s.cumulative[3], 3);
        assert_eq!(s.cumulative[4], 4);
        assert_eq!(s.cumulative[16], 5, "the 60 s observation is only in +Inf");
        assert!((s.sum_seconds - 70.00111).abs() < 1e-6, "{}", s.sum_seconds);
    }

    #[test]
    fn quantiles_interpolate_within_a_bucket() {
        let h = LatencyHistogram::default();
        assert_eq!(h.snapshot().quantile(0.5), None);
        for _ in 0..100 {
            h.observe(Duration::from_micros(700)); // bucket (0.5 ms, 1 ms]
        }
        let s = h.snapshot();
        let p50 = s.quantile(0.5).unwrap();
        assert!((p50 - 0.00075).abs() < 1e-9, "{p50}");
        assert_eq!(s.quantile(1.0), Some(0.001));
    }
}
