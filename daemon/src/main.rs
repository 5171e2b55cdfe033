//! `mqtt-sessions`: the daemon's command line. Parses the arguments and calls into
//! [`mqtt_sessions_daemon`], where all the logic lives.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Asks a running daemon for its sessions and rules and prints them as tables.
    Status {
        /// The daemon's config file: its `[http] listen` address is asked when `--url`
        /// is not given (a missing file means the default address).
        #[arg(short, long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Base URL of the daemon's HTTP endpoint (default: from the config file, else
        /// `http://127.0.0.1:9883`). `user:password@` in it still works but puts the
        /// password in the process list: prefer the options below.
        #[arg(long)]
        url: Option<String>,
        /// Send the bearer token read from this file (its first line).
        #[arg(long, value_name = "FILE", group = "credentials")]
        token_file: Option<PathBuf>,
        /// Send the bearer token held by this environment variable.
        #[arg(long, value_name = "VAR", group = "credentials")]
        token_env: Option<String>,
        /// Basic auth as this user; the password comes from `--password-file` or
        /// `--password-env`.
        #[arg(long, group = "credentials", requires = "password")]
        user: Option<String>,
        /// The basic-auth password, read from this file (its first line).
        #[arg(long, value_name = "FILE", group = "password", requires = "user")]
        password_file: Option<PathBuf>,
        /// The basic-auth password, held by this environment variable.
        #[arg(long, value_name = "VAR", group = "password", requires = "user")]
        password_env: Option<String>,
        /// Print the daemon's answers as one JSON object (`{"sessions": [...], "rules":
        /// [...]}`) instead of tables.
        #[arg(long)]
        json: bool,
        /// Ignored (the rates are the daemon's own now); kept so that scripts still run.
        #[arg(long, hide = true)]
        interval: Option<f64>,
    },
}

/// Where the credentials of `status` come from.
#[derive(Debug)]
struct StatusAuth {
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
}

impl StatusAuth {
    /// Reads the token or password the options point at.
    fn read(self) -> Result<status::HttpAuth, status::StatusError> {
        use status::{HttpAuth, SecretSource};
        let token = match (self.token_file, self.token_env) {
            (Some(f), _) => Some(SecretSource::File(f)),
            (None, Some(v)) => Some(SecretSource::Env(v)),
            (None, None) => None,
        };
        if let Some(token) = token {
            return Ok(HttpAuth::Bearer(token.read("bearer token")?));
        }
        let password = match (self.password_file, self.password_env) {
            (Some(f), _) => Some(SecretSource::File(f)),
            (None, Some(v)) => Some(SecretSource::Env(v)),
            (None, None) => None,
        };
        match (self.user, password) {
            (Some(user), Some(p)) => Ok(HttpAuth::Basic {
                user,
                password: p.read("password")?,
            }),
            _ => Ok(HttpAuth::None),
        }
    }
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
            token_file,
            token_env,
            user,
            password_file,
            password_env,
            json,
            interval,
        } => {
            if interval.is_some() {
                warn("--interval is ignored: the rates come from the daemon");
            }
            let url = url.unwrap_or_else(|| status::default_url(&config));
            let auth = StatusAuth {
                token_file,
                token_env,
                user,
                password_file,
                password_env,
            };
            match actix_rt::System::new().block_on(fetch(&url, auth)) {
                Ok(snapshot) if json => out(&status::json(&snapshot)),
                Ok(snapshot) => out(&status::render(&snapshot)),
                Err(e) => fail(69, &e),
            }
        }
    }
}

/// One snapshot of the daemon at `url` (its sessions and rules, each fetched once).
async fn fetch(url: &str, auth: StatusAuth) -> Result<status::Snapshot, status::StatusError> {
    let auth = auth.read()?;
    let client = status::StatusClient::new(url)?;
    if client.credentials_in_url() {
        if auth == status::HttpAuth::None {
            warn(
                "credentials in the URL show in the process list; use --token-file/--token-env \
                 or --user with --password-file/--password-env",
            );
        } else {
            warn("the credentials in the URL are ignored: the options' are used");
        }
    }
    client.with_auth(auth).snapshot().await
}

fn warn(text: &str) {
    let _ = writeln!(std::io::stderr(), "mqtt-sessions: warning: {text}");
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
