//! Exchanges and bindings on a node of a cluster: which changes go through the
//! cluster's log (creations, deletions and bindings of what exists), and the
//! administrative calls (the management API) that replicate them and wait. What a
//! single node refuses, or answers without a change, is answered on the node itself
//! without a log entry. Bindings of exclusive queues stay on their node.

use std::sync::Arc;

use amq_protocol::types::FieldTable;

use super::replicated::{submit_and_wait, ChangeError};
use super::Admin;
use crate::error::{AmqpError, AmqpResult};
use crate::membership::DefinitionChange;
use crate::queue::{Queue, QueueKind};
use crate::vhost::{ExchangeDeclare, VHost};

/// The change an exchange.declare replicates: None when it creates nothing (passive,
/// an equivalent redeclare), or the refusal a single node gives.
pub fn exchange_declared(v: &VHost, d: &ExchangeDeclare<'_>) -> AmqpResult<Option<DefinitionChange>> {
    Ok(v.would_create_exchange(d)?.then(|| DefinitionChange::DeclareExchange {
        vhost: v.name.to_string(),
        name: d.name.into(),
        kind: d.kind.into(),
        durable: d.durable,
        auto_delete: d.auto_delete,
        internal: d.internal,
        arguments: d.arguments.clone(),
    }))
}

/// The change an exchange.delete replicates: None for the default and `amq.*`
/// exchanges (refused) and a missing one (nothing to do).
pub fn exchange_deleted(v: &VHost, name: &str, if_unused: bool) -> Option<DefinitionChange> {
    (!name.is_empty() && !name.starts_with("amq.") && v.has_exchange(name)).then(|| DefinitionChange::DeleteExchange {
        vhost: v.name.to_string(),
        name: name.into(),
        if_unused,
    })
}

/// The change an exchange.bind (`bind`) or exchange.unbind replicates: None unless
/// both ends exist here.
pub fn exchanges_bound(
    v: &VHost,
    destination: &str,
    source: &str,
    routing_key: &str,
    arguments: &FieldTable,
    bind: bool,
) -> Option<DefinitionChange> {
    let ends = !source.is_empty() && !destination.is_empty() && v.has_exchange(source) && v.has_exchange(destination);
    ends.then(|| {
        let (vhost, destination, source, routing_key, arguments) =
            (v.name.to_string(), destination.into(), source.into(), routing_key.into(), arguments.clone());
        if bind {
            DefinitionChange::BindExchange { vhost, destination, source, routing_key, arguments }
        } else {
            DefinitionChange::UnbindExchange { vhost, destination, source, routing_key, arguments }
        }
    })
}

/// Whether a queue is one the whole cluster serves: a quorum queue, or a classic
/// queue that is not exclusive (exclusive queues serve one connection, on its node).
pub fn is_cluster_classic(queue: &Arc<Queue>) -> bool {
    queue.kind() == QueueKind::Classic && queue.settings().exclusive_owner.is_none()
}

/// The change a queue.bind (`bind`) or queue.unbind replicates: None unless every node
/// serves the queue (quorum, shared classic) and the exchange exists here.
pub fn queue_bound(
    v: &VHost,
    queue: &Arc<Queue>,
    exchange: &str,
    routing_key: &str,
    arguments: &FieldTable,
    bind: bool,
) -> Option<DefinitionChange> {
    let shared = queue.kind() == QueueKind::Quorum || is_cluster_classic(queue);
    (shared && !exchange.is_empty() && v.has_exchange(exchange)).then(|| {
        let (vhost, queue, exchange, routing_key, arguments) =
            (v.name.to_string(), queue.name().to_string(), exchange.into(), routing_key.into(), arguments.clone());
        if bind {
            DefinitionChange::BindQueue { vhost, queue, exchange, routing_key, arguments }
        } else {
            DefinitionChange::UnbindQueue { vhost, queue, exchange, routing_key, arguments }
        }
    })
}

impl Admin {
    /// Replicates a topology change and waits until this node has applied it.
    fn replicate_topology(
        &self,
        change: Option<DefinitionChange>,
        here: impl FnOnce() -> AmqpResult<()>,
    ) -> AmqpResult<()> {
        let (Some(cluster), Some(change)) = (self.cluster(), change) else {
            return here();
        };
        submit_and_wait(&cluster, change).map_err(|e| match e {
            ChangeError::Amqp(e) => e,
            ChangeError::Admin(e) => AmqpError::InternalError(e.to_string()),
            ChangeError::NotReplicated(why) => {
                AmqpError::InternalError(format!("the cluster did not commit the change: {why}"))
            }
        })
    }

    /// exchange.declare for the management API (replicated on a cluster).
    pub(crate) fn declare_exchange(&self, v: &VHost, d: &ExchangeDeclare<'_>) -> AmqpResult<()> {
        let change = if self.cluster().is_some() { exchange_declared(v, d)? } else { None };
        self.replicate_topology(change, || v.declare_exchange(d))
    }

    /// exchange.delete for the management API (replicated on a cluster).
    pub(crate) fn delete_exchange(&self, v: &VHost, name: &str, if_unused: bool) -> AmqpResult<()> {
        self.replicate_topology(exchange_deleted(v, name, if_unused), || v.delete_exchange(name, if_unused))
    }

    /// A binding between exchanges, made (`bind`) or removed, for the management API.
    pub(crate) fn bind_exchange(
        &self,
        v: &VHost,
        destination: &str,
        source: &str,
        routing_key: &str,
        arguments: &FieldTable,
        bind: bool,
    ) -> AmqpResult<()> {
        let change = exchanges_bound(v, destination, source, routing_key, arguments, bind);
        self.replicate_topology(change, || match bind {
            true => v.bind_exchange(destination, source, routing_key, arguments),
            false => v.unbind_exchange(destination, source, routing_key, arguments),
        })
    }

    /// A queue's binding, made (`bind`) or removed, for the management API (by no
    /// connection: another's exclusive queue is refused).
    pub(crate) fn bind_queue(
        &self,
        v: &VHost,
        queue: &Arc<Queue>,
        exchange: &str,
        routing_key: &str,
        arguments: &FieldTable,
        bind: bool,
    ) -> AmqpResult<()> {
        let change = queue_bound(v, queue, exchange, routing_key, arguments, bind);
        self.replicate_topology(change, || match bind {
            true => v.bind_queue(queue, exchange, routing_key, arguments),
            false => v.unbind_queue(queue.name(), exchange, routing_key, arguments, 0),
        })
    }
}
