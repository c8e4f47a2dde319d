//! Erlang's `erlang:phash2/2`, for the terms a binding's arguments are in RabbitMQ,
//! so that HareMQ computes the same binding `properties_key` (RabbitMQ appends
//! `phash2(Arguments, 2^32)` to it). `phash2` is specified as stable across Erlang
//! nodes and releases; the algorithm is ERTS's `make_hash2` (Bob Jenkins' 96-bit mix
//! over the term's structure), written here from its description for the few term
//! types a field table becomes: lists, tuples, binaries, atoms, integers, floats.
//!
//! A field table is, in RabbitMQ, a list of `{Name :: binary, Type :: atom, Value}`
//! tuples in the order received; values are binaries (`longstr`, `binary`),
//! integers, floats, `true`/`false`, `undefined` (`void`), nested tables (lists of
//! the same tuples), arrays (lists of `{Type, Value}`) and decimals (`{Scale, Value}`).

use amq_protocol::types::{AMQPValue, FieldTable};

/// A term of the subset hashed.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    List(Vec<Term>),
    Tuple(Vec<Term>),
    Binary(Vec<u8>),
    Atom(&'static str),
    Int(i64),
    Float(f64),
}

const GOLDEN: u32 = 0x9e37_79b9;

/// `GOLDEN * n` (wrapping): ERTS's per-type constants.
const fn golden(n: u32) -> u32 {
    GOLDEN.wrapping_mul(n)
}

fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*b).wrapping_sub(*c) ^ (*c >> 13);
    *b = b.wrapping_sub(*c).wrapping_sub(*a) ^ (*a << 8);
    *c = c.wrapping_sub(*a).wrapping_sub(*b) ^ (*b >> 13);
    *a = a.wrapping_sub(*b).wrapping_sub(*c) ^ (*c >> 12);
    *b = b.wrapping_sub(*c).wrapping_sub(*a) ^ (*a << 16);
    *c = c.wrapping_sub(*a).wrapping_sub(*b) ^ (*b >> 5);
    *a = a.wrapping_sub(*b).wrapping_sub(*c) ^ (*c >> 3);
    *b = b.wrapping_sub(*c).wrapping_sub(*a) ^ (*a << 10);
    *c = c.wrapping_sub(*a).wrapping_sub(*b) ^ (*b >> 15);
}

/// Mixes two words (offset by a type constant) into the running hash.
fn mix2(hash: &mut u32, x: u32, y: u32, constant: u32) {
    let (mut a, mut b) = (constant.wrapping_add(x), constant.wrapping_add(y));
    mix(&mut a, &mut b, hash);
}

/// Jenkins' block hash of a binary, seeded with `init`.
fn block_hash(bytes: &[u8], init: u32) -> u32 {
    let (mut a, mut b, mut c) = (GOLDEN, GOLDEN, init);
    let word = |k: &[u8]| u32::from_le_bytes([k[0], k[1], k[2], k[3]]);
    let mut chunks = bytes.chunks_exact(12);
    for k in &mut chunks {
        a = a.wrapping_add(word(&k[0..4]));
        b = b.wrapping_add(word(&k[4..8]));
        c = c.wrapping_add(word(&k[8..12]));
        mix(&mut a, &mut b, &mut c);
    }
    let rest = chunks.remainder();
    c = c.wrapping_add(bytes.len() as u32);
    for (i, byte) in rest.iter().enumerate() {
        let v = u32::from(*byte);
        // The first byte of c is the length's: the tail's bytes 8.. go one byte up.
        match i {
            0..=3 => a = a.wrapping_add(v << (8 * i)),
            4..=7 => b = b.wrapping_add(v << (8 * (i - 4))),
            _ => c = c.wrapping_add(v << (8 * (i - 7))),
        }
    }
    mix(&mut a, &mut b, &mut c);
    c
}

/// ERTS's atom hash: `hashpjw` over the name (ASCII names only here).
fn atom_hash(name: &str) -> u32 {
    let mut h: u32 = 0;
    for b in name.bytes() {
        h = (h << 4).wrapping_add(u32::from(b));
        let g = h & 0xf000_0000;
        if g != 0 {
            h ^= g >> 24;
            h ^= g;
        }
    }
    h
}

fn hash_int(hash: &mut u32, n: i64) {
    if (-(1i64 << 27)..(1i64 << 27)).contains(&n) {
        // A small integer of 28 bits: negative ones are mixed twice, as ERTS does.
        if n < 0 {
            mix2(hash, n.unsigned_abs() as u32, 0, GOLDEN);
        }
        mix2(hash, n as u32, 0, GOLDEN);
    } else {
        // Larger ones as ERTS's bignum digits: the magnitude's two 32-bit halves.
        let constant = if n < 0 { golden(10) } else { golden(11) };
        let m = n.unsigned_abs();
        mix2(hash, m as u32, (m >> 32) as u32, constant);
    }
}

/// `erlang:phash2(Term, 1 bsl 32)`. ERTS walks the term depth-first with one
/// running hash: a list's elements in order (runs of bytes packed four to a word),
/// then its tail `[]`; a tuple's arity, then its elements.
pub fn phash2(term: &Term) -> u32 {
    let mut hash = 0;
    walk(&mut hash, term);
    hash
}

/// An AMQP field table as the Erlang term RabbitMQ holds it.
pub fn table_term(table: &FieldTable) -> Term {
    Term::List(
        table
            .inner()
            .iter()
            .map(|(k, v)| {
                let (kind, value) = value_term(v);
                Term::Tuple(vec![Term::Binary(k.as_str().as_bytes().to_vec()), Term::Atom(kind), value])
            })
            .collect(),
    )
}

/// A field value's RabbitMQ type name and value term.
fn value_term(v: &AMQPValue) -> (&'static str, Term) {
    match v {
        AMQPValue::Boolean(b) => ("bool", Term::Atom(if *b { "true" } else { "false" })),
        AMQPValue::ShortShortInt(n) => ("byte", Term::Int(i64::from(*n))),
        AMQPValue::ShortShortUInt(n) => ("unsignedbyte", Term::Int(i64::from(*n))),
        AMQPValue::ShortInt(n) => ("short", Term::Int(i64::from(*n))),
        AMQPValue::ShortUInt(n) => ("unsignedshort", Term::Int(i64::from(*n))),
        AMQPValue::LongInt(n) => ("signedint", Term::Int(i64::from(*n))),
        AMQPValue::LongUInt(n) => ("unsignedint", Term::Int(i64::from(*n))),
        AMQPValue::LongLongInt(n) => ("long", Term::Int(*n)),
        AMQPValue::Float(f) => ("float", Term::Float(f64::from(*f))),
        AMQPValue::Double(f) => ("double", Term::Float(*f)),
        AMQPValue::DecimalValue(d) => {
            ("decimal", Term::Tuple(vec![Term::Int(i64::from(d.scale)), Term::Int(i64::from(d.value))]))
        }
        AMQPValue::ShortString(s) => ("shortstr", Term::Binary(s.as_str().as_bytes().to_vec())),
        AMQPValue::LongString(s) => ("longstr", Term::Binary(s.as_bytes().to_vec())),
        AMQPValue::ByteArray(b) => ("binary", Term::Binary(b.as_slice().to_vec())),
        AMQPValue::Timestamp(t) => ("timestamp", Term::Int(i64::try_from(*t).unwrap_or(i64::MAX))),
        AMQPValue::FieldTable(t) => ("table", table_term(t)),
        AMQPValue::FieldArray(a) => (
            "array",
            Term::List(
                a.as_slice()
                    .iter()
                    .map(|v| {
                        let (kind, value) = value_term(v);
                        Term::Tuple(vec![Term::Atom(kind), value])
                    })
                    .collect(),
            ),
        ),
        AMQPValue::Void => ("void", Term::Atom("undefined")),
    }
}

/// One step of the traversal: mixes `term` into the running hash.
fn walk(hash: &mut u32, term: &Term) {
    match term {
        Term::List(items) => {
            let mut i = 0;
            loop {
                let mut packed: u32 = 0;
                let mut count = 0;
                while let Some(Term::Int(b @ 0..=255)) = items.get(i) {
                    packed = (packed << 8).wrapping_add(*b as u32);
                    count += 1;
                    i += 1;
                    if count == 4 {
                        mix2(hash, packed, 0, golden(4));
                        packed = 0;
                        count = 0;
                    }
                }
                if count > 0 {
                    mix2(hash, packed, 0, golden(4));
                }
                match items.get(i) {
                    Some(element) => {
                        i += 1;
                        walk(hash, element);
                    }
                    None => break,
                }
            }
            // The proper list's tail, `[]`.
            if *hash == 0 {
                *hash = 3_468_870_702;
            } else {
                mix2(hash, 2, 0, golden(2));
            }
        }
        Term::Tuple(elements) => {
            mix2(hash, elements.len() as u32, 0, golden(9));
            for e in elements {
                walk(hash, e);
            }
        }
        Term::Binary(bytes) => {
            let seed = golden(13).wrapping_add(*hash);
            *hash = if bytes.is_empty() { seed } else { block_hash(bytes, seed) };
        }
        Term::Atom(name) => {
            if *hash == 0 {
                *hash = atom_hash(name);
            } else {
                mix2(hash, atom_hash(name), 0, golden(3));
            }
        }
        Term::Int(n) => hash_int(hash, *n),
        Term::Float(f) => {
            let bits = if *f == 0.0 { 0.0f64 } else { *f }.to_bits();
            mix2(hash, (bits >> 32) as u32, bits as u32, golden(12));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Term::*;
    use super::*;

    fn bin(s: &str) -> Term {
        Binary(s.as_bytes().to_vec())
    }

    /// Values computed with `erlang:phash2(T, 1 bsl 32)` on Erlang/OTP (RabbitMQ
    /// 3.10's runtime).
    #[test]
    fn matches_erlang() {
        let cases: Vec<(Term, u32)> = vec![
            (List(vec![Tuple(vec![bin("x-a"), Atom("longstr"), bin("b")])]), 972_033_351),
            (List(vec![]), 3_468_870_702),
            (List(vec![Int(1), Int(2), Int(3), Int(4), Int(5), Int(300), Int(7)]), 2_108_297_462),
            (
                Tuple(vec![
                    Atom("a"),
                    bin("0123456789abcdefghij"),
                    Int(-5),
                    Int(1 << 40),
                    Int(-(1 << 30)),
                    Float(1.5),
                    Float(0.0),
                ]),
                3_394_485_108,
            ),
            (
                List(vec![
                    Tuple(vec![bin("t"), Atom("table"), List(vec![Tuple(vec![bin("k"), Atom("bool"), Atom("true")])])]),
                    Tuple(vec![
                        bin("arr"),
                        Atom("array"),
                        List(vec![Tuple(vec![Atom("long"), Int(1)]), Tuple(vec![Atom("longstr"), bin("s")])]),
                    ]),
                    Tuple(vec![bin("v"), Atom("void"), Atom("undefined")]),
                ]),
                4_069_397_915,
            ),
            (bin(""), 147_926_629),
            (List(vec![bin("")]), 440_873_397),
        ];
        for (term, expected) in cases {
            assert_eq!(phash2(&term), expected, "{term:?}");
        }
    }
}
