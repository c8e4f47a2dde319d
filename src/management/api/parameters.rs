//! Runtime parameters: `/api/parameters[/{component}[/{vhost}[/{name}]]]` and
//! `/api/global-parameters[/{name}]`.
//!
//! HareMQ has no parameter components of its own (no shovel, federation, ...): the
//! only per-vhost parameters are the vhost limits, which RabbitMQ also lists here as
//! component `vhost-limits`, name `limits`. Any other component lists as `[]` and is
//! refused on `PUT` with RabbitMQ's `component ... not found`, as RabbitMQ answers
//! without the plugin that defines it.
//!
//! Global parameters (`cluster_name` and any other name) are kept in memory for the
//! life of the broker: the store has no record for them yet, so they do not survive
//! a restart.

use hyper::Method;
use serde_json::{json, Map, Value};

use super::queue_actions::required;
use super::{admin, admin_error, body_object, Call, Context, Reply};
use crate::admin::VHostLimits;
use crate::management::auth::Role;

const LIMITS_COMPONENT: &str = "vhost-limits";
const LIMITS_NAME: &str = "limits";

fn not_authorised() -> Reply {
    Reply::error(401, "not_authorised", "User not authorised to access object")
}

/// Parameters are for policymakers and administrators, as in RabbitMQ.
fn require_policymaker(call: &Call) -> Result<(), Reply> {
    if call.login.role == Role::Administrator || call.login.tags.iter().any(|t| t == "policymaker") {
        Ok(())
    } else {
        Err(not_authorised())
    }
}

/// Every parameter the user may see, in RabbitMQ's shape.
fn all(ctx: &Context, call: &Call) -> Vec<Value> {
    let admin = admin(ctx);
    let mut vhosts = admin.vhosts();
    vhosts.sort_by(|a, b| a.name.cmp(&b.name));
    vhosts
        .into_iter()
        .filter(|v| call.login.sees_vhost(&admin, &v.name))
        .filter_map(|v| {
            let mut value = Map::new();
            if let Some(n) = v.limits.max_connections {
                value.insert("max-connections".into(), n.into());
            }
            if let Some(n) = v.limits.max_queues {
                value.insert("max-queues".into(), n.into());
            }
            (!value.is_empty())
                .then(|| json!({"value": value, "vhost": v.name, "component": LIMITS_COMPONENT, "name": LIMITS_NAME}))
        })
        .collect()
}

/// `GET /api/parameters[/{component}[/{vhost}]]`.
pub fn list(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    require_policymaker(call)?;
    if let Some(vhost) = call.params.get(1) {
        super::existing_vhost(ctx, vhost)?;
    }
    let items: Vec<Value> = all(ctx, call)
        .into_iter()
        .filter(|p| call.params.first().is_none_or(|c| p["component"] == *c))
        .filter(|p| call.params.get(1).is_none_or(|v| p["vhost"] == *v))
        .collect();
    super::pagination::reply(call, items)
}

/// `GET/PUT/DELETE /api/parameters/{component}/{vhost}/{name}`.
pub fn one(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    require_policymaker(call)?;
    let (component, vhost, name) = (call.params[0], call.params[1], call.params[2]);
    let limits = component == LIMITS_COMPONENT && name == LIMITS_NAME;
    match *call.method {
        Method::PUT => {
            let body = body_object(call)?;
            if !limits {
                return Err(Reply::bad_request(format!("Validation failed\n\ncomponent {component} not found\n")));
            }
            call.login.require_administrator()?;
            super::existing_vhost(ctx, vhost)?;
            let value = match required(&body, "value")? {
                Value::Object(m) => m,
                _ => return Err(Reply::bad_request("Validation failed\n\nlimits must be an object\n")),
            };
            let limit = |k: &str| -> Result<Option<u64>, Reply> {
                match value.get(k) {
                    None => Ok(None),
                    Some(Value::Number(n)) => Ok(n.as_i64().and_then(|n| u64::try_from(n).ok())),
                    Some(v) => Err(Reply::bad_request(format!(
                        "Validation failed\n\n{k} should be a number, actually was {v}\n"
                    ))),
                }
            };
            let new = VHostLimits { max_connections: limit("max-connections")?, max_queues: limit("max-queues")? };
            admin(ctx).set_vhost_limits(vhost, new).map_err(admin_error)?;
            // RabbitMQ answers 204 for the limits parameter, new or not.
            Ok(Reply::empty(204))
        }
        Method::DELETE => {
            let v = super::existing_vhost(ctx, vhost)?;
            if !limits || v.limits() == VHostLimits::default() {
                return Err(Reply::not_found());
            }
            call.login.require_administrator()?;
            admin(ctx).set_vhost_limits(vhost, VHostLimits::default()).map_err(admin_error)?;
            Ok(Reply::empty(204))
        }
        _ => all(ctx, call)
            .into_iter()
            .find(|p| p["component"] == component && p["vhost"] == vhost && p["name"] == name)
            .map(Reply::json)
            .ok_or_else(Reply::not_found),
    }
}

/// `GET /api/global-parameters` (administrators).
pub fn global_list(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    if call.login.role != Role::Administrator {
        return Err(not_authorised());
    }
    let items: Vec<Value> =
        ctx.global_parameters().iter().map(|(name, value)| json!({"name": name, "value": value})).collect();
    super::pagination::reply(call, items)
}

/// `GET/PUT/DELETE /api/global-parameters/{name}`: PUT `{"value": ...}` (201 new,
/// 204 replaced), DELETE (204, 404 if unset).
pub fn global_one(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    if call.login.role != Role::Administrator {
        return Err(not_authorised());
    }
    let name = call.params[0];
    let mut params = ctx.global_parameters();
    match *call.method {
        Method::PUT => {
            let body = body_object(call)?;
            let value = required(&body, "value")?.clone();
            let replaced = params.insert(name.to_string(), value).is_some();
            Ok(Reply::empty(if replaced { 204 } else { 201 }))
        }
        Method::DELETE => {
            params.remove(name).ok_or_else(Reply::not_found)?;
            Ok(Reply::empty(204))
        }
        _ => {
            let value = params.get(name).ok_or_else(Reply::not_found)?;
            Ok(Reply::json(json!({"name": name, "value": value})))
        }
    }
}
