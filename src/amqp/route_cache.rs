//! A publishing channel's memory of its last route.
//!
//! Most publishers send many messages to the same exchange with the same routing key.
//! Routing each one again costs two hash lookups under the topology lock (the exchange,
//! then its bindings or, for the default exchange, the queue map). The channel keeps
//! the last outcome instead, stamped with the vhost's topology generation, and reuses
//! it while the generation is unchanged: any exchange, binding or queue change bumps
//! the generation (see `VHost::generation`), so a cached route is never stale.
//!
//! Only outcomes that depend on nothing but the exchange and the routing key are
//! cached: not headers or consistent-hash exchanges, delayed exchanges, or publishes
//! with CC/BCC keys (`VHost::route` says which).
//!
//! The cache holds its queues' `Arc`s, so a deleted queue's memory is released at this
//! channel's next publish (the generation has moved on) or when the channel closes.

use std::sync::Arc;

use crate::queue::QueueRef;
use crate::vhost::VHost;

#[derive(Default)]
pub struct RouteCache {
    entry: Option<Cached>,
}

struct Cached {
    generation: u64,
    exchange: Arc<str>,
    routing_key: Box<str>,
    queues: Vec<QueueRef>,
}

impl RouteCache {
    /// The interned name of `exchange` if it is the cached one and still publishable
    /// (it was when cached, and nothing changed since).
    pub fn exchange(&self, vhost: &VHost, exchange: &str) -> Option<Arc<str>> {
        let c = self.entry.as_ref()?;
        (&*c.exchange == exchange && c.generation == vhost.generation()).then(|| c.exchange.clone())
    }

    /// Appends the cached route for (`exchange`, `routing_key`) to `out`; false if
    /// there is none valid now.
    pub fn route(&self, vhost: &VHost, exchange: &str, routing_key: &str, out: &mut Vec<QueueRef>) -> bool {
        let Some(c) = self.entry.as_ref() else {
            return false;
        };
        if &*c.routing_key != routing_key || &*c.exchange != exchange || c.generation != vhost.generation() {
            return false;
        }
        out.extend_from_slice(&c.queues);
        true
    }

    /// Remembers a route computed under `generation`.
    pub fn store(&mut self, generation: u64, exchange: &Arc<str>, routing_key: &str, queues: &[QueueRef]) {
        match &mut self.entry {
            // Reuse the allocations when only the key or the generation moved.
            Some(c) if Arc::ptr_eq(&c.exchange, exchange) => {
                c.generation = generation;
                if &*c.routing_key != routing_key {
                    c.routing_key = routing_key.into();
                }
                c.queues.clear();
                c.queues.extend_from_slice(queues);
            }
            _ => {
                self.entry = Some(Cached {
                    generation,
                    exchange: exchange.clone(),
                    routing_key: routing_key.into(),
                    queues: queues.to_vec(),
                })
            }
        }
    }
}
