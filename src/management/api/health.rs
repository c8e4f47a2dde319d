//! `GET /api/health/checks/alarms`: 200 `{"status":"ok"}`, or 503 with the raised
//! alarms in RabbitMQ's shape (`resource` is `memory` or `disk`).

use serde_json::json;

use super::{Call, Context, Reply};

/// The alarms raised on this node, in RabbitMQ's shape.
pub fn raised(ctx: &Context) -> Vec<serde_json::Value> {
    let node = ctx.broker.node_name();
    let mut alarms = Vec::new();
    if ctx.broker.memory.is_raised() {
        alarms.push(json!({"node": node, "resource": "memory"}));
    }
    if ctx.broker.disk.is_raised() {
        alarms.push(json!({"node": node, "resource": "disk"}));
    }
    // HareMQ's addition: a clustered node cut off from the majority commits nothing
    // replicated, and says so here.
    if ctx.broker.cluster().is_some_and(|c| !c.status().has_quorum) {
        alarms.push(json!({"node": node, "resource": "cluster_majority"}));
    }
    alarms
}

pub fn alarms(ctx: &Context, _call: &Call) -> Result<Reply, Reply> {
    let alarms = raised(ctx);
    if alarms.is_empty() {
        return Ok(Reply::json(json!({"status": "ok"})));
    }
    let mut reply = Reply::json(json!({
        "status": "failed",
        "reason": "There are alarms in effect in the cluster",
        "alarms": alarms,
    }));
    reply.status = 503;
    Ok(reply)
}

/// `GET /api/aliveness-test/{vhost}`: `{"status":"ok"}`, or 503
/// `{"status":"failed","reason":...}` as RabbitMQ 3.10. The user needs permissions in
/// the vhost (RabbitMQ runs the test on a connection as that user).
pub fn aliveness(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let name = call.params[0];
    let v = super::existing_vhost(ctx, name)?;
    let admin = super::admin(ctx);
    if !admin.permissions().iter().any(|p| p.user == call.login.name && p.vhost == name) {
        return Err(Reply::error(401, "not_authorised", "User not authorised to access virtual host"));
    }
    match v.aliveness_test() {
        Ok(()) => Ok(Reply::json(json!({"status": "ok"}))),
        Err(reason) => {
            let mut reply = Reply::json(json!({"status": "failed", "reason": reason}));
            reply.status = 503;
            Ok(reply)
        }
    }
}
