//! What the API does to queues, beyond listing them: `PUT` (declare) and `DELETE`
//! (`if-empty`, `if-unused`) on `/api/queues/{vhost}/{name}`, `DELETE .../contents`
//! (purge), `POST .../get` and `GET .../bindings`. Answers as RabbitMQ 3.10's (checked
//! against it): 201 for a new queue, 204 for an equivalent one, 400 `bad_request` with
//! the channel error's text for an inequivalent one.

use base64::Engine;
use hyper::Method;
use serde_json::{json, Map, Value};

use super::access::{self, Access};
use super::{admin, body_object, existing_vhost, Call, Context, Reply};
use crate::definitions::arguments::to_table;
use crate::error::AmqpError;
use crate::queue::QueueSettings;
use crate::vhost::{GetSettle, VHost};

/// No connection: the API's declares are never exclusive, and it cannot use another
/// connection's exclusive queue (405, as RabbitMQ's direct connection).
pub(super) const NO_CONNECTION: crate::queue::ConnectionId = 0;

/// A channel error as RabbitMQ's API answers one raised by its direct connection:
/// 401 for access refused, 404 for not found, else 400 with the text (without the
/// `PRECONDITION_FAILED - ` prefix).
pub(super) fn amqp_error(e: AmqpError) -> Reply {
    let text = e.to_string();
    let reason = text.split_once(" - ").map_or(text.as_str(), |(_, r)| r);
    match e {
        AmqpError::AccessRefused(_) => access::refused(),
        AmqpError::NotFound(_) => Reply::error(404, "not_found", reason),
        _ => Reply::bad_request(reason),
    }
}

/// A boolean body field: JSON `true`/`false` or the strings (RabbitMQ's web UI sends
/// strings); absent is false.
pub(super) fn bool_field(body: &Map<String, Value>, key: &str) -> Result<bool, Reply> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(_) => Err(Reply::bad_request(format!("{key} must be a boolean"))),
    }
}

/// The `arguments` object of a body as a field table.
pub(super) fn arguments_field(body: &Map<String, Value>) -> Result<amq_protocol::types::FieldTable, Reply> {
    match body.get("arguments") {
        None | Some(Value::Null) => Ok(Default::default()),
        Some(Value::Object(m)) => to_table(m).map_err(Reply::bad_request),
        Some(_) => Err(Reply::bad_request("arguments must be an object")),
    }
}

/// `GET/PUT/DELETE /api/queues/{vhost}/{name}`.
pub fn one(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    match *call.method {
        Method::PUT => declare(ctx, call),
        Method::DELETE => delete(ctx, call),
        _ => super::queues::one(ctx, call),
    }
}

fn vhost_of(ctx: &Context, call: &Call) -> Result<std::sync::Arc<VHost>, Reply> {
    ctx.broker.vhost(call.params[0]).ok_or_else(|| Reply::error(404, "not_found", "vhost_not_found"))
}

fn declare(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let (vhost, name) = (call.params[0], call.params[1]);
    let body = body_object(call)?;
    let v = vhost_of(ctx, call)?;
    access::require(ctx, call, vhost, Access::Configure, name)?;
    let arguments = arguments_field(&body)?;
    if v.queue(name).is_none() {
        crate::queue::args::validate(name, vhost, &arguments).map_err(amqp_error)?;
    }
    let settings = QueueSettings {
        durable: bool_field(&body, "durable")?,
        exclusive_owner: None,
        auto_delete: bool_field(&body, "auto_delete")?,
        arguments,
    };
    let created = admin(ctx).declare_queue(&v, name, settings).map_err(change_error)?;
    Ok(Reply::empty(if created { 201 } else { 204 }))
}

fn delete(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let (vhost, name) = (call.params[0], call.params[1]);
    let v = existing_vhost(ctx, vhost)?;
    // As RabbitMQ: access to the vhost (401) before the queue's existence (404).
    access::permission_in(ctx, call, vhost)?;
    let q = v.queue(name).ok_or_else(Reply::not_found)?;
    access::require(ctx, call, vhost, Access::Configure, name)?;
    crate::vhost::check_exclusive(q.as_ref(), NO_CONNECTION).map_err(amqp_error)?;
    if call.query_flag("if-unused") && q.consumer_count() > 0 {
        return Err(Reply::bad_request(format!("queue '{name}' in vhost '{vhost}' in use")));
    }
    if call.query_flag("if-empty") && q.message_count() > 0 {
        return Err(Reply::bad_request(format!("queue '{name}' in vhost '{vhost}' not empty")));
    }
    admin(ctx).delete_queue(&v, &q).map_err(change_error)?;
    Ok(Reply::empty(204))
}

/// A queue change refused here (the AMQP refusal, as RabbitMQ's API reports it) or not
/// committed by the cluster (503).
fn change_error(e: crate::admin::replicated::ChangeError) -> Reply {
    use crate::admin::replicated::ChangeError;
    match e {
        ChangeError::Amqp(e) => amqp_error(e),
        ChangeError::Admin(e) => super::admin_error(e),
        ChangeError::NotReplicated(why) => Reply::error(503, "service_unavailable", &why),
    }
}

/// `DELETE /api/queues/{vhost}/{name}/contents`: purges the ready messages.
pub fn contents(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let (vhost, name) = (call.params[0], call.params[1]);
    let v = existing_vhost(ctx, vhost)?;
    // As RabbitMQ: access to the vhost (401) before the queue's existence (404).
    access::permission_in(ctx, call, vhost)?;
    let q = v.queue(name).ok_or_else(Reply::not_found)?;
    access::require(ctx, call, vhost, Access::Read, name)?;
    crate::vhost::check_exclusive(q.as_ref(), NO_CONNECTION).map_err(amqp_error)?;
    q.refuse(crate::queue::QueueOp::Purge).map_err(amqp_error)?;
    q.purge();
    Ok(Reply::empty(204))
}

/// A required body field, RabbitMQ's `[{key_missing,K}]` when absent.
pub(super) fn required<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a Value, Reply> {
    body.get(key).ok_or_else(|| Reply::bad_request(format!("[{{key_missing,{key}}}]")))
}

/// RabbitMQ's 400 listing every missing key of `keys` (in that order), as Erlang
/// prints the list: on one line up to 80 characters, else one element a line.
pub(super) fn require_keys(body: &Map<String, Value>, keys: &[&str]) -> Result<(), Reply> {
    let missing: Vec<String> =
        keys.iter().filter(|k| !body.contains_key(**k)).map(|k| format!("{{key_missing,{k}}}")).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let one_line = format!("[{}]", missing.join(","));
    let text = if one_line.len() <= 80 { one_line } else { format!("[{}]", missing.join(",\n ")) };
    Err(Reply::bad_request(text))
}

/// `POST /api/queues/{vhost}/{name}/get`: `count`, `ackmode`, `encoding` (`auto`:
/// the payload as a string when it is UTF-8, else base64), `truncate` (bytes).
pub fn get(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let (vhost, name) = (call.params[0], call.params[1]);
    let v = existing_vhost(ctx, vhost)?;
    let body = body_object(call)?;
    require_keys(&body, &["ackmode", "count", "encoding"])?;
    let count = integer(required(&body, "count")?)?;
    let ackmode = required(&body, "ackmode")?.as_str().unwrap_or("");
    let encoding = required(&body, "encoding")?.as_str().unwrap_or("");
    let truncate = match body.get("truncate") {
        None | Some(Value::Null) => None,
        Some(t) => Some(integer(t)?),
    };
    let settle = match ackmode {
        "ack_requeue_true" | "reject_requeue_true" => GetSettle::Requeue,
        "ack_requeue_false" => GetSettle::Ack,
        "reject_requeue_false" => GetSettle::Reject,
        // RabbitMQ's handler crashes on an unknown ackmode: a bodiless 500.
        _ => return Err(Reply::empty(500)),
    };
    let base64_only = match encoding {
        "auto" => false,
        "base64" => true,
        _ => return Err(Reply::bad_request("Unsupported encoding. Please use auto or base64.")),
    };
    access::permission_in(ctx, call, vhost)?;
    if !access::allows(ctx, call, vhost, Access::Read, name) {
        return Err(Reply::error(
            401,
            "not_authorised",
            &format!(
                "ACCESS_REFUSED - access to queue '{name}' in vhost '{vhost}' refused for user '{}'",
                call.login.name
            ),
        ));
    }
    let not_found = || Reply::error(404, "not_found", &format!("NOT_FOUND - no queue '{name}' in vhost '{vhost}'"));
    let q = v.queue(name).ok_or_else(not_found)?;
    crate::vhost::check_exclusive(q.as_ref(), NO_CONNECTION).map_err(amqp_error)?;
    q.refuse(crate::queue::QueueOp::Get).map_err(amqp_error)?;
    let got = v.get_direct(&q, usize::try_from(count.max(0)).unwrap_or(0), settle);
    let items: Vec<Value> = got
        .iter()
        .map(|g| {
            let m = &g.message;
            let mut payload: &[u8] = &m.body;
            if let Some(t) = truncate {
                payload = &payload[..payload.len().min(usize::try_from(t.max(0)).unwrap_or(0))];
            }
            let (payload, payload_encoding) = match std::str::from_utf8(payload) {
                Ok(s) if !base64_only => (s.to_string(), "string"),
                _ => (base64::engine::general_purpose::STANDARD.encode(payload), "base64"),
            };
            json!({
                "payload_bytes": m.body.len(),
                "redelivered": g.redelivered,
                "exchange": &*m.exchange,
                "routing_key": &*m.routing_key,
                "message_count": g.message_count,
                "properties": super::message_properties::to_json(&m.raw_properties),
                "payload": payload,
                "payload_encoding": payload_encoding,
            })
        })
        .collect();
    Ok(Reply::json(Value::Array(items)))
}

/// An integer body value (RabbitMQ also takes one written as a string);
/// `["not_integer", V]` otherwise.
pub(super) fn integer(v: &Value) -> Result<i64, Reply> {
    match v {
        Value::Number(n) if n.is_i64() => n.as_i64().ok_or_else(|| Reply::bad_request("not_integer")),
        Value::String(s) => s.trim().parse().map_err(|_| not_integer(v)),
        _ => Err(not_integer(v)),
    }
}

fn not_integer(v: &Value) -> Reply {
    let shown = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut r = Reply::bad_request("");
    r.body = Some(json!({"error": "bad_request", "reason": ["not_integer", shown]}));
    r
}

/// `GET /api/queues/{vhost}/{name}/bindings`: the default exchange's implicit binding
/// and the declared ones to the queue. As RabbitMQ, a missing queue in an existing
/// vhost lists its implicit binding alone.
pub fn bindings(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    // RabbitMQ lists nothing (200) for a missing vhost.
    if ctx.broker.vhost(call.params[0]).is_none() {
        return Ok(Reply::json(json!([])));
    }
    let v = super::listed_vhosts(ctx, call)?.pop().ok_or_else(Reply::not_found)?;
    let name = call.params[1];
    let implicit = json!({
        "source": "", "vhost": &*v.name, "destination": name, "destination_type": "queue",
        "routing_key": name, "arguments": {}, "properties_key": super::binding_actions::properties_key(name, &Default::default()),
    });
    let declared = super::bindings::bindings_of(&v)
        .into_iter()
        .filter(|b| b["destination_type"] == "queue" && b["destination"] == name && b["source"] != "");
    super::pagination::reply(call, std::iter::once(implicit).chain(declared).collect())
}
