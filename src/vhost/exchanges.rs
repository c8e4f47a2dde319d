//! Exchanges: declare (with RabbitMQ's equivalence check), delete, and auto-delete
//! when the last binding from one goes.

use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldTable};
use haremq_routing::{HashOn, RoutingTable};

use super::*;

/// What exchange.declare asks for.
pub struct ExchangeDeclare<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub passive: bool,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: &'a FieldTable,
}

impl VHost {
    /// What exchange.declare would do, without doing it: Ok(true) if it would create
    /// the exchange, Ok(false) if it would succeed without a change (passive, or an
    /// equivalent redeclare), or the refusal it would give. A node of a cluster asks
    /// before replicating a declaration, so that only creations go to the log.
    pub fn would_create_exchange(&self, d: &ExchangeDeclare<'_>) -> AmqpResult<bool> {
        if d.name.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        if !d.passive {
            crate::exchange::check_type(d.kind)?;
        }
        let topo = read(&self.topology);
        match topo.exchanges.get(d.name) {
            Some(existing) if !d.passive => self.check_exchange_equivalent(existing, d).map(|()| false),
            Some(_) => Ok(false),
            None if d.passive => Err(self.no_exchange(d.name)),
            None => self.new_exchange_settings(d).map(|_| true),
        }
    }

    /// The checks of a declaration that creates an exchange, and its settings.
    fn new_exchange_settings(&self, d: &ExchangeDeclare<'_>) -> AmqpResult<ExchangeSettings> {
        // As RabbitMQ: the reserved prefix only stops creating new exchanges, so an
        // equivalent redeclare of amq.direct and friends succeeds.
        if d.name.starts_with("amq.") {
            return Err(AmqpError::AccessRefused(format!(
                "exchange name '{}' contains reserved prefix 'amq.*'",
                d.name
            )));
        }
        if self.is_deleted() {
            return Err(self.deleted_error());
        }
        // Arguments are validated only when the exchange is created, as RabbitMQ does.
        crate::exchange::settings(d.kind, d.arguments, d.name, &self.name)
    }

    pub fn declare_exchange(&self, d: &ExchangeDeclare<'_>) -> AmqpResult<()> {
        if d.name.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        if d.passive {
            return match read(&self.topology).exchanges.get(d.name) {
                Some(_) => Ok(()),
                None => Err(self.no_exchange(d.name)),
            };
        }
        crate::exchange::check_type(d.kind)?;
        let mut topo = self.change_topology();
        if let Some(existing) = topo.exchanges.get(d.name) {
            return self.check_exchange_equivalent(existing, d);
        }
        let settings = self.new_exchange_settings(d)?;
        let name: Arc<str> = d.name.into();
        if d.durable {
            self.persist(StoreOp::PutExchange(ExchangeRecord {
                vhost: self.name.to_string(),
                name: d.name.to_string(),
                kind: settings.type_name().to_string(),
                auto_delete: d.auto_delete,
                internal: d.internal,
                arguments: d.arguments.clone(),
            }));
        }
        Self::add_to_routing(&mut topo.routing, d.name, &settings);
        topo.exchanges.insert(
            name.clone(),
            ExchangeMeta {
                name,
                settings,
                durable: d.durable,
                auto_delete: d.auto_delete,
                internal: d.internal,
                arguments: d.arguments.clone(),
                policy: None,
            },
        );
        self.apply_policy_to_new_exchange(&mut topo, d.name);
        Ok(())
    }

    /// Adds a new exchange to the routing table with its settings.
    pub(super) fn add_to_routing(routing: &mut RoutingTable<QueueRef>, name: &str, s: &ExchangeSettings) {
        routing.add_exchange(name, s.kind);
        routing.set_alternate(name, s.alternate.as_deref());
        if s.hash_on != HashOn::RoutingKey {
            routing.set_hash_on(name, s.hash_on.clone());
        }
    }

    pub(super) fn check_exchange_equivalent(&self, e: &ExchangeMeta, d: &ExchangeDeclare<'_>) -> AmqpResult<()> {
        let mismatch = |arg: &str, received: &dyn std::fmt::Display, current: &dyn std::fmt::Display| {
            AmqpError::PreconditionFailed(format!(
                "inequivalent arg '{arg}' for exchange '{}' in vhost '{}': received '{received}' but current is '{current}'",
                e.name, self.name
            ))
        };
        if e.settings.type_name() != d.kind {
            return Err(mismatch("type", &d.kind, &e.settings.type_name()));
        }
        if e.durable != d.durable {
            return Err(mismatch("durable", &d.durable, &e.durable));
        }
        if e.auto_delete != d.auto_delete {
            return Err(mismatch("auto_delete", &d.auto_delete, &e.auto_delete));
        }
        if e.internal != d.internal {
            return Err(mismatch("internal", &d.internal, &e.internal));
        }
        // As RabbitMQ (and the plugins' exchange types): of the arguments, only
        // alternate-exchange must match on redeclare.
        let (received, current) =
            (d.arguments.inner().get("alternate-exchange"), e.arguments.inner().get("alternate-exchange"));
        if received != current {
            // RabbitMQ's wording: a side that is set is "the value 'x' of type 't'" when
            // the other side is not.
            let side = |v: Option<&AMQPValue>, other: Option<&AMQPValue>| match (v, other) {
                (None, _) => "none".to_string(),
                (Some(v), Some(_)) => format!("'{}'", DisplayValue(Some(v))),
                (Some(v), None) => {
                    format!("the value '{}' of type '{}'", DisplayValue(Some(v)), crate::exchange::type_word(v))
                }
            };
            return Err(AmqpError::PreconditionFailed(format!(
                "inequivalent arg 'alternate-exchange' for exchange '{}' in vhost '{}': received {} but current is {}",
                e.name,
                self.name,
                side(received, current),
                side(current, received)
            )));
        }
        Ok(())
    }

    /// exchange.delete. Deleting a missing exchange succeeds, as in RabbitMQ.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> AmqpResult<()> {
        if name.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::AccessRefused(format!("exchange name '{name}' contains reserved prefix 'amq.*'")));
        }
        let mut topo = self.change_topology();
        if !topo.exchanges.contains_key(name) {
            return Ok(());
        }
        if if_unused && topo.routing.has_bindings_from(name) {
            return Err(AmqpError::PreconditionFailed(format!("exchange '{name}' in vhost '{}' in use", self.name)));
        }
        self.remove_exchange_locked(&mut topo, name);
        Ok(())
    }

    /// Removes an exchange and its bindings, then auto-deletes what that leaves unused.
    pub(super) fn remove_exchange_locked(&self, topo: &mut Topology, name: &str) {
        let mut pending = vec![Arc::<str>::from(name)];
        let mut first = true;
        while let Some(source) = pending.pop() {
            let unused = first
                || (topo.exchanges.get(&source).is_some_and(|e| e.auto_delete)
                    && !topo.routing.has_bindings_from(&source));
            first = false;
            if !unused {
                continue;
            }
            if let Some(meta) = topo.exchanges.remove(&source) {
                if meta.settings.delayed {
                    for id in self.delayed.forget_exchange(&source) {
                        self.persist(StoreOp::DeleteDelayed(id));
                    }
                }
                if meta.durable {
                    self.persist(StoreOp::DeleteExchange { vhost: self.name.to_string(), name: source.to_string() });
                }
            }
            if let Some(more) = topo.routing.remove_exchange(&source) {
                pending.extend(more);
            }
        }
    }

    /// Deletes the auto-delete exchanges among `sources` that have no bindings left,
    /// and, transitively, the ones that loses.
    pub(super) fn auto_delete_exchanges(&self, topo: &mut Topology, sources: Vec<Arc<str>>) {
        for source in sources {
            let unused =
                topo.exchanges.get(&source).is_some_and(|e| e.auto_delete) && !topo.routing.has_bindings_from(&source);
            if unused {
                self.remove_exchange_locked(topo, &source);
            }
        }
    }
}
