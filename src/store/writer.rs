//! The group-commit writer: one thread, one transaction per batch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

use super::{EntryRecord, MessageId, MessageReader, MessageRecord, QueueId, Store, StoreError, StoreOp};

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

enum Command {
    Op(StoreOp),
    /// Confirm publish `seq` on `channel` once everything sent before it is durable.
    Confirm(Arc<dyn ConfirmSink>, u64),
    /// Run once everything sent before is durable (e.g. send tx.commit-ok).
    Then(Box<dyn FnOnce() + Send>),
}

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
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    ops: AtomicU64,
    messages: AtomicU64,
    never_written: AtomicU64,
    commit_micros: AtomicU64,
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
fn coalesce(ops: &mut Vec<StoreOp>, c: &mut Coalesce) {
    c.enqueued.clear();
    c.marked.clear();
    c.put.clear();
    c.dead.clear();
    c.dead.resize(ops.len(), false);
    let mut any = false;
    for (i, op) in ops.iter().enumerate() {
        match op {
            StoreOp::Enqueue { queue, seq, .. } => {
                c.enqueued.insert((*queue, *seq), i);
            }
            StoreOp::MarkDelivered { queue, seq, .. } if c.enqueued.contains_key(&(*queue, *seq)) => {
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
            StoreOp::PutMessage(id, _) => {
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
}

/// A cheap, cloneable handle to the store writer.
#[derive(Clone)]
pub struct StoreHandle {
    inner: Arc<Inner>,
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
        });
        let for_thread = inner.clone();
        let t = std::thread::Builder::new()
            .name("haremq-store".into())
            .spawn(move || run(store, rx, &for_thread))?;
        *inner.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        Ok(Self { inner })
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
            let woke = smol::future::or(async { listener.await; true }, async {
                smol::Timer::at(deadline).await;
                false
            })
            .await;
            if !woke {
                break;
            }
        }
    }

    /// Queues an op; it is applied in order with every other op.
    pub fn send(&self, op: StoreOp) {
        if self.inner.tx.try_send(Command::Op(op)).is_err() {
            log::error!("store writer is gone; a durable change was dropped");
        }
    }

    /// Asks for a publisher confirm once everything sent so far is committed.
    pub fn confirm_after_commit(&self, channel: Arc<dyn ConfirmSink>, seq: u64) {
        if let Err(e) = self.inner.tx.try_send(Command::Confirm(channel, seq)) {
            if let Command::Confirm(channel, seq) = e.into_inner() {
                channel.failed(seq);
            }
        }
    }

    /// Runs `f` on the writer thread once everything sent so far is committed (or the
    /// commit failed: the caller's reply must not hang either way).
    pub fn after_commit(&self, f: Box<dyn FnOnce() + Send>) {
        if let Err(e) = self.inner.tx.try_send(Command::Then(f)) {
            if let Command::Then(f) = e.into_inner() {
                f();
            }
        }
    }

    /// Waits until everything sent so far is committed.
    #[cfg(test)]
    pub async fn sync(&self) {
        let (tx, rx) = smol::channel::bounded(1);
        self.after_commit(Box::new(move || {
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
        }
    }

    /// Commits what is queued and stops the writer thread.
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

fn run(mut store: Box<dyn Store>, rx: smol::channel::Receiver<Command>, inner: &Inner) {
    let mut ops: Vec<StoreOp> = Vec::new();
    let mut confirms: HashMap<*const (), (Arc<dyn ConfirmSink>, u64)> = HashMap::new();
    let mut scratch = Coalesce::default();
    let mut thens: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
    let mut enqueued: HashMap<QueueId, u64> = HashMap::new();
    // recv_blocking returns Err once the channel is closed *and* drained, so shutdown
    // commits everything that was queued.
    while let Ok(first) = rx.recv_blocking() {
        let mut next = Some(first);
        let mut n = 0;
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Op(op) => ops.push(op),
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
        let started = Instant::now();
        let msgs = ops.iter().filter(|o| matches!(o, StoreOp::PutMessage(..))).count();
        let before = ops.len();
        coalesce(&mut ops, &mut scratch);
        let skipped = msgs - ops.iter().filter(|o| matches!(o, StoreOp::PutMessage(..))).count();
        let result = if ops.is_empty() { Ok(()) } else { store.commit(&ops) };
        if before > 0 {
            let c = &inner.counters;
            c.commits.fetch_add(1, Ordering::Relaxed);
            c.ops.fetch_add(before as u64, Ordering::Relaxed);
            c.messages.fetch_add(msgs as u64, Ordering::Relaxed);
            c.never_written.fetch_add(skipped as u64, Ordering::Relaxed);
            c.commit_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        match result {
            Ok(()) => {
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
                for (_, (ch, seq)) in confirms.drain() {
                    ch.stored(seq);
                }
            }
            Err(e) => {
                log::error!("store commit of {} ops failed: {e}", ops.len());
                for (_, (ch, seq)) in confirms.drain() {
                    ch.failed(seq);
                }
            }
        }
        ops.clear();
        for f in thens.drain(..) {
            f();
        }
    }
}

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
        coalesce(&mut ops, &mut Coalesce::default());
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
        coalesce(&mut ops, &mut Coalesce::default());
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
