//! `GET /events`: the manager's events as Server-Sent Events.
//!
//! Each client gets a forwarder task reading the manager's [`EventStream`] and a bounded
//! queue ([`HttpOptions::sse_buffer`](super::HttpOptions::sse_buffer) events) that the
//! response body drains. A client that lets the queue fill up (it does not read, or reads
//! slower than events come) is cut off: the forwarder drops the queue, ends the response
//! and counts it in `<prefix>_http_sse_clients_dropped_total`. So one client holds at
//! most its queue plus the socket buffers, however slow it is; `<prefix>_http_sse_clients`
//! counts those being served. (The response ends as soon as actix can write to the
//! connection again; a peer that neither reads nor closes keeps its socket, and no more.) A `: keep-alive` comment goes out every [`KEEP_ALIVE`].
//!
//! Each event is one `data:` line of JSON:
//! `{"kind":"session_connected","session":"edge","time":1700000000.123,"data":{"broker":"mqtt://…","session_present":false}}`
//! (`time` in Unix seconds; `data` holds the kind's fields, see [`EventData`]), with an
//! `id:` counting the client's events from 1.
//!
//! [`EventData`]: crate::event::EventData

use std::collections::BTreeSet;
use std::time::{Duration, UNIX_EPOCH};

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use tokio::sync::mpsc;

use super::auth::Authorized;
use super::State;
use crate::event::{Event, EventKind, EventStream};

/// How often an idle stream sends a `: keep-alive` comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Every kind, by name.
const KINDS: [EventKind; EventKind::ALL.len()] = EventKind::ALL;

/// Which events a client wants: `?session=` and `?kind=`, each repeatable or
/// comma-separated; absent means all.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct EventFilter {
    sessions: BTreeSet<String>,
    kinds: BTreeSet<&'static str>,
}

impl EventFilter {
    /// Parses a query string; an unknown key or kind is an error message.
    pub(crate) fn parse(query: &str) -> Result<Self, String> {
        let mut f = EventFilter::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value).ok_or_else(|| format!("bad escape in {pair:?}"))?;
            for v in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                match key {
                    "session" => {
                        f.sessions.insert(v.to_string());
                    }
                    "kind" => {
                        let k = KINDS
                            .iter()
                            .map(|k| k.as_str())
                            .find(|k| *k == v)
                            .ok_or_else(|| format!("unknown event kind {v:?}"))?;
                        f.kinds.insert(k);
                    }
                    other => return Err(format!("unknown parameter {other:?} (session, kind)")),
                }
            }
        }
        Ok(f)
    }

    fn wants(&self, e: &Event) -> bool {
        (self.sessions.is_empty() || self.sessions.contains(&*e.session))
            && (self.kinds.is_empty() || self.kinds.contains(e.kind().as_str()))
    }
}

/// `application/x-www-form-urlencoded` value decoding (`%XX` and `+`); `None` for a
/// malformed escape (`%zz`, a `%` near the end) or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    // percent-encoding keeps a malformed escape as it is: a filter refuses it instead.
    let malformed = s.match_indices('%').any(|(i, _)| {
        !s.get(i + 1..i + 3)
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if malformed {
        return None;
    }
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8()
        .ok()
        .map(|v| v.into_owned())
}

/// One event as a JSON object: kind, session, time (Unix seconds), data.
pub(crate) fn event_json(e: &Event) -> serde_json::Value {
    let mut data = serde_json::to_value(&e.data).unwrap_or_default();
    if let Some(map) = data.as_object_mut() {
        map.remove("kind");
    }
    let time = e
        .time
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    serde_json::json!({
        "kind": e.kind().as_str(),
        "session": &*e.session,
        "time": time,
        "data": data,
    })
}

/// `GET /events[?session=a,b&kind=session_state_changed]`.
pub(crate) async fn events(
    _: Authorized,
    state: web::Data<State>,
    req: HttpRequest,
) -> HttpResponse {
    let filter = match EventFilter::parse(req.query_string()) {
        Ok(f) => f,
        Err(e) => {
            return HttpResponse::BadRequest()
                .content_type("text/plain; charset=utf-8")
                .body(format!("{e}\n"))
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(state.sse_buffer);
    let stream = state.manager.events();
    let stats = state.stats.clone();
    stats.sse_clients.inc();
    let closing = state.closing.clone();
    actix_web::rt::spawn(forward(stream, filter, tx, stats, closing));
    let body = futures_util::stream::unfold(
        (
            rx,
            tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE),
        ),
        |(mut rx, mut tick)| async move {
            let chunk = tokio::select! {
                next = rx.recv() => next?,
                _ = tick.tick() => Bytes::from_static(b": keep-alive\n\n"),
            };
            Some((Ok::<_, std::convert::Infallible>(chunk), (rx, tick)))
        },
    );
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body)
}

/// Copies matching events into one client's queue until the client goes away or falls
/// behind (its queue is full: it is cut off and counted).
async fn forward(
    mut stream: EventStream,
    filter: EventFilter,
    tx: mpsc::Sender<Bytes>,
    stats: std::sync::Arc<super::stats::HttpStats>,
    closing: Option<tokio::sync::watch::Receiver<bool>>,
) {
    let closed = async move {
        match closing {
            Some(mut c) => {
                let _ = c.wait_for(|closing| *closing).await;
            }
            None => std::future::pending().await,
        }
    };
    let mut closed = std::pin::pin!(closed);
    // The first chunk opens the stream at once (and tells EventSource to retry in 2 s).
    let mut alive = tx.try_send(Bytes::from_static(b"retry: 2000\n\n")).is_ok();
    let mut id: u64 = 0;
    while alive {
        let event = tokio::select! {
            e = stream.recv() => e,
            () = tx.closed() => break,
            () = &mut closed => break,
        };
        let Some(event) = event else { break };
        if stream.lagged() > 0 {
            // The manager's broadcast ring overtook even this task: events were lost for
            // this client, which it must not be left unaware of.
            stats.sse_dropped.inc();
            tracing::warn!(
                skipped = stream.lagged(),
                "event stream client lost events; disconnecting it"
            );
            break;
        }
        if !filter.wants(&event) {
            continue;
        }
        id += 1;
        let line = format!("id: {id}\ndata: {}\n\n", event_json(&event));
        match tx.try_send(Bytes::from(line)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                stats.sse_dropped.inc();
                tracing::info!(
                    buffered = tx.max_capacity(),
                    "event stream client too slow; disconnecting it"
                );
                alive = false;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => alive = false,
        }
    }
    stats.sse_clients.dec();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_repeated_and_comma_separated_values() {
        let f = EventFilter::parse("session=a,b&session=c&kind=session_ready%2Csession_added")
            .unwrap_or_default();
        assert_eq!(
            f.sessions.iter().map(String::as_str).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(
            f.kinds.iter().copied().collect::<Vec<_>>(),
            ["session_added", "session_ready"]
        );
        assert_eq!(EventFilter::parse(""), Ok(EventFilter::default()));
        assert!(EventFilter::parse("kind=nope").is_err());
        assert!(EventFilter::parse("colour=red").is_err());
        assert!(EventFilter::parse("session=%zz").is_err());
        assert!(EventFilter::parse("session=a%2").is_err());
        assert!(EventFilter::parse("session=%ff").is_err(), "not UTF-8");
        let f = EventFilter::parse("session=%E7%94%9F%E4%BA%A7,plant+1").expect("valid");
        assert_eq!(
            f.sessions.iter().map(String::as_str).collect::<Vec<_>>(),
            ["plant 1", "生产"]
        );
    }

    #[test]
    fn an_event_is_kind_session_time_and_data() {
        let e = Event::new(
            "edge".into(),
            crate::event::EventData::SessionReady { subscriptions: 2 },
        );
        let j = event_json(&e);
        assert_eq!(j["kind"], "session_ready");
        assert_eq!(j["session"], "edge");
        assert_eq!(j["data"]["subscriptions"], 2);
        assert!(j["data"].get("kind").is_none());
        assert!(j["time"].as_f64().is_some_and(|t| t > 1.0e9));
    }
}
