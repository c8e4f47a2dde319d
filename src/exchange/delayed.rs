//! Delayed messages (`x-delayed-message` exchanges): held until their `x-delay` is up,
//! then routed as the exchange's `x-delayed-type`.
//!
//! One scheduler per vhost: a min-heap ordered by (due time, arrival order) and a
//! dedicated thread that sleeps on a condvar until the earliest due time (or until an
//! earlier message arrives). Due times are absolute `Instant`s fixed at publish, so a
//! large backlog does not drift: however late the thread wakes, it routes everything
//! already due, in due order. The thread starts with the first delayed message and
//! stops when the vhost is dropped.
//!
//! A persistent message on a durable delayed exchange is also written to the store
//! (`StoreOp::PutDelayed`, with its due time as wall-clock ms) before it is confirmed,
//! reloaded at start, and deleted from the store only after the queue entries it became
//! were sent (the store applies ops in order), so it survives restarts and crashes.
//! Transient messages, and those on transient exchanges, live in memory only.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Instant;

use amq_protocol::types::FieldTable;

/// Where due messages go: the vhost, which routes them through their exchange's
/// underlying type. Held weakly: the scheduler's thread stops once it is gone.
pub trait DueRouter: Send + Sync {
    fn route_due(&self, message: DelayedMessage);
}

/// A published message waiting for its delay to end, with what routing it needs.
pub struct DelayedMessage {
    pub due: Instant,
    pub exchange: Arc<str>,
    pub routing_key: Box<str>,
    /// CC/BCC routing keys.
    pub extra_keys: Vec<String>,
    pub headers: Option<FieldTable>,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub timestamp: Option<u64>,
    pub raw_properties: Box<[u8]>,
    pub body: Box<[u8]>,
    pub persistent: bool,
    /// The per-message TTL from `expiration`, applied once it is enqueued.
    pub ttl: Option<u32>,
    /// Its record in the store, for a persistent message on a durable exchange.
    pub store_id: Option<crate::store::MessageId>,
}

struct Entry {
    due: Instant,
    seq: u64,
    msg: DelayedMessage,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due && self.seq == other.seq
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed, so `BinaryHeap` (a max-heap) pops the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Entry>,
    next_seq: u64,
    thread_started: bool,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// The vhost's delayed-message scheduler.
pub struct DelayScheduler {
    shared: Arc<Shared>,
    vhost: Weak<dyn DueRouter>,
}

impl DelayScheduler {
    pub fn new(vhost: Weak<dyn DueRouter>) -> Self {
        Self { shared: Arc::default(), vhost }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `msg` until `msg.due`.
    pub fn schedule(&self, msg: DelayedMessage) {
        let mut st = self.lock();
        let seq = st.next_seq;
        st.next_seq += 1;
        let earliest = st.heap.peek().is_none_or(|e| msg.due < e.due);
        st.heap.push(Entry { due: msg.due, seq, msg });
        if !st.thread_started {
            st.thread_started = true;
            let shared = self.shared.clone();
            let vhost = self.vhost.clone();
            let spawned = std::thread::Builder::new().name("haremq-delayed".into()).spawn(move || run(shared, vhost));
            if let Err(e) = spawned {
                log::error!("cannot start the delayed-message thread: {e}");
                st.thread_started = false;
            }
        } else if earliest {
            self.shared.wake.notify_one();
        }
    }

    /// Drops the held messages of `exchange` (it was deleted), as the plugin does;
    /// returns the store ids of the dropped ones.
    pub fn forget_exchange(&self, exchange: &str) -> Vec<crate::store::MessageId> {
        let mut st = self.lock();
        let mut dropped = Vec::new();
        if st.heap.iter().any(|e| &*e.msg.exchange == exchange) {
            let heap = std::mem::take(&mut st.heap);
            st.heap = heap
                .into_iter()
                .filter(|e| {
                    let keep = &*e.msg.exchange != exchange;
                    if !keep {
                        dropped.extend(e.msg.store_id);
                    }
                    keep
                })
                .collect();
        }
        dropped
    }
}

impl DelayScheduler {
    /// Drops every held message (the vhost was deleted; the store's rows go with it).
    pub fn forget_all(&self) {
        self.lock().heap.clear();
    }
}

impl Drop for DelayScheduler {
    fn drop(&mut self) {
        self.lock().stop = true;
        self.shared.wake.notify_one();
    }
}

/// The scheduler thread: route whatever is due, then sleep until the next due time.
fn run(shared: Arc<Shared>, vhost: Weak<dyn DueRouter>) {
    let mut due = Vec::new();
    loop {
        {
            let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if st.stop {
                    return;
                }
                let now = Instant::now();
                while st.heap.peek().is_some_and(|e| e.due <= now) {
                    if let Some(e) = st.heap.pop() {
                        due.push(e.msg);
                    }
                }
                if !due.is_empty() {
                    break;
                }
                st = match st.heap.peek() {
                    Some(e) => {
                        let wait = e.due.saturating_duration_since(now);
                        shared.wake.wait_timeout(st, wait).unwrap_or_else(|e| e.into_inner()).0
                    }
                    None => shared.wake.wait(st).unwrap_or_else(|e| e.into_inner()),
                };
            }
        }
        // Route outside the lock, in due order.
        let Some(vh) = vhost.upgrade() else {
            return;
        };
        for msg in due.drain(..) {
            // A bug routing one message must not stop every later one.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| vh.route_due(msg))).is_err() {
                log::error!("routing a due delayed message panicked; the message is dropped");
            }
        }
    }
}
