//! Link-state topics: a session can announce whether its connection is up, the way
//! mosquitto's bridge `notifications` do. With `link_state_topic` set on a session, the
//! daemon publishes a retained `1` (QoS 1) through it on every connect, sets a retained
//! `0` as its will (the broker publishes it when the connection drops), and publishes a
//! retained `0` itself at a clean shutdown.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mqtt_sessions::event::EventKind;
use mqtt_sessions::manager::SessionManager;
use mqtt_sessions::message::{Publish, QoS};

/// Payload of a link that is up.
pub(crate) const UP: &str = "1";
/// Payload of a link that is down.
pub(crate) const DOWN: &str = "0";
/// How long a clean shutdown waits for each `0` to be acknowledged.
const DOWN_TIMEOUT: Duration = Duration::from_secs(2);

/// Session name → its link-state topic, for the configuration in force.
pub(crate) type Topics = Arc<RwLock<BTreeMap<String, String>>>;

/// The publish announcing a link's state.
fn announcement(topic: &str, payload: &'static str) -> Publish {
    Publish::new(topic, payload)
        .qos(QoS::AtLeastOnce)
        .retain(true)
}

/// Publishes `1` on a session's topic each time it connects, for as long as the
/// manager lives (on the current arbiter).
pub(crate) fn watch(manager: &SessionManager, topics: Topics) {
    let mut events = manager.events();
    let manager = manager.clone();
    actix::spawn(async move {
        while let Some(ev) = events.recv().await {
            if ev.kind() != EventKind::SessionConnected {
                continue;
            }
            let topic = topics
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&*ev.session)
                .cloned();
            let (Some(topic), Ok(session)) = (topic, manager.session(&ev.session)) else {
                continue;
            };
            if let Err(e) = session.enqueue(announcement(&topic, UP)).await {
                tracing::warn!(session = %ev.session, topic = %topic, error = %e, "cannot announce the link up");
            }
        }
    });
}

/// Publishes `0` on every link-state topic (a clean shutdown: no will is sent then).
pub(crate) async fn announce_down(manager: &SessionManager, topics: &Topics) {
    let topics = topics.read().unwrap_or_else(|e| e.into_inner()).clone();
    let downs = topics.iter().filter_map(|(name, topic)| {
        let session = manager.session(name).ok()?;
        let topic = topic.clone();
        Some(async move {
            let sent =
                tokio::time::timeout(DOWN_TIMEOUT, session.publish(announcement(&topic, DOWN)))
                    .await;
            if !matches!(sent, Ok(Ok(()))) {
                tracing::warn!(session = %session.name(), topic = %topic, "link down not announced before shutdown (the will announces it)");
            }
        })
    });
    futures_util::future::join_all(downs).await;
}
