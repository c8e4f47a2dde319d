//! A message as the state machine sees it: opaque bytes plus the few numbers the
//! limits and TTL rules need.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The machine-assigned id of an accepted message: monotonic from 1, assigned in log
/// order, so every replica gives the same message the same id (the broker uses it as the
/// handle for settle/return/discard).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MsgId(pub u64);

/// One published message. The broker encodes properties and body into `body`; the
/// machine never looks inside. The body is shared by `Arc` so that a `Deliver` effect or a
/// `Dequeue` reply does not copy it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    #[serde(with = "body_bytes")]
    pub body: Arc<[u8]>,
    /// The size counted against `max_length_bytes` (RabbitMQ counts the body only, so the
    /// broker decides; it need not equal `body.len()`).
    pub size: u64,
    /// Absolute expiry from a per-message TTL, computed by the proposer (the machine has
    /// no clock of its own).
    pub expires_at_ms: Option<u64>,
    /// The proposer's wall clock when publishing; the queue TTL counts from here, and it
    /// advances the machine's notion of "now".
    pub enqueued_at_ms: u64,
}

impl Message {
    /// A message whose `size` is its body length and which has no per-message TTL.
    pub fn new(body: impl Into<Arc<[u8]>>, enqueued_at_ms: u64) -> Self {
        let body = body.into();
        Message { size: body.len() as u64, body, expires_at_ms: None, enqueued_at_ms }
    }
}

/// Serialises the body as one byte string (postcard: a length and the raw bytes) rather
/// than as a sequence of `u8`, and reads it back into a fresh `Arc`.
mod body_bytes {
    use super::*;
    use serde::de::{self, Deserializer, SeqAccess, Visitor};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(body: &Arc<[u8]>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(body)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[u8]>, D::Error> {
        d.deserialize_bytes(BodyVisitor)
    }

    struct BodyVisitor;

    impl<'de> Visitor<'de> for BodyVisitor {
        type Value = Arc<[u8]>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
            Ok(Arc::from(v))
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
            Ok(Arc::from(v))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            // Bounded by the input: each element must actually be present.
            let mut out = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(Arc::from(out))
        }
    }
}
