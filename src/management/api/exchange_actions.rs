//! What the API does to exchanges, beyond listing them: `PUT` (declare) and `DELETE`
//! (`if-unused`) on `/api/exchanges/{vhost}/{name}`, `POST .../publish` and
//! `GET .../bindings/source|destination`. The default exchange is `amq.default` in
//! paths; it and the `amq.*` exchanges cannot be declared anew or deleted (401
//! `Access refused.`, RabbitMQ 3.10's answer). Publish errors are 400 with the AMQP
//! code and text (`404 NOT_FOUND - no exchange ...`), as RabbitMQ reports the channel
//! error of its direct connection.

use hyper::Method;
use serde_json::{json, Value};

use super::access::{self, Access};
use super::queue_actions::{amqp_error, arguments_field, bool_field, require_keys, required};
use super::{body_object, existing_vhost, string_field, Call, Context, Reply};
use crate::error::AmqpError;
use crate::vhost::{DirectPublish, ExchangeDeclare};

/// The exchange a path names: `amq.default` is the default exchange `""`.
pub(super) fn exchange_name(segment: &str) -> &str {
    if segment == "amq.default" {
        ""
    } else {
        segment
    }
}

/// `GET/PUT/DELETE /api/exchanges/{vhost}/{name}`.
pub fn one(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    match *call.method {
        Method::PUT => declare(ctx, call),
        Method::DELETE => delete(ctx, call),
        _ => super::exchanges::one(ctx, call),
    }
}

fn declare(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let (vhost, name) = (call.params[0], exchange_name(call.params[1]));
    let body = body_object(call)?;
    let v = ctx.broker.vhost(vhost).ok_or_else(|| Reply::error(404, "not_found", "vhost_not_found"))?;
    access::require(ctx, call, vhost, Access::Configure, name)?;
    let kind = string_field(&body, "type")?.unwrap_or("direct");
    let arguments = arguments_field(&body)?;
    let existed = v.has_exchange(name);
    super::admin(ctx)
        .declare_exchange(
            &v,
            &ExchangeDeclare {
                name,
                kind,
                passive: false,
                durable: bool_field(&body, "durable")?,
                auto_delete: bool_field(&body, "auto_delete")?,
                internal: bool_field(&body, "internal")?,
                arguments: &arguments,
            },
        )
        .map_err(amqp_error)?;
    Ok(Reply::empty(if existed { 204 } else { 201 }))
}

fn delete(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let (vhost, name) = (call.params[0], exchange_name(call.params[1]));
    let v = existing_vhost(ctx, vhost)?;
    access::permission_in(ctx, call, vhost)?;
    if !v.has_exchange(name) {
        return Err(Reply::not_found());
    }
    access::require(ctx, call, vhost, Access::Configure, name)?;
    super::admin(ctx).delete_exchange(&v, name, call.query_flag("if-unused")).map_err(amqp_error)?;
    Ok(Reply::empty(204))
}

/// A channel error of a publish as RabbitMQ's API shows it: 400, `"{code} {text}"`.
fn publish_error(e: AmqpError) -> Reply {
    Reply::bad_request(format!("{} {e}", e.reply_code()))
}

/// `POST /api/exchanges/{vhost}/{name}/publish`: `{"routed": bool}`.
pub fn publish(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let (vhost, segment) = (call.params[0], call.params[1]);
    let name = exchange_name(segment);
    let v = existing_vhost(ctx, vhost)?;
    let body = body_object(call)?;
    require_keys(&body, &["routing_key", "properties", "payload", "payload_encoding"])?;
    let properties = match required(&body, "properties")? {
        Value::Object(p) => super::message_properties::from_json(p)?,
        // RabbitMQ's empty properties may come back as `[]`.
        Value::Array(a) if a.is_empty() => Default::default(),
        _ => return Err(Reply::bad_request("properties must be an object")),
    };
    let routing_key = required(&body, "routing_key")?.as_str().unwrap_or("").to_string();
    let payload = required(&body, "payload")?.as_str().unwrap_or("").to_string();
    let encoding = required(&body, "payload_encoding")?.as_str().unwrap_or("").to_string();
    let payload = super::message_properties::payload(&payload, &encoding)?;
    // RabbitMQ checks the name as the path gives it (`amq.default`), after the
    // user's access to the vhost.
    access::permission_in(ctx, call, vhost)?;
    if !access::allows(ctx, call, vhost, Access::Write, segment) {
        return Err(publish_error(AmqpError::AccessRefused(format!(
            "access to exchange '{segment}' in vhost '{vhost}' refused for user '{}'",
            call.login.name
        ))));
    }
    if let Some(user_id) = properties.user_id() {
        if user_id.as_str() != call.login.name {
            return Err(publish_error(AmqpError::PreconditionFailed(format!(
                "user_id property set to '{}' but authenticated user was '{}'",
                user_id.as_str(),
                call.login.name
            ))));
        }
    }
    let routed = v
        .publish_direct(DirectPublish { exchange: name, routing_key: &routing_key, properties, body: payload })
        .map_err(publish_error)?;
    Ok(Reply::json(json!({"routed": routed})))
}

/// The bindings from (`source`) or to (`destination`) an exchange, 200 `[]` for a
/// missing one as RabbitMQ answers.
fn bindings_where(ctx: &Context, call: &Call, side: &str) -> Result<Reply, Reply> {
    let v = super::listed_vhosts(ctx, call)?.pop().ok_or_else(Reply::not_found)?;
    let name = exchange_name(call.params[1]);
    let items: Vec<Value> = super::bindings::bindings_of(&v)
        .into_iter()
        .filter(|b| b[side] == name && (side == "source" || b["destination_type"] == "exchange"))
        .collect();
    super::pagination::reply(call, items)
}

/// `GET /api/exchanges/{vhost}/{name}/bindings/source`.
pub fn bindings_source(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    bindings_where(ctx, call, "source")
}

/// `GET /api/exchanges/{vhost}/{name}/bindings/destination`.
pub fn bindings_destination(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    bindings_where(ctx, call, "destination")
}
