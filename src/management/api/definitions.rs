//! `GET /api/definitions[/{vhost}]` (export) and `POST /api/definitions[/{vhost}]`
//! (import, all or nothing; 204 on success, as RabbitMQ). Administrators only.
//!
//! A vhost's definitions are RabbitMQ's vhost-scoped shape: only its queues,
//! exchanges, bindings, policies and parameters, each without its `vhost` key (an
//! import puts them into the vhost of the path).

use hyper::Method;
use serde_json::{Map, Value};

use super::{existing_vhost, Call, Context, Reply};

/// The sections a vhost's definitions hold; each item names its vhost in `vhost`.
const VHOST_SECTIONS: [&str; 5] = ["parameters", "policies", "queues", "exchanges", "bindings"];

pub fn definitions(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    call.login.require_administrator()?;
    let vhost = match call.params.first() {
        Some(v) => Some(existing_vhost(ctx, v)?.name.to_string()),
        None => None,
    };
    if *call.method == Method::POST {
        let mut body: Value =
            serde_json::from_slice(call.body).map_err(|e| Reply::bad_request(format!("invalid definitions: {e}")))?;
        if let Some(v) = &vhost {
            body = into_vhost(body, v)?;
        }
        let defs: crate::definitions::Definitions =
            serde_json::from_value(body).map_err(|e| Reply::bad_request(format!("invalid definitions: {e}")))?;
        crate::definitions::import(&ctx.broker, &defs).map_err(|e| Reply::bad_request(e.to_string()))?;
        return Ok(Reply::empty(204));
    }
    let defs = crate::definitions::export(&ctx.broker);
    let value = serde_json::to_value(&defs)
        .map_err(|e| Reply::error(500, "internal_server_error", &format!("cannot export definitions: {e}")))?;
    Ok(Reply::json(match &vhost {
        Some(v) => of_vhost(value, v),
        None => value,
    }))
}

/// The whole export cut down to one vhost's sections, their `vhost` keys removed.
fn of_vhost(all: Value, vhost: &str) -> Value {
    let mut out = Map::new();
    if let Some(version) = all.get("rabbit_version") {
        out.insert("rabbit_version".into(), version.clone());
    }
    for section in VHOST_SECTIONS {
        let items: Vec<Value> = all
            .get(section)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|item| item.get("vhost").and_then(Value::as_str) == Some(vhost))
            .map(|item| {
                let mut item = item.clone();
                if let Some(o) = item.as_object_mut() {
                    o.remove("vhost");
                }
                item
            })
            .collect();
        out.insert(section.into(), Value::Array(items));
    }
    Value::Object(out)
}

/// A vhost's definitions as a whole import into `vhost`: its sections' items get the
/// vhost; sections that are not a vhost's (users, vhosts, permissions) are refused.
fn into_vhost(body: Value, vhost: &str) -> Result<Value, Reply> {
    let Value::Object(mut body) = body else {
        return Err(Reply::bad_request("invalid definitions: not a JSON object"));
    };
    for section in ["users", "vhosts", "permissions", "topic_permissions", "global_parameters"] {
        if body.get(section).and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
            return Err(Reply::bad_request(format!("{section} cannot be imported into a virtual host")));
        }
        body.remove(section);
    }
    for section in VHOST_SECTIONS {
        if let Some(Value::Array(items)) = body.get_mut(section) {
            for item in items {
                if let Some(o) = item.as_object_mut() {
                    o.insert("vhost".into(), Value::String(vhost.into()));
                }
            }
        }
    }
    Ok(Value::Object(body))
}
