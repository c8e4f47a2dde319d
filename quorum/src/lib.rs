//! The deterministic state machine of a HareMQ quorum queue.
//!
//! A quorum queue is replicated by Raft: the leader proposes [`Command`]s, and once a
//! command is committed every replica [`QuorumQueue::apply`]s it, in log order, to its own
//! copy of this machine. The machine is pure — no I/O, no clock, no threads, no
//! randomness, no hash-map iteration — so the same log gives the same state, replies and
//! effects on every replica, and a replica restored from a [`QuorumQueue::snapshot`]
//! continues exactly like one that applied the whole log.
//!
//! # Who executes the effects
//!
//! `apply` returns a [`Reply`] (for the proposer: confirm or nack a publish, the message of
//! a `basic.get`, …) and [`Effect`]s: deliver this message to that consumer, dead-letter
//! that one. Every replica computes the effects, because computing them *is* the state
//! change (a delivered message is checked out to its consumer on every replica). The
//! broker executes a `Deliver` on the node its consumer is attached to (every member
//! applies every entry, so no delivery crosses the cluster after its commit), and
//! dead-lettering once, not once per replica: on the node that proposed the command
//! (`Command::Origin` carries it). "The leader" would be a view that changes while
//! entries are applied — during a leadership change the old and the new leader can
//! both, or neither, consider themselves leader for the same entry. When leadership
//! moves, the new leader already knows which messages are checked out to whom and
//! continues from there; deliveries to consumers that are gone are returned when their
//! channel or node goes away (`Cancel`, `CancelNode`).
//!
//! # Assignment
//!
//! As in RabbitMQ's `rabbit_fifo`, consumers *check out* with a credit (their prefetch;
//! 0 is unlimited) and the machine itself assigns messages when it applies a command, so
//! deliveries are decided by the log. After every command the machine expires messages
//! at the head whose TTL has passed, then hands ready messages out in FIFO order to
//! consumers with free credit, round robin in checkout order (a cursor that is part of
//! the state), or only to the active consumer when single active consumer is on (the
//! first subscribed consumer in checkout order; changes are announced with
//! [`Effect::ConsumerActive`]). Returned messages go back to the head of the queue in id
//! order and count one failed delivery each; past the delivery limit they are
//! dead-lettered instead.
//!
//! # Time
//!
//! The machine's "now" is the largest clock value seen in the log: [`Command::Tick`]s
//! and the `enqueued_at_ms` of enqueued messages. The leader proposes ticks; expiry is
//! checked at the head only, as in RabbitMQ.
//!
//! # Differences from `rabbit_fifo`
//!
//! - One ready queue: returned messages are put at its front (`rabbit_fifo` keeps a
//!   separate returns queue served first; the delivery order is the same).
//! - Every return counts as a failed delivery — explicit requeue, `Cancel` and
//!   `CancelNode` alike (RabbitMQ 3.x; RabbitMQ 4 no longer counts returns caused by a
//!   consumer going away). `Effect::Deliver::delivery_count` is that count and
//!   `redelivered` is `delivery_count > 0`.
//! - Two ways to stop a consumer: `Detach` (basic.cancel: no new messages, the held ones
//!   stay with it until settled or returned, like `rabbit_fifo`'s cancelled status) and
//!   `Cancel` (the channel closed: everything it holds returns at once). `basic.get`
//!   holders are the same record as a detached consumer.
//! - No consumer monitors or node-up handling: a node that goes away is reported once
//!   with `CancelNode`; its consumers resubscribe with `Checkout`.
//! - Reject-publish refuses a publish that would take the ready messages over
//!   `max_length`/`max_length_bytes`; limits count ready messages only.
//! - No in-memory limits, priorities, at-least-once dead-lettering or message release
//!   cursors: bodies live in the state (shared by `Arc`) and in the snapshot.
//! - Duplicate publishes are detected by (node, channel, seq) and answered
//!   [`Reply::Duplicate`] without storing the message again.

mod command;
mod config;
mod consumer;
mod effect;
mod error;
mod machine;
mod message;
mod reply;
mod stats;

pub use command::{decode_command, encode_command, Command, Publisher, MAX_COMMAND_LEN};
pub use config::{Overflow, QueueConfig};
pub use consumer::ConsumerKey;
pub use effect::{DeadLetterReason, Effect};
pub use error::Error;
pub use machine::QuorumQueue;
pub use message::{Message, MsgId};
pub use reply::Reply;
pub use stats::Stats;
