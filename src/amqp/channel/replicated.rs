//! Definition changes a channel makes on a node of a cluster: exchanges, bindings
//! between exchanges, and bindings of replicated (quorum) queues go through the
//! cluster's metadata log, so every node routes the same way. The channel checks
//! what it can first (a refusal needs no log entry), then submits the change and goes
//! on with its next frames; the reply follows once this node has applied the change.

use std::sync::Arc;

use amq_protocol::protocol::AMQPClass;

use super::Channel;
use crate::admin::replicated::ChangeError;
use crate::error::{AmqpError, AmqpResult};
use crate::membership::{ClusterView, DefinitionChange};

impl Channel {
    /// A no-wait creation (exchange.declare, exchange.bind, queue.bind) on a node of a
    /// cluster: it takes effect on this node at once, as on a single node (the next
    /// frame, a publish say, finds it), then goes through the cluster's log like any
    /// change. If the cluster does not commit it, it is undone here and the channel
    /// closed (541). A refusal here is the one a single node gives, at once.
    pub(super) fn replicate_now(
        &self,
        ctx: &super::Context<'_>,
        cluster: &Arc<dyn ClusterView>,
        change: DefinitionChange,
        method: (u16, u16),
    ) -> AmqpResult<Option<AMQPClass>> {
        crate::admin::replicated::apply_topology_here(ctx.vhost, &change)?;
        let (vhost, undo) = (ctx.vhost.clone(), crate::admin::replicated::undoing(&change));
        let undo = Box::new(move || {
            if let Some(undo) = &undo {
                let _ = crate::admin::replicated::apply_topology_here(&vhost, undo);
            }
        });
        self.submit_change(cluster, change, None, method, Some(undo))
    }

    /// Submits `change`; `reply` (None with nowait) is sent once this node has applied
    /// it. A refusal there closes the channel as a single node would (its code and
    /// text); a change the cluster did not commit closes it with 541.
    pub(super) fn replicate_definition(
        &self,
        cluster: &Arc<dyn ClusterView>,
        change: DefinitionChange,
        reply: Option<AMQPClass>,
        method: (u16, u16),
    ) -> AmqpResult<Option<AMQPClass>> {
        self.submit_change(cluster, change, reply, method, None)
    }

    /// Submits `change`: `reply` once it is applied here; a refusal or a change not
    /// committed (then `undo` runs first) closes the channel.
    fn submit_change(
        &self,
        cluster: &Arc<dyn ClusterView>,
        change: DefinitionChange,
        reply: Option<AMQPClass>,
        method: (u16, u16),
        undo: Option<Box<dyn FnOnce() + Send>>,
    ) -> AmqpResult<Option<AMQPClass>> {
        let shared = self.shared.clone();
        crate::admin::replicated::submit(
            cluster,
            change,
            Box::new(move |r| {
                let err = match r {
                    Ok(()) => {
                        if let Some(reply) = reply {
                            crate::amqp::frame::write_method(shared.outbox.lock().buf(), shared.id, reply);
                        }
                        return;
                    }
                    Err(ChangeError::Amqp(e)) => e,
                    Err(ChangeError::Admin(e)) => AmqpError::InternalError(e.to_string()),
                    Err(ChangeError::NotReplicated(why)) => {
                        log::warn!("channel {}: a definition change was not replicated: {why}", shared.id);
                        if let Some(undo) = undo {
                            undo();
                        }
                        AmqpError::InternalError(format!("the cluster did not commit the change: {why}"))
                    }
                };
                shared.close_from_outside(&err, method);
            }),
        );
        Ok(None)
    }
}
