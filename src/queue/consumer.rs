//! What a queue needs of its consumers: the seam between the core and the protocol
//! that delivers.
//!
//! A queue hands a message to a consumer by calling [`ConsumerSink::offer`] under its
//! own lock; the AMQP channel implements the trait by writing the deliver frames
//! straight into its connection's outbox (no hand-off between tasks on the hot path).
//! The queue never sees frames, tags' wire encoding or sockets, so it can be tested
//! with a plain in-memory sink, and another protocol could consume from it.

use std::sync::Arc;

use super::Queue;
use crate::message::QueuedMessage;

/// Delivery tags are per channel, start at 1 and increase by one per delivery.
pub type DeliveryTag = u64;

/// Result of offering a message to a consumer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Delivered; `no_ack` says whether it left the queue for good.
    Delivered { no_ack: bool },
    /// The consumer is out of credit, paused by flow, or its client is congested
    /// (a congested sink remembers the queue and dispatches it once drained).
    Busy,
    /// The consumer or its channel no longer exists.
    Gone,
}

/// A consumer's channel, as the queues it consumes from see it.
///
/// Lock order: a queue calls every method but [`cancelled`](Self::cancelled) with its
/// own lock held, so an implementation must never take a queue lock.
pub trait ConsumerSink: Send + Sync {
    /// Offers `message` from `queue` to consumer `tag`. On `Delivered` the message is
    /// on its way and, unless no-ack, tracked as unacked by the sink until it is
    /// settled (acked: the sink calls [`Queue::forget`]; requeued: [`Queue::requeue`]).
    fn offer(&self, queue: &Arc<Queue>, tag: &Arc<str>, message: &QueuedMessage) -> Offer;

    /// Unacked deliveries held by consumer `tag` (0 if it is gone).
    fn unacked(&self, tag: &str) -> u32;

    /// The oldest unacked delivery of consumer `tag` and the next delivery tag the
    /// channel will assign (None: it holds nothing, or it is gone).
    fn oldest_unacked(&self, tag: &str) -> Option<(DeliveryTag, DeliveryTag)>;

    /// Consumer timeout: forgets consumer `tag`, tells the client, and hands back its
    /// unacked deliveries for the queue to requeue. None if the consumer is gone.
    fn time_out(&self, tag: &str) -> Option<Vec<QueuedMessage>>;

    /// The queue was deleted under consumer `tag`: forget it and tell the client.
    /// Called without the queue's lock.
    fn cancelled(&self, tag: &Arc<str>);

    /// A short name for logs (e.g. the channel number).
    fn describe(&self) -> String;
}

/// Whether two sinks are the same object.
pub(crate) fn same_sink(a: &dyn ConsumerSink, b: &dyn ConsumerSink) -> bool {
    std::ptr::addr_eq(a as *const dyn ConsumerSink, b as *const dyn ConsumerSink)
}
