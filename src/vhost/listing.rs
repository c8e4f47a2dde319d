//! Snapshots of a vhost's topology for export and listing (definitions and the
//! management API): copies taken under the read locks, never live references.

use std::sync::Arc;

use amq_protocol::types::FieldTable;
use haremq_routing::{Binding, Destination};

use super::*;

/// One exchange as declared.
#[derive(Clone, Debug)]
pub struct ExchangeInfo {
    pub name: Arc<str>,
    pub kind: &'static str,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    /// The name of the policy that applies to it.
    pub policy: Option<String>,
}

/// One queue as declared.
#[derive(Clone, Debug)]
pub struct QueueInfo {
    pub name: Arc<str>,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
    /// Its counts now.
    pub stats: crate::queue::QueueStats,
    /// The policy and operator policy it acts under.
    pub policies: crate::policy::Applied,
    /// What it is (`classic`, `quorum` or `stream`).
    pub kind: crate::queue::QueueKind,
    /// A replicated queue's leader and members (node ids).
    pub replication: Option<(Option<u64>, Vec<u64>)>,
    /// A classic queue living on another node of the cluster: that node.
    pub home: Option<u64>,
}

/// One binding; `to_queue` tells whether `destination` names a queue or an exchange.
#[derive(Clone, Debug)]
pub struct BindingInfo {
    pub source: Arc<str>,
    pub destination: Arc<str>,
    pub to_queue: bool,
    pub routing_key: Arc<str>,
    pub arguments: FieldTable,
}

impl VHost {
    /// Every exchange but the default one, sorted by name.
    pub fn exchange_list(&self) -> Vec<ExchangeInfo> {
        let topo = read(&self.topology);
        let mut out: Vec<ExchangeInfo> = topo
            .exchanges
            .values()
            .filter(|e| !e.name.is_empty())
            .map(|e| ExchangeInfo {
                name: e.name.clone(),
                kind: e.settings.type_name(),
                durable: e.durable,
                auto_delete: e.auto_delete,
                internal: e.internal,
                arguments: e.arguments.clone(),
                policy: e.policy.as_ref().map(|p| p.name.clone()),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Whether an exchange of this name exists (the default one always does).
    pub fn exchange_exists(&self, name: &str) -> bool {
        name.is_empty() || read(&self.topology).exchanges.contains_key(name)
    }

    /// Every queue's handle, in no order (for sampling).
    pub fn queue_handles(&self) -> Vec<Arc<Queue>> {
        read(&self.queues).values().cloned().collect()
    }

    /// Every queue, sorted by name.
    pub fn queue_list(&self) -> Vec<QueueInfo> {
        let mut out: Vec<QueueInfo> = read(&self.queues)
            .values()
            .map(|q| {
                let s = q.settings();
                QueueInfo {
                    name: q.name().clone(),
                    durable: s.durable,
                    exclusive: s.exclusive_owner.is_some(),
                    auto_delete: s.auto_delete,
                    arguments: s.arguments.clone(),
                    stats: q.stats(),
                    policies: q.policies(),
                    kind: q.kind(),
                    replication: q.replication(),
                    home: q.home(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Every explicit binding (the default exchange's implicit ones are not listed, as
    /// in RabbitMQ's definitions), sorted by source, destination and key.
    pub fn binding_list(&self) -> Vec<BindingInfo> {
        let bindings: Vec<Binding<QueueRef>> = read(&self.topology).routing.bindings();
        let mut out: Vec<BindingInfo> = bindings
            .into_iter()
            .map(|b| {
                let (destination, to_queue) = match b.destination {
                    Destination::Queue(q) => (q.0.name().clone(), true),
                    Destination::Exchange(x) => (x, false),
                };
                BindingInfo {
                    source: b.source,
                    destination,
                    to_queue,
                    routing_key: b.routing_key,
                    arguments: b.arguments,
                }
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.source, &a.destination, &a.routing_key).cmp(&(&b.source, &b.destination, &b.routing_key))
        });
        out
    }

    /// Whether this exact binding exists (to tell, on import, which ones an import added).
    pub fn has_binding(&self, b: &BindingInfo) -> bool {
        let destination = if b.to_queue {
            match self.queue(&b.destination) {
                Some(q) => Destination::Queue(QueueRef(q)),
                None => return false,
            }
        } else {
            Destination::Exchange(b.destination.clone())
        };
        read(&self.topology).routing.has_binding(&b.source, &destination, &b.routing_key, &b.arguments)
    }
}
