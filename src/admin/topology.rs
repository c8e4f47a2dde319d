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
use crate::membership::{Applied, ClusterView, DefinitionChange};
use crate::queue::{ConnectionId, Queue, QueueKind, QueueSettings};
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

/// A new queue's declaration through the cluster's log: a quorum queue on every node;
/// a classic queue that is not exclusive created here at once (the next frame finds
/// it) and then served by every node, or deleted again if the cluster does not commit
/// it. `done` runs once this node has applied it. False (`done` dropped): the queue is
/// not the cluster's (a stream, an exclusive queue), declare it as on a single node.
pub(crate) fn declare_through_log(
    cluster: &Arc<dyn ClusterView>,
    v: &Arc<VHost>,
    name: &str,
    settings: &QueueSettings,
    conn: ConnectionId,
    done: Applied,
) -> AmqpResult<bool> {
    match QueueKind::of(&settings.arguments) {
        QueueKind::Quorum => {
            crate::queue::kind::check_properties(QueueKind::Quorum, name, &v.name, settings)?;
            cluster.declare_quorum_queue(&v.name, name, &settings.arguments, done);
            Ok(true)
        }
        QueueKind::Classic if settings.exclusive_owner.is_none() => {
            let (q, _) = v.declare_queue(name, false, settings.clone(), conn)?;
            let vhost = v.clone();
            let undo: Applied = Box::new(move |r| {
                if r.is_err() {
                    vhost.delete_queue(&q);
                }
                done(r)
            });
            cluster.declare_classic_queue(&v.name, name, settings, undo);
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Whether a queue's deletion goes through the cluster's log: a quorum queue, or a
/// classic queue living here that is not exclusive (one living elsewhere is deleted by
/// its home).
pub(crate) fn deleted_through_log(q: &Arc<Queue>) -> bool {
    q.kind() == QueueKind::Quorum || (is_cluster_classic(q) && q.home().is_none())
}

/// Deletes a queue [through the log](deleted_through_log): a quorum queue on every node,
/// a classic queue here and then everywhere. `done(count)` gives the callback that runs
/// once this node has applied the deletion, `count` the ready messages it held.
pub(crate) fn delete_through_log(
    cluster: &Arc<dyn ClusterView>,
    v: &VHost,
    q: &Arc<Queue>,
    done: impl FnOnce(u32) -> Applied,
) {
    if q.kind() == QueueKind::Quorum {
        cluster.delete_quorum_queue(&v.name, q.name(), done(q.message_count()));
    } else {
        let count = v.delete_queue(q);
        cluster.delete_classic_queue(&v.name, q.name(), done(count));
    }
}

/// A callback for a replicated queue change, and the wait for it (administrative calls
/// run on the blocking pool): Ok once this node has applied the change.
fn applied_here() -> (Applied, impl FnOnce() -> Result<(), ChangeError>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let done: Applied = Box::new(move |r| {
        let _ = tx.send(r);
    });
    let wait = move || match rx.recv() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(why)) => Err(ChangeError::NotReplicated(why)),
        Err(_) => Err(ChangeError::NotReplicated("the cluster stopped".into())),
    };
    (done, wait)
}

impl Admin {
    /// queue.declare for the management API and definitions imports, by no
    /// connection: on a cluster a new quorum queue is declared on every node, a new
    /// classic queue here and then everywhere (if the cluster does not commit it, it
    /// goes again). Returns whether it was created.
    pub(crate) fn declare_queue(
        &self,
        v: &Arc<VHost>,
        name: &str,
        settings: QueueSettings,
    ) -> Result<bool, ChangeError> {
        if let Some(cluster) = self.cluster().filter(|_| v.queue(name).is_none()) {
            let (done, wait) = applied_here();
            if declare_through_log(&cluster, v, name, &settings, 0, done).map_err(ChangeError::Amqp)? {
                return wait().map(|()| true);
            }
        }
        let (q, created) = v.declare_queue(name, false, settings, 0).map_err(ChangeError::Amqp)?;
        if !created {
            q.touch();
        }
        Ok(created)
    }

    /// Deletes a queue for the management API and definitions imports (the caller
    /// checked if-unused / if-empty): on a cluster, through its log.
    pub(crate) fn delete_queue(&self, v: &VHost, q: &Arc<Queue>) -> Result<(), ChangeError> {
        match self.cluster().filter(|_| deleted_through_log(q)) {
            Some(cluster) => {
                let (done, wait) = applied_here();
                delete_through_log(&cluster, v, q, |_| done);
                wait()
            }
            None => {
                v.delete_queue(q);
                Ok(())
            }
        }
    }

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
