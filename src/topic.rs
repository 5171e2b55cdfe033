//! MQTT topic names and topic filters: validation and matching.
//!
//! MQTT distinguishes two kinds of topic strings:
//!
//! * a **topic name** is what a PUBLISH packet is sent to (`sensors/kitchen/temp`);
//!   it must not contain the wildcards `+` or `#` ([`validate_topic_name`]);
//! * a **topic filter** is what a SUBSCRIBE asks for (`sensors/+/temp`, `sensors/#`);
//!   it may contain wildcards that occupy whole levels ([`validate_topic_filter`],
//!   [`TopicFilter`]).
//!
//! Both are split into *levels* by `/`. Empty levels are significant, so
//! `a//b`, `a/b`, `/a/b` and `a/b/` are four different topics. `+` matches exactly
//! one level (which may be empty) and `#` matches the parent level plus any number of
//! child levels, so `sport/#` matches `sport`, `sport/` and `sport/tennis/player1`.
//! Topics whose first character is `$` (`$SYS/...`) are never matched by a filter
//! whose first level is a wildcard [MQTT-4.7.2-1].
//!
//! Shared subscriptions (`$share/{group}/{filter}`, from MQTT 5 and supported by most
//! 3.1.1 brokers) are understood too: the group is kept aside
//! ([`TopicFilter::share_group`]) and only the `{filter}` part is used for matching
//! ([`TopicFilter::match_filter`]).
//!
//! The rules are those of MQTT 3.1.1 section 4.7 (and MQTT 5 section 4.8.2 for
//! shared subscriptions); every [`TopicError`] names the normative statement it
//! enforces. Nothing in this module panics, whatever the input.

use std::fmt;
use std::str::FromStr;

/// Maximum length of a topic name or filter in bytes of UTF-8 [MQTT-4.7.3-3].
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Prefix that marks a shared subscription filter (`$share/{group}/{filter}`).
pub const SHARE_PREFIX: &str = "$share/";

/// Number of characters of an offending string that error messages reproduce.
const EXCERPT_CHARS: usize = 100;

/// Which kind of topic string was being validated when an error occurred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TopicKind {
    /// A topic name, as used by PUBLISH.
    Name,
    /// A topic filter, as used by SUBSCRIBE and UNSUBSCRIBE.
    Filter,
}

impl fmt::Display for TopicKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicKind::Name => "topic name",
            TopicKind::Filter => "topic filter",
        })
    }
}

/// Why a topic name or topic filter was rejected.
///
/// Each variant corresponds to one rule of the MQTT specification, which the
/// error message names in brackets. The offending string is kept whole in the
/// variant; messages show at most its first 100 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The topic name or filter is the empty string.
    #[error("invalid {kind}: must be at least one character long [MQTT-4.7.3-1]")]
    Empty {
        /// Whether a name or a filter was being validated.
        kind: TopicKind,
    },

    /// The topic name or filter is longer than 65535 bytes of UTF-8.
    #[error(
        "invalid {kind} {}: {len} bytes of UTF-8 exceeds the maximum of 65535 [MQTT-4.7.3-3]",
        Excerpt(.topic)
    )]
    TooLong {
        /// Whether a name or a filter was being validated.
        kind: TopicKind,
        /// The offending string.
        topic: String,
        /// Its length in bytes.
        len: usize,
    },

    /// The topic name or filter contains the null character U+0000.
    #[error(
        "invalid {kind} {}: must not contain the null character U+0000 [MQTT-4.7.3-2]",
        Excerpt(.topic)
    )]
    ContainsNul {
        /// Whether a name or a filter was being validated.
        kind: TopicKind,
        /// The offending string.
        topic: String,
    },

    /// A topic name (PUBLISH) contains `+` or `#`.
    #[error(
        "invalid topic name {}: wildcard characters '+' and '#' are not allowed in a topic name [MQTT-3.3.2-2]",
        Excerpt(.topic)
    )]
    WildcardInTopicName {
        /// The offending topic name.
        topic: String,
    },

    /// A topic name starts with `$share/`, which is reserved for shared subscriptions.
    #[error(
        "invalid topic name {}: the '$share' prefix is reserved for shared subscriptions and cannot be published to [MQTT-4.8.2]",
        Excerpt(.topic)
    )]
    SharedTopicName {
        /// The offending topic name.
        topic: String,
    },

    /// A `#` is not the last character of the filter or does not occupy a whole level.
    #[error(
        "invalid topic filter {}: '#' must be the last character and occupy a whole level [MQTT-4.7.1-2]",
        Excerpt(.filter)
    )]
    MisplacedMultiLevelWildcard {
        /// The offending topic filter.
        filter: String,
    },

    /// A `+` does not occupy a whole level of the filter.
    #[error(
        "invalid topic filter {}: '+' must occupy a whole level [MQTT-4.7.1-3]",
        Excerpt(.filter)
    )]
    MisplacedSingleLevelWildcard {
        /// The offending topic filter.
        filter: String,
    },

    /// A shared subscription (`$share/{group}/{filter}`) has an empty share group.
    #[error(
        "invalid shared subscription {}: the share name after '$share/' must be at least one character long [MQTT-4.8.2-1]",
        Excerpt(.filter)
    )]
    EmptyShareGroup {
        /// The offending topic filter.
        filter: String,
    },

    /// The share group of a shared subscription contains `+` or `#`.
    #[error(
        "invalid shared subscription {}: the share name must not contain '+' or '#' [MQTT-4.8.2-2]",
        Excerpt(.filter)
    )]
    WildcardInShareGroup {
        /// The offending topic filter.
        filter: String,
    },

    /// A shared subscription has no topic filter after `$share/{group}/`.
    #[error(
        "invalid shared subscription {}: the share name must be followed by '/' and a non-empty topic filter [MQTT-4.8.2-2]",
        Excerpt(.filter)
    )]
    MissingSharedFilter {
        /// The offending topic filter.
        filter: String,
    },
}

impl TopicError {
    /// The kind of topic string that was rejected.
    pub fn kind(&self) -> TopicKind {
        match self {
            TopicError::Empty { kind }
            | TopicError::TooLong { kind, .. }
            | TopicError::ContainsNul { kind, .. } => *kind,
            TopicError::WildcardInTopicName { .. } | TopicError::SharedTopicName { .. } => {
                TopicKind::Name
            }
            TopicError::MisplacedMultiLevelWildcard { .. }
            | TopicError::MisplacedSingleLevelWildcard { .. }
            | TopicError::EmptyShareGroup { .. }
            | TopicError::WildcardInShareGroup { .. }
            | TopicError::MissingSharedFilter { .. } => TopicKind::Filter,
        }
    }
}

/// `Debug`-quotes at most [`EXCERPT_CHARS`] characters of a string, noting the
/// full length when it had to be cut.
struct Excerpt<'a>(&'a str);

impl fmt::Display for Excerpt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(EXCERPT_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => {
                let head = self.0.get(..cut).unwrap_or_default();
                write!(f, "{head:?}... ({} bytes in total)", self.0.len())
            }
        }
    }
}

/// Checks the rules shared by names and filters: non-empty, length, no NUL.
fn validate_common(topic: &str, kind: TopicKind) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty { kind });
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong {
            kind,
            topic: topic.to_owned(),
            len: topic.len(),
        });
    }
    if topic.contains('\0') {
        return Err(TopicError::ContainsNul {
            kind,
            topic: topic.to_owned(),
        });
    }
    Ok(())
}

/// Whether the first level of `topic` is `$share` (a shared subscription marker).
fn is_shared(topic: &str) -> bool {
    topic == "$share" || topic.starts_with(SHARE_PREFIX)
}

/// Splits a string whose first level is `$share` into `(group, filter)`, checking
/// the share-group rules. `full` is only used for error messages.
fn split_shared<'a>(topic: &'a str, full: &str) -> Result<(&'a str, &'a str), TopicError> {
    let after = topic.strip_prefix(SHARE_PREFIX).unwrap_or_default();
    let (group, rest) = match after.split_once('/') {
        Some((group, rest)) => (group, Some(rest)),
        None => (after, None),
    };
    if group.is_empty() {
        return Err(TopicError::EmptyShareGroup {
            filter: full.to_owned(),
        });
    }
    if group.contains(['+', '#']) {
        return Err(TopicError::WildcardInShareGroup {
            filter: full.to_owned(),
        });
    }
    match rest {
        Some(rest) if !rest.is_empty() => Ok((group, rest)),
        _ => Err(TopicError::MissingSharedFilter {
            filter: full.to_owned(),
        }),
    }
}

/// Checks the wildcard placement rules on the levels of `filter` (already known to
/// be non-empty). `full` is only used for error messages.
fn validate_levels(filter: &str, full: &str) -> Result<(), TopicError> {
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::MisplacedMultiLevelWildcard {
                filter: full.to_owned(),
            });
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::MisplacedSingleLevelWildcard {
                filter: full.to_owned(),
            });
        }
    }
    Ok(())
}

/// Validates a topic name, as sent in a PUBLISH packet.
///
/// A topic name must be non-empty [MQTT-4.7.3-1], at most 65535 bytes long
/// [MQTT-4.7.3-3], free of U+0000 [MQTT-4.7.3-2] and of the wildcards `+` and `#`
/// [MQTT-3.3.2-2], and must not start with `$share/` (reserved for shared
/// subscriptions). Other topics starting with `$` (such as `$SYS/...`) are accepted:
/// whether a client may publish to them is broker policy.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    validate_common(topic, TopicKind::Name)?;
    if is_shared(topic) {
        return Err(TopicError::SharedTopicName {
            topic: topic.to_owned(),
        });
    }
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInTopicName {
            topic: topic.to_owned(),
        });
    }
    Ok(())
}

/// Validates a topic filter, as sent in a SUBSCRIBE or UNSUBSCRIBE packet.
///
/// A topic filter must be non-empty [MQTT-4.7.3-1], at most 65535 bytes long
/// [MQTT-4.7.3-3] and free of U+0000 [MQTT-4.7.3-2]; `#` must be the last level and
/// occupy it entirely [MQTT-4.7.1-2]; `+` must occupy an entire level
/// [MQTT-4.7.1-3]. A filter whose first level is `$share` is a shared subscription
/// and must have the form `$share/{group}/{filter}` with a non-empty group free of
/// `+` and `#` and a non-empty, valid `{filter}` [MQTT-4.8.2-1, MQTT-4.8.2-2].
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    parse_filter(filter).map(|_| ())
}

/// Validates `filter` and returns the byte range of its share group, if any.
fn parse_filter(filter: &str) -> Result<Option<(usize, usize)>, TopicError> {
    validate_common(filter, TopicKind::Filter)?;
    if is_shared(filter) {
        let (group, rest) = split_shared(filter, filter)?;
        validate_levels(rest, filter)?;
        let start = SHARE_PREFIX.len();
        Ok(Some((start, start + group.len())))
    } else {
        validate_levels(filter, filter)?;
        Ok(None)
    }
}

/// Returns the part of `filter` used for matching: `filter` itself, or the part
/// after `$share/{group}/` for a well-formed shared subscription.
fn strip_share(filter: &str) -> &str {
    if filter.starts_with(SHARE_PREFIX) {
        if let Ok((_, rest)) = split_shared(filter, "") {
            return rest;
        }
    }
    filter
}

/// Whether `filter` matches the topic name `topic`.
///
/// This is the straightforward level-by-level reference matcher: `+` matches
/// exactly one level (possibly empty), `#` matches the parent level and any number
/// of child levels, empty levels are significant, and a topic starting with `$` is
/// not matched by a filter whose first level is a wildcard [MQTT-4.7.2-1]. A leading
/// `$share/{group}/` is stripped from `filter` first.
///
/// Neither argument is validated; on invalid input the result is unspecified (but
/// the function never panics). Use [`TopicFilter::matches`] for a validated filter.
pub fn matches(filter: &str, topic: &str) -> bool {
    let filter = strip_share(filter);
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    if topic.starts_with('$') && matches!(filter.split('/').next(), Some("+" | "#")) {
        return false;
    }
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A validated MQTT topic filter, possibly a shared subscription.
///
/// ```
/// # use mqtt_sessions::topic::TopicFilter;
/// let filter = TopicFilter::new("$share/workers/jobs/+/done").unwrap();
/// assert_eq!(filter.share_group(), Some("workers"));
/// assert_eq!(filter.match_filter(), "jobs/+/done");
/// assert!(filter.matches("jobs/42/done"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicFilter {
    /// The full filter text, as given.
    text: String,
    /// Byte range of the share group in `text`, for `$share/{group}/...` filters.
    group: Option<(usize, usize)>,
}

impl TopicFilter {
    /// Validates `filter` (see [`validate_topic_filter`]) and wraps it.
    pub fn new(filter: impl Into<String>) -> Result<Self, TopicError> {
        let text = filter.into();
        let group = parse_filter(&text)?;
        Ok(TopicFilter { text, group })
    }

    /// The full filter text, including any `$share/{group}/` prefix.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Consumes the filter and returns its full text.
    pub fn into_string(self) -> String {
        self.text
    }

    /// The share group of a `$share/{group}/{filter}` subscription, if this is one.
    pub fn share_group(&self) -> Option<&str> {
        let (start, end) = self.group?;
        self.text.get(start..end)
    }

    /// Whether this is a shared subscription (`$share/{group}/{filter}`).
    pub fn is_shared(&self) -> bool {
        self.group.is_some()
    }

    /// The part of the filter used for matching: the full text with any
    /// `$share/{group}/` prefix removed.
    pub fn match_filter(&self) -> &str {
        match self.group {
            Some((_, end)) => self.text.get(end + 1..).unwrap_or_default(),
            None => &self.text,
        }
    }

    /// Whether this filter matches the topic name `topic` (see [`matches()`]).
    pub fn matches(&self, topic: &str) -> bool {
        matches(self.match_filter(), topic)
    }

    /// Whether the filter contains a wildcard (`+` or `#`), i.e. may match more
    /// than one topic name.
    pub fn is_wildcard(&self) -> bool {
        self.match_filter().contains(['+', '#'])
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for TopicFilter {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TopicFilter::new(s)
    }
}

impl AsRef<str> for TopicFilter {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl TryFrom<String> for TopicFilter {
    type Error = TopicError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        TopicFilter::new(value)
    }
}

impl TryFrom<&str> for TopicFilter {
    type Error = TopicError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        TopicFilter::new(value)
    }
}

impl From<TopicFilter> for String {
    fn from(value: TopicFilter) -> Self {
        value.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter_err(filter: &str) -> TopicError {
        validate_topic_filter(filter).expect_err(filter)
    }

    fn name_err(topic: &str) -> TopicError {
        validate_topic_name(topic).expect_err(topic)
    }

    #[test]
    fn valid_filters() {
        for filter in [
            "#",
            "+",
            "/",
            "//",
            "+/+",
            "/+",
            "+/",
            "sport/#",
            "sport/tennis/#",
            "sport/tennis/player1/#",
            "sport/+/player1",
            "sport/+",
            "+/tennis/#",
            "/finance",
            "finance/",
            "a//b",
            "$SYS/#",
            "$SYS/monitor/+",
            "$share/g/#",
            "$share/group/a/+/b",
            "$share/g//",
            "$share/g/$share/x",
            "$sharex/a",
            "$share_/a",
            "share/a",
            "ü/日本/🦀",
            " ",
        ] {
            assert_eq!(validate_topic_filter(filter), Ok(()), "{filter:?}");
            let parsed = TopicFilter::new(filter).expect(filter);
            assert_eq!(parsed.as_str(), filter);
        }
    }

    #[test]
    fn valid_names() {
        for topic in [
            "a",
            "/",
            "//",
            "/finance",
            "finance/",
            "a//b",
            "sport/tennis/player1",
            "$SYS/broker/load",
            "$sharex/a",
            "ü/日本/🦀",
            " ",
        ] {
            assert_eq!(validate_topic_name(topic), Ok(()), "{topic:?}");
        }
    }

    #[test]
    fn empty_is_rejected() {
        assert_eq!(
            filter_err(""),
            TopicError::Empty {
                kind: TopicKind::Filter
            }
        );
        assert_eq!(
            name_err(""),
            TopicError::Empty {
                kind: TopicKind::Name
            }
        );
        assert_eq!(
            filter_err("").to_string(),
            "invalid topic filter: must be at least one character long [MQTT-4.7.3-1]"
        );
    }

    #[test]
    fn length_limit_is_exactly_65535_bytes() {
        let max = "a".repeat(MAX_TOPIC_LEN);
        assert_eq!(validate_topic_name(&max), Ok(()));
        assert_eq!(validate_topic_filter(&max), Ok(()));
        let over = "a".repeat(MAX_TOPIC_LEN + 1);
        assert!(matches!(
            name_err(&over),
            TopicError::TooLong {
                kind: TopicKind::Name,
                len: 65_536,
                ..
            }
        ));
        let err = filter_err(&over);
        assert!(matches!(
            err,
            TopicError::TooLong {
                kind: TopicKind::Filter,
                len: 65_536,
                ..
            }
        ));
        let message = err.to_string();
        assert!(message.len() < 300, "{message}");
        assert!(message.contains("[MQTT-4.7.3-3]"), "{message}");
        assert!(message.contains("65536 bytes"), "{message}");

        // Multi-byte characters count by bytes, not characters: 21845 × 3 = 65535.
        let max_multi = "日".repeat(MAX_TOPIC_LEN / 3);
        assert_eq!(max_multi.len(), MAX_TOPIC_LEN);
        assert_eq!(validate_topic_name(&max_multi), Ok(()));
        let over_multi = format!("{max_multi}a");
        assert!(matches!(
            name_err(&over_multi),
            TopicError::TooLong { len: 65_536, .. }
        ));
        // The excerpt must cut at a character boundary.
        assert!(name_err(&over_multi).to_string().contains("日日日"));

        // The most levels a valid filter can have.
        let slashes = "/".repeat(MAX_TOPIC_LEN);
        assert_eq!(validate_topic_filter(&slashes), Ok(()));
        assert!(matches(&slashes, &slashes));
    }

    #[test]
    fn nul_is_rejected() {
        for s in ["\0", "a\0b", "a/\0", "\0/#"] {
            assert_eq!(
                filter_err(s),
                TopicError::ContainsNul {
                    kind: TopicKind::Filter,
                    topic: s.to_owned()
                }
            );
        }
        assert!(matches!(
            name_err("a/b\0"),
            TopicError::ContainsNul {
                kind: TopicKind::Name,
                ..
            }
        ));
        assert!(name_err("a\0").to_string().contains("[MQTT-4.7.3-2]"));
        // U+0000 is rejected even inside a shared subscription.
        assert!(matches!(
            filter_err("$share/g\0/a"),
            TopicError::ContainsNul { .. }
        ));
    }

    #[test]
    fn wildcards_in_names_are_rejected() {
        for topic in [
            "#",
            "+",
            "a/+",
            "a/#",
            "a+b",
            "sport/tennis#",
            "+/x",
            "$SYS/#",
        ] {
            assert_eq!(
                name_err(topic),
                TopicError::WildcardInTopicName {
                    topic: topic.to_owned()
                }
            );
        }
        assert!(name_err("a/+").to_string().contains("[MQTT-3.3.2-2]"));
    }

    #[test]
    fn shared_names_are_rejected() {
        for topic in ["$share", "$share/", "$share/g/a", "$share/g/+"] {
            assert!(
                matches!(name_err(topic), TopicError::SharedTopicName { .. }),
                "{topic:?}"
            );
        }
    }

    #[test]
    fn misplaced_hash_is_rejected() {
        for filter in [
            "sport/tennis#",
            "sport/tennis/#/ranking",
            "#/",
            "#/a",
            "a/#/",
            "##",
            "a/b#",
            "#a",
            "$share/g/a/#/b",
            "$share/g/a#",
        ] {
            assert_eq!(
                filter_err(filter),
                TopicError::MisplacedMultiLevelWildcard {
                    filter: filter.to_owned()
                },
                "{filter:?}"
            );
        }
        assert_eq!(
            filter_err("sport/tennis#").to_string(),
            "invalid topic filter \"sport/tennis#\": '#' must be the last character and occupy a whole level [MQTT-4.7.1-2]"
        );
    }

    #[test]
    fn misplaced_plus_is_rejected() {
        for filter in [
            "sport+",
            "sport/+tennis",
            "a/b+/c",
            "++",
            "+a/#",
            "$share/g/a+",
        ] {
            assert_eq!(
                filter_err(filter),
                TopicError::MisplacedSingleLevelWildcard {
                    filter: filter.to_owned()
                },
                "{filter:?}"
            );
        }
        assert!(filter_err("sport+").to_string().contains("[MQTT-4.7.1-3]"));
    }

    #[test]
    fn bad_shared_subscriptions_are_rejected() {
        for filter in ["$share", "$share/", "$share//a", "$share//"] {
            assert!(
                matches!(filter_err(filter), TopicError::EmptyShareGroup { .. }),
                "{filter:?}"
            );
        }
        for filter in ["$share/+/a", "$share/g#/a", "$share/#", "$share/a+b/c"] {
            assert!(
                matches!(filter_err(filter), TopicError::WildcardInShareGroup { .. }),
                "{filter:?}"
            );
        }
        for filter in ["$share/g", "$share/g/"] {
            assert!(
                matches!(filter_err(filter), TopicError::MissingSharedFilter { .. }),
                "{filter:?}"
            );
        }
        assert!(filter_err("$share//a")
            .to_string()
            .contains("[MQTT-4.8.2-1]"));
        assert!(filter_err("$share/+/a")
            .to_string()
            .contains("[MQTT-4.8.2-2]"));
        assert!(filter_err("$share/g")
            .to_string()
            .contains("[MQTT-4.8.2-2]"));
    }

    #[test]
    fn error_messages_are_truncated() {
        let long = format!("{}+", "x".repeat(1000));
        let message = name_err(&long).to_string();
        assert!(
            message.starts_with("invalid topic name \"xxxx"),
            "{message}"
        );
        assert!(message.contains("(1001 bytes in total)"), "{message}");
        assert!(message.len() < 300, "{message}");
        // The full string is still available in the variant.
        assert_eq!(
            name_err(&long),
            TopicError::WildcardInTopicName {
                topic: long.clone()
            }
        );
    }

    #[test]
    fn error_kinds() {
        assert_eq!(name_err("a/+").kind(), TopicKind::Name);
        assert_eq!(filter_err("a+").kind(), TopicKind::Filter);
        assert_eq!(filter_err("").kind(), TopicKind::Filter);
    }

    #[test]
    fn topic_filter_accessors() {
        let plain = TopicFilter::new("sport/+/player1").expect("valid");
        assert_eq!(plain.as_str(), "sport/+/player1");
        assert_eq!(plain.match_filter(), "sport/+/player1");
        assert_eq!(plain.share_group(), None);
        assert!(!plain.is_shared());
        assert!(plain.is_wildcard());
        assert_eq!(plain.to_string(), "sport/+/player1");
        assert_eq!(plain.as_ref(), "sport/+/player1");

        let shared: TopicFilter = "$share/grp/sport/tennis".parse().expect("valid");
        assert_eq!(shared.as_str(), "$share/grp/sport/tennis");
        assert_eq!(shared.share_group(), Some("grp"));
        assert_eq!(shared.match_filter(), "sport/tennis");
        assert!(shared.is_shared());
        assert!(!shared.is_wildcard());
        assert!(shared.matches("sport/tennis"));
        assert!(!shared.matches("$share/grp/sport/tennis"));

        let shared_hash = TopicFilter::try_from("$share/日本/#").expect("valid");
        assert_eq!(shared_hash.share_group(), Some("日本"));
        assert_eq!(shared_hash.match_filter(), "#");
        assert!(shared_hash.is_wildcard());
        assert!(shared_hash.matches("a/b"));
        assert!(!shared_hash.matches("$SYS/x"));

        assert_eq!(
            "a+".parse::<TopicFilter>(),
            Err(TopicError::MisplacedSingleLevelWildcard {
                filter: "a+".to_owned()
            })
        );
        assert_eq!(String::from(plain.clone()), "sport/+/player1");
        assert_eq!(plain.into_string(), "sport/+/player1");
    }

    /// `(filter, topic, expected)` — the examples of MQTT 3.1.1 section 4.7 and more.
    const MATCH_CASES: &[(&str, &str, bool)] = &[
        // 4.7.1.2 multi-level wildcard.
        ("sport/tennis/player1/#", "sport/tennis/player1", true),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking",
            true,
        ),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon",
            true,
        ),
        ("sport/tennis/player1/#", "sport/tennis/player2", false),
        ("sport/tennis/player1/#", "sport/tennis", false),
        ("sport/#", "sport", true),
        ("sport/#", "sport/", true),
        ("sport/#", "sports", false),
        ("#", "sport", true),
        ("#", "sport/tennis/player1", true),
        ("#", "/", true),
        ("#", "/finance", true),
        // 4.7.1.3 single-level wildcard.
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player2", true),
        ("sport/tennis/+", "sport/tennis/player1/ranking", false),
        ("sport/+", "sport", false),
        ("sport/+", "sport/", true),
        ("+", "sport", true),
        ("+", "/", false),
        ("+/tennis/#", "sport/tennis", true),
        ("+/tennis/#", "sport/tennis/player1", true),
        ("+/tennis/#", "sport/football", false),
        ("sport/+/player1", "sport/tennis/player1", true),
        ("sport/+/player1", "sport/tennis/player2", false),
        ("+/+", "/finance", true),
        ("/+", "/finance", true),
        ("+", "/finance", false),
        // Leading, trailing and empty levels are significant.
        ("/finance", "/finance", true),
        ("/finance", "finance", false),
        ("finance", "/finance", false),
        ("finance/", "finance", false),
        ("finance", "finance/", false),
        ("a/b", "a//b", false),
        ("a//b", "a//b", true),
        ("a/+/b", "a//b", true),
        ("a/+/b", "a/b", false),
        ("+/+", "/", true),
        ("/", "/", true),
        ("//", "/", false),
        ("+", "", true),
        ("+/+/+", "//", true),
        // Case sensitivity and plain equality.
        ("ACCOUNTS", "Accounts", false),
        ("Accounts payable", "Accounts payable", true),
        ("sport/tennis", "sport/tennis/player1", false),
        ("sport/tennis/player1", "sport/tennis", false),
        // 4.7.2 topics beginning with '$'.
        ("#", "$SYS", false),
        ("#", "$SYS/broker/load", false),
        ("+/monitor/Clients", "$SYS/monitor/Clients", false),
        ("$SYS/#", "$SYS/monitor/Clients", true),
        ("$SYS/#", "$SYS", true),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
        ("$SYS/+/Clients", "$SYS/monitor/Clients", true),
        ("+", "$SYS", false),
        ("+/+", "$SYS/x", false),
        ("#", "a/$SYS", true),
        ("a/+", "a/$SYS", true),
        ("a/#", "a/$SYS/x", true),
        ("#", "x$", true),
        // Shared subscriptions: the prefix is stripped from the filter.
        ("$share/g/sport/#", "sport/tennis", true),
        ("$share/g/sport/#", "$share/g/sport/tennis", false),
        ("$share/g/#", "$SYS/x", false),
        ("$share/g/+", "a", true),
        ("$share/g/$SYS/#", "$SYS/x", true),
        // UTF-8.
        ("ü/+/🦀", "ü/日本/🦀", true),
        ("ü/+", "u/x", false),
        ("日本/#", "日本", true),
    ];

    #[test]
    fn matching_cases() {
        for &(filter, topic, expected) in MATCH_CASES {
            assert_eq!(
                matches(filter, topic),
                expected,
                "matches({filter:?}, {topic:?})"
            );
            assert_eq!(validate_topic_filter(filter), Ok(()), "{filter:?}");
            let parsed = TopicFilter::new(filter).expect(filter);
            assert_eq!(parsed.matches(topic), expected, "{filter:?} vs {topic:?}");
        }
    }

    #[test]
    fn matcher_does_not_panic_on_invalid_input() {
        for (filter, topic) in [
            ("", ""),
            ("a/#/b", "a/x/b"),
            ("$share/", "x"),
            ("$share/g", "$share/g"),
            ("++", "++"),
            ("\0", "\0"),
        ] {
            let _ = matches(filter, topic);
        }
    }
}
