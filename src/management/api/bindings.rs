//! `GET /api/bindings[/{vhost}]`: the default exchange's implicit binding of every
//! queue first, as RabbitMQ lists them, then the declared ones.

use serde_json::{json, Value};

use super::{listed_vhosts, Call, Context, Reply};
use crate::definitions::arguments::from_table;
use crate::vhost::VHost;

fn bindings_of(v: &VHost) -> Vec<Value> {
    let implicit = v.queue_list().into_iter().map(|q| {
        json!({
            "source": "", "vhost": &*v.name, "destination": &*q.name, "destination_type": "queue",
            "routing_key": &*q.name, "arguments": {}, "properties_key": &*q.name,
        })
    });
    let declared = v.binding_list().into_iter().map(|b| {
        let mut j = json!({
            "source": &*b.source,
            "vhost": &*v.name,
            "destination": &*b.destination,
            "destination_type": if b.to_queue { "queue" } else { "exchange" },
            "routing_key": &*b.routing_key,
            "arguments": from_table(&b.arguments),
        });
        // RabbitMQ's key for a binding without arguments is its routing key; with
        // arguments it appends a hash of them, which is not reproduced here.
        if b.arguments.inner().is_empty() {
            j["properties_key"] = json!(&*b.routing_key);
        }
        j
    });
    implicit.chain(declared).collect()
}

pub fn list(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let all: Vec<Value> = listed_vhosts(ctx, call)?.iter().flat_map(|v| bindings_of(v)).collect();
    super::pagination::reply(call, all)
}
