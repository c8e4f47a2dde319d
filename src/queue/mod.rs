//! A classic queue: FIFO of messages, its consumers and round-robin dispatch.
//!
//! Each queue owns its state behind one short lock. Whoever changes something that can
//! make a delivery possible (a publish, a new consumer, an ack that frees credit, a
//! requeue, a drained socket) calls [`Queue::dispatch`], which hands messages to
//! consumers with credit until one side runs out. There is no queue task and no
//! hand-off between threads on the hot path: the publisher's task writes the deliver
//! frames straight into the consumer connection's outbox.

pub mod args;
mod deadletter;
mod ready;
mod timer;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

pub use args::{Overflow, QueueArgs};
pub use deadletter::Reason;
use deadletter::Dead;
pub use ready::Entry;
use ready::ReadyList;

use amq_protocol::types::FieldTable;

use std::sync::atomic::Ordering;

use crate::amqp::delivery::{ChannelShared, Offer};
use crate::error::{AmqpError, AmqpResult};
use crate::message::{now_ms, Message, QueuedMessage};
use crate::store::{QueueId, StoreHandle, StoreOp};
use crate::vhost::VHost;

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
    /// The x-arguments it acts on (TTL, limits, dead-lettering, x-expires).
    pub args: QueueArgs,
    /// Its vhost, for dead-lettering and x-expires.
    owner: Weak<VHost>,
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
    /// Refused by x-overflow reject-publish(-dlx): a confirming publisher gets a nack.
    Rejected,
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
    /// Messages that died under the lock, dead-lettered once it is released.
    dead: Vec<Dead>,
    /// The earliest wake-up this queue has in the timer (None: none pending).
    timer_at: Option<Instant>,
    /// Last use for x-expires (declare, basic.get, consumer activity).
    last_used: Instant,
}

/// A consumer that was attached when the queue was deleted; its channel must be told.
pub struct OrphanedConsumer {
    pub tag: Arc<str>,
    pub channel: Arc<ChannelShared>,
}

impl Queue {
    pub fn new(
        name: Arc<str>,
        owner: &Arc<VHost>,
        settings: QueueSettings,
        store: Option<(StoreHandle, QueueId)>,
    ) -> Arc<Self> {
        Self::restore(name, owner, settings, store, VecDeque::new())
    }

    /// A queue holding recovered entries (in `seq` order); entries beyond the head may
    /// be paged.

    pub fn restore(
        name: Arc<str>,
        owner: &Arc<VHost>,
        settings: QueueSettings,
        store: Option<(StoreHandle, QueueId)>,
        entries: VecDeque<Entry>,
    ) -> Arc<Self> {
        let next_seq = entries.back().map_or(0, |e| e.seq() + 1);
        let ready = ReadyList::new(store.as_ref().map(|(s, _)| s.clone()), entries);
        let q = Arc::new(Self {
            name,
            vhost: owner.name.clone(),
            args: QueueArgs::parse(&settings.arguments),
            settings,
            owner: Arc::downgrade(owner),
            store,
            state: Mutex::new(QueueState {
                ready,
                next_seq,
                consumers: Vec::new(),
                next_consumer: 0,
                exclusive_consumer: false,
                deleted: false,
                dead: Vec::new(),
                timer_at: None,
                last_used: Instant::now(),
            }),
        });
        // Arms the timer for recovered messages' TTLs and for x-expires.
        q.with_state(|_| ());
        q
    }

    /// Runs `f` under the lock; then (re)arms the timer for the next deadline and,
    /// with the lock released, dead-letters whatever died meanwhile.
    fn with_state<R>(self: &Arc<Self>, f: impl FnOnce(&mut QueueState) -> R) -> R {
        let mut st = self.lock();
        let r = f(&mut st);
        self.arm_timer(&mut st);
        let dead = std::mem::take(&mut st.dead);
        drop(st);
        if !dead.is_empty() {
            self.dead_letter_all(dead);
        }
        r
    }

    /// The wall-clock deadline of the head message, if it has a TTL.
    fn head_expiry(&self, st: &mut QueueState) -> Option<u64> {
        st.ready.front()?.message.expires_at(self.args.message_ttl)
    }

    /// Drops expired messages from the head (RabbitMQ expires lazily from the head:
    /// a message behind a longer-lived one waits for it). `strict`: only messages whose
    /// deadline has passed (dispatch may still deliver one due this very millisecond —
    /// how a TTL of 0 reaches a waiting consumer).
    fn expire_head(&self, st: &mut QueueState, strict: bool) {
        let mut now = None;
        while let Some(t) = self.head_expiry(st) {
            let now = *now.get_or_insert_with(now_ms);
            if t > now || (strict && t == now) {
                break;
            }
            if let Some(m) = st.ready.pop_front() {
                st.dead.push(Dead::Entry(m, Reason::Expired));
            }
        }
    }

    /// Schedules a timer wake-up for the next deadline if it is earlier than the one
    /// already pending.
    fn arm_timer(self: &Arc<Self>, st: &mut QueueState) {
        if st.deleted {
            return;
        }
        let mut next: Option<Instant> = None;
        if let Some(t) = self.head_expiry(st) {
            let wait = t.saturating_sub(now_ms());
            next = Some(Instant::now() + Duration::from_millis(wait));
        }
        if let (Some(ms), true) = (self.args.expires, st.consumers.is_empty()) {
            let at = st.last_used + Duration::from_millis(u64::from(ms));
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        if let Some(at) = next {
            if st.timer_at.map_or(true, |t| at < t) {
                st.timer_at = Some(at);
                timer::schedule(at, Arc::downgrade(self));
            }
        }
    }

    /// The timer fired (for a deadline scheduled at `at`): expire the head, delete the
    /// queue if x-expires says it has been unused long enough.
    fn on_timer(self: &Arc<Self>, at: Instant) {
        let expired = self.with_state(|st| {
            if st.timer_at.is_some_and(|t| t <= at) {
                st.timer_at = None;
            }
            if st.deleted {
                return false;
            }
            self.expire_head(st, false);
            match self.args.expires {
                Some(ms) if st.consumers.is_empty() => {
                    st.last_used + Duration::from_millis(u64::from(ms)) <= Instant::now()
                }
                _ => false,
            }
        });
        if expired {
            if let Some(vh) = self.owner.upgrade() {
                log::debug!("queue '{}' unused for its x-expires period; deleting it", self.name);
                vh.delete_queue(self);
            }
        }
    }

    /// The queue was used (declared, basic.get): restarts its x-expires period.
    pub fn touch(self: &Arc<Self>) {
        if self.args.expires.is_some() {
            self.with_state(|st| st.last_used = Instant::now());
        }
    }

    /// True when one more message of `body_len` bytes would exceed a length limit.
    fn full_for(&self, st: &QueueState, body_len: u64) -> bool {
        self.args.max_length.is_some_and(|max| st.ready.len() as u64 >= max)
            || self.args.max_length_bytes.is_some_and(|max| st.ready.bytes() + body_len > max)
    }

    /// x-overflow drop-head: drops (dead-letters, reason maxlen) from the head until
    /// the queue is within its limits.
    fn drop_over_limit(&self, st: &mut QueueState) {
        let over = |st: &QueueState| {
            self.args.max_length.is_some_and(|max| st.ready.len() as u64 > max)
                || self.args.max_length_bytes.is_some_and(|max| st.ready.bytes() > max)
        };
        while over(st) {
            match st.ready.pop_front() {
                Some(m) => st.dead.push(Dead::Entry(m, Reason::Maxlen)),
                None => break,
            }
        }
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
        self.with_state(|st| self.publish_locked(st, message))
    }

    fn publish_locked(self: &Arc<Self>, st: &mut QueueState, message: Arc<Message>) -> Enqueued {
        if st.deleted {
            return Enqueued::No;
        }
        let limited = self.args.max_length.is_some() || self.args.max_length_bytes.is_some();
        if limited && self.args.overflow != Overflow::DropHead {
            self.expire_head(st, false);
            if self.full_for(st, message.body.len() as u64) {
                if self.args.overflow == Overflow::RejectPublishDlx {
                    st.dead.push(Dead::Refused(message));
                }
                return Enqueued::Rejected;
            }
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
        let has_ttl = message.ttl.is_some() || self.args.message_ttl.is_some();
        st.ready.push_back(QueuedMessage::new(seq, false, message));
        if !st.consumers.is_empty() {
            self.dispatch_locked(st);
        }
        if limited {
            self.drop_over_limit(st);
        }
        if has_ttl {
            // A TTL of 0 that found no consumer expires now.
            self.expire_head(st, false);
        }
        outcome
    }

    /// A delivery was rejected or nacked without requeue: dead-letter it (reason
    /// `rejected`) if the queue has a dead-letter exchange, and forget it.
    pub fn reject(self: &Arc<Self>, m: QueuedMessage) {
        let reason = Reason::Rejected;
        if self.is_deleted() {
            self.forget(&m);
        } else {
            self.dead_letter_all(vec![Dead::Entry(m, reason)]);
        }
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
        self.with_state(|st| self.dispatch_locked(st));
    }

    fn dispatch_locked(self: &Arc<Self>, st: &mut QueueState) {
        if st.consumers.is_empty() {
            return;
        }
        'messages: loop {
            self.expire_head(st, true);
            let Some(head) = st.ready.front() else {
                return;
            };
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
        self.with_state(|st| self.add_consumer_locked(st, tag, channel, exclusive))
    }

    fn add_consumer_locked(
        self: &Arc<Self>,
        st: &mut QueueState,
        tag: Arc<str>,
        channel: Arc<ChannelShared>,
        exclusive: bool,
    ) -> AmqpResult<()> {
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
        self.dispatch_locked(st);
        Ok(())
    }

    /// Detaches a consumer. Returns true if the queue is auto-delete and this was its
    /// last consumer, so the caller must delete it.
    pub fn remove_consumer(self: &Arc<Self>, tag: &str, channel: &Arc<ChannelShared>) -> bool {
        self.with_state(|st| self.remove_consumer_locked(st, tag, channel))
    }

    fn remove_consumer_locked(&self, st: &mut QueueState, tag: &str, channel: &Arc<ChannelShared>) -> bool {
        let before = st.consumers.len();
        st.consumers
            .retain(|c| !(Arc::ptr_eq(&c.channel, channel) && &*c.tag == tag));
        let removed = st.consumers.len() != before;
        if st.consumers.is_empty() {
            st.exclusive_consumer = false;
            st.next_consumer = 0;
            // Unused from now on (x-expires).
            st.last_used = Instant::now();
        } else if st.next_consumer >= st.consumers.len() {
            st.next_consumer = 0;
        }
        removed && st.consumers.is_empty() && self.settings.auto_delete && !st.deleted
    }

    /// Takes the head message for basic.get; `f` gets it and the count left.
    pub fn get(self: &Arc<Self>, f: impl FnOnce(QueuedMessage, u32)) -> bool {
        self.with_state(|st| {
            st.last_used = Instant::now();
            self.expire_head(st, false);
            match st.ready.pop_front() {
                Some(m) => {
                    let left = st.ready.len() as u32;
                    f(m, left);
                    true
                }
                None => false,
            }
        })
    }

    /// Puts messages back at their original positions, marked redelivered, and
    /// dispatches them again.
    pub fn requeue(self: &Arc<Self>, messages: impl IntoIterator<Item = QueuedMessage>) {
        self.with_state(|st| self.requeue_locked(st, messages))
    }

    fn requeue_locked(self: &Arc<Self>, st: &mut QueueState, messages: impl IntoIterator<Item = QueuedMessage>) {
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
            m.requeues = m.requeues.saturating_add(1);
            if self.args.delivery_limit.is_some_and(|limit| u64::from(m.requeues) > limit) {
                st.dead.push(Dead::Entry(m, Reason::DeliveryLimit));
                continue;
            }
            // Most requeues go to the front (the oldest unacked are older than
            // anything ready), so search from there.
            st.ready.insert_by_seq(m);
        }
        self.dispatch_locked(st);
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

    /// Ready messages (expired ones at the head are dropped first).
    pub fn message_count(self: &Arc<Self>) -> u32 {
        self.with_state(|st| {
            self.expire_head(st, false);
            st.ready.len() as u32
        })
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
