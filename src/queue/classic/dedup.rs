//! x-message-deduplication's window of recent keys.

use std::collections::VecDeque;

/// x-message-deduplication: the hashes of the last `cap` keys, oldest evicted first
/// (a ring plus a set: bounded memory, O(1) per publish).
pub(super) struct Dedup {
    cap: usize,
    set: std::collections::HashSet<u64>,
    ring: VecDeque<u64>,
}

impl Dedup {
    pub(super) fn new(cap: usize) -> Self {
        Self { cap: cap.max(1), set: Default::default(), ring: VecDeque::new() }
    }

    /// A 64-bit hash of a key (SipHash with fixed keys: stable within the process).
    pub(super) fn hash(key: &[u8]) -> u64 {
        use std::hash::{Hash, Hasher};
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new();
        key.hash(&mut h);
        h.finish()
    }

    pub(super) fn contains(&self, h: u64) -> bool {
        self.set.contains(&h)
    }

    pub(super) fn insert(&mut self, h: u64) {
        if self.set.insert(h) {
            self.ring.push_back(h);
            if self.ring.len() > self.cap {
                if let Some(old) = self.ring.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}
