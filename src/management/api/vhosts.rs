//! `GET /api/vhosts`, `GET/PUT/DELETE /api/vhosts/{name}`.

use hyper::Method;
use serde_json::{json, Value};

use super::{admin, admin_error, body_object, string_field, tags_field, Call, Context, Reply};
use crate::admin::VHostInfo;

fn to_json(v: &VHostInfo) -> Value {
    json!({
        "name": v.name,
        "description": v.description,
        "tags": v.tags,
        "metadata": {"description": v.description, "tags": v.tags},
        "tracing": false,
    })
}

pub fn list(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let admin = admin(ctx);
    let mut vhosts: Vec<VHostInfo> =
        admin.vhosts().into_iter().filter(|v| call.login.sees_vhost(&admin, &v.name)).collect();
    vhosts.sort_by(|a, b| a.name.cmp(&b.name));
    super::pagination::reply(call, vhosts.iter().map(to_json).collect())
}

pub fn one(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let name = call.params[0];
    let admin = admin(ctx);
    match *call.method {
        Method::PUT => {
            call.login.require_administrator()?;
            let body = body_object(call)?;
            let description = string_field(&body, "description")?;
            let tags = tags_field(&body)?;
            let tags: Option<Vec<&str>> = tags.as_ref().map(|t| t.iter().map(String::as_str).collect());
            if ctx.broker.vhost(name).is_some() {
                // RabbitMQ updates the metadata of an existing vhost.
                if description.is_some() || tags.is_some() {
                    admin.set_vhost_metadata(name, description, tags.as_deref()).map_err(admin_error)?;
                }
                return Ok(Reply::empty(204));
            }
            admin.add_vhost_with(name, description.unwrap_or(""), &tags.unwrap_or_default()).map_err(admin_error)?;
            Ok(Reply::empty(201))
        }
        Method::DELETE => {
            call.login.require_administrator()?;
            admin.delete_vhost(name).map_err(admin_error)?;
            Ok(Reply::empty(204))
        }
        _ => {
            let v = admin.vhosts().into_iter().find(|v| v.name == name).ok_or_else(Reply::not_found)?;
            if !call.login.sees_vhost(&admin, name) {
                return Err(Reply::error(401, "not_authorised", "User not authorised to access virtual host"));
            }
            Ok(Reply::json(to_json(&v)))
        }
    }
}
