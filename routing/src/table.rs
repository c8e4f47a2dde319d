//! The routing table of one virtual host: exchanges, bindings and `route`.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use amq_protocol_types::FieldTable;

use crate::hash::{hash_bytes, hash_int, hash_value, parse_weight, HashOn, HashProperty, HashRing};
use crate::headers::HeadersMatch;
use crate::set::DestSet;
use crate::topic::TopicTrie;
use crate::words::WordHashBuilder;
use crate::ExchangeKind;

/// Where a binding delivers: a queue, or another exchange (exchange-to-exchange binding).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Destination<Q> {
    Queue(Q),
    Exchange(Arc<str>),
}

/// One binding, as listed by [`RoutingTable::bindings`] (for persistence and listing).
#[derive(Clone, Debug, PartialEq)]
pub struct Binding<Q> {
    pub source: Arc<str>,
    pub destination: Destination<Q>,
    pub routing_key: Arc<str>,
    pub arguments: FieldTable,
}

/// Why a bind was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindError {
    /// The source exchange (or destination exchange) does not exist.
    NoSuchExchange(Arc<str>),
    /// Binding arguments are invalid for the exchange kind (e.g. a bad `x-match` value).
    InvalidArgument(String),
}

/// What `route` needs to know about one message.
///
/// `extra_keys` are further routing keys (the `CC` and `BCC` headers): the exchange
/// routes the message as if published once per key, each queue receiving it at most
/// once. The properties are only read by consistent-hash exchanges with
/// `hash-property`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteRequest<'a> {
    pub routing_key: &'a str,
    pub extra_keys: &'a [&'a str],
    pub headers: Option<&'a FieldTable>,
    pub message_id: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    pub timestamp: Option<u64>,
}

impl RouteRequest<'_> {
    /// The position of this message on a consistent-hash ring.
    fn hash(&self, on: &HashOn) -> u64 {
        match on {
            HashOn::RoutingKey => hash_bytes(self.routing_key.as_bytes()),
            HashOn::Header(name) => hash_value(self.headers.and_then(|h| h.inner().get(&**name))),
            HashOn::Property(HashProperty::MessageId) => hash_bytes(self.message_id.unwrap_or("").as_bytes()),
            HashOn::Property(HashProperty::CorrelationId) => hash_bytes(self.correlation_id.unwrap_or("").as_bytes()),
            HashOn::Property(HashProperty::Timestamp) => match self.timestamp {
                Some(t) => hash_int(t as i128),
                None => hash_bytes(b""),
            },
        }
    }
}

/// Exchanges and their bindings for one virtual host.
///
/// Binding identity follows AMQP: (source, destination, routing key, arguments). Binding
/// the same identity twice is a no-op.
///
/// Each exchange keeps two views of its bindings: the full identity set (destination →
/// routing key → distinct argument tables), used for bind/unbind/listing and for removing
/// every binding to one destination at once; and a per-kind routing index that `route`
/// reads. The table also keeps reverse indexes (queue → sources, exchange → sources) so
/// that deleting a queue or an exchange touches only the exchanges bound to it.
pub struct RoutingTable<Q> {
    exchanges: HashMap<Arc<str>, Exchange<Q>>,
    /// Queue → (source exchange → number of bindings from it).
    queue_sources: HashMap<Q, HashMap<Arc<str>, usize>>,
    /// Destination exchange → (source exchange → number of bindings from it).
    exchange_sources: HashMap<Arc<str>, HashMap<Arc<str>, usize>>,
}

struct Exchange<Q> {
    /// The map key, kept so callers get the shared name back without allocating.
    name: Arc<str>,
    kind: ExchangeKind,
    /// `alternate-exchange`: where a message goes when this exchange routes it nowhere.
    alternate: Option<Arc<str>>,
    /// What a consistent-hash exchange hashes (ignored by other kinds).
    hash_on: HashOn,
    /// Identity set of the bindings from this exchange. Invariant: no empty inner maps
    /// or vectors, so `bindings.is_empty()` means "no bindings".
    bindings: HashMap<Destination<Q>, HashMap<Arc<str>, Vec<FieldTable>>>,
    index: Index<Q>,
}

/// What `route` consults, per exchange kind.
///
/// Direct, fanout and topic ignore arguments when routing, so they index each
/// (destination, key) pair — or, for fanout, each destination — once however many
/// argument tables it is bound with. Headers bindings route by their arguments, so every
/// binding gets its own entry.
enum Index<Q> {
    Direct(HashMap<Arc<str>, DestSet<Destination<Q>>>),
    Fanout(DestSet<Destination<Q>>),
    Topic(TopicTrie<Destination<Q>>),
    Headers(Vec<(HeadersMatch, Destination<Q>)>),
    ConsistentHash(HashRing<Destination<Q>>),
}

impl<Q: Clone + Eq + Hash> Index<Q> {
    fn new(kind: ExchangeKind) -> Self {
        match kind {
            ExchangeKind::Direct => Self::Direct(HashMap::new()),
            ExchangeKind::Fanout => Self::Fanout(DestSet::default()),
            ExchangeKind::Topic => Self::Topic(TopicTrie::new()),
            ExchangeKind::Headers => Self::Headers(Vec::new()),
            ExchangeKind::ConsistentHash => Self::ConsistentHash(HashRing::default()),
        }
    }

    /// Indexes a new binding. `new_pair`: first binding for (destination, key);
    /// `new_dest`: first binding for the destination at all.
    fn add(
        &mut self,
        dest: &Destination<Q>,
        key: &Arc<str>,
        matcher: Option<HeadersMatch>,
        new_pair: bool,
        new_dest: bool,
    ) {
        match self {
            Self::Direct(map) if new_pair => {
                map.entry(key.clone()).or_default().insert(dest.clone());
            }
            Self::Fanout(set) if new_dest => {
                set.insert(dest.clone());
            }
            Self::Topic(trie) if new_pair => {
                trie.insert(key, dest.clone());
            }
            Self::ConsistentHash(ring) if new_pair => {
                ring.insert(dest.clone(), key);
            }
            Self::Headers(list) => {
                if let Some(m) = matcher {
                    list.push((m, dest.clone()));
                }
            }
            _ => {}
        }
    }

    /// Un-indexes one removed binding; flags as in [`Index::add`], meaning "last".
    fn remove(&mut self, dest: &Destination<Q>, key: &str, args: &FieldTable, gone_pair: bool, gone_dest: bool) {
        match self {
            Self::Direct(map) if gone_pair => {
                if let Some(set) = map.get_mut(key) {
                    set.remove(dest);
                    if set.is_empty() {
                        map.remove(key);
                    }
                }
            }
            Self::Fanout(set) if gone_dest => {
                set.remove(dest);
            }
            Self::Topic(trie) if gone_pair => {
                trie.remove(key, dest);
            }
            Self::ConsistentHash(ring) if gone_pair => {
                ring.remove(dest, key);
            }
            Self::Headers(list) => {
                // Two argument tables may parse to the same matcher (e.g. differing only
                // in ignored `x-` keys); such entries are interchangeable, so removing
                // any one of them is right.
                if let Ok(m) = HeadersMatch::parse(args) {
                    if let Some(i) = list.iter().position(|(lm, d)| d == dest && *lm == m) {
                        list.swap_remove(i);
                    }
                }
            }
            _ => {}
        }
    }

    /// Un-indexes every binding to `dest`, whose keys are `keys`.
    fn remove_dest<'k>(&mut self, dest: &Destination<Q>, keys: impl Iterator<Item = &'k Arc<str>>) {
        match self {
            Self::Direct(map) => {
                for key in keys {
                    if let Some(set) = map.get_mut(&**key) {
                        set.remove(dest);
                        if set.is_empty() {
                            map.remove(&**key);
                        }
                    }
                }
            }
            Self::Fanout(set) => {
                set.remove(dest);
            }
            Self::Topic(trie) => {
                for key in keys {
                    trie.remove(key, dest);
                }
            }
            Self::Headers(list) => list.retain(|(_, d)| d != dest),
            Self::ConsistentHash(ring) => ring.remove_dest(dest),
        }
    }
}

impl<Q: Clone + Eq + Hash> Exchange<Q> {
    /// Drops every binding to `dest`; returns how many there were.
    fn remove_dest(&mut self, dest: &Destination<Q>) -> usize {
        let Some(by_key) = self.bindings.remove(dest) else {
            return 0;
        };
        self.index.remove_dest(dest, by_key.keys());
        by_key.values().map(Vec::len).sum()
    }
}

/// Decrements a reverse-index count, removing entries that reach zero.
fn release<K: Eq + Hash>(reverse: &mut HashMap<K, HashMap<Arc<str>, usize>>, dest: &K, source: &str, n: usize) {
    let Some(sources) = reverse.get_mut(dest) else {
        return;
    };
    if let Some(count) = sources.get_mut(source) {
        *count = count.saturating_sub(n);
        if *count == 0 {
            sources.remove(source);
        }
    }
    if sources.is_empty() {
        reverse.remove(dest);
    }
}

impl<Q: Clone + Eq + Hash> Default for RoutingTable<Q> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Q: Clone + Eq + Hash> RoutingTable<Q> {
    /// An empty table (no exchanges at all; the broker declares the default ones).
    pub fn new() -> Self {
        Self { exchanges: HashMap::new(), queue_sources: HashMap::new(), exchange_sources: HashMap::new() }
    }

    /// Adds an exchange. Returns false (and changes nothing) if the name exists already.
    pub fn add_exchange(&mut self, name: &str, kind: ExchangeKind) -> bool {
        if self.exchanges.contains_key(name) {
            return false;
        }
        let name: Arc<str> = name.into();
        self.exchanges.insert(
            name.clone(),
            Exchange {
                name,
                kind,
                alternate: None,
                hash_on: HashOn::RoutingKey,
                bindings: HashMap::new(),
                index: Index::new(kind),
            },
        );
        true
    }

    /// Sets (or clears) an exchange's alternate exchange. The alternate need not exist
    /// yet: `route` looks it up by name each time, as RabbitMQ does. Returns false if
    /// `name` does not exist.
    pub fn set_alternate(&mut self, name: &str, alternate: Option<&str>) -> bool {
        match self.exchanges.get_mut(name) {
            Some(x) => {
                x.alternate = alternate.map(Arc::from);
                true
            }
            None => false,
        }
    }

    /// Sets what a consistent-hash exchange hashes. Returns false if `name` does not
    /// exist.
    pub fn set_hash_on(&mut self, name: &str, on: HashOn) -> bool {
        match self.exchanges.get_mut(name) {
            Some(x) => {
                x.hash_on = on;
                true
            }
            None => false,
        }
    }

    /// The kind of an exchange, or None if it does not exist.
    pub fn exchange_kind(&self, name: &str) -> Option<ExchangeKind> {
        self.exchanges.get(name).map(|x| x.kind)
    }

    /// Removes an exchange and every binding whose source or destination it is.
    /// Returns false if it did not exist. The returned list is the source exchanges
    /// that lost a binding because of it (for auto-delete), excluding `name` itself.
    pub fn remove_exchange(&mut self, name: &str) -> Option<Vec<Arc<str>>> {
        let x = self.exchanges.remove(name)?;
        // Outgoing bindings: only the reverse indexes of the destinations refer to them.
        for (dest, by_key) in &x.bindings {
            let n = by_key.values().map(Vec::len).sum();
            match dest {
                Destination::Queue(q) => release(&mut self.queue_sources, q, name, n),
                Destination::Exchange(e) => release(&mut self.exchange_sources, e, name, n),
            }
        }
        // Incoming bindings: remove them from each source.
        let mut lost = Vec::new();
        if let Some(sources) = self.exchange_sources.remove(name) {
            let dest = Destination::Exchange(x.name.clone());
            for source in sources.into_keys() {
                if &*source == name {
                    continue;
                }
                if let Some(sx) = self.exchanges.get_mut(&source) {
                    sx.remove_dest(&dest);
                    lost.push(sx.name.clone());
                }
            }
        }
        Some(lost)
    }

    /// Adds a binding. `Ok(true)` if it is new, `Ok(false)` if it existed already.
    pub fn bind(
        &mut self,
        source: &str,
        destination: Destination<Q>,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<bool, BindError> {
        if !self.exchanges.contains_key(source) {
            return Err(BindError::NoSuchExchange(source.into()));
        }
        if let Destination::Exchange(d) = &destination {
            if !self.exchanges.contains_key(&**d) {
                return Err(BindError::NoSuchExchange(d.clone()));
            }
        }
        let Some(x) = self.exchanges.get_mut(source) else {
            return Err(BindError::NoSuchExchange(source.into()));
        };
        let matcher = match x.kind {
            ExchangeKind::Headers => Some(HeadersMatch::parse(arguments).map_err(BindError::InvalidArgument)?),
            ExchangeKind::ConsistentHash => {
                parse_weight(routing_key).map_err(BindError::InvalidArgument)?;
                None
            }
            _ => None,
        };
        let by_key = x.bindings.entry(destination.clone()).or_default();
        let new_dest = by_key.is_empty();
        let (key, new_pair) = match by_key.get_key_value(routing_key) {
            Some((k, args)) => {
                if args.contains(arguments) {
                    return Ok(false);
                }
                (k.clone(), false)
            }
            None => (Arc::<str>::from(routing_key), true),
        };
        by_key.entry(key.clone()).or_default().push(arguments.clone());
        x.index.add(&destination, &key, matcher, new_pair, new_dest);
        let source = x.name.clone();
        let sources = match destination {
            Destination::Queue(q) => self.queue_sources.entry(q).or_default(),
            Destination::Exchange(e) => self.exchange_sources.entry(e).or_default(),
        };
        *sources.entry(source).or_insert(0) += 1;
        Ok(true)
    }

    /// True if exactly this binding exists.
    pub fn has_binding(
        &self,
        source: &str,
        destination: &Destination<Q>,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> bool {
        self.exchanges
            .get(source)
            .and_then(|x| x.bindings.get(destination))
            .and_then(|by_key| by_key.get(routing_key))
            .is_some_and(|args| args.contains(arguments))
    }

    /// Removes a binding. Returns false if there was no such binding (AMQP treats that as
    /// success, so the broker decides what to answer).
    pub fn unbind(
        &mut self,
        source: &str,
        destination: &Destination<Q>,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> bool {
        let Some(x) = self.exchanges.get_mut(source) else {
            return false;
        };
        let Some(by_key) = x.bindings.get_mut(destination) else {
            return false;
        };
        let Some(args) = by_key.get_mut(routing_key) else {
            return false;
        };
        let Some(pos) = args.iter().position(|a| a == arguments) else {
            return false;
        };
        let removed = args.swap_remove(pos);
        let gone_pair = args.is_empty();
        if gone_pair {
            by_key.remove(routing_key);
        }
        let gone_dest = by_key.is_empty();
        if gone_dest {
            x.bindings.remove(destination);
        }
        x.index.remove(destination, routing_key, &removed, gone_pair, gone_dest);
        match destination {
            Destination::Queue(q) => release(&mut self.queue_sources, q, source, 1),
            Destination::Exchange(e) => release(&mut self.exchange_sources, e, source, 1),
        }
        true
    }

    /// Removes every binding to `queue`; returns the source exchanges that lost a binding
    /// (each once), so the broker can auto-delete the ones left without bindings.
    pub fn remove_queue(&mut self, queue: &Q) -> Vec<Arc<str>> {
        let Some(sources) = self.queue_sources.remove(queue) else {
            return Vec::new();
        };
        let dest = Destination::Queue(queue.clone());
        let mut lost = Vec::with_capacity(sources.len());
        for source in sources.into_keys() {
            if let Some(x) = self.exchanges.get_mut(&source) {
                x.remove_dest(&dest);
                lost.push(x.name.clone());
            }
        }
        lost
    }

    /// True if the exchange is the source of at least one binding (exchange.delete if-unused).
    pub fn has_bindings_from(&self, exchange: &str) -> bool {
        self.exchanges.get(exchange).is_some_and(|x| !x.bindings.is_empty())
    }

    /// True if `exchange` is the destination of at least one binding.
    pub fn has_bindings_to(&self, exchange: &str) -> bool {
        self.exchange_sources.contains_key(exchange)
    }

    /// Every binding (order unspecified).
    pub fn bindings(&self) -> Vec<Binding<Q>> {
        let mut out = Vec::new();
        for x in self.exchanges.values() {
            for (dest, by_key) in &x.bindings {
                for (key, args) in by_key {
                    for a in args {
                        out.push(Binding {
                            source: x.name.clone(),
                            destination: dest.clone(),
                            routing_key: key.clone(),
                            arguments: a.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Appends to `out` each queue that a message published to `exchange` with
    /// `routing_key` and `headers` reaches, each queue at most once, following
    /// exchange-to-exchange bindings (each exchange visited at most once). An unknown
    /// exchange routes nowhere. `out` is not cleared first.
    pub fn route(&self, exchange: &str, routing_key: &str, headers: Option<&FieldTable>, out: &mut Vec<Q>) {
        let msg = RouteRequest { routing_key, headers, ..RouteRequest::default() };
        self.route_message(exchange, &msg, out);
    }

    /// [`RoutingTable::route`] for a full [`RouteRequest`]: extra routing keys (CC/BCC)
    /// and the properties consistent-hash exchanges may hash. An exchange on the way
    /// that matches no binding at all hands the message to its alternate exchange, if
    /// that exists and was not visited yet (so alternate-exchange cycles end).
    ///
    /// Returns true if the outcome depended on nothing but the exchange, the routing
    /// key and the table: every exchange visited was direct, fanout or topic and no
    /// extra keys were given. The broker caches such outcomes per publishing channel
    /// until the table changes.
    pub fn route_message(&self, exchange: &str, msg: &RouteRequest<'_>, out: &mut Vec<Q>) -> bool {
        let Some(first) = self.exchanges.get(exchange) else {
            return msg.extra_keys.is_empty();
        };
        let mut key_only = msg.extra_keys.is_empty();
        let mut r = Router {
            exchanges: &self.exchanges,
            sink: Sink { start: out.len(), out, seen: None },
            pending: SmallStack::default(),
            visited: Visited::default(),
            matched: 0,
        };
        r.visited.insert(first);
        let mut current = Some(first);
        let mut first_source = true;
        while let Some(x) = current {
            r.matched = 0;
            key_only &= matches!(x.index, Index::Direct(_) | Index::Fanout(_) | Index::Topic(_));
            match &x.index {
                Index::Direct(map) => {
                    if let Some(set) = map.get(msg.routing_key) {
                        r.emit_all(set.as_slice(), first_source);
                    }
                    for key in msg.extra_keys {
                        if let Some(set) = map.get(*key) {
                            r.emit_all(set.as_slice(), false);
                        }
                    }
                }
                Index::Fanout(set) => r.emit_all(set.as_slice(), first_source),
                Index::Topic(trie) => {
                    trie.for_each_match(msg.routing_key, |d| r.emit(d, false));
                    for key in msg.extra_keys {
                        trie.for_each_match(key, |d| r.emit(d, false));
                    }
                }
                Index::Headers(list) => {
                    for (m, d) in list {
                        if m.matches(msg.headers) {
                            r.emit(d, false);
                        }
                    }
                }
                Index::ConsistentHash(ring) => {
                    if let Some(d) = ring.lookup(msg.hash(&x.hash_on)) {
                        r.emit(d, false);
                    }
                }
            }
            if r.matched == 0 {
                if let Some(ae) = x.alternate.as_deref().and_then(|a| self.exchanges.get(a)) {
                    if r.visited.insert(ae) {
                        r.pending.push(ae);
                    }
                }
            }
            first_source = false;
            current = r.pending.pop();
        }
        key_only
    }
}

/// Where `route` collects queues, deduplicating against what this call appended.
///
/// Small outputs are deduplicated by scanning `out[start..]` (no allocation, and faster
/// than hashing for a handful of queues); past [`Sink::SCAN_LIMIT`] queues a hash set is
/// built once so large fan-outs stay linear.
struct Sink<'o, Q> {
    out: &'o mut Vec<Q>,
    start: usize,
    /// Hashed with the seeded folded-multiply hasher: queue handles are chosen by the
    /// broker, and SipHash dominated routes that reach thousands of queues.
    seen: Option<HashSet<Q, WordHashBuilder>>,
}

impl<Q: Clone + Eq + Hash> Sink<'_, Q> {
    const SCAN_LIMIT: usize = 32;

    /// Appends `q` unless already appended. `known_new` skips the check: the caller
    /// knows `q` is distinct from everything appended (first destination set, which
    /// holds each destination once).
    fn push(&mut self, q: &Q, known_new: bool) {
        if known_new {
            // Keep the set (if any) complete for later checked pushes; the set is only
            // built lazily, so a large plain fanout never hashes at all.
            if let Some(seen) = &mut self.seen {
                seen.insert(q.clone());
            }
            self.out.push(q.clone());
            return;
        }
        if self.seen.is_none() && self.out.len() - self.start > Self::SCAN_LIMIT {
            // Sized for a few times the scan limit, so a large fan-out rehashes less.
            let mut seen = HashSet::with_capacity_and_hasher(Self::SCAN_LIMIT * 8, WordHashBuilder::default());
            seen.extend(self.out[self.start..].iter().cloned());
            self.seen = Some(seen);
        }
        match &mut self.seen {
            Some(seen) => {
                if seen.insert(q.clone()) {
                    self.out.push(q.clone());
                }
            }
            None => {
                if !self.out[self.start..].contains(q) {
                    self.out.push(q.clone());
                }
            }
        }
    }
}

struct Router<'a, 'o, Q> {
    exchanges: &'a HashMap<Arc<str>, Exchange<Q>>,
    sink: Sink<'o, Q>,
    pending: SmallStack<&'a Exchange<Q>>,
    visited: Visited,
    /// Destinations the current exchange matched (0 → its alternate exchange applies).
    matched: usize,
}

impl<'a, Q: Clone + Eq + Hash> Router<'a, '_, Q> {
    fn emit(&mut self, d: &'a Destination<Q>, known_new: bool) {
        self.matched += 1;
        match d {
            Destination::Queue(q) => self.sink.push(q, known_new),
            Destination::Exchange(name) => {
                if let Some(x) = self.exchanges.get(&**name) {
                    if self.visited.insert(x) {
                        self.pending.push(x);
                    }
                }
            }
        }
    }

    /// Emits a destination set. `first_source`: nothing was emitted before, and a set
    /// holds each destination once, so its queues need no dedup check.
    fn emit_all(&mut self, ds: &'a [Destination<Q>], first_source: bool) {
        for d in ds {
            self.emit(d, first_source);
        }
    }
}

/// A stack of exchanges still to route through; inline for the usual few.
struct SmallStack<T> {
    inline: [Option<T>; 8],
    len: usize,
    spill: Vec<T>,
}

impl<T: Copy> Default for SmallStack<T> {
    fn default() -> Self {
        Self { inline: [None; 8], len: 0, spill: Vec::new() }
    }
}

impl<T: Copy> SmallStack<T> {
    fn push(&mut self, v: T) {
        if self.len < self.inline.len() {
            self.inline[self.len] = Some(v);
            self.len += 1;
        } else {
            self.spill.push(v);
        }
    }

    fn pop(&mut self) -> Option<T> {
        if let Some(v) = self.spill.pop() {
            return Some(v);
        }
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.inline[self.len].take()
    }
}

/// Exchanges already visited by one `route` call, by address (stable while `&self` is
/// borrowed); inline for the usual few, a hash set beyond.
#[derive(Default)]
struct Visited {
    inline: [usize; 8],
    len: usize,
    spill: Option<HashSet<usize>>,
}

impl Visited {
    /// Marks `x` visited; false if it already was.
    fn insert<T>(&mut self, x: &T) -> bool {
        let id = x as *const T as usize;
        if self.inline[..self.len].contains(&id) {
            return false;
        }
        if self.len < self.inline.len() {
            self.inline[self.len] = id;
            self.len += 1;
            return true;
        }
        self.spill.get_or_insert_with(HashSet::new).insert(id)
    }
}
