//! `/api/channels[/{name}]`, `/api/vhosts/{vhost}/channels` and
//! `/api/connections/{name}/channels`. A channel's name is its connection's and its
//! number, `"<peer> -> <local> (N)"`, as in RabbitMQ.

use serde_json::{json, Value};

use super::connections::visible;
use super::message_stats::{message_stats, Keys};
use super::{existing_vhost, Call, Context, Reply};
use crate::clients::{ChannelInfo, ConnectionInfo};

pub fn channel_name(c: &ConnectionInfo, ch: &ChannelInfo) -> String {
    format!("{} ({})", c.name(), ch.number)
}

fn channel_json(ctx: &Context, c: &ConnectionInfo, ch: &ChannelInfo, node: &str) -> Value {
    let rates = ctx.rates.lock();
    let track = rates.channels.get(&(c.id, ch.number));
    json!({
        "name": channel_name(c, ch),
        "node": node,
        "number": ch.number,
        "user": c.user,
        "user_who_performed_action": c.user,
        "vhost": c.vhost,
        "connection_details": {"name": c.name(), "peer_host": c.peer.ip().to_string(), "peer_port": c.peer.port()},
        "state": "running",
        "confirm": ch.confirm,
        "transactional": ch.transactional,
        "consumer_count": ch.consumers.len(),
        "messages_unacknowledged": ch.unacked,
        "prefetch_count": ch.prefetch,
        "global_prefetch_count": ch.global_prefetch,
        "message_stats": message_stats(&ch.messages, track, Keys::All),
    })
}

fn all_channels(ctx: &Context, connections: &[ConnectionInfo]) -> Vec<Value> {
    let node = ctx.broker.node_name();
    connections.iter().flat_map(|c| c.channels.iter().map(|ch| channel_json(ctx, c, ch, &node))).collect()
}

pub fn list(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let vhost = match call.params.first() {
        Some(v) => Some(existing_vhost(ctx, v)?.name.to_string()),
        None => None,
    };
    super::pagination::reply(call, all_channels(ctx, &visible(ctx, call, vhost.as_deref())))
}

/// `/api/connections/{name}/channels`.
pub fn of_connection(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let name = call.params[0];
    let c = visible(ctx, call, None).into_iter().find(|c| c.name() == name).ok_or_else(Reply::not_found)?;
    super::pagination::reply(call, all_channels(ctx, &[c]))
}

pub fn one(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let name = call.params[0];
    let node = ctx.broker.node_name();
    visible(ctx, call, None)
        .iter()
        .find_map(|c| {
            c.channels.iter().find(|ch| channel_name(c, ch) == name).map(|ch| channel_json(ctx, c, ch, &node))
        })
        .map(Reply::json)
        .ok_or_else(Reply::not_found)
}
