//! Exchange types and arguments beyond AMQP's four: what `exchange.declare` arguments
//! mean (`alternate-exchange`, `hash-header`/`hash-property` for `x-consistent-hash`,
//! `x-delayed-type` for `x-delayed-message`), and the delayed-message scheduler.

pub mod delayed;

use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldTable};
use haremq_routing::{ExchangeKind, HashOn, HashProperty};

use crate::error::{AmqpError, AmqpResult};

/// The exchange type name of the delayed-message exchange.
pub const DELAYED_TYPE: &str = "x-delayed-message";

/// What an exchange's type and arguments say about how it routes.
#[derive(Clone, Debug, PartialEq)]
pub struct ExchangeSettings {
    /// How bindings match (for `x-delayed-message`, its `x-delayed-type`).
    pub kind: ExchangeKind,
    /// `x-delayed-message`: messages with a positive `x-delay` header wait first.
    pub delayed: bool,
    pub alternate: Option<Arc<str>>,
    pub hash_on: HashOn,
}

impl ExchangeSettings {
    /// The AMQP type name the exchange was declared with.
    pub fn type_name(&self) -> &'static str {
        if self.delayed {
            DELAYED_TYPE
        } else {
            self.kind.as_str()
        }
    }
}

/// A string-valued argument (long or short string).
pub fn string_arg<'a>(args: &'a FieldTable, key: &str) -> Option<Result<&'a str, &'a AMQPValue>> {
    let v = args.inner().get(key)?;
    match v {
        AMQPValue::LongString(s) => Some(std::str::from_utf8(s.as_bytes()).map_err(|_| v)),
        AMQPValue::ShortString(s) => Some(Ok(s.as_str())),
        other => Some(Err(other)),
    }
}

/// Every exchange type this broker declares, as `/api/overview` lists them.
pub const TYPE_NAMES: [&str; 6] = ["direct", "fanout", "topic", "headers", "x-consistent-hash", DELAYED_TYPE];

/// Only the type name (503 for an unknown type, as RabbitMQ).
pub fn check_type(kind: &str) -> AmqpResult<()> {
    if kind == DELAYED_TYPE || ExchangeKind::from_name(kind).is_some() {
        Ok(())
    } else {
        Err(AmqpError::CommandInvalid(format!("unknown exchange type '{kind}'")))
    }
}

/// Parses an exchange's type and arguments, with RabbitMQ's (and its plugins') 406
/// texts for invalid ones. `name`/`vhost` are for the messages.
pub fn settings(kind: &str, args: &FieldTable, name: &str, vhost: &str) -> AmqpResult<ExchangeSettings> {
    check_type(kind)?;
    let alternate = match string_arg(args, "alternate-exchange") {
        None => None,
        Some(Ok(ae)) => Some(Arc::<str>::from(ae)),
        Some(Err(v)) => {
            return Err(AmqpError::PreconditionFailed(format!(
                "invalid type '{}' for arg 'alternate-exchange' in exchange '{name}' in vhost '{vhost}'",
                type_word(v)
            )))
        }
    };
    let (kind, delayed) = if kind == DELAYED_TYPE {
        let inner = match string_arg(args, "x-delayed-type") {
            Some(Ok(t)) => ExchangeKind::from_name(t),
            _ => None,
        };
        match inner {
            Some(k) => (k, true),
            None => {
                return Err(AmqpError::PreconditionFailed(
                    "Invalid argument, 'x-delayed-type' must be an existing exchange type".into(),
                ))
            }
        }
    } else {
        match ExchangeKind::from_name(kind) {
            Some(k) => (k, false),
            None => return Err(AmqpError::CommandInvalid(format!("unknown exchange type '{kind}'"))),
        }
    };
    let mut hash_on = HashOn::RoutingKey;
    if kind == ExchangeKind::ConsistentHash {
        let header = string_arg(args, "hash-header").and_then(Result::ok);
        let property = string_arg(args, "hash-property").and_then(Result::ok);
        hash_on = match (header, property) {
            (None, None) => HashOn::RoutingKey,
            (Some(h), None) => HashOn::Header(h.into()),
            (None, Some(p)) => match HashProperty::from_name(p) {
                Some(p) => HashOn::Property(p),
                None => return Err(AmqpError::PreconditionFailed(format!("Unsupported property: {p}"))),
            },
            (Some(_), Some(_)) => {
                return Err(AmqpError::PreconditionFailed(
                    "hash-header and hash-property are mutually exclusive".into(),
                ))
            }
        };
    }
    Ok(ExchangeSettings { kind, delayed, alternate, hash_on })
}

/// Erlang's name for a field type, as RabbitMQ prints it in argument errors.
pub fn type_word(v: &AMQPValue) -> &'static str {
    match v {
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::ShortShortInt(_) => "byte",
        AMQPValue::ShortShortUInt(_) => "unsignedbyte",
        AMQPValue::ShortInt(_) => "short",
        AMQPValue::ShortUInt(_) => "unsignedshort",
        AMQPValue::LongInt(_) => "signedint",
        AMQPValue::LongUInt(_) => "unsignedint",
        AMQPValue::LongLongInt(_) => "long",
        AMQPValue::Float(_) => "float",
        AMQPValue::Double(_) => "double",
        AMQPValue::DecimalValue(_) => "decimal",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::ByteArray(_) => "binary",
        AMQPValue::Void => "void",
        _ => "longstr",
    }
}

/// The `x-delay` header in milliseconds, if it asks for a positive delay.
pub fn delay_ms(headers: Option<&FieldTable>) -> Option<u64> {
    let v = headers?.inner().get("x-delay")?;
    let ms: i128 = match v {
        AMQPValue::ShortShortInt(n) => *n as i128,
        AMQPValue::ShortShortUInt(n) => *n as i128,
        AMQPValue::ShortInt(n) => *n as i128,
        AMQPValue::ShortUInt(n) => *n as i128,
        AMQPValue::LongInt(n) => *n as i128,
        AMQPValue::LongUInt(n) => *n as i128,
        AMQPValue::LongLongInt(n) => *n as i128,
        AMQPValue::Timestamp(n) => *n as i128,
        // The plugin also reads numeric strings.
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.trim().parse().ok()?,
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok()?,
        AMQPValue::Float(f) => *f as i128,
        AMQPValue::Double(f) => *f as i128,
        _ => return None,
    };
    (ms > 0).then(|| ms.min(u64::MAX as i128) as u64)
}

/// The routing keys in the `CC` and `BCC` headers (arrays of strings), in that order.
/// Another type in either header is an error (RabbitMQ: 406 "invalid headers").
pub fn cc_keys(headers: &FieldTable) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    for h in ["CC", "BCC"] {
        match headers.inner().get(h) {
            None => {}
            Some(AMQPValue::FieldArray(a)) => {
                for v in a.as_slice() {
                    match v {
                        AMQPValue::LongString(s) => keys.push(String::from_utf8_lossy(s.as_bytes()).into_owned()),
                        AMQPValue::ShortString(s) => keys.push(s.as_str().to_owned()),
                        _ => {}
                    }
                }
            }
            Some(other) => return Err(format!("{{unacceptable_type_in_header,\"{h}\",{}}}", type_word(other))),
        }
    }
    Ok(keys)
}
