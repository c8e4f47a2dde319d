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
    /// When it was published (wall clock, ms since the UNIX epoch): TTLs count from
    /// here, also across a restart.
    pub published_ms: u64,
    /// The per-message TTL from its `expiration` property, ms.
    pub ttl: Option<u32>,
    /// Its record in the store, if it was routed persistently to a durable queue.
    pub store: StoredMeta,
    /// Its share of the message memory the memory alarm watches.
    pub charge: crate::memory::MemoryCharge,
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

    /// When this message expires in a queue whose x-message-ttl is `queue_ttl` (the
    /// lower of the two TTLs wins), ms since the UNIX epoch.
    pub fn expires_at(&self, queue_ttl: Option<u32>) -> Option<u64> {
        let ttl = match (self.ttl, queue_ttl) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(self.published_ms.saturating_add(u64::from(ttl)))
    }
}

impl Message {
    /// The `priority` property (0 when absent), read from the raw property bytes
    /// without decoding them: only priority queues ask.
    pub fn priority(&self) -> u8 {
        crate::amqp::properties::Properties::parse(&self.raw_properties)
            .and_then(|p| p.priority)
            .unwrap_or(0)
    }

    /// The deduplication key of a message: its `x-deduplication-header` header (as the
    /// rabbitmq-message-deduplication plugin), else its `message_id` property. Decodes
    /// the properties: only deduplicating queues ask.
    pub fn dedup_key(&self) -> Option<Vec<u8>> {
        use amq_protocol::types::AMQPValue;
        let props = crate::amqp::nesting::parse_properties(&self.raw_properties)?;
        if let Some(v) = props.headers().as_ref().and_then(|h| h.inner().get("x-deduplication-header")) {
            return Some(match v {
                AMQPValue::LongString(s) => s.as_bytes().to_vec(),
                AMQPValue::ShortString(s) => s.as_str().as_bytes().to_vec(),
                // Any other type: its debug form is a stable key.
                other => format!("{other:?}").into_bytes(),
            });
        }
        props.message_id().as_ref().map(|id| id.as_str().as_bytes().to_vec())
    }
}

/// Wall-clock milliseconds since the UNIX epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A message's place in one queue: its position (for restoring order on requeue) and
/// whether it has been delivered before. Small and fixed-size on purpose (24 bytes: the
/// flag and the requeue count share the padding after `seq` and the `Arc`).
#[derive(Clone, Debug)]
pub struct QueuedMessage {
    pub seq: u64,
    pub redelivered: bool,
    /// How often it was requeued (for x-delivery-limit); saturates.
    pub requeues: u16,
    pub message: Arc<Message>,
}

impl QueuedMessage {
    pub fn new(seq: u64, redelivered: bool, message: Arc<Message>) -> Self {
        Self { seq, redelivered, requeues: 0, message }
    }
}

const _: () = assert!(std::mem::size_of::<QueuedMessage>() == 24);

#[cfg(test)]
mod tests {
    fn property_priority(raw: &[u8]) -> Option<u8> {
        crate::amqp::properties::Properties::parse(raw)?.priority
    }
    use amq_protocol::protocol::BasicProperties;
    use amq_protocol::types::{AMQPValue, FieldTable};

    fn raw(p: &BasicProperties) -> Vec<u8> {
        crate::amqp::frame::encode_properties(p)
    }

    #[test]
    fn priority_is_read_from_raw_properties() {
        assert_eq!(property_priority(&raw(&BasicProperties::default())), None);
        assert_eq!(property_priority(&raw(&BasicProperties::default().with_priority(7))), Some(7));
        let mut h = FieldTable::default();
        h.insert("k".into(), AMQPValue::LongString("v".into()));
        let p = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_content_encoding("gzip".into())
            .with_headers(h)
            .with_delivery_mode(2)
            .with_priority(9)
            .with_message_id("m".into());
        assert_eq!(property_priority(&raw(&p)), Some(9));
    }
}
