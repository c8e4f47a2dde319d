//! Raft storage on redb: one database per node (`<data_dir>/raft.redb`) holds every group's
//! log, vote, commit point and last snapshot, keyed by the group id.
//!
//! Why one database: a node may run thousands of groups (one per quorum queue); one file
//! keeps the number of open files and fsyncs independent of the number of groups.

// openraft's storage traits fix the error type (`StorageError`, ~224 bytes); the helpers
// here return the same type rather than boxing and unboxing at every trait boundary.
#![allow(clippy::result_large_err)]

mod log_store;
mod state_machine;

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

/// The node's Raft database, shared by all groups.
#[derive(Clone)]
pub struct RaftDb {
    db: Arc<Database>,
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
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(LOG)?;
        tx.open_table(META)?;
        tx.open_table(SNAPSHOT_DATA)?;
        tx.commit()?;
        Ok(RaftDb { db: Arc::new(db) })
    }

    /// Whether the group has any persisted state (a vote is written before anything else).
    pub fn has_state(&self, group: u64) -> Result<bool, redb::Error> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        Ok(meta.get((group, KEY_VOTE))?.is_some())
    }

    /// Removes everything stored for a group (a queue deleted, or this node removed from it).
    pub fn delete_group(&self, group: u64) -> Result<(), redb::Error> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(redb::Durability::Immediate)?;
        {
            let mut log = tx.open_table(LOG)?;
            log.retain_in((group, 0)..=(group, u64::MAX), |_, _| false)?;
            let mut meta = tx.open_table(META)?;
            for key in [KEY_VOTE, KEY_COMMITTED, KEY_PURGED, KEY_SNAPSHOT_META] {
                meta.remove((group, key))?;
            }
            let mut snap = tx.open_table(SNAPSHOT_DATA)?;
            snap.remove(group)?;
        }
        tx.commit()?;
        Ok(())
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

    /// Writes one metadata value. `durability`: `Immediate` fsyncs before returning (votes
    /// must survive a crash); `None` becomes durable with the next durable commit (for
    /// values that may lag after a crash, such as the committed index).
    async fn write_meta<T: serde::Serialize>(
        &self,
        group: u64,
        key: &'static str,
        value: &T,
        durability: redb::Durability,
    ) -> Result<(), StorageError<u64>> {
        let bytes = postcard::to_stdvec(value).map_err(io_err)?;
        let db = self.db.clone();
        smol::unblock(move || -> Result<(), redb::Error> {
            let mut tx = db.begin_write()?;
            tx.set_durability(durability)?;
            tx.open_table(META)?.insert((group, key), bytes.as_slice())?;
            tx.commit()?;
            Ok(())
        })
        .await
        .map_err(io_err)
    }
}
