//! `/api/vhost-limits[/{vhost}[/{name}]]` (`max-connections`, `max-queues`) and
//! `/api/user-limits[/{user}[/{name}]]` (`max-connections`, `max-channels`): listed as
//! `[{"vhost"|"user": ..., "value": {name: n}}]`, set with `PUT {"value": n}` (204)
//! and cleared with `DELETE` (204, also when unset), administrators only for changes.
//! Bodies and texts are RabbitMQ 3.10's (its validation messages print values as
//! Erlang terms). HareMQ keeps a negative limit as "no limit", so it is not listed
//! (RabbitMQ lists `-1`).

use hyper::Method;
use serde_json::{json, Map, Value};

use super::queue_actions::required;
use super::{admin, admin_error, body_object, Call, Context, Reply};
use crate::admin::{UserLimits, VHostLimits};
use crate::management::auth::Role;

fn vhost_json(l: &VHostLimits) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(n) = l.max_connections {
        m.insert("max-connections".into(), n.into());
    }
    if let Some(n) = l.max_queues {
        m.insert("max-queues".into(), n.into());
    }
    m
}

fn user_json(l: &UserLimits) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(n) = l.max_connections {
        m.insert("max-connections".into(), n.into());
    }
    if let Some(n) = l.max_channels {
        m.insert("max-channels".into(), n.into());
    }
    m
}

/// A JSON value as Erlang prints the term RabbitMQ decoded it to.
fn erlang_term(v: &Value) -> String {
    match v {
        Value::String(s) => format!("<<\"{s}\">>"),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

/// The limit's new value: `None` (no limit) when negative. `wrap` words the
/// refusal of a non-number.
fn limit_value(call: &Call, name: &str, wrap: impl Fn(String) -> String) -> Result<Option<u64>, Reply> {
    let body = body_object(call)?;
    let value = required(&body, "value")?;
    let n =
        value.as_i64().or_else(|| value.as_f64().map(|f| f as i64)).filter(|_| value.is_number()).ok_or_else(|| {
            Reply::bad_request(wrap(format!("{name} should be a number, actually was {}", erlang_term(value))))
        })?;
    Ok(u64::try_from(n).ok())
}

/// `GET /api/vhost-limits`: the vhosts with limits (a `management` user gets every
/// vhost it may see, `[]` for none, as RabbitMQ answers it).
pub fn vhost_list(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let admin = admin(ctx);
    let mut vhosts = admin.vhosts();
    vhosts.sort_by(|a, b| a.name.cmp(&b.name));
    let items: Vec<Value> = vhosts
        .iter()
        .filter(|v| call.login.sees_vhost(&admin, &v.name))
        .filter_map(|v| {
            let value = vhost_json(&v.limits);
            match (value.is_empty(), call.login.role) {
                (false, _) => Some(json!({"vhost": v.name, "value": value})),
                (true, Role::Management) => Some(json!({"vhost": v.name, "value": []})),
                (true, _) => None,
            }
        })
        .collect();
    Ok(Reply::json(Value::Array(items)))
}

/// `GET /api/vhost-limits/{vhost}`.
pub fn vhost_one(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let v = super::listed_vhosts(ctx, call)?.pop().ok_or_else(Reply::not_found)?;
    let value = vhost_json(&v.limits());
    if value.is_empty() {
        return Ok(Reply::json(json!([])));
    }
    Ok(Reply::json(json!([{"vhost": &*v.name, "value": value}])))
}

/// `PUT/DELETE /api/vhost-limits/{vhost}/{name}`.
pub fn vhost_set(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    call.login.require_administrator()?;
    let (vhost, name) = (call.params[0], call.params[1]);
    let Some(v) = ctx.broker.vhost(vhost) else {
        return Err(Reply::error(404, "not_found", "vhost_not_found"));
    };
    let validation = |text: String| format!("Validation failed\n\n{text}\n");
    let value = if *call.method == Method::PUT {
        if !matches!(name, "max-connections" | "max-queues") {
            let body = body_object(call)?;
            let value = required(&body, "value")?;
            return Err(Reply::bad_request(validation(format!(
                "Unrecognised terms [{{<<\"{name}\">>,{}}}] in limits",
                erlang_term(value)
            ))));
        }
        limit_value(call, name, validation)?
    } else {
        None
    };
    let mut limits = v.limits();
    match name {
        "max-connections" => limits.max_connections = value,
        "max-queues" => limits.max_queues = value,
        // Clearing a limit that cannot exist changes nothing.
        _ => return Ok(Reply::empty(204)),
    }
    admin(ctx).set_vhost_limits(vhost, limits).map_err(admin_error)?;
    Ok(Reply::empty(204))
}

/// `GET /api/user-limits`: administrators see every user with limits, others only
/// themselves.
pub fn user_list(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let mut users = admin(ctx).users();
    users.sort_by(|a, b| a.name.cmp(&b.name));
    let items: Vec<Value> = users
        .iter()
        .filter(|u| call.login.role == Role::Administrator || u.name == call.login.name)
        .filter_map(|u| {
            let value = user_json(&u.limits);
            (!value.is_empty()).then(|| json!({"user": u.name, "value": value}))
        })
        .collect();
    Ok(Reply::json(Value::Array(items)))
}

/// `GET /api/user-limits/{user}` (404 for a missing user; `[]` for another user's
/// limits asked by a non-administrator, as RabbitMQ).
pub fn user_one(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let name = call.params[0];
    let user = admin(ctx).user(name).ok_or_else(Reply::not_found)?;
    let value = user_json(&user.limits);
    if value.is_empty() || (call.login.role != Role::Administrator && call.login.name != name) {
        return Ok(Reply::json(json!([])));
    }
    Ok(Reply::json(json!([{"user": user.name, "value": value}])))
}

/// `PUT/DELETE /api/user-limits/{user}/{name}`.
pub fn user_set(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    call.login.require_administrator()?;
    let (user, name) = (call.params[0], call.params[1]);
    let admin = admin(ctx);
    let Some(info) = admin.user(user) else {
        if *call.method == Method::PUT {
            let mut r = Reply::bad_request("");
            r.body = Some(json!({"error": "bad_request", "reason": ["no_such_user", user]}));
            return Err(r);
        }
        return Err(Reply::not_found());
    };
    let value = if *call.method == Method::PUT {
        if !matches!(name, "max-connections" | "max-channels") {
            let body = body_object(call)?;
            let value = required(&body, "value")?;
            return Err(Reply::bad_request(format!(
                "Unrecognised terms [{{<<\"{name}\">>,{}}}] in user-limits",
                erlang_term(value)
            )));
        }
        limit_value(call, name, |t| t)?
    } else {
        None
    };
    let mut limits = info.limits;
    match name {
        "max-connections" => limits.max_connections = value,
        "max-channels" => limits.max_channels = value,
        _ => return Ok(Reply::empty(204)),
    }
    admin.set_user_limits(user, limits).map_err(admin_error)?;
    Ok(Reply::empty(204))
}
