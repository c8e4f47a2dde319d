//! Consumers: who may receive messages, with how much credit, and what each holds.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::message::MsgId;

/// Identifies a consumer across replicas: the node and channel it lives on and its
/// consumer tag. `basic.get` uses a key too (e.g. the channel with an empty tag), so that
/// unsettled gets can be settled and are returned when the channel goes away.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConsumerKey {
    pub node: u64,
    pub channel: u64,
    pub tag: String,
}

/// The machine's record of one consumer. `credit == None` means the key only holds
/// messages taken with `Dequeue` (it is not subscribed and gets no assignments).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Consumer {
    pub key: ConsumerKey,
    /// `Some(0)` is unlimited credit (prefetch 0).
    pub credit: Option<u32>,
    /// Checked-out (unsettled) messages, in id order.
    pub held: BTreeSet<MsgId>,
}

impl Consumer {
    pub fn subscribed(&self) -> bool {
        self.credit.is_some()
    }

    /// Whether one more message may be assigned to this consumer.
    pub fn has_free_credit(&self) -> bool {
        match self.credit {
            None => false,
            Some(0) => true,
            Some(c) => (self.held.len() as u64) < u64::from(c),
        }
    }
}
