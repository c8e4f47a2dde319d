//! Bindings between exchanges and queues or exchanges; unbinding is idempotent, as
//! in RabbitMQ.

use std::sync::Arc;

use amq_protocol::types::FieldTable;
use haremq_routing::{BindError, Destination};

use super::*;

impl VHost {
    pub(super) fn bind_error(&self, e: BindError) -> AmqpError {
        match e {
            BindError::NoSuchExchange(name) => self.no_exchange(&name),
            BindError::InvalidArgument(msg) => AmqpError::PreconditionFailed(msg),
        }
    }

    pub fn bind_queue(&self, q: &Arc<Queue>, exchange: &str, key: &str, args: &FieldTable) -> AmqpResult<()> {
        if exchange.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        let mut topo = self.change_topology();
        if !topo.exchanges.contains_key(exchange) {
            return Err(self.no_exchange(exchange));
        }
        if q.is_deleted() {
            return Err(self.no_queue(q.name()));
        }
        self.add_binding_locked(&mut topo, exchange, Destination::Queue(QueueRef(q.clone())), key, args)
    }

    /// queue.unbind for connection `conn`. As RabbitMQ, unbinding is idempotent: a
    /// missing queue, exchange or binding is success. Only the default exchange (403)
    /// and removing a binding of another connection's exclusive queue (405) fail.
    pub fn unbind_queue(
        &self,
        queue: &str,
        exchange: &str,
        key: &str,
        args: &FieldTable,
        conn: ConnectionId,
    ) -> AmqpResult<()> {
        if exchange.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        let Some(q) = self.queue(queue) else {
            return Ok(());
        };
        let mut topo = self.change_topology();
        let dest = Destination::Queue(QueueRef(q.clone()));
        if !topo.routing.has_binding(exchange, &dest, key, args) {
            return Ok(());
        }
        check_exclusive(q.as_ref(), conn)?;
        self.remove_binding_locked(&mut topo, exchange, &dest, key, args);
        Ok(())
    }

    pub fn bind_exchange(&self, destination: &str, source: &str, key: &str, args: &FieldTable) -> AmqpResult<()> {
        let mut topo = self.lock_for_exchange_binding(destination, source)?;
        self.add_binding_locked(&mut topo, source, Destination::Exchange(destination.into()), key, args)
    }

    /// exchange.unbind. Idempotent as in RabbitMQ: a missing source, destination or
    /// binding is success; only the default exchange on either side is refused (403).
    pub fn unbind_exchange(&self, destination: &str, source: &str, key: &str, args: &FieldTable) -> AmqpResult<()> {
        if destination.is_empty() || source.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        let mut topo = self.change_topology();
        self.remove_binding_locked(&mut topo, source, &Destination::Exchange(destination.into()), key, args);
        Ok(())
    }

    /// The topology, write-locked, once both ends of an exchange-to-exchange binding are
    /// known to exist (and neither is the default exchange).
    pub(super) fn lock_for_exchange_binding(
        &self,
        destination: &str,
        source: &str,
    ) -> AmqpResult<Changing<'_, Topology>> {
        if destination.is_empty() || source.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        let topo = self.change_topology();
        for name in [destination, source] {
            if !topo.exchanges.contains_key(name) {
                return Err(self.no_exchange(name));
            }
        }
        Ok(topo)
    }

    /// Adds a binding and records it if both ends are durable.
    pub(super) fn add_binding_locked(
        &self,
        topo: &mut Topology,
        source: &str,
        dest: Destination<QueueRef>,
        key: &str,
        args: &FieldTable,
    ) -> AmqpResult<()> {
        let record = self.binding_record_locked(topo, source, &dest, key, args);
        let added = topo.routing.bind(source, dest, key, args).map_err(|e| self.bind_error(e))?;
        if let (true, Some(r)) = (added, record) {
            self.persist(StoreOp::PutBinding(r));
        }
        Ok(())
    }

    /// Removes a binding (if present), forgets its record and auto-deletes the source
    /// exchange if that was its last binding.
    pub(super) fn remove_binding_locked(
        &self,
        topo: &mut Topology,
        source: &str,
        dest: &Destination<QueueRef>,
        key: &str,
        args: &FieldTable,
    ) {
        let record = self.binding_record_locked(topo, source, dest, key, args);
        if topo.routing.unbind(source, dest, key, args) {
            if let Some(r) = record {
                self.persist(StoreOp::DeleteBinding(r));
            }
            self.auto_delete_exchanges(topo, vec![source.into()]);
        }
    }

    /// The store record for a binding, if both ends are durable (callers hold the
    /// topology lock).
    pub(super) fn binding_record_locked(
        &self,
        topo: &Topology,
        source: &str,
        dest: &Destination<QueueRef>,
        key: &str,
        args: &FieldTable,
    ) -> Option<BindingRecord> {
        self.store.as_ref()?;
        let durable = |name: &str| topo.exchanges.get(name).is_some_and(|e| e.durable);
        let (destination, to_queue, durable_dest) = match dest {
            Destination::Queue(q) => (q.0.name().to_string(), true, q.0.is_durable()),
            Destination::Exchange(e) => (e.to_string(), false, durable(e)),
        };
        (durable(source) && durable_dest).then(|| BindingRecord {
            vhost: self.name.to_string(),
            source: source.to_string(),
            destination,
            to_queue,
            routing_key: key.to_string(),
            arguments: args.clone(),
        })
    }
}
