//! Stream filtering (RabbitMQ 3.13): a publisher tags a message with the header
//! `x-stream-filter-value`; a consumer asks for some values with `x-stream-filter` (a
//! string or an array of strings) and, with `x-stream-match-unfiltered`, also for
//! messages without a value.
//!
//! RabbitMQ filters per chunk with a Bloom filter, so its consumers still get some
//! messages of other values and must filter again; HareMQ looks at each message, so a
//! consumer gets exactly what it asked for (and client-side filtering still works). A
//! skipped message costs no credit.

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::error::{AmqpError, AmqpResult};
use crate::message::properties::Properties;
use crate::message::Message;

/// The header a publisher sets.
const VALUE_HEADER: &str = "x-stream-filter-value";

/// What a consumer asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    values: Vec<Vec<u8>>,
    match_unfiltered: bool,
}

fn text(v: &AMQPValue) -> Option<Vec<u8>> {
    match v {
        AMQPValue::LongString(s) => Some(s.as_bytes().to_vec()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes().to_vec()),
        _ => None,
    }
}

impl Filter {
    /// The consumer's filter, if it set one; 406 if `x-stream-filter` is not a string
    /// or an array of strings, or `x-stream-match-unfiltered` not a boolean.
    pub fn parse(args: &FieldTable, queue: &str, vhost: &str) -> AmqpResult<Option<Filter>> {
        let t = args.inner();
        let refuse = |key: &str, v: &AMQPValue| {
            AmqpError::PreconditionFailed(format!(
                "invalid arg '{key}' for queue '{queue}' in vhost '{vhost}': {{unacceptable_type,{v:?}}}"
            ))
        };
        let match_unfiltered = match t.get("x-stream-match-unfiltered") {
            None => false,
            Some(AMQPValue::Boolean(b)) => *b,
            Some(v) => return Err(refuse("x-stream-match-unfiltered", v)),
        };
        let values = match t.get("x-stream-filter") {
            None => return Ok(None),
            Some(AMQPValue::FieldArray(a)) => a
                .as_slice()
                .iter()
                .map(|v| text(v).ok_or_else(|| refuse("x-stream-filter", v)))
                .collect::<Result<_, _>>()?,
            Some(v) => vec![text(v).ok_or_else(|| refuse("x-stream-filter", v))?],
        };
        Ok(Some(Filter { values, match_unfiltered }))
    }

    /// Whether `m` is one the consumer asked for.
    pub fn matches(&self, m: &Message) -> bool {
        let value = Properties::parse(&m.raw_properties)
            .and_then(|p| p.headers())
            .and_then(Result::ok)
            .and_then(|h| h.inner().get(VALUE_HEADER).and_then(text));
        match value {
            Some(v) => self.values.contains(&v),
            None => self.match_unfiltered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::BasicProperties;
    use amq_protocol::types::FieldArray;

    fn message(value: Option<&str>) -> Message {
        let mut p = BasicProperties::default();
        if let Some(v) = value {
            let mut h = FieldTable::default();
            h.insert(VALUE_HEADER.into(), AMQPValue::LongString(v.into()));
            p = p.with_headers(h);
        }
        Message {
            exchange: "".into(),
            routing_key: "s".into(),
            raw_properties: crate::message::properties::encode_properties(&p).into_boxed_slice(),
            body: Box::default(),
            persistent: false,
            published_ms: 0,
            ttl: None,
            store: Default::default(),
            charge: Default::default(),
        }
    }

    fn filter(pairs: &[(&str, AMQPValue)]) -> AmqpResult<Option<Filter>> {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        Filter::parse(&t, "s", "/")
    }

    #[test]
    fn a_consumer_gets_exactly_the_values_it_asked_for() {
        assert_eq!(filter(&[]).unwrap(), None);
        let one = filter(&[("x-stream-filter", AMQPValue::LongString("eu".into()))]).unwrap().unwrap();
        assert!(one.matches(&message(Some("eu"))));
        assert!(!one.matches(&message(Some("us"))));
        assert!(!one.matches(&message(None)));
        let many = filter(&[
            (
                "x-stream-filter",
                AMQPValue::FieldArray(FieldArray::from(vec![
                    AMQPValue::LongString("eu".into()),
                    AMQPValue::LongString("us".into()),
                ])),
            ),
            ("x-stream-match-unfiltered", AMQPValue::Boolean(true)),
        ])
        .unwrap()
        .unwrap();
        assert!(many.matches(&message(Some("us"))));
        assert!(many.matches(&message(None)));
        assert!(!many.matches(&message(Some("apac"))));
        assert!(filter(&[("x-stream-filter", AMQPValue::LongLongInt(1))]).is_err());
        assert!(filter(&[("x-stream-match-unfiltered", AMQPValue::LongString("yes".into()))]).is_err());
    }
}
