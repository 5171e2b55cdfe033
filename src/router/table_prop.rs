//! Property tests: the filter trie agrees with the naive matcher, and topic
//! validation never panics.

use std::collections::BTreeSet;

use super::FilterTrie;
use crate::topic::{self, TopicFilter};
use proptest::prelude::*;

/// A valid topic filter built from a small alphabet so that matches are common.
fn filter_strategy() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["a", "b", "$SYS", "", "+"]);
    (
        prop::collection::vec(level, 0..5),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(levels, hash, shared)| {
            let mut filter = levels.join("/");
            if hash {
                if levels.is_empty() {
                    filter.push('#');
                } else {
                    filter.push_str("/#");
                }
            }
            if shared && !filter.is_empty() {
                filter.insert_str(0, "$share/g/");
            }
            filter
        })
        .prop_filter("empty filter", |filter| !filter.is_empty())
}

/// A topic name from the same alphabet (plus a level no filter uses).
fn topic_strategy() -> impl Strategy<Value = String> {
    let level = prop::sample::select(vec!["a", "b", "c", "$SYS", ""]);
    prop::collection::vec(level, 1..6).prop_map(|levels| levels.join("/"))
}

/// Indexes of the trie values matching `topic`.
fn trie_matches(trie: &FilterTrie<usize>, topic: &str) -> BTreeSet<usize> {
    let mut found = BTreeSet::new();
    let mut calls = 0;
    trie.for_each_match(topic, |&index| {
        calls += 1;
        found.insert(index);
    });
    assert_eq!(
        calls,
        found.len(),
        "a value was reported twice for {topic:?}"
    );
    found
}

/// Indexes of the filters the naive matcher says match `topic`.
fn naive_matches<'a>(
    filters: impl IntoIterator<Item = (usize, &'a String)>,
    topic: &str,
) -> BTreeSet<usize> {
    filters
        .into_iter()
        .filter(|(_, filter)| topic::matches(filter, topic))
        .map(|(index, _)| index)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn trie_agrees_with_naive_matcher(
        filters in prop::collection::vec(filter_strategy(), 0..24),
        topics in prop::collection::vec(topic_strategy(), 1..16),
    ) {
        let mut trie = FilterTrie::new();
        for (index, filter) in filters.iter().enumerate() {
            let parsed = TopicFilter::new(filter.as_str());
            prop_assert!(parsed.is_ok(), "{:?}: {:?}", filter, parsed);
            if let Ok(parsed) = parsed {
                trie.insert(&parsed, index);
            }
        }
        prop_assert_eq!(trie.len(), filters.len());
        for topic in &topics {
            prop_assert_eq!(
                trie_matches(&trie, topic),
                naive_matches(filters.iter().enumerate(), topic),
                "topic {:?}", topic
            );
        }
    }

    #[test]
    fn trie_agrees_after_removals(
        filters in prop::collection::vec(filter_strategy(), 0..24),
        removed in prop::collection::btree_set(0usize..24, 0..24),
        topics in prop::collection::vec(topic_strategy(), 1..16),
    ) {
        let parsed: Vec<TopicFilter> = filters
            .iter()
            .filter_map(|filter| TopicFilter::new(filter.as_str()).ok())
            .collect();
        prop_assert_eq!(parsed.len(), filters.len());
        let mut trie = FilterTrie::new();
        for (index, filter) in parsed.iter().enumerate() {
            trie.insert(filter, index);
        }
        for (index, filter) in parsed.iter().enumerate() {
            if removed.contains(&index) {
                let taken = trie.remove(filter, |&value| value == index);
                prop_assert_eq!(taken, vec![index]);
            }
        }
        let kept = filters.iter().enumerate().filter(|(index, _)| !removed.contains(index));
        prop_assert_eq!(trie.len(), kept.clone().count());
        let mut listed: Vec<usize> = trie.iter().map(|(_, &index)| index).collect();
        listed.sort_unstable();
        prop_assert_eq!(listed, kept.clone().map(|(index, _)| index).collect::<Vec<_>>());
        for topic in &topics {
            prop_assert_eq!(
                trie_matches(&trie, topic),
                naive_matches(kept.clone(), topic),
                "topic {:?}", topic
            );
        }
        // Removing everything left prunes the trie back to nothing.
        for (index, filter) in parsed.iter().enumerate() {
            trie.remove(filter, |&value| value == index);
        }
        prop_assert!(trie.is_empty());
        prop_assert_eq!(trie.iter().count(), 0);
    }

    #[test]
    fn validation_never_panics_and_round_trips(
        s in prop_oneof![
            any::<String>(),
            "[ab/+#$\u{0}é]{0,12}",
            "(\\$share)?[/g+#a]{0,10}",
        ],
    ) {
        let filter_ok = topic::validate_topic_filter(&s).is_ok();
        let name_ok = topic::validate_topic_name(&s).is_ok();
        match TopicFilter::new(s.as_str()) {
            Ok(filter) => {
                prop_assert!(filter_ok);
                prop_assert_eq!(filter.as_str(), s.as_str());
                prop_assert_eq!(filter.to_string(), s.clone());
                if filter.share_group().is_none() {
                    prop_assert_eq!(filter.match_filter(), s.as_str());
                }
            }
            Err(err) => {
                prop_assert!(!filter_ok);
                prop_assert!(!err.to_string().is_empty());
            }
        }
        if name_ok {
            // A valid topic name is a valid filter that matches itself.
            prop_assert!(filter_ok);
            prop_assert!(topic::matches(&s, &s));
        }
        let _ = topic::matches(&s, &s);
    }
}
