//! MQTT 5 request/response on top of routes, for one session's handle:
//! [`SessionManager::request`](crate::SessionManager::request) and
//! [`SessionManager::respond`](crate::SessionManager::respond) call in here.
//!
//! Each MQTT 5 session gets, on its first request, one response route: a session route on
//! its own response topic `mqtt-sessions/responses/{random}` (unguessable, so two
//! processes sharing a broker never read each other's answers), subscribed at QoS 1.
//! Every request carries that topic as its response topic and 16 random bytes of
//! correlation data; the route's handler hands each response to the request waiting for
//! its correlation data, so any number of concurrent requests share the one subscription.
//! A response that arrives after its request timed out is dropped (debug log).
//!
//! The route belongs to the session: removing the session ends it, and a session added
//! again under the same name gets a new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use actix::Addr;
use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::Error;
use crate::message::{Message, Publish, QoS};
use crate::options::Protocol;
use crate::router::builder::RouteBuilder;
use crate::router::route::Route;
use crate::router::RouterActor;
use crate::session::handle::SessionHandle;
use crate::session::SessionActor;

/// Prefix of the response topics.
pub(crate) const RESPONSE_TOPIC_PREFIX: &str = "mqtt-sessions/responses/";

/// Capacity of a session's response route (responses are handed over at once, so this
/// only absorbs bursts).
const RESPONSE_ROUTE_CAPACITY: usize = 1024;

/// The request/response state of one session.
#[derive(Debug)]
pub(crate) struct Requests {
    /// The session actor this state belongs to (a session re-added under the same name
    /// has another actor, and gets new state).
    addr: Addr<SessionActor>,
    topic: String,
    waiting: Mutex<HashMap<Bytes, oneshot::Sender<Message>>>,
    route: tokio::sync::OnceCell<Route>,
}

impl Requests {
    fn new(addr: Addr<SessionActor>) -> Self {
        Requests {
            addr,
            topic: format!("{RESPONSE_TOPIC_PREFIX}{:032x}", random_u128()),
            waiting: Mutex::new(HashMap::new()),
            route: tokio::sync::OnceCell::new(),
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<Bytes, oneshot::Sender<Message>>> {
        // A panic while holding this lock cannot leave the map inconsistent (one insert
        // or remove), so a poisoned lock is used as is.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Called by the response route's handler.
    fn deliver(&self, msg: &Message) {
        let Some(corr) = msg.correlation_data() else {
            tracing::debug!(session = %msg.session, topic = %msg.topic, "response without correlation data dropped");
            return;
        };
        match self.waiting().remove(corr) {
            Some(tx) => {
                // The response is handled once it reaches its request: the caller may keep it.
                let _ = tx.send(msg.detached());
            }
            None => {
                tracing::debug!(session = %msg.session, topic = %msg.topic, "response to no waiting request (timed out?) dropped")
            }
        }
    }
}

/// The request/response state of every session of a manager, by session name.
#[derive(Debug, Default)]
pub(crate) struct RequestRegistry {
    sessions: Mutex<HashMap<String, Arc<Requests>>>,
}

impl RequestRegistry {
    fn for_session(&self, h: &SessionHandle) -> Arc<Requests> {
        let mut map = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Forget sessions that are gone, and the state of an older session of this name.
        map.retain(|_, r| r.addr.connected());
        let entry = map
            .entry(h.name().to_string())
            .or_insert_with(|| Arc::new(Requests::new(h.addr().clone())));
        if entry.addr != *h.addr() {
            *entry = Arc::new(Requests::new(h.addr().clone()));
        }
        Arc::clone(entry)
    }
}

fn require_v5(h: &SessionHandle, feature: &'static str) -> Result<(), Error> {
    if h.options().protocol == Protocol::V5 {
        Ok(())
    } else {
        Err(Error::Mqtt5Required {
            session: h.name().to_string(),
            feature,
        })
    }
}

/// Sends `publish` through the session of `h` with its response topic and fresh
/// correlation data, and waits for the answer (see `SessionManager::request_with`).
/// `router` creates the session's response route on its first request.
pub(crate) async fn request(
    registry: &RequestRegistry,
    router: &Addr<RouterActor>,
    h: SessionHandle,
    publish: Publish,
    timeout: Duration,
) -> Result<Message, Error> {
    require_v5(&h, "request/response")?;
    let session = h.name().to_string();
    let topic = publish.topic.clone();
    let requests = registry.for_session(&h);
    let work = async {
        requests
            .route
            .get_or_try_init(|| async {
                let weak: Weak<Requests> = Arc::downgrade(&requests);
                RouteBuilder::new(router.clone(), &requests.topic)
                    .session(&session)
                    .qos(QoS::AtLeastOnce)
                    .capacity(RESPONSE_ROUTE_CAPACITY)
                    .handle(move |m: &Message| {
                        if let Some(r) = weak.upgrade() {
                            r.deliver(m);
                        }
                    })
                    .await
            })
            .await?;
        let corr = Bytes::copy_from_slice(&random_u128().to_be_bytes());
        let (tx, rx) = oneshot::channel();
        requests.waiting().insert(corr.clone(), tx);
        let guard = Forget(&requests, corr.clone());
        h.publish(
            publish
                .response_topic(requests.topic.clone())
                .correlation_data(corr),
        )
        .await?;
        let answer = rx.await.map_err(|_| Error::SessionClosed(session.clone()));
        drop(guard);
        answer
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(res) => res,
        Err(_) => Err(Error::RequestTimeout {
            session: h.name().to_string(),
            topic,
            timeout,
        }),
    }
}

/// Answers `request` through the session of `h` (see `SessionManager::respond`).
pub(crate) async fn respond(
    h: SessionHandle,
    request: &Message,
    payload: Bytes,
) -> Result<(), Error> {
    let topic = request.response_topic().ok_or_else(|| Error::NotARequest {
        topic: request.topic.to_string(),
    })?;
    require_v5(&h, "responding to a request")?;
    let mut p = Publish::new(topic, payload).qos(QoS::AtLeastOnce);
    if let Some(corr) = request.correlation_data() {
        p = p.correlation_data(corr.clone());
    }
    h.publish(p).await
}

/// Removes a request's waiting entry when the request ends, however it ends.
struct Forget<'a>(&'a Requests, Bytes);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.waiting().remove(&self.1);
    }
}

/// 128 bits from the operating system's cryptographic RNG (response topics and
/// correlation data must not be guessable by another client of the broker). Should the
/// OS refuse (it does not on supported systems), falls back to `fastrand`, logged.
fn random_u128() -> u128 {
    let mut bytes = [0u8; 16];
    match getrandom::getrandom(&mut bytes) {
        Ok(()) => u128::from_be_bytes(bytes),
        Err(e) => {
            tracing::error!(error = %e, "the OS random number generator failed; using fastrand");
            fastrand::u128(..)
        }
    }
}
