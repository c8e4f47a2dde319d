//! `GET /api/queues[/{vhost}[/{name}]]`: each queue as declared, its counts now and the
//! rates the sampler last computed.

use serde_json::{json, Value};

use super::message_stats::{details, message_stats, Keys, READY, TOTAL, UNACKED};
use super::{listed_vhosts, Call, Context, Reply};
use crate::definitions::arguments::from_table;
use crate::vhost::{QueueInfo, VHost};

/// One queue in RabbitMQ's shape.
pub fn queue_json(ctx: &Context, vhost: &str, q: &QueueInfo, node: &str) -> Value {
    let rates = ctx.rates.lock();
    let track = rates.queues.get(&(vhost.to_string(), q.name.to_string()));
    let s = &q.stats;
    let mut queue = json!({
        "name": &*q.name,
        "vhost": vhost,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive,
        "arguments": from_table(&q.arguments),
        "type": q.kind.reported(),
        "state": "running",
        "node": node,
        "policy": q.policies.policy.as_ref().map(|p| &p.name),
        "operator_policy": q.policies.operator.as_ref().map(|p| &p.name),
        "effective_policy_definition": q.policies.effective_definition(),
        "messages": s.messages_ready + s.messages_unacknowledged,
        "messages_details": details(track, TOTAL),
        "messages_ready": s.messages_ready,
        "messages_ready_details": details(track, READY),
        "messages_unacknowledged": s.messages_unacknowledged,
        "messages_unacknowledged_details": details(track, UNACKED),
        "message_bytes_ready": s.message_bytes_ready,
        "consumers": s.consumers,
        "idle_since": track.and_then(|t| t.idle_since()),
        // Not measured (RabbitMQ's is the share of time consumers could take more).
        "consumer_utilisation": null,
        "message_stats": message_stats(&s.messages, track, Keys::NonZero),
    });
    // A classic queue lives on its home node (RabbitMQ's `node`).
    if let Some(home) = q.home {
        queue["node"] = json!(crate::broker::node_name(Some(home)));
    }
    // A quorum queue's Raft group, as RabbitMQ shows it: the leader's node (also as
    // `node`) and its members.
    if let Some((leader, members)) = &q.replication {
        let name = |id: u64| crate::broker::node_name(Some(id));
        queue["leader"] = json!(leader.map(name));
        queue["members"] = json!(members.iter().map(|id| name(*id)).collect::<Vec<_>>());
        if let Some(l) = leader {
            queue["node"] = json!(name(*l));
        }
    }
    queue
}

fn queues_of(ctx: &Context, v: &VHost, node: &str) -> Vec<Value> {
    v.queue_list().iter().map(|q| queue_json(ctx, &v.name, q, node)).collect()
}

pub fn list(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let node = ctx.broker.node_name();
    let all: Vec<Value> = listed_vhosts(ctx, call)?.iter().flat_map(|v| queues_of(ctx, v, &node)).collect();
    super::pagination::reply(call, all)
}

pub fn one(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let v = listed_vhosts(ctx, call)?.pop().ok_or_else(Reply::not_found)?;
    let name = call.params[1];
    let q = v.queue_list().into_iter().find(|q| &*q.name == name).ok_or_else(Reply::not_found)?;
    Ok(Reply::json(queue_json(ctx, &v.name, &q, &ctx.broker.node_name())))
}
