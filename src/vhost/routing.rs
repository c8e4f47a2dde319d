//! Routing a publish through the vhost's routing table (with alternate exchanges,
//! CC/BCC and exchange-to-exchange bindings), and holding messages for delayed-message
//! exchanges.

use std::sync::Arc;

use haremq_routing::RouteRequest;

use super::*;

/// What [`VHost::route`] decided for a publish.
#[derive(Debug)]
pub enum Routed {
    /// Routed now: the destination queues were appended; the exchange's interned name,
    /// and the generation under which this outcome holds for every message with the
    /// same exchange and routing key (None: it depended on more than those).
    Now(Arc<str>, Option<u64>),
    /// Published to a delayed-message exchange with a positive `x-delay` (ms): hold it.
    Delay(Arc<str>, u64),
}

impl VHost {
    /// Routes a publish: appends the destination queues to `out` (following CC/BCC
    /// keys, alternate exchanges and exchange-to-exchange bindings) and returns the
    /// exchange's interned name, or says to hold the message when the exchange is an
    /// `x-delayed-message` one and `x-delay` is positive. 404 for a missing exchange,
    /// 403 for an internal one.
    pub fn route(&self, exchange: &str, msg: &RouteRequest<'_>, out: &mut Vec<QueueRef>) -> AmqpResult<Routed> {
        let topo = read(&self.topology);
        let meta = self.publishable(&topo, exchange)?;
        let name = meta.name.clone();
        if meta.settings.delayed {
            if let Some(ms) = crate::exchange::delay_ms(msg.headers) {
                return Ok(Routed::Delay(name, ms));
            }
        }
        // Read under the topology lock: every change counted in it is complete.
        let generation = self.generation();
        let key_only = if exchange.is_empty() {
            drop(topo);
            let queues = read(&self.queues);
            for key in std::iter::once(&msg.routing_key).chain(msg.extra_keys) {
                if let Some(q) = queues.get(*key) {
                    let q = QueueRef(q.clone());
                    if !out.contains(&q) {
                        out.push(q);
                    }
                }
            }
            msg.extra_keys.is_empty()
        } else {
            // A delayed exchange's outcome depends on the headers (x-delay).
            topo.routing.route_message(exchange, msg, out) && !meta.settings.delayed
        };
        Ok(Routed::Now(name, key_only.then_some(generation)))
    }

    /// Checks that `name` can be published to (404 if missing, 403 if internal);
    /// returns its interned name.
    pub fn check_publish(&self, name: &str) -> AmqpResult<Arc<str>> {
        Ok(self.publishable(&read(&self.topology), name)?.name.clone())
    }

    /// The exchange a publish to `name` goes to: 404 if missing, 403 if internal.
    pub(super) fn publishable<'t>(&self, topo: &'t Topology, name: &str) -> AmqpResult<&'t ExchangeMeta> {
        match topo.exchanges.get(name) {
            None => Err(self.no_exchange(name)),
            Some(e) if e.internal => Err(AmqpError::AccessRefused(format!(
                "cannot publish to internal exchange '{name}' in vhost '{}'",
                self.name
            ))),
            Some(e) => Ok(e),
        }
    }

    /// Holds a message published to a delayed-message exchange until it is due. Returns
    /// true if it was sent to the store (persistent, durable exchange): its confirm must
    /// then wait for the commit.
    pub fn schedule_delayed(&self, mut msg: DelayedMessage) -> bool {
        let durable = read(&self.topology).exchanges.get(&*msg.exchange).is_some_and(|e| e.durable);
        let mut persisted = false;
        if let (Some(store), true) = (&self.store, msg.persistent && durable) {
            let id = store.next_message_id();
            let delay_ms = msg.due.saturating_duration_since(std::time::Instant::now()).as_millis() as u64;
            let record = DelayedRecord {
                vhost: self.name.to_string(),
                due_ms: crate::message::now_ms() + delay_ms,
                exchange: msg.exchange.to_string(),
                routing_key: msg.routing_key.to_string(),
                extra_keys: msg.extra_keys.clone(),
                raw_properties: msg.raw_properties.to_vec(),
                body: msg.body.to_vec(),
                persistent: msg.persistent,
                ttl: msg.ttl,
            };
            store.send(StoreOp::PutDelayed(id, encode_delayed(&record)));
            msg.store_id = Some(id);
            persisted = true;
        }
        self.delayed.schedule(msg);
        persisted
    }

    /// A held message is due: route it through its exchange's underlying type (with
    /// alternate exchanges) and enqueue it. Nobody is told if it routes nowhere (the
    /// plugin does not support mandatory either), nor if the exchange is gone.
    pub(super) fn route_delayed(&self, m: DelayedMessage) {
        let keys: Vec<&str> = m.extra_keys.iter().map(String::as_str).collect();
        let req = RouteRequest {
            routing_key: &m.routing_key,
            extra_keys: &keys,
            headers: m.headers.as_ref(),
            message_id: m.message_id.as_deref(),
            correlation_id: m.correlation_id.as_deref(),
            timestamp: m.timestamp,
        };
        let mut out = Vec::new();
        let forget = |store_id| {
            if let Some(id) = store_id {
                self.persist(StoreOp::DeleteDelayed(id));
            }
        };
        let name = {
            let topo = read(&self.topology);
            let Some(meta) = topo.exchanges.get(&*m.exchange) else {
                forget(m.store_id);
                return;
            };
            topo.routing.route_message(&m.exchange, &req, &mut out);
            meta.name.clone()
        };
        drop(keys);
        let charge = crate::memory::MemoryCharge::content(&m.routing_key, &m.raw_properties, &m.body);
        enqueue_routed(
            &self.store,
            &mut out,
            Message {
                exchange: name,
                routing_key: m.routing_key,
                raw_properties: m.raw_properties,
                body: m.body,
                persistent: m.persistent,
                published_ms: crate::message::now_ms(),
                ttl: m.ttl,
                store: Default::default(),
                charge,
            },
            None,
        );
        // After the queue entries it became: the store applies ops in order.
        forget(m.store_id);
    }
}
