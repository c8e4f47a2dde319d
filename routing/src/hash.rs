//! The consistent-hash exchange (`x-consistent-hash`): a hash ring.
//!
//! Each binding's routing key is a weight `w` (a positive integer); the binding gets
//! `w * POINTS_PER_WEIGHT` points on a 64-bit ring, at positions derived from the
//! destination's identity, the binding key and the point number. A message hashes its
//! routing key (or a header, or a property) to a position and goes to the destination
//! owning the first point at or after it, wrapping around. Adding a binding only moves
//! the messages whose positions fall just before the new points; everything else keeps
//! its destination.
//!
//! Hashing is deterministic (FNV-1a plus a 64-bit finaliser), not `std`'s randomly
//! keyed hasher, so a key maps to the same point in every run as long as the
//! destinations hash the same way.

use std::hash::{Hash, Hasher};

use amq_protocol_types::AMQPValue;

/// Ring points per unit of binding weight.
pub const POINTS_PER_WEIGHT: u32 = 160;

/// Largest weight accepted (keeps a ring to a few million points at most).
pub const MAX_WEIGHT: u32 = 10_000;

/// What a consistent-hash exchange hashes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum HashOn {
    /// The message's routing key (the default).
    #[default]
    RoutingKey,
    /// The value of this message header (`hash-header`).
    Header(std::sync::Arc<str>),
    /// A message property (`hash-property`).
    Property(HashProperty),
}

/// The properties `hash-property` may name (as the RabbitMQ plugin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashProperty {
    MessageId,
    CorrelationId,
    Timestamp,
}

impl HashProperty {
    /// Parses `message_id`, `correlation_id` or `timestamp`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "message_id" => Some(Self::MessageId),
            "correlation_id" => Some(Self::CorrelationId),
            "timestamp" => Some(Self::Timestamp),
            _ => None,
        }
    }
}

/// Parses a consistent-hash binding key as a weight, with the plugin's messages.
pub fn parse_weight(key: &str) -> Result<u32, String> {
    match key.trim().parse::<i64>() {
        Ok(w) if w < 1 => Err("The binding key must be greater than 0".into()),
        Ok(w) if w > MAX_WEIGHT as i64 => Err(format!("The binding key must be at most {MAX_WEIGHT}")),
        Ok(w) => Ok(w as u32),
        Err(_) => Err(format!("The binding key must be an integer: {key:?}")),
    }
}

/// FNV-1a, 64-bit; deterministic across runs and platforms (for fixed input).
#[derive(Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        mix(self.0)
    }
}

/// splitmix64's finaliser: spreads FNV's weak high bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The ring position of a byte string.
pub(crate) fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = Fnv::default();
    h.write(b);
    h.finish()
}

/// The ring position of a header value. Strings hash as their bytes (so a header and
/// a routing key with the same text land on the same point); integers as their
/// decimal text (no allocation); anything else by its type and debug-free structure
/// where cheap, else as a fixed value.
pub(crate) fn hash_value(v: Option<&AMQPValue>) -> u64 {
    match v {
        None => hash_bytes(b""),
        Some(AMQPValue::LongString(s)) => hash_bytes(s.as_bytes()),
        Some(AMQPValue::ShortString(s)) => hash_bytes(s.as_str().as_bytes()),
        Some(AMQPValue::Boolean(b)) => hash_bytes(if *b { b"true" } else { b"false" }),
        Some(AMQPValue::ShortShortInt(n)) => hash_int(*n as i128),
        Some(AMQPValue::ShortShortUInt(n)) => hash_int(*n as i128),
        Some(AMQPValue::ShortInt(n)) => hash_int(*n as i128),
        Some(AMQPValue::ShortUInt(n)) => hash_int(*n as i128),
        Some(AMQPValue::LongInt(n)) => hash_int(*n as i128),
        Some(AMQPValue::LongUInt(n)) => hash_int(*n as i128),
        Some(AMQPValue::LongLongInt(n)) => hash_int(*n as i128),
        Some(AMQPValue::Timestamp(n)) => hash_int(*n as i128),
        Some(AMQPValue::ByteArray(b)) => hash_bytes(b.as_slice()),
        Some(_) => hash_bytes(b"\x00other"),
    }
}

/// Hashes an integer's decimal text without allocating.
pub(crate) fn hash_int(n: i128) -> u64 {
    let mut buf = [0u8; 48];
    let mut i = buf.len();
    let neg = n < 0;
    let mut m = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    if neg {
        i -= 1;
        buf[i] = b'-';
    }
    hash_bytes(&buf[i..])
}

/// A hash ring over destinations `D`.
///
/// `points` is sorted by position; each point names a slot in `slots`. A slot is one
/// (destination, binding key) pair; freed slots are reused.
pub(crate) struct HashRing<D> {
    points: Vec<(u64, u32)>,
    slots: Vec<Option<(D, Box<str>)>>,
    free: Vec<u32>,
}

impl<D> Default for HashRing<D> {
    fn default() -> Self {
        Self { points: Vec::new(), slots: Vec::new(), free: Vec::new() }
    }
}

impl<D: Eq + Hash> HashRing<D> {
    /// Adds the points of binding (`dest`, `key`); the key must parse as a weight
    /// (checked at bind time), else the binding gets weight 1.
    pub(crate) fn insert(&mut self, dest: D, key: &str) {
        let weight = parse_weight(key).unwrap_or(1);
        let mut base = Fnv::default();
        dest.hash(&mut base);
        base.write(key.as_bytes());
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some((dest, key.into()));
                s
            }
            None => {
                self.slots.push(Some((dest, key.into())));
                (self.slots.len() - 1) as u32
            }
        };
        let n = weight * POINTS_PER_WEIGHT;
        self.points.reserve(n as usize);
        for i in 0..n {
            let mut h = base;
            h.write_u32(i);
            self.points.push((h.finish(), slot));
        }
        // Ties (astronomically rare) are broken by slot so the order is deterministic.
        self.points.sort_unstable();
    }

    /// Removes binding (`dest`, `key`); false if it was not on the ring.
    pub(crate) fn remove(&mut self, dest: &D, key: &str) -> bool {
        let Some(slot) = self.slots.iter().position(|s| s.as_ref().is_some_and(|(d, k)| d == dest && &**k == key))
        else {
            return false;
        };
        self.slots[slot] = None;
        self.free.push(slot as u32);
        self.points.retain(|&(_, s)| s as usize != slot);
        true
    }

    /// Removes every binding to `dest`.
    pub(crate) fn remove_dest(&mut self, dest: &D) {
        let gone: Vec<u32> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.as_ref().is_some_and(|(d, _)| d == dest))
            .map(|(i, _)| i as u32)
            .collect();
        if gone.is_empty() {
            return;
        }
        for &s in &gone {
            self.slots[s as usize] = None;
            self.free.push(s);
        }
        self.points.retain(|(_, s)| !gone.contains(s));
    }

    /// The destination owning position `h`: the first point at or after it, wrapping.
    pub(crate) fn lookup(&self, h: u64) -> Option<&D> {
        if self.points.is_empty() {
            return None;
        }
        let i = self.points.partition_point(|&(p, _)| p < h);
        let (_, slot) = self.points[if i == self.points.len() { 0 } else { i }];
        self.slots[slot as usize].as_ref().map(|(d, _)| d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(ring: &HashRing<u32>, n: u32) -> std::collections::HashMap<u32, u32> {
        let mut counts = std::collections::HashMap::new();
        for i in 0..n {
            let k = format!("key-{i}");
            let d = *ring.lookup(hash_bytes(k.as_bytes())).unwrap();
            *counts.entry(d).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn distribution_follows_weights() {
        let mut ring = HashRing::default();
        ring.insert(1u32, "1");
        ring.insert(2u32, "1");
        ring.insert(3u32, "2");
        ring.insert(4u32, "4");
        let n = 80_000;
        let c = spread(&ring, n);
        // Expected shares 1/8, 1/8, 2/8, 4/8; allow ±20% of each share.
        for (d, w) in [(1u32, 1.0), (2, 1.0), (3, 2.0), (4, 4.0)] {
            let expected = n as f64 * w / 8.0;
            let got = c[&d] as f64;
            assert!(
                (got - expected).abs() < expected * 0.2,
                "destination {d}: {got} messages, expected about {expected}"
            );
        }
    }

    #[test]
    fn adding_a_binding_moves_only_what_it_takes() {
        let mut ring = HashRing::default();
        for d in 0..4u32 {
            ring.insert(d, "1");
        }
        let keys: Vec<String> = (0..20_000).map(|i| format!("order-{i}")).collect();
        let before: Vec<u32> = keys.iter().map(|k| *ring.lookup(hash_bytes(k.as_bytes())).unwrap()).collect();
        ring.insert(4u32, "1");
        let mut moved = 0;
        for (k, old) in keys.iter().zip(&before) {
            let new = *ring.lookup(hash_bytes(k.as_bytes())).unwrap();
            if new != *old {
                // A key only ever moves to the new destination.
                assert_eq!(new, 4, "{k} moved from {old} to {new}");
                moved += 1;
            }
        }
        // About 1/5 of the keys move (the new binding's share); never most of them.
        let share = moved as f64 / keys.len() as f64;
        assert!((0.12..0.28).contains(&share), "moved share {share}");
        // Removing it again restores the original mapping exactly.
        assert!(ring.remove(&4, "1"));
        for (k, old) in keys.iter().zip(&before) {
            assert_eq!(ring.lookup(hash_bytes(k.as_bytes())), Some(old));
        }
    }

    #[test]
    fn remove_dest_and_slot_reuse() {
        let mut ring = HashRing::default();
        ring.insert(1u32, "1");
        ring.insert(1u32, "3");
        ring.insert(2u32, "1");
        ring.remove_dest(&1);
        assert_eq!(ring.points.len(), POINTS_PER_WEIGHT as usize);
        assert_eq!(ring.lookup(12345), Some(&2));
        ring.insert(3u32, "1");
        assert_eq!(ring.slots.len(), 3);
        assert!(!ring.remove(&1, "1"));
    }

    #[test]
    fn weights_parse_like_the_plugin() {
        assert_eq!(parse_weight("3"), Ok(3));
        assert!(parse_weight("0").is_err());
        assert!(parse_weight("-1").is_err());
        assert!(parse_weight("abc").is_err());
        assert!(parse_weight("").is_err());
    }

    #[test]
    fn integers_hash_as_their_text() {
        assert_eq!(hash_int(-120), hash_bytes(b"-120"));
        assert_eq!(hash_int(0), hash_bytes(b"0"));
        assert_eq!(hash_value(Some(&AMQPValue::LongInt(42))), hash_bytes(b"42"));
    }
}
