//! The `mqtt-sessions` binary against real mosquitto brokers: forwarding without loss,
//! reload on SIGHUP, graceful SIGTERM, config checking, the embedded-broker example, and
//! two daemons sharing a subscription.
#![allow(
    clippy::unwrap_used,
    clippy::print_stdout,
    reason = "tests fail loudly; the kill tests report their figures"
)]

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::BTreeSet;
use std::fs;
use std::process::Command;
use std::time::Duration;

use common::*;
use support::*;

#[tokio::test]
async fn a_forwarding_rule_carries_10000_qos1_messages_between_two_mosquittos_without_loss() {
    let src = Mosquitto::start();
    let dst = Mosquitto::start();
    let config = format!(
        "{HTTP}{}{}{}",
        session("src", "fw-src", src.port()),
        session("dst", "fw-dst", dst.port()),
        rule("copy", "src", "load/#", "dst", "copied/{topic}")
    );
    let d = Daemon::start(&config);
    d.wait_ready().await;
    let sub = Sub::spawn(dst.port(), "copied/#", 1);
    publish_many(src.port(), "load/x", 10_000, 1);
    let all = sub
        .wait_for_count_async(10_000, Duration::from_secs(180))
        .await;
    let got: BTreeSet<String> = sub.payloads().into_iter().collect();
    let want: BTreeSet<String> = (0..10_000).map(|i| i.to_string()).collect();
    assert!(
        all && got == want,
        "{} messages, {} distinct, missing e.g. {:?}\n{}",
        sub.count(),
        got.len(),
        want.difference(&got).take(5).collect::<Vec<_>>(),
        d.stderr()
    );
    assert!(sub.lines().iter().all(|l| l.starts_with("copied/load/x ")));
}

/// Publishes probes on `port`/`topic` until `sub` shows one as `expect_prefix{probe}`.
async fn wait_for_forward(port: u16, topic: &str, sub: &Sub, expect_prefix: &str) -> bool {
    let mut n = 0;
    poll_until_async(T, || {
        n += 1;
        let probe = format!("probe-{n}");
        publish(port, topic, &probe, 1, false);
        let hit = sub
            .lines()
            .iter()
            .any(|l| l.starts_with(expect_prefix) && l.contains("probe-"));
        async move { hit }
    })
    .await
}

#[tokio::test]
async fn sighup_applies_a_changed_rule_keeps_untouched_sessions_and_survives_a_broken_file() {
    let a = Mosquitto::start();
    let b = Mosquitto::start();
    let sessions = format!(
        "{HTTP}{}{}",
        session("a", "hup-a", a.port()),
        session("b", "hup-b", b.port())
    );
    let d = Daemon::start(&format!(
        "{sessions}{}",
        rule("r", "a", "in/#", "b", "one/{topic}")
    ));
    d.wait_ready().await;
    let sub = Sub::options(b.port(), "one/#")
        .filter("two/#")
        .qos(1)
        .spawn();
    publish(a.port(), "in/x", "m1", 1, false);
    assert!(
        sub.wait_for_line_async("one/in/x m1", T).await,
        "{}",
        d.stderr()
    );

    d.rewrite(&format!(
        "{sessions}{}",
        rule("r", "a", "in/#", "b", "two/{topic}")
    ));
    d.signal("HUP");
    assert!(
        wait_for_forward(a.port(), "in/x", &sub, "two/in/x ").await,
        "changed rule not applied:\n{}",
        d.stderr()
    );
    for (broker, id) in [(&a, "hup-a"), (&b, "hup-b")] {
        let connects = broker.log().matches(&format!(" as {id} (")).count();
        assert_eq!(connects, 1, "{id} reconnected:\n{}", broker.log());
    }

    d.rewrite("this is [not toml");
    d.signal("HUP");
    assert!(
        poll_until_async(T, || {
            let log = d.stderr();
            let refused = log.contains("configuration reload refused")
                && log.contains("config_reload_failures=1");
            async move { refused }
        })
        .await,
        "{}",
        d.stderr()
    );
    publish(a.port(), "in/x", "m3", 1, false);
    assert!(
        sub.wait_for_line_async("two/in/x m3", T).await,
        "old config stopped forwarding:\n{}",
        d.stderr()
    ); // The refusal and the forwarding are counted in the metrics too.
    let (_, metrics) = d.get("/metrics").unwrap();
    assert!(
        metrics.contains("mqtt_sessions_config_reload_failures_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mqtt_sessions_config_reloads_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mqtt_sessions_forward_messages_total{rule="),
        "{metrics}"
    );
}

#[tokio::test]
async fn sigterm_while_forwarding_exits_0_within_the_shutdown_timeout() {
    let src = Mosquitto::start();
    let dst = Mosquitto::start();
    let config = format!(
        "{HTTP}{}{}{}",
        session("src", "term-src", src.port()),
        session("dst", "term-dst", dst.port()),
        rule("copy", "src", "load/#", "dst", "copied/{topic}")
    );
    let mut d = Daemon::start(&config);
    d.wait_ready().await;
    let sub = Sub::spawn(dst.port(), "copied/#", 1);
    let port = src.port();
    let publisher = std::thread::spawn(move || publish_many(port, "load/x", 20_000, 1));
    assert!(sub.wait_for_count_async(100, T).await, "{}", d.stderr());
    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(15));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit status {status:?}\n{}",
        d.stderr()
    );
    assert!(!d.stderr().contains("panicked"), "{}", d.stderr());
    let _ = publisher.join();
}

/// With nothing left to forward, a stop ends when the work is done, not when the shutdown
/// timeout (10 s here) runs out: the HTTP endpoints stop with everything else.
#[tokio::test]
async fn sigterm_on_an_idle_daemon_exits_0_well_before_the_shutdown_timeout() {
    let src = Mosquitto::start();
    let config = format!("{HTTP}{}", session("src", "idle-src", src.port()));
    let mut d = Daemon::start(&config);
    d.wait_ready().await;
    d.signal("TERM");
    // Half the timeout: a daemon that waits it out (the endpoints' graceful stop never
    // carried out) fails here.
    let status = d.wait_exit(Duration::from_secs(5));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit status {status:?} (None: still running after 5 s)\n{}",
        d.stderr()
    );
}

#[test]
fn check_config_names_the_line_and_the_reason_of_broken_files_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[[sessions]]\nname = \"a\"\nbrokers = [\"mqtt://127.0.0.1:1\"]\n\n[[sessions]]\nname = \"b\"\nbrokers = [\"mqtt://127.0.0.1:2\"]\n";
    let fwd = |from: &str, filter: &str, to: &str, topic: &str| {
        format!("\n[[forward]]\nname = \"r\"\nfrom = \"{from}\"\nfilter = \"{filter}\"\nto = \"{to}\"\ntopic = \"{topic}\"\n")
    };
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "unknown field",
            format!("{base}kepalive = 5\n"),
            ":8:1:",
            "unknown field `kepalive`",
        ),
        (
            "bad duration",
            format!("{base}[sessions.connect]\nkeep_alive = \"5 parsecs\"\n"),
            ":9:14:",
            "expected a duration",
        ),
        (
            "bad size",
            format!("{base}[sessions.performance]\nmax_message_size = \"12 parsecs\"\n"),
            ":9:20:",
            "unknown unit",
        ),
        (
            "missing session",
            format!("{base}{}", fwd("a", "x/#", "zz", "{topic}")),
            ":13:6:",
            "no session named \"zz\"",
        ),
        (
            "loop rule",
            format!("{base}{}", fwd("a", "x/#", "a", "x/copy/{topic}")),
            ":14:9:",
            "would loop",
        ),
        (
            "bad filter",
            format!("{base}{}", fwd("a", "x/#/y", "b", "{topic}")),
            ":12:10:",
            "invalid topic filter",
        ),
        (
            "bad template",
            format!("{base}{}", fwd("a", "x/#", "b", "{topc}")),
            ":14:9:",
            "unknown placeholder",
        ),
        (
            "duplicate session",
            format!("{base}\n[[sessions]]\nname = \"a\"\nbrokers = [\"mqtt://h\"]\n"),
            ":10:8:",
            "defined twice",
        ),
        (
            "missing password file",
            format!("{base}username = \"u\"\npassword_file = \"nope.pw\"\n"),
            ":9:17:",
            "cannot read password_file",
        ),
        (
            "unset password env",
            format!("{base}username = \"u\"\npassword_env = \"MQTT_SESSIONS_TEST_UNSET_VAR\"\n"),
            ":9:16:",
            "is not set",
        ),
        (
            "not toml",
            "[[sessions]\n".to_string(),
            ":1:",
            "invalid table header",
        ),
        (
            "bad broker url",
            "[[sessions]]\nname = \"a\"\nbrokers = [\"http://h\"]\n".to_string(),
            ":2:8:",
            "unknown scheme",
        ),
    ];
    for (what, text, at, reason) in cases {
        let path = dir.path().join(format!("{}.toml", what.replace(' ', "-")));
        fs::write(&path, &text).unwrap();
        let (code, _, err) = check_config(&path);
        let want = format!("{}{at}", path.display());
        assert_eq!(code, Some(78), "{what}: {err}");
        assert!(
            err.contains(&want) && err.contains(reason),
            "{what}: expected {want:?} and {reason:?} in {err:?}\n{text}"
        );
    }

    let path = dir.path().join("inline.toml");
    fs::write(&path, format!("{base}username = \"u\"\npassword = \"p\"\n")).unwrap();
    let (code, out, _) = check_config(&path);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("warning: session \"b\": inline password"),
        "{out}"
    );
}

#[test]
fn print_config_of_a_file_fills_in_every_default_and_round_trips_through_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("conf/source.toml");
    fs::create_dir_all(source.parent().unwrap()).unwrap();
    fs::write(
        &source,
        "# ${NOT_SET} in a comment is left alone\n[store]\npath = \"state\"\n\n\
         [[sessions]]\nname = \"a\"\nbrokers = [\"mqtt://${PC_TEST_HOST}:1883\"]\n\
         [[sessions.subscriptions]]\nfilter = \"x/#\"\n\n\
         [[sessions]]\nname = \"b\"\nbrokers = [\"mqtt://127.0.0.1:1884\"]\n\
         required_for_ready = false\n\n\
         [[forward]]\nname = \"r\"\nfrom = \"a\"\nfilter = \"x/#\"\nto = \"b\"\n",
    )
    .unwrap();
    let printed = run_with_timeout(
        Command::new(BIN)
            .args(["print-config", "-c"])
            .arg(&source)
            .env("PC_TEST_HOST", "127.0.0.9"),
        None,
        T,
    );
    let text = String::from_utf8_lossy(&printed.stdout).into_owned();
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    // Defaults filled in, the variable substituted, the relative path resolved.
    for want in [
        "shutdown_timeout = \"10s\"",
        "keep_alive = \"1m\"",
        "max_message_size = \"32KiB\"",
        "per_session = \"off\"",
        "required_for_ready = false",
        "mqtt://127.0.0.9:1883",
        &format!("path = \"{}\"", dir.path().join("conf/state").display()),
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    // Printed elsewhere, it is accepted and explains the same thing.
    let path = dir.path().join("printed.toml");
    fs::write(&path, &text).unwrap();
    let (code, explained, err) = check_config(&path);
    assert_eq!(code, Some(0), "{err}\n{text}");
    let (_, original, _) = {
        let out = run_with_timeout(
            Command::new(BIN)
                .args(["check-config", "--config"])
                .arg(&source)
                .env("PC_TEST_HOST", "127.0.0.9"),
            None,
            T,
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            (),
        )
    };
    assert_eq!(
        explained.lines().skip(1).collect::<Vec<_>>(),
        original.lines().skip(1).collect::<Vec<_>>()
    );
    let again = run_with_timeout(Command::new(BIN).arg("print-config").arg(&path), None, T);
    let again = String::from_utf8_lossy(&again.stdout).into_owned();
    assert_eq!(
        again.lines().skip(2).collect::<Vec<_>>(),
        text.lines().skip(2).collect::<Vec<_>>(),
        "print-config is a fixed point"
    );
}

#[test]
fn print_config_example_output_passes_check_config() {
    let out = run_with_timeout(
        Command::new(BIN).args(["print-config", "--example"]),
        None,
        T,
    );
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("printed.toml");
    fs::write(&path, &out.stdout).unwrap();
    let (code, explained, err) = check_config(&path);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        explained.contains("edge-to-cloud: edge \"sensors/#\" -> cloud \"plant-1/{topic}\""),
        "{explained}"
    );
}

#[tokio::test]
async fn the_gateway_example_runs_with_no_external_broker_turns_ready_and_notifies_systemd() {
    let example = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/gateway.toml"
    ))
    .unwrap();
    let mqtt = free_port();
    let config = example
        .replace("127.0.0.1:1883", &format!("127.0.0.1:{mqtt}"))
        .replace("127.0.0.1:9883", "127.0.0.1:{http}");
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    notify.set_read_timeout(Some(T)).unwrap();
    let mut d = Daemon::start_with_env(&config, &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);
    d.wait_ready().await;
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1\n");

    let sub = Sub::spawn(mqtt, "plant-1/#", 1);
    publish(mqtt, "sensors/t1", "21.5", 1, false);
    assert!(
        sub.wait_for_line_async("plant-1/sensors/t1 21.5", T).await,
        "{}",
        d.stderr()
    );

    d.signal("TERM");
    // STATUS= lines may come first.
    let stopping = poll_until(T, || {
        notify
            .recv(&mut buf)
            .is_ok_and(|n| &buf[..n] == b"STOPPING=1\n")
    });
    assert!(stopping, "no STOPPING=1");
    let status = d.wait_exit(Duration::from_secs(15));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", d.stderr());
}

#[tokio::test]
async fn two_daemons_sharing_a_subscription_forward_every_message_once_between_them() {
    let broker = Mosquitto::start();
    let daemon = |i: u32| {
        Daemon::start(&format!(
            "{HTTP}{}{}{}",
            session("src", &format!("share-src-{i}"), broker.port()),
            session("dst", &format!("share-dst-{i}"), broker.port()),
            rule(
                "jobs",
                "src",
                "$share/workers/jobs/#",
                "dst",
                "done/{topic}"
            )
        ))
    };
    let (one, two) = (daemon(1), daemon(2));
    one.wait_ready().await;
    two.wait_ready().await;
    let sub = Sub::spawn(broker.port(), "done/#", 1);
    publish_many(broker.port(), "jobs/x", 1000, 1);
    assert!(
        sub.wait_for_count_async(1000, T).await,
        "{} of 1000",
        sub.count()
    );
    let got: BTreeSet<String> = sub.payloads().into_iter().collect();
    assert_eq!(got.len(), 1000, "every message forwarded");
    let (r1, r2) = (one.received("src"), two.received("src"));
    assert_eq!(
        r1 + r2,
        1000,
        "each message reached exactly one daemon ({r1} + {r2})"
    );
    assert!(r1 > 0 && r2 > 0, "the load was split ({r1} + {r2})");
    assert_eq!(sub.count(), 1000, "no message forwarded twice");
}

#[tokio::test]
async fn sigterm_with_a_store_and_a_persistent_source_loses_nothing_the_source_broker_accepted() {
    let src = Mosquitto::start_with(MosquittoConfig::new().persistence(true));
    let dst = Mosquitto::start();
    let store = tempfile::tempdir().unwrap();
    let persistent_src = session("src", "keep-src", src.port()).replace(
        "[sessions.connect]\n",
        "[sessions.connect]\nclean_session = false\npersistent = true\n",
    );
    let config = format!(
        "{HTTP}[store]\npath = \"{}\"\n{persistent_src}{}{}",
        store.path().join("data").display(),
        session("dst", "keep-dst", dst.port()),
        rule("copy", "src", "load/#", "dst", "copied/{topic}")
    );
    let sub = Sub::spawn(dst.port(), "copied/#", 1);
    let mut first = Daemon::start(&config);
    first.wait_ready().await;
    const N: usize = 5000;
    let port = src.port();
    let publisher = std::thread::spawn(move || publish_many(port, "load/x", N, 1));
    assert!(sub.wait_for_count_async(100, T).await, "{}", first.stderr());
    first.signal("TERM");
    let status = first.wait_exit(Duration::from_secs(15));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", first.stderr());
    // Everything mosquitto accepted from the publisher is either forwarded already, in the
    // daemon's store (accepted, not yet sent), or queued by mosquitto for the persistent
    // source session: the next daemon on the same store delivers the rest.
    publisher.join().unwrap();
    let second = Daemon::start(&config);
    second.wait_ready().await;
    assert!(
        poll_until_async(Duration::from_secs(60), || {
            let distinct: BTreeSet<String> = sub.payloads().into_iter().collect();
            let n = distinct.len();
            async move { n >= N }
        })
        .await,
        "{} of {N} distinct messages forwarded\n{}",
        sub.payloads().into_iter().collect::<BTreeSet<_>>().len(),
        second.stderr()
    );
}

/// A `[[sessions]]` block of a persistent session (clean session off).
fn metric_names_in(text: &str, prefixes: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.char_indices() {
        let rest = &text[i..];
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if prefixes.iter().any(|p| rest.starts_with(p)) {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            out.insert(rest[..end].to_string());
        }
    }
    out
}

#[tokio::test]
async fn every_metric_the_dashboard_and_the_alerts_use_exists_in_a_daemons_exposition() {
    let broker = Mosquitto::start();
    let d = Daemon::start(&format!(
        "{HTTP}{}[[sessions.subscriptions]]\nfilter = \"status/#\"\n{}{}",
        session("a", "dash-a", broker.port()),
        session("b", "dash-b", broker.port()),
        rule("copy", "a", "in/#", "b", "out/{topic}")
    ));
    d.wait_ready().await;
    publish(broker.port(), "in/x", "1", 1, false);
    let received = poll_until_async(T, || async {
        d.get("/metrics").is_some_and(|(_, t)| {
            t.contains("mqtt_sessions_forward_messages_total{rule=\"copy\",target=\"b\"} 1")
        })
    })
    .await;
    assert!(received, "{}", d.stderr());
    let (_, text) = d.get("/metrics").unwrap();
    let exposed: BTreeSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let prefixes = ["mqtt_sessions_", "process_"];
    let mut used = metric_names_in(
        &fs::read_to_string(format!("{root}/docs/grafana-dashboard.json")).unwrap(),
        &prefixes,
    );
    used.extend(metric_names_in(
        &fs::read_to_string(format!("{root}/docs/alerts.yml")).unwrap(),
        &prefixes,
    ));
    for want in [
        "mqtt_sessions_forward_messages_total",
        "mqtt_sessions_config_last_reload_successful",
        "process_open_fds",
    ] {
        assert!(used.contains(want), "{want} is not used: {used:?}");
    }
    let missing: Vec<&String> = used.iter().filter(|n| !exposed.contains(*n)).collect();
    assert!(missing.is_empty(), "not exposed: {missing:?}\n{text}");
    // Route labels are named after the rule and the subscription, never `kind-N`.
    assert!(text.contains("route=\"forward.copy\""), "{text}");
    assert!(text.contains("route=\"a:status/#\""), "{text}");
}

#[tokio::test]
async fn a_session_named_in_chinese_goes_through_config_sessions_metrics_and_the_store_across_a_restart(
) {
    const NAME: &str = "生产设备";
    let broker = Mosquitto::start();
    let store = tempfile::tempdir().unwrap();
    // Per-session series (the daemon's default is "off"): the name goes into labels.
    let config = format!(
        "{HTTP}[metrics]\nper_session = \"full\"\n[store]\npath = \"{}\"\n{}[[sessions.subscriptions]]\nfilter = \"设备/#\"\n{}{}",
        store.path().join("db").display(),
        session(NAME, "device-cn", broker.port()).replace(
            "[sessions.connect]\n",
            "[sessions.connect]\nclean_session = false\npersistent = true\n"
        ),
        session("云端", "cloud-cn", broker.port()),
        rule("转发", NAME, "设备/#", "云端", "工厂/{session}/{topic}")
    );
    for round in 0..2 {
        let mut d = Daemon::start(&config);
        d.wait_ready().await;
        let (_, body) = d.get("/sessions").unwrap();
        let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            rows.as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == NAME && r["state"] == "connected"),
            "round {round}: {body}"
        );
        let (_, metrics) = d.get("/metrics").unwrap();
        assert!(
            metrics.contains(&format!("mqtt_sessions_session_up{{session=\"{NAME}\"}} 1")),
            "round {round}: {metrics}"
        );
        assert!(metrics.contains("rule=\"转发\""), "{metrics}");
        let sub = Sub::spawn(broker.port(), "工厂/#", 1);
        publish(broker.port(), "设备/温度", "21", 1, false);
        assert!(
            sub.wait_for_line_async(&format!("工厂/{NAME}/设备/温度 21"), T)
                .await,
            "round {round}: {:?}\n{}",
            sub.lines(),
            d.stderr()
        );
        let status = run_with_timeout(
            Command::new(BIN).args([
                "status",
                "--interval",
                "0",
                "--url",
                &format!("http://127.0.0.1:{}", d.http),
            ]),
            None,
            T,
        );
        let table = String::from_utf8_lossy(&status.stdout);
        assert!(table.contains(NAME), "{table}");
        d.signal("TERM");
        assert_eq!(
            d.wait_exit(T).and_then(|s| s.code()),
            Some(0),
            "{}",
            d.stderr()
        );
        // The store, keyed by the name, holds the session and its subscription.
        let s = mqtt_sessions::store::Store::open(&store.path().join("db")).unwrap();
        assert!(s.session_meta_get(NAME).unwrap().is_some(), "round {round}");
        let subs = s.subscriptions_load(NAME).unwrap();
        assert!(subs.iter().any(|s| s.filter == "设备/#"), "{subs:?}");
    }
}

/// One message read by a fresh `mosquitto_sub` (MQTT 5) on `filter`, formatted with
/// `format` (`%r` retain, `%q` QoS, `%t` topic, `%p` payload, `%C` content type, `%R`
/// response topic, `%D` correlation data, `%P` user properties); `None` if none came.
#[tokio::test]
async fn forwarding_keeps_retain_qos_and_mqtt5_properties_and_fills_in_captured_levels() {
    let broker = Mosquitto::start();
    let port = broker.port();
    // Retained before the daemon subscribes: it arrives retained on subscribe.
    publish(port, "in/a/b/c", "old-retained", 1, true);
    publish(port, "r/x", "old-retained", 1, true);
    let v5 = |s: String| {
        s.replace(
            "[sessions.connect]\n",
            "protocol = \"5\"\n[sessions.connect]\n",
        )
    };
    let d = Daemon::start(&format!(
        "{HTTP}{}{}\
         [[forward]]\nname = \"keep\"\nfrom = \"src\"\nfilter = \"in/+/#\"\nto = \"dst\"\n\
         topic = \"out/{{1}}/{{2}}\"\nqos = \"keep\"\nretain = \"keep\"\nforward_retained = true\n\
         [[forward]]\nname = \"fresh\"\nfrom = \"src\"\nfilter = \"r/#\"\nto = \"dst\"\n\
         topic = \"copy/{{topic}}\"\n",
        v5(session("src", "fwd-src", port)),
        v5(session("dst", "fwd-dst", port)),
    ));
    d.wait_ready().await;

    // retain = "keep": the retained source message is forwarded retained, captures filled.
    let retained = poll_until_async(T, || async {
        sub_once(port, "out/#", "%r %t %p", 1).as_deref() == Some("1 out/a/b/c old-retained")
    })
    .await;
    assert!(
        retained,
        "{:?}\n{}",
        sub_once(port, "out/#", "%r %t %p", 1),
        d.stderr()
    );

    // qos = "keep" and MQTT 5 properties: a live QoS 0 message with properties.
    let live = std::thread::spawn(move || sub_once(port, "out/p/#", "%q %r %t %p|%C|%R|%D|%P", 20));
    let pub_v5 = || {
        let out = run_with_timeout(
            Command::new(require_binary("mosquitto_pub")).args([
                "-p",
                &port.to_string(),
                "-V",
                "mqttv5",
                "-t",
                "in/p/q",
                "-q",
                "0",
                "-m",
                "live",
                "-D",
                "publish",
                "content-type",
                "text/x",
                "-D",
                "publish",
                "response-topic",
                "resp/1",
                "-D",
                "publish",
                "correlation-data",
                "abc",
                "-D",
                "publish",
                "user-property",
                "k",
                "v",
            ]),
            None,
            T,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // The subscriber gets ready at its own pace: publish until it has one.
    let got = poll_until_async(T, || async {
        pub_v5();
        live.is_finished()
    })
    .await;
    assert!(got, "{}", d.stderr());
    assert_eq!(
        live.join().unwrap().as_deref(),
        // The user properties gain the hops property: the brokers the message has been on.
        Some(
            format!("0 0 out/p/q live|text/x|resp/1|abc|k:v mqtt-sessions-hops:127.0.0.1:{port}")
                .as_str()
        ),
        "{}",
        d.stderr()
    );

    // forward_retained = false (default): the old retained message is not forwarded
    // again; a live one is, not retained (retain "keep" of a live message).
    publish(port, "r/x", "live", 1, false);
    let copied = poll_until_async(T, || async {
        sub_once(port, "copy/#", "%r %t %p", 1).is_none()
            && d.get("/metrics").is_some_and(|(_, t)| {
                t.contains("mqtt_sessions_forward_messages_total{rule=\"fresh\",target=\"dst\"} 1")
            })
    })
    .await;
    assert!(copied, "{:?}\n{}", d.get("/metrics"), d.stderr());
}

#[test]
fn check_config_warns_when_a_rule_could_receive_what_its_target_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sizes.toml");
    fs::write(
        &path,
        "[[sessions]]\nname = \"big\"\nbrokers = [\"mqtt://127.0.0.1:1\"]\n\
         [sessions.performance]\nmax_message_size = \"1MiB\"\n\
         [[sessions]]\nname = \"small\"\nbrokers = [\"mqtt://127.0.0.1:2\"]\n\
         [[forward]]\nname = \"r\"\nfrom = \"big\"\nfilter = \"a/#\"\nto = \"small\"\n\
         [[forward]]\nname = \"back\"\nfrom = \"small\"\nfilter = \"b/#\"\nto = \"big\"\n",
    )
    .unwrap();
    let (code, out, err) = check_config(&path);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("forward rule \"r\": session \"big\" accepts payloads up to 1MiB but \"small\" sends at most 32KiB"),
        "{out}"
    );
    assert!(!out.contains("forward rule \"back\""), "{out}");
}

/// A rule with two targets (`[[forward.targets]]`, each with its own topic, QoS and retain
/// flag) delivers every message through both, counted per target; and a QoS 1 message is
/// acknowledged to the source broker only once *both* targets have it: with one target's
/// broker down, a daemon killed with SIGKILL leaves the messages with the (persistent)
/// source session, and the next daemon delivers them to the target that missed them.
#[tokio::test]
async fn a_rule_with_two_targets_delivers_to_both_and_acknowledges_after_the_last() {
    let src = Mosquitto::start_with(MosquittoConfig::new().persistence(true));
    let a = Mosquitto::start();
    let b = Mosquitto::start();
    let fan = "\n[[forward]]\nname = \"fan\"\nfrom = \"src\"\nfilter = \"load/#\"\n\
        [[forward.targets]]\nto = \"a\"\ntopic = \"one/{topic}\"\nqos = 1\n\
        [[forward.targets]]\nto = \"b\"\ntopic = \"two/{topic}\"\nqos = 1\nretain = true\n";
    let config = format!(
        "{HTTP}{}{}{}{fan}",
        persistent_session("src", "fan-src", src.port()),
        session("a", "fan-a", a.port()),
        // `b` may be away: /readyz does not wait for it.
        session("b", "fan-b", b.port()).replace(
            "client_id = \"fan-b\"\n",
            "client_id = \"fan-b\"\nrequired_for_ready = false\n"
        ),
    );
    let sub_a = Sub::spawn(a.port(), "one/#", 1);
    let sub_b = Sub::spawn(b.port(), "two/#", 1);
    let mut d = Daemon::start(&config);
    d.wait_ready().await;
    const N: usize = 200;
    publish_many(src.port(), "load/x", N, 1);
    let want: BTreeSet<String> = (0..N).map(|i| i.to_string()).collect();
    for (name, sub, prefix) in [("a", &sub_a, "one/load/x "), ("b", &sub_b, "two/load/x ")] {
        assert!(
            wait_distinct(sub, N, T).await,
            "target {name}: {} of {N}\n{}",
            distinct_and_duplicates(sub).0.len(),
            d.stderr()
        );
        assert_eq!(distinct_and_duplicates(sub).0, want, "target {name}");
        assert!(
            sub.lines().iter().all(|l| l.starts_with(prefix)),
            "{:?}",
            sub.lines()
        );
    }
    // Each target's own retain flag: `b` retains, `a` keeps the incoming (not retained).
    assert_eq!(sub_once(b.port(), "two/#", "%r", 5).as_deref(), Some("1"));
    assert_eq!(sub_once(a.port(), "one/#", "%r", 1), None);
    // Counted per target.
    let (_, metrics) = d.get("/metrics").unwrap();
    for target in ["a", "b"] {
        let line =
            format!("mqtt_sessions_forward_messages_total{{rule=\"fan\",target=\"{target}\"}} {N}");
        assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    }
    let (_, rules) = d.get("/rules").unwrap();
    assert!(rules.contains("\"to\":\"a, b\""), "{rules}");

    // Target `b` away: the messages reach `a` (the first one at least: a rule forwards in
    // order, one message at a time) but stay unacknowledged at the source.
    b.stop();
    drop(sub_b);
    const LATE: usize = 20;
    publish_many(src.port(), "load/late", LATE, 1);
    assert!(
        poll_until_async(T, || {
            let hit = sub_a
                .lines()
                .iter()
                .any(|l| l.starts_with("one/load/late "));
            async move { hit }
        })
        .await,
        "{}",
        d.stderr()
    );
    d.signal("KILL");
    let _ = d.wait_exit(T);
    b.restart();
    let sub_b = Sub::spawn(b.port(), "two/#", 1);
    let second = Daemon::start(&config);
    second.wait_ready().await;
    let late: BTreeSet<String> = (0..LATE).map(|i| i.to_string()).collect();
    assert!(
        poll_until_async(Duration::from_secs(60), || {
            let got: BTreeSet<String> = sub_b
                .lines()
                .iter()
                .filter_map(|l| l.strip_prefix("two/load/late "))
                .map(str::to_string)
                .collect();
            let done = got == late;
            async move { done }
        })
        .await,
        "target b got {:?} of the {LATE} messages published while it was away\n{}",
        sub_b.lines(),
        second.stderr()
    );
}
