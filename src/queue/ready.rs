//! A queue's ready messages, with bodies paged out to the store for long queues.
//!
//! The first [`LOADED_HEAD`] entries (the next to be delivered) always keep their
//! message in memory. Beyond that, a persistent message of a durable queue whose store
//! record is committed, and which no other queue references, is *paged*: the entry
//! keeps only its position and message id (32 bytes), and the body is read back from
//! the store when the entry nears the head. A queue holding millions of persistent
//! messages therefore costs about 32 bytes of memory per message.
//!
//! Transient messages, and messages routed to several durable queues, stay in memory.
//!
//! A priority queue (`x-max-priority`) keeps one such list per priority level
//! (0..=max) and serves the highest non-empty level first, FIFO within a level; a
//! bitmap of non-empty levels finds it without scanning. A classic queue has exactly
//! one level, so it pays nothing for priorities.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::message::QueuedMessage;
use crate::store::{MessageId, StoreHandle};

/// Entries from the head that are always in memory.
pub const LOADED_HEAD: usize = 8192;
/// How many paged entries one store read brings back.
const PAGE_IN_BATCH: usize = 1024;
/// Most entries one push examines for paging out (keeps publishes O(1)).
const PAGE_OUT_STEP: usize = 64;

/// One ready message.
pub enum Entry {
    Loaded(QueuedMessage),
    /// Only in the store; `id`'s record is referenced by this entry alone. `body_len`
    /// is 0 when unknown (entries recovered paged), corrected when paged in.
    Paged { seq: u64, redelivered: bool, requeues: u16, body_len: u32, id: MessageId },
}

const _: () = assert!(std::mem::size_of::<Entry>() <= 32);

impl Entry {
    /// An entry recovered from the store without its body.
    pub fn paged(seq: u64, redelivered: bool, id: MessageId) -> Self {
        Entry::Paged { seq, redelivered, requeues: 0, body_len: 0, id }
    }

    fn body_len(&self) -> u64 {
        match self {
            Entry::Loaded(m) => m.message.body.len() as u64,
            Entry::Paged { body_len, .. } => u64::from(*body_len),
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            Entry::Loaded(m) => m.seq,
            Entry::Paged { seq, .. } => *seq,
        }
    }
}

/// One priority level's entries (a classic queue's only level).
#[derive(Default)]
struct Level {
    entries: VecDeque<Entry>,
    /// Entries before this index (and after `LOADED_HEAD`) were already examined for
    /// paging out.
    scan_from: usize,
    /// Sum of the body sizes of the entries.
    bytes: u64,
}

pub struct ReadyList {
    /// Index = priority level; one level unless this is a priority queue.
    levels: Vec<Level>,
    /// Bit `p` set: level `p` is non-empty (priority queues only).
    nonempty: [u64; 4],
    /// Where paged bodies live; None: never page.
    store: Option<StoreHandle>,
    len: usize,
}

impl ReadyList {
    /// `max_priority`: Some(n > 0) for a priority queue with levels 0..=n. Recovered
    /// entries go to their message's level; paged ones are read back once (in batches)
    /// to learn it and stay paged.
    pub fn new(store: Option<StoreHandle>, entries: VecDeque<Entry>, max_priority: Option<u8>) -> Self {
        let nlevels = match max_priority {
            Some(n) if n > 0 => usize::from(n) + 1,
            _ => 1,
        };
        let mut list = Self {
            levels: (0..nlevels).map(|_| Level::default()).collect(),
            nonempty: [0; 4],
            store,
            len: 0,
        };
        if nlevels == 1 {
            let bytes = entries.iter().map(Entry::body_len).sum();
            list.len = entries.len();
            list.levels[0] = Level { entries, scan_from: 0, bytes };
            return list;
        }
        let mut entries: Vec<Entry> = entries.into();
        // The priorities of paged entries, read back in batches.
        let mut paged_prio: std::collections::HashMap<MessageId, (u8, u32)> = Default::default();
        if let Some(store) = &list.store {
            let ids: Vec<MessageId> = entries
                .iter()
                .filter_map(|e| match e {
                    Entry::Paged { id, .. } => Some(*id),
                    Entry::Loaded(_) => None,
                })
                .collect();
            for chunk in ids.chunks(PAGE_IN_BATCH) {
                for (id, m) in chunk.iter().zip(store.read_messages(chunk)) {
                    if let Some(m) = m {
                        paged_prio.insert(*id, (m.priority(), m.body.len() as u32));
                    }
                }
            }
        }
        for e in entries.iter_mut() {
            if let Entry::Paged { id, body_len, .. } = e {
                if let Some((_, len)) = paged_prio.get(id) {
                    *body_len = *len;
                }
            }
        }
        for e in entries {
            let prio = match &e {
                Entry::Loaded(m) => m.message.priority(),
                Entry::Paged { id, .. } => paged_prio.get(id).map_or(0, |p| p.0),
            };
            let l = list.level_index(prio);
            list.levels[l].bytes += e.body_len();
            list.levels[l].entries.push_back(e);
            list.len += 1;
            list.mark(l);
        }
        list
    }

    /// The level a message of priority `p` goes to (above the max counts as the max).
    fn level_index(&self, p: u8) -> usize {
        usize::from(p).min(self.levels.len() - 1)
    }

    fn level_of(&self, m: &QueuedMessage) -> usize {
        if self.levels.len() == 1 {
            0
        } else {
            self.level_index(m.message.priority())
        }
    }

    /// Updates the non-empty bitmap for level `l`.
    fn mark(&mut self, l: usize) {
        if self.levels.len() == 1 {
            return;
        }
        let bit = 1u64 << (l % 64);
        if self.levels[l].entries.is_empty() {
            self.nonempty[l / 64] &= !bit;
        } else {
            self.nonempty[l / 64] |= bit;
        }
    }

    /// The highest non-empty level.
    fn top(&self) -> Option<usize> {
        if self.levels.len() == 1 {
            return (!self.levels[0].entries.is_empty()).then_some(0);
        }
        (0..4).rev().find_map(|w| {
            let bits = self.nonempty[w];
            (bits != 0).then(|| w * 64 + 63 - bits.leading_zeros() as usize)
        })
    }

    /// Total body bytes of the ready messages.
    pub fn bytes(&self) -> u64 {
        self.levels.iter().map(|l| l.bytes).sum()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn push_back(&mut self, m: QueuedMessage) {
        let l = self.level_of(&m);
        self.len += 1;
        let store = self.store.is_some();
        let level = &mut self.levels[l];
        level.bytes += m.message.body.len() as u64;
        level.entries.push_back(Entry::Loaded(m));
        if store && level.entries.len() > LOADED_HEAD {
            level.page_out_some();
        }
        self.mark(l);
    }

    /// The next message to deliver (the head of the highest non-empty level), read
    /// back from the store first if it was paged out. Entries whose record cannot be
    /// read are dropped (logged): the queue stays usable.
    pub fn front(&mut self) -> Option<&QueuedMessage> {
        let l = self.loaded_top()?;
        self.levels[l].front_loaded()
    }

    /// Loads the head of the highest non-empty level and returns that level.
    fn loaded_top(&mut self) -> Option<usize> {
        loop {
            let l = self.top()?;
            let before = self.levels[l].entries.len();
            let ok = self.levels[l].load_front(&self.store);
            let dropped = before - self.levels[l].entries.len();
            self.len -= dropped;
            self.mark(l);
            if ok {
                return Some(l);
            }
        }
    }

    /// The earliest of `f` over the heads of every non-empty level (a classic queue's
    /// head; each level's head in a priority queue), and that level.
    pub fn min_front<T: Ord>(&mut self, f: impl Fn(&QueuedMessage) -> Option<T>) -> Option<(T, usize)> {
        if self.levels.len() == 1 {
            let m = self.front()?;
            return f(m).map(|t| (t, 0));
        }
        let mut best: Option<(T, usize)> = None;
        let nonempty = self.nonempty;
        let levels = (0..4).rev().flat_map(|w| {
            let bits = nonempty[w];
            (0..64).rev().filter(move |b| bits & (1u64 << b) != 0).map(move |b| w * 64 + b)
        });
        for l in levels {
            let before = self.levels[l].entries.len();
            let ok = self.levels[l].load_front(&self.store);
            self.len -= before - self.levels[l].entries.len();
            self.mark(l);
            if !ok {
                continue;
            }
            if let Some(t) = self.levels[l].front_loaded().and_then(&f) {
                if best.as_ref().map_or(true, |(b, _)| t < *b) {
                    best = Some((t, l));
                }
            }
        }
        best
    }

    /// Removes the next message to deliver.
    pub fn pop_front(&mut self) -> Option<QueuedMessage> {
        let l = self.loaded_top()?;
        self.pop_level(l)
    }

    /// Removes the head of level `l` (as returned by [`min_front`](Self::min_front)).
    pub fn pop_level(&mut self, l: usize) -> Option<QueuedMessage> {
        let m = self.levels.get_mut(l)?.pop_loaded();
        if m.is_some() {
            self.len -= 1;
        }
        self.mark(l);
        m
    }

    /// Puts a requeued message back at its original position (within its priority).
    pub fn insert_by_seq(&mut self, m: QueuedMessage) {
        let l = self.level_of(&m);
        self.len += 1;
        let level = &mut self.levels[l];
        let pos = level.entries.partition_point(|r| r.seq() < m.seq);
        if pos < level.scan_from {
            level.scan_from += 1;
        }
        level.bytes += m.message.body.len() as u64;
        level.entries.insert(pos, Entry::Loaded(m));
        self.mark(l);
    }

    /// Removes every entry (highest level first).
    pub fn drain(&mut self) -> impl Iterator<Item = Entry> + '_ {
        self.len = 0;
        self.nonempty = [0; 4];
        self.levels.iter_mut().rev().flat_map(|l| {
            l.scan_from = 0;
            l.bytes = 0;
            l.entries.drain(..)
        })
    }
}

impl Level {
    /// Pages out a few committed, singly-referenced persistent messages past the head.
    fn page_out_some(&mut self) {
        let mut i = self.scan_from.max(LOADED_HEAD);
        let end = (i + PAGE_OUT_STEP).min(self.entries.len());
        while i < end {
            if let Entry::Loaded(m) = &self.entries[i] {
                let meta = &m.message.store;
                match meta.id {
                    Some(id) if meta.refs.load(Ordering::Acquire) == 1 => {
                        if !meta.committed.load(Ordering::Acquire) {
                            // Commits complete in order: later ones are not done either.
                            break;
                        }
                        self.entries[i] = Entry::Paged {
                            seq: m.seq,
                            redelivered: m.redelivered,
                            requeues: m.requeues,
                            body_len: m.message.body.len() as u32,
                            id,
                        };
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        self.scan_from = i;
    }

    fn front_loaded(&self) -> Option<&QueuedMessage> {
        match self.entries.front() {
            Some(Entry::Loaded(m)) => Some(m),
            _ => None,
        }
    }

    /// Makes the head loaded, paging it in (dropping unreadable entries). False when
    /// the level ran empty.
    fn load_front(&mut self, store: &Option<StoreHandle>) -> bool {
        loop {
            match self.entries.front() {
                None => return false,
                Some(Entry::Loaded(_)) => return true,
                Some(Entry::Paged { .. }) => {
                    if !self.page_in(store) {
                        let dropped = self.entries.pop_front();
                        if let Some(e) = &dropped {
                            self.bytes -= e.body_len();
                        }
                        self.scan_from = self.scan_from.saturating_sub(1);
                        if let Some(Entry::Paged { id, .. }) = dropped {
                            log::error!("message {id} is missing from the store; dropped from its queue");
                        }
                    }
                }
            }
        }
    }

    /// Reads the paged entries at the head back into memory. False if the first one
    /// could not be read.
    fn page_in(&mut self, store: &Option<StoreHandle>) -> bool {
        let Some(store) = store else {
            return false;
        };
        let ids: Vec<MessageId> = self
            .entries
            .iter()
            .take(PAGE_IN_BATCH)
            .map_while(|e| match e {
                Entry::Paged { id, .. } => Some(*id),
                Entry::Loaded(_) => None,
            })
            .collect();
        let loaded = store.read_messages(&ids);
        let mut first_ok = false;
        for (i, message) in loaded.into_iter().enumerate() {
            let Some(message) = message else {
                continue;
            };
            if let Entry::Paged { seq, redelivered, requeues, body_len, id } = self.entries[i] {
                message.store.refs.store(1, Ordering::Release);
                message.store.committed.store(true, Ordering::Release);
                debug_assert_eq!(message.store.id, Some(id));
                self.bytes = self.bytes - u64::from(body_len) + message.body.len() as u64;
                self.entries[i] =
                    Entry::Loaded(QueuedMessage { seq, redelivered, requeues, message: Arc::new(message) });
                first_ok |= i == 0;
            }
        }
        first_ok
    }

    /// Removes the head; it must be loaded (see `load_front`).
    fn pop_loaded(&mut self) -> Option<QueuedMessage> {
        if !matches!(self.entries.front(), Some(Entry::Loaded(_))) {
            return None;
        }
        self.scan_from = self.scan_from.saturating_sub(1);
        match self.entries.pop_front() {
            Some(Entry::Loaded(m)) => {
                self.bytes -= m.message.body.len() as u64;
                Some(m)
            }
            _ => None,
        }
    }
}
