//! The runtime model against a real mosquitto: sessions run on the manager's own pool of
//! worker threads, not on the thread that created the manager.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use common::*;
use mqtt_sessions::SessionManager;

const T: Duration = Duration::from_secs(30);

fn this_thread() -> String {
    let t = std::thread::current();
    t.name()
        .map_or_else(|| format!("{:?}", t.id()), str::to_string)
}

#[actix_rt::test]
async fn with_two_workers_the_drivers_of_two_sessions_run_on_two_threads_neither_the_callers() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::builder().workers(2).build().unwrap();
    let a = m.add_session(fast_opts("a", &broker.url())).await.unwrap();
    let b = m.add_session(fast_opts("b", &broker.url())).await.unwrap();
    m.wait_for_all_sessions(T).await.unwrap();
    assert_ne!(a.worker(), b.worker(), "placed on the least loaded worker");
    let (ta, tb) = (a.driver_thread().unwrap(), b.driver_thread().unwrap());
    let here = this_thread();
    assert_ne!(ta, tb, "two sessions, two threads");
    assert_ne!(ta, here, "the caller's thread runs no session");
    assert_ne!(tb, here, "the caller's thread runs no session");
    // A third session goes to the worker with the fewest sessions: both have one, so the
    // first; removing a session frees its place.
    let c = m.add_session(fast_opts("c", &broker.url())).await.unwrap();
    assert_eq!(c.worker(), 0);
    m.remove_session("b").await.unwrap();
    let d = m.add_session(fast_opts("d", &broker.url())).await.unwrap();
    assert_eq!(d.worker(), 1, "b's worker is the least loaded again");
    m.wait_for_all_sessions(T).await.unwrap();
    m.shutdown().await;
}

/// An actix-web handler that builds a manager in the web worker's thread, connects one
/// session and answers `{handler thread} {driver thread}`.
async fn make_manager(url: web::Data<String>) -> HttpResponse {
    let m = SessionManager::builder().workers(1).build().unwrap();
    let h = m.add_session(fast_opts("web", &url)).await.unwrap();
    m.wait_for_session("web", T).await.unwrap();
    let answer = format!("{} {}", this_thread(), h.driver_thread().unwrap());
    m.shutdown().await;
    HttpResponse::Ok().body(answer)
}

#[actix_rt::test]
async fn a_manager_created_inside_an_actix_web_worker_runs_its_sessions_on_its_own_pool() {
    let broker = Mosquitto::start();
    let url = broker.url();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(url.clone()))
            .route("/", web::get().to(make_manager))
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    let res = http_get(addr, "/").await;
    assert_eq!(res.status, 200, "{}", res.body);
    let (web_thread, driver_thread) = res.body.split_once(' ').unwrap();
    assert_ne!(
        web_thread, driver_thread,
        "the session's connection runs on the manager's worker, not on the web worker"
    );
    handle.stop(true).await;
}
