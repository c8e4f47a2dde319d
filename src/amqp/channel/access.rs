//! The permission checks of channel methods, in RabbitMQ's order (see
//! `auth::access` for which method needs what): every check comes before the lookup
//! of what it names, so a refused user learns nothing about what exists.

use super::Context;
use crate::auth::access::ResourceKind;
use crate::auth::permissions::Access;
use crate::error::{AmqpError, AmqpResult};
use crate::exchange::string_arg;

use amq_protocol::types::FieldTable;

fn default_exchange_refused() -> AmqpError {
    AmqpError::AccessRefused("operation not permitted on the default exchange".into())
}

/// exchange.declare (not passive): configure on the exchange; creating one with an
/// `alternate-exchange` also needs read on it and write on the alternate.
pub(super) fn declare_exchange(ctx: &Context<'_>, name: &str, kind: &str, args: &FieldTable) -> AmqpResult<()> {
    if name.is_empty() {
        return Ok(()); // refused by the vhost: the default exchange
    }
    // RabbitMQ checks the type before anything else.
    crate::exchange::check_type(kind)?;
    let access = ctx.access.current();
    access.check(Access::Configure, ResourceKind::Exchange, name)?;
    if !name.starts_with("amq.") && !ctx.vhost.has_exchange(name) {
        if let Some(Ok(alternate)) = string_arg(args, "alternate-exchange") {
            access.check(Access::Read, ResourceKind::Exchange, name)?;
            access.check(Access::Write, ResourceKind::Exchange, alternate)?;
        }
    }
    Ok(())
}

/// exchange.delete: configure on the exchange (after the checks that refuse the
/// default and `amq.*` exchanges whoever asks).
pub(super) fn delete_exchange(ctx: &Context<'_>, name: &str) -> AmqpResult<()> {
    if name.is_empty() || name.starts_with("amq.") {
        return Ok(()); // refused by the vhost
    }
    ctx.access.check(Access::Configure, ResourceKind::Exchange, name)
}

/// queue.bind/unbind and exchange.bind/unbind: write on the destination, read on the
/// source, and on a topic exchange its topic permission's read on the binding key.
pub(super) fn binding(
    ctx: &Context<'_>,
    destination_kind: ResourceKind,
    destination: &str,
    source: &str,
    key: &str,
) -> AmqpResult<()> {
    let access = ctx.access.current();
    access.check(Access::Write, destination_kind, destination)?;
    if source.is_empty() || (destination_kind == ResourceKind::Exchange && destination.is_empty()) {
        return Err(default_exchange_refused());
    }
    access.check(Access::Read, ResourceKind::Exchange, source)?;
    if access.topic_rule(source).is_some() && ctx.vhost.is_topic_exchange(source) {
        access.check_topic(Access::Read, source, key)?;
    }
    Ok(())
}

/// queue.declare (not passive): configure on the queue; creating one (within the
/// vhost's `max-queues`) with `x-dead-letter-exchange` also needs read on the queue
/// and write on that exchange.
pub(super) fn declare_queue(ctx: &Context<'_>, name: &str, args: &FieldTable) -> AmqpResult<()> {
    crate::vhost::check_queue_name(name)?;
    let access = ctx.access.current();
    access.check(Access::Configure, ResourceKind::Queue, name)?;
    if ctx.vhost.queue(name).is_none() {
        ctx.vhost.check_queue_limit(name)?;
        if let Some(Ok(dlx)) = string_arg(args, "x-dead-letter-exchange") {
            access.check(Access::Read, ResourceKind::Queue, name)?;
            access.check(Access::Write, ResourceKind::Exchange, dlx)?;
        }
    }
    Ok(())
}

/// queue.delete: configure on the queue.
pub(super) fn delete_queue(ctx: &Context<'_>, name: &str) -> AmqpResult<()> {
    ctx.access.check(Access::Configure, ResourceKind::Queue, name)
}

/// basic.consume, basic.get, queue.purge: read on the queue.
pub(super) fn read_queue(ctx: &Context<'_>, name: &str) -> AmqpResult<()> {
    ctx.access.check(Access::Read, ResourceKind::Queue, name)
}

/// basic.publish to a topic exchange with a topic permission: write on the routing
/// key.
pub(super) fn publish_topic(ctx: &Context<'_>, exchange: &str, routing_key: &str) -> AmqpResult<()> {
    if ctx.vhost.is_topic_exchange(exchange) {
        ctx.access.current().check_topic(Access::Write, exchange, routing_key)?;
    }
    Ok(())
}
