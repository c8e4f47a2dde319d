//! RabbitMQ 3.10's health checks under `/api/health/checks/` besides `alarms`:
//! `local-alarms`, `port-listener/{port}`, `protocol-listener/{protocol}`,
//! `virtual-hosts`, `node-is-quorum-critical`, `node-is-mirror-sync-critical`.
//! 200 `{"status":"ok",...}` or 503 `{"status":"failed","reason":...}` with its
//! bodies. HareMQ is a single node with neither quorum nor mirrored queues, so the
//! last two always pass, with RabbitMQ's single-node reason.

use serde_json::{json, Value};

use super::{Call, Context, Reply};

fn failed(body: Value) -> Result<Reply, Reply> {
    let mut reply = Reply::json(body);
    reply.status = 503;
    Ok(reply)
}

/// `local-alarms`: the alarms of this node.
pub fn local_alarms(ctx: &Context, _call: &Call) -> Result<Reply, Reply> {
    let alarms = super::health::raised(ctx);
    if alarms.is_empty() {
        return Ok(Reply::json(json!({"status": "ok"})));
    }
    failed(json!({"status": "failed", "reason": "There are alarms in effect on the node", "alarms": alarms}))
}

/// `port-listener/{port}`.
pub fn port_listener(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let port: u16 = call.params[0].parse().map_err(|_| Reply::bad_request("Invalid port"))?;
    let mut ports: Vec<u16> = ctx.listeners.iter().map(|(_, a)| a.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    if ports.contains(&port) {
        return Ok(Reply::json(json!({"status": "ok", "port": port})));
    }
    failed(json!({"status": "failed", "reason": "No active listener", "missing": port, "ports": ports}))
}

/// RabbitMQ's spellings of a protocol, as its listeners name them.
fn normalize_protocol(p: &str) -> String {
    match p.to_ascii_lowercase().as_str() {
        "amqp091" | "amqp0.9.1" | "amqp0-9-1" | "amqp0_9_1" | "amqp" => "amqp".into(),
        "amqps" | "amqp/ssl" => "amqp/ssl".into(),
        "mqtt311" | "mqtt3.1.1" | "mqtt" => "mqtt".into(),
        "stomp1.0" | "stomp1.1" | "stomp1.2" | "stomp" => "stomp".into(),
        other => other.into(),
    }
}

/// `protocol-listener/{protocol}`.
pub fn protocol_listener(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let protocol = normalize_protocol(call.params[0]);
    let protocols: Vec<&str> = ctx.listeners.iter().map(|(p, _)| *p).collect();
    if protocols.contains(&protocol.as_str()) {
        return Ok(Reply::json(json!({"status": "ok", "protocol": protocol})));
    }
    failed(json!({"status": "failed", "reason": "No active listener", "missing": protocol, "protocols": protocols}))
}

/// `virtual-hosts`: every vhost of HareMQ runs while the broker does.
pub fn virtual_hosts(_ctx: &Context, _call: &Call) -> Result<Reply, Reply> {
    Ok(Reply::json(json!({"status": "ok"})))
}

/// `node-is-quorum-critical`: 503 when stopping this node would leave the cluster's
/// voters without a majority (RabbitMQ asks the same of each quorum queue; every
/// replicated write here needs the metadata group's majority first). A single node is
/// never critical.
pub fn quorum_critical(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let Some(cluster) = ctx.broker.cluster() else {
        return single_node(ctx, call);
    };
    // Only the leader knows every member's reachability: a follower asks it.
    let status = cluster.status_from_leader();
    if !status.is_quorum_critical() {
        return Ok(Reply::json(json!({"status": "ok"})));
    }
    failed(json!({
        "status": "failed",
        "reason": "There are quorum queues that would lose their quorum if the target node is shut down",
        "queues": [],
        "groups": [{"name": "metadata", "voters": status.voters(), "reachable": status.reachable_voters()}],
    }))
}

/// `node-is-mirror-sync-critical` (and `node-is-quorum-critical` alone): HareMQ has no
/// mirrored queues.
pub fn single_node(_ctx: &Context, _call: &Call) -> Result<Reply, Reply> {
    Ok(Reply::json(json!({"status": "ok", "reason": "single node cluster"})))
}
