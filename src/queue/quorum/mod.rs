//! The quorum queue (`x-queue-type: quorum` on a node of a cluster): a queue whose
//! every change is an entry in its own Raft log, replicated to a majority of its
//! members before it takes effect.
//!
//! The queue's state is `haremq_quorum`'s deterministic machine. Each member holds a
//! copy and applies every committed entry to it ([`QuorumQueue::apply_entry`], called by
//! the cluster layer's state machine), so all copies agree on which message is ready,
//! which is checked out to which consumer, and how often each was delivered. What this
//! node does with an entry's effects:
//!
//! - a delivery to a consumer attached *here* is offered to that consumer's channel
//!   (every member computes every delivery; each delivers to its own consumers, so a
//!   delivery never crosses the cluster twice);
//! - dead-lettering is done once, not once per member: by the node that proposed the
//!   command that caused it (every command is stamped with its proposer's key).
//!
//! Everything the queue is asked to do (publish, consume, ack, requeue, get, purge)
//! becomes a command proposed through [`Proposer`], which batches commands into
//! entries. A publisher's confirm is held until its entry is committed (a majority has
//! it on disk) and the machine accepted it; a follower's proposals are forwarded to the
//! leader by the log ([`ReplicaLog`], implemented by the cluster layer).
//!
//! The core defines [`ReplicaLog`]; the cluster layer (Raft) implements it, so nothing
//! here names Raft or the network.

pub mod codec;
mod proposer;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use amq_protocol::types::FieldTable;
use haremq_quorum::{Command, ConsumerKey, DeadLetterReason, Effect, MsgId, QueueConfig, Reply};

use super::consumer::same_sink;
use super::deadletter::{republish, Reason};
use super::kind::QueueKind;
use super::{
    ConfirmRef, ConsumerSink, Enqueued, NewConsumer, Offer, OrphanedConsumer, Queue, QueueArgs, QueueCounters,
    QueueHost, QueueSettings, QueueStats, QueueType,
};
use crate::error::{AmqpError, AmqpResult};
use crate::memory::MemoryCharge;
use crate::message::{Message, QueuedMessage};
use crate::policy::Applied;
pub use proposer::Proposer;

/// A quorum queue's replicated log, as the queue sees it (the cluster layer
/// implements it over Raft).
pub trait ReplicaLog: Send + Sync {
    /// Proposes one entry; `done` gets the answer of the state machine on the leader
    /// once a majority has stored and the leader applied it, or why that failed (no
    /// majority, the leader unreachable). Proposals from a follower are forwarded.
    /// Entries enter the log in the order of the calls, however many are in flight;
    /// `done` never runs inside the call.
    fn propose(&self, entry: Vec<u8>, done: Box<dyn FnOnce(Result<Vec<u8>, String>) + Send>);
    /// Whether this node leads the queue's group now.
    fn is_leader(&self) -> bool;
    /// The group's leader (node id), if known here, and its voters.
    fn leader_and_members(&self) -> (Option<u64>, Vec<u64>);
}

/// How long a synchronous operation (basic.get, purge) waits for its entry.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// The tag of the pseudo-consumer that basic.get checks messages out to.
const GET_TAG: &str = "basic.get";

pub struct QuorumQueue {
    name: Arc<str>,
    vhost: Arc<str>,
    settings: QueueSettings,
    owner: Weak<dyn QueueHost>,
    me: Weak<QuorumQueue>,
    /// This node's key in consumer keys: consumers attached here carry it, so a
    /// delivery is executed where its consumer is, and a restarted node's old consumers
    /// (another key) can be told apart and cancelled.
    node: u64,
    proposer: Arc<Proposer>,
    log: OnceLock<Arc<dyn ReplicaLog>>,
    state: Mutex<State>,
    /// Messages checked out to this node's consumers (and gets), by id: whom an ack
    /// settles for. Its own lock, never held while calling out: a channel settles
    /// (`forget`) while holding its own lock, and the state's lock is held while
    /// offering to channels.
    delivered: Mutex<HashMap<u64, ConsumerKey>>,
    counters: QueueCounters,
    deleted: AtomicBool,
    next_channel: AtomicU64,
    /// A `SetConfig` this node proposed is not applied yet (so the leader's tick does
    /// not propose the same change again while it is in flight).
    config_proposed: Arc<AtomicBool>,
}

struct State {
    machine: haremq_quorum::QuorumQueue,
    /// Consumers attached on this node.
    consumers: HashMap<ConsumerKey, LocalConsumer>,
    policies: Applied,
    /// The arguments the queue acts on: the declared ones under this node's policies
    /// (the dead-letter exchange and routing key are read from here when this node
    /// dead-letters).
    args: Arc<QueueArgs>,
    /// The machine configuration those arguments ask for. The machine's own
    /// configuration changes only through the log (`SetConfig`), so every member
    /// switches at the same entry; the leader proposes it when the two differ.
    wanted: QueueConfig,
}

struct LocalConsumer {
    tag: Arc<str>,
    sink: Arc<dyn ConsumerSink>,
    /// Deliveries the machine assigned while the channel could take no more (its
    /// client congested): offered again on `dispatch`.
    waiting: VecDeque<QueuedMessage>,
}

/// The machine's configuration for the arguments a queue acts on: the declared ones
/// (replicated with the declaration, so every member starts alike), or those under
/// policies. As RabbitMQ 3.10's quorum queues: `reject-publish-dlx` is not a quorum
/// queue strategy, and asking for it leaves the default (drop-head); an absent
/// delivery limit is HareMQ's default (see `QueueConfig`).
pub fn config_from(args: &QueueArgs) -> QueueConfig {
    let overflow = match args.overflow {
        super::Overflow::RejectPublish => haremq_quorum::Overflow::RejectPublish,
        super::Overflow::DropHead | super::Overflow::RejectPublishDlx => haremq_quorum::Overflow::DropHead,
    };
    let delivery_limit = match args.delivery_limit {
        Some(n) => Some(n.min(u64::from(u32::MAX)) as u32),
        None => QueueConfig::default().delivery_limit,
    };
    QueueConfig {
        delivery_limit,
        max_length: args.max_length,
        max_length_bytes: args.max_length_bytes,
        overflow,
        message_ttl_ms: args.message_ttl.map(u64::from),
        dead_letter: args.dead_letter_exchange.is_some(),
        single_active_consumer: args.single_active_consumer,
    }
}

impl QuorumQueue {
    /// A member's copy of the queue (its log attaches later, once its group is open).
    pub fn new(name: Arc<str>, host: &Arc<dyn QueueHost>, settings: QueueSettings, node: u64) -> Arc<QuorumQueue> {
        let args = QueueArgs::parse(&settings.arguments);
        let wanted = config_from(&args);
        let machine = haremq_quorum::QuorumQueue::new(wanted.clone());
        Arc::new_cyclic(|me| QuorumQueue {
            name,
            vhost: host.name().clone(),
            settings,
            owner: Arc::downgrade(host),
            me: me.clone(),
            node,
            proposer: Arc::default(),
            log: OnceLock::new(),
            state: Mutex::new(State {
                machine,
                consumers: HashMap::new(),
                policies: Applied::default(),
                args: Arc::new(args),
                wanted,
            }),
            delivered: Mutex::default(),
            counters: QueueCounters::default(),
            deleted: AtomicBool::new(false),
            next_channel: AtomicU64::new(1),
            config_proposed: Arc::default(),
        })
    }

    /// The queue's log is open on this node: proposals flow.
    pub fn attach_log(&self, log: Arc<dyn ReplicaLog>) {
        if self.log.set(log.clone()).is_ok() {
            self.proposer.attach(log);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn delivered(&self) -> MutexGuard<'_, HashMap<u64, ConsumerKey>> {
        self.delivered.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handle(&self) -> Option<Arc<Queue>> {
        self.me.upgrade().map(|q| q as Arc<Queue>)
    }

    fn is_leader(&self) -> bool {
        self.log.get().is_some_and(|l| l.is_leader())
    }

    /// `command` stamped with this node's key: whoever proposes a command executes the
    /// dead-lettering it causes (see [`QuorumQueue::apply_entry`]).
    fn stamped(&self, command: Command) -> Command {
        Command::Origin { node: self.node, command: Box::new(command) }
    }

    fn submit(&self, command: Command) {
        let name = self.name.clone();
        self.proposer.submit(
            &self.stamped(command),
            Box::new(move |r| {
                if let Err(e) = r {
                    log::warn!("quorum queue '{name}': a command was not committed: {e}");
                }
            }),
        );
    }

    /// Proposes `command`; `then` runs once it is applied, or failed, or after
    /// [`SYNC_TIMEOUT`] without an answer (a consume-ok waits on it: the client is not
    /// left waiting on a log that cannot commit; its consumer gets messages once the
    /// log has it).
    fn submit_then(&self, command: Command, then: Box<dyn FnOnce() + Send>) {
        let then = super::answer_within(SYNC_TIMEOUT, (), Box::new(move |()| then()));
        let name = self.name.clone();
        self.proposer.submit(
            &self.stamped(command),
            Box::new(move |r| {
                if let Err(e) = r {
                    log::warn!("quorum queue '{name}': a command was not committed: {e}");
                }
                then(());
            }),
        );
    }

    /// What a basic.get's `Dequeue` reply delivers: the message (recorded as checked
    /// out unless no-ack) and the ready count left.
    fn got(&self, no_ack: bool, reply: Result<Reply, String>) -> Option<(QueuedMessage, u32)> {
        match reply {
            Ok(Reply::Message { id, msg, redelivered, delivery_count, remaining }) => {
                let message = self.message_of(&msg)?;
                let mut qm = QueuedMessage::new(id.0, redelivered, message);
                qm.requeues = delivery_count.min(u32::from(u16::MAX)) as u16;
                if !no_ack {
                    self.delivered().insert(id.0, self.get_key());
                }
                self.counters.delivered(false, no_ack, redelivered);
                Some((qm, remaining.min(u64::from(u32::MAX)) as u32))
            }
            Ok(_) => None,
            Err(e) => {
                log::warn!("quorum queue '{}': basic.get failed: {e}", self.name);
                None
            }
        }
    }

    fn get_key(&self) -> ConsumerKey {
        ConsumerKey { node: self.node, channel: 0, tag: GET_TAG.into() }
    }

    /// The broker message a logged one stands for.
    fn message_of(&self, logged: &haremq_quorum::Message) -> Option<Arc<Message>> {
        let m = codec::decode_message(&logged.body)?;
        Some(Arc::new(Message {
            exchange: m.exchange.into(),
            routing_key: m.routing_key.into(),
            raw_properties: m.raw_properties.into(),
            body: m.body.into(),
            persistent: m.persistent,
            published_ms: logged.enqueued_at_ms,
            ttl: None,
            store: Default::default(),
            charge: MemoryCharge::content(m.routing_key, m.raw_properties, m.body),
        }))
    }

    /// Applies one committed entry of the queue's log to this node's copy, executes
    /// what is this node's to execute, and answers the entry's replies (joined). Called
    /// by the cluster layer, in log order, on every member.
    pub fn apply_entry(&self, index: u64, entry: &[u8]) -> Vec<u8> {
        let Some(parts) = codec::split(entry) else {
            log::error!("quorum queue '{}': log entry {index} is damaged; skipped", self.name);
            return Vec::new();
        };
        let handle = self.handle();
        let leader = self.is_leader();
        let mut replies = Vec::with_capacity(parts.len());
        let mut settle_now = Vec::new();
        let mut gone = Vec::new();
        let mut dead = Vec::new();
        {
            let mut st = self.lock();
            for part in parts {
                let (origin, command) = match haremq_quorum::decode_command(part) {
                    Ok(Command::Origin { node, command }) => (Some(node), *command),
                    Ok(c) => (None, c),
                    Err(e) => {
                        log::error!("quorum queue '{}': a command in entry {index} is unreadable ({e})", self.name);
                        replies.push(codec::encode_reply(&Reply::Rejected));
                        continue;
                    }
                };
                if matches!(command, Command::Enqueue { .. }) {
                    self.counters.publish.bump(1);
                }
                let (reply, effects) = st.machine.apply(command);
                for effect in effects {
                    match effect {
                        Effect::Deliver { consumer, id, msg, redelivered, delivery_count } => {
                            if consumer.node != self.node {
                                continue;
                            }
                            let (Some(q), Some(message)) = (&handle, self.message_of(&msg)) else {
                                continue;
                            };
                            let mut qm = QueuedMessage::new(id.0, redelivered, message);
                            qm.requeues = delivery_count.min(u32::from(u16::MAX)) as u16;
                            let Some(c) = st.consumers.get_mut(&consumer) else {
                                // A consumer of this node that is gone (closed before
                                // the entry applied, or of an earlier run): its
                                // messages go back.
                                gone.push(consumer);
                                continue;
                            };
                            if !c.waiting.is_empty() {
                                c.waiting.push_back(qm);
                                continue;
                            }
                            // Recorded before the offer: the client may ack or reject the
                            // delivery (on another thread) as soon as it is written.
                            self.delivered().insert(id.0, consumer.clone());
                            match c.sink.offer(q, &c.tag, &qm) {
                                Offer::Delivered { no_ack } => {
                                    self.counters.delivered(true, no_ack, redelivered);
                                    if no_ack {
                                        self.delivered().remove(&id.0);
                                        settle_now.push((consumer, id));
                                    }
                                }
                                Offer::Busy => {
                                    self.delivered().remove(&id.0);
                                    c.waiting.push_back(qm)
                                }
                                Offer::Gone => {
                                    self.delivered().remove(&id.0);
                                    gone.push(consumer)
                                }
                            }
                        }
                        Effect::DeadLetter { msg, reason, .. } => {
                            // The proposer of the command does it: one node, fixed by
                            // the log. (The leader is not: while leadership moves, the
                            // old and the new leader may both, or neither, believe they
                            // lead when they apply the same entry.) The key carries this
                            // run's incarnation, so entries replayed after a restart
                            // are not dead-lettered again. Entries without a stamp
                            // (written before stamps existed): the leader.
                            if origin.map_or(leader, |node| node == self.node) {
                                dead.push((msg, reason));
                            }
                        }
                        Effect::Dropped { .. } | Effect::ConsumerActive { .. } => {}
                    }
                }
                replies.push(codec::encode_reply(&reply));
            }
        }
        for (consumer, id) in settle_now {
            self.submit(Command::Settle { consumer, ids: vec![id] });
        }
        gone.sort();
        gone.dedup();
        for consumer in gone {
            self.lock().consumers.remove(&consumer);
            self.submit(Command::Cancel { consumer });
        }
        if !dead.is_empty() {
            self.dead_letter(dead);
        }
        codec::join(&replies)
    }

    /// Republishes messages the machine dead-lettered to the queue's DLX, through this
    /// node's exchanges (the proposer of the command does it, once; at most once, as
    /// RabbitMQ's default for quorum queues: lost if this node stops first).
    fn dead_letter(&self, dead: Vec<(haremq_quorum::Message, DeadLetterReason)>) {
        let Some(vh) = self.owner.upgrade() else { return };
        let args = self.lock().args.clone();
        for (logged, reason) in dead {
            let Some(m) = self.message_of(&logged) else { continue };
            let reason = match reason {
                DeadLetterReason::Expired => Reason::Expired,
                DeadLetterReason::Rejected => Reason::Rejected,
                DeadLetterReason::DeliveryLimit => Reason::DeliveryLimit,
                DeadLetterReason::MaxLen => Reason::Maxlen,
            };
            republish(&vh, &self.name, &args, &m, reason);
        }
    }

    /// The whole state, for a snapshot of the queue's log.
    pub fn snapshot(&self) -> Vec<u8> {
        self.lock().machine.snapshot()
    }

    /// Replaces the state with a snapshot's (a member that was behind, or a restart).
    pub fn restore(&self, snapshot: &[u8]) {
        match haremq_quorum::QuorumQueue::restore(snapshot) {
            Ok(machine) => self.lock().machine = machine,
            Err(e) => log::error!("quorum queue '{}': its snapshot cannot be read ({e})", self.name),
        }
    }

    /// The leader's periodic duties: time for TTLs (the machine's clock is the log's),
    /// and cancelling consumers whose node key `stale` says are of a node that is gone
    /// or restarted.
    pub fn leader_tick(&self, now_ms: u64, stale: &dyn Fn(u64) -> bool) {
        if !self.is_leader() || self.deleted.load(Ordering::Relaxed) {
            return;
        }
        let (ready, nodes) = {
            let st = self.lock();
            (st.machine.stats().ready, st.machine.consumer_nodes().collect::<Vec<u64>>())
        };
        // A policy change seen while this node did not lead (or before the log was
        // open), or a leader whose policies differ from its predecessor's.
        self.propose_config();
        if ready > 0 && self.proposer.backlog() == 0 {
            self.submit(Command::Tick { now_ms });
        }
        for node in nodes.into_iter().filter(|n| stale(*n)) {
            log::info!("quorum queue '{}': returning the messages of consumers on a node that is gone", self.name);
            self.submit(Command::CancelNode { node });
        }
    }

    /// On the leader: proposes the configuration this node's policies ask for, if the
    /// machine's differs and no earlier proposal is still in flight. Only the leader
    /// proposes, so that members whose (per-node) policies differ do not undo each
    /// other: the leader's policies decide.
    fn propose_config(&self) {
        if !self.is_leader() || self.deleted.load(Ordering::Relaxed) {
            return;
        }
        let wanted = {
            let st = self.lock();
            if st.wanted == *st.machine.config() {
                return;
            }
            st.wanted.clone()
        };
        if self.config_proposed.swap(true, Ordering::AcqRel) {
            return;
        }
        let (name, proposed) = (self.name.clone(), self.config_proposed.clone());
        self.proposer.submit(
            &self.stamped(Command::SetConfig(wanted)),
            Box::new(move |r| {
                proposed.store(false, Ordering::Release);
                if let Err(e) = r {
                    log::warn!("quorum queue '{name}': a configuration change was not committed: {e}");
                }
            }),
        );
    }

    fn settle(&self, m: &QueuedMessage, how: fn(ConsumerKey, Vec<MsgId>) -> Command) {
        let key = self.delivered().remove(&m.seq);
        if let Some(consumer) = key {
            self.submit(how(consumer, vec![MsgId(m.seq)]));
        }
    }
}

impl QueueType for QuorumQueue {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn vhost(&self) -> &Arc<str> {
        &self.vhost
    }

    fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    fn is_durable(&self) -> bool {
        true
    }

    fn kind(&self) -> QueueKind {
        QueueKind::Quorum
    }

    /// The log holds the messages, not the store's message table.
    fn needs_store_record(&self) -> bool {
        false
    }

    fn publish(&self, message: Arc<Message>) -> Enqueued {
        self.publish_confirmed(message, None)
    }

    fn publish_confirmed(&self, message: Arc<Message>, confirm: Option<ConfirmRef<'_>>) -> Enqueued {
        if self.deleted.load(Ordering::Relaxed) {
            return Enqueued::No;
        }
        let mut logged = haremq_quorum::Message::new(codec::encode_message(&message), message.published_ms);
        // x-max-length-bytes (and message_bytes_ready) count bodies, as RabbitMQ's;
        // the logged bytes also carry the exchange, routing key and properties.
        logged.size = message.body.len() as u64;
        logged.expires_at_ms = message.ttl.map(|ttl| message.published_ms + u64::from(ttl));
        let command = Command::Enqueue { msg: logged, publisher: None };
        match confirm {
            Some(c) => {
                let (holder, seq) = (c.holder.clone(), c.seq);
                holder.hold(seq);
                self.proposer.submit(
                    &self.stamped(command),
                    Box::new(move |r| match r {
                        Ok(Reply::Rejected) => holder.refused(seq),
                        r => holder.release(seq, matches!(r, Ok(Reply::Accepted { .. } | Reply::Duplicate))),
                    }),
                );
                Enqueued::Replicating
            }
            None => {
                self.submit(command);
                Enqueued::InMemory
            }
        }
    }

    fn add_consumer(&self, c: NewConsumer<'_>) -> AmqpResult<()> {
        if self.deleted.load(Ordering::Relaxed) {
            return Err(AmqpError::NotFound(self.no_queue_text()));
        }
        let key = ConsumerKey {
            node: self.node,
            channel: self.next_channel.fetch_add(1, Ordering::Relaxed),
            tag: c.tag.to_string(),
        };
        {
            let mut st = self.lock();
            if c.exclusive && st.machine.stats().consumers > 0 {
                return Err(AmqpError::AccessRefused(format!(
                    "queue '{}' in vhost '{}' in exclusive use",
                    self.name, self.vhost
                )));
            }
            st.consumers.insert(key.clone(), LocalConsumer { tag: c.tag, sink: c.sink, waiting: VecDeque::new() });
        }
        let credit = if c.no_ack { 0 } else { u32::from(c.prefetch) };
        let command = Command::Checkout { consumer: key, credit };
        match c.registered {
            Some(registered) => self.submit_then(command, Box::new(move || registered(Ok(())))),
            None => self.submit(command),
        }
        Ok(())
    }

    fn defers_consume_ok(&self) -> bool {
        true
    }

    fn remove_consumer(&self, tag: &str, sink: &dyn ConsumerSink) -> bool {
        let key = {
            let mut st = self.lock();
            let key =
                st.consumers.iter().find(|(_, c)| &*c.tag == tag && same_sink(&*c.sink, sink)).map(|(k, _)| k.clone());
            if let Some(k) = &key {
                st.consumers.remove(k);
            }
            key
        };
        if let Some(consumer) = key {
            // It may still settle what it holds (basic.cancel leaves the channel's
            // unacked deliveries to it); the channel returns what it never acks.
            self.submit(Command::Detach { consumer });
        }
        false
    }

    fn dispatch(&self) {
        let Some(q) = self.handle() else { return };
        let mut settle_now = Vec::new();
        {
            let mut st = self.lock();
            for (key, c) in st.consumers.iter_mut() {
                while let Some(qm) = c.waiting.front() {
                    // Recorded before the offer (see `apply_entry`).
                    self.delivered().insert(qm.seq, key.clone());
                    match c.sink.offer(&q, &c.tag, qm) {
                        Offer::Delivered { no_ack } => {
                            self.counters.delivered(true, no_ack, qm.redelivered);
                            if no_ack {
                                self.delivered().remove(&qm.seq);
                                settle_now.push((key.clone(), MsgId(qm.seq)));
                            }
                            c.waiting.pop_front();
                        }
                        Offer::Busy | Offer::Gone => {
                            self.delivered().remove(&qm.seq);
                            break;
                        }
                    }
                }
            }
        }
        for (consumer, id) in settle_now {
            self.submit(Command::Settle { consumer, ids: vec![id] });
        }
    }

    /// The blocking form of [`get_later`](QueueType::get_later) (the management API).
    fn get(&self, no_ack: bool, f: &mut dyn FnMut(QueuedMessage, u32)) -> bool {
        match super::wait_answer(|done| self.get_later(no_ack, done)).flatten() {
            // Not under the queue's lock: the channel settles a no-ack get at once
            // (forget), which takes it.
            Some((qm, left)) => {
                f(qm, left);
                true
            }
            None => false,
        }
    }

    fn answers_later(&self) -> bool {
        true
    }

    fn get_later(&self, no_ack: bool, done: super::GetDone) {
        let done = super::answer_within(SYNC_TIMEOUT, None, done);
        let me = self.me.clone();
        self.proposer.submit(
            &self.stamped(Command::Dequeue { consumer: self.get_key(), settled: no_ack }),
            Box::new(move |reply| match me.upgrade() {
                Some(q) => done(q.got(no_ack, reply)),
                None => done(None),
            }),
        );
    }

    fn purge_later(&self, done: Box<dyn FnOnce(u32) + Send>) {
        let done = super::answer_within(SYNC_TIMEOUT, 0, done);
        let name = self.name.clone();
        self.proposer.submit(&self.stamped(Command::Purge), Box::new(move |reply| done(purged(&name, reply))));
    }

    fn mark_delivered(&self, _m: &QueuedMessage) {}

    fn forget(&self, m: &QueuedMessage) {
        self.settle(m, |consumer, ids| Command::Settle { consumer, ids });
    }

    fn requeue(&self, messages: &mut dyn Iterator<Item = QueuedMessage>) {
        for m in messages {
            self.counters.returned.add(1);
            self.settle(&m, |consumer, ids| Command::Return { consumer, ids });
        }
    }

    fn reject(&self, m: QueuedMessage) {
        self.counters.rejected.add(1);
        self.settle(&m, |consumer, ids| Command::Discard { consumer, ids });
    }

    /// The blocking form of [`purge_later`](QueueType::purge_later).
    fn purge(&self) -> u32 {
        super::wait_answer(|done| self.purge_later(done)).unwrap_or(0)
    }

    fn mark_deleted(&self) -> (u32, Vec<OrphanedConsumer>) {
        self.deleted.store(true, Ordering::Relaxed);
        let mut st = self.lock();
        let count = st.machine.stats().ready.min(u64::from(u32::MAX)) as u32;
        let orphans = st.consumers.drain().map(|(_, c)| OrphanedConsumer { tag: c.tag, channel: c.sink }).collect();
        (count, orphans)
    }

    fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Relaxed)
    }

    fn touch(&self) {}

    fn message_count(&self) -> u32 {
        self.lock().machine.stats().ready.min(u64::from(u32::MAX)) as u32
    }

    /// With single active consumer, only the active one (RabbitMQ 3.10's declare-ok
    /// counts the waiting ones out; checked): 1 while any is subscribed, as the first
    /// subscribed is active. Listings count every consumer (`stats`).
    fn consumer_count(&self) -> u32 {
        let st = self.lock();
        if st.machine.config().single_active_consumer {
            return u32::from(st.machine.active_consumer().is_some());
        }
        st.machine.stats().consumers.min(u64::from(u32::MAX)) as u32
    }

    fn counters(&self) -> &QueueCounters {
        &self.counters
    }

    fn stats(&self) -> QueueStats {
        let s = self.lock().machine.stats();
        QueueStats {
            messages_ready: s.ready,
            messages_unacknowledged: s.checked_out,
            message_bytes_ready: s.ready_bytes,
            consumers: s.consumers.min(u64::from(u32::MAX)) as u32,
            messages: self.counters.message_stats(),
        }
    }

    /// Recomputes the arguments the queue acts on (as a classic queue does) and, on
    /// the leader, proposes the machine configuration they ask for through the log
    /// (`SetConfig`): a lower length limit then trims the head on every member at the
    /// same entry, a TTL expires it. A follower only records them; the leader's tick
    /// reconciles (see [`QuorumQueue::propose_config`]).
    fn apply_policies(&self, applied: Applied) {
        let args = QueueArgs::effective(
            &self.settings.arguments,
            &crate::policy::Definition::parse(&applied.effective_definition()),
        );
        {
            let mut st = self.lock();
            st.wanted = config_from(&args);
            st.args = Arc::new(args);
            st.policies = applied;
        }
        self.propose_config();
    }

    fn policies(&self) -> Applied {
        self.lock().policies.clone()
    }

    fn replication(&self) -> Option<(Option<u64>, Vec<u64>)> {
        Some(self.log.get().map_or((None, Vec::new()), |l| l.leader_and_members()))
    }
}

/// The x-arguments a quorum queue's declaration carries as given (used by the cluster
/// layer to size the group).
pub fn initial_group_size(arguments: &FieldTable) -> Option<u64> {
    arguments.inner().get("x-quorum-initial-group-size").and_then(super::args::int_value).and_then(|n| {
        let n: Option<u64> = u64::try_from(n).ok();
        n.filter(|n| *n > 0)
    })
}

/// What a `Purge` reply purged (0 if it failed, logged).
fn purged(name: &str, reply: Result<Reply, String>) -> u32 {
    match reply {
        Ok(Reply::Purged { count }) => count.min(u64::from(u32::MAX)) as u32,
        Ok(_) => 0,
        Err(e) => {
            log::warn!("quorum queue '{name}': purge failed: {e}");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use amq_protocol::types::AMQPValue;

    use super::*;

    #[test]
    fn policies_give_the_machine_lower_limits_a_dlx_and_never_reject_publish_dlx() {
        let mut declared = FieldTable::default();
        declared.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        declared.insert("x-max-length".into(), AMQPValue::LongInt(10));
        let at_declaration = config_from(&QueueArgs::parse(&declared));
        assert_eq!((at_declaration.max_length, at_declaration.dead_letter), (Some(10), false));
        assert_eq!(at_declaration.delivery_limit, QueueConfig::default().delivery_limit);
        let policy: serde_json::Map<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
            "max-length": 2, "delivery-limit": 3, "message-ttl": 500,
            "dead-letter-exchange": "dlx", "overflow": "reject-publish-dlx"
        }))
        .unwrap();
        let c = config_from(&QueueArgs::effective(&declared, &crate::policy::Definition::parse(&policy)));
        assert_eq!(c.max_length, Some(2), "the lower of argument and policy");
        assert_eq!((c.delivery_limit, c.message_ttl_ms, c.dead_letter), (Some(3), Some(500), true));
        assert_eq!(c.overflow, haremq_quorum::Overflow::DropHead, "RabbitMQ 3.10 ignores reject-publish-dlx here");
        // The argument wins over a higher policy limit.
        let policy = serde_json::from_value(serde_json::json!({"max-length": 50})).unwrap();
        let c = config_from(&QueueArgs::effective(&declared, &crate::policy::Definition::parse(&policy)));
        assert_eq!(c.max_length, Some(10));
    }
}
