//! The exchange class: declare, delete, bind and unbind.

use amq_protocol::protocol::{exchange, AMQPClass};

use super::{access, Channel, Context};
use crate::admin::topology;
use crate::auth::access::ResourceKind;
use crate::error::{AmqpError, AmqpResult};
use crate::vhost::ExchangeDeclare;

impl Channel {
    pub(super) fn exchange(&mut self, ctx: &Context<'_>, m: exchange::AMQPMethod) -> AmqpResult<Option<AMQPClass>> {
        use exchange::AMQPMethod as E;
        let (reply, nowait) = match m {
            E::Declare(d) => {
                if !d.passive {
                    access::declare_exchange(ctx, d.exchange.as_str(), d.kind.as_str(), &d.arguments)?;
                }
                let declare = ExchangeDeclare {
                    name: d.exchange.as_str(),
                    kind: d.kind.as_str(),
                    passive: d.passive,
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    arguments: &d.arguments,
                };
                if let Some(cluster) = ctx.cluster {
                    if let Some(change) = topology::exchange_declared(ctx.vhost, &declare)? {
                        if d.nowait {
                            return self.replicate_now(ctx, cluster, change, (40, 10));
                        }
                        let reply = Some(AMQPClass::Exchange(E::DeclareOk(exchange::DeclareOk {})));
                        return self.replicate_definition(cluster, change, reply, (40, 10));
                    }
                }
                ctx.vhost.declare_exchange(&declare)?;
                (E::DeclareOk(exchange::DeclareOk {}), d.nowait)
            }
            E::Delete(d) => {
                access::delete_exchange(ctx, d.exchange.as_str())?;
                let name = d.exchange.as_str();
                if let Some((cluster, change)) =
                    ctx.cluster.zip(topology::exchange_deleted(ctx.vhost, name, d.if_unused))
                {
                    let reply = (!d.nowait).then_some(AMQPClass::Exchange(E::DeleteOk(exchange::DeleteOk {})));
                    return self.replicate_definition(cluster, change, reply, (40, 20));
                }
                ctx.vhost.delete_exchange(name, d.if_unused)?;
                (E::DeleteOk(exchange::DeleteOk {}), d.nowait)
            }
            E::Bind(b) => {
                access::binding(
                    ctx,
                    ResourceKind::Exchange,
                    b.destination.as_str(),
                    b.source.as_str(),
                    b.routing_key.as_str(),
                )?;
                let change = topology::exchanges_bound(
                    ctx.vhost,
                    b.destination.as_str(),
                    b.source.as_str(),
                    b.routing_key.as_str(),
                    &b.arguments,
                    true,
                );
                if let Some((cluster, change)) = ctx.cluster.zip(change) {
                    if b.nowait {
                        return self.replicate_now(ctx, cluster, change, (40, 30));
                    }
                    let reply = Some(AMQPClass::Exchange(E::BindOk(exchange::BindOk {})));
                    return self.replicate_definition(cluster, change, reply, (40, 30));
                }
                ctx.vhost.bind_exchange(
                    b.destination.as_str(),
                    b.source.as_str(),
                    b.routing_key.as_str(),
                    &b.arguments,
                )?;
                (E::BindOk(exchange::BindOk {}), b.nowait)
            }
            E::Unbind(u) => {
                access::binding(
                    ctx,
                    ResourceKind::Exchange,
                    u.destination.as_str(),
                    u.source.as_str(),
                    u.routing_key.as_str(),
                )?;
                let change = topology::exchanges_bound(
                    ctx.vhost,
                    u.destination.as_str(),
                    u.source.as_str(),
                    u.routing_key.as_str(),
                    &u.arguments,
                    false,
                );
                if let Some((cluster, change)) = ctx.cluster.zip(change) {
                    let reply = (!u.nowait).then_some(AMQPClass::Exchange(E::UnbindOk(exchange::UnbindOk {})));
                    return self.replicate_definition(cluster, change, reply, (40, 40));
                }
                ctx.vhost.unbind_exchange(
                    u.destination.as_str(),
                    u.source.as_str(),
                    u.routing_key.as_str(),
                    &u.arguments,
                )?;
                (E::UnbindOk(exchange::UnbindOk {}), u.nowait)
            }
            other => {
                return Err(AmqpError::CommandInvalid(format!(
                    "method 40.{} is not valid from a client",
                    AMQPClass::Exchange(other).get_amqp_method_id()
                )))
            }
        };
        Ok(if nowait { None } else { Some(AMQPClass::Exchange(reply)) })
    }
}
