//! A policy's definition: RabbitMQ's keys, their checks and error texts, and the
//! parsed values queues and exchanges act on.

use serde_json::{Map, Value};

/// The keys a policy may set, each with its check (RabbitMQ 3.10's
/// `rabbit_policies:validate_policy0/2` texts, after "Validation failed\n\n").
struct Key {
    name: &'static str,
    check: fn(&Value) -> bool,
    what: &'static str,
    /// Operator policies may set it too.
    operator: bool,
}

fn non_neg_int(v: &Value) -> bool {
    v.as_i64().is_some_and(|n| n >= 0) || v.as_u64().is_some()
}

fn positive_int(v: &Value) -> bool {
    v.as_i64().is_some_and(|n| n >= 1) || v.as_u64().is_some_and(|n| n >= 1)
}

fn string(v: &Value) -> bool {
    v.is_string()
}

const KEYS: &[Key] = &[
    Key { name: "alternate-exchange", check: string, what: "is not a valid alternate exchange name", operator: false },
    Key {
        name: "dead-letter-exchange",
        check: string,
        what: "is not a valid dead letter exchange name",
        operator: false,
    },
    Key {
        name: "dead-letter-routing-key",
        check: string,
        what: "is not a valid dead letter routing key",
        operator: false,
    },
    Key { name: "delivery-limit", check: non_neg_int, what: "is not a valid delivery limit", operator: true },
    Key { name: "expires", check: positive_int, what: "is not a valid queue expiry", operator: true },
    Key {
        name: "max-in-memory-bytes",
        check: non_neg_int,
        what: "is not a valid maximum memory in bytes",
        operator: true,
    },
    Key {
        name: "max-in-memory-length",
        check: non_neg_int,
        what: "is not a valid maximum memory in bytes",
        operator: true,
    },
    Key { name: "max-length", check: non_neg_int, what: "is not a valid maximum length", operator: true },
    Key {
        name: "max-length-bytes",
        check: non_neg_int,
        what: "is not a valid maximum length in bytes",
        operator: true,
    },
    Key { name: "message-ttl", check: non_neg_int, what: "is not a valid message TTL", operator: true },
    Key {
        name: "overflow",
        check: |v| matches!(v.as_str(), Some("drop-head" | "reject-publish" | "reject-publish-dlx")),
        what: "is not a valid overflow value",
        operator: false,
    },
    Key {
        name: "queue-mode",
        check: |v| matches!(v.as_str(), Some("default" | "lazy")),
        what: "is not a valid queue-mode value",
        operator: false,
    },
];

/// A JSON value as Erlang's `~p` prints the term RabbitMQ decoded it to (strings are
/// binaries), for error texts.
pub fn erlang_term(v: &Value) -> String {
    match v {
        Value::String(s) => format!("<<{s:?}>>"),
        Value::Array(items) => format!("[{}]", items.iter().map(erlang_term).collect::<Vec<_>>().join(",")),
        Value::Object(m) => format!(
            "#{{{}}}",
            m.iter().map(|(k, v)| format!("<<{k:?}>> => {}", erlang_term(v))).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// Checks a definition as RabbitMQ does: not empty, every key known (to an operator
/// policy: one of the limits), every value valid.
pub fn validate(definition: &Map<String, Value>, operator: bool) -> Result<(), String> {
    if definition.is_empty() {
        return Err("no policy provided".into());
    }
    let unknown: Vec<String> = definition
        .iter()
        .filter(|(k, _)| !KEYS.iter().any(|key| key.name == k.as_str() && (key.operator || !operator)))
        .map(|(k, v)| format!("{{<<{k:?}>>,{}}}", erlang_term(v)))
        .collect();
    if !unknown.is_empty() {
        return Err(format!("[{}] are not recognised policy settings", unknown.join(",")));
    }
    for key in KEYS {
        if let Some(v) = definition.get(key.name) {
            if !(key.check)(v) {
                return Err(format!("{} {}", erlang_term(v), key.what));
            }
        }
    }
    Ok(())
}

/// What a definition sets, parsed (numbers saturate; absent keys are `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Definition {
    pub message_ttl: Option<u64>,
    pub expires: Option<u64>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub delivery_limit: Option<u64>,
    pub overflow: Option<Box<str>>,
    pub dead_letter_exchange: Option<Box<str>>,
    pub dead_letter_routing_key: Option<Box<str>>,
    pub alternate_exchange: Option<Box<str>>,
}

/// The numeric limits an operator policy lowers: where a policy and an operator
/// policy both set one, the lower value applies.
pub const LOWER_WINS: &[&str] = &["delivery-limit", "expires", "max-length", "max-length-bytes", "message-ttl"];

impl Definition {
    /// Parses a validated definition.
    pub fn parse(definition: &Map<String, Value>) -> Self {
        let num = |k: &str| definition.get(k).and_then(Value::as_u64);
        let text = |k: &str| definition.get(k).and_then(Value::as_str).map(Box::from);
        Definition {
            message_ttl: num("message-ttl"),
            expires: num("expires").filter(|n| *n > 0),
            max_length: num("max-length"),
            max_length_bytes: num("max-length-bytes"),
            delivery_limit: num("delivery-limit"),
            overflow: text("overflow"),
            dead_letter_exchange: text("dead-letter-exchange"),
            dead_letter_routing_key: text("dead-letter-routing-key"),
            alternate_exchange: text("alternate-exchange"),
        }
    }
}

/// RabbitMQ's effective definition of a policy and an operator policy: the policy's
/// keys, the operator policy's, and for a key both set, the lower of the two limits
/// (operator policies only set limits).
pub fn merge(policy: Option<&Map<String, Value>>, operator: Option<&Map<String, Value>>) -> Map<String, Value> {
    let mut out = policy.cloned().unwrap_or_default();
    for (k, v) in operator.into_iter().flatten() {
        match (out.get(k), LOWER_WINS.contains(&k.as_str())) {
            (Some(mine), true) => {
                if let (Some(a), Some(b)) = (mine.as_u64(), v.as_u64()) {
                    if b < a {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            (Some(_), false) => {}
            (None, _) => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn rabbitmq_texts() {
        let err = |v: Value, op: bool| validate(&map(v), op).unwrap_err();
        assert_eq!(err(json!({}), false), "no policy provided");
        assert_eq!(err(json!({"max-length": -1}), false), "-1 is not a valid maximum length");
        assert_eq!(err(json!({"max-length": "a"}), false), "<<\"a\">> is not a valid maximum length");
        assert_eq!(err(json!({"expires": 0}), false), "0 is not a valid queue expiry");
        assert_eq!(err(json!({"message-ttl": true}), false), "true is not a valid message TTL");
        assert_eq!(err(json!({"max-length-bytes": 1.5}), false), "1.5 is not a valid maximum length in bytes");
        assert_eq!(err(json!({"overflow": "nope"}), false), "<<\"nope\">> is not a valid overflow value");
        assert_eq!(err(json!({"dead-letter-exchange": 5}), false), "5 is not a valid dead letter exchange name");
        assert_eq!(
            err(json!({"max-length": 1, "foo": 2, "bar": 3}), false),
            "[{<<\"bar\">>,3},{<<\"foo\">>,2}] are not recognised policy settings"
        );
        assert_eq!(
            err(json!({"dead-letter-exchange": "a"}), true),
            "[{<<\"dead-letter-exchange\">>,<<\"a\">>}] are not recognised policy settings"
        );
        assert_eq!(err(json!({"dead-letter-routing-key": 5}), false), "5 is not a valid dead letter routing key");
        assert_eq!(err(json!({"max-in-memory-length": -1}), true), "-1 is not a valid maximum memory in bytes");
        assert_eq!(err(json!({"expires": -1, "max-length": -1}), false), "-1 is not a valid queue expiry");
        assert!(validate(&map(json!({"queue-mode": "lazy", "dead-letter-routing-key": "k"})), false).is_ok());
        assert!(validate(&map(json!({"max-length": 3, "delivery-limit": 2, "expires": 1})), true).is_ok());
    }

    #[test]
    fn operator_limits_lower_the_policy() {
        let p = map(json!({"max-length": 10, "message-ttl": 100, "dead-letter-exchange": "d"}));
        let o = map(json!({"max-length": 3, "message-ttl": 500, "expires": 7}));
        let m = merge(Some(&p), Some(&o));
        assert_eq!(
            Value::Object(m),
            json!({"max-length": 3, "message-ttl": 100, "dead-letter-exchange": "d", "expires": 7})
        );
        assert_eq!(merge(None, Some(&o)), o);
        assert_eq!(merge(Some(&p), None), p);
        let d = Definition::parse(&merge(Some(&p), Some(&o)));
        assert_eq!((d.max_length, d.message_ttl, d.expires), (Some(3), Some(100), Some(7)));
        assert_eq!(d.dead_letter_exchange.as_deref(), Some("d"));
    }
}
