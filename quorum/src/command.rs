//! Commands: the entries of the Raft log. Applying the same commands in the same order
//! gives the same state on every replica.

use serde::{Deserialize, Serialize};

use crate::config::QueueConfig;
use crate::consumer::ConsumerKey;
use crate::error::Error;
use crate::message::{Message, MsgId};

/// The publishing channel and its publish sequence number, used to drop resends of an
/// already-applied enqueue (a proposer retrying after a leader change).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publisher {
    pub node: u64,
    pub channel: u64,
    /// Strictly increasing per (node, channel).
    pub seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Enqueue {
        msg: Message,
        publisher: Option<Publisher>,
    },
    /// Subscribe, or change the credit (prefetch) of an existing subscription. `credit`
    /// 0 is unlimited.
    Checkout {
        consumer: ConsumerKey,
        credit: u32,
    },
    /// Remove the consumer; every message it holds returns to the head of the queue
    /// (its channel closed).
    Cancel {
        consumer: ConsumerKey,
    },
    /// basic.cancel: stop assigning to the consumer but let it keep, settle and return
    /// what it holds (AMQP lets a channel ack after cancelling). It disappears when it
    /// holds nothing; `Cancel`/`CancelNode` still return what is left.
    Detach {
        consumer: ConsumerKey,
    },
    /// Acknowledge.
    Settle {
        consumer: ConsumerKey,
        ids: Vec<MsgId>,
    },
    /// Requeue (nack/reject with requeue): counts as a failed delivery.
    Return {
        consumer: ConsumerKey,
        ids: Vec<MsgId>,
    },
    /// Reject without requeue: dead-lettered with reason `Rejected`.
    Discard {
        consumer: ConsumerKey,
        ids: Vec<MsgId>,
    },
    /// basic.get. `settled` for no-ack. An unsettled get is held under `consumer` until
    /// settled or returned; use a key no subscription uses (e.g. the channel with an empty
    /// tag), since held gets would count against that subscription's credit.
    Dequeue {
        consumer: ConsumerKey,
        settled: bool,
    },
    /// Remove all ready messages (checked-out ones stay).
    Purge,
    /// The proposer's clock: expires messages at the head.
    Tick {
        now_ms: u64,
    },
    /// A node is gone: cancel every consumer on it (returning their messages) and forget
    /// its publishers' sequence numbers.
    CancelNode {
        node: u64,
    },
    SetConfig(QueueConfig),
}

/// The largest encoded command accepted: RabbitMQ's largest configurable message
/// (512 MiB) plus room for the rest of the command.
pub const MAX_COMMAND_LEN: usize = 512 * 1024 * 1024 + 64 * 1024;

pub fn encode_command(cmd: &Command) -> Vec<u8> {
    // Serialising into a Vec cannot fail for these types (no maps with non-string keys,
    // no unsized sequences); an empty vector would be rejected by decode_command.
    postcard::to_stdvec(cmd).unwrap_or_default()
}

/// Decodes one command, rejecting oversized input, corrupt input and trailing bytes.
pub fn decode_command(bytes: &[u8]) -> Result<Command, Error> {
    decode_exact(bytes, MAX_COMMAND_LEN)
}

/// Decodes a whole `T` from `bytes`: no more than `max` bytes, nothing left over.
pub(crate) fn decode_exact<'a, T: Deserialize<'a>>(bytes: &'a [u8], max: usize) -> Result<T, Error> {
    if bytes.len() > max {
        return Err(Error::TooLarge { len: bytes.len(), max });
    }
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| Error::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(Error::Malformed(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}
