//! The daemon's minimal endpoint set (`/healthz`, `/readyz`, `/sessions`) on actix-web; the full one (with `/metrics`) replaces this file.
//!
//! [`serve`] runs until its `shutdown` future resolves. `/readyz` answers 200 when every
//! session is ready and 503 with the sessions that are not otherwise; `/sessions` is a
//! JSON array with one object per session.

use std::future::Future;
use std::net::SocketAddr;
use std::time::SystemTime;

use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Serialize;

use crate::manager::SessionManager;

/// One session as `/sessions` shows it.
#[derive(Debug, Serialize)]
struct SessionView {
    name: String,
    state: &'static str,
    ready: bool,
    broker: Option<String>,
    client_id: String,
    last_error: Option<String>,
    connected_since: Option<f64>,
    uptime_seconds: Option<f64>,
    restarts: u32,
    #[serde(flatten)]
    metrics: crate::session::counters::SessionMetrics,
}

fn unix_seconds(t: SystemTime) -> Option<f64> {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs_f64())
}

fn views(manager: &SessionManager) -> Vec<SessionView> {
    manager
        .list_sessions()
        .iter()
        .filter_map(|name| manager.session(name).ok())
        .map(|h| {
            let st = h.status();
            SessionView {
                name: h.name().to_string(),
                state: st.state.as_str(),
                ready: st.ready,
                broker: st.broker.clone(),
                client_id: st.client_id.clone(),
                last_error: st.last_error.as_ref().map(ToString::to_string),
                connected_since: st.connected_since.and_then(unix_seconds),
                uptime_seconds: st
                    .connected_since
                    .and_then(|t| t.elapsed().ok())
                    .map(|d| d.as_secs_f64()),
                restarts: st.restarts,
                metrics: h.metrics(),
            }
        })
        .collect()
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok\n")
}

async fn readyz(manager: web::Data<SessionManager>) -> HttpResponse {
    let not_ready: Vec<String> = views(&manager)
        .into_iter()
        .filter(|v| !v.ready)
        .map(|v| v.name)
        .collect();
    if not_ready.is_empty() {
        HttpResponse::Ok().json(serde_json::json!({ "ready": true }))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({ "ready": false, "not_ready": not_ready }))
    }
}

async fn sessions(manager: web::Data<SessionManager>) -> HttpResponse {
    HttpResponse::Ok().json(views(&manager))
}

/// Serves the endpoints on `addr` until `shutdown` resolves.
pub async fn serve(
    manager: SessionManager,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(manager.clone()))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/sessions", web::get().to(sessions))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind(addr)?
    .run();
    tracing::info!(listen = %addr, "http endpoint started");
    let handle = server.handle();
    let mut server = std::pin::pin!(server);
    tokio::select! {
        r = &mut server => r,
        () = shutdown => {
            // The server future processes the stop command: poll both.
            let ((), r) = tokio::join!(handle.stop(true), server);
            r
        }
    }
}
