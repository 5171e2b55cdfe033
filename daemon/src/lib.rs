//! The `mqtt-sessions` daemon: runs the sessions, subscriptions and forwarding rules of a
//! TOML file (see [`Config`]) until told to stop.
//!
//! [`run`] owns, for the life of the process: the [`SessionManager`], the embedded broker
//! (`[embedded_broker]`), the HTTP endpoints (`[http]`), the running configuration
//! ([`running`]) and the signal handling. Shutdown is a protocol: stop the rules' routes
//! (nothing new is accepted), let the rules forward what they already accepted, shut the
//! manager down (queued publishes flushed, DISCONNECT), stop HTTP, return — all within
//! `shutdown_timeout`. SIGHUP re-reads the file: an invalid file is refused (logged and
//! counted) and the old configuration keeps running; otherwise only the sessions and rules
//! whose configuration changed are restarted.
//!
//! The binary `mqtt-sessions` (`src/main.rs`) parses the command line and calls into this
//! crate; the library it runs on is [`mqtt_sessions`], used through its public API only.

// Feature badges on docs.rs (`--cfg docsrs`, nightly).
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "embedded-broker")]
#[cfg_attr(docsrs, doc(cfg(feature = "embedded-broker")))]
pub mod broker;
pub mod config;
pub mod error;
mod explain;
mod fleet;
pub mod forward;
pub mod limits;
mod link_state;
mod load;
pub mod logging;
mod metrics;
pub mod notify;
mod rules;
pub mod running;
pub mod signals;
pub mod size;
pub mod status;
pub mod template;
mod validate;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub use self::config::{Config, ConfigError, ConfigErrorKind, DEFAULT_CONFIG};
use self::notify::Notifier;
pub use self::running::DaemonStats;
use self::running::Running;
use mqtt_sessions::error::Error;
use mqtt_sessions::manager::SessionManager;

/// `sysexits.h`'s `EX_CONFIG`: the exit code for a bad configuration file.
pub const EX_CONFIG: u8 = 78;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The configuration file was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The session manager refused something (a session, a rule).
    #[error("while starting: {0}")]
    Manager(#[from] Error),
    /// The embedded broker did not start.
    #[cfg(feature = "embedded-broker")]
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// The `[embedded_broker]` section needs the `embedded-broker` feature.
    #[error("[embedded_broker] is configured but this build has no embedded broker (cargo feature `embedded-broker`)")]
    NoEmbeddedBroker,
    /// The HTTP endpoint failed.
    #[error("http endpoint on {addr}: {source}")]
    Http {
        /// Its address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The HTTP endpoint's TLS files or credentials were refused (they changed since the
    /// configuration was checked).
    #[error("http endpoint: {0}")]
    HttpSetup(#[from] mqtt_sessions::http::HttpError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

impl DaemonError {
    /// The process exit code for this error: [`EX_CONFIG`] for a bad file, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            DaemonError::Config(_) | DaemonError::NoEmbeddedBroker => EX_CONFIG,
            _ => 1,
        }
    }
}

/// Runs `config` until `shutdown` resolves (the binary passes
/// [`signals::terminate`]; tests pass their own), then shuts down gracefully. Must run
/// inside an actix system. SIGHUP reloads the file the configuration came from.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let notifier = Notifier::from_env();
    limits::raise_nofile();
    let stats = Arc::new(DaemonStats::default());
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if let Some(b) = &config.embedded_broker {
        #[cfg(feature = "embedded-broker")]
        broker::start(b)?;
        #[cfg(not(feature = "embedded-broker"))]
        {
            let _ = b;
            return Err(DaemonError::NoEmbeddedBroker);
        }
    }
    let mut hup = signals::hangup().map_err(DaemonError::Signals)?;
    let mut builder = SessionManager::builder().metrics_per_session(config.metrics.per_session);
    if let Some(n) = config.workers {
        builder = builder.workers(n);
    }
    if let Some(store) = &config.store {
        builder = builder.store_flush_interval(store.flush_interval);
        if let Some(path) = &store.path {
            tracing::info!(path = %path.get_ref().display(), "opening the store");
            builder = builder.store(path.get_ref());
        }
    }
    let manager = builder.build()?;
    match metrics::DaemonCollector::new(Arc::clone(&stats), mqtt_sessions::metrics::DEFAULT_PREFIX)
    {
        Ok(c) => {
            if let Err(e) = manager.registry().register(Box::new(c)) {
                tracing::warn!(error = %e, "cannot register the daemon's metrics");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot build the daemon's metrics"),
    }
    register_process_metrics(&manager);
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http_addr = config.http.as_ref().map(|h| h.listen);
    let rules = Arc::new(rules::RuleTable::new(Arc::clone(&stats)));
    // Sessions `/readyz` does not wait for (`required_for_ready = false`).
    let optional: Arc<RwLock<BTreeSet<String>>> = Arc::new(RwLock::new(optional_sessions(&config)));
    match fleet::FleetCollector::new(
        manager.clone(),
        Arc::clone(&optional),
        mqtt_sessions::metrics::DEFAULT_PREFIX,
    ) {
        Ok(c) => {
            if let Err(e) = manager.registry().register(Box::new(c)) {
                tracing::warn!(error = %e, "cannot register the fleet metrics");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot build the fleet metrics"),
    }
    let http_options = match &config.http {
        Some(h) => {
            let optional = Arc::clone(&optional);
            Some(
                h.options(&config.base_dir())
                    .map_err(|(_, e)| DaemonError::HttpSetup(e))?
                    .rules_source(Arc::clone(&rules) as Arc<dyn mqtt_sessions::http::RulesSource>)
                    .required_for_ready(Arc::new(move |name: &str| {
                        !optional
                            .read()
                            .unwrap_or_else(|e| e.into_inner())
                            .contains(name)
                    })),
            )
        }
        None => None,
    };
    // Bound now, so that READY=1 (below) means the endpoints accept connections.
    let listener = match http_addr {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .map_err(|source| DaemonError::Http { addr, source })?,
        ),
        None => None,
    };
    let mut http = std::pin::pin!(async {
        match (http_addr, http_options, listener) {
            (Some(addr), Some(options), Some(listener)) => {
                let stop = async {
                    let _ = http_stopped.await;
                };
                mqtt_sessions::http::serve_with(manager.clone(), listener, options, stop)
                    .await
                    .map_err(|e| match e {
                        mqtt_sessions::http::ServeError::Options(e) => DaemonError::HttpSetup(e),
                        mqtt_sessions::http::ServeError::Io(source) => {
                            DaemonError::Http { addr, source }
                        }
                        // A failure the library may add later: reported as the server's.
                        other => DaemonError::Http {
                            addr,
                            source: std::io::Error::other(other),
                        },
                    })
            }
            _ => std::future::pending().await,
        }
    });
    let timeout = config.shutdown_timeout;
    let mut running = Running::new(manager.clone(), Arc::clone(&stats));
    rules.update(&config);
    let errors = running.apply(config).await;
    if let Some(e) = errors.into_iter().next() {
        manager.shutdown().await;
        return Err(e.into());
    }
    tracing::info!(sessions = manager.list_sessions().len(), http = ?http_addr, "daemon started");
    notifier.ready();
    let reporter = actix::spawn(report(
        manager.clone(),
        notifier.clone(),
        Arc::clone(&stats),
    ));

    let mut shutdown = std::pin::pin!(shutdown);
    let mut failure = None;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = hup.recv() => {
                notifier.reloading();
                reload(&mut running).await;
                if let Some(c) = running.config() {
                    rules.update(c);
                    *optional.write().unwrap_or_else(|e| e.into_inner()) = optional_sessions(c);
                }
                notifier.ready();
                notifier.status(&status(&manager, &stats));
            }
            r = &mut http => {
                failure = r.err();
                break;
            }
        }
    }

    notifier.stopping();
    reporter.abort();
    let deadline = Instant::now() + timeout;
    tracing::info!(?timeout, "stopping: draining forwarding rules");
    // Half the budget for the rules' queues, the rest for the sessions' outboxes.
    running.stop(timeout / 2).await;
    let left = deadline.saturating_duration_since(Instant::now());
    if tokio::time::timeout(left, manager.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("sessions did not close within the shutdown timeout");
    }
    for (rule, s) in stats.forward() {
        tracing::info!(rule = %rule, forwarded = s.forwarded, retries = s.retries, dropped = s.dropped, "forward totals");
    }
    let _ = http_stop.send(());
    if failure.is_none() {
        let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
        if let Ok(Err(e)) = tokio::time::timeout(left, &mut http).await {
            tracing::warn!(error = %e, "http endpoint stopped with an error");
        }
    }
    tracing::info!("stopped");
    failure.map_or(Ok(()), Err)
}

/// SIGHUP: re-reads the file; a bad file leaves everything as it is.
async fn reload(running: &mut Running) {
    let Some(path) = running.config().and_then(|c| c.path.clone()) else {
        tracing::warn!("SIGHUP: this configuration was not read from a file; nothing to reload");
        return;
    };
    tracing::info!(file = %path.display(), "SIGHUP: reloading the configuration");
    let new = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            let first_line = e.to_string().lines().next().unwrap_or_default().to_string();
            let failures = running.note_reload(false, format!("failed: {first_line}"));
            tracing::error!(error = %e, config_reload_failures = failures,
                "configuration reload refused; the previous configuration keeps running");
            return;
        }
    };
    for w in &new.warnings {
        tracing::warn!("{w}");
    }
    if let Some(old) = running.config() {
        let fixed = [
            ("[http]", old.http != new.http),
            (
                "[embedded_broker]",
                old.embedded_broker != new.embedded_broker,
            ),
            ("[store]", old.store != new.store),
            (
                "shutdown_timeout",
                old.shutdown_timeout != new.shutdown_timeout,
            ),
        ];
        for (what, changed) in fixed {
            if changed {
                tracing::warn!(
                    section = what,
                    "changing this needs a restart; it is ignored until then"
                );
            }
        }
    }
    let errors = running.apply(new).await;
    let summary = match errors.first() {
        None => "ok".to_string(),
        Some(e) => format!("applied with {} error(s): {e}", errors.len()),
    };
    running.note_reload(errors.is_empty(), summary);
    for e in &errors {
        tracing::error!(error = %e, "configuration reload: could not start");
    }
    tracing::info!(errors = errors.len(), "configuration reloaded");
}

/// The sessions of `config` that `/readyz` does not wait for.
fn optional_sessions(config: &Config) -> BTreeSet<String> {
    config
        .sessions
        .iter()
        .filter(|s| !s.required_for_ready)
        .map(|s| s.name().to_string())
        .collect()
}

/// The `STATUS=` line now.
fn status(manager: &SessionManager, stats: &DaemonStats) -> String {
    let r = manager.readiness();
    let last = stats.last_reload().map(|r| r.summary);
    notify::status_line(r.sessions - r.not_ready.len(), r.sessions, last.as_deref())
}

/// How often the `STATUS=` line is recomputed (sent only when it changed).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Tells the service manager, for the life of the daemon: the `STATUS=` line whenever it
/// changes, and `WATCHDOG=1` every half `WATCHDOG_USEC` while every worker thread
/// answers a ping within that half (a missed ping is logged; systemd restarts the
/// daemon when they stop).
async fn report(manager: SessionManager, notifier: Notifier, stats: Arc<DaemonStats>) {
    if !notifier.enabled() {
        return;
    }
    let watchdog = notify::watchdog_interval();
    if let Some(every) = watchdog {
        tracing::info!(?every, "systemd watchdog enabled");
    }
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::MAX / 4));
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    watchdog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = String::new();
    loop {
        tokio::select! {
            _ = status_tick.tick() => {
                let line = status(&manager, &stats);
                if line != last {
                    notifier.status(&line);
                    last = line;
                }
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                let every = watchdog.unwrap_or_default();
                if manager.workers_alive(every).await {
                    notifier.watchdog();
                } else {
                    tracing::error!(timeout = ?every,
                        "a worker thread did not answer; withholding the systemd watchdog ping");
                }
            }
        }
    }
}

/// The process collector (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_open_fds`, `process_max_fds`, ...) in the manager's registry, on Linux.
fn register_process_metrics(manager: &SessionManager) {
    #[cfg(target_os = "linux")]
    {
        let c = prometheus::process_collector::ProcessCollector::for_self();
        if let Err(e) = manager.registry().register(Box::new(c)) {
            tracing::warn!(error = %e, "cannot register the process metrics");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = manager;
}
