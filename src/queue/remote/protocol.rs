//! What a node says to a classic queue's home node, and what the home answers: the
//! messages of the cluster's queue link (postcard-framed by the cluster layer).
//!
//! Requests that wait for an answer carry an `id` the sender picked; consumers are
//! named by an id the sender picked too, deliveries by an id the home picked. A
//! delivery id is unique in the home's process (not only on one connection), so a
//! settlement that arrives on a later connection than its delivery settles nothing.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::AmqpError;
use crate::memory::MemoryCharge;
use crate::message::{Message, StoredMeta};

/// A message crossing the link: what the home needs to enqueue it as published.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WireMessage {
    pub exchange: String,
    pub routing_key: String,
    pub raw_properties: Vec<u8>,
    pub body: Vec<u8>,
    pub persistent: bool,
    pub published_ms: u64,
    pub ttl: Option<u32>,
}

impl WireMessage {
    pub fn of(m: &Message) -> WireMessage {
        WireMessage {
            exchange: m.exchange.to_string(),
            routing_key: m.routing_key.to_string(),
            raw_properties: m.raw_properties.to_vec(),
            body: m.body.to_vec(),
            persistent: m.persistent,
            published_ms: m.published_ms,
            ttl: m.ttl,
        }
    }

    /// The message as this node holds it (charged to this node's memory alarm).
    pub fn into_message(self) -> Message {
        let charge = MemoryCharge::content(&self.routing_key, &self.raw_properties, &self.body);
        Message {
            exchange: Arc::from(self.exchange),
            routing_key: self.routing_key.into_boxed_str(),
            raw_properties: self.raw_properties.into_boxed_slice(),
            body: self.body.into_boxed_slice(),
            persistent: self.persistent,
            published_ms: self.published_ms,
            ttl: self.ttl,
            store: StoredMeta::default(),
            charge,
        }
    }
}

/// How a consumer on another node settled a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Settlement {
    Ack,
    /// Gone for good without an ack (the channel dropped it).
    Forget,
    Requeue,
    /// Rejected or nacked without requeue: dead-lettered or dropped by the home.
    Reject,
}

/// A request to a classic queue's home node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ToHome {
    /// Enqueue `message` on the queue; `id` 0: no answer wanted (no confirm waits).
    Publish {
        id: u64,
        vhost: String,
        queue: String,
        message: WireMessage,
    },
    /// Attach consumer `consumer` (answered with `Consumed`).
    Consume {
        consumer: u64,
        vhost: String,
        queue: String,
        tag: String,
        exclusive: bool,
        priority: i32,
        no_ack: bool,
        prefetch: u16,
    },
    Cancel {
        consumer: u64,
    },
    /// A no-ack consumer handed `n` more deliveries to its client: the home may send
    /// as many more.
    Credit {
        consumer: u64,
        n: u32,
    },
    Settle {
        delivery: u64,
        how: Settlement,
    },
    Get {
        id: u64,
        vhost: String,
        queue: String,
        no_ack: bool,
    },
    Purge {
        id: u64,
        vhost: String,
        queue: String,
    },
    Delete {
        id: u64,
        vhost: String,
        queue: String,
        if_unused: bool,
        if_empty: bool,
    },
    Stats {
        id: u64,
        vhost: String,
        queue: String,
    },
    /// Keeps an idle link known to be alive (answered with `Pong`).
    Ping {
        id: u64,
    },
}

/// What a publish became on the home.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PublishOutcome {
    /// In the queue, durably when the message and queue are (after the store's fsync).
    Accepted,
    /// Refused by the queue's x-overflow rule.
    Rejected,
    /// Not in the queue (deleted meanwhile, or the store failed).
    Lost,
}

/// An AMQP error as the home raised it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    pub code: u16,
    pub text: String,
}

impl WireError {
    pub fn of(e: &AmqpError) -> WireError {
        WireError { code: e.reply_code(), text: e.to_string() }
    }

    /// The error to raise here: the home's code and text.
    pub fn into_error(self) -> AmqpError {
        let text = self.text.split_once(" - ").map_or(self.text.clone(), |(_, t)| t.to_string());
        match self.code {
            403 => AmqpError::AccessRefused(text),
            404 => AmqpError::NotFound(text),
            405 => AmqpError::ResourceLocked(text),
            406 => AmqpError::PreconditionFailed(text),
            _ => AmqpError::InternalError(text),
        }
    }
}

/// A queue's figures on its home.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeStats {
    pub ready: u64,
    pub unacked: u64,
    pub bytes_ready: u64,
    pub consumers: u32,
}

/// A basic.get's message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Got {
    pub delivery: u64,
    pub redelivered: bool,
    /// Ready messages left.
    pub left: u32,
    pub message: WireMessage,
}

/// What the home sends back.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum FromHome {
    Published {
        id: u64,
        outcome: PublishOutcome,
    },
    Consumed {
        consumer: u64,
        refused: Option<WireError>,
    },
    Deliver {
        consumer: u64,
        delivery: u64,
        redelivered: bool,
        message: WireMessage,
    },
    /// The home ended consumer `consumer` (its queue was deleted).
    Cancelled {
        consumer: u64,
    },
    Got {
        id: u64,
        result: Result<Option<Got>, WireError>,
    },
    /// Purge or delete: the message count, or the refusal.
    Done {
        id: u64,
        result: Result<u32, WireError>,
    },
    Stats {
        id: u64,
        result: Result<HomeStats, WireError>,
    },
    Pong {
        id: u64,
    },
}

impl FromHome {
    /// The request this answers (None: not an answer).
    pub fn answers(&self) -> Option<u64> {
        match self {
            FromHome::Published { id, .. }
            | FromHome::Got { id, .. }
            | FromHome::Done { id, .. }
            | FromHome::Stats { id, .. }
            | FromHome::Pong { id } => Some(*id),
            FromHome::Consumed { .. } | FromHome::Deliver { .. } | FromHome::Cancelled { .. } => None,
        }
    }
}
