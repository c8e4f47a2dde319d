//! Topic matching: a trie over dot-separated words with `*` and `#`.
//!
//! # Word splitting (follows RabbitMQ)
//!
//! A key is split on every `.`, so words may be empty: `"a..b"` is `["a", "", "b"]`,
//! `"a."` is `["a", ""]` and `"."` is `["", ""]`. The one exception is the empty key
//! `""`, which is **zero** words, not one empty word: RabbitMQ's
//! `rabbit_db_topic_exchange:split_topic_key/1` (and `split_topic_key_binary/1`) map
//! `<<>>` to `[]`. The same split applies to binding patterns and routing keys. So:
//!
//! * pattern `"#"` matches every key, `""` included (`#` matches zero words);
//! * pattern `"*"` does **not** match `""` (there is no word for it), but matches `"a"`;
//! * pattern `""` matches only the key `""`;
//! * pattern `"*.*"` matches `"."` (two empty words).
//!
//! # Matching cost
//!
//! Matching walks the trie instead of testing every pattern: at each node it follows the
//! child for the literal word, the `*` child and the `#` child. A `#` node can be entered
//! at many key positions, and a chain like `#.#.#.#` would, with naive backtracking, be
//! explored once per way of splitting the key among the `#`s (exponential in the number
//! of `#`). Instead, entering a `#` node at position `p` means "continue from this node at
//! every position `>= p`", so per `#` node we remember the lowest position already
//! explored and only explore the positions below it that are new. Every (node, position)
//! state is then visited at most once, bounding a match by `nodes × (words + 1)`.

use std::collections::HashMap;
use std::hash::Hash;

use crate::set::DestSet;

/// A trie of topic binding patterns, each with a value `D` (a destination).
///
/// The same (pattern, value) pair is stored once; different patterns may carry the same
/// value, so a match can report a value more than once (the routing table dedups queues).
///
/// Insert is iterative; remove and match recurse once per pattern word, which AMQP's
/// 255-byte short-string limit on binding keys keeps shallow.
pub struct TopicTrie<D> {
    root: Node<D>,
    len: usize,
}

struct Node<D> {
    /// Children for literal words (including the empty word).
    words: Children<D>,
    /// Child for the `*` wildcard.
    star: Option<Box<Node<D>>>,
    /// Child for the `#` wildcard.
    hash: Option<Box<Node<D>>>,
    /// Values of the patterns ending at this node.
    values: DestSet<D>,
}

impl<D> Default for Node<D> {
    fn default() -> Self {
        Self {
            words: Children::Small(Vec::new()),
            star: None,
            hash: None,
            values: DestSet::default(),
        }
    }
}

impl<D: Eq + Hash + Clone> Node<D> {
    fn is_empty(&self) -> bool {
        self.values.is_empty() && self.words.is_empty() && self.star.is_none() && self.hash.is_none()
    }
}

/// The literal-word children of a node.
///
/// Most trie nodes have a few children, where comparing strings directly beats hashing
/// the word (SipHash, kept because binding keys come from clients). Nodes that grow past
/// [`Children::SMALL_MAX`] switch to a hash map so lookups stay O(1) at wide nodes.
enum Children<D> {
    Small(Vec<(Box<str>, Node<D>)>),
    Large(HashMap<Box<str>, Node<D>>),
}

impl<D> Children<D> {
    const SMALL_MAX: usize = 8;

    fn is_empty(&self) -> bool {
        match self {
            Self::Small(v) => v.is_empty(),
            Self::Large(m) => m.is_empty(),
        }
    }

    fn get(&self, word: &str) -> Option<&Node<D>> {
        match self {
            Self::Small(v) => v.iter().find(|(w, _)| &**w == word).map(|(_, n)| n),
            Self::Large(m) => m.get(word),
        }
    }

    fn get_mut(&mut self, word: &str) -> Option<&mut Node<D>> {
        match self {
            Self::Small(v) => v.iter_mut().find(|(w, _)| &**w == word).map(|(_, n)| n),
            Self::Large(m) => m.get_mut(word),
        }
    }

    fn get_or_insert(&mut self, word: &str) -> &mut Node<D> {
        if let Self::Small(v) = self {
            if v.len() >= Self::SMALL_MAX && !v.iter().any(|(w, _)| &**w == word) {
                *self = Self::Large(std::mem::take(v).into_iter().collect());
            }
        }
        match self {
            Self::Small(v) => {
                let i = match v.iter().position(|(w, _)| &**w == word) {
                    Some(i) => i,
                    None => {
                        v.push((word.into(), Node::default()));
                        v.len() - 1
                    }
                };
                &mut v[i].1
            }
            Self::Large(m) => m.entry(word.into()).or_default(),
        }
    }

    fn remove(&mut self, word: &str) {
        match self {
            Self::Small(v) => v.retain(|(w, _)| &**w != word),
            Self::Large(m) => {
                m.remove(word);
                // Hysteresis, as for destination sets.
                if m.len() <= Self::SMALL_MAX / 2 {
                    *self = Self::Small(std::mem::take(m).into_iter().collect());
                }
            }
        }
    }
}

/// Splits a topic key or pattern into words, RabbitMQ style (see the module docs): the
/// empty string is zero words, otherwise split on every `.`.
pub fn split_words(key: &str) -> impl Iterator<Item = &str> {
    (!key.is_empty()).then(|| key.split('.')).into_iter().flatten()
}

/// The remaining words of a key during matching: `None` once every word is consumed,
/// else the text starting at the next word. Kept as a suffix of the key (rather than a
/// vector of words) so matching never allocates.
type Rest<'k> = Option<&'k str>;

/// Splits off the first word of a non-exhausted remainder.
fn next_word(s: &str) -> (&str, Rest<'_>) {
    match s.find('.') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

impl<D: Eq + Hash + Clone> Default for TopicTrie<D> {
    fn default() -> Self {
        Self::new()
    }
}

impl<D: Eq + Hash + Clone> TopicTrie<D> {
    /// An empty trie.
    pub fn new() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }

    /// Number of (pattern, value) pairs.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no pattern is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `value` under `pattern`. False (and no change) if that pair exists already.
    pub fn insert(&mut self, pattern: &str, value: D) -> bool {
        let mut node = &mut self.root;
        for word in split_words(pattern) {
            node = match word {
                "*" => node.star.get_or_insert_with(Box::default),
                "#" => node.hash.get_or_insert_with(Box::default),
                _ => node.words.get_or_insert(word),
            };
        }
        let added = node.values.insert(value);
        if added {
            self.len += 1;
        }
        added
    }

    /// Removes `value` from `pattern`, pruning nodes left empty. False if absent.
    pub fn remove(&mut self, pattern: &str, value: &D) -> bool {
        let mut words = split_words(pattern);
        let removed = Self::remove_in(&mut self.root, &mut words, value);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Recursive so that empty nodes can be pruned on the way back up. The depth is the
    /// number of words in the pattern, bounded by AMQP's 255-byte short strings.
    fn remove_in<'p>(
        node: &mut Node<D>,
        words: &mut impl Iterator<Item = &'p str>,
        value: &D,
    ) -> bool {
        let Some(word) = words.next() else {
            return node.values.remove(value);
        };
        match word {
            "*" | "#" => {
                let slot = if word == "*" {
                    &mut node.star
                } else {
                    &mut node.hash
                };
                let Some(child) = slot.as_deref_mut() else {
                    return false;
                };
                let removed = Self::remove_in(child, words, value);
                if child.is_empty() {
                    *slot = None;
                }
                removed
            }
            _ => {
                let Some(child) = node.words.get_mut(word) else {
                    return false;
                };
                let removed = Self::remove_in(child, words, value);
                if child.is_empty() {
                    node.words.remove(word);
                }
                removed
            }
        }
    }

    /// Calls `f` for the value of every pattern matching `key`. A value stored under two
    /// matching patterns is reported twice; one pattern is reported at most once.
    /// Does not allocate unless more than a handful of distinct `#` nodes are reached.
    pub fn for_each_match<'a>(&'a self, key: &str, f: impl FnMut(&'a D)) {
        let mut m = Matcher {
            key_len: key.len(),
            f,
            hash_visits: HashVisits::default(),
        };
        let rest = (!key.is_empty()).then_some(key);
        m.walk(&self.root, rest);
    }

    /// The values of every pattern matching `key` (convenience; allocates).
    pub fn matches(&self, key: &str) -> Vec<&D> {
        let mut out = Vec::new();
        self.for_each_match(key, |d| out.push(d));
        out
    }
}

struct Matcher<F> {
    key_len: usize,
    f: F,
    hash_visits: HashVisits,
}

impl<F> Matcher<F> {
    /// Position of a remainder in the key: byte offset of the next word, or one past the
    /// end once all words are consumed (so that "all consumed" orders after the position
    /// of a trailing empty word).
    fn pos(&self, rest: Rest<'_>) -> usize {
        match rest {
            Some(s) => self.key_len - s.len(),
            None => self.key_len + 1,
        }
    }

    fn walk<'a, D: Eq + Hash + Clone>(&mut self, node: &'a Node<D>, rest: Rest<'_>)
    where
        F: FnMut(&'a D),
    {
        match rest {
            None => {
                for v in node.values.as_slice() {
                    (self.f)(v);
                }
            }
            Some(s) => {
                let (word, after) = next_word(s);
                if let Some(child) = node.words.get(word) {
                    self.walk(child, after);
                }
                if let Some(child) = &node.star {
                    self.walk(child, after);
                }
            }
        }
        if let Some(child) = &node.hash {
            self.enter_hash(child, rest);
        }
    }

    /// `#` consumed zero or more words starting at `rest`: continue from `node` at every
    /// position from `rest` on, skipping positions already explored for this node.
    fn enter_hash<'a, D: Eq + Hash + Clone>(&mut self, node: &'a Node<D>, mut rest: Rest<'_>)
    where
        F: FnMut(&'a D),
    {
        let pos = self.pos(rest);
        let id = node as *const Node<D> as usize;
        let stop = match self.hash_visits.lower(id, pos) {
            Some(explored_from) if explored_from <= pos => return,
            Some(explored_from) => explored_from,
            None => usize::MAX,
        };
        loop {
            if self.pos(rest) >= stop {
                return;
            }
            self.walk(node, rest);
            match rest {
                None => return,
                Some(s) => rest = next_word(s).1,
            }
        }
    }
}

/// Per `#` node, the lowest key position from which it has been explored. A few entries
/// live inline (no allocation in the common case); more spill into a hash map.
#[derive(Default)]
struct HashVisits {
    inline: [(usize, usize); 8],
    len: usize,
    spill: Option<HashMap<usize, usize>>,
}

impl HashVisits {
    /// Records that `id` is explored from `pos`, keeping the minimum; returns the previous
    /// lowest position, or None if `id` was never entered.
    fn lower(&mut self, id: usize, pos: usize) -> Option<usize> {
        if let Some(entry) = self.inline[..self.len].iter_mut().find(|e| e.0 == id) {
            let old = entry.1;
            entry.1 = old.min(pos);
            return Some(old);
        }
        if self.len < self.inline.len() {
            self.inline[self.len] = (id, pos);
            self.len += 1;
            return None;
        }
        let spill = self.spill.get_or_insert_with(HashMap::new);
        match spill.get_mut(&id) {
            Some(old_pos) => {
                let old = *old_pos;
                *old_pos = old.min(pos);
                Some(old)
            }
            None => {
                spill.insert(id, pos);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matched(patterns: &[&str], key: &str) -> Vec<usize> {
        let mut t = TopicTrie::new();
        for (i, p) in patterns.iter().enumerate() {
            t.insert(p, i);
        }
        let mut v: Vec<usize> = t.matches(key).into_iter().copied().collect();
        v.sort();
        v
    }

    fn is_match(pattern: &str, key: &str) -> bool {
        !matched(&[pattern], key).is_empty()
    }

    #[test]
    fn split_follows_rabbitmq() {
        assert_eq!(split_words("").count(), 0);
        assert_eq!(split_words(".").collect::<Vec<_>>(), ["", ""]);
        assert_eq!(split_words("a..b").collect::<Vec<_>>(), ["a", "", "b"]);
        assert_eq!(split_words("a.").collect::<Vec<_>>(), ["a", ""]);
    }

    #[test]
    fn literal_and_star() {
        assert!(is_match("a.b.c", "a.b.c"));
        assert!(!is_match("a.b.c", "a.b"));
        assert!(!is_match("a.b", "a.b.c"));
        assert!(is_match("a.*.c", "a.x.c"));
        assert!(is_match("a.*.c", "a..c"));
        assert!(!is_match("a.*.c", "a.c"));
        assert!(!is_match("a.*.c", "a.x.y.c"));
        assert!(is_match("*", "a"));
        assert!(!is_match("*", "a.b"));
    }

    #[test]
    fn hash() {
        assert!(is_match("#", "a.b.c"));
        assert!(is_match("a.#", "a"));
        assert!(is_match("a.#", "a.b.c"));
        assert!(!is_match("a.#", "b.a"));
        assert!(is_match("#.c", "c"));
        assert!(is_match("#.c", "a.b.c"));
        assert!(!is_match("#.c", "a.b.c.d"));
        assert!(is_match("a.#.c", "a.c"));
        assert!(is_match("a.#.c", "a.b.b.c"));
        assert!(is_match("#.a.#", "x.a.y"));
        assert!(is_match("#.#", "a"));
        assert!(is_match("*.#", "a"));
        assert!(!is_match("*.#", ""));
        assert!(is_match("#.*", "a.b"));
        assert!(is_match("a.#.#.b", "a.b"));
    }

    #[test]
    fn empty_key_is_zero_words() {
        assert!(is_match("#", ""));
        assert!(is_match("#.#", ""));
        assert!(is_match("", ""));
        assert!(!is_match("*", ""));
        assert!(!is_match("", "a"));
        assert!(!is_match("", "."));
        assert!(is_match("*.*", "."));
        assert!(!is_match("*", "."));
        assert!(is_match("a.*", "a."));
        assert!(is_match("a.", "a."));
        assert!(!is_match("a.", "a"));
        assert!(is_match("#.", "."));
        assert!(is_match("#.", "a."));
        assert!(!is_match("#.", ""));
    }

    #[test]
    fn each_pattern_reported_once() {
        // Many ways to split the key among the #s, but the pattern matches once.
        assert_eq!(matched(&["#.#.#", "#", "a.#"], "a.b.c.d"), [0, 1, 2]);
        assert_eq!(matched(&["#.#.#.a.#.#"], "a.a.a.a.a.a"), [0]);
    }

    #[test]
    fn pathological_hash_chain_is_fast() {
        let pattern = vec!["#"; 40].join(".") + ".z";
        let key = vec!["a"; 200].join(".");
        let start = std::time::Instant::now();
        assert!(!is_match(&pattern, &key));
        assert!(is_match(&pattern, &(key + ".z")));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn many_hash_nodes_spill() {
        // More than the inline capacity of distinct # nodes reached in one match.
        let patterns: Vec<String> = (0..50).map(|i| format!("w{i}.#.end")).collect();
        let mut t = TopicTrie::new();
        for p in &patterns {
            t.insert(p, p.clone());
        }
        let mut all = TopicTrie::new();
        for i in 0..50 {
            all.insert(&format!("#.#.x{i}.#"), i);
        }
        assert_eq!(all.matches("a.x7.b.c").len(), 1);
        assert_eq!(t.matches("w3.a.b.end"), [&patterns[3]]);
        let mut deep = TopicTrie::new();
        let p = vec!["#"; 30].join(".");
        deep.insert(&p, 1);
        assert_eq!(deep.matches("a.b.c.d.e.f.g.h.i.j.k.l"), [&1]);
    }

    #[test]
    fn wide_nodes_switch_representation() {
        let mut t = TopicTrie::new();
        for i in 0..20 {
            assert!(t.insert(&format!("w{i}.x"), i));
            assert!(t.insert(&format!("r.w{i}"), i));
        }
        assert!(matches!(t.root.words, Children::Large(_)));
        for i in 0..20 {
            assert_eq!(t.matches(&format!("w{i}.x")), [&i]);
            assert_eq!(t.matches(&format!("r.w{i}")), [&i]);
        }
        for i in 0..18 {
            assert!(t.remove(&format!("w{i}.x"), &i));
            assert!(t.matches(&format!("w{i}.x")).is_empty());
        }
        assert_eq!(t.matches("w19.x"), [&19]);
        assert!(matches!(t.root.words, Children::Small(_)));
        for i in 18..20 {
            assert!(t.remove(&format!("w{i}.x"), &i));
        }
        for i in 0..20 {
            assert!(t.remove(&format!("r.w{i}"), &i));
        }
        assert!(t.is_empty() && t.root.is_empty());
    }

    #[test]
    fn insert_remove_prunes() {
        let mut t = TopicTrie::new();
        assert!(t.insert("a.*.#", 1));
        assert!(!t.insert("a.*.#", 1));
        assert!(t.insert("a.*.#", 2));
        assert!(t.insert("a.b", 1));
        assert!(t.insert("", 3));
        assert_eq!(t.len(), 4);
        assert!(!t.remove("a.*", &1));
        assert!(!t.remove("a.*.#", &9));
        assert!(t.remove("a.*.#", &1));
        assert!(t.remove("a.*.#", &2));
        assert!(!t.remove("a.*.#", &2));
        assert!(t.matches("a.x.y").is_empty());
        assert_eq!(t.matches("a.b"), [&1]);
        assert!(t.remove("a.b", &1));
        assert!(t.remove("", &3));
        assert!(t.is_empty());
        assert!(t.root.is_empty());
    }
}
