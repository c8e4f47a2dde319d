//! Counters the broker reports (management API, queue.declare-ok).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub ready: u64,
    pub ready_bytes: u64,
    /// Checked out and not yet settled (unacked).
    pub checked_out: u64,
    /// Subscribed consumers (not `basic.get` holders).
    pub consumers: u64,
    pub total_enqueued: u64,
    /// Deliveries and dequeues, redeliveries included.
    pub total_delivered: u64,
    /// Settles and no-ack dequeues.
    pub total_acked: u64,
}
