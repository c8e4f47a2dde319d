//! x-arguments between JSON (as RabbitMQ's definitions and HTTP API write them) and AMQP
//! field tables: strings are long strings, integers 64-bit signed, as RabbitMQ does.

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{Map, Number, Value};

/// A JSON object as a field table. Fails on keys longer than a short string.
pub fn to_table(map: &Map<String, Value>) -> Result<FieldTable, String> {
    let mut t = FieldTable::default();
    for (k, v) in map {
        if k.len() > 255 {
            return Err(format!("argument name longer than 255 bytes: '{}…'", &k[..k.floor_char_boundary(40)]));
        }
        t.insert(ShortString::from(k.clone()), to_value(v)?);
    }
    Ok(t)
}

fn to_value(v: &Value) -> Result<AMQPValue, String> {
    Ok(match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => AMQPValue::LongLongInt(i),
            (None, Some(f)) if n.is_f64() => AMQPValue::Double(f),
            _ => return Err(format!("number out of range: {n}")),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.clone())),
        Value::Array(a) => {
            AMQPValue::FieldArray(FieldArray::from(a.iter().map(to_value).collect::<Result<Vec<_>, _>>()?))
        }
        Value::Object(o) => AMQPValue::FieldTable(to_table(o)?),
    })
}

/// A field table as a JSON object.
pub fn from_table(t: &FieldTable) -> Map<String, Value> {
    t.inner().iter().map(|(k, v)| (k.as_str().to_string(), from_value(v))).collect()
}

fn from_value(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(i) => Value::from(*i),
        AMQPValue::ShortShortUInt(i) => Value::from(*i),
        AMQPValue::ShortInt(i) => Value::from(*i),
        AMQPValue::ShortUInt(i) => Value::from(*i),
        AMQPValue::LongInt(i) => Value::from(*i),
        AMQPValue::LongUInt(i) => Value::from(*i),
        AMQPValue::LongLongInt(i) => Value::from(*i),
        AMQPValue::Timestamp(i) => Value::from(*i),
        AMQPValue::Float(f) => Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number),
        AMQPValue::Double(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        AMQPValue::DecimalValue(d) => {
            Number::from_f64(f64::from(d.value) / 10f64.powi(i32::from(d.scale))).map_or(Value::Null, Value::Number)
        }
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_string()),
        AMQPValue::LongString(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ByteArray(b) => Value::String(String::from_utf8_lossy(b.as_slice()).into_owned()),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(from_value).collect()),
        AMQPValue::FieldTable(t) => Value::Object(from_table(t)),
        AMQPValue::Void => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmq_argument_json_round_trips() {
        let json: Value = serde_json::json!({
            "x-message-ttl": 60000,
            "x-dead-letter-exchange": "dlx",
            "x-single-active-consumer": true,
            "weights": [1, 2.5, "three", null],
            "nested": {"a": {"b": -1}}
        });
        let table = to_table(json.as_object().unwrap()).unwrap();
        assert_eq!(table.inner().get("x-message-ttl"), Some(&AMQPValue::LongLongInt(60000)));
        assert!(matches!(table.inner().get("x-dead-letter-exchange"), Some(AMQPValue::LongString(_))));
        assert_eq!(Value::Object(from_table(&table)), json);
    }

    #[test]
    fn over_long_names_and_huge_numbers_are_refused() {
        let long = serde_json::json!({ "k".repeat(256): 1 });
        assert!(to_table(long.as_object().unwrap()).is_err());
        let huge = serde_json::json!({ "n": u64::MAX });
        assert!(to_table(huge.as_object().unwrap()).is_err());
    }
}
