//! The RPCs between nodes, each tagged with the group it is for.

use openraft::error::InstallSnapshotError;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::types::TypeConfig;
use crate::GroupId;

#[derive(Serialize, Deserialize)]
pub enum RpcRequest {
    AppendEntries(GroupId, AppendEntriesRequest<TypeConfig>),
    Vote(GroupId, VoteRequest<u64>),
    InstallSnapshot(GroupId, InstallSnapshotRequest<TypeConfig>),
    /// Writes forwarded by a follower to the leader.
    ClientWrite(GroupId, Vec<Vec<u8>>),
    /// Membership changes forwarded to the leader.
    AddVoter(GroupId, u64, String),
    RemoveVoter(GroupId, u64),
    /// Asks the receiver to start an election (best-effort leadership transfer).
    Elect(GroupId),
    /// The connection carries the group's pipelined writes from now on (see the
    /// `pipeline` module); sent once, first, by a follower's pipeline driver.
    OpenPipeline(GroupId),
    /// A learner forwarded to the leader (it receives the log, never votes).
    AddLearner(GroupId, u64, String),
    /// Which nodes the receiver heard from lately, and whether it leads the group.
    Reachability(GroupId),
    /// The connection belongs to the application's service of this name from now on
    /// (see [`crate::RaftNode::serve`]); sent once, first.
    OpenService(String),
}

#[derive(Serialize, Deserialize)]
pub enum RpcResponse {
    AppendEntries(AppendEntriesResponse<u64>),
    Vote(VoteResponse<u64>),
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, InstallSnapshotError>),
    ClientWrite(Result<Vec<Vec<u8>>, RemoteWriteError>),
    Done(Result<(), RemoteWriteError>),
    /// The receiver has no such group open (yet), or its Raft instance stopped.
    Failed(String),
    /// Whether the receiver leads, and whom it heard from lately.
    Reachability(bool, std::collections::BTreeMap<u64, bool>),
}

/// Why a forwarded operation failed on the receiving node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum RemoteWriteError {
    /// The receiver isn't the leader (any more); it names the leader it knows of.
    NotLeader(Option<u64>),
    /// The receiver is leader but couldn't commit in time.
    Timeout,
    Fatal(String),
}
