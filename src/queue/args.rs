//! Queue x-arguments: RabbitMQ's validation at queue.declare (same checks, same reply
//! texts) and the parsed form a queue acts on.

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::error::{AmqpError, AmqpResult};


/// What a full queue does with a new message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Drop (dead-letter) from the head until the limits hold again.
    #[default]
    DropHead,
    /// Refuse the new message (nack it to a confirming publisher).
    RejectPublish,
    /// Refuse it and dead-letter it.
    RejectPublishDlx,
}

/// The x-arguments a queue acts on, parsed once at creation.
#[derive(Clone, Debug, Default)]
pub struct QueueArgs {
    /// x-message-ttl, ms.
    pub message_ttl: Option<u32>,
    /// x-expires, ms (> 0).
    pub expires: Option<u32>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    /// x-dead-letter-exchange ("" is the default exchange).
    pub dead_letter_exchange: Option<Box<str>>,
    pub dead_letter_routing_key: Option<Box<str>>,
    /// x-delivery-limit: requeues allowed before the message is dead-lettered.
    pub delivery_limit: Option<u64>,
    /// x-max-priority (1..=255; 0 or absent: not a priority queue).
    pub max_priority: Option<u8>,
    /// x-single-active-consumer.
    pub single_active_consumer: bool,
    /// x-consumer-timeout, ms (0 disables; absent: the broker's `consumer_timeout_ms`).
    pub consumer_timeout: Option<u64>,
    /// x-message-deduplication: remember this many recent deduplication keys
    /// (x-cache-size, default [`DEFAULT_DEDUP_CACHE`]).
    pub dedup_cache: Option<usize>,
}

/// Keys a deduplicating queue remembers when x-cache-size is not given.
pub const DEFAULT_DEDUP_CACHE: usize = 10_000;

/// Erlang's name for a field type, as RabbitMQ prints it in `{unacceptable_type, T}`.
fn type_name(v: &AMQPValue) -> &'static str {
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
        AMQPValue::ShortString(_) => "shortstr",
        AMQPValue::LongString(_) => "longstr",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::ByteArray(_) => "binary",
        AMQPValue::Void => "void",
    }
}

/// The value of an integer-typed field (any AMQP integer type, as RabbitMQ's
/// `?INTEGER_ARG_TYPES`); `None` for other types.
pub fn int_value(v: &AMQPValue) -> Option<i64> {
    Some(match v {
        AMQPValue::ShortShortInt(x) => i64::from(*x),
        AMQPValue::ShortShortUInt(x) => i64::from(*x),
        AMQPValue::ShortInt(x) => i64::from(*x),
        AMQPValue::ShortUInt(x) => i64::from(*x),
        AMQPValue::LongInt(x) => i64::from(*x),
        AMQPValue::LongUInt(x) => i64::from(*x),
        AMQPValue::LongLongInt(x) => *x,
        _ => return None,
    })
}

fn string_value(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

/// A failed check, formatted like Erlang's `~p` of RabbitMQ's error term.
type Check = Result<(), String>;

fn unacceptable(v: &AMQPValue) -> String {
    format!("{{unacceptable_type,{}}}", type_name(v))
}

/// RabbitMQ 3.10's `check_int_arg/2` (its text, a formatted string, prints quoted).
fn check_int(v: &AMQPValue) -> Result<i64, String> {
    int_value(v).ok_or_else(|| format!("\"expected integer, got {}\"", type_name(v)))
}

fn check_non_neg_int(v: &AMQPValue) -> Check {
    let n = check_int(v)?;
    if n < 0 {
        return Err(format!("{{value_negative,{n}}}"));
    }
    Ok(())
}

/// `rabbit_misc:check_expiry/1` (RabbitMQ 3.10 has no upper bound; HareMQ caps TTLs
/// at 2^32-1 ms, about 49 days).
pub fn check_expiry(n: i64) -> Check {
    if n < 0 {
        Err(format!("{{value_negative,{n}}}"))
    } else {
        Ok(())
    }
}

fn check_expires(v: &AMQPValue) -> Check {
    let n = check_int(v)?;
    if n == 0 {
        return Err(format!("{{value_zero,{n}}}"));
    }
    check_expiry(n)
}

fn check_message_ttl(v: &AMQPValue) -> Check {
    check_expiry(check_int(v)?)
}

fn check_string_among(v: &AMQPValue, allowed: &[&str], err: &str) -> Check {
    match string_value(v) {
        Some(s) if allowed.contains(&s.as_str()) => Ok(()),
        Some(_) => Err(err.to_string()),
        None => Err(unacceptable(v)),
    }
}

fn check_bool(v: &AMQPValue) -> Check {
    match v {
        AMQPValue::Boolean(_) => Ok(()),
        _ => Err(unacceptable(v)),
    }
}

/// Validates queue.declare arguments as RabbitMQ 3.10 does (rabbit_channel's DLX type
/// check, then `rabbit_amqqueue:check_declare_arguments/2` in its order). The error is
/// 406 with RabbitMQ's text.
pub fn validate(queue: &str, vhost: &str, args: &FieldTable) -> AmqpResult<()> {
    let table = args.inner();
    let get = |k: &str| table.get(k);
    let rs = format!("queue '{queue}' in vhost '{vhost}'");
    if let Some(v) = get("x-dead-letter-exchange") {
        if string_value(v).is_none() {
            return Err(AmqpError::PreconditionFailed(format!(
                "invalid type '{}' for arg 'x-dead-letter-exchange' in {rs}",
                type_name(v)
            )));
        }
    }
    type Checker<'a> = &'a dyn Fn(&AMQPValue) -> Check;
    let checks: &[(&str, Checker<'_>)] = &[
        ("x-expires", &check_expires),
        ("x-message-ttl", &check_message_ttl),
        ("x-dead-letter-exchange", &|v| string_value(v).map(|_| ()).ok_or_else(|| unacceptable(v))),
        ("x-dead-letter-routing-key", &|v| match string_value(v) {
            None => Err(unacceptable(v)),
            Some(_) if get("x-dead-letter-exchange").is_none() => Err("routing_key_but_no_dlx_defined".into()),
            // It becomes a message's routing key, a short string (RabbitMQ 3.10 accepts
            // a longer one and fails when it delivers such a message).
            Some(k) if k.len() > crate::amqp::shortstr::MAX_LEN => Err(format!("{{routing_key_too_long,{}}}", k.len())),
            Some(_) => Ok(()),
        }),
        ("x-max-length", &check_non_neg_int),
        ("x-max-length-bytes", &check_non_neg_int),
        ("x-max-priority", &|v| {
            check_non_neg_int(v)?;
            match check_int(v)? {
                n if n > 255 => Err(format!("{{max_value_exceeded,{n}}}")),
                _ => Ok(()),
            }
        }),
        ("x-overflow", &|v| {
            check_string_among(v, &["drop-head", "reject-publish", "reject-publish-dlx"], "invalid_overflow")
        }),
        ("x-queue-mode", &|v| check_string_among(v, &["default", "lazy"], "invalid_queue_mode")),
        ("x-single-active-consumer", &check_bool),
        // Quorum-queue-only in RabbitMQ 3.10; HareMQ's classic queues honour it.
        ("x-delivery-limit", &check_non_neg_int),
        // RabbitMQ 3.12+ (a non-negative integer, ms).
        ("x-consumer-timeout", &check_non_neg_int),
        // The rabbitmq-message-deduplication plugin's queue arguments.
        ("x-message-deduplication", &check_bool),
        ("x-cache-size", &|v| match check_int(v)? {
            n if n <= 0 => Err(format!("{{value_not_positive,{n}}}")),
            _ => Ok(()),
        }),
    ];
    for (key, check) in checks {
        if let Some(v) = get(key) {
            if let Err(e) = check(v) {
                return Err(AmqpError::PreconditionFailed(format!("invalid arg '{key}' for {rs}: {e}")));
            }
        }
    }
    Ok(())
}

/// basic.consume's `x-priority` (RabbitMQ's `check_consume_arguments`: any integer
/// type; absent is 0). The error is 406 with RabbitMQ's text.
pub fn consumer_priority(queue: &str, vhost: &str, args: &FieldTable) -> AmqpResult<i32> {
    match args.inner().get("x-priority") {
        None => Ok(0),
        Some(v) => match check_int(v) {
            Ok(n) => Ok(n.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32),
            Err(e) => Err(AmqpError::PreconditionFailed(format!(
                "invalid arg 'x-priority' for queue '{queue}' in vhost '{vhost}': {e}"
            ))),
        },
    }
}

impl QueueArgs {
    /// Parses already-validated arguments (stored ones are trusted the same way: what
    /// does not parse is ignored).
    pub fn parse(args: &FieldTable) -> Self {
        let table = args.inner();
        let int = |k: &str| table.get(k).and_then(int_value).filter(|n| *n >= 0);
        let string = |k: &str| table.get(k).and_then(string_value).map(String::into_boxed_str);
        let ms = |k: &str| int(k).map(|n| n.min(i64::from(u32::MAX)) as u32);
        Self {
            message_ttl: ms("x-message-ttl"),
            expires: ms("x-expires").filter(|n| *n > 0),
            max_length: int("x-max-length").map(|n| n as u64),
            max_length_bytes: int("x-max-length-bytes").map(|n| n as u64),
            overflow: match string("x-overflow").as_deref() {
                Some("reject-publish") => Overflow::RejectPublish,
                Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                _ => Overflow::DropHead,
            },
            dead_letter_exchange: string("x-dead-letter-exchange"),
            dead_letter_routing_key: string("x-dead-letter-routing-key"),
            delivery_limit: int("x-delivery-limit").map(|n| n as u64),
            max_priority: int("x-max-priority").filter(|n| (1..=255).contains(n)).map(|n| n as u8),
            single_active_consumer: matches!(table.get("x-single-active-consumer"), Some(AMQPValue::Boolean(true))),
            consumer_timeout: int("x-consumer-timeout").map(|n| n as u64),
            dedup_cache: matches!(table.get("x-message-deduplication"), Some(AMQPValue::Boolean(true))).then(|| {
                int("x-cache-size").filter(|n| *n > 0).map_or(DEFAULT_DEDUP_CACHE, |n| n.min(1 << 24) as usize)
            }),
        }
    }
}

/// Parses a message's `expiration` property as RabbitMQ does (`string:to_integer/1`
/// then `check_expiry`). The error is the text after "invalid expiration '…': ".
pub fn parse_expiration(s: &str) -> Result<u32, String> {
    let bytes = s.as_bytes();
    let mut i = 0;
    if matches!(bytes.first(), Some(b'+' | b'-')) {
        i = 1;
    }
    let digits_end = i + bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits_end == i {
        return Err("no_integer".into());
    }
    if digits_end < bytes.len() {
        return Err(format!("{{leftover_string,{:?}}}", &s[digits_end..]));
    }
    // Saturate: anything this large is too large anyway.
    let n: i64 = s.parse().unwrap_or(if bytes[0] == b'-' { i64::MIN } else { i64::MAX });
    check_expiry(n)?;
    Ok(n.min(i64::from(u32::MAX)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn err(pairs: &[(&str, AMQPValue)]) -> String {
        validate("q", "/", &table(pairs)).unwrap_err().to_string()
    }

    #[test]
    fn rabbitmq_texts() {
        assert_eq!(
            err(&[("x-message-ttl", AMQPValue::LongInt(-1))]),
            "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}"
        );
        assert_eq!(
            err(&[("x-expires", AMQPValue::LongInt(0))]),
            "PRECONDITION_FAILED - invalid arg 'x-expires' for queue 'q' in vhost '/': {value_zero,0}"
        );
        assert_eq!(
            err(&[("x-max-length", AMQPValue::LongString("1".into()))]),
            "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue 'q' in vhost '/': \"expected integer, got longstr\""
        );
        assert_eq!(
            err(&[("x-overflow", AMQPValue::LongString("nope".into()))]),
            "PRECONDITION_FAILED - invalid arg 'x-overflow' for queue 'q' in vhost '/': invalid_overflow"
        );
        assert_eq!(QueueArgs::parse(&table(&[("x-message-ttl", AMQPValue::LongLongInt(1 << 40))])).message_ttl, Some(u32::MAX));
        assert!(validate("q", "/", &table(&[("x-message-ttl", AMQPValue::ShortShortUInt(5))])).is_ok());
        assert_eq!(
            err(&[("x-max-priority", AMQPValue::LongInt(256))]),
            "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'q' in vhost '/': {max_value_exceeded,256}"
        );
        assert_eq!(QueueArgs::parse(&table(&[("x-max-priority", AMQPValue::ShortShortUInt(10))])).max_priority, Some(10));
        assert_eq!(QueueArgs::parse(&table(&[("x-max-priority", AMQPValue::LongInt(0))])).max_priority, None);
    }

    #[test]
    fn dead_letter_routing_key_must_fit_a_short_string() {
        let dlx = ("x-dead-letter-exchange", AMQPValue::LongString("dlx".into()));
        let key = |k: Vec<u8>| ("x-dead-letter-routing-key", AMQPValue::LongString(k.into()));
        assert!(validate("q", "/", &table(&[dlx.clone(), key(vec![b'k'; 255])])).is_ok());
        assert_eq!(
            err(&[dlx.clone(), key(vec![b'k'; 300])]),
            "PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key' for queue 'q' in vhost '/': {routing_key_too_long,300}"
        );
        // Measured as the broker keeps it (invalid UTF-8 is replaced, 3 bytes a byte).
        assert!(validate("q", "/", &table(&[dlx, key(vec![0xff; 100])])).is_err());
    }

    #[test]
    fn expiration_property() {
        assert_eq!(parse_expiration("1000"), Ok(1000));
        assert_eq!(parse_expiration("+7"), Ok(7));
        assert_eq!(parse_expiration("-1"), Err("{value_negative,-1}".into()));
        assert_eq!(parse_expiration("abc"), Err("no_integer".into()));
        assert_eq!(parse_expiration("10s"), Err("{leftover_string,\"s\"}".into()));
    }
}
