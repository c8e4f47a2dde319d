//! Broker-wide message counts, kept per thread so that counting never contends.
//!
//! Every thread that counts gets its own [`Slot`] (registered on first use); a count
//! is a plain load and store into it. [`totals`] sums the slots. A thread that ends
//! (smol's blocking pool retires idle threads) folds its slot into `RETIRED` and
//! unregisters it under the registry's lock, so a reading counts it exactly once and
//! the registry stays as long as the live threads.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::MessageStats;

/// What the broker counts globally (RabbitMQ's `rabbitmq_global_messages_*`).
#[derive(Clone, Copy, Debug)]
pub enum Event {
    Received,
    Routed,
    Confirmed,
    DeliveredConsume,
    DeliveredConsumeNoAck,
    DeliveredGet,
    DeliveredGetNoAck,
    GetEmpty,
    Redelivered,
    Acknowledged,
    UnroutableReturned,
    UnroutableDropped,
    /// A publish routed from its channel's route cache.
    RouteCacheHit,
}

const EVENTS: usize = 13;

#[derive(Default)]
struct Slot([AtomicU64; EVENTS]);

static REGISTRY: Mutex<Vec<Arc<Slot>>> = Mutex::new(Vec::new());
static RETIRED: Slot = Slot([const { AtomicU64::new(0) }; EVENTS]);

/// This thread's slot, unregistered when the thread ends.
struct Local(Arc<Slot>);

impl Local {
    fn register() -> Self {
        let slot = Arc::new(Slot::default());
        REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).push(slot.clone());
        Local(slot)
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        for (mine, retired) in self.0 .0.iter().zip(&RETIRED.0) {
            retired.fetch_add(mine.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        registry.retain(|s| !Arc::ptr_eq(s, &self.0));
    }
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// Counts `n` events of kind `e` on this thread.
#[inline]
pub fn count(e: Event, n: u64) {
    count_each(&[(e, n)]);
}

/// Counts several events with one look-up of this thread's slot.
#[inline]
pub fn count_each(events: &[(Event, u64)]) {
    // During thread teardown the slot may already be gone: that count is lost, which a
    // statistic can afford.
    let _ = LOCAL.try_with(|l| {
        let mut l = l.borrow_mut();
        let slot = &l.get_or_insert_with(Local::register).0 .0;
        for &(e, n) in events {
            // Only this thread writes its slot.
            let c = &slot[e as usize];
            c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
        }
    });
}

/// The broker-wide totals since start.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    pub messages: MessageStats,
    /// Received messages routed to at least one queue.
    pub routed: u64,
    pub route_cache_hits: u64,
}

/// Sums every thread's counts.
pub fn totals() -> Totals {
    let mut sum = [0u64; EVENTS];
    let registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    for slot in registry.iter().map(|s| &**s).chain(std::iter::once(&RETIRED)) {
        for (acc, c) in sum.iter_mut().zip(&slot.0) {
            *acc = acc.wrapping_add(c.load(Ordering::Relaxed));
        }
    }
    drop(registry);
    let at = |e: Event| sum[e as usize];
    Totals {
        messages: MessageStats {
            publish: at(Event::Received),
            confirm: at(Event::Confirmed),
            deliver: at(Event::DeliveredConsume),
            deliver_no_ack: at(Event::DeliveredConsumeNoAck),
            get: at(Event::DeliveredGet),
            get_no_ack: at(Event::DeliveredGetNoAck),
            get_empty: at(Event::GetEmpty),
            redeliver: at(Event::Redelivered),
            ack: at(Event::Acknowledged),
            return_unroutable: at(Event::UnroutableReturned),
            drop_unroutable: at(Event::UnroutableDropped),
        },
        routed: at(Event::Routed),
        route_cache_hits: at(Event::RouteCacheHit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_ended_threads_are_kept() {
        let before = totals().messages.get_empty;
        count(Event::GetEmpty, 2);
        std::thread::spawn(|| count(Event::GetEmpty, 3)).join().unwrap();
        // Other tests may count concurrently; ours are in.
        assert!(totals().messages.get_empty >= before + 5);
        let slot = std::thread::spawn(|| {
            count(Event::GetEmpty, 1);
            LOCAL.with(|l| Arc::as_ptr(&l.borrow().as_ref().unwrap().0) as usize)
        })
        .join()
        .unwrap();
        let registry = REGISTRY.lock().unwrap();
        assert!(!registry.iter().any(|s| Arc::as_ptr(s) as usize == slot), "an ended thread's slot stays registered");
    }
}
