//! The connection state machine of a session (a plain type, no I/O).
//!
//! ```text
//!  Disconnected ──attempt──▶ Connecting ──connack──▶ Connected
//!        ▲                       │                     │
//!        │ gave up / no          │ all brokers failed  │ connection lost
//!        │ auto-reconnect        ▼                     ▼
//!        └──────────────────  Reconnecting ◀───────────┘
//!                               │  ▲ (attempts repeat here)
//!                               └──┘──connack──▶ Connected
//!  any state ──stopped──▶ Disconnected (the actor failed; the supervisor decides)
//!  any state ──gave up──▶ GaveUp (no more attempts or restarts; only close leaves it)
//!  any state ──close──▶ Closed (final)
//! ```

use serde::{Deserialize, Serialize};

/// The state of a session: the Go original's five states, with the same codes and names,
/// plus `gave_up` (code 5), the end of a session that stopped trying for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Not connected and not trying (initial, or gave up). Code 0.
    Disconnected = 0,
    /// First connection attempt in progress. Code 1.
    Connecting = 1,
    /// Connected to a broker. Code 2.
    Connected = 2,
    /// Connection lost or attempts failing; retrying with backoff. Code 3.
    Reconnecting = 3,
    /// Removed or shut down; final. Code 4.
    Closed = 4,
    /// Stopped trying for good: connection attempts exhausted (`reconnect.max_attempts`),
    /// connection lost without `auto_reconnect`, or too many restarts of its actor (see
    /// [`SessionStatus::gave_up`](crate::SessionStatus::gave_up) for why). It stays
    /// listed until removed. Code 5.
    GaveUp = 5,
}

impl SessionState {
    /// The state's numeric code (0 to 5).
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The state's name: `disconnected`, `connecting`, `connected`, `reconnecting`,
    /// `closed`, `gave_up`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Disconnected => "disconnected",
            SessionState::Connecting => "connecting",
            SessionState::Connected => "connected",
            SessionState::Reconnecting => "reconnecting",
            SessionState::Closed => "closed",
            SessionState::GaveUp => "gave_up",
        }
    }

    /// Every state, in code order.
    pub const ALL: [SessionState; 6] = [
        SessionState::Disconnected,
        SessionState::Connecting,
        SessionState::Connected,
        SessionState::Reconnecting,
        SessionState::Closed,
        SessionState::GaveUp,
    ];
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to the connection; the input of [`SessionState::on`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A connection attempt starts.
    Attempt,
    /// The broker accepted the connection.
    Connected,
    /// Every broker of an attempt failed; another attempt follows after a delay.
    AttemptFailed,
    /// The established connection was lost and will be re-established.
    Lost,
    /// The session's actor stopped unexpectedly; its supervisor decides what follows.
    Stopped,
    /// No further attempts or restarts (connection lost without auto-reconnect, max
    /// attempts reached, or too many restarts).
    GaveUp,
    /// The session is being removed or shut down.
    Close,
}

impl SessionState {
    /// The state after `t`, or `None` when `t` leaves the state unchanged.
    pub fn on(self, t: Transition) -> Option<SessionState> {
        use SessionState::*;
        let next = match (self, t) {
            (Closed, _) => return None,
            (_, Transition::Close) => Closed,
            (GaveUp, _) => return None,
            (_, Transition::GaveUp) => GaveUp,
            (Disconnected, Transition::Attempt) => Connecting,
            (Connecting | Reconnecting, Transition::Connected) => Connected,
            (Connecting, Transition::AttemptFailed) => Reconnecting,
            (Connected, Transition::Lost) => Reconnecting,
            (_, Transition::Stopped) => Disconnected,
            _ => return None,
        };
        (next != self).then_some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::SessionState::*;
    use super::Transition as T;
    use super::*;

    #[test]
    fn codes_and_names_match_the_go_original() {
        let got: Vec<(u8, &str)> = SessionState::ALL
            .iter()
            .map(|s| (s.code(), s.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, "disconnected"),
                (1, "connecting"),
                (2, "connected"),
                (3, "reconnecting"),
                (4, "closed"),
                (5, "gave_up")
            ]
        );
    }

    #[test]
    fn transition_table() {
        let table = [
            (Disconnected, T::Attempt, Some(Connecting)),
            (Connecting, T::Connected, Some(Connected)),
            (Connecting, T::AttemptFailed, Some(Reconnecting)),
            (Connecting, T::GaveUp, Some(GaveUp)),
            (Connecting, T::Stopped, Some(Disconnected)),
            (Reconnecting, T::Attempt, None),
            (Reconnecting, T::AttemptFailed, None),
            (Reconnecting, T::Connected, Some(Connected)),
            (Reconnecting, T::GaveUp, Some(GaveUp)),
            (Reconnecting, T::Stopped, Some(Disconnected)),
            (Connected, T::Lost, Some(Reconnecting)),
            (Connected, T::GaveUp, Some(GaveUp)),
            (Connected, T::Stopped, Some(Disconnected)),
            (Disconnected, T::Stopped, None),
            (GaveUp, T::Attempt, None),
            (GaveUp, T::Stopped, None),
            (GaveUp, T::Close, Some(Closed)),
            (Connected, T::Attempt, None),
            (Connected, T::Close, Some(Closed)),
            (Disconnected, T::Close, Some(Closed)),
            (Closed, T::Attempt, None),
            (Closed, T::Connected, None),
            (Closed, T::Close, None),
        ];
        for (from, t, want) in table {
            assert_eq!(from.on(t), want, "{from:?} on {t:?}");
        }
    }

    #[test]
    fn the_readme_and_the_status_page_list_every_state() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("<!-- state-codes -->")
            .expect("state-codes marker");
        let end = readme.find("<!-- /state-codes -->").expect("end marker");
        let rows: Vec<(u8, String)> = readme[start..end]
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let code = cells.get(1)?.parse().ok()?;
                Some((code, cells.get(2)?.trim_matches('`').to_string()))
            })
            .collect();
        let expected: Vec<(u8, String)> = SessionState::ALL
            .iter()
            .map(|s| (s.code(), s.as_str().to_string()))
            .collect();
        assert_eq!(rows, expected);
        // The status page's state filter offers every state.
        let page = include_str!("../http/assets/index.html");
        for state in SessionState::ALL {
            let option = format!("<option value=\"{state}\">");
            assert!(page.contains(&option), "the state filter lacks {state}");
        }
    }
}
