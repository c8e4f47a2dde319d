//! The metadata group's state machine: what every node of the cluster agrees on,
//! applied in the same order everywhere.
//!
//! It holds the member registry (each node's announced AMQP and management
//! listeners, so any node can tell clients and operators where the others are). It is
//! the group that replicated definitions (vhosts, users, permissions, exchanges,
//! bindings, queue definitions and the placement of quorum queues) go through; see
//! ARCHITECTURE.md, "Cluster", for what is replicated today.
//!
//! Commands are JSON: they are rare (administrative changes), and a log that a person
//! can read when something goes wrong is worth the bytes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use amq_protocol::types::FieldTable;
use serde::{Deserialize, Serialize};

use crate::membership::definition::{self, DefinitionChange, Retained};
use crate::membership::Replicated;

/// A replicated metadata change.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum MetadataCommand {
    /// A node says where clients and operators reach it, and which run of it this is
    /// (at every start).
    Announce { node: u64, amqp: Option<SocketAddr>, management: Option<SocketAddr>, incarnation: u32 },
    /// A node left the cluster: its announcement goes.
    Forget { node: u64 },
    /// A quorum queue is declared, replicated on `members`; its group's id is this
    /// entry's log index. A queue that exists already is left as it is.
    DeclareQuorumQueue { vhost: String, name: String, arguments: FieldTable, members: BTreeMap<u64, SocketAddr> },
    /// A quorum queue is deleted (on every node; its group's log is dropped).
    DeleteQuorumQueue { vhost: String, name: String },
    /// A definition change (vhosts, users, permissions, exchanges, bindings), applied
    /// on every node by the core.
    Definition(Replicated),
    /// A classic queue declared on node `home`, where it lives; every other node serves
    /// it through its link to `home`. A queue that exists already (classic or quorum)
    /// is left as it is.
    DeclareClassicQueue {
        vhost: String,
        name: String,
        home: u64,
        durable: bool,
        auto_delete: bool,
        arguments: FieldTable,
    },
    /// A classic queue is deleted (on its home, then everywhere).
    DeleteClassicQueue { vhost: String, name: String },
    /// A node's resource alarms now (publishers are blocked on every node while one
    /// is raised anywhere, as in RabbitMQ).
    Alarms { node: u64, memory: bool, disk: bool },
}

/// A classic queue as the cluster knows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClassicDef {
    pub home: u64,
    pub durable: bool,
    pub auto_delete: bool,
    pub arguments: FieldTable,
}

/// What a node announced of itself.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Announced {
    pub amqp: Option<SocketAddr>,
    pub management: Option<SocketAddr>,
    /// Which run of the node (consumers of earlier runs are gone).
    #[serde(default)]
    pub incarnation: u32,
}

/// A quorum queue as the cluster knows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct QueueDef {
    /// Its Raft group.
    pub group: u64,
    pub arguments: FieldTable,
    /// The group's founding members and their cluster addresses.
    pub members: BTreeMap<u64, SocketAddr>,
}

/// The replicated state (what a snapshot holds).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MetadataState {
    pub nodes: BTreeMap<u64, Announced>,
    /// Quorum queues by vhost, then name.
    #[serde(default)]
    pub queues: BTreeMap<String, BTreeMap<String, QueueDef>>,
    /// Classic queues by vhost, then name: where each lives.
    #[serde(default)]
    pub classic: BTreeMap<String, BTreeMap<String, ClassicDef>>,
    /// The definition changes that still matter, by log index (see
    /// `membership::definition::retain`).
    #[serde(default)]
    pub definitions: Retained,
    /// The nodes with a resource alarm raised: (memory, disk). A node's entry goes
    /// when it announces itself (a restart) or leaves.
    #[serde(default)]
    pub alarms: BTreeMap<u64, (bool, bool)>,
    /// The last log index applied (a snapshot's definitions are complete up to it).
    #[serde(default)]
    pub applied: u64,
}

/// What applying a command changed that the node must act on (open or drop a queue's
/// group), sent to the cluster's task that does it (applying must not wait on I/O).
#[derive(Debug)]
pub enum Change {
    QueueDeclared {
        vhost: String,
        name: String,
        def: QueueDef,
    },
    QueueDeleted {
        vhost: String,
        name: String,
    },
    /// A classic queue was declared at log `index`.
    ClassicDeclared {
        index: u64,
        vhost: String,
        name: String,
        def: ClassicDef,
    },
    ClassicDeleted {
        vhost: String,
        name: String,
    },
    /// The cluster's raised alarms changed (every node's, by node).
    Alarms(BTreeMap<u64, (bool, bool)>),
    /// A definition change to apply on this node, at log `index`.
    Definition {
        index: u64,
        replicated: Replicated,
    },
    /// The whole state was replaced (a snapshot): bring the node's queues and
    /// definitions in line.
    Resync(MetadataState),
}

impl MetadataState {
    /// Applies the command at log `index`. Deterministic: the same commands in the same
    /// order give the same state on every node. Returns what the node must act on.
    pub fn apply(&mut self, index: u64, command: MetadataCommand) -> Vec<Change> {
        self.applied = index;
        match command {
            MetadataCommand::Announce { node, amqp, management, incarnation } => {
                self.nodes.insert(node, Announced { amqp, management, incarnation });
                self.set_alarms(node, (false, false))
            }
            MetadataCommand::Forget { node } => {
                self.nodes.remove(&node);
                self.set_alarms(node, (false, false))
            }
            MetadataCommand::Alarms { node, memory, disk } => self.set_alarms(node, (memory, disk)),
            MetadataCommand::DeclareQuorumQueue { vhost, name, arguments, members } => {
                if self.classic.get(&vhost).is_some_and(|q| q.contains_key(&name)) {
                    return vec![];
                }
                let queues = self.queues.entry(vhost.clone()).or_default();
                if queues.contains_key(&name) {
                    return vec![];
                }
                let def = QueueDef { group: index, arguments, members };
                queues.insert(name.clone(), def.clone());
                vec![Change::QueueDeclared { vhost, name, def }]
            }
            MetadataCommand::DeleteQuorumQueue { vhost, name } => self.delete_queue(vhost, name).into_iter().collect(),
            MetadataCommand::DeclareClassicQueue { vhost, name, home, durable, auto_delete, arguments } => {
                if self.queues.get(&vhost).is_some_and(|q| q.contains_key(&name)) {
                    return vec![];
                }
                let queues = self.classic.entry(vhost.clone()).or_default();
                if queues.contains_key(&name) {
                    return vec![];
                }
                let def = ClassicDef { home, durable, auto_delete, arguments };
                queues.insert(name.clone(), def.clone());
                vec![Change::ClassicDeclared { index, vhost, name, def }]
            }
            MetadataCommand::DeleteClassicQueue { vhost, name } => {
                self.delete_classic(vhost, name).into_iter().collect()
            }
            MetadataCommand::Definition(replicated) => {
                let mut changes = vec![];
                if let DefinitionChange::DeleteVHost { name } = &replicated.change {
                    // Its quorum queues go with it, on every node.
                    let names: Vec<String> =
                        self.queues.get(name).map(|q| q.keys().cloned().collect()).unwrap_or_default();
                    changes.extend(names.into_iter().filter_map(|q| self.delete_queue(name.clone(), q)));
                    let names: Vec<String> =
                        self.classic.get(name).map(|q| q.keys().cloned().collect()).unwrap_or_default();
                    changes.extend(names.into_iter().filter_map(|q| self.delete_classic(name.clone(), q)));
                }
                definition::retain(&mut self.definitions, index, replicated.change.clone());
                changes.push(Change::Definition { index, replicated });
                changes
            }
        }
    }

    fn set_alarms(&mut self, node: u64, raised: (bool, bool)) -> Vec<Change> {
        let before = self.alarms.clone();
        if raised == (false, false) {
            self.alarms.remove(&node);
        } else {
            self.alarms.insert(node, raised);
        }
        if self.alarms == before {
            return vec![];
        }
        vec![Change::Alarms(self.alarms.clone())]
    }

    fn delete_classic(&mut self, vhost: String, name: String) -> Option<Change> {
        let queues = self.classic.get_mut(&vhost)?;
        queues.remove(&name)?;
        if queues.is_empty() {
            self.classic.remove(&vhost);
        }
        definition::forget_queue(&mut self.definitions, &vhost, &name);
        Some(Change::ClassicDeleted { vhost, name })
    }

    fn delete_queue(&mut self, vhost: String, name: String) -> Option<Change> {
        let queues = self.queues.get_mut(&vhost)?;
        queues.remove(&name)?;
        if queues.is_empty() {
            self.queues.remove(&vhost);
        }
        definition::forget_queue(&mut self.definitions, &vhost, &name);
        Some(Change::QueueDeleted { vhost, name })
    }
}

/// The state machine Raft drives, sharing its state with the rest of the node
/// (readers take the lock briefly; Raft applies one command at a time).
pub struct MetadataMachine {
    pub state: Arc<Mutex<MetadataState>>,
    /// Where changes the node must act on go.
    pub changes: smol::channel::Sender<Change>,
}

/// What `apply` answers: the entry's log index (8 bytes), or why a command was not
/// understood (a newer node's command on an older node; it changes nothing).
pub fn applied_index(reply: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(reply.try_into().ok()?))
}

impl haremq_raft::StateMachine for MetadataMachine {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        match serde_json::from_slice::<MetadataCommand>(command) {
            Ok(cmd) => {
                let changes = self.state.lock().unwrap_or_else(|e| e.into_inner()).apply(index, cmd);
                for change in changes {
                    let _ = self.changes.try_send(change);
                }
                // The index tells a definition change's origin when its node has
                // applied it (see `Cluster::replicate`).
                index.to_le_bytes().to_vec()
            }
            Err(e) => {
                log::error!("cluster: metadata log entry {index} is not a command this node knows ({e}); skipped");
                format!("unknown command: {e}").into_bytes()
            }
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::to_vec(&*state).unwrap_or_default()
    }

    fn restore(&mut self, snapshot: &[u8]) {
        match serde_json::from_slice::<MetadataState>(snapshot) {
            Ok(s) => {
                *self.state.lock().unwrap_or_else(|e| e.into_inner()) = s.clone();
                let _ = self.changes.try_send(Change::Resync(s));
            }
            Err(e) => log::error!("cluster: the metadata snapshot cannot be read ({e}); keeping the current state"),
        }
    }
}

/// A command's log bytes.
pub fn encode(command: &MetadataCommand) -> Vec<u8> {
    serde_json::to_vec(command).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use haremq_raft::StateMachine;

    #[test]
    fn announcements_replace_and_forget_and_survive_a_snapshot() {
        let (tx, rx) = smol::channel::unbounded();
        let mut m = MetadataMachine { state: Arc::default(), changes: tx.clone() };
        let a: SocketAddr = "127.0.0.1:5672".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:5673".parse().unwrap();
        assert_eq!(
            applied_index(&m.apply(
                1,
                &encode(&MetadataCommand::Announce { node: 1, amqp: Some(a), management: None, incarnation: 1 })
            )),
            Some(1)
        );
        m.apply(2, &encode(&MetadataCommand::Announce { node: 2, amqp: Some(a), management: None, incarnation: 1 }));
        m.apply(3, &encode(&MetadataCommand::Announce { node: 1, amqp: Some(b), management: Some(a), incarnation: 2 }));
        m.apply(4, &encode(&MetadataCommand::Forget { node: 2 }));
        assert_eq!(
            applied_index(&m.apply(5, b"{\"Unheard\":{}}")),
            None,
            "an unknown command is answered, not applied"
        );
        let snap = m.snapshot();
        let mut other = MetadataMachine { state: Arc::default(), changes: tx };
        other.restore(&snap);
        let state = other.state.lock().unwrap().clone();
        assert_eq!(state.nodes.len(), 1);
        assert_eq!(state.nodes[&1], Announced { amqp: Some(b), management: Some(a), incarnation: 2 });
        other.restore(b"garbage");
        assert_eq!(other.state.lock().unwrap().nodes.len(), 1, "a bad snapshot changes nothing");
        assert!(matches!(rx.try_recv(), Ok(Change::Resync(_))), "a restore resyncs the node's queues");
    }

    #[test]
    fn quorum_queues_are_declared_once_and_deleted() {
        let mut state = MetadataState::default();
        let members: BTreeMap<u64, SocketAddr> = [(1, "127.0.0.1:1".parse().unwrap())].into();
        let declare = |args: FieldTable| MetadataCommand::DeclareQuorumQueue {
            vhost: "/".into(),
            name: "q".into(),
            arguments: args,
            members: members.clone(),
        };
        assert!(
            matches!(&state.apply(7, declare(FieldTable::default()))[..], [Change::QueueDeclared { def, .. }] if def.group == 7)
        );
        let mut other_args = FieldTable::default();
        other_args.insert("x-max-length".into(), amq_protocol::types::AMQPValue::LongInt(3));
        assert!(state.apply(8, declare(other_args)).is_empty(), "the first declaration stays");
        assert_eq!(state.queues["/"]["q"].group, 7);
        let snapshot = serde_json::to_vec(&state).unwrap();
        assert_eq!(serde_json::from_slice::<MetadataState>(&snapshot).unwrap(), state);
        let delete = || MetadataCommand::DeleteQuorumQueue { vhost: "/".into(), name: "q".into() };
        assert!(matches!(&state.apply(9, delete())[..], [Change::QueueDeleted { .. }]));
        assert!(state.apply(10, delete()).is_empty());
        assert!(state.queues.is_empty());
    }

    #[test]
    fn definitions_are_retained_in_snapshots_and_a_vhost_takes_its_quorum_queues_along() {
        let mut state = MetadataState::default();
        let def = |change| MetadataCommand::Definition(Replicated { id: 1, change });
        let changes = state
            .apply(1, def(DefinitionChange::AddVHost { name: "v".into(), description: String::new(), tags: vec![] }));
        assert!(matches!(&changes[..], [Change::Definition { index: 1, .. }]));
        state.apply(
            2,
            MetadataCommand::DeclareQuorumQueue {
                vhost: "v".into(),
                name: "q".into(),
                arguments: FieldTable::default(),
                members: BTreeMap::new(),
            },
        );
        state.apply(3, def(DefinitionChange::DeleteExchange { vhost: "v".into(), name: "x".into(), if_unused: false }));
        let snapshot: MetadataState = serde_json::from_slice(&serde_json::to_vec(&state).unwrap()).unwrap();
        assert_eq!(snapshot, state);
        assert_eq!(snapshot.applied, 3);
        assert_eq!(snapshot.definitions.len(), 2, "the vhost, and the exchange's deletion (a tombstone)");
        let changes = state.apply(4, def(DefinitionChange::DeleteVHost { name: "v".into() }));
        assert!(
            matches!(&changes[..], [Change::QueueDeleted { vhost, name }, Change::Definition { index: 4, .. }] if vhost == "v" && name == "q"),
            "{changes:?}"
        );
        assert!(state.queues.is_empty());
        assert_eq!(
            state.definitions.values().cloned().collect::<Vec<_>>(),
            vec![DefinitionChange::DeleteVHost { name: "v".into() }],
            "only the vhost's tombstone is left"
        );
    }

    #[test]
    fn a_classic_queue_has_one_home_and_shares_its_name_with_no_quorum_queue() {
        let mut state = MetadataState::default();
        let classic = |home| MetadataCommand::DeclareClassicQueue {
            vhost: "v".into(),
            name: "q".into(),
            home,
            durable: true,
            auto_delete: false,
            arguments: FieldTable::default(),
        };
        assert!(
            matches!(&state.apply(1, classic(2))[..], [Change::ClassicDeclared { index: 1, def, .. }] if def.home == 2)
        );
        assert!(state.apply(2, classic(3)).is_empty(), "the first declaration's home stays");
        let quorum = MetadataCommand::DeclareQuorumQueue {
            vhost: "v".into(),
            name: "q".into(),
            arguments: FieldTable::default(),
            members: BTreeMap::new(),
        };
        assert!(state.apply(3, quorum.clone()).is_empty(), "a quorum queue cannot take a classic queue's name");
        let snapshot: MetadataState = serde_json::from_slice(&serde_json::to_vec(&state).unwrap()).unwrap();
        assert_eq!(snapshot.classic["v"]["q"].home, 2, "snapshots keep where it lives");
        let delete = || MetadataCommand::DeleteClassicQueue { vhost: "v".into(), name: "q".into() };
        assert!(matches!(&state.apply(4, delete())[..], [Change::ClassicDeleted { .. }]));
        assert!(state.apply(5, delete()).is_empty());
        assert!(matches!(&state.apply(6, quorum)[..], [Change::QueueDeclared { .. }]), "the name is free again");
        assert!(state.apply(7, classic(1)).is_empty(), "taken by the quorum queue");
        state.apply(8, MetadataCommand::DeleteQuorumQueue { vhost: "v".into(), name: "q".into() });
        state.apply(9, classic(1));
        let def = |change| MetadataCommand::Definition(Replicated { id: 1, change });
        let changes = state.apply(10, def(DefinitionChange::DeleteVHost { name: "v".into() }));
        assert!(
            matches!(&changes[..], [Change::ClassicDeleted { name, .. }, Change::Definition { .. }] if name == "q"),
            "a vhost's deletion takes its classic queues: {changes:?}"
        );
        assert!(state.classic.is_empty());
    }

    #[test]
    fn alarms_are_kept_per_node_and_cleared_by_an_announcement() {
        let mut state = MetadataState::default();
        let alarms = |node, memory, disk| MetadataCommand::Alarms { node, memory, disk };
        assert!(matches!(&state.apply(1, alarms(3, false, true))[..], [Change::Alarms(a)] if a[&3] == (false, true)));
        assert!(state.apply(2, alarms(3, false, true)).is_empty(), "no change, nothing to act on");
        state.apply(3, alarms(2, true, false));
        let announce = MetadataCommand::Announce { node: 3, amqp: None, management: None, incarnation: 2 };
        assert!(
            matches!(&state.apply(4, announce)[..], [Change::Alarms(a)] if !a.contains_key(&3) && a[&2] == (true, false))
        );
        assert!(matches!(&state.apply(5, alarms(2, false, false))[..], [Change::Alarms(a)] if a.is_empty()));
    }
}
