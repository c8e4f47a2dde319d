//! Queues: the [`QueueType`] seam every queue type implements, and what all types
//! share (arguments, consumers as [`ConsumerSink`]s, dead-lettering, publishing).
//!
//! The rest of the broker holds a queue as `Arc<Queue>` (`Queue` is `dyn QueueType`)
//! and never names a queue type: the channel publishes, consumes, gets, settles,
//! purges and deletes through the trait, so a stream or a replicated queue is added
//! beside [`classic`] without touching the AMQP layer.

pub mod args;
pub mod classic;
mod consumer;
mod deadletter;
pub mod kind;
mod publish;
pub mod quorum;
pub mod remote;
pub mod stats;
pub mod stream;

use std::sync::Arc;

use amq_protocol::types::FieldTable;
use haremq_routing::RouteRequest;

pub use args::{Overflow, QueueArgs};
pub use consumer::{ConsumerSink, DeliveryTag, Offer};
pub use kind::QueueKind;
pub use publish::{enqueue_routed, Enqueueing, QueueRef};
pub use stats::{QueueCounters, QueueStats};

use crate::error::AmqpResult;
use crate::message::{Message, QueuedMessage};
use crate::policy::Applied;
use crate::store::StoreHandle;

/// A queue, whatever its type.
pub type Queue = dyn QueueType;

/// What every queue type offers the broker. All methods take `&self`: a queue guards
/// its own state, and the `Arc<Queue>` handle is what deliveries carry back to settle.
pub trait QueueType: Send + Sync {
    fn name(&self) -> &Arc<str>;
    fn vhost(&self) -> &Arc<str>;
    /// How it was declared.
    fn settings(&self) -> &QueueSettings;
    /// True for a durable queue on a broker with a store.
    fn is_durable(&self) -> bool;
    /// What it is (listings report it).
    fn kind(&self) -> QueueKind {
        QueueKind::Classic
    }
    /// Whether a persistent message routed here needs a record in the store's message
    /// table (a stream keeps messages in its own log).
    fn needs_store_record(&self) -> bool {
        self.is_durable()
    }
    /// 540 if this type does not support `op` (streams: RabbitMQ's texts); checked by
    /// the channel before it acts.
    fn refuse(&self, op: QueueOp) -> AmqpResult<()> {
        let _ = op;
        Ok(())
    }

    /// Enqueues a routed message and delivers what it can.
    fn publish(&self, message: Arc<Message>) -> Enqueued;
    /// [`publish`](Self::publish) for a publisher waiting for a confirm: a queue that
    /// stores the message only later (a replicated queue, once a majority has it)
    /// holds the confirm through `confirm` and answers [`Enqueued::Replicating`].
    fn publish_confirmed(&self, message: Arc<Message>, confirm: Option<ConfirmRef<'_>>) -> Enqueued {
        let _ = confirm;
        self.publish(message)
    }

    /// Attaches a consumer (its channel has already recorded it) and starts delivering.
    /// 403 if exclusivity forbids it, 404 if the queue is gone; a type may refuse a
    /// consumer's settings or arguments (a stream: no prefetch, no-ack, a bad offset).
    fn add_consumer(&self, consumer: NewConsumer<'_>) -> AmqpResult<()>;
    /// Whether basic.consume-ok waits until the queue has registered the consumer where
    /// its deliveries are decided (a replicated queue: its log), as RabbitMQ's quorum
    /// queues do; such a queue calls [`NewConsumer::registered`]. It orders consumers
    /// as their consume-oks are, which single active consumer depends on.
    fn defers_consume_ok(&self) -> bool {
        false
    }
    /// Detaches a consumer. True if the queue is auto-delete and this was its last
    /// consumer, so the caller must delete it.
    fn remove_consumer(&self, tag: &str, sink: &dyn ConsumerSink) -> bool;
    /// Delivers what it can (a consumer got credit back, or its socket drained).
    fn dispatch(&self);
    /// basic.get: takes the head message; `f` gets it and the count left, under the
    /// queue's lock (so the reply precedes any later delivery). False if empty.
    /// `no_ack`: the message leaves the queue for good (the caller forgets it).
    fn get(&self, no_ack: bool, f: &mut dyn FnMut(QueuedMessage, u32)) -> bool;

    /// Whether basic.get and queue.purge are answered through
    /// [`get_later`](Self::get_later) and [`purge_later`](Self::purge_later): a queue
    /// whose answer takes a round trip over the network (a replicated queue's log, a
    /// classic queue's home on another node), so the connection's thread never waits
    /// for it.
    fn answers_later(&self) -> bool {
        false
    }
    /// basic.get for a queue that [answers later](Self::answers_later): `done` gets
    /// the head message and the ready count left (None: empty, or no answer), once,
    /// not inside this call. The message is delivered as by [`get`](Self::get).
    fn get_later(&self, no_ack: bool, done: GetDone) {
        let mut got = None;
        self.get(no_ack, &mut |m, left| got = Some((m, left)));
        done(got)
    }
    /// queue.purge for a queue that [answers later](Self::answers_later): `done`
    /// gets the count purged, once, not inside this call.
    fn purge_later(&self, done: Box<dyn FnOnce(u32) + Send>) {
        done(self.purge())
    }

    /// The ready and consumer counts a declare-ok carries, for a queue that [answers
    /// later](Self::answers_later): once, not inside this call.
    fn counts_later(&self, done: Box<dyn FnOnce(u32, u32) + Send>) {
        done(self.message_count(), self.consumer_count())
    }
    /// queue.delete of a queue living on another node ([`home`](Self::home) is Some):
    /// its home checks `if_unused` / `if_empty`, deletes it and replicates the
    /// deletion; `done` gets the ready count it held, or the home's refusal. Once, not
    /// inside this call.
    fn delete_at_home(&self, if_unused: bool, if_empty: bool, done: Box<dyn FnOnce(AmqpResult<u32>) + Send>) {
        let _ = (if_unused, if_empty);
        done(Err(crate::error::AmqpError::NotImplemented("the queue lives on this node".into())))
    }

    /// Records a first delivery, so a restart brings the message back as redelivered.
    fn mark_delivered(&self, m: &QueuedMessage);
    /// The message left the queue for good (delivered with no-ack, dropped).
    fn forget(&self, m: &QueuedMessage);
    /// A consumer acknowledged the delivery: counted, then forgotten.
    fn ack(&self, m: &QueuedMessage) {
        self.counters().ack.add(1);
        self.forget(m);
    }
    /// Puts messages back at their original positions, marked redelivered.
    fn requeue(&self, messages: &mut dyn Iterator<Item = QueuedMessage>);
    /// Rejected or nacked without requeue: dead-lettered (reason `rejected`) or dropped.
    fn reject(&self, m: QueuedMessage);

    /// Drops every ready message; returns how many.
    fn purge(&self) -> u32;
    /// Marks the queue deleted and empties it: the ready messages it held, and the
    /// consumers whose channels must be told.
    fn mark_deleted(&self) -> (u32, Vec<OrphanedConsumer>);
    fn is_deleted(&self) -> bool;
    /// The queue was used (declared, basic.get): restarts its x-expires period.
    fn touch(&self);
    /// Ready messages.
    fn message_count(&self) -> u32;
    fn consumer_count(&self) -> u32;
    /// What went in and out, for statistics.
    fn counters(&self) -> &QueueCounters;
    /// Its figures now (takes the queue's lock once).
    fn stats(&self) -> QueueStats;

    /// The policy and operator policy that apply to it now (the vhost decides which):
    /// it recomputes the arguments it acts on from its declared x-arguments and their
    /// definitions, and applies them at once (a lower length limit trims it, a new
    /// TTL expires its head).
    fn apply_policies(&self, applied: Applied);
    /// The policies it acts under (for listings).
    fn policies(&self) -> Applied;

    /// A replicated queue's leader (node id, if one is known) and members; None for a
    /// queue that lives on one node.
    fn replication(&self) -> Option<(Option<u64>, Vec<u64>)> {
        None
    }

    /// The node a queue living on another node of the cluster lives on (None: it
    /// lives here, or is replicated).
    fn home(&self) -> Option<u64> {
        None
    }

    /// RabbitMQ's text for a missing queue.
    fn no_queue_text(&self) -> String {
        format!("no queue '{}' in vhost '{}'", self.name(), self.vhost())
    }
}

/// What a queue needs of the vhost that holds it: routing for dead-lettering, and
/// removing itself (x-expires; auto-delete once a timed-out consumer was its last).
/// The vhost implements it; a queue holds it weakly, so queues never keep a deleted
/// vhost alive.
pub trait QueueHost: Send + Sync {
    /// The vhost's name.
    fn name(&self) -> &Arc<str>;
    /// The broker's consumer timeout for queues without x-consumer-timeout (ms, 0:
    /// never), read when a queue is created.
    fn default_consumer_timeout_ms(&self) -> u64;
    /// Routes a dead-lettered message through `exchange` (no delay, no mandatory):
    /// appends its queues to `out` and returns the exchange's interned name.
    fn route_dead_letter(
        &self,
        exchange: &str,
        req: &RouteRequest<'_>,
        out: &mut Vec<QueueRef>,
    ) -> AmqpResult<Arc<str>>;
    /// Removes `queue` from the vhost; returns the ready messages it held.
    fn delete_queue(&self, queue: &Arc<Queue>) -> u32;
    /// The broker's store, where dead-lettered persistent messages are recorded.
    fn store(&self) -> &Option<StoreHandle>;
}

/// A consumer being attached (basic.consume).
pub struct NewConsumer<'a> {
    pub tag: Arc<str>,
    pub sink: Arc<dyn ConsumerSink>,
    pub exclusive: bool,
    /// basic.consume's `x-priority`, checked.
    pub priority: i32,
    pub no_ack: bool,
    /// The channel's per-consumer prefetch (0: unlimited).
    pub prefetch: u16,
    /// basic.consume's arguments (a stream reads `x-stream-offset`).
    pub arguments: &'a FieldTable,
    /// For a queue that [defers consume-ok](QueueType::defers_consume_ok): called once
    /// the consumer is registered (the channel then replies consume-ok and lets
    /// deliveries flow), or refused (the channel closes with the error). None: the
    /// channel replied already (or no-wait).
    pub registered: Option<Registered>,
}

/// See [`NewConsumer::registered`].
/// Ok: registered; Err: refused where it was decided (the channel closes with it).
pub type Registered = Box<dyn FnOnce(AmqpResult<()>) + Send>;

/// Where [`QueueType::get_later`] answers.
pub type GetDone = Box<dyn FnOnce(Option<(QueuedMessage, u32)>) + Send>;

/// `done`, guarded so that it runs exactly once: with the first value given to the
/// returned function, or with `fallback` after `timeout` if none came by then (an
/// answer that may never come must not leave a client waiting). An answer in time
/// cancels the timer.
pub(crate) fn answer_within<T: Send + 'static>(
    timeout: std::time::Duration,
    fallback: T,
    done: Box<dyn FnOnce(T) + Send>,
) -> Box<dyn FnOnce(T) + Send> {
    type Pending<T> = (Option<Box<dyn FnOnce(T) + Send>>, Option<smol::Task<()>>);
    type Slot<T> = std::sync::Mutex<Pending<T>>;
    fn take<T>(slot: &Slot<T>) -> Pending<T> {
        let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
        (s.0.take(), s.1.take())
    }
    let slot: Arc<Slot<T>> = Arc::new(std::sync::Mutex::new((Some(done), None)));
    let timer = slot.clone();
    let task = smol::spawn(async move {
        smol::Timer::after(timeout).await;
        // Its own handle stays in the slot (dropped with it, once this returned).
        let done = timer.lock().unwrap_or_else(|e| e.into_inner()).0.take();
        if let Some(done) = done {
            done(fallback);
        }
    });
    slot.lock().unwrap_or_else(|e| e.into_inner()).1 = Some(task);
    Box::new(move |value| {
        let (done, timer) = take(&slot);
        drop(timer);
        if let Some(done) = done {
            done(value);
        }
    })
}

/// Waits on this thread for what `start` answers through its callback (the blocking
/// forms of a queue's later answers: for the management API, on its blocking pool).
/// None if the callback was dropped unanswered.
pub(crate) fn wait_answer<T: Send + 'static>(start: impl FnOnce(Box<dyn FnOnce(T) + Send>)) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    start(Box::new(move |value| {
        let _ = tx.send(value);
    }));
    rx.recv().ok()
}

/// Operations a queue type may not support (see [`QueueType::refuse`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueOp {
    Get,
    Purge,
    NackOrReject,
    Recover,
}

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

/// What a publisher's channel offers the queues a publish goes to: it holds the
/// publish's confirm until every queue that took it has it safe (the channel's
/// confirm tracker implements it; the core never sees frames).
pub trait ConfirmHolder: Send + Sync {
    /// Publish `seq` waits for one more queue.
    fn hold(&self, seq: u64);
    /// A queue that held publish `seq` is done: it stored the message (`true`) or
    /// could not (`false`: the publisher gets a nack).
    fn release(&self, seq: u64, stored: bool);
    /// A queue that held publish `seq` refused it by its own rule (x-overflow
    /// reject-publish): a publisher waiting for a confirm gets a nack, as for a
    /// message that could not be stored; a transaction does not fail for it (RabbitMQ
    /// commits a transaction whose publish a queue refused).
    fn refused(&self, seq: u64) {
        self.release(seq, false);
    }
}

/// A publish's place in its channel's confirms (see [`QueueType::publish_confirmed`]).
#[derive(Clone, Copy)]
pub struct ConfirmRef<'a> {
    pub holder: &'a Arc<dyn ConfirmHolder>,
    pub seq: u64,
}

/// What [`QueueType::publish`] did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// The queue was deleted concurrently; the message is not in it.
    No,
    InMemory,
    /// Enqueued and its entry sent to the store.
    Stored,
    /// Refused by x-overflow reject-publish(-dlx): a confirming publisher gets a nack.
    Rejected,
    /// Dropped as a duplicate (x-message-deduplication): routed, confirmed, not kept.
    Duplicate,
    /// Handed to replication; the publisher's confirm is held until it is committed.
    Replicating,
}

/// A consumer that was attached when the queue was deleted; its channel must be told.
pub struct OrphanedConsumer {
    pub tag: Arc<str>,
    pub channel: Arc<dyn ConsumerSink>,
}

#[cfg(test)]
mod tests;
