//! `Running`: what the daemon runs for a configuration (sessions, subscription routes,
//! forwarding rules), and how it moves to another configuration on reload: only the
//! sessions and rules whose configuration changed are restarted. A session's
//! configuration includes the contents of the files it reads when it starts (TLS CA,
//! client certificate and key, password file): a certificate renewed in place restarts
//! its session at the next reload, as a changed path would.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::config::{Config, SessionConfig};
use super::forward::{ForwardStats, ForwardStatsSnapshot, RunningRule};
use mqtt_sessions::error::Error;
use mqtt_sessions::manager::SessionManager;
use mqtt_sessions::message::QoS;
use mqtt_sessions::router::route::Route;

/// How long a rule being replaced on reload may take to drain its queue.
const RELOAD_DRAIN: Duration = Duration::from_secs(5);

/// Counters of the daemon itself (exported as metrics by the HTTP layer later).
#[derive(Debug, Default)]
pub struct DaemonStats {
    /// Successful reloads.
    pub config_reloads: AtomicU64,
    /// Reloads refused because the new file was invalid (the old configuration kept running).
    pub config_reload_failures: AtomicU64,
    rules: Mutex<BTreeMap<String, Arc<ForwardStats>>>,
    last_reload: Mutex<Option<ReloadOutcome>>,
}

/// How the last reload went.
#[derive(Debug, Clone, PartialEq)]
pub struct ReloadOutcome {
    /// Was the new configuration applied without error?
    pub ok: bool,
    /// When (Unix time, seconds).
    pub timestamp_seconds: f64,
    /// `ok`, or why not (one line).
    pub summary: String,
}

impl DaemonStats {
    /// Counters of every forwarding rule, by name.
    pub fn forward(&self) -> BTreeMap<String, ForwardStatsSnapshot> {
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.snapshot()))
            .collect()
    }

    /// Counters of every target of every forwarding rule, by rule and target session.
    pub fn forward_targets(&self) -> BTreeMap<(String, String), ForwardStatsSnapshot> {
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flat_map(|(rule, v)| {
                v.by_target()
                    .into_iter()
                    .map(move |(target, s)| ((rule.clone(), target), s))
            })
            .collect()
    }

    /// How the last reload went; `None` before the first one.
    pub fn last_reload(&self) -> Option<ReloadOutcome> {
        self.last_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn rule(&self, name: &str) -> Arc<ForwardStats> {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(rules.entry(name.to_string()).or_default())
    }
}

/// A hash of the contents of the files `session` reads when it starts: its TLS CA, client
/// certificate and key, and its password file (a missing or unreadable file hashes as
/// such, so that it becoming readable counts as a change). `by_path` keeps each file's
/// hash for the rest of one reload: sessions sharing a CA read it once.
fn files_hash(session: &SessionConfig, by_path: &mut BTreeMap<PathBuf, u64>) -> u64 {
    let tls = session.tls.as_ref();
    let files = [
        tls.and_then(|t| t.ca_file.as_deref()),
        tls.and_then(|t| t.client_cert.as_deref()),
        tls.and_then(|t| t.client_key.as_deref()),
        session
            .password_file
            .as_ref()
            .map(|p| p.get_ref().as_path()),
    ];
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for file in files {
        file.map(|p| file_hash(p, by_path)).hash(&mut h);
    }
    h.finish()
}

/// One file's content hash (through `by_path`).
fn file_hash(path: &Path, by_path: &mut BTreeMap<PathBuf, u64>) -> u64 {
    *by_path.entry(path.to_path_buf()).or_insert_with(|| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::fs::read(path).map_err(|e| e.kind()).hash(&mut h);
        h.finish()
    })
}

/// Key of a subscription route: session, filter, QoS, route name.
type SubKey = (String, String, QoS, String);

/// The sessions, subscriptions and rules of the configuration in force.
#[derive(Debug)]
pub(crate) struct Running {
    manager: SessionManager,
    config: Option<Config>,
    subscriptions: BTreeMap<SubKey, Route>,
    rules: BTreeMap<String, RunningRule>,
    /// Per running session: the hash of its files' contents taken when it started.
    files: BTreeMap<String, u64>,
    stats: Arc<DaemonStats>,
    /// The sessions' link-state topics (see [`link_state`](super::link_state)).
    link_topics: super::link_state::Topics,
}

impl Running {
    pub(crate) fn new(manager: SessionManager, stats: Arc<DaemonStats>) -> Self {
        let link_topics = super::link_state::Topics::default();
        super::link_state::watch(&manager, Arc::clone(&link_topics));
        Running {
            manager,
            config: None,
            subscriptions: BTreeMap::new(),
            rules: BTreeMap::new(),
            files: BTreeMap::new(),
            stats,
            link_topics,
        }
    }

    pub(crate) fn config(&self) -> Option<&Config> {
        self.config.as_ref()
    }

    /// Moves to `new`: restarts what changed, leaves the rest untouched. Returns the
    /// errors met on the way (a session or rule that could not be started).
    pub(crate) async fn apply(&mut self, new: Config) -> Vec<Error> {
        let mut errors = Vec::new();
        let old_sessions: BTreeMap<String, _> = self
            .config
            .iter()
            .flat_map(|c| &c.sessions)
            .map(|s| (s.name().to_string(), s.options()))
            .collect();
        let new_sessions: BTreeMap<String, _> = new
            .sessions
            .iter()
            .map(|s| (s.name().to_string(), s.options()))
            .collect();
        // The files of every session of the new configuration, hashed before any session
        // starts (reading them): a file changed after this is seen at the next reload.
        let mut by_path = BTreeMap::new();
        let new_files: BTreeMap<String, u64> = new
            .sessions
            .iter()
            .map(|s| (s.name().to_string(), files_hash(s, &mut by_path)))
            .collect();
        // Sessions to take down: gone, changed, or a file of theirs changed.
        let restarted: BTreeSet<String> = old_sessions
            .iter()
            .filter(|(n, o)| {
                let changed = new_sessions.get(*n) != Some(o);
                let files_changed = !changed
                    && self
                        .files
                        .get(*n)
                        .is_some_and(|h| Some(h) != new_files.get(*n));
                if files_changed {
                    tracing::info!(session = %n, "the contents of its TLS or password files changed");
                }
                changed || files_changed
            })
            .map(|(n, _)| n.clone())
            .collect();
        let added: Vec<String> = new_sessions
            .keys()
            .filter(|n| restarted.contains(*n) || !old_sessions.contains_key(*n))
            .cloned()
            .collect();

        // 1. Rules that changed, went away or read from a restarted session stop first,
        //    so what they already accepted is forwarded before their source goes.
        let new_rules: BTreeMap<&str, _> = new
            .forward
            .iter()
            .map(|r| (r.name.get_ref().as_str(), r))
            .collect();
        let stopping: Vec<String> = self
            .rules
            .iter()
            .filter(|(name, rule)| {
                new_rules.get(name.as_str()) != Some(&rule.config())
                    || restarted.contains(rule.config().from.get_ref())
            })
            .map(|(n, _)| n.clone())
            .collect();
        let stops = stopping
            .iter()
            .filter_map(|n| self.rules.remove(n))
            .map(|r| r.stop(RELOAD_DRAIN));
        futures_util::future::join_all(stops).await;

        // 2. Subscription routes no longer wanted, or on a restarted session.
        let wanted: BTreeSet<SubKey> = new
            .sessions
            .iter()
            .flat_map(|s| {
                s.subscriptions.iter().map(|sub| {
                    (
                        s.name().to_string(),
                        sub.filter.get_ref().clone(),
                        sub.qos,
                        sub.route_name(s.name()),
                    )
                })
            })
            .collect();
        self.subscriptions
            .retain(|k, _| wanted.contains(k) && !restarted.contains(&k.0));

        // 3. Sessions (their link-state topics known before they connect).
        *self.link_topics.write().unwrap_or_else(|e| e.into_inner()) = new.link_state_topics();
        for name in &restarted {
            tracing::info!(session = %name, "stopping session (removed or changed)");
            self.files.remove(name);
            if let Err(e) = self.manager.remove_session(name).await {
                errors.push(e);
            }
        }
        for name in &added {
            let opts = new_sessions[name].clone();
            match self.manager.add_session(opts).await {
                Ok(_) => {
                    tracing::info!(session = %name, "session started");
                    if let Some(h) = new_files.get(name) {
                        self.files.insert(name.clone(), *h);
                    }
                }
                Err(e) => errors.push(e),
            }
        }

        // 4. Subscription routes and rules not running yet.
        for key in wanted {
            if self.subscriptions.contains_key(&key) || self.manager.session(&key.0).is_err() {
                continue;
            }
            let session = key.0.clone();
            let route = self
                .manager
                .route(&key.1)
                .session(&key.0)
                .qos(key.2)
                .name(key.3.clone())
                .handle_async(move |m| {
                    let session = session.clone();
                    async move {
                        tracing::debug!(session = %session, topic = %m.topic, qos = %m.qos,
                            bytes = m.payload.len(), "message received");
                    }
                })
                .await;
            match route {
                Ok(r) => {
                    self.subscriptions.insert(key, r);
                }
                Err(e) => errors.push(e),
            }
        }
        // Store-and-forward when the sessions' outboxes are on disk.
        let durable = new.store.as_ref().is_some_and(|s| s.path.is_some());
        for (name, rule) in new_rules {
            if self.rules.contains_key(name) {
                continue;
            }
            match RunningRule::start(&self.manager, rule, self.stats.rule(name), durable).await {
                Ok(r) => {
                    self.rules.insert(name.to_string(), r);
                }
                Err(e) => errors.push(e),
            }
        }
        self.config = Some(new);
        errors
    }

    /// Shutdown, step one: stops every rule and subscription and lets the rules forward
    /// what they already accepted, for up to `grace`.
    pub(crate) async fn stop(&mut self, grace: Duration) {
        self.subscriptions.clear();
        let rules = std::mem::take(&mut self.rules);
        futures_util::future::join_all(rules.into_values().map(|r| r.stop(grace))).await;
        super::link_state::announce_down(&self.manager, &self.link_topics).await;
    }

    /// Counts a reload and remembers how it went (`summary`: `ok` or the reason); returns
    /// the new count of its kind.
    pub(crate) fn note_reload(&self, ok: bool, summary: String) -> u64 {
        let timestamp_seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        *self
            .stats
            .last_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(ReloadOutcome {
            ok,
            timestamp_seconds,
            summary,
        });
        let counter = if ok {
            &self.stats.config_reloads
        } else {
            &self.stats.config_reload_failures
        };
        counter.fetch_add(1, Ordering::Relaxed) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_hash_follows_the_contents_of_the_tls_and_password_files() {
        let dir = tempfile::tempdir().unwrap();
        let (pw, ca) = (dir.path().join("pw"), dir.path().join("ca.pem"));
        std::fs::write(&pw, "one\n").unwrap();
        std::fs::write(&ca, "not checked here").unwrap();
        let text = format!(
            "[[sessions]]\nname = \"s\"\nbrokers = [\"mqtts://127.0.0.1:8883\"]\nusername = \"u\"\npassword_file = \"{}\"\n[sessions.tls]\nca_file = \"{}\"\n",
            pw.display(),
            ca.display()
        );
        // Parsed only (absolute paths): the hash needs the paths, not valid files.
        let session = || toml::from_str::<Config>(&text).unwrap().sessions[0].clone();
        let hash = |s: &SessionConfig| files_hash(s, &mut BTreeMap::new());
        let first = hash(&session());
        assert_eq!(first, hash(&session()), "same contents, same hash");
        std::fs::write(&pw, "two\n").unwrap();
        let second = hash(&session());
        assert_ne!(first, second, "password file changed in place");
        std::fs::write(&ca, "renewed").unwrap();
        assert_ne!(second, hash(&session()), "CA changed in place");
        std::fs::remove_file(&ca).unwrap();
        assert_ne!(second, hash(&session()), "CA gone");
    }
}
