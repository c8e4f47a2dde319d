//! The trie topic matcher against a straightforward reference matcher.

use std::collections::BTreeSet;

use haremq_routing::{Destination, ExchangeKind, FieldTable, RoutingTable, TopicTrie};
use proptest::prelude::*;

/// RabbitMQ's split: the empty key is zero words, otherwise split on every dot.
fn words(key: &str) -> Vec<&str> {
    if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    }
}

/// The textbook definition, by recursion over word slices (exponential in the worst
/// case, fine for the small inputs generated here).
fn reference(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| reference(rest, &key[skip..])),
        Some((&"*", rest)) => !key.is_empty() && reference(rest, &key[1..]),
        Some((w, rest)) => key.first() == Some(w) && reference(rest, &key[1..]),
    }
}

fn word(wildcards: bool) -> BoxedStrategy<String> {
    let mut choices = vec!["a", "b", ""];
    if wildcards {
        choices.extend(["*", "#", "#", "*"]);
    }
    proptest::sample::select(choices).prop_map(str::to_owned).boxed()
}

/// Zero to five words joined by dots; zero words gives the empty string.
fn key(wildcards: bool) -> impl Strategy<Value = String> {
    proptest::collection::vec(word(wildcards), 0..6).prop_map(|w| w.join("."))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn trie_matches_reference(
        patterns in proptest::collection::vec(key(true), 1..12),
        keys in proptest::collection::vec(key(false), 1..8),
    ) {
        let mut trie = TopicTrie::new();
        for (i, p) in patterns.iter().enumerate() {
            trie.insert(p, i);
        }
        for k in &keys {
            let mut got: Vec<usize> = trie.matches(k).into_iter().copied().collect();
            got.sort();
            let n = got.len();
            got.dedup();
            prop_assert_eq!(n, got.len(), "a pattern reported twice for {:?}", k);
            let want: Vec<usize> = patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| reference(&words(p), &words(k)))
                .map(|(i, _)| i)
                .collect();
            prop_assert_eq!(got, want, "patterns {:?} key {:?}", &patterns, k);
        }
    }

    /// Removing patterns leaves exactly the others matching.
    #[test]
    fn trie_remove_matches_reference(
        patterns in proptest::collection::vec(key(true), 1..12),
        remove_mask in proptest::collection::vec(any::<bool>(), 12),
        k in key(false),
    ) {
        let mut trie = TopicTrie::new();
        for (i, p) in patterns.iter().enumerate() {
            trie.insert(p, i);
        }
        for (i, p) in patterns.iter().enumerate() {
            if remove_mask[i] {
                prop_assert!(trie.remove(p, &i));
            }
        }
        let mut got: Vec<usize> = trie.matches(&k).into_iter().copied().collect();
        got.sort();
        let want: Vec<usize> = patterns
            .iter()
            .enumerate()
            .filter(|(i, p)| !remove_mask[*i] && reference(&words(p), &words(&k)))
            .map(|(i, _)| i)
            .collect();
        prop_assert_eq!(got, want);
    }

    /// Removing patterns then adding others (whose words may reuse released word ids)
    /// matches exactly the live patterns.
    #[test]
    fn trie_remove_then_readd_matches_reference(
        patterns in proptest::collection::vec(key(true), 1..12),
        remove_mask in proptest::collection::vec(any::<bool>(), 12),
        readd in proptest::collection::vec(key(true), 0..6),
        k in key(false),
    ) {
        let mut trie = TopicTrie::new();
        for (i, p) in patterns.iter().enumerate() {
            trie.insert(p, i);
        }
        let mut live: Vec<(usize, &str)> = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            if remove_mask[i] {
                prop_assert!(trie.remove(p, &i));
            } else {
                live.push((i, p));
            }
        }
        for (j, p) in readd.iter().enumerate() {
            trie.insert(p, 100 + j);
            live.push((100 + j, p));
        }
        let mut got: Vec<usize> = trie.matches(&k).into_iter().copied().collect();
        got.sort();
        let mut want: Vec<usize> = live
            .iter()
            .filter(|(_, p)| reference(&words(p), &words(&k)))
            .map(|(i, _)| *i)
            .collect();
        want.sort();
        prop_assert_eq!(got, want);
    }

    /// Through the routing table: queues bound to a topic exchange, deduplicated.
    #[test]
    fn table_topic_matches_reference(
        bindings in proptest::collection::vec((key(true), 0u8..4), 1..16),
        k in key(false),
    ) {
        let mut t = RoutingTable::<u8>::new();
        t.add_exchange("t", ExchangeKind::Topic);
        for (p, queue) in &bindings {
            t.bind("t", Destination::Queue(*queue), p, &FieldTable::default()).unwrap();
        }
        let mut out = Vec::new();
        t.route("t", &k, None, &mut out);
        let got: BTreeSet<u8> = out.iter().copied().collect();
        prop_assert_eq!(got.len(), out.len());
        let want: BTreeSet<u8> = bindings
            .iter()
            .filter(|(p, _)| reference(&words(p), &words(&k)))
            .map(|(_, q)| *q)
            .collect();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn reference_sanity() {
    assert!(reference(&words("#"), &words("")));
    assert!(!reference(&words("*"), &words("")));
    assert!(reference(&words("a.#.b"), &words("a.b")));
}
