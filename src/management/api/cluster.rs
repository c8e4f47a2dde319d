//! HareMQ's cluster membership over HTTP (RabbitMQ changes membership with
//! `rabbitmqctl join_cluster`/`forget_cluster_node`, not its HTTP API; HareMQ has no
//! Erlang distribution to lean on, so membership is an API call, and `haremqctl
//! cluster` uses it):
//!
//! - `GET /api/cluster`: this node's view (id, leader, term, quorum, members).
//! - `POST /api/cluster/nodes` with `{"id": N, "address": "HOST:PORT"}`: adds node N
//!   (a learner first, a voter once it has caught up). 204 once committed.
//! - `DELETE /api/cluster/nodes/{id}`: removes node N from the voters. 204.
//!
//! Changes need the administrator tag; a single node answers 400 `not_clustered`.

use serde_json::json;

use super::{body_object, Call, Context, Reply};
use crate::membership::ClusterView;

fn cluster(ctx: &Context) -> Result<&std::sync::Arc<dyn ClusterView>, Reply> {
    ctx.broker.cluster().ok_or_else(|| Reply::error(400, "not_clustered", "this node is not part of a cluster"))
}

pub fn status(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    if !call.login.reads_all() {
        return Err(Reply::error(401, "not_authorised", "Not monitor user"));
    }
    Ok(Reply::json(json!(cluster(ctx)?.status_from_leader())))
}

pub fn add(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    call.login.require_administrator()?;
    let cluster = cluster(ctx)?;
    let body = body_object(call)?;
    let id = body.get("id").and_then(|v| v.as_u64()).ok_or_else(|| Reply::bad_request("id must be a node id"))?;
    let address = super::string_field(&body, "address")?.ok_or_else(|| Reply::bad_request("address is required"))?;
    let addr = address.parse().map_err(|e| Reply::bad_request(format!("address '{address}': {e}")))?;
    cluster.add_node(id, addr).map_err(|e| Reply::error(503, "cluster_change_failed", &e))?;
    Ok(Reply::empty(204))
}

pub fn remove(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    call.login.require_administrator()?;
    let cluster = cluster(ctx)?;
    let id = call.params[0].parse().map_err(|_| Reply::bad_request("not a node id"))?;
    if !cluster.status().nodes.iter().any(|n| n.id == id) {
        return Err(Reply::not_found());
    }
    cluster.remove_node(id).map_err(|e| Reply::error(503, "cluster_change_failed", &e))?;
    Ok(Reply::empty(204))
}
