//! The on-disk encoding of a message record: a version byte, then length-prefixed
//! exchange, routing key and raw content-header properties, then the body.

use std::sync::Arc;

use crate::message::Message;

const VERSION: u8 = 1;

pub fn encode_message(m: &Message, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(16 + m.exchange.len() + m.routing_key.len() + m.raw_properties.len() + m.body.len());
    out.push(VERSION);
    out.push(u8::from(m.persistent));
    put_bytes(out, m.exchange.as_bytes());
    put_bytes(out, m.routing_key.as_bytes());
    put_bytes(out, &m.raw_properties);
    out.extend_from_slice(&m.body);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn take_bytes<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    if input.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes([input[0], input[1], input[2], input[3]]) as usize;
    let rest = &input[4..];
    if rest.len() < len {
        return None;
    }
    let (b, rest) = rest.split_at(len);
    *input = rest;
    Some(b)
}

/// Decodes a message record; `None` if it is malformed.
pub fn decode_message(mut input: &[u8]) -> Option<Message> {
    let (&version, rest) = input.split_first()?;
    if version != VERSION {
        return None;
    }
    let (&persistent, rest) = rest.split_first()?;
    input = rest;
    let exchange = std::str::from_utf8(take_bytes(&mut input)?).ok()?;
    let routing_key = std::str::from_utf8(take_bytes(&mut input)?).ok()?;
    let props = take_bytes(&mut input)?;
    Some(Message {
        exchange: Arc::from(exchange),
        routing_key: routing_key.into(),
        raw_properties: props.into(),
        body: input.into(),
        persistent: persistent != 0,
        store: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let m = Message {
            exchange: Arc::from("ex"),
            routing_key: "a.b".into(),
            raw_properties: vec![0x10, 0, 2].into(),
            body: b"hello".to_vec().into(),
            persistent: true,
            store: Default::default(),
        };
        let mut buf = Vec::new();
        encode_message(&m, &mut buf);
        let d = decode_message(&buf).expect("decodes");
        assert_eq!(&*d.exchange, "ex");
        assert_eq!(&*d.routing_key, "a.b");
        assert_eq!(&*d.raw_properties, &[0x10, 0, 2]);
        assert_eq!(&*d.body, b"hello");
        assert!(d.persistent);
    }

    #[test]
    fn truncated_records_are_rejected() {
        let m = Message {
            exchange: Arc::from("ex"),
            routing_key: "k".into(),
            raw_properties: vec![1, 2, 3].into(),
            body: Box::default(),
            persistent: false,
            store: Default::default(),
        };
        let mut buf = Vec::new();
        encode_message(&m, &mut buf);
        // The body is empty, so every cut lands in a length-prefixed field.
        for cut in 0..buf.len() {
            assert!(decode_message(&buf[..cut]).is_none(), "cut at {cut}");
        }
    }
}
