//! What the core and the management API know of the cluster this node belongs to.
//!
//! The core defines this seam and the cluster layer (`crate::cluster`, on Raft)
//! implements it, so the management API, the health checks and `/api/nodes` read the
//! cluster's state without naming Raft. A single node has no `ClusterView`: everything
//! that reads one treats `None` as "a cluster of one".

pub mod definition;

use std::net::SocketAddr;

use serde::Serialize;

pub use definition::{DefinitionChange, Replicated};

/// The cluster as this node sees it now.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterStatus {
    /// This node's id.
    pub node_id: u64,
    /// The metadata group's leader, if this node knows one.
    pub leader: Option<u64>,
    /// The metadata group's Raft term.
    pub term: u64,
    /// Whether this node is part of a majority: the leader hears from a quorum, a
    /// follower hears from the leader. Without it nothing replicated can be committed
    /// through this node.
    pub has_quorum: bool,
    /// Every member (voters and learners), by id.
    pub nodes: Vec<NodeStatus>,
}

/// One member of the cluster.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    pub id: u64,
    /// The RabbitMQ-style node name (`haremq-N@host`).
    pub name: String,
    /// Where the other nodes reach it (the cluster link).
    pub cluster_addr: SocketAddr,
    /// A voter counts toward the majority; a learner only receives the log.
    pub voter: bool,
    /// Whether it is reachable now: as the leader sees it, for every node when the
    /// leader answered (`status_from_leader`); otherwise for itself and the leader
    /// only on a follower (None: not known here).
    pub reachable: Option<bool>,
    /// What the node announced of itself once it joined: its AMQP and management
    /// listeners (None until it has).
    pub amqp: Option<SocketAddr>,
    pub management: Option<SocketAddr>,
}

impl ClusterStatus {
    /// The voters this node knows to be reachable (itself included when it has quorum).
    pub fn reachable_voters(&self) -> usize {
        self.nodes.iter().filter(|n| n.voter && n.reachable == Some(true)).count()
    }

    /// The voters in the membership.
    pub fn voters(&self) -> usize {
        self.nodes.iter().filter(|n| n.voter).count()
    }

    /// Whether stopping this node would leave the voters without a majority: what
    /// RabbitMQ's `node-is-quorum-critical` health check reports, here for the
    /// metadata group (every quorum of the cluster needs it). Exact with every
    /// member's reachability known ([`ClusterView::status_from_leader`]); an unknown
    /// node counts as reachable.
    pub fn is_quorum_critical(&self) -> bool {
        let voters = self.voters();
        if voters < 2 {
            return false;
        }
        let up = self.nodes.iter().filter(|n| n.voter && n.id != self.node_id && n.reachable != Some(false)).count();
        up < voters / 2 + 1
    }
}

/// Runs once a replicated change is committed and applied on this node, or with why
/// it was not.
pub type Applied = Box<dyn FnOnce(Result<(), String>) + Send>;

/// The cluster seam: status, membership changes, and the definitions every node must
/// agree on. Membership calls block until the change is committed (the management API
/// runs them on the blocking pool); definition changes answer through a callback, so
/// a channel never blocks its connection's thread on the network.
pub trait ClusterView: Send + Sync {
    /// What this node knows now, without asking anyone (a follower knows only its own
    /// and the leader's reachability).
    fn status(&self) -> ClusterStatus;
    /// As [`status`](Self::status), with every member's reachability as the leader
    /// sees it (a follower asks the leader over the cluster link, waiting up to a
    /// second): what `node-is-quorum-critical` needs on any node. Blocks: for the
    /// management API on the blocking pool.
    fn status_from_leader(&self) -> ClusterStatus {
        self.status()
    }
    /// Replicates a quorum queue's declaration (checked by the caller): once `done`
    /// runs with Ok the queue exists on every node that has applied it, this one
    /// included. A queue that already exists is no error.
    fn declare_quorum_queue(&self, vhost: &str, name: &str, arguments: &amq_protocol::types::FieldTable, done: Applied);
    /// Replicates a quorum queue's deletion (its consumers everywhere are cancelled, its
    /// log dropped).
    fn delete_quorum_queue(&self, vhost: &str, name: &str, done: Applied);
    /// Replicates a classic queue's declaration, with this node as its home (checked
    /// by the caller): once `done` runs with Ok the queue exists here, and every other
    /// node that has applied it serves it through its link to this one.
    fn declare_classic_queue(&self, vhost: &str, name: &str, settings: &crate::queue::QueueSettings, done: Applied);
    /// Replicates a classic queue's deletion (its home deleted it, or lost it).
    fn delete_classic_queue(&self, vhost: &str, name: &str, done: Applied);
    /// Replicates a definition change: `done` runs with Ok once the majority has
    /// committed it and this node has applied it (the outcome of applying it goes to
    /// whoever waits on its id, see `admin::replicated`), or with why it was not
    /// committed.
    fn replicate(&self, change: Replicated, done: Applied);
    /// Adds a node: it first receives the log as a learner, then becomes a voter.
    fn add_node(&self, id: u64, addr: SocketAddr) -> Result<(), String>;
    /// Removes a node from the voters (it stops receiving the log).
    fn remove_node(&self, id: u64) -> Result<(), String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, reachable: Option<bool>) -> NodeStatus {
        NodeStatus {
            id,
            name: format!("haremq-{id}@h"),
            cluster_addr: "127.0.0.1:1".parse().unwrap(),
            voter: true,
            reachable,
            amqp: None,
            management: None,
        }
    }

    #[test]
    fn quorum_critical_when_the_others_are_not_a_majority() {
        let status = |others: [Option<bool>; 2]| ClusterStatus {
            node_id: 1,
            leader: Some(1),
            term: 1,
            has_quorum: true,
            nodes: vec![node(1, Some(true)), node(2, others[0]), node(3, others[1])],
        };
        assert!(!status([Some(true), Some(true)]).is_quorum_critical());
        assert!(status([Some(true), Some(false)]).is_quorum_critical());
        assert!(!status([None, None]).is_quorum_critical(), "a follower does not know: not critical");
        assert_eq!(status([Some(true), Some(false)]).reachable_voters(), 2);
        let alone = ClusterStatus { nodes: vec![node(1, Some(true))], ..status([None, None]) };
        assert!(!alone.is_quorum_critical(), "a cluster of one");
    }
}
