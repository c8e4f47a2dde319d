//! Queue x-arguments: RabbitMQ's validation at queue.declare (same checks, same reply
//! texts) and the parsed form a queue acts on.

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::error::{AmqpError, AmqpResult};
use crate::policy::Definition;

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

pub(super) fn string_value(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

/// A failed check, formatted like Erlang's `~p` of RabbitMQ's error term.
type Check = Result<(), String>;

pub(super) fn unacceptable(v: &AMQPValue) -> String {
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

/// One queue argument: its key, RabbitMQ's check at declare (the error is the term
/// after "invalid arg '…' for queue …: "; `table` is every argument, for checks that
/// depend on another), and how the parsed [`QueueArgs`] take it. Stored arguments are
/// trusted the same way: a value that does not parse is ignored.
struct Spec {
    key: &'static str,
    check: fn(&AMQPValue, &FieldTable) -> Check,
    apply: fn(&mut QueueArgs, &AMQPValue),
}

/// A non-negative integer argument.
fn non_neg(v: &AMQPValue) -> Option<u64> {
    int_value(v).filter(|n| *n >= 0).map(|n| n as u64)
}

/// A duration in ms, capped at 2^32-1.
fn ms(v: &AMQPValue) -> Option<u32> {
    non_neg(v).map(|n| n.min(u64::from(u32::MAX)) as u32)
}

fn boxed_str(v: &AMQPValue) -> Option<Box<str>> {
    string_value(v).map(String::into_boxed_str)
}

/// Every queue argument HareMQ knows, in RabbitMQ 3.10's validation order
/// (`rabbit_amqqueue:check_declare_arguments/2`, then the extensions). Adding an
/// argument is adding an entry here (and its field in [`QueueArgs`]).
const SPECS: &[Spec] = &[
    Spec { key: "x-expires", check: |v, _| check_expires(v), apply: |a, v| a.expires = ms(v).filter(|n| *n > 0) },
    Spec { key: "x-message-ttl", check: |v, _| check_message_ttl(v), apply: |a, v| a.message_ttl = ms(v) },
    Spec {
        key: "x-dead-letter-exchange",
        check: |v, _| string_value(v).map(|_| ()).ok_or_else(|| unacceptable(v)),
        apply: |a, v| a.dead_letter_exchange = boxed_str(v),
    },
    Spec {
        key: "x-dead-letter-routing-key",
        check: |v, table| match string_value(v) {
            None => Err(unacceptable(v)),
            Some(_) if !table.inner().contains_key("x-dead-letter-exchange") => {
                Err("routing_key_but_no_dlx_defined".into())
            }
            // It becomes a message's routing key, a short string (RabbitMQ 3.10 accepts
            // a longer one and fails when it delivers such a message).
            Some(k) if k.len() > crate::wire::shortstr::MAX_LEN => Err(format!("{{routing_key_too_long,{}}}", k.len())),
            Some(_) => Ok(()),
        },
        apply: |a, v| a.dead_letter_routing_key = boxed_str(v),
    },
    Spec { key: "x-max-length", check: |v, _| check_non_neg_int(v), apply: |a, v| a.max_length = non_neg(v) },
    Spec {
        key: "x-max-length-bytes",
        check: |v, _| check_non_neg_int(v),
        apply: |a, v| a.max_length_bytes = non_neg(v),
    },
    Spec {
        key: "x-max-priority",
        check: |v, _| {
            check_non_neg_int(v)?;
            match check_int(v)? {
                n if n > 255 => Err(format!("{{max_value_exceeded,{n}}}")),
                _ => Ok(()),
            }
        },
        apply: |a, v| a.max_priority = non_neg(v).filter(|n| (1..=255).contains(n)).map(|n| n as u8),
    },
    Spec {
        key: "x-overflow",
        check: |v, _| check_string_among(v, &["drop-head", "reject-publish", "reject-publish-dlx"], "invalid_overflow"),
        apply: |a, v| {
            a.overflow = match string_value(v).as_deref() {
                Some("reject-publish") => Overflow::RejectPublish,
                Some("reject-publish-dlx") => Overflow::RejectPublishDlx,
                _ => Overflow::DropHead,
            }
        },
    },
    // Accepted and kept, not acted on (every long queue of persistent messages is
    // paged to disk already).
    Spec {
        key: "x-queue-mode",
        check: |v, _| check_string_among(v, &["default", "lazy"], "invalid_queue_mode"),
        apply: |_, _| {},
    },
    Spec {
        key: "x-single-active-consumer",
        check: |v, _| check_bool(v),
        apply: |a, v| a.single_active_consumer = matches!(v, AMQPValue::Boolean(true)),
    },
    // Quorum-queue-only in RabbitMQ 3.10; HareMQ's classic queues honour it.
    Spec { key: "x-delivery-limit", check: |v, _| check_non_neg_int(v), apply: |a, v| a.delivery_limit = non_neg(v) },
    // RabbitMQ 3.12+ (a non-negative integer, ms).
    Spec {
        key: "x-consumer-timeout",
        check: |v, _| check_non_neg_int(v),
        apply: |a, v| a.consumer_timeout = non_neg(v),
    },
    // The rabbitmq-message-deduplication plugin's queue arguments (x-cache-size
    // applies only to a deduplicating queue, so it comes after).
    Spec {
        key: "x-message-deduplication",
        check: |v, _| check_bool(v),
        apply: |a, v| a.dedup_cache = matches!(v, AMQPValue::Boolean(true)).then_some(DEFAULT_DEDUP_CACHE),
    },
    Spec {
        key: "x-cache-size",
        check: |v, _| match check_int(v)? {
            n if n <= 0 => Err(format!("{{value_not_positive,{n}}}")),
            _ => Ok(()),
        },
        apply: |a, v| {
            if let (Some(cache), Some(n)) = (a.dedup_cache.as_mut(), non_neg(v).filter(|n| *n > 0)) {
                *cache = n.min(1 << 24) as usize;
            }
        },
    },
    // Streams (RabbitMQ 3.9+); a classic queue refuses them before their values are
    // looked at (`kind::check_type`).
    Spec {
        key: "x-max-age",
        check: |v, _| match string_value(v) {
            None => Err(unacceptable(v)),
            Some(s) if max_age_ms(&s).is_some() => Ok(()),
            Some(_) => Err("invalid_max_age".into()),
        },
        apply: |_, _| {},
    },
    Spec { key: "x-stream-max-segment-size-bytes", check: |v, _| check_non_neg_int(v), apply: |_, _| {} },
    // Replication settings: accepted, meaningless on one node.
    Spec { key: "x-initial-cluster-size", check: |v, _| check_non_neg_int(v), apply: |_, _| {} },
    Spec { key: "x-quorum-initial-group-size", check: |v, _| check_non_neg_int(v), apply: |_, _| {} },
    Spec {
        key: "x-queue-leader-locator",
        check: |v, _| {
            check_string_among(v, &["client-local", "balanced", "random", "least-leaders"], "invalid_leader_locator")
        },
        apply: |_, _| {},
    },
];

/// A stream's `x-max-age` (`7D`, `12h`, `30m`…: a positive integer and one of RabbitMQ's
/// units Y, M, D, h, m, s) in ms; `None` if it is not one.
pub fn max_age_ms(s: &str) -> Option<u64> {
    let unit = s.chars().last()?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().ok().filter(|n| *n > 0)?;
    let secs: u64 = match unit {
        'Y' => 365 * 24 * 3600,
        'M' => 30 * 24 * 3600,
        'D' => 24 * 3600,
        'h' => 3600,
        'm' => 60,
        's' => 1,
        _ => return None,
    };
    n.checked_mul(secs)?.checked_mul(1000)
}

/// Validates queue.declare arguments as RabbitMQ 3.10 does (rabbit_channel's DLX type
/// check, then each [`SPECS`] entry in order). The error is 406 with RabbitMQ's text.
pub fn validate(queue: &str, vhost: &str, args: &FieldTable) -> AmqpResult<()> {
    super::kind::check_type(queue, vhost, args)?;
    let table = args.inner();
    let rs = format!("queue '{queue}' in vhost '{vhost}'");
    if let Some(v) = table.get("x-dead-letter-exchange") {
        if string_value(v).is_none() {
            return Err(AmqpError::PreconditionFailed(format!(
                "invalid type '{}' for arg 'x-dead-letter-exchange' in {rs}",
                type_name(v)
            )));
        }
    }
    for spec in SPECS {
        if let Some(v) = table.get(spec.key) {
            if let Err(e) = (spec.check)(v, args) {
                return Err(AmqpError::PreconditionFailed(format!("invalid arg '{}' for {rs}: {e}", spec.key)));
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
        let mut parsed = Self::default();
        for spec in SPECS {
            if let Some(v) = args.inner().get(spec.key) {
                (spec.apply)(&mut parsed, v);
            }
        }
        parsed
    }

    /// The arguments a queue acts on under a policy's (merged) definition, as
    /// RabbitMQ resolves them: for the numeric limits (`message-ttl`, `expires`,
    /// `max-length`, `max-length-bytes`, `delivery-limit`) the lower of the x-argument
    /// and the policy's value; for the others (`dead-letter-exchange`,
    /// `dead-letter-routing-key`, `overflow`) the x-argument if the client gave one.
    pub fn effective(declared: &FieldTable, policy: &Definition) -> Self {
        let mut a = Self::parse(declared);
        let has = |k: &str| declared.inner().contains_key(k);
        let ms32 = |n: u64| n.min(u64::from(u32::MAX)) as u32;
        a.message_ttl = lower(a.message_ttl, policy.message_ttl.map(ms32));
        a.expires = lower(a.expires, policy.expires.map(ms32));
        a.max_length = lower(a.max_length, policy.max_length);
        a.max_length_bytes = lower(a.max_length_bytes, policy.max_length_bytes);
        a.delivery_limit = lower(a.delivery_limit, policy.delivery_limit);
        if !has("x-dead-letter-exchange") && policy.dead_letter_exchange.is_some() {
            a.dead_letter_exchange = policy.dead_letter_exchange.clone();
        }
        if !has("x-dead-letter-routing-key") && policy.dead_letter_routing_key.is_some() {
            a.dead_letter_routing_key = policy.dead_letter_routing_key.clone();
        }
        if !has("x-overflow") {
            match policy.overflow.as_deref() {
                Some("reject-publish") => a.overflow = Overflow::RejectPublish,
                Some("reject-publish-dlx") => a.overflow = Overflow::RejectPublishDlx,
                Some("drop-head") => a.overflow = Overflow::DropHead,
                _ => {}
            }
        }
        a
    }
}

/// The lower of two optional limits (either alone if the other is absent).
fn lower<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
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
        assert_eq!(
            QueueArgs::parse(&table(&[("x-message-ttl", AMQPValue::LongLongInt(1 << 40))])).message_ttl,
            Some(u32::MAX)
        );
        assert!(validate("q", "/", &table(&[("x-message-ttl", AMQPValue::ShortShortUInt(5))])).is_ok());
        assert_eq!(
            err(&[("x-max-priority", AMQPValue::LongInt(256))]),
            "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'q' in vhost '/': {max_value_exceeded,256}"
        );
        assert_eq!(
            QueueArgs::parse(&table(&[("x-max-priority", AMQPValue::ShortShortUInt(10))])).max_priority,
            Some(10)
        );
        assert_eq!(QueueArgs::parse(&table(&[("x-max-priority", AMQPValue::LongInt(0))])).max_priority, None);
    }

    #[test]
    fn each_argument_is_declared_once_and_parses() {
        let mut keys: Vec<_> = SPECS.iter().map(|s| s.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), SPECS.len());
        let a = QueueArgs::parse(&table(&[
            ("x-cache-size", AMQPValue::LongInt(5)),
            ("x-message-deduplication", AMQPValue::Boolean(true)),
            ("x-overflow", AMQPValue::LongString("reject-publish-dlx".into())),
            ("x-dead-letter-exchange", AMQPValue::LongString("dlx".into())),
            ("x-expires", AMQPValue::LongInt(0)),
        ]));
        assert_eq!(a.dedup_cache, Some(5), "x-cache-size applies whatever the table order");
        assert_eq!(a.overflow, Overflow::RejectPublishDlx);
        assert_eq!(a.dead_letter_exchange.as_deref(), Some("dlx"));
        assert_eq!(a.expires, None);
        assert_eq!(QueueArgs::parse(&table(&[("x-cache-size", AMQPValue::LongInt(5))])).dedup_cache, None);
        assert_eq!(
            err(&[("x-dead-letter-routing-key", AMQPValue::LongString("k".into()))]),
            "PRECONDITION_FAILED - invalid arg 'x-dead-letter-routing-key' for queue 'q' in vhost '/': routing_key_but_no_dlx_defined"
        );
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
    fn policies_resolve_against_arguments() {
        let declared = table(&[
            ("x-max-length", AMQPValue::LongInt(10)),
            ("x-dead-letter-exchange", AMQPValue::LongString("mine".into())),
        ]);
        let policy = Definition {
            max_length: Some(5),
            message_ttl: Some(1 << 40),
            dead_letter_exchange: Some("theirs".into()),
            dead_letter_routing_key: Some("k".into()),
            overflow: Some("reject-publish".into()),
            ..Definition::default()
        };
        let a = QueueArgs::effective(&declared, &policy);
        assert_eq!(a.max_length, Some(5), "the lower limit");
        assert_eq!(a.message_ttl, Some(u32::MAX));
        assert_eq!(a.dead_letter_exchange.as_deref(), Some("mine"), "the x-argument wins");
        assert_eq!(a.dead_letter_routing_key.as_deref(), Some("k"));
        assert_eq!(a.overflow, Overflow::RejectPublish);
        let looser = Definition { max_length: Some(50), ..Definition::default() };
        assert_eq!(QueueArgs::effective(&declared, &looser).max_length, Some(10));
        assert_eq!(QueueArgs::effective(&declared, &Definition::default()).max_length, Some(10));
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
