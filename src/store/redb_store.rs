//! The redb-backed [`Store`]: one file, `haremq.redb`, in the data directory.
//!
//! Tables:
//! - `exchanges`: "vhost\0name" → JSON [`ExchangeRecord`]
//! - `queues`: queue id → JSON [`QueueRecord`]
//! - `bindings`: JSON [`BindingRecord`] → () (the record is its own identity)
//! - `messages`: message id → encoded message ([`super::codec`])
//! - `entries`: (queue id, seq) → (message id, delivered) — the queue index: a
//!   queue's spilled runs are read back from it by range (`MessageReader::read_entries`)
//! - `delayed`: message id → encoded delayed message
//! - `vhosts`: name → JSON [`VHostRecord`]; `users`: name → JSON [`UserRecord`]
//! - `permissions`: "user\0vhost" → JSON [`PermissionRecord`];
//!   `topic_permissions`: "user\0vhost\0exchange" → JSON [`TopicPermissionRecord`]
//! - `policies`: "vhost\0p\0name" (operator policies: "o") → JSON [`PolicyRecord`]
//! - `global_parameters`: name → the value's JSON text
//!
//! Every commit uses redb's default `Durability::Immediate`: it returns after fsync.
//!
//! Start and shutdown (see [`super::clean`]): a clean shutdown closes the database
//! (so the next open needs no repair) and records how many rows it holds. A start
//! verifies the file (redb's repair after a crash, its integrity check otherwise) and
//! refuses, unless `accept_repair`, a store that is not what the last clean shutdown
//! left: one that needs repair, was rolled back to an older commit, holds fewer rows,
//! is empty or missing. A start that was suspicious (or accepted) skips garbage
//! collection, so whatever it cannot match stays for a later look.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::clean::{self, Counts};

use super::codec::{decode_delayed, decode_message, encode_message};
use super::{
    BindingRecord, EntryRecord, MessageId, MessageReader, MessageRecord, PermissionRecord, PolicyRecord, QueueId,
    QueueRecord, Recovered, Snapshot, Store, StoreError, StoreOp, TopicPermissionRecord, LOAD_AT_START,
};

const EXCHANGES: TableDefinition<&str, &[u8]> = TableDefinition::new("exchanges");
const QUEUES: TableDefinition<u64, &[u8]> = TableDefinition::new("queues");
const BINDINGS: TableDefinition<&[u8], ()> = TableDefinition::new("bindings");
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
const ENTRIES: TableDefinition<(u64, u64), (u64, bool)> = TableDefinition::new("entries");
const DELAYED: TableDefinition<u64, &[u8]> = TableDefinition::new("delayed");
const VHOSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("vhosts");
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const PERMISSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("permissions");
const TOPIC_PERMISSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("topic_permissions");
const POLICIES: TableDefinition<&str, &[u8]> = TableDefinition::new("policies");
const GLOBAL_PARAMETERS: TableDefinition<&str, &[u8]> = TableDefinition::new("global_parameters");

/// redb's page cache.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// The store's file name inside the data directory.
pub const FILE_NAME: &str = "haremq.redb";

pub struct RedbStore {
    /// The writer's handle; None while a reopen after a failed commit has not
    /// succeeded yet, and after [`Store::close`].
    db: Option<Arc<Database>>,
    /// The same handle for the readers.
    shared: SharedDb,
    dir: PathBuf,
    path: PathBuf,
    scratch: Vec<u8>,
    start: StartCheck,
}

/// What opening the store found, for [`Store::load`] to report.
#[derive(Default)]
struct StartCheck {
    /// The record of the last clean shutdown, if it was clean.
    clean: Option<Counts>,
    /// The store is not what the last clean shutdown left and was accepted anyway.
    suspect: bool,
    /// redb had to repair the file (it was not closed cleanly).
    repaired: bool,
    /// The newest commit was damaged and the file was rolled back to an earlier one,
    /// or its integrity check found damage and repaired it.
    rolled_back: bool,
}

/// The database as the readers reach it: swapped when the writer reopens it after a
/// failed commit, taken out when it closes it. Readers clone the `Arc` for one read.
#[derive(Clone, Default)]
struct SharedDb(Arc<RwLock<Option<Arc<Database>>>>);

impl SharedDb {
    fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Io("the store is closed or being reopened after a failed commit".into()))
    }

    fn set(&self, db: Option<Arc<Database>>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = db;
    }
}

/// Reads message records with read transactions, concurrently with the writer.
struct RedbReader {
    db: SharedDb,
}

impl MessageReader for RedbReader {
    fn read_messages(&self, ids: &[MessageId]) -> Result<Vec<Option<MessageRecord>>, StoreError> {
        let db = self.db.get()?;
        let read = || -> Result<Vec<Option<MessageRecord>>, redb::Error> {
            let txn = db.begin_read()?;
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
        let db = self.db.get()?;
        let read = || -> Result<Vec<EntryRecord>, redb::Error> {
            let mut out = Vec::new();
            if from_seq > to_seq {
                return Ok(out);
            }
            let txn = db.begin_read()?;
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

fn permission_key(user: &str, vhost: &str) -> String {
    format!("{user}\0{vhost}")
}

fn topic_permission_key(user: &str, vhost: &str, exchange: &str) -> String {
    format!("{user}\0{vhost}\0{exchange}")
}

fn policy_key(vhost: &str, operator: bool, name: &str) -> String {
    format!("{vhost}\0{}\0{name}", if operator { "o" } else { "p" })
}

/// Whether a JSON record of type `T` decodes and satisfies `keep` (rows that do not
/// decode are kept: they are reported when the store is loaded).
fn json_keep<T: serde::de::DeserializeOwned>(bytes: &[u8], keep: impl Fn(&T) -> bool) -> bool {
    serde_json::from_slice::<T>(bytes).map_or(true, |r| keep(&r))
}

impl RedbStore {
    /// Opens (or creates) the store in `data_dir`, refusing one that is not what the
    /// last clean shutdown left (see [`RedbStore::open_with`]).
    #[cfg(test)]
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, false)
    }

    /// Opens (or creates) the store in `data_dir` and verifies it. With
    /// `accept_repair`, a store that is damaged or not what the last clean shutdown
    /// recorded is used anyway (logged as an error, garbage collection skipped);
    /// without, that is a [`StoreError::Damaged`] and nothing is changed.
    pub fn open_with(data_dir: &Path, accept_repair: bool) -> Result<Self, StoreError> {
        let path = data_dir.join(FILE_NAME);
        let shown = path.display().to_string();
        let clean = clean::read(data_dir)?;
        let damaged = |detail: String| StoreError::Damaged { path: shown.clone(), detail };
        let recorded = |c: &Option<Counts>| match c {
            Some(c) => format!("the last clean shutdown recorded {c}"),
            None => "no clean shutdown was recorded".into(),
        };
        match std::fs::metadata(&path) {
            // A new store is created whole (below), so an empty file is a store whose
            // contents were lost, not a new one.
            Ok(m) if m.len() == 0 => {
                let detail = format!("the file is empty (0 bytes); {}", recorded(&clean));
                if !accept_repair {
                    return Err(damaged(detail));
                }
                let aside = data_dir.join(format!("{FILE_NAME}.empty"));
                log::error!("store {shown}: {detail}; accepted: moved to {} and starting empty", aside.display());
                std::fs::rename(&path, &aside).map_err(|e| StoreError::Io(format!("moving {shown} aside: {e}")))?;
                create_new(data_dir, &path)?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(c) = &clean {
                    let detail = format!("the file is missing, but the last clean shutdown recorded {c}");
                    if !accept_repair {
                        return Err(damaged(detail));
                    }
                    log::error!("store {shown}: {detail}; accepted: starting empty");
                }
                create_new(data_dir, &path)?;
            }
            Err(e) => return Err(StoreError::Open { path: shown, detail: e.to_string() }),
        }
        // After a clean shutdown the file needs no repair and holds what was recorded.
        // Checked read-only first, so a store refused here (or above) is left byte for
        // byte as it was.
        let mut suspect = false;
        if let Some(recorded) = &clean {
            if let Some(problem) = precheck(&path, recorded).map_err(|e| open_error(data_dir, &shown, e))? {
                if !accept_repair {
                    return Err(damaged(problem));
                }
                log::error!("store {shown}: {problem}; accepted (--accept-store-repair): starting with what it holds, garbage collection skipped");
                suspect = true;
            }
        }
        // A repair is stopped before it writes anything if the last shutdown was clean
        // (the read-only check above already refused such a file; this is in case it
        // changed in between).
        let stop_repair = clean.is_some() && !accept_repair;
        let (db, stage) = open_db(&path, stop_repair).map_err(|e| match e {
            DatabaseError::RepairAborted => damaged(format!(
                "it needs repair although it was shut down cleanly ({}): it was damaged or changed since",
                recorded(&clean)
            )),
            other => open_error(data_dir, &shown, other),
        })?;
        let mut db = db;
        let mut start = StartCheck { clean, repaired: stage >= REPAIRING, rolled_back: stage >= ROLLING_BACK, suspect };
        if !start.repaired {
            // Closed cleanly, so redb did not look at its pages: verify them now, so a
            // damaged file is found at start, not when a damaged page is read.
            match db.check_integrity() {
                Ok(true) => {}
                Ok(false) => start.rolled_back = true,
                Err(e) => {
                    return Err(StoreError::Corrupt { path: shown, detail: format!("integrity check failed: {e}") })
                }
            }
        }
        if start.rolled_back && start.clean.is_some() && !accept_repair {
            return Err(damaged(format!(
                "its integrity check found damage and repaired it, rolling back to an earlier commit (written to the file); {}",
                recorded(&start.clean)
            )));
        }
        let db = Arc::new(db);
        let shared = SharedDb::default();
        shared.set(Some(db.clone()));
        let store = Self { db: Some(db), shared, dir: data_dir.to_path_buf(), path, scratch: Vec::new(), start };
        store.create_tables()?;
        Ok(store)
    }

    fn db(&self) -> Result<&Arc<Database>, redb::Error> {
        self.db.as_ref().ok_or(redb::Error::DatabaseClosed)
    }

    /// How many rows the store holds.
    fn counts(&self) -> Result<Counts, StoreError> {
        count_rows(&**self.db().map_err(|e| self.io(e))?).map_err(|e| self.io(e))
    }

    /// Takes the database away from the readers and waits until no read holds it
    /// (reads are short), so it can be closed; on timeout it is kept, to try again.
    fn take_db(&mut self) -> Result<Option<Database>, StoreError> {
        self.shared.set(None);
        let Some(mut db) = self.db.take() else {
            return Ok(None);
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Arc::try_unwrap(db) {
                Ok(db) => return Ok(Some(db)),
                Err(still) if Instant::now() < deadline => {
                    db = still;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(still) => {
                    self.db = Some(still);
                    return Err(self.io("a reader still holds the database"));
                }
            }
        }
    }

    fn io(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Io(format!("{}: {e}", self.path.display()))
    }

    fn corrupt(&self, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt { path: self.path.display().to_string(), detail: detail.to_string() }
    }

    fn create_tables(&self) -> Result<(), StoreError> {
        let txn = self.db().map_err(|e| self.io(e))?.begin_write().map_err(|e| self.io(e))?;
        {
            txn.open_table(EXCHANGES).map_err(|e| self.io(e))?;
            txn.open_table(QUEUES).map_err(|e| self.io(e))?;
            txn.open_table(BINDINGS).map_err(|e| self.io(e))?;
            txn.open_table(MESSAGES).map_err(|e| self.io(e))?;
            txn.open_table(ENTRIES).map_err(|e| self.io(e))?;
            txn.open_table(DELAYED).map_err(|e| self.io(e))?;
            txn.open_table(VHOSTS).map_err(|e| self.io(e))?;
            txn.open_table(USERS).map_err(|e| self.io(e))?;
            txn.open_table(PERMISSIONS).map_err(|e| self.io(e))?;
            txn.open_table(TOPIC_PERMISSIONS).map_err(|e| self.io(e))?;
            txn.open_table(POLICIES).map_err(|e| self.io(e))?;
            txn.open_table(GLOBAL_PARAMETERS).map_err(|e| self.io(e))?;
        }
        txn.commit().map_err(|e| self.io(e))
    }

    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), redb::Error> {
        let txn = self.db()?.begin_write()?;
        {
            let mut exchanges = txn.open_table(EXCHANGES)?;
            let mut queues = txn.open_table(QUEUES)?;
            let mut bindings = txn.open_table(BINDINGS)?;
            let mut messages = txn.open_table(MESSAGES)?;
            let mut entries = txn.open_table(ENTRIES)?;
            let mut delayed = txn.open_table(DELAYED)?;
            let mut vhosts = txn.open_table(VHOSTS)?;
            let mut users = txn.open_table(USERS)?;
            let mut permissions = txn.open_table(PERMISSIONS)?;
            let mut topic_permissions = txn.open_table(TOPIC_PERMISSIONS)?;
            let mut policies = txn.open_table(POLICIES)?;
            let mut global_parameters = txn.open_table(GLOBAL_PARAMETERS)?;
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
                                !(b.vhost == *vhost && (b.source == *name || (!b.to_queue && b.destination == *name)))
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
                                    Ok(v) => v
                                        .and_then(|v| decode_message(v.value()))
                                        .map(|m| filter.holds(&m.raw_properties)),
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
                    StoreOp::PutVHost(r) => {
                        let json = serde_json::to_vec(r).unwrap_or_default();
                        vhosts.insert(r.name.as_str(), json.as_slice())?;
                    }
                    StoreOp::DeleteVHost { name } => {
                        vhosts.remove(name.as_str())?;
                        exchanges.retain(|k, _| !k.strip_prefix(name.as_str()).is_some_and(|r| r.starts_with('\0')))?;
                        let mut dead = Vec::new();
                        for row in queues.iter()? {
                            let (k, v) = row?;
                            if !json_keep::<QueueRecord>(v.value(), |q| q.vhost != *name) {
                                dead.push(k.value());
                            }
                        }
                        for id in dead {
                            queues.remove(id)?;
                            entries.retain_in((id, 0)..=(id, u64::MAX), |_, _| false)?;
                        }
                        bindings.retain(|k, _| json_keep::<BindingRecord>(k, |b| b.vhost != *name))?;
                        delayed.retain(|_, v| decode_delayed(v).is_none_or(|d| d.vhost != *name))?;
                        permissions.retain(|_, v| json_keep::<PermissionRecord>(v, |p| p.vhost != *name))?;
                        topic_permissions.retain(|_, v| json_keep::<TopicPermissionRecord>(v, |p| p.vhost != *name))?;
                        policies.retain(|_, v| json_keep::<PolicyRecord>(v, |p| p.vhost != *name))?;
                    }
                    StoreOp::PutUser(r) => {
                        let json = serde_json::to_vec(r).unwrap_or_default();
                        users.insert(r.name.as_str(), json.as_slice())?;
                    }
                    StoreOp::DeleteUser { name } => {
                        users.remove(name.as_str())?;
                        permissions.retain(|_, v| json_keep::<PermissionRecord>(v, |p| p.user != *name))?;
                        topic_permissions.retain(|_, v| json_keep::<TopicPermissionRecord>(v, |p| p.user != *name))?;
                    }
                    StoreOp::PutPermission(r) => {
                        let json = serde_json::to_vec(r).unwrap_or_default();
                        permissions.insert(permission_key(&r.user, &r.vhost).as_str(), json.as_slice())?;
                    }
                    StoreOp::DeletePermission { user, vhost } => {
                        permissions.remove(permission_key(user, vhost).as_str())?;
                    }
                    StoreOp::PutTopicPermission(r) => {
                        let json = serde_json::to_vec(r).unwrap_or_default();
                        let key = topic_permission_key(&r.user, &r.vhost, &r.exchange);
                        topic_permissions.insert(key.as_str(), json.as_slice())?;
                    }
                    StoreOp::DeleteTopicPermission { user, vhost, exchange } => {
                        topic_permissions.remove(topic_permission_key(user, vhost, exchange).as_str())?;
                    }
                    StoreOp::PutGlobalParameter { name, value } => {
                        global_parameters.insert(name.as_str(), value.as_bytes())?;
                    }
                    StoreOp::DeleteGlobalParameter { name } => {
                        global_parameters.remove(name.as_str())?;
                    }
                    StoreOp::PutPolicy(r) => {
                        let json = serde_json::to_vec(r).unwrap_or_default();
                        policies.insert(policy_key(&r.vhost, r.operator, &r.name).as_str(), json.as_slice())?;
                    }
                    StoreOp::DeletePolicy { vhost, operator, name } => {
                        policies.remove(policy_key(vhost, *operator, name).as_str())?;
                    }
                    // The writer applies these to the streams' logs.
                    StoreOp::StreamAppend { .. } | StoreOp::DeleteStream(_) => {}
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
        let txn = self.db().map_err(|e| self.io(e))?.begin_read().map_err(|e| self.io(e))?;
        let mut snap = Snapshot::default();
        for (table, out) in [(VHOSTS, 0), (USERS, 1), (PERMISSIONS, 2), (TOPIC_PERMISSIONS, 3), (POLICIES, 4)] {
            let t = txn.open_table(table).map_err(|e| self.io(e))?;
            for row in t.iter().map_err(|e| self.io(e))? {
                let (_, v) = row.map_err(|e| self.io(e))?;
                let v = v.value();
                match out {
                    0 => snap.vhosts.push(serde_json::from_slice(v).map_err(|e| self.corrupt(e))?),
                    1 => snap.users.push(serde_json::from_slice(v).map_err(|e| self.corrupt(e))?),
                    2 => snap.permissions.push(serde_json::from_slice(v).map_err(|e| self.corrupt(e))?),
                    4 => snap.policies.push(serde_json::from_slice(v).map_err(|e| self.corrupt(e))?),
                    _ => snap.topic_permissions.push(serde_json::from_slice(v).map_err(|e| self.corrupt(e))?),
                }
            }
        }
        let params = txn.open_table(GLOBAL_PARAMETERS).map_err(|e| self.io(e))?;
        for row in params.iter().map_err(|e| self.io(e))? {
            let (k, v) = row.map_err(|e| self.io(e))?;
            let value = std::str::from_utf8(v.value()).map_err(|e| self.corrupt(e))?.to_string();
            snap.global_parameters.push((k.value().to_string(), value));
        }
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
            let record =
                decode_delayed(v.value()).ok_or_else(|| self.corrupt(format!("delayed message {}", k.value())))?;
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
        let txn = self.db()?.begin_write()?;
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
        Arc::new(RedbReader { db: self.shared.clone() })
    }

    fn load(&mut self) -> Result<Snapshot, StoreError> {
        let (snap, referenced, dangling) = self.read_all()?;
        let counts = self.counts()?;
        let shown = self.path.display();
        if self.start.rolled_back {
            log::error!(
                "store {shown}: its newest commit was damaged and it was rolled back to the commit before ({}; it now holds {counts}). Expected after a power loss or OS crash during a commit, or a commit that failed (e.g. on a full disk) before the broker stopped; otherwise the file was damaged. Garbage collection skipped",
                match &self.start.clean {
                    Some(c) => format!("the last clean shutdown recorded {c}"),
                    None => "the last shutdown was not clean".into(),
                }
            );
        } else if self.start.repaired {
            log::warn!(
                "store {shown} was not shut down cleanly (crash, kill or power loss); verified and repaired: {counts}"
            );
        } else if let Some(c) = self.start.clean.filter(|_| !self.start.suspect) {
            log::info!("store {shown}: shut down cleanly ({c}); integrity verified, no repair needed");
        }
        if !self.start.rolled_back && !self.start.suspect {
            self.collect_garbage(&snap, &referenced, &dangling).map_err(|e| self.io(e))?;
        }
        // From here on the store changes: a crash must not look like a clean shutdown.
        clean::remove(&self.dir)?;
        self.start.clean = None;
        Ok(snap)
    }

    fn commit(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.apply(ops).map_err(|e| self.io(e))
    }

    fn recover(&mut self) -> Result<(), StoreError> {
        if let Some(db) = self.take_db()? {
            // After an I/O error redb refuses every transaction until reopened; its
            // close may fail for the same reason, and the reopen repairs the file.
            if let Err(e) = db.close() {
                log::debug!("closing {} after a failed commit: {e}", self.path.display());
            }
        }
        let (db, stage) = open_db(&self.path, false).map_err(|e| self.io(e))?;
        if stage >= ROLLING_BACK {
            log::debug!("store {}: reopened, rolled back to its last good commit", self.path.display());
        }
        let db = Arc::new(db);
        self.shared.set(Some(db.clone()));
        self.db = Some(db);
        Ok(())
    }

    fn close(&mut self) -> Result<(), StoreError> {
        let counts = self.counts()?;
        if let Some(db) = self.take_db()? {
            db.close().map_err(|e| self.io(format!("closing: {e}")))?;
        }
        clean::write(&self.dir, &counts)?;
        log::info!("store {} closed cleanly: {counts}", self.path.display());
        Ok(())
    }
}

#[cfg(test)]
mod security_tests;
#[cfg(test)]
mod start_tests;

/// How many rows `db` holds (a table not created yet holds none).
fn count_rows(db: &impl ReadableDatabase) -> Result<Counts, redb::Error> {
    let txn = db.begin_read()?;
    let len = |name: &str| -> Result<u64, redb::Error> {
        let def: TableDefinition<u64, &[u8]> = TableDefinition::new(name);
        match txn.open_untyped_table(def) {
            Ok(t) => Ok(t.len()?),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(e.into()),
        }
    };
    Ok(Counts { messages: len("messages")?, entries: len("entries")?, delayed: len("delayed")? })
}

/// Checks a store whose last shutdown was clean against its record without writing
/// to it: Some(what is wrong) if it needs repair or holds fewer rows.
fn precheck(path: &Path, recorded: &Counts) -> Result<Option<String>, DatabaseError> {
    let db = match Database::builder().set_cache_size(CACHE_BYTES).open_read_only(path) {
        Ok(db) => db,
        Err(DatabaseError::RepairAborted) => {
            return Ok(Some(format!(
                "it needs repair although it was shut down cleanly (the last clean shutdown recorded {recorded}): it was damaged or changed since"
            )))
        }
        Err(e) => return Err(e),
    };
    let counts = count_rows(&db).map_err(|e| DatabaseError::Storage(redb::StorageError::Corrupted(e.to_string())))?;
    Ok(counts
        .fewer_than(recorded)
        .then(|| format!("it holds {counts}, fewer than the {recorded} its last clean shutdown recorded")))
}

/// Repair stages seen through redb's repair callback: it is called with progress 0.0
/// when a repair starts and with 0.3 when the newest commit does not verify and the
/// file falls back to the one before.
const REPAIRING: u8 = 1;
const ROLLING_BACK: u8 = 2;

/// Opens (or creates) the database at `path`; returns it and how far a repair went.
/// `stop_repair`: abort a needed repair before it changes anything.
fn open_db(path: &Path, stop_repair: bool) -> Result<(Database, u8), DatabaseError> {
    let stage = Arc::new(AtomicU8::new(0));
    let seen = stage.clone();
    // redb's default cache is 1 GiB; the broker keeps its own working set in memory
    // and pages bodies in sequentially, so a small cache is enough.
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .set_repair_callback(move |session| {
            let at = if (0.25..0.35).contains(&session.progress()) { ROLLING_BACK } else { REPAIRING };
            seen.fetch_max(at, Ordering::AcqRel);
            if stop_repair {
                session.abort();
            }
        })
        .create(path)?;
    Ok((db, stage.load(Ordering::Acquire)))
}

fn open_error(data_dir: &Path, shown: &str, e: DatabaseError) -> StoreError {
    match e {
        DatabaseError::DatabaseAlreadyOpen => StoreError::Locked { path: data_dir.display().to_string() },
        other => StoreError::Open { path: shown.to_string(), detail: other.to_string() },
    }
}

/// Creates an empty store at `path` whole: initialized under a temporary name, closed
/// and renamed into place, so the store file is never seen empty or half-made (an
/// empty `haremq.redb` is then always a damaged one).
fn create_new(data_dir: &Path, path: &Path) -> Result<(), StoreError> {
    let tmp = data_dir.join(format!("{FILE_NAME}.new"));
    let shown = tmp.display().to_string();
    let _ = std::fs::remove_file(&tmp);
    let db = Database::builder().create(&tmp).map_err(|e| open_error(data_dir, &shown, e))?;
    let init = || -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        txn.open_table(MESSAGES)?;
        txn.commit()?;
        Ok(())
    };
    init().map_err(|e| StoreError::Io(format!("{shown}: {e}")))?;
    db.close().map_err(|e| StoreError::Io(format!("{shown}: closing: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| StoreError::Io(format!("renaming {shown}: {e}")))?;
    clean::sync_dir(data_dir)
}
