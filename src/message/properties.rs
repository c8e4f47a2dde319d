//! Content-header properties read in place, without decoding them into owned values.
//!
//! The broker forwards a message's property bytes untouched, and per publish it needs
//! only a few of them (delivery mode, expiration, user id, reply-to, and for some
//! exchanges the headers or ids). `amq-protocol`'s `parse_properties` builds a large
//! owned struct with a string per field, which the publish path then moved around
//! several times. [`Properties::parse`] walks the same layout (AMQP 0-9-1 §4.2.6.1, the
//! basic class's 14 properties in flag order) and borrows from the frame instead.
//!
//! It accepts exactly what `amq-protocol` accepts for the flat fields (short strings
//! must be UTF-8). The header table is located, not decoded: [`Properties::headers`]
//! decodes it with `amq-protocol` when a caller needs it, and the publish path checks
//! it once per message that has one, so a malformed table is still refused. The tests
//! compare both parsers on random property sets and random bytes.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{gen_properties, AMQPProperties};
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::FieldTable;

/// Encodes a full property set, for the rare messages whose properties the broker
/// writes itself (dead-lettering, CC/BCC removal, `user_id`-less re-encodes).
pub fn encode_properties(properties: &AMQPProperties) -> Vec<u8> {
    match gen_properties(properties)(WriteContext::from(Vec::new())) {
        Ok(ctx) => ctx.write,
        // Writing to a Vec cannot run out of space: an error is a serializer bug.
        Err(e) => {
            log::error!("property serialization failed: {e:?}");
            Vec::new()
        }
    }
}

/// The properties of a basic-class content header, borrowed from its raw bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Properties<'a> {
    /// The header table's bytes, with their 4-byte length prefix.
    headers_raw: Option<&'a [u8]>,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<&'a str>,
    pub reply_to: Option<&'a str>,
    pub expiration: Option<&'a str>,
    pub message_id: Option<&'a str>,
    pub timestamp: Option<u64>,
    pub user_id: Option<&'a str>,
}

/// Property flag bits, most significant first (bit 15 is content-type).
const CONTENT_TYPE: u16 = 1 << 15;
const CONTENT_ENCODING: u16 = 1 << 14;
const HEADERS: u16 = 1 << 13;
const DELIVERY_MODE: u16 = 1 << 12;
const PRIORITY: u16 = 1 << 11;
const CORRELATION_ID: u16 = 1 << 10;
const REPLY_TO: u16 = 1 << 9;
const EXPIRATION: u16 = 1 << 8;
const MESSAGE_ID: u16 = 1 << 7;
const TIMESTAMP: u16 = 1 << 6;
const TYPE: u16 = 1 << 5;
const USER_ID: u16 = 1 << 4;
const APP_ID: u16 = 1 << 3;
const CLUSTER_ID: u16 = 1 << 2;

/// A cursor over the property bytes.
struct Reader<'a> {
    rest: &'a [u8],
    flags: u16,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    fn octet(&mut self, flag: u16) -> Option<Option<u8>> {
        if self.flags & flag == 0 {
            return Some(None);
        }
        Some(Some(self.take(1)?[0]))
    }

    fn short_str(&mut self, flag: u16) -> Option<Option<&'a str>> {
        if self.flags & flag == 0 {
            return Some(None);
        }
        let len = usize::from(self.take(1)?[0]);
        Some(Some(std::str::from_utf8(self.take(len)?).ok()?))
    }
}

impl<'a> Properties<'a> {
    /// Reads the property list (flags word first); `None` if it is malformed.
    pub fn parse(raw: &'a [u8]) -> Option<Self> {
        let (flags, rest) = raw.split_first_chunk::<2>()?;
        let mut r = Reader { rest, flags: u16::from_be_bytes(*flags) };
        r.short_str(CONTENT_TYPE)?;
        r.short_str(CONTENT_ENCODING)?;
        let headers_raw = if r.flags & HEADERS != 0 {
            let len = u32::from_be_bytes(r.rest.first_chunk::<4>().copied()?) as usize;
            Some(r.take(len.checked_add(4)?)?)
        } else {
            None
        };
        let delivery_mode = r.octet(DELIVERY_MODE)?;
        let priority = r.octet(PRIORITY)?;
        let correlation_id = r.short_str(CORRELATION_ID)?;
        let reply_to = r.short_str(REPLY_TO)?;
        let expiration = r.short_str(EXPIRATION)?;
        let message_id = r.short_str(MESSAGE_ID)?;
        let timestamp =
            if r.flags & TIMESTAMP != 0 { Some(u64::from_be_bytes(r.take(8)?.try_into().ok()?)) } else { None };
        r.short_str(TYPE)?;
        let user_id = r.short_str(USER_ID)?;
        r.short_str(APP_ID)?;
        r.short_str(CLUSTER_ID)?;
        Some(Self {
            headers_raw,
            delivery_mode,
            priority,
            correlation_id,
            reply_to,
            expiration,
            message_id,
            timestamp,
            user_id,
        })
    }

    /// Whether the message carries a header table.
    #[cfg(test)]
    pub fn has_headers(&self) -> bool {
        self.headers_raw.is_some()
    }

    /// The decoded header table: `None` without one, `Some(Err(()))` if it is malformed
    /// or nests deeper than [`crate::wire::nesting::MAX_NESTING`] levels.
    pub fn headers(&self) -> Option<Result<FieldTable, ()>> {
        let raw = self.headers_raw?;
        if crate::wire::nesting::check_table(raw).is_err() {
            return Some(Err(()));
        }
        Some(match parse_field_table(raw) {
            Ok(([], table)) => Ok(table),
            _ => Err(()),
        })
    }
}

/// The properties with header `key` set to the long-long integer `value` (a stream's
/// `x-stream-offset`, which RabbitMQ sends as type `l`). Without a header table, one is
/// spliced in after the two short strings that precede it (no decoding); with one, the
/// properties are decoded and written again, so a header of the same name the
/// publisher set is replaced rather than duplicated. `None` if `raw` is malformed.
pub fn with_long_header(raw: &[u8], key: &str, value: i64) -> Option<Vec<u8>> {
    let (flags, rest) = raw.split_first_chunk::<2>()?;
    let flags = u16::from_be_bytes(*flags);
    if flags & HEADERS != 0 {
        let props = crate::wire::nesting::parse_properties(raw)?;
        let mut headers = props.headers().clone().unwrap_or_default();
        headers.insert(crate::wire::shortstr::short(key), amq_protocol::types::AMQPValue::LongLongInt(value));
        return Some(encode_properties(&props.with_headers(headers)));
    }
    let key = &key.as_bytes()[..key.len().min(crate::wire::shortstr::MAX_LEN)];
    let mut r = Reader { rest, flags };
    r.short_str(CONTENT_TYPE)?;
    r.short_str(CONTENT_ENCODING)?;
    let at = raw.len() - r.rest.len();
    let entry = 1 + key.len() + 1 + 8;
    let mut out = Vec::with_capacity(raw.len() + 4 + entry);
    out.extend_from_slice(&(flags | HEADERS).to_be_bytes());
    out.extend_from_slice(&raw[2..at]);
    out.extend_from_slice(&(entry as u32).to_be_bytes());
    out.push(key.len() as u8);
    out.extend_from_slice(key);
    out.push(b'l');
    out.extend_from_slice(&value.to_be_bytes());
    out.extend_from_slice(&raw[at..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::basic::parse_properties;
    use amq_protocol::protocol::BasicProperties;
    use amq_protocol::types::AMQPValue;
    use proptest::prelude::*;

    fn encode(p: &BasicProperties) -> Vec<u8> {
        encode_properties(p)
    }

    /// Headers, delivery mode, priority, the five strings the broker reads, timestamp.
    type Fields = (Option<FieldTable>, Option<u8>, Option<u8>, [Option<String>; 5], Option<u64>);

    /// The fields the broker reads, as amq-protocol decodes them.
    fn reference(raw: &[u8]) -> Option<Fields> {
        let (_, p) = parse_properties(raw).ok()?;
        let s = |v: &Option<amq_protocol::types::ShortString>| v.as_ref().map(|s| s.to_string());
        Some((
            p.headers().clone(),
            *p.delivery_mode(),
            *p.priority(),
            [s(p.correlation_id()), s(p.reply_to()), s(p.expiration()), s(p.message_id()), s(p.user_id())],
            *p.timestamp(),
        ))
    }

    fn fast(raw: &[u8]) -> Option<Fields> {
        let p = Properties::parse(raw)?;
        let headers = match p.headers() {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(())) => return None,
        };
        let s = |v: Option<&str>| v.map(str::to_owned);
        Some((
            headers,
            p.delivery_mode,
            p.priority,
            [s(p.correlation_id), s(p.reply_to), s(p.expiration), s(p.message_id), s(p.user_id)],
            p.timestamp,
        ))
    }

    fn opt_str() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("\\PC{0,20}")
    }

    prop_compose! {
        fn any_properties()(
            strs in proptest::collection::vec(opt_str(), 9),
            mode in proptest::option::of(any::<u8>()),
            prio in proptest::option::of(any::<u8>()),
            ts in proptest::option::of(any::<u64>()),
            headers in proptest::option::of(proptest::collection::vec(("[a-z]{1,8}", any::<i32>()), 0..4)),
        ) -> BasicProperties {
            let mut p = BasicProperties::default();
            let set = |s: &Option<String>| s.clone().map(Into::into);
            if let Some(v) = set(&strs[0]) { p = p.with_content_type(v); }
            if let Some(v) = set(&strs[1]) { p = p.with_content_encoding(v); }
            if let Some(h) = headers {
                let mut t = FieldTable::default();
                for (k, v) in h {
                    t.insert(k.into(), AMQPValue::LongInt(v));
                }
                p = p.with_headers(t);
            }
            if let Some(m) = mode { p = p.with_delivery_mode(m); }
            if let Some(v) = prio { p = p.with_priority(v); }
            if let Some(v) = set(&strs[2]) { p = p.with_correlation_id(v); }
            if let Some(v) = set(&strs[3]) { p = p.with_reply_to(v); }
            if let Some(v) = set(&strs[4]) { p = p.with_expiration(v); }
            if let Some(v) = set(&strs[5]) { p = p.with_message_id(v); }
            if let Some(v) = ts { p = p.with_timestamp(v); }
            if let Some(v) = set(&strs[6]) { p = p.with_type(v); }
            if let Some(v) = set(&strs[7]) { p = p.with_user_id(v); }
            if let Some(v) = set(&strs[8]) { p = p.with_app_id(v); }
            p
        }
    }

    proptest! {
        #[test]
        fn reads_what_amq_protocol_decodes(p in any_properties()) {
            let raw = encode(&p);
            prop_assert!(fast(&raw).is_some());
            prop_assert_eq!(fast(&raw), reference(&raw));
        }

        /// On arbitrary bytes: never accepts what amq-protocol refuses, and agrees on
        /// what both accept.
        #[test]
        fn random_bytes_agree(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let ours = fast(&raw);
            if ours.is_some() {
                prop_assert_eq!(ours, reference(&raw));
            }
        }

        /// Truncating valid properties is noticed by both parsers alike.
        #[test]
        fn truncations_agree(p in any_properties(), cut in any::<prop::sample::Index>()) {
            let raw = encode(&p);
            let cut = cut.index(raw.len() + 1);
            prop_assert_eq!(fast(&raw[..cut]).is_some(), reference(&raw[..cut]).is_some());
        }
    }

    #[test]
    fn headers_are_decoded_on_demand() {
        let mut t = FieldTable::default();
        t.insert("CC".into(), AMQPValue::LongString("k".into()));
        let raw = encode(&BasicProperties::default().with_headers(t.clone()).with_delivery_mode(2));
        let p = Properties::parse(&raw).expect("parses");
        assert!(p.has_headers());
        assert_eq!(p.delivery_mode, Some(2));
        assert_eq!(p.headers(), Some(Ok(t)));
        assert_eq!(Properties::parse(&encode(&BasicProperties::default())).map(|p| p.headers()), Some(None));
    }

    #[test]
    fn a_long_header_is_added_or_replaced() {
        let offset = |raw: &[u8]| {
            let (_, p) = parse_properties(raw).expect("decodes");
            (p.headers().clone().and_then(|h| h.inner().get("x-stream-offset").cloned()), p)
        };
        // No table: spliced in, every other field kept.
        let plain = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_delivery_mode(2)
            .with_message_id("m".into());
        let raw = with_long_header(&encode(&plain), "x-stream-offset", 42).expect("spliced");
        let (v, p) = offset(&raw);
        assert_eq!(v, Some(AMQPValue::LongLongInt(42)));
        assert_eq!(p.content_type().as_ref().map(|s| s.as_str()), Some("text/plain"));
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("m"));
        let raw = with_long_header(&encode(&BasicProperties::default()), "x-stream-offset", 0).expect("spliced");
        assert_eq!(offset(&raw).0, Some(AMQPValue::LongLongInt(0)));
        // A table: the publisher's own value is replaced, its other headers kept.
        let mut h = FieldTable::default();
        h.insert("x-stream-offset".into(), AMQPValue::LongString("forged".into()));
        h.insert("k".into(), AMQPValue::Boolean(true));
        let raw = with_long_header(&encode(&plain.clone().with_headers(h)), "x-stream-offset", 7).expect("re-encoded");
        let (v, p) = offset(&raw);
        assert_eq!(v, Some(AMQPValue::LongLongInt(7)));
        assert_eq!(p.headers().as_ref().and_then(|h| h.inner().get("k").cloned()), Some(AMQPValue::Boolean(true)));
        assert_eq!(with_long_header(&[0x80], "x-stream-offset", 1), None);
    }
}
