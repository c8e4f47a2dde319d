//! `GET /api/queues[/{vhost}[/{name}]]`. Only what HareMQ counts truthfully is listed:
//! `messages_ready` and `consumers`, not `messages_unacknowledged` or `messages`
//! (unacknowledged deliveries are counted per channel, not per queue).

use serde_json::{json, Value};

use super::{listed_vhosts, Call, Context, Reply};
use crate::definitions::arguments::from_table;
use crate::vhost::VHost;

fn queues_of(v: &VHost) -> Vec<Value> {
    v.queue_list()
        .into_iter()
        .map(|q| {
            json!({
                "name": &*q.name,
                "vhost": &*v.name,
                "durable": q.durable,
                "auto_delete": q.auto_delete,
                "exclusive": q.exclusive,
                "arguments": from_table(&q.arguments),
                "type": "classic",
                "state": "running",
                "messages_ready": q.messages_ready,
                "consumers": q.consumers,
            })
        })
        .collect()
}

pub fn list(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let all: Vec<Value> = listed_vhosts(ctx, call)?.iter().flat_map(|v| queues_of(v)).collect();
    super::pagination::reply(call, all)
}

pub fn one(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let v = listed_vhosts(ctx, call)?.pop().ok_or_else(Reply::not_found)?;
    let name = call.params[1];
    queues_of(&v).into_iter().find(|q| q["name"] == name).map(Reply::json).ok_or_else(Reply::not_found)
}
