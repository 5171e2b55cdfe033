//! Embedding: an actix-web application with its own routes, the mqtt-sessions endpoints
//! (`/metrics`, `/healthz`, `/readyz`, `/sessions`, `/events` and the status page `/`)
//! mounted on the same `App` (`web::scope("/ops").configure(..)` would put them under
//! `/ops/`), one of the application's own metrics in the manager's registry, and a
//! session it publishes through.
//!
//! Run against a broker (default `mqtt://127.0.0.1:1883`), then try the endpoints:
//!
//! ```text
//! cargo run --example actix_web_embed -- mqtt://127.0.0.1:1883
//! curl http://127.0.0.1:8080/publish/hello   # the app's own route: publishes "hello"
//! curl http://127.0.0.1:8080/metrics         # mqtt_sessions_* and app_publishes_total
//! curl http://127.0.0.1:8080/readyz
//! curl http://127.0.0.1:8080/sessions
//! curl -N http://127.0.0.1:8080/events       # the manager's events, live
//! # and http://127.0.0.1:8080/ in a browser: the status page
//! ```
//!
//! The second argument (or `HTTP_ADDR`) changes the listen address (default
//! `127.0.0.1:8080`). Ctrl-C stops the server, then the sessions.

use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use mqtt_sessions::Publish;
use mqtt_sessions::{QoS, SessionManager, SessionOptions};
use prometheus::IntCounter;

/// What the application's own handlers share.
#[derive(Clone)]
struct AppState {
    manager: SessionManager,
    publishes: IntCounter,
}

async fn index() -> HttpResponse {
    HttpResponse::Ok().body("routes: /publish/{text}, /metrics, /healthz, /readyz, /sessions\n")
}

async fn publish(state: web::Data<AppState>, text: web::Path<String>) -> HttpResponse {
    match state
        .manager
        .publish(
            "app",
            Publish::new("example/echo", text.into_inner()).qos(QoS::AtLeastOnce),
        )
        .await
    {
        Ok(()) => {
            state.publishes.inc();
            HttpResponse::Ok().body("published\n")
        }
        Err(err) => HttpResponse::ServiceUnavailable().body(format!("{err}\n")),
    }
}

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .or_else(|| std::env::var("MQTT_URL").ok())
        .unwrap_or_else(|| "mqtt://127.0.0.1:1883".to_string());
    let addr = args
        .next()
        .or_else(|| std::env::var("HTTP_ADDR").ok())
        .unwrap_or_else(|| "127.0.0.1:8080".to_string());

    // The application's registry holds its own metrics and the manager's.
    let registry = prometheus::Registry::new();
    let publishes = IntCounter::new(
        "app_publishes_total",
        "Messages published through /publish.",
    )?;
    registry.register(Box::new(publishes.clone()))?;
    let manager = SessionManager::builder().registry(registry).build()?;

    let session = manager
        .add_session(SessionOptions::new("app", url.as_str()))
        .await?;
    session.subscribe("example/#", QoS::AtLeastOnce).await?;
    if let Err(err) = manager
        .wait_for_session("app", Duration::from_secs(10))
        .await
    {
        tracing::warn!(error = %err, "session not ready yet; serving anyway (see /readyz)");
    }

    let state = AppState {
        manager: manager.clone(),
        publishes,
    };
    tracing::info!(%addr, "listening");
    HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .route("/", web::get().to(index))
            .route("/publish/{text}", web::get().to(publish))
            .configure(mqtt_sessions::http::configure(state.manager.clone()))
    })
    .workers(1)
    .bind(addr)?
    .run()
    .await?;

    manager.shutdown().await;
    Ok(())
}
