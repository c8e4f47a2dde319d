//! A connection's outbound byte buffer, shared by everything that sends to the client.
//!
//! Channel handlers, and queues delivering to this connection's consumers from other
//! tasks, append encoded frames under a short lock. A connection task that produced
//! frames while handling a read writes them to the socket itself when the read's
//! [`Batch`] ends; otherwise (and for what the socket did not take) one writer task
//! swaps the buffer out and writes it in a single syscall. Either way writes are
//! batched per socket flush with no per-frame wake-up or copy.
//!
//! When the client reads slower than the broker produces, the buffer passes
//! [`HIGH_WATER`]; queues then stop delivering to this connection and park themselves
//! here, and the writer re-runs their dispatch once the buffer has drained. Replies are
//! bounded the same way from the other side: the connection stops handling the
//! client's frames while more than [`HIGH_WATER`] bytes are queued or being written
//! (see [`Outbox::queued`]), so a client that sends requests but never reads is sent at
//! most the high-water mark plus one message. What the outbox holds is charged to the
//! memory alarm.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use event_listener::Event;
use smol::Async;

use crate::memory::MemoryCharge;
use crate::queue::Queue;

/// Above this many pending bytes, queues stop delivering to the connection.
pub const HIGH_WATER: usize = 4 * 1024 * 1024;

pub struct Outbox {
    inner: Mutex<Inner>,
    ready: Event,
    /// Bytes buffered plus bytes the writer is writing, mirrored from `Inner` so the
    /// connection task can check it per frame without the lock.
    queued: AtomicUsize,
    /// Notified when the writer finished a write (or the outbox closed).
    written: Event,
    /// The socket, for writing straight from a connection task at the end of its read
    /// batch (see [`Batch`]).
    socket: OnceLock<Arc<Async<std::net::TcpStream>>>,
    /// Bytes handed to the socket, counted under the `inner` lock.
    sent: crate::stats::Counter,
}

struct Inner {
    buf: Vec<u8>,
    /// The writer task has taken bytes and is writing them: nobody else may write to
    /// the socket until it is done, or bytes would be reordered.
    writing: bool,
    closed: bool,
    frame_max: u32,
    /// Queues that held back deliveries because the buffer was over `HIGH_WATER`.
    parked: Vec<Arc<Queue>>,
    /// Bytes the writer took and has not finished writing.
    in_flight: usize,
    /// `buf` and the bytes in flight, charged to the memory alarm.
    charge: MemoryCharge,
    /// What the last count found (`queued` and the charge hold it).
    counted: usize,
}

/// Appends leave a buffer below this many bytes uncounted (when nothing else is
/// counted): the counts matter near the high-water mark and for memory in bulk, and
/// the common small append then costs one comparison.
const COUNT_FROM: usize = 64 * 1024;

impl Inner {
    /// Re-counts what the outbox holds (after the buffer or the bytes in flight changed).
    fn recount(&mut self, queued: &AtomicUsize) {
        let total = self.buf.len() + self.in_flight;
        self.charge.resize(total);
        queued.store(total, Ordering::Relaxed);
        self.counted = total;
    }

    /// [`Self::recount`] after an append, unless the outbox is small and was counted
    /// as empty: then the writer's next `take` counts it.
    fn recount_after_append(&mut self, queued: &AtomicUsize) {
        if self.counted != 0 || self.buf.len() >= COUNT_FROM {
            self.recount(queued);
        }
    }
}

/// Appending access to the buffer; dropping it wakes the writer if needed.
pub struct OutboxGuard<'a> {
    inner: MutexGuard<'a, Inner>,
    was_empty: bool,
    outbox: &'a Arc<Outbox>,
}

thread_local! {
    /// Outboxes that became non-empty while this thread handles a read batch.
    static DEFERRED: RefCell<Option<Vec<Arc<Outbox>>>> = const { RefCell::new(None) };
}

/// A connection task's read batch. While it is open on this thread, outboxes that
/// become non-empty are remembered instead of waking their writer tasks; closing the
/// batch writes each of them to its socket directly (one syscall per connection per
/// batch) and wakes a writer task only for what the socket did not take. At low rates
/// this saves two thread wake-ups per message; under load it batches as well as the
/// writer does.
///
/// A batch belongs to the thread that opened it: it must be dropped before the task
/// awaits anything, or other tasks on that thread would defer into it.
pub struct Batch(());

impl Batch {
    pub fn open() -> Self {
        DEFERRED.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = Some(Vec::new());
            }
        });
        Batch(())
    }
}

/// How many sockets a batch writes itself; beyond that it wakes their writer tasks,
/// which run on the other executor threads in parallel (fan-out to many consumers).
const DIRECT_WRITES_PER_BATCH: usize = 2;

impl Drop for Batch {
    fn drop(&mut self) {
        let pending = DEFERRED.with(|d| d.borrow_mut().take()).unwrap_or_default();
        for (i, outbox) in pending.into_iter().enumerate() {
            if i < DIRECT_WRITES_PER_BATCH {
                outbox.flush_now();
            } else {
                outbox.ready.notify(1);
            }
        }
    }
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
        self.inner.recount_after_append(&self.outbox.queued);
        if self.was_empty && !self.inner.buf.is_empty() {
            let deferred = DEFERRED.with(|d| match d.borrow_mut().as_mut() {
                Some(list) => {
                    list.push(self.outbox.clone());
                    true
                }
                None => false,
            });
            if !deferred {
                self.outbox.ready.notify(1);
            }
        }
    }
}

impl Outbox {
    pub fn new(frame_max: u32) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                buf: Vec::new(),
                writing: false,
                closed: false,
                frame_max,
                parked: Vec::new(),
                in_flight: 0,
                charge: MemoryCharge::default(),
                counted: 0,
            }),
            ready: Event::new(),
            queued: AtomicUsize::new(0),
            written: Event::new(),
            socket: OnceLock::new(),
            sent: Default::default(),
        })
    }

    /// Lets batches write to `socket` directly (a plain TCP socket; a TLS connection
    /// must leave this unset and go through its writer task).
    pub fn attach_socket(&self, socket: Arc<Async<std::net::TcpStream>>) {
        let _ = self.socket.set(socket);
    }

    /// Writes what is pending straight to the socket if the writer task is idle; wakes
    /// the writer for whatever remains.
    fn flush_now(&self) {
        let mut inner = self.lock_inner();
        if inner.buf.is_empty() {
            return;
        }
        if !inner.writing && !inner.closed {
            if let Some(socket) = self.socket.get() {
                // Non-blocking: `Async` put the socket in non-blocking mode.
                let written = socket.get_ref().write(&inner.buf);
                if let Ok(n) = written {
                    self.sent.bump(n as u64);
                }
                match written {
                    Ok(n) if n == inner.buf.len() => {
                        inner.buf.clear();
                        inner.recount(&self.queued);
                        return;
                    }
                    Ok(n) => {
                        inner.buf.drain(..n);
                        inner.recount(&self.queued);
                    }
                    Err(_) => {}
                }
            }
        }
        drop(inner);
        self.ready.notify(1);
    }

    fn lock_inner(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the buffer half-valid in a way
        // that matters more than losing the connection, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks the buffer for appending frames.
    pub fn lock(self: &Arc<Self>) -> OutboxGuard<'_> {
        let inner = self.lock_inner();
        let was_empty = inner.buf.is_empty();
        OutboxGuard { inner, was_empty, outbox: self }
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
        self.written.notify(usize::MAX);
    }

    /// Bytes waiting to be sent or being written now: what the client has yet to read
    /// (as far as the broker can tell).
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Waits until at most [`HIGH_WATER`] bytes are queued (or the outbox is closed).
    /// Returns false if it gave up after `timeout` with the client still behind.
    pub async fn wait_writable(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.queued() <= HIGH_WATER || self.lock_inner().closed {
                return true;
            }
            let listener = self.written.listen();
            if self.queued() <= HIGH_WATER {
                return true;
            }
            let woke = smol::future::or(
                async {
                    listener.await;
                    true
                },
                async {
                    smol::Timer::at(deadline).await;
                    false
                },
            )
            .await;
            if !woke {
                return self.queued() <= HIGH_WATER;
            }
        }
    }

    /// Bytes written to the socket so far.
    pub fn sent_bytes(&self) -> u64 {
        self.sent.get()
    }

    /// Waits until there are bytes to send and swaps them into `out` (which must be
    /// empty). Returns false when the outbox is closed and drained.
    pub async fn take(&self, out: &mut Vec<u8>) -> bool {
        loop {
            let listener = {
                let mut inner = self.lock_inner();
                if !inner.buf.is_empty() {
                    std::mem::swap(&mut inner.buf, out);
                    inner.writing = true;
                    inner.in_flight = out.len();
                    inner.recount(&self.queued);
                    return true;
                }
                inner.writing = false;
                if inner.closed {
                    return false;
                }
                self.ready.listen()
            };
            listener.await;
        }
    }

    /// Called by the writer after a write: ends its hold on the socket and hands back
    /// the queues that parked while the buffer was over the high-water mark, if it is
    /// now below it.
    pub fn drained(&self) -> Vec<Arc<Queue>> {
        let parked = {
            let mut inner = self.lock_inner();
            inner.writing = false;
            self.sent.bump(inner.in_flight as u64);
            inner.in_flight = 0;
            inner.recount(&self.queued);
            if inner.parked.is_empty() || inner.buf.len() > HIGH_WATER / 2 {
                Vec::new()
            } else {
                std::mem::take(&mut inner.parked)
            }
        };
        self.written.notify(usize::MAX);
        parked
    }
}
