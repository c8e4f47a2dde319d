//! The queue class: declare, bind, unbind, purge and delete, and the channel's
//! "current queue" for methods with an empty queue name.

use std::sync::Arc;

use amq_protocol::protocol::queue::AMQPMethod as Q;
use amq_protocol::protocol::{queue, AMQPClass};

use super::{access, Channel, Context};
use crate::admin::topology;
use crate::auth::access::ResourceKind;
use crate::error::{AmqpError, AmqpResult};
use crate::queue::{Queue, QueueSettings};
use crate::util::random_name;
use crate::wire::shortstr::short;

impl Channel {
    /// Resolves a queue name from a client method; "" means the channel's last declared
    /// queue.
    pub(super) fn resolve_queue(&self, ctx: &Context<'_>, name: &str) -> AmqpResult<Arc<Queue>> {
        let name = self.queue_name(name)?;
        ctx.vhost.queue_for(&name, ctx.conn_id)
    }

    /// A queue name from a client method, "" standing for the channel's last declared
    /// queue (404 if there is none, with RabbitMQ's text).
    pub(super) fn queue_name(&self, name: &str) -> AmqpResult<Arc<str>> {
        if !name.is_empty() {
            return Ok(name.into());
        }
        self.last_queue.clone().ok_or_else(|| AmqpError::NotFound("no previously declared queue".into()))
    }

    pub(super) fn queue(&mut self, ctx: &Context<'_>, m: queue::AMQPMethod) -> AmqpResult<Option<AMQPClass>> {
        let (reply, nowait) = match m {
            Q::Declare(d) => {
                let name = if d.queue.as_str().is_empty() {
                    if d.passive {
                        self.resolve_queue(ctx, "")?.name().to_string()
                    } else {
                        format!("amq.gen-{}", random_name())
                    }
                } else {
                    d.queue.as_str().to_string()
                };
                if !d.passive {
                    access::declare_queue(ctx, &name, &d.arguments)?;
                }
                // As RabbitMQ: a redeclare is checked for equivalence instead.
                if !d.passive && ctx.vhost.queue(&name).is_none() {
                    crate::queue::args::validate(&name, &ctx.vhost.name, &d.arguments)?;
                }
                let settings = QueueSettings {
                    // As RabbitMQ: an exclusive queue is never durable.
                    durable: d.durable && !d.exclusive,
                    exclusive_owner: d.exclusive.then_some(ctx.conn_id),
                    auto_delete: d.auto_delete,
                    arguments: d.arguments,
                };
                if let Some(cluster) = ctx.cluster.filter(|_| !d.passive && ctx.vhost.queue(&name).is_none()) {
                    // Through the cluster's log: declare-ok once it is applied here.
                    let ok = queue::DeclareOk { queue: short(&name), message_count: 0, consumer_count: 0 };
                    let failed = format!("cannot declare queue '{name}' in vhost '{}'", ctx.vhost.name);
                    let done = self.reply_when_applied((!d.nowait).then_some(Q::DeclareOk(ok)), failed, (50, 10));
                    if topology::declare_through_log(cluster, ctx.vhost, &name, &settings, ctx.conn_id, done)? {
                        self.last_queue = Some(name.as_str().into());
                        return Ok(None);
                    }
                }
                let (q, created) = ctx.vhost.declare_queue(&name, d.passive, settings, ctx.conn_id)?;
                if !created {
                    // A redeclare restarts the x-expires period.
                    q.touch();
                }
                self.last_queue = Some(q.name().clone());
                if q.home().is_some() {
                    // Living on another node: its counts are a round trip away.
                    let (shared, queue, nowait) = (self.shared.clone(), short(q.name()), d.nowait);
                    q.counts_later(Box::new(move |message_count, consumer_count| {
                        if !nowait {
                            let ok = queue::DeclareOk { queue, message_count, consumer_count };
                            reply(&shared, Q::DeclareOk(ok));
                        }
                    }));
                    return Ok(None);
                }
                (
                    Q::DeclareOk(queue::DeclareOk {
                        queue: short(q.name()),
                        message_count: q.message_count(),
                        consumer_count: q.consumer_count(),
                    }),
                    d.nowait,
                )
            }
            Q::Bind(b) => {
                let name = self.queue_name(b.queue.as_str())?;
                access::binding(ctx, ResourceKind::Queue, &name, b.exchange.as_str(), b.routing_key.as_str())?;
                let q = self.resolve_queue(ctx, &name)?;
                let change = topology::queue_bound(
                    ctx.vhost,
                    &q,
                    b.exchange.as_str(),
                    b.routing_key.as_str(),
                    &b.arguments,
                    true,
                );
                if let Some((cluster, change)) = ctx.cluster.zip(change) {
                    if b.nowait {
                        return self.replicate_now(ctx, cluster, change, (50, 20));
                    }
                    let reply = Some(AMQPClass::Queue(Q::BindOk(queue::BindOk {})));
                    return self.replicate_definition(cluster, change, reply, (50, 20));
                }
                ctx.vhost.bind_queue(&q, b.exchange.as_str(), b.routing_key.as_str(), &b.arguments)?;
                (Q::BindOk(queue::BindOk {}), b.nowait)
            }
            Q::Unbind(u) => {
                // The name only: unbinding a missing queue succeeds, as in RabbitMQ.
                let name = self.queue_name(u.queue.as_str())?;
                access::binding(ctx, ResourceKind::Queue, &name, u.exchange.as_str(), u.routing_key.as_str())?;
                let change = ctx.vhost.queue(&name).and_then(|q| {
                    topology::queue_bound(
                        ctx.vhost,
                        &q,
                        u.exchange.as_str(),
                        u.routing_key.as_str(),
                        &u.arguments,
                        false,
                    )
                });
                if let Some((cluster, change)) = ctx.cluster.zip(change) {
                    let reply = Some(AMQPClass::Queue(Q::UnbindOk(queue::UnbindOk {})));
                    return self.replicate_definition(cluster, change, reply, (50, 50));
                }
                ctx.vhost.unbind_queue(
                    &name,
                    u.exchange.as_str(),
                    u.routing_key.as_str(),
                    &u.arguments,
                    ctx.conn_id,
                )?;
                (Q::UnbindOk(queue::UnbindOk {}), false)
            }
            Q::Purge(p) => {
                let name = self.queue_name(p.queue.as_str())?;
                access::read_queue(ctx, &name)?;
                let q = self.resolve_queue(ctx, &name)?;
                q.refuse(crate::queue::QueueOp::Purge)?;
                if q.answers_later() {
                    let (shared, nowait) = (self.shared.clone(), p.nowait);
                    q.purge_later(Box::new(move |message_count| {
                        if !nowait {
                            reply(&shared, Q::PurgeOk(queue::PurgeOk { message_count }));
                        }
                    }));
                    return Ok(None);
                }
                let n = q.purge();
                (Q::PurgeOk(queue::PurgeOk { message_count: n }), p.nowait)
            }
            Q::Delete(d) => {
                let name = self.queue_name(d.queue.as_str())?;
                access::delete_queue(ctx, &name)?;
                let count = match self.resolve_queue(ctx, &name) {
                    Err(AmqpError::NotFound(_)) => 0,
                    Err(e) => return Err(e),
                    Ok(q) if q.home().is_some() => {
                        // Living on another node: its home checks, deletes it and
                        // replicates the deletion; then it goes here too.
                        let (shared, vhost, nowait) = (self.shared.clone(), ctx.vhost.clone(), d.nowait);
                        let queue = q.clone();
                        q.delete_at_home(
                            d.if_unused,
                            d.if_empty,
                            Box::new(move |r| match r {
                                Ok(message_count) => {
                                    vhost.delete_queue(&queue);
                                    if !nowait {
                                        reply(&shared, Q::DeleteOk(queue::DeleteOk { message_count }));
                                    }
                                }
                                Err(e) => shared.close_from_outside(&e, (50, 40)),
                            }),
                        );
                        return Ok(None);
                    }
                    Ok(q) => {
                        crate::vhost::check_deletable(&*q, d.if_unused, d.if_empty)?;
                        if let Some(cluster) = ctx.cluster.filter(|_| topology::deleted_through_log(&q)) {
                            // delete-ok once the deletion is applied here.
                            let (nowait, failed) =
                                (d.nowait, format!("cannot delete queue '{name}' in vhost '{}'", ctx.vhost.name));
                            topology::delete_through_log(cluster, ctx.vhost, &q, |message_count| {
                                let ok = queue::DeleteOk { message_count };
                                self.reply_when_applied((!nowait).then_some(Q::DeleteOk(ok)), failed, (50, 40))
                            });
                            return Ok(None);
                        }
                        ctx.vhost.delete_queue(&q)
                    }
                };
                (Q::DeleteOk(queue::DeleteOk { message_count: count }), d.nowait)
            }
            other => {
                return Err(AmqpError::CommandInvalid(format!(
                    "method 50.{} is not valid from a client",
                    AMQPClass::Queue(other).get_amqp_method_id()
                )))
            }
        };
        Ok(if nowait { None } else { Some(AMQPClass::Queue(reply)) })
    }

    /// The callback for a replicated change: `reply` (none with nowait) once it is
    /// applied, or the channel closed with 541 and why (`failed` says what was asked).
    fn reply_when_applied(&self, reply: Option<Q>, failed: String, method: (u16, u16)) -> crate::membership::Applied {
        let shared = self.shared.clone();
        Box::new(move |r| match r {
            Ok(()) => {
                if let Some(method) = reply {
                    self::reply(&shared, method);
                }
            }
            Err(e) => {
                log::warn!("{failed}: {e}");
                shared.close_from_outside(&AmqpError::InternalError(format!("{failed}: {e}")), method);
            }
        })
    }
}

/// Writes a queue-class reply that comes later (from another thread).
fn reply(shared: &crate::amqp::delivery::ChannelShared, method: Q) {
    crate::amqp::frame::write_method(shared.outbox.lock().buf(), shared.id, AMQPClass::Queue(method));
}
