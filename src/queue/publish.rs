//! Publishing into queues: what happens to a message once routing has picked its
//! queues. Used by every path that produces a message — a client's publish, a
//! delayed message falling due, a dead-lettered message — so the store bookkeeping
//! (one record per persistent message, written before any entry that points at it,
//! with its reference count set up front) lives in one place.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use super::{ConfirmRef, Enqueued, Queue};
use crate::message::{Message, StoredMeta};
use crate::store::{StoreHandle, StoreOp};

/// A queue as a routing destination: compared and hashed by identity, so routing never
/// hashes queue names on the hot path.
#[derive(Clone)]
pub struct QueueRef(pub Arc<Queue>);

impl PartialEq for QueueRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for QueueRef {}
impl Hash for QueueRef {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.0).cast::<()>() as usize).hash(state);
    }
}

/// Enqueues a new message (its `store` part is filled in here) on every queue in
/// `routed` (drained): the one
/// store record a persistent message bound for a durable queue gets is written before
/// any queue entry that points at it. Returns the message and how many queues took it
/// and how many of those stored it. Used by publishes and by delayed messages when due.
/// `confirm`: the publish's place in its channel's confirms, for queues that store it
/// later (None: nobody waits for a confirm).
pub fn enqueue_routed(
    store: &Option<StoreHandle>,
    routed: &mut Vec<QueueRef>,
    mut message: Message,
    confirm: Option<ConfirmRef<'_>>,
) -> Enqueueing {
    // A persistent message bound for at least one durable queue gets one store record,
    // written before any queue entry that points at it. Its reference count is set up
    // front, so no queue ever sees a count that will still grow (a queue may page a
    // message out only while it is the sole reference).
    let durable_targets = match store {
        Some(_) if message.persistent => routed.iter().filter(|q| q.0.needs_store_record()).count(),
        _ => 0,
    };
    let store_id = match store {
        Some(store) if durable_targets > 0 => Some(store.next_message_id()),
        _ => None,
    };
    message.store =
        StoredMeta { id: store_id, refs: AtomicU32::new(durable_targets as u32), committed: Default::default() };
    let message = Arc::new(message);
    if let (Some(store), Some(id)) = (store, store_id) {
        store.send(StoreOp::PutMessage(id, message.clone()));
    }
    let mut delivered = 0;
    let mut stored = 0;
    let mut rejected = false;
    for QueueRef(q) in routed.drain(..) {
        let outcome = q.publish_confirmed(message.clone(), confirm);
        match outcome {
            Enqueued::No | Enqueued::Rejected | Enqueued::Duplicate => {
                if outcome == Enqueued::Duplicate {
                    // Routed and confirmed, but not kept (x-message-deduplication).
                    delivered += 1;
                }
                if outcome == Enqueued::Rejected {
                    // Routed (no basic.return), but refused: a confirming publisher
                    // gets a nack.
                    rejected = true;
                    delivered += 1;
                }
                // A durable queue deleted under us, or refusing it: release its
                // reference (and the record, if the queues that took it are done).
                if q.needs_store_record()
                    && store_id.is_some()
                    && message.store.refs.fetch_sub(1, Ordering::AcqRel) == 1
                    && stored > 0
                {
                    if let (Some(store), Some(id)) = (store, store_id) {
                        store.send(StoreOp::DeleteMessage(id));
                    }
                }
            }
            Enqueued::InMemory | Enqueued::Replicating => delivered += 1,
            Enqueued::Stored => {
                delivered += 1;
                stored += 1;
            }
        }
    }
    if let (Some(store), Some(id)) = (store, store_id) {
        if stored == 0 {
            store.send(StoreOp::DeleteMessage(id));
        }
    }
    Enqueueing { message, delivered, stored, rejected }
}

/// What [`enqueue_routed`] did with a message.
pub struct Enqueueing {
    pub message: Arc<Message>,
    /// Queues (and refusals) that count as routed, for mandatory.
    pub delivered: usize,
    /// Durable queues that stored it.
    pub stored: usize,
    /// A queue refused it (x-overflow reject-publish).
    pub rejected: bool,
}
