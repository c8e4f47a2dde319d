//! The writer under store faults: a [`Store`] whose commits fail a given number of
//! times, then succeed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::super::{
    EntryRecord, MessageId, MessageReader, MessageRecord, QueueId, Snapshot, Store, StoreError, StoreOp,
};
use super::{coalesce, Coalesce, ConfirmSink, StoreHandle};

/// What the fault-injecting store has committed, and how to fail.
#[derive(Default)]
struct Disk {
    /// Commits to fail before the next one succeeds.
    failures: usize,
    /// Queue entries committed, as (queue, seq).
    rows: BTreeSet<(QueueId, u64)>,
    recovers: usize,
    closes: usize,
}

struct FlakyStore(Arc<Mutex<Disk>>);

struct NoReader;

impl MessageReader for NoReader {
    fn read_messages(&self, ids: &[MessageId]) -> Result<Vec<Option<MessageRecord>>, StoreError> {
        Ok(ids.iter().map(|_| None).collect())
    }
    fn read_entries(&self, _: QueueId, _: u64, _: u64, _: usize) -> Result<Vec<EntryRecord>, StoreError> {
        Ok(Vec::new())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store for FlakyStore {
    fn reader(&self) -> Arc<dyn MessageReader> {
        Arc::new(NoReader)
    }
    fn load(&mut self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }
    fn commit(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        let mut disk = lock(&self.0);
        if disk.failures > 0 {
            disk.failures -= 1;
            return Err(StoreError::Io("injected failure".into()));
        }
        for op in ops {
            match op {
                StoreOp::Enqueue { queue, seq, .. } => {
                    disk.rows.insert((*queue, *seq));
                }
                StoreOp::Remove { queue, seq } => {
                    disk.rows.remove(&(*queue, *seq));
                }
                _ => {}
            }
        }
        Ok(())
    }
    fn recover(&mut self) -> Result<(), StoreError> {
        lock(&self.0).recovers += 1;
        Ok(())
    }
    fn close(&mut self) -> Result<(), StoreError> {
        lock(&self.0).closes += 1;
        Ok(())
    }
}

fn flaky(failures: usize) -> (StoreHandle, Arc<Mutex<Disk>>) {
    let disk = Arc::new(Mutex::new(Disk { failures, ..Disk::default() }));
    let handle = StoreHandle::start(Box::new(FlakyStore(disk.clone())), 1, 1).expect("writer starts");
    (handle, disk)
}

/// A publishing channel: checks each ack against what the store holds.
struct Sink {
    disk: Arc<Mutex<Disk>>,
    /// Per confirm number, the rows sent before it.
    before: Mutex<HashMap<u64, Vec<(QueueId, u64)>>>,
    /// (seq, acked) as the writer reported them.
    answers: Mutex<Vec<(u64, bool)>>,
    /// Acks whose rows were not all committed.
    premature: Mutex<Vec<u64>>,
}

impl ConfirmSink for Sink {
    fn stored(&self, seq: u64) {
        let disk = lock(&self.disk);
        let before = lock(&self.before);
        if before.iter().any(|(s, rows)| *s <= seq && rows.iter().any(|r| !disk.rows.contains(r))) {
            lock(&self.premature).push(seq);
        }
        lock(&self.answers).push((seq, true));
    }
    fn failed(&self, seq: u64) {
        lock(&self.answers).push((seq, false));
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The bug: a confirm whose ops were in a failed commit was acked by a later
/// batch (an empty one, or one holding only newer ops). Now no ack goes out before
/// every op sent ahead of it is committed, the failed ops are retried until they are,
/// and confirms are acked again once the store has recovered.
#[test]
fn a_confirm_is_never_acked_before_every_op_ahead_of_it_is_committed() {
    let (handle, disk) = flaky(2);
    let sink = Arc::new(Sink {
        disk: disk.clone(),
        before: Mutex::default(),
        answers: Mutex::default(),
        premature: Mutex::default(),
    });
    let mut sent = Vec::new();
    for seq in 0..20u64 {
        handle.send(StoreOp::Enqueue { queue: 1, seq, message: seq + 1 });
        sent.push((1, seq));
        lock(&sink.before).insert(seq + 1, sent.clone());
        handle.confirm_after_commit(sink.clone(), seq + 1);
        if seq % 2 == 1 {
            // A batch boundary, so confirms also travel alone in later batches.
            smol::future::block_on(handle.sync());
        }
    }
    smol::future::block_on(handle.sync());
    assert_eq!(*lock(&sink.premature), Vec::<u64>::new(), "acked before their ops were committed");
    wait_for("the failed ops are committed", || lock(&disk).rows.len() == 20);
    // The store has recovered: a new publish is acked.
    handle.send(StoreOp::Enqueue { queue: 1, seq: 20, message: 21 });
    sent.push((1, 20));
    lock(&sink.before).insert(21, sent.clone());
    handle.confirm_after_commit(sink.clone(), 21);
    wait_for("the last confirm", || lock(&sink.answers).last().is_some_and(|a| a.0 == 21));
    assert_eq!(*lock(&sink.premature), Vec::<u64>::new(), "acked before their ops were committed");
    let answers = lock(&sink.answers).clone();
    assert!(answers.iter().any(|a| !a.1), "the failed commits' confirms are nacked: {answers:?}");
    assert_eq!(answers.last(), Some(&(21, true)));
    assert!(answers.windows(2).all(|w| w[0].0 < w[1].0), "answers in order, each once: {answers:?}");
    assert_eq!(lock(&disk).rows, (0..=20).map(|s| (1, s)).collect(), "every op committed once retried");
    handle.shutdown();
}

/// A failed commit reports `false` to `after_commit` (tx.commit fails), marks the
/// store failed (the disk alarm) until a retry, after reopening the store, succeeds;
/// then `after_commit` reports `true` again.
#[test]
fn a_failed_commit_marks_the_store_failed_until_a_retry_succeeds() {
    let (handle, disk) = flaky(3);
    let (tx, rx) = std::sync::mpsc::channel();
    handle.send(StoreOp::Enqueue { queue: 1, seq: 0, message: 1 });
    let t = tx.clone();
    handle.after_commit(Box::new(move |durable| {
        let _ = t.send(durable);
    }));
    assert_eq!(rx.recv_timeout(Duration::from_secs(20)), Ok(false), "commit-ok is not sent for a failed commit");
    assert!(handle.is_failed());
    wait_for("a retry succeeds", || !handle.is_failed());
    assert!(lock(&disk).recovers >= 3, "the store was reopened before each retry");
    assert!(lock(&disk).rows.contains(&(1, 0)));
    handle.after_commit(Box::new(move |durable| {
        let _ = tx.send(durable);
    }));
    assert_eq!(rx.recv_timeout(Duration::from_secs(20)), Ok(true));
    handle.shutdown();
    assert_eq!(lock(&disk).closes, 1, "closed cleanly");
}

/// Shutdown while failed: one last retry (here it succeeds), then a clean close.
#[test]
fn shutdown_retries_a_failed_commit_once_more_and_closes_the_store() {
    let (handle, disk) = flaky(1);
    handle.send(StoreOp::Enqueue { queue: 1, seq: 0, message: 1 });
    smol::future::block_on(handle.sync());
    assert!(handle.is_failed() || lock(&disk).rows.contains(&(1, 0)));
    handle.shutdown();
    let disk = lock(&disk);
    assert!(disk.rows.contains(&(1, 0)), "the kept op was written at shutdown");
    assert_eq!(disk.closes, 1);
}

/// Ops being retried may have reached the disk in the failed attempt, so they are
/// never cancelled against newer ones: an enqueue retried and removed since keeps
/// both ops (the removal deletes the row if the failed attempt did write it).
#[test]
fn ops_being_retried_are_never_coalesced_away() {
    let mut ops = vec![StoreOp::Enqueue { queue: 7, seq: 0, message: 1 }, StoreOp::Remove { queue: 7, seq: 0 }];
    coalesce(&mut ops, &mut Coalesce::default(), 1);
    assert_eq!(ops.len(), 2);
    coalesce(&mut ops, &mut Coalesce::default(), 0);
    assert!(ops.is_empty(), "fresh ones still cancel out");
}
