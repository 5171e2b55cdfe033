//! `mqtt-sessions check-config`: what a valid configuration will do, in plain words.

use std::fmt::Write;

use super::config::{Config, SessionConfig};

impl Config {
    /// A readable summary: brokers, sessions, subscriptions, forwarding rules, endpoints.
    pub fn explain(&self) -> String {
        let mut o = String::new();
        let file = self
            .path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<config>".into());
        let _ = writeln!(o, "{file}: valid");
        for w in &self.warnings {
            let _ = writeln!(o, "warning: {w}");
        }
        match &self.embedded_broker {
            Some(b) => {
                let _ = writeln!(
                    o,
                    "embedded broker: mqtt://{} (max message size {}, max {} connections)",
                    b.listen.get_ref(),
                    b.max_message_size,
                    b.max_connections
                );
            }
            None => {
                let _ = writeln!(o, "embedded broker: none");
            }
        }
        match &self.http {
            Some(h) => {
                let scheme = if h.tls.is_some() { "https" } else { "http" };
                let _ = writeln!(
                    o,
                    "http: {scheme}://{}/ (status page /, /events, /sessions, /metrics, /healthz, /readyz)",
                    h.listen
                );
                let mut auth = Vec::new();
                if !h.basic_auth_users.is_empty() {
                    auth.push(format!("basic auth ({} users)", h.basic_auth_users.len()));
                }
                if h.bearer_token_file.is_some() {
                    auth.push("bearer token".to_string());
                }
                let open: Vec<&str> = h.open_paths.iter().map(|p| p.get_ref().as_str()).collect();
                let _ = writeln!(
                    o,
                    "  auth: {}{}",
                    if auth.is_empty() {
                        "none (anyone who can connect may read)".to_string()
                    } else {
                        auth.join(" or ")
                    },
                    if open.is_empty() || auth.is_empty() {
                        String::new()
                    } else {
                        format!("; open: {}", open.join(", "))
                    }
                );
            }
            None => {
                let _ = writeln!(o, "http: none");
            }
        }
        match self.store.as_ref().and_then(|s| s.path.as_ref()) {
            Some(p) => {
                let _ = writeln!(o, "store: {}", p.get_ref().display());
            }
            None => {
                let _ = writeln!(o, "store: in memory");
            }
        }
        let _ = writeln!(o, "shutdown timeout: {:?}", self.shutdown_timeout);
        let _ = writeln!(o, "sessions ({}):", self.sessions.len());
        for s in &self.sessions {
            session(&mut o, s);
        }
        let _ = writeln!(o, "forwarding rules ({}):", self.forward.len());
        for r in &self.forward {
            let targets = r.all_targets();
            let describe = |t: &super::config::ForwardTarget| {
                format!(
                    "{} {:?} (QoS {}{})",
                    t.to.get_ref(),
                    t.topic.get_ref(),
                    match t.qos {
                        super::config::Keep::Keep => "kept".to_string(),
                        super::config::Keep::Set(q) => q.to_string(),
                    },
                    match t.retain {
                        super::config::Keep::Keep => ", retain flag kept",
                        super::config::Keep::Set(true) => ", retained",
                        super::config::Keep::Set(false) => "",
                    }
                )
            };
            let head = format!(
                "  {}: {} {:?} ->",
                r.name.get_ref(),
                r.from.get_ref(),
                r.filter.get_ref()
            );
            if let [one] = targets.as_slice() {
                let _ = writeln!(o, "{head} {}", describe(one));
            } else {
                let _ = writeln!(o, "{head} {} targets:", targets.len());
                for t in &targets {
                    let _ = writeln!(o, "    {}", describe(t));
                }
            }
        }
        o
    }
}

fn session(o: &mut String, s: &SessionConfig) {
    let auth = match (&s.username, &s.password, &s.password_file, &s.password_env) {
        (None, ..) => "anonymous".to_string(),
        (Some(u), _, Some(f), _) => format!("user {u:?}, password from file {:?}", f.get_ref()),
        (Some(u), _, _, Some(v)) => format!("user {u:?}, password from ${}", v.get_ref()),
        (Some(u), Some(_), ..) => format!("user {u:?}, inline password"),
        (Some(u), ..) => format!("user {u:?}, no password"),
    };
    let _ = writeln!(
        o,
        "  {}: brokers {}; client id {}; {}; keep-alive {:?}; clean session {}",
        s.name(),
        s.brokers.join(", "),
        s.client_id.as_deref().unwrap_or("(generated)"),
        auth,
        s.connect.keep_alive,
        s.connect.clean_session,
    );
    for sub in &s.subscriptions {
        let _ = writeln!(
            o,
            "    subscribes to {:?} at QoS {}",
            sub.filter.get_ref(),
            sub.qos
        );
    }
}
