//! HTTP endpoints over a [`SessionManager`] (feature `http`, actix-web 4):
//!
//! | route | answer |
//! |---|---|
//! | `GET /metrics` | the manager's registry in the Prometheus text format |
//! | `GET /healthz` | `200 ok` while the manager runs, `503` after shutdown |
//! | `GET /readyz` | `200` when every session is ready, else `503`; JSON [`Readiness`] naming those that are not, with state and last error |
//! | `GET /sessions` | JSON array of [`SessionInfo`]: state (and since when), broker, client id, subscriptions, counters, rates, last error (never a password); `?offset=&limit=&state=&q=&sort=&order=` filter, sort and page it on the server, `X-Total-Count` says how many matched |
//! | `GET /overview` | JSON [`Overview`]: sessions by state, total message rates, pending, routes |
//! | `GET /rules` | JSON array of [`RuleInfo`]: forwarding rules and their counters (empty without a [`RulesSource`]) |
//! | `GET /events` | Server-Sent Events: the manager's events as JSON, `?session=` / `?kind=` filters ([`events`](mod@events)) |
//! | `GET /` | the status page: sessions, rules and a message-rate chart, live ([`page`]) |
//!
//! Mount them on an application's own `App` with [`configure`] (or [`configure_with`] for
//! credentials and a rules source), or run them alone with [`serve`] / [`serve_listener`] /
//! [`serve_with`] (the daemon does; it listens on loopback, [`DEFAULT_ADDR`], unless told
//! otherwise). Everything is read-only.
//!
//! [`HttpOptions`] adds TLS (rustls, PEM files), HTTP basic auth against bcrypt hashes and
//! a bearer token, and paths left open (`/healthz` for probes): a request to any other
//! endpoint without acceptable credentials gets `401`.
//!
//! ```no_run
//! use actix_web::{App, HttpServer};
//! use mqtt_sessions::SessionManager;
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     let manager = SessionManager::new().expect("actix system");
//!     HttpServer::new(move || App::new().configure(mqtt_sessions::http::configure(manager.clone())))
//!         .bind(("127.0.0.1", 8080))?
//!         .run()
//!         .await
//! }
//! ```
//!
//! [`Readiness`]: crate::metrics::Readiness
//! [`SessionInfo`]: crate::metrics::SessionInfo

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::http::header::ContentType;
use actix_web::{web, App, HttpResponse, HttpServer};

mod auth;
mod error;
pub mod events;
mod options;
pub mod page;
mod sessions;
mod stats;

use self::auth::{Authorized, Open};
pub use self::error::HttpError;
pub use self::options::{HttpOptions, RequiredForReady, RuleInfo, RulesSource, DEFAULT_SSE_BUFFER};
pub use self::sessions::{Overview, MAX_PAGE, TOTAL_COUNT_HEADER};
use self::stats::HttpStats;
use crate::manager::SessionManager;

/// The address [`serve`] is meant for when nothing else is configured: loopback only.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9883);

/// The content type of `GET /metrics`: Prometheus text format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the handlers share (one per `configure` call, i.e. per worker).
pub(crate) struct State {
    manager: SessionManager,
    auth: auth::Auth,
    stats: Arc<HttpStats>,
    rules: Option<Arc<dyn RulesSource>>,
    required: Option<options::RequiredForReady>,
    sse_buffer: usize,
    /// Turns true when the server stops: event streams end then.
    closing: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Mounts every endpoint for `manager`, without credentials:
/// `App::new().configure(mqtt_sessions::http::configure(manager.clone()))`.
pub fn configure(manager: SessionManager) -> impl FnOnce(&mut web::ServiceConfig) {
    configure_with(manager, HttpOptions::new())
}

/// [`configure`] with `options` (credentials, open paths, rules source, event buffer; its
/// TLS files are for [`serve_with`], the application's own server decides on TLS here).
pub fn configure_with(
    manager: SessionManager,
    options: HttpOptions,
) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        let state = State {
            stats: HttpStats::of(&manager),
            manager,
            auth: options.auth,
            rules: options.rules,
            required: options.required.clone(),
            sse_buffer: options.sse_buffer,
            closing: options.closing.clone(),
        };
        let open = |path: &str| options.open_paths.contains(path);
        let resource = |path: &'static str| {
            let r = web::resource(path);
            if open(path) {
                r.app_data(Open)
            } else {
                r
            }
        };
        cfg.app_data(web::Data::new(state))
            .service(resource("/metrics").route(web::get().to(metrics)))
            .service(resource("/healthz").route(web::get().to(healthz)))
            .service(resource("/readyz").route(web::get().to(readyz)))
            .service(resource("/sessions").route(web::get().to(sessions::sessions)))
            .service(resource("/overview").route(web::get().to(sessions::overview)))
            .service(resource("/rules").route(web::get().to(sessions::rules)))
            .service(resource("/events").route(web::get().to(events::events)))
            .service(resource("/").route(web::get().to(page::index)))
            .service(web::resource("").route(web::get().to(page::to_index)))
            .service(resource("/assets/style.css").route(web::get().to(page::style)))
            .service(resource("/assets/app.js").route(web::get().to(page::app)));
    }
}

async fn metrics(_: Authorized, s: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((actix_web::http::header::CONTENT_TYPE, METRICS_CONTENT_TYPE))
        .body(s.manager.metrics_text())
}

async fn healthz(_: Authorized, s: web::Data<State>) -> HttpResponse {
    if s.manager.is_running() {
        HttpResponse::Ok()
            .content_type(ContentType::plaintext())
            .body("ok\n")
    } else {
        HttpResponse::ServiceUnavailable()
            .content_type(ContentType::plaintext())
            .body("shut down\n")
    }
}

async fn readyz(_: Authorized, s: web::Data<State>) -> HttpResponse {
    let r = match &s.required {
        Some(required) => s.manager.readiness_of(|name| required(name)),
        None => s.manager.readiness(),
    };
    if r.ready {
        HttpResponse::Ok().json(r)
    } else {
        HttpResponse::ServiceUnavailable().json(r)
    }
}

/// Serves the endpoints on `addr` until `shutdown` completes, then stops gracefully.
/// Installs no signal handlers (the caller decides when to stop).
pub async fn serve(
    manager: SessionManager,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    serve_listener(manager, listener, shutdown).await
}

/// [`serve`] on a listener already bound (bind `127.0.0.1:0` and read
/// `listener.local_addr()` to let the OS choose the port).
pub async fn serve_listener(
    manager: SessionManager,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    match serve_with(manager, listener, HttpOptions::new(), shutdown).await {
        Ok(()) => Ok(()),
        Err(ServeError::Io(e)) => Err(e),
        Err(ServeError::Options(e)) => Err(std::io::Error::other(e)),
    }
}

/// Why [`serve_with`] stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The options could not be applied (TLS files).
    #[error(transparent)]
    Options(#[from] HttpError),
    /// The server failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// [`serve_listener`] with `options`: TLS when configured, credentials, open paths, rules
/// source. Logs a warning when the listener is not on loopback and no credentials are
/// required.
pub async fn serve_with(
    manager: SessionManager,
    listener: TcpListener,
    options: HttpOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let addr = listener.local_addr()?;
    let tls = options.check_tls()?;
    if !addr.ip().is_loopback() && !options.requires_auth() {
        tracing::warn!(%addr, "the HTTP endpoints listen beyond loopback without authentication; anyone who can reach them can read every session's state");
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let (closing, closed) = tokio::sync::watch::channel(false);
    let options = HttpOptions {
        closing: Some(closed),
        ..options
    };
    let server = HttpServer::new(move || {
        App::new().configure(configure_with(manager.clone(), options.clone()))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5);
    let server = match tls {
        Some(config) => server.listen_rustls_0_23(listener, config)?,
        None => server.listen(listener)?,
    }
    .run();
    let handle = server.handle();
    tracing::info!(%addr, scheme, "serving /, /events, /metrics, /healthz, /readyz, /sessions");
    let mut server = std::pin::pin!(server);
    tokio::select! {
        res = &mut server => return res.map_err(ServeError::Io),
        () = shutdown => {}
    }
    // End the event streams first: a graceful stop waits for open responses.
    let _ = closing.send(true);
    // The server future carries out the stop command: poll both (awaiting the stop alone
    // would wait for a server nobody polls).
    let ((), res) = futures_util::future::join(handle.stop(true), server).await;
    res.map_err(ServeError::Io)
}
