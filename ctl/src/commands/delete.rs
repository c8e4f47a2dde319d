//! `delete KIND`: DELETE of the object; `--idempotently` forgives a missing one.

use serde_json::Value;

use super::declare::{arguments, binding_path};
use super::Context;
use crate::args::{BindingArgs, Delete};
use crate::error::CtlError;
use crate::output;
use crate::path::{api, encode, with_query};

pub fn run(ctx: &Context, what: &Delete) -> Result<(), CtlError> {
    let vhost = ctx.vhost;
    let (path, idempotently, what) = match what {
        Delete::Queue(q) => {
            let mut conditions = Vec::new();
            if q.if_empty {
                conditions.push(("if-empty", "true"));
            }
            if q.if_unused {
                conditions.push(("if-unused", "true"));
            }
            let path = with_query(api(&["queues", vhost, &q.name]), &conditions);
            (path, q.idempotently, format!("queue '{}' in vhost '{vhost}'", q.name))
        }
        Delete::Exchange(x) => {
            let conditions: &[(&str, &str)] = if x.if_unused { &[("if-unused", "true")] } else { &[] };
            let path = with_query(api(&["exchanges", vhost, &x.name]), conditions);
            (path, x.idempotently, format!("exchange '{}' in vhost '{vhost}'", x.name))
        }
        Delete::Binding(b) => (binding_to_delete(ctx, b)?, false, describe_binding(vhost, b)),
        Delete::Vhost(v) => (api(&["vhosts", &v.name]), v.idempotently, format!("vhost '{}'", v.name)),
        Delete::User(u) => (api(&["users", &u.name]), u.idempotently, format!("user '{}'", u.name)),
        Delete::Permissions(p) => (
            api(&["permissions", vhost, &p.user]),
            p.idempotently,
            format!("permissions of user '{}' in vhost '{vhost}'", p.user),
        ),
    };
    match ctx.client.delete(&path, &[]) {
        Ok(_) => output::done(ctx.format, &format!("deleted {what}")),
        Err(e) if idempotently && e.is_not_found() => output::done(ctx.format, &format!("no {what} to delete")),
        Err(e) => Err(e),
    }
}

/// The binding's own path, ending in its `properties_key`: RabbitMQ names a binding by
/// a key derived from its routing key and arguments, so it is looked up in the list of
/// bindings between the two ends rather than computed here.
fn binding_to_delete(ctx: &Context, b: &BindingArgs) -> Result<String, CtlError> {
    let between = binding_path(ctx.vhost, b);
    let wanted = arguments(&b.arguments);
    let bindings = ctx.client.get(&between)?;
    let key = bindings
        .as_array()
        .into_iter()
        .flatten()
        .filter(|binding| binding.get("routing_key").and_then(Value::as_str) == Some(b.routing_key.as_str()))
        .filter(|binding| binding.get("arguments").unwrap_or(&Value::Null) == &wanted)
        .find_map(|binding| binding.get("properties_key").and_then(Value::as_str));
    match key {
        Some(key) => Ok(format!("{between}/{}", encode(key))),
        None => Err(CtlError::Missing(describe_binding(ctx.vhost, b))),
    }
}

fn describe_binding(vhost: &str, b: &BindingArgs) -> String {
    format!(
        "binding from exchange '{}' to {} '{}' with routing key '{}' in vhost '{vhost}'",
        b.source,
        b.destination_type.noun(),
        b.destination,
        b.routing_key
    )
}
