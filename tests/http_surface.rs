//! The HTTP surface beyond `/metrics`: the event stream (`/events`: order, filters, a slow
//! client cut off and counted), credentials and TLS (checked with `curl`), the endpoints
//! under a path prefix, and `/sessions` filtered, sorted and paged on the server.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::{web, App, HttpServer};
use common::*;
use mqtt_sessions::http::{self, HttpOptions};
use mqtt_sessions::{Secret, SessionManager};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const T: Duration = Duration::from_secs(15);

/// The endpoints with `options`, on an OS-chosen loopback port; stop when dropped.
struct Server {
    addr: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn serve(manager: &SessionManager, options: HttpOptions) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let m = manager.clone();
    actix_rt::spawn(async move {
        let stop = async move {
            let _ = rx.await;
        };
        http::serve_with(m, listener, options, stop).await.unwrap();
    });
    Server { addr, _stop: tx }
}

/// An open `GET /events` response, read line by line.
struct Sse {
    lines: tokio::io::Lines<BufReader<tokio::net::TcpStream>>,
}

impl Sse {
    /// Opens `path` and waits for the stream's first chunk (then the server listens to
    /// the manager's events).
    async fn open(addr: SocketAddr, path: &str) -> Sse {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut lines = BufReader::new(s).lines();
        let status = lines.next_line().await.unwrap().unwrap();
        assert!(status.contains(" 200 "), "{path}: {status}");
        let mut sse = Sse { lines };
        let opened = tokio::time::timeout(T, async {
            while let Some(l) = sse.lines.next_line().await.unwrap() {
                if l.contains("retry: 2000") {
                    return;
                }
            }
        })
        .await;
        assert!(opened.is_ok(), "{path}: the stream did not open");
        sse
    }

    /// The next event's JSON (chunk-size lines and comments skipped).
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(T, async {
            loop {
                let l = self.lines.next_line().await.unwrap().expect("stream ended");
                if let Some(data) = l.strip_prefix("data: ") {
                    return data.to_string();
                }
            }
        })
        .await
        .expect("no event in time");
        serde_json::from_str(&line).unwrap()
    }

    /// Events until `until` matches one (included).
    async fn until(&mut self, until: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut got = Vec::new();
        loop {
            let e = self.next().await;
            let done = until(&e);
            got.push(e);
            if done {
                return got;
            }
        }
    }
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

/// The position of the first event of `kind`; panics with the list if none.
fn position(events: &[Value], kind: &str) -> usize {
    let k = kinds(events);
    k.iter()
        .position(|x| x == kind)
        .unwrap_or_else(|| panic!("no {kind} in {k:?}"))
}

#[actix_rt::test]
async fn events_stream_in_order_and_the_session_and_kind_filters_apply() {
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let server = serve(&m, HttpOptions::new());
    let mut only_a = Sse::open(server.addr, "/events?session=alpha").await;
    let mut ready = Sse::open(server.addr, "/events?kind=session_added,session_ready").await;
    let mut ready_repeated =
        Sse::open(server.addr, "/events?kind=session_added&kind=session_ready").await;

    m.add_session(fast_opts("alpha", &broker.url()))
        .await
        .unwrap();
    m.add_session(fast_opts("beta", &broker.url()))
        .await
        .unwrap();

    let a = only_a.until(|e| e["kind"] == "session_ready").await;
    assert!(a.iter().all(|e| e["session"] == "alpha"), "{a:?}");
    let order = [
        "session_added",
        "session_connecting",
        "session_connected",
        "session_ready",
    ];
    let at: Vec<usize> = order.iter().map(|k| position(&a, k)).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "order {:?}", kinds(&a));
    let connected = &a[position(&a, "session_connected")];
    assert_eq!(connected["data"]["broker"], broker.url());
    assert!(connected["time"].as_f64().unwrap() > 1.0e9);

    for stream in [&mut ready, &mut ready_repeated] {
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let e = stream.next().await;
            seen.push(format!(
                "{}/{}",
                e["session"].as_str().unwrap(),
                e["kind"].as_str().unwrap()
            ));
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                "alpha/session_added",
                "alpha/session_ready",
                "beta/session_added",
                "beta/session_ready"
            ]
        );
    }

    let bad = http_get(server.addr, "/events?kind=nonsense").await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    m.shutdown().await;
}

#[actix_rt::test]
async fn a_client_that_does_not_read_is_cut_off_and_counted() {
    let m = SessionManager::new().unwrap();
    let server = serve(&m, HttpOptions::new().sse_buffer(8));
    let metric = |e: &Exposition, name: &str| e.value(name, &[]).unwrap_or(-1.0);

    // A client with a tiny receive window that never reads what it is sent.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(1024).unwrap();
    let mut slow = socket.connect(server.addr).await.unwrap();
    slow.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let ok = poll_until_async(T, || async {
        let e = Exposition::parse(&http_get(server.addr, "/metrics").await.body);
        metric(&e, "mqtt_sessions_http_sse_clients") == 1.0
    })
    .await;
    assert!(ok, "the client is counted as connected");

    // A flood of events: sessions reconnecting fast to a port where nobody listens.
    let closed = free_port();
    for i in 0..40 {
        let mut o = fast_opts(&format!("s{i}"), &format!("mqtt://127.0.0.1:{closed}"));
        o.reconnect.initial_delay = Duration::from_millis(5);
        o.reconnect.max_delay = Duration::from_millis(20);
        m.add_session(o).await.unwrap();
    }
    let last = std::cell::RefCell::new(String::new());
    let ok = poll_until_async(T, || async {
        let body = http_get(server.addr, "/metrics").await.body;
        let e = Exposition::parse(&body);
        *last.borrow_mut() = body;
        metric(&e, "mqtt_sessions_http_sse_clients_dropped_total") == 1.0
            && metric(&e, "mqtt_sessions_http_sse_clients") == 0.0
    })
    .await;
    let last = last.into_inner();
    assert!(
        ok,
        "the slow client was not cut off:\n{}",
        last.lines()
            .filter(|l| l.contains("http_"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The exposition of the new families is valid.
    let out = promtool_check_metrics(&last);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(slow);
    m.shutdown().await;
}

/// `curl` against the TLS endpoint: the status code, and the body.
async fn curl(ca: &std::path::Path, url: &str, args: &[&str]) -> (u16, String) {
    let out = tokio::process::Command::new(require_binary("curl"))
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "curl {url} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

#[actix_rt::test]
async fn tls_with_basic_auth_and_a_bearer_token_guards_everything_but_open_paths() {
    let pki = TestPki::new("http");
    let files = pki.server("http-server", &["localhost", "127.0.0.1"]);
    let hash = bcrypt_hash("correct horse");
    let m = SessionManager::new().unwrap();
    let options = HttpOptions::new()
        .tls(&files.cert, &files.key)
        .basic_auth_user("prometheus", &hash)
        .unwrap()
        .bearer_token(Secret::new("s3cret-token"))
        .open_path("/healthz")
        .unwrap();
    let server = serve(&m, options);
    let base = format!("https://localhost:{}", server.addr.port());
    let ca = pki.ca_file.clone();
    let ok = poll_until_async(T, || async {
        tokio::net::TcpStream::connect(server.addr).await.is_ok()
    })
    .await;
    assert!(ok);

    let metrics = format!("{base}/metrics");
    assert_eq!(curl(&ca, &metrics, &[]).await.0, 401, "no credentials");
    assert_eq!(
        curl(&ca, &metrics, &["-u", "prometheus:wrong"]).await.0,
        401,
        "wrong password"
    );
    assert_eq!(
        curl(&ca, &metrics, &["-u", "grafana:correct horse"])
            .await
            .0,
        401,
        "unknown user"
    );
    assert_eq!(
        curl(&ca, &metrics, &["-H", "Authorization: Bearer nope"])
            .await
            .0,
        401,
        "wrong token"
    );
    let (code, body) = curl(&ca, &metrics, &["-u", "prometheus:correct horse"]).await;
    assert_eq!(code, 200, "right password");
    assert!(body.contains("mqtt_sessions_build_info"), "{body}");
    let (code, _) = curl(&ca, &metrics, &["-H", "Authorization: Bearer s3cret-token"]).await;
    assert_eq!(code, 200, "right token");
    for path in [
        "/",
        "/sessions",
        "/events",
        "/readyz",
        "/assets/app.js",
        "/rules",
    ] {
        assert_eq!(
            curl(&ca, &format!("{base}{path}"), &[]).await.0,
            401,
            "{path}"
        );
    }
    assert_eq!(
        curl(&ca, &format!("{base}/healthz"), &[]).await.0,
        200,
        "open path"
    );
    let (code, body) = curl(&ca, &metrics, &["-u", "prometheus:correct horse"]).await;
    assert_eq!(code, 200);
    let e = Exposition::parse(&body);
    assert!(
        e.value("mqtt_sessions_http_auth_failures_total", &[])
            .unwrap()
            >= 10.0
    );
    // A 401 says how to authenticate.
    let head = tokio::process::Command::new(require_binary("curl"))
        .args(["-sS", "-D", "-", "-o", "/dev/null", "--cacert"])
        .arg(&ca)
        .arg(&metrics)
        .output()
        .await
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
    assert!(
        head.contains("www-authenticate: basic realm=\"mqtt-sessions\""),
        "{head}"
    );
    m.shutdown().await;
}

fn bcrypt_hash(password: &str) -> String {
    // The crate's dependency, at the lowest cost to keep the test fast.
    bcrypt::hash(password, 4).unwrap()
}

#[actix_rt::test]
async fn the_endpoints_work_under_a_path_prefix_and_sessions_page_on_the_server() {
    let m = SessionManager::new().unwrap();
    let closed = free_port();
    for name in ["edge-3", "edge-1", "cloud", "edge-2", "edge-4"] {
        m.add_session(fast_opts(name, &format!("mqtt://127.0.0.1:{closed}")))
            .await
            .unwrap();
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let app = m.clone();
    let server = HttpServer::new(move || {
        App::new().service(web::scope("/ops").configure(http::configure(app.clone())))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    actix_rt::spawn(server);

    let page = http_get(addr, "/ops/").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("src=\"assets/app.js\""), "relative URLs");
    assert!(page.headers["content-security-policy"].contains("default-src 'none'"));
    let redirect = http_get(addr, "/ops").await;
    assert_eq!(redirect.status, 308);
    assert_eq!(redirect.headers["location"], "/ops/");
    for (path, kind) in [
        ("/ops/assets/app.js", "javascript"),
        ("/ops/assets/style.css", "css"),
    ] {
        let r = http_get(addr, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.headers["content-type"].contains(kind), "{path}");
    }
    assert_eq!(
        http_get(addr, "/ops/rules").await.json(),
        serde_json::json!([])
    );
    assert_eq!(http_get(addr, "/ops/overview").await.json()["sessions"], 5);

    let names = |r: &HttpResponse| -> Vec<String> {
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    let all = http_get(addr, "/ops/sessions").await;
    assert_eq!(
        names(&all),
        ["cloud", "edge-1", "edge-2", "edge-3", "edge-4"]
    );
    let page = http_get(addr, "/ops/sessions?offset=1&limit=2").await;
    assert_eq!(names(&page), ["edge-1", "edge-2"]);
    assert_eq!(page.headers["x-total-count"], "5");
    let page = http_get(addr, "/ops/sessions?q=EDGE&sort=name&order=desc&limit=3").await;
    assert_eq!(names(&page), ["edge-4", "edge-3", "edge-2"]);
    assert_eq!(page.headers["x-total-count"], "4");
    let ok = poll_until_async(T, || async {
        http_get(addr, "/ops/sessions?state=reconnecting")
            .await
            .headers["x-total-count"]
            == "5"
    })
    .await;
    assert!(ok, "every session reconnecting");
    let none = http_get(addr, "/ops/sessions?state=connected,closed").await;
    assert_eq!(none.headers["x-total-count"], "0");
    let row = &http_get(addr, "/ops/sessions?q=cloud").await.json()[0];
    assert!(
        row["state_since_seconds"].as_f64().unwrap() > 1.0e9,
        "{row}"
    );
    assert_eq!(row["last_error"]["kind"], "io", "{row}");
    for bad in ["state=sleeping", "sort=colour", "order=up", "page=2"] {
        let r = http_get(addr, &format!("/ops/sessions?{bad}")).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    handle.stop(true).await;
    m.shutdown().await;
}
