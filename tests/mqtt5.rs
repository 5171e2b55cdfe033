//! MQTT 5 sessions against a real mosquitto: properties, request/response, reason codes,
//! session expiry, server-assigned client ids, subscribe options, and MQTT 3.1.1 and
//! MQTT 5 sessions side by side in one manager.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use mqtt_sessions::{
    Error, Message, Protocol, Publish, QoS, ReasonCode, RetainHandling, SessionManager,
    SessionOptions,
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
    m.publish("s", Publish::new("allowed/x", "fine").qos(QoS::AtLeastOnce))
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
        .publish("s", Publish::new("denied/p", "no").qos(QoS::AtLeastOnce))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::PublishRefused { topic, reason, .. }
            if topic == "denied/p" && reason.is_failure()),
        "{err:?}"
    );
    // The session goes on: the next publish is accepted.
    m.publish("s", Publish::new("allowed/p", "yes").qos(QoS::AtLeastOnce))
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
    m.publish("me", Publish::new("nl/own", "own").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    m.publish(
        "other",
        Publish::new("nl/theirs", "theirs").qos(QoS::AtLeastOnce),
    )
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

/// The CONNACK's Receive Maximum is honoured: mosquitto (`max_inflight_messages 4`)
/// announces 4; the session, whose own window is 100, keeps at most 3 (one slot free, as
/// documented) unacknowledged at the frozen broker — measured as the bytes in mosquitto's
/// receive queue, 14 per PUBLISH — and all 20 arrive once it resumes.
#[actix_rt::test]
async fn the_connack_receive_maximum_bounds_the_publishes_in_flight() {
    init_tracing();
    // v5 PUBLISH, QoS 1, topic "rcv/x", packet id, no properties, 2-byte payload.
    const PUBLISH_BYTES: usize = 1 + 1 + 2 + 5 + 2 + 1 + 2;
    let broker = Mosquitto::start_with(MosquittoConfig::new().max_inflight_messages(4));
    let m = SessionManager::new().unwrap();
    let mut o = v5_opts("rcv", &broker.url()).client_id("rcv-cid");
    o.connect.keep_alive = Duration::from_secs(60);
    o.performance.inflight = 100;
    let h = m.add_session(o).await.unwrap();
    m.wait_for_session("rcv", T).await.unwrap();
    let port = *client_ports(&broker, "rcv-cid").last().unwrap();
    broker.pause();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let h = h.clone();
            actix_rt::spawn(async move {
                h.publish(Publish::new("rcv/x", format!("{i:02}")).qos(QoS::AtLeastOnce))
                    .await
            })
        })
        .collect();
    assert!(
        poll_until_async(T, || {
            let q = broker_rx_queue(broker.port(), port);
            async move { q >= Some(3 * PUBLISH_BYTES) }
        })
        .await,
        "{:?}",
        broker_rx_queue(broker.port(), port)
    );
    // An observation window in which the queue must not grow past the limit.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let queued = broker_rx_queue(broker.port(), port).unwrap();
    assert_eq!(
        queued,
        3 * PUBLISH_BYTES,
        "{queued} bytes unacknowledged at a broker whose receive maximum is 4"
    );
    broker.resume();
    for t in tasks {
        tokio::time::timeout(T, t).await.unwrap().unwrap().unwrap();
    }
    m.shutdown().await;
}

/// The CONNACK's Maximum Packet Size is honoured: mosquitto (`max_packet_size 200`)
/// announces it; a larger publish is refused locally with `PacketTooLarge` (never sent:
/// the broker would drop the connection), the connection stays up and a smaller one
/// arrives at `mosquitto_sub`.
#[actix_rt::test]
async fn a_publish_over_the_connack_maximum_packet_size_is_refused_without_losing_the_connection() {
    init_tracing();
    let broker = Mosquitto::start_with(MosquittoConfig::new().extra("max_packet_size 200"));
    let sub = Sub::spawn(broker.port(), "mps/#", 1);
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);
    let h = m
        .add_session(v5_opts("mps", &broker.url()).client_id("mps-cid"))
        .await
        .unwrap();
    m.wait_for_session("mps", T).await.unwrap();
    let err = h
        .publish(Publish::new("mps/big", "x".repeat(300)).qos(QoS::AtLeastOnce))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::PacketTooLarge { max: 200, .. }),
        "{err:?}"
    );
    h.publish(Publish::new("mps/small", "fits").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    assert!(sub.wait_for_line_async("mps/small fits", T).await);
    assert_eq!(sub.count(), 1, "{:?}", sub.lines());
    assert!(
        !broker.log().contains("mps/big"),
        "the big publish was sent"
    );
    let disconnects = log
        .of("mps")
        .iter()
        .filter(|d| matches!(d, mqtt_sessions::EventData::SessionDisconnected { .. }))
        .count();
    assert_eq!(disconnects, 0);
    m.shutdown().await;
}

/// The CONNACK's Topic Alias Maximum is honoured: mosquitto with `max_topic_alias 0`
/// disconnects any client that sends a topic alias; 100 publishes over 50 topics (each
/// topic twice, where an aliasing client would alias) keep the session connected and all
/// arrive with their full topics.
#[actix_rt::test]
async fn publishes_never_use_topic_aliases_beyond_the_connack_topic_alias_maximum() {
    init_tracing();
    let broker = Mosquitto::start_with(MosquittoConfig::new().extra("max_topic_alias 0"));
    let sub = Sub::spawn(broker.port(), "alias/#", 1);
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);
    let h = m
        .add_session(v5_opts("alias", &broker.url()))
        .await
        .unwrap();
    m.wait_for_session("alias", T).await.unwrap();
    for round in 0..2 {
        for t in 0..50 {
            h.publish(
                Publish::new(format!("alias/topic-{t}"), format!("{round}")).qos(QoS::AtLeastOnce),
            )
            .await
            .unwrap();
        }
    }
    assert!(sub.wait_for_count_async(100, T).await, "{}", sub.count());
    let lines: BTreeSet<String> = sub.lines().into_iter().collect();
    assert_eq!(lines.len(), 100);
    assert!(lines.contains("alias/topic-49 1"));
    assert!(
        !log.of("alias")
            .iter()
            .any(|d| matches!(d, mqtt_sessions::EventData::SessionDisconnected { .. })),
        "{:?}",
        log.of("alias")
    );
    m.shutdown().await;
}

/// MQTT 5 CONNACK refusals become typed failures carrying the broker's reason code:
/// credentials mosquitto refuses give kind `Auth` with 0x87 (what mosquitto 2.0 answers
/// for a wrong password or none, cross-checked with `mosquitto_sub -V 5 -d`), and a
/// retained will at a broker with `retain_available false` gives 0x9A (retain not
/// supported) of kind `Refused`.
#[actix_rt::test]
async fn v5_connack_refusals_become_typed_failures_with_their_reason_codes() {
    init_tracing();
    let broker = Mosquitto::start_with(
        MosquittoConfig::new()
            .allow_anonymous(false)
            .password("u", "right")
            .extra("retain_available false"),
    );
    let port = broker.port().to_string();
    let independent = run_with_timeout(
        std::process::Command::new(require_binary("mosquitto_sub")).args([
            "-V",
            "5",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            "u",
            "-P",
            "wrong",
            "-t",
            "x",
            "-d",
        ]),
        None,
        T,
    );
    let text = String::from_utf8_lossy(&independent.stdout);
    assert!(text.contains("received CONNACK (135)"), "{text}");
    let m = SessionManager::new().unwrap();
    let log = EventLog::start(&m);
    m.add_session(v5_opts("wrong", &broker.url()).credentials("u", "wrong"))
        .await
        .unwrap();
    m.add_session(v5_opts("anon", &broker.url())).await.unwrap();
    let mut o = v5_opts("will", &broker.url()).credentials("u", "right");
    o.connect.will = Some(
        mqtt_sessions::WillOptions::new("will/x", "gone")
            .qos(QoS::AtLeastOnce)
            .retain(true),
    );
    m.add_session(o).await.unwrap();
    m.add_session(v5_opts("right", &broker.url()).credentials("u", "right"))
        .await
        .unwrap();
    m.wait_for_session("right", T).await.unwrap();
    let failure = |d: &mqtt_sessions::EventData| match d {
        mqtt_sessions::EventData::SessionDisconnected { error: Some(f) } => Some(f.clone()),
        _ => None,
    };
    use mqtt_sessions::ErrorKind::{Auth, Refused};
    for (name, kind, code) in [
        ("wrong", Auth, 0x87),
        ("anon", Auth, 0x87),
        ("will", Refused, 0x9A),
    ] {
        assert!(
            log.wait_count(name, 1, T, |d| failure(d).is_some()).await,
            "{name}: {:?}",
            log.of(name)
        );
        let f = log.of(name).iter().find_map(failure).unwrap();
        assert_eq!(
            (f.kind, f.reason),
            (kind, Some(ReasonCode(code))),
            "{name}: {f:?}"
        );
    }
    m.shutdown().await;
}

/// Retain handling against mosquitto: with a retained message on `rh/x`, a route asking
/// `SendAtSubscribe` gets it (retain flag set), one asking `DontSend` does not, and both
/// get the next live message.
#[actix_rt::test]
async fn retain_handling_send_at_subscribe_gets_the_retained_message_and_dont_send_does_not() {
    init_tracing();
    let broker = Mosquitto::start();
    publish(broker.port(), "rh/x", "retained", 1, true);
    let m = SessionManager::new().unwrap();
    m.add_session(v5_opts("send", &broker.url())).await.unwrap();
    m.add_session(v5_opts("dont", &broker.url())).await.unwrap();
    m.wait_for_all_sessions(T).await.unwrap();
    let send = m
        .route("rh/#")
        .session("send")
        .qos(QoS::AtLeastOnce)
        .retain_handling(RetainHandling::SendAtSubscribe)
        .listen()
        .await
        .unwrap();
    let dont = m
        .route("rh/#")
        .session("dont")
        .qos(QoS::AtLeastOnce)
        .retain_handling(RetainHandling::DontSend)
        .listen()
        .await
        .unwrap();
    let first = recv(&send).await;
    assert_eq!(
        (first.payload_str().unwrap(), first.retain),
        ("retained", true)
    );
    publish(broker.port(), "rh/x", "live", 1, false);
    assert_eq!(recv(&send).await.payload_str().unwrap(), "live");
    let got = recv(&dont).await;
    assert_eq!(
        got.payload_str().unwrap(),
        "live",
        "DontSend got the retained message"
    );
    m.shutdown().await;
}

/// Retain as published against mosquitto: a live message published with the retain flag
/// keeps it on a route asking `retain_as_published`, and arrives with it cleared on a
/// route that does not (MQTT 5 §3.3.1.3).
#[actix_rt::test]
async fn retain_as_published_keeps_the_retain_flag_of_live_messages() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    m.add_session(v5_opts("rap", &broker.url())).await.unwrap();
    m.add_session(v5_opts("plain", &broker.url()))
        .await
        .unwrap();
    m.wait_for_all_sessions(T).await.unwrap();
    let rap = m
        .route("rap/#")
        .session("rap")
        .qos(QoS::AtLeastOnce)
        .retain_as_published(true)
        .listen()
        .await
        .unwrap();
    let plain = m
        .route("rap/#")
        .session("plain")
        .qos(QoS::AtLeastOnce)
        .listen()
        .await
        .unwrap();
    publish(broker.port(), "rap/x", "flagged", 1, true);
    let a = recv(&rap).await;
    let b = recv(&plain).await;
    assert_eq!((a.payload_str().unwrap(), a.retain), ("flagged", true));
    assert_eq!((b.payload_str().unwrap(), b.retain), ("flagged", false));
    m.shutdown().await;
}

/// Subscription identifiers against mosquitto: the crate sets none, so messages of its
/// own subscriptions carry none; a broker session whose subscription another client made
/// with identifier 7 (`mosquitto_sub -D subscribe subscription-identifier 7`), resumed by
/// an MQTT 5 session with the same client id, delivers messages carrying `[7]`.
#[actix_rt::test]
async fn subscription_identifiers_of_the_broker_session_reach_the_message() {
    init_tracing();
    let broker = Mosquitto::start();
    let made = mosquitto_sub_once(
        broker.port(),
        &[
            "-V",
            "5",
            "-c",
            "-x",
            "3600",
            "-i",
            "sid-cid",
            "-q",
            "1",
            "-t",
            "sid/#",
            "-D",
            "subscribe",
            "subscription-identifier",
            "7",
            "-E",
        ],
    );
    assert!(made.status.success(), "{made:?}");
    let m = SessionManager::new().unwrap();
    let mut o = v5_opts("sid", &broker.url()).client_id("sid-cid");
    o.connect.clean_session = false;
    let h = m.add_session(o).await.unwrap();
    let all = h.messages();
    let own = m
        .route("own/#")
        .session("sid")
        .qos(QoS::AtLeastOnce)
        .listen()
        .await
        .unwrap();
    m.wait_for_session("sid", T).await.unwrap();
    publish(broker.port(), "sid/x", "tagged", 1, false);
    publish(broker.port(), "own/x", "untagged", 1, false);
    let mut got = Vec::new();
    while got.len() < 2 {
        let msg = tokio::time::timeout(T, all.recv()).await.unwrap().unwrap();
        got.push((
            msg.topic.to_string(),
            msg.properties
                .as_ref()
                .map(|p| p.subscription_identifiers.clone())
                .unwrap_or_default(),
        ));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("own/x".to_string(), vec![]),
            ("sid/x".to_string(), vec![7])
        ]
    );
    assert_eq!(recv(&own).await.payload_str().unwrap(), "untagged");
    m.shutdown().await;
}

/// Runs `mosquitto_sub` with `args` (it must exit by itself, e.g. `-E`).
fn mosquitto_sub_once(port: u16, args: &[&str]) -> std::process::Output {
    let port = port.to_string();
    run_with_timeout(
        std::process::Command::new(require_binary("mosquitto_sub"))
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args),
        None,
        T,
    )
}
