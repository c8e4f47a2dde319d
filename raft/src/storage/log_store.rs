//! One group's Raft log in the node's redb database.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogId, LogState, RaftLogReader, StorageError, Vote};
use redb::ReadableDatabase;

use super::{io_err, RaftDb, KEY_COMMITTED, KEY_PURGED, KEY_VOTE, LOG};
use crate::types::{Entry, TypeConfig};

/// A group's view of the shared database: its log, vote and commit point.
#[derive(Clone)]
pub struct LogStore {
    db: RaftDb,
    group: u64,
}

impl LogStore {
    pub fn new(db: RaftDb, group: u64) -> LogStore {
        LogStore { db, group }
    }

    fn last_entry(&self) -> Result<Option<Entry>, StorageError<u64>> {
        let tx = self.db.db.begin_read().map_err(io_err)?;
        let log = tx.open_table(LOG).map_err(io_err)?;
        let last = log.range((self.group, 0)..=(self.group, u64::MAX)).map_err(io_err)?.next_back();
        match last {
            Some(item) => {
                let (_, v) = item.map_err(io_err)?;
                Ok(Some(postcard::from_bytes(v.value()).map_err(io_err)?))
            }
            None => Ok(None),
        }
    }

    /// Runs a durable (fsynced) write transaction off the executor threads.
    async fn write<F>(&self, f: F) -> Result<(), StorageError<u64>>
    where
        F: FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error> + Send + 'static,
    {
        let db = self.db.db.clone();
        smol::unblock(move || -> Result<(), redb::Error> {
            let mut tx = db.begin_write()?;
            tx.set_durability(redb::Durability::Immediate)?;
            f(&tx)?;
            tx.commit()?;
            Ok(())
        })
        .await
        .map_err(io_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<u64>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Bound::Included((self.group, i)),
            Bound::Excluded(&i) => Bound::Excluded((self.group, i)),
            Bound::Unbounded => Bound::Included((self.group, u64::MAX)),
        };
        let tx = self.db.db.begin_read().map_err(io_err)?;
        let log = tx.open_table(LOG).map_err(io_err)?;
        let mut out = Vec::new();
        for item in log.range::<(u64, u64)>((Bound::Included((self.group, start)), end)).map_err(io_err)? {
            let (_, v) = item.map_err(io_err)?;
            out.push(postcard::from_bytes(v.value()).map_err(io_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let last_purged_log_id: Option<LogId<u64>> = self.db.read_meta(self.group, KEY_PURGED)?;
        let last_log_id = match self.last_entry()? {
            Some(e) => Some(e.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.db.write_meta(self.group, KEY_VOTE, vote, redb::Durability::Immediate).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.db.read_meta(self.group, KEY_VOTE)
    }

    /// Persisted so that a restarted node re-applies the committed log after its snapshot
    /// (the applied state itself lives only in memory). Written without an fsync of its
    /// own: it is on the path of every commit, and a value lost in a crash only means the
    /// node re-applies less at start and learns the rest from the leader (a committed
    /// index may lag, never lead).
    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError<u64>> {
        self.db.write_meta(self.group, KEY_COMMITTED, &committed, redb::Durability::None).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.db.read_meta::<Option<LogId<u64>>>(self.group, KEY_COMMITTED)?.flatten())
    }

    /// Writes the whole batch in one fsynced transaction and only then reports the IO
    /// complete: openraft counts this node towards a commit's majority from that callback on.
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        for e in entries {
            encoded.push((e.log_id.index, postcard::to_stdvec(&e).map_err(io_err)?));
        }
        let group = self.group;
        let result = self
            .write(move |tx| {
                let mut log = tx.open_table(LOG)?;
                for (index, bytes) in &encoded {
                    log.insert((group, *index), bytes.as_slice())?;
                }
                Ok(())
            })
            .await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    /// Removes the entries from `log_id` on (a new leader overwrote an uncommitted tail).
    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let group = self.group;
        self.write(move |tx| {
            let mut log = tx.open_table(LOG)?;
            log.retain_in((group, log_id.index)..=(group, u64::MAX), |_, _| false)?;
            Ok(())
        })
        .await
    }

    /// Removes the entries up to `log_id` (covered by a snapshot), recording it as purged.
    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let group = self.group;
        let purged = postcard::to_stdvec(&log_id).map_err(io_err)?;
        self.write(move |tx| {
            tx.open_table(super::META)?.insert((group, KEY_PURGED), purged.as_slice())?;
            let mut log = tx.open_table(LOG)?;
            log.retain_in((group, 0)..=(group, log_id.index), |_, _| false)?;
            Ok(())
        })
        .await
    }
}
