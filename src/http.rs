//! HTTP endpoints over a [`SessionManager`] (feature `http`, actix-web 4):
//!
//! | route | answer |
//! |---|---|
//! | `GET /metrics` | the manager's registry in the Prometheus text format |
//! | `GET /healthz` | `200 ok` while the manager runs, `503` after shutdown |
//! | `GET /readyz` | `200` when every session is ready, else `503`; JSON [`Readiness`] naming those that are not, with state and last error |
//! | `GET /sessions` | JSON array of [`SessionInfo`]: state, broker, client id, subscriptions, counters, rates, last error (never a password) |
//!
//! Mount them on an application's own `App` with [`configure`], or run them alone with
//! [`serve`] / [`serve_listener`] (the daemon does; it listens on loopback,
//! [`DEFAULT_ADDR`], unless told otherwise).
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

use actix_web::http::header::ContentType;
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::manager::SessionManager;

/// The address [`serve`] is meant for when nothing else is configured: loopback only.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9883);

/// The content type of `GET /metrics`: Prometheus text format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Mounts `/metrics`, `/healthz`, `/readyz` and `/sessions` for `manager`:
/// `App::new().configure(mqtt_sessions::http::configure(manager.clone()))`.
pub fn configure(manager: SessionManager) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(web::Data::new(manager))
            .route("/metrics", web::get().to(metrics))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/sessions", web::get().to(sessions));
    }
}

async fn metrics(m: web::Data<SessionManager>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((actix_web::http::header::CONTENT_TYPE, METRICS_CONTENT_TYPE))
        .body(m.metrics_text())
}

async fn healthz(m: web::Data<SessionManager>) -> HttpResponse {
    if m.is_running() {
        HttpResponse::Ok()
            .content_type(ContentType::plaintext())
            .body("ok\n")
    } else {
        HttpResponse::ServiceUnavailable()
            .content_type(ContentType::plaintext())
            .body("shut down\n")
    }
}

async fn readyz(m: web::Data<SessionManager>) -> HttpResponse {
    let r = m.readiness();
    if r.ready {
        HttpResponse::Ok().json(r)
    } else {
        HttpResponse::ServiceUnavailable().json(r)
    }
}

async fn sessions(m: web::Data<SessionManager>) -> HttpResponse {
    HttpResponse::Ok().json(m.session_infos())
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
    let addr = listener.local_addr()?;
    let server = HttpServer::new(move || App::new().configure(configure(manager.clone())))
        .workers(1)
        .disable_signals()
        .shutdown_timeout(5)
        .listen(listener)?
        .run();
    let handle = server.handle();
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz, /sessions");
    let mut server = std::pin::pin!(server);
    tokio::select! {
        res = &mut server => return res,
        () = shutdown => {}
    }
    handle.stop(true).await;
    server.await
}
