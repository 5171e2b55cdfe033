//! Topic templates of forwarding rules (`"plant-1/{topic}"`) and the overlap test that
//! refuses a rule whose output would match its own input.

use std::fmt;

use mqtt_sessions::topic::{validate_topic_name, TopicFilter};

/// A part of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// `{topic}`: the topic the message arrived on.
    Topic,
    /// `{session}`: the name of the session that received it.
    Session,
    /// `{1}`, `{2}`, …: what the n-th wildcard of the rule's filter matched (a `+` one
    /// level, a `#` the rest of the topic).
    Capture(usize),
}

/// An output topic template: literal text with `{topic}`, `{session}` and `{1}`, `{2}`, …
/// (the levels the filter's wildcards matched) placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    raw: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses and checks a template: known placeholders only, balanced braces, no
    /// wildcards, and a valid topic name once filled in.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = raw;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(Part::Literal(rest.to_string()));
                    break;
                }
                Some(i) if rest[i..].starts_with('}') => {
                    return Err("unmatched '}' (placeholders are {topic} and {session})".into())
                }
                Some(i) => {
                    if i > 0 {
                        parts.push(Part::Literal(rest[..i].to_string()));
                    }
                    let close = rest[i..].find('}').ok_or("unclosed '{'")?;
                    let name = &rest[i + 1..i + close];
                    parts.push(match name {
                        "topic" => Part::Topic,
                        "session" => Part::Session,
                        n if n.parse::<usize>().is_ok_and(|n| n >= 1) => {
                            Part::Capture(n.parse().unwrap_or(1))
                        }
                        other => {
                            return Err(format!(
                                "unknown placeholder {{{other}}} (use {{topic}}, {{session}} or {{1}}, {{2}}, …)"
                            ))
                        }
                    });
                    rest = &rest[i + close + 1..];
                }
            }
        }
        if parts
            .iter()
            .any(|p| matches!(p, Part::Literal(l) if l.contains(['+', '#'])))
        {
            return Err("an output topic cannot contain the wildcards '+' or '#'".into());
        }
        let t = Template {
            raw: raw.to_string(),
            parts,
        };
        validate_topic_name(&t.fill("a/b", "s", &[], "x"))
            .map_err(|e| format!("does not give a valid topic name: {e}"))?;
        Ok(t)
    }

    /// Fills the template in for a message on `topic`, received by `session`, through a
    /// rule whose filter is `filter` (its wildcards give `{1}`, `{2}`, …).
    pub fn render(&self, topic: &str, session: &str, filter: &TopicFilter) -> String {
        let caught = captures(filter.match_filter(), topic);
        self.fill(topic, session, &caught, "")
    }

    /// The highest `{n}` used (0: none).
    pub fn max_capture(&self) -> usize {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Capture(n) => Some(*n),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    fn fill(&self, topic: &str, session: &str, caught: &[&str], missing: &str) -> String {
        let mut out = String::with_capacity(self.raw.len() + topic.len());
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Topic => out.push_str(topic),
                Part::Session => out.push_str(session),
                Part::Capture(n) => out.push_str(caught.get(n - 1).copied().unwrap_or(missing)),
            }
        }
        out
    }

    /// Could a message matching `filter`, forwarded through this template by `session`,
    /// match `filter` again? (Conservative: may say yes for a template that splits a
    /// level around `{topic}`.)
    pub fn output_may_match(&self, filter: &TopicFilter, session: &str) -> bool {
        self.output_may_match_other(filter, session, filter)
    }

    /// Could a message matching `input`, forwarded through this template by `session`,
    /// match `other`? (Conservative, as [`output_may_match`](Self::output_may_match).)
    pub fn output_may_match_other(
        &self,
        input: &TopicFilter,
        session: &str,
        other: &TopicFilter,
    ) -> bool {
        let other = other.match_filter();
        let input = input.match_filter();
        // A capture may be anything: a wildcard level (conservative).
        let pattern = self.fill(input, session, &[], "#");
        let normalise = |level: &str| -> String {
            if level.contains('#') {
                "#".into()
            } else if level.contains('+') {
                "+".into()
            } else {
                level.to_string()
            }
        };
        let out: Vec<String> = pattern.split('/').map(normalise).collect();
        let inp: Vec<String> = other.split('/').map(normalise).collect();
        let out: Vec<&str> = out.iter().map(String::as_str).collect();
        let inp: Vec<&str> = inp.iter().map(String::as_str).collect();
        overlap(&out, &inp)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// What the wildcards of `filter` matched in `topic`, in order: a `+` gives its level, a
/// `#` the rest of the topic (levels joined with `/`; empty when it matched nothing).
pub fn captures<'a>(filter: &str, topic: &'a str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = topic;
    for level in filter.split('/') {
        match level {
            "#" => {
                out.push(rest);
                break;
            }
            _ => {
                let (head, tail) = rest.split_once('/').unwrap_or((rest, ""));
                if level == "+" {
                    out.push(head);
                }
                rest = tail;
            }
        }
    }
    out
}

/// Is there a topic name matched by both level patterns (`+`: one level, `#`: zero or
/// more levels, anywhere)?
fn overlap(a: &[&str], b: &[&str]) -> bool {
    match (a.first(), b.first()) {
        (None, None) => true,
        (Some(&"#"), _) => overlap(&a[1..], b) || (!b.is_empty() && overlap(a, &b[1..])),
        (_, Some(&"#")) => overlap(a, &b[1..]) || (!a.is_empty() && overlap(&a[1..], b)),
        (None, _) | (_, None) => false,
        (Some(x), Some(y)) => (*x == "+" || *y == "+" || x == y) && overlap(&a[1..], &b[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_in_topic_and_session() {
        let any = TopicFilter::new("#").unwrap();
        let t = Template::parse("plant-1/{session}/{topic}").unwrap();
        assert_eq!(
            t.render("sensors/t1", "edge", &any),
            "plant-1/edge/sensors/t1"
        );
        assert_eq!(
            Template::parse("fixed").unwrap().render("x", "y", &any),
            "fixed"
        );
    }

    #[test]
    fn templates_fill_in_the_levels_the_wildcards_captured() {
        let cases = [
            ("sensors/+/temp", "sensors/t1/temp", "out/{1}", "out/t1"),
            ("site/+/+/#", "site/a/b/c/d", "{3}/{2}/{1}", "c/d/b/a"),
            ("a/#", "a/b", "x/{1}/{session}", "x/b/edge"),
            (
                "$share/g/dev/+/up",
                "dev/42/up",
                "devices/{1}",
                "devices/42",
            ),
            ("生产/+", "生产/设备", "工厂/{1}", "工厂/设备"),
        ];
        for (filter, topic, template, want) in cases {
            let f = TopicFilter::new(filter).unwrap();
            let t = Template::parse(template).unwrap();
            assert_eq!(t.render(topic, "edge", &f), want, "{filter} {template}");
        }
        assert_eq!(Template::parse("{2}/{1}").unwrap().max_capture(), 2);
        assert!(Template::parse("{0}").is_err());
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        let cases = [
            ("a/{topc}", "unknown placeholder"),
            ("a/{topic", "unclosed"),
            ("a}/{topic}", "unmatched"),
            ("a/+/{topic}", "wildcards"),
            ("", "valid topic name"),
        ];
        for (raw, needle) in cases {
            let err = Template::parse(raw).expect_err(raw);
            assert!(err.contains(needle), "{raw}: {err}");
        }
    }

    #[test]
    fn loops_are_detected_when_the_output_matches_the_input_filter() {
        let cases = [
            ("sensors/#", "plant-1/{topic}", false),
            ("sensors/#", "{topic}", true),
            ("#", "plant-1/{topic}", true),
            ("sensors/+", "sensors/{session}", true),
            ("sensors/+", "sensors/x/{topic}", false),
            ("+/temp", "copy/temp", true),
            ("$share/g/sensors/#", "sensors/copy/{topic}", true),
            ("a/#", "b/{topic}", false),
            ("a/+/c", "a/{session}-{topic}/c", false),
            ("+", "x{topic}", true),
        ];
        for (filter, template, looped) in cases {
            let f = TopicFilter::new(filter).unwrap();
            let t = Template::parse(template).unwrap();
            assert_eq!(
                t.output_may_match(&f, "edge"),
                looped,
                "{filter} -> {template}"
            );
        }
    }
}
