//! `/api/bindings/{vhost}/e/{source}/q/{queue}` and `.../e/{source}/e/{destination}`:
//! list (GET) and create (POST, 201 with a `Location` naming the new binding's
//! properties key) the bindings between two resources; with a trailing
//! `/{props}`, get (GET) or delete (DELETE) one.
//!
//! The properties key is RabbitMQ's: the routing key `quote_plus`-encoded (space as
//! `+`, `~` as `%7E`), `~` alone for an empty key without arguments, and with
//! arguments the key, `~` and Erlang's `phash2` of the arguments in unpadded
//! base64url (see `erlang_hash`), so keys are the same as RabbitMQ's.

use amq_protocol::types::FieldTable;
use base64::Engine;
use hyper::Method;
use serde_json::Value;

use super::access::{self, Access};
use super::exchange_actions::exchange_name;
use super::queue_actions::{amqp_error, arguments_field, NO_CONNECTION};
use super::{body_object, Call, Context, Reply};
use crate::management::router::percent_encode;

/// RabbitMQ's `properties_key` of a binding.
pub fn properties_key(routing_key: &str, arguments: &FieldTable) -> String {
    if arguments.inner().is_empty() {
        return if routing_key.is_empty() { "~".to_string() } else { quote_plus(routing_key) };
    }
    format!("{}~{}", quote_plus(routing_key), arguments_hash(arguments))
}

/// mochiweb's `quote_plus` (letters, digits, `.-~_` kept, space as `+`, the rest
/// `%XX`), then `~` as `%7E`, as RabbitMQ's `quote_binding`.
fn quote_plus(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b' ' => out.push('+'),
            b'~' => out.push_str("%7E"),
            b if b.is_ascii_alphanumeric() || b".-_".contains(&b) => out.push(char::from(b)),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// RabbitMQ's hash of a binding's arguments: `erlang:phash2(Args, 1 bsl 32)` of the
/// field table as it holds it (sorted by name, as HareMQ's tables are and as RabbitMQ
/// sorts those it gets over HTTP), as 6 characters of unpadded base64url.
fn arguments_hash(arguments: &FieldTable) -> String {
    let h = super::erlang_hash::phash2(&super::erlang_hash::table_term(arguments));
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.to_be_bytes())
}

/// The path's parts: vhost, source, destination, whether it is a queue, the
/// properties key if given.
struct Target<'a> {
    vhost: &'a str,
    source: &'a str,
    destination: &'a str,
    to_queue: bool,
    props: Option<&'a str>,
}

fn target<'a>(call: &'a Call, to_queue: bool) -> Target<'a> {
    Target {
        vhost: call.params[0],
        source: exchange_name(call.params[1]),
        destination: call.params[2],
        to_queue,
        props: call.params.get(3).copied(),
    }
}

/// The bindings between the target's two ends, as listed.
fn between(ctx: &Context, call: &Call, t: &Target) -> Result<Vec<Value>, Reply> {
    let v = super::listed_vhosts(ctx, call)?.pop().ok_or_else(Reply::not_found)?;
    let kind = if t.to_queue { "queue" } else { "exchange" };
    Ok(super::bindings::bindings_of(&v)
        .into_iter()
        .filter(|b| b["source"] == t.source && b["destination"] == t.destination && b["destination_type"] == kind)
        .collect())
}

/// `GET/POST /api/bindings/{vhost}/e/{source}/q/{queue}`.
pub fn list_to_queue(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    list(ctx, call, target(call, true))
}

/// `GET/POST /api/bindings/{vhost}/e/{source}/e/{destination}`.
pub fn list_to_exchange(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    list(ctx, call, target(call, false))
}

/// `GET/DELETE /api/bindings/{vhost}/e/{source}/q/{queue}/{props}`.
pub fn one_to_queue(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    one(ctx, call, target(call, true))
}

/// `GET/DELETE /api/bindings/{vhost}/e/{source}/e/{destination}/{props}`.
pub fn one_to_exchange(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    one(ctx, call, target(call, false))
}

fn list(ctx: &Context, call: &Call, t: Target) -> Result<Reply, Reply> {
    if *call.method == Method::POST {
        return create(ctx, call, &t);
    }
    super::pagination::reply(call, between(ctx, call, &t)?)
}

fn create(ctx: &Context, call: &Call, t: &Target) -> Result<Reply, Reply> {
    let v = ctx.broker.vhost(t.vhost).ok_or_else(|| Reply::error(404, "not_found", "vhost_not_found"))?;
    let body = body_object(call)?;
    let routing_key = match body.get("routing_key") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        // RabbitMQ takes a number too.
        Some(other) => other.to_string(),
    };
    let arguments = arguments_field(&body)?;
    check_access(ctx, call, t)?;
    if t.to_queue {
        let q = v.queue(t.destination).ok_or_else(|| {
            Reply::error(404, "not_found", &format!("no queue '{}' in vhost '{}'", t.destination, t.vhost))
        })?;
        crate::vhost::check_exclusive(q.as_ref(), NO_CONNECTION).map_err(amqp_error)?;
        super::admin(ctx).bind_queue(&v, &q, t.source, &routing_key, &arguments, true).map_err(amqp_error)?;
    } else {
        super::admin(ctx)
            .bind_exchange(&v, t.destination, t.source, &routing_key, &arguments, true)
            .map_err(amqp_error)?;
    }
    let mut reply = Reply::empty(201);
    let key = properties_key(&routing_key, &arguments);
    reply.headers.push(("location", format!("{}/{}", percent_encode(t.destination), percent_encode(&key))));
    Ok(reply)
}

/// Write on the destination, read on the source; never the default exchange.
fn check_access(ctx: &Context, call: &Call, t: &Target) -> Result<(), Reply> {
    access::require(ctx, call, t.vhost, Access::Write, t.destination)?;
    access::require(ctx, call, t.vhost, Access::Read, t.source)?;
    if t.source.is_empty() || (!t.to_queue && t.destination.is_empty()) {
        return Err(access::refused());
    }
    Ok(())
}

fn one(ctx: &Context, call: &Call, t: Target) -> Result<Reply, Reply> {
    let props = t.props.unwrap_or("");
    let found =
        between(ctx, call, &t)?.into_iter().find(|b| b["properties_key"] == props).ok_or_else(Reply::not_found)?;
    if *call.method != Method::DELETE {
        return Ok(Reply::json(found));
    }
    check_access(ctx, call, &t)?;
    let v = super::existing_vhost(ctx, t.vhost)?;
    let key = found["routing_key"].as_str().unwrap_or("");
    let arguments = match &found["arguments"] {
        Value::Object(m) => crate::definitions::arguments::to_table(m).map_err(Reply::bad_request)?,
        _ => FieldTable::default(),
    };
    // The listing's arguments are JSON; unbind with the binding's own table, which
    // the JSON round trip may have changed in type (e.g. a short int), so look it up.
    let arguments = v
        .binding_list()
        .into_iter()
        .find(|b| {
            &*b.source == t.source
                && &*b.destination == t.destination
                && b.to_queue == t.to_queue
                && &*b.routing_key == key
                && properties_key(key, &b.arguments) == props
        })
        .map_or(arguments, |b| b.arguments);
    let admin = super::admin(ctx);
    match v.queue(t.destination).filter(|_| t.to_queue) {
        Some(q) => admin.bind_queue(&v, &q, t.source, key, &arguments, false).map_err(amqp_error)?,
        None if t.to_queue => {
            v.unbind_queue(t.destination, t.source, key, &arguments, NO_CONNECTION).map_err(amqp_error)?
        }
        None => admin.bind_exchange(&v, t.destination, t.source, key, &arguments, false).map_err(amqp_error)?,
    }
    Ok(Reply::empty(204))
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::AMQPValue;

    #[test]
    fn properties_keys_follow_rabbitmq() {
        let none = FieldTable::default();
        assert_eq!(properties_key("", &none), "~");
        assert_eq!(properties_key("k1", &none), "k1");
        // Checked against RabbitMQ 3.10: "a b/c%" is listed as "a+b%2Fc%25".
        assert_eq!(properties_key("a b/c%", &none), "a+b%2Fc%25");
        assert_eq!(properties_key("x~y", &none), "x%7Ey");
        let mut args = FieldTable::default();
        args.insert("x-a".into(), AMQPValue::LongString("b".into()));
        // RabbitMQ 3.10's keys for these bindings.
        assert_eq!(properties_key("k2", &args), "k2~OfANRw");
        let mut two = FieldTable::default();
        two.insert("x-b".into(), AMQPValue::LongString("1".into()));
        two.insert("x-a".into(), AMQPValue::LongString("2".into()));
        assert_eq!(properties_key("m", &two), "m~bOlgBA");
        let mut int = FieldTable::default();
        int.insert("x-n".into(), AMQPValue::LongLongInt(5));
        assert_eq!(properties_key("n", &int), "n~P1Z4RQ");
    }
}
