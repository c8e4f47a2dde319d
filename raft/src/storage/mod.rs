//! Raft storage on redb: one database per node (`<data_dir>/raft.redb`) holds every group's
//! log, vote, commit point and last snapshot, keyed by the group id.
//!
//! Why one database: a node may run thousands of groups (one per quorum queue); one file
//! keeps the number of open files independent of the number of groups, and one writer
//! thread ([`writer`]) group-commits every group's log writes, so the number of fsyncs
//! depends on the disk's speed, not on the number of groups writing.

// openraft's storage traits fix the error type (`StorageError`, ~224 bytes); the helpers
// here return the same type rather than boxing and unboxing at every trait boundary.
#![allow(clippy::result_large_err)]

mod log_store;
mod state_machine;
mod writer;

use std::sync::Arc;

pub use log_store::LogStore;
use openraft::{AnyError, StorageError, StorageIOError};
use redb::{Database, ReadableDatabase, TableDefinition};
pub use state_machine::{StateMachine, StateMachineStore};

/// The log: (group, index) → postcard-encoded `Entry`.
const LOG: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("raft_log");
/// Per-group small values: (group, key) → postcard bytes. Keys: see the `KEY_*` constants.
const META: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("raft_meta");
/// The last snapshot's state bytes, per group.
const SNAPSHOT_DATA: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_snapshot_data");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";
const KEY_SNAPSHOT_META: &str = "snapshot_meta";

/// The node's Raft database, shared by all groups, and its log writer.
#[derive(Clone)]
pub struct RaftDb {
    db: Arc<Database>,
    writer: Arc<writer::Writer>,
}

/// A storage failure as openraft reports it (it stops the group: the disk can't be trusted).
pub(crate) fn io_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write(AnyError::error(e.to_string())).into()
}

/// The database's page cache.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

impl RaftDb {
    /// Opens (or creates) the database and its tables.
    pub fn open(path: &std::path::Path) -> Result<RaftDb, redb::Error> {
        // redb caches up to 1 GiB by default, and every byte of every group's log
        // passes through its cache: a node's memory would grow by what was replicated
        // until that cap. Recent entries (what replication reads back) fit in far less.
        RaftDb::init(Database::builder().set_cache_size(CACHE_BYTES).create(path)?)
    }

    /// Over another storage backend (tests make its fsync fail or wait: [`testing::Disk`]).
    #[cfg(test)]
    pub(crate) fn open_with_backend(backend: impl redb::StorageBackend) -> Result<RaftDb, redb::Error> {
        RaftDb::init(redb::Builder::new().create_with_backend(backend)?)
    }

    fn init(db: Database) -> Result<RaftDb, redb::Error> {
        let tx = db.begin_write()?;
        tx.open_table(LOG)?;
        tx.open_table(META)?;
        tx.open_table(SNAPSHOT_DATA)?;
        tx.commit()?;
        let db = Arc::new(db);
        let writer = writer::Writer::start(db.clone()).map_err(redb::Error::Io)?;
        Ok(RaftDb { db, writer: Arc::new(writer) })
    }

    /// Whether the group has any persisted state (a vote is written before anything else).
    pub fn has_state(&self, group: u64) -> Result<bool, redb::Error> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        Ok(meta.get((group, KEY_VOTE))?.is_some())
    }

    /// Removes everything stored for a group (a queue deleted, or this node removed from it).
    /// Goes through the writer's queue, so it lands after the group's queued writes (which
    /// would otherwise recreate part of its log). Blocks: call it off the executor.
    pub fn delete_group(&self, group: u64) -> Result<(), String> {
        self.writer.submit_blocking(group, writer::Op::DeleteGroup)
    }

    /// Write transactions and operations the log writer has committed.
    #[cfg(test)]
    pub(crate) fn writer_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (self.writer.shared.commits.load(Ordering::Relaxed), self.writer.shared.ops.load(Ordering::Relaxed))
    }

    /// The number of log entries stored for a group (tests check that purging happens).
    pub fn log_len(&self, group: u64) -> Result<u64, redb::Error> {
        let tx = self.db.begin_read()?;
        let log = tx.open_table(LOG)?;
        let mut n = 0;
        for item in log.range((group, 0)..=(group, u64::MAX))? {
            item?;
            n += 1;
        }
        Ok(n)
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, group: u64, key: &str) -> Result<Option<T>, StorageError<u64>> {
        let tx = self.db.begin_read().map_err(io_err)?;
        let meta = tx.open_table(META).map_err(io_err)?;
        match meta.get((group, key)).map_err(io_err)? {
            Some(v) => Ok(Some(postcard::from_bytes(v.value()).map_err(io_err)?)),
            None => Ok(None),
        }
    }

    /// Writes one metadata value through the writer, after the group's queued writes, and
    /// returns once it is on disk (votes must survive a crash).
    async fn write_meta<T: serde::Serialize>(
        &self,
        group: u64,
        key: &'static str,
        value: &T,
    ) -> Result<(), StorageError<u64>> {
        let value = postcard::to_stdvec(value).map_err(io_err)?;
        self.writer.submit(group, writer::Op::Meta { key, value, durable: true }).await.map_err(io_err)
    }

    /// Queues a metadata value that may lag after a crash (the committed index) and returns
    /// at once: it becomes durable with the next fsynced commit, and waiting for that would
    /// put a second fsync on every commit's path.
    fn write_meta_lazily<T: serde::Serialize>(
        &self,
        group: u64,
        key: &'static str,
        value: &T,
    ) -> Result<(), StorageError<u64>> {
        let value = postcard::to_stdvec(value).map_err(io_err)?;
        self.writer.submit_detached(group, writer::Op::Meta { key, value, durable: false });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftLogReader};

    use super::*;
    use crate::types::{Entry, Request};

    fn entry(term: u64, index: u64, body: &str) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Request(body.into())),
        }
    }

    fn bodies(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| match &e.payload {
                EntryPayload::Normal(r) => String::from_utf8(r.0.clone()).unwrap(),
                _ => String::new(),
            })
            .collect()
    }

    /// Reopens a database whose previous handles (the writer thread's) are still closing.
    fn reopen(path: &std::path::Path) -> RaftDb {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match RaftDb::open(path) {
                Ok(db) => return db,
                Err(redb::Error::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("reopen: {e}"),
            }
        }
    }

    #[test]
    fn many_groups_appending_at_once_share_commits_and_all_survive_a_reopen() {
        const GROUPS: u64 = 32;
        const ENTRIES: u64 = 40;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        let db = RaftDb::open(&path).unwrap();
        smol::block_on(async {
            let tasks: Vec<_> = (1..=GROUPS)
                .map(|group| {
                    let mut store = LogStore::new(db.clone(), group);
                    smol::spawn(async move {
                        for i in 1..=ENTRIES {
                            store.blocking_append([entry(1, i, &format!("{group}-{i}"))]).await.unwrap();
                            // Acknowledged means readable, and in order.
                            let got = store.get_log_reader().await.try_get_log_entries(1..=i).await.unwrap();
                            assert_eq!(got.len() as u64, i, "group {group}");
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await;
            }
        });
        let (commits, ops) = db.writer_stats();
        assert_eq!(ops, GROUPS * ENTRIES);
        assert!(commits < ops, "{commits} commits for {ops} appends: nothing was group-committed");
        for group in 1..=GROUPS {
            assert_eq!(db.log_len(group).unwrap(), ENTRIES);
        }
        drop(db);
        let db = reopen(&path);
        smol::block_on(async {
            for group in 1..=GROUPS {
                let mut store = LogStore::new(db.clone(), group);
                let state = store.get_log_state().await.unwrap();
                assert_eq!(state.last_log_id.map(|l| l.index), Some(ENTRIES));
                let got = store.try_get_log_entries(1..=ENTRIES).await.unwrap();
                let want: Vec<String> = (1..=ENTRIES).map(|i| format!("{group}-{i}")).collect();
                assert_eq!(bodies(&got), want);
            }
        });
    }

    #[test]
    fn queued_entries_are_readable_but_not_acknowledged_before_their_commit_and_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = RaftDb::open(&dir.path().join("raft.redb")).unwrap();
        smol::block_on(async {
            let mut store = LogStore::new(db.clone(), 7);
            store.blocking_append((1..=3).map(|i| entry(1, i, &format!("a{i}")))).await.unwrap();
            // Hold redb's write lock: the writer cannot commit until it is released.
            let held = db.db.begin_write().unwrap();
            let mut s = store.clone();
            let append =
                smol::spawn(async move { s.blocking_append((4..=6).map(|i| entry(1, i, &format!("a{i}")))).await });
            let deadline = Instant::now() + Duration::from_secs(5);
            while store.try_get_log_entries(1..).await.unwrap().len() < 6 {
                assert!(Instant::now() < deadline, "queued entries never became readable");
                smol::Timer::after(Duration::from_millis(5)).await;
            }
            assert_eq!(store.get_log_state().await.unwrap().last_log_id.map(|l| l.index), Some(6));
            smol::Timer::after(Duration::from_millis(50)).await;
            assert!(!append.is_finished(), "an append was acknowledged before its commit");
            assert_eq!(db.log_len(7).unwrap(), 3);
            // A truncation and a new append queued behind it apply after it, in order.
            let mut s = store.clone();
            let truncate = smol::spawn(async move { s.truncate(LogId::new(CommittedLeaderId::new(1, 1), 5)).await });
            smol::Timer::after(Duration::from_millis(20)).await;
            assert_eq!(bodies(&store.try_get_log_entries(1..).await.unwrap()), ["a1", "a2", "a3", "a4"]);
            drop(held);
            append.await.unwrap();
            truncate.await.unwrap();
            store.blocking_append([entry(2, 5, "b5")]).await.unwrap();
            assert_eq!(bodies(&store.try_get_log_entries(1..).await.unwrap()), ["a1", "a2", "a3", "a4", "b5"]);
            assert_eq!(db.log_len(7).unwrap(), 5);
        });
    }

    #[test]
    fn a_failed_commit_is_never_reported_stored_and_the_group_writes_nothing_after_it() {
        let disk = testing::Disk::default();
        let db = RaftDb::open_with_backend(disk.clone()).unwrap();
        smol::block_on(async {
            let mut store = LogStore::new(db.clone(), 3);
            store.blocking_append([entry(1, 1, "ok")]).await.unwrap();
            disk.fail(true);
            assert!(store.blocking_append([entry(1, 2, "lost")]).await.is_err(), "a failed fsync was reported stored");
            disk.fail(false);
            // Entry 3 after a lost entry 2 would be a hole: refused (openraft has stopped
            // the group anyway).
            assert!(store.blocking_append([entry(1, 3, "after")]).await.is_err());
            assert!(store.save_vote(&openraft::Vote::new(2, 1)).await.is_err());
        });
    }
}

/// A storage backend for tests whose fsync can be made to fail or to wait.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// An in-memory database (cheap to clone: clones share it and its switches). While
    /// `hold` is set, an fsync waits (the writer thread with it: nothing of this node is
    /// reported stored); when it goes on, it fails if `fail` is set.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Disk {
        inner: Arc<redb::backends::InMemoryBackend>,
        fail: Arc<AtomicBool>,
        hold: Arc<AtomicBool>,
        /// fsyncs that have waited (a test knows its hold took effect).
        held: Arc<std::sync::atomic::AtomicU64>,
    }

    impl Disk {
        pub(crate) fn fail(&self, on: bool) {
            self.fail.store(on, Ordering::SeqCst);
        }
        pub(crate) fn hold(&self, on: bool) {
            self.hold.store(on, Ordering::SeqCst);
        }
        /// How many fsyncs were held so far.
        pub(crate) fn held(&self) -> u64 {
            self.held.load(Ordering::SeqCst)
        }
    }

    impl redb::StorageBackend for Disk {
        fn len(&self) -> std::io::Result<u64> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            if self.hold.load(Ordering::SeqCst) {
                self.held.fetch_add(1, Ordering::SeqCst);
                while self.hold.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            if self.fail.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("injected fsync failure"));
            }
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.inner.write(offset, data)
        }
    }
}
