//! A virtual host: its exchanges, queues and routing table. The state and its locks
//! are here; what changes them is split by concept beside this file (exchanges,
//! queues, bindings, routing, restore, the direct reply-to registry).
//!
//! Topology changes (declare, bind, delete) take the write lock; publishes only read.
//! Exchange metadata and the routing table share one lock so they never disagree.

mod aliveness;
mod bindings;
mod deletion;
mod direct;
mod exchanges;
mod limits;
mod listing;
mod policies;
mod queues;
mod reply_to;
mod restore;
mod routing;

pub use direct::{DirectPublish, GetSettle};
pub use exchanges::ExchangeDeclare;
pub use limits::VHostLimits;
pub use listing::{BindingInfo, QueueInfo};
pub use queues::{check_deletable, check_queue_name};
pub use reply_to::{ReplySink, REPLY_TO_PREFIX, REPLY_TO_QUEUE};
pub use routing::Routed;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use amq_protocol::types::{AMQPValue, FieldTable};
use haremq_routing::{ExchangeKind, HashOn, RouteRequest, RoutingTable};

use crate::error::{AmqpError, AmqpResult};
use crate::exchange::delayed::{DelayScheduler, DelayedMessage, DueRouter};
use crate::exchange::ExchangeSettings;
use crate::message::{Message, QueuedMessage};
use crate::queue::classic::{ClassicQueue, Entry, Run};
use crate::queue::stream::StreamQueue;
use crate::queue::{enqueue_routed, ConnectionId, Queue, QueueHost, QueueKind, QueueRef, QueueSettings};
use crate::store::codec::encode_delayed;
use crate::store::{
    BindingRecord, DelayedRecord, ExchangeRecord, MessageId, QueueRecord, Recovered, Snapshot, StoreHandle, StoreOp,
};

/// An exchange's declaration (the routing table holds its bindings).
#[derive(Clone, Debug)]
pub struct ExchangeMeta {
    pub name: Arc<str>,
    /// Routing behaviour from the type and arguments (kind, delayed, alternate…).
    pub settings: ExchangeSettings,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: FieldTable,
    /// The policy that applies to it (its `alternate-exchange` if it has none).
    pub policy: Option<Arc<crate::policy::Policy>>,
}

struct Topology {
    routing: RoutingTable<QueueRef>,
    exchanges: HashMap<Arc<str>, ExchangeMeta>,
}

pub struct VHost {
    pub name: Arc<str>,
    topology: RwLock<Topology>,
    queues: RwLock<HashMap<Arc<str>, Arc<Queue>>>,
    /// Direct reply-to consumers by the token in `amq.rabbitmq.reply-to.<token>`.
    reply_consumers: Mutex<HashMap<Box<str>, Arc<dyn ReplySink>>>,
    /// Where durable definitions are recorded (None: nothing is persisted).
    store: Option<StoreHandle>,
    /// Messages held by `x-delayed-message` exchanges.
    delayed: DelayScheduler,
    /// Itself, for the queues it creates (they dead-letter and expire through it).
    me: std::sync::Weak<VHost>,
    /// The broker's `consumer_timeout_ms`, for queues without x-consumer-timeout
    /// (read when a queue is created; 0 disables).
    pub consumer_timeout_ms: std::sync::atomic::AtomicU64,
    /// Bumped when a write lock on `topology` or `queues` is taken and again when it
    /// is released (see [`Changing`]): a route computed under generation `g` is still
    /// the route while the generation reads `g`. Channels cache routes against it.
    generation: AtomicU64,
    limits: limits::LimitCells,
    /// Set (under the queue-map lock) when the vhost is deleted: nothing more may be
    /// created in it.
    deleted: AtomicBool,
    /// RabbitMQ's vhost metadata: a description and tags.
    meta: Mutex<VHostMeta>,
    /// Its policies and operator policies (replaced whole on each change).
    policies: RwLock<Arc<crate::policy::PolicySet>>,
}

/// A vhost's description and tags (shown by the management API; no behaviour).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VHostMeta {
    pub description: String,
    pub tags: Vec<String>,
}

/// A write guard on the topology or the queue map that bumps the vhost's generation
/// when taken and when dropped, so no cached route outlives a change and none is
/// cached from a half-made one.
struct Changing<'a, T> {
    guard: RwLockWriteGuard<'a, T>,
    generation: &'a AtomicU64,
}

impl<'a, T> Changing<'a, T> {
    fn new(lock: &'a RwLock<T>, generation: &'a AtomicU64) -> Self {
        let guard = write(lock);
        generation.fetch_add(1, Ordering::AcqRel);
        Self { guard, generation }
    }
}

impl<T> std::ops::Deref for Changing<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> std::ops::DerefMut for Changing<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T> Drop for Changing<'_, T> {
    fn drop(&mut self) {
        // Still under the lock: a reader that sees the old generation after this is
        // ordered before the change.
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// The exchanges every vhost has (RabbitMQ's set, minus the plugin-specific ones).
const PREDECLARED: &[(&str, ExchangeKind)] = &[
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl VHost {
    fn change_topology(&self) -> Changing<'_, Topology> {
        Changing::new(&self.topology, &self.generation)
    }

    fn change_queues(&self) -> Changing<'_, HashMap<Arc<str>, Arc<Queue>>> {
        Changing::new(&self.queues, &self.generation)
    }

    /// The current topology generation, for validating cached routes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn new(name: &str, store: Option<StoreHandle>) -> Arc<Self> {
        let mut topology = Topology { routing: RoutingTable::new(), exchanges: HashMap::new() };
        for &(ex, kind) in PREDECLARED {
            let name: Arc<str> = ex.into();
            topology.routing.add_exchange(ex, kind);
            topology.exchanges.insert(
                name.clone(),
                ExchangeMeta {
                    name,
                    settings: ExchangeSettings { kind, delayed: false, alternate: None, hash_on: HashOn::RoutingKey },
                    durable: true,
                    auto_delete: false,
                    internal: false,
                    arguments: FieldTable::default(),
                    policy: None,
                },
            );
        }
        Arc::new_cyclic(|me| Self {
            name: name.into(),
            topology: RwLock::new(topology),
            queues: RwLock::new(HashMap::new()),
            reply_consumers: Mutex::new(HashMap::new()),
            store,
            delayed: DelayScheduler::new(me.clone() as std::sync::Weak<dyn DueRouter>),
            me: me.clone(),
            consumer_timeout_ms: std::sync::atomic::AtomicU64::new(crate::config::DEFAULT_CONSUMER_TIMEOUT_MS),
            generation: AtomicU64::new(0),
            limits: Default::default(),
            deleted: AtomicBool::new(false),
            meta: Mutex::new(VHostMeta::default()),
            policies: RwLock::new(Arc::default()),
        })
    }

    pub fn limits(&self) -> VHostLimits {
        self.limits.get()
    }

    pub fn set_limits(&self, limits: VHostLimits) {
        self.limits.set(limits);
    }

    pub fn meta(&self) -> VHostMeta {
        self.meta.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_meta(&self, meta: VHostMeta) {
        *self.meta.lock().unwrap_or_else(|e| e.into_inner()) = meta;
    }

    /// How the store records this vhost.
    pub fn record(&self) -> crate::store::VHostRecord {
        let (meta, limits) = (self.meta(), self.limits());
        crate::store::VHostRecord {
            name: self.name.to_string(),
            description: meta.description,
            tags: meta.tags,
            max_connections: limits.max_connections,
            max_queues: limits.max_queues,
        }
    }

    /// Whether an exchange of type topic named `name` exists (topic permissions apply
    /// to topic exchanges only).
    pub fn is_topic_exchange(&self, name: &str) -> bool {
        read(&self.topology)
            .exchanges
            .get(name)
            .is_some_and(|e| e.settings.kind == ExchangeKind::Topic && !e.settings.delayed)
    }

    /// Whether an exchange named `name` exists.
    pub fn has_exchange(&self, name: &str) -> bool {
        read(&self.topology).exchanges.contains_key(name)
    }

    fn persist(&self, op: StoreOp) {
        if let Some(store) = &self.store {
            store.send(op);
        }
    }

    fn no_exchange(&self, name: &str) -> AmqpError {
        AmqpError::NotFound(format!("no exchange '{name}' in vhost '{}'", self.name))
    }

    fn no_queue(&self, name: &str) -> AmqpError {
        AmqpError::NotFound(format!("no queue '{name}' in vhost '{}'", self.name))
    }

    fn default_exchange_refused() -> AmqpError {
        AmqpError::AccessRefused("operation not permitted on the default exchange".into())
    }

    pub fn queue(&self, name: &str) -> Option<Arc<Queue>> {
        read(&self.queues).get(name).cloned()
    }

    /// Looks a queue up for use by connection `conn`: 404 if missing, 405 if it is
    /// another connection's exclusive queue.
    pub fn queue_for(&self, name: &str, conn: ConnectionId) -> AmqpResult<Arc<Queue>> {
        let q = self.queue(name).ok_or_else(|| self.no_queue(name))?;
        check_exclusive(q.as_ref(), conn)?;
        Ok(q)
    }
}

impl QueueHost for VHost {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn default_consumer_timeout_ms(&self) -> u64 {
        self.consumer_timeout_ms.load(Ordering::Relaxed)
    }

    fn route_dead_letter(
        &self,
        exchange: &str,
        req: &RouteRequest<'_>,
        out: &mut Vec<QueueRef>,
    ) -> AmqpResult<Arc<str>> {
        match self.route(exchange, req, out)? {
            // A delayed-message DLX routes at once: dead-lettering is not a publish.
            Routed::Now(name, _) | Routed::Delay(name, _) => Ok(name),
        }
    }

    fn delete_queue(&self, queue: &Arc<Queue>) -> u32 {
        VHost::delete_queue(self, queue)
    }

    fn store(&self) -> &Option<StoreHandle> {
        &self.store
    }
}

impl DueRouter for VHost {
    fn route_due(&self, message: DelayedMessage) {
        self.route_delayed(message);
    }
}

/// 405 if `q` is exclusive to a connection other than `conn`.
pub fn check_exclusive(q: &Queue, conn: ConnectionId) -> AmqpResult<()> {
    match q.settings().exclusive_owner {
        Some(owner) if owner != conn => Err(exclusive_locked(q)),
        _ => Ok(()),
    }
}

fn exclusive_locked(q: &Queue) -> AmqpError {
    AmqpError::ResourceLocked(format!(
        "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be \
         originally declared on another connection or the exclusive property value does \
         not match that of the original declaration.",
        q.name(),
        q.vhost()
    ))
}

/// Formats an optional argument value the way RabbitMQ's inequivalence errors do.
pub(super) struct DisplayValue<'a>(Option<&'a AMQPValue>);

impl std::fmt::Display for DisplayValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => f.write_str("none"),
            Some(AMQPValue::LongString(s)) => f.write_str(&String::from_utf8_lossy(s.as_bytes())),
            Some(AMQPValue::ShortString(s)) => f.write_str(s.as_str()),
            Some(AMQPValue::Boolean(b)) => write!(f, "{b}"),
            Some(AMQPValue::ShortShortInt(v)) => write!(f, "{v}"),
            Some(AMQPValue::ShortShortUInt(v)) => write!(f, "{v}"),
            Some(AMQPValue::ShortInt(v)) => write!(f, "{v}"),
            Some(AMQPValue::ShortUInt(v)) => write!(f, "{v}"),
            Some(AMQPValue::LongInt(v)) => write!(f, "{v}"),
            Some(AMQPValue::LongUInt(v)) => write!(f, "{v}"),
            Some(AMQPValue::LongLongInt(v)) => write!(f, "{v}"),
            Some(other) => write!(f, "{other:?}"),
        }
    }
}
