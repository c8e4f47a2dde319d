//! Dead-lettering: republishing a message that left a queue abnormally (rejected,
//! expired, dropped for length, over its delivery limit) to the queue's
//! x-dead-letter-exchange, with RabbitMQ's `x-death` bookkeeping.
//!
//! It always runs *after* the source queue's lock is released (queues collect their
//! dead messages in `QueueState::dead`), because republishing takes other queues' locks
//! and a dead-letter cycle could otherwise deadlock.
//!
//! Durability: the new message's record and its entries in the target queues are sent to
//! the store before the old entry's removal; the store applies ops in order (and a
//! batch atomically), so a crash never loses a persistent message between two durable
//! queues — at worst, a crash between the two commits leaves it in both.

use std::sync::Arc;

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};

use super::classic::ClassicQueue;
use super::{enqueue_routed, QueueArgs, QueueHost, QueueRef, QueueType};
use crate::message::properties::encode_properties;
use crate::message::{now_ms, Message, QueuedMessage};
use haremq_routing::RouteRequest;

/// Why a message died (the `reason` in x-death).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Rejected,
    Expired,
    Maxlen,
    DeliveryLimit,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rejected => "rejected",
            Reason::Expired => "expired",
            Reason::Maxlen => "maxlen",
            Reason::DeliveryLimit => "delivery_limit",
        }
    }
}

/// A message that died in a queue, waiting to be dead-lettered once the lock is gone.
pub enum Dead {
    /// It had an entry in the queue (forgotten after republishing).
    Entry(QueuedMessage, Reason),
    /// Refused at publish (reject-publish-dlx): it never had an entry.
    Refused(Arc<Message>),
}

fn longstr(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

fn get_str<'a>(t: &'a FieldTable, k: &str) -> Option<&'a [u8]> {
    match t.inner().get(k) {
        Some(AMQPValue::LongString(s)) => Some(s.as_bytes()),
        _ => None,
    }
}

/// RabbitMQ's `is_cycle/2`: the message already died in `queue`, and every death since
/// then (including that one) was automatic (not `rejected`).
fn is_cycle(queue: &str, deaths: &[AMQPValue]) -> bool {
    let Some(pos) = deaths.iter().position(|d| match d {
        AMQPValue::FieldTable(t) => get_str(t, "queue") == Some(queue.as_bytes()),
        _ => false,
    }) else {
        return false;
    };
    deaths[..=pos].iter().all(|d| match d {
        AMQPValue::FieldTable(t) => get_str(t, "reason") != Some(b"rejected"),
        _ => false,
    })
}

/// The properties without `expiration` (amq-protocol has no setter to clear one).
fn without_expiration(p: &AMQPProperties) -> AMQPProperties {
    let mut n = AMQPProperties::default();
    if let Some(v) = p.content_type() {
        n = n.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        n = n.with_content_encoding(v.clone());
    }
    if let Some(v) = p.headers() {
        n = n.with_headers(v.clone());
    }
    if let Some(v) = p.delivery_mode() {
        n = n.with_delivery_mode(*v);
    }
    if let Some(v) = p.priority() {
        n = n.with_priority(*v);
    }
    if let Some(v) = p.correlation_id() {
        n = n.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        n = n.with_reply_to(v.clone());
    }
    if let Some(v) = p.message_id() {
        n = n.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        n = n.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        n = n.with_type(v.clone());
    }
    if let Some(v) = p.user_id() {
        n = n.with_user_id(v.clone());
    }
    if let Some(v) = p.app_id() {
        n = n.with_app_id(v.clone());
    }
    if let Some(v) = p.cluster_id() {
        n = n.with_cluster_id(v.clone());
    }
    n
}

/// Adds this death to the headers as RabbitMQ does: one x-death entry per queue and
/// reason, newest first, `count` merged; x-first-death-* on the first death (3.10) and
/// x-last-death-* on every one (3.13). Returns the new x-death list.
fn record_death(
    headers: &mut FieldTable,
    queue: &str,
    reason: Reason,
    m: &Message,
    original_expiration: Option<&ShortString>,
) -> Vec<AMQPValue> {
    let mut routing_keys = FieldArray::default();
    routing_keys.push(longstr(&m.routing_key));
    // CC keys are routing keys too (BCC never reaches a queue).
    if let Some(AMQPValue::FieldArray(cc)) = headers.inner().get("CC") {
        for k in cc.as_slice() {
            if let AMQPValue::LongString(_) = k {
                routing_keys.push(k.clone());
            }
        }
    }
    let mut info = FieldTable::default();
    info.insert("count".into(), AMQPValue::LongLongInt(1));
    info.insert("reason".into(), longstr(reason.as_str()));
    info.insert("queue".into(), longstr(queue));
    info.insert("time".into(), AMQPValue::Timestamp(now_ms() / 1000));
    info.insert("exchange".into(), longstr(&m.exchange));
    info.insert("routing-keys".into(), AMQPValue::FieldArray(routing_keys));
    if let Some(e) = original_expiration {
        info.insert("original-expiration".into(), longstr(e.as_str()));
    }
    let mut deaths: Vec<AMQPValue> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    if deaths.is_empty() {
        headers.insert("x-first-death-reason".into(), longstr(reason.as_str()));
        headers.insert("x-first-death-queue".into(), longstr(queue));
        headers.insert("x-first-death-exchange".into(), longstr(&m.exchange));
    }
    let same = deaths.iter().position(|d| match d {
        AMQPValue::FieldTable(t) => {
            get_str(t, "queue") == Some(queue.as_bytes()) && get_str(t, "reason") == Some(reason.as_str().as_bytes())
        }
        _ => false,
    });
    let entry = match same {
        Some(i) => match deaths.remove(i) {
            AMQPValue::FieldTable(mut t) => {
                let n = t.inner().get("count").and_then(super::args::int_value).unwrap_or(0);
                t.insert("count".into(), AMQPValue::LongLongInt(n + 1));
                t
            }
            _ => info,
        },
        None => info,
    };
    deaths.insert(0, AMQPValue::FieldTable(entry));
    headers.insert("x-death".into(), AMQPValue::FieldArray(deaths.clone().into()));
    headers.insert("x-last-death-reason".into(), longstr(reason.as_str()));
    headers.insert("x-last-death-queue".into(), longstr(queue));
    headers.insert("x-last-death-exchange".into(), longstr(&m.exchange));
    deaths
}

/// Dead-lettering under way on this thread: what it causes in turn waits here.
#[derive(Default)]
struct Pending {
    work: std::collections::VecDeque<(Arc<ClassicQueue>, Vec<Dead>)>,
    /// Messages queued here so far in this run.
    cascaded: usize,
    /// Messages dropped past [`MAX_CASCADE`] in this run (logged when it ends).
    dropped: usize,
}

/// At most this many messages are dead-lettered as a consequence of one dead-lettering
/// (queues overflowing into dead-letter exchanges that lead to other full queues can
/// multiply messages: a "storm"); past that, what is still queued and what arises are
/// dropped instead, with one error logged. Dead-lettering is at-most-once in RabbitMQ
/// too. A first batch (e.g. a mass expiry) is not counted, only what it sets off.
pub const MAX_CASCADE: usize = 1_000;

thread_local! {
    static PENDING: std::cell::RefCell<Option<Pending>> = const { std::cell::RefCell::new(None) };
}

/// Ends a thread's dead-lettering run, also when it unwinds.
struct RunEnds;

impl Drop for RunEnds {
    fn drop(&mut self) {
        // Dropping what is left (after a panic) only drops messages: their store
        // entries stay, and come back at the next start.
        let left = PENDING.with(|p| p.borrow_mut().take());
        if let Some(p) = &left {
            if p.dropped > 0 {
                log::error!(
                    "dead-letter cascade over {MAX_CASCADE} messages: {} more dropped instead of dead-lettered",
                    p.dropped
                );
            }
        }
        drop(left);
    }
}

impl ClassicQueue {
    /// Dead-letters (or, without a DLX, just drops) messages that died in this queue.
    /// Call without holding the queue's lock.
    ///
    /// Republishing can make another queue drop or refuse messages, which are
    /// dead-lettered in turn, and so on along a chain of queues as long as clients
    /// make it. That work is not done recursively (a chain of a few hundred queues
    /// overflowed the stack and aborted the process) but queued per thread and done by
    /// the outermost call, in the order it arises; each message still reaches its
    /// new queues before it leaves its old one.
    pub(super) fn dead_letter_all(&self, dead: Vec<Dead>) {
        let mut dead = Some(dead);
        let mut dropped = Vec::new();
        PENDING.with(|p| {
            if let Some(pending) = p.borrow_mut().as_mut() {
                let dead = dead.take().unwrap_or_default();
                if pending.cascaded >= MAX_CASCADE {
                    // Over the limit: nothing more is republished in this run.
                    pending.dropped += dead.len();
                    dropped = dead;
                    for (queue, dead) in pending.work.drain(..) {
                        pending.dropped += dead.len();
                        for d in dead {
                            if let Dead::Entry(m, _) = d {
                                queue.forget(&m);
                            }
                        }
                    }
                } else if let Some(me) = self.me() {
                    pending.cascaded += dead.len();
                    pending.work.push_back((me, dead));
                }
            }
        });
        if !dropped.is_empty() {
            // Outside the thread-local borrow: forgetting touches the store only.
            for d in dropped {
                if let Dead::Entry(m, _) = d {
                    self.forget(&m);
                }
            }
        }
        let Some(dead) = dead else {
            return; // an outer call on this thread does it
        };
        PENDING.with(|p| *p.borrow_mut() = Some(Pending::default()));
        let _ends = RunEnds;
        self.dead_letter_now(dead);
        while let Some((queue, dead)) = PENDING.with(|p| p.borrow_mut().as_mut().and_then(|q| q.work.pop_front())) {
            queue.dead_letter_now(dead);
        }
    }

    fn dead_letter_now(&self, dead: Vec<Dead>) {
        let args = self.current_args();
        let vhost = match &args.dead_letter_exchange {
            Some(_) => self.owner.upgrade(),
            None => None,
        };
        for d in dead {
            match d {
                Dead::Entry(m, reason) => {
                    if let Some(vh) = &vhost {
                        republish(vh, &self.name, &args, &m.message, reason);
                    }
                    // After the new entries: the store never lacks both.
                    self.forget(&m);
                }
                Dead::Refused(message) => {
                    if let Some(vh) = &vhost {
                        republish(vh, &self.name, &args, &message, Reason::Maxlen);
                    }
                }
            }
        }
    }
}

/// Republishes message `m`, which died in queue `queue` for `reason`, to the queue's
/// DLX with RabbitMQ's x-death bookkeeping (no DLX: nothing happens). Shared by the
/// queue types.
pub(super) fn republish(vh: &Arc<dyn QueueHost>, queue: &str, args: &QueueArgs, m: &Message, reason: Reason) {
    let Some(dlx) = args.dead_letter_exchange.as_deref() else {
        return;
    };
    let props = match crate::wire::nesting::parse_properties(&m.raw_properties) {
        Some(p) => p,
        None => {
            log::warn!("queue '{}': cannot parse a message's properties; not dead-lettered", queue);
            return;
        }
    };
    let mut headers = props.headers().clone().unwrap_or_default();
    let deaths = record_death(&mut headers, queue, reason, m, props.expiration().as_ref());
    let routing_key: Box<str> = match &args.dead_letter_routing_key {
        Some(rk) => {
            // As RabbitMQ: with an explicit key, CC no longer applies.
            let mut t = FieldTable::default();
            for (k, v) in headers.inner() {
                if k.as_str() != "CC" {
                    t.insert(k.clone(), v.clone());
                }
            }
            headers = t;
            rk.clone()
        }
        None => m.routing_key.clone(),
    };
    let props = without_expiration(&props).with_headers(headers.clone());
    let mut routed = Vec::new();
    let req = RouteRequest {
        routing_key: &routing_key,
        extra_keys: &[],
        headers: Some(&headers),
        message_id: props.message_id().as_ref().map(|s| s.as_str()),
        correlation_id: props.correlation_id().as_ref().map(|s| s.as_str()),
        timestamp: *props.timestamp(),
    };
    let exchange = match vh.route_dead_letter(dlx, &req, &mut routed) {
        Ok(name) => name,
        Err(e) => {
            log::debug!("queue '{}': dead-letter exchange unusable ({e}); message dropped", queue);
            return;
        }
    };
    if reason != Reason::Rejected {
        routed.retain(|QueueRef(q)| {
            let cycle = is_cycle(q.name(), &deaths);
            if cycle {
                log::debug!("dead-letter cycle through queue '{}'; message dropped", q.name());
            }
            !cycle
        });
    }
    if routed.is_empty() {
        return;
    }
    let store = vh.store();
    // The per-message TTL is not carried over (its `expiration` was removed above).
    let raw_properties = encode_properties(&props).into_boxed_slice();
    let charge = crate::memory::MemoryCharge::content(&routing_key, &raw_properties, &m.body);
    let message = crate::message::Message {
        exchange,
        routing_key,
        raw_properties,
        body: m.body.clone(),
        persistent: m.persistent,
        published_ms: now_ms(),
        ttl: None,
        store: Default::default(),
        charge,
    };
    enqueue_routed(store, &mut routed, message, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn death(queue: &str, reason: &str) -> AMQPValue {
        let mut t = FieldTable::default();
        t.insert("queue".into(), longstr(queue));
        t.insert("reason".into(), longstr(reason));
        AMQPValue::FieldTable(t)
    }

    #[test]
    fn cycles_as_rabbitmq() {
        assert!(!is_cycle("a", &[]));
        assert!(is_cycle("a", &[death("a", "expired")]));
        assert!(is_cycle("a", &[death("b", "expired"), death("a", "maxlen")]));
        assert!(!is_cycle("a", &[death("b", "rejected"), death("a", "expired")]));
        assert!(!is_cycle("c", &[death("b", "expired"), death("a", "expired")]));
    }

    #[test]
    fn x_death_counts_merge_newest_first() {
        let m = Message {
            exchange: Arc::from("ex"),
            routing_key: "rk".into(),
            raw_properties: Box::default(),
            body: Box::default(),
            persistent: false,
            published_ms: 0,
            ttl: None,
            store: Default::default(),
            charge: Default::default(),
        };
        let mut h = FieldTable::default();
        record_death(&mut h, "a", Reason::Expired, &m, None);
        record_death(&mut h, "b", Reason::Rejected, &m, None);
        let d = record_death(&mut h, "a", Reason::Expired, &m, None);
        assert_eq!(d.len(), 2);
        let AMQPValue::FieldTable(first) = &d[0] else { panic!() };
        assert_eq!(get_str(first, "queue"), Some(&b"a"[..]));
        assert_eq!(first.inner().get("count"), Some(&AMQPValue::LongLongInt(2)));
        assert_eq!(get_str(&h, "x-first-death-queue"), Some(&b"a"[..]));
        assert_eq!(get_str(&h, "x-last-death-reason"), Some(&b"expired"[..]));
    }
}
