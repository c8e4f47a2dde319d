//! `GET /api/exchanges[/{vhost}[/{name}]]`. The default exchange is listed with the
//! name `""` and found as `amq.default`, as in RabbitMQ.

use serde_json::{json, Value};

use super::{listed_vhosts, Call, Context, Reply};
use crate::definitions::arguments::from_table;
use crate::vhost::VHost;

fn exchanges_of(v: &VHost) -> Vec<Value> {
    let default = json!({
        "name": "", "vhost": &*v.name, "type": "direct", "durable": true, "auto_delete": false,
        "internal": false, "arguments": {},
    });
    std::iter::once(default)
        .chain(v.exchange_list().into_iter().map(|e| {
            let mut x = json!({
                "name": &*e.name,
                "vhost": &*v.name,
                "type": e.kind,
                "durable": e.durable,
                "auto_delete": e.auto_delete,
                "internal": e.internal,
                "arguments": from_table(&e.arguments),
            });
            // As RabbitMQ: present only when a policy applies.
            if let Some(p) = e.policy {
                x["policy"] = Value::String(p);
            }
            x
        }))
        .collect()
}

pub fn list(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let all: Vec<Value> = listed_vhosts(ctx, call)?.iter().flat_map(|v| exchanges_of(v)).collect();
    super::pagination::reply(call, all)
}

pub fn one(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let v = listed_vhosts(ctx, call)?.pop().ok_or_else(Reply::not_found)?;
    let name = match call.params[1] {
        "amq.default" => "",
        n => n,
    };
    exchanges_of(&v).into_iter().find(|e| e["name"] == name).map(Reply::json).ok_or_else(Reply::not_found)
}
