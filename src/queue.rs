//! A classic queue: FIFO of messages, its consumers and round-robin dispatch.
//!
//! Each queue owns its state behind one short lock. Whoever changes something that can
//! make a delivery possible (a publish, a new consumer, an ack that frees credit, a
//! requeue, a drained socket) calls [`Queue::dispatch`], which hands messages to
//! consumers with credit until one side runs out. There is no queue task and no
//! hand-off between threads on the hot path: the publisher's task writes the deliver
//! frames straight into the consumer connection's outbox.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use amq_protocol::types::FieldTable;

use crate::amqp::delivery::{ChannelShared, Offer};
use crate::error::{AmqpError, AmqpResult};
use crate::message::{Message, QueuedMessage};

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
    state: Mutex<QueueState>,
}

/// A consumer as the queue sees it.
struct ConsumerSlot {
    tag: Arc<str>,
    channel: Arc<ChannelShared>,
}

struct QueueState {
    ready: VecDeque<QueuedMessage>,
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
    pub fn new(name: Arc<str>, vhost: Arc<str>, settings: QueueSettings) -> Arc<Self> {
        Arc::new(Self {
            name,
            vhost,
            settings,
            state: Mutex::new(QueueState {
                ready: VecDeque::new(),
                next_seq: 0,
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

    /// Enqueues a message and delivers what it can. False if the queue was deleted
    /// concurrently (the message is then not enqueued).
    pub fn publish(self: &Arc<Self>, message: Arc<Message>) -> bool {
        let mut st = self.lock();
        if st.deleted {
            return false;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.ready.push_back(QueuedMessage { seq, redelivered: false, message });
        if !st.consumers.is_empty() {
            self.dispatch_locked(&mut st);
        }
        true
    }

    /// Delivers ready messages to consumers with credit, round-robin.
    pub fn dispatch(self: &Arc<Self>) {
        let mut st = self.lock();
        self.dispatch_locked(&mut st);
    }

    fn dispatch_locked(self: &Arc<Self>, st: &mut QueueState) {
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
                    Offer::Delivered => {
                        st.next_consumer = (idx + 1) % st.consumers.len();
                        st.ready.pop_front();
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
            return;
        }
        for mut m in messages {
            m.redelivered = true;
            // Most requeues go to the front (the oldest unacked are older than
            // anything ready), so search from there.
            let pos = st.ready.partition_point(|r| r.seq < m.seq);
            st.ready.insert(pos, m);
        }
        self.dispatch_locked(&mut st);
    }

    /// Drops every ready message (unacked ones are unaffected); returns how many.
    pub fn purge(&self) -> u32 {
        let mut st = self.lock();
        let n = st.ready.len() as u32;
        st.ready.clear();
        n
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
        st.deleted = true;
        let n = st.ready.len() as u32;
        st.ready.clear();
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
