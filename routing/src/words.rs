//! Interning of topic words: each distinct literal word bound in a [`TopicTrie`] gets a
//! small integer id, so trie children are keyed by integers.
//!
//! Matching then hashes each routing-key word once (to find its id) instead of once per
//! trie node it meets, and the trie compares integers instead of calling `memcmp`.
//!
//! Ids are reference counted by the number of trie edges labelled with the word, so a
//! word disappears from the vocabulary (and its id is reused) once no binding pattern
//! uses it any more: the vocabulary never outgrows the live patterns.
//!
//! [`TopicTrie`]: crate::TopicTrie

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

/// The id of an interned word. `usize` rather than `u32` so that running out of ids is
/// impossible rather than merely unlikely (a pair `(WordId, Box<_>)` is 16 bytes either
/// way).
pub(crate) type WordId = usize;

/// The id given to routing-key words that no pattern uses: no trie edge carries it, so
/// such a word can only be matched by `*` or `#`.
pub(crate) const UNKNOWN: WordId = WordId::MAX;

/// Maps each literal word used by some pattern to its id.
pub(crate) struct Vocabulary {
    ids: HashMap<Box<str>, Entry, WordHashBuilder>,
    /// Ids released by words no longer used, handed out again before new ones.
    free: Vec<WordId>,
    /// The next never-used id.
    next: WordId,
}

struct Entry {
    id: WordId,
    /// Trie edges labelled with this word; the word is dropped when it reaches zero.
    edges: usize,
}

impl Default for Vocabulary {
    fn default() -> Self {
        Self { ids: HashMap::with_hasher(WordHashBuilder::default()), free: Vec::new(), next: 0 }
    }
}

impl Vocabulary {
    /// The id of `word`, or [`UNKNOWN`] if no pattern uses it.
    #[inline]
    pub(crate) fn get(&self, word: &str) -> WordId {
        self.ids.get(word).map_or(UNKNOWN, |e| e.id)
    }

    /// The id of `word`, allocating one if needed. The caller must follow up with
    /// [`Vocabulary::add_edge`] when it creates an edge for the word (a new word always
    /// gets one), else the word would never be released.
    pub(crate) fn intern(&mut self, word: &str) -> WordId {
        if let Some(e) = self.ids.get(word) {
            return e.id;
        }
        let id = self.free.pop().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        });
        self.ids.insert(word.into(), Entry { id, edges: 0 });
        id
    }

    /// Records one more trie edge labelled `word`.
    pub(crate) fn add_edge(&mut self, word: &str) {
        if let Some(e) = self.ids.get_mut(word) {
            e.edges += 1;
        }
    }

    /// Records that one trie edge labelled `word` is gone; forgets the word (and frees
    /// its id) when it was the last.
    pub(crate) fn remove_edge(&mut self, word: &str) {
        let Some(e) = self.ids.get_mut(word) else {
            return;
        };
        e.edges = e.edges.saturating_sub(1);
        if e.edges == 0 {
            let id = e.id;
            self.ids.remove(word);
            self.free.push(id);
        }
    }

    /// Number of words in use.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

/// The multiplier of the folded multiply (the fractional part of π, as in `foldhash`).
const K: u64 = 0x243f_6a88_85a3_08d3;

/// 64×64→128-bit multiply, high and low halves xored: a cheap mix whose every output
/// bit depends on every input bit.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = (a as u128).wrapping_mul(b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Builds [`WordHasher`]s with a per-vocabulary random seed.
///
/// Binding keys come from clients, so the word map must not be open to chosen
/// collisions; the seed (drawn from `std`'s `RandomState`) keeps the hash unpredictable,
/// and a folded multiply costs a fraction of SipHash on short words.
#[derive(Clone)]
pub(crate) struct WordHashBuilder {
    seed: u64,
}

impl Default for WordHashBuilder {
    fn default() -> Self {
        Self { seed: RandomState::new().hash_one(0x5eed_u64) }
    }
}

impl BuildHasher for WordHashBuilder {
    type Hasher = WordHasher;

    fn build_hasher(&self) -> WordHasher {
        WordHasher { h: self.seed }
    }
}

/// A seeded folded-multiply hash over bytes, in the spirit of `foldhash`.
pub(crate) struct WordHasher {
    h: u64,
}

/// Reads up to 7 bytes as a u64 without a variable-length copy. Different byte strings
/// of one length give different values; the length is mixed in by the caller.
#[inline]
fn read_small(b: &[u8]) -> u64 {
    let n = b.len();
    match n {
        0 => 0,
        1..=3 => u64::from(b[0]) | u64::from(b[n / 2]) << 8 | u64::from(b[n - 1]) << 16,
        _ => {
            let lo = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let hi = u32::from_le_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]);
            u64::from(lo) | u64::from(hi) << 32
        }
    }
}

#[inline]
fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

impl Hasher for WordHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // The length goes in first, so that inputs differing only by trailing zero
        // bytes (or overlapping reads) hash differently.
        let mut h = fold_mul(self.h ^ bytes.len() as u64, K);
        if bytes.len() < 8 {
            h = fold_mul(h ^ read_small(bytes), K);
        } else {
            let mut rest = bytes;
            while rest.len() > 8 {
                h = fold_mul(h ^ read_u64(rest), K);
                rest = &rest[8..];
            }
            // The last 8 bytes, overlapping the previous chunk if the length is not a
            // multiple of 8.
            h = fold_mul(h ^ read_u64(&bytes[bytes.len() - 8..]), K);
        }
        self.h = h;
    }

    /// `str`'s `Hash` follows the bytes with a `0xff` terminator; the length already
    /// makes one string's hash input prefix-free, but mixing it in keeps this a correct
    /// general-purpose `Hasher`.
    #[inline]
    fn write_u8(&mut self, b: u8) {
        self.h = fold_mul(self.h ^ u64::from(b), K);
    }

    /// Fixed-size integers (queue handles in the routing table's dedup set) need no
    /// length prefix.
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.h = fold_mul(self.h ^ n, K);
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.h
    }
}

/// Hashes word ids for wide trie nodes. Ids are small integers handed out by the
/// vocabulary (not chosen by clients), so a multiplication spreads them well enough and
/// cannot be steered into collisions.
#[derive(Default)]
pub(crate) struct IdHasher {
    h: u64,
}

/// `HashMap` keyed by [`WordId`].
pub(crate) type IdMap<V> = HashMap<WordId, V, BuildHasherDefault<IdHasher>>;

impl Hasher for IdHasher {
    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.h = (self.h ^ n as u64).wrapping_mul(K | 1).rotate_left(26);
    }

    /// Only `usize` keys are hashed here; other input still mixes in, byte by byte.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_usize(usize::from(b));
        }
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(b: &WordHashBuilder, s: &str) -> u64 {
        b.hash_one(s)
    }

    #[test]
    fn ids_are_released_and_reused() {
        let mut v = Vocabulary::default();
        let a = v.intern("a");
        v.add_edge("a");
        v.add_edge("a");
        let b = v.intern("b");
        v.add_edge("b");
        assert_ne!(a, b);
        assert_eq!(v.intern("a"), a);
        assert_eq!(v.get("a"), a);
        assert_eq!(v.get("zzz"), UNKNOWN);
        v.remove_edge("a");
        assert_eq!(v.get("a"), a, "one edge left");
        v.remove_edge("a");
        assert_eq!(v.get("a"), UNKNOWN);
        assert_eq!(v.len(), 1);
        let c = v.intern("c");
        assert_eq!(c, a, "freed id reused");
        v.remove_edge("never-seen");
        assert_eq!(v.len(), 2);
    }

    #[test]
    fn empty_word_is_a_word() {
        let mut v = Vocabulary::default();
        let e = v.intern("");
        v.add_edge("");
        assert_eq!(v.get(""), e);
        assert_ne!(e, UNKNOWN);
    }

    #[test]
    fn word_hash_distinguishes_lengths_and_bytes() {
        let b = WordHashBuilder::default();
        let words = [
            "",
            "a",
            "a\0",
            "\0",
            "ab",
            "ba",
            "abc",
            "abcd",
            "abcde",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
            "bbcdefghi",
            "abcdefghij",
            "abcdefghijklmnopq",
            "abcdefghijklmnopr",
        ];
        let mut hashes: Vec<u64> = words.iter().map(|w| hash(&b, w)).collect();
        hashes.sort();
        hashes.dedup();
        assert_eq!(hashes.len(), words.len());
        assert_eq!(hash(&b, "abc"), hash(&b, "abc"));
    }
}
