//! What a quorum queue's log carries: AMQP messages as the state machine's opaque
//! bytes, and log entries that batch many commands (and their replies) into one.
//!
//! A message: `u8` exchange length, exchange, `u16` routing-key length, routing key,
//! `u32` property length, the content-header property bytes as published, `u8` flags
//! (bit 0: persistent), then the body. An entry: a sequence of `u32` length +
//! command (or reply) bytes. Every length is checked against what is left, so a
//! damaged entry is an error, never a panic or an allocation it asks for.

use haremq_quorum::Reply;

use crate::message::Message;

/// The queue-independent part of a message, as it goes into the log.
pub fn encode_message(m: &Message) -> Vec<u8> {
    let exchange = &m.exchange.as_bytes()[..m.exchange.len().min(255)];
    let key = &m.routing_key.as_bytes()[..m.routing_key.len().min(u16::MAX as usize)];
    let mut out = Vec::with_capacity(8 + exchange.len() + key.len() + m.raw_properties.len() + m.body.len());
    out.push(exchange.len() as u8);
    out.extend_from_slice(exchange);
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(m.raw_properties.len() as u32).to_be_bytes());
    out.extend_from_slice(&m.raw_properties);
    out.push(u8::from(m.persistent));
    out.extend_from_slice(&m.body);
    out
}

/// The parts of a logged message (see [`encode_message`]).
pub struct LoggedMessage<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub raw_properties: &'a [u8],
    pub persistent: bool,
    pub body: &'a [u8],
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

pub fn decode_message(bytes: &[u8]) -> Option<LoggedMessage<'_>> {
    let mut r = Reader(bytes);
    let n = r.take(1)?[0] as usize;
    let exchange = std::str::from_utf8(r.take(n)?).ok()?;
    let n = u16::from_be_bytes(r.take(2)?.try_into().ok()?) as usize;
    let routing_key = std::str::from_utf8(r.take(n)?).ok()?;
    let n = r.u32()? as usize;
    let raw_properties = r.take(n)?;
    let persistent = r.take(1)?[0] & 1 == 1;
    Some(LoggedMessage { exchange, routing_key, raw_properties, persistent, body: r.0 })
}

/// Joins commands (or replies) into one log entry (or one entry's answer).
pub fn join(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 4).sum());
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// Splits what [`join`] made; None if it is damaged.
pub fn split(bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let mut r = Reader(bytes);
    let mut parts = Vec::new();
    while !r.0.is_empty() {
        let n = r.u32()? as usize;
        parts.push(r.take(n)?);
    }
    Some(parts)
}

/// A reply's bytes (postcard, as the state machine's commands).
pub fn encode_reply(reply: &Reply) -> Vec<u8> {
    postcard::to_stdvec(reply).unwrap_or_default()
}

pub fn decode_reply(bytes: &[u8]) -> Option<Reply> {
    postcard::from_bytes(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_entries_round_trip_and_damage_is_refused() {
        let m = Message {
            exchange: "amq.direct".into(),
            routing_key: "key".into(),
            raw_properties: vec![1, 2, 3].into_boxed_slice(),
            body: b"hello".to_vec().into_boxed_slice(),
            persistent: true,
            published_ms: 0,
            ttl: None,
            store: Default::default(),
            charge: Default::default(),
        };
        let bytes = encode_message(&m);
        let d = decode_message(&bytes).unwrap();
        assert_eq!(
            (d.exchange, d.routing_key, d.raw_properties, d.persistent, d.body),
            ("amq.direct", "key", &[1u8, 2, 3][..], true, &b"hello"[..])
        );
        for cut in 0..bytes.len() - 5 {
            assert!(decode_message(&bytes[..cut]).is_none(), "cut at {cut}");
        }
        let entry = join(&[b"a".to_vec(), Vec::new(), b"ccc".to_vec()]);
        assert_eq!(split(&entry).unwrap(), vec![&b"a"[..], &b""[..], &b"ccc"[..]]);
        assert!(split(&entry[..entry.len() - 1]).is_none());
        assert!(split(&[0xff, 0xff, 0xff, 0xff, 1]).is_none(), "a length past the end");
        let reply = Reply::Purged { count: 7 };
        assert_eq!(decode_reply(&encode_reply(&reply)), Some(reply));
    }
}
