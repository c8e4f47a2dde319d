//! A classic queue whose home is another node of the cluster, as this node serves it.
//!
//! A classic queue lives on the node that declared it (its home): its messages, its
//! consumers' order and its store records are there. Every other node holds a
//! [`RemoteQueue`] under the same name, so routing, publishing, consuming and the
//! queue methods work through any node:
//!
//! - a publish is sent to the home over the node's one link to it (so one channel's
//!   publishes arrive in order); a publisher waiting for a confirm has it held
//!   ([`ConfirmHolder`]) until the home has enqueued it — after its store's fsync
//!   for a persistent message on a durable queue — and nacked if the link fails first;
//! - a consumer here is attached on the home as a proxy consumer, which forwards
//!   deliveries within a window (the consumer's prefetch; for no-ack consumers, a
//!   fixed window refilled as this node hands deliveries to the client). Settlements
//!   go back to the home, which acks, requeues or dead-letters there. When the link
//!   fails, the consumers here are cancelled (basic.cancel) and the home requeues what
//!   they held;
//! - basic.get, purge, delete and the counts a declare-ok carries are round trips to
//!   the home, answered later (`answers_later`): the channel replies when the home
//!   has answered, so no connection thread waits on the network. (The blocking forms,
//!   `get`, `purge`, `message_count`, serve the management API, on its blocking pool.)
//!
//! The core defines [`HomeLink`]; the cluster layer implements it over the cluster
//! link, so nothing here names the network.

pub mod protocol;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use protocol::{FromHome, HomeStats, PublishOutcome, Settlement, ToHome, WireMessage};

use super::consumer::same_sink;
use super::{
    ConfirmRef, ConsumerSink, Enqueued, NewConsumer, Offer, OrphanedConsumer, Queue, QueueCounters, QueueSettings,
    QueueStats, QueueType, Registered,
};
use crate::error::{AmqpError, AmqpResult};
use crate::message::{Message, QueuedMessage};
use crate::policy::Applied;

/// Runs with the home's answer, or why there is none (the link failed).
pub type Answer = Box<dyn FnOnce(Result<FromHome, String>) + Send>;

/// The link to one home node, as remote queues use it (the cluster layer implements
/// it). Lock order: a remote queue may call it under its own lock; the link never
/// calls a queue under its own.
pub trait HomeLink: Send + Sync {
    /// A fresh id for a request or a consumer (unique on this link).
    fn next_id(&self) -> u64;
    /// Sends `request` in order after everything sent before. `answer` (for requests
    /// with an id) runs with the home's answer, or with an error if the link fails
    /// first; never inside this call.
    fn send(&self, request: ToHome, answer: Option<(u64, Answer)>);
    /// Deliveries to consumer `consumer`, and its cancellation, go to `to`.
    fn attach(&self, consumer: u64, to: Weak<dyn RemoteConsumers>);
    fn detach(&self, consumer: u64);
}

/// Where a link hands what the home sends for consumers.
pub trait RemoteConsumers: Send + Sync {
    fn deliver(&self, consumer: u64, delivery: u64, redelivered: bool, message: WireMessage);
    /// The home cancelled the consumer (its queue was deleted), or the link failed.
    fn cancelled(&self, consumer: u64);
}

/// How long a round trip to the home may take (basic.get, purge, delete, counts).
const ROUND_TRIP: Duration = Duration::from_secs(10);
/// How long listings trust the last figures before asking the home again.
const STATS_FRESH: Duration = Duration::from_secs(1);

pub struct RemoteQueue {
    name: Arc<str>,
    vhost: Arc<str>,
    settings: QueueSettings,
    home: u64,
    /// The home's node name, for error texts.
    home_name: String,
    link: Arc<dyn HomeLink>,
    me: Weak<RemoteQueue>,
    consumers: Mutex<HashMap<u64, RemoteConsumer>>,
    counters: QueueCounters,
    deleted: AtomicBool,
    /// The home deleted the queue (its deletion was applied here): nothing to ask it.
    home_deleted: AtomicBool,
    stats: Mutex<(HomeStats, Option<Instant>)>,
    policies: Mutex<Applied>,
}

struct RemoteConsumer {
    tag: Arc<str>,
    sink: Arc<dyn ConsumerSink>,
    /// Deliveries the channel could not take yet (its client congested, or consume-ok
    /// not sent yet): offered again on `dispatch`.
    waiting: VecDeque<QueuedMessage>,
    /// Until the home confirms the consumer: consume-ok is sent then (the channel
    /// keeps the consumer inactive until it is, so deliveries wait in `waiting`).
    registered: Option<Registered>,
}

impl RemoteQueue {
    pub fn new(
        name: Arc<str>,
        vhost: Arc<str>,
        settings: QueueSettings,
        (home, home_name): (u64, String),
        link: Arc<dyn HomeLink>,
    ) -> Arc<RemoteQueue> {
        Arc::new_cyclic(|me| RemoteQueue {
            name,
            vhost,
            settings,
            home,
            home_name,
            link,
            me: me.clone(),
            consumers: Mutex::default(),
            counters: QueueCounters::default(),
            deleted: AtomicBool::new(false),
            home_deleted: AtomicBool::new(false),
            stats: Mutex::default(),
            policies: Mutex::default(),
        })
    }

    /// The home deleted the queue (the cluster's log says so): deleting it here asks
    /// the home nothing.
    pub fn home_deleted(&self) {
        self.home_deleted.store(true, Ordering::Release);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, RemoteConsumer>> {
        self.consumers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn this(&self) -> Option<Arc<Queue>> {
        self.me.upgrade().map(|q| q as Arc<Queue>)
    }

    /// Sends a request with an id; `answer` gets the home's answer or why there is
    /// none (the link failed, or no answer within [`ROUND_TRIP`]).
    fn request(&self, make: impl FnOnce(u64) -> ToHome, answer: Answer) {
        let id = self.link.next_id();
        let home = self.home;
        let answer = super::answer_within(ROUND_TRIP, Err(format!("no answer from node {home} in time")), answer);
        self.link.send(make(id), Some((id, answer)));
    }

    fn settle(&self, m: &QueuedMessage, how: Settlement) {
        self.link.send(ToHome::Settle { delivery: m.seq, how }, None);
    }

    /// Offers what consumer `c` has waiting, in order, until its channel is busy.
    /// False if the channel is gone.
    fn pump(&self, this: &Arc<Queue>, id: u64, c: &mut RemoteConsumer) -> bool {
        while let Some(m) = c.waiting.pop_front() {
            match c.sink.offer(this, &c.tag, &m) {
                Offer::Delivered { no_ack } => {
                    self.counters.delivered(true, no_ack, m.redelivered);
                    if no_ack {
                        self.link.send(ToHome::Credit { consumer: id, n: 1 }, None);
                    }
                }
                Offer::Busy => {
                    c.waiting.push_front(m);
                    return true;
                }
                Offer::Gone => {
                    c.waiting.push_front(m);
                    return false;
                }
            }
        }
        true
    }

    /// Ends consumer `id` here: tells the home, returns what it had waiting.
    fn end_consumer(&self, id: u64, c: RemoteConsumer) {
        self.link.detach(id);
        self.link.send(ToHome::Cancel { consumer: id }, None);
        for m in c.waiting {
            self.settle(&m, Settlement::Requeue);
        }
    }

    /// Asks the home for the queue's figures and remembers them for listings; `done`
    /// gets them, or the last known ones if the home did not answer.
    fn request_stats(&self, done: Box<dyn FnOnce(HomeStats) + Send>) {
        let (vhost, queue) = (self.vhost.to_string(), self.name.to_string());
        let me = self.me.clone();
        self.request(
            |id| ToHome::Stats { id, vhost, queue },
            Box::new(move |r| {
                let Some(q) = me.upgrade() else { return done(HomeStats::default()) };
                let mut stats = q.stats.lock().unwrap_or_else(|e| e.into_inner());
                if let Ok(FromHome::Stats { result: Ok(s), .. }) = r {
                    *stats = (s, Some(Instant::now()));
                }
                let s = stats.0;
                drop(stats);
                done(s)
            }),
        );
    }

    /// The last figures; asks the home again in the background when they are old.
    fn cached_stats(&self) -> HomeStats {
        let (stats, at) = *self.stats.lock().unwrap_or_else(|e| e.into_inner());
        if at.is_none_or(|t| t.elapsed() > STATS_FRESH) && !self.deleted.load(Ordering::Acquire) {
            self.request_stats(Box::new(|_| ()));
        }
        stats
    }

    /// The home's figures now (a round trip, on this thread).
    fn fresh_stats(&self) -> HomeStats {
        super::wait_answer(|done| self.request_stats(done)).unwrap_or_default()
    }

    /// Ends consumer `id` here: a consumer still waiting for consume-ok gets `refusal`
    /// (its channel closes with it), a registered one basic.cancel.
    fn refuse_or_cancel(&self, id: u64, refusal: AmqpError) {
        let Some(c) = self.lock().remove(&id) else { return };
        self.link.detach(id);
        for m in &c.waiting {
            self.settle(m, Settlement::Requeue);
        }
        match c.registered {
            Some(registered) => registered(Err(refusal)),
            None => c.sink.cancelled(&c.tag),
        }
    }

    /// RabbitMQ's text for a queue whose node cannot be reached.
    fn home_down(&self) -> String {
        format!(
            "home node '{}' of durable queue '{}' in vhost '{}' is down or inaccessible",
            self.home_name, self.name, self.vhost
        )
    }

    fn gone(&self) -> AmqpError {
        AmqpError::NotFound(self.no_queue_text())
    }
}

impl RemoteConsumers for RemoteQueue {
    fn deliver(&self, consumer: u64, delivery: u64, redelivered: bool, message: WireMessage) {
        let m = QueuedMessage::new(delivery, redelivered, Arc::new(message.into_message()));
        let Some(this) = self.this() else { return };
        let mut consumers = self.lock();
        let Some(c) = consumers.get_mut(&consumer) else {
            drop(consumers);
            self.settle(&m, Settlement::Requeue);
            return;
        };
        c.waiting.push_back(m);
        if !self.pump(&this, consumer, c) {
            if let Some(c) = consumers.remove(&consumer) {
                self.end_consumer(consumer, c);
            }
        }
    }

    fn cancelled(&self, consumer: u64) {
        self.refuse_or_cancel(consumer, AmqpError::NotFound(self.home_down()));
    }
}

impl QueueType for RemoteQueue {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn vhost(&self) -> &Arc<str> {
        &self.vhost
    }

    fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Stored on its home, not here.
    fn is_durable(&self) -> bool {
        false
    }

    fn home(&self) -> Option<u64> {
        Some(self.home)
    }

    fn publish(&self, message: Arc<Message>) -> Enqueued {
        self.publish_confirmed(message, None)
    }

    fn publish_confirmed(&self, message: Arc<Message>, confirm: Option<ConfirmRef<'_>>) -> Enqueued {
        if self.deleted.load(Ordering::Acquire) {
            return Enqueued::No;
        }
        self.counters.publish.add(1);
        let (vhost, queue, message) = (self.vhost.to_string(), self.name.to_string(), WireMessage::of(&message));
        let Some(confirm) = confirm else {
            self.link.send(ToHome::Publish { id: 0, vhost, queue, message }, None);
            return Enqueued::InMemory;
        };
        let (holder, seq) = (confirm.holder.clone(), confirm.seq);
        holder.hold(seq);
        let id = self.link.next_id();
        let answer: Answer = Box::new(move |r| match r {
            Ok(FromHome::Published { outcome: PublishOutcome::Accepted, .. }) => holder.release(seq, true),
            Ok(FromHome::Published { outcome: PublishOutcome::Rejected, .. }) => holder.refused(seq),
            _ => holder.release(seq, false),
        });
        self.link.send(ToHome::Publish { id, vhost, queue, message }, Some((id, answer)));
        Enqueued::Replicating
    }

    fn add_consumer(&self, c: NewConsumer<'_>) -> AmqpResult<()> {
        if self.deleted.load(Ordering::Acquire) {
            return Err(self.gone());
        }
        let id = self.link.next_id();
        self.lock().insert(
            id,
            RemoteConsumer { tag: c.tag.clone(), sink: c.sink, waiting: VecDeque::new(), registered: c.registered },
        );
        if let Some(me) = self.me.upgrade() {
            let me: Weak<dyn RemoteConsumers> = Arc::downgrade(&(me as Arc<dyn RemoteConsumers>));
            self.link.attach(id, me);
        }
        let me = self.me.clone();
        let answer: Answer = Box::new(move |r| {
            let Some(q) = me.upgrade() else { return };
            let refused = match r {
                Ok(FromHome::Consumed { refused: None, .. }) => None,
                // The home's refusal, as a single node gives it (403 exclusive use…).
                Ok(FromHome::Consumed { refused: Some(e), .. }) => Some(e.into_error()),
                Ok(other) => Some(AmqpError::InternalError(format!("unexpected answer {other:?}"))),
                Err(e) => {
                    log::warn!("queue '{}': no consumer on node {}: {e}", q.name, q.home);
                    Some(AmqpError::NotFound(q.home_down()))
                }
            };
            if let Some(refusal) = refused {
                q.link.send(ToHome::Cancel { consumer: id }, None);
                q.refuse_or_cancel(id, refusal);
                return;
            }
            // Not under the queue's lock: the channel sends consume-ok, activates the
            // consumer and dispatches the queue (which takes the lock).
            let registered = q.lock().get_mut(&id).and_then(|c| c.registered.take());
            match registered {
                Some(registered) => registered(Ok(())),
                None => q.dispatch(),
            }
        });
        self.link.send(
            ToHome::Consume {
                consumer: id,
                vhost: self.vhost.to_string(),
                queue: self.name.to_string(),
                tag: c.tag.to_string(),
                exclusive: c.exclusive,
                priority: c.priority,
                no_ack: c.no_ack,
                prefetch: c.prefetch,
            },
            Some((id, answer)),
        );
        Ok(())
    }

    fn defers_consume_ok(&self) -> bool {
        true
    }

    /// Auto-delete is decided on the home, when its proxy consumer goes.
    fn remove_consumer(&self, tag: &str, sink: &dyn ConsumerSink) -> bool {
        let mut consumers = self.lock();
        let id = consumers.iter().find(|(_, c)| &*c.tag == tag && same_sink(&*c.sink, sink)).map(|(id, _)| *id);
        if let Some((id, c)) = id.and_then(|id| consumers.remove_entry(&id)) {
            self.end_consumer(id, c);
        }
        false
    }

    fn dispatch(&self) {
        let Some(this) = self.this() else { return };
        let mut consumers = self.lock();
        let gone: Vec<u64> =
            consumers.iter_mut().filter_map(|(id, c)| (!self.pump(&this, *id, c)).then_some(*id)).collect();
        for id in gone {
            if let Some(c) = consumers.remove(&id) {
                self.end_consumer(id, c);
            }
        }
    }

    /// The blocking form of [`get_later`](QueueType::get_later) (the management API).
    fn get(&self, no_ack: bool, f: &mut dyn FnMut(QueuedMessage, u32)) -> bool {
        match super::wait_answer(|done| self.get_later(no_ack, done)).flatten() {
            Some((m, left)) => {
                f(m, left);
                true
            }
            None => false,
        }
    }

    fn answers_later(&self) -> bool {
        true
    }

    fn get_later(&self, no_ack: bool, done: super::GetDone) {
        let (vhost, queue) = (self.vhost.to_string(), self.name.to_string());
        let me = self.me.clone();
        self.request(
            |id| ToHome::Get { id, vhost, queue, no_ack },
            Box::new(move |r| match (r, me.upgrade()) {
                (Ok(FromHome::Got { result: Ok(Some(got)), .. }), Some(q)) => {
                    let m = QueuedMessage::new(got.delivery, got.redelivered, Arc::new(got.message.into_message()));
                    q.counters.delivered(false, no_ack, m.redelivered);
                    done(Some((m, got.left)))
                }
                (Ok(FromHome::Got { result: Ok(None), .. }), _) => done(None),
                (other, _) => {
                    log::warn!("a basic.get through another node failed: {other:?}");
                    done(None)
                }
            }),
        );
    }

    fn purge_later(&self, done: Box<dyn FnOnce(u32) + Send>) {
        let (vhost, queue) = (self.vhost.to_string(), self.name.to_string());
        self.request(
            |id| ToHome::Purge { id, vhost, queue },
            Box::new(move |r| match r {
                Ok(FromHome::Done { result: Ok(n), .. }) => done(n),
                other => {
                    log::warn!("a purge through another node failed: {other:?}");
                    done(0)
                }
            }),
        );
    }

    fn counts_later(&self, done: Box<dyn FnOnce(u32, u32) + Send>) {
        self.request_stats(Box::new(move |s| done(ready(&s), s.consumers)));
    }

    fn delete_at_home(&self, if_unused: bool, if_empty: bool, done: Box<dyn FnOnce(AmqpResult<u32>) + Send>) {
        let (vhost, queue) = (self.vhost.to_string(), self.name.to_string());
        let me = self.me.clone();
        self.request(
            |id| ToHome::Delete { id, vhost, queue, if_unused, if_empty },
            Box::new(move |r| match r {
                Ok(FromHome::Done { result: Ok(n), .. }) => {
                    if let Some(q) = me.upgrade() {
                        // Deleted there: deleting it here asks nothing more.
                        q.home_deleted();
                    }
                    done(Ok(n))
                }
                Ok(FromHome::Done { result: Err(e), .. }) => done(Err(e.into_error())),
                other => done(Err(AmqpError::InternalError(format!("the queue's node did not delete it: {other:?}")))),
            }),
        );
    }

    /// The home marked it when it sent it.
    fn mark_delivered(&self, _m: &QueuedMessage) {}

    fn forget(&self, m: &QueuedMessage) {
        self.settle(m, Settlement::Forget);
    }

    fn ack(&self, m: &QueuedMessage) {
        self.counters.ack.add(1);
        self.settle(m, Settlement::Ack);
    }

    fn requeue(&self, messages: &mut dyn Iterator<Item = QueuedMessage>) {
        for m in messages {
            self.counters.returned.add(1);
            self.settle(&m, Settlement::Requeue);
        }
    }

    fn reject(&self, m: QueuedMessage) {
        self.counters.rejected.add(1);
        self.settle(&m, Settlement::Reject);
    }

    /// The blocking form of [`purge_later`](QueueType::purge_later).
    fn purge(&self) -> u32 {
        super::wait_answer(|done| self.purge_later(done)).unwrap_or(0)
    }

    /// Deleted here by a client: the home deletes it (and the cluster's log then
    /// removes it everywhere). Deleted by the log: only the consumers here are told.
    fn mark_deleted(&self) -> (u32, Vec<OrphanedConsumer>) {
        if self.deleted.swap(true, Ordering::AcqRel) {
            return (0, vec![]);
        }
        let mut count = 0;
        if !self.home_deleted.load(Ordering::Acquire) {
            match super::wait_answer(|done| self.delete_at_home(false, false, done)) {
                Some(Ok(n)) => count = n,
                other => log::warn!("queue '{}': delete through node {} failed: {other:?}", self.name, self.home),
            }
        }
        let consumers: Vec<(u64, RemoteConsumer)> = self.lock().drain().collect();
        let orphans = consumers
            .into_iter()
            .map(|(id, c)| {
                self.link.detach(id);
                if let Some(registered) = c.registered {
                    registered(Err(self.gone()));
                }
                OrphanedConsumer { tag: c.tag, channel: c.sink }
            })
            .collect();
        (count, orphans)
    }

    fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// x-expires counts on the home, where the queue is used.
    fn touch(&self) {}

    fn message_count(&self) -> u32 {
        ready(&self.fresh_stats())
    }

    fn consumer_count(&self) -> u32 {
        self.fresh_stats().consumers
    }

    fn counters(&self) -> &QueueCounters {
        &self.counters
    }

    fn stats(&self) -> QueueStats {
        let s = self.cached_stats();
        QueueStats {
            messages_ready: s.ready,
            messages_unacknowledged: s.unacked,
            message_bytes_ready: s.bytes_ready,
            consumers: s.consumers,
            messages: self.counters.message_stats(),
        }
    }

    /// Policies act on the home; here they are only listed.
    fn apply_policies(&self, applied: Applied) {
        *self.policies.lock().unwrap_or_else(|e| e.into_inner()) = applied;
    }

    fn policies(&self) -> Applied {
        self.policies.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The ready count as AMQP carries it.
fn ready(s: &HomeStats) -> u32 {
    s.ready.min(u64::from(u32::MAX)) as u32
}
