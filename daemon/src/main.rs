//! `mqtt-sessions`: the daemon's command line. Parses the arguments and calls into
//! [`mqtt_sessions_daemon`], where all the logic lives.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use mqtt_sessions_daemon::{self as daemon, logging, status, Config, EX_CONFIG};

/// Many MQTT sessions, their subscriptions and forwarding rules, from one TOML file.
#[derive(Debug, Parser)]
#[command(name = "mqtt-sessions", version, about)]
struct Cli {
    /// More log output (-v: debug, -vv: trace); RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log line format.
    #[arg(long, value_enum, default_value_t, global = true)]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// Where the config file is unless `-c/--config` says otherwise.
const DEFAULT_CONFIG_PATH: &str = "/etc/mqtt-sessions/config.toml";

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the sessions and rules of a config file until SIGINT/SIGTERM (SIGHUP reloads).
    Run {
        /// The TOML config file.
        #[arg(short, long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Validates a config file and explains what it would run (exit 78 if invalid).
    CheckConfig {
        /// The TOML config file (also accepted as `-c/--config`).
        #[arg(conflicts_with = "config")]
        file: Option<PathBuf>,
        /// The TOML config file.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Prints the effective configuration of a file, every default filled in
    /// (`--example`: the annotated example instead). Accepted by check-config.
    PrintConfig {
        /// The TOML config file (also accepted as `-c/--config`).
        #[arg(conflicts_with_all = ["config", "example"])]
        file: Option<PathBuf>,
        /// The TOML config file.
        #[arg(short, long, conflicts_with = "example")]
        config: Option<PathBuf>,
        /// Print the annotated example configuration (examples/gateway.toml).
        #[arg(long)]
        example: bool,
    },
    /// Asks a running daemon for its sessions and prints a table.
    Status {
        /// The daemon's config file: its `[http] listen` address is asked when `--url`
        /// is not given (a missing file means the default address).
        #[arg(short, long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Base URL of the daemon's HTTP endpoint (default: from the config file, else
        /// `http://127.0.0.1:9883`).
        #[arg(long)]
        url: Option<String>,
        /// Seconds between the two samples the rates are computed from (0: no rates).
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.verbose, cli.log_format);
    match cli.command {
        Command::Run { config } => run(config),
        Command::CheckConfig { file, config } => {
            let file = file
                .or(config)
                .unwrap_or_else(|| DEFAULT_CONFIG_PATH.into());
            match Config::load(&file) {
                Ok(c) => out(&c.explain()),
                Err(e) => fail(EX_CONFIG, &e),
            }
        }
        Command::PrintConfig {
            file,
            config,
            example,
        } => {
            if example {
                return out(daemon::DEFAULT_CONFIG);
            }
            let file = file
                .or(config)
                .unwrap_or_else(|| DEFAULT_CONFIG_PATH.into());
            match Config::load(&file).and_then(|c| c.effective()) {
                Ok(text) => out(&text),
                Err(e) => fail(EX_CONFIG, &e),
            }
        }
        Command::Status {
            config,
            url,
            interval,
        } => {
            let url = url.unwrap_or_else(|| status::default_url(&config));
            let wait = Duration::try_from_secs_f64(interval).unwrap_or_default();
            match actix_rt::System::new().block_on(sample(&url, wait)) {
                Ok(table) => out(&table),
                Err(e) => fail(69, &e),
            }
        }
    }
}

/// The status table of the daemon at `url`: with a non-zero `wait`, two samples that far
/// apart (for the rates), both through one kept client.
async fn sample(url: &str, wait: Duration) -> Result<String, status::StatusError> {
    let client = status::StatusClient::new(url)?;
    let before = if wait.is_zero() {
        None
    } else {
        let rows = client.sessions().await?;
        actix_rt::time::sleep(wait).await;
        Some(rows)
    };
    let rows = client.sessions().await?;
    Ok(status::table(&rows, before.as_deref().map(|b| (b, wait))))
}

fn run(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => return fail(EX_CONFIG, &e),
    };
    let result = actix_rt::System::new().block_on(async move {
        let shutdown = daemon::signals::terminate().map_err(daemon::DaemonError::Signals)?;
        daemon::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e.exit_code(), &e),
    }
}

fn out(text: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn fail(code: u8, err: &dyn std::fmt::Display) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "mqtt-sessions: error: {err}");
    ExitCode::from(code)
}
