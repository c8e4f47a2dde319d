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
    /// `command`, as proposed by `node` (an opaque key the broker chooses). The machine
    /// applies `command` alone; the broker reads the stamp to decide who executes the
    /// entry's queue-wide effects (dead-lettering): the proposer, which is one node
    /// for each command whatever the leadership does meanwhile (see the crate doc).
    Origin {
        node: u64,
        command: Box<Command>,
    },
}

/// The largest encoded command accepted: RabbitMQ's largest configurable message
/// (512 MiB) plus room for the rest of the command.
pub const MAX_COMMAND_LEN: usize = 512 * 1024 * 1024 + 64 * 1024;

pub fn encode_command(cmd: &Command) -> Vec<u8> {
    // Serialising into a Vec cannot fail for these types (no maps with non-string keys,
    // no unsized sequences); an empty vector would be rejected by decode_command.
    postcard::to_stdvec(cmd).unwrap_or_default()
}

/// Decodes one command, rejecting oversized input, corrupt input, trailing bytes and
/// an `Origin` inside an `Origin` (the only recursive command: a long chain of them
/// would exhaust the stack while decoding).
pub fn decode_command(bytes: &[u8]) -> Result<Command, Error> {
    if nested_origin(bytes) {
        return Err(Error::Malformed("an origin inside an origin".into()));
    }
    decode_exact(bytes, MAX_COMMAND_LEN)
}

/// Postcard's tag of `Command::Origin` (its variant index, one varint byte).
const ORIGIN_TAG: u8 = 12;

/// Whether `bytes` start with an `Origin` whose command is an `Origin` again: the tag,
/// the node (a varint: bytes with the high bit set, then one without), the tag again.
fn nested_origin(bytes: &[u8]) -> bool {
    let Some((&ORIGIN_TAG, rest)) = bytes.split_first() else { return false };
    let Some(end) = rest.iter().position(|b| b & 0x80 == 0) else { return false };
    rest.get(end + 1) == Some(&ORIGIN_TAG)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_origin_decodes_and_nested_ones_are_refused() {
        let inner = Command::Purge;
        let one = Command::Origin { node: u64::MAX, command: Box::new(inner) };
        let bytes = encode_command(&one);
        assert_eq!(bytes[0], ORIGIN_TAG);
        assert_eq!(decode_command(&bytes).unwrap(), one);
        for node in [0, 300, u64::MAX] {
            let two = Command::Origin {
                node,
                command: Box::new(Command::Origin { node, command: Box::new(Command::Purge) }),
            };
            assert!(decode_command(&encode_command(&two)).is_err(), "node {node}");
        }
        // A chain too deep to decode recursively is refused before decoding.
        let mut chain = Vec::new();
        for _ in 0..1_000_000 {
            chain.extend_from_slice(&[ORIGIN_TAG, 1]);
        }
        chain.push(9);
        assert!(decode_command(&chain).is_err());
    }
}
