//! The redb-backed [`Store`]: one file, `haremq.redb`, in the data directory.
//!
//! Tables:
//! - `exchanges`: "vhost\0name" → JSON [`ExchangeRecord`]
//! - `queues`: queue id → JSON [`QueueRecord`]
//! - `bindings`: JSON [`BindingRecord`] → () (the record is its own identity)
//! - `messages`: message id → encoded message ([`super::codec`])
//! - `entries`: (queue id, seq) → (message id, delivered) — the queue index: a
//!   queue's spilled runs are read back from it by range (`MessageReader::read_entries`)
//!
//! Every commit uses redb's default `Durability::Immediate`: it returns after fsync.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};

use super::codec::{decode_delayed, decode_message, encode_message};
use super::{
    BindingRecord, EntryRecord, MessageId, MessageReader, MessageRecord, QueueId, QueueRecord, Recovered, Snapshot, Store,
    StoreError, StoreOp, LOAD_AT_START,
};

const EXCHANGES: TableDefinition<&str, &[u8]> = TableDefinition::new("exchanges");
const QUEUES: TableDefinition<u64, &[u8]> = TableDefinition::new("queues");
const BINDINGS: TableDefinition<&[u8], ()> = TableDefinition::new("bindings");
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
const ENTRIES: TableDefinition<(u64, u64), (u64, bool)> = TableDefinition::new("entries");
const DELAYED: TableDefinition<u64, &[u8]> = TableDefinition::new("delayed");

/// redb's page cache.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The store's file name inside the data directory.
pub const FILE_NAME: &str = "haremq.redb";

pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
    scratch: Vec<u8>,
}

/// Reads message records with read transactions, concurrently with the writer.
struct RedbReader {
    db: Arc<Database>,
}

impl MessageReader for RedbReader {
    fn read_messages(&self, ids: &[MessageId]) -> Result<Vec<Option<MessageRecord>>, StoreError> {
        let read = || -> Result<Vec<Option<MessageRecord>>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(MESSAGES)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.push(table.get(*id)?.and_then(|v| decode_message(v.value())));
            }
            Ok(out)
        };
        read().map_err(|e| StoreError::Io(format!("reading {} messages: {e}", ids.len())))
    }

    fn read_entries(
        &self,
        queue: QueueId,
        from_seq: u64,
        to_seq: u64,
        max: usize,
    ) -> Result<Vec<EntryRecord>, StoreError> {
        let read = || -> Result<Vec<EntryRecord>, redb::Error> {
            let mut out = Vec::new();
            if from_seq > to_seq {
                return Ok(out);
            }
            let txn = self.db.begin_read()?;
            let table = txn.open_table(ENTRIES)?;
            for row in table.range((queue, from_seq)..=(queue, to_seq))?.take(max) {
                let (k, v) = row?;
                let (_, seq) = k.value();
                let (message, delivered) = v.value();
                out.push(EntryRecord { seq, message, delivered });
            }
            Ok(out)
        };
        read().map_err(|e| StoreError::Io(format!("reading entries of queue {queue} from {from_seq}: {e}")))
    }
}

/// A set of message ids in memory proportional to their spread, not their number: a
/// bitmap per window of 65,536 consecutive ids (8 KiB each). Ids come from one
/// counter, so the ids still on disk are dense: 10M of them cost about 1.2 MiB.
#[derive(Default)]
struct IdSet {
    windows: HashMap<u64, Box<[u64; 1024]>>,
}

impl IdSet {
    /// Adds `id`; false if it was already there.
    fn insert(&mut self, id: MessageId) -> bool {
        let w = self.windows.entry(id >> 16).or_insert_with(|| Box::new([0; 1024]));
        let bit = id & 0xffff;
        let word = &mut w[(bit >> 6) as usize];
        let mask = 1u64 << (bit & 63);
        let new = *word & mask == 0;
        *word |= mask;
        new
    }

    fn contains(&self, id: MessageId) -> bool {
        let bit = id & 0xffff;
        self.windows.get(&(id >> 16)).is_some_and(|w| w[(bit >> 6) as usize] & (1u64 << (bit & 63)) != 0)
    }
}

fn exchange_key(vhost: &str, name: &str) -> String {
    format!("{vhost}\0{name}")
}

impl RedbStore {
    /// Opens (or creates) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(FILE_NAME);
        let shown = path.display().to_string();
        // redb's default cache is 1 GiB; the broker keeps its own working set in memory
        // and pages bodies in sequentially, so a small cache is enough.
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(&path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: data_dir.display().to_string() },
            other => StoreError::Open { path: shown.clone(), detail: other.to_string() },
        })?;
        let store = Self { db: Arc::new(db), path, scratch: Vec::new() };
        store.create_tables()?;
        Ok(store)
    }

    fn io(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io(format!("{}: {e}", self.path.display()))
    }

    fn corrupt(&self, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt { path: self.path.display().to_string(), detail: detail.to_string() }
    }

    fn create_tables(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.io(e))?;
        {
            txn.open_table(EXCHANGES).map_err(|e| self.io(e))?;
            txn.open_table(QUEUES).map_err(|e| self.io(e))?;
            txn.open_table(BINDINGS).map_err(|e| self.io(e))?;
            txn.open_table(MESSAGES).map_err(|e| self.io(e))?;
            txn.open_table(ENTRIES).map_err(|e| self.io(e))?;
            txn.open_table(DELAYED).map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))
    }

    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        {
            let mut exchanges = txn.open_table(EXCHANGES)?;
            let mut queues = txn.open_table(QUEUES)?;
            let mut bindings = txn.open_table(BINDINGS)?;
            let mut messages = txn.open_table(MESSAGES)?;
            let mut entries = txn.open_table(ENTRIES)?;
            let mut delayed = txn.open_table(DELAYED)?;
            for op in ops {
                match op {
                    StoreOp::PutExchange(r) => {
                        let json = serde_json::to_vec(r).unwrap_or_default();
                        exchanges.insert(exchange_key(&r.vhost, &r.name).as_str(), json.as_slice())?;
                    }
                    StoreOp::DeleteExchange { vhost, name } => {
                        exchanges.remove(exchange_key(vhost, name).as_str())?;
                        bindings.retain(|k, _| {
                            serde_json::from_slice::<BindingRecord>(k).map_or(true, |b| {
                                !(b.vhost == *vhost
                                    && (b.source == *name || (!b.to_queue && b.destination == *name)))
                            })
                        })?;
                    }
                    StoreOp::PutQueue(r) => {
                        let json = serde_json::to_vec(r).unwrap_or_default();
                        queues.insert(r.id, json.as_slice())?;
                    }
                    StoreOp::DeleteQueue { id, vhost, name } => {
                        queues.remove(*id)?;
                        entries.retain_in((*id, 0)..=(*id, u64::MAX), |_, _| false)?;
                        bindings.retain(|k, _| {
                            serde_json::from_slice::<BindingRecord>(k)
                                .map_or(true, |b| !(b.vhost == *vhost && b.to_queue && b.destination == *name))
                        })?;
                    }
                    StoreOp::PutBinding(r) => {
                        let json = serde_json::to_vec(r).unwrap_or_default();
                        bindings.insert(json.as_slice(), ())?;
                    }
                    StoreOp::DeleteBinding(r) => {
                        let json = serde_json::to_vec(r).unwrap_or_default();
                        bindings.remove(json.as_slice())?;
                    }
                    StoreOp::PutMessage(id, m) => {
                        encode_message(m.fields(), &mut self.scratch);
                        messages.insert(*id, self.scratch.as_slice())?;
                    }
                    StoreOp::DeleteMessage(id) => {
                        messages.remove(*id)?;
                    }
                    StoreOp::Enqueue { queue, seq, message } => {
                        entries.insert((*queue, *seq), (*message, false))?;
                    }
                    StoreOp::MarkDelivered { queue, seq, message } => {
                        // Only mark entries that still exist (an ack may have won).
                        if entries.get((*queue, *seq))?.is_some() {
                            entries.insert((*queue, *seq), (*message, true))?;
                        }
                    }
                    StoreOp::Remove { queue, seq } => {
                        entries.remove((*queue, *seq))?;
                    }
                    StoreOp::DeleteRun { queue, first_seq, last_seq, level } => {
                        let mut failed: Option<redb::StorageError> = None;
                        entries.retain_in((*queue, *first_seq)..=(*queue, *last_seq), |_, (message, _)| {
                            if let Some(filter) = level {
                                // A priority queue: rows of other levels share the range.
                                let holds = match messages.get(message) {
                                    Ok(v) => v.and_then(|v| decode_message(v.value())).map(|m| filter.holds(&m.raw_properties)),
                                    Err(e) => {
                                        failed.get_or_insert(e);
                                        return true;
                                    }
                                };
                                if holds != Some(true) {
                                    return true;
                                }
                            }
                            if let Err(e) = messages.remove(message) {
                                failed.get_or_insert(e);
                            }
                            false
                        })?;
                        if let Some(e) = failed {
                            return Err(e.into());
                        }
                    }
                    StoreOp::PutDelayed(id, bytes) => {
                        delayed.insert(*id, bytes.as_slice())?;
                    }
                    StoreOp::DeleteDelayed(id) => {
                        delayed.remove(*id)?;
                    }
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Everything durable, the set of message ids some entry references, and the
    /// entries found pointing at a missing message.
    #[allow(clippy::type_complexity)]
    fn read_all(&self) -> Result<(Snapshot, IdSet, Vec<(QueueId, u64)>), StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.io(e))?;
        let mut snap = Snapshot::default();
        let exchanges = txn.open_table(EXCHANGES).map_err(|e| self.io(e))?;
        for row in exchanges.iter().map_err(|e| self.io(e))? {
            let (_, v) = row.map_err(|e| self.io(e))?;
            snap.exchanges.push(serde_json::from_slice(v.value()).map_err(|e| self.corrupt(e))?);
        }
        let queues = txn.open_table(QUEUES).map_err(|e| self.io(e))?;
        for row in queues.iter().map_err(|e| self.io(e))? {
            let (_, v) = row.map_err(|e| self.io(e))?;
            snap.queues.push(serde_json::from_slice(v.value()).map_err(|e| self.corrupt(e))?);
        }
        let bindings = txn.open_table(BINDINGS).map_err(|e| self.io(e))?;
        for row in bindings.iter().map_err(|e| self.io(e))? {
            let (k, _) = row.map_err(|e| self.io(e))?;
            snap.bindings.push(serde_json::from_slice(k.value()).map_err(|e| self.corrupt(e))?);
        }
        let known: HashSet<u64> = snap.queues.iter().map(|q: &QueueRecord| q.id).collect();
        let entries = txn.open_table(ENTRIES).map_err(|e| self.io(e))?;
        // Two streaming passes over the entries, never holding them all: the first
        // finds the messages referenced by several entries (they are read now, so their
        // reference counts are known), the second reads the head of each queue and
        // turns the rest into runs left on disk.
        let mut seen = IdSet::default();
        let mut shared = IdSet::default();
        for row in entries.iter().map_err(|e| self.io(e))? {
            let (k, v) = row.map_err(|e| self.io(e))?;
            if known.contains(&k.value().0) && !seen.insert(v.value().0) {
                shared.insert(v.value().0);
            }
        }
        let messages = txn.open_table(MESSAGES).map_err(|e| self.io(e))?;
        let delayed = txn.open_table(DELAYED).map_err(|e| self.io(e))?;
        // Ids are never reused: continue after the highest one on disk.
        let last = |t: &redb::ReadOnlyTable<u64, &[u8]>| -> Result<u64, StoreError> {
            Ok(t.last().map_err(|e| self.io(e))?.map_or(0, |(k, _)| k.value()))
        };
        snap.max_message_id = last(&messages)?.max(last(&delayed)?);
        for row in delayed.iter().map_err(|e| self.io(e))? {
            let (k, v) = row.map_err(|e| self.io(e))?;
            let record = decode_delayed(v.value()).ok_or_else(|| self.corrupt(format!("delayed message {}", k.value())))?;
            snap.delayed.push((k.value(), record));
        }
        let mut current: Option<(QueueId, usize)> = None;
        let mut dangling = Vec::new();
        for row in entries.iter().map_err(|e| self.io(e))? {
            let (k, v) = row.map_err(|e| self.io(e))?;
            let (queue, seq) = k.value();
            let (id, delivered) = v.value();
            if !known.contains(&queue) {
                continue;
            }
            let pos = match &mut current {
                Some((q, n)) if *q == queue => {
                    *n += 1;
                    *n
                }
                _ => {
                    current = Some((queue, 0));
                    0
                }
            };
            let list = snap.entries.entry(queue).or_default();
            if pos < LOAD_AT_START || shared.contains(id) {
                if let std::collections::hash_map::Entry::Vacant(e) = snap.messages.entry(id) {
                    // Entries whose message record is missing cannot be delivered;
                    // drop them (collect_garbage deletes them).
                    let Some(v) = messages.get(id).map_err(|e| self.io(e))? else {
                        dangling.push((queue, seq));
                        continue;
                    };
                    let m = decode_message(v.value()).ok_or_else(|| self.corrupt(format!("message {id}")))?;
                    e.insert(m);
                }
                list.push(Recovered::Entry(EntryRecord { seq, message: id, delivered }));
            } else {
                // Left on disk: a record missing here is found (and logged) when the
                // queue reaches it.
                match list.last_mut() {
                    Some(Recovered::Run { last_seq, count, .. }) => {
                        *last_seq = seq;
                        *count += 1;
                    }
                    _ => list.push(Recovered::Run { first_seq: seq, last_seq: seq, count: 1 }),
                }
            }
        }
        Ok((snap, seen, dangling))
    }

    /// Deletes what nothing references: entries of deleted queues, `dangling` entries
    /// (whose message is missing; found at the head of a queue — those inside runs are
    /// dropped when the queue reaches them) and unreferenced messages (e.g. published
    /// but never enqueued before a crash). Streams the tables; holds nothing per entry.
    fn collect_garbage(
        &mut self,
        snap: &Snapshot,
        referenced: &IdSet,
        dangling: &[(QueueId, u64)],
    ) -> Result<(), redb::Error> {
        let known: HashSet<u64> = snap.queues.iter().map(|q| q.id).collect();
        let txn = self.db.begin_write()?;
        {
            let mut entries = txn.open_table(ENTRIES)?;
            let mut messages = txn.open_table(MESSAGES)?;
            for k in dangling {
                entries.remove(*k)?;
            }
            entries.retain(|(queue, _), _| known.contains(&queue))?;
            messages.retain(|id, _| referenced.contains(id))?;
        }
        txn.commit()?;
        Ok(())
    }
}

impl Store for RedbStore {
    fn reader(&self) -> Arc<dyn MessageReader> {
        Arc::new(RedbReader { db: self.db.clone() })
    }

    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let (snap, referenced, dangling) = self.read_all()?;
        self.collect_garbage(&snap, &referenced, &dangling).map_err(|e| self.io(e))?;
        Ok(snap)
    }

    fn commit(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.apply(ops).map_err(|e| self.io(e))
    }
}
