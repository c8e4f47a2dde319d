//! A queue's ready messages; the middle of a long durable queue lives only on disk.
//!
//! Per level, the entries are in three parts, in `seq` order:
//!
//! - `head`: loaded messages, the next to be delivered. A queue shorter than
//!   [`LOADED_HEAD`] keeps everything here: publish is a push, delivery a pop.
//! - `middle`: past the head, a sequence of *spilled runs* and loaded entries. A run
//!   stands for any number of consecutive entries that are only on disk: it holds
//!   their `seq` range, count and body bytes (48 bytes however long it is). The
//!   store's queue index (`entries`: (queue, seq) → (message id, delivered)) has
//!   exactly one row per entry of the run, so when the head drains the next batch is
//!   read back by a range scan of that index, then its message records.
//! - `tail`: the newest entries, not yet examined for spilling (their `Enqueue` may
//!   not be committed yet).
//!
//! An entry is spilled when it is past the head, its message is persistent, recorded
//! for a durable queue and referenced by no other queue, it was never delivered or
//! requeued, and its `Enqueue` is committed (below the queue's enqueue watermark, see
//! [`StoreHandle::enqueue_watermark`]). Anything else (transient messages in a
//! durable queue, messages routed to several durable queues) stays loaded in
//! `middle` and ends the run before it. A durable queue holding millions of
//! persistent messages thus costs the loaded head plus one run: memory does not grow
//! with its depth.
//!
//! Invariant of a run in `[first_seq, last_seq]`: every row of the queue's index in
//! that range whose message belongs to this level is a ready entry of the run, and
//! there are `count` of them. It holds because entries leave a level only from its
//! head (delivery, basic.get, expiry, drop-head), purge and delete take whole runs,
//! and a requeued entry was delivered from the head, so its `seq` is below every
//! run's: it goes back into the head.
//!
//! A priority queue (`x-max-priority`) keeps one such list per priority level
//! (0..=max) and serves the highest non-empty level first, FIFO within a level; a
//! bitmap of non-empty levels finds it without scanning. Its levels' runs interleave
//! in `seq`, so reading a run skips the rows whose message is of another level. A
//! classic queue has exactly one level, so it pays nothing for priorities.
//!
//! Byte totals are exact for runs spilled by a running broker; runs recovered at
//! start do not know their bytes (they count 0 until read back, as RabbitMQ's
//! lazily recovered queues), except in priority queues, whose recovery reads every
//! spilled message once to learn its level.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::message::{priority_of, Message, QueuedMessage};
use crate::store::{EntryRecord, LevelFilter, QueueId, StoreHandle, StoreOp};

/// Entries from the head that are kept loaded.
pub const LOADED_HEAD: usize = 8192;
/// How many spilled entries one store read brings back.
const PAGE_IN_BATCH: usize = 1024;
/// Most tail entries one push examines for spilling (keeps publishes O(1)).
const PAGE_OUT_STEP: usize = 64;

/// Consecutive entries that are only in the store (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub first_seq: u64,
    pub last_seq: u64,
    /// How many entries of this level the range still holds.
    pub count: u64,
    /// Their body bytes (0 and `exact == false` when unknown: recovered runs).
    bytes: u64,
    exact: bool,
}

impl Run {
    /// A run recovered from the store (bytes unknown).
    pub fn recovered(first_seq: u64, last_seq: u64, count: u64) -> Self {
        Self { first_seq, last_seq, count, bytes: 0, exact: false }
    }
}

/// A ready entry past the loaded head: a loaded message or a spilled run.
pub enum Entry {
    Loaded(QueuedMessage),
    Run(Run),
}

const _: () = assert!(std::mem::size_of::<Entry>() <= 48);

impl Entry {
    /// The highest `seq` it covers.
    pub fn last_seq(&self) -> u64 {
        match self {
            Entry::Loaded(m) => m.seq,
            Entry::Run(r) => r.last_seq,
        }
    }

    fn first_seq(&self) -> u64 {
        match self {
            Entry::Loaded(m) => m.seq,
            Entry::Run(r) => r.first_seq,
        }
    }
}

/// What purge and delete take out of a list.
pub enum Drained {
    Loaded(QueuedMessage),
    /// A spilled run: its entries and their (singly referenced) message records are
    /// to be removed from the store (`StoreOp::DeleteRun` with this `level`).
    #[cfg_attr(not(test), allow(dead_code))]
    Run {
        first_seq: u64,
        last_seq: u64,
        count: u64,
        level: Option<(u8, u8)>,
    },
}

/// The store op that drops a drained run of `queue` (its rows and their records).
pub fn delete_run(queue: QueueId, first_seq: u64, last_seq: u64, level: Option<(u8, u8)>) -> StoreOp {
    let level = level.map(|(level, max_priority)| LevelFilter { level, max_priority, priority_of });
    StoreOp::DeleteRun { queue, first_seq, last_seq, level }
}

/// Where spilled entries live.
struct Spill {
    store: StoreHandle,
    queue: QueueId,
    /// One past the highest `seq` whose `Enqueue` is committed.
    watermark: Arc<AtomicU64>,
}

/// One priority level's entries (a classic queue's only level).
#[derive(Default)]
struct Level {
    head: VecDeque<QueuedMessage>,
    middle: VecDeque<Entry>,
    tail: VecDeque<QueuedMessage>,
    /// Sum of the body sizes of the entries (runs: as far as known).
    bytes: u64,
}

impl Level {
    fn is_empty(&self) -> bool {
        self.head.is_empty() && self.middle.is_empty() && self.tail.is_empty()
    }
}

pub struct ReadyList {
    /// Index = priority level; one level unless this is a priority queue.
    levels: Vec<Level>,
    /// Bit `p` set: level `p` is non-empty (priority queues only).
    nonempty: [u64; 4],
    /// None: never spill (a transient queue, or no store).
    spill: Option<Spill>,
    len: usize,
}

impl ReadyList {
    /// `store`: the store and this queue's id there, for a durable queue.
    /// `max_priority`: Some(n > 0) for a priority queue with levels 0..=n.
    /// `entries`: recovered entries in `seq` order; loaded ones go to their message's
    /// level, recovered runs of a priority queue are read once (in batches) to split
    /// them by level, and stay on disk.
    pub fn new(store: Option<(StoreHandle, QueueId)>, entries: Vec<Entry>, max_priority: Option<u8>) -> Self {
        let nlevels = match max_priority {
            Some(n) if n > 0 => usize::from(n) + 1,
            _ => 1,
        };
        let next_seq = entries.last().map_or(0, |e| e.last_seq() + 1);
        let spill = store.map(|(store, queue)| {
            let watermark = store.enqueue_watermark(queue, next_seq);
            Spill { store, queue, watermark }
        });
        let mut list =
            Self { levels: (0..nlevels).map(|_| Level::default()).collect(), nonempty: [0; 4], spill, len: 0 };
        for e in entries {
            match e {
                Entry::Loaded(m) => {
                    let l = list.level_of(&m);
                    list.len += 1;
                    let level = &mut list.levels[l];
                    level.bytes += m.message.body.len() as u64;
                    if level.middle.is_empty() {
                        level.head.push_back(m);
                    } else {
                        level.middle.push_back(Entry::Loaded(m));
                    }
                    list.mark(l);
                }
                Entry::Run(r) if nlevels == 1 => {
                    list.len += r.count as usize;
                    list.levels[0].bytes += r.bytes;
                    list.levels[0].middle.push_back(Entry::Run(r));
                    list.mark(0);
                }
                Entry::Run(r) => list.split_recovered_run(r),
            }
        }
        list
    }

    /// Priority queues at start: reads a recovered run's entries and messages (in
    /// batches) and appends each to a run of its level.
    fn split_recovered_run(&mut self, r: Run) {
        let Some(spill) = &self.spill else {
            return;
        };
        let (store, queue) = (spill.store.clone(), spill.queue);
        let mut from = r.first_seq;
        while from <= r.last_seq {
            let batch = store.read_entries(queue, from, r.last_seq, PAGE_IN_BATCH).and_then(|rows| {
                let ids: Vec<_> = rows.iter().map(|e| e.message).collect();
                store.read_messages(&ids).map(|ms| (rows, ms))
            });
            let (rows, messages) = match batch {
                Ok(b) => b,
                Err(e) => {
                    // Their levels are unknown: kept on disk (they come back at the
                    // next start), not served now.
                    log::error!(
                        "queue {queue}: entries from seq {from} could not be read at start ({e}); left on disk"
                    );
                    return;
                }
            };
            if rows.is_empty() {
                break;
            }
            for (row, m) in rows.iter().zip(messages) {
                from = row.seq + 1;
                let Some(m) = m else {
                    log::error!("message {} is missing from the store; dropped from its queue", row.message);
                    continue;
                };
                let l = self.level_index(priority_of(&m.raw_properties));
                let len = m.body.len() as u64;
                self.levels[l].append_spilled(row.seq, len);
                self.levels[l].bytes += len;
                self.len += 1;
                self.mark(l);
            }
        }
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

    /// Level `l`'s filter for reading and deleting its runs (priority queues only).
    fn run_filter(&self, l: usize) -> Option<(u8, u8)> {
        (self.levels.len() > 1).then(|| (l as u8, (self.levels.len() - 1) as u8))
    }

    /// Updates the non-empty bitmap for level `l`.
    fn mark(&mut self, l: usize) {
        if self.levels.len() == 1 {
            return;
        }
        let bit = 1u64 << (l % 64);
        if self.levels[l].is_empty() {
            self.nonempty[l / 64] &= !bit;
        } else {
            self.nonempty[l / 64] |= bit;
        }
    }

    /// The highest non-empty level.
    fn top(&self) -> Option<usize> {
        if self.levels.len() == 1 {
            return (!self.levels[0].is_empty()).then_some(0);
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

    /// How many spilled runs the list holds (tests, diagnostics).
    #[cfg(test)]
    fn runs(&self) -> usize {
        self.levels.iter().map(|l| l.middle.iter().filter(|e| matches!(e, Entry::Run(_))).count()).sum()
    }

    pub fn push_back(&mut self, m: QueuedMessage) {
        let l = self.level_of(&m);
        self.len += 1;
        let level = &mut self.levels[l];
        level.bytes += m.message.body.len() as u64;
        match &self.spill {
            Some(spill) if !(level.middle.is_empty() && level.tail.is_empty() && level.head.len() < LOADED_HEAD) => {
                level.tail.push_back(m);
                level.examine(spill, PAGE_OUT_STEP);
            }
            _ => level.head.push_back(m),
        }
        self.mark(l);
    }

    /// The next message to deliver (the head of the highest non-empty level), read
    /// back from the store first if it was spilled. None also when the store cannot
    /// be read right now (logged; the entries stay and a later call retries).
    pub fn front(&mut self) -> Option<&QueuedMessage> {
        let l = self.loaded_top()?;
        self.levels[l].head.front()
    }

    /// Loads level `l`'s head; false if the level is empty or unreadable now.
    fn load_level(&mut self, l: usize) -> bool {
        let filter = self.run_filter(l);
        let level_count = self.levels.len();
        let level = &mut self.levels[l];
        let ok = level.load_front(self.spill.as_ref(), &mut self.len, filter, level_count);
        self.mark(l);
        ok
    }

    /// Loads the head of the highest non-empty level and returns that level.
    fn loaded_top(&mut self) -> Option<usize> {
        loop {
            let l = self.top()?;
            if self.load_level(l) {
                return Some(l);
            }
            if !self.levels[l].is_empty() {
                // Unreadable now: serving a lower level would break priority order.
                return None;
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
            if !self.load_level(l) {
                continue;
            }
            if let Some(t) = self.levels[l].head.front().and_then(&f) {
                if best.as_ref().is_none_or(|(b, _)| t < *b) {
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
        let level = self.levels.get_mut(l)?;
        let m = level.head.pop_front();
        if let Some(m) = &m {
            level.bytes -= m.message.body.len() as u64;
            self.len -= 1;
        }
        self.mark(l);
        m
    }

    /// Puts a requeued message back at its original position (within its priority).
    /// It was delivered from the head, so it belongs before every spilled entry.
    pub fn insert_by_seq(&mut self, m: QueuedMessage) {
        let l = self.level_of(&m);
        self.len += 1;
        let level = &mut self.levels[l];
        level.bytes += m.message.body.len() as u64;
        let after = level.middle.front().map(Entry::first_seq).or_else(|| level.tail.front().map(|t| t.seq));
        if after.is_some_and(|s| s < m.seq) {
            debug_assert!(false, "requeued seq {} sorts after seq {after:?} past the head", m.seq);
            log::error!("a requeued entry (seq {}) sorts after the loaded head; delivered first", m.seq);
        }
        let pos = level.head.partition_point(|r| r.seq < m.seq);
        level.head.insert(pos, m);
        self.mark(l);
    }

    /// Removes every entry (highest level first).
    pub fn drain(&mut self) -> Vec<Drained> {
        let mut out = Vec::new();
        for l in (0..self.levels.len()).rev() {
            let filter = self.run_filter(l);
            let level = &mut self.levels[l];
            level.bytes = 0;
            out.extend(level.head.drain(..).map(Drained::Loaded));
            for e in level.middle.drain(..) {
                out.push(match e {
                    Entry::Loaded(m) => Drained::Loaded(m),
                    Entry::Run(r) => {
                        Drained::Run { first_seq: r.first_seq, last_seq: r.last_seq, count: r.count, level: filter }
                    }
                });
            }
            out.extend(level.tail.drain(..).map(Drained::Loaded));
        }
        self.len = 0;
        self.nonempty = [0; 4];
        out
    }
}

impl Level {
    /// Moves up to `max` examined tail entries on: into the head while it is short
    /// and nothing is spilled, else into a run (spillable and committed) or `middle`.
    fn examine(&mut self, spill: &Spill, max: usize) {
        let mark = spill.watermark.load(Ordering::Acquire);
        for _ in 0..max {
            let Some(m) = self.tail.front() else {
                return;
            };
            let meta = &m.message.store;
            let spillable =
                meta.id.is_some() && m.requeues == 0 && !m.redelivered && meta.refs.load(Ordering::Acquire) == 1;
            if spillable && m.seq >= mark {
                // Its entry row is not committed yet; nor are those after it.
                return;
            }
            let Some(m) = self.tail.pop_front() else {
                return;
            };
            if self.middle.is_empty() && self.head.len() < LOADED_HEAD {
                self.head.push_back(m);
            } else if spillable {
                // The body's memory goes with the last reference (this one).
                self.append_spilled(m.seq, m.message.body.len() as u64);
            } else {
                self.middle.push_back(Entry::Loaded(m));
            }
        }
    }

    /// Appends an on-disk entry: extends the last run, or starts one. (Bytes are
    /// accounted by the caller.)
    fn append_spilled(&mut self, seq: u64, len: u64) {
        match self.middle.back_mut() {
            Some(Entry::Run(r)) if r.exact => {
                r.last_seq = seq;
                r.count += 1;
                r.bytes += len;
            }
            _ => self.middle.push_back(Entry::Run(Run {
                first_seq: seq,
                last_seq: seq,
                count: 1,
                bytes: len,
                exact: true,
            })),
        }
    }

    /// Makes the head non-empty: moves loaded entries on from `middle`, reads a
    /// batch of the first run back, or takes the tail. False if the level is empty,
    /// or its next run cannot be read now (logged; kept for a retry). `len` is the
    /// list's length, lowered for entries found missing from the store.
    fn load_front(&mut self, spill: Option<&Spill>, len: &mut usize, filter: Option<(u8, u8)>, levels: usize) -> bool {
        while self.head.is_empty() {
            match self.middle.front() {
                Some(Entry::Loaded(_)) => {
                    while let Some(Entry::Loaded(_)) = self.middle.front() {
                        if let Some(Entry::Loaded(m)) = self.middle.pop_front() {
                            self.head.push_back(m);
                        }
                        if self.head.len() >= PAGE_IN_BATCH {
                            break;
                        }
                    }
                }
                Some(Entry::Run(_)) => {
                    let Some(spill) = spill else {
                        return false;
                    };
                    if !self.page_in(spill, len, filter, levels) {
                        return false;
                    }
                }
                None => {
                    if self.tail.is_empty() {
                        return false;
                    }
                    // Not examined yet (so not spilled): already loaded.
                    self.head.append(&mut self.tail);
                }
            }
        }
        true
    }

    /// Reads the next batch of the first run (which must be at the front of
    /// `middle`) into the head; drops the run once it is exhausted. False on a store
    /// error (nothing changed).
    fn page_in(&mut self, spill: &Spill, len: &mut usize, filter: Option<(u8, u8)>, levels: usize) -> bool {
        let Some(Entry::Run(run)) = self.middle.front() else {
            return true;
        };
        let read = |run: &Run| -> Result<(Vec<EntryRecord>, Vec<_>), crate::store::StoreError> {
            let rows = spill.store.read_entries(spill.queue, run.first_seq, run.last_seq, PAGE_IN_BATCH)?;
            let ids: Vec<_> = rows.iter().map(|e| e.message).collect();
            let messages = spill.store.read_messages(&ids)?;
            Ok((rows, messages))
        };
        let (rows, messages) = match read(run) {
            Ok(b) => b,
            Err(e) => {
                log::error!("queue {}: reading spilled entries back failed ({e}); will retry", spill.queue);
                return false;
            }
        };
        let Some(Entry::Run(run)) = self.middle.front_mut() else {
            return true;
        };
        if rows.is_empty() {
            // The range holds no more rows: the rest of the run is gone.
            run.first_seq = run.last_seq.saturating_add(1);
        }
        for (row, m) in rows.into_iter().zip(messages) {
            run.first_seq = row.seq + 1;
            let Some(m) = m else {
                if filter.is_none() {
                    log::error!("message {} is missing from the store; dropped from its queue", row.message);
                    run.count = run.count.saturating_sub(1);
                    *len -= 1;
                }
                continue;
            };
            if let Some((l, _)) = filter {
                if usize::from(priority_of(&m.raw_properties)).min(levels - 1) != usize::from(l) {
                    continue;
                }
            }
            let m = Message::from_record(m, row.message, 1);
            let body = m.body.len() as u64;
            if run.exact {
                run.bytes = run.bytes.saturating_sub(body);
            } else {
                self.bytes += body;
            }
            run.count = run.count.saturating_sub(1);
            self.head.push_back(QueuedMessage {
                seq: row.seq,
                redelivered: row.delivered,
                requeues: 0,
                message: Arc::new(m),
            });
            if run.count == 0 {
                break;
            }
        }
        if run.count == 0 || run.first_seq > run.last_seq {
            if run.count > 0 {
                log::error!(
                    "queue {}: {} spilled entries up to seq {} are missing from the store; dropped",
                    spill.queue,
                    run.count,
                    run.last_seq
                );
                *len -= run.count as usize;
            }
            self.bytes -= run.bytes.min(self.bytes);
            self.middle.pop_front();
        }
        true
    }
}

#[cfg(test)]
mod tests;
