//! HareMQ's routing table: exchanges, bindings and matching.
//!
//! This crate does no I/O. It answers one question fast: *given a message published to
//! exchange `E` with routing key `K` and headers `H`, which queues receive it?* The broker
//! keeps one [`RoutingTable`] per virtual host and calls [`RoutingTable::route`] for every
//! publish, so `route` must not allocate beyond growing the caller's output vector.
//!
//! Queues are identified by a caller-chosen type `Q` (the broker uses a cheap handle);
//! exchanges by name. Exchange-to-exchange bindings are followed transitively, each
//! exchange visited at most once per route, so binding cycles are harmless.

mod hash;
mod headers;
mod set;
mod table;
mod topic;
mod words;

pub use hash::{parse_weight, HashOn, HashProperty, MAX_WEIGHT, POINTS_PER_WEIGHT};
pub use headers::{HeadersMatch, MatchMode};
pub use table::{BindError, Binding, Destination, RouteRequest, RoutingTable};
pub use topic::TopicTrie;

/// Header tables as they come off the wire; re-exported so callers need not depend on
/// `amq-protocol-types` themselves.
pub use amq_protocol_types::{AMQPValue, FieldTable};

/// The routing algorithm an exchange applies to its bindings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    /// Exact match of routing key and binding key.
    Direct,
    /// Every binding matches.
    Fanout,
    /// Dot-separated words; `*` matches one word, `#` zero or more.
    Topic,
    /// Binding arguments matched against message headers (`x-match` all/any…).
    Headers,
    /// `x-consistent-hash`: the binding key is a weight; each message goes to exactly
    /// one binding, chosen on a hash ring by the routing key (or a header/property).
    ConsistentHash,
}

impl ExchangeKind {
    /// Parses the AMQP exchange type name (`"direct"`, `"fanout"`, `"topic"`, `"headers"`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "direct" => Some(Self::Direct),
            "fanout" => Some(Self::Fanout),
            "topic" => Some(Self::Topic),
            "headers" => Some(Self::Headers),
            "x-consistent-hash" => Some(Self::ConsistentHash),
            _ => None,
        }
    }

    /// The AMQP exchange type name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
            Self::ConsistentHash => "x-consistent-hash",
        }
    }
}
