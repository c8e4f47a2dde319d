//! One group's Raft log in the node's redb database.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogId, LogState, RaftLogReader, StorageError, Vote};
use redb::ReadableDatabase;

use super::writer::{Bytes, Op};
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
        // A group reopened after a failed write starts from what is on disk.
        db.writer.reset(group);
        LogStore { db, group }
    }

    /// The group's entries in `range` (start inclusive, end as given): the committed ones
    /// from the database, overlaid by those queued and not yet committed, which are newer.
    fn read_range(&self, start: u64, end: Bound<u64>) -> Result<Vec<Entry>, StorageError<u64>> {
        let group = self.group;
        let (tx, queued) = self.db.writer.with_pending(group, |pending| {
            let queued: Vec<(u64, Bytes)> = match pending {
                Some(map) => map.range((Bound::Included(start), end)).map(|(i, b)| (*i, b.clone())).collect(),
                None => Vec::new(),
            };
            // Opened under the pending lock: an entry the writer removes from `pending`
            // after this is in this transaction's view.
            (self.db.db.begin_read(), queued)
        });
        let tx = tx.map_err(io_err)?;
        let log = tx.open_table(LOG).map_err(io_err)?;
        let db_end = match end {
            Bound::Included(i) => Bound::Included((group, i)),
            Bound::Excluded(i) => Bound::Excluded((group, i)),
            Bound::Unbounded => Bound::Included((group, u64::MAX)),
        };
        let mut out = Vec::new();
        let mut queued = queued.into_iter().peekable();
        for item in log.range::<(u64, u64)>((Bound::Included((group, start)), db_end)).map_err(io_err)? {
            let (k, v) = item.map_err(io_err)?;
            let index = k.value().1;
            while let Some((_, b)) = queued.next_if(|(i, _)| *i < index) {
                out.push(decode(&b)?);
            }
            // A queued entry replaces a committed one at the same index (a truncation
            // and a new append, both not yet committed).
            match queued.next_if(|(i, _)| *i == index) {
                Some((_, b)) => out.push(decode(&b)?),
                None => out.push(decode(v.value())?),
            }
        }
        for (_, b) in queued {
            out.push(decode(&b)?);
        }
        Ok(out)
    }

    /// The last entry, queued or committed.
    fn last_entry(&self) -> Result<Option<Entry>, StorageError<u64>> {
        let group = self.group;
        let (tx, queued) = self.db.writer.with_pending(group, |pending| {
            (self.db.db.begin_read(), pending.and_then(|m| m.last_key_value()).map(|(_, b)| b.clone()))
        });
        if let Some(b) = queued {
            // Queued entries are always the log's tail (an append continues the log, a
            // truncation drops the queued entries it covers).
            return Ok(Some(decode(&b)?));
        }
        let tx = tx.map_err(io_err)?;
        let log = tx.open_table(LOG).map_err(io_err)?;
        let last = log.range((group, 0)..=(group, u64::MAX)).map_err(io_err)?.next_back();
        match last {
            Some(item) => {
                let (_, v) = item.map_err(io_err)?;
                Ok(Some(decode(v.value())?))
            }
            None => Ok(None),
        }
    }
}

fn decode(bytes: &[u8]) -> Result<Entry, StorageError<u64>> {
    postcard::from_bytes(bytes).map_err(io_err)
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
        self.read_range(start, range.end_bound().cloned())
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
        self.db.write_meta(self.group, KEY_VOTE, vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.db.read_meta(self.group, KEY_VOTE)
    }

    /// Persisted so that a restarted node re-applies the committed log after its snapshot
    /// (the applied state itself lives only in memory). Queued without waiting and without
    /// an fsync of its own: it is on the path of every commit, and a value lost in a crash
    /// only means the node re-applies less at start and learns the rest from the leader (a
    /// committed index may lag, never lead: it is queued after the entries it covers).
    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError<u64>> {
        self.db.write_meta_lazily(self.group, KEY_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self.db.read_meta::<Option<LogId<u64>>>(self.group, KEY_COMMITTED)?.flatten())
    }

    /// Queues the entries for the node's writer and returns: the writer commits them,
    /// together with whatever else every group queued meanwhile, in one fsynced
    /// transaction, and only then calls `callback` (openraft counts this node towards a
    /// commit's majority from that call on). Until then the entries are read from the
    /// writer's pending map.
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        for e in entries {
            match postcard::to_stdvec(&e) {
                Ok(bytes) => encoded.push((e.log_id.index, Bytes::from(bytes))),
                Err(err) => {
                    callback.log_io_completed(Err(std::io::Error::other(err.to_string())));
                    return Err(io_err(err));
                }
            }
        }
        self.db.writer.append(self.group, encoded, callback);
        Ok(())
    }

    /// Removes the entries from `log_id` on (a new leader overwrote an uncommitted tail);
    /// queued after the group's pending appends, returns once committed.
    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.db.writer.submit(self.group, Op::Truncate { from: log_id.index }).await.map_err(io_err)
    }

    /// Removes the entries up to `log_id` (covered by a snapshot), recording it as purged.
    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let purged = postcard::to_stdvec(&log_id).map_err(io_err)?;
        self.db.writer.submit(self.group, Op::Purge { upto: log_id.index, purged }).await.map_err(io_err)
    }
}
