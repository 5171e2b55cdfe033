//! A trie of MQTT topic filters, for routing incoming PUBLISH topics to subscribers.
//!
//! [`FilterTrie`] stores values (routes) under validated [`TopicFilter`]s. Each trie
//! node stands for one filter level; its exact-level children live in a hash map
//! keyed by the level text, and the `+` and `#` wildcards have their own slots. To
//! find every route matching a topic, [`FilterTrie::for_each_match`] walks the
//! topic's levels once, following at each node at most the exact child, the `+`
//! child and the `#` child. Its cost therefore grows with the depth of the topic
//! (and the number of wildcard branches actually present), not with the number of
//! stored routes, which a linear scan over all filters would require.
//!
//! Shared subscriptions are stored under their match filter
//! ([`TopicFilter::match_filter`]): `$share/g/a/+` and `a/+` share a node. The `$`
//! rule of [MQTT-4.7.2-1] is respected: a topic starting with `$` is not matched by
//! filters whose first level is `+` or `#`.
//!
//! Matching, insertion and removal are iterative, so even a filter or topic with
//! tens of thousands of levels cannot overflow the stack; for the same reason the
//! trie is also dropped iteratively.
//!
//! Nodes are shared between clones (`Arc`) and copied on write: cloning a trie copies
//! only its root, and a change afterwards copies the nodes on its path (each with its
//! map of children, whose entries are reference counts). The router publishes a clone
//! of its table after every change (after a burst of added routes, once) while readers
//! keep the previous one, so a change costs the width of the nodes on its path, not the
//! size of the table.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::topic::TopicFilter;

/// Matching keeps this many pending branches on the stack before spilling to the
/// heap. A pending branch needs both a `+` and an exact child at some level, so
/// only tries with more than this many such branch points along one topic ever
/// allocate while matching.
const INLINE_FRAMES: usize = 32;

/// One level of the trie. `Clone` is a shallow copy: the children are shared (copy on
/// write, see the module docs).
#[derive(Clone)]
struct Node<T> {
    /// The match filter leading to this node, e.g. `a/+/#`; only kept while the
    /// node holds values (empty otherwise, so deep chains stay linear in size).
    filter: Box<str>,
    /// Values whose filter ends at this node.
    values: Vec<T>,
    /// Children for exact (non-wildcard) levels, keyed by the level text.
    children: HashMap<Arc<str>, Arc<Node<T>>>,
    /// Child for a `+` level.
    plus: Option<Arc<Node<T>>>,
    /// Child for a `#` level; it is always a leaf.
    hash: Option<Arc<Node<T>>>,
}

impl<T> Node<T> {
    fn new() -> Self {
        Node {
            filter: Box::default(),
            values: Vec::new(),
            children: HashMap::new(),
            plus: None,
            hash: None,
        }
    }

    /// Whether the node holds no values and has no children (so can be pruned).
    fn is_empty(&self) -> bool {
        self.values.is_empty()
            && self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_none()
    }

    /// Number of children of any kind.
    fn child_count(&self) -> usize {
        self.children.len() + usize::from(self.plus.is_some()) + usize::from(self.hash.is_some())
    }

    /// The child for one filter level, if present.
    fn child(&self, level: &str) -> Option<&Node<T>> {
        match level {
            "+" => self.plus.as_deref(),
            "#" => self.hash.as_deref(),
            _ => self.children.get(level).map(|c| &**c),
        }
    }

    /// The children of every kind.
    fn all_children(&self) -> impl Iterator<Item = &Node<T>> {
        self.children
            .values()
            .map(|c| &**c)
            .chain(self.plus.as_deref())
            .chain(self.hash.as_deref())
    }

    /// Detaches the child for one filter level.
    fn take_child(&mut self, level: &str) -> Option<Arc<Node<T>>> {
        match level {
            "+" => self.plus.take(),
            "#" => self.hash.take(),
            _ => self.children.remove(level),
        }
    }
}

impl<T: Clone> Node<T> {
    /// The child for one filter level, if present, copied first if it is shared.
    fn child_mut(&mut self, level: &str) -> Option<&mut Node<T>> {
        match level {
            "+" => self.plus.as_mut().map(Arc::make_mut),
            "#" => self.hash.as_mut().map(Arc::make_mut),
            _ => self.children.get_mut(level).map(Arc::make_mut),
        }
    }

    /// Follows `levels` down from this node, copying the shared nodes on the way.
    fn descend_mut<'s>(&mut self, levels: impl Iterator<Item = &'s str>) -> Option<&mut Node<T>> {
        let mut node = self;
        for level in levels {
            node = node.child_mut(level)?;
        }
        Some(node)
    }
}

/// Drops a subtree without recursion, so that very deep tries cannot overflow
/// the stack. Nodes still shared with a clone are left to it.
fn dismantle<T>(root: Node<T>) {
    let mut stack = vec![root];
    let push = |stack: &mut Vec<Node<T>>, child: Arc<Node<T>>| {
        if let Ok(node) = Arc::try_unwrap(child) {
            stack.push(node);
        }
    };
    while let Some(mut node) = stack.pop() {
        for (_, child) in node.children.drain() {
            push(&mut stack, child);
        }
        if let Some(child) = node.plus.take() {
            push(&mut stack, child);
        }
        if let Some(child) = node.hash.take() {
            push(&mut stack, child);
        }
        // `node` now has no children and is dropped shallowly here.
    }
}

/// A trie of topic filters, each holding one or more values of type `T` (see the test
/// `matches_collects_the_values_of_every_matching_filter`).
pub struct FilterTrie<T> {
    root: Node<T>,
    len: usize,
}

impl<T> FilterTrie<T> {
    /// Creates an empty trie.
    pub fn new() -> Self {
        FilterTrie {
            root: Node::new(),
            len: 0,
        }
    }

    /// Number of values stored (a filter inserted twice counts twice).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the trie holds no values.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T: Clone> FilterTrie<T> {
    /// Stores `value` under `filter`. Several values may share a filter; they are
    /// kept in insertion order. Shared subscriptions are stored under their match
    /// filter, i.e. with the `$share/{group}/` prefix stripped.
    pub fn insert(&mut self, filter: &TopicFilter, value: T) {
        self.insert_str(filter.match_filter(), value);
    }

    /// Stores `value` under a match filter that is already known to be valid.
    fn insert_str(&mut self, filter: &str, value: T) {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            let child = match level {
                "+" => node.plus.get_or_insert_with(|| Arc::new(Node::new())),
                "#" => node.hash.get_or_insert_with(|| Arc::new(Node::new())),
                _ => node
                    .children
                    .entry(level.into())
                    .or_insert_with(|| Arc::new(Node::new())),
            };
            node = Arc::make_mut(child);
        }
        if node.values.is_empty() {
            node.filter = filter.into();
        }
        node.values.push(value);
        self.len += 1;
    }

    /// Removes and returns the values stored under `filter` for which `pred`
    /// returns `true`, in insertion order, pruning trie nodes left empty.
    ///
    /// As with [`insert`](Self::insert), the match filter is the key: removing
    /// `$share/g/a` also considers values inserted under `a` or `$share/h/a`, so
    /// use `pred` to tell them apart.
    pub fn remove(&mut self, filter: &TopicFilter, mut pred: impl FnMut(&T) -> bool) -> Vec<T> {
        let filter = filter.match_filter();
        let Some(node) = self.root.descend_mut(filter.split('/')) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        let mut kept = Vec::with_capacity(node.values.len());
        for value in std::mem::take(&mut node.values) {
            if pred(&value) {
                removed.push(value);
            } else {
                kept.push(value);
            }
        }
        if kept.is_empty() {
            node.filter = Box::default();
        }
        node.values = kept;
        let now_empty = node.is_empty();
        self.len -= removed.len();
        if now_empty {
            self.prune(filter);
        }
        removed
    }

    /// Detaches the longest chain of nodes that ends at the (empty) node for
    /// `filter` and holds nothing else.
    fn prune(&mut self, filter: &str) {
        // The cut is made below the deepest node on the path that must stay: the
        // root, or a node with values or with children off the path.
        let mut cut_depth = 0;
        let mut cut_level = "";
        let mut node = &self.root;
        for (depth, level) in filter.split('/').enumerate() {
            if depth == 0 || !node.values.is_empty() || node.child_count() > 1 {
                cut_depth = depth;
                cut_level = level;
            }
            match node.child(level) {
                Some(child) => node = child,
                None => return,
            }
        }
        if !node.is_empty() {
            return;
        }
        if let Some(parent) = self.root.descend_mut(filter.split('/').take(cut_depth)) {
            if let Some(subtree) = parent.take_child(cut_level) {
                if let Ok(subtree) = Arc::try_unwrap(subtree) {
                    dismantle(subtree);
                }
            }
        }
    }
}

impl<T> FilterTrie<T> {
    /// Removes every value.
    pub fn clear(&mut self) {
        dismantle(std::mem::replace(&mut self.root, Node::new()));
        self.len = 0;
    }

    /// Calls `f` once for every stored value whose filter matches the topic name
    /// `topic`, honouring [MQTT-4.7.2-1] (a topic starting with `$` is not matched
    /// by filters whose first level is a wildcard).
    ///
    /// The order of the calls is unspecified. `topic` is not validated. This does
    /// not allocate unless more than 32 wildcard branches are pending at once.
    pub fn for_each_match<'a>(&'a self, topic: &str, mut f: impl FnMut(&'a T)) {
        let mut stack = FrameStack::new();
        let root = &self.root;
        let (level, rest) = split_level(topic);
        // The first level is handled apart for the '$' rule.
        if !topic.starts_with('$') {
            if let Some(hash) = root.hash.as_deref() {
                hash.values.iter().for_each(&mut f);
            }
            if let Some(plus) = root.plus.as_deref() {
                stack.push(Frame { node: plus, rest });
            }
        }
        if let Some(child) = root.children.get(level) {
            stack.push(Frame {
                node: &**child,
                rest,
            });
        }
        while let Some(Frame { node, rest }) = stack.pop() {
            // `#` matches the parent level as well as any child levels.
            if let Some(hash) = node.hash.as_deref() {
                hash.values.iter().for_each(&mut f);
            }
            let Some(rest) = rest else {
                node.values.iter().for_each(&mut f);
                continue;
            };
            let (level, rest) = split_level(rest);
            if let Some(plus) = node.plus.as_deref() {
                stack.push(Frame { node: plus, rest });
            }
            if let Some(child) = node.children.get(level) {
                stack.push(Frame {
                    node: &**child,
                    rest,
                });
            }
        }
    }

    /// The values whose filter matches `topic` (see
    /// [`for_each_match`](Self::for_each_match)), in unspecified order.
    pub fn matches(&self, topic: &str) -> Vec<&T> {
        let mut out = Vec::new();
        self.for_each_match(topic, |value| out.push(value));
        out
    }

    /// Iterates over all `(match filter, value)` pairs, in unspecified order. The
    /// filter is the stored key: shared subscriptions appear without their
    /// `$share/{group}/` prefix.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter {
            stack: vec![&self.root],
            current: None,
        }
    }
}

/// Splits off the first level of `topic`; the rest is `None` after the last level.
fn split_level(topic: &str) -> (&str, Option<&str>) {
    match topic.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (topic, None),
    }
}

/// A pending match: a trie node and the topic levels it has yet to consume
/// (`None` once the whole topic is consumed).
struct Frame<'a, 't, T> {
    node: &'a Node<T>,
    rest: Option<&'t str>,
}

impl<T> Clone for Frame<'_, '_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Frame<'_, '_, T> {}

/// A stack of frames that lives on the call stack up to [`INLINE_FRAMES`] entries
/// and spills to the heap beyond that.
struct FrameStack<'a, 't, T> {
    inline: [Option<Frame<'a, 't, T>>; INLINE_FRAMES],
    inline_len: usize,
    spill: Vec<Frame<'a, 't, T>>,
}

impl<'a, 't, T> FrameStack<'a, 't, T> {
    fn new() -> Self {
        FrameStack {
            inline: [None; INLINE_FRAMES],
            inline_len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, frame: Frame<'a, 't, T>) {
        match self.inline.get_mut(self.inline_len) {
            Some(slot) => {
                *slot = Some(frame);
                self.inline_len += 1;
            }
            None => self.spill.push(frame),
        }
    }

    fn pop(&mut self) -> Option<Frame<'a, 't, T>> {
        if let Some(frame) = self.spill.pop() {
            return Some(frame);
        }
        self.inline_len = self.inline_len.checked_sub(1)?;
        self.inline.get_mut(self.inline_len)?.take()
    }
}

/// Iterator over the `(match filter, value)` pairs of a [`FilterTrie`], created
/// by [`FilterTrie::iter`].
pub struct Iter<'a, T> {
    stack: Vec<&'a Node<T>>,
    current: Option<(&'a str, std::slice::Iter<'a, T>)>,
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = (&'a str, &'a T);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((filter, values)) = &mut self.current {
                if let Some(value) = values.next() {
                    return Some((filter, value));
                }
            }
            let node = self.stack.pop()?;
            self.stack.extend(node.all_children());
            self.current = Some((&node.filter, node.values.iter()));
        }
    }
}

impl<T> fmt::Debug for Iter<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter").finish_non_exhaustive()
    }
}

impl<'a, T> IntoIterator for &'a FilterTrie<T> {
    type Item = (&'a str, &'a T);
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T> Default for FilterTrie<T> {
    fn default() -> Self {
        FilterTrie::new()
    }
}

impl<T> Drop for FilterTrie<T> {
    fn drop(&mut self) {
        self.clear();
    }
}

impl<T: Clone> Clone for FilterTrie<T> {
    /// Copies the root only: every other node is shared until a change copies it (see
    /// the module docs). Values sharing a filter keep their relative order.
    fn clone(&self) -> Self {
        FilterTrie {
            root: self.root.clone(),
            len: self.len,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for FilterTrie<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilterTrie")
            .field("len", &self.len)
            .field("routes", &Routes(self))
            .finish()
    }
}

/// Formats the routes of a trie as a list of `(filter, value)` pairs.
struct Routes<'a, T>(&'a FilterTrie<T>);

impl<T: fmt::Debug> fmt::Debug for Routes<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

/// Property tests against the naive matcher.
#[cfg(test)]
#[path = "table_prop.rs"]
mod prop;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_collects_the_values_of_every_matching_filter() {
        let mut trie = FilterTrie::new();
        trie.insert(&TopicFilter::new("sport/+/score").unwrap(), 1);
        trie.insert(&TopicFilter::new("sport/#").unwrap(), 2);
        trie.insert(&TopicFilter::new("news/#").unwrap(), 3);
        let mut hits = trie.matches("sport/tennis/score");
        hits.sort();
        assert_eq!(hits, [&1, &2]);
    }

    fn tf(filter: &str) -> TopicFilter {
        TopicFilter::new(filter).expect(filter)
    }

    fn sorted(trie: &FilterTrie<usize>, topic: &str) -> Vec<usize> {
        let mut out: Vec<usize> = trie.matches(topic).into_iter().copied().collect();
        out.sort_unstable();
        out
    }

    fn trie_of(filters: &[&str]) -> FilterTrie<usize> {
        let mut trie = FilterTrie::new();
        for (i, filter) in filters.iter().enumerate() {
            trie.insert(&tf(filter), i);
        }
        trie
    }

    /// Number of nodes below the root, to observe pruning.
    fn node_count<T>(trie: &FilterTrie<T>) -> usize {
        let mut count = 0;
        let mut stack = vec![&trie.root];
        while let Some(node) = stack.pop() {
            count += 1;
            stack.extend(node.all_children());
        }
        count - 1
    }

    #[test]
    fn empty_trie() {
        let trie: FilterTrie<usize> = FilterTrie::default();
        assert!(trie.is_empty());
        assert_eq!(trie.len(), 0);
        assert!(trie.matches("a").is_empty());
        assert_eq!(trie.iter().count(), 0);
    }

    #[test]
    fn exact_match() {
        let trie = trie_of(&["a/b", "a", "a/b/c", "/a", "a/"]);
        assert_eq!(sorted(&trie, "a/b"), [0]);
        assert_eq!(sorted(&trie, "a"), [1]);
        assert_eq!(sorted(&trie, "a/b/c"), [2]);
        assert_eq!(sorted(&trie, "/a"), [3]);
        assert_eq!(sorted(&trie, "a/"), [4]);
        assert!(sorted(&trie, "a//b").is_empty());
        assert!(sorted(&trie, "b").is_empty());
    }

    #[test]
    fn single_level_wildcard() {
        let trie = trie_of(&["sport/tennis/+", "+", "+/+", "/+", "a/+/b"]);
        assert_eq!(sorted(&trie, "sport/tennis/player1"), [0]);
        assert!(sorted(&trie, "sport/tennis/player1/ranking").is_empty());
        assert_eq!(sorted(&trie, "sport"), [1]);
        assert_eq!(sorted(&trie, ""), [1]);
        assert_eq!(sorted(&trie, "/finance"), [2, 3]);
        assert_eq!(sorted(&trie, "/"), [2, 3]);
        assert_eq!(sorted(&trie, "a//b"), [4]);
        assert_eq!(sorted(&trie, "a/b"), [2]);
    }

    #[test]
    fn multi_level_wildcard() {
        let trie = trie_of(&["sport/tennis/player1/#", "sport/#", "#", "+/tennis/#"]);
        assert_eq!(sorted(&trie, "sport/tennis/player1"), [0, 1, 2, 3]);
        assert_eq!(sorted(&trie, "sport/tennis/player1/ranking"), [0, 1, 2, 3]);
        assert_eq!(sorted(&trie, "sport"), [1, 2]);
        assert_eq!(sorted(&trie, "sport/"), [1, 2]);
        assert_eq!(sorted(&trie, "sport/tennis"), [1, 2, 3]);
        assert_eq!(sorted(&trie, "sports"), [2]);
        assert_eq!(sorted(&trie, "/"), [2]);
    }

    #[test]
    fn dollar_topics() {
        let trie = trie_of(&["#", "+/monitor/Clients", "$SYS/#", "$SYS/monitor/+", "+"]);
        assert_eq!(sorted(&trie, "$SYS/monitor/Clients"), [2, 3]);
        assert_eq!(sorted(&trie, "$SYS"), [2]);
        assert_eq!(sorted(&trie, "x/monitor/Clients"), [0, 1]);
        assert_eq!(sorted(&trie, "a/$SYS"), [0]);
        assert_eq!(sorted(&trie, "$other"), Vec::<usize>::new());
    }

    #[test]
    fn shared_subscriptions_use_match_filter() {
        let trie = trie_of(&["$share/g/a/+", "a/+", "$share/h/#"]);
        assert_eq!(sorted(&trie, "a/b"), [0, 1, 2]);
        assert_eq!(sorted(&trie, "$share/g/a/b"), Vec::<usize>::new());
        assert_eq!(sorted(&trie, "$SYS/x"), Vec::<usize>::new());
        let mut pairs: Vec<(&str, usize)> = trie.iter().map(|(f, v)| (f, *v)).collect();
        pairs.sort_unstable();
        assert_eq!(pairs, [("#", 2), ("a/+", 0), ("a/+", 1)]);
    }

    #[test]
    fn several_values_per_filter() {
        let mut trie = FilterTrie::new();
        let filter = tf("a/+");
        trie.insert(&filter, 1);
        trie.insert(&filter, 2);
        trie.insert(&filter, 1);
        assert_eq!(trie.len(), 3);
        assert_eq!(trie.matches("a/x"), [&1, &2, &1]);
        assert_eq!(trie.remove(&filter, |v| *v == 1), [1, 1]);
        assert_eq!(trie.len(), 1);
        assert_eq!(trie.matches("a/x"), [&2]);
        assert_eq!(node_count(&trie), 2);
    }

    #[test]
    fn remove_prunes_empty_nodes() {
        let mut trie = trie_of(&["a/b/c/d", "a/b", "a/+/#"]);
        // a, a/b, a/b/c, a/b/c/d, a/+, a/+/#
        assert_eq!(node_count(&trie), 6);
        assert_eq!(trie.remove(&tf("a/b/c/d"), |_| true), [0]);
        assert_eq!(node_count(&trie), 4); // a, a/b, a/+, a/+/#
        assert_eq!(trie.remove(&tf("a/+/#"), |_| true), [2]);
        assert_eq!(node_count(&trie), 2); // a, a/b
        assert_eq!(trie.remove(&tf("a/b"), |_| true), [1]);
        assert_eq!(node_count(&trie), 0);
        assert!(trie.is_empty());
    }

    #[test]
    fn remove_keeps_nodes_still_in_use() {
        let mut trie = trie_of(&["a/b", "a/b/c", "a"]);
        assert_eq!(trie.remove(&tf("a/b"), |_| true), [0]);
        // a/b has a child, so it stays.
        assert_eq!(sorted(&trie, "a/b/c"), [1]);
        assert_eq!(node_count(&trie), 3);
        assert_eq!(trie.remove(&tf("a/b/c"), |_| true), [1]);
        // a/b and a/b/c go, a holds a value.
        assert_eq!(node_count(&trie), 1);
        assert_eq!(sorted(&trie, "a"), [2]);
    }

    #[test]
    fn remove_missing_or_unmatched() {
        let mut trie = trie_of(&["a/b"]);
        assert!(trie.remove(&tf("a/c"), |_| true).is_empty());
        assert!(trie.remove(&tf("a/b/c"), |_| true).is_empty());
        assert!(trie.remove(&tf("a/+"), |_| true).is_empty());
        assert!(trie.remove(&tf("a/b"), |_| false).is_empty());
        // The intermediate node "a" has no values but must not be pruned.
        assert!(trie.remove(&tf("a"), |_| true).is_empty());
        assert_eq!(trie.len(), 1);
        assert_eq!(node_count(&trie), 2);
        assert_eq!(sorted(&trie, "a/b"), [0]);
    }

    #[test]
    fn remove_shared_uses_match_filter() {
        let mut trie = trie_of(&["$share/g/a", "a"]);
        assert_eq!(trie.remove(&tf("$share/other/a"), |v| *v == 0), [0]);
        assert_eq!(trie.remove(&tf("a"), |_| true), [1]);
        assert_eq!(node_count(&trie), 0);
    }

    #[test]
    fn clone_and_debug() {
        let trie = trie_of(&["a/+", "#", "a/+"]);
        let clone = trie.clone();
        assert_eq!(clone.len(), 3);
        assert_eq!(clone.matches("a/b"), trie.matches("a/b"));
        drop(trie);
        assert_eq!(sorted(&clone, "a/b"), [0, 1, 2]);
        let debug = format!("{clone:?}");
        assert!(debug.contains("len: 3"), "{debug}");
        assert!(debug.contains("(\"a/+\", 0)"), "{debug}");
    }

    #[test]
    fn a_clone_shares_nodes_until_a_change_copies_them_and_neither_sees_the_others_changes() {
        let mut trie = trie_of(&["s/1/#", "s/2/#", "t/+"]);
        let clone = trie.clone();
        // Only the root was copied: the first level is the same node in both.
        assert!(Arc::ptr_eq(
            &trie.root.children["s"],
            &clone.root.children["s"]
        ));
        trie.insert(&tf("s/3/#"), 3);
        assert_eq!(trie.remove(&tf("t/+"), |_| true), [2]);
        // The path of the change was copied; the untouched subtree is still shared.
        assert!(!Arc::ptr_eq(
            &trie.root.children["s"],
            &clone.root.children["s"]
        ));
        assert!(Arc::ptr_eq(
            &trie.root.children["s"].children["1"],
            &clone.root.children["s"].children["1"]
        ));
        assert_eq!(sorted(&trie, "s/3/x"), [3]);
        assert!(clone.matches("s/3/x").is_empty());
        assert_eq!(sorted(&clone, "t/x"), [2]);
        assert!(trie.matches("t/x").is_empty());
        assert_eq!((trie.len(), clone.len()), (3, 3));
        drop(clone);
        assert_eq!(sorted(&trie, "s/1/x"), [0]);
    }

    #[test]
    fn clear_empties() {
        let mut trie = trie_of(&["a/+", "#"]);
        trie.clear();
        assert!(trie.is_empty());
        assert_eq!(node_count(&trie), 0);
        assert!(trie.matches("a/b").is_empty());
    }

    #[test]
    fn many_branches_spill_to_heap() {
        // Every level has both an exact and a `+` child: 2^depth paths.
        let depth = 12;
        let mut trie = FilterTrie::new();
        for mask in 0u32..(1 << depth) {
            let filter: Vec<&str> = (0..depth)
                .map(|i| if mask & (1 << i) != 0 { "+" } else { "x" })
                .collect();
            trie.insert(&tf(&filter.join("/")), mask);
        }
        let topic = vec!["x"; depth].join("/");
        assert_eq!(trie.matches(&topic).len(), 1 << depth);
    }

    #[test]
    fn very_deep_filters_do_not_overflow_the_stack() {
        let deep = "/".repeat(crate::topic::MAX_TOPIC_LEN);
        let plus = vec!["+"; 30_000].join("/");
        let mut trie = FilterTrie::new();
        trie.insert(&tf(&deep), 0);
        trie.insert(&tf(&plus), 1);
        // 65_534 empty levels then `#`.
        let deep_hash = format!("{}#", "/".repeat(crate::topic::MAX_TOPIC_LEN - 1));
        trie.insert(&tf(&deep_hash), 2);
        // `deep` and `plus` share 30_000 levels of branching.
        let topic = "/".repeat(29_999);
        assert_eq!(sorted(&trie, &topic), [1]);
        assert_eq!(sorted(&trie, &deep), [0, 2]);
        let clone = trie.clone();
        assert_eq!(clone.len(), 3);
        assert_eq!(trie.remove(&tf(&deep), |_| true), [0]);
        assert_eq!(trie.remove(&tf(&plus), |_| true), [1]);
        // Run the checks on a thread with a small stack.
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                assert_eq!(sorted(&clone, &deep), [0, 2]);
                drop(clone);
                drop(trie);
            })
            .expect("spawn")
            .join()
            .expect("no stack overflow");
    }
}
