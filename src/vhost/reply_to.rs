//! Direct reply-to: the registry from `amq.rabbitmq.reply-to.<token>` addresses to
//! the channels consuming from them.

use std::sync::Arc;

use super::*;

/// The pseudo-queue clients consume from for direct reply-to.
pub const REPLY_TO_QUEUE: &str = "amq.rabbitmq.reply-to";

/// The prefix of the reply-to addresses the broker hands out.
pub const REPLY_TO_PREFIX: &str = "amq.rabbitmq.reply-to.";

/// The channel behind a direct reply-to address, as the vhost's registry holds it.
pub trait ReplySink: Send + Sync {
    /// Delivers a reply to the channel's reply consumer (always no-ack, as RabbitMQ
    /// requires). False if the consumer is gone.
    fn deliver_reply(&self, message: &QueuedMessage) -> bool;
}

impl VHost {
    pub fn register_reply_consumer(&self, token: &str, channel: Arc<dyn ReplySink>) {
        self.reply_consumers.lock().unwrap_or_else(|e| e.into_inner()).insert(token.into(), channel);
    }

    pub fn unregister_reply_consumer(&self, token: &str) {
        self.reply_consumers.lock().unwrap_or_else(|e| e.into_inner()).remove(token);
    }

    /// The channel behind a reply-to address (`amq.rabbitmq.reply-to.<token>`).
    pub fn reply_consumer(&self, routing_key: &str) -> Option<Arc<dyn ReplySink>> {
        let token = routing_key.strip_prefix(REPLY_TO_PREFIX)?;
        self.reply_consumers.lock().unwrap_or_else(|e| e.into_inner()).get(token).cloned()
    }
}
