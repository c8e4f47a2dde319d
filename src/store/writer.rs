//! The group-commit writer: one thread, one transaction per batch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{EntryRecord, MessageId, MessageReader, MessageRecord, QueueId, Store, StoreError, StoreOp};

mod streams;
use streams::StreamWrites;

/// Who is told when the publishes it numbered are durable, or will never be: the
/// publishing channel, which turns this into basic.ack / basic.nack.
pub trait ConfirmSink: Send + Sync {
    /// Every publish numbered up to `seq` whose confirm was asked for is committed.
    fn stored(&self, seq: u64);
    /// The commit that was to hold publishes up to `seq` failed.
    fn failed(&self, seq: u64);
}

/// Most ops applied in one transaction; bounds commit latency under a flood.
const MAX_BATCH: usize = 65_536;
/// Queued commands above which connections stop reading until the writer catches up
/// (see [`StoreHandle::wait_for_room`]); two commits' worth keeps the writer's batches
/// full while bounding what waits in memory (tens of MiB, not gigabytes, when a fast
/// consumer acks a deep queue faster than the disk takes the removals).
const HIGH_WATER: usize = 2 * MAX_BATCH;
/// Reading resumes once the queue is down to this.
const LOW_WATER: usize = MAX_BATCH / 2;
/// After a failed commit the writer retries (reopening the store first) after this
/// long, doubling the wait after each further failure up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

enum Command {
    Op(StoreOp),
    /// Confirm publish `seq` on `channel` once everything sent before it is durable.
    Confirm(Arc<dyn ConfirmSink>, u64),
    /// Run with `true` once everything sent before is durable (e.g. send
    /// tx.commit-ok), with `false` if the commit that was to make it durable failed.
    Then(Box<dyn FnOnce(bool) + Send>),
}

/// Upper bounds (seconds) of the commit-latency histogram's buckets; a last bucket
/// takes the rest. A commit's latency is its transaction including the fsync.
pub const COMMIT_BUCKETS: [f64; 12] =
    [0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024];

/// Counters for reporting how well group commit batches.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    pub commits: u64,
    pub ops: u64,
    /// Persistent messages that reached the writer.
    pub messages: u64,
    /// Of those, consumed before their commit, so never written.
    pub never_written: u64,
    pub commit_micros: u64,
    /// Commits per latency bucket ([`COMMIT_BUCKETS`], then the overflow), not cumulative.
    pub commit_latency: [u64; COMMIT_BUCKETS.len() + 1],
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    ops: AtomicU64,
    messages: AtomicU64,
    never_written: AtomicU64,
    commit_micros: AtomicU64,
    commit_latency: [AtomicU64; COMMIT_BUCKETS.len() + 1],
}

/// Reused maps for [`coalesce`].
#[derive(Default)]
struct Coalesce {
    enqueued: HashMap<(u64, u64), usize>,
    marked: HashMap<(u64, u64), usize>,
    put: HashMap<MessageId, usize>,
    dead: Vec<bool>,
}

/// Drops pairs of ops that cancel out within one batch: an entry enqueued and removed
/// (acked) before the commit, and a message record put and deleted. The committed state
/// is the same, and the disk never sees a message that was consumed while its commit
/// was waiting — under a steady publish/consume load most persistent messages are acked
/// within the batch they arrive in, so this removes most of the disk work.
///
/// `ops[..tried]` were part of a failed commit and are being retried: that commit may
/// have reached the disk after all, so they are never cancelled (an `Enqueue` of
/// theirs dropped with a later `Remove` could leave its row behind).
fn coalesce(ops: &mut Vec<StoreOp>, c: &mut Coalesce, tried: usize) {
    c.enqueued.clear();
    c.marked.clear();
    c.put.clear();
    c.dead.clear();
    c.dead.resize(ops.len(), false);
    let mut any = false;
    for (i, op) in ops.iter().enumerate() {
        let fresh = i >= tried;
        match op {
            StoreOp::Enqueue { queue, seq, .. } if fresh => {
                c.enqueued.insert((*queue, *seq), i);
            }
            StoreOp::MarkDelivered { queue, seq, .. } if fresh && c.enqueued.contains_key(&(*queue, *seq)) => {
                c.marked.insert((*queue, *seq), i);
            }
            StoreOp::Remove { queue, seq } => {
                if let Some(j) = c.enqueued.remove(&(*queue, *seq)) {
                    c.dead[i] = true;
                    c.dead[j] = true;
                    if let Some(k) = c.marked.remove(&(*queue, *seq)) {
                        c.dead[k] = true;
                    }
                    any = true;
                }
            }
            StoreOp::DeleteQueue { id, .. } => {
                // Its entries go with it; later ops on a reused (queue, seq) are new.
                c.enqueued.retain(|(q, _), _| q != id);
                c.marked.retain(|(q, _), _| q != id);
            }
            StoreOp::PutMessage(id, _) if fresh => {
                c.put.insert(*id, i);
            }
            StoreOp::DeleteMessage(id) => {
                if let Some(j) = c.put.remove(id) {
                    c.dead[i] = true;
                    c.dead[j] = true;
                    any = true;
                }
            }
            _ => {}
        }
    }
    if any {
        let mut i = 0;
        let dead = &c.dead;
        ops.retain(|_| {
            let keep = !dead[i];
            i += 1;
            keep
        });
    }
}

struct Inner {
    tx: smol::channel::Sender<Command>,
    reader: Arc<dyn MessageReader>,
    next_message: AtomicU64,
    next_queue: AtomicU64,
    counters: Counters,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Per durable queue: one past the highest `seq` whose `Enqueue` is committed
    /// (see [`StoreHandle::enqueue_watermark`]).
    watermarks: Mutex<HashMap<QueueId, Weak<AtomicU64>>>,
    /// Notified after each batch the writer takes, for connections waiting for room.
    drained: event_listener::Event,
    /// A commit failed and no retry has succeeded yet (see [`StoreHandle::is_failed`]).
    failed: AtomicBool,
    /// Bytes of message records sent to the writer so far (see
    /// [`StoreHandle::bytes_sent`]).
    sent_bytes: AtomicU64,
    /// Of those, the bytes of records committed (or never written: consumed within
    /// their batch).
    done_bytes: AtomicU64,
    /// Where stream queues keep their logs (one directory per queue id).
    streams_dir: std::sync::OnceLock<std::path::PathBuf>,
}

/// The bytes a record adds to the store, roughly: its fields and keys (redb's page
/// overhead comes on top).
fn record_bytes(op: &StoreOp) -> u64 {
    match op {
        StoreOp::PutMessage(_, m) => {
            let f = m.fields();
            (64 + f.body.len() + f.raw_properties.len() + f.exchange.len() + f.routing_key.len()) as u64
        }
        StoreOp::PutDelayed(_, bytes) => bytes.len() as u64,
        StoreOp::StreamAppend { message, .. } => {
            let f = message.fields();
            (32 + f.body.len() + f.raw_properties.len() + f.exchange.len() + f.routing_key.len()) as u64
        }
        _ => 0,
    }
}

/// A cheap, cloneable handle to the store writer.
#[derive(Clone)]
pub struct StoreHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle").field("failed", &self.is_failed()).finish_non_exhaustive()
    }
}

impl StoreHandle {
    /// Starts the writer thread over `store`. `next_message`/`next_queue` continue the
    /// id sequences found at load.
    pub fn start(store: Box<dyn Store>, next_message: MessageId, next_queue: u64) -> std::io::Result<Self> {
        let (tx, rx) = smol::channel::unbounded();
        let inner = Arc::new(Inner {
            tx,
            reader: store.reader(),
            next_message: AtomicU64::new(next_message),
            next_queue: AtomicU64::new(next_queue),
            counters: Counters::default(),
            thread: Mutex::new(None),
            watermarks: Mutex::new(HashMap::new()),
            drained: event_listener::Event::new(),
            failed: AtomicBool::new(false),
            sent_bytes: AtomicU64::new(0),
            done_bytes: AtomicU64::new(0),
            streams_dir: std::sync::OnceLock::new(),
        });
        let for_thread = inner.clone();
        let t = std::thread::Builder::new().name("haremq-store".into()).spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(store, rx, &for_thread)));
            if r.is_err() {
                // Nothing more could be confirmed: end the process rather than leave
                // publishers waiting forever. Whatever was confirmed is on disk, and the
                // next start recovers it.
                log::error!("the store writer panicked: the broker stops (confirmed messages are on disk)");
                std::process::exit(70);
            }
        })?;
        *inner.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        Ok(Self { inner })
    }

    /// Sets the directory stream logs live under (once, at start).
    pub fn set_streams_dir(&self, dir: std::path::PathBuf) {
        let _ = self.inner.streams_dir.set(dir);
    }

    /// The directory of stream queue `queue`'s log (None: this store keeps no streams).
    pub fn stream_dir(&self, queue: QueueId) -> Option<std::path::PathBuf> {
        self.inner.streams_dir.get().map(|d| d.join(queue.to_string()))
    }

    pub fn next_message_id(&self) -> MessageId {
        self.inner.next_message.fetch_add(1, Ordering::Relaxed)
    }

    pub fn next_queue_id(&self) -> u64 {
        self.inner.next_queue.fetch_add(1, Ordering::Relaxed)
    }

    /// Reads committed message records back (for spilled queue entries).
    pub fn read_messages(&self, ids: &[MessageId]) -> Result<Vec<Option<MessageRecord>>, StoreError> {
        self.inner.reader.read_messages(ids)
    }

    /// Reads up to `max` committed entries of `queue` in `from_seq..=to_seq`, in order.
    pub fn read_entries(
        &self,
        queue: QueueId,
        from_seq: u64,
        to_seq: u64,
        max: usize,
    ) -> Result<Vec<EntryRecord>, StoreError> {
        self.inner.reader.read_entries(queue, from_seq, to_seq, max)
    }

    /// The queue's enqueue watermark: one past the highest `seq` whose `Enqueue` op
    /// is committed (0: none yet), raised by the writer after each commit. A queue
    /// sends its enqueues in `seq` order and commits apply in order, so every entry
    /// below the watermark that is still in the queue has its row on disk. `start`:
    /// the value to begin with (a restored queue's rows are all on disk).
    pub fn enqueue_watermark(&self, queue: QueueId, start: u64) -> Arc<AtomicU64> {
        let mut map = self.inner.watermarks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = map.get(&queue).and_then(Weak::upgrade) {
            w.fetch_max(start, Ordering::AcqRel);
            return w;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let w = Arc::new(AtomicU64::new(start));
        map.insert(queue, Arc::downgrade(&w));
        w
    }

    /// True when the writer is so far behind that connections should stop reading.
    pub fn is_behind(&self) -> bool {
        self.inner.tx.len() > HIGH_WATER
    }

    /// Waits until the writer's queue is down to the low-water mark (or `limit`
    /// passed). Connections call this before reading more once [`Self::is_behind`]:
    /// that is the store's flow control, the way RabbitMQ's credit flow holds
    /// publishers back when the disk is slower than they are. Publishes and acks
    /// alike produce store ops, so both are held.
    pub async fn wait_for_room(&self, limit: std::time::Duration) {
        let deadline = Instant::now() + limit;
        while self.inner.tx.len() > LOW_WATER {
            let listener = self.inner.drained.listen();
            if self.inner.tx.len() <= LOW_WATER {
                break;
            }
            let woke = smol::future::or(
                async {
                    listener.await;
                    true
                },
                async {
                    smol::Timer::at(deadline).await;
                    false
                },
            )
            .await;
            if !woke {
                break;
            }
        }
    }

    /// True from a failed commit until a retry succeeds. Meanwhile every confirm is a
    /// nack, every tx.commit fails, and the disk alarm holds publishers back; the ops
    /// are kept and retried, so once it clears the store holds everything sent.
    pub fn is_failed(&self) -> bool {
        self.inner.failed.load(Ordering::Acquire)
    }

    /// Bytes of message records (bodies, properties, keys) sent to the writer so far:
    /// the disk alarm re-reads free space once enough was sent since its last look.
    pub fn bytes_sent(&self) -> u64 {
        self.inner.sent_bytes.load(Ordering::Relaxed)
    }

    /// Bytes of message records sent to the writer and not committed yet: the disk
    /// alarm counts them as used, since the filesystem does not show them yet.
    pub fn bytes_pending(&self) -> u64 {
        let done = self.inner.done_bytes.load(Ordering::Acquire);
        self.inner.sent_bytes.load(Ordering::Acquire).saturating_sub(done)
    }

    /// Queues an op; it is applied in order with every other op.
    pub fn send(&self, op: StoreOp) {
        let bytes = record_bytes(&op);
        if bytes > 0 {
            self.inner.sent_bytes.fetch_add(bytes, Ordering::AcqRel);
        }
        if self.inner.tx.try_send(Command::Op(op)).is_err() {
            log::error!("store writer is gone; a durable change was dropped");
        }
    }

    /// Asks for a publisher confirm once everything sent so far is committed: `stored`
    /// after the commit holding the last of those ops succeeded, `failed` if a commit
    /// that was to hold one of them failed (the ops are retried, but the confirm is a
    /// nack: it is never held back for a retry, nor released by a later commit).
    pub fn confirm_after_commit(&self, channel: Arc<dyn ConfirmSink>, seq: u64) {
        if let Err(e) = self.inner.tx.try_send(Command::Confirm(channel, seq)) {
            if let Command::Confirm(channel, seq) = e.into_inner() {
                channel.failed(seq);
            }
        }
    }

    /// Runs `f(true)` on the writer thread once everything sent so far is committed,
    /// `f(false)` if a commit that was to hold some of it failed (the caller's reply
    /// must not hang either way, and must not claim durability in the second case).
    pub fn after_commit(&self, f: Box<dyn FnOnce(bool) + Send>) {
        if let Err(e) = self.inner.tx.try_send(Command::Then(f)) {
            if let Command::Then(f) = e.into_inner() {
                f(false);
            }
        }
    }

    /// Waits until everything sent so far is committed, or a commit failed.
    #[cfg(test)]
    pub async fn sync(&self) {
        let (tx, rx) = smol::channel::bounded(1);
        self.after_commit(Box::new(move |_| {
            let _ = tx.try_send(());
        }));
        let _ = rx.recv().await;
    }

    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.counters;
        StoreStats {
            commits: c.commits.load(Ordering::Relaxed),
            ops: c.ops.load(Ordering::Relaxed),
            messages: c.messages.load(Ordering::Relaxed),
            never_written: c.never_written.load(Ordering::Relaxed),
            commit_micros: c.commit_micros.load(Ordering::Relaxed),
            commit_latency: std::array::from_fn(|i| c.commit_latency[i].load(Ordering::Relaxed)),
        }
    }

    /// Commits what is queued, closes the store and stops the writer thread.
    pub fn shutdown(&self) {
        self.inner.tx.close();
        let t = self.inner.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = t {
            let _ = t.join();
        }
        let s = self.stats();
        if s.commits > 0 {
            log::info!(
                "store: {} commits, {} ops, {} messages ({} consumed before their commit, never written), {:.1} messages/commit, {:.0} µs/commit",
                s.commits,
                s.ops,
                s.messages,
                s.never_written,
                s.messages as f64 / s.commits as f64,
                s.commit_micros as f64 / s.commits as f64
            );
        }
    }
}

/// What the writer waits for next.
enum Next {
    Cmd(Command),
    /// Time to retry a failed commit.
    Retry,
    /// Every handle is gone and the queue is drained.
    Closed,
}

fn next(rx: &smol::channel::Receiver<Command>, retry_at: Option<Instant>) -> Next {
    let Some(at) = retry_at else {
        // recv_blocking returns Err once the channel is closed *and* drained, so
        // shutdown commits everything that was queued.
        return rx.recv_blocking().map_or(Next::Closed, Next::Cmd);
    };
    smol::block_on(smol::future::or(async { rx.recv().await.map_or(Next::Closed, Next::Cmd) }, async {
        smol::Timer::at(at).await;
        Next::Retry
    }))
}

/// The writer thread. Its rule (ARCHITECTURE.md, "Store faults"): while no commit has
/// failed, every op received is committed, so a batch's success covers every confirm
/// received so far. A failed commit keeps its ops; they are committed again, ahead of
/// anything newer, until a commit succeeds, the store being reopened before each retry.
/// Until then every confirm is a nack, every `Then` gets `false`, and
/// [`StoreHandle::is_failed`] raises the disk alarm so publishers stop.
fn run(mut store: Box<dyn Store>, rx: smol::channel::Receiver<Command>, inner: &Inner) {
    let mut ops: Vec<StoreOp> = Vec::new();
    // ops[..tried] were in a failed commit and wait for a retry.
    let mut tried = 0;
    let mut confirms: HashMap<*const (), (Arc<dyn ConfirmSink>, u64)> = HashMap::new();
    let mut scratch = Coalesce::default();
    let mut streams = StreamWrites::default();
    let mut thens: Vec<Box<dyn FnOnce(bool) + Send>> = Vec::new();
    let mut enqueued: HashMap<QueueId, u64> = HashMap::new();
    // While failed: when to retry next, and the wait after that.
    let mut retry: Option<(Instant, Duration)> = None;
    // Record bytes in `ops`, counted as done once they are committed.
    let mut ops_bytes = 0;
    loop {
        let mut next = match next(&rx, retry.map(|(at, _)| at)) {
            Next::Closed => break,
            Next::Retry => None,
            Next::Cmd(cmd) => Some(cmd),
        };
        let mut n = 0;
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Op(op) => {
                    ops_bytes += record_bytes(&op);
                    ops.push(op);
                }
                Command::Confirm(ch, seq) => {
                    let e = confirms.entry(Arc::as_ptr(&ch).cast::<()>()).or_insert((ch, seq));
                    e.1 = e.1.max(seq);
                }
                Command::Then(f) => thens.push(f),
            }
            n += 1;
            if n < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        inner.drained.notify(usize::MAX);
        // While failed, commit only when the retry is due; what comes in before is
        // refused at once (its ops join the retry).
        let due = retry.is_none_or(|(at, _)| Instant::now() >= at);
        let result = if due {
            attempt(store.as_mut(), &mut ops, tried, retry.is_some(), &mut scratch, &mut streams, inner)
        } else {
            Err(None)
        };
        match result {
            Ok(()) => {
                if retry.take().is_some() {
                    inner.failed.store(false, Ordering::Release);
                    log::warn!(
                        "store recovered: {} ops kept since the failure are committed; publishers may go on",
                        ops.len()
                    );
                }
                for op in &ops {
                    match op {
                        StoreOp::PutMessage(_, m) => m.set_committed(),
                        StoreOp::Enqueue { queue, seq, .. } => {
                            let e = enqueued.entry(*queue).or_insert(0);
                            *e = (*e).max(seq + 1);
                        }
                        _ => {}
                    }
                }
                if !enqueued.is_empty() {
                    let map = inner.watermarks.lock().unwrap_or_else(|e| e.into_inner());
                    for (queue, mark) in enqueued.drain() {
                        if let Some(w) = map.get(&queue).and_then(Weak::upgrade) {
                            w.fetch_max(mark, Ordering::AcqRel);
                        }
                    }
                }
                streams.committed();
                for (_, (ch, seq)) in confirms.drain() {
                    ch.stored(seq);
                }
                for f in thens.drain(..) {
                    f(true);
                }
                ops.clear();
                tried = 0;
                inner.done_bytes.fetch_add(std::mem::take(&mut ops_bytes), Ordering::AcqRel);
            }
            Err(e) => {
                if let Some(e) = e {
                    match retry {
                        None => log::error!(
                            "store commit of {} ops failed: {e}. Publishers are blocked (disk alarm) and confirms are nacked until a retry succeeds; the ops are kept and retried",
                            ops.len()
                        ),
                        Some(_) => log::warn!("store retry of {} ops failed: {e}", ops.len()),
                    }
                    let wait = retry.map_or(RETRY_FIRST, |(_, wait)| (wait * 2).min(RETRY_MAX));
                    retry = Some((Instant::now() + wait, wait));
                    inner.failed.store(true, Ordering::Release);
                }
                tried = ops.len();
                for (_, (ch, seq)) in confirms.drain() {
                    ch.failed(seq);
                }
                for f in thens.drain(..) {
                    f(false);
                }
            }
        }
    }
    if retry.is_some() {
        // One last try, so a fault that has cleared loses nothing at shutdown.
        if let Err(e) = attempt(store.as_mut(), &mut ops, tried, true, &mut scratch, &mut streams, inner) {
            let e = e.map_or_else(String::new, |e| e.to_string());
            log::error!(
                "store: {} ops could not be written before shutdown ({e}); the store keeps its last good commit",
                ops.len()
            );
            // Back to that commit, so it can still be closed cleanly.
            if let Err(e) = store.recover() {
                log::error!("store: reopening failed ({e}); the next start repairs it");
                return;
            }
        }
    }
    if let Err(e) = store.close() {
        log::error!("store: closing failed ({e}); the next start repairs it");
    }
}

/// Commits `ops` (reopening the store first after a failure); counts the fresh ones.
/// Stream appends are written and their logs synced first, then the rest is committed
/// to the store (not at all when a batch holds only stream ops).
/// `Err(None)` is never returned here; it stands for "not attempted" in [`run`].
#[allow(clippy::too_many_arguments)]
fn attempt(
    store: &mut dyn Store,
    ops: &mut Vec<StoreOp>,
    tried: usize,
    failed: bool,
    scratch: &mut Coalesce,
    streams: &mut StreamWrites,
    inner: &Inner,
) -> Result<(), Option<StoreError>> {
    let started = Instant::now();
    let fresh = ops.len() - tried;
    let puts = |ops: &[StoreOp]| ops.iter().filter(|o| matches!(o, StoreOp::PutMessage(..))).count();
    let msgs = puts(&ops[tried..]);
    coalesce(ops, scratch, tried);
    let skipped = msgs - puts(&ops[tried..]);
    let result = if failed { store.recover() } else { Ok(()) };
    let result = result.and_then(|()| streams.apply(ops));
    let result = result.and_then(|()| if ops.iter().all(StoreOp::is_stream_op) { Ok(()) } else { store.commit(ops) });
    if result.is_err() {
        streams.failed();
    }
    if fresh > 0 {
        let c = &inner.counters;
        c.commits.fetch_add(1, Ordering::Relaxed);
        c.ops.fetch_add(fresh as u64, Ordering::Relaxed);
        c.messages.fetch_add(msgs as u64, Ordering::Relaxed);
        c.never_written.fetch_add(skipped as u64, Ordering::Relaxed);
        let took = started.elapsed();
        c.commit_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        let bucket = COMMIT_BUCKETS.iter().position(|b| took.as_secs_f64() <= *b).unwrap_or(COMMIT_BUCKETS.len());
        c.commit_latency[bucket].fetch_add(1, Ordering::Relaxed);
    }
    result.map_err(Some)
}

#[cfg(test)]
mod fault_tests;

#[cfg(test)]
mod tests {
    use super::*;

    impl super::super::StoredMessage for MessageRecord {
        fn fields(&self) -> super::super::MessageFields<'_> {
            MessageRecord::fields(self)
        }
        fn set_committed(&self) {}
    }

    fn message() -> Arc<MessageRecord> {
        Arc::new(MessageRecord {
            exchange: "".into(),
            routing_key: "q".into(),
            raw_properties: Box::default(),
            body: Box::default(),
            persistent: true,
            published_ms: 0,
            ttl: None,
        })
    }

    fn kinds(ops: &[StoreOp]) -> Vec<&'static str> {
        ops.iter()
            .map(|o| match o {
                StoreOp::PutMessage(..) => "put",
                StoreOp::DeleteMessage(_) => "delete",
                StoreOp::Enqueue { .. } => "enqueue",
                StoreOp::MarkDelivered { .. } => "mark",
                StoreOp::Remove { .. } => "remove",
                _ => "other",
            })
            .collect()
    }

    #[test]
    fn a_message_consumed_within_its_batch_is_never_written() {
        let mut ops = vec![
            StoreOp::PutMessage(1, message()),
            StoreOp::Enqueue { queue: 7, seq: 0, message: 1 },
            StoreOp::PutMessage(2, message()),
            StoreOp::Enqueue { queue: 7, seq: 1, message: 2 },
            StoreOp::MarkDelivered { queue: 7, seq: 0, message: 1 },
            StoreOp::Remove { queue: 7, seq: 0 },
            StoreOp::DeleteMessage(1),
            // An ack of an entry committed in an earlier batch stays.
            StoreOp::Remove { queue: 7, seq: 99 },
        ];
        coalesce(&mut ops, &mut Coalesce::default(), 0);
        assert_eq!(kinds(&ops), ["put", "enqueue", "remove"]);
        assert!(matches!(ops[0], StoreOp::PutMessage(2, _)));
    }

    #[test]
    fn a_message_in_two_queues_stays_while_one_still_holds_it() {
        let mut ops = vec![
            StoreOp::PutMessage(1, message()),
            StoreOp::Enqueue { queue: 1, seq: 0, message: 1 },
            StoreOp::Enqueue { queue: 2, seq: 0, message: 1 },
            StoreOp::Remove { queue: 1, seq: 0 },
        ];
        coalesce(&mut ops, &mut Coalesce::default(), 0);
        assert_eq!(kinds(&ops), ["put", "enqueue"]);
    }

    /// A store whose commits wait for the test to open a gate, to hold the writer back.
    struct GatedStore {
        gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
        /// Told when a commit starts.
        entered: std::sync::mpsc::Sender<()>,
    }

    struct NoReader;

    impl MessageReader for NoReader {
        fn read_messages(&self, ids: &[MessageId]) -> Result<Vec<Option<MessageRecord>>, StoreError> {
            Ok(ids.iter().map(|_| None).collect())
        }
        fn read_entries(&self, _: QueueId, _: u64, _: u64, _: usize) -> Result<Vec<EntryRecord>, StoreError> {
            Ok(Vec::new())
        }
    }

    impl Store for GatedStore {
        fn reader(&self) -> Arc<dyn MessageReader> {
            Arc::new(NoReader)
        }
        fn load(&mut self) -> Result<super::super::Snapshot, StoreError> {
            Ok(Default::default())
        }
        fn commit(&mut self, _: &[StoreOp]) -> Result<(), StoreError> {
            let _ = self.entered.send(());
            let (open, cv) = &*self.gate;
            let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
            while !*open {
                open = cv.wait(open).unwrap_or_else(|e| e.into_inner());
            }
            Ok(())
        }
    }

    /// Flow control: with the writer stuck in a commit, a queue beyond the high-water
    /// mark makes the handle report it is behind and `wait_for_room` wait (here until
    /// its limit); once commits go through, the queue drains and waiting ends.
    #[test]
    fn connections_wait_while_the_writer_is_behind() {
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let (entered, commit_started) = std::sync::mpsc::channel();
        let store = GatedStore { gate: gate.clone(), entered };
        let handle = StoreHandle::start(Box::new(store), 1, 1).expect("writer starts");
        // The first op is taken into a commit that blocks; the rest queue up.
        handle.send(StoreOp::Remove { queue: 1, seq: 0 });
        commit_started.recv_timeout(std::time::Duration::from_secs(10)).expect("the writer commits");
        for seq in 1..=(HIGH_WATER as u64 + 10) {
            handle.send(StoreOp::Remove { queue: 1, seq });
        }
        assert!(handle.is_behind());
        let started = Instant::now();
        smol::block_on(handle.wait_for_room(std::time::Duration::from_millis(200)));
        assert!(started.elapsed() >= std::time::Duration::from_millis(200), "returned before its limit");
        assert!(handle.is_behind());
        {
            let (open, cv) = &*gate;
            *open.lock().unwrap_or_else(|e| e.into_inner()) = true;
            cv.notify_all();
        }
        smol::block_on(handle.wait_for_room(std::time::Duration::from_secs(30)));
        assert!(!handle.is_behind());
        handle.shutdown();
    }
}
