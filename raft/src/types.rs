//! openraft's type configuration for HareMQ: opaque byte commands and responses.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::runtime::SmolRuntime;

/// A command proposed to a group: opaque to this crate (the broker encodes it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request(pub Vec<u8>);

/// The state machine's answer to a command: opaque bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response(pub Vec<u8>);

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Request({} bytes)", self.0.len())
    }
}

openraft::declare_raft_types!(
    /// The openraft type configuration: u64 node ids, nodes known by their cluster address,
    /// whole-snapshot byte buffers, the smol runtime.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = SmolRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig>;
