//! A small insertion-ordered set used for the destinations of one binding key.
//!
//! Most binding keys have one or a handful of destinations, where a plain vector with a
//! linear scan is both smaller and faster than a hash set. A few keys (a fanout exchange
//! with thousands of queues, a topic `#` everybody binds) get many, and there a linear
//! scan per bind/unbind would make bulk operations quadratic. So the set keeps a vector
//! (which `route` iterates without hashing) and only builds a position index once it
//! grows past [`INDEX_AT`] entries.
//!
//! The set is embedded in every topic trie node and every exact-match or direct entry,
//! so it is kept small: the rare index is boxed (32 bytes for the set instead of 72),
//! and a set's first item gets room for exactly one, since most keys have one
//! destination.

use std::collections::HashMap;
use std::hash::Hash;

/// Size at which a position index is built.
const INDEX_AT: usize = 16;

pub(crate) struct DestSet<D> {
    items: Vec<D>,
    /// item → its position in `items`; only present for large sets. Boxed on purpose:
    /// an inline `HashMap` would more than double every set for the rare large one.
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<D, usize>>>,
}

impl<D> Default for DestSet<D> {
    fn default() -> Self {
        Self { items: Vec::new(), index: None }
    }
}

impl<D: Eq + Hash + Clone> DestSet<D> {
    pub(crate) fn as_slice(&self) -> &[D] {
        &self.items
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    fn position(&self, d: &D) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(d).copied(),
            None => self.items.iter().position(|x| x == d),
        }
    }

    /// Adds `d`; false if it was present already.
    pub(crate) fn insert(&mut self, d: D) -> bool {
        if self.position(&d).is_some() {
            return false;
        }
        if let Some(index) = &mut self.index {
            index.insert(d.clone(), self.items.len());
        }
        if self.items.is_empty() {
            self.items.reserve_exact(1);
        }
        self.items.push(d);
        if self.index.is_none() && self.items.len() >= INDEX_AT {
            self.index = Some(Box::new(self.items.iter().enumerate().map(|(i, d)| (d.clone(), i)).collect()));
        }
        true
    }

    /// Removes `d`; false if it was absent. Order is not preserved (swap-remove).
    pub(crate) fn remove(&mut self, d: &D) -> bool {
        let Some(pos) = self.position(d) else {
            return false;
        };
        self.items.swap_remove(pos);
        if let Some(index) = &mut self.index {
            index.remove(d);
            if let Some(moved) = self.items.get(pos) {
                index.insert(moved.clone(), pos);
            }
        }
        // Hysteresis: drop the index well below the build threshold so a set hovering
        // around the threshold does not rebuild it on every change.
        if self.items.len() < INDEX_AT / 2 {
            self.index = None;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::DestSet;

    #[test]
    fn insert_remove_across_index_threshold() {
        let mut s = DestSet::default();
        for i in 0..100 {
            assert!(s.insert(i));
            assert!(!s.insert(i));
        }
        assert_eq!(s.len(), 100);
        for i in (0..100).step_by(2) {
            assert!(s.remove(&i));
            assert!(!s.remove(&i));
        }
        assert_eq!(s.len(), 50);
        for i in 0..100 {
            assert_eq!(s.as_slice().contains(&i), i % 2 == 1);
            assert_eq!(!s.insert(i), i % 2 == 1);
        }
        for i in 0..100 {
            assert!(s.remove(&i));
        }
        assert!(s.is_empty());
    }
}
