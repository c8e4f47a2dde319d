//! The node's log writer: one thread that group-commits the writes of every group.
//!
//! Why: each redb write transaction with immediate durability costs an fsync, and before
//! this every append, vote, truncation and purge of every group was its own transaction.
//! Here a group's `append` queues its entries and returns; the writer takes *everything*
//! queued (appends of many groups, votes, truncations...), applies it in queue order in ONE
//! transaction, commits it with one fsync, and only then reports each append's IO complete
//! (openraft's `LogFlushed` callback) and wakes each waiting vote or truncation, in order.
//!
//! Invariants:
//! - Nothing is reported stored before the commit that contains it returned: openraft
//!   counts this node towards a majority (so a publisher may be confirmed) only from the
//!   callback on.
//! - One queue, in the order the operations were submitted: a truncation or purge queued
//!   after an append is applied after it, inside the same transaction or a later one.
//! - Entries queued but not yet committed are readable ([`Pending`]): openraft reads an
//!   entry back (to replicate or apply it) as soon as its append returned.
//! - A failed commit reports failure to everything in it, and the groups concerned refuse
//!   later writes (their log could otherwise get a hole): openraft stops such a group.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::LogFlushed;
use redb::{Database, Durability};

use super::{KEY_COMMITTED, KEY_PURGED, KEY_SNAPSHOT_META, KEY_VOTE, LOG, META, SNAPSHOT_DATA};
use crate::types::TypeConfig;

/// An encoded log entry, shared by the writer's queue and the pending map (no copy).
pub(crate) type Bytes = Arc<[u8]>;

/// One queued write.
pub(crate) enum Op {
    /// Insert these (index, encoded entry) pairs, then call `callback`.
    Append { entries: Vec<(u64, Bytes)>, callback: LogFlushed<TypeConfig> },
    /// Remove the entries from this index on.
    Truncate { from: u64 },
    /// Remove the entries up to this index and record the purged log id (encoded).
    Purge { upto: u64, purged: Vec<u8> },
    /// Set one metadata value (encoded). `durable: false` (the commit point) does not by
    /// itself make the transaction fsync; it becomes durable with the next one that does.
    Meta { key: &'static str, value: Vec<u8>, durable: bool },
    /// Erase everything stored for the group.
    DeleteGroup,
}

/// An operation, its group and who waits for it (appends report through their callback).
struct Job {
    group: u64,
    op: Op,
    done: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
}

/// Appended but not yet committed entries, per group, by index.
type PendingMap = HashMap<u64, BTreeMap<u64, Bytes>>;

/// State shared by the submitting side (a group's `LogStore`) and the writer thread.
pub(crate) struct Shared {
    /// Lock order: `pending` is taken before anything is sent to the writer and while a
    /// reader opens its read transaction, so a reader sees every entry either here or in
    /// that transaction (the writer removes entries only after their commit).
    pending: Mutex<PendingMap>,
    /// Groups whose write failed: their later writes fail too, until the group is
    /// reopened or deleted.
    failed: Mutex<HashSet<u64>>,
    /// Write transactions committed (tests check that concurrent appends share them).
    pub(crate) commits: AtomicU64,
    /// Operations committed.
    pub(crate) ops: AtomicU64,
}

/// The submitting side of the writer. Dropping the last handle stops the thread once it
/// has written what is queued.
pub(crate) struct Writer {
    tx: mpsc::Sender<Job>,
    pub(crate) shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Writer {
    /// Starts the node's writer thread over `db`.
    pub(crate) fn start(db: Arc<Database>) -> std::io::Result<Writer> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashSet::new()),
            commits: AtomicU64::new(0),
            ops: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let thread_shared = shared.clone();
        std::thread::Builder::new().name("raft-log-writer".into()).spawn(move || run(&db, &rx, &thread_shared))?;
        Ok(Writer { tx, shared })
    }

    /// Queues an append; its entries are readable (through [`Writer::pending`]) from now on.
    /// On a stopped writer the callback is failed here.
    pub(crate) fn append(&self, group: u64, entries: Vec<(u64, Bytes)>, callback: LogFlushed<TypeConfig>) {
        let mut pending = lock(&self.shared.pending);
        let map = pending.entry(group).or_default();
        for (index, bytes) in &entries {
            map.insert(*index, bytes.clone());
        }
        if let Err(mpsc::SendError(job)) = self.tx.send(Job { group, op: Op::Append { entries, callback }, done: None })
        {
            forget_pending(&mut pending, group, &job.op);
            drop(pending);
            fail(job, "the raft log writer has stopped");
        }
    }

    /// Queues any other operation and waits until it is committed (or failed).
    pub(crate) async fn submit(&self, group: u64, op: Op) -> Result<(), String> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.enqueue(group, op, Some(done));
        rx.await.map_err(|_| "the raft log writer has stopped".to_string())?
    }

    /// Queues an operation nobody waits for (the commit point: see `Op::Meta`).
    pub(crate) fn submit_detached(&self, group: u64, op: Op) {
        self.enqueue(group, op, None);
    }

    /// Waits for an operation from a thread outside the executor (`delete_group`).
    pub(crate) fn submit_blocking(&self, group: u64, op: Op) -> Result<(), String> {
        let (done, rx) = tokio::sync::oneshot::channel();
        self.enqueue(group, op, Some(done));
        rx.blocking_recv().map_err(|_| "the raft log writer has stopped".to_string())?
    }

    fn enqueue(&self, group: u64, op: Op, done: Option<tokio::sync::oneshot::Sender<Result<(), String>>>) {
        let mut pending = lock(&self.shared.pending);
        // What a truncation or deletion removes is no longer readable from now on (openraft
        // reads the log only after the truncation returned, so the committed entries it
        // still finds in the database until then are not read either).
        match &op {
            Op::Truncate { from } => {
                if let Some(map) = pending.get_mut(&group) {
                    map.split_off(from);
                }
            }
            Op::DeleteGroup => {
                pending.remove(&group);
            }
            _ => {}
        }
        if let Err(mpsc::SendError(job)) = self.tx.send(Job { group, op, done }) {
            drop(pending);
            fail(job, "the raft log writer has stopped");
        }
    }

    /// Runs `f` with the group's pending entries while the pending map is locked: open
    /// the read transaction inside `f` so nothing committed in between is missed.
    pub(crate) fn with_pending<R>(&self, group: u64, f: impl FnOnce(Option<&BTreeMap<u64, Bytes>>) -> R) -> R {
        let pending = lock(&self.shared.pending);
        f(pending.get(&group))
    }

    /// Clears a group's failed mark (it is being reopened: openraft rereads its log state).
    pub(crate) fn reset(&self, group: u64) {
        lock(&self.shared.failed).remove(&group);
    }
}

/// Removes an append's entries from the pending map if they are still the ones it queued
/// (a truncation and a newer append may have replaced them).
fn forget_pending(pending: &mut PendingMap, group: u64, op: &Op) {
    if let Op::Append { entries, .. } = op {
        if let Some(map) = pending.get_mut(&group) {
            for (index, bytes) in entries {
                if map.get(index).is_some_and(|b| Arc::ptr_eq(b, bytes)) {
                    map.remove(index);
                }
            }
            if map.is_empty() {
                pending.remove(&group);
            }
        }
    }
}

fn fail(job: Job, why: &str) {
    match job.op {
        Op::Append { callback, .. } => callback.log_io_completed(Err(std::io::Error::other(why.to_string()))),
        _ => {
            if let Some(done) = job.done {
                let _ = done.send(Err(why.to_string()));
            }
        }
    }
}

fn run(db: &Database, rx: &mpsc::Receiver<Job>, shared: &Shared) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        // A group whose earlier write failed writes nothing more: a later append would
        // leave a hole where the failed one was.
        let (batch, refused): (Vec<Job>, Vec<Job>) = {
            let failed = lock(&shared.failed);
            batch.into_iter().partition(|j| !failed.contains(&j.group) || matches!(j.op, Op::DeleteGroup))
        };
        if !refused.is_empty() {
            let mut pending = lock(&shared.pending);
            for job in &refused {
                forget_pending(&mut pending, job.group, &job.op);
            }
        }
        for job in refused {
            fail(job, "an earlier raft log write of this group failed");
        }
        if batch.is_empty() {
            continue;
        }
        let durable = batch.iter().any(|j| !matches!(j.op, Op::Meta { durable: false, .. }));
        let result = commit(db, &batch, durable);
        {
            let mut pending = lock(&shared.pending);
            for job in &batch {
                forget_pending(&mut pending, job.group, &job.op);
            }
        }
        match result {
            Ok(()) => {
                shared.commits.fetch_add(1, Ordering::Relaxed);
                shared.ops.fetch_add(batch.len() as u64, Ordering::Relaxed);
                let deleted: Vec<u64> =
                    batch.iter().filter(|j| matches!(j.op, Op::DeleteGroup)).map(|j| j.group).collect();
                if !deleted.is_empty() {
                    let mut failed = lock(&shared.failed);
                    for group in deleted {
                        failed.remove(&group);
                    }
                }
                for job in batch {
                    match job.op {
                        Op::Append { callback, .. } => callback.log_io_completed(Ok(())),
                        _ => {
                            if let Some(done) = job.done {
                                let _ = done.send(Ok(()));
                            }
                        }
                    }
                }
            }
            Err(e) => {
                let why = format!("raft log write failed: {e}");
                let groups: Vec<u64> = batch.iter().map(|j| j.group).collect();
                log::error!("raft: {why} (groups {groups:?}); their writes are refused from now on");
                lock(&shared.failed).extend(groups);
                for job in batch {
                    fail(job, &why);
                }
            }
        }
    }
}

/// Applies the batch in queue order in one write transaction and commits it.
fn commit(db: &Database, batch: &[Job], durable: bool) -> Result<(), redb::Error> {
    let mut tx = db.begin_write()?;
    tx.set_durability(if durable { Durability::Immediate } else { Durability::None })?;
    {
        let mut log = tx.open_table(LOG)?;
        let mut meta = tx.open_table(META)?;
        for job in batch {
            let group = job.group;
            match &job.op {
                Op::Append { entries, .. } => {
                    for (index, bytes) in entries {
                        log.insert((group, *index), &**bytes)?;
                    }
                }
                Op::Truncate { from } => {
                    log.retain_in((group, *from)..=(group, u64::MAX), |_, _| false)?;
                }
                Op::Purge { upto, purged } => {
                    meta.insert((group, KEY_PURGED), purged.as_slice())?;
                    log.retain_in((group, 0)..=(group, *upto), |_, _| false)?;
                }
                Op::Meta { key, value, .. } => {
                    meta.insert((group, *key), value.as_slice())?;
                }
                Op::DeleteGroup => {
                    log.retain_in((group, 0)..=(group, u64::MAX), |_, _| false)?;
                    for key in [KEY_VOTE, KEY_COMMITTED, KEY_PURGED, KEY_SNAPSHOT_META] {
                        meta.remove((group, key))?;
                    }
                    tx.open_table(SNAPSHOT_DATA)?.remove(group)?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(())
}
