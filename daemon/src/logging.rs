//! Log output of the daemon: `tracing` to stderr, plain or JSON, with a verbosity.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// The filter for a verbosity (`-v` count) when `RUST_LOG` is not set.
pub fn default_filter(verbosity: u8) -> &'static str {
    match verbosity {
        // rumqttd logs ordinary disconnections as errors: quiet unless asked for.
        0 => "info,rumqttd=off,actix_server=warn",
        1 => "info,mqtt_sessions=debug,rumqttd=error,actix_server=warn",
        2 => "debug,mqtt_sessions=trace,rumqttd=info",
        _ => "trace",
    }
}

/// Installs the global subscriber; `RUST_LOG` overrides the verbosity.
pub fn init(verbosity: u8, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter(verbosity)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
