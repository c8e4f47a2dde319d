//! `/api/consumers[/{vhost}]`: every consumer of the connections the user may see.

use serde_json::json;

use super::channels::channel_name;
use super::connections::visible;
use super::{existing_vhost, Call, Context, Reply};
use crate::definitions::arguments::from_table;

pub fn list(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let vhost = match call.params.first() {
        Some(v) => Some(existing_vhost(ctx, v)?.name.to_string()),
        None => None,
    };
    let node = ctx.broker.node_name();
    let mut out = Vec::new();
    for c in visible(ctx, call, vhost.as_deref()) {
        for ch in &c.channels {
            for k in &ch.consumers {
                out.push(json!({
                    "consumer_tag": &*k.tag,
                    "queue": {"name": &*k.queue, "vhost": c.vhost},
                    "channel_details": {
                        "name": channel_name(&c, ch),
                        "number": ch.number,
                        "connection_name": c.name(),
                        "peer_host": c.peer.ip().to_string(),
                        "peer_port": c.peer.port(),
                        "user": c.user,
                        "node": node,
                    },
                    "ack_required": !k.no_ack,
                    "exclusive": k.exclusive,
                    "prefetch_count": k.prefetch,
                    "arguments": from_table(&k.arguments),
                    "active": k.active,
                    "activity_status": if k.active { "up" } else { "waiting" },
                }));
            }
        }
    }
    super::pagination::reply(call, out)
}
