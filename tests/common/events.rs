//! Helpers around the crate under test: fast-reconnect options, an event recorder,
//! tracing set-up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mqtt_sessions::{Event, EventData, SessionManager, SessionOptions};

/// Options for a test session: reconnect quickly (100 ms .. 1 s), short keep-alive.
pub fn fast_opts(name: &str, url: &str) -> SessionOptions {
    let mut o = SessionOptions::new(name, url);
    o.reconnect.initial_delay = Duration::from_millis(100);
    o.reconnect.max_delay = Duration::from_secs(1);
    o.connect.keep_alive = Duration::from_secs(5);
    o.connect.connect_timeout = Duration::from_secs(2);
    o
}

/// Logs to the test's captured output; `RUST_LOG` chooses the level (default `warn`).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// Records every event of a manager from the moment it is created.
#[derive(Clone)]
pub struct EventLog {
    events: Arc<Mutex<Vec<Event>>>,
}

impl EventLog {
    /// Starts recording (spawns a local task on the current actix system).
    pub fn start(manager: &SessionManager) -> EventLog {
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut stream = manager.events();
        let sink = Arc::clone(&events);
        actix_rt::spawn(async move {
            while let Some(ev) = stream.recv().await {
                sink.lock().unwrap().push(ev);
            }
        });
        EventLog { events }
    }

    /// Every event so far.
    pub fn all(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// The events of one session so far.
    pub fn of(&self, session: &str) -> Vec<EventData> {
        self.all()
            .into_iter()
            .filter(|e| &*e.session == session)
            .map(|e| e.data)
            .collect()
    }

    /// Number of events of `session` matching `pred`.
    pub fn count(&self, session: &str, pred: impl Fn(&EventData) -> bool) -> usize {
        self.of(session).iter().filter(|d| pred(d)).count()
    }

    /// Waits until `session` has at least `n` events matching `pred`.
    pub async fn wait_count(
        &self,
        session: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&EventData) -> bool,
    ) -> bool {
        super::poll_until_async(timeout, || {
            let ok = self.count(session, &pred) >= n;
            async move { ok }
        })
        .await
    }
}
