//! The quorum queue state machine: `apply` a committed command, get a reply and the
//! effects to execute (on the leader).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::command::{decode_exact, Command, Publisher};
use crate::config::{Overflow, QueueConfig};
use crate::consumer::{Consumer, ConsumerKey};
use crate::effect::{DeadLetterReason, Effect};
use crate::error::Error;
use crate::message::{Message, MsgId};
use crate::reply::Reply;
use crate::stats::Stats;

/// The first byte of a snapshot: bump when the encoding of `QuorumQueue` changes.
const SNAPSHOT_VERSION: u8 = 1;

/// A stored message and how many of its deliveries were returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    msg: Message,
    delivery_count: u32,
}

/// The replicated state of one quorum queue. Every field is ordered data (`BTreeMap`,
/// `VecDeque`, `Vec`), never a hash map, so iteration order and snapshot bytes are the
/// same on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumQueue {
    config: QueueConfig,
    next_id: u64,
    /// The highest clock seen in the log (`Tick`, enqueue times): the machine's "now".
    now_ms: u64,
    /// Every live message: ready or checked out.
    messages: BTreeMap<MsgId, Stored>,
    /// Ready messages in delivery order (returned ones at the front).
    ready: VecDeque<MsgId>,
    ready_bytes: u64,
    /// In checkout order; `basic.get` holders are here too, with no credit.
    consumers: Vec<Consumer>,
    /// Round robin: the index in `consumers` to try first for the next assignment.
    cursor: usize,
    /// Single active consumer: the current one.
    active: Option<ConsumerKey>,
    /// The last applied publish sequence per (node, channel).
    publishers: BTreeMap<(u64, u64), u64>,
    total_enqueued: u64,
    total_delivered: u64,
    total_acked: u64,
}

impl QuorumQueue {
    pub fn new(config: QueueConfig) -> Self {
        QuorumQueue {
            config,
            next_id: 1,
            now_ms: 0,
            messages: BTreeMap::new(),
            ready: VecDeque::new(),
            ready_bytes: 0,
            consumers: Vec::new(),
            cursor: 0,
            active: None,
            publishers: BTreeMap::new(),
            total_enqueued: 0,
            total_delivered: 0,
            total_acked: 0,
        }
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    pub fn stats(&self) -> Stats {
        Stats {
            ready: self.ready.len() as u64,
            ready_bytes: self.ready_bytes,
            checked_out: self.messages.len().saturating_sub(self.ready.len()) as u64,
            consumers: self.consumers.iter().filter(|c| c.subscribed()).count() as u64,
            total_enqueued: self.total_enqueued,
            total_delivered: self.total_delivered,
            total_acked: self.total_acked,
        }
    }

    /// Ready messages in the order they will be delivered.
    pub fn ready_ids(&self) -> impl Iterator<Item = MsgId> + '_ {
        self.ready.iter().copied()
    }

    /// The consumer (or `basic.get` key) holding `id`, if it is checked out.
    pub fn holder(&self, id: MsgId) -> Option<&ConsumerKey> {
        self.consumers.iter().find(|c| c.held.contains(&id)).map(|c| &c.key)
    }

    /// The messages `consumer` holds, in id order.
    pub fn held_by(&self, consumer: &ConsumerKey) -> Vec<MsgId> {
        self.consumer(consumer).map(|c| c.held.iter().copied().collect()).unwrap_or_default()
    }

    /// The credit of a subscribed consumer (0 = unlimited).
    pub fn credit(&self, consumer: &ConsumerKey) -> Option<u32> {
        self.consumer(consumer).and_then(|c| c.credit)
    }

    /// The node keys of every consumer (and `basic.get` holder), ascending, each once:
    /// what the leader checks for consumers of nodes that are gone.
    pub fn consumer_nodes(&self) -> impl Iterator<Item = u64> {
        let nodes: std::collections::BTreeSet<u64> = self.consumers.iter().map(|c| c.key.node).collect();
        nodes.into_iter()
    }

    /// Single active consumer: who is active.
    pub fn active_consumer(&self) -> Option<&ConsumerKey> {
        self.active.as_ref()
    }

    /// Applies one committed command. Deterministic: the same state and command give the
    /// same new state, reply and effects on every replica. Never panics on odd input
    /// (unknown consumers or ids are ignored).
    pub fn apply(&mut self, cmd: Command) -> (Reply, Vec<Effect>) {
        let mut fx = Vec::new();
        let reply = match cmd {
            Command::Enqueue { msg, publisher } => self.enqueue(msg, publisher, &mut fx),
            Command::Checkout { consumer, credit } => {
                match self.position(&consumer) {
                    Some(i) => self.consumers[i].credit = Some(credit),
                    None => {
                        self.consumers.push(Consumer { key: consumer, credit: Some(credit), held: BTreeSet::new() })
                    }
                }
                Reply::Ok
            }
            Command::Cancel { consumer } => {
                if let Some(i) = self.position(&consumer) {
                    let c = self.remove_consumer(i);
                    self.requeue(c.held.into_iter().collect(), &mut fx);
                }
                Reply::Ok
            }
            Command::Detach { consumer } => {
                if let Some(i) = self.position(&consumer) {
                    self.consumers[i].credit = None;
                    if self.consumers[i].held.is_empty() {
                        self.remove_consumer(i);
                    }
                }
                Reply::Ok
            }
            Command::Settle { consumer, ids } => self.settle(&consumer, ids, &mut fx, |q, id, _| {
                q.messages.remove(&id);
                q.total_acked += 1;
            }),
            Command::Return { consumer, ids } => {
                let mut returned = Vec::new();
                let reply = self.settle(&consumer, ids, &mut fx, |_, id, _| returned.push(id));
                returned.sort_unstable();
                self.requeue(returned, &mut fx);
                reply
            }
            Command::Discard { consumer, ids } => self.settle(&consumer, ids, &mut fx, |q, id, fx| {
                q.remove_dead(id, DeadLetterReason::Rejected, fx);
            }),
            Command::Dequeue { consumer, settled } => self.dequeue(consumer, settled, &mut fx),
            Command::Purge => {
                let count = self.ready.len() as u64;
                for id in std::mem::take(&mut self.ready) {
                    self.messages.remove(&id);
                }
                self.ready_bytes = 0;
                Reply::Purged { count }
            }
            Command::Tick { now_ms } => {
                self.now_ms = self.now_ms.max(now_ms);
                Reply::Ok
            }
            Command::CancelNode { node } => {
                let mut returned = Vec::new();
                while let Some(i) = self.consumers.iter().position(|c| c.key.node == node) {
                    returned.extend(self.remove_consumer(i).held);
                }
                returned.sort_unstable();
                self.requeue(returned, &mut fx);
                self.publishers.retain(|&(n, _), _| n != node);
                Reply::Ok
            }
            Command::SetConfig(config) => {
                self.config = config;
                self.drop_head_over_limit(&mut fx);
                Reply::Ok
            }
            // Decoded commands nest no deeper than one stamp (`decode_command`).
            Command::Origin { command, .. } => return self.apply(*command),
        };
        // Every command ends the same way: expire the head, then hand out what can be
        // handed out. Doing it unconditionally keeps the invariant "ready messages exist
        // only when no eligible consumer has credit" without per-command reasoning.
        self.expire_head(&mut fx);
        self.assign(&mut fx);
        (reply, fx)
    }

    /// The whole state, versioned, as bytes (postcard). Identical states give identical
    /// bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = vec![SNAPSHOT_VERSION];
        // Serialising plain ordered data into a Vec cannot fail.
        if let Ok(body) = postcard::to_stdvec(self) {
            out.extend_from_slice(&body);
        }
        out
    }

    /// Rebuilds a machine from `snapshot`'s bytes, checking that the state is consistent
    /// (a corrupt snapshot is an error, never a panic later).
    pub fn restore(bytes: &[u8]) -> Result<Self, Error> {
        let (&version, body) = bytes.split_first().ok_or_else(|| Error::Malformed("empty snapshot".into()))?;
        if version != SNAPSHOT_VERSION {
            return Err(Error::UnknownVersion(version));
        }
        let queue: QuorumQueue = decode_exact(body, usize::MAX)?;
        queue.validate()?;
        Ok(queue)
    }

    fn validate(&self) -> Result<(), Error> {
        let mut seen = BTreeSet::new();
        let mut bytes = 0u64;
        for id in &self.ready {
            let stored = self.messages.get(id).ok_or(Error::Inconsistent("ready id without message"))?;
            bytes = bytes.saturating_add(stored.msg.size);
            if !seen.insert(*id) {
                return Err(Error::Inconsistent("id ready twice"));
            }
        }
        if bytes != self.ready_bytes {
            return Err(Error::Inconsistent("ready bytes"));
        }
        let mut keys = BTreeSet::new();
        for c in &self.consumers {
            if !keys.insert(&c.key) {
                return Err(Error::Inconsistent("consumer twice"));
            }
            for id in &c.held {
                if !self.messages.contains_key(id) || !seen.insert(*id) {
                    return Err(Error::Inconsistent("held id missing or not unique"));
                }
            }
        }
        if seen.len() != self.messages.len() {
            return Err(Error::Inconsistent("message neither ready nor held"));
        }
        if self.messages.keys().next_back().is_some_and(|id| id.0 >= self.next_id) {
            return Err(Error::Inconsistent("id beyond next id"));
        }
        if self.cursor > 0 && self.cursor >= self.consumers.len() {
            return Err(Error::Inconsistent("cursor"));
        }
        Ok(())
    }

    fn enqueue(&mut self, msg: Message, publisher: Option<Publisher>, fx: &mut Vec<Effect>) -> Reply {
        if let Some(p) = publisher {
            if self.publishers.get(&(p.node, p.channel)).is_some_and(|&last| p.seq <= last) {
                return Reply::Duplicate;
            }
        }
        if self.config.overflow == Overflow::RejectPublish && self.would_exceed(msg.size) {
            return Reply::Rejected;
        }
        if let Some(p) = publisher {
            self.publishers.insert((p.node, p.channel), p.seq);
        }
        let id = MsgId(self.next_id);
        self.next_id += 1;
        self.total_enqueued += 1;
        let enqueued_at = msg.enqueued_at_ms;
        self.ready_bytes = self.ready_bytes.saturating_add(msg.size);
        self.messages.insert(id, Stored { msg, delivery_count: 0 });
        self.ready.push_back(id);
        self.drop_head_over_limit(fx);
        // Assign before the clock moves to this publish's time, so a message with TTL 0
        // reaches a waiting consumer (as in RabbitMQ) and expires only if none waits.
        self.expire_head(fx);
        self.assign(fx);
        self.now_ms = self.now_ms.max(enqueued_at);
        Reply::Accepted { id }
    }

    fn would_exceed(&self, size: u64) -> bool {
        self.config.max_length.is_some_and(|max| self.ready.len() as u64 >= max)
            || self.config.max_length_bytes.is_some_and(|max| self.ready_bytes.saturating_add(size) > max)
    }

    fn over_limit(&self) -> bool {
        self.config.max_length.is_some_and(|max| self.ready.len() as u64 > max)
            || self.config.max_length_bytes.is_some_and(|max| self.ready_bytes > max)
    }

    fn drop_head_over_limit(&mut self, fx: &mut Vec<Effect>) {
        if self.config.overflow != Overflow::DropHead {
            return;
        }
        while self.over_limit() {
            let Some(id) = self.pop_ready() else { break };
            self.remove_dead(id, DeadLetterReason::MaxLen, fx);
        }
    }

    /// Settle, Return and Discard: `each` runs for every id `consumer` holds (removed
    /// from its holdings first); the others are reported back.
    fn settle(
        &mut self,
        consumer: &ConsumerKey,
        ids: Vec<MsgId>,
        fx: &mut Vec<Effect>,
        mut each: impl FnMut(&mut Self, MsgId, &mut Vec<Effect>),
    ) -> Reply {
        let mut unknown = Vec::new();
        let Some(i) = self.position(consumer) else {
            return Reply::UnknownIds { ids };
        };
        for id in ids {
            if self.consumers[i].held.remove(&id) {
                each(self, id, fx);
            } else {
                unknown.push(id);
            }
        }
        if !self.consumers[i].subscribed() && self.consumers[i].held.is_empty() {
            self.remove_consumer(i);
        }
        if unknown.is_empty() {
            Reply::Ok
        } else {
            Reply::UnknownIds { ids: unknown }
        }
    }

    fn dequeue(&mut self, consumer: ConsumerKey, settled: bool, fx: &mut Vec<Effect>) -> Reply {
        self.expire_head(fx);
        let Some(id) = self.pop_ready() else { return Reply::Empty };
        let Some(stored) = self.messages.get(&id) else { return Reply::Empty };
        let (msg, delivery_count) = (stored.msg.clone(), stored.delivery_count);
        self.total_delivered += 1;
        if settled {
            self.messages.remove(&id);
            self.total_acked += 1;
        } else {
            match self.position(&consumer) {
                Some(i) => {
                    self.consumers[i].held.insert(id);
                }
                None => self.consumers.push(Consumer { key: consumer, credit: None, held: BTreeSet::from([id]) }),
            }
        }
        // Expire what the taken message uncovered, so that `remaining` is accurate.
        self.expire_head(fx);
        Reply::Message { id, msg, redelivered: delivery_count > 0, delivery_count, remaining: self.ready.len() as u64 }
    }

    /// Puts returned messages (sorted by id) back at the head of the queue in that order,
    /// counting the failed delivery; those over the delivery limit are dead-lettered.
    fn requeue(&mut self, ids: Vec<MsgId>, fx: &mut Vec<Effect>) {
        let mut back = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(stored) = self.messages.get_mut(&id) else { continue };
            stored.delivery_count = stored.delivery_count.saturating_add(1);
            if self.config.delivery_limit.is_some_and(|limit| stored.delivery_count > limit) {
                self.remove_dead(id, DeadLetterReason::DeliveryLimit, fx);
            } else {
                back.push((id, stored.msg.size));
            }
        }
        for (id, size) in back.into_iter().rev() {
            self.ready_bytes = self.ready_bytes.saturating_add(size);
            self.ready.push_front(id);
        }
    }

    /// Removes the head message while it has expired (TTL is checked at the head only, as
    /// in RabbitMQ: a live message at the head shields expired ones behind it).
    fn expire_head(&mut self, fx: &mut Vec<Effect>) {
        while let Some(&id) = self.ready.front() {
            let expired =
                self.messages.get(&id).is_none_or(|s| self.expiry(&s.msg).is_some_and(|at| at <= self.now_ms));
            if !expired {
                break;
            }
            self.pop_ready();
            if self.messages.contains_key(&id) {
                self.remove_dead(id, DeadLetterReason::Expired, fx);
            }
        }
    }

    fn expiry(&self, msg: &Message) -> Option<u64> {
        let queue_ttl = self.config.message_ttl_ms.map(|ttl| msg.enqueued_at_ms.saturating_add(ttl));
        match (msg.expires_at_ms, queue_ttl) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Hands ready messages to consumers with free credit: round robin over subscribed
    /// consumers in checkout order, or only the active one with single active consumer.
    fn assign(&mut self, fx: &mut Vec<Effect>) {
        self.refresh_active(fx);
        while !self.ready.is_empty() {
            let Some(i) = self.next_eligible() else { break };
            self.expire_head(fx);
            let Some(id) = self.pop_ready() else { break };
            let Some(stored) = self.messages.get(&id) else { continue };
            let consumer = &mut self.consumers[i];
            consumer.held.insert(id);
            fx.push(Effect::Deliver {
                consumer: consumer.key.clone(),
                id,
                msg: stored.msg.clone(),
                redelivered: stored.delivery_count > 0,
                delivery_count: stored.delivery_count,
            });
            self.total_delivered += 1;
            self.cursor = (i + 1) % self.consumers.len();
        }
    }

    fn next_eligible(&self) -> Option<usize> {
        if self.config.single_active_consumer {
            let active = self.active.as_ref()?;
            let i = self.position(active)?;
            return self.consumers[i].has_free_credit().then_some(i);
        }
        let n = self.consumers.len();
        (0..n).map(|step| (self.cursor + step) % n).find(|&i| self.consumers[i].has_free_credit())
    }

    /// Single active consumer: the first subscribed consumer in checkout order is active;
    /// a change is announced with `ConsumerActive`.
    fn refresh_active(&mut self, fx: &mut Vec<Effect>) {
        let active = if self.config.single_active_consumer {
            self.consumers.iter().find(|c| c.subscribed()).map(|c| c.key.clone())
        } else {
            None
        };
        if active != self.active {
            if let Some(consumer) = &active {
                fx.push(Effect::ConsumerActive { consumer: consumer.clone() });
            }
            self.active = active;
        }
    }

    fn pop_ready(&mut self) -> Option<MsgId> {
        let id = self.ready.pop_front()?;
        if let Some(stored) = self.messages.get(&id) {
            self.ready_bytes = self.ready_bytes.saturating_sub(stored.msg.size);
        }
        Some(id)
    }

    /// Removes a message that is neither ready nor held any more and reports it.
    fn remove_dead(&mut self, id: MsgId, reason: DeadLetterReason, fx: &mut Vec<Effect>) {
        let Some(stored) = self.messages.remove(&id) else { return };
        if self.config.dead_letter {
            fx.push(Effect::DeadLetter { id, msg: stored.msg, reason });
        } else {
            fx.push(Effect::Dropped { id, reason });
        }
    }

    fn position(&self, key: &ConsumerKey) -> Option<usize> {
        self.consumers.iter().position(|c| &c.key == key)
    }

    fn consumer(&self, key: &ConsumerKey) -> Option<&Consumer> {
        self.consumers.iter().find(|c| &c.key == key)
    }

    fn remove_consumer(&mut self, i: usize) -> Consumer {
        let c = self.consumers.remove(i);
        if i < self.cursor {
            self.cursor -= 1;
        }
        if self.cursor >= self.consumers.len() {
            self.cursor = 0;
        }
        c
    }
}
