//! The `mqtt-sessions` daemon (command-line front end).
//!
//! The daemon (config file, forwarding rules, HTTP endpoints) is not built yet; this
//! binary prints its version and says so.

use std::process::ExitCode;

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("--version" | "-V") => {
            #[expect(clippy::print_stdout, reason = "command-line output")]
            {
                println!("mqtt-sessions {}", env!("CARGO_PKG_VERSION"));
            }
            ExitCode::SUCCESS
        }
        _ => {
            #[expect(clippy::print_stderr, reason = "command-line output")]
            {
                eprintln!(
                    "mqtt-sessions {}: the daemon is not implemented yet; use the library",
                    env!("CARGO_PKG_VERSION")
                );
            }
            ExitCode::from(64)
        }
    }
}
