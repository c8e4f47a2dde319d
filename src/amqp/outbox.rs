//! A connection's outbound byte buffer, shared by everything that sends to the client.
//!
//! Channel handlers, and queues delivering to this connection's consumers from other
//! tasks, append encoded frames under a short lock; one writer task swaps the buffer
//! out and writes it in a single syscall. Frames produced while a write is in flight
//! therefore coalesce into the next write: writes are batched per socket flush with no
//! per-frame wake-up or copy.
//!
//! When the client reads slower than the broker produces, the buffer passes
//! [`HIGH_WATER`]; queues then stop delivering to this connection and park themselves
//! here, and the writer re-runs their dispatch once the buffer has drained.

use std::sync::{Arc, Mutex, MutexGuard};

use event_listener::Event;

use crate::queue::Queue;

/// Above this many pending bytes, queues stop delivering to the connection.
pub const HIGH_WATER: usize = 4 * 1024 * 1024;

pub struct Outbox {
    inner: Mutex<Inner>,
    ready: Event,
}

struct Inner {
    buf: Vec<u8>,
    closed: bool,
    frame_max: u32,
    /// Queues that held back deliveries because the buffer was over `HIGH_WATER`.
    parked: Vec<Arc<Queue>>,
}

/// Appending access to the buffer; dropping it wakes the writer if needed.
pub struct OutboxGuard<'a> {
    inner: MutexGuard<'a, Inner>,
    was_empty: bool,
    ready: &'a Event,
}

impl OutboxGuard<'_> {
    /// The buffer to append encoded frames to.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.inner.buf
    }

    /// The negotiated maximum frame size, for splitting bodies.
    pub fn frame_max(&self) -> u32 {
        self.inner.frame_max
    }

    /// True once the connection is closing: appended bytes will never be sent.
    pub fn is_closed(&self) -> bool {
        self.inner.closed
    }

    /// True while the client is too far behind to take more deliveries.
    pub fn is_congested(&self) -> bool {
        self.inner.buf.len() > HIGH_WATER
    }

    /// Asks the writer to re-dispatch `queue` once the buffer drains.
    pub fn park(&mut self, queue: &Arc<Queue>) {
        if !self.inner.parked.iter().any(|q| Arc::ptr_eq(q, queue)) {
            self.inner.parked.push(queue.clone());
        }
    }
}

impl Drop for OutboxGuard<'_> {
    fn drop(&mut self) {
        if self.was_empty && !self.inner.buf.is_empty() {
            self.ready.notify(1);
        }
    }
}

impl Outbox {
    pub fn new(frame_max: u32) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                buf: Vec::new(),
                closed: false,
                frame_max,
                parked: Vec::new(),
            }),
            ready: Event::new(),
        })
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the buffer half-valid in a way
        // that matters more than losing the connection, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks the buffer for appending frames.
    pub fn lock(&self) -> OutboxGuard<'_> {
        let inner = self.lock_inner();
        let was_empty = inner.buf.is_empty();
        OutboxGuard { inner, was_empty, ready: &self.ready }
    }

    pub fn set_frame_max(&self, frame_max: u32) {
        self.lock_inner().frame_max = frame_max;
    }

    /// Marks the connection closed: the writer sends what is buffered and stops.
    pub fn close(&self) {
        let parked = {
            let mut inner = self.lock_inner();
            inner.closed = true;
            std::mem::take(&mut inner.parked)
        };
        drop(parked);
        self.ready.notify(usize::MAX);
    }

    /// Waits until there are bytes to send and swaps them into `out` (which must be
    /// empty). Returns false when the outbox is closed and drained.
    pub async fn take(&self, out: &mut Vec<u8>) -> bool {
        loop {
            let listener = {
                let mut inner = self.lock_inner();
                if !inner.buf.is_empty() {
                    std::mem::swap(&mut inner.buf, out);
                    return true;
                }
                if inner.closed {
                    return false;
                }
                self.ready.listen()
            };
            listener.await;
        }
    }

    /// Called by the writer after a write: hands back the queues that parked while the
    /// buffer was over the high-water mark, if it is now below it.
    pub fn drained(&self) -> Vec<Arc<Queue>> {
        let mut inner = self.lock_inner();
        if inner.parked.is_empty() || inner.buf.len() > HIGH_WATER / 2 {
            return Vec::new();
        }
        std::mem::take(&mut inner.parked)
    }
}
