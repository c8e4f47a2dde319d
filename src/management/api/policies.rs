//! `GET /api/policies[/{vhost}]`, `GET/PUT/DELETE /api/policies/{vhost}/{name}`, and
//! the same under `/api/operator-policies`, with RabbitMQ's rules: listings for every
//! management user (the vhosts it may see); one policy read or written by a
//! `policymaker` or administrator with access to the vhost; operator policies, one at
//! a time, by administrators only.

use hyper::Method;
use serde_json::Value;

use super::{admin, admin_error, body_object, listed_vhosts, Call, Context, Reply};
use crate::admin::Admin;
use crate::policy::{Kind, PolicyError};

fn list(ctx: &Context, call: &Call, kind: Kind) -> Result<Reply, Reply> {
    let admin = admin(ctx);
    let all: Vec<Value> = listed_vhosts(ctx, call)?
        .iter()
        .flat_map(|v| admin.policies(kind, Some(&v.name)))
        .map(|p| p.to_json())
        .collect();
    Ok(Reply::json(Value::Array(all)))
}

pub fn list_policies(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    list(ctx, call, Kind::Policy)
}

pub fn list_operator_policies(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    list(ctx, call, Kind::Operator)
}

pub fn policy(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let admin = admin(ctx);
    let vhost = call.params[0];
    let policymaker = call.login.require_administrator().is_ok() || call.login.tags.iter().any(|t| t == "policymaker");
    if !policymaker || !call.login.sees_vhost(&admin, vhost) {
        return Err(Reply::error(401, "not_authorised", "User not authorised to access object"));
    }
    one(ctx, call, Kind::Policy, &admin)
}

pub fn operator_policy(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    call.login.require_administrator()?;
    one(ctx, call, Kind::Operator, &admin(ctx))
}

fn one(ctx: &Context, call: &Call, kind: Kind, admin: &Admin) -> Result<Reply, Reply> {
    let (vhost, name) = (call.params[0], call.params[1]);
    let existing = admin.policy(kind, vhost, name);
    match *call.method {
        Method::PUT => {
            if ctx.broker.vhost(vhost).is_none() {
                return Err(Reply::error(404, "not_found", "vhost_not_found"));
            }
            let body = Value::Object(body_object(call)?);
            let policy = Admin::parse_policy(kind, vhost, name, &body).map_err(|e| refused(kind, &e))?;
            admin.set_policy(policy).map_err(admin_error)?;
            Ok(Reply::empty(if existing.is_some() { 204 } else { 201 }))
        }
        Method::DELETE => {
            existing.ok_or_else(Reply::not_found)?;
            admin.clear_policy(kind, vhost, name).map_err(admin_error)?;
            Ok(Reply::empty(204))
        }
        _ => Ok(Reply::json(existing.ok_or_else(Reply::not_found)?.to_json())),
    }
}

/// RabbitMQ's 400 for an invalid policy. Its policy endpoint HTML-escapes the
/// reason's Erlang terms (`&lt;&lt;"a"&gt;&gt;`); its operator-policy endpoint does not.
fn refused(kind: Kind, e: &PolicyError) -> Reply {
    let text = e.to_string();
    match kind {
        Kind::Policy => Reply::bad_request(text.replace('<', "&lt;").replace('>', "&gt;")),
        Kind::Operator => Reply::bad_request(text),
    }
}
