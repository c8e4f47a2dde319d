//! Queue types as clients name them (`x-queue-type`), and what each type refuses.
//!
//! RabbitMQ 3.10 checks a declaration in this order, and so does HareMQ: the type
//! itself (`unsupported queue type '…'`), then the arguments RabbitMQ knows for some
//! type but not for this one (`… of queue type rabbit_stream_queue`), then each
//! argument's value ([`super::args`]), and for a new queue the properties the type
//! cannot have (auto-delete, exclusive, non-durable), in that order. Arguments no
//! type knows (`x-foo`) are accepted and kept, as RabbitMQ does.
//!
//! `quorum` is accepted and runs as a classic durable queue until the replicated type
//! exists: it takes quorum queues' arguments and refuses what they refuse, so code
//! written for RabbitMQ's quorum queues declares unchanged, and listings report the
//! type it really has (classic).

use amq_protocol::types::FieldTable;

use super::args::string_value;
use super::QueueSettings;
use crate::error::{AmqpError, AmqpResult};

/// What a queue is, by its `x-queue-type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueKind {
    Classic,
    /// Declared as `quorum`; a classic durable queue for now (see the module docs).
    Quorum,
    Stream,
}

/// Every argument RabbitMQ 3.10 (and HareMQ's extensions that RabbitMQ also knows)
/// checks against a queue type's list; others are not type-checked.
const KNOWN: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-master-locator",
    "x-quorum-initial-group-size",
    "x-delivery-limit",
    "x-consumer-timeout",
    "x-queue-leader-locator",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
];

/// RabbitMQ 3.10's classic queue arguments, plus HareMQ's classic extensions
/// (`x-delivery-limit`, `x-consumer-timeout`).
const CLASSIC: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-master-locator",
    "x-delivery-limit",
    "x-consumer-timeout",
];

/// RabbitMQ 3.10's quorum queue arguments.
const QUORUM: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-in-memory-length",
    "x-max-in-memory-bytes",
    "x-overflow",
    "x-single-active-consumer",
    "x-quorum-initial-group-size",
    "x-delivery-limit",
    "x-consumer-timeout",
    "x-queue-leader-locator",
];

/// RabbitMQ 3.10's stream arguments.
const STREAM: &[&str] = &[
    "x-max-length-bytes",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-initial-cluster-size",
    "x-queue-leader-locator",
];

impl QueueKind {
    /// The type of already-validated (or stored) arguments; anything unknown is classic.
    pub fn of(args: &FieldTable) -> Self {
        match args.inner().get("x-queue-type").and_then(string_value).as_deref() {
            Some("stream") => Self::Stream,
            Some("quorum") => Self::Quorum,
            _ => Self::Classic,
        }
    }

    /// The type as declared (definitions export it, so a RabbitMQ importing them
    /// declares the same).
    pub fn declared(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
            Self::Stream => "stream",
        }
    }

    /// The type a listing reports: what the queue really is (of a queue's `kind()`: a
    /// queue declared as quorum on a single node is a classic queue and says so).
    pub fn reported(self) -> &'static str {
        self.declared()
    }

    /// RabbitMQ's module name, which its error texts use.
    fn module(self) -> &'static str {
        match self {
            Self::Classic => "rabbit_classic_queue",
            Self::Quorum => "rabbit_quorum_queue",
            Self::Stream => "rabbit_stream_queue",
        }
    }

    fn takes(self, key: &str) -> bool {
        match self {
            Self::Classic => CLASSIC.contains(&key),
            Self::Quorum => QUORUM.contains(&key),
            Self::Stream => STREAM.contains(&key),
        }
    }

    /// Only durable, shared, never auto-deleted queues can be replicated or logged.
    fn needs_durable(self) -> bool {
        !matches!(self, Self::Classic)
    }
}

/// `x-queue-type` and the arguments the type does not take, as RabbitMQ 3.10 checks
/// them (before each argument's value). Returns the type.
pub fn check_type(queue: &str, vhost: &str, args: &FieldTable) -> AmqpResult<QueueKind> {
    let rs = format!("queue '{queue}' in vhost '{vhost}'");
    let table = args.inner();
    let kind = match table.get("x-queue-type") {
        None => QueueKind::Classic,
        Some(v) => match string_value(v).as_deref() {
            Some("classic") => QueueKind::Classic,
            Some("quorum") => QueueKind::Quorum,
            Some("stream") => QueueKind::Stream,
            Some(other) => {
                return Err(AmqpError::PreconditionFailed(format!(
                    "invalid arg 'x-queue-type' for {rs}: \"unsupported queue type '{other}'\""
                )))
            }
            None => {
                return Err(AmqpError::PreconditionFailed(format!(
                    "invalid arg 'x-queue-type' for {rs}: {}",
                    super::args::unacceptable(v)
                )))
            }
        },
    };
    // RabbitMQ reports the first refused argument in the table's (sorted) order.
    if let Some((key, _)) = table.iter().find(|(k, _)| KNOWN.contains(&k.as_str()) && !kind.takes(k.as_str())) {
        return Err(AmqpError::PreconditionFailed(format!(
            "invalid arg '{}' for {rs} of queue type {}",
            key.as_str(),
            kind.module()
        )));
    }
    Ok(kind)
}

/// The properties a new queue of this type cannot have, in RabbitMQ's order.
pub fn check_properties(kind: QueueKind, queue: &str, vhost: &str, s: &QueueSettings) -> AmqpResult<()> {
    if !kind.needs_durable() {
        return Ok(());
    }
    let refused = if s.auto_delete {
        "auto-delete"
    } else if s.exclusive_owner.is_some() {
        "exclusive-owner"
    } else if !s.durable {
        "non-durable"
    } else {
        return Ok(());
    };
    Err(AmqpError::PreconditionFailed(format!("invalid property '{refused}' for queue '{queue}' in vhost '{vhost}'")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::AMQPValue;

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn err(args: &FieldTable) -> String {
        check_type("q", "/", args).expect_err("refused").to_string()
    }

    #[test]
    fn types_and_refusals_read_as_rabbitmq_writes_them() {
        let stream = AMQPValue::LongString("stream".into());
        assert_eq!(check_type("q", "/", &table(&[])).ok(), Some(QueueKind::Classic));
        assert_eq!(check_type("q", "/", &table(&[("x-queue-type", stream.clone())])).ok(), Some(QueueKind::Stream));
        assert_eq!(
            err(&table(&[("x-queue-type", AMQPValue::LongString("bogus".into()))])),
            "PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue 'q' in vhost '/': \"unsupported queue type 'bogus'\""
        );
        assert_eq!(
            err(&table(&[("x-queue-type", AMQPValue::LongInt(5))])),
            "PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue 'q' in vhost '/': {unacceptable_type,signedint}"
        );
        assert_eq!(
            err(&table(&[("x-queue-type", stream.clone()), ("x-max-priority", AMQPValue::LongLongInt(5))])),
            "PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'q' in vhost '/' of queue type rabbit_stream_queue"
        );
        assert_eq!(
            err(&table(&[("x-max-age", AMQPValue::LongString("1D".into()))])),
            "PRECONDITION_FAILED - invalid arg 'x-max-age' for queue 'q' in vhost '/' of queue type rabbit_classic_queue"
        );
        let quorum = AMQPValue::LongString("quorum".into());
        assert_eq!(
            err(&table(&[("x-queue-type", quorum.clone()), ("x-queue-mode", AMQPValue::LongString("lazy".into()))])),
            "PRECONDITION_FAILED - invalid arg 'x-queue-mode' for queue 'q' in vhost '/' of queue type rabbit_quorum_queue"
        );
        // Unknown arguments are nobody's business.
        assert!(check_type("q", "/", &table(&[("x-queue-type", stream), ("x-foo", AMQPValue::LongLongInt(1))])).is_ok());
    }

    #[test]
    fn replicated_and_logged_types_must_be_durable_and_shared() {
        let s = |durable, exclusive: bool, auto_delete| QueueSettings {
            durable,
            exclusive_owner: exclusive.then_some(1),
            auto_delete,
            arguments: FieldTable::default(),
        };
        let text = |r: AmqpResult<()>| r.expect_err("refused").to_string();
        assert_eq!(
            text(check_properties(QueueKind::Stream, "q", "/", &s(false, true, true))),
            "PRECONDITION_FAILED - invalid property 'auto-delete' for queue 'q' in vhost '/'"
        );
        assert_eq!(
            text(check_properties(QueueKind::Quorum, "q", "/", &s(false, true, false))),
            "PRECONDITION_FAILED - invalid property 'exclusive-owner' for queue 'q' in vhost '/'"
        );
        assert_eq!(
            text(check_properties(QueueKind::Stream, "q", "/", &s(false, false, false))),
            "PRECONDITION_FAILED - invalid property 'non-durable' for queue 'q' in vhost '/'"
        );
        assert!(check_properties(QueueKind::Stream, "q", "/", &s(true, false, false)).is_ok());
        assert!(check_properties(QueueKind::Classic, "q", "/", &s(false, true, true)).is_ok());
    }
}
