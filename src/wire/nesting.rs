//! Bounded field-table nesting: a check that runs *before* `amq-protocol` decodes a
//! field table.
//!
//! `amq-protocol` decodes field tables and arrays recursively, one stack frame group per
//! level and without a depth limit, so a peer that nests arrays a few thousand levels
//! deep (`'A' len ['A' len [...]]`, 5 bytes a level) overflows the stack and aborts the
//! whole process. Every place that hands bytes from a peer or from the disk to
//! `amq-protocol`'s table decoder first calls one of the checks here: [`check_method`]
//! (the eight methods that carry a table), [`check_properties`] (a content header's
//! `headers`) and [`check_table`] (a bare table, e.g. an AMQPLAIN response). They walk
//! the same grammar without recursion (an explicit stack of at most [`MAX_NESTING`]
//! container ends) and refuse a table that nests deeper than [`MAX_NESTING`] levels.
//!
//! The walk follows `amq-protocol`'s grammar and stops where `amq-protocol` would stop
//! (a value running past its container, an unknown type octet): input that is
//! malformed before it gets too deep is let through, and `amq-protocol` refuses it
//! without having recursed further than the walk did. Table keys are not checked for
//! UTF-8 (`amq-protocol` stops at a bad key; the walk goes on, which can only refuse
//! more), so "passes the check" implies "`amq-protocol` recurses at most
//! [`MAX_NESTING`] levels". The fuzz target `field_table` checks exactly that.

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::FieldTable;

/// The deepest field-table nesting accepted, counting the outermost table as level 1
/// (so 31 levels of tables or arrays inside it). RabbitMQ's own headers (`x-death`: a
/// table in an array in the headers table, with an array inside) use four.
pub const MAX_NESTING: usize = 32;

/// A field table nested deeper than [`MAX_NESTING`] levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooDeep;

impl std::fmt::Display for TooDeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "field table nested deeper than {MAX_NESTING} levels")
    }
}

fn read_u32(input: &[u8], at: usize) -> Option<usize> {
    let b = input.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Checks the field table whose 4-byte length prefix starts `input` (what follows the
/// table is ignored).
pub fn check_table(input: &[u8]) -> Result<(), TooDeep> {
    // Per open container: where it ends, and whether its entries have keys (a table)
    // or not (an array).
    let mut open = [(0usize, false); MAX_NESTING];
    let Some(len) = read_u32(input, 0) else {
        return Ok(());
    };
    let end = 4 + len;
    if end > input.len() {
        return Ok(());
    }
    open[0] = (end, true);
    let mut depth = 1;
    let mut pos = 4;
    while depth > 0 {
        let (end, is_table) = open[depth - 1];
        if pos == end {
            depth -= 1;
            continue;
        }
        let body = &input[..end];
        if is_table {
            let Some(&key_len) = body.get(pos) else {
                return Ok(());
            };
            pos += 1 + usize::from(key_len);
        }
        let Some(&kind) = body.get(pos) else {
            return Ok(());
        };
        pos += 1;
        let size = match kind {
            b'V' => 0,
            b't' | b'b' | b'B' => 1,
            b's' | b'U' | b'u' => 2,
            b'I' | b'i' | b'f' => 4,
            b'D' => 5,
            b'L' | b'l' | b'd' | b'T' => 8,
            b'S' | b'x' | b'A' | b'F' => {
                let Some(n) = read_u32(body, pos) else {
                    return Ok(());
                };
                pos += 4;
                if kind == b'A' || kind == b'F' {
                    if pos + n > end {
                        return Ok(());
                    }
                    if depth == MAX_NESTING {
                        return Err(TooDeep);
                    }
                    open[depth] = (pos + n, kind == b'F');
                    depth += 1;
                    continue;
                }
                n
            }
            _ => return Ok(()),
        };
        pos += size;
        if pos > end {
            return Ok(());
        }
    }
    Ok(())
}

/// Skips `shorts` 16-bit fields, `strings` short strings and `octets` octets; the
/// offset after them.
fn skip(input: &[u8], shorts: usize, strings: usize, octets: usize) -> Option<usize> {
    let mut pos = 2 * shorts;
    for _ in 0..strings {
        pos += 1 + usize::from(*input.get(pos)?);
    }
    Some(pos + octets)
}

/// Checks the field table of a method payload (class id, method id, arguments), for the
/// methods that carry one (AMQP 0-9-1's argument layouts, as `amq-protocol` parses
/// them); other methods pass.
pub fn check_method(payload: &[u8]) -> Result<(), TooDeep> {
    let [c0, c1, m0, m1, args @ ..] = payload else {
        return Ok(());
    };
    let table_at = match (u16::from_be_bytes([*c0, *c1]), u16::from_be_bytes([*m0, *m1])) {
        // connection.start: version major and minor, server properties.
        (10, 10) => Some(2),
        // connection.start-ok: client properties first.
        (10, 11) => Some(0),
        // exchange.declare: ticket, exchange, type, flags, arguments.
        (40, 10) => skip(args, 1, 2, 1),
        // exchange.bind / unbind: ticket, destination, source, routing key, no-wait.
        (40, 30) | (40, 40) => skip(args, 1, 3, 1),
        // queue.declare: ticket, queue, flags.
        (50, 10) => skip(args, 1, 1, 1),
        // queue.bind: ticket, queue, exchange, routing key, no-wait.
        (50, 20) => skip(args, 1, 3, 1),
        // queue.unbind: ticket, queue, exchange, routing key (no flags).
        (50, 50) => skip(args, 1, 3, 0),
        // basic.consume: ticket, queue, consumer tag, flags.
        (60, 20) => skip(args, 1, 2, 1),
        _ => None,
    };
    match table_at.and_then(|at| args.get(at..)) {
        Some(table) => check_table(table),
        None => Ok(()),
    }
}

/// Checks the `headers` table of a content header's property list (flags first).
pub fn check_properties(raw: &[u8]) -> Result<(), TooDeep> {
    let Some(flags) = raw.first_chunk::<2>() else {
        return Ok(());
    };
    let flags = u16::from_be_bytes(*flags);
    if flags & (1 << 13) == 0 {
        return Ok(());
    }
    // content-type and content-encoding (short strings) come before the headers.
    let strings = usize::from(flags & (1 << 15) != 0) + usize::from(flags & (1 << 14) != 0);
    match skip(&raw[2..], 0, strings, 0).and_then(|at| raw.get(2 + at..)) {
        Some(table) => check_table(table),
        None => Ok(()),
    }
}

/// `amq-protocol`'s property decoder behind [`check_properties`]: `None` if the
/// properties are malformed or nest too deep.
pub fn parse_properties(raw: &[u8]) -> Option<AMQPProperties> {
    check_properties(raw).ok()?;
    amq_protocol::protocol::basic::parse_properties(raw).ok().map(|(_, p)| p)
}

/// `amq-protocol`'s table decoder behind [`check_table`]: the table that fills all of
/// `input`; `None` if it is malformed, nests too deep or is followed by more bytes.
#[cfg(test)]
fn parse_table(input: &[u8]) -> Option<FieldTable> {
    check_table(input).ok()?;
    match amq_protocol::types::parsing::parse_field_table(input) {
        Ok(([], table)) => Some(table),
        _ => None,
    }
}

/// How deeply a decoded table nests (the table itself is level 1). Recursive: only for
/// values that passed [`check_table`] (tests and fuzz targets).
#[doc(hidden)]
pub fn depth_of_table(t: &FieldTable) -> usize {
    1 + t.inner().values().map(depth_of_value).max().unwrap_or(0)
}

fn depth_of_value(v: &amq_protocol::types::AMQPValue) -> usize {
    use amq_protocol::types::AMQPValue;
    match v {
        AMQPValue::FieldTable(t) => depth_of_table(t),
        AMQPValue::FieldArray(a) => 1 + a.as_slice().iter().map(depth_of_value).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use amq_protocol::protocol::{basic, exchange, gen_class, parse_class, queue, AMQPClass};
    use amq_protocol::types::{AMQPValue, FieldArray};

    /// A value nesting `levels` levels of arrays (or tables) around an integer.
    fn nested(levels: usize, tables: bool) -> AMQPValue {
        let mut v = AMQPValue::LongInt(7);
        for i in 0..levels {
            v = if tables && i % 2 == 0 {
                let mut t = FieldTable::default();
                t.insert("k".into(), v);
                AMQPValue::FieldTable(t)
            } else {
                let mut a = FieldArray::default();
                a.push(AMQPValue::Boolean(true));
                a.push(v);
                AMQPValue::FieldArray(a)
            };
        }
        v
    }

    /// A table of depth `depth` (the table itself counts).
    fn table_of_depth(depth: usize, tables: bool) -> FieldTable {
        let mut t = FieldTable::default();
        t.insert("a".into(), AMQPValue::ShortShortUInt(1));
        t.insert("x".into(), nested(depth - 1, tables));
        t
    }

    fn encode_table(t: &FieldTable) -> Vec<u8> {
        let ctx = amq_protocol::frame::WriteContext::from(Vec::new());
        amq_protocol::types::generation::gen_field_table(t)(ctx).expect("encodes").write
    }

    fn encode_method(m: &AMQPClass) -> Vec<u8> {
        let ctx = amq_protocol::frame::WriteContext::from(Vec::new());
        gen_class(m)(ctx).expect("encodes").write
    }

    /// Builds a nest of `levels` arrays by hand (the recursive encoder is not used, so
    /// the input can be as deep as a peer makes it).
    pub(crate) fn raw_deep_array(levels: usize) -> Vec<u8> {
        let mut v: Vec<u8> = Vec::new();
        for _ in 0..levels {
            let mut outer = vec![b'A'];
            outer.extend_from_slice(&(v.len() as u32).to_be_bytes());
            outer.extend_from_slice(&v);
            v = outer;
        }
        let mut entry = vec![1, b'x'];
        entry.extend_from_slice(&v);
        let mut t = (entry.len() as u32).to_be_bytes().to_vec();
        t.extend_from_slice(&entry);
        t
    }

    #[test]
    fn limit_is_exact() {
        for tables in [false, true] {
            let ok = encode_table(&table_of_depth(MAX_NESTING, tables));
            assert_eq!(check_table(&ok), Ok(()));
            let t = parse_table(&ok).expect("parses");
            assert_eq!(depth_of_table(&t), MAX_NESTING);
            let deep = encode_table(&table_of_depth(MAX_NESTING + 1, tables));
            assert_eq!(check_table(&deep), Err(TooDeep));
            assert_eq!(parse_table(&deep), None);
        }
        assert_eq!(check_table(&raw_deep_array(MAX_NESTING - 1)), Ok(()));
        assert_eq!(check_table(&raw_deep_array(MAX_NESTING)), Err(TooDeep));
        // Thousands of levels: refused without recursing.
        assert_eq!(check_table(&raw_deep_array(100_000)), Err(TooDeep));
    }

    #[test]
    fn every_method_with_a_table_is_checked() {
        let deep = table_of_depth(MAX_NESTING + 1, true);
        let ok = table_of_depth(MAX_NESTING, true);
        let methods = |t: FieldTable| -> Vec<AMQPClass> {
            use amq_protocol::protocol::connection;
            vec![
                AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                    version_major: 0,
                    version_minor: 9,
                    server_properties: t.clone(),
                    mechanisms: "PLAIN".into(),
                    locales: "en_US".into(),
                })),
                AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                    client_properties: t.clone(),
                    mechanism: "PLAIN".into(),
                    response: "x".into(),
                    locale: "en_US".into(),
                })),
                AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                    exchange: "ex".into(),
                    kind: "direct".into(),
                    passive: false,
                    durable: true,
                    auto_delete: false,
                    internal: false,
                    nowait: false,
                    arguments: t.clone(),
                })),
                AMQPClass::Exchange(exchange::AMQPMethod::Bind(exchange::Bind {
                    destination: "d".into(),
                    source: "s".into(),
                    routing_key: "rk".into(),
                    nowait: false,
                    arguments: t.clone(),
                })),
                AMQPClass::Exchange(exchange::AMQPMethod::Unbind(exchange::Unbind {
                    destination: "d".into(),
                    source: "s".into(),
                    routing_key: "rk".into(),
                    nowait: true,
                    arguments: t.clone(),
                })),
                AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                    queue: "q".into(),
                    passive: false,
                    durable: false,
                    exclusive: false,
                    auto_delete: false,
                    nowait: false,
                    arguments: t.clone(),
                })),
                AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                    queue: "q".into(),
                    exchange: "ex".into(),
                    routing_key: "rk".into(),
                    nowait: false,
                    arguments: t.clone(),
                })),
                AMQPClass::Queue(queue::AMQPMethod::Unbind(queue::Unbind {
                    queue: "q".into(),
                    exchange: "ex".into(),
                    routing_key: "rk".into(),
                    arguments: t.clone(),
                })),
                AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                    queue: "q".into(),
                    consumer_tag: "ct".into(),
                    no_local: false,
                    no_ack: false,
                    exclusive: false,
                    nowait: false,
                    arguments: t,
                })),
            ]
        };
        for m in methods(deep) {
            assert_eq!(check_method(&encode_method(&m)), Err(TooDeep), "{m:?}");
        }
        for m in methods(ok) {
            let raw = encode_method(&m);
            assert_eq!(check_method(&raw), Ok(()), "{m:?}");
            assert_eq!(parse_class(raw.as_slice()).map(|(_, c)| c).ok(), Some(m));
        }
    }

    fn encode_properties(p: &AMQPProperties) -> Vec<u8> {
        let ctx = amq_protocol::protocol::basic::gen_properties(p)(amq_protocol::frame::WriteContext::from(Vec::new()));
        ctx.expect("serializes into a Vec").write
    }

    #[test]
    fn content_header_headers_are_checked() {
        let props = |t: FieldTable| {
            encode_properties(
                &AMQPProperties::default()
                    .with_content_type("text/plain".into())
                    .with_content_encoding("gzip".into())
                    .with_headers(t)
                    .with_priority(3),
            )
        };
        let deep = props(table_of_depth(MAX_NESTING + 1, false));
        assert_eq!(check_properties(&deep), Err(TooDeep));
        assert!(parse_properties(&deep).is_none());
        let ok = props(table_of_depth(MAX_NESTING, false));
        assert_eq!(check_properties(&ok), Ok(()));
        assert_eq!(parse_properties(&ok).and_then(|p| *p.priority()), Some(3));
    }

    proptest::proptest! {
        /// On arbitrary bytes: whatever passes the check decodes (if it decodes at all)
        /// to a table no deeper than the limit.
        #[test]
        fn passing_tables_are_shallow(raw in proptest::collection::vec(
            proptest::sample::select(vec![0u8, 1, 2, 4, 5, 8, b'A', b'F', b'S', b'I', b'x', b'k', 0xff]),
            0..200,
        )) {
            if check_table(&raw).is_ok() {
                if let Ok((_, t)) = amq_protocol::types::parsing::parse_field_table(raw.as_slice()) {
                    proptest::prop_assert!(depth_of_table(&t) <= MAX_NESTING);
                }
            }
        }
    }
}
