//! `GET /api/overview` and `GET /api/whoami`.

use serde_json::{json, Value};

use super::message_stats::{details, details_over, message_stats_with, Keys, Window, READY, TOTAL, UNACKED};
use super::{listed_vhosts, Call, Context, Reply};

/// The RabbitMQ version whose management API this one follows.
pub const RABBITMQ_API_VERSION: &str = "3.10.0";

pub fn overview(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    let vhosts = listed_vhosts(ctx, call)?;
    let (mut exchanges, mut queues, mut consumers) = (0usize, 0usize, 0u64);
    let (mut ready, mut unacked) = (0u64, 0u64);
    for v in &vhosts {
        // The listing leaves out the default exchange; RabbitMQ counts it.
        exchanges += v.exchange_list().len() + 1;
        for q in v.queue_list() {
            queues += 1;
            consumers += u64::from(q.stats.consumers);
            ready += q.stats.messages_ready;
            unacked += q.stats.messages_unacknowledged;
        }
    }
    let node = ctx.broker.node_name();
    let listeners: Vec<Value> = ctx
        .listeners
        .iter()
        .map(|(protocol, addr)| {
            json!({"node": node, "protocol": protocol, "ip_address": addr.ip().to_string(), "port": addr.port()})
        })
        .collect();
    let mut totals = json!({"exchanges": exchanges, "queues": queues, "consumers": consumers});
    // RabbitMQ counts a `management` user's own connections and channels.
    let connections: Vec<_> =
        ctx.broker.connections().into_iter().filter(|c| call.login.reads_all() || c.user == call.login.name).collect();
    totals["connections"] = json!(connections.len());
    totals["channels"] = json!(connections.iter().map(|c| c.channels.len()).sum::<usize>());
    let rates = ctx.rates.lock();
    let track = Some(&rates.overview);
    // Broker-wide message counts are for readers of everything; RabbitMQ shows a
    // `management` user the sum over its vhosts, which HareMQ does not keep per vhost.
    let message_stats = if call.login.reads_all() {
        let window = Window::from_call(call, "msg_rates");
        message_stats_with(&ctx.broker.message_totals(), Keys::All, |i| match window {
            Some(w) => details_over(track, i, &rates.history, w),
            None => details(track, i),
        })
    } else {
        json!({})
    };
    let lengths = Window::from_call(call, "lengths");
    let length = |i| match lengths {
        Some(w) => details_over(track, i, &rates.history, w),
        None => details(track, i),
    };
    let queue_totals = json!({
        "messages": ready + unacked,
        "messages_details": length(TOTAL),
        "messages_ready": ready,
        "messages_ready_details": length(READY),
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": length(UNACKED),
    });
    drop(rates);
    let exchange_types: Vec<Value> =
        crate::exchange::TYPE_NAMES.iter().map(|t| json!({"name": t, "description": "", "enabled": true})).collect();
    Ok(Reply::json(json!({
        "product_name": "HareMQ",
        "product_version": env!("CARGO_PKG_VERSION"),
        "rabbitmq_version": RABBITMQ_API_VERSION,
        "management_version": RABBITMQ_API_VERSION,
        "node": node,
        "cluster_name": ctx.broker.cluster_name().unwrap_or_else(|| node.clone()),
        "rates_mode": "basic",
        "disable_stats": false,
        "statistics_interval": ctx.broker.config.stats_interval_ms,
        "exchange_types": exchange_types,
        "message_stats": message_stats,
        "queue_totals": queue_totals,
        "object_totals": totals,
        "listeners": listeners,
    })))
}

pub fn whoami(_ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    Ok(Reply::json(call.login.to_json()))
}
