//! Per-queue settings from x-arguments and policies.

use serde::{Deserialize, Serialize};

/// What happens when a publish would take the queue over `max_length`/`max_length_bytes`.
/// Quorum queues support these two (not `reject-publish-dlx`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overflow {
    /// Accept the publish and drop (or dead-letter) the oldest ready messages.
    #[default]
    DropHead,
    /// Refuse the publish: the broker nacks it to a confirming publisher.
    RejectPublish,
}

/// The queue's settings; set at creation and replaceable with `Command::SetConfig` (a
/// policy change), so that every replica switches at the same log index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    /// Returns after which a message is dead-lettered instead of requeued. `None` is
    /// unlimited. RabbitMQ 4 defaults to 20. Checked when a message is returned, so
    /// lowering it leaves ready messages alone until their next return.
    pub delivery_limit: Option<u32>,
    /// Limits on the *ready* messages (checked-out ones do not count, as in RabbitMQ).
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    /// Queue TTL (x-message-ttl), counted from `Message::enqueued_at_ms`.
    pub message_ttl_ms: Option<u64>,
    /// Whether dropped messages come out as `Effect::DeadLetter` (the broker knows the
    /// dead-letter exchange) or as `Effect::Dropped`.
    pub dead_letter: bool,
    pub single_active_consumer: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            delivery_limit: Some(20),
            max_length: None,
            max_length_bytes: None,
            overflow: Overflow::DropHead,
            message_ttl_ms: None,
            dead_letter: false,
            single_active_consumer: false,
        }
    }
}
