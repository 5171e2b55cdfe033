//! The status page (`GET /`) in a real browser: headless Chromium over WebDriver, on a
//! running daemon with real mosquitto brokers. The page shows every session, follows a
//! broker going down and coming back without a reload, filters, and logs no errors.
//!
//! `UPDATE_SCREENSHOT=1 cargo test --test status_page` also writes `docs/status-page.png`.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-sessions");
const T: Duration = Duration::from_secs(20);

/// name → state of the rows the page shows.
fn rows(browser: &Browser) -> BTreeMap<String, String> {
    let v = browser.execute(
        "return [...document.querySelectorAll('#sessions tbody tr')].map(r => [r.dataset.name, r.dataset.state]);",
        json!([]),
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p[0].as_str().unwrap().to_string(),
                p[1].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The text of one cell (`td.<class>`) of a session's row.
fn cell(browser: &Browser, session: &str, class: &str) -> String {
    browser
        .execute(
            "for (const r of document.querySelectorAll('#sessions tbody tr')) { if (r.dataset.name === arguments[0]) return r.querySelector('td.' + arguments[1]).textContent; } return null;",
            json!([session, class]),
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn wait_rows(
    browser: &Browser,
    what: &str,
    timeout: Duration,
    want: impl Fn(&BTreeMap<String, String>) -> bool,
) {
    let mut last = BTreeMap::new();
    let ok = poll_until(timeout, || {
        last = rows(browser);
        want(&last)
    });
    assert!(ok, "{what}: the page shows {last:?} after {timeout:?}");
}

/// Console entries at level SEVERE, and errors the page caught itself.
fn page_errors(browser: &Browser) -> Vec<String> {
    let mut errors: Vec<String> = browser
        .console()
        .into_iter()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect();
    let caught = browser.execute(
        "return window.statusPageErrors || ['app.js did not run'];",
        json!([]),
    );
    errors.extend(
        caught
            .as_array()
            .unwrap()
            .iter()
            .map(|v: &Value| v.as_str().unwrap_or_default().to_string()),
    );
    errors
}

#[test]
fn the_status_page_follows_sessions_live_and_filters_them() {
    let plant = Mosquitto::start();
    let cloud = Mosquitto::start();
    let config = format!(
        r#"
shutdown_timeout = "2s"
[http]
listen = "127.0.0.1:{{http}}"

[[sessions]]
name = "plant-line-1"
brokers = ["{plant}"]
reconnect = {{ initial_delay = "100ms", max_delay = "300ms" }}
[[sessions.subscriptions]]
filter = "sensors/#"

[[sessions]]
name = "plant-line-2"
brokers = ["{plant}"]
reconnect = {{ initial_delay = "100ms", max_delay = "300ms" }}

[[sessions]]
name = "cloud-uplink"
brokers = ["{cloud}"]
reconnect = {{ initial_delay = "100ms", max_delay = "300ms" }}

[[forward]]
name = "sensors-to-cloud"
from = "plant-line-1"
filter = "sensors/#"
to = "cloud-uplink"
topic = "plant-1/{{topic}}"
"#,
        plant = plant.url(),
        cloud = cloud.url(),
    );
    let daemon = DaemonProcess::start(BIN, &config);
    daemon.wait_ready(T);

    let started = Instant::now();
    let browser = Browser::start();
    browser.goto(&format!("{}/", daemon.base_url()));
    let all_connected =
        |r: &BTreeMap<String, String>| r.len() == 3 && r.values().all(|s| s == "connected");
    wait_rows(&browser, "every session, connected", T, all_connected);
    assert!(
        browser.execute("return !document.querySelector('#rules-panel').hidden && document.querySelector('#rules tbody').textContent.includes('sensors-to-cloud');", json!([])) == true,
        "the forwarding rule is listed"
    );
    eprintln!("page up with every session after {:?}", started.elapsed());

    // Some traffic for the rates, the chart and the rule's counters.
    publish_many(plant.port(), "sensors/temperature", 50, 1);

    // The cloud broker dies: its session's row turns to reconnecting, without a reload.
    let marker = browser.execute("window.__noReload = 1; return 1;", json!([]));
    assert_eq!(marker, 1);
    let killed = Instant::now();
    cloud.kill9();
    wait_rows(
        &browser,
        "cloud-uplink reconnecting",
        Duration::from_secs(5),
        |r| r.get("cloud-uplink").map(String::as_str) == Some("reconnecting"),
    );
    eprintln!(
        "row turned to reconnecting {:?} after the kill",
        killed.elapsed()
    );
    let ok = poll_until(Duration::from_secs(5), || {
        !cell(&browser, "cloud-uplink", "error").is_empty()
    });
    assert!(ok, "the last error is shown");
    assert_eq!(
        browser.execute("return window.__noReload;", json!([])),
        1,
        "the page was not reloaded"
    );

    // The screenshot in the README shows a session down.
    if std::env::var_os("UPDATE_SCREENSHOT").is_some() {
        // Let the chart gather a few samples of steady traffic first.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let traffic = {
            let (stop, port) = (std::sync::Arc::clone(&stop), plant.port());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    publish_many(port, "sensors/pressure", 20, 1);
                }
            })
        };
        poll_until(Duration::from_secs(12), || {
            browser.execute("return document.querySelectorAll('#chart polyline')[0].getAttribute('points').split(' ').length;", json!([])).as_u64().unwrap_or(0) >= 5
        });
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        traffic.join().unwrap();
        let png = browser.screenshot();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        write_file(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/status-page.png"),
            &png,
        );
    }

    // It comes back.
    cloud.restart();
    wait_rows(&browser, "cloud-uplink connected again", T, all_connected);

    // The filter box narrows the table (the server filters; the page asks again).
    let filter = browser.find("#filter");
    browser.type_into(&filter, "plant");
    wait_rows(&browser, "filter 'plant'", T, |r| {
        r.keys().map(String::as_str).collect::<Vec<_>>() == ["plant-line-1", "plant-line-2"]
    });
    browser.clear(&filter);
    browser.type_into(&filter, "uplink");
    wait_rows(&browser, "filter 'uplink'", T, |r| {
        r.keys().map(String::as_str).collect::<Vec<_>>() == ["cloud-uplink"]
    });

    let errors = page_errors(&browser);
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
}
