//! The redb-backed [`Store`]: one file, `haremq.redb`, in the data directory.
//!
//! Tables:
//! - `exchanges`: "vhost\0name" → JSON [`ExchangeRecord`]
//! - `queues`: queue id → JSON [`QueueRecord`]
//! - `bindings`: JSON [`BindingRecord`] → () (the record is its own identity)
//! - `messages`: message id → encoded message ([`super::codec`])
//! - `entries`: (queue id, seq) → (message id, delivered)
//!
//! Every commit uses redb's default `Durability::Immediate`: it returns after fsync.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};

use super::codec::{decode_delayed, decode_message, encode_message};
use super::{BindingRecord, EntryRecord, LOAD_AT_START, MessageId, MessageReader, QueueRecord, Snapshot, Store, StoreError, StoreOp};
use crate::message::Message;

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
    fn read_messages(&self, ids: &[MessageId]) -> Vec<Option<Message>> {
        let read = || -> Result<Vec<Option<Message>>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(MESSAGES)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let m = table.get(*id)?.and_then(|v| decode_message(v.value())).map(|mut m| {
                    m.store.id = Some(*id);
                    m
                });
                out.push(m);
            }
            Ok(out)
        };
        read().unwrap_or_else(|e| {
            log::error!("reading {} messages from the store failed: {e}", ids.len());
            ids.iter().map(|_| None).collect()
        })
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
                        encode_message(m, &mut self.scratch);
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

    fn read_all(&self) -> Result<Snapshot, StoreError> {
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
        for row in entries.iter().map_err(|e| self.io(e))? {
            let (k, v) = row.map_err(|e| self.io(e))?;
            let (queue, seq) = k.value();
            let (message, delivered) = v.value();
            if known.contains(&queue) {
                snap.entries.entry(queue).or_default().push(EntryRecord { seq, message, delivered });
            }
        }
        // Bodies are read now only where a queue will want them soon (its head) or
        // where several queues share them; the rest stay on disk, paged.
        let mut refs: HashMap<MessageId, u32> = HashMap::new();
        for list in snap.entries.values() {
            for e in list {
                *refs.entry(e.message).or_default() += 1;
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
        for list in snap.entries.values() {
            for (pos, e) in list.iter().enumerate() {
                let id = e.message;
                if snap.messages.contains_key(&id) || snap.paged.contains(&id) {
                    continue;
                }
                let Some(v) = messages.get(id).map_err(|e| self.io(e))? else {
                    continue;
                };
                if pos < LOAD_AT_START || refs.get(&id).copied().unwrap_or(0) > 1 {
                    let mut m = decode_message(v.value()).ok_or_else(|| self.corrupt(format!("message {id}")))?;
                    m.store.id = Some(id);
                    snap.messages.insert(id, Arc::new(m));
                } else {
                    snap.paged.insert(id);
                }
            }
        }
        // Entries whose message record is missing cannot be delivered; drop them.
        for list in snap.entries.values_mut() {
            list.retain(|e| snap.messages.contains_key(&e.message) || snap.paged.contains(&e.message));
        }
        Ok(snap)
    }

    /// Deletes what nothing references: entries of deleted queues and unreferenced
    /// messages (e.g. published but never enqueued before a crash).
    fn collect_garbage(&mut self, snap: &Snapshot) -> Result<(), redb::Error> {
        let known: HashSet<u64> = snap.queues.iter().map(|q| q.id).collect();
        let txn = self.db.begin_write()?;
        {
            let mut entries = txn.open_table(ENTRIES)?;
            let kept = |id: &MessageId| snap.messages.contains_key(id) || snap.paged.contains(id);
            entries.retain(|(queue, _), (message, _)| known.contains(&queue) && kept(&message))?;
            let mut messages = txn.open_table(MESSAGES)?;
            messages.retain(|id, _| kept(&id))?;
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
        let snap = self.read_all()?;
        self.collect_garbage(&snap).map_err(|e| self.io(e))?;
        Ok(snap)
    }

    fn commit(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.apply(ops).map_err(|e| self.io(e))
    }
}
