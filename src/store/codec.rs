//! The on-disk encoding of a message record: a version byte, the persistent flag, then
//! (since version 2) the publish time in ms since the UNIX epoch and the per-message TTL
//! (a flag and a u32), then length-prefixed exchange, routing key and raw content-header
//! properties, then the body. Version 1 records (no time, no TTL) are still read: their
//! TTLs count from the moment they are loaded.

use super::{MessageFields, MessageRecord};
use crate::util::now_ms;

const VERSION: u8 = 2;
const VERSION_1: u8 = 1;

pub fn encode_message(m: MessageFields<'_>, out: &mut Vec<u8>) {
    out.clear();
    out.reserve(16 + m.exchange.len() + m.routing_key.len() + m.raw_properties.len() + m.body.len());
    out.push(VERSION);
    out.push(u8::from(m.persistent));
    out.extend_from_slice(&m.published_ms.to_be_bytes());
    out.push(u8::from(m.ttl.is_some()));
    out.extend_from_slice(&m.ttl.unwrap_or(0).to_be_bytes());
    put_bytes(out, m.exchange.as_bytes());
    put_bytes(out, m.routing_key.as_bytes());
    put_bytes(out, m.raw_properties);
    out.extend_from_slice(m.body);
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
pub fn decode_message(mut input: &[u8]) -> Option<MessageRecord> {
    let (&version, rest) = input.split_first()?;
    if version != VERSION && version != VERSION_1 {
        return None;
    }
    let (&persistent, rest) = rest.split_first()?;
    input = rest;
    let (published_ms, ttl) = if version == VERSION_1 {
        (now_ms(), None)
    } else {
        if input.len() < 13 {
            return None;
        }
        let (head, rest) = input.split_at(13);
        input = rest;
        let published = u64::from_be_bytes(head[..8].try_into().ok()?);
        let ttl = u32::from_be_bytes(head[9..13].try_into().ok()?);
        (published, (head[8] != 0).then_some(ttl))
    };
    let exchange = std::str::from_utf8(take_bytes(&mut input)?).ok()?;
    let routing_key = std::str::from_utf8(take_bytes(&mut input)?).ok()?;
    let props = take_bytes(&mut input)?;
    Some(MessageRecord {
        exchange: exchange.into(),
        routing_key: routing_key.into(),
        raw_properties: props.into(),
        body: input.into(),
        persistent: persistent != 0,
        published_ms,
        ttl,
    })
}

const DELAYED_VERSION: u8 = 1;

/// Encodes a held delayed message.
pub fn encode_delayed(r: &super::DelayedRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + r.raw_properties.len() + r.body.len());
    out.push(DELAYED_VERSION);
    out.extend_from_slice(&r.due_ms.to_be_bytes());
    out.push(u8::from(r.persistent));
    out.extend_from_slice(&r.ttl.map_or(u32::MAX, |t| t.min(u32::MAX - 1)).to_be_bytes());
    put_bytes(&mut out, r.vhost.as_bytes());
    put_bytes(&mut out, r.exchange.as_bytes());
    put_bytes(&mut out, r.routing_key.as_bytes());
    out.extend_from_slice(&(r.extra_keys.len() as u32).to_be_bytes());
    for k in &r.extra_keys {
        put_bytes(&mut out, k.as_bytes());
    }
    put_bytes(&mut out, &r.raw_properties);
    out.extend_from_slice(&r.body);
    out
}

/// Decodes a held delayed message; `None` if malformed.
pub fn decode_delayed(mut input: &[u8]) -> Option<super::DelayedRecord> {
    let (&version, rest) = input.split_first()?;
    if version != DELAYED_VERSION || rest.len() < 13 {
        return None;
    }
    let due_ms = u64::from_be_bytes(rest[..8].try_into().ok()?);
    let persistent = rest[8] != 0;
    let ttl = u32::from_be_bytes(rest[9..13].try_into().ok()?);
    input = &rest[13..];
    let text = |input: &mut &[u8]| -> Option<String> { Some(std::str::from_utf8(take_bytes(input)?).ok()?.to_string()) };
    let vhost = text(&mut input)?;
    let exchange = text(&mut input)?;
    let routing_key = text(&mut input)?;
    if input.len() < 4 {
        return None;
    }
    let n = u32::from_be_bytes(input[..4].try_into().ok()?) as usize;
    input = &input[4..];
    let mut extra_keys = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        extra_keys.push(text(&mut input)?);
    }
    let raw_properties = take_bytes(&mut input)?.to_vec();
    Some(super::DelayedRecord {
        vhost,
        due_ms,
        exchange,
        routing_key,
        extra_keys,
        raw_properties,
        body: input.to_vec(),
        persistent,
        ttl: (ttl != u32::MAX).then_some(ttl),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn delayed_round_trip() {
        let r = crate::store::DelayedRecord {
            vhost: "/".into(),
            due_ms: 1_700_000_000_123,
            exchange: "dx".into(),
            routing_key: "k".into(),
            extra_keys: vec!["a".into(), "b.c".into()],
            raw_properties: vec![0x80, 0, 4, b't', b'e', b'x', b't'],
            body: b"payload".to_vec(),
            persistent: true,
            ttl: Some(5000),
        };
        let bytes = super::encode_delayed(&r);
        assert_eq!(super::decode_delayed(&bytes), Some(r));
        assert_eq!(super::decode_delayed(&bytes[..10]), None);
    }

    use super::*;

    #[test]
    fn round_trip() {
        let m = MessageRecord {
            exchange: "ex".into(),
            routing_key: "a.b".into(),
            raw_properties: vec![0x10, 0, 2].into(),
            body: b"hello".to_vec().into(),
            persistent: true,
            published_ms: 1_700_000_000_123,
            ttl: Some(250),
        };
        let mut buf = Vec::new();
        encode_message(m.fields(), &mut buf);
        let d = decode_message(&buf).expect("decodes");
        assert_eq!(&*d.exchange, "ex");
        assert_eq!(&*d.routing_key, "a.b");
        assert_eq!(&*d.raw_properties, &[0x10, 0, 2]);
        assert_eq!(&*d.body, b"hello");
        assert!(d.persistent);
        assert_eq!(d.published_ms, 1_700_000_000_123);
        assert_eq!(d.ttl, Some(250));
    }

    #[test]
    fn version_1_records_are_read() {
        let mut buf = vec![1u8, 1];
        for b in [&b"ex"[..], b"k", &[0x10, 0, 2]] {
            put_bytes(&mut buf, b);
        }
        buf.extend_from_slice(b"body");
        let d = decode_message(&buf).expect("decodes");
        assert_eq!(&*d.exchange, "ex");
        assert_eq!(&*d.body, b"body");
        assert_eq!(d.ttl, None);
        assert!(d.published_ms > 0);
    }

    #[test]
    fn truncated_records_are_rejected() {
        let m = MessageRecord {
            exchange: "ex".into(),
            routing_key: "k".into(),
            raw_properties: vec![1, 2, 3].into(),
            body: Box::default(),
            persistent: false,
            published_ms: 5,
            ttl: None,
        };
        let mut buf = Vec::new();
        encode_message(m.fields(), &mut buf);
        // The body is empty, so every cut lands in a length-prefixed field.
        for cut in 0..buf.len() {
            assert!(decode_message(&buf[..cut]).is_none(), "cut at {cut}");
        }
    }
}
