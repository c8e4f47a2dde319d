//! Entry points for the fuzz targets in `fuzz/` and the regression tests that replay
//! their findings (`tests/fuzz_regressions.rs`). Not part of the broker's API: thin
//! wrappers, so the rest of the crate can stay private. Each takes arbitrary bytes,
//! must never panic, and asserts what the parsers promise each other (the fast paths
//! agree with `amq-protocol`, the nesting check bounds what `amq-protocol` decodes).

use crate::amqp::frame::{self, Frame};
use crate::message::properties::Properties;
use crate::wire::nesting;
use amq_protocol::protocol::{basic, parse_class, AMQPClass};

/// The frame splitter over a byte stream: every frame until one is incomplete or
/// refused, at a small and the default `frame_max` (the first input byte picks).
pub fn frame(data: &[u8]) {
    let Some((&pick, mut rest)) = data.split_first() else {
        return;
    };
    let frame_max = if pick & 1 == 0 { 4096 } else { 131_072 };
    while let Ok(Some((f, n))) = frame::next_frame(rest, frame_max) {
        assert!(n > 0 && n <= rest.len());
        if let Frame::Header(_, h) = f {
            // What the channel reads from a content header.
            let _ = (h.properties.delivery_mode, h.properties.expiration, h.headers.map(|t| t.inner().len()));
        }
        rest = &rest[n..];
    }
}

/// One method payload (class id, method id, arguments) through the frame glue, and
/// through `amq-protocol` directly when the nesting check lets it.
pub fn method(payload: &[u8]) {
    let mut buf = vec![1, 0, 1];
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(payload);
    buf.push(0xCE);
    let _ = frame::next_frame(&buf, u32::MAX);
    if nesting::check_method(payload).is_ok() {
        if let Ok((_, class)) = parse_class(payload) {
            // Anything decoded re-encodes (the broker writes such methods back).
            let mut out = Vec::new();
            frame::write_method(&mut out, 1, class);
        }
    }
}

/// The allocation-free basic.publish and basic.ack parsers against `amq-protocol`:
/// whatever the fast path accepts, `amq-protocol` decodes the same.
pub fn fast_paths(tail: &[u8]) {
    for ids in [[0u8, 60, 0, 40], [0, 60, 0, 80]] {
        let mut payload = ids.to_vec();
        payload.extend_from_slice(tail);
        let reference = parse_class(payload.as_slice()).ok().map(|(_, c)| c);
        if let Some(p) = frame::parse_publish(&payload) {
            match &reference {
                Some(AMQPClass::Basic(basic::AMQPMethod::Publish(r))) => {
                    assert_eq!(
                        (p.exchange, p.routing_key, p.mandatory, p.immediate),
                        (r.exchange.as_str(), r.routing_key.as_str(), r.mandatory, r.immediate)
                    );
                }
                other => panic!("fast publish accepted what amq-protocol made {other:?} of"),
            }
        }
        if let Some((tag, multiple)) = frame::parse_ack(&payload) {
            match &reference {
                Some(AMQPClass::Basic(basic::AMQPMethod::Ack(r))) => {
                    assert_eq!((tag, multiple), (r.delivery_tag, r.multiple))
                }
                other => panic!("fast ack accepted what amq-protocol made {other:?} of"),
            }
        }
    }
}

/// The in-place property reader against `amq-protocol`'s decoder (behind the nesting
/// check): whatever the reader accepts, `amq-protocol` decodes to the same fields.
pub fn properties(raw: &[u8]) {
    let ours = Properties::parse(raw);
    let headers = ours.map(|p| p.headers());
    let reference = nesting::parse_properties(raw);
    if let (Some(p), Some(Some(Ok(h)))) = (ours, &headers) {
        let r = reference.as_ref().expect("amq-protocol decodes what the reader accepts");
        // Compared as text: a float header may be NaN, which equals nothing.
        assert_eq!(format!("{:?}", r.headers().as_ref()), format!("{:?}", Some(h)));
        assert_eq!(*r.delivery_mode(), p.delivery_mode);
    }
    if let (Some(p), Some(None)) = (ours, &headers) {
        let r = reference.as_ref().expect("amq-protocol decodes what the reader accepts");
        assert_eq!(*r.priority(), p.priority);
        assert_eq!(r.expiration().as_ref().map(|s| s.as_str()), p.expiration);
        assert_eq!(r.user_id().as_ref().map(|s| s.as_str()), p.user_id);
        assert_eq!(*r.timestamp(), p.timestamp);
    }
}

/// The nesting check against `amq-protocol`'s recursive table decoder: a table that
/// passes decodes (if at all) to no more than `MAX_NESTING` levels.
pub fn field_table(raw: &[u8]) {
    if nesting::check_table(raw).is_ok() {
        if let Ok((_, t)) = amq_protocol::types::parsing::parse_field_table(raw) {
            assert!(nesting::depth_of_table(&t) <= nesting::MAX_NESTING);
        }
    }
}

/// SASL responses (PLAIN and AMQPLAIN) against the default user table.
pub fn sasl(data: &[u8]) {
    let users = crate::auth::UserTable::from_config(&crate::Config::default());
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let _ = users.authenticate("PLAIN", data, ip);
    let _ = users.authenticate("AMQPLAIN", data, ip);
}

/// The store's message and delayed-message records: decoding never panics, and a
/// decoded record encodes back to what decodes the same.
pub fn store_codec(data: &[u8]) {
    use crate::store::codec;
    if let Some(m) = codec::decode_message(data) {
        let mut out = Vec::new();
        codec::encode_message(m.fields(), &mut out);
        let again = codec::decode_message(&out).expect("re-decodes");
        assert_eq!((&*again.exchange, &*again.routing_key), (&*m.exchange, &*m.routing_key));
        assert_eq!((&*again.raw_properties, &*again.body), (&*m.raw_properties, &*m.body));
        assert_eq!((again.persistent, again.ttl), (m.persistent, m.ttl));
        // What the broker reads from a stored message's properties.
        let m = crate::message::Message::from_record(m, 1, 1);
        let _ = (m.priority(), m.dedup_key());
    }
    if let Some(r) = codec::decode_delayed(data) {
        let again = codec::decode_delayed(&codec::encode_delayed(&r));
        assert_eq!(again, Some(r));
    }
}

/// The configuration file parser.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = toml::from_str::<crate::Config>(text);
    }
}

/// A stream log segment: the bytes are written as a log's only (so last) segment, the
/// log is opened (recovered) and read. Recovery keeps whole records only and repairs
/// in one go (a second open finds the same), and the log then takes an append. The
/// first byte picks: bit 0 puts a valid segment header in front (so most inputs reach
/// the records), bit 1 cuts an index file from the input (two length bytes, then it).
pub fn stream_segment(data: &[u8]) {
    use crate::store::stream_log::{LogRecord, StreamLog, StreamLogConfig};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (index, body) = match rest {
        [a, b, rest @ ..] if pick & 2 != 0 => rest.split_at(usize::from(u16::from_le_bytes([*a, *b])).min(rest.len())),
        _ => (&[][..], rest),
    };
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("haremq-fuzz-stream-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut segment = if pick & 1 != 0 { b"HMQSEG01".to_vec() } else { Vec::new() };
    segment.extend_from_slice(body);
    std::fs::write(dir.join("00000000000000000000.segment"), &segment).expect("writes segment");
    if !index.is_empty() {
        std::fs::write(dir.join("00000000000000000000.index"), index).expect("writes index");
    }
    let config = StreamLogConfig::default();
    // Everything readable, in order; a damaged record the recovery scan did not cover
    // (before a plausible index entry) is an error, not a panic.
    let read = |log: &Arc<StreamLog>| -> Vec<LogRecord> {
        let mut r = log.reader(0).expect("reader");
        let mut out = Vec::new();
        while let Ok(Some(rec)) = r.next() {
            assert_eq!(rec.offset, log.first_offset() + out.len() as u64);
            out.push(rec);
        }
        out
    };
    if let Ok(log) = StreamLog::open(&dir, config) {
        let committed = log.committed();
        assert_eq!(log.next_offset(), committed);
        assert!(log.bytes() <= segment.len().max(8) as u64);
        let records = read(&log);
        assert!(records.len() as u64 <= committed);
        drop(log);
        let log = StreamLog::open(&dir, config).expect("a recovered log opens again");
        assert_eq!(log.committed(), committed);
        assert_eq!(read(&log), records);
        log.append(committed, i64::MAX, b"after").expect("appends");
        assert_eq!(log.sync(0).expect("syncs"), committed + 1);
        let mut r = log.reader(committed).expect("reader");
        assert_eq!(r.next().expect("reads").map(|r| r.payload), Some(b"after".to_vec()));
        log.destroy().expect("destroys");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(test)]
mod tests {
    use crate::store::stream_log::{StreamLog, StreamLogConfig};

    /// `stream_segment` over a real segment cut at many lengths and with bytes
    /// flipped, and over a few plain inputs (cargo-fuzz is not needed to run it).
    #[test]
    fn stream_log_fuzz_entry_smoke() {
        let dir = std::env::temp_dir().join(format!("haremq-fuzz-stream-seed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = StreamLog::open(&dir, StreamLogConfig::default()).expect("opens");
        for o in 0..5u64 {
            log.append(o, 1000 + o as i64, format!("record {o}").as_bytes()).expect("appends");
            if o % 2 == 1 {
                log.sync(0).expect("syncs");
            }
        }
        log.sync(0).expect("syncs");
        let segment = std::fs::read(dir.join("00000000000000000000.segment")).expect("segment");
        let index = std::fs::read(dir.join("00000000000000000000.index")).expect("index");
        log.destroy().expect("destroys");
        let with_pick = |pick: u8, bytes: &[u8]| [&[pick][..], bytes].concat();
        for cut in (0..=segment.len()).step_by(7) {
            super::stream_segment(&with_pick(0, &segment[..cut]));
        }
        for at in (0..segment.len()).step_by(11) {
            let mut damaged = segment.clone();
            damaged[at] ^= 0x40;
            super::stream_segment(&with_pick(0, &damaged));
        }
        let mut with_index = vec![2u8];
        with_index.extend_from_slice(&(index.len() as u16).to_le_bytes());
        with_index.extend_from_slice(&index);
        with_index.extend_from_slice(&segment);
        super::stream_segment(&with_index);
        for input in [&[][..], &[1][..], &[3, 0xFF, 0xFF][..], &[1, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0][..]] {
            super::stream_segment(input);
        }
    }
}
