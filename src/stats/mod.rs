//! Counting what flows through the broker without slowing it: the counters behind the
//! management API's `message_stats`, rates and the Prometheus metrics.
//!
//! The hot path only ever adds to counters it (or the lock it holds) owns, so a count
//! costs a plain load and store, never a locked instruction or a shared cache line:
//! queue counters are written under the queue's lock ([`Counter::bump`]), channel
//! counters by the channel's connection task or under its locks. Broker-wide totals
//! are not counted at all: they are the sum over the open channels plus what closed
//! channels counted ([`Retired`]). Readers (the management API, `/metrics`, the rate
//! sampler) load counters relaxed: a reading may be a few messages behind, never torn.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

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
    /// Published and routed to at least one queue (channels and broker-wide).
    pub routed: u64,
    /// Publishes routed from their channel's route cache.
    pub route_cache_hits: u64,
}

impl MessageStats {
    /// `deliver_get` as RabbitMQ sums it: every delivery and get, either ack mode.
    pub fn deliver_get(&self) -> u64 {
        self.deliver + self.deliver_no_ack + self.get + self.get_no_ack
    }

    /// Adds `o` into these counts.
    pub fn add(&mut self, o: &MessageStats) {
        let MessageStats {
            publish,
            confirm,
            deliver,
            deliver_no_ack,
            get,
            get_no_ack,
            get_empty,
            redeliver,
            ack,
            return_unroutable,
            drop_unroutable,
            routed,
            route_cache_hits,
        } = o;
        self.publish += publish;
        self.confirm += confirm;
        self.deliver += deliver;
        self.deliver_no_ack += deliver_no_ack;
        self.get += get;
        self.get_no_ack += get_no_ack;
        self.get_empty += get_empty;
        self.redeliver += redeliver;
        self.ack += ack;
        self.return_unroutable += return_unroutable;
        self.drop_unroutable += drop_unroutable;
        self.routed += routed;
        self.route_cache_hits += route_cache_hits;
    }
}

/// What closed channels counted, so that broker-wide totals (open channels plus
/// these) never drop when a channel closes. A channel leaves its connection's
/// registry and adds its counts here in one step under this lock, and a reading sums
/// the open channels under it too: every channel is counted once, open or retired.
#[derive(Default)]
pub struct Retired(Mutex<MessageStats>);

impl Retired {
    /// Runs `close` (which takes channels out of their registry and returns their final
    /// counts) and keeps the counts.
    pub fn retire(&self, close: impl FnOnce() -> Vec<MessageStats>) {
        let mut retired = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for m in close() {
            retired.add(&m);
        }
    }

    /// The totals: the retired counts plus `open()`, the open channels' counts now.
    pub fn total(&self, open: impl FnOnce() -> Vec<MessageStats>) -> MessageStats {
        let retired = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = *retired;
        for m in open() {
            total.add(&m);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retired_channel_still_counts() {
        let retired = Retired::default();
        let open = MessageStats { publish: 3, ack: 1, ..Default::default() };
        assert_eq!(retired.total(|| vec![open]).publish, 3);
        retired.retire(|| vec![open]);
        let t = retired.total(Vec::new);
        assert_eq!((t.publish, t.ack), (3, 1));
        assert_eq!(retired.total(|| vec![MessageStats { publish: 2, ..Default::default() }]).publish, 5);
    }
}
