//! A published message, shared (never copied) by every queue it is routed to.

use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::Arc;

use crate::memory::MemoryCharge;
use crate::store::{MessageFields, MessageId, MessageRecord, StoredMessage};

pub mod properties;

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
    #[expect(dead_code, reason = "held for its Drop, which gives the bytes back to the memory alarm")]
    pub charge: MemoryCharge,
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

/// The `priority` property (0 when absent) of raw content-header properties, read
/// without decoding them.
pub fn priority_of(raw_properties: &[u8]) -> u8 {
    properties::Properties::parse(raw_properties).and_then(|p| p.priority).unwrap_or(0)
}

impl Message {
    /// A message read back from the store: its record `id`, durable, referenced by
    /// `refs` queue entries.
    pub fn from_record(r: MessageRecord, id: MessageId, refs: u32) -> Message {
        let charge = MemoryCharge::content(&r.routing_key, &r.raw_properties, &r.body);
        Message {
            exchange: Arc::from(r.exchange),
            routing_key: r.routing_key,
            raw_properties: r.raw_properties,
            body: r.body,
            persistent: r.persistent,
            published_ms: r.published_ms,
            ttl: r.ttl,
            store: StoredMeta { id: Some(id), refs: AtomicU32::new(refs), committed: AtomicBool::new(true) },
            charge,
        }
    }

    /// The `priority` property (0 when absent): only priority queues ask.
    pub fn priority(&self) -> u8 {
        priority_of(&self.raw_properties)
    }

    /// The deduplication key of a message: its `x-deduplication-header` header (as the
    /// rabbitmq-message-deduplication plugin), else its `message_id` property. Decodes
    /// the properties: only deduplicating queues ask.
    pub fn dedup_key(&self) -> Option<Vec<u8>> {
        use amq_protocol::types::AMQPValue;
        let props = crate::wire::nesting::parse_properties(&self.raw_properties)?;
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

impl StoredMessage for Message {
    fn fields(&self) -> MessageFields<'_> {
        MessageFields {
            exchange: &self.exchange,
            routing_key: &self.routing_key,
            raw_properties: &self.raw_properties,
            body: &self.body,
            persistent: self.persistent,
            published_ms: self.published_ms,
            ttl: self.ttl,
        }
    }

    fn set_committed(&self) {
        self.store.committed.store(true, std::sync::atomic::Ordering::Release);
    }
}

pub use crate::util::now_ms;

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
        super::properties::Properties::parse(raw)?.priority
    }
    use amq_protocol::protocol::BasicProperties;
    use amq_protocol::types::{AMQPValue, FieldTable};

    fn raw(p: &BasicProperties) -> Vec<u8> {
        super::properties::encode_properties(p)
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

    /// Properties read back from the store are decoded through the same check (the
    /// deduplication key decodes them in full).
    #[test]
    fn stored_properties_are_bounded_too() {
        let mut raw = (1u16 << 13).to_be_bytes().to_vec();
        raw.extend_from_slice(&crate::wire::nesting::tests::raw_deep_array(50_000));
        let m = super::Message {
            exchange: std::sync::Arc::from(""),
            routing_key: "k".into(),
            raw_properties: raw.into_boxed_slice(),
            body: Box::default(),
            persistent: true,
            published_ms: 0,
            ttl: None,
            store: Default::default(),
            charge: Default::default(),
        };
        assert_eq!(m.dedup_key(), None);
        assert_eq!(m.priority(), 0);
    }
}
