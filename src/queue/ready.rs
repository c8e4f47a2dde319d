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

pub struct ReadyList {
    entries: VecDeque<Entry>,
    /// Entries before this index (and after `LOADED_HEAD`) were already examined for
    /// paging out.
    scan_from: usize,
    /// Where paged bodies live; None: never page.
    store: Option<StoreHandle>,
    /// Sum of the body sizes of all entries (x-max-length-bytes).
    bytes: u64,
}

impl ReadyList {
    pub fn new(store: Option<StoreHandle>, entries: VecDeque<Entry>) -> Self {
        let bytes = entries.iter().map(Entry::body_len).sum();
        Self { entries, scan_from: 0, store, bytes }
    }

    /// Total body bytes of the ready messages.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }


    pub fn push_back(&mut self, m: QueuedMessage) {
        self.bytes += m.message.body.len() as u64;
        self.entries.push_back(Entry::Loaded(m));
        if self.store.is_some() && self.entries.len() > LOADED_HEAD {
            self.page_out_some();
        }
    }

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

    /// The head message, read back from the store first if it was paged out. Entries
    /// whose record cannot be read are dropped (logged): the queue stays usable.
    pub fn front(&mut self) -> Option<&QueuedMessage> {
        loop {
            match self.entries.front()? {
                Entry::Loaded(_) => break,
                Entry::Paged { .. } => {
                    if !self.page_in() {
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
        match self.entries.front() {
            Some(Entry::Loaded(m)) => Some(m),
            _ => None,
        }
    }

    /// Reads the paged entries at the head back into memory. False if the first one
    /// could not be read.
    fn page_in(&mut self) -> bool {
        let Some(store) = &self.store else {
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

    /// Removes the head (call [`front`](Self::front) first so it is loaded).
    pub fn pop_front(&mut self) -> Option<QueuedMessage> {
        self.front()?;
        self.scan_from = self.scan_from.saturating_sub(1);
        match self.entries.pop_front() {
            Some(Entry::Loaded(m)) => {
                self.bytes -= m.message.body.len() as u64;
                Some(m)
            }
            _ => None,
        }
    }

    /// Puts a requeued message back at its original position.
    pub fn insert_by_seq(&mut self, m: QueuedMessage) {
        let pos = self.entries.partition_point(|r| r.seq() < m.seq);
        if pos < self.scan_from {
            self.scan_from += 1;
        }
        self.bytes += m.message.body.len() as u64;
        self.entries.insert(pos, Entry::Loaded(m));
    }

    /// Removes every entry.
    pub fn drain(&mut self) -> impl Iterator<Item = Entry> + '_ {
        self.scan_from = 0;
        self.bytes = 0;
        self.entries.drain(..)
    }
}
