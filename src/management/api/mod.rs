//! The handlers, one file per resource. Each returns `Ok(reply)` or `Err(reply)` (an
//! error reply, so `?` works on the checks).

pub mod access;
pub mod binding_actions;
pub mod bindings;
pub mod channels;
pub mod cluster;
pub mod connections;
pub mod consumers;
pub mod definitions;
pub mod erlang_hash;
pub mod exchange_actions;
pub mod exchanges;
pub mod health;
pub mod health_checks;
pub mod limits;
pub mod message_properties;
pub mod message_stats;
pub mod nodes;
pub mod overview;
pub mod pagination;
pub mod parameters;
pub mod permissions;
pub mod policies;
pub mod queue_actions;
pub mod queues;
pub mod topic_permissions;
pub mod users;
pub mod vhosts;

use serde_json::{Map, Value};

use super::router::Call;
use super::{Context, Reply};
use crate::admin::{Admin, AdminError};

pub fn admin(ctx: &Context) -> Admin {
    Admin::new(ctx.broker.clone())
}

/// The request body as a JSON object; an empty body is `{}`. RabbitMQ's 400
/// `not_json` otherwise.
pub fn body_object(call: &Call) -> Result<Map<String, Value>, Reply> {
    if call.body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(call.body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(Reply::bad_request("not_json")),
    }
}

/// A string field of a body (`None` when absent; 400 when not a string).
pub fn string_field<'a>(body: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, Reply> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Reply::bad_request(format!("{key} must be a string"))),
    }
}

/// Tags as RabbitMQ takes them: a list, or a comma-separated string.
pub fn tags_field(body: &Map<String, Value>) -> Result<Option<Vec<String>>, Reply> {
    match body.get("tags") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            Ok(Some(s.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect()))
        }
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| t.as_str().map(|s| s.trim().to_string()).ok_or_else(|| Reply::bad_request("tags must be strings")))
            .filter(|t| !matches!(t, Ok(s) if s.is_empty()))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(Reply::bad_request("tags must be a list or a comma-separated string")),
    }
}

/// An administrative refusal as an HTTP reply.
pub fn admin_error(e: AdminError) -> Reply {
    match e {
        AdminError::NoSuchVHost(_)
        | AdminError::NoSuchUser(_)
        | AdminError::NoSuchPolicy(_)
        | AdminError::NoSuchParameter(_) => Reply::not_found(),
        AdminError::VHostExists(_) | AdminError::UserExists(_) | AdminError::Invalid(_) => {
            Reply::bad_request(e.to_string())
        }
        AdminError::NotDurable(_) => Reply::error(500, "internal_server_error", &e.to_string()),
        AdminError::NotReplicated(_) => Reply::error(503, "service_unavailable", &e.to_string()),
    }
}

/// The vhost of a path parameter, 404 when it does not exist.
pub fn existing_vhost(ctx: &Context, name: &str) -> Result<std::sync::Arc<crate::vhost::VHost>, Reply> {
    ctx.broker.vhost(name).ok_or_else(Reply::not_found)
}

/// The vhosts a listing covers: the one named (404 if missing, 401 if not visible to
/// the user), or all the user may see.
pub fn listed_vhosts(ctx: &Context, call: &Call) -> Result<Vec<std::sync::Arc<crate::vhost::VHost>>, Reply> {
    let admin = admin(ctx);
    match call.params.first() {
        Some(name) => {
            let v = existing_vhost(ctx, name)?;
            if !call.login.sees_vhost(&admin, name) {
                return Err(Reply::error(401, "not_authorised", "User not authorised to access virtual host"));
            }
            Ok(vec![v])
        }
        None => {
            let mut names = ctx.broker.vhost_names();
            names.sort();
            Ok(names
                .into_iter()
                .filter(|n| call.login.sees_vhost(&admin, n))
                .filter_map(|n| ctx.broker.vhost(&n))
                .collect())
        }
    }
}
