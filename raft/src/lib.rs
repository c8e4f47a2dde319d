//! Multi-group Raft for the HareMQ cluster, on openraft 0.9, smol and redb.
//!
//! The broker runs one metadata group (`GroupId(0)`) on all nodes and one group per quorum
//! queue on a subset of nodes. This crate knows nothing about AMQP: commands and responses
//! are opaque bytes, applied by the application's [`StateMachine`].
//!
//! # Design
//!
//! - **Runtime.** openraft runs on smol through [`runtime::SmolRuntime`]; only tokio's
//!   runtime-agnostic `sync` primitives are used (as openraft itself does).
//! - **One redb database per node** (`<data_dir>/raft.redb`) for all groups: the log is keyed
//!   by (group, index), and each group has its vote, commit point, last-purged id and last
//!   snapshot (meta + bytes). Thousands of groups then cost no extra files or fsync streams.
//! - **Group commit, fsync before IO-complete.** A log append queues its entries for the
//!   node's one log writer thread and returns; the writer takes everything queued by every
//!   group (appends, votes, truncations, purges, commit points), applies it in queue order
//!   in one redb write transaction with `Durability::Immediate`, and only after that
//!   commit calls each append's openraft IO-completion callback. So an entry counts towards
//!   a majority only once it is on that node's disk (a publish is confirmed only after a
//!   majority has it durably), and many groups' appends share one fsync. Queued entries
//!   are readable before their commit (openraft reads them back to replicate them). A
//!   failed commit fails every callback in it, and openraft stops those groups.
//! - **The leader does not wait for its own append** (openraft 0.9.25 patched in
//!   `vendor/openraft`, see docs/openraft-patch.md): it replicates an entry at once and
//!   counts itself toward the commit only from the callback, so one group's successive
//!   leader appends share fsyncs too. Followers and learners answer only after theirs.
//! - **Applied state in memory, snapshots on disk.** The application's state lives in memory;
//!   the commit point is persisted, so at start openraft restores the last snapshot and
//!   re-applies the committed log after it. A snapshot is taken every `snapshot_every`
//!   entries and the log before it is purged (keeping a margin of `snapshot_every / 2`, at
//!   most 1000, so a briefly lagging follower catches up from the log).
//! - **Network.** Authenticated TCP (`smol::net`), frames of a u32 big-endian length (at most
//!   64 MiB: a larger prefix closes the connection before anything is allocated) and a
//!   postcard payload. Each group's Raft instance owns one connection per target node, with
//!   one request in flight, re-established after any error; openraft retries. Every RPC has a
//!   timeout. One listener per node dispatches requests by group; a group that isn't open
//!   gets an error reply (openraft retries until it is).
//! - **Forwarding.** [`Group::write`] and the membership calls on a follower are forwarded to
//!   the leader (one hop only: the receiver must be the leader), retried while a leader is
//!   being elected, up to `write_timeout_ms`.
//! - **Pipelined, ordered writes.** [`Group::submit`] keeps several commands in flight
//!   while they enter the log in submission order: one driver task per group submits them
//!   to the local Raft, or over one pipelined connection (commands tagged with sequence
//!   numbers, submitted by the leader in arrival order, answered out of order) to the
//!   leader; a refused command is retried only when that cannot reorder it.
//! - **Application services.** [`RaftNode::serve`] and [`RaftNode::connect`] give the
//!   application authenticated, ordered message streams between nodes over the same
//!   listener (the broker's classic-queue links).
//! - **Authentication.** Mutual challenge-response with the shared cluster secret (HMAC-SHA256
//!   over the peer's fresh nonce, one's node id and role, checked in constant time); a node
//!   with a wrong secret can't exchange a single Raft message.

mod network;
mod node;
mod pipeline;
pub mod runtime;
mod service;
mod storage;
mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

pub use node::{Group, RaftNode};
use serde::{Deserialize, Serialize};
pub use service::{ServiceHandler, ServiceReader, ServiceStream, ServiceWriter};
pub use storage::StateMachine;
pub use types::{Request, Response, TypeConfig};

/// A node's id in the cluster (unique, stable across restarts).
pub type NodeId = u64;

/// A Raft group: `GroupId(0)` is the metadata group, others are quorum queues.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupId(pub u64);

/// A node's Raft settings.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    /// Where to listen for peers (port 0: any free port, see [`RaftNode::local_addr`]).
    pub listen: SocketAddr,
    /// What peers dial; default `listen`.
    pub advertise: Option<SocketAddr>,
    /// The shared cluster secret all nodes authenticate with.
    pub secret: String,
    /// Holds `raft.redb`.
    pub data_dir: PathBuf,
    pub heartbeat_ms: u64,
    /// Randomized election timeout range; with (400, 800) a failover takes well under 2 s.
    pub election_timeout_ms: (u64, u64),
    /// Take a snapshot (and purge the log before it) every this many entries.
    pub snapshot_every: u64,
    /// How long a write or membership change may wait for a leader and its commit.
    pub write_timeout_ms: u64,
    /// How this node reaches some peers, overriding the address in the membership
    /// (a NAT, a proxy, or a test cutting links one direction at a time).
    pub routes: BTreeMap<NodeId, SocketAddr>,
}

impl NodeConfig {
    /// Defaults: 100 ms heartbeats, 400–800 ms election timeout, a snapshot every 10 000
    /// entries, 5 s write timeout.
    pub fn new(node_id: NodeId, listen: SocketAddr, secret: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            node_id,
            listen,
            advertise: None,
            secret: secret.into(),
            data_dir: data_dir.into(),
            heartbeat_ms: 100,
            election_timeout_ms: (400, 800),
            snapshot_every: 10_000,
            write_timeout_ms: 5_000,
            routes: BTreeMap::new(),
        }
    }
}

/// A group as seen from this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    pub leader: Option<NodeId>,
    pub term: u64,
    pub is_leader: bool,
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
    pub last_log_index: Option<u64>,
    pub last_applied: Option<u64>,
    /// On the leader: how long ago a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// Leader: a quorum acknowledged it within the max election timeout. Follower: it knows
    /// a leader (it forgets it when the leader's heartbeats stop and it starts an election).
    pub has_quorum: bool,
    /// The members' addresses, as the membership records them.
    pub addresses: BTreeMap<NodeId, SocketAddr>,
    /// Whether this node heard from each member (an answered request, or a request from
    /// it) within twice the maximum election timeout; only members this node has talked
    /// to since it started are listed.
    pub reachable: BTreeMap<NodeId, bool>,
}

/// Starting a node or opening a group failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("storage: {0}")]
    Storage(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("group {0:?} is already open")]
    AlreadyOpen(GroupId),
    #[error("the node is shut down")]
    ShutDown,
}

/// A write or membership change failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// No leader could be reached before the deadline; nothing was proposed.
    #[error("no quorum: no leader reachable")]
    NoQuorum,
    /// Proposed (or possibly proposed) but not known to be committed before the deadline.
    #[error("timed out waiting for the commit")]
    Timeout,
    /// The group's Raft instance stopped (storage failure or shutdown).
    #[error("fatal: {0}")]
    Fatal(String),
}
