//! The classic queue: a FIFO of messages (one per priority level for priority
//! queues), its consumers and round-robin dispatch.
//!
//! Each queue owns its state behind one short lock. Whoever changes something that can
//! make a delivery possible (a publish, a new consumer, an ack that frees credit, a
//! requeue, a drained socket) calls `dispatch`, which hands messages to consumers with
//! credit until one side runs out. There is no queue task and no hand-off between
//! threads on the hot path: the publisher's task writes the deliver frames straight
//! into the consumer connection's outbox (through [`ConsumerSink::offer`]).

mod consumers;
mod dedup;
mod ready;
mod timer;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use dedup::Dedup;
use ready::{Drained, ReadyList};
pub use ready::{Entry, Run};

use super::consumer::same_sink;
use super::deadletter::{Dead, Reason};
use super::{
    ConsumerSink, DeliveryTag, Enqueued, NewConsumer, Offer, OrphanedConsumer, Overflow, Queue, QueueArgs,
    QueueCounters, QueueHost, QueueSettings, QueueStats, QueueType,
};
use crate::error::{AmqpError, AmqpResult};
use crate::message::{now_ms, Message, QueuedMessage};
use crate::policy::Applied;
use crate::store::{QueueId, StoreHandle, StoreOp};

pub struct ClassicQueue {
    pub(in crate::queue) name: Arc<str>,
    pub(in crate::queue) vhost: Arc<str>,
    settings: QueueSettings,
    /// The x-arguments as declared. What policies cannot change (priority levels,
    /// single active consumer, consumer timeout, deduplication) is read from here;
    /// TTLs, limits, dead-lettering and x-expires from [`QueueState::args`].
    pub(in crate::queue) declared: QueueArgs,
    /// Its vhost, for dead-lettering and x-expires.
    pub(in crate::queue) owner: Weak<dyn QueueHost>,
    /// Set for durable queues: where their persistent messages are recorded.
    pub(in crate::queue) store: Option<(StoreHandle, QueueId)>,
    /// How long a consumer may hold a delivery unacked before it is cancelled
    /// (x-consumer-timeout, else the broker's `consumer_timeout_ms`; None: never).
    consumer_timeout: Option<Duration>,
    /// Itself, as the handle consumers' unacked entries and the timer keep.
    me: Weak<ClassicQueue>,
    /// Enqueues and deliveries are counted under `state`'s lock.
    counters: QueueCounters,
    state: Mutex<QueueState>,
}

/// A consumer as the queue sees it.
struct ConsumerSlot {
    tag: Arc<str>,
    channel: Arc<dyn ConsumerSink>,
    /// Consumer priority (basic.consume `x-priority`).
    priority: i32,
    /// Consumer-timeout sweeps: (time of a sweep, the channel's next delivery tag then),
    /// so every delivery tagged below it is known to be older than that time. Only the
    /// marks newer than the consumer's oldest unacked delivery are kept (a few).
    marks: VecDeque<(Instant, DeliveryTag)>,
}

struct QueueState {
    /// The arguments it acts on now: the declared ones under its policies. Replaced
    /// whole when a policy changes (read under this lock, which every publish and
    /// delivery holds anyway: no extra synchronisation on the hot path).
    args: Arc<QueueArgs>,
    /// The policies `args` were computed with.
    policies: Applied,
    ready: ReadyList,
    next_seq: u64,
    /// Ordered by priority, highest first; registration order among equals.
    consumers: Vec<ConsumerSlot>,
    /// All consumers have the same priority (the usual case: one round-robin group).
    uniform: bool,
    /// Where the next round-robin search starts.
    next_consumer: usize,
    /// x-single-active-consumer: the consumer that receives (tag, channel).
    sac_active: Option<(Arc<str>, Arc<dyn ConsumerSink>)>,
    /// When the next consumer-timeout sweep is due (None: no unacked deliveries seen).
    timeout_check_at: Option<Instant>,
    /// x-message-deduplication: the recent keys.
    dedup: Option<Dedup>,
    exclusive_consumer: bool,
    deleted: bool,
    /// Messages that died under the lock, dead-lettered once it is released.
    dead: Vec<Dead>,
    /// The earliest wake-up this queue has in the timer (None: none pending).
    timer_at: Option<Instant>,
    /// Last use for x-expires (declare, basic.get, consumer activity).
    last_used: Instant,
    /// While a message with a TTL of 0 is being published: its deadline (its publish
    /// time), which the dispatch right after may still deliver however many
    /// milliseconds passed since its frames were read (RabbitMQ hands a TTL-0 message
    /// to a waiting consumer, else drops it).
    zero_ttl_deadline: Option<u64>,
}

impl ClassicQueue {
    pub fn new(
        name: Arc<str>,
        owner: &Arc<dyn QueueHost>,
        settings: QueueSettings,
        store: Option<(StoreHandle, QueueId)>,
    ) -> Arc<Self> {
        Self::restore(name, owner, settings, store, Vec::new())
    }

    /// A queue holding recovered entries (in `seq` order); beyond the head, long
    /// stretches stay on disk as runs.
    pub fn restore(
        name: Arc<str>,
        owner: &Arc<dyn QueueHost>,
        settings: QueueSettings,
        store: Option<(StoreHandle, QueueId)>,
        entries: Vec<Entry>,
    ) -> Arc<Self> {
        let next_seq = entries.last().map_or(0, |e| e.last_seq() + 1);
        let args = QueueArgs::parse(&settings.arguments);
        let ready = ReadyList::new(store.clone(), entries, args.max_priority);
        let timeout_ms = args.consumer_timeout.unwrap_or_else(|| owner.default_consumer_timeout_ms());
        let dedup = args.dedup_cache.map(Dedup::new);
        let q = Arc::new_cyclic(|me| Self {
            name,
            vhost: owner.name().clone(),
            declared: args.clone(),
            settings,
            owner: Arc::downgrade(owner),
            store,
            consumer_timeout: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms)),
            me: me.clone(),
            counters: QueueCounters::default(),
            state: Mutex::new(QueueState {
                args: Arc::new(args),
                policies: Applied::default(),
                ready,
                next_seq,
                consumers: Vec::new(),
                uniform: true,
                next_consumer: 0,
                sac_active: None,
                timeout_check_at: None,
                dedup,
                exclusive_consumer: false,
                deleted: false,
                dead: Vec::new(),
                timer_at: None,
                last_used: Instant::now(),
                zero_ttl_deadline: None,
            }),
        });
        // Arms the timer for recovered messages' TTLs and for x-expires.
        q.with_state(|_| ());
        q
    }

    /// Runs `f` under the lock; then (re)arms the timer for the next deadline and,
    /// with the lock released, dead-letters whatever died meanwhile.
    fn with_state<R>(&self, f: impl FnOnce(&mut QueueState) -> R) -> R {
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

    /// The earliest wall-clock deadline among the head messages (one head per
    /// priority level), and its level.
    fn head_expiry(&self, st: &mut QueueState) -> Option<(u64, usize)> {
        let ttl = st.args.message_ttl;
        st.ready.min_front(|m| m.message.expires_at(ttl))
    }

    /// Drops expired messages from the head (RabbitMQ expires lazily from the head:
    /// a message behind a longer-lived one waits for it). `strict`: only messages whose
    /// deadline has passed (dispatch may still deliver one due this very millisecond —
    /// how a TTL of 0 reaches a waiting consumer).
    fn expire_head(&self, st: &mut QueueState, strict: bool) {
        let mut now = None;
        while let Some((t, level)) = self.head_expiry(st) {
            let now = *now.get_or_insert_with(now_ms);
            if t > now || (strict && (t == now || st.zero_ttl_deadline == Some(t))) {
                break;
            }
            match st.ready.pop_level(level) {
                Some(m) => st.dead.push(Dead::Entry(m, Reason::Expired)),
                None => break,
            }
        }
    }

    /// Schedules a timer wake-up for the next deadline if it is earlier than the one
    /// already pending.
    fn arm_timer(&self, st: &mut QueueState) {
        if st.deleted {
            return;
        }
        let mut next: Option<Instant> = None;
        if let Some((t, _)) = self.head_expiry(st) {
            let wait = t.saturating_sub(now_ms());
            next = Some(Instant::now() + Duration::from_millis(wait));
        }
        if let Some(at) = st.timeout_check_at {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        if let (Some(ms), true) = (st.args.expires, st.consumers.is_empty()) {
            let at = st.last_used + Duration::from_millis(u64::from(ms));
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        if let Some(at) = next {
            if st.timer_at.is_none_or(|t| at < t) {
                st.timer_at = Some(at);
                timer::schedule(at, self.me.clone());
            }
        }
    }

    /// The timer fired (for a deadline scheduled at `at`): expire the head, delete the
    /// queue if x-expires says it has been unused long enough.
    fn on_timer(&self, at: Instant) {
        let mut timed_out = Vec::new();
        let expired = self.with_state(|st| {
            if st.timer_at.is_some_and(|t| t <= at) {
                st.timer_at = None;
            }
            if st.deleted {
                return false;
            }
            self.expire_head(st, false);
            if st.timeout_check_at.is_some_and(|t| t <= Instant::now()) {
                timed_out = self.sweep_consumer_timeouts(st);
            }
            match st.args.expires {
                Some(ms) if st.consumers.is_empty() => {
                    st.last_used + Duration::from_millis(u64::from(ms)) <= Instant::now()
                }
                _ => false,
            }
        });
        for (tag, channel) in timed_out {
            self.time_out_consumer(tag, channel);
        }
        if expired {
            log::debug!("queue '{}' unused for its x-expires period; deleting it", self.name);
            self.delete_from_vhost();
        }
    }

    /// True when one more message of `body_len` bytes would exceed a length limit.
    fn full_for(&self, st: &QueueState, body_len: u64) -> bool {
        st.args.max_length.is_some_and(|max| st.ready.len() as u64 >= max)
            || st.args.max_length_bytes.is_some_and(|max| st.ready.bytes() + body_len > max)
    }

    /// x-overflow drop-head: drops (dead-letters, reason maxlen) from the head until
    /// the queue is within its limits.
    fn drop_over_limit(&self, st: &mut QueueState) {
        let over = |st: &QueueState| {
            st.args.max_length.is_some_and(|max| st.ready.len() as u64 > max)
                || st.args.max_length_bytes.is_some_and(|max| st.ready.bytes() > max)
        };
        while over(st) {
            match st.ready.pop_front() {
                Some(m) => st.dead.push(Dead::Entry(m, Reason::Maxlen)),
                None => break,
            }
        }
    }

    /// This queue, counted (None only while it is being dropped).
    pub(in crate::queue) fn me(&self) -> Option<Arc<ClassicQueue>> {
        self.me.upgrade()
    }

    /// This queue as the handle the rest of the broker holds.
    fn handle(&self) -> Option<Arc<Queue>> {
        self.me.upgrade().map(|q| q as Arc<Queue>)
    }

    /// Removes this queue from its vhost.
    fn delete_from_vhost(&self) {
        if let (Some(vh), Some(this)) = (self.owner.upgrade(), self.handle()) {
            vh.delete_queue(&this);
        }
    }

    /// The arguments it acts on now (for dead-lettering, outside the lock).
    pub(in crate::queue) fn current_args(&self) -> Arc<QueueArgs> {
        self.lock().args.clone()
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish_locked(&self, st: &mut QueueState, message: Arc<Message>) -> Enqueued {
        if st.deleted {
            return Enqueued::No;
        }
        let dedup_hash = match &st.dedup {
            Some(d) => match message.dedup_key() {
                Some(key) => {
                    let h = Dedup::hash(&key);
                    if d.contains(h) {
                        return Enqueued::Duplicate;
                    }
                    Some(h)
                }
                None => None,
            },
            None => None,
        };
        let limited = st.args.max_length.is_some() || st.args.max_length_bytes.is_some();
        let overflow = st.args.overflow;
        if limited && overflow != Overflow::DropHead {
            self.expire_head(st, false);
            if self.full_for(st, message.body.len() as u64) {
                if overflow == Overflow::RejectPublishDlx {
                    st.dead.push(Dead::Refused(message));
                }
                return Enqueued::Rejected;
            }
        }
        if let (Some(d), Some(h)) = (st.dedup.as_mut(), dedup_hash) {
            d.insert(h);
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
        let has_ttl = message.ttl.is_some() || st.args.message_ttl.is_some();
        let (message_ttl, published_ms) = (message.ttl, message.published_ms);
        self.counters.publish.bump(1);
        st.ready.push_back(QueuedMessage::new(seq, false, message));
        if !st.consumers.is_empty() {
            let ttl = match (message_ttl, st.args.message_ttl) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            st.zero_ttl_deadline = (ttl == Some(0)).then_some(published_ms);
            self.dispatch_locked(st);
            st.zero_ttl_deadline = None;
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

    fn requeue_locked(&self, st: &mut QueueState, messages: impl IntoIterator<Item = QueuedMessage>) {
        if st.deleted {
            for m in messages {
                self.counters.returned.add(1);
                // Its store entry went with the queue; release the message record.
                if let (Some((store, _)), Some(id)) = (&self.store, m.message.store.id) {
                    if m.message.store.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
                        store.send(StoreOp::DeleteMessage(id));
                    }
                }
            }
            return;
        }
        for mut m in messages {
            self.counters.returned.add(1);
            m.redelivered = true;
            m.requeues = m.requeues.saturating_add(1);
            if st.args.delivery_limit.is_some_and(|limit| u64::from(m.requeues) > limit) {
                st.dead.push(Dead::Entry(m, Reason::DeliveryLimit));
                continue;
            }
            // Most requeues go to the front (the oldest unacked are older than
            // anything ready), so search from there.
            st.ready.insert_by_seq(m);
        }
        self.dispatch_locked(st);
    }
}

impl QueueType for ClassicQueue {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn vhost(&self) -> &Arc<str> {
        &self.vhost
    }

    fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// True for a durable queue on a broker with a store.
    fn is_durable(&self) -> bool {
        self.store.is_some()
    }

    /// Enqueues a message and delivers what it can.
    fn publish(&self, message: Arc<Message>) -> Enqueued {
        self.with_state(|st| self.publish_locked(st, message))
    }

    /// A delivery was rejected or nacked without requeue: dead-letter it (reason
    /// `rejected`) if the queue has a dead-letter exchange, and forget it.
    fn reject(&self, m: QueuedMessage) {
        self.counters.rejected.add(1);
        let reason = Reason::Rejected;
        if self.is_deleted() {
            self.forget(&m);
        } else {
            self.dead_letter_all(vec![Dead::Entry(m, reason)]);
        }
    }

    /// The message left this queue for good (acked, dropped, delivered no-ack): delete
    /// its store entry, and the message record once no queue references it.
    fn forget(&self, m: &QueuedMessage) {
        let (Some((store, queue)), Some(id)) = (&self.store, m.message.store.id) else {
            return;
        };
        store.send(StoreOp::Remove { queue: *queue, seq: m.seq });
        if m.message.store.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            store.send(StoreOp::DeleteMessage(id));
        }
    }

    /// Records a first delivery, so a restart brings the message back as redelivered.
    fn mark_delivered(&self, m: &QueuedMessage) {
        if m.redelivered {
            return;
        }
        if let (Some((store, queue)), Some(id)) = (&self.store, m.message.store.id) {
            store.send(StoreOp::MarkDelivered { queue: *queue, seq: m.seq, message: id });
        }
    }

    /// Delivers ready messages to consumers with credit, round-robin.
    fn dispatch(&self) {
        self.with_state(|st| self.dispatch_locked(st));
    }

    /// Attaches a consumer (the channel has already recorded it) and starts delivering.
    fn add_consumer(&self, c: NewConsumer<'_>) -> AmqpResult<()> {
        self.with_state(|st| self.add_consumer_locked(st, c.tag, c.sink, c.exclusive, c.priority))
    }

    /// Detaches a consumer. Returns true if the queue is auto-delete and this was its
    /// last consumer, so the caller must delete it.
    fn remove_consumer(&self, tag: &str, channel: &dyn ConsumerSink) -> bool {
        self.with_state(|st| {
            let delete = self.remove_consumer_locked(st, tag, channel);
            if self.declared.single_active_consumer && !st.deleted {
                // The next consumer in line takes over.
                self.dispatch_locked(st);
            }
            delete
        })
    }

    /// Takes the head message for basic.get; `f` gets it and the count left.
    fn get(&self, no_ack: bool, f: &mut dyn FnMut(QueuedMessage, u32)) -> bool {
        self.with_state(|st| {
            st.last_used = Instant::now();
            self.expire_head(st, false);
            match st.ready.pop_front() {
                Some(m) => {
                    let left = st.ready.len() as u32;
                    self.counters.delivered(false, no_ack, m.redelivered);
                    // A bug that panics in `f` must not lose the message: back in place.
                    let back = m.clone();
                    let ready = &mut st.ready;
                    let _put_back = crate::util::OnUnwind::new(move || ready.insert_by_seq(back));
                    f(m, left);
                    true
                }
                None => false,
            }
        })
    }

    /// Puts messages back at their original positions, marked redelivered, and
    /// dispatches them again.
    fn requeue(&self, messages: &mut dyn Iterator<Item = QueuedMessage>) {
        self.with_state(|st| self.requeue_locked(st, messages))
    }

    /// Drops every ready message (unacked ones are unaffected); returns how many.
    fn purge(&self) -> u32 {
        let mut st = self.lock();
        let n = st.ready.len() as u32;
        let entries = st.ready.drain();
        drop(st);
        for e in entries {
            match e {
                Drained::Loaded(m) => self.forget(&m),
                Drained::Run { first_seq, last_seq, level, .. } => {
                    if let Some((store, queue)) = &self.store {
                        store.send(ready::delete_run(*queue, first_seq, last_seq, level));
                    }
                }
            }
        }
        n
    }

    /// Ready messages (expired ones at the head are dropped first).
    fn message_count(&self) -> u32 {
        self.with_state(|st| {
            self.expire_head(st, false);
            st.ready.len() as u32
        })
    }

    fn consumer_count(&self) -> u32 {
        self.lock().consumers.len() as u32
    }

    fn counters(&self) -> &QueueCounters {
        &self.counters
    }

    fn stats(&self) -> QueueStats {
        let (ready, bytes, consumers) = self.with_state(|st| {
            self.expire_head(st, false);
            (st.ready.len() as u64, st.ready.bytes(), st.consumers.len() as u32)
        });
        QueueStats {
            messages_ready: ready,
            messages_unacknowledged: self.counters.unacked(),
            message_bytes_ready: bytes,
            consumers,
            messages: self.counters.message_stats(),
        }
    }

    fn is_deleted(&self) -> bool {
        self.lock().deleted
    }

    /// Marks the queue deleted and empties it. Returns the number of ready messages it
    /// held and the consumers whose channels must be sent basic.cancel.
    fn mark_deleted(&self) -> (u32, Vec<OrphanedConsumer>) {
        let mut st = self.lock();
        if st.deleted {
            return (0, Vec::new());
        }
        st.deleted = true;
        let n = st.ready.len() as u32;
        let entries = st.ready.drain();
        if let Some((store, id)) = &self.store {
            // A spilled run's message records are found through its entries, so they
            // go before the queue's entries do.
            for e in &entries {
                if let Drained::Run { first_seq, last_seq, level, .. } = e {
                    store.send(ready::delete_run(*id, *first_seq, *last_seq, *level));
                }
            }
            store.send(StoreOp::DeleteQueue { id: *id, vhost: self.vhost.to_string(), name: self.name.to_string() });
            // The entries go with the queue; release the message records they held.
            // (Unacked ones are released when their channel settles them.)
            for e in entries {
                if let Drained::Loaded(m) = e {
                    if let Some(mid) = m.message.store.id {
                        if m.message.store.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
                            store.send(StoreOp::DeleteMessage(mid));
                        }
                    }
                }
            }
        }
        let orphans = st.consumers.drain(..).map(|c| OrphanedConsumer { tag: c.tag, channel: c.channel }).collect();
        (n, orphans)
    }

    /// Recomputes the arguments it acts on and applies them at once: a lower length
    /// limit drops (dead-letters) from the head under x-overflow drop-head, a new TTL
    /// expires the head, a new x-expires re-arms the timer.
    fn apply_policies(&self, applied: Applied) {
        let args = QueueArgs::effective(
            &self.settings.arguments,
            &crate::policy::Definition::parse(&applied.effective_definition()),
        );
        self.with_state(|st| {
            if st.deleted {
                return;
            }
            if args.expires != st.args.expires {
                st.last_used = Instant::now();
            }
            st.args = Arc::new(args);
            st.policies = applied;
            if st.args.overflow == Overflow::DropHead {
                self.drop_over_limit(st);
            }
            self.expire_head(st, false);
            // x-expires may be later or gone now: let the timer take the new deadline.
            st.timer_at = None;
        });
    }

    fn policies(&self) -> Applied {
        self.lock().policies.clone()
    }

    /// The queue was used (declared, basic.get): restarts its x-expires period.
    fn touch(&self) {
        self.with_state(|st| {
            if st.args.expires.is_some() {
                st.last_used = Instant::now();
            }
        });
    }
}
