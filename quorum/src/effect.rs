//! Effects: what the broker must do because a command was applied. Every replica
//! computes them; only the leader executes them.

use serde::{Deserialize, Serialize};

use crate::consumer::ConsumerKey;
use crate::message::{Message, MsgId};

/// Why a message left the queue without being acknowledged (the `x-death` reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeadLetterReason {
    Expired,
    Rejected,
    DeliveryLimit,
    MaxLen,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// Send `msg` to `consumer` (basic.deliver). `delivery_count` is the number of earlier
    /// deliveries that were returned (the `x-delivery-count` header).
    Deliver { consumer: ConsumerKey, id: MsgId, msg: Message, redelivered: bool, delivery_count: u32 },
    /// The message left the queue for `reason` and the queue dead-letters.
    DeadLetter { id: MsgId, msg: Message, reason: DeadLetterReason },
    /// The message left the queue for `reason` and the queue does not dead-letter.
    Dropped { id: MsgId, reason: DeadLetterReason },
    /// Single active consumer: this consumer is now the active one.
    ConsumerActive { consumer: ConsumerKey },
}
