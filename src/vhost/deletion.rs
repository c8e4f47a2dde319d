//! Deleting a whole vhost: everything it holds goes, in memory and in the store.
//!
//! The vhost is marked deleted first, under its locks, so nothing declared by a
//! connection that has not seen its connection.close yet survives: creating a queue
//! or an exchange in a deleted vhost is refused (320, as the connection is being
//! closed with). The store op `DeleteVHost`, sent after the queues' own deletes,
//! sweeps every row recorded for the vhost.

use std::sync::atomic::Ordering;

use super::*;

impl VHost {
    /// Whether the vhost was deleted (its connections are being closed).
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Marks the vhost deleted: connection.open into it and creating anything in it
    /// are refused from now on.
    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
    }

    /// Refusal for changes to a deleted vhost: the connection is being closed with it.
    pub(super) fn deleted_error(&self) -> AmqpError {
        AmqpError::ConnectionForced(format!("vhost '{}' is deleted", self.name))
    }

    /// Deletes every queue (with its messages),
    /// every exchange, held delayed messages and reply-to registrations, and records
    /// the deletion in the store. Returns the number of queues deleted.
    pub fn delete_contents(&self) -> usize {
        let queues: Vec<Arc<Queue>> = {
            let mut map = self.change_queues();
            self.deleted.store(true, Ordering::Release);
            map.drain().map(|(_, q)| q).collect()
        };
        {
            let mut topo = self.change_topology();
            topo.routing = RoutingTable::new();
            topo.exchanges.clear();
        }
        let n = queues.len();
        for q in queues {
            // No basic.cancel to the consumers: their connections were closed (320)
            // before this, and nothing may follow a connection.close.
            let _ = q.mark_deleted();
        }
        self.delayed.forget_all();
        self.reply_consumers.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.persist(StoreOp::DeleteVHost { name: self.name.to_string() });
        n
    }
}
