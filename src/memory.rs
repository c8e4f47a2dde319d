//! Memory held by messages and by the buffers peers fill, and the memory alarm that
//! blocks publishers.
//!
//! Every message in memory carries a [`MemoryCharge`]: its bytes are added to a
//! process-wide total when it is built and taken off when it is dropped, so the total
//! is exactly what messages hold now (bodies paged out to the store hold nothing).
//! The buffers a peer can make the broker fill are charged the same way, resized as
//! they grow and shrink: a body still arriving (however large its announced size, it
//! costs what has arrived), the uncommitted publishes of a transaction (they are
//! pending messages), and each connection's outbox (replies and deliveries the client
//! has not read yet).
//! The total lives in striped counters, one cache line per stripe and a stripe per
//! thread, so charging a message is an uncontended relaxed add.
//!
//! When the total exceeds the configured limit the alarm is raised: connections that
//! publish stop being read (their clients' writes back up in TCP) and, if they asked
//! for it, get `connection.blocked`; consumers keep going, which is what brings the
//! total down. This is RabbitMQ's memory alarm, applied to message memory rather than
//! to the whole process (connections and queues themselves cost little here, and the
//! allocator may keep freed memory mapped, which would keep an RSS-based alarm raised
//! after the messages are gone).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

/// Bytes a message costs beyond its routing key, properties and body: the `Arc`ed
/// `Message` itself and three allocations' headers.
pub const MESSAGE_OVERHEAD: usize = 160;

const STRIPES: usize = 16;

#[repr(align(64))]
struct Stripe(AtomicI64);

/// One stripe more than threads are spread over: the last is the unit tests' own.
static TOTAL: [Stripe; STRIPES + 1] = [const { Stripe(AtomicI64::new(0)) }; STRIPES + 1];
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MY_STRIPE: std::cell::Cell<usize> =
        std::cell::Cell::new(NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES);
}

fn add(bytes: i64) {
    let i = MY_STRIPE.try_with(std::cell::Cell::get).unwrap_or(0);
    TOTAL[i].0.fetch_add(bytes, Ordering::Relaxed);
}

/// Bytes held by messages in memory now, across all threads.
pub fn message_bytes() -> u64 {
    let sum: i64 = TOTAL.iter().map(|s| s.0.load(Ordering::Relaxed)).sum();
    sum.max(0) as u64
}

/// A message's share of [`message_bytes`], released when the message is dropped.
/// `Default` is a zero charge (for messages that are not counted, e.g. in tests).
#[derive(Debug, Default)]
pub struct MemoryCharge(u32);

impl MemoryCharge {
    /// Charges a message with this much content (key, properties, body) plus
    /// [`MESSAGE_OVERHEAD`].
    pub fn new(content_bytes: usize) -> Self {
        let bytes = content_bytes.saturating_add(MESSAGE_OVERHEAD).min(u32::MAX as usize) as u32;
        add(i64::from(bytes));
        Self(bytes)
    }
}

impl MemoryCharge {
    /// Changes the charge to exactly `bytes` (a buffer that grew or shrank; no
    /// per-message overhead is added).
    pub fn resize(&mut self, bytes: usize) {
        let bytes = bytes.min(u32::MAX as usize) as u32;
        if bytes != self.0 {
            add(i64::from(bytes) - i64::from(self.0));
            self.0 = bytes;
        }
    }

    /// The charge for a message with this routing key, property bytes and body.
    pub fn content(routing_key: &str, raw_properties: &[u8], body: &[u8]) -> Self {
        Self::new(routing_key.len() + raw_properties.len() + body.len())
    }
}

impl Drop for MemoryCharge {
    fn drop(&mut self) {
        if self.0 > 0 {
            add(-i64::from(self.0));
        }
    }
}

/// The memory alarm: raised when message memory goes above the limit, cleared when it
/// is back under 95 % of it (so publishers are not flipped between blocked and
/// unblocked by every delivery near the limit).
#[derive(Debug)]
pub struct MemoryAlarm {
    /// Bytes; 0 disables the alarm.
    limit: u64,
    raised: AtomicBool,
}

impl MemoryAlarm {
    pub fn new(limit: u64) -> Self {
        Self { limit, raised: AtomicBool::new(false) }
    }

    /// The limit in bytes (0: no alarm).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether the alarm is raised now. Re-evaluated on each call (a handful of
    /// loads); the thread that sees a change logs it.
    pub fn is_raised(&self) -> bool {
        if self.limit == 0 {
            return false;
        }
        let bytes = message_bytes();
        let raised = self.raised.load(Ordering::Relaxed);
        if !raised && bytes > self.limit {
            if self.raised.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                log::warn!(
                    "memory alarm set: messages and client buffers hold {bytes} bytes, limit {}; publishers are blocked",
                    self.limit
                );
            }
            return true;
        }
        if raised && bytes <= self.limit / 20 * 19 {
            if self.raised.compare_exchange(true, false, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                log::warn!(
                    "memory alarm cleared: messages and client buffers hold {bytes} bytes, limit {}",
                    self.limit
                );
            }
            return false;
        }
        raised
    }
}

/// The limit for a high watermark given as a fraction of physical memory (as
/// RabbitMQ's `vm_memory_high_watermark`); 0 when physical memory is unknown.
pub fn limit_from_fraction(fraction: f64) -> u64 {
    let Some(total) = physical_memory() else {
        return 0;
    };
    (total as f64 * fraction.clamp(0.0, 1.0)) as u64
}

/// Physical memory in bytes, from `/proc/meminfo` (Linux).
fn physical_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_come_off_when_dropped() {
        // Other tests build messages concurrently: count on a stripe of this test's own.
        let stripe = STRIPES;
        MY_STRIPE.with(|s| s.set(stripe));
        let before = TOTAL[stripe].0.load(Ordering::Relaxed);
        let c = MemoryCharge::new(1000);
        assert_eq!(TOTAL[stripe].0.load(Ordering::Relaxed) - before, (1000 + MESSAGE_OVERHEAD) as i64);
        drop(c);
        assert_eq!(TOTAL[stripe].0.load(Ordering::Relaxed), before);
        drop(MemoryCharge::default());
        assert_eq!(TOTAL[stripe].0.load(Ordering::Relaxed), before);
    }

    #[test]
    fn a_buffer_charge_follows_its_size() {
        let stripe = STRIPES;
        MY_STRIPE.with(|s| s.set(stripe));
        let before = TOTAL[stripe].0.load(Ordering::Relaxed);
        let mut c = MemoryCharge::default();
        c.resize(100);
        assert_eq!(TOTAL[stripe].0.load(Ordering::Relaxed) - before, 100);
        c.resize(150);
        assert_eq!(TOTAL[stripe].0.load(Ordering::Relaxed) - before, 150);
        c.resize(10);
        assert_eq!(TOTAL[stripe].0.load(Ordering::Relaxed) - before, 10);
        drop(c);
        assert_eq!(TOTAL[stripe].0.load(Ordering::Relaxed), before);
    }

    #[test]
    fn a_zero_limit_never_raises() {
        let _c = MemoryCharge::new(10_000);
        assert!(!MemoryAlarm::new(0).is_raised());
        assert!(MemoryAlarm::new(1).is_raised());
    }

    #[test]
    fn the_alarm_clears_below_95_percent_of_the_limit() {
        // Relative to what the process holds now, whatever other tests do (their
        // messages are far smaller than the margins used here).
        let base = message_bytes();
        let limit = base + 1_000_000;
        let alarm = MemoryAlarm::new(limit);
        assert!(!alarm.is_raised());
        let big = MemoryCharge::new(1_010_000);
        assert!(alarm.is_raised());
        drop(big);
        let near = MemoryCharge::new(990_000);
        assert!(alarm.is_raised(), "still within 5 % of the limit");
        drop(near);
        assert!(!alarm.is_raised());
    }

    #[test]
    fn the_fraction_is_of_physical_memory() {
        if let Some(total) = physical_memory() {
            assert_eq!(limit_from_fraction(0.5), total / 2);
            assert_eq!(limit_from_fraction(2.0), total);
        }
    }
}
