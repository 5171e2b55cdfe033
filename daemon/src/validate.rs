//! Checks of a parsed [`Config`] beyond what serde does: unique names, sessions that
//! exist, valid filters and templates, no forwarding loop, readable secrets.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::PathBuf;

use super::config::{Config, ConfigErrorKind, ForwardTarget, SessionConfig};
use super::forward::{bounds_its_broker, lane_window};
use super::template::Template;
use mqtt_sessions::credentials::Secret;
use mqtt_sessions::options::validate_name;
use mqtt_sessions::topic::TopicFilter;

/// A refusal: where in the file (a byte range), and why.
pub(crate) type Refusal = (Option<Range<usize>>, ConfigErrorKind);

/// Validates `config`, reads its secrets into it and records warnings.
#[expect(clippy::result_large_err, reason = "cold path, boxed in ConfigError")]
pub(crate) fn validate(config: &mut Config) -> Result<(), Refusal> {
    let base = config.base_dir();
    let mut warnings = Vec::new();
    let mut names = BTreeSet::new();
    // session name -> broker authorities
    let mut brokers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut client_ids: BTreeMap<(String, String), String> = BTreeMap::new();
    for s in &mut config.sessions {
        let span = Some(s.name.span());
        let name = s.name().to_string();
        if !names.insert(name.clone()) {
            return Err((span, ConfigErrorKind::DuplicateSession(name)));
        }
        s.resolved_password = resolve_password(s, &base, &mut warnings)?;
        if let Some(topic) = &s.link_state_topic {
            let refuse = |reason: String| {
                (
                    Some(topic.span()),
                    ConfigErrorKind::LinkState {
                        session: name.clone(),
                        reason,
                    },
                )
            };
            if s.connect.will.is_some() {
                return Err(refuse(
                    "link_state_topic sets the session's will (a retained \"0\"); remove connect.will".into(),
                ));
            }
            mqtt_sessions::topic::validate_topic_name(topic.get_ref())
                .map_err(|e| refuse(e.to_string()))?;
        }
        let parsed = s
            .options()
            .validate()
            .map_err(|e| (span.clone(), e.into()))?;
        let authorities: Vec<String> = parsed.iter().map(|b| b.authority()).collect();
        if let Some(id) = &s.client_id {
            for a in &authorities {
                if let Some(first) = client_ids.insert((id.clone(), a.clone()), name.clone()) {
                    return Err((
                        span,
                        ConfigErrorKind::DuplicateClientId {
                            first,
                            second: name,
                            client_id: id.clone(),
                            broker: a.clone(),
                        },
                    ));
                }
            }
        }
        brokers.insert(name.clone(), authorities);
        for sub in &s.subscriptions {
            TopicFilter::new(sub.filter.get_ref().as_str()).map_err(|source| {
                (
                    Some(sub.filter.span()),
                    ConfigErrorKind::Filter {
                        context: format!("session {name:?}, subscription"),
                        filter: sub.filter.get_ref().clone(),
                        source,
                    },
                )
            })?;
        }
    }

    let mut rules = BTreeSet::new();
    for r in &config.forward {
        let rule = r.name.get_ref().clone();
        validate_name(&rule).map_err(|e| (Some(r.name.span()), e.into()))?;
        if !rules.insert(rule.clone()) {
            return Err((Some(r.name.span()), ConfigErrorKind::DuplicateRule(rule)));
        }
        let name_span = Some(r.name.span());
        let targets_err = |reason: &str| {
            (
                name_span.clone(),
                ConfigErrorKind::Targets {
                    rule: rule.clone(),
                    reason: reason.to_string(),
                },
            )
        };
        if !r.targets.is_empty() {
            if r.to.is_some() || r.topic.is_some() || r.qos.is_some() || r.retain.is_some() {
                return Err(targets_err(
                    "with [[forward.targets]], `to`, `topic`, `qos` and `retain` go in each target, not on the rule",
                ));
            }
        } else if r.to.is_none() {
            return Err(targets_err(
                "no target: set `to` (one target) or add [[forward.targets]] (several)",
            ));
        }
        if r.window == Some(0) {
            return Err(targets_err(
                "window = 0: a rule needs at least one message in flight",
            ));
        }
        let targets = r.all_targets();
        let mut seen = BTreeSet::new();
        for t in &targets {
            if !seen.insert(t.to.get_ref()) {
                return Err((
                    Some(t.to.span()),
                    ConfigErrorKind::Targets {
                        rule: rule.clone(),
                        reason: format!(
                            "session {:?} is a target twice (one target per session; use another rule for another topic)",
                            t.to.get_ref()
                        ),
                    },
                ));
            }
        }
        for end in std::iter::once(&r.from).chain(targets.iter().map(|t| &t.to)) {
            if !brokers.contains_key(end.get_ref()) {
                return Err((
                    Some(end.span()),
                    ConfigErrorKind::UnknownSession {
                        rule: rule.clone(),
                        session: end.get_ref().clone(),
                    },
                ));
            }
        }
        let filter = TopicFilter::new(r.filter.get_ref().as_str()).map_err(|source| {
            (
                Some(r.filter.span()),
                ConfigErrorKind::Filter {
                    context: format!("forward rule {rule:?}"),
                    filter: r.filter.get_ref().clone(),
                    source,
                },
            )
        })?;
        for t in &targets {
            check_target(
                &rule,
                r.name.span(),
                r.filter.get_ref(),
                &filter,
                t,
                &r.from,
                &brokers,
            )?;
        }
    }
    check_cycles(config, &brokers)?;
    // A session a rule publishes through gets the forwarding default of `inflight`, one
    // a rule takes from that of `receive_maximum` (MQTT 5).
    let targets: BTreeSet<String> = config
        .forward
        .iter()
        .flat_map(|r| r.all_targets())
        .map(|t| t.to.get_ref().clone())
        .collect();
    let sources: BTreeSet<String> = config
        .forward
        .iter()
        .map(|r| r.from.get_ref().clone())
        .collect();
    let groups = forward_groups(config);
    for s in &mut config.sessions {
        s.forward_target = targets.contains(s.name());
        s.forward_source = sources.contains(s.name());
        s.forward_worker = groups.get(s.name()).copied();
    }
    // The single-target form with every default filled in (`print-config` shows them).
    for r in &mut config.forward {
        r.fill_defaults();
    }

    if let Some(store) = &config.store {
        if store.flush_interval > mqtt_sessions::store::MAX_FLUSH_INTERVAL {
            return Err((
                None,
                ConfigErrorKind::Store(format!(
                    "flush_interval {:?} is longer than {:?}",
                    store.flush_interval,
                    mqtt_sessions::store::MAX_FLUSH_INTERVAL
                )),
            ));
        }
        if let Some(p) = &store.path {
            let path = base.join(p.get_ref());
            if path.exists() && !path.is_dir() {
                return Err((
                    Some(p.span()),
                    ConfigErrorKind::Store(format!(
                        "path {:?} exists and is not a directory",
                        p.get_ref()
                    )),
                ));
            }
        }
    }
    if let Some(http) = &config.http {
        let options = http
            .options(&base)
            .map_err(|(span, e)| (Some(span), ConfigErrorKind::Http(e)))?;
        if !http.listen.ip().is_loopback() && !options.requires_auth() {
            warnings.push(format!(
                "[http] listens on {} beyond loopback without basic_auth_users or bearer_token_file: anyone who can reach it can read every session's state",
                http.listen
            ));
        }
    }
    if let Some(b) = &config.embedded_broker {
        let addr = *b.listen.get_ref();
        if !addr.ip().to_canonical().is_loopback() && !b.allow_remote {
            return Err((
                Some(b.listen.span()),
                ConfigErrorKind::EmbeddedBrokerRemote(addr),
            ));
        }
    }
    warnings.extend(size_warnings(config));
    config.warnings = warnings;
    Ok(())
}

/// The checks of one target of rule `rule`: its template (valid, capturing no more than
/// the filter's wildcards) and no loop back into the rule's own filter.
#[expect(clippy::result_large_err, reason = "cold path, boxed in ConfigError")]
fn check_target(
    rule: &str,
    name_span: Range<usize>,
    filter_text: &str,
    filter: &TopicFilter,
    t: &ForwardTarget,
    from: &toml::Spanned<String>,
    brokers: &BTreeMap<String, Vec<String>>,
) -> Result<(), Refusal> {
    let template_span = (!t.topic.span().is_empty()).then(|| t.topic.span());
    let template_err = |reason: String| {
        (
            template_span.clone().or(Some(name_span.clone())),
            ConfigErrorKind::Template {
                rule: rule.to_string(),
                template: t.topic.get_ref().clone(),
                reason,
            },
        )
    };
    let template = Template::parse(t.topic.get_ref()).map_err(template_err)?;
    let wildcards = filter
        .match_filter()
        .split('/')
        .filter(|l| *l == "+" || *l == "#")
        .count();
    if template.max_capture() > wildcards {
        return Err(template_err(format!(
            "{{{}}} but the filter {filter_text:?} has {wildcards} wildcard(s) to capture",
            template.max_capture(),
        )));
    }
    let (from, to) = (from.get_ref(), t.to.get_ref());
    let shared = brokers[from].iter().find(|b| brokers[to].contains(b));
    if let Some(broker) = shared {
        if template.output_may_match(filter, from) {
            return Err((
                template_span.or(Some(name_span)),
                ConfigErrorKind::Loop {
                    rule: rule.to_string(),
                    from: from.clone(),
                    to: to.clone(),
                    broker: broker.clone(),
                    filter: filter.as_str().to_string(),
                    template: template.to_string(),
                },
            ));
        }
    }
    Ok(())
}

/// Refuses a circle of rules: rule A's output reaches rule B's filter on a broker they
/// share, B's reaches A's (or through more rules). A rule into itself is refused by
/// [`check_target`].
#[expect(clippy::result_large_err, reason = "cold path, boxed in ConfigError")]
fn check_cycles(config: &Config, brokers: &BTreeMap<String, Vec<String>>) -> Result<(), Refusal> {
    let rules = &config.forward;
    let parsed: Vec<Option<TopicFilter>> = rules
        .iter()
        .map(|r| TopicFilter::new(r.filter.get_ref().as_str()).ok())
        .collect();
    // feeds[i]: the rules that rule i's output can reach.
    let feeds: Vec<Vec<usize>> = rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let Some(input) = &parsed[i] else {
                return Vec::new();
            };
            let mut next = BTreeSet::new();
            for t in r.all_targets() {
                let Ok(template) = Template::parse(t.topic.get_ref()) else {
                    continue;
                };
                let out_brokers = brokers.get(t.to.get_ref()).cloned().unwrap_or_default();
                for (j, other) in rules.iter().enumerate() {
                    let Some(filter) = &parsed[j] else { continue };
                    let shared = brokers
                        .get(other.from.get_ref())
                        .is_some_and(|b| b.iter().any(|b| out_brokers.contains(b)));
                    if i != j
                        && shared
                        && template.output_may_match_other(input, r.from.get_ref(), filter)
                    {
                        next.insert(j);
                    }
                }
            }
            next.into_iter().collect()
        })
        .collect();
    // Depth-first search; a rule met again on the current path closes a circle.
    fn visit(
        i: usize,
        feeds: &[Vec<usize>],
        state: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[i] = 1;
        path.push(i);
        for &j in &feeds[i] {
            if state[j] == 1 {
                let start = path.iter().position(|&p| p == j).unwrap_or(0);
                let mut circle = path[start..].to_vec();
                circle.push(j);
                return Some(circle);
            }
            if state[j] == 0 {
                if let Some(c) = visit(j, feeds, state, path) {
                    return Some(c);
                }
            }
        }
        path.pop();
        state[i] = 2;
        None
    }
    let mut state = vec![0u8; rules.len()];
    for i in 0..rules.len() {
        if state[i] == 0 {
            if let Some(circle) = visit(i, &feeds, &mut state, &mut Vec::new()) {
                return Err((
                    Some(rules[circle[0]].name.span()),
                    ConfigErrorKind::RuleCycle {
                        path: circle
                            .iter()
                            .map(|&k| rules[k].name.get_ref().clone())
                            .collect(),
                    },
                ));
            }
        }
    }
    Ok(())
}

/// Rules that could receive what their target refuses: a source session (or the
/// embedded broker feeding it) accepting larger payloads than the target session sends.
/// Such messages would be dropped (and counted) by the rule.
fn size_warnings(config: &Config) -> Vec<String> {
    let session = |name: &str| config.sessions.iter().find(|s| s.name() == name);
    let max = |name: &str| session(name).map(|s| s.performance.max_message_size);
    let store = config.store.as_ref().is_some_and(|s| s.path.is_some());
    let mut out = Vec::new();
    for r in &config.forward {
        let bounded_source =
            session(r.from.get_ref()).is_some_and(|s| bounds_its_broker(&s.options()));
        for t in r.all_targets() {
            let (from, to) = (r.from.get_ref(), t.to.get_ref());
            if let Some(target) = session(to).map(SessionConfig::options) {
                // A window above the target's bound is capped by it (the rule stops
                // taking there rather than be refused).
                let window = lane_window(r.window, Some(&target), store, bounded_source);
                let bound = target.performance.max_pending_messages;
                if window > bound {
                    out.push(format!(
                        "forward rule {:?}: a window of {window} is above session {to:?}'s performance.max_pending_messages ({bound}): the rule keeps at most {bound} messages in flight to it (raise max_pending_messages)",
                        r.name.get_ref()
                    ));
                }
            }
            let (Some(src), Some(dst)) = (max(from), max(to)) else {
                continue;
            };
            if src > dst {
                out.push(format!(
                    "forward rule {:?}: session {from:?} accepts payloads up to {src} but {to:?} sends at most {dst}: larger messages will be dropped (raise {to:?}'s performance.max_message_size)",
                    r.name.get_ref()
                ));
            }
        }
    }
    if let Some(b) = &config.embedded_broker {
        let addr = b.listen.get_ref().to_string();
        for sess in &config.sessions {
            let on_it = sess.brokers.iter().any(|u| u.contains(&addr));
            let max = sess.performance.max_message_size;
            if on_it && b.max_message_size > max {
                out.push(format!(
                    "session {:?}: the embedded broker accepts payloads up to {} but the session drops those above {max} (make [embedded_broker] max_message_size and performance.max_message_size agree)",
                    sess.name(),
                    b.max_message_size
                ));
            }
        }
    }
    out
}

/// Reads the session's password from wherever the file says it comes from.
#[expect(clippy::result_large_err, reason = "cold path, boxed in ConfigError")]
fn resolve_password(
    s: &SessionConfig,
    base: &std::path::Path,
    warnings: &mut Vec<String>,
) -> Result<Option<Secret>, Refusal> {
    let name = s.name().to_string();
    let span = Some(s.name.span());
    let sources = usize::from(s.password.is_some())
        + usize::from(s.password_file.is_some())
        + usize::from(s.password_env.is_some());
    if sources > 1 {
        return Err((span, ConfigErrorKind::PasswordSources(name)));
    }
    if let Some(p) = &s.password {
        warnings.push(format!(
            "session {name:?}: inline password in the config file; prefer password_file or password_env"
        ));
        return Ok(Some(p.clone()));
    }
    if let Some(file) = &s.password_file {
        let path: PathBuf = base.join(file.get_ref());
        let text = std::fs::read_to_string(&path).map_err(|source| {
            (
                Some(file.span()),
                ConfigErrorKind::PasswordFile {
                    session: name.clone(),
                    file: path.clone(),
                    source,
                },
            )
        })?;
        let line = text.strip_suffix('\n').unwrap_or(&text);
        let line = line.strip_suffix('\r').unwrap_or(line);
        return Ok(Some(Secret::new(line)));
    }
    if let Some(var) = &s.password_env {
        let value = std::env::var(var.get_ref()).map_err(|_| {
            (
                Some(var.span()),
                ConfigErrorKind::PasswordEnv {
                    session: name.clone(),
                    var: var.get_ref().clone(),
                },
            )
        })?;
        return Ok(Some(Secret::new(value)));
    }
    Ok(None)
}

/// The sessions joined by forwarding rules (a rule joins its source and its targets),
/// numbered by group in the order of the rules: each group shares a worker thread.
fn forward_groups(config: &Config) -> BTreeMap<String, usize> {
    let mut group: BTreeMap<String, usize> = BTreeMap::new();
    let mut next = 0;
    for r in &config.forward {
        let mut members: Vec<String> = r
            .all_targets()
            .iter()
            .map(|t| t.to.get_ref().clone())
            .collect();
        members.push(r.from.get_ref().clone());
        // The groups these sessions are in already merge into the lowest of them.
        let joined: BTreeSet<usize> = members
            .iter()
            .filter_map(|m| group.get(m))
            .copied()
            .collect();
        let g = joined.first().copied().unwrap_or_else(|| {
            next += 1;
            next - 1
        });
        for v in group.values_mut() {
            if joined.contains(v) {
                *v = g;
            }
        }
        for m in members {
            group.insert(m, g);
        }
    }
    group
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::config::Config;

    const SESSIONS: &str = r#"
[[sessions]]
name = "a"
brokers = ["mqtt://127.0.0.1:1883"]

[[sessions]]
name = "b"
brokers = ["mqtt://127.0.0.1:1884"]
"#;

    fn check(extra: &str) -> Result<Config, String> {
        Config::parse(&format!("{SESSIONS}{extra}"), Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_window_above_the_targets_pending_bound_is_warned_about() {
        let rule = "[[forward]]\nname = \"r\"\nfrom = \"a\"\nfilter = \"s/#\"\nto = \"b\"\ntopic = \"t/{topic}\"\n";
        let warned = |extra: &str| {
            check(extra)
                .unwrap()
                .warnings
                .into_iter()
                .any(|w| w.contains("forward rule \"r\": a window of"))
        };
        // The defaults (a forwarding target's inflight 1000, max_pending_messages 1000).
        assert!(!warned(rule));
        // An explicit window above the bound.
        assert!(warned(&format!("{rule}window = 2000\n")));
        // The target's own inflight (the default window, with a store) above its bound.
        let perf =
            |keys: &str| format!("[sessions.performance]\n{keys}\n[store]\npath = \"s\"\n{rule}");
        assert!(warned(&perf("inflight = 3000")));
        // Without a store, from an MQTT 3.1.1 source, the default window stays at 500.
        assert!(!warned(&format!(
            "[sessions.performance]\ninflight = 3000\n{rule}"
        )));
        assert!(!warned(&perf(
            "inflight = 3000\nmax_pending_messages = 3000"
        )));
        let w = check(&format!("{rule}window = 2000\n")).unwrap().warnings;
        assert!(
            w.iter()
                .any(|w| w.contains("at most 1000 messages in flight")),
            "{w:?}"
        );
    }

    #[test]
    fn a_circle_of_rules_over_shared_brokers_is_refused_and_a_chain_is_not() {
        let rule = |name: &str, from: &str, filter: &str, to: &str, topic: &str| {
            format!("[[forward]]\nname = \"{name}\"\nfrom = \"{from}\"\nfilter = \"{filter}\"\nto = \"{to}\"\ntopic = \"{topic}\"\n")
        };
        // a -> b and b -> a over the same topics: a circle.
        let e = check(&format!(
            "{}{}",
            rule("up", "a", "s/#", "b", "{topic}"),
            rule("down", "b", "s/#", "a", "{topic}")
        ))
        .unwrap_err();
        assert!(e.contains("forward rules loop: up -> down -> up"), "{e}");
        // Prefixed outputs that the other filter cannot match: no circle.
        check(&format!(
            "{}{}",
            rule("up", "a", "edge/#", "b", "cloud/{topic}"),
            rule("down", "b", "cmd/#", "a", "edge-cmd/{topic}")
        ))
        .unwrap();
        // Three rules in a circle are found too.
        let three = format!(
            "[[sessions]]\nname = \"c\"\nbrokers = [\"mqtt://127.0.0.1:1885\"]\n{}{}{}",
            rule("ab", "a", "x/#", "b", "{topic}"),
            rule("bc", "b", "x/#", "c", "{topic}"),
            rule("ca", "c", "x/#", "a", "{topic}")
        );
        let e = check(&three).unwrap_err();
        assert!(e.contains("ab -> bc -> ca -> ab"), "{e}");
        let e = check(&format!(
            "{}window = 0\n",
            rule("w", "a", "x/#", "b", "y/{topic}")
        ))
        .unwrap_err();
        assert!(e.contains("window = 0"), "{e}");
    }

    #[test]
    fn forwarding_between_two_brokers_is_accepted() {
        let c =
            check("[[forward]]\nname = \"r\"\nfrom = \"a\"\nfilter = \"#\"\nto = \"b\"\n").unwrap();
        assert_eq!(c.forward[0].all_targets()[0].topic.get_ref(), "{topic}");
    }

    #[test]
    fn a_rule_with_several_targets_keeps_each_targets_settings() {
        let c = check(
            "[[forward]]\nname = \"r\"\nfrom = \"a\"\nfilter = \"s/#\"\n\
             [[forward.targets]]\nto = \"b\"\ntopic = \"copy/{topic}\"\nqos = 0\n\
             [[forward.targets]]\nto = \"a\"\ntopic = \"archive/{topic}\"\nretain = true\n",
        )
        .unwrap();
        let t = c.forward[0].all_targets();
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].to.get_ref().as_str(), t[0].topic.get_ref().as_str()),
            ("b", "copy/{topic}")
        );
        assert_eq!(
            t[0].qos,
            super::super::config::Keep::Set(mqtt_sessions::QoS::AtMostOnce)
        );
        assert_eq!(t[1].retain, super::super::config::Keep::Set(true));
        assert_eq!(
            t[1].qos,
            super::super::config::Keep::Set(mqtt_sessions::QoS::AtLeastOnce)
        );
        // print-config's text parses back to the same rule.
        let again = Config::parse(&c.effective().unwrap(), Path::new("t.toml")).unwrap();
        assert_eq!(again.forward[0].all_targets(), t);
    }

    #[test]
    fn a_rule_needs_one_form_of_target_and_one_target_per_session() {
        let cases = [
            ("[[forward]]\nname = \"r\"\nfrom = \"a\"\nfilter = \"#\"\n", "no target"),
            (
                "[[forward]]\nname = \"r\"\nfrom = \"a\"\nfilter = \"#\"\nto = \"b\"\n[[forward.targets]]\nto = \"b\"\n",
                "go in each target",
            ),
            (
                "[[forward]]\nname = \"r\"\nfrom = \"a\"\nfilter = \"s/#\"\n[[forward.targets]]\nto = \"b\"\n[[forward.targets]]\nto = \"b\"\ntopic = \"x/{topic}\"\n",
                "is a target twice",
            ),
            (
                "[[forward]]\nname = \"r\"\nfrom = \"a\"\nfilter = \"s/#\"\n[[forward.targets]]\nto = \"b\"\n[[forward.targets]]\nto = \"a\"\n",
                "would loop",
            ),
        ];
        for (extra, needle) in cases {
            let err = check(extra).expect_err(extra);
            assert!(err.contains(needle), "{extra}: {err}");
        }
    }

    #[test]
    fn refusals_name_the_line_and_the_reason() {
        let cases = [
            (
                "[[forward]]\nname = \"r\"\nfrom = \"a\"\nfilter = \"#\"\nto = \"zz\"\n",
                "t.toml:13:6",
                "no session named \"zz\"",
            ),
            (
                "[[forward]]\nname = \"r\"\nfrom = \"a\"\nfilter = \"x/#\"\nto = \"a\"\ntopic = \"x/y/{topic}\"\n",
                "t.toml:14:9",
                "would loop",
            ),
            (
                "[[forward]]\nname = \"r\"\nfrom = \"a\"\nfilter = \"x/#/y\"\nto = \"b\"\n",
                "t.toml:12:10",
                "invalid topic filter",
            ),
            (
                "[[sessions]]\nname = \"a\"\nbrokers = [\"mqtt://h\"]\n",
                "t.toml:10:8",
                "defined twice",
            ),
        ];
        for (extra, at, needle) in cases {
            let err = check(extra).expect_err(extra);
            assert!(err.starts_with(at) && err.contains(needle), "{err}");
        }
    }

    #[test]
    fn sessions_joined_by_rules_share_a_worker_and_a_target_gets_the_forwarding_inflight() {
        let extra = r#"
[[sessions]]
name = "c"
brokers = ["mqtt://127.0.0.1:1885"]

[[sessions]]
name = "d"
brokers = ["mqtt://127.0.0.1:1886"]

[[sessions.performance]]

[[forward]]
name = "ab"
from = "a"
filter = "x/#"
to = "b"
"#;
        // `[[sessions.performance]]` is not a table array: the config is refused.
        assert!(check(extra).is_err());
        let extra = extra.replace(
            "[[sessions.performance]]\n",
            "[sessions.performance]\ninflight = 20\n",
        );
        let extra = format!(
            "{extra}\n[[forward]]\nname = \"cd\"\nfrom = \"c\"\nfilter = \"x/#\"\nto = \"d\"\n\n[[forward]]\nname = \"bc\"\nfrom = \"b\"\nfilter = \"y/#\"\nto = \"c\"\n"
        );
        let config = check(&extra).unwrap();
        let options: std::collections::BTreeMap<_, _> = config
            .sessions
            .iter()
            .map(|s| (s.name().to_string(), s.options().performance))
            .collect();
        // a→b, c→d, then b→c joins both groups into the first.
        let workers: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| options[*n].worker)
            .collect();
        assert_eq!(workers, [Some(0); 4]);
        // Targets default to the forwarding inflight; `d` set its own; `a` is only a source.
        let inflight: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| options[*n].inflight)
            .collect();
        assert_eq!(
            inflight,
            [
                100,
                super::super::config::FORWARD_TARGET_INFLIGHT,
                super::super::config::FORWARD_TARGET_INFLIGHT,
                20
            ]
        );
    }

    #[test]
    fn an_mqtt5_source_announces_the_forwarding_receive_maximum_unless_it_sets_one() {
        let extra = |protocol: &str, perf: &str| {
            format!(
                "[[sessions]]\nname = \"c\"\nbrokers = [\"mqtt://127.0.0.1:1885\"]\nprotocol = \"{protocol}\"\n{perf}\n\
                 [[forward]]\nname = \"cb\"\nfrom = \"c\"\nfilter = \"x/#\"\nto = \"b\"\n"
            )
        };
        let receive_maximum = |config: &Config, name: &str| {
            config
                .sessions
                .iter()
                .find(|s| s.name() == name)
                .map(|s| s.options().performance.receive_maximum)
                .expect("session")
        };
        let config = check(&extra("5", "")).unwrap();
        assert_eq!(
            receive_maximum(&config, "c"),
            Some(super::super::config::FORWARD_SOURCE_RECEIVE_MAXIMUM)
        );
        // `b` is only a target: nothing announced.
        assert_eq!(receive_maximum(&config, "b"), None);
        // MQTT 3.1.1 has no such field.
        assert_eq!(
            receive_maximum(&check(&extra("3.1.1", "")).unwrap(), "c"),
            None
        );
        let config = check(&extra("5", "[sessions.performance]\nreceive_maximum = 300")).unwrap();
        assert_eq!(receive_maximum(&config, "c"), Some(300));
        let e = check(&extra("5", "[sessions.performance]\nreceive_maximum = 0")).unwrap_err();
        assert!(e.contains("receive_maximum"), "{e}");
    }

    #[test]
    fn separate_rules_get_separate_workers_and_an_explicit_worker_wins() {
        let extra = r#"
[[sessions]]
name = "c"
brokers = ["mqtt://127.0.0.1:1885"]
[sessions.performance]
worker = 7

[[sessions]]
name = "d"
brokers = ["mqtt://127.0.0.1:1886"]

[[forward]]
name = "ab"
from = "a"
filter = "x/#"
to = "b"

[[forward]]
name = "cd"
from = "c"
filter = "x/#"
to = "d"
"#;
        let config = check(extra).unwrap();
        let workers: Vec<_> = config
            .sessions
            .iter()
            .map(|s| s.options().performance.worker)
            .collect();
        assert_eq!(workers, [Some(0), Some(0), Some(7), Some(1)]);
    }
}
