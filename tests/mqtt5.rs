//! MQTT 5 sessions against a real mosquitto: properties, request/response, reason codes,
//! session expiry, server-assigned client ids, subscribe options, and MQTT 3.1.1 and
//! MQTT 5 sessions side by side in one manager.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use mqtt_sessions::{
    Error, Message, Protocol, Publish, QoS, ReasonCode, SessionManager, SessionOptions,
};

const T: Duration = Duration::from_secs(20);

fn v5_opts(name: &str, url: &str) -> SessionOptions {
    let mut o = fast_opts(name, url);
    o.protocol = Protocol::V5;
    o
}

async fn recv(l: &mqtt_sessions::Listener) -> Message {
    tokio::time::timeout(T, l.recv())
        .await
        .expect("timed out waiting for a message")
        .expect("route ended")
}

/// A broker whose dynamic security plugin lets anonymous clients subscribe to and
/// publish on `allowed/#` only.
fn broker_allowing_only(dir: &std::path::Path) -> Mosquitto {
    let config = dir.join("dynsec.json");
    std::fs::write(
        &config,
        r#"{"defaultACLAccess":{"publishClientSend":false,"publishClientReceive":true,"subscribe":false,"unsubscribe":true},
 "clients":[],
 "groups":[{"groupname":"anon","roles":[{"rolename":"allowed"}],"clients":[]}],
 "roles":[{"rolename":"allowed","acls":[
   {"acltype":"subscribePattern","topic":"allowed/#","allow":true},
   {"acltype":"publishClientSend","topic":"allowed/#","allow":true}]}],
 "anonymousGroup":"anon"}"#,
    )
    .unwrap();
    Mosquitto::start_with(MosquittoConfig::new().extra(&format!(
        "plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\nplugin_opt_config_file {}",
        config.display()
    )))
}

#[actix_rt::test]
async fn user_properties_content_type_and_correlation_data_round_trip_between_two_mqtt5_sessions() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    m.add_session(v5_opts("a", &broker.url())).await.unwrap();
    m.add_session(v5_opts("b", &broker.url())).await.unwrap();
    m.wait_for_all_sessions(T).await.unwrap();
    let l = m.listen_to("b", "rt/#").await.unwrap();
    m.publish(
        "a",
        Publish::new("rt/1", "hello")
            .qos(QoS::AtLeastOnce)
            .user_property("k", "v")
            .user_property("k", "w")
            .user_property("origin", "a")
            .content_type("text/plain")
            .payload_is_utf8(true)
            .response_topic("rt/reply")
            .correlation_data(&b"corr-1"[..])
            .message_expiry(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let msg = recv(&l).await;
    assert_eq!(msg.payload_str().unwrap(), "hello");
    assert_eq!(msg.user_property("k").collect::<Vec<_>>(), vec!["v", "w"]);
    assert_eq!(msg.user_property("origin").collect::<Vec<_>>(), vec!["a"]);
    assert_eq!(msg.content_type(), Some("text/plain"));
    assert_eq!(msg.response_topic(), Some("rt/reply"));
    assert_eq!(msg.correlation_data().map(|c| &c[..]), Some(&b"corr-1"[..]));
    let props = msg.properties.as_deref().unwrap();
    assert_eq!(props.payload_format_indicator, Some(1));
    assert!(props
        .message_expiry_interval
        .is_some_and(|s| s <= 60 && s > 0));
    m.shutdown().await;
}

#[actix_rt::test]
async fn a_request_gets_the_response_a_handler_on_another_session_sends() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    m.add_session(v5_opts("srv", &broker.url())).await.unwrap();
    m.add_session(v5_opts("cli", &broker.url())).await.unwrap();
    m.wait_for_all_sessions(T).await.unwrap();
    let responder = m.clone();
    let _route = m
        .handle_async_to("srv", "svc/echo", move |req: Message| {
            let m = responder.clone();
            async move {
                let body = format!("echo {}", req.payload_str().unwrap());
                m.respond("srv", &req, body).await.unwrap();
            }
        })
        .await
        .unwrap();
    let answer = m.request("cli", "svc/echo", "ping", T).await.unwrap();
    assert_eq!(answer.payload_str().unwrap(), "echo ping");
    assert_eq!(&*answer.session, "cli");
    m.shutdown().await;
}

#[actix_rt::test]
async fn a_request_nobody_answers_times_out() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    m.add_session(v5_opts("cli", &broker.url())).await.unwrap();
    m.wait_for_session("cli", T).await.unwrap();
    let timeout = Duration::from_millis(700);
    let err = m
        .request("cli", "svc/nobody", "anyone?", timeout)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::RequestTimeout { session, topic, timeout: t }
            if session == "cli" && topic == "svc/nobody" && *t == timeout),
        "{err:?}"
    );
    m.shutdown().await;
}

#[actix_rt::test]
async fn fifty_concurrent_requests_each_get_their_own_response() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    m.add_session(v5_opts("srv", &broker.url())).await.unwrap();
    m.add_session(v5_opts("cli", &broker.url())).await.unwrap();
    m.wait_for_all_sessions(T).await.unwrap();
    let responder = m.clone();
    let _route = m
        .handle_async_to("srv", "svc/square", move |req: Message| {
            let m = responder.clone();
            async move {
                let n: u64 = req.payload_str().unwrap().parse().unwrap();
                m.respond("srv", &req, (n * n).to_string()).await.unwrap();
            }
        })
        .await
        .unwrap();
    let requests = (0..50u64).map(|i| {
        let m = m.clone();
        async move { (i, m.request("cli", "svc/square", i.to_string(), T).await) }
    });
    for (i, answer) in futures_util::future::join_all(requests).await {
        let answer = answer.unwrap();
        assert_eq!(answer.payload_str().unwrap(), (i * i).to_string());
    }
    m.shutdown().await;
}

#[actix_rt::test]
async fn request_and_respond_need_mqtt5_sessions() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    m.add_session(fast_opts("old", &broker.url()))
        .await
        .unwrap();
    let err = m.request("old", "svc/x", "x", T).await.unwrap_err();
    assert!(
        matches!(&err, Error::Mqtt5Required { session, .. } if session == "old"),
        "{err:?}"
    );
    m.shutdown().await;
}

#[actix_rt::test]
async fn a_subscription_the_broker_denies_is_refused_with_its_reason_code() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_allowing_only(dir.path());
    let m = SessionManager::new().unwrap();
    m.add_session(v5_opts("s", &broker.url())).await.unwrap();
    m.wait_for_session("s", T).await.unwrap();
    let err = m.listen_to("s", "denied/x").await.unwrap_err();
    assert!(
        matches!(&err, Error::SubscribeRefused { session, filter, reason }
            if session == "s" && filter == "denied/x" && *reason == ReasonCode::NOT_AUTHORIZED),
        "{err:?}"
    );
    let allowed = m.listen_to("s", "allowed/x").await.unwrap();
    m.publish_to("s", "allowed/x", "fine", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(recv(&allowed).await.payload_str().unwrap(), "fine");
    m.shutdown().await;
}

#[actix_rt::test]
async fn a_publish_the_broker_denies_is_refused_with_its_reason_code() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let broker = broker_allowing_only(dir.path());
    let m = SessionManager::new().unwrap();
    m.add_session(v5_opts("s", &broker.url())).await.unwrap();
    m.wait_for_session("s", T).await.unwrap();
    let err = m
        .publish_to("s", "denied/p", "no", QoS::AtLeastOnce)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::PublishRefused { topic, reason, .. }
            if topic == "denied/p" && reason.is_failure()),
        "{err:?}"
    );
    // The session goes on: the next publish is accepted.
    m.publish_to("s", "allowed/p", "yes", QoS::AtLeastOnce)
        .await
        .unwrap();
    m.shutdown().await;
}

#[actix_rt::test]
async fn a_session_with_an_expiry_interval_gets_the_qos1_messages_published_while_it_was_away() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    // A global route: it covers the session again when it is added again.
    let l = m.listen("away/#").await.unwrap();
    let opts = {
        let mut o = v5_opts("keeper", &broker.url()).client_id("keeper-id");
        o.connect.clean_session = false;
        o.connect.session_expiry = Some(Duration::from_secs(120));
        o
    };
    m.add_session(opts.clone()).await.unwrap();
    m.wait_for_session("keeper", T).await.unwrap();
    m.remove_session("keeper").await.unwrap();
    assert!(
        broker
            .wait_for_log_async("Client keeper-id disconnected", T)
            .await,
        "{}",
        broker.log()
    );
    for i in 1..=3 {
        publish(
            broker.port(),
            &format!("away/{i}"),
            &format!("m{i}"),
            1,
            false,
        );
    }
    let h = m.add_session(opts).await.unwrap();
    m.wait_for_session("keeper", T).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(recv(&l).await.payload_str().unwrap().to_string());
    }
    got.sort();
    assert_eq!(got, vec!["m1", "m2", "m3"]);
    assert_eq!(
        h.status().broker_limits.session_expiry_interval,
        Some(120),
        "{:?}",
        h.status()
    );
    m.shutdown().await;
}

#[actix_rt::test]
async fn an_empty_client_id_is_replaced_by_the_one_the_broker_assigns() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let h = m
        .add_session(v5_opts("anon", &broker.url()).client_id(""))
        .await
        .unwrap();
    m.wait_for_session("anon", T).await.unwrap();
    let id = h.status().client_id;
    assert!(!id.is_empty());
    assert!(
        broker.log().contains(&id),
        "assigned id {id:?} not in the broker log:\n{}",
        broker.log()
    );
    m.shutdown().await;
}

#[actix_rt::test]
async fn a_no_local_route_does_not_receive_its_own_sessions_publishes() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    m.add_session(v5_opts("me", &broker.url())).await.unwrap();
    m.add_session(v5_opts("other", &broker.url()))
        .await
        .unwrap();
    m.wait_for_all_sessions(T).await.unwrap();
    let l = m
        .route("nl/#")
        .session("me")
        .no_local(true)
        .listen()
        .await
        .unwrap();
    m.publish_to("me", "nl/own", "own", QoS::AtLeastOnce)
        .await
        .unwrap();
    m.publish_to("other", "nl/theirs", "theirs", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(recv(&l).await.payload_str().unwrap(), "theirs");
    assert!(l.try_recv().is_none());
    m.shutdown().await;
}

#[actix_rt::test]
async fn mqtt311_and_mqtt5_sessions_in_one_manager_share_a_global_route() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let l = m.listen("mix/#").await.unwrap();
    m.add_session(fast_opts("v311", &broker.url()))
        .await
        .unwrap();
    m.add_session(v5_opts("v5", &broker.url())).await.unwrap();
    m.wait_for_all_sessions(T).await.unwrap();
    publish(broker.port(), "mix/1", "both", 1, false);
    let mut sessions = BTreeSet::new();
    for _ in 0..2 {
        let msg = recv(&l).await;
        assert_eq!(msg.payload_str().unwrap(), "both");
        sessions.insert(msg.session.to_string());
    }
    assert_eq!(
        sessions,
        BTreeSet::from(["v311".to_string(), "v5".to_string()])
    );
    // Each publishes through its own protocol, and both copies reach the route.
    m.publish(
        "v5",
        Publish::new("mix/2", "from v5")
            .qos(QoS::AtLeastOnce)
            .user_property("p", "5"),
    )
    .await
    .unwrap();
    m.publish(
        "v311",
        Publish::new("mix/3", "from v311")
            .qos(QoS::AtLeastOnce)
            // Ignored on MQTT 3.1.1 (debug log), not an error.
            .user_property("p", "3"),
    )
    .await
    .unwrap();
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        let msg = recv(&l).await;
        let props = msg.user_property("p").next().map(str::to_string);
        seen.insert((msg.session.to_string(), msg.topic.to_string(), props));
    }
    assert!(
        seen.contains(&("v5".into(), "mix/2".into(), Some("5".into()))),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("v311".into(), "mix/2".into(), None)),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("v5".into(), "mix/3".into(), None)),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("v311".into(), "mix/3".into(), None)),
        "{seen:?}"
    );
    m.shutdown().await;
}
