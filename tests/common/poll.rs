//! Waiting on conditions with a deadline.

use std::future::Future;
use std::time::{Duration, Instant};

/// Interval between two checks of a polled condition (a polling period, not a
/// synchronisation delay).
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Default deadline for waits in tests (generous: CI has 2 cores).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// Calls `cond` every [`POLL_INTERVAL`] until it returns `true` (→ `true`) or
/// `timeout` has passed (→ `false`). `cond` is always checked at least once,
/// and once more at the deadline.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}

/// Async [`poll_until`]: awaits `cond()` every [`POLL_INTERVAL`] (with
/// `tokio::time::sleep`, so other tasks run meanwhile) until it yields `true`
/// (→ `true`) or `timeout` has passed (→ `false`).
pub async fn poll_until_async<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

/// Like [`poll_until`], but panics with `what` (and the timeout) if `cond`
/// does not become true in time.
#[track_caller]
pub fn eventually(timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
    if !poll_until(timeout, cond) {
        panic!("timed out after {timeout:?} waiting for: {what}");
    }
}

/// Like [`poll_until_async`], but panics with `what` (and the timeout) if
/// `cond` does not become true in time.
pub async fn eventually_async<F, Fut>(timeout: Duration, what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    if !poll_until_async(timeout, cond).await {
        panic!("timed out after {timeout:?} waiting for: {what}");
    }
}

/// Asserts that a (synchronous) boolean expression becomes true within a
/// deadline, polling it; panics with the expression text (or a custom
/// message) otherwise.
///
/// ```ignore
/// assert_eventually!(sub.count() == 3);
/// assert_eventually!(sub.count() == 3, Duration::from_secs(5));
/// assert_eventually!(sub.count() == 3, Duration::from_secs(5), "3 messages, got {:?}", sub.lines());
/// ```
///
/// Blocking: inside an async test use [`eventually_async`] instead.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr $(,)?) => {
        $crate::assert_eventually!($cond, $crate::common::DEFAULT_TIMEOUT)
    };
    ($cond:expr, $timeout:expr $(,)?) => {
        $crate::common::eventually($timeout, stringify!($cond), || $cond)
    };
    ($cond:expr, $timeout:expr, $($arg:tt)+) => {
        if !$crate::common::poll_until($timeout, || $cond) {
            panic!(
                "timed out after {:?} waiting for `{}`: {}",
                $timeout,
                stringify!($cond),
                format!($($arg)+)
            );
        }
    };
}
