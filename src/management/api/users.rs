//! `GET /api/users`, `GET/PUT/DELETE /api/users/{name}` (administrators only, as in
//! RabbitMQ).

use hyper::Method;
use serde_json::{json, Map, Value};

use super::{admin, admin_error, body_object, string_field, tags_field, Call, Context, Reply};
use crate::admin::UserInfo;

fn to_json(u: &UserInfo) -> Value {
    let mut limits = Map::new();
    if let Some(n) = u.limits.max_connections {
        limits.insert("max-connections".into(), n.into());
    }
    if let Some(n) = u.limits.max_channels {
        limits.insert("max-channels".into(), n.into());
    }
    json!({
        "name": u.name,
        "password_hash": u.password_hash.clone().unwrap_or_default(),
        "hashing_algorithm": u.hashing_algorithm,
        "tags": u.tags,
        "limits": limits,
    })
}

pub fn list(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    call.login.require_administrator()?;
    let mut users = admin(ctx).users();
    users.sort_by(|a, b| a.name.cmp(&b.name));
    super::pagination::reply(call, users.iter().map(to_json).collect())
}

pub fn one(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    call.login.require_administrator()?;
    let name = call.params[0];
    let admin = admin(ctx);
    match *call.method {
        Method::PUT => {
            let body = body_object(call)?;
            // RabbitMQ 3.10 refuses a user without `tags` (it may be "").
            let tags = tags_field(&body)?.ok_or_else(|| Reply::bad_request("tags_not_present"))?;
            let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
            let password = string_field(&body, "password")?;
            let hash = string_field(&body, "password_hash")?;
            let algorithm = string_field(&body, "hashing_algorithm")?.unwrap_or("rabbit_password_hashing_sha256");
            if admin.user(name).is_some() {
                match (password, hash) {
                    (Some(p), _) => admin.change_password(name, Some(p)),
                    (None, Some(h)) => admin.set_password_hash(name, h, algorithm),
                    (None, None) => Ok(()),
                }
                .map_err(admin_error)?;
                admin.set_user_tags(name, &tags).map_err(admin_error)?;
                return Ok(Reply::empty(204));
            }
            match (password, hash) {
                (Some(p), _) => admin.add_user(name, Some(p), &tags),
                (None, Some(h)) => admin.add_user_with_hash(name, h, algorithm, &tags),
                (None, None) => admin.add_user(name, None, &tags),
            }
            .map_err(admin_error)?;
            Ok(Reply::empty(201))
        }
        Method::DELETE => {
            admin.delete_user(name).map_err(admin_error)?;
            Ok(Reply::empty(204))
        }
        _ => {
            let user = admin.user(name).ok_or_else(Reply::not_found)?;
            Ok(Reply::json(to_json(&user)))
        }
    }
}
