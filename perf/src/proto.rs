//! Wire glue: splitting the byte stream into raw frames (borrowing the read buffer),
//! a fast path for the hot methods (basic.deliver / basic.ack / basic.nack), and
//! serializers built on `amq-protocol`'s generators.

use amq_protocol::frame::{gen_frame, AMQPContentHeader, AMQPFrame, SerializeFn, WriteContext};
use amq_protocol::protocol::{basic, parse_class, AMQPClass};
use amq_protocol::types::ChannelId;

pub const FRAME_METHOD: u8 = 1;
pub const FRAME_HEADER: u8 = 2;
pub const FRAME_BODY: u8 = 3;
pub const FRAME_HEARTBEAT: u8 = 8;
pub const FRAME_END: u8 = 0xCE;
/// Type (1) + channel (2) + size (4).
pub const FRAME_HEADER_LEN: usize = 7;
/// Envelope around a payload: header plus frame-end octet.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_LEN + 1;

pub const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";

/// One frame, its payload borrowed from the read buffer.
pub struct RawFrame<'a> {
    pub kind: u8,
    pub channel: ChannelId,
    pub payload: &'a [u8],
}

/// Splits the next frame off `input`. `Ok(None)`: more bytes needed. The `usize` is the
/// number of bytes the frame took. `max` bounds the frame size announced by the peer.
pub fn split_frame(input: &[u8], max: usize) -> Result<Option<(RawFrame<'_>, usize)>, String> {
    if input.len() < FRAME_HEADER_LEN {
        return Ok(None);
    }
    let kind = input[0];
    let channel = u16::from_be_bytes([input[1], input[2]]);
    let size = u32::from_be_bytes([input[3], input[4], input[5], input[6]]) as usize;
    if !matches!(kind, FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT) {
        if &input[..4] == b"AMQP" {
            return Err("broker rejected the protocol header (not AMQP 0-9-1?)".into());
        }
        return Err(format!("unknown frame type {kind}"));
    }
    if size + FRAME_OVERHEAD > max {
        return Err(format!("frame of {} bytes exceeds frame_max {max}", size + FRAME_OVERHEAD));
    }
    let total = size + FRAME_OVERHEAD;
    if input.len() < total {
        return Ok(None);
    }
    if input[total - 1] != FRAME_END {
        return Err(format!("bad frame end octet {:#04x}", input[total - 1]));
    }
    Ok(Some((RawFrame { kind, channel, payload: &input[FRAME_HEADER_LEN..total - 1] }, total)))
}

/// The class and method ids of a method payload.
pub fn method_ids(payload: &[u8]) -> Option<(u16, u16)> {
    if payload.len() < 4 {
        return None;
    }
    Some((u16::from_be_bytes([payload[0], payload[1]]), u16::from_be_bytes([payload[2], payload[3]])))
}

/// Full parse of a method payload (for the rare, non hot-path methods).
pub fn parse_method(payload: &[u8]) -> Result<AMQPClass, String> {
    match parse_class(payload) {
        Ok((_, class)) => Ok(class),
        Err(_) => match method_ids(payload) {
            Some((c, m)) => Err(format!("unparsable method {c}.{m}")),
            None => Err("method frame too short".into()),
        },
    }
}

/// basic.deliver (60.60): consumer-tag shortstr, delivery-tag u64, ... — returns the tag.
pub fn deliver_tag(payload: &[u8]) -> Option<u64> {
    let ctag_len = *payload.get(4)? as usize;
    let at = 5 + ctag_len;
    let bytes = payload.get(at..at + 8)?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// basic.ack (60.80) / basic.nack (60.120): delivery-tag u64 then a bits octet whose
/// lowest bit is `multiple`.
pub fn ack_fields(payload: &[u8]) -> Option<(u64, bool)> {
    let bytes = payload.get(4..12)?;
    let tag = u64::from_be_bytes(bytes.try_into().ok()?);
    let bits = *payload.get(12)?;
    Some((tag, bits & 1 == 1))
}

/// Content header payload: class (2), weight (2), body size (8), properties.
pub fn header_body_size(payload: &[u8]) -> Option<u64> {
    let bytes = payload.get(4..12)?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

fn emit<F: SerializeFn<Vec<u8>>>(buf: &mut Vec<u8>, f: F) {
    let ctx = WriteContext::from(std::mem::take(buf));
    match f(ctx) {
        Ok(ctx) => *buf = ctx.write,
        // Serializing into a Vec only fails on a bug; say so rather than panic.
        Err(e) => eprintln!("haremq-perf: frame serialization failed: {e:?}"),
    }
}

/// Appends a method frame.
pub fn write_method(buf: &mut Vec<u8>, channel: ChannelId, method: AMQPClass) {
    emit(buf, gen_frame(&AMQPFrame::Method(channel, method)));
}

/// Appends a basic.ack frame without building an `AMQPClass` (consumer hot path).
pub fn write_ack(buf: &mut Vec<u8>, channel: ChannelId, tag: u64, multiple: bool) {
    buf.push(FRAME_METHOD);
    buf.extend_from_slice(&channel.to_be_bytes());
    buf.extend_from_slice(&13u32.to_be_bytes());
    buf.extend_from_slice(&60u16.to_be_bytes());
    buf.extend_from_slice(&80u16.to_be_bytes());
    buf.extend_from_slice(&tag.to_be_bytes());
    buf.push(u8::from(multiple));
    buf.push(FRAME_END);
}

/// A pre-serialized basic.publish + content header + body frames. Sending a message is
/// one `extend_from_slice` plus patching the 8-byte timestamp at `ts_offset`.
pub struct PublishTemplate {
    pub bytes: Vec<u8>,
    /// Offset of the first body byte inside `bytes`, when the body holds a timestamp.
    pub ts_offset: Option<usize>,
}

impl PublishTemplate {
    pub fn new(
        channel: ChannelId,
        exchange: &str,
        routing_key: &str,
        body_size: usize,
        persistent: bool,
        frame_max: u32,
    ) -> PublishTemplate {
        let mut bytes = Vec::new();
        write_method(
            &mut bytes,
            channel,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
                mandatory: false,
                immediate: false,
            })),
        );
        let mut properties = basic::AMQPProperties::default();
        if persistent {
            properties = properties.with_delivery_mode(2);
        }
        let header = AMQPContentHeader { class_id: 60, body_size: body_size as u64, properties };
        emit(&mut bytes, gen_frame(&AMQPFrame::Header(channel, header)));
        let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(8);
        let mut ts_offset = None;
        let mut left = body_size;
        while left > 0 {
            let n = left.min(chunk);
            bytes.push(FRAME_BODY);
            bytes.extend_from_slice(&channel.to_be_bytes());
            bytes.extend_from_slice(&(n as u32).to_be_bytes());
            if ts_offset.is_none() && body_size >= 8 {
                ts_offset = Some(bytes.len());
            }
            bytes.resize(bytes.len() + n, 0);
            bytes.push(FRAME_END);
            left -= n;
        }
        PublishTemplate { bytes, ts_offset }
    }

    /// Appends one message stamped with `ts` (ns since the UNIX epoch).
    #[inline]
    pub fn append(&self, buf: &mut Vec<u8>, ts: u64) {
        let start = buf.len();
        buf.extend_from_slice(&self.bytes);
        if let Some(off) = self.ts_offset {
            buf[start + off..start + off + 8].copy_from_slice(&ts.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::frame::parse_frame;

    #[test]
    fn ack_fast_path_matches_amq_protocol() {
        let mut buf = Vec::new();
        write_ack(&mut buf, 3, 77, true);
        let (_, frame) = parse_frame(buf.as_slice()).expect("parses");
        let want = AMQPFrame::Method(
            3,
            AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag: 77, multiple: true })),
        );
        assert_eq!(frame, want);
        let (raw, n) = split_frame(&buf, 4096).unwrap().unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(ack_fields(raw.payload), Some((77, true)));
    }

    #[test]
    fn template_splits_body_and_stamps() {
        let t = PublishTemplate::new(1, "", "q", 10_000, true, 4096);
        let mut buf = Vec::new();
        t.append(&mut buf, 0x0102030405060708);
        let mut rest = buf.as_slice();
        let mut kinds = Vec::new();
        let mut body = Vec::new();
        while let Some((f, n)) = split_frame(rest, 4096).unwrap() {
            kinds.push(f.kind);
            if f.kind == FRAME_BODY {
                body.extend_from_slice(f.payload);
            }
            if f.kind == FRAME_HEADER {
                assert_eq!(header_body_size(f.payload), Some(10_000));
            }
            rest = &rest[n..];
        }
        assert_eq!(kinds, vec![FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_BODY, FRAME_BODY]);
        assert_eq!(body.len(), 10_000);
        assert_eq!(&body[..8], &0x0102030405060708u64.to_be_bytes());
    }
}
