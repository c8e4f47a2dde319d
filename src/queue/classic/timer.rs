//! One process-wide timer thread for queue deadlines: the expiry of a queue's head
//! message (x-message-ttl / `expiration`) and the queue's own x-expires.
//!
//! A queue schedules a wake-up only when its next deadline becomes *earlier* than the one
//! already scheduled (see `QueueState::timer_at`), so the heap holds about one entry per
//! queue with a deadline, not one per message. The timer holds queues weakly: a deleted
//! queue's entries just fall out. A wake-up that turns out early or stale is harmless —
//! the queue re-checks its state and schedules its next deadline.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::Instant;

use super::ClassicQueue;

struct Due {
    at: Instant,
    seq: u64,
    queue: Weak<ClassicQueue>,
}

impl PartialEq for Due {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Due {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

#[derive(Default)]
struct Timers {
    heap: Mutex<(BinaryHeap<Reverse<Due>>, u64)>,
    wake: Condvar,
}

fn timers() -> &'static Arc<Timers> {
    static TIMERS: OnceLock<Arc<Timers>> = OnceLock::new();
    TIMERS.get_or_init(|| {
        let t = Arc::new(Timers::default());
        let worker = t.clone();
        if let Err(e) = std::thread::Builder::new().name("haremq-timer".into()).spawn(move || worker.run()) {
            // Without it TTL expiry and x-expires only happen on queue activity.
            log::error!("cannot start the queue timer thread: {e}");
        }
        t
    })
}

/// Calls `queue.on_timer()` at (or shortly after) `at`.
pub fn schedule(at: Instant, queue: Weak<ClassicQueue>) {
    let t = timers();
    let mut g = t.heap.lock().unwrap_or_else(|e| e.into_inner());
    let seq = g.1;
    g.1 += 1;
    let earliest = g.0.peek().is_none_or(|Reverse(d)| at < d.at);
    g.0.push(Reverse(Due { at, seq, queue }));
    drop(g);
    if earliest {
        t.wake.notify_one();
    }
}

impl Timers {
    fn run(&self) {
        let mut g = self.heap.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = Instant::now();
            match g.0.peek() {
                None => g = self.wake.wait(g).unwrap_or_else(|e| e.into_inner()),
                Some(Reverse(d)) if d.at > now => {
                    let wait = d.at - now;
                    g = self.wake.wait_timeout(g, wait).unwrap_or_else(|e| e.into_inner()).0;
                }
                Some(_) => {
                    let Some(Reverse(due)) = g.0.pop() else { continue };
                    drop(g);
                    if let Some(q) = due.queue.upgrade() {
                        // Never let one queue's failure stop every other queue's timers.
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| q.on_timer(due.at)));
                        if r.is_err() {
                            log::error!("queue '{}': timer handler panicked", q.name);
                        }
                    }
                    g = self.heap.lock().unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }
}
