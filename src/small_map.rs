//! [`SmallMap`]: an ordered map kept as one sorted `Vec`, for the per-session maps that
//! hold one or a few entries (a session's subscriptions, the router's view of them).
//!
//! A `BTreeMap` allocates a whole leaf (room for 11 entries, about 350 bytes for a
//! filter and its options) for its first entry, and a `HashMap` four buckets and their
//! control bytes; with 10,000 sessions and a route each, that was about half a kilobyte
//! per session. Here the first entry allocates room for itself only, and the map grows
//! as a `Vec` does from then on. Look-up is a binary search; insertion and removal move
//! the entries after it, which costs nothing at these sizes.

use std::borrow::Borrow;

/// An ordered map in a sorted `Vec`. See the [module docs](self).
#[derive(Debug, Clone)]
pub(crate) struct SmallMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap {
            entries: Vec::new(),
        }
    }
}

impl<K: Ord, V> SmallMap<K, V> {
    fn find<Q>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.entries.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }

    /// Entries kept.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The value of `key`.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    /// The value of `key`, to change.
    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        match self.find(key) {
            Ok(i) => Some(&mut self.entries[i].1),
            Err(_) => None,
        }
    }

    /// Whether `key` has a value.
    pub(crate) fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).is_ok()
    }

    /// Sets the value of `key`; returns the one it replaced.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                if self.entries.is_empty() {
                    // Room for this one only: most of these maps never get a second.
                    self.entries.reserve_exact(1);
                }
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    /// Takes `key` out; returns its value. An emptied map gives its memory back.
    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let i = self.find(key).ok()?;
        let (_, v) = self.entries.remove(i);
        if self.entries.is_empty() {
            self.entries = Vec::new();
        }
        Some(v)
    }

    /// Empties the map.
    pub(crate) fn clear(&mut self) {
        self.entries = Vec::new();
    }

    /// The entries, in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// The values, in key order, to change.
    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.entries.iter_mut().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::SmallMap;

    #[test]
    fn keeps_keys_in_order_and_behaves_as_a_map() {
        let mut m = SmallMap::default();
        assert_eq!(m.len(), 0);
        assert_eq!(m.insert("b".to_string(), 2), None);
        assert_eq!(
            m.entries.capacity(),
            1,
            "the first entry takes room for itself only"
        );
        assert_eq!(m.insert("a".to_string(), 1), None);
        assert_eq!(m.insert("c".to_string(), 3), None);
        assert_eq!(m.insert("b".to_string(), 20), Some(2));
        assert_eq!(m.len(), 3);
        let keys: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(m.get("b"), Some(&20));
        assert!(m.contains_key("c") && !m.contains_key("d"));
        *m.get_mut("a").unwrap() += 10;
        for v in m.values_mut() {
            *v += 1;
        }
        assert_eq!(m.get("a"), Some(&12));
        assert_eq!(m.remove("b"), Some(21));
        assert_eq!(m.remove("b"), None);
        assert_eq!(m.remove("a"), Some(12));
        assert_eq!(m.remove("c"), Some(4));
        assert_eq!(m.len(), 0);
        assert_eq!(
            m.entries.capacity(),
            0,
            "an emptied map gives its memory back"
        );
        m.insert("x".to_string(), 1);
        m.clear();
        assert!(m.len() == 0 && m.get("x").is_none());
    }
}
