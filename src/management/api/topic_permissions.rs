//! `GET /api/topic-permissions`, `GET/PUT/DELETE /api/topic-permissions/{vhost}/{user}`,
//! `GET /api/users/{user}/topic-permissions`, `GET /api/vhosts/{vhost}/topic-permissions`
//! (administrators only). A user has one
//! topic permission per exchange, so the per-user resource is a list.

use hyper::Method;
use serde_json::{json, Value};

use super::{admin, admin_error, body_object, string_field, Call, Context, Reply};
use crate::admin::TopicPermissionInfo;

fn to_json(p: &TopicPermissionInfo) -> Value {
    json!({"user": p.user, "vhost": p.vhost, "exchange": p.exchange, "write": p.write, "read": p.read})
}

fn listed(ctx: &Context, keep: impl Fn(&TopicPermissionInfo) -> bool) -> Vec<TopicPermissionInfo> {
    let mut perms: Vec<TopicPermissionInfo> = admin(ctx).topic_permissions().into_iter().filter(keep).collect();
    perms.sort_by(|a, b| (&a.vhost, &a.user, &a.exchange).cmp(&(&b.vhost, &b.user, &b.exchange)));
    perms
}

fn array(perms: Vec<TopicPermissionInfo>) -> Reply {
    Reply::json(Value::Array(perms.iter().map(to_json).collect()))
}

pub fn list(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    call.login.require_administrator()?;
    Ok(array(listed(ctx, |_| true)))
}

pub fn of_user(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    call.login.require_administrator()?;
    let user = call.params[0];
    admin(ctx).user(user).ok_or_else(Reply::not_found)?;
    Ok(array(listed(ctx, |p| p.user == user)))
}

pub fn of_vhost(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    call.login.require_administrator()?;
    let vhost = call.params[0];
    ctx.broker.vhost(vhost).ok_or_else(Reply::not_found)?;
    Ok(array(listed(ctx, |p| p.vhost == vhost)))
}

pub fn one(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    call.login.require_administrator()?;
    let (vhost, user) = (call.params[0], call.params[1]);
    let admin = admin(ctx);
    if ctx.broker.vhost(vhost).is_none() || admin.user(user).is_none() {
        return Err(Reply::not_found());
    }
    let existing = listed(ctx, |p| p.user == user && p.vhost == vhost);
    match *call.method {
        Method::PUT => {
            let body = body_object(call)?;
            let field = |k: &str| -> Result<String, Reply> {
                string_field(&body, k)?
                    .map(str::to_string)
                    .ok_or_else(|| Reply::bad_request(format!("{k} is required")))
            };
            let (exchange, write, read) = (field("exchange")?, field("write")?, field("read")?);
            let existed = existing.iter().any(|p| p.exchange == exchange);
            admin.set_topic_permissions(user, vhost, &exchange, &write, &read).map_err(admin_error)?;
            Ok(Reply::empty(if existed { 204 } else { 201 }))
        }
        Method::DELETE => {
            if existing.is_empty() {
                return Err(Reply::not_found());
            }
            admin.clear_topic_permissions(user, vhost, None).map_err(admin_error)?;
            Ok(Reply::empty(204))
        }
        _ => {
            if existing.is_empty() {
                return Err(Reply::not_found());
            }
            Ok(array(existing))
        }
    }
}
