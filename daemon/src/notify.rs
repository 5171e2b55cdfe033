//! systemd's service protocol (`sd_notify(3)`), through the `sd-notify` crate: when
//! `NOTIFY_SOCKET` is set the daemon sends, as datagrams on that unix socket,
//!
//! - `READY=1` once the configuration is applied and the HTTP endpoints listen (not when
//!   every session is ready: an unreachable broker must not keep the unit "activating"
//!   until systemd kills it; `/readyz` tells who is ready);
//! - `STATUS=…` whenever the summary changes: `3/4 sessions ready; last reload: ok`;
//! - `RELOADING=1` with `MONOTONIC_USEC=…` when a SIGHUP reload starts and `READY=1` when
//!   it is done (what `Type=notify-reload` expects);
//! - `WATCHDOG=1` every half `WATCHDOG_USEC`, only while every worker arbiter answers a
//!   liveness ping (a wedged worker thread stops the pings and systemd restarts the unit);
//! - `STOPPING=1` when it shuts down.
//!
//! `sd-notify` 0.5 has every state used here (including `MONOTONIC_USEC` and
//! `watchdog_enabled`, which honours `WATCHDOG_PID`), and reads `NOTIFY_SOCKET` (a path
//! or an abstract `@name`) on each call; it depends on `libc` only.

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends state lines to the service manager, if there is one.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// A notifier for `$NOTIFY_SOCKET`; does nothing when it is not set.
    pub fn from_env() -> Self {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty()),
        }
    }

    /// Is there a service manager to notify?
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// `READY=1` (start-up done, or a reload done).
    pub fn ready(&self) {
        self.send(&[NotifyState::Ready]);
    }

    /// `RELOADING=1` and `MONOTONIC_USEC=` now: a reload starts.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the monotonic clock");
                self.send(&[NotifyState::Reloading]);
            }
        }
    }

    /// `STATUS=` a one-line summary.
    pub fn status(&self, line: &str) {
        self.send(&[NotifyState::Status(line)]);
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// Sends `states`; failures are logged, never fatal.
    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        let text = || {
            states
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        };
        match sd_notify::notify(states) {
            Ok(()) => tracing::debug!(state = %text(), "service manager notified"),
            Err(e) => {
                tracing::warn!(state = %text(), error = %e, "cannot notify the service manager")
            }
        }
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC` (when it is set and meant for
/// this process), as `sd_watchdog_enabled(3)` recommends.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}

/// The `STATUS=` line: how many sessions are ready, and how the last reload went.
pub fn status_line(ready: usize, total: usize, last_reload: Option<&str>) -> String {
    match last_reload {
        Some(r) => format!("{ready}/{total} sessions ready; last reload: {r}"),
        None => format!("{ready}/{total} sessions ready"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_count_ready_sessions_and_tell_the_last_reload() {
        assert_eq!(status_line(3, 4, None), "3/4 sessions ready");
        assert_eq!(
            status_line(0, 1, Some("failed")),
            "0/1 sessions ready; last reload: failed"
        );
    }
}
