//! The bad-input catalogue: every bad input across the API, session options and config
//! text, TLS files and store directories gives its typed error — none panics, none is
//! silently accepted, and nothing of a refused session is registered.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::time::Duration;

use common::*;
use mqtt_sessions::store::StoreError;
use mqtt_sessions::tls::TlsError;
use mqtt_sessions::Publish;
use mqtt_sessions::{
    Error, OptionsError, QoS, SessionManager, SessionOptions, TlsOptions, TopicError,
};
use proptest::prelude::*;

/// Runs every case, then fails once listing every case that went wrong.
#[derive(Default)]
struct Catalogue {
    checked: usize,
    failures: Vec<String>,
}

impl Catalogue {
    fn check<T: std::fmt::Debug>(
        &mut self,
        name: &str,
        got: Result<T, Error>,
        want: impl Fn(&Error) -> bool,
    ) {
        self.checked += 1;
        match got {
            Err(e) if want(&e) => {
                let msg = e.to_string();
                if msg.is_empty() || msg.ends_with('.') {
                    self.failures
                        .push(format!("{name}: badly formed message {msg:?}"));
                }
            }
            Err(e) => self.failures.push(format!("{name}: wrong error {e:?}")),
            Ok(v) => self.failures.push(format!("{name}: accepted ({v:?})")),
        }
    }

    fn finish(self, at_least: usize) {
        assert!(
            self.failures.is_empty(),
            "{} of {} cases failed:\n{}",
            self.failures.len(),
            self.checked,
            self.failures.join("\n")
        );
        assert!(self.checked >= at_least, "only {} cases", self.checked);
    }
}

/// Recognises the expected options error.
type OptionsCheck = Box<dyn Fn(&OptionsError) -> bool>;

fn opts(name: &str) -> SessionOptions {
    SessionOptions::new(name, "mqtt://127.0.0.1:1")
}

fn with(edit: impl FnOnce(&mut SessionOptions)) -> SessionOptions {
    let mut o = opts("bad");
    edit(&mut o);
    o
}

fn is_topic(f: impl Fn(&TopicError) -> bool) -> impl Fn(&Error) -> bool {
    move |e| matches!(e, Error::Topic(t) if f(t))
}

fn is_opt(f: impl Fn(&OptionsError) -> bool) -> impl Fn(&Error) -> bool {
    move |e| matches!(e, Error::Options(o) if f(o))
}

fn is_tls(f: impl Fn(&TlsError) -> bool) -> impl Fn(&Error) -> bool {
    move |e| matches!(e, Error::Options(OptionsError::Tls { source, .. }) if f(source))
}

fn is_store(f: impl Fn(&StoreError) -> bool) -> impl Fn(&Error) -> bool {
    move |e| matches!(e, Error::Store(s) if f(s))
}

#[actix_rt::test]
async fn every_bad_input_gives_its_typed_error() {
    init_tracing();
    let broker = Mosquitto::start();
    let m = SessionManager::new().unwrap();
    let mut c = Catalogue::default();
    let mut o = fast_opts("good", &broker.url()).client_id("good-cid");
    o.performance.max_message_size = 64;
    let h = m.add_session(o).await.unwrap();
    m.wait_for_session("good", Duration::from_secs(15))
        .await
        .unwrap();

    // --- the API: topics, filters, payloads, QoS ---
    c.check(
        "publish '+'",
        h.publish(Publish::new("a/+/b", "x").qos(QoS::AtMostOnce))
            .await,
        is_topic(|t| matches!(t, TopicError::WildcardInTopicName { .. })),
    );
    c.check(
        "publish '#'",
        h.publish(Publish::new("a/#", "x").qos(QoS::AtMostOnce))
            .await,
        is_topic(|t| matches!(t, TopicError::WildcardInTopicName { .. })),
    );
    c.check(
        "publish empty topic",
        h.publish(Publish::new("", "x").qos(QoS::AtMostOnce)).await,
        is_topic(|t| matches!(t, TopicError::Empty { .. })),
    );
    c.check(
        "publish NUL",
        h.publish(Publish::new("a\0b", "x").qos(QoS::AtMostOnce))
            .await,
        is_topic(|t| matches!(t, TopicError::ContainsNul { .. })),
    );
    let long = "a".repeat(65_536);
    c.check(
        "publish 65536-byte topic",
        h.publish(Publish::new(&long, "x").qos(QoS::AtMostOnce))
            .await,
        is_topic(|t| matches!(t, TopicError::TooLong { .. })),
    );
    c.check(
        "publish to $share",
        h.publish(Publish::new("$share/g/x", "x").qos(QoS::AtMostOnce))
            .await,
        is_topic(|t| matches!(t, TopicError::SharedTopicName { .. })),
    );
    c.check(
        "oversized payload",
        h.publish(Publish::new("a", vec![0u8; 65]).qos(QoS::AtLeastOnce))
            .await,
        |e| {
            matches!(
                e,
                Error::PayloadTooLarge {
                    size: 65,
                    max: 64,
                    ..
                }
            )
        },
    );
    c.check(
        "filter '#' mid-level",
        h.subscribe("a/#/b", QoS::AtMostOnce).await,
        is_topic(|t| matches!(t, TopicError::MisplacedMultiLevelWildcard { .. })),
    );
    c.check(
        "filter 'a#'",
        h.subscribe("a#", QoS::AtMostOnce).await,
        is_topic(|t| matches!(t, TopicError::MisplacedMultiLevelWildcard { .. })),
    );
    c.check(
        "filter 'a+'",
        h.subscribe("a+/b", QoS::AtMostOnce).await,
        is_topic(|t| matches!(t, TopicError::MisplacedSingleLevelWildcard { .. })),
    );
    c.check(
        "empty filter",
        h.subscribe("", QoS::AtMostOnce).await,
        is_topic(|t| matches!(t, TopicError::Empty { .. })),
    );
    c.check(
        "empty share group",
        h.subscribe("$share//x", QoS::AtMostOnce).await,
        is_topic(|t| matches!(t, TopicError::EmptyShareGroup { .. })),
    );
    c.check(
        "share without filter",
        h.subscribe("$share/g", QoS::AtMostOnce).await,
        is_topic(|t| matches!(t, TopicError::MissingSharedFilter { .. })),
    );
    c.check(
        "wildcard in share group",
        h.subscribe("$share/g+/x", QoS::AtMostOnce).await,
        is_topic(|t| matches!(t, TopicError::WildcardInShareGroup { .. })),
    );
    c.check("QoS 3", QoS::try_from(3u8).map_err(Error::from), |e| {
        matches!(e, Error::InvalidQos(3))
    });
    c.check(
        "route on bad filter",
        m.listen("x/#/y").await.map(|_| ()),
        is_topic(|_| true),
    );

    // --- the API: sessions and routes ---
    c.check(
        "publish to unknown session",
        m.publish("ghost", Publish::new("a", "x").qos(QoS::AtMostOnce))
            .await,
        |e| matches!(e, Error::UnknownSession(_)),
    );
    c.check(
        "remove unknown session",
        m.remove_session("ghost").await,
        |e| matches!(e, Error::UnknownSession(_)),
    );
    c.check(
        "wait for unknown session",
        m.wait_for_session("ghost", Duration::from_millis(10)).await,
        |e| matches!(e, Error::UnknownSession(_)),
    );
    c.check(
        "session handle of unknown session",
        m.session("ghost").map(|_| ()),
        |e| matches!(e, Error::UnknownSession(_)),
    );
    c.check(
        "route to unknown session",
        m.listen_to("ghost", "a").await.map(|_| ()),
        |e| matches!(e, Error::UnknownSession(_)),
    );
    c.check(
        "duplicate session name",
        m.add_session(fast_opts("good", &broker.url()))
            .await
            .map(|_| ()),
        |e| matches!(e, Error::DuplicateSession(_)),
    );
    c.check(
        "duplicate client id",
        m.add_session(fast_opts("twin", &broker.url()).client_id("good-cid"))
            .await
            .map(|_| ()),
        |e| matches!(e, Error::DuplicateClientId { .. }),
    );
    c.check(
        "route capacity 0",
        m.route("a").capacity(0).listen().await.map(|_| ()),
        |e| matches!(e, Error::InvalidRoute(_)),
    );
    c.check(
        "route name with a control character",
        m.route("a").name("my\troute").listen().await.map(|_| ()),
        |e| matches!(e, Error::InvalidRoute(_)),
    );
    let _kept = m.route("a").name("taken").listen().await.unwrap();
    c.check(
        "duplicate route name",
        m.route("b").name("taken").listen().await.map(|_| ()),
        |e| matches!(e, Error::DuplicateRoute(_)),
    );
    let down = m
        .add_session(fast_opts(
            "down",
            &format!("mqtt://127.0.0.1:{}", free_port()),
        ))
        .await
        .unwrap();
    c.check(
        "QoS 0 while disconnected",
        down.publish(Publish::new("a", "x").qos(QoS::AtMostOnce))
            .await,
        |e| matches!(e, Error::NotConnected { .. }),
    );

    // --- session options ---
    let bad_options: Vec<(&str, SessionOptions, OptionsCheck)> = vec![
        (
            "empty name",
            opts(""),
            Box::new(|o| matches!(o, OptionsError::InvalidName { .. })),
        ),
        (
            "name with a control character",
            opts("a\nb"),
            Box::new(|o| matches!(o, OptionsError::InvalidName { .. })),
        ),
        (
            "name of 129 chars",
            opts(&"n".repeat(129)),
            Box::new(|o| matches!(o, OptionsError::InvalidName { .. })),
        ),
        (
            "no brokers",
            with(|o| o.brokers.clear()),
            Box::new(|o| matches!(o, OptionsError::NoBrokers { .. })),
        ),
        (
            "http scheme",
            with(|o| o.brokers = vec!["http://h".into()]),
            Box::new(|o| matches!(o, OptionsError::InvalidBrokerUrl { .. })),
        ),
        (
            "no host",
            with(|o| o.brokers = vec!["mqtt://".into()]),
            Box::new(|o| matches!(o, OptionsError::InvalidBrokerUrl { .. })),
        ),
        (
            "not a URL",
            with(|o| o.brokers = vec!["localhost:1883".into()]),
            Box::new(|o| matches!(o, OptionsError::InvalidBrokerUrl { .. })),
        ),
        (
            "path on tcp",
            with(|o| o.brokers = vec!["mqtt://h/x".into()]),
            Box::new(|o| matches!(o, OptionsError::InvalidBrokerUrl { .. })),
        ),
        (
            "empty client id",
            with(|o| o.client_id = Some(String::new())),
            Box::new(|o| matches!(o, OptionsError::InvalidClientId { .. })),
        ),
        (
            "client id with NUL",
            with(|o| o.client_id = Some("a\0".into())),
            Box::new(|o| matches!(o, OptionsError::InvalidClientId { .. })),
        ),
        (
            "sub-second keep-alive",
            with(|o| o.connect.keep_alive = Duration::from_millis(500)),
            Box::new(|o| {
                matches!(
                    o,
                    OptionsError::InvalidValue {
                        field: "connect.keep_alive",
                        ..
                    }
                )
            }),
        ),
        (
            "connect timeout 0",
            with(|o| o.connect.connect_timeout = Duration::ZERO),
            Box::new(|o| {
                matches!(
                    o,
                    OptionsError::InvalidValue {
                        field: "connect.connect_timeout",
                        ..
                    }
                )
            }),
        ),
        (
            "zero initial delay",
            with(|o| o.reconnect.initial_delay = Duration::ZERO),
            Box::new(|o| {
                matches!(
                    o,
                    OptionsError::InvalidValue {
                        field: "reconnect.initial_delay",
                        ..
                    }
                )
            }),
        ),
        (
            "max below initial",
            with(|o| o.reconnect.max_delay = Duration::from_millis(1)),
            Box::new(|o| {
                matches!(
                    o,
                    OptionsError::InvalidValue {
                        field: "reconnect.max_delay",
                        ..
                    }
                )
            }),
        ),
        (
            "factor 0.5",
            with(|o| o.reconnect.factor = 0.5),
            Box::new(|o| {
                matches!(
                    o,
                    OptionsError::InvalidValue {
                        field: "reconnect.factor",
                        ..
                    }
                )
            }),
        ),
        (
            "factor NaN",
            with(|o| o.reconnect.factor = f64::NAN),
            Box::new(|o| {
                matches!(
                    o,
                    OptionsError::InvalidValue {
                        field: "reconnect.factor",
                        ..
                    }
                )
            }),
        ),
        (
            "jitter 2",
            with(|o| o.reconnect.jitter = 2.0),
            Box::new(|o| {
                matches!(
                    o,
                    OptionsError::InvalidValue {
                        field: "reconnect.jitter",
                        ..
                    }
                )
            }),
        ),
        (
            "max attempts 0",
            with(|o| o.reconnect.max_attempts = Some(0)),
            Box::new(|o| {
                matches!(
                    o,
                    OptionsError::InvalidValue {
                        field: "reconnect.max_attempts",
                        ..
                    }
                )
            }),
        ),
        (
            "channel size 0",
            with(|o| o.performance.message_channel_size = 0),
            Box::new(|o| matches!(o, OptionsError::InvalidValue { .. })),
        ),
        (
            "max message size 0",
            with(|o| o.performance.max_message_size = 0),
            Box::new(|o| matches!(o, OptionsError::InvalidValue { .. })),
        ),
        (
            "max message size above MQTT's",
            with(|o| o.performance.max_message_size = 300_000_000),
            Box::new(|o| matches!(o, OptionsError::InvalidValue { .. })),
        ),
        (
            "pending 0",
            with(|o| o.performance.max_pending_messages = 0),
            Box::new(|o| matches!(o, OptionsError::InvalidValue { .. })),
        ),
        (
            "inflight 0",
            with(|o| o.performance.inflight = 0),
            Box::new(|o| matches!(o, OptionsError::InvalidValue { .. })),
        ),
        (
            "write timeout 0",
            with(|o| o.performance.write_timeout = Duration::ZERO),
            Box::new(|o| matches!(o, OptionsError::InvalidValue { .. })),
        ),
        (
            "read timeout 0",
            with(|o| o.performance.read_timeout = Some(Duration::ZERO)),
            Box::new(|o| matches!(o, OptionsError::InvalidValue { .. })),
        ),
        (
            "will with wildcard",
            with(|o| o.connect.will = Some(mqtt_sessions::WillOptions::new("w/#", ""))),
            Box::new(|o| matches!(o, OptionsError::InvalidWillTopic { .. })),
        ),
        (
            "password without user",
            with(|o| o.password = Some(mqtt_sessions::Secret::new("p"))),
            Box::new(|o| {
                matches!(
                    o,
                    OptionsError::InvalidValue {
                        field: "password",
                        ..
                    }
                )
            }),
        ),
    ];
    for (name, o, want) in bad_options {
        c.check(name, m.add_session(o).await.map(|_| ()), is_opt(want));
    }

    // --- config text (the daemon's config uses the same types) ---
    let bad_text = [
        (
            "unknown field",
            r#"{"name":"a","brokers":["mqtt://h"],"kepalive":"5s"}"#,
            "unknown field",
        ),
        (
            "bad duration",
            r#"{"name":"a","brokers":["mqtt://h"],"connect":{"keep_alive":"5 parsecs"}}"#,
            "parsecs",
        ),
        (
            "QoS 7",
            r#"{"name":"a","brokers":["mqtt://h"],"connect":{"will":{"topic":"t","qos":7}}}"#,
            "invalid QoS 7",
        ),
        (
            "unknown protocol",
            r#"{"name":"a","brokers":["mqtt://h"],"protocol":"4"}"#,
            "unknown variant",
        ),
        (
            "brokers not a list",
            r#"{"name":"a","brokers":"mqtt://h"}"#,
            "invalid type",
        ),
        (
            "negative inflight",
            r#"{"name":"a","brokers":["mqtt://h"],"performance":{"inflight":-1}}"#,
            "invalid value",
        ),
    ];
    for (name, text, needle) in bad_text {
        c.checked += 1;
        match serde_json::from_str::<SessionOptions>(text) {
            Err(e) if e.to_string().contains(needle) => {}
            other => c.failures.push(format!("{name}: {other:?}")),
        }
    }

    // --- TLS files ---
    let pki = TestPki::new("bad");
    let garbage = pki.dir().join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM").unwrap();
    let client = pki.client("client", "client-1");
    let other_pki = TestPki::new("other");
    let other = other_pki.client("other", "other-1");
    let tls = |t: TlsOptions| {
        let mut o = opts("tls");
        o.brokers = vec!["mqtts://127.0.0.1:1".into()];
        o.tls = Some(t);
        o
    };
    c.check(
        "missing CA file",
        m.add_session(tls(TlsOptions::new().ca_file("/nonexistent/ca.pem")))
            .await
            .map(|_| ()),
        is_tls(|t| matches!(t, TlsError::MissingFile { .. })),
    );
    c.check(
        "garbage CA file",
        m.add_session(tls(TlsOptions::new().ca_file(garbage.clone())))
            .await
            .map(|_| ()),
        is_tls(|t| {
            matches!(
                t,
                TlsError::NoCertificate { .. } | TlsError::InvalidPem { .. }
            )
        }),
    );
    c.check(
        "certificate without key",
        m.add_session(tls(TlsOptions::new().client_cert(client.cert.clone())))
            .await
            .map(|_| ()),
        is_tls(|t| matches!(t, TlsError::IncompleteClientAuth { .. })),
    );
    c.check(
        "key of another certificate",
        m.add_session(tls(TlsOptions::new()
            .client_cert(client.cert.clone())
            .client_key(other.key.clone())))
            .await
            .map(|_| ()),
        is_tls(|t| matches!(t, TlsError::KeyMismatch { .. })),
    );
    c.check(
        "garbage key",
        m.add_session(tls(TlsOptions::new()
            .client_cert(client.cert.clone())
            .client_key(garbage.clone())))
            .await
            .map(|_| ()),
        is_tls(|t| {
            matches!(
                t,
                TlsError::NoPrivateKey { .. }
                    | TlsError::InvalidPem { .. }
                    | TlsError::InvalidPrivateKey { .. }
            )
        }),
    );
    c.check(
        "invalid server name",
        m.add_session(tls(TlsOptions::new().server_name("not a name!")))
            .await
            .map(|_| ()),
        is_tls(|t| matches!(t, TlsError::InvalidServerName { .. })),
    );
    let mut plain_with_tls = opts("plaintls");
    plain_with_tls.tls = Some(TlsOptions::default());
    c.check(
        "tls section on mqtt://",
        m.add_session(plain_with_tls).await.map(|_| ()),
        is_opt(|_| true),
    );

    // --- store directories ---
    let garbage_dir = tempfile::tempdir().unwrap();
    std::fs::write(garbage_dir.path().join("db"), vec![0xA5u8; 4096]).unwrap();
    c.check(
        "store of garbage",
        SessionManager::builder()
            .store(garbage_dir.path())
            .build()
            .map(|_| ()),
        is_store(|s| matches!(s, StoreError::Corrupt { .. })),
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    c.check(
        "store path is a file",
        SessionManager::builder()
            .store(file.path())
            .build()
            .map(|_| ()),
        is_store(|_| true),
    );
    let in_use = tempfile::tempdir().unwrap();
    let _holder = mqtt_sessions::store::Store::open(in_use.path()).unwrap();
    c.check(
        "store in use",
        SessionManager::builder()
            .store(in_use.path())
            .build()
            .map(|_| ()),
        is_store(|s| matches!(s, StoreError::InUse { .. })),
    );

    // Nothing refused was registered.
    assert_eq!(
        m.list_sessions(),
        vec!["down".to_string(), "good".to_string()]
    );
    m.shutdown().await;
    c.finish(60);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary JSON-ish text never panics the options parser or validation.
    #[test]
    fn option_parsing_never_panics(text in ".{0,200}") {
        if let Ok(o) = serde_json::from_str::<SessionOptions>(&text) {
            let _ = o.validate();
        }
    }

    /// Valid options survive a serialise/parse round trip unchanged.
    #[test]
    fn valid_options_round_trip(
        name in "[a-z][a-z0-9_.-]{0,20}",
        port in 1u16..,
        keep_alive in 0u64..600,
        clean in any::<bool>(),
        pending in 1usize..100_000,
        factor_tenths in 10u32..100,
        jitter_pct in 0u32..=100,
    ) {
        let mut o = SessionOptions::new(name, format!("mqtt://broker.example:{port}"));
        o.connect.keep_alive = Duration::from_secs(keep_alive);
        o.connect.clean_session = clean;
        o.performance.max_pending_messages = pending;
        o.reconnect.factor = f64::from(factor_tenths) / 10.0;
        o.reconnect.jitter = f64::from(jitter_pct) / 100.0;
        prop_assert!(o.validate().is_ok());
        let text = serde_json::to_string(&o).unwrap();
        let back: SessionOptions = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, o);
    }
}
