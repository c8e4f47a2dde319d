//! Shared run state: stop flag, first error, per-role counters and latency histograms
//! (send → receive at consumers, publish → confirm at publishers).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use event_listener::Event;
use hdrhistogram::Histogram;

/// Latencies are recorded in microseconds, up to one hour.
pub const HIST_MAX_US: u64 = 3_600_000_000;

pub fn new_hist() -> Histogram<u64> {
    // Cannot fail for these constant bounds; fall back to an auto-resizing one anyway.
    Histogram::new_with_max(HIST_MAX_US, 3).unwrap_or_else(|_| {
        let mut h = Histogram::new(3).expect("3 significant figures is valid");
        h.auto(true);
        h
    })
}

/// Nanoseconds since the UNIX epoch: the common clock publishers stamp and consumers read.
#[inline]
pub fn now_ns() -> u64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as u64,
        Err(_) => 0,
    }
}

pub struct PubStats {
    pub sent: AtomicU64,
    pub confirmed: AtomicU64,
    pub nacked: AtomicU64,
    pub done: AtomicBool,
    /// Confirm latencies (µs, publish → basic.ack) of acked messages, for the summary.
    pub confirm_hist: Mutex<Histogram<u64>>,
}

impl PubStats {
    pub fn new() -> PubStats {
        PubStats {
            sent: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            nacked: AtomicU64::new(0),
            done: AtomicBool::new(false),
            confirm_hist: Mutex::new(new_hist()),
        }
    }
}

pub struct ConStats {
    pub received: AtomicU64,
    pub done: AtomicBool,
    /// Latencies (µs) since the reporter last drained it.
    pub hist: Mutex<Histogram<u64>>,
}

impl ConStats {
    pub fn new() -> ConStats {
        ConStats { received: AtomicU64::new(0), done: AtomicBool::new(false), hist: Mutex::new(new_hist()) }
    }
}

pub struct Shared {
    stop: AtomicBool,
    stop_event: Event,
    error: Mutex<Option<String>>,
}

impl Shared {
    pub fn new() -> Shared {
        Shared { stop: AtomicBool::new(false), stop_event: Event::new(), error: Mutex::new(None) }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.stop_event.notify(usize::MAX);
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Records the first error and stops the run.
    pub fn fail(&self, e: String) {
        if let Ok(mut slot) = self.error.lock() {
            if slot.is_none() {
                *slot = Some(e);
            }
        }
        self.stop();
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }

    /// Resolves once `stop` has been called.
    pub async fn stopped(&self) {
        loop {
            if self.is_stopped() {
                return;
            }
            let listener = self.stop_event.listen();
            if self.is_stopped() {
                return;
            }
            listener.await;
        }
    }
}

/// Reads VmRSS (KiB) of a process from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
