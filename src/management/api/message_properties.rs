//! Message properties as JSON, both ways, as RabbitMQ's API writes and reads them:
//! the 14 basic properties by their AMQP names, `headers` as a table. A message
//! without properties shows `[]` (RabbitMQ's empty Erlang list), not `{}`.

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::ShortString;
use serde_json::{json, Map, Value};

use super::Reply;
use crate::definitions::arguments::{from_table, to_table};

/// A message's raw content-header properties as RabbitMQ's JSON.
pub fn to_json(raw: &[u8]) -> Value {
    let Some(p) = crate::wire::nesting::parse_properties(raw) else {
        return json!([]);
    };
    let mut out = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            out.insert(k.to_string(), v);
        }
    };
    let text = |s: &Option<ShortString>| s.as_ref().map(|s| Value::from(s.as_str()));
    put("content_type", text(p.content_type()));
    put("content_encoding", text(p.content_encoding()));
    put("headers", p.headers().as_ref().map(|h| Value::Object(from_table(h))));
    put("delivery_mode", p.delivery_mode().map(Value::from));
    put("priority", p.priority().map(Value::from));
    put("correlation_id", text(p.correlation_id()));
    put("reply_to", text(p.reply_to()));
    put("expiration", text(p.expiration()));
    put("message_id", text(p.message_id()));
    put("timestamp", p.timestamp().map(Value::from));
    put("type", text(p.kind()));
    put("user_id", text(p.user_id()));
    put("app_id", text(p.app_id()));
    put("cluster_id", text(p.cluster_id()));
    if out.is_empty() {
        json!([])
    } else {
        Value::Object(out)
    }
}

/// RabbitMQ's 400 for a property of the wrong type: `["not_int", "delivery_mode"]`.
fn wrong(kind: &str, key: &str) -> Reply {
    let mut r = Reply::bad_request("");
    r.body = Some(json!({"error": "bad_request", "reason": [kind, key]}));
    r
}

/// Properties from a publish body's `properties` object; unknown keys are ignored,
/// as RabbitMQ ignores them.
pub fn from_json(props: &Map<String, Value>) -> Result<BasicProperties, Reply> {
    let string = |key: &str| -> Result<Option<ShortString>, Reply> {
        match props.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= 255 => Ok(Some(ShortString::from(s.clone()))),
            Some(_) => Err(wrong("not_string", key)),
        }
    };
    let int = |key: &str| -> Result<Option<u64>, Reply> {
        match props.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| wrong("not_int", key)),
            Some(_) => Err(wrong("not_int", key)),
        }
    };
    let small = |key: &str| -> Result<Option<u8>, Reply> {
        int(key)?.map(|n| u8::try_from(n).map_err(|_| wrong("not_int", key))).transpose()
    };
    let mut p = BasicProperties::default();
    if let Some(v) = string("content_type")? {
        p = p.with_content_type(v);
    }
    if let Some(v) = string("content_encoding")? {
        p = p.with_content_encoding(v);
    }
    match props.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(h)) => p = p.with_headers(to_table(h).map_err(Reply::bad_request)?),
        Some(_) => return Err(wrong("not_table", "headers")),
    }
    if let Some(v) = small("delivery_mode")? {
        p = p.with_delivery_mode(v);
    }
    if let Some(v) = small("priority")? {
        p = p.with_priority(v);
    }
    if let Some(v) = string("correlation_id")? {
        p = p.with_correlation_id(v);
    }
    if let Some(v) = string("reply_to")? {
        p = p.with_reply_to(v);
    }
    if let Some(v) = string("expiration")? {
        p = p.with_expiration(v);
    }
    if let Some(v) = string("message_id")? {
        p = p.with_message_id(v);
    }
    if let Some(v) = int("timestamp")? {
        p = p.with_timestamp(v);
    }
    if let Some(v) = string("type")? {
        p = p.with_type(v);
    }
    if let Some(v) = string("user_id")? {
        p = p.with_user_id(v);
    }
    if let Some(v) = string("app_id")? {
        p = p.with_app_id(v);
    }
    if let Some(v) = string("cluster_id")? {
        p = p.with_cluster_id(v);
    }
    Ok(p)
}

/// A payload as the publish body gives it: `string` (UTF-8 as is) or `base64`.
pub fn payload(payload: &str, encoding: &str) -> Result<Vec<u8>, Reply> {
    use base64::Engine;
    let reason = |kind: &str, v: &str| {
        let mut r = Reply::bad_request("");
        r.body = Some(json!({"error": "bad_request", "reason": [kind, v]}));
        r
    };
    match encoding {
        "string" => Ok(payload.as_bytes().to_vec()),
        "base64" => {
            base64::engine::general_purpose::STANDARD.decode(payload).map_err(|_| reason("not_base64", payload))
        }
        other => Err(reason("unsupported_encoding", other)),
    }
}
