//! Small helpers with no better home.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Wall-clock milliseconds since the UNIX epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A random 22-character URL-safe name, for server-named queues (`amq.gen-…`) and
/// consumer tags (`amq.ctag-…`). Uniqueness comes from a process-wide counter mixed
/// with the randomly keyed SipHash the standard library seeds per process.
pub fn random_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let state = RandomState::new();
    let mut out = String::with_capacity(22);
    let mut word = 0u64;
    for i in 0..22u64 {
        if i % 10 == 0 {
            let mut h = state.build_hasher();
            h.write_u64(n);
            h.write_u64(i);
            word = h.finish();
        }
        out.push(ALPHABET[(word & 63) as usize] as char);
        word >>= 6;
    }
    out
}

/// Runs a closure if dropped while the thread unwinds from a panic (and never
/// otherwise): puts back what a panicking step had taken.
pub struct OnUnwind<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> OnUnwind<F> {
    pub fn new(f: F) -> Self {
        Self(Some(f))
    }
}

impl<F: FnOnce()> Drop for OnUnwind<F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
}

/// Rate-limited logging of a repeated event (refused logins, failed TLS handshakes): at
/// most one line per interval, each saying how many events it stands for.
#[derive(Default)]
pub struct LogLimiter(std::sync::Mutex<(Option<std::time::Instant>, u64)>);

impl LogLimiter {
    /// Counts one event at `now`. `Some(n)`: log it (at warn level), for the `n` events
    /// since the last line, this one included; `None`: at most at debug level.
    pub fn note(&self, now: std::time::Instant, interval: std::time::Duration) -> Option<u64> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (last, since_last) = &mut *s;
        *since_last += 1;
        match last {
            Some(t) if now.duration_since(*t) < interval => None,
            _ => {
                *last = Some(now);
                Some(std::mem::take(since_last))
            }
        }
    }
}
