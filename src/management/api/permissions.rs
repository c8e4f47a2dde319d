//! `GET /api/permissions`, `GET/PUT/DELETE /api/permissions/{vhost}/{user}`,
//! `GET /api/users/{user}/permissions`, `GET /api/vhosts/{vhost}/permissions`
//! (administrators only, as in RabbitMQ).

use hyper::Method;
use serde_json::{json, Value};

use super::{admin, admin_error, body_object, string_field, Call, Context, Reply};
use crate::admin::PermissionInfo;

fn to_json(p: &PermissionInfo) -> Value {
    json!({"user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read})
}

fn listed(ctx: &Context, keep: impl Fn(&PermissionInfo) -> bool) -> Vec<PermissionInfo> {
    let mut perms: Vec<PermissionInfo> = admin(ctx).permissions().into_iter().filter(keep).collect();
    perms.sort_by(|a, b| (&a.vhost, &a.user).cmp(&(&b.vhost, &b.user)));
    perms
}

pub fn list(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    call.login.require_administrator()?;
    Ok(Reply::json(Value::Array(listed(ctx, |_| true).iter().map(to_json).collect())))
}

pub fn of_user(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    call.login.require_administrator()?;
    let user = call.params[0];
    admin(ctx).user(user).ok_or_else(Reply::not_found)?;
    Ok(Reply::json(Value::Array(listed(ctx, |p| p.user == user).iter().map(to_json).collect())))
}

pub fn of_vhost(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    call.login.require_administrator()?;
    let vhost = call.params[0];
    ctx.broker.vhost(vhost).ok_or_else(Reply::not_found)?;
    Ok(Reply::json(Value::Array(listed(ctx, |p| p.vhost == vhost).iter().map(to_json).collect())))
}

pub fn one(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    call.login.require_administrator()?;
    let (vhost, user) = (call.params[0], call.params[1]);
    let admin = admin(ctx);
    if ctx.broker.vhost(vhost).is_none() || admin.user(user).is_none() {
        return Err(Reply::not_found());
    }
    let existing = listed(ctx, |p| p.user == user && p.vhost == vhost).into_iter().next();
    match *call.method {
        Method::PUT => {
            let body = body_object(call)?;
            let field = |k: &str| -> Result<String, Reply> {
                string_field(&body, k)?
                    .map(str::to_string)
                    .ok_or_else(|| Reply::bad_request(format!("{k} is required")))
            };
            let (configure, write, read) = (field("configure")?, field("write")?, field("read")?);
            admin.set_permissions(user, vhost, &configure, &write, &read).map_err(admin_error)?;
            Ok(Reply::empty(if existing.is_some() { 204 } else { 201 }))
        }
        Method::DELETE => {
            existing.ok_or_else(Reply::not_found)?;
            admin.clear_permissions(user, vhost).map_err(admin_error)?;
            Ok(Reply::empty(204))
        }
        _ => Ok(Reply::json(to_json(&existing.ok_or_else(Reply::not_found)?))),
    }
}
