//! The answer to one command, returned to the proposer (on the leader) by `apply`.

use serde::{Deserialize, Serialize};

use crate::message::{Message, MsgId};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Nothing to report.
    Ok,
    /// Enqueue stored the message under `id` (confirm the publish).
    Accepted { id: MsgId },
    /// Enqueue refused by reject-publish overflow (nack the publish); nothing was stored.
    Rejected,
    /// Enqueue with a publisher sequence already applied (a resend after a leader
    /// change): not stored again; confirm it.
    Duplicate,
    /// Settle/Return/Discard named ids this consumer does not hold; they were ignored
    /// (the others were applied).
    UnknownIds { ids: Vec<MsgId> },
    /// Dequeue: the head message. `remaining` is the ready count afterwards.
    Message { id: MsgId, msg: Message, redelivered: bool, delivery_count: u32, remaining: u64 },
    /// Dequeue on an empty queue.
    Empty,
    /// Purge: how many ready messages were removed.
    Purged { count: u64 },
}
