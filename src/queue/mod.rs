//! A classic queue: FIFO of messages, its consumers and round-robin dispatch.
//!
//! Each queue owns its state behind one short lock. Whoever changes something that can
//! make a delivery possible (a publish, a new consumer, an ack that frees credit, a
//! requeue, a drained socket) calls [`Queue::dispatch`], which hands messages to
//! consumers with credit until one side runs out. There is no queue task and no
//! hand-off between threads on the hot path: the publisher's task writes the deliver
//! frames straight into the consumer connection's outbox.

mod ready;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

pub use ready::Entry;
use ready::ReadyList;

use amq_protocol::types::FieldTable;

use std::sync::atomic::Ordering;

use crate::amqp::delivery::{ChannelShared, Offer};
use crate::error::{AmqpError, AmqpResult};
use crate::message::{Message, QueuedMessage};
use crate::store::{QueueId, StoreHandle, StoreOp};

/// Identifies a connection (for exclusive queues).
pub type ConnectionId = u64;

/// How a queue was declared; fixed for its lifetime.
#[derive(Clone, Debug)]
pub struct QueueSettings {
    pub durable: bool,
    pub exclusive_owner: Option<ConnectionId>,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

pub struct Queue {
    pub name: Arc<str>,
    pub vhost: Arc<str>,
    pub settings: QueueSettings,
    /// Set for durable queues: where their persistent messages are recorded.
    store: Option<(StoreHandle, QueueId)>,
    state: Mutex<QueueState>,
}

/// What [`Queue::publish`] did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// The queue was deleted concurrently; the message is not in it.
    No,
    InMemory,
    /// Enqueued and its entry sent to the store.
    Stored,
}

/// A consumer as the queue sees it.
struct ConsumerSlot {
    tag: Arc<str>,
    channel: Arc<ChannelShared>,
}

struct QueueState {
    ready: ReadyList,
    next_seq: u64,
    consumers: Vec<ConsumerSlot>,
    /// Where the next round-robin search starts.
    next_consumer: usize,
    exclusive_consumer: bool,
    deleted: bool,
}

/// A consumer that was attached when the queue was deleted; its channel must be told.
pub struct OrphanedConsumer {
    pub tag: Arc<str>,
    pub channel: Arc<ChannelShared>,
}

impl Queue {
    pub fn new(
        name: Arc<str>,
        vhost: Arc<str>,
        settings: QueueSettings,
        store: Option<(StoreHandle, QueueId)>,
    ) -> Arc<Self> {
        Self::restore(name, vhost, settings, store, VecDeque::new())
    }

    /// A queue holding recovered entries (in `seq` order); entries beyond the head may
    /// be paged.

    pub fn restore(
        name: Arc<str>,
        vhost: Arc<str>,
        settings: QueueSettings,
        store: Option<(StoreHandle, QueueId)>,
        entries: VecDeque<Entry>,
    ) -> Arc<Self> {
        let next_seq = entries.back().map_or(0, |e| e.seq() + 1);
        let ready = ReadyList::new(store.as_ref().map(|(s, _)| s.clone()), entries);
        Arc::new(Self {
            name,
            vhost,
            settings,
            store,
            state: Mutex::new(QueueState {
                ready,
                next_seq,
                consumers: Vec::new(),
                next_consumer: 0,
                exclusive_consumer: false,
                deleted: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True for a durable queue on a broker with a store.
    pub fn is_durable(&self) -> bool {
        self.store.is_some()
    }

    pub fn store_id(&self) -> Option<QueueId> {
        self.store.as_ref().map(|(_, id)| *id)
    }

    /// Enqueues a message and delivers what it can.
    pub fn publish(self: &Arc<Self>, message: Arc<Message>) -> Enqueued {
        let mut st = self.lock();
        if st.deleted {
            return Enqueued::No;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let mut outcome = Enqueued::InMemory;
        if let (Some((store, queue)), Some(id)) = (&self.store, message.store.id) {
            // Sent under the queue lock: the store sees this entry before any ack of it.
            // (The publisher set `refs` to the number of durable queues beforehand.)
            store.send(StoreOp::Enqueue { queue: *queue, seq, message: id });
            outcome = Enqueued::Stored;
        }
        st.ready.push_back(QueuedMessage { seq, redelivered: false, message });
        if !st.consumers.is_empty() {
            self.dispatch_locked(&mut st);
        }
        outcome
    }

    /// The message left this queue for good (acked, dropped, delivered no-ack): delete
    /// its store entry, and the message record once no queue references it.
    pub fn forget(&self, m: &QueuedMessage) {
        let (Some((store, queue)), Some(id)) = (&self.store, m.message.store.id) else {
            return;
        };
        store.send(StoreOp::Remove { queue: *queue, seq: m.seq });
        if m.message.store.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            store.send(StoreOp::DeleteMessage(id));
        }
    }

    /// Records a first delivery, so a restart brings the message back as redelivered.
    pub fn mark_delivered(&self, m: &QueuedMessage) {
        if m.redelivered {
            return;
        }
        if let (Some((store, queue)), Some(id)) = (&self.store, m.message.store.id) {
            store.send(StoreOp::MarkDelivered { queue: *queue, seq: m.seq, message: id });
        }
    }

    /// Delivers ready messages to consumers with credit, round-robin.
    pub fn dispatch(self: &Arc<Self>) {
        let mut st = self.lock();
        self.dispatch_locked(&mut st);
    }

    fn dispatch_locked(self: &Arc<Self>, st: &mut QueueState) {
        if st.consumers.is_empty() {
            return;
        }
        'messages: while let Some(head) = st.ready.front() {
            let n = st.consumers.len();
            if n == 0 {
                return;
            }
            let mut i = 0;
            while i < n.min(st.consumers.len()) {
                let idx = (st.next_consumer + i) % st.consumers.len();
                let slot = &st.consumers[idx];
                match slot.channel.offer(self, &slot.tag, head) {
                    Offer::Delivered { no_ack } => {
                        st.next_consumer = (idx + 1) % st.consumers.len();
                        if let Some(m) = st.ready.pop_front() {
                            if no_ack {
                                self.forget(&m);
                            } else {
                                self.mark_delivered(&m);
                            }
                        }
                        continue 'messages;
                    }
                    Offer::Busy => i += 1,
                    Offer::Gone => {
                        // The channel closed under us; it removes its consumers itself,
                        // but skip it now so dispatch does not spin on it.
                        st.consumers.remove(idx);
                        if st.consumers.is_empty() {
                            st.exclusive_consumer = false;
                            return;
                        }
                        if st.next_consumer > idx {
                            st.next_consumer -= 1;
                        }
                    }
                }
            }
            return;
        }
    }

    /// Attaches a consumer (the channel has already recorded it) and starts delivering.
    pub fn add_consumer(
        self: &Arc<Self>,
        tag: Arc<str>,
        channel: Arc<ChannelShared>,
        exclusive: bool,
    ) -> AmqpResult<()> {
        let mut st = self.lock();
        if st.deleted {
            return Err(AmqpError::NotFound(self.no_queue_text()));
        }
        if st.exclusive_consumer || (exclusive && !st.consumers.is_empty()) {
            return Err(AmqpError::AccessRefused(format!(
                "queue '{}' in vhost '{}' in exclusive use",
                self.name, self.vhost
            )));
        }
        st.exclusive_consumer = exclusive;
        st.consumers.push(ConsumerSlot { tag, channel });
        self.dispatch_locked(&mut st);
        Ok(())
    }

    /// Detaches a consumer. Returns true if the queue is auto-delete and this was its
    /// last consumer, so the caller must delete it.
    pub fn remove_consumer(&self, tag: &str, channel: &Arc<ChannelShared>) -> bool {
        let mut st = self.lock();
        let before = st.consumers.len();
        st.consumers
            .retain(|c| !(Arc::ptr_eq(&c.channel, channel) && &*c.tag == tag));
        let removed = st.consumers.len() != before;
        if st.consumers.is_empty() {
            st.exclusive_consumer = false;
            st.next_consumer = 0;
        } else if st.next_consumer >= st.consumers.len() {
            st.next_consumer = 0;
        }
        removed && st.consumers.is_empty() && self.settings.auto_delete && !st.deleted
    }

    /// Takes the head message for basic.get; `f` gets it and the count left.
    pub fn get(self: &Arc<Self>, f: impl FnOnce(QueuedMessage, u32)) -> bool {
        let mut st = self.lock();
        match st.ready.pop_front() {
            Some(m) => {
                let left = st.ready.len() as u32;
                f(m, left);
                true
            }
            None => false,
        }
    }

    /// Puts messages back at their original positions, marked redelivered, and
    /// dispatches them again.
    pub fn requeue(self: &Arc<Self>, messages: impl IntoIterator<Item = QueuedMessage>) {
        let mut st = self.lock();
        if st.deleted {
            // Its store entries went with the queue; release the message records.
            if let Some((store, _)) = &self.store {
                for m in messages {
                    if let Some(id) = m.message.store.id {
                        if m.message.store.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
                            store.send(StoreOp::DeleteMessage(id));
                        }
                    }
                }
            }
            return;
        }
        for mut m in messages {
            m.redelivered = true;
            // Most requeues go to the front (the oldest unacked are older than
            // anything ready), so search from there.
            st.ready.insert_by_seq(m);
        }
        self.dispatch_locked(&mut st);
    }

    /// Drops every ready message (unacked ones are unaffected); returns how many.
    pub fn purge(&self) -> u32 {
        let mut st = self.lock();
        let n = st.ready.len() as u32;
        let entries: Vec<Entry> = st.ready.drain().collect();
        drop(st);
        for e in entries {
            self.forget_entry(e);
        }
        n
    }

    fn forget_entry(&self, e: Entry) {
        match e {
            Entry::Loaded(m) => self.forget(&m),
            Entry::Paged { seq, id, .. } => {
                if let Some((store, queue)) = &self.store {
                    store.send(StoreOp::Remove { queue: *queue, seq });
                    store.send(StoreOp::DeleteMessage(id));
                }
            }
        }
    }

    pub fn message_count(&self) -> u32 {
        self.lock().ready.len() as u32
    }

    pub fn consumer_count(&self) -> u32 {
        self.lock().consumers.len() as u32
    }

    pub fn is_deleted(&self) -> bool {
        self.lock().deleted
    }

    /// Marks the queue deleted and empties it. Returns the number of ready messages it
    /// held and the consumers whose channels must be sent basic.cancel.
    pub fn mark_deleted(&self) -> (u32, Vec<OrphanedConsumer>) {
        let mut st = self.lock();
        if st.deleted {
            return (0, Vec::new());
        }
        st.deleted = true;
        let n = st.ready.len() as u32;
        if let Some((store, id)) = &self.store {
            store.send(StoreOp::DeleteQueue { id: *id, vhost: self.vhost.to_string(), name: self.name.to_string() });
            // The entries go with the queue; release the message records they held.
            // (Unacked ones are released when their channel settles them.)
            for e in st.ready.drain() {
                match e {
                    Entry::Loaded(m) => {
                        if let Some(mid) = m.message.store.id {
                            if m.message.store.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
                                store.send(StoreOp::DeleteMessage(mid));
                            }
                        }
                    }
                    Entry::Paged { id, .. } => store.send(StoreOp::DeleteMessage(id)),
                }
            }
        }
        st.ready.drain().for_each(drop);
        let orphans = st
            .consumers
            .drain(..)
            .map(|c| OrphanedConsumer { tag: c.tag, channel: c.channel })
            .collect();
        (n, orphans)
    }

    /// RabbitMQ's text for a missing queue.
    pub fn no_queue_text(&self) -> String {
        format!("no queue '{}' in vhost '{}'", self.name, self.vhost)
    }
}
