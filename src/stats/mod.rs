//! Counting what flows through the broker without slowing it: the counters behind the
//! management API's `message_stats`, rates and the Prometheus metrics.
//!
//! The hot path only ever adds to counters it (or the lock it holds) owns, so a count
//! costs a plain load and store, never a locked instruction or a shared cache line:
//! queue counters are written under the queue's lock ([`Counter::bump`]), channel
//! counters by the channel's connection task, broker-wide counters by each thread into
//! its own slot ([`global`]). Readers (the management API, `/metrics`, the rate
//! sampler) load them relaxed: a reading may be a few messages behind, never torn.

pub mod global;

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonic count with one writer at a time (the holder of a lock, or the owning
/// task), read by anyone.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only for a writer that excludes other writers (it holds the lock that
    /// guards the counted state, or it is the only task that counts here): two
    /// concurrent bumps could lose one.
    #[inline]
    pub fn bump(&self, n: u64) {
        self.0.store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Adds `n` from any thread (a locked add: for counts with several writers).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What happened to messages at one place (a queue, a channel, the whole broker), in
/// the management API's `message_stats` terms. Counts since the object was created.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct MessageStats {
    /// Published (into a queue: enqueued; on a channel or broker-wide: received).
    pub publish: u64,
    /// Publisher confirms sent (channels and broker-wide).
    pub confirm: u64,
    /// Delivered to consumers that must ack.
    pub deliver: u64,
    /// Delivered to consumers in no-ack mode.
    pub deliver_no_ack: u64,
    /// basic.get answered with a message, ack required.
    pub get: u64,
    /// basic.get answered with a message, no-ack.
    pub get_no_ack: u64,
    /// basic.get answered get-empty.
    pub get_empty: u64,
    /// Deliveries (consume or get) of messages delivered before.
    pub redeliver: u64,
    /// Acknowledged by consumers.
    pub ack: u64,
    /// Published and routed to no queue: returned (mandatory) or dropped.
    pub return_unroutable: u64,
    pub drop_unroutable: u64,
}

impl MessageStats {
    /// `deliver_get` as RabbitMQ sums it: every delivery and get, either ack mode.
    pub fn deliver_get(&self) -> u64 {
        self.deliver + self.deliver_no_ack + self.get + self.get_no_ack
    }
}
