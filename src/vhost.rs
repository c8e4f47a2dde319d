//! A virtual host: its exchanges, queues and routing table.
//!
//! Topology changes (declare, bind, delete) take the write lock; publishes only read.
//! Exchange metadata and the routing table share one lock so they never disagree.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use amq_protocol::types::{AMQPValue, FieldTable};
use haremq_routing::{BindError, Destination, ExchangeKind, HashOn, RouteRequest, RoutingTable};

use crate::error::{AmqpError, AmqpResult};
use crate::exchange::delayed::{DelayScheduler, DelayedMessage, DueRouter};
use crate::exchange::ExchangeSettings;
use crate::message::{Message, QueuedMessage};
use crate::queue::classic::{ClassicQueue, Entry, Run};
use crate::queue::{enqueue_routed, ConnectionId, Queue, QueueHost, QueueRef, QueueSettings};
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

/// What [`VHost::route`] decided for a publish.
#[derive(Debug)]
pub enum Routed {
    /// Routed now: the destination queues were appended; the exchange's interned name,
    /// and the generation under which this outcome holds for every message with the
    /// same exchange and routing key (None: it depended on more than those).
    Now(Arc<str>, Option<u64>),
    /// Published to a delayed-message exchange with a positive `x-delay` (ms): hold it.
    Delay(Arc<str>, u64),
}

/// The pseudo-queue clients consume from for direct reply-to.
pub const REPLY_TO_QUEUE: &str = "amq.rabbitmq.reply-to";
/// The prefix of the reply-to addresses the broker hands out.
pub const REPLY_TO_PREFIX: &str = "amq.rabbitmq.reply-to.";

/// What exchange.declare asks for.
pub struct ExchangeDeclare<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub passive: bool,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: &'a FieldTable,
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
        })
    }

    /// Recreates this vhost's durable exchanges, queues (with their messages) and
    /// bindings from a store snapshot.
    pub fn restore(&self, snap: &Snapshot, messages: &HashMap<MessageId, Arc<Message>>) {
        let Some(store) = &self.store else {
            return;
        };
        let mut topo = self.change_topology();
        for e in snap.exchanges.iter().filter(|e| *e.vhost == *self.name) {
            let settings = match crate::exchange::settings(&e.kind, &e.arguments, &e.name, &self.name) {
                Ok(s) => s,
                Err(err) => {
                    log::warn!("skipping stored exchange '{}' of type '{}': {err}", e.name, e.kind);
                    continue;
                }
            };
            let name: Arc<str> = e.name.as_str().into();
            Self::add_to_routing(&mut topo.routing, &e.name, &settings);
            topo.exchanges.insert(
                name.clone(),
                ExchangeMeta {
                    name,
                    settings,
                    durable: true,
                    auto_delete: e.auto_delete,
                    internal: e.internal,
                    arguments: e.arguments.clone(),
                },
            );
        }
        let mut queues = self.change_queues();
        let mut recovered = 0usize;
        for q in snap.queues.iter().filter(|q| *q.vhost == *self.name) {
            let mut ready: Vec<Entry> = Vec::new();
            let mut count = 0u64;
            for r in snap.entries.get(&q.id).into_iter().flatten() {
                match r {
                    Recovered::Entry(e) => {
                        let Some(message) = messages.get(&e.message) else { continue };
                        message.store.refs.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                        ready.push(Entry::Loaded(QueuedMessage::new(e.seq, e.delivered, message.clone())));
                        count += 1;
                    }
                    Recovered::Run { first_seq, last_seq, count: n } => {
                        ready.push(Entry::Run(Run::recovered(*first_seq, *last_seq, *n)));
                        count += n;
                    }
                }
            }
            recovered += count as usize;
            let name: Arc<str> = q.name.as_str().into();
            let settings = QueueSettings {
                durable: true,
                exclusive_owner: None,
                auto_delete: q.auto_delete,
                arguments: q.arguments.clone(),
            };
            let Some(me) = self.me.upgrade() else { return };
            let host: Arc<dyn QueueHost> = me;
            let queue: Arc<Queue> = ClassicQueue::restore(name.clone(), &host, settings, Some((store.clone(), q.id)), ready);
            queues.insert(name, queue);
        }
        for b in snap.bindings.iter().filter(|b| *b.vhost == *self.name) {
            let dest = if b.to_queue {
                match queues.get(b.destination.as_str()) {
                    Some(q) => Destination::Queue(QueueRef(q.clone())),
                    None => continue,
                }
            } else {
                Destination::Exchange(b.destination.as_str().into())
            };
            if let Err(e) = topo.routing.bind(&b.source, dest, &b.routing_key, &b.arguments) {
                log::warn!("skipping stored binding {} -> {}: {e:?}", b.source, b.destination);
            }
        }
        log::info!(
            "vhost '{}': recovered {} exchanges, {} queues, {} messages",
            self.name,
            snap.exchanges.iter().filter(|e| *e.vhost == *self.name).count(),
            queues.len(),
            recovered
        );
        drop(queues);
        drop(topo);
        self.restore_delayed(snap);
    }

    fn persist(&self, op: StoreOp) {
        if let Some(store) = &self.store {
            store.send(op);
        }
    }

    /// The store record for a binding, if both ends are durable (callers hold the
    /// topology lock).
    fn binding_record_locked(
        &self,
        topo: &Topology,
        source: &str,
        dest: &Destination<QueueRef>,
        key: &str,
        args: &FieldTable,
    ) -> Option<BindingRecord> {
        self.store.as_ref()?;
        let durable = |name: &str| topo.exchanges.get(name).is_some_and(|e| e.durable);
        let (destination, to_queue, durable_dest) = match dest {
            Destination::Queue(q) => (q.0.name().to_string(), true, q.0.is_durable()),
            Destination::Exchange(e) => (e.to_string(), false, durable(e)),
        };
        (durable(source) && durable_dest).then(|| BindingRecord {
            vhost: self.name.to_string(),
            source: source.to_string(),
            destination,
            to_queue,
            routing_key: key.to_string(),
            arguments: args.clone(),
        })
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

    // ---- exchanges -------------------------------------------------------------

    pub fn declare_exchange(&self, d: &ExchangeDeclare<'_>) -> AmqpResult<()> {
        if d.name.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        if d.passive {
            return match read(&self.topology).exchanges.get(d.name) {
                Some(_) => Ok(()),
                None => Err(self.no_exchange(d.name)),
            };
        }
        crate::exchange::check_type(d.kind)?;
        let mut topo = self.change_topology();
        if let Some(existing) = topo.exchanges.get(d.name) {
            return self.check_exchange_equivalent(existing, d);
        }
        // As RabbitMQ: the reserved prefix only stops creating new exchanges, so an
        // equivalent redeclare of amq.direct and friends succeeds.
        if d.name.starts_with("amq.") {
            return Err(AmqpError::AccessRefused(format!(
                "exchange name '{}' contains reserved prefix 'amq.*'",
                d.name
            )));
        }
        // Arguments are validated only when the exchange is created, as RabbitMQ does.
        let settings = crate::exchange::settings(d.kind, d.arguments, d.name, &self.name)?;
        let name: Arc<str> = d.name.into();
        if d.durable {
            self.persist(StoreOp::PutExchange(ExchangeRecord {
                vhost: self.name.to_string(),
                name: d.name.to_string(),
                kind: settings.type_name().to_string(),
                auto_delete: d.auto_delete,
                internal: d.internal,
                arguments: d.arguments.clone(),
            }));
        }
        Self::add_to_routing(&mut topo.routing, d.name, &settings);
        topo.exchanges.insert(
            name.clone(),
            ExchangeMeta {
                name,
                settings,
                durable: d.durable,
                auto_delete: d.auto_delete,
                internal: d.internal,
                arguments: d.arguments.clone(),
            },
        );
        Ok(())
    }

    /// Adds a new exchange to the routing table with its settings.
    fn add_to_routing(routing: &mut RoutingTable<QueueRef>, name: &str, s: &ExchangeSettings) {
        routing.add_exchange(name, s.kind);
        routing.set_alternate(name, s.alternate.as_deref());
        if s.hash_on != HashOn::RoutingKey {
            routing.set_hash_on(name, s.hash_on.clone());
        }
    }

    fn check_exchange_equivalent(&self, e: &ExchangeMeta, d: &ExchangeDeclare<'_>) -> AmqpResult<()> {
        let mismatch = |arg: &str, received: &dyn std::fmt::Display, current: &dyn std::fmt::Display| {
            AmqpError::PreconditionFailed(format!(
                "inequivalent arg '{arg}' for exchange '{}' in vhost '{}': received '{received}' but current is '{current}'",
                e.name, self.name
            ))
        };
        if e.settings.type_name() != d.kind {
            return Err(mismatch("type", &d.kind, &e.settings.type_name()));
        }
        if e.durable != d.durable {
            return Err(mismatch("durable", &d.durable, &e.durable));
        }
        if e.auto_delete != d.auto_delete {
            return Err(mismatch("auto_delete", &d.auto_delete, &e.auto_delete));
        }
        if e.internal != d.internal {
            return Err(mismatch("internal", &d.internal, &e.internal));
        }
        // As RabbitMQ (and the plugins' exchange types): of the arguments, only
        // alternate-exchange must match on redeclare.
        let (received, current) =
            (d.arguments.inner().get("alternate-exchange"), e.arguments.inner().get("alternate-exchange"));
        if received != current {
            // RabbitMQ's wording: a side that is set is "the value 'x' of type 't'" when
            // the other side is not.
            let side = |v: Option<&AMQPValue>, other: Option<&AMQPValue>| match (v, other) {
                (None, _) => "none".to_string(),
                (Some(v), Some(_)) => format!("'{}'", DisplayValue(Some(v))),
                (Some(v), None) => format!(
                    "the value '{}' of type '{}'",
                    DisplayValue(Some(v)),
                    crate::exchange::type_word(v)
                ),
            };
            return Err(AmqpError::PreconditionFailed(format!(
                "inequivalent arg 'alternate-exchange' for exchange '{}' in vhost '{}': received {} but current is {}",
                e.name,
                self.name,
                side(received, current),
                side(current, received)
            )));
        }
        Ok(())
    }

    /// exchange.delete. Deleting a missing exchange succeeds, as in RabbitMQ.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> AmqpResult<()> {
        if name.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::AccessRefused(format!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        let mut topo = self.change_topology();
        if !topo.exchanges.contains_key(name) {
            return Ok(());
        }
        if if_unused && topo.routing.has_bindings_from(name) {
            return Err(AmqpError::PreconditionFailed(format!(
                "exchange '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        self.remove_exchange_locked(&mut topo, name);
        Ok(())
    }

    /// Removes an exchange and its bindings, then auto-deletes what that leaves unused.
    fn remove_exchange_locked(&self, topo: &mut Topology, name: &str) {
        let mut pending = vec![Arc::<str>::from(name)];
        let mut first = true;
        while let Some(source) = pending.pop() {
            let unused = first
                || (topo.exchanges.get(&source).is_some_and(|e| e.auto_delete)
                    && !topo.routing.has_bindings_from(&source));
            first = false;
            if !unused {
                continue;
            }
            if let Some(meta) = topo.exchanges.remove(&source) {
                if meta.settings.delayed {
                    for id in self.delayed.forget_exchange(&source) {
                        self.persist(StoreOp::DeleteDelayed(id));
                    }
                }
                if meta.durable {
                    self.persist(StoreOp::DeleteExchange { vhost: self.name.to_string(), name: source.to_string() });
                }
            }
            if let Some(more) = topo.routing.remove_exchange(&source) {
                pending.extend(more);
            }
        }
    }

    /// Deletes the auto-delete exchanges among `sources` that have no bindings left,
    /// and, transitively, the ones that loses.
    fn auto_delete_exchanges(&self, topo: &mut Topology, sources: Vec<Arc<str>>) {
        for source in sources {
            let unused = topo.exchanges.get(&source).is_some_and(|e| e.auto_delete)
                && !topo.routing.has_bindings_from(&source);
            if unused {
                self.remove_exchange_locked(topo, &source);
            }
        }
    }

    /// Checks that `name` can be published to (404 if missing, 403 if internal);
    /// returns its interned name.
    pub fn check_publish(&self, name: &str) -> AmqpResult<Arc<str>> {
        Ok(self.publishable(&read(&self.topology), name)?.name.clone())
    }

    /// The exchange a publish to `name` goes to: 404 if missing, 403 if internal.
    fn publishable<'t>(&self, topo: &'t Topology, name: &str) -> AmqpResult<&'t ExchangeMeta> {
        match topo.exchanges.get(name) {
            None => Err(self.no_exchange(name)),
            Some(e) if e.internal => Err(AmqpError::AccessRefused(format!(
                "cannot publish to internal exchange '{name}' in vhost '{}'",
                self.name
            ))),
            Some(e) => Ok(e),
        }
    }

    // ---- queues ----------------------------------------------------------------

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

    /// queue.declare for an already-named queue. Returns the queue and whether it was
    /// created by this call.
    pub fn declare_queue(
        &self,
        name: &str,
        passive: bool,
        settings: QueueSettings,
        conn: ConnectionId,
    ) -> AmqpResult<(Arc<Queue>, bool)> {
        if passive {
            return Ok((self.queue_for(name, conn)?, false));
        }
        if name.starts_with("amq.") && !name.starts_with("amq.gen-") {
            return Err(AmqpError::AccessRefused(format!(
                "queue name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        let mut queues = self.change_queues();
        if let Some(q) = queues.get(name) {
            // As RabbitMQ: the declared owner must be the queue's, exactly (another
            // connection's queue, exclusive=true for a shared queue and exclusive=false
            // from the owner alike): a lock conflict, checked before the other fields.
            if q.settings().exclusive_owner != settings.exclusive_owner {
                return Err(exclusive_locked(q.as_ref()));
            }
            self.check_queue_equivalent(q.as_ref(), &settings)?;
            return Ok((q.clone(), false));
        }
        let name: Arc<str> = name.into();
        // Exclusive queues die with their connection, so they are never stored.
        let store = match &self.store {
            Some(store) if settings.durable && settings.exclusive_owner.is_none() => {
                let id = store.next_queue_id();
                store.send(StoreOp::PutQueue(QueueRecord {
                    id,
                    vhost: self.name.to_string(),
                    name: name.to_string(),
                    auto_delete: settings.auto_delete,
                    arguments: settings.arguments.clone(),
                }));
                Some((store.clone(), id))
            }
            _ => None,
        };
        let Some(me) = self.me.upgrade() else {
            return Err(AmqpError::InternalError("vhost is shutting down".into()));
        };
        let host: Arc<dyn QueueHost> = me;
        let q: Arc<Queue> = ClassicQueue::new(name.clone(), &host, settings, store);
        queues.insert(name, q.clone());
        drop(queues);
        // Every queue is bound to the default exchange by its name; that binding is
        // implicit (handled in `route`), as in RabbitMQ, and never listed.
        Ok((q, true))
    }

    /// RabbitMQ's equivalence check for a redeclare (after the owner check): durable,
    /// auto_delete, then the arguments it compares for classic queues, in its order.
    /// Other arguments (its quorum/stream ones, HareMQ's extensions, unknown ones) are
    /// not compared. Integers compare by value across integer types.
    fn check_queue_equivalent(&self, q: &Queue, s: &QueueSettings) -> AmqpResult<()> {
        let cur = q.settings();
        let mismatch = |arg: &str, received: String, current: String| {
            AmqpError::PreconditionFailed(format!(
                "inequivalent arg '{arg}' for queue '{}' in vhost '{}': received {received} but current is {current}",
                q.name(), self.name
            ))
        };
        if cur.durable != s.durable {
            return Err(mismatch("durable", format!("'{}'", s.durable), format!("'{}'", cur.durable)));
        }
        if cur.auto_delete != s.auto_delete {
            return Err(mismatch("auto_delete", format!("'{}'", s.auto_delete), format!("'{}'", cur.auto_delete)));
        }
        for key in COMPARED_QUEUE_ARGS {
            let (received, current) = (s.arguments.inner().get(key), cur.arguments.inner().get(key));
            let equivalent = match (received, current) {
                (Some(r), Some(c)) => arg_equivalent(r, c),
                // x-queue-type "classic" is the default.
                (None, Some(v)) | (Some(v), None) => {
                    key == "x-queue-type" && matches!(v, AMQPValue::LongString(t) if t.as_bytes() == b"classic")
                }
                (None, None) => true,
            };
            if !equivalent {
                // RabbitMQ's wording: both set, the values; one unset, "none" and "the
                // value 'v' of type 't'".
                let side = |v: Option<&AMQPValue>, other: Option<&AMQPValue>| match (v, other) {
                    (None, _) => "none".to_string(),
                    (Some(v), Some(_)) => format!("'{}'", DisplayValue(Some(v))),
                    (Some(v), None) => {
                        format!("the value '{}' of type '{}'", DisplayValue(Some(v)), crate::exchange::type_word(v))
                    }
                };
                return Err(mismatch(key, side(received, current), side(current, received)));
            }
        }
        Ok(())
    }

    /// Deletes a queue: unbinds it, cancels its consumers (server-sent basic.cancel)
    /// and drops its messages. Returns the number of ready messages it held.
    pub fn delete_queue(&self, q: &Arc<Queue>) -> u32 {
        {
            let mut queues = self.change_queues();
            if queues.get(q.name()).is_some_and(|cur| Arc::ptr_eq(cur, q)) {
                queues.remove(q.name());
            }
        }
        {
            let mut topo = self.change_topology();
            let sources = topo.routing.remove_queue(&QueueRef(q.clone()));
            self.auto_delete_exchanges(&mut topo, sources);
        }
        let (count, orphans) = q.mark_deleted();
        for o in orphans {
            o.channel.cancelled(&o.tag);
        }
        count
    }

    /// The queues exclusively owned by `conn`, to delete when it closes.
    pub fn exclusive_queues_of(&self, conn: ConnectionId) -> Vec<Arc<Queue>> {
        read(&self.queues)
            .values()
            .filter(|q| q.settings().exclusive_owner == Some(conn))
            .cloned()
            .collect()
    }

    // ---- bindings --------------------------------------------------------------

    fn bind_error(&self, e: BindError) -> AmqpError {
        match e {
            BindError::NoSuchExchange(name) => self.no_exchange(&name),
            BindError::InvalidArgument(msg) => AmqpError::PreconditionFailed(msg),
        }
    }

    pub fn bind_queue(&self, q: &Arc<Queue>, exchange: &str, key: &str, args: &FieldTable) -> AmqpResult<()> {
        if exchange.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        let mut topo = self.change_topology();
        if !topo.exchanges.contains_key(exchange) {
            return Err(self.no_exchange(exchange));
        }
        if q.is_deleted() {
            return Err(self.no_queue(q.name()));
        }
        self.add_binding_locked(&mut topo, exchange, Destination::Queue(QueueRef(q.clone())), key, args)
    }

    /// queue.unbind for connection `conn`. As RabbitMQ, unbinding is idempotent: a
    /// missing queue, exchange or binding is success. Only the default exchange (403)
    /// and removing a binding of another connection's exclusive queue (405) fail.
    pub fn unbind_queue(
        &self,
        queue: &str,
        exchange: &str,
        key: &str,
        args: &FieldTable,
        conn: ConnectionId,
    ) -> AmqpResult<()> {
        if exchange.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        let Some(q) = self.queue(queue) else {
            return Ok(());
        };
        let mut topo = self.change_topology();
        let dest = Destination::Queue(QueueRef(q.clone()));
        if !topo.routing.has_binding(exchange, &dest, key, args) {
            return Ok(());
        }
        check_exclusive(q.as_ref(), conn)?;
        self.remove_binding_locked(&mut topo, exchange, &dest, key, args);
        Ok(())
    }

    pub fn bind_exchange(&self, destination: &str, source: &str, key: &str, args: &FieldTable) -> AmqpResult<()> {
        let mut topo = self.lock_for_exchange_binding(destination, source)?;
        self.add_binding_locked(&mut topo, source, Destination::Exchange(destination.into()), key, args)
    }

    /// exchange.unbind. Idempotent as in RabbitMQ: a missing source, destination or
    /// binding is success; only the default exchange on either side is refused (403).
    pub fn unbind_exchange(&self, destination: &str, source: &str, key: &str, args: &FieldTable) -> AmqpResult<()> {
        if destination.is_empty() || source.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        let mut topo = self.change_topology();
        self.remove_binding_locked(&mut topo, source, &Destination::Exchange(destination.into()), key, args);
        Ok(())
    }

    /// The topology, write-locked, once both ends of an exchange-to-exchange binding are
    /// known to exist (and neither is the default exchange).
    fn lock_for_exchange_binding(&self, destination: &str, source: &str) -> AmqpResult<Changing<'_, Topology>> {
        if destination.is_empty() || source.is_empty() {
            return Err(Self::default_exchange_refused());
        }
        let topo = self.change_topology();
        for name in [destination, source] {
            if !topo.exchanges.contains_key(name) {
                return Err(self.no_exchange(name));
            }
        }
        Ok(topo)
    }

    /// Adds a binding and records it if both ends are durable.
    fn add_binding_locked(
        &self,
        topo: &mut Topology,
        source: &str,
        dest: Destination<QueueRef>,
        key: &str,
        args: &FieldTable,
    ) -> AmqpResult<()> {
        let record = self.binding_record_locked(topo, source, &dest, key, args);
        let added = topo.routing.bind(source, dest, key, args).map_err(|e| self.bind_error(e))?;
        if let (true, Some(r)) = (added, record) {
            self.persist(StoreOp::PutBinding(r));
        }
        Ok(())
    }

    /// Removes a binding (if present), forgets its record and auto-deletes the source
    /// exchange if that was its last binding.
    fn remove_binding_locked(
        &self,
        topo: &mut Topology,
        source: &str,
        dest: &Destination<QueueRef>,
        key: &str,
        args: &FieldTable,
    ) {
        let record = self.binding_record_locked(topo, source, dest, key, args);
        if topo.routing.unbind(source, dest, key, args) {
            if let Some(r) = record {
                self.persist(StoreOp::DeleteBinding(r));
            }
            self.auto_delete_exchanges(topo, vec![source.into()]);
        }
    }

    // ---- direct reply-to -------------------------------------------------------

    pub fn register_reply_consumer(&self, token: &str, channel: Arc<dyn ReplySink>) {
        self.reply_consumers.lock().unwrap_or_else(|e| e.into_inner()).insert(token.into(), channel);
    }

    pub fn unregister_reply_consumer(&self, token: &str) {
        self.reply_consumers.lock().unwrap_or_else(|e| e.into_inner()).remove(token);
    }

    /// The channel behind a reply-to address (`amq.rabbitmq.reply-to.<token>`).
    pub fn reply_consumer(&self, routing_key: &str) -> Option<Arc<dyn ReplySink>> {
        let token = routing_key.strip_prefix(REPLY_TO_PREFIX)?;
        self.reply_consumers.lock().unwrap_or_else(|e| e.into_inner()).get(token).cloned()
    }

    // ---- routing ---------------------------------------------------------------

    /// Routes a publish: appends the destination queues to `out` (following CC/BCC
    /// keys, alternate exchanges and exchange-to-exchange bindings) and returns the
    /// exchange's interned name, or says to hold the message when the exchange is an
    /// `x-delayed-message` one and `x-delay` is positive. 404 for a missing exchange,
    /// 403 for an internal one.
    pub fn route(&self, exchange: &str, msg: &RouteRequest<'_>, out: &mut Vec<QueueRef>) -> AmqpResult<Routed> {
        let topo = read(&self.topology);
        let meta = self.publishable(&topo, exchange)?;
        let name = meta.name.clone();
        if meta.settings.delayed {
            if let Some(ms) = crate::exchange::delay_ms(msg.headers) {
                return Ok(Routed::Delay(name, ms));
            }
        }
        // Read under the topology lock: every change counted in it is complete.
        let generation = self.generation();
        let key_only = if exchange.is_empty() {
            drop(topo);
            let queues = read(&self.queues);
            for key in std::iter::once(&msg.routing_key).chain(msg.extra_keys) {
                if let Some(q) = queues.get(*key) {
                    let q = QueueRef(q.clone());
                    if !out.contains(&q) {
                        out.push(q);
                    }
                }
            }
            msg.extra_keys.is_empty()
        } else {
            // A delayed exchange's outcome depends on the headers (x-delay).
            topo.routing.route_message(exchange, msg, out) && !meta.settings.delayed
        };
        Ok(Routed::Now(name, key_only.then_some(generation)))
    }

    /// Holds a message published to a delayed-message exchange until it is due. Returns
    /// true if it was sent to the store (persistent, durable exchange): its confirm must
    /// then wait for the commit.
    pub fn schedule_delayed(&self, mut msg: DelayedMessage) -> bool {
        let durable = read(&self.topology).exchanges.get(&*msg.exchange).is_some_and(|e| e.durable);
        let mut persisted = false;
        if let (Some(store), true) = (&self.store, msg.persistent && durable) {
            let id = store.next_message_id();
            let delay_ms = msg.due.saturating_duration_since(std::time::Instant::now()).as_millis() as u64;
            let record = DelayedRecord {
                vhost: self.name.to_string(),
                due_ms: crate::message::now_ms() + delay_ms,
                exchange: msg.exchange.to_string(),
                routing_key: msg.routing_key.to_string(),
                extra_keys: msg.extra_keys.clone(),
                raw_properties: msg.raw_properties.to_vec(),
                body: msg.body.to_vec(),
                persistent: msg.persistent,
                ttl: msg.ttl,
            };
            store.send(StoreOp::PutDelayed(id, encode_delayed(&record)));
            msg.store_id = Some(id);
            persisted = true;
        }
        self.delayed.schedule(msg);
        persisted
    }

    /// Reschedules the delayed messages recovered from the store.
    fn restore_delayed(&self, snap: &Snapshot) {
        let now = crate::message::now_ms();
        for (id, r) in snap.delayed.iter().filter(|(_, r)| *r.vhost == *self.name) {
            let props = match crate::wire::nesting::parse_properties(&r.raw_properties) {
                Some(p) => p,
                None => {
                    log::warn!("dropping stored delayed message {id}: unreadable properties");
                    self.persist(StoreOp::DeleteDelayed(*id));
                    continue;
                }
            };
            self.delayed.schedule(DelayedMessage {
                due: std::time::Instant::now() + std::time::Duration::from_millis(r.due_ms.saturating_sub(now)),
                exchange: r.exchange.as_str().into(),
                routing_key: r.routing_key.as_str().into(),
                extra_keys: r.extra_keys.clone(),
                headers: props.headers().clone(),
                message_id: props.message_id().as_ref().map(|s| s.to_string()),
                correlation_id: props.correlation_id().as_ref().map(|s| s.to_string()),
                timestamp: *props.timestamp(),
                raw_properties: r.raw_properties.clone().into_boxed_slice(),
                body: r.body.clone().into_boxed_slice(),
                persistent: r.persistent,
                ttl: r.ttl,
                store_id: Some(*id),
            });
        }
    }

    /// A held message is due: route it through its exchange's underlying type (with
    /// alternate exchanges) and enqueue it. Nobody is told if it routes nowhere (the
    /// plugin does not support mandatory either), nor if the exchange is gone.
    fn route_delayed(&self, m: DelayedMessage) {
        let keys: Vec<&str> = m.extra_keys.iter().map(String::as_str).collect();
        let req = RouteRequest {
            routing_key: &m.routing_key,
            extra_keys: &keys,
            headers: m.headers.as_ref(),
            message_id: m.message_id.as_deref(),
            correlation_id: m.correlation_id.as_deref(),
            timestamp: m.timestamp,
        };
        let mut out = Vec::new();
        let forget = |store_id| {
            if let Some(id) = store_id {
                self.persist(StoreOp::DeleteDelayed(id));
            }
        };
        let name = {
            let topo = read(&self.topology);
            let Some(meta) = topo.exchanges.get(&*m.exchange) else {
                forget(m.store_id);
                return;
            };
            topo.routing.route_message(&m.exchange, &req, &mut out);
            meta.name.clone()
        };
        drop(keys);
        let charge = crate::memory::MemoryCharge::content(&m.routing_key, &m.raw_properties, &m.body);
        enqueue_routed(
            &self.store,
            &mut out,
            Message {
                exchange: name,
                routing_key: m.routing_key,
                raw_properties: m.raw_properties,
                body: m.body,
                persistent: m.persistent,
                published_ms: crate::message::now_ms(),
                ttl: m.ttl,
                store: Default::default(),
                charge,
            },
        );
        // After the queue entries it became: the store applies ops in order.
        forget(m.store_id);
    }
}

impl QueueHost for VHost {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn default_consumer_timeout_ms(&self) -> u64 {
        self.consumer_timeout_ms.load(Ordering::Relaxed)
    }

    fn route_dead_letter(&self, exchange: &str, req: &RouteRequest<'_>, out: &mut Vec<QueueRef>) -> AmqpResult<Arc<str>> {
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

/// The channel behind a direct reply-to address, as the vhost's registry holds it.
pub trait ReplySink: Send + Sync {
    /// Delivers a reply to the channel's reply consumer (always no-ack, as RabbitMQ
    /// requires). False if the consumer is gone.
    fn deliver_reply(&self, message: &QueuedMessage) -> bool;
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
        q.name(), q.vhost()
    ))
}

/// The queue arguments RabbitMQ 3.10 compares on redeclare (its classic queue type's
/// `queue_arguments`), in its order.
const COMPARED_QUEUE_ARGS: [&str; 13] = [
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-type",
    "x-queue-master-locator",
];

/// RabbitMQ's argument equivalence: the same type class (all integer types are one,
/// float and double another) and an equal value.
fn arg_equivalent(a: &AMQPValue, b: &AMQPValue) -> bool {
    fn int(v: &AMQPValue) -> Option<i128> {
        Some(match v {
            AMQPValue::ShortShortInt(n) => i128::from(*n),
            AMQPValue::ShortShortUInt(n) => i128::from(*n),
            AMQPValue::ShortInt(n) => i128::from(*n),
            AMQPValue::ShortUInt(n) => i128::from(*n),
            AMQPValue::LongInt(n) => i128::from(*n),
            AMQPValue::LongUInt(n) => i128::from(*n),
            AMQPValue::LongLongInt(n) => i128::from(*n),
            _ => return None,
        })
    }
    fn float(v: &AMQPValue) -> Option<f64> {
        match v {
            AMQPValue::Float(f) => Some(f64::from(*f)),
            AMQPValue::Double(f) => Some(*f),
            _ => None,
        }
    }
    match (int(a), int(b), float(a), float(b)) {
        (Some(x), Some(y), ..) => x == y,
        (_, _, Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Formats an optional argument value the way RabbitMQ's inequivalence errors do.
struct DisplayValue<'a>(Option<&'a AMQPValue>);

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
