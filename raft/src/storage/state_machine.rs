//! The state machine wrapper: the application's in-memory state plus its last snapshot in redb.

use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{BasicNode, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StoredMembership};
use redb::ReadableDatabase;

use super::{io_err, RaftDb, KEY_SNAPSHOT_META, META, SNAPSHOT_DATA};
use crate::types::{Entry, Response, TypeConfig};

/// The application's replicated state. Implementations must be deterministic: every member
/// applies the same commands in the same order and must reach the same state.
pub trait StateMachine: Send + 'static {
    /// Applies one committed command; deterministic. Returns the response bytes.
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8>;
    /// The whole state, for a snapshot.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the whole state with a snapshot's.
    fn restore(&mut self, snapshot: &[u8]);
}

struct Applied {
    sm: Box<dyn StateMachine>,
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
}

/// openraft's view of a group's state machine. The applied state is in memory only; what
/// survives a restart is the last snapshot (meta + bytes in redb) plus the log after it,
/// which openraft re-applies up to the persisted commit point.
#[derive(Clone)]
pub struct StateMachineStore {
    db: RaftDb,
    group: u64,
    inner: Arc<Mutex<Applied>>,
}

type SnapMeta = SnapshotMeta<u64, BasicNode>;

impl StateMachineStore {
    /// Wraps the application's state machine, restoring the group's last snapshot if any.
    pub fn open(db: RaftDb, group: u64, mut sm: Box<dyn StateMachine>) -> Result<StateMachineStore, StorageError<u64>> {
        let store = StateMachineStore { db, group, inner: Arc::new(Mutex::new(applied_default())) };
        let mut applied = applied_default();
        if let Some((meta, data)) = store.read_snapshot()? {
            sm.restore(&data);
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership;
        }
        applied.sm = sm;
        *store.lock() = applied;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Applied> {
        // A panic in the application's apply poisons the lock; the state is still the best we have.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read_snapshot(&self) -> Result<Option<(SnapMeta, Vec<u8>)>, StorageError<u64>> {
        let Some(meta) = self.db.read_meta::<SnapMeta>(self.group, KEY_SNAPSHOT_META)? else {
            return Ok(None);
        };
        let tx = self.db.db.begin_read().map_err(io_err)?;
        let table = tx.open_table(SNAPSHOT_DATA).map_err(io_err)?;
        let data = table.get(self.group).map_err(io_err)?.map(|v| v.value().to_vec()).unwrap_or_default();
        Ok(Some((meta, data)))
    }

    /// Stores a snapshot's meta and bytes in one fsynced transaction.
    async fn write_snapshot(&self, meta: &SnapMeta, data: Vec<u8>) -> Result<(), StorageError<u64>> {
        let meta_bytes = postcard::to_stdvec(meta).map_err(io_err)?;
        let db = self.db.db.clone();
        let group = self.group;
        smol::unblock(move || -> Result<(), redb::Error> {
            let mut tx = db.begin_write()?;
            tx.set_durability(redb::Durability::Immediate)?;
            tx.open_table(META)?.insert((group, KEY_SNAPSHOT_META), meta_bytes.as_slice())?;
            tx.open_table(SNAPSHOT_DATA)?.insert(group, data.as_slice())?;
            tx.commit()?;
            Ok(())
        })
        .await
        .map_err(io_err)
    }
}

fn applied_default() -> Applied {
    Applied { sm: Box::new(Empty), last_applied: None, membership: StoredMembership::default() }
}

/// A placeholder while the real state machine is being restored.
struct Empty;

impl StateMachine for Empty {
    fn apply(&mut self, _: u64, _: &[u8]) -> Vec<u8> {
        Vec::new()
    }
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(&mut self, _: &[u8]) {}
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let (data, last_applied, membership) = {
            let applied = self.lock();
            (applied.sm.snapshot(), applied.last_applied, applied.membership.clone())
        };
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, rand::random::<u32>()),
            None => format!("0-0-{}", rand::random::<u32>()),
        };
        let meta = SnapshotMeta { last_log_id: last_applied, last_membership: membership, snapshot_id };
        self.write_snapshot(&meta, data.clone()).await?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let applied = self.lock();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut applied = self.lock();
        let mut responses = Vec::new();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => responses.push(Response::default()),
                EntryPayload::Normal(req) => {
                    let resp = applied.sm.apply(entry.log_id.index, &req.0);
                    responses.push(Response(resp));
                }
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    responses.push(Response::default());
                }
            }
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        self.write_snapshot(meta, data.clone()).await?;
        let mut applied = self.lock();
        applied.sm.restore(&data);
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        Ok(self.read_snapshot()?.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}
