//! Durable storage: the seam between queues and disk.
//!
//! The broker never calls the storage engine directly. It sends [`StoreOp`]s to a
//! [`StoreHandle`]; one writer thread collects everything queued while the previous
//! commit was running and applies it as a single transaction (group commit), then
//! releases the publisher confirms that batch covered. A [`Store`] implementation
//! (today [`redb_store::RedbStore`]) only has to apply a batch atomically and durably
//! and to load everything back at start, so another backend — or a replicated one —
//! plugs in behind the same two calls.
//!
//! Ordering: ops are applied in the order they were sent. Queues send their ops while
//! holding their own lock, so the store sees a queue's enqueue before any ack of that
//! message, and a message record before any queue entry pointing at it.

pub mod clean;
pub mod codec;
pub mod redb_store;
pub mod stream_log;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;

use amq_protocol::types::FieldTable;
use serde::{Deserialize, Serialize};

pub use stream_log::{LogReader, LogRecord, StreamLog, StreamLogConfig};
pub use writer::{ConfirmSink, StoreHandle, COMMIT_BUCKETS};

/// A durable queue's id in the store (names can be reused after a delete).
pub type QueueId = u64;
/// A persistent message's id in the store; shared by every queue entry referencing it.
pub type MessageId = u64;

/// A durable exchange's declaration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExchangeRecord {
    pub vhost: String,
    pub name: String,
    pub kind: String,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
}

/// A durable queue's declaration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueRecord {
    pub id: QueueId,
    pub vhost: String,
    pub name: String,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

/// A binding between durable things.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BindingRecord {
    pub vhost: String,
    pub source: String,
    /// A queue name if `to_queue`, else an exchange name.
    pub destination: String,
    pub to_queue: bool,
    pub routing_key: String,
    pub arguments: FieldTable,
}

/// A virtual host and its limits (`None`: no limit).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VHostRecord {
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub max_connections: Option<u64>,
    pub max_queues: Option<u64>,
}

/// A user: its password hash in RabbitMQ's base64 form (empty: no password), the
/// hashing algorithm's RabbitMQ name, tags and limits (`None`: no limit).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UserRecord {
    pub name: String,
    pub password_hash: String,
    pub hashing_algorithm: String,
    pub tags: Vec<String>,
    pub max_connections: Option<u64>,
    pub max_channels: Option<u64>,
}

/// A user's permissions in a vhost: RabbitMQ's three regular expressions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PermissionRecord {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// A user's topic permission on an exchange of a vhost.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicPermissionRecord {
    pub user: String,
    pub vhost: String,
    pub exchange: String,
    pub write: String,
    pub read: String,
}

/// A policy or operator policy of a vhost, as RabbitMQ's management API gives it
/// (the definition is JSON text; the broker validates it again when it loads it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyRecord {
    pub vhost: String,
    pub name: String,
    /// An operator policy.
    pub operator: bool,
    pub pattern: String,
    pub apply_to: String,
    pub priority: i64,
    pub definition: String,
}

/// One change to durable state.
pub enum StoreOp {
    PutExchange(ExchangeRecord),
    DeleteExchange {
        vhost: String,
        name: String,
    },
    PutQueue(QueueRecord),
    /// Deletes the queue, its entries and the bindings to it.
    DeleteQueue {
        id: QueueId,
        vhost: String,
        name: String,
    },
    PutBinding(BindingRecord),
    DeleteBinding(BindingRecord),
    PutMessage(MessageId, Arc<dyn StoredMessage>),
    DeleteMessage(MessageId),
    /// A queue entry: message `message` at position `seq` of `queue`.
    Enqueue {
        queue: QueueId,
        seq: u64,
        message: MessageId,
    },
    /// The entry was delivered (it comes back with redelivered=true after a restart).
    MarkDelivered {
        queue: QueueId,
        seq: u64,
        message: MessageId,
    },
    /// The entry was acked or dropped.
    Remove {
        queue: QueueId,
        seq: u64,
    },
    /// A spilled run was dropped (purge, queue delete): removes every entry of `queue`
    /// in `first_seq..=last_seq` and its message record. `level`: Some((l, max)) for a
    /// priority queue's run: only entries whose message's priority (capped at `max`)
    /// is `l` belong to it; the others in the range are left alone.
    DeleteRun {
        queue: QueueId,
        first_seq: u64,
        last_seq: u64,
        level: Option<LevelFilter>,
    },
    /// A message held by a delayed-message exchange (encoded [`DelayedRecord`]).
    PutDelayed(MessageId, Vec<u8>),
    /// The held message was routed (its queue entries were sent before this op) or
    /// dropped with its exchange.
    DeleteDelayed(MessageId),
    PutVHost(VHostRecord),
    /// Deletes the vhost and everything recorded in it: exchanges, queues with their
    /// entries, bindings, delayed messages, permissions, policies (message records left without
    /// an entry are collected at the next start).
    DeleteVHost {
        name: String,
    },
    PutUser(UserRecord),
    /// Deletes the user and its permissions and topic permissions.
    DeleteUser {
        name: String,
    },
    PutPermission(PermissionRecord),
    DeletePermission {
        user: String,
        vhost: String,
    },
    PutTopicPermission(TopicPermissionRecord),
    /// A global runtime parameter (`cluster_name`, ...): its name and JSON value.
    PutGlobalParameter {
        name: String,
        value: String,
    },
    DeleteGlobalParameter {
        name: String,
    },
    PutPolicy(PolicyRecord),
    DeletePolicy {
        vhost: String,
        operator: bool,
        name: String,
    },
    DeleteTopicPermission {
        user: String,
        vhost: String,
        exchange: String,
    },
    /// A message appended to a stream at `offset`: the writer writes it to the stream's
    /// log and fsyncs the log with the batch, before the batch's confirms.
    StreamAppend {
        stream: Arc<dyn StreamTarget>,
        offset: u64,
        message: Arc<dyn StoredMessage>,
    },
    /// A deleted stream's log goes (after every append sent before it).
    DeleteStream(Arc<dyn StreamTarget>),
}

impl StoreOp {
    /// Ops the writer applies to stream logs itself, not to the [`Store`].
    pub fn is_stream_op(&self) -> bool {
        matches!(self, Self::StreamAppend { .. } | Self::DeleteStream(_))
    }
}

/// A stream as the store writer sees it: its log, and who is told once appends are
/// durable (the stream queue, which then delivers them: consumers never see an offset
/// that a crash could take back).
pub trait StreamTarget: Send + Sync {
    fn log(&self) -> &Arc<StreamLog>;
    /// Every offset below `committed` is on stable storage.
    fn committed(&self, committed: u64);
}

/// Which rows of a range belong to a priority level's run: the store does not read
/// AMQP properties itself, so the queue hands it the test.
#[derive(Clone, Copy)]
pub struct LevelFilter {
    pub level: u8,
    pub max_priority: u8,
    /// The priority property of a message's raw content-header properties.
    pub priority_of: fn(&[u8]) -> u8,
}

impl LevelFilter {
    fn holds(&self, raw_properties: &[u8]) -> bool {
        (self.priority_of)(raw_properties).min(self.max_priority) == self.level
    }
}

/// A message as the store keeps it. The store defines its own record (rather than
/// using the broker's `Message`) so it depends on nothing above it; the core turns a
/// record into a message, moving the buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct MessageRecord {
    pub exchange: Box<str>,
    pub routing_key: Box<str>,
    /// The content-header property bytes as published.
    pub raw_properties: Box<[u8]>,
    pub body: Box<[u8]>,
    pub persistent: bool,
    /// Publish time, ms since the UNIX epoch.
    pub published_ms: u64,
    /// Per-message TTL in ms.
    pub ttl: Option<u32>,
}

/// The fields of a message the store writes, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct MessageFields<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub raw_properties: &'a [u8],
    pub body: &'a [u8],
    pub persistent: bool,
    pub published_ms: u64,
    pub ttl: Option<u32>,
}

/// A message the store is asked to write. The core's shared message implements it,
/// so a persistent publish reaches the writer thread without a copy of its body.
pub trait StoredMessage: Send + Sync {
    fn fields(&self) -> MessageFields<'_>;
    /// Its record is durable (called by the writer after the commit that holds it).
    fn set_committed(&self);
}

impl MessageRecord {
    pub fn fields(&self) -> MessageFields<'_> {
        MessageFields {
            exchange: &self.exchange,
            routing_key: &self.routing_key,
            raw_properties: &self.raw_properties,
            body: &self.body,
            persistent: self.persistent,
            published_ms: self.published_ms,
            ttl: self.ttl,
        }
    }
}

/// A message held by a durable delayed-message exchange until `due_ms` (wall clock, ms
/// since the UNIX epoch, so it survives restarts).
#[derive(Clone, Debug, PartialEq)]
pub struct DelayedRecord {
    pub vhost: String,
    pub due_ms: u64,
    pub exchange: String,
    pub routing_key: String,
    /// CC/BCC routing keys.
    pub extra_keys: Vec<String>,
    pub raw_properties: Vec<u8>,
    pub body: Vec<u8>,
    pub persistent: bool,
    pub ttl: Option<u32>,
}

/// A recovered queue entry.
#[derive(Clone, Debug)]
pub struct EntryRecord {
    pub seq: u64,
    pub message: MessageId,
    pub delivered: bool,
}

/// At start, bodies are read for this many entries at the head of each queue; the
/// rest stay on disk, as spilled runs, until the queue reaches them.
pub const LOAD_AT_START: usize = 8192;

/// A queue's recovered contents, in `seq` order.
#[derive(Clone, Debug)]
pub enum Recovered {
    /// An entry whose message was read ([`Snapshot::messages`] holds it).
    Entry(EntryRecord),
    /// Consecutive entries left on disk: every entry row of the queue with
    /// `first_seq <= seq <= last_seq` (`count` of them), each referencing a message
    /// that no other entry references.
    Run { first_seq: u64, last_seq: u64, count: u64 },
}

/// Everything durable, as loaded at start.
#[derive(Default)]
pub struct Snapshot {
    pub vhosts: Vec<VHostRecord>,
    pub users: Vec<UserRecord>,
    pub permissions: Vec<PermissionRecord>,
    pub topic_permissions: Vec<TopicPermissionRecord>,
    pub policies: Vec<PolicyRecord>,
    /// Global runtime parameters: name and JSON value.
    pub global_parameters: Vec<(String, String)>,
    pub exchanges: Vec<ExchangeRecord>,
    pub queues: Vec<QueueRecord>,
    pub bindings: Vec<BindingRecord>,
    /// Messages whose bodies were read: those of the first [`LOAD_AT_START`] entries
    /// of each queue and those referenced by several entries.
    pub messages: HashMap<MessageId, MessageRecord>,
    /// Per queue, its entries in `seq` order (long queues mostly as runs).
    pub entries: HashMap<QueueId, Vec<Recovered>>,
    /// Messages held by delayed-message exchanges.
    pub delayed: Vec<(MessageId, DelayedRecord)>,
    /// The highest message id found (message and delayed records share the sequence).
    pub max_message_id: MessageId,
}

/// A storage failure, with enough context to act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("data directory {path} is in use by another HareMQ process")]
    Locked { path: String },
    #[error("cannot open store {path}: {detail}. If the file is corrupt, move it aside (HareMQ then starts empty) or restore it from a backup")]
    Open { path: String, detail: String },
    #[error("store {path} holds an unreadable record ({detail}); move the file aside or restore it from a backup")]
    Corrupt { path: String, detail: String },
    /// The store is not what the last clean shutdown left (it needs repair, was rolled
    /// back, holds fewer records, is empty or missing): the broker refuses to start on
    /// it unless told to accept it (`--accept-store-repair`).
    #[error("store {path} is damaged: {detail}. Restore a backup, or start with --accept-store-repair to use what it holds now (garbage collection is skipped on that start, so records nothing references stay)")]
    Damaged { path: String, detail: String },
    #[error("store I/O failed: {0}")]
    Io(String),
}

/// Reads committed records back (paging spilled entries in), from any thread,
/// concurrently with the writer.
pub trait MessageReader: Send + Sync + 'static {
    /// The messages with these ids, in order; `None` for ids not (or no longer) stored.
    fn read_messages(&self, ids: &[MessageId]) -> Result<Vec<Option<MessageRecord>>, StoreError>;
    /// Up to `max` entries of `queue` with `from_seq <= seq <= to_seq`, in `seq` order.
    fn read_entries(
        &self,
        queue: QueueId,
        from_seq: u64,
        to_seq: u64,
        max: usize,
    ) -> Result<Vec<EntryRecord>, StoreError>;
}

/// A storage engine: applies batches atomically and durably, and loads everything back.
pub trait Store: Send + 'static {
    /// A reader for paging entries and message bodies back in.
    fn reader(&self) -> Arc<dyn MessageReader>;
    /// Reads all durable state, dropping entries that point at nothing (left by a crash
    /// between related writes is impossible, but a partial older version is not).
    fn load(&mut self) -> Result<Snapshot, StoreError>;
    /// Applies `ops` in order as one transaction; returns once it is on stable storage.
    /// On an error nothing of the batch may be assumed durable; the writer then calls
    /// [`Store::recover`] and commits the same ops again (with whatever came after
    /// them), and an earlier attempt may have reached the disk after all: applying a
    /// batch twice must leave what applying it once does (true of every [`StoreOp`]:
    /// each puts or deletes rows by key).
    fn commit(&mut self, ops: &[StoreOp]) -> Result<(), StoreError>;
    /// After a failed commit: brings the engine back to its last durable state (redb:
    /// closes the database and opens it again, which repairs it) so commits can be
    /// retried. An error means it is not usable yet; the writer tries again later.
    fn recover(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Clean shutdown, everything committed: closes the store so the next start needs
    /// no repair, and records what it holds.
    fn close(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}
