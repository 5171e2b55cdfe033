//! Unix signals: SIGINT/SIGTERM end the daemon gracefully, SIGHUP reloads its file.

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Resolves on the first SIGINT or SIGTERM: the shutdown future the binary hands to
/// [`run`](super::run). Must be called inside a Tokio runtime (the actix system).
pub fn terminate() -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    Ok(async move {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "shutting down");
    })
}

/// A stream of SIGHUPs.
pub(crate) fn hangup() -> std::io::Result<Signal> {
    signal(SignalKind::hangup())
}
