//! The on-disk encoding of a message record: a version byte, the persistent flag, then
//! (since version 2) the publish time in ms since the UNIX epoch and the per-message TTL
//! (a flag and a u32), then length-prefixed exchange, routing key and raw content-header
//! properties, then the body. Version 1 records (no time, no TTL) are still read: their
//! TTLs count from the moment they are loaded. Records are decoded with `nom`'s
//! complete-input parsers, borrowing from the stored bytes until the record is built.

use nom::combinator::{map, map_res};
use nom::multi::{length_count, length_data};
use nom::number::complete::{be_u32, be_u64, be_u8};
use nom::{IResult, Parser};

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

type Error<'a> = nom::error::Error<&'a [u8]>;

/// Runs a parser; `None` if the bytes do not fit it.
fn run<'a, O>(mut p: impl Parser<&'a [u8], Output = O, Error = Error<'a>>, input: &'a [u8]) -> Option<(&'a [u8], O)> {
    p.parse(input).ok()
}

/// A length-prefixed (u32, big-endian) byte string.
fn bytes(input: &[u8]) -> IResult<&[u8], &[u8]> {
    length_data(be_u32).parse(input)
}

/// A length-prefixed UTF-8 string.
fn text(input: &[u8]) -> IResult<&[u8], &str> {
    map_res(bytes, std::str::from_utf8).parse(input)
}

/// Decodes a message record; `None` if it is malformed.
pub fn decode_message(input: &[u8]) -> Option<MessageRecord> {
    let f = decode_fields(input)?;
    Some(MessageRecord {
        exchange: f.exchange.into(),
        routing_key: f.routing_key.into(),
        raw_properties: f.raw_properties.into(),
        body: f.body.into(),
        persistent: f.persistent,
        published_ms: f.published_ms,
        ttl: f.ttl,
    })
}

/// Decodes a message record into fields borrowed from `input` (a stream's reader
/// builds its message from them without an intermediate record).
pub fn decode_fields(input: &[u8]) -> Option<MessageFields<'_>> {
    let (input, (version, persistent)) = run((be_u8, be_u8), input)?;
    let (input, (published_ms, ttl)) = match version {
        VERSION => {
            let (rest, (published, has_ttl, ttl)) = run((be_u64, be_u8, be_u32), input)?;
            (rest, (published, (has_ttl != 0).then_some(ttl)))
        }
        VERSION_1 => (input, (now_ms(), None)),
        _ => return None,
    };
    let (body, (exchange, routing_key, raw_properties)) = run((text, text, bytes), input)?;
    Some(MessageFields { exchange, routing_key, raw_properties, body, persistent: persistent != 0, published_ms, ttl })
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
pub fn decode_delayed(input: &[u8]) -> Option<super::DelayedRecord> {
    let (input, version) = run(be_u8, input)?;
    if version != DELAYED_VERSION {
        return None;
    }
    let owned = |s: &str| s.to_string();
    let (input, (due_ms, persistent, ttl, vhost, exchange, routing_key)) =
        run((be_u64, be_u8, be_u32, map(text, owned), map(text, owned), map(text, owned)), input)?;
    // The count is the record's own; no more keys are read than bytes can hold.
    let (body, (extra_keys, raw_properties)) =
        run((length_count(be_u32, map(text, owned)), map(bytes, <[u8]>::to_vec)), input)?;
    Some(super::DelayedRecord {
        vhost,
        due_ms,
        exchange,
        routing_key,
        extra_keys,
        raw_properties,
        body: body.to_vec(),
        persistent: persistent != 0,
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

    proptest::proptest! {
        /// Arbitrary bytes never panic the decoders, and whatever decodes re-encodes to
        /// a record that decodes the same.
        #[test]
        fn decoders_take_any_bytes(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Some(m) = decode_message(&raw) {
                let mut buf = Vec::new();
                encode_message(m.fields(), &mut buf);
                let again = decode_message(&buf).expect("re-decodes");
                proptest::prop_assert_eq!(again.fields().body, m.fields().body);
                proptest::prop_assert_eq!(again.exchange, m.exchange);
            }
            if let Some(r) = super::decode_delayed(&raw) {
                proptest::prop_assert_eq!(super::decode_delayed(&super::encode_delayed(&r)), Some(r));
            }
        }

        /// Encoded records decode to themselves; every truncation is refused.
        #[test]
        fn records_round_trip(ex in "[a-z.]{0,20}", rk in "[a-z.#*]{0,40}", props in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
                              body in proptest::collection::vec(proptest::num::u8::ANY, 0..100), ttl in proptest::option::of(0u32..1000)) {
            let m = MessageRecord {
                exchange: ex.into(), routing_key: rk.into(), raw_properties: props.into(), body: body.into(),
                persistent: true, published_ms: 42, ttl,
            };
            let mut buf = Vec::new();
            encode_message(m.fields(), &mut buf);
            proptest::prop_assert_eq!(decode_message(&buf), Some(m.clone()));
            let header = buf.len() - m.body.len();
            for cut in 0..header {
                proptest::prop_assert!(decode_message(&buf[..cut]).is_none());
            }
        }
    }
}
