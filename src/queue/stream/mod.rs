//! The stream queue (`x-queue-type: stream`): an append-only log that consumers read
//! at their own pace, each from its own offset; consuming removes nothing.
//!
//! Publishing assigns the next offset under the stream's lock, adds the offset to the
//! message's headers (`x-stream-offset`, as RabbitMQ delivers it) and sends the append
//! to the store writer, which writes it to the stream's log ([`StreamLog`]: segment
//! files) and fsyncs it with the rest of its batch; the publisher's confirm follows that
//! commit like any durable publish. Consumers are served only what is durable: the
//! writer tells the stream how far its log is committed, so no consumer ever sees an
//! offset that a crash could take back and hand out again.
//!
//! Deliveries are made by the stream's *pump* (`pump.rs`), a job on the blocking pool
//! woken by commits, new consumers and returned credit, so reading a catching-up
//! consumer's messages from disk never blocks an executor thread. The newest messages
//! stay in memory (a bounded tail), so consumers that keep up never touch the disk;
//! one that falls behind reads from the log in batches into a small buffer of its own.
//! Memory does not grow with the stream's length or its consumers' distance.
//!
//! As RabbitMQ: streams are durable, shared and never auto-deleted; a consumer must
//! set a prefetch and acknowledge (an ack only returns credit); basic.get, purge,
//! nack, reject and recover are refused with 540.

mod filter;
mod pump;
pub mod start;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::consumer::same_sink;
use super::kind::QueueKind;
use super::{
    ConsumerSink, Enqueued, NewConsumer, OrphanedConsumer, Queue, QueueCounters, QueueOp, QueueSettings, QueueStats,
    QueueType,
};
use crate::error::{AmqpError, AmqpResult};
use crate::memory::MemoryCharge;
use crate::message::{properties, Message};
use crate::policy::Applied;
use crate::store::{LogReader, QueueId, StoreError, StoreHandle, StoreOp, StreamLog, StreamLogConfig, StreamTarget};
use start::Start;

/// RabbitMQ's default segment size (`x-stream-max-segment-size-bytes`).
const DEFAULT_SEGMENT_BYTES: u64 = 500_000_000;
/// The in-memory tail: at most this many of the newest messages...
const TAIL_MESSAGES: usize = 8192;
/// ... and about this many bytes of them.
const TAIL_BYTES: usize = 4 << 20;

/// Retention as declared (x-arguments).
#[derive(Clone, Copy, Debug, Default)]
struct Retention {
    max_length_bytes: Option<u64>,
    max_age_ms: Option<u64>,
    max_segment_bytes: Option<u64>,
}

impl Retention {
    fn parse(args: &amq_protocol::types::FieldTable) -> Self {
        let t = args.inner();
        let non_neg = |k: &str| t.get(k).and_then(super::args::int_value).filter(|n| *n >= 0).map(|n| n as u64);
        Retention {
            max_length_bytes: non_neg("x-max-length-bytes"),
            max_age_ms: t
                .get("x-max-age")
                .and_then(super::args::string_value)
                .and_then(|s| super::args::max_age_ms(&s)),
            max_segment_bytes: non_neg("x-stream-max-segment-size-bytes"),
        }
    }

    /// The log's configuration under a policy's `max-length-bytes` (the lower wins).
    fn config(&self, policy_max_bytes: Option<u64>) -> StreamLogConfig {
        let max_length_bytes = match (self.max_length_bytes, policy_max_bytes) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        StreamLogConfig {
            // RabbitMQ takes 0; a segment of at least one record is what that can mean.
            max_segment_bytes: self.max_segment_bytes.unwrap_or(DEFAULT_SEGMENT_BYTES).max(1),
            max_length_bytes,
            max_age_ms: self.max_age_ms,
        }
    }
}

pub struct StreamQueue {
    name: Arc<str>,
    vhost: Arc<str>,
    settings: QueueSettings,
    declared: Retention,
    log: Arc<StreamLog>,
    store: StoreHandle,
    id: QueueId,
    me: Weak<StreamQueue>,
    counters: QueueCounters,
    state: Mutex<State>,
    /// Whether a pump job runs, and whether it was woken since it last looked.
    pump: Mutex<PumpFlags>,
}

#[derive(Default)]
struct PumpFlags {
    running: bool,
    pending: bool,
}

struct State {
    /// The offset the next publish gets.
    next_offset: u64,
    /// Every offset below this is durable (what consumers may be given).
    committed: u64,
    /// The newest messages, offsets `tail_first..tail_first + tail.len()`.
    tail: VecDeque<Arc<Message>>,
    tail_first: u64,
    tail_bytes: usize,
    consumers: Vec<StreamConsumer>,
    /// Consumers attached so far (ids for the pump's bookkeeping).
    next_consumer_id: u64,
    exclusive_consumer: bool,
    deleted: bool,
    policies: Applied,
}

/// A consumer's read position and its small buffer: all it costs.
struct StreamConsumer {
    id: u64,
    tag: Arc<str>,
    sink: Arc<dyn ConsumerSink>,
    /// Not resolved yet (a timestamp needs the log's index, read by the pump).
    start: Option<Start>,
    /// The offset it is given next.
    position: u64,
    /// Read from the log, offsets `position..`, not delivered yet.
    buffered: VecDeque<Arc<Message>>,
    /// Its open reader (absent until it first reads from disk, and while the pump
    /// reads with it).
    reader: Option<LogReader>,
    /// Its last offer found it without credit.
    busy: bool,
    /// `x-stream-filter`: the messages it skips cost it nothing.
    filter: Option<filter::Filter>,
}

impl StreamQueue {
    /// Opens (creating or recovering) the stream's log in its directory under the
    /// store's streams directory.
    pub fn open(
        name: Arc<str>,
        vhost: Arc<str>,
        settings: QueueSettings,
        store: StoreHandle,
        id: QueueId,
    ) -> Result<Arc<Self>, StoreError> {
        let dir = store.stream_dir(id).ok_or_else(|| StoreError::Io("this store keeps no streams".into()))?;
        let declared = Retention::parse(&settings.arguments);
        let log = StreamLog::open(&dir, declared.config(None))?;
        let committed = log.committed();
        Ok(Arc::new_cyclic(|me| StreamQueue {
            name,
            vhost,
            settings,
            declared,
            log,
            store,
            id,
            me: me.clone(),
            counters: QueueCounters::default(),
            state: Mutex::new(State {
                next_offset: committed,
                committed,
                tail: VecDeque::new(),
                tail_first: committed,
                tail_bytes: 0,
                consumers: Vec::new(),
                next_consumer_id: 0,
                exclusive_consumer: false,
                deleted: false,
                policies: Applied::default(),
            }),
            pump: Mutex::new(PumpFlags::default()),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rs(&self) -> String {
        format!("queue '{}' in vhost '{}'", self.name, self.vhost)
    }

    fn not_supported(&self, what: &str) -> AmqpError {
        AmqpError::NotImplemented(format!("{what} not supported by stream queues {}", self.rs()))
    }

    /// The message as the stream keeps it: its offset in the headers. The body is
    /// copied once here (a `Message` owns its body), which the log's write needs anyway.
    fn stream_message(m: &Message, offset: u64) -> Message {
        let raw_properties = properties::with_long_header(&m.raw_properties, "x-stream-offset", offset as i64)
            .map_or_else(|| m.raw_properties.clone(), Vec::into_boxed_slice);
        Message {
            exchange: m.exchange.clone(),
            routing_key: m.routing_key.clone(),
            charge: MemoryCharge::content(&m.routing_key, &raw_properties, &m.body),
            raw_properties,
            body: m.body.clone(),
            persistent: m.persistent,
            published_ms: m.published_ms,
            ttl: m.ttl,
            store: Default::default(),
        }
    }

    fn trim_tail(st: &mut State) {
        while st.tail.len() > 1 && (st.tail.len() > TAIL_MESSAGES || st.tail_bytes > TAIL_BYTES) {
            if let Some(m) = st.tail.pop_front() {
                st.tail_bytes -= m.body.len();
                st.tail_first += 1;
            }
        }
    }

    fn messages_held(&self, st: &State) -> u64 {
        st.committed.saturating_sub(self.log.first_offset().min(st.committed))
    }
}

impl StreamTarget for StreamQueue {
    fn log(&self) -> &Arc<StreamLog> {
        &self.log
    }

    fn committed(&self, committed: u64) {
        let wake = {
            let mut st = self.lock();
            st.committed = st.committed.max(committed);
            !st.consumers.is_empty()
        };
        if wake {
            self.wake();
        }
    }
}

impl QueueType for StreamQueue {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn vhost(&self) -> &Arc<str> {
        &self.vhost
    }

    fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    fn is_durable(&self) -> bool {
        true
    }

    fn kind(&self) -> QueueKind {
        QueueKind::Stream
    }

    /// The log holds the message itself: no record in the store's message table.
    fn needs_store_record(&self) -> bool {
        false
    }

    fn refuse(&self, op: QueueOp) -> AmqpResult<()> {
        Err(self.not_supported(match op {
            QueueOp::Get => "basic.get",
            QueueOp::Purge => "queue.purge",
            QueueOp::NackOrReject => "basic.nack and basic.reject",
            QueueOp::Recover => "basic.recover",
        }))
    }

    fn publish(&self, message: Arc<Message>) -> Enqueued {
        let Some(me) = self.me.upgrade() else {
            return Enqueued::No;
        };
        let mut st = self.lock();
        if st.deleted {
            return Enqueued::No;
        }
        let offset = st.next_offset;
        st.next_offset += 1;
        let m = Arc::new(Self::stream_message(&message, offset));
        st.tail_bytes += m.body.len();
        st.tail.push_back(m.clone());
        Self::trim_tail(&mut st);
        self.counters.publish.bump(1);
        // Sent under the lock: the writer sees the appends in offset order.
        self.store.send(StoreOp::StreamAppend { stream: me, offset, message: m });
        Enqueued::Stored
    }

    fn add_consumer(&self, c: NewConsumer<'_>) -> AmqpResult<()> {
        if c.no_ack {
            return Err(self.not_supported("automatic acknowledgement"));
        }
        if c.prefetch == 0 {
            return Err(AmqpError::PreconditionFailed(format!(
                "consumer prefetch count is not set for '{}'",
                self.rs()
            )));
        }
        let start =
            start::parse(c.arguments.inner().get("x-stream-offset"), &self.name, &self.vhost, crate::util::now_ms())?;
        let filter = filter::Filter::parse(c.arguments, &self.name, &self.vhost)?;
        {
            let mut st = self.lock();
            if st.deleted {
                return Err(AmqpError::NotFound(self.no_queue_text()));
            }
            if st.exclusive_consumer || (c.exclusive && !st.consumers.is_empty()) {
                return Err(AmqpError::AccessRefused(format!("{} in exclusive use", self.rs())));
            }
            st.exclusive_consumer = c.exclusive;
            let (position, start) = match start {
                Start::First => (self.log.first_offset().min(st.committed), None),
                Start::Last => {
                    (if st.committed > self.log.first_offset() { st.committed - 1 } else { st.next_offset }, None)
                }
                Start::Next => (st.next_offset, None),
                // As RabbitMQ: before the first is the first; past the end waits for
                // that offset.
                Start::Offset(n) => {
                    (u64::try_from(n).unwrap_or(0).max(self.log.first_offset().min(st.committed)), None)
                }
                ts @ Start::Timestamp(_) => (st.next_offset, Some(ts)),
            };
            let id = st.next_consumer_id;
            st.next_consumer_id += 1;
            st.consumers.push(StreamConsumer {
                id,
                tag: c.tag,
                sink: c.sink,
                start,
                position,
                buffered: VecDeque::new(),
                reader: None,
                busy: false,
                filter,
            });
        }
        self.wake();
        Ok(())
    }

    fn remove_consumer(&self, tag: &str, sink: &dyn ConsumerSink) -> bool {
        let mut st = self.lock();
        if let Some(i) = st.consumers.iter().position(|c| &*c.tag == tag && same_sink(&*c.sink, sink)) {
            st.consumers.remove(i);
            st.exclusive_consumer = false;
        }
        false
    }

    fn dispatch(&self) {
        self.wake();
    }

    /// Refused before it gets here (see [`QueueType::refuse`]).
    fn get(&self, _no_ack: bool, _f: &mut dyn FnMut(crate::message::QueuedMessage, u32)) -> bool {
        false
    }

    fn mark_delivered(&self, _m: &crate::message::QueuedMessage) {}

    /// Nothing leaves a stream when it is consumed.
    fn forget(&self, _m: &crate::message::QueuedMessage) {}

    /// Unacked deliveries of a closing channel: nothing goes back (the consumer's
    /// position is its own), they are only counted as settled.
    fn requeue(&self, messages: &mut dyn Iterator<Item = crate::message::QueuedMessage>) {
        self.counters.returned.add(messages.count() as u64);
    }

    fn reject(&self, _m: crate::message::QueuedMessage) {
        self.counters.rejected.add(1);
    }

    /// Refused before it gets here (see [`QueueType::refuse`]).
    fn purge(&self) -> u32 {
        0
    }

    fn mark_deleted(&self) -> (u32, Vec<OrphanedConsumer>) {
        let mut st = self.lock();
        if st.deleted {
            return (0, Vec::new());
        }
        st.deleted = true;
        let n = self.messages_held(&st).min(u64::from(u32::MAX)) as u32;
        st.tail.clear();
        st.tail_bytes = 0;
        self.store.send(StoreOp::DeleteQueue {
            id: self.id,
            vhost: self.vhost.to_string(),
            name: self.name.to_string(),
        });
        if let Some(me) = self.me.upgrade() {
            self.store.send(StoreOp::DeleteStream(me));
        }
        let orphans = st.consumers.drain(..).map(|c| OrphanedConsumer { tag: c.tag, channel: c.sink }).collect();
        (n, orphans)
    }

    fn is_deleted(&self) -> bool {
        self.lock().deleted
    }

    /// Streams have no x-expires.
    fn touch(&self) {}

    /// The messages the stream holds (what a passive declare reports, as RabbitMQ).
    fn message_count(&self) -> u32 {
        let st = self.lock();
        self.messages_held(&st).min(u64::from(u32::MAX)) as u32
    }

    fn consumer_count(&self) -> u32 {
        self.lock().consumers.len() as u32
    }

    fn counters(&self) -> &QueueCounters {
        &self.counters
    }

    fn stats(&self) -> QueueStats {
        let (held, consumers) = {
            let st = self.lock();
            (self.messages_held(&st), st.consumers.len() as u32)
        };
        QueueStats {
            messages_ready: held,
            messages_unacknowledged: self.counters.unacked(),
            message_bytes_ready: self.log.bytes(),
            consumers,
            messages: self.counters.message_stats(),
        }
    }

    /// A policy's `max-length-bytes` (the lower of it and the x-argument) applies to
    /// the log's retention from its next segment roll.
    fn apply_policies(&self, applied: Applied) {
        let def = crate::policy::Definition::parse(&applied.effective_definition());
        self.log.set_config(self.declared.config(def.max_length_bytes));
        self.lock().policies = applied;
    }

    fn policies(&self) -> Applied {
        self.lock().policies.clone()
    }

    fn no_queue_text(&self) -> String {
        format!("no queue '{}' in vhost '{}'", self.name, self.vhost)
    }
}

/// What a handle to this stream is to consumers' unacked entries.
impl StreamQueue {
    fn handle(&self) -> Option<Arc<Queue>> {
        self.me.upgrade().map(|q| q as Arc<Queue>)
    }
}
