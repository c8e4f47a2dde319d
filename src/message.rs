//! A published message, shared (never copied) by every queue it is routed to.

use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::Arc;

use crate::store::MessageId;

/// An immutable message. Queues hold `Arc<Message>`; fan-out to N queues costs N
/// reference counts, not N copies of the body.
#[derive(Debug)]
pub struct Message {
    /// The exchange it was published to (interned from the exchange record).
    pub exchange: Arc<str>,
    pub routing_key: Box<str>,
    /// The content-header property bytes exactly as the publisher sent them.
    pub raw_properties: Box<[u8]>,
    pub body: Box<[u8]>,
    /// delivery-mode 2.
    pub persistent: bool,
    /// Its record in the store, if it was routed persistently to a durable queue.
    pub store: StoredMeta,
}

/// A message's place in the store: its id and how many durable queue entries still
/// reference it (the record is deleted when that reaches zero).
#[derive(Debug, Default)]
pub struct StoredMeta {
    pub id: Option<MessageId>,
    pub refs: AtomicU32,
    /// Set by the store writer once the record is durable (a queue may then page the
    /// body out of memory).
    pub committed: AtomicBool,
}

impl Message {
    /// Bytes this message accounts for (body plus properties), for limits and stats.
    pub fn size(&self) -> usize {
        self.body.len() + self.raw_properties.len()
    }
}

/// A message's place in one queue: its position (for restoring order on requeue) and
/// whether it has been delivered before. Small and fixed-size on purpose.
#[derive(Clone, Debug)]
pub struct QueuedMessage {
    pub seq: u64,
    pub redelivered: bool,
    pub message: Arc<Message>,
}
