//! The stream's pump: the one job that hands a stream's messages to its consumers.
//!
//! It runs on the blocking pool (`smol::unblock`), never on an executor thread, because
//! a consumer that is behind the in-memory tail is served from disk. Whoever can make a
//! delivery possible (a commit, a new consumer, returned credit) calls
//! [`StreamQueue::wake`]; a running pump notices the wake-up and goes round again, so
//! there is at most one pump per stream and each consumer's offers stay in offset
//! order. A round delivers what is in memory under the stream's lock, then reads, with
//! the lock released, one batch from the log for each consumer that has credit and is
//! behind the tail, then delivers those.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Start, State, StreamQueue};
use crate::memory::MemoryCharge;
use crate::message::{Message, QueuedMessage};
use crate::queue::{Offer, Queue};
use crate::store::{codec, LogReader, LogRecord};

/// A catching-up consumer reads at most this many messages...
const READ_MESSAGES: usize = 256;
/// ... or about this many bytes at a time.
const READ_BYTES: usize = 1 << 20;

/// One consumer's read, done outside the lock.
struct Read {
    consumer: u64,
    /// Its position when the read was planned.
    from: u64,
    /// A start to resolve first (timestamp).
    start: Option<Start>,
    reader: Option<LogReader>,
    /// What was read: the first record's offset, and the messages.
    first: u64,
    messages: VecDeque<Arc<Message>>,
}

impl StreamQueue {
    /// Makes sure a pump runs and looks again.
    pub(super) fn wake(&self) {
        let spawn = {
            let mut f = self.pump.lock().unwrap_or_else(|e| e.into_inner());
            f.pending = true;
            !std::mem::replace(&mut f.running, true)
        };
        if spawn {
            if let Some(me) = self.me.upgrade() {
                smol::unblock(move || me.pump()).detach();
            } else {
                self.pump.lock().unwrap_or_else(|e| e.into_inner()).running = false;
            }
        }
    }

    fn pump(&self) {
        loop {
            {
                let mut f = self.pump.lock().unwrap_or_else(|e| e.into_inner());
                if !f.pending {
                    f.running = false;
                    return;
                }
                f.pending = false;
            }
            while self.round() {}
        }
    }

    /// One round; true if it read something from the log (so another may deliver it
    /// and read more).
    fn round(&self) -> bool {
        let Some(handle) = self.handle() else {
            return false;
        };
        let mut reads = {
            let mut st = self.lock();
            if st.deleted {
                return false;
            }
            Self::deliver(&handle, &self.counters, &mut st);
            let (tail_first, committed) = (st.tail_first, st.committed);
            let mut reads = Vec::new();
            for c in st.consumers.iter_mut() {
                let behind = c.buffered.is_empty() && c.position < tail_first && c.position < committed;
                if c.start.is_some() || (behind && !c.busy) {
                    reads.push(Read {
                        consumer: c.id,
                        from: c.position,
                        start: c.start,
                        reader: c.reader.take(),
                        first: c.position,
                        messages: VecDeque::new(),
                    });
                }
            }
            reads
        };
        if reads.is_empty() {
            return false;
        }
        let mut progress = false;
        let mut records: Vec<LogRecord> = Vec::new();
        for r in &mut reads {
            if let Some(Start::Timestamp(ts)) = r.start {
                r.from = match self.log.offset_at_timestamp(ts) {
                    Ok(o) => o,
                    Err(e) => {
                        log::warn!("{}: stream index unreadable ({e}); consumer starts at the next message", self.rs());
                        self.log.committed()
                    }
                };
                progress = true;
                continue;
            }
            progress |= self.read_batch(r, &mut records);
        }
        let mut st = self.lock();
        for r in reads {
            let Some(c) = st.consumers.iter_mut().find(|c| c.id == r.consumer) else {
                continue;
            };
            if r.start.is_some() {
                c.start = None;
                c.position = r.from;
                continue;
            }
            if c.position != r.from || !c.buffered.is_empty() {
                continue;
            }
            c.reader = r.reader;
            if !r.messages.is_empty() {
                c.position = r.first;
                c.buffered = r.messages;
            }
        }
        Self::deliver(&handle, &self.counters, &mut st);
        progress
    }

    /// Reads one batch for `r` from the log; true if it got anything.
    fn read_batch(&self, r: &mut Read, records: &mut Vec<LogRecord>) -> bool {
        let reader = match r.reader.take() {
            Some(reader) if reader.position() == r.from => Ok(reader),
            _ => self.log.reader(r.from),
        };
        let mut reader = match reader {
            Ok(reader) => reader,
            Err(e) => {
                log::warn!("{}: cannot read the stream's log at offset {}: {e}", self.rs(), r.from);
                return false;
            }
        };
        records.clear();
        if let Err(e) = reader.next_batch(records, READ_MESSAGES, READ_BYTES) {
            log::warn!("{}: reading the stream's log at offset {} failed: {e}", self.rs(), r.from);
        }
        r.reader = Some(reader);
        let Some(first) = records.first() else {
            return false;
        };
        r.first = first.offset;
        // Most records of a batch name the same exchange: one shared name for them.
        let mut exchange: Option<Arc<str>> = None;
        for (i, rec) in records.drain(..).enumerate() {
            // Offsets are consecutive from the first; a record that does not decode
            // (damaged on disk) is skipped with a log line.
            debug_assert_eq!(rec.offset, r.first + i as u64);
            match codec::decode_fields(&rec.payload) {
                Some(m) => {
                    let name = match &exchange {
                        Some(e) if **e == *m.exchange => e.clone(),
                        _ => exchange.insert(Arc::from(m.exchange)).clone(),
                    };
                    r.messages.push_back(Arc::new(Message {
                        exchange: name,
                        routing_key: m.routing_key.into(),
                        charge: MemoryCharge::content(m.routing_key, m.raw_properties, m.body),
                        raw_properties: m.raw_properties.into(),
                        body: m.body.into(),
                        persistent: m.persistent,
                        published_ms: m.published_ms,
                        ttl: m.ttl,
                        store: Default::default(),
                    }))
                }
                None => {
                    log::error!("{}: the record at offset {} does not decode; skipped", self.rs(), rec.offset);
                    if r.messages.is_empty() {
                        r.first = rec.offset + 1;
                    } else {
                        // Keep the buffer consecutive: stop before the gap.
                        break;
                    }
                }
            }
        }
        true
    }

    /// Offers each consumer what it can have from its buffer and the in-memory tail,
    /// until it is out of credit or caught up.
    fn deliver(handle: &Arc<Queue>, counters: &crate::queue::QueueCounters, st: &mut State) {
        let State { consumers, tail, tail_first, committed, .. } = st;
        for c in consumers.iter_mut() {
            if c.start.is_some() {
                continue;
            }
            c.busy = false;
            loop {
                if c.position >= *committed {
                    break;
                }
                let message = if let Some(m) = c.buffered.front() {
                    m.clone()
                } else if c.position >= *tail_first {
                    match tail.get((c.position - *tail_first) as usize) {
                        Some(m) => m.clone(),
                        None => break,
                    }
                } else {
                    break;
                };
                if c.filter.as_ref().is_some_and(|f| !f.matches(&message)) {
                    c.buffered.pop_front();
                    c.position += 1;
                    continue;
                }
                let qm = QueuedMessage::new(c.position, false, message);
                match c.sink.offer(handle, &c.tag, &qm) {
                    Offer::Delivered { no_ack } => {
                        counters.delivered(true, no_ack, false);
                        c.buffered.pop_front();
                        c.position += 1;
                    }
                    // Gone: its channel is closing and removes it.
                    Offer::Busy | Offer::Gone => {
                        c.busy = true;
                        break;
                    }
                }
            }
        }
    }
}
