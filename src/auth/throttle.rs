//! Failed logins are slow: each is answered (403 ACCESS_REFUSED, RabbitMQ's reply,
//! unchanged) [`FAILED_LOGIN_DELAY`] after it was checked, and failures from one source
//! address are answered one after another, each a delay after the previous one. An
//! attempt from an address whose failures are still being answered waits until they
//! are before its credentials are checked, so opening many connections at once does not
//! multiply the guesses an address gets: about one failed guess a second in the long
//! run. Other addresses are not slowed at all (the waits are timers in the waiting
//! connection's own task); a client sharing an address with a guesser waits its turn,
//! and one whose turn is further off than the handshake timeout (10 s) is dropped.
//!
//! Refused logins are logged at most once per [`LOG_INTERVAL`] at warn level, the line
//! counting the refusals since the previous one; the others go to debug level.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a failed login waits before its 403.
pub const FAILED_LOGIN_DELAY: Duration = Duration::from_secs(1);
/// At most one warn-level line about refused logins per this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Addresses tracked at once; past that, expired entries are dropped, and an address
/// that still finds no room gets the plain delay without the per-address ordering.
const MAX_TRACKED: usize = 4096;

#[derive(Default)]
pub struct LoginThrottle {
    /// Per address: until when its failed logins are being answered.
    busy_until: Mutex<HashMap<IpAddr, Instant>>,
    log: crate::util::LogLimiter,
}

impl LoginThrottle {
    /// When an attempt from `ip` may be checked: `None` at once, else after that
    /// address's pending failures have been answered.
    pub fn turn(&self, ip: IpAddr, now: Instant) -> Option<Instant> {
        let map = self.busy_until.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&ip).copied().filter(|t| *t > now)
    }

    /// Records a failed login from `ip` and returns when to answer it.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Instant {
        let mut map = self.busy_until.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, t| *t > now);
            if map.len() >= MAX_TRACKED {
                return now + FAILED_LOGIN_DELAY;
            }
        }
        let slot = map.entry(ip).or_insert(now);
        *slot = (*slot).max(now) + FAILED_LOGIN_DELAY;
        *slot
    }

    /// Whether to log this refusal at warn level, and how many refusals that line
    /// covers (this one included); `None`: log it at debug level only.
    pub fn should_log(&self, now: Instant) -> Option<u64> {
        self.log.note(now, LOG_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_from_one_address_are_answered_a_delay_apart() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(t.turn(a, now), None);
        assert_eq!(t.failed(a, now), now + FAILED_LOGIN_DELAY);
        assert_eq!(t.failed(a, now), now + 2 * FAILED_LOGIN_DELAY);
        // The next attempt from a waits for both; b is not affected.
        assert_eq!(t.turn(a, now), Some(now + 2 * FAILED_LOGIN_DELAY));
        assert_eq!(t.turn(b, now), None);
        assert_eq!(t.failed(b, now), now + FAILED_LOGIN_DELAY);
        // Once answered, an address starts afresh.
        let later = now + 5 * FAILED_LOGIN_DELAY;
        assert_eq!(t.turn(a, later), None);
        assert_eq!(t.failed(a, later), later + FAILED_LOGIN_DELAY);
    }

    #[test]
    fn the_map_is_bounded() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..MAX_TRACKED as u32 {
            t.failed(IpAddr::from(i.to_be_bytes()), now);
        }
        let extra = IpAddr::from([255, 255, 255, 255]);
        assert_eq!(t.failed(extra, now), now + FAILED_LOGIN_DELAY);
        assert_eq!(t.turn(extra, now), None);
        assert_eq!(t.busy_until.lock().unwrap().len(), MAX_TRACKED);
        // Expired entries make room.
        let later = now + 2 * FAILED_LOGIN_DELAY;
        t.failed(extra, later);
        assert_eq!(t.turn(extra, later), Some(later + FAILED_LOGIN_DELAY));
        assert_eq!(t.busy_until.lock().unwrap().len(), 1);
    }

    #[test]
    fn logging_is_rate_limited() {
        let t = LoginThrottle::default();
        let now = Instant::now();
        assert_eq!(t.should_log(now), Some(1));
        for i in 1..=5 {
            assert_eq!(t.should_log(now + Duration::from_secs(i)), None);
        }
        assert_eq!(t.should_log(now + LOG_INTERVAL), Some(6));
        assert_eq!(t.should_log(now + LOG_INTERVAL), None);
    }
}
