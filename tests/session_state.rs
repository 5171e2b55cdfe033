//! MQTT session state across reconnects: a persistent session re-sends its in-flight
//! publishes with their packet ids and DUP 1 [MQTT-4.4.0-1], and acknowledges a re-sent
//! incoming QoS 2 message without delivering it again; a clean session re-sends as new.
#![allow(clippy::unwrap_used, reason = "tests fail loudly")]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use mqtt_sessions::{Protocol, Publish, QoS, SessionManager};

const T: Duration = Duration::from_secs(20);

/// `(dup, qos, mid)` of every PUBLISH the broker received from `client` in `log`.
fn received(log: &str, client: &str) -> Vec<(u8, u8, u16)> {
    let needle = format!("Received PUBLISH from {client} (");
    log.lines()
        .filter_map(|l| l.split_once(&needle).map(|(_, rest)| rest))
        .filter_map(|rest| {
            let f: Vec<&str> = rest.splitn(5, ", ").collect();
            Some((
                f[0].strip_prefix('d')?.parse().ok()?,
                f[1].strip_prefix('q')?.parse().ok()?,
                f[3].strip_prefix('m')?.parse().ok()?,
            ))
        })
        .collect()
}

/// Publishes 3 QoS 1 and 3 QoS 2 messages while the broker is frozen (they are written,
/// not acknowledged), kills and restarts the broker (persistence on: it keeps the
/// session), and returns the broker log since the restart and the watcher.
/// `v5`: the session speaks MQTT 5 (a persistent one then also asks for a session expiry).
async fn in_flight_at_broker_kill(clean: bool, v5: bool, client: &str) -> (String, Sub, Mosquitto) {
    init_tracing();
    let broker = Mosquitto::start_with(MosquittoConfig::new().persistence(true));
    let watcher_id = format!("{client}-watch");
    let watcher = Sub::options(broker.port(), "st/out/#")
        .qos(2)
        .persistent(&watcher_id)
        .spawn();
    let m = SessionManager::new().unwrap();
    let mut o = fast_opts("pub", &broker.url()).client_id(client.to_string());
    o.connect.clean_session = clean;
    if v5 {
        o.protocol = Protocol::V5;
        if !clean {
            o.connect.session_expiry = Some(Duration::from_secs(120));
        }
    }
    m.add_session(o).await.unwrap();
    m.wait_for_session("pub", T).await.unwrap();
    assert!(broker.wait_for_autosave_async(T).await, "no autosave");
    watcher.stop();
    broker.pause();
    for i in 0..3 {
        for (qos, name) in [(QoS::AtLeastOnce, "q1"), (QoS::ExactlyOnce, "q2")] {
            m.enqueue(
                "pub",
                Publish::new(format!("st/out/{name}"), format!("{name}-{i}")).qos(qos),
            )
            .await
            .unwrap();
        }
    }
    let s = m.session("pub").unwrap();
    eventually_async(T, "6 publishes in flight", || {
        let n = s.metrics().inflight_messages;
        async move { n == 6 }
    })
    .await;
    broker.kill9();
    let mark = broker.log_len();
    broker.restart();
    eventually_async(T, "outbox empty after the restart", || {
        let n = s.metrics().pending_messages;
        async move { n == 0 }
    })
    .await;
    let watcher = Sub::options(broker.port(), "st/out/#")
        .qos(2)
        .persistent(&watcher_id)
        .spawn();
    let log = broker.log_since(mark);
    m.shutdown().await;
    (log, watcher, broker)
}

#[actix_rt::test]
async fn persistent_session_resends_in_flight_publishes_with_their_ids_and_dup_after_broker_restart(
) {
    resends_with_ids_and_dup(false, "st-persist").await;
}

#[actix_rt::test]
async fn mqtt5_session_with_an_expiry_resends_in_flight_publishes_with_their_ids_and_dup_after_broker_restart(
) {
    resends_with_ids_and_dup(true, "st-persist-v5").await;
}

/// The persistent-session case of [`in_flight_at_broker_kill`] and its checks.
async fn resends_with_ids_and_dup(v5: bool, client: &str) {
    let (log, watcher, broker) = in_flight_at_broker_kill(false, v5, client).await;
    let got = received(&log, client);
    let dup: Vec<_> = got.iter().filter(|(d, _, _)| *d == 1).collect();
    assert_eq!(
        dup.len(),
        6,
        "expected the 6 in-flight publishes re-sent with DUP 1: {got:?}\n{}",
        broker.diagnostics()
    );
    // rumqttc numbered them 1..=6 on the first connection (no other request used an id).
    let mut mids: Vec<u16> = dup.iter().map(|(_, _, m)| *m).collect();
    mids.sort_unstable();
    assert_eq!(mids, vec![1, 2, 3, 4, 5, 6]);
    assert!(dup.iter().filter(|(_, q, _)| *q == 2).count() == 3);
    assert!(
        watcher.wait_for_count_async(6, T).await,
        "{:?}",
        watcher.lines()
    );
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for p in watcher.payloads() {
        *per.entry(p).or_default() += 1;
    }
    figure(
        if v5 {
            "session-state-resend-v5"
        } else {
            "session-state-resend"
        },
        serde_json::json!({"resent_dup": dup.len(), "delivered": per}),
    );
    for i in 0..3 {
        assert_eq!(
            per.get(&format!("q2-{i}")),
            Some(&1),
            "QoS 2 exactly once: {per:?}"
        );
    }
}

#[actix_rt::test]
async fn clean_session_resends_in_flight_publishes_as_new_after_broker_restart() {
    let (log, watcher, _broker) = in_flight_at_broker_kill(true, false, "st-clean").await;
    let got = received(&log, "st-clean");
    assert!(got.len() >= 6, "{got:?}");
    assert!(
        got.iter().all(|(d, _, _)| *d == 0),
        "a clean session re-sends as new (DUP 0): {got:?}"
    );
    // The watcher's session is persistent: it gets what the broker accepted.
    assert!(
        watcher.wait_for_count_async(6, T).await,
        "{:?}",
        watcher.lines()
    );
}

#[actix_rt::test]
async fn persistent_session_delivers_incoming_qos2_exactly_once_across_broker_restart() {
    init_tracing();
    let n = 40;
    let broker = Mosquitto::start_with(MosquittoConfig::new().persistence(true));
    let m = SessionManager::new().unwrap();
    let mut o = fast_opts("sub", &broker.url()).client_id("st-sub".to_string());
    o.connect.clean_session = false;
    m.add_session(o).await.unwrap();
    let counts: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let c = Arc::clone(&counts);
    let _route = m
        .route("st/in/#")
        .session("sub")
        .qos(QoS::ExactlyOnce)
        .handle(move |msg| {
            *c.lock()
                .unwrap()
                .entry(msg.payload_str().unwrap().to_string())
                .or_default() += 1;
            // A slow consumer keeps messages in flight (load, not synchronisation).
            std::thread::sleep(Duration::from_millis(40));
        })
        .await
        .unwrap();
    m.wait_for_session("sub", T).await.unwrap();
    assert!(broker.wait_for_autosave_async(T).await, "no autosave");
    let port = broker.port();
    actix_rt::task::spawn_blocking(move || publish_many(port, "st/in/x", n, 2))
        .await
        .unwrap();
    eventually_async(T, "10 messages handled", || {
        let k = counts.lock().unwrap().len();
        async move { k >= 10 }
    })
    .await;
    // SIGTERM: mosquitto saves its in-flight state on the way out.
    broker.stop();
    broker.restart();
    eventually_async(T, "every message handled", || {
        let k = counts.lock().unwrap().len();
        async move { k == n }
    })
    .await;
    // Every message released (PUBCOMP): nothing more can be re-sent.
    eventually_async(T, "every PUBREL answered", || {
        let k = broker.log().matches("Received PUBCOMP from st-sub").count();
        async move { k >= n }
    })
    .await;
    let log = broker.log();
    let resent = log
        .lines()
        .filter(|l| l.contains("Sending PUBLISH to st-sub (d1"))
        .count();
    let pubrels = log.matches("Sending PUBREL to st-sub").count();
    let counts = counts.lock().unwrap().clone();
    figure(
        "session-state-incoming",
        serde_json::json!({"messages": n, "resent_dup_by_broker": resent, "pubrel_sent": pubrels}),
    );
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c != 1).collect();
    assert!(
        twice.is_empty(),
        "delivered more than once: {twice:?} (broker re-sent {resent})"
    );
    assert!(
        resent > 0,
        "the broker re-sent nothing: the test proved nothing\n{}",
        broker.diagnostics()
    );
    m.shutdown().await;
}

// ---- Process SIGKILL with a store, QoS 2 both ways ----

/// The child process's environment variable (see [`child_process`]).
const CHILD: &str = "MQTT_SESSIONS_SESSION_STATE_CHILD";
/// Client id of the child processes' persistent session.
const CHILD_CLIENT: &str = "st-crash-app";

/// Child process entry (run by the tests below with [`CHILD`] set to `"gen{G} {dir} {url}"`): one
/// persistent session `app` on the store `{dir}/store`. A `handle` route on `in/#` (QoS 2)
/// appends each payload to `{dir}/handled.log` and fsyncs it before returning (the
/// consumer is finished once the payload is on disk). A loop publishes `G-k` (k = 0, 1, …)
/// at QoS 2 to `out/x`, printing `accepted G-k` once `enqueue` returned (in the store's
/// outbox), until the file `{dir}/quiet` exists. While the file `{dir}/hold` exists, the
/// route holds the next message it gets (prints `holding`, never returns), so that message
/// and those queued behind it stay unacknowledged at the broker. On `quiet` the child waits
/// until the process is quiescent ([`settle`]), makes everything before on disk (a durable enqueue goes through
/// the same ordered store worker, whose flush covers all earlier writes), prints `quiet`,
/// waits until its outbox is empty and prints `drained` (only possible when the broker
/// runs), and idles until killed.
#[actix_rt::test]
#[ignore = "a child process of other tests of this binary, run by them"]
async fn child_process() {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    let StoreChild {
        generation,
        dir,
        manager: m,
        session: h,
        log: file,
    } = StoreChild::start(CHILD, CHILD_CLIENT).await;
    let handled = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&handled);
    let hold = dir.join("hold");
    let _route = m
        .route("in/#")
        .session("app")
        .qos(QoS::ExactlyOnce)
        .name("inbox")
        .handle(move |msg| {
            if hold.exists() {
                println!("holding {}", msg.payload_str().unwrap());
                // Held until the process is killed.
                loop {
                    std::thread::park();
                }
            }
            let mut f = file.lock().unwrap();
            f.write_all(format!("{}\n", msg.payload_str().unwrap()).as_bytes())
                .unwrap();
            f.sync_data().unwrap();
            count.fetch_add(1, Ordering::Relaxed);
        })
        .await
        .unwrap();
    m.wait_for_session("app", T).await.unwrap();
    println!("started");
    let quiet = dir.join("quiet");
    for k in 0.. {
        if quiet.exists() {
            break;
        }
        let payload = format!("{generation}-{k}");
        h.enqueue(Publish::new("out/x", payload.clone()).qos(QoS::ExactlyOnce))
            .await
            .unwrap();
        println!("accepted {payload}");
        // Paces the stream so that the broker's pause lands mid-stream.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    settle(&h, &handled, dir.join("hold").exists()).await;
    h.enqueue(Publish::new("barrier/x", "barrier").qos(QoS::AtLeastOnce))
        .await
        .unwrap();
    println!("quiet");
    let drained = poll_until_async(T, || {
        let n = h.metrics().pending_messages;
        async move { n == 0 }
    })
    .await;
    let mm = h.metrics();
    println!(
        "outbox pending {} inflight {} sent {}",
        mm.pending_messages, mm.inflight_messages, mm.messages_sent
    );
    if drained {
        println!("drained");
    }
    std::future::pending::<()>().await;
}

/// Waits until nothing moves in the child for 300 ms: no message received, sent, written
/// or queued, and every message delivered to the route handled (so every write the
/// session makes for them — packet ids, PUBREL flags, handled incoming ids — has been
/// submitted to the store worker). With `holding`, the route holds one message and those
/// behind it wait: they are not handled and stay unacknowledged, so only stillness counts.
async fn settle(
    h: &mqtt_sessions::SessionHandle,
    handled: &std::sync::atomic::AtomicU64,
    holding: bool,
) {
    let snapshot = || {
        let m = h.metrics();
        (
            m.messages_received,
            m.messages_sent,
            m.inflight_messages,
            m.pending_messages,
            handled.load(std::sync::atomic::Ordering::Relaxed),
        )
    };
    let mut last = snapshot();
    let mut since = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await; // polling period
        let now = snapshot();
        if now != last || (!holding && now.0 != now.4) {
            last = now;
            since = std::time::Instant::now();
        } else if since.elapsed() >= Duration::from_millis(300) {
            return;
        }
    }
}

/// How many times each line occurs in `lines`.
fn tally(lines: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    lines.into_iter().fold(BTreeMap::new(), |mut m, l| {
        *m.entry(l).or_default() += 1;
        m
    })
}

/// A store-backed process with a persistent session publishes QoS 2 (to a `mosquitto_sub
/// -q 2` watcher) and receives QoS 2 (from a `mosquitto_pub -q 2`), and is SIGKILLed five
/// times mid-stream. Each kill: the route first holds one incoming message unhandled (it
/// and those queued behind it stay unacknowledged, so the broker must send them again
/// after the restart; left to chance, the broker had often received every PUBREC by the
/// time it was frozen); then the broker is frozen (SIGSTOP) at a random point of both
/// streams, so publishes are caught in flight at every stage; the
/// process stops publishing and settles (its store has every packet id, PUBREL flag and
/// handled incoming id of what it wrote or handled), then is killed, the broker thawed and
/// the process restarted. So each restart starts from a flushed store, and what this
/// proves is the resumption: re-sent publishes (same ids, DUP 1, PUBREL) and suppressed
/// broker re-sends give every message exactly once at the watcher and in the handled
/// log. Kills at random moments, with nothing flushed on purpose, are
/// `tests/random_kill.rs`.
#[actix_rt::test]
async fn a_store_backed_process_restarted_five_times_from_a_flushed_store_delivers_qos2_exactly_once_both_ways(
) {
    init_tracing();
    let kills = 5;
    let broker = Mosquitto::start();
    let watcher = Sub::options(broker.port(), "out/#")
        .qos(2)
        .persistent("st-crash-watcher")
        .spawn();
    let dir = tempfile::tempdir().unwrap();
    let quiet = dir.path().join("quiet");
    let hold = dir.path().join("hold");
    let mut feeder = None;
    let mut accepted: Vec<String> = Vec::new();
    for g in 0..=kills {
        let mut child = ChildProc::spawn(CHILD, &format!("gen{g}"), dir.path(), &broker.url());
        assert!(
            child.wait_line("started", 1).await,
            "generation {g} did not start"
        );
        if g == 0 {
            feeder = Some(Feeder::start(
                broker.port(),
                "in/x",
                2,
                "st-crash-feeder",
                Duration::from_millis(5),
            ));
        }
        // Mid-stream: at least 30 publishes accepted by this process.
        assert!(
            child.wait_line("accepted ", 30).await,
            "generation {g}: accepted {}",
            child.lines_with("accepted ").len()
        );
        if g < kills {
            // An incoming message held unhandled (so unacknowledged) at every kill: the
            // broker must send it again, and the restarted process handle it once.
            std::fs::write(&hold, b"").unwrap();
            assert!(
                child.wait_line("holding ", 1).await,
                "generation {g} never held an incoming message"
            );
            broker.pause();
            std::fs::write(&quiet, b"").unwrap();
            assert!(
                child.wait_line("quiet", 1).await,
                "generation {g} did not settle"
            );
            child.kill9();
            std::fs::remove_file(&quiet).unwrap();
            std::fs::remove_file(&hold).unwrap();
            broker.resume();
            accepted.extend(child.lines_with("accepted "));
            continue;
        }
        // The last process runs to the end: the feeder stops (its last message is `end`),
        // the process handles everything, stops publishing and empties its outbox.
        let sent = feeder.take().unwrap().finish().await;
        let handled_log = dir.path().join("handled.log");
        let all_in = poll_until_async(T, || {
            let log = std::fs::read_to_string(&handled_log).unwrap_or_default();
            async move { log.lines().any(|l| l == "end") }
        })
        .await;
        assert!(all_in, "the feeder's last message was never handled");
        std::fs::write(&quiet, b"").unwrap();
        let drained = child.wait_line("drained", 1).await;
        if !drained {
            std::fs::write("/tmp/wtb-broker.log", broker.log()).unwrap();
        }
        assert!(
            drained,
            "the outbox never emptied: {:?}\n{}",
            child.lines_with("outbox "),
            broker
                .log()
                .lines()
                .filter(|l| l.contains(CHILD_CLIENT) && !l.contains("PING"))
                .rev()
                .take(60)
                .collect::<Vec<_>>()
                .join("\n")
        );
        accepted.extend(child.lines_with("accepted "));
        // Everything the process published is at the broker: a last message after it
        // reaches the watcher after every one of them.
        let port = broker.port();
        actix_rt::task::spawn_blocking(move || publish(port, "out/end", "end", 2, false))
            .await
            .unwrap();
        assert!(
            watcher.wait_for_line_async("out/end end", T).await,
            "{:?}",
            watcher.lines().len()
        );
        child.kill9();

        let out = tally(watcher.payloads().into_iter().filter(|p| p != "end"));
        let handled = tally(
            std::fs::read_to_string(&handled_log)
                .unwrap()
                .lines()
                .filter(|l| *l != "end")
                .map(str::to_string),
        );
        let log = broker.log();
        let resent_by_process = log
            .matches(&format!("Received PUBLISH from {CHILD_CLIENT} (d1"))
            .count();
        let pubrel_resent = log
            .lines()
            .filter(|l| l.contains(&format!("Received PUBREL from {CHILD_CLIENT}")))
            .count();
        let resent_by_broker = log
            .matches(&format!("Sending PUBLISH to {CHILD_CLIENT} (d1"))
            .count();
        // Every message the watcher got was released once; PUBRELs beyond that are re-sends.
        let pubrel_resent = pubrel_resent.saturating_sub(out.values().sum::<usize>());
        let out_dups: Vec<_> = out.iter().filter(|(_, n)| **n > 1).collect();
        let in_dups: Vec<_> = handled.iter().filter(|(_, n)| **n > 1).collect();
        // A packet id the broker still held for another message: the process re-sent
        // something under the wrong id, or a held message as new (mosquitto then drops the
        // one it held, so this shows as neither a loss nor a duplicate at the watcher).
        let reused = log
            .lines()
            .filter(|l| l.contains("Reused message ID"))
            .count();
        let out_missing: Vec<_> = accepted
            .iter()
            .filter(|p| !out.contains_key(*p))
            .take(20)
            .collect();
        let in_missing: Vec<_> = (0..sent)
            .map(|i| i.to_string())
            .filter(|i| !handled.contains_key(i))
            .take(20)
            .collect();
        figure(
            "session-state-sigkill",
            serde_json::json!({
                "kills": kills,
                "outgoing_accepted": accepted.len(),
                "outgoing_at_watcher": out.values().sum::<usize>(),
                "outgoing_duplicates": out_dups.len(),
                "outgoing_resent_dup_received_by_broker": resent_by_process,
                "outgoing_pubrel_resent": pubrel_resent,
                "incoming_sent": sent,
                "incoming_handled": handled.values().sum::<usize>(),
                "incoming_duplicates": in_dups.len(),
                "incoming_resent_dup_by_broker": resent_by_broker,
                "packet_ids_reused_at_broker": reused,
            }),
        );
        assert!(
            out_dups.is_empty() && in_dups.is_empty(),
            "delivered more than once: outgoing {} ({:?}…), incoming {} ({:?}…)",
            out_dups.len(),
            &out_dups[..out_dups.len().min(20)],
            in_dups.len(),
            &in_dups[..in_dups.len().min(20)]
        );
        assert!(
            out_missing.is_empty() && in_missing.is_empty(),
            "lost: outgoing {out_missing:?}, incoming {in_missing:?}"
        );
        assert_eq!(reused, 0, "the broker saw packet ids reused");
        // The kills caught messages in flight both ways, or the test proved nothing.
        assert!(
            resent_by_process + pubrel_resent > 0 && resent_by_broker > 0,
            "nothing resumed (process: {resent_by_process} PUBLISH with DUP, \
             {pubrel_resent} PUBREL; broker: {resent_by_broker} PUBLISH with DUP)"
        );
    }
}
