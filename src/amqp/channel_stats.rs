//! A channel's message counts (`message_stats` of `/api/channels`), and the broker-wide
//! counts (`crate::stats::global`) the same events feed.
//!
//! Every count here has one writer at a time, so each is a plain add
//! ([`Counter::bump`]): publishes are counted by the connection task, confirms under
//! the channel's confirm lock, deliveries, gets and acks under its delivery-state lock.

use crate::stats::global::{self, Event};
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
}

impl ChannelCounts {
    /// A publish was routed to `queues` queues (0: unroutable), from the route cache
    /// if `cached`. Connection task only.
    pub fn published(&self, queues: usize, cached: bool) {
        self.publish.bump(1);
        global::count_each(&[
            (Event::Received, 1),
            (Event::Routed, u64::from(queues > 0)),
            (Event::RouteCacheHit, u64::from(cached)),
        ]);
    }

    /// An unroutable publish was returned (mandatory) or dropped. Connection task only.
    pub fn unroutable(&self, returned: bool) {
        if returned {
            self.return_unroutable.bump(1);
            global::count(Event::UnroutableReturned, 1);
        } else {
            self.drop_unroutable.bump(1);
            global::count(Event::UnroutableDropped, 1);
        }
    }

    /// `n` publishes were confirmed. Under the confirm lock.
    pub fn confirmed(&self, n: u64) {
        self.confirm.bump(n);
        global::count(Event::Confirmed, n);
    }

    /// A delivery (consume or get). Under the delivery-state lock.
    pub fn delivered(&self, consume: bool, no_ack: bool, redelivered: bool) {
        let (counter, event) = match (consume, no_ack) {
            (true, false) => (&self.deliver, Event::DeliveredConsume),
            (true, true) => (&self.deliver_no_ack, Event::DeliveredConsumeNoAck),
            (false, false) => (&self.get, Event::DeliveredGet),
            (false, true) => (&self.get_no_ack, Event::DeliveredGetNoAck),
        };
        counter.bump(1);
        if redelivered {
            self.redeliver.bump(1);
        }
        global::count_each(&[(event, 1), (Event::Redelivered, u64::from(redelivered))]);
    }

    /// basic.get found the queue empty. Connection task only.
    pub fn got_empty(&self) {
        self.get_empty.bump(1);
        global::count(Event::GetEmpty, 1);
    }

    /// `n` deliveries were acknowledged. Under the delivery-state lock.
    pub fn acked(&self, n: u64) {
        self.ack.bump(n);
        global::count(Event::Acknowledged, n);
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
        }
    }
}
