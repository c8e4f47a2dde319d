//! Where a stream consumer starts: basic.consume's `x-stream-offset`.

use amq_protocol::types::AMQPValue;

use crate::error::{AmqpError, AmqpResult};
use crate::queue::args::{int_value, max_age_ms};

/// A consumer's first offset, as asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The oldest message the stream still holds.
    First,
    /// The newest durable message.
    Last,
    /// Only messages published from now on (the default).
    Next,
    /// An offset (one before the first held is the first; one past the end is waited for).
    Offset(i64),
    /// The first message published at or after this time (ms since the UNIX epoch).
    Timestamp(i64),
}

/// Parses `x-stream-offset`: `first`, `last`, `next`, an integer offset, an AMQP
/// timestamp (seconds), or an interval back from now (`30m`, `1h`, `7D`: the units of
/// `x-max-age`). RabbitMQ 3.10 answers an unparsable value with 541 INTERNAL_ERROR and
/// closes the connection; HareMQ refuses the consume with 406 and says why.
pub fn parse(value: Option<&AMQPValue>, queue: &str, vhost: &str, now_ms: u64) -> AmqpResult<Start> {
    let Some(v) = value else {
        return Ok(Start::Next);
    };
    let refuse = |what: String| {
        AmqpError::PreconditionFailed(format!(
            "invalid arg 'x-stream-offset' for queue '{queue}' in vhost '{vhost}': {what}"
        ))
    };
    if let Some(n) = int_value(v) {
        return Ok(Start::Offset(n));
    }
    match v {
        AMQPValue::Timestamp(secs) => {
            Ok(Start::Timestamp(i64::try_from(*secs).unwrap_or(i64::MAX).saturating_mul(1000)))
        }
        AMQPValue::LongString(s) => {
            let s = String::from_utf8_lossy(s.as_bytes());
            match &*s {
                "first" => Ok(Start::First),
                "last" => Ok(Start::Last),
                "next" => Ok(Start::Next),
                interval => match max_age_ms(interval) {
                    Some(ms) => Ok(Start::Timestamp(now_ms.saturating_sub(ms) as i64)),
                    None => Err(refuse(format!(
                        "'{interval}' is not first, last, next, an offset, a timestamp or an interval such as 30m"
                    ))),
                },
            }
        }
        other => Err(refuse(format!("{{unacceptable_type,{other:?}}}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: AMQPValue) -> AmqpResult<Start> {
        parse(Some(&v), "s", "/", 10_000_000)
    }

    #[test]
    fn every_form_rabbitmq_takes() {
        assert_eq!(parse(None, "s", "/", 0).ok(), Some(Start::Next));
        assert_eq!(p(AMQPValue::LongString("first".into())).ok(), Some(Start::First));
        assert_eq!(p(AMQPValue::LongString("last".into())).ok(), Some(Start::Last));
        assert_eq!(p(AMQPValue::LongString("next".into())).ok(), Some(Start::Next));
        assert_eq!(p(AMQPValue::LongLongInt(5)).ok(), Some(Start::Offset(5)));
        assert_eq!(p(AMQPValue::ShortInt(-1)).ok(), Some(Start::Offset(-1)));
        assert_eq!(p(AMQPValue::Timestamp(7)).ok(), Some(Start::Timestamp(7000)));
        assert_eq!(p(AMQPValue::LongString("1h".into())).ok(), Some(Start::Timestamp(10_000_000 - 3_600_000)));
        let e = p(AMQPValue::LongString("bogus".into())).expect_err("refused");
        assert!(
            e.to_string()
                .starts_with("PRECONDITION_FAILED - invalid arg 'x-stream-offset' for queue 's' in vhost '/': 'bogus'"),
            "{e}"
        );
        assert!(p(AMQPValue::Boolean(true)).is_err());
    }
}
