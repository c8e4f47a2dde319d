//! The routing table of one virtual host: exchanges, bindings and `route`.

use std::hash::Hash;
use std::sync::Arc;

use amq_protocol_types::FieldTable;

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

/// Exchanges and their bindings for one virtual host.
///
/// Binding identity follows AMQP: (source, destination, routing key, arguments). Binding
/// the same identity twice is a no-op.
pub struct RoutingTable<Q> {
    _q: std::marker::PhantomData<Q>,
}

impl<Q: Clone + Eq + Hash> Default for RoutingTable<Q> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Q: Clone + Eq + Hash> RoutingTable<Q> {
    /// An empty table (no exchanges at all; the broker declares the default ones).
    pub fn new() -> Self {
        todo!()
    }

    /// Adds an exchange. Returns false (and changes nothing) if the name exists already.
    pub fn add_exchange(&mut self, name: &str, kind: ExchangeKind) -> bool {
        let _ = (name, kind);
        todo!()
    }

    /// The kind of an exchange, or None if it does not exist.
    pub fn exchange_kind(&self, name: &str) -> Option<ExchangeKind> {
        let _ = name;
        todo!()
    }

    /// Removes an exchange and every binding whose source or destination it is.
    /// Returns false if it did not exist. The returned list is the source exchanges
    /// that lost a binding because of it (for auto-delete), excluding `name` itself.
    pub fn remove_exchange(&mut self, name: &str) -> Option<Vec<Arc<str>>> {
        let _ = name;
        todo!()
    }

    /// Adds a binding. `Ok(true)` if it is new, `Ok(false)` if it existed already.
    pub fn bind(
        &mut self,
        source: &str,
        destination: Destination<Q>,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<bool, BindError> {
        let _ = (source, destination, routing_key, arguments);
        todo!()
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
        let _ = (source, destination, routing_key, arguments);
        todo!()
    }

    /// Removes every binding to `queue`; returns the source exchanges that lost a binding
    /// (each once), so the broker can auto-delete the ones left without bindings.
    pub fn remove_queue(&mut self, queue: &Q) -> Vec<Arc<str>> {
        let _ = queue;
        todo!()
    }

    /// True if the exchange is the source of at least one binding (exchange.delete if-unused).
    pub fn has_bindings_from(&self, exchange: &str) -> bool {
        let _ = exchange;
        todo!()
    }

    /// True if `exchange` is the destination of at least one binding.
    pub fn has_bindings_to(&self, exchange: &str) -> bool {
        let _ = exchange;
        todo!()
    }

    /// Every binding (order unspecified).
    pub fn bindings(&self) -> Vec<Binding<Q>> {
        todo!()
    }

    /// Appends to `out` each queue that a message published to `exchange` with
    /// `routing_key` and `headers` reaches, each queue at most once, following
    /// exchange-to-exchange bindings (each exchange visited at most once). An unknown
    /// exchange routes nowhere. `out` is not cleared first.
    pub fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut Vec<Q>,
    ) {
        let _ = (exchange, routing_key, headers, out);
        todo!()
    }
}
