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
//! A pattern without `*` or `#` matches exactly one key, the one equal to its text, so
//! such patterns are not in the trie at all but in a hash map by text: one hash of the
//! whole key (a seeded folded-multiply hash) and one probe find every literal pattern
//! that matches, however many are bound. Applications mostly bind literal keys, so the
//! trie holds the few patterns that need walking and tends to stay in cache.
//!
//! Matching walks the trie instead of testing every pattern: at each node it follows the
//! child for the literal word, the `*` child and the `#` child. A `#` node can be entered
//! at many key positions, and a chain like `#.#.#.#` would, with naive backtracking, be
//! explored once per way of splitting the key among the `#`s (exponential in the number
//! of `#`). Instead, entering a `#` node at position `p` means "continue from this node at
//! every position `>= p`", so per `#` node we remember the lowest position already
//! explored and only explore the positions below it that are new. Every (node, position)
//! state is then visited at most once, bounding a match by `nodes × (words + 1)`.
//!
//! Literal words in the trie are interned ([`crate::words`]): each distinct word of a
//! bound wildcard pattern has an integer id and trie edges are keyed by id. A match
//! splits the key once (into a stack buffer of ids) and hashes each key word once to
//! find its id; a word no pattern uses gets an id no edge carries, so only `*` and `#`
//! can take it. Each node visit is then an integer scan of a few (id, child) pairs, or
//! an integer-keyed hash lookup at wide nodes: no string comparison and no hashing of
//! words per node, so the cost is dominated by the memory touched, one to three cache
//! lines per visited node.
//!
//! In all, a match costs one hash of the key, one vocabulary lookup per key word (only
//! if the trie is not empty), and at most `nodes × (words + 1)` node visits of O(1)
//! each; in practice the visited nodes are the few paths of literal words and `*`s
//! the key spells, plus the `#` nodes reached.

use std::collections::HashMap;
use std::hash::Hash;

use crate::set::DestSet;
use crate::words::{IdMap, Vocabulary, WordHashBuilder, WordId, UNKNOWN};

/// A trie of topic binding patterns, each with a value `D` (a destination).
///
/// The same (pattern, value) pair is stored once; different patterns may carry the same
/// value, so a match can report a value more than once (the routing table dedups queues).
///
/// Patterns without wildcards match exactly the key equal to them, so they are kept in a
/// hash map by their text rather than in the trie: one lookup finds them all, and the
/// trie only holds the patterns that need walking.
///
/// Literal words are interned (see [`crate::words`]): trie edges carry word ids, and a
/// match looks each key word up once in the vocabulary.
///
/// Insert is iterative; remove and match recurse once per pattern word, which AMQP's
/// 255-byte short-string limit on binding keys keeps shallow.
pub struct TopicTrie<D> {
    /// Patterns without `*` or `#`, by their text.
    exact: HashMap<Box<str>, DestSet<D>, WordHashBuilder>,
    /// Patterns with at least one wildcard.
    root: Node<D>,
    len: usize,
    vocab: Vocabulary,
}

struct Node<D> {
    /// Children for literal words (including the empty word), by word id.
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
        Self { words: Children::Small(Vec::new()), star: None, hash: None, values: DestSet::default() }
    }
}

impl<D: Eq + Hash + Clone> Node<D> {
    fn is_empty(&self) -> bool {
        self.values.is_empty() && self.words.is_empty() && self.star.is_none() && self.hash.is_none()
    }
}

/// The literal-word children of a node, by word id.
///
/// Most trie nodes have a few children, where scanning a short vector of (id, child)
/// pairs (integer compares, 16 bytes per entry) beats hashing. Nodes that grow past
/// [`Children::SMALL_MAX`] switch to a hash map so lookups stay O(1) at wide nodes.
enum Children<D> {
    Small(Vec<(WordId, Box<Node<D>>)>),
    Large(IdMap<Box<Node<D>>>),
}

impl<D> Children<D> {
    const SMALL_MAX: usize = 8;

    fn is_empty(&self) -> bool {
        match self {
            Self::Small(v) => v.is_empty(),
            Self::Large(m) => m.is_empty(),
        }
    }

    #[inline]
    fn get(&self, id: WordId) -> Option<&Node<D>> {
        match self {
            Self::Small(v) => v.iter().find(|(w, _)| *w == id).map(|(_, n)| &**n),
            Self::Large(m) => m.get(&id).map(|n| &**n),
        }
    }

    fn get_mut(&mut self, id: WordId) -> Option<&mut Node<D>> {
        match self {
            Self::Small(v) => v.iter_mut().find(|(w, _)| *w == id).map(|(_, n)| &mut **n),
            Self::Large(m) => m.get_mut(&id).map(|n| &mut **n),
        }
    }

    /// The child for `id`, created if missing; the flag says whether it was created.
    fn get_or_insert(&mut self, id: WordId) -> (&mut Node<D>, bool) {
        if let Self::Small(v) = self {
            if v.len() >= Self::SMALL_MAX && !v.iter().any(|(w, _)| *w == id) {
                *self = Self::Large(std::mem::take(v).into_iter().collect());
            }
        }
        match self {
            Self::Small(v) => {
                let (i, created) = match v.iter().position(|(w, _)| *w == id) {
                    Some(i) => (i, false),
                    None => {
                        v.push((id, Box::default()));
                        (v.len() - 1, true)
                    }
                };
                (&mut *v[i].1, created)
            }
            Self::Large(m) => {
                let mut created = false;
                let node = m.entry(id).or_insert_with(|| {
                    created = true;
                    Box::default()
                });
                (&mut **node, created)
            }
        }
    }

    fn remove(&mut self, id: WordId) {
        match self {
            Self::Small(v) => v.retain(|(w, _)| *w != id),
            Self::Large(m) => {
                m.remove(&id);
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

/// True if some word of `pattern` is `*` or `#` (a word, not just a character of one).
fn has_wildcard(pattern: &str) -> bool {
    split_words(pattern).any(|w| w == "*" || w == "#")
}

/// A routing key as word ids, split once per match. Keys of up to [`KeyIds::INLINE`]
/// words (every realistic one) live on the stack; longer ones spill to the heap.
struct KeyIds {
    inline: [WordId; KeyIds::INLINE],
    len: usize,
    spill: Vec<WordId>,
}

impl KeyIds {
    const INLINE: usize = 32;

    fn new(key: &str, vocab: &Vocabulary) -> Self {
        let mut ids = Self { inline: [UNKNOWN; Self::INLINE], len: 0, spill: Vec::new() };
        for word in split_words(key) {
            ids.push(vocab.get(word));
        }
        ids
    }

    #[inline]
    fn push(&mut self, id: WordId) {
        if self.len < Self::INLINE {
            self.inline[self.len] = id;
        } else {
            if self.spill.is_empty() {
                self.spill.extend_from_slice(&self.inline);
            }
            self.spill.push(id);
        }
        self.len += 1;
    }

    #[inline]
    fn as_slice(&self) -> &[WordId] {
        if self.len <= Self::INLINE {
            &self.inline[..self.len]
        } else {
            &self.spill
        }
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
            exact: HashMap::with_hasher(WordHashBuilder::default()),
            root: Node::default(),
            len: 0,
            vocab: Vocabulary::default(),
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
        let added =
            if has_wildcard(pattern) { self.insert_in_trie(pattern, value) } else { self.insert_exact(pattern, value) };
        if added {
            self.len += 1;
        }
        added
    }

    fn insert_exact(&mut self, pattern: &str, value: D) -> bool {
        match self.exact.get_mut(pattern) {
            Some(set) => set.insert(value),
            None => {
                let mut set = DestSet::default();
                set.insert(value);
                self.exact.insert(pattern.into(), set);
                true
            }
        }
    }

    fn insert_in_trie(&mut self, pattern: &str, value: D) -> bool {
        let mut node = &mut self.root;
        for word in split_words(pattern) {
            node = match word {
                "*" => node.star.get_or_insert_with(Box::default),
                "#" => node.hash.get_or_insert_with(Box::default),
                _ => {
                    let (child, created) = node.words.get_or_insert(self.vocab.intern(word));
                    if created {
                        self.vocab.add_edge(word);
                    }
                    child
                }
            };
        }
        node.values.insert(value)
    }

    /// Removes `value` from `pattern`, pruning nodes left empty. False if absent.
    pub fn remove(&mut self, pattern: &str, value: &D) -> bool {
        let removed = if has_wildcard(pattern) {
            let mut words = split_words(pattern);
            Self::remove_in(&mut self.root, &mut self.vocab, &mut words, value)
        } else {
            self.remove_exact(pattern, value)
        };
        if removed {
            self.len -= 1;
        }
        removed
    }

    fn remove_exact(&mut self, pattern: &str, value: &D) -> bool {
        let Some(set) = self.exact.get_mut(pattern) else {
            return false;
        };
        let removed = set.remove(value);
        if set.is_empty() {
            self.exact.remove(pattern);
        }
        removed
    }

    /// Recursive so that empty nodes can be pruned on the way back up (releasing their
    /// words). The depth is the number of words in the pattern, bounded by AMQP's
    /// 255-byte short strings.
    fn remove_in<'p>(
        node: &mut Node<D>,
        vocab: &mut Vocabulary,
        words: &mut impl Iterator<Item = &'p str>,
        value: &D,
    ) -> bool {
        let Some(word) = words.next() else {
            return node.values.remove(value);
        };
        match word {
            "*" | "#" => {
                let slot = if word == "*" { &mut node.star } else { &mut node.hash };
                let Some(child) = slot.as_deref_mut() else {
                    return false;
                };
                let removed = Self::remove_in(child, vocab, words, value);
                if child.is_empty() {
                    *slot = None;
                }
                removed
            }
            _ => {
                let id = vocab.get(word);
                let Some(child) = node.words.get_mut(id) else {
                    return false;
                };
                let removed = Self::remove_in(child, vocab, words, value);
                if child.is_empty() {
                    node.words.remove(id);
                    vocab.remove_edge(word);
                }
                removed
            }
        }
    }

    /// Calls `f` for the value of every pattern matching `key`. A value stored under two
    /// matching patterns is reported twice; one pattern is reported at most once.
    /// Does not allocate unless the key has more than [`KeyIds::INLINE`] words or more
    /// than a handful of distinct `#` nodes are reached.
    pub fn for_each_match<'a>(&'a self, key: &str, mut f: impl FnMut(&'a D)) {
        if let Some(set) = self.exact.get(key) {
            for v in set.as_slice() {
                f(v);
            }
        }
        if self.root.is_empty() {
            return;
        }
        let ids = KeyIds::new(key, &self.vocab);
        let mut m = Matcher { key: ids.as_slice(), f, hash_visits: HashVisits::default() };
        m.walk(&self.root, 0);
    }

    /// The values of every pattern matching `key` (convenience; allocates).
    pub fn matches(&self, key: &str) -> Vec<&D> {
        let mut out = Vec::new();
        self.for_each_match(key, |d| out.push(d));
        out
    }
}

/// One match in progress. Positions are word indexes into `key`; `key.len()` means
/// every word is consumed.
struct Matcher<'k, F> {
    key: &'k [WordId],
    f: F,
    hash_visits: HashVisits,
}

impl<F> Matcher<'_, F> {
    fn walk<'a, D: Eq + Hash + Clone>(&mut self, node: &'a Node<D>, pos: usize)
    where
        F: FnMut(&'a D),
    {
        match self.key.get(pos) {
            None => {
                for v in node.values.as_slice() {
                    (self.f)(v);
                }
            }
            Some(&id) => {
                if let Some(child) = node.words.get(id) {
                    self.walk(child, pos + 1);
                }
                if let Some(child) = &node.star {
                    self.walk(child, pos + 1);
                }
            }
        }
        if let Some(child) = &node.hash {
            self.enter_hash(child, pos);
        }
    }

    /// `#` consumed zero or more words starting at `pos`: continue from `node` at every
    /// position from `pos` on, skipping positions already explored for this node.
    fn enter_hash<'a, D: Eq + Hash + Clone>(&mut self, node: &'a Node<D>, pos: usize)
    where
        F: FnMut(&'a D),
    {
        let id = node as *const Node<D> as usize;
        let stop = match self.hash_visits.lower(id, pos) {
            Some(explored_from) if explored_from <= pos => return,
            Some(explored_from) => explored_from,
            None => usize::MAX,
        };
        let end = stop.min(self.key.len() + 1);
        for p in pos..end {
            self.walk(node, p);
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
        // Wildcards keep the patterns in the trie (literal ones go to the exact map).
        for i in 0..20 {
            assert!(t.insert(&format!("w{i}.*"), i));
            assert!(t.insert(&format!("#.r.w{i}"), i));
        }
        assert!(matches!(t.root.words, Children::Large(_)));
        for i in 0..20 {
            assert_eq!(t.matches(&format!("w{i}.x")), [&i]);
            assert_eq!(t.matches(&format!("r.w{i}")), [&i]);
        }
        for i in 0..18 {
            assert!(t.remove(&format!("w{i}.*"), &i));
            assert!(t.matches(&format!("w{i}.x")).is_empty());
        }
        assert_eq!(t.matches("w19.x"), [&19]);
        assert!(matches!(t.root.words, Children::Small(_)));
        for i in 18..20 {
            assert!(t.remove(&format!("w{i}.*"), &i));
        }
        for i in 0..20 {
            assert!(t.remove(&format!("#.r.w{i}"), &i));
        }
        assert!(t.is_empty() && t.root.is_empty() && t.exact.is_empty());
    }

    #[test]
    fn interned_words_follow_bindings() {
        let mut t = TopicTrie::new();
        assert!(t.insert("a.b.#", 1));
        assert!(t.insert("a.c.#", 2));
        assert!(t.insert("b.*", 3));
        assert_eq!(t.vocab.len(), 3);
        // A key word no pattern uses only matches wildcards.
        assert_eq!(t.matches("b.zzz"), [&3]);
        assert!(t.matches("zzz.b").is_empty());
        assert!(t.remove("a.c.#", &2));
        assert_eq!(t.vocab.len(), 2, "c released; a and b still used");
        assert!(t.matches("a.c").is_empty());
        assert!(t.remove("a.b.#", &1));
        assert_eq!(t.vocab.len(), 1, "only b left");
        assert!(t.matches("a.b").is_empty());
        // Re-adding after the words were released gets working (possibly reused) ids.
        assert!(t.insert("c.a.#", 4));
        assert!(t.insert("a.b.#", 5));
        assert_eq!(t.matches("c.a"), [&4]);
        assert_eq!(t.matches("a.b.x"), [&5]);
        assert_eq!(t.matches("b.a"), [&3]);
        for (p, v) in [("c.a.#", 4), ("a.b.#", 5), ("b.*", 3)] {
            assert!(t.remove(p, &v));
        }
        assert_eq!(t.vocab.len(), 0);
        assert!(t.root.is_empty());
    }

    #[test]
    fn interned_empty_words_and_hash() {
        let mut t = TopicTrie::new();
        assert!(t.insert("a..b", 1));
        assert!(t.insert("#.", 2));
        assert!(t.insert(".#", 3));
        assert_eq!(matched_in(&t, "a..b"), [1]);
        assert_eq!(matched_in(&t, "a.b"), Vec::<usize>::new());
        assert_eq!(matched_in(&t, "."), [2, 3]);
        assert_eq!(matched_in(&t, "x.y."), [2]);
        assert_eq!(matched_in(&t, ".x.y"), [3]);
        assert_eq!(matched_in(&t, ""), Vec::<usize>::new());
        // Removing a pattern with an empty word releases only what it alone used.
        assert!(t.remove("a..b", &1));
        assert_eq!(matched_in(&t, "."), [2, 3]);
        assert!(matched_in(&t, "a..b").is_empty());
    }

    #[test]
    fn long_keys_spill_word_ids() {
        let mut t = TopicTrie::new();
        let long: Vec<String> = (0..KeyIds::INLINE + 5).map(|i| format!("w{i}")).collect();
        let key = long.join(".");
        assert!(t.insert(&key, 1));
        assert!(t.insert(&format!("{}.#", long[..KeyIds::INLINE].join(".")), 2));
        assert!(t.insert(&format!("#.{}", long[KeyIds::INLINE + 4]), 3));
        assert_eq!(matched_in(&t, &key), [1, 2, 3]);
        let shorter = long[..KeyIds::INLINE + 4].join(".");
        assert_eq!(matched_in(&t, &shorter), [2]);
    }

    #[test]
    fn literal_patterns_match_exactly() {
        let mut t = TopicTrie::new();
        assert!(t.insert("a.b", 1));
        assert!(!t.insert("a.b", 1));
        assert!(t.insert("a.b", 2));
        assert!(t.insert("a.*", 3));
        // Words containing wildcard characters are literal words.
        assert!(t.insert("a#.b*", 4));
        assert!(t.insert("", 5));
        assert!(t.insert("..", 6));
        assert_eq!(t.len(), 6);
        assert_eq!(matched_in(&t, "a.b"), [1, 2, 3]);
        assert_eq!(matched_in(&t, "a.c"), [3]);
        assert_eq!(matched_in(&t, "a#.b*"), [4]);
        assert_eq!(matched_in(&t, "a#.bb"), Vec::<usize>::new());
        assert_eq!(matched_in(&t, ""), [5]);
        assert_eq!(matched_in(&t, ".."), [6]);
        assert_eq!(matched_in(&t, "."), Vec::<usize>::new());
        assert!(t.vocab.len() == 1, "only the trie's words are interned");
        assert!(t.remove("a.b", &1));
        assert!(!t.remove("a.b", &1));
        assert!(!t.remove("a.x", &1));
        assert_eq!(matched_in(&t, "a.b"), [2, 3]);
        for (p, v) in [("a.b", 2), ("a.*", 3), ("a#.b*", 4), ("", 5), ("..", 6)] {
            assert!(t.remove(p, &v));
        }
        assert!(t.is_empty() && t.exact.is_empty() && t.root.is_empty());
    }

    fn matched_in(t: &TopicTrie<usize>, key: &str) -> Vec<usize> {
        let mut v: Vec<usize> = t.matches(key).into_iter().copied().collect();
        v.sort();
        v
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
