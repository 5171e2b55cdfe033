//! MQTT 5 request/response between two sessions of one manager: a "service" session
//! answers requests on `svc/clock` with `SessionManager::respond`, a "client" session
//! asks with `SessionManager::request` (response topic and correlation data are handled
//! for you), including many requests at once and a request nobody answers (timeout).
//! Also shows message properties: a user property and a content type.
//!
//! ```text
//! cargo run --example request_response -- mqtt://127.0.0.1:1883
//! ```
//!
//! The broker must speak MQTT 5 (mosquitto 2 does).

#![expect(
    clippy::print_stdout,
    reason = "an example shows its results on stdout"
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mqtt_sessions::{Error, Message, Protocol, Publish, QoS, SessionManager, SessionOptions};

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "mqtt://127.0.0.1:1883".to_string());
    let manager = SessionManager::new()?;
    for name in ["service", "client"] {
        let mut opts = SessionOptions::new(name, url.as_str());
        opts.protocol = Protocol::V5;
        manager.add_session(opts).await?;
    }
    manager
        .wait_for_all_sessions(Duration::from_secs(10))
        .await?;

    // The service: answers every request on svc/clock with the time, as JSON.
    let responder = manager.clone();
    let _service = manager
        .handle_async_to("service", "svc/clock", move |request: Message| {
            let m = responder.clone();
            async move {
                let who = request.user_property("caller").next().unwrap_or("someone");
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default();
                let body = format!(r#"{{"to":"{who}","unix_time":{now}}}"#);
                if let Err(e) = m.respond("service", &request, body).await {
                    println!("cannot respond: {e}");
                }
            }
        })
        .await?;

    // One request with properties of our own.
    let answer = manager
        .request_with(
            "client",
            Publish::new("svc/clock", "what time is it?")
                .qos(QoS::AtLeastOnce)
                .user_property("caller", "example")
                .content_type("text/plain"),
            Duration::from_secs(5),
        )
        .await?;
    println!("answer on {}: {}", answer.topic, answer.payload_str()?);

    // Many at once: each answer is matched to its request by correlation data.
    let many =
        (0..20).map(|_| manager.request("client", "svc/clock", "now?", Duration::from_secs(5)));
    let answers = futures_util::future::join_all(many).await;
    let ok = answers.iter().filter(|a| a.is_ok()).count();
    println!("{ok} of {} concurrent requests answered", answers.len());

    // Nobody serves svc/void: the request times out.
    match manager
        .request("client", "svc/void", "hello?", Duration::from_millis(500))
        .await
    {
        Err(Error::RequestTimeout { timeout, .. }) => {
            println!("no answer on svc/void within {timeout:?}")
        }
        other => println!("unexpected: {other:?}"),
    }

    manager.shutdown().await;
    Ok(())
}
