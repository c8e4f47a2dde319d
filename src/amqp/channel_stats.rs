//! A channel's message counts (`message_stats` of `/api/channels`; summed over all
//! channels, open and closed, they are the broker-wide counts).
//!
//! Every count here has one writer at a time, so each is a plain add
//! ([`Counter::bump`]): publishes are counted by the connection task, confirms under
//! the channel's confirm lock, deliveries, gets and acks under its delivery-state lock.

use crate::stats::{Counter, MessageStats};

#[derive(Default, Debug)]
pub struct ChannelCounts {
    publish: Counter,
    confirm: Counter,
    deliver: Counter,
    deliver_no_ack: Counter,
    get: Counter,
    get_no_ack: Counter,
    get_empty: Counter,
    redeliver: Counter,
    ack: Counter,
    return_unroutable: Counter,
    drop_unroutable: Counter,
    routed: Counter,
    route_cache_hits: Counter,
}

impl ChannelCounts {
    /// A publish was routed to `queues` queues (0: unroutable), from the route cache
    /// if `cached`. Connection task only.
    pub fn published(&self, queues: usize, cached: bool) {
        self.publish.bump(1);
        if queues > 0 {
            self.routed.bump(1);
        }
        if cached {
            self.route_cache_hits.bump(1);
        }
    }

    /// An unroutable publish was returned (mandatory) or dropped. Connection task only.
    pub fn unroutable(&self, returned: bool) {
        if returned {
            self.return_unroutable.bump(1);
        } else {
            self.drop_unroutable.bump(1);
        }
    }

    /// `n` publishes were confirmed. Under the confirm lock.
    pub fn confirmed(&self, n: u64) {
        self.confirm.bump(n);
    }

    /// A delivery (consume or get). Under the delivery-state lock.
    pub fn delivered(&self, consume: bool, no_ack: bool, redelivered: bool) {
        let counter = match (consume, no_ack) {
            (true, false) => &self.deliver,
            (true, true) => &self.deliver_no_ack,
            (false, false) => &self.get,
            (false, true) => &self.get_no_ack,
        };
        counter.bump(1);
        if redelivered {
            self.redeliver.bump(1);
        }
    }

    /// basic.get found the queue empty. Connection task only.
    pub fn got_empty(&self) {
        self.get_empty.bump(1);
    }

    /// `n` deliveries were acknowledged. Under the delivery-state lock.
    pub fn acked(&self, n: u64) {
        self.ack.bump(n);
    }

    pub fn snapshot(&self) -> MessageStats {
        MessageStats {
            publish: self.publish.get(),
            confirm: self.confirm.get(),
            deliver: self.deliver.get(),
            deliver_no_ack: self.deliver_no_ack.get(),
            get: self.get.get(),
            get_no_ack: self.get_no_ack.get(),
            get_empty: self.get_empty.get(),
            redeliver: self.redeliver.get(),
            ack: self.ack.get(),
            return_unroutable: self.return_unroutable.get(),
            drop_unroutable: self.drop_unroutable.get(),
            routed: self.routed.get(),
            route_cache_hits: self.route_cache_hits.get(),
        }
    }
}
