//! `cluster status|add|remove`: the broker's `/api/cluster` (HareMQ's own endpoints;
//! RabbitMQ does this with `rabbitmqctl join_cluster` and `forget_cluster_node`).

use serde_json::{json, Value};

use super::Context;
use crate::args::{Cluster, Format};
use crate::error::CtlError;
use crate::output::{self, columns};
use crate::path::api;

pub fn run(ctx: &Context, what: &Cluster) -> Result<(), CtlError> {
    match what {
        Cluster::Status => status(ctx),
        Cluster::Add(a) => {
            let body = json!({"id": a.id, "address": a.address}).to_string();
            ctx.client.post(&api(&["cluster", "nodes"]), body)?;
            output::done(ctx.format, &format!("added node {} at {}", a.id, a.address))
        }
        Cluster::Remove(r) => {
            ctx.client.delete(&api(&["cluster", "nodes", &r.id.to_string()]), &[])?;
            output::done(ctx.format, &format!("removed node {}", r.id))
        }
    }
}

/// The members as a table (the leader marked), or the whole answer as JSON.
fn status(ctx: &Context) -> Result<(), CtlError> {
    let status = ctx.client.get(&api(&["cluster"]))?;
    if ctx.format == Format::Json {
        return output::json(&status);
    }
    let leader = status.get("leader").cloned().unwrap_or(Value::Null);
    let mut nodes = status.get("nodes").cloned().unwrap_or_else(|| json!([]));
    if let Some(list) = nodes.as_array_mut() {
        for n in list {
            n["leader"] = json!(n.get("id") == Some(&leader));
        }
    }
    output::list(ctx.format, columns::CLUSTER_NODES, &nodes)
}
