//! Quorum queues on this node: each one the cluster's definitions hold becomes a
//! [`QuorumQueue`] in its vhost, and on its members a Raft group of its own whose state
//! machine is that queue.
//!
//! Applying the metadata log only records what changed ([`Change`]); this task acts on
//! it — opening a group waits on disk and network, which applying must not.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use haremq_raft::{Group, GroupId, RaftNode};

use super::metadata::{Change, MetadataState, QueueDef};
use crate::broker::Broker;
use crate::queue::quorum::{QuorumQueue, ReplicaLog};
use crate::queue::{Queue, QueueHost, QueueSettings};

/// How often a queue's leader does its periodic duties (TTL ticks, stale consumers).
const LEADER_TICK: Duration = Duration::from_secs(1);
/// A node unreachable this long has its consumers' messages returned.
const NODE_DOWN_AFTER: Duration = Duration::from_secs(3);

/// A quorum queue open on this node.
struct Open {
    queue: Arc<QuorumQueue>,
    group: Option<(GroupId, Group)>,
}

pub struct Replicas {
    pub broker: Weak<Broker>,
    pub node: Arc<RaftNode>,
    pub node_id: u64,
    /// This run's key in consumer keys (see [`node_key`]).
    pub node_key: u64,
    open: Mutex<HashMap<(String, String), Open>>,
    /// The cluster's classic queues, as this node serves them.
    classic: Mutex<HashMap<(String, String), super::classic::Served>>,
    /// This node's links to the homes of classic queues.
    pub(super) links: Arc<super::classic::link::Links>,
    /// The metadata log index up to which definition changes are applied here.
    definitions_applied: AtomicU64,
    /// Where that index is kept across restarts, and its value at this start: a
    /// restarting node replays its metadata log from its last snapshot, and must not
    /// apply again what it applied before (a vhost deleted and created again since
    /// would lose its classic queues).
    applied_file: std::path::PathBuf,
    applied_before: u64,
}

/// A consumer key's node part: the node id and this run of it, so consumers of an
/// earlier run (after a crash) are told apart from the current ones.
pub fn node_key(node_id: u64, incarnation: u32) -> u64 {
    (node_id << 32) | u64::from(incarnation)
}

/// The group's log as a quorum queue uses it.
struct GroupLog {
    group: Group,
    node_id: u64,
}

impl ReplicaLog for GroupLog {
    /// Through the group's ordered pipeline: the entry's place in the log is fixed by
    /// this call (several entries in flight keep the proposer's order); `done` runs on
    /// another task.
    fn propose(&self, entry: Vec<u8>, done: Box<dyn FnOnce(Result<Vec<u8>, String>) + Send>) {
        let answer = self.group.submit(entry);
        smol::spawn(async move {
            done(answer.await.map_err(|e| e.to_string()));
        })
        .detach();
    }

    /// Read on every applied entry: the leader watch, not a whole status (which copies
    /// the group's metrics and membership).
    fn is_leader(&self) -> bool {
        *self.group.watch_leader().borrow() == Some(self.node_id)
    }

    fn leader_and_members(&self) -> (Option<u64>, Vec<u64>) {
        let s = self.group.status();
        (s.leader, s.voters.into_iter().collect())
    }
}

/// Which member should lead a queue's group: spread over the members by group id
/// (ids are metadata log indexes, so successive queues take successive members). The
/// lowest member id starts every group (and so would lead them all); the preferred
/// one takes over once the group runs.
fn preferred_leader(def: &QueueDef) -> Option<u64> {
    let n = def.members.len() as u64;
    def.members.keys().nth((def.group % n.max(1)) as usize).copied()
}

/// Makes this node the group's leader once the group has one (best effort: the
/// leader it displaces may win the election instead).
async fn take_leadership(group: Group, me: u64, name: String) {
    for _ in 0..50 {
        let status = group.status();
        match status.leader {
            Some(l) if l == me => return,
            Some(_) if status.has_quorum => {
                match group.transfer_leadership(me).await {
                    Ok(()) => log::info!("cluster: node {me} takes the lead of quorum queue '{name}'"),
                    Err(e) => log::debug!("cluster: node {me} could not take the lead of '{name}': {e}"),
                }
                return;
            }
            _ => {
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Asks the queue's members, one after the other, to add this node as a learner,
/// until the leader among them has (the group may have no leader yet). Gives up after
/// a few minutes: the node then serves the queue once it restarts and asks again.
async fn join_as_learner(group: Group, me: u64, addr: SocketAddr, members: BTreeMap<u64, SocketAddr>, name: String) {
    for round in 0..300u32 {
        let status = group.status();
        if status.learners.contains(&me) || status.voters.contains(&me) {
            return;
        }
        for (id, member) in &members {
            match group.add_learner_via(*id, *member, me, addr).await {
                Ok(()) => {
                    log::info!("cluster: node {me} follows quorum queue '{name}' as a learner");
                    return;
                }
                Err(e) if round % 25 == 24 => {
                    log::info!("cluster: node {me} cannot follow quorum queue '{name}' through node {id} yet ({e})")
                }
                Err(_) => {}
            }
        }
        smol::Timer::after(Duration::from_millis(500)).await;
    }
}

/// The queue as its group's state machine.
struct QueueMachine {
    queue: Arc<QuorumQueue>,
}

impl haremq_raft::StateMachine for QueueMachine {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        self.queue.apply_entry(index, command)
    }

    fn snapshot(&self) -> Vec<u8> {
        self.queue.snapshot()
    }

    fn restore(&mut self, snapshot: &[u8]) {
        self.queue.restore(snapshot);
    }
}

impl Replicas {
    pub fn new(
        broker: Weak<Broker>,
        node: Arc<RaftNode>,
        node_id: u64,
        node_key: u64,
        dir: &std::path::Path,
        links: Arc<super::classic::link::Links>,
    ) -> Arc<Replicas> {
        let applied_file = dir.join("definitions-applied");
        let applied_before =
            std::fs::read_to_string(&applied_file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        Arc::new(Replicas {
            broker,
            node,
            node_id,
            node_key,
            open: Mutex::default(),
            classic: Mutex::default(),
            links,
            definitions_applied: AtomicU64::new(applied_before),
            applied_file,
            applied_before,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Open>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn classic(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), super::classic::Served>> {
        self.classic.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Acts on the metadata log's changes, in order, until the cluster stops.
    pub async fn run(self: Arc<Self>, changes: smol::channel::Receiver<Change>) {
        // At a start, the log replays from the last snapshot. What this node applied
        // before is collected up to where it stopped and only what still matters is
        // applied again (as from a snapshot): replaying a vhost's deletion would take
        // the classic queues of a vhost created again since with it.
        let mut replayed = crate::membership::definition::Retained::new();
        while let Ok(change) = changes.recv().await {
            match change {
                Change::QueueDeclared { vhost, name, def } => self.declared(vhost, name, def).await,
                Change::QueueDeleted { vhost, name } => self.deleted(&vhost, &name).await,
                Change::ClassicDeclared { index, vhost, name, def } => {
                    self.classic_declared(index <= self.applied_before, vhost, name, def).await;
                    if index == self.applied_before {
                        self.apply_retained(std::mem::take(&mut replayed).into_values().collect()).await;
                    }
                    if index > self.applied_before {
                        self.record_applied(index).await;
                    }
                }
                Change::ClassicDeleted { vhost, name } => self.classic_deleted(&vhost, &name),
                Change::Alarms(alarms) => self.remote_alarms(&alarms),
                Change::Definition { index, replicated } if index <= self.applied_before => {
                    crate::membership::definition::retain(&mut replayed, index, replicated.change);
                    if index == self.applied_before {
                        self.apply_retained(std::mem::take(&mut replayed).into_values().collect()).await;
                    }
                }
                Change::Definition { index, replicated } => {
                    if let Some(broker) = self.broker.upgrade() {
                        // Applying may wait for the store's commit: not on the executor.
                        let file = self.applied_file.clone();
                        smol::unblock(move || {
                            crate::admin::replicated::apply(&broker, replicated);
                            // Lost in a crash, the change is applied again at the next
                            // start: changes are idempotent where they meet what exists.
                            if let Err(e) = std::fs::write(&file, index.to_string()) {
                                log::warn!("cluster: cannot record the applied definitions in {}: {e}", file.display());
                            }
                        })
                        .await;
                    }
                    self.definitions_applied.fetch_max(index, Ordering::AcqRel);
                }
                Change::Resync(state) => {
                    log::info!("cluster: the metadata is restored from a snapshot up to log index {}", state.applied);
                    self.remote_alarms(&state.alarms);
                    replayed.clear();
                    self.resync(state).await
                }
            }
        }
    }

    /// Blocks this node's publishers while another node has a resource alarm raised.
    fn remote_alarms(&self, alarms: &BTreeMap<u64, (bool, bool)>) {
        let Some(broker) = self.broker.upgrade() else { return };
        let mut bits = 0;
        for (node, (memory, disk)) in alarms.iter().filter(|(n, _)| **n != self.node_id) {
            if *memory {
                bits |= crate::broker::REMOTE_MEMORY;
            }
            if *disk {
                bits |= crate::broker::REMOTE_DISK;
            }
            log::debug!("cluster: node {node} has an alarm raised (memory {memory}, disk {disk})");
        }
        let before = broker.remote_alarms.swap(bits, Ordering::AcqRel);
        if before != bits {
            match bits {
                0 => log::info!("cluster: no other node has a resource alarm raised; publishers may go on"),
                _ => log::warn!("cluster: another node has a resource alarm raised; publishers here are blocked too"),
            }
        }
    }

    /// The metadata log index up to which definition changes are applied here.
    pub fn definitions_applied(&self) -> u64 {
        self.definitions_applied.load(Ordering::Acquire)
    }

    async fn declared(&self, vhost: String, name: String, def: QueueDef) {
        let key = (vhost.clone(), name.clone());
        if self.lock().contains_key(&key) {
            return;
        }
        let Some(broker) = self.broker.upgrade() else { return };
        let Some(vh) = broker.vhost(&vhost) else {
            log::warn!("cluster: quorum queue '{name}': vhost '{vhost}' does not exist on this node; not created here");
            return;
        };
        // A node that is not one of its members follows the queue's log as a learner
        // (it never votes), so clients can use the queue through any node.
        let learner = !def.members.contains_key(&self.node_id);
        let settings = QueueSettings {
            durable: true,
            exclusive_owner: None,
            auto_delete: false,
            arguments: def.arguments.clone(),
        };
        let host: Arc<dyn QueueHost> = vh.clone();
        let queue = QuorumQueue::new(name.as_str().into(), &host, settings, self.node_key);
        if !vh.insert_replicated_queue(queue.clone() as Arc<Queue>) {
            log::warn!("cluster: quorum queue '{name}' in vhost '{vhost}': a queue of that name exists on this node; it stays, the replicated one is not served here");
            return;
        }
        let mut group = None;
        let machine = Box::new(QueueMachine { queue: queue.clone() });
        match self.node.open_group(GroupId(def.group), def.members.clone(), machine).await {
            Ok(g) => {
                queue.attach_log(Arc::new(GroupLog { group: g.clone(), node_id: self.node_id }));
                if preferred_leader(&def) == Some(self.node_id) {
                    smol::spawn(take_leadership(g.clone(), self.node_id, name.clone())).detach();
                }
                if learner {
                    let (me, addr) = (self.node_id, self.node.advertise_addr());
                    smol::spawn(join_as_learner(g.clone(), me, addr, def.members.clone(), name.clone())).detach();
                }
                group = Some((GroupId(def.group), g));
            }
            Err(e) => log::error!("cluster: cannot open the log of quorum queue '{name}' in vhost '{vhost}': {e}"),
        }
        log::info!("cluster: quorum queue '{name}' in vhost '{vhost}' is served here (group {})", def.group);
        self.lock().insert(key, Open { queue, group });
    }

    async fn deleted(&self, vhost: &str, name: &str) {
        let Some(open) = self.lock().remove(&(vhost.to_string(), name.to_string())) else { return };
        if let Some(vh) = self.broker.upgrade().and_then(|b| b.vhost(vhost)) {
            vh.delete_queue(&(open.queue.clone() as Arc<Queue>));
        }
        if let Some((id, _)) = open.group {
            self.node.close_group(id, true).await;
        }
        log::info!("cluster: quorum queue '{name}' in vhost '{vhost}' deleted");
    }

    /// Brings this node in line with a snapshot of the metadata: the definitions it
    /// holds (creations and settings; what a deletion removed before the snapshot and
    /// this node still has stays), then the quorum queues, then their bindings.
    async fn resync(&self, state: MetadataState) {
        let (queue_bindings, others): (Vec<_>, Vec<_>) = state
            .definitions
            .values()
            .cloned()
            .partition(|c| matches!(c, crate::membership::DefinitionChange::BindQueue { .. }));
        self.apply_retained(others).await;
        let wanted: BTreeMap<(String, String), QueueDef> = state
            .queues
            .into_iter()
            .flat_map(|(vhost, queues)| queues.into_iter().map(move |(name, def)| ((vhost.clone(), name), def)))
            .collect();
        let gone: Vec<(String, String)> = self.lock().keys().filter(|k| !wanted.contains_key(*k)).cloned().collect();
        for (vhost, name) in gone {
            self.deleted(&vhost, &name).await;
        }
        for ((vhost, name), def) in wanted {
            self.declared(vhost, name, def).await;
        }
        self.classic_resync(&state.classic).await;
        self.apply_retained(queue_bindings).await;
        self.definitions_applied.fetch_max(state.applied, Ordering::AcqRel);
    }

    async fn apply_retained(&self, changes: Vec<crate::membership::DefinitionChange>) {
        let Some(broker) = self.broker.upgrade() else { return };
        smol::unblock(move || {
            for change in &changes {
                crate::admin::replicated::apply_retained(&broker, change);
            }
        })
        .await;
    }

    /// Whether quorum or classic queue `name` is served by this node (its declaration
    /// applied here).
    pub fn has(&self, vhost: &str, name: &str) -> bool {
        let key = (vhost.to_string(), name.to_string());
        self.lock().contains_key(&key) || self.classic().contains_key(&key)
    }

    /// Records that the metadata log is applied here up to `index` (a classic queue's
    /// declaration: a restart then knows it was applied before).
    async fn record_applied(&self, index: u64) {
        self.definitions_applied.fetch_max(index, Ordering::AcqRel);
        let file = self.applied_file.clone();
        smol::unblock(move || {
            if let Err(e) = std::fs::write(&file, index.to_string()) {
                log::warn!("cluster: cannot record the applied definitions in {}: {e}", file.display());
            }
        })
        .await;
    }

    /// The queues' leaders' periodic duties, until the cluster stops.
    pub async fn leader_ticks(self: Arc<Self>, state: Arc<Mutex<MetadataState>>, cluster: Weak<super::Cluster>) {
        let mut down_since: HashMap<u64, Instant> = HashMap::new();
        loop {
            smol::Timer::after(LEADER_TICK).await;
            let Some(cluster) = cluster.upgrade() else { return };
            if cluster.is_stopping() {
                return;
            }
            let status = crate::membership::ClusterView::status(&*cluster);
            let now = Instant::now();
            // A queue's leader heartbeats every member of its group, so its node's
            // contacts with the members are fresh (consumers are only on members).
            for (id, reachable) in cluster.peer_contacts() {
                if reachable {
                    down_since.remove(&id);
                } else {
                    down_since.entry(id).or_insert(now);
                }
            }
            let (nodes, alarmed) = {
                let st = state.lock().unwrap_or_else(|e| e.into_inner());
                (st.nodes.clone(), st.alarms.keys().copied().collect::<Vec<u64>>())
            };
            if status.leader == Some(self.node_id) {
                for node in alarmed.into_iter().filter(|n| *n != self.node_id) {
                    if down_since.get(&node).is_some_and(|t| now.duration_since(*t) > NODE_DOWN_AFTER) {
                        cluster.clear_alarms_of(node);
                    }
                }
            }
            let members: Vec<u64> = status.nodes.iter().map(|n| n.id).collect();
            let stale = |key: u64| {
                let (id, incarnation) = (key >> 32, (key & 0xffff_ffff) as u32);
                let restarted = nodes.get(&id).is_some_and(|a| a.incarnation != 0 && a.incarnation != incarnation);
                let down = down_since.get(&id).is_some_and(|t| now.duration_since(*t) > NODE_DOWN_AFTER);
                restarted || down || !members.contains(&id)
            };
            let now_ms = crate::message::now_ms();
            self.classic_reconcile();
            let queues: Vec<Arc<QuorumQueue>> = self.lock().values().map(|o| o.queue.clone()).collect();
            for q in queues {
                q.leader_tick(now_ms, &stale);
            }
        }
    }

    /// The members a new quorum queue is replicated on: `size` voters (3 when unset, as
    /// RabbitMQ; at most all of them), starting at a place that depends on the queue's name so that groups
    /// spread over the nodes.
    pub fn choose_members(
        voters: &BTreeMap<u64, SocketAddr>,
        size: Option<u64>,
        name: &str,
    ) -> BTreeMap<u64, SocketAddr> {
        let n = voters.len();
        let size = (size.unwrap_or(3) as usize).clamp(1, n.max(1));
        let start = name.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize)) % n.max(1);
        voters.iter().cycle().skip(start).take(size).map(|(id, addr)| (*id, *addr)).collect()
    }
}
