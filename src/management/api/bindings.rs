//! `GET /api/bindings[/{vhost}]`: the default exchange's implicit binding of every
//! queue first, as RabbitMQ lists them, then the declared ones.

use serde_json::{json, Value};

use super::{listed_vhosts, Call, Context, Reply};
use crate::definitions::arguments::from_table;
use crate::vhost::VHost;

pub(super) fn bindings_of(v: &VHost) -> Vec<Value> {
    let implicit = v.queue_list().into_iter().map(|q| {
        json!({
            "source": "", "vhost": &*v.name, "destination": &*q.name, "destination_type": "queue",
            "routing_key": &*q.name, "arguments": {},
            "properties_key": super::binding_actions::properties_key(&q.name, &Default::default()),
        })
    });
    let declared = v.binding_list().into_iter().map(|b| {
        json!({
            "source": &*b.source,
            "vhost": &*v.name,
            "destination": &*b.destination,
            "destination_type": if b.to_queue { "queue" } else { "exchange" },
            "routing_key": &*b.routing_key,
            "arguments": from_table(&b.arguments),
            "properties_key": super::binding_actions::properties_key(&b.routing_key, &b.arguments),
        })
    });
    implicit.chain(declared).collect()
}

pub fn list(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let all: Vec<Value> = listed_vhosts(ctx, call)?.iter().flat_map(|v| bindings_of(v)).collect();
    super::pagination::reply(call, all)
}
