//! A queue's counters: what went in and out, for `messages_unacknowledged`,
//! `message_stats` and the rates built from them.
//!
//! Enqueues and deliveries are counted under the queue's lock (plain adds, see
//! [`Counter::bump`]); settlements come from consumers' channels on any thread, so
//! they are locked adds. The unacknowledged count is not a gauge of its own: it is
//! deliveries requiring an ack minus their settlements, which keeps the hot path to
//! one count per event.

use crate::stats::{Counter, MessageStats};

#[derive(Default, Debug)]
pub struct QueueCounters {
    pub publish: Counter,
    pub deliver: Counter,
    pub deliver_no_ack: Counter,
    pub get: Counter,
    pub get_no_ack: Counter,
    pub redeliver: Counter,
    /// Acknowledged (settlements; any thread).
    pub ack: Counter,
    /// Returned to the queue from consumers (nack/reject with requeue, channel closed,
    /// consumer timed out; any thread).
    pub returned: Counter,
    /// Rejected or nacked without requeue (any thread).
    pub rejected: Counter,
}

impl QueueCounters {
    /// Records a delivery (consume or get) under the queue's lock.
    pub fn delivered(&self, consume: bool, no_ack: bool, redelivered: bool) {
        match (consume, no_ack) {
            (true, false) => self.deliver.bump(1),
            (true, true) => self.deliver_no_ack.bump(1),
            (false, false) => self.get.bump(1),
            (false, true) => self.get_no_ack.bump(1),
        }
        if redelivered {
            self.redeliver.bump(1);
        }
    }

    /// Deliveries waiting for an ack. Settlements are read first: each was counted
    /// after its delivery, so the difference never goes below the truth.
    pub fn unacked(&self) -> u64 {
        let settled = self.ack.get() + self.returned.get() + self.rejected.get();
        (self.deliver.get() + self.get.get()).saturating_sub(settled)
    }

    pub fn message_stats(&self) -> MessageStats {
        MessageStats {
            publish: self.publish.get(),
            deliver: self.deliver.get(),
            deliver_no_ack: self.deliver_no_ack.get(),
            get: self.get.get(),
            get_no_ack: self.get_no_ack.get(),
            redeliver: self.redeliver.get(),
            ack: self.ack.get(),
            ..MessageStats::default()
        }
    }
}

/// A queue's figures at one moment, as listings report them.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueStats {
    pub messages_ready: u64,
    pub messages_unacknowledged: u64,
    /// Body bytes of the ready messages.
    pub message_bytes_ready: u64,
    pub consumers: u32,
    pub messages: MessageStats,
}
