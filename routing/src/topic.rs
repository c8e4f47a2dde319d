//! Topic matching: a trie over dot-separated words with `*` and `#`.

/// A trie of topic binding patterns, each with a value `D` (a destination).
pub struct TopicTrie<D> {
    _d: std::marker::PhantomData<D>,
}
