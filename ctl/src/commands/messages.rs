//! `get messages` and `publish message`: the API's basic.get and basic.publish, meant
//! for inspection and tests rather than throughput.

use serde_json::{json, Value};

use super::Context;
use crate::args::{Format, Get, GetEncoding, PayloadEncoding, Publish};
use crate::error::CtlError;
use crate::output::{self, columns};
use crate::path::api;

pub fn get(ctx: &Context, what: &Get) -> Result<(), CtlError> {
    let Get::Messages(g) = what;
    let mut body = json!({
        "count": g.count,
        "ackmode": g.ackmode.as_api(),
        "encoding": match g.encoding {
            GetEncoding::Auto => "auto",
            GetEncoding::Base64 => "base64",
        },
    });
    if let Some(limit) = g.truncate {
        body["truncate"] = json!(limit);
    }
    let answer = ctx.client.post(&api(&["queues", ctx.vhost, &g.queue, "get"]), body.to_string())?;
    output::list(ctx.format, columns::MESSAGES, &answer.unwrap_or_else(|| json!([])))
}

pub fn publish(ctx: &Context, what: &Publish) -> Result<(), CtlError> {
    let Publish::Message(p) = what;
    // The default exchange has no name to put in a path: the API calls it amq.default.
    let exchange = if p.exchange.is_empty() { "amq.default" } else { p.exchange.as_str() };
    let body = json!({
        "properties": p.properties.clone().unwrap_or_else(|| json!({})),
        "routing_key": p.routing_key,
        "payload": p.payload,
        "payload_encoding": match p.payload_encoding {
            PayloadEncoding::String => "string",
            PayloadEncoding::Base64 => "base64",
        },
    });
    let answer = ctx.client.post(&api(&["exchanges", ctx.vhost, exchange, "publish"]), body.to_string())?;
    let routed = answer.as_ref().and_then(|a| a.get("routed")).and_then(Value::as_bool);
    match ctx.format {
        Format::Json => output::json(&answer.unwrap_or_else(|| json!({}))),
        Format::Table => output::done(
            ctx.format,
            match routed {
                Some(true) => "published, routed to at least one queue",
                Some(false) => "published, but not routed: no binding matched",
                None => "published",
            },
        ),
    }
}
