//! The cluster: this node's part in a group of HareMQ nodes that agree, through Raft,
//! on what they all must know.
//!
//! `Cluster` owns the node's Raft endpoint (`haremq_raft::RaftNode`: the cluster
//! listener, the Raft log on redb, the authenticated links to the other nodes) and
//! the metadata group (GroupId 0, every node a member) with its state machine
//! ([`metadata`]). It implements the core's [`ClusterView`] seam, so the management
//! API and health checks read and change membership without naming Raft.
//!
//! Layering: `server` starts it; it knows `config`, `membership` and the raft crate,
//! and nothing of AMQP.

mod classic;
pub mod metadata;
mod queues;

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use haremq_raft::{Group, GroupId, NodeConfig, RaftNode};

use crate::config::ClusterConfig;
use amq_protocol::types::FieldTable;

use crate::membership::{Applied, ClusterStatus, ClusterView, NodeStatus};
use metadata::{MetadataCommand, MetadataMachine, MetadataState};

/// The metadata group: every node is a member.
pub const METADATA_GROUP: GroupId = GroupId(0);

/// How long a membership change may take before the API reports it failed (a new
/// node has to catch up first).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the quorum watcher looks at the metadata group.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

/// This node's listeners, announced to the others once it has joined.
#[derive(Clone, Copy, Debug, Default)]
pub struct Listeners {
    pub amqp: Option<SocketAddr>,
    pub management: Option<SocketAddr>,
}

pub struct Cluster {
    node_id: u64,
    node: Arc<RaftNode>,
    metadata: Group,
    state: Arc<Mutex<MetadataState>>,
    replicas: Arc<queues::Replicas>,
    stopping: Arc<AtomicBool>,
}

/// How long a declaration waits to be applied on this node after its commit.
const APPLY_WAIT: Duration = Duration::from_secs(10);

impl Cluster {
    /// Starts the cluster listener and the metadata group. A brand-new cluster forms
    /// from `config`'s founders once a majority of them runs (the lowest id starts
    /// it); a node with Raft state from an earlier run rejoins with that state.
    /// Returns without waiting for a leader.
    pub fn start(
        config: &ClusterConfig,
        data_dir: &Path,
        listeners: Listeners,
        broker: &Arc<crate::broker::Broker>,
    ) -> io::Result<Arc<Cluster>> {
        let founders = config.founders().map_err(io::Error::other)?;
        let dir = data_dir.join("cluster");
        std::fs::create_dir_all(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display())))?;
        let mut node_config =
            NodeConfig::new(config.node_id, config.listen, config.cluster_secret.clone(), dir.clone());
        node_config.advertise = config.advertise;
        if let Some(n) = config.snapshot_every {
            node_config.snapshot_every = n.max(2);
        }
        // The configured peers are how this node reaches them, whatever address the
        // membership recorded (another node may reach them differently).
        node_config.routes =
            founders.iter().filter(|(id, _)| **id != config.node_id).map(|(id, a)| (*id, *a)).collect();
        let state: Arc<Mutex<MetadataState>> = Arc::default();
        let (changes_tx, changes) = smol::channel::unbounded();
        let machine = Box::new(MetadataMachine { state: state.clone(), changes: changes_tx });
        // This run of the node: consumers of earlier runs are told apart by it.
        let incarnation = (crate::message::now_ms() as u32) | 1;
        let (node, metadata) = smol::block_on(async {
            let node = RaftNode::start(node_config).await.map_err(|e| io::Error::other(format!("cluster: {e}")))?;
            // With port 0 the bound address is what the others must dial.
            let mut founders = founders;
            founders.insert(config.node_id, config.advertise.unwrap_or_else(|| node.local_addr()));
            let group = node
                .open_group(METADATA_GROUP, founders, machine)
                .await
                .map_err(|e| io::Error::other(format!("cluster: cannot open the metadata group: {e}")))?;
            Ok::<_, io::Error>((node, group))
        })?;
        log::info!(
            "cluster: node {} listening for cluster links on {} (founders: {})",
            config.node_id,
            node.local_addr(),
            config.founders().unwrap_or_default().keys().map(|id| id.to_string()).collect::<Vec<_>>().join(", ")
        );
        classic::home::serve(&node, Arc::downgrade(broker));
        let replicas = queues::Replicas::new(
            Arc::downgrade(broker),
            node.clone(),
            config.node_id,
            queues::node_key(config.node_id, incarnation),
            &dir,
            classic::link::Links::new(node.clone(), metadata.clone()),
        );
        smol::spawn(replicas.clone().run(changes)).detach();
        let cluster =
            Arc::new(Cluster { node_id: config.node_id, node, metadata, state, replicas, stopping: Arc::default() });
        smol::spawn(cluster.replicas.clone().leader_ticks(cluster.state.clone(), Arc::downgrade(&cluster))).detach();
        let (group, node_id, stopping, weak, state) = (
            cluster.metadata.clone(),
            cluster.node_id,
            cluster.stopping.clone(),
            Arc::downgrade(broker),
            cluster.state.clone(),
        );
        smol::spawn(async move {
            announce(group.clone(), node_id, listeners, incarnation, stopping.clone()).await;
            // After the announcement, which clears what an earlier run raised.
            share_alarms(group, node_id, weak, state, stopping).await;
        })
        .detach();
        smol::spawn(watch_quorum(cluster.metadata.clone(), cluster.node_id, cluster.stopping.clone())).detach();
        Ok(cluster)
    }

    /// The cluster link's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.node.local_addr()
    }

    /// Whether this node heard from each peer lately (any group's traffic), as the
    /// Raft endpoint saw it.
    fn peer_contacts(&self) -> BTreeMap<u64, bool> {
        self.metadata.status().reachable
    }

    /// The leader clears the alarms of a node it has not heard from for a while, so a
    /// node that went down low on memory or disk does not block every publisher of
    /// the cluster until it is back (RabbitMQ drops a down node's alarms too).
    fn clear_alarms_of(&self, node: u64) {
        let group = self.metadata.clone();
        let command = metadata::encode(&MetadataCommand::Alarms { node, memory: false, disk: false });
        smol::spawn(async move {
            if group.write(command).await.is_ok() {
                log::warn!("cluster: node {node} is unreachable; its resource alarms no longer block publishers");
            }
        })
        .detach();
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Stops the Raft endpoint (the log is on disk; the node rejoins at its next start).
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        smol::block_on(self.node.shutdown());
    }
}

/// Announces this node's listeners through the metadata group, retrying until a
/// majority has committed it (at start there may be no leader yet).
async fn announce(group: Group, node: u64, listeners: Listeners, incarnation: u32, stopping: Arc<AtomicBool>) {
    let command = metadata::encode(&MetadataCommand::Announce {
        node,
        amqp: listeners.amqp,
        management: listeners.management,
        incarnation,
    });
    while !stopping.load(Ordering::Relaxed) {
        match group.write(command.clone()).await {
            Ok(_) => {
                log::info!("cluster: node {node} joined: its listeners are known to the cluster");
                return;
            }
            Err(e) => {
                log::debug!("cluster: announcing node {node} failed ({e}); retrying");
                smol::Timer::after(Duration::from_millis(250)).await;
            }
        }
    }
}

/// How often this node looks at its own resource alarms.
const ALARM_POLL: Duration = Duration::from_millis(200);

/// Tells the cluster when this node's resource alarms are raised and cleared, so
/// every node blocks its publishers meanwhile (RabbitMQ's alarms are cluster-wide).
/// A change that is not committed (no majority) is tried again at the next look. It
/// compares with what the cluster's state says of this node: the leader clears the
/// alarms of a node it has not heard from for a while, and this node shares them again
/// once it is back.
async fn share_alarms(
    group: Group,
    node: u64,
    broker: std::sync::Weak<crate::broker::Broker>,
    state: Arc<Mutex<MetadataState>>,
    stopping: Arc<AtomicBool>,
) {
    while !stopping.load(Ordering::Relaxed) {
        let Some(now) = broker.upgrade().map(|b| (b.memory.is_raised(), b.disk.is_raised())) else { return };
        let known = state.lock().unwrap_or_else(|e| e.into_inner()).alarms.get(&node).copied().unwrap_or_default();
        if now != known {
            let (memory, disk) = now;
            let command = metadata::encode(&MetadataCommand::Alarms { node, memory, disk });
            match group.write(command).await {
                Ok(_) => log::info!("cluster: node {node}'s resource alarms shared (memory {memory}, disk {disk})"),
                Err(e) => log::debug!("cluster: sharing node {node}'s alarms failed ({e}); retrying"),
            }
        }
        smol::Timer::after(ALARM_POLL).await;
    }
}

/// Logs when this node loses and regains the majority (and who leads), so an operator
/// reading the log knows why replicated writes stopped.
async fn watch_quorum(group: Group, node: u64, stopping: Arc<AtomicBool>) {
    let mut had: Option<bool> = None;
    let mut leader = None;
    while !stopping.load(Ordering::Relaxed) {
        let status = group.status();
        if status.leader != leader {
            leader = status.leader;
            match leader {
                Some(l) => log::info!("cluster: node {l} leads the metadata group (term {})", status.term),
                None => log::warn!("cluster: the metadata group has no leader (term {})", status.term),
            }
        }
        if had != Some(status.has_quorum) {
            if status.has_quorum {
                log::info!("cluster: node {node} is part of the majority");
            } else if had.is_some() {
                log::error!(
                    "cluster: node {node} lost the majority of its cluster: nothing replicated is committed through it until it is back"
                );
            }
            had = Some(status.has_quorum);
        }
        smol::Timer::after(WATCH_INTERVAL).await;
    }
}

impl ClusterView for Cluster {
    fn status(&self) -> ClusterStatus {
        let s = self.metadata.status();
        let announced = self.state.lock().unwrap_or_else(|e| e.into_inner()).nodes.clone();
        let members: BTreeMap<u64, (SocketAddr, bool)> =
            s.addresses.iter().map(|(id, addr)| (*id, (*addr, s.voters.contains(id)))).collect();
        let nodes = members
            .into_iter()
            .map(|(id, (cluster_addr, voter))| {
                let reachable = if id == self.node_id {
                    Some(true)
                } else if let Some(r) = s.reachable.get(&id).filter(|_| s.is_leader) {
                    // Only the leader talks to every member all the time; a follower's
                    // last contact with another follower says nothing.
                    Some(*r)
                } else if Some(id) == s.leader {
                    Some(s.has_quorum)
                } else {
                    None
                };
                let a = announced.get(&id).copied().unwrap_or_default();
                NodeStatus {
                    id,
                    name: crate::broker::node_name(Some(id)),
                    cluster_addr,
                    voter,
                    reachable,
                    amqp: a.amqp,
                    management: a.management,
                }
            })
            .collect();
        ClusterStatus { node_id: self.node_id, leader: s.leader, term: s.term, has_quorum: s.has_quorum, nodes }
    }

    fn status_from_leader(&self) -> ClusterStatus {
        let mut status = self.status();
        if status.leader == Some(self.node_id) {
            return status;
        }
        let asked = smol::block_on(self.metadata.leader_reachability(Duration::from_secs(1)));
        if let Some(reachable) = asked {
            for n in status.nodes.iter_mut().filter(|n| n.id != self.node_id) {
                n.reachable = reachable.get(&n.id).copied().or(n.reachable);
            }
        }
        status
    }

    fn declare_quorum_queue(&self, vhost: &str, name: &str, arguments: &FieldTable, done: Applied) {
        let status = self.metadata.status();
        let voters: BTreeMap<u64, SocketAddr> =
            status.addresses.into_iter().filter(|(id, _)| status.voters.contains(id)).collect();
        let members =
            queues::Replicas::choose_members(&voters, crate::queue::quorum::initial_group_size(arguments), name);
        let command = metadata::encode(&MetadataCommand::DeclareQuorumQueue {
            vhost: vhost.to_string(),
            name: name.to_string(),
            arguments: arguments.clone(),
            members,
        });
        self.replicate_queue(command, vhost.to_string(), name.to_string(), true, done);
    }

    fn delete_quorum_queue(&self, vhost: &str, name: &str, done: Applied) {
        let command =
            metadata::encode(&MetadataCommand::DeleteQuorumQueue { vhost: vhost.to_string(), name: name.to_string() });
        self.replicate_queue(command, vhost.to_string(), name.to_string(), false, done);
    }

    fn declare_classic_queue(&self, vhost: &str, name: &str, settings: &crate::queue::QueueSettings, done: Applied) {
        let command = metadata::encode(&MetadataCommand::DeclareClassicQueue {
            vhost: vhost.to_string(),
            name: name.to_string(),
            home: self.node_id,
            durable: settings.durable,
            auto_delete: settings.auto_delete,
            arguments: settings.arguments.clone(),
        });
        self.replicate_queue(command, vhost.to_string(), name.to_string(), true, done);
    }

    fn delete_classic_queue(&self, vhost: &str, name: &str, done: Applied) {
        let command =
            metadata::encode(&MetadataCommand::DeleteClassicQueue { vhost: vhost.to_string(), name: name.to_string() });
        self.replicate_queue(command, vhost.to_string(), name.to_string(), false, done);
    }

    fn replicate(&self, change: crate::membership::Replicated, done: Applied) {
        let command = metadata::encode(&MetadataCommand::Definition(change));
        let (group, replicas) = (self.metadata.clone(), self.replicas.clone());
        smol::spawn(async move {
            let reply = match with_timeout(group.write(command)).await {
                Ok(reply) => reply,
                Err(e) => return done(Err(e)),
            };
            let Some(index) = metadata::applied_index(&reply) else {
                return done(Err(format!("the leader did not apply it: {}", String::from_utf8_lossy(&reply))));
            };
            done(applied_here(|| replicas.definitions_applied() >= index).await)
        })
        .detach();
    }

    fn add_node(&self, id: u64, addr: SocketAddr) -> Result<(), String> {
        let change = self.metadata.add_voter(id, addr);
        smol::block_on(with_timeout(change)).map_err(|e| format!("adding node {id} at {addr}: {e}"))?;
        log::info!("cluster: node {id} at {addr} added");
        Ok(())
    }

    fn remove_node(&self, id: u64) -> Result<(), String> {
        smol::block_on(with_timeout(self.metadata.remove_voter(id))).map_err(|e| format!("removing node {id}: {e}"))?;
        let forget = metadata::encode(&MetadataCommand::Forget { node: id });
        if let Err(e) = smol::block_on(with_timeout(self.metadata.write(forget))) {
            log::warn!("cluster: node {id} removed, but its announcement stays: {e}");
        }
        log::info!("cluster: node {id} removed");
        Ok(())
    }
}

impl Cluster {
    /// Writes a queue's definition change to the metadata log, then waits until this
    /// node has acted on it (the queue exists here, or no longer does) before `done`.
    fn replicate_queue(&self, command: Vec<u8>, vhost: String, name: String, exists: bool, done: Applied) {
        let (group, replicas) = (self.metadata.clone(), self.replicas.clone());
        smol::spawn(async move {
            if let Err(e) = with_timeout(group.write(command)).await {
                return done(Err(e));
            }
            done(applied_here(|| replicas.has(&vhost, &name) == exists).await)
        })
        .detach();
    }
}

/// Waits until `applied` says this node has acted on a committed change, up to
/// [`APPLY_WAIT`].
async fn applied_here(applied: impl Fn() -> bool) -> Result<(), String> {
    let deadline = std::time::Instant::now() + APPLY_WAIT;
    while !applied() {
        if std::time::Instant::now() > deadline {
            return Err("committed, but not applied on this node in time".into());
        }
        smol::Timer::after(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// A membership change, bounded by [`CHANGE_TIMEOUT`].
async fn with_timeout<T, E: std::fmt::Display>(
    change: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    let timeout = async {
        smol::Timer::after(CHANGE_TIMEOUT).await;
        Err(format!("not committed within {} s", CHANGE_TIMEOUT.as_secs()))
    };
    smol::future::or(async { change.await.map_err(|e| e.to_string()) }, timeout).await
}
