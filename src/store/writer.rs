//! The group-commit writer: one thread, one transaction per batch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::{MessageId, MessageReader, Store, StoreOp};
use crate::message::Message;
use crate::amqp::delivery::ChannelShared;

/// Most ops applied in one transaction; bounds commit latency under a flood.
const MAX_BATCH: usize = 65_536;

enum Command {
    Op(StoreOp),
    /// Confirm publish `seq` on `channel` once everything sent before it is durable.
    Confirm(Arc<ChannelShared>, u64),
    /// Wake the sender once everything sent before is durable (tests, shutdown).
    Sync(async_channel::Sender<()>),
    /// Run once everything sent before is durable (e.g. send tx.commit-ok).
    Then(Box<dyn FnOnce() + Send>),
}

/// Counters for reporting how well group commit batches.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    pub commits: u64,
    pub ops: u64,
    pub messages: u64,
    pub commit_micros: u64,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    ops: AtomicU64,
    messages: AtomicU64,
    commit_micros: AtomicU64,
}

struct Inner {
    tx: async_channel::Sender<Command>,
    reader: Arc<dyn MessageReader>,
    next_message: AtomicU64,
    next_queue: AtomicU64,
    counters: Counters,
    thread: Mutex<Option<JoinHandle<()>>>,
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
        let (tx, rx) = async_channel::unbounded();
        let inner = Arc::new(Inner {
            tx,
            reader: store.reader(),
            next_message: AtomicU64::new(next_message),
            next_queue: AtomicU64::new(next_queue),
            counters: Counters::default(),
            thread: Mutex::new(None),
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

    /// Reads committed message records back (for paged queue entries).
    pub fn read_messages(&self, ids: &[MessageId]) -> Vec<Option<Message>> {
        self.inner.reader.read_messages(ids)
    }

    /// Queues an op; it is applied in order with every other op.
    pub fn send(&self, op: StoreOp) {
        if self.inner.tx.try_send(Command::Op(op)).is_err() {
            log::error!("store writer is gone; a durable change was dropped");
        }
    }

    /// Asks for a publisher confirm once everything sent so far is committed.
    pub fn confirm_after_commit(&self, channel: Arc<ChannelShared>, seq: u64) {
        if let Err(e) = self.inner.tx.try_send(Command::Confirm(channel, seq)) {
            if let Command::Confirm(channel, seq) = e.into_inner() {
                channel.confirm_failed(seq);
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
    pub async fn sync(&self) {
        let (tx, rx) = async_channel::bounded(1);
        if self.inner.tx.try_send(Command::Sync(tx)).is_ok() {
            let _ = rx.recv().await;
        }
    }

    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.counters;
        StoreStats {
            commits: c.commits.load(Ordering::Relaxed),
            ops: c.ops.load(Ordering::Relaxed),
            messages: c.messages.load(Ordering::Relaxed),
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
                "store: {} commits, {} ops, {} messages, {:.1} messages/commit, {:.0} µs/commit",
                s.commits,
                s.ops,
                s.messages,
                s.messages as f64 / s.commits as f64,
                s.commit_micros as f64 / s.commits as f64
            );
        }
    }
}

fn run(mut store: Box<dyn Store>, rx: async_channel::Receiver<Command>, inner: &Inner) {
    let mut ops: Vec<StoreOp> = Vec::new();
    let mut confirms: HashMap<*const ChannelShared, (Arc<ChannelShared>, u64)> = HashMap::new();
    let mut syncs = Vec::new();
    let mut thens: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
    // recv_blocking returns Err once the channel is closed *and* drained, so shutdown
    // commits everything that was queued.
    while let Ok(first) = rx.recv_blocking() {
        let mut next = Some(first);
        let mut n = 0;
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Op(op) => ops.push(op),
                Command::Confirm(ch, seq) => {
                    let e = confirms.entry(Arc::as_ptr(&ch)).or_insert((ch, seq));
                    e.1 = e.1.max(seq);
                }
                Command::Sync(tx) => syncs.push(tx),
                Command::Then(f) => thens.push(f),
            }
            n += 1;
            if n < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        let started = Instant::now();
        let result = if ops.is_empty() { Ok(()) } else { store.commit(&ops) };
        if !ops.is_empty() {
            let c = &inner.counters;
            c.commits.fetch_add(1, Ordering::Relaxed);
            c.ops.fetch_add(ops.len() as u64, Ordering::Relaxed);
            let msgs = ops.iter().filter(|o| matches!(o, StoreOp::PutMessage(..))).count();
            c.messages.fetch_add(msgs as u64, Ordering::Relaxed);
            c.commit_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        match result {
            Ok(()) => {
                for op in &ops {
                    if let StoreOp::PutMessage(_, m) = op {
                        m.store.committed.store(true, Ordering::Release);
                    }
                }
                for (_, (ch, seq)) in confirms.drain() {
                    ch.confirm_stored(seq);
                }
            }
            Err(e) => {
                log::error!("store commit of {} ops failed: {e}", ops.len());
                for (_, (ch, seq)) in confirms.drain() {
                    ch.confirm_failed(seq);
                }
            }
        }
        ops.clear();
        for s in syncs.drain(..) {
            let _ = s.try_send(());
        }
        for f in thens.drain(..) {
            f();
        }
    }
}
