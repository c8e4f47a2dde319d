//! `/api/connections[/{name}]`, `/api/vhosts/{vhost}/connections` and DELETE of a
//! connection (closed with 320 CONNECTION_FORCED and the `X-Reason` header's text).
//! A `management` user sees (and may close) only its own connections, as in RabbitMQ.

use serde_json::{json, Value};

use super::{existing_vhost, Call, Context, Reply};
use crate::clients::ConnectionInfo;
use crate::definitions::arguments::from_table;

/// RabbitMQ's reason when the request gives none.
const DEFAULT_REASON: &str = "Closed via management plugin";

/// The connections `call`'s user may see, optionally only those in `vhost`.
pub fn visible(ctx: &Context, call: &Call, vhost: Option<&str>) -> Vec<ConnectionInfo> {
    ctx.broker
        .connections()
        .into_iter()
        .filter(|c| call.login.reads_all() || c.user == call.login.name)
        .filter(|c| vhost.is_none_or(|v| c.vhost == v))
        .collect()
}

pub fn connection_json(ctx: &Context, c: &ConnectionInfo, node: &str) -> Value {
    let rates = ctx.rates.lock();
    let track = rates.connections.get(&c.id);
    let rate = |i| super::message_stats::details(track, i);
    json!({
        "name": c.name(),
        "node": node,
        "type": "network",
        "protocol": "AMQP 0-9-1",
        "state": if c.blocked { "blocked" } else { "running" },
        "user": c.user,
        "user_who_performed_action": c.user,
        "vhost": c.vhost,
        "auth_mechanism": c.auth_mechanism,
        "host": c.local.ip().to_string(),
        "port": c.local.port(),
        "peer_host": c.peer.ip().to_string(),
        "peer_port": c.peer.port(),
        "ssl": c.tls,
        "client_properties": from_table(&c.client_properties),
        "user_provided_name": c.client_properties.inner().get("connection_name").and_then(|v| match v {
            amq_protocol::types::AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            amq_protocol::types::AMQPValue::ShortString(s) => Some(s.to_string()),
            _ => None,
        }),
        "connected_at": c.connected_at_ms,
        "timeout": c.heartbeat_s,
        "frame_max": c.frame_max,
        "channel_max": c.channel_max,
        "channels": c.channels.len(),
        "recv_oct": c.recv_oct,
        "recv_oct_details": rate(0),
        "send_oct": c.send_oct,
        "send_oct_details": rate(1),
    })
}

pub fn list(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let vhost = match call.params.first() {
        Some(v) => Some(existing_vhost(ctx, v)?.name.to_string()),
        None => None,
    };
    let node = ctx.broker.node_name();
    let all: Vec<Value> = visible(ctx, call, vhost.as_deref()).iter().map(|c| connection_json(ctx, c, &node)).collect();
    super::pagination::reply(call, all)
}

/// GET shows it; DELETE closes it.
pub fn one(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let name = call.params[0];
    let c = visible(ctx, call, None).into_iter().find(|c| c.name() == name).ok_or_else(Reply::not_found)?;
    if call.method == hyper::Method::DELETE {
        let reason = call.reason.unwrap_or(DEFAULT_REASON);
        ctx.broker.close_connection(c.id, reason);
        return Ok(Reply::empty(204));
    }
    Ok(Reply::json(connection_json(ctx, &c, &ctx.broker.node_name())))
}
