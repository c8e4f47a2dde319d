//! A node: the shared database, the listener, the open groups; and a group's handle.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::sync::watch;

use crate::network::client::{CallError, Client, Dialer, NetworkFactory};
use crate::network::message::{RemoteWriteError, RpcRequest, RpcResponse};
use crate::storage::{LogStore, RaftDb, StateMachine, StateMachineStore};
use crate::types::{Raft, Request};
use crate::{Error, GroupId, GroupStatus, NodeConfig, NodeId, WriteError};

/// State shared by the node handle, its groups and its connection tasks.
pub(crate) struct Shared {
    pub(crate) dialer: Dialer,
    config: NodeConfig,
    raft_config: Arc<openraft::Config>,
    db: Mutex<Option<RaftDb>>,
    groups: Mutex<HashMap<GroupId, Arc<GroupInner>>>,
    /// The application's services, by name (see `crate::service`).
    pub(crate) services: Mutex<HashMap<String, crate::service::ServiceHandler>>,
    /// Dropped at shutdown: closes the listener and every connection task.
    stop: Mutex<Option<smol::channel::Sender<()>>>,
}

/// A Raft node hosting any number of groups over one database and one listener.
pub struct RaftNode {
    pub(crate) shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl RaftNode {
    /// Opens `<data_dir>/raft.redb` and binds the listener (port 0 picks a free port, see
    /// [`RaftNode::local_addr`]).
    pub async fn start(config: NodeConfig) -> Result<Arc<RaftNode>, Error> {
        std::fs::create_dir_all(&config.data_dir)?;
        let db = open_db(&config.data_dir.join("raft.redb")).await?;
        RaftNode::start_with_db(config, db).await
    }

    /// [`RaftNode::start`] over an open database (tests: one whose fsync they control).
    pub(crate) async fn start_with_db(config: NodeConfig, db: RaftDb) -> Result<Arc<RaftNode>, Error> {
        let raft_config = openraft::Config {
            cluster_name: "haremq".into(),
            heartbeat_interval: config.heartbeat_ms,
            election_timeout_min: config.election_timeout_ms.0,
            election_timeout_max: config.election_timeout_ms.1,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            // Keep a margin of log behind the snapshot so a briefly lagging follower catches
            // up from the log instead of a whole snapshot.
            max_in_snapshot_log_to_keep: (config.snapshot_every / 2).min(1000),
            purge_batch_size: 1,
            snapshot_max_chunk_size: 4 * 1024 * 1024,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Config(e.to_string()))?;
        let listener = smol::net::TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let (stop_tx, stop_rx) = smol::channel::bounded(1);
        let shared = Arc::new(Shared {
            dialer: Dialer {
                node_id: config.node_id,
                secret: config.secret.as_bytes().into(),
                routes: Arc::new(config.routes.clone()),
                contacts: Arc::default(),
            },
            config,
            raft_config: Arc::new(raft_config),
            db: Mutex::new(Some(db)),
            groups: Mutex::new(HashMap::new()),
            services: Mutex::new(HashMap::new()),
            stop: Mutex::new(Some(stop_tx)),
        });
        smol::spawn(crate::network::server::serve(listener, shared.clone(), stop_rx)).detach();
        Ok(Arc::new(RaftNode { shared, local_addr }))
    }

    /// The listener's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What peers dial to reach this node: `advertise`, else the bound address.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.shared.config.advertise.unwrap_or(self.local_addr)
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.config.node_id
    }

    /// Opens (or reopens after restart) a group this node is a member of. `members`: the
    /// initial voters with their addresses; if this node has no state for the group and is the
    /// lowest id in `members`, it initializes the group (others just wait to be contacted).
    /// Reopening with existing state ignores `members`.
    pub async fn open_group(
        &self,
        group: GroupId,
        members: BTreeMap<NodeId, SocketAddr>,
        sm: Box<dyn StateMachine>,
    ) -> Result<Group, Error> {
        let shared = &self.shared;
        let db = lock(&shared.db).clone().ok_or(Error::ShutDown)?;
        if lock(&shared.groups).contains_key(&group) {
            return Err(Error::AlreadyOpen(group));
        }
        let has_state = db.has_state(group.0).map_err(|e| Error::Storage(e.to_string()))?;
        let log_store = LogStore::new(db.clone(), group.0);
        let sm_store = StateMachineStore::open(db, group.0, sm).map_err(|e| Error::Storage(e.to_string()))?;
        let network = NetworkFactory { dialer: shared.dialer.clone(), group };
        let node_id = shared.config.node_id;
        let raft = Raft::new(node_id, shared.raft_config.clone(), network, log_store, sm_store)
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
        if !has_state && members.keys().next() == Some(&node_id) {
            let nodes: BTreeMap<NodeId, BasicNode> =
                members.iter().map(|(id, addr)| (*id, BasicNode::new(addr.to_string()))).collect();
            if let Err(e) = raft.initialize(nodes).await {
                log::info!("raft: group {} not initialized by node {node_id}: {e}", group.0);
            }
        }
        let (leader_tx, leader_rx) = watch::channel(None);
        let mut metrics = raft.metrics();
        smol::spawn(async move {
            loop {
                let leader = metrics.borrow().current_leader;
                leader_tx.send_if_modified(|l| std::mem::replace(l, leader) != leader);
                if metrics.changed().await.is_err() {
                    leader_tx.send_replace(None);
                    return;
                }
            }
        })
        .detach();
        let pipeline = crate::pipeline::start(
            raft.clone(),
            group,
            node_id,
            shared.dialer.clone(),
            Duration::from_millis(shared.config.write_timeout_ms),
        );
        let inner = Arc::new(GroupInner { id: group, raft, leader_rx, forward: Mutex::new(HashMap::new()), pipeline });
        lock(&shared.groups).insert(group, inner.clone());
        Ok(Group { inner, shared: shared.clone() })
    }

    /// Stops a group's Raft instance; with `delete_state` also erases its log, vote and
    /// snapshot (the queue was deleted or this node left the group).
    pub async fn close_group(&self, group: GroupId, delete_state: bool) {
        let inner = lock(&self.shared.groups).remove(&group);
        if let Some(inner) = inner {
            if let Err(e) = inner.raft.shutdown().await {
                log::warn!("raft: group {} did not stop cleanly: {e}", group.0);
            }
        }
        if delete_state {
            let db = lock(&self.shared.db).clone();
            if let Some(db) = db {
                if let Err(e) = smol::unblock(move || db.delete_group(group.0)).await {
                    log::error!("raft: deleting group {}'s state failed: {e}", group.0);
                }
            }
        }
    }

    /// Stops every group, the listener and all connections, and closes the database.
    pub async fn shutdown(&self) {
        drop(lock(&self.shared.stop).take());
        let groups: Vec<GroupId> = lock(&self.shared.groups).keys().copied().collect();
        for group in groups {
            self.close_group(group, false).await;
        }
        drop(lock(&self.shared.db).take());
    }

    /// The number of log entries this node stores for a group (purging is observable).
    pub fn stored_log_len(&self, group: GroupId) -> Result<u64, Error> {
        let db = lock(&self.shared.db).clone().ok_or(Error::ShutDown)?;
        db.log_len(group.0).map_err(|e| Error::Storage(e.to_string()))
    }
}

/// Opens the database; retries briefly while a previous instance in this process (a node
/// restarted in place) still finishes dropping its last handles.
async fn open_db(path: &std::path::Path) -> Result<RaftDb, Error> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match RaftDb::open(path) {
            Ok(db) => return Ok(db),
            Err(redb::Error::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                smol::Timer::after(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(Error::Storage(e.to_string())),
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct GroupInner {
    id: GroupId,
    raft: Raft,
    leader_rx: watch::Receiver<Option<NodeId>>,
    /// Connections for forwarding to the leader, per target node.
    forward: Mutex<HashMap<NodeId, Arc<Client>>>,
    /// The group's ordered pipeline of writes ([`Group::submit`]).
    pipeline: smol::channel::Sender<crate::pipeline::Job>,
}

/// A handle on one open group (cheap to clone).
#[derive(Clone)]
pub struct Group {
    inner: Arc<GroupInner>,
    shared: Arc<Shared>,
}

/// An operation that only the leader can carry out.
enum Op {
    Write(Vec<Vec<u8>>),
    AddVoter(NodeId, String),
    AddLearner(NodeId, String),
    RemoveVoter(NodeId),
}

/// Why an attempt on the leader (local or forwarded) did not succeed.
enum Attempt {
    /// Nothing was proposed (no leader, not the leader, unreachable): safe to retry.
    Retry,
    /// Proposed but not known to be committed within the deadline.
    Timeout,
    Fatal(String),
}

impl Group {
    pub fn id(&self) -> GroupId {
        self.inner.id
    }

    /// Proposes a command; returns the state machine's response after a majority commit and
    /// the leader's apply. On a follower it forwards to the current leader over the network
    /// (retrying while a leader is being elected, up to the node's write timeout).
    ///
    /// `Timeout` means the outcome is unknown (the command may still commit); `NoQuorum`
    /// means no leader could be reached and nothing was proposed.
    pub async fn write(&self, command: Vec<u8>) -> Result<Vec<u8>, WriteError> {
        let mut out = self.write_many(vec![command]).await?;
        out.pop().ok_or_else(|| WriteError::Fatal("no response".into()))
    }

    /// Proposes a command *in order*: commands submitted through this node's handle on the
    /// group enter the log in the order of the `submit` calls (the order is fixed when
    /// `submit` returns, not when the future is first polled), while several are in flight
    /// at once (see the `pipeline` module). Answers may complete in any order.
    ///
    /// Errors: `NoQuorum`, the command is not in the log (no leader within the write
    /// timeout, or the leader refused it and a later command was already appended, so a
    /// retry would reorder them); `Timeout`, its fate is unknown (it may commit); `Fatal`.
    /// A command the leader refused is retried, in order, when that keeps the order.
    pub fn submit(
        &self,
        command: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, WriteError>> + Send + 'static {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let deadline = Instant::now() + self.write_timeout();
        let sent = self.inner.pipeline.try_send(crate::pipeline::Job { command, reply, deadline });
        async move {
            if sent.is_err() {
                return Err(WriteError::Fatal("the group is closed".into()));
            }
            answer.await.unwrap_or_else(|_| Err(WriteError::Fatal("the group is closed".into())))
        }
    }

    /// Many commands in one call: all are handed to openraft before any is awaited.
    /// Responses in order. (Each is its own entry and leader append; the leader does not
    /// wait for one append's fsync before the next, so the log writer's group commit lets
    /// them share fsyncs, as it does for different groups.)
    pub async fn write_many(&self, commands: Vec<Vec<u8>>) -> Result<Vec<Vec<u8>>, WriteError> {
        self.on_leader(Op::Write(commands)).await
    }

    /// Adds a voter: as a learner first, waiting until it has caught up, then promoted.
    /// Runs on the leader (forwarded if this node isn't).
    pub async fn add_voter(&self, id: NodeId, addr: SocketAddr) -> Result<(), WriteError> {
        self.on_leader(Op::AddVoter(id, addr.to_string())).await.map(|_| ())
    }

    /// Adds a learner: it receives the log (and applies it) but never votes, so it
    /// does not count toward the majority. Returns once the membership change is
    /// committed; the learner catches up in the background. Runs on the leader.
    pub async fn add_learner(&self, id: NodeId, addr: SocketAddr) -> Result<(), WriteError> {
        self.on_leader(Op::AddLearner(id, addr.to_string())).await.map(|_| ())
    }

    /// Asks `via` (a member of the group, reached at `via_addr` unless a route says
    /// otherwise) to add `id` as a learner. For a node outside the group: it hears of
    /// no leader until it is in the membership. `NoQuorum` if `via` does not lead (ask
    /// another member).
    pub async fn add_learner_via(
        &self,
        via: NodeId,
        via_addr: SocketAddr,
        id: NodeId,
        addr: SocketAddr,
    ) -> Result<(), WriteError> {
        let client = Client::new(self.shared.dialer.clone(), self.shared.dialer.route(via, via_addr));
        let request = RpcRequest::AddLearner(self.inner.id, id, addr.to_string());
        match client.call(&request, self.write_timeout()).await {
            Ok(RpcResponse::Done(Ok(()))) => Ok(()),
            Ok(RpcResponse::Done(Err(RemoteWriteError::Timeout))) | Err(CallError::Timeout(_)) => {
                Err(WriteError::Timeout)
            }
            Ok(RpcResponse::Done(Err(RemoteWriteError::Fatal(e)))) => Err(WriteError::Fatal(e)),
            _ => Err(WriteError::NoQuorum),
        }
    }

    /// Removes a voter (it is dropped from the membership entirely, not kept as a learner).
    pub async fn remove_voter(&self, id: NodeId) -> Result<(), WriteError> {
        self.on_leader(Op::RemoveVoter(id)).await.map(|_| ())
    }

    /// Best effort: asks `to` to start an election now. openraft 0.9 has no leadership
    /// transfer; an up-to-date voter that campaigns with a higher term normally wins.
    pub async fn transfer_leadership(&self, to: NodeId) -> Result<(), WriteError> {
        if to == self.shared.config.node_id {
            return self.inner.raft.trigger().elect().await.map_err(|e| WriteError::Fatal(e.to_string()));
        }
        let client = self.client_for(to).ok_or(WriteError::NoQuorum)?;
        match client.call(&RpcRequest::Elect(self.inner.id), self.write_timeout()).await {
            Ok(RpcResponse::Done(Ok(()))) => Ok(()),
            Ok(RpcResponse::Done(Err(e))) => Err(WriteError::Fatal(format!("{e:?}"))),
            Ok(RpcResponse::Failed(e)) => Err(WriteError::Fatal(e)),
            Ok(_) => Err(WriteError::Fatal("unexpected response".into())),
            Err(_) => Err(WriteError::NoQuorum),
        }
    }

    /// A point-in-time view of the group from this node.
    pub fn status(&self) -> GroupStatus {
        let m = self.inner.raft.metrics().borrow().clone();
        let mut status = status_of(&m, self.shared.config.election_timeout_ms.1);
        let window = Duration::from_millis(2 * self.shared.config.election_timeout_ms.1);
        let mut reachable = self.shared.dialer.contacts.reachable(window);
        reachable.retain(|id, _| status.addresses.contains_key(id));
        status.reachable = reachable;
        status
    }

    /// Whom the group's leader heard from lately (this node's own view if it leads):
    /// only the leader talks to every member all the time, so a follower asks it
    /// (within `timeout`). None if no leader answers.
    pub async fn leader_reachability(&self, timeout: Duration) -> Option<BTreeMap<NodeId, bool>> {
        let status = self.status();
        if status.is_leader {
            return Some(status.reachable);
        }
        let client = self.client_for(status.leader?)?;
        match client.call(&RpcRequest::Reachability(self.inner.id), timeout).await {
            Ok(RpcResponse::Reachability(true, reachable)) => Some(reachable),
            _ => None,
        }
    }

    /// The leader as this node sees it; changes whenever it does (`None` while electing).
    /// Compare with [`RaftNode::node_id`] to learn when this node gains or loses leadership.
    pub fn watch_leader(&self) -> watch::Receiver<Option<NodeId>> {
        self.inner.leader_rx.clone()
    }

    fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.shared.config.write_timeout_ms)
    }

    fn client_for(&self, target: NodeId) -> Option<Arc<Client>> {
        let addr = {
            let m = self.inner.raft.metrics();
            let m = m.borrow();
            m.membership_config.membership().get_node(&target).and_then(|n| n.addr.parse::<SocketAddr>().ok())?
        };
        let addr = self.shared.dialer.route(target, addr);
        let mut forward = lock(&self.inner.forward);
        match forward.get(&target) {
            // A node that restarted elsewhere gets a new client.
            Some(client) if client.addr() == addr => Some(client.clone()),
            _ => {
                let client = Arc::new(Client::new(self.shared.dialer.clone(), addr));
                forward.insert(target, client.clone());
                Some(client)
            }
        }
    }

    async fn on_leader(&self, op: Op) -> Result<Vec<Vec<u8>>, WriteError> {
        let deadline = Instant::now() + self.write_timeout();
        let mut metrics = self.inner.raft.metrics();
        let me = self.shared.config.node_id;
        loop {
            let leader = metrics.borrow_and_update().current_leader;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(if leader.is_some() { WriteError::Timeout } else { WriteError::NoQuorum });
            }
            let attempt = match leader {
                Some(l) if l == me => self.inner.local(&op, remaining).await,
                Some(l) => self.forward(l, &op, remaining).await,
                None => Err(Attempt::Retry),
            };
            match attempt {
                Ok(out) => return Ok(out),
                Err(Attempt::Timeout) => return Err(WriteError::Timeout),
                Err(Attempt::Fatal(e)) => return Err(WriteError::Fatal(e)),
                Err(Attempt::Retry) => {
                    let wait = remaining.min(Duration::from_millis(50));
                    smol::future::or(
                        async {
                            if metrics.changed().await.is_err() {
                                smol::Timer::after(wait).await;
                            }
                        },
                        async {
                            smol::Timer::after(wait).await;
                        },
                    )
                    .await;
                }
            }
        }
    }

    async fn forward(&self, leader: NodeId, op: &Op, timeout: Duration) -> Result<Vec<Vec<u8>>, Attempt> {
        let Some(client) = self.client_for(leader) else { return Err(Attempt::Retry) };
        let group = self.inner.id;
        let req = match op {
            Op::Write(commands) => RpcRequest::ClientWrite(group, commands.clone()),
            Op::AddVoter(id, addr) => RpcRequest::AddVoter(group, *id, addr.clone()),
            Op::AddLearner(id, addr) => RpcRequest::AddLearner(group, *id, addr.clone()),
            Op::RemoveVoter(id) => RpcRequest::RemoveVoter(group, *id),
        };
        let remote = |e: RemoteWriteError| match e {
            RemoteWriteError::NotLeader(_) => Attempt::Retry,
            RemoteWriteError::Timeout => Attempt::Timeout,
            RemoteWriteError::Fatal(e) => Attempt::Fatal(e),
        };
        match client.call(&req, timeout).await {
            Ok(RpcResponse::ClientWrite(r)) => r.map_err(remote),
            Ok(RpcResponse::Done(r)) => r.map(|()| Vec::new()).map_err(remote),
            Ok(RpcResponse::Failed(_)) => Err(Attempt::Retry),
            Ok(_) => Err(Attempt::Fatal("unexpected response".into())),
            Err(CallError::Unreachable(_)) => Err(Attempt::Retry),
            Err(CallError::Timeout(_)) => Err(Attempt::Timeout),
            Err(CallError::TooLarge) => Err(Attempt::Fatal("request exceeds the 64 MiB frame limit".into())),
        }
    }
}

impl GroupInner {
    /// Carries out `op` on this node's Raft instance, which must be the leader.
    async fn local(&self, op: &Op, timeout: Duration) -> Result<Vec<Vec<u8>>, Attempt> {
        let work = async {
            match op {
                Op::Write(commands) => self.write_local(commands).await,
                Op::AddVoter(id, addr) => {
                    self.raft.add_learner(*id, BasicNode::new(addr.clone()), true).await.map_err(membership_err)?;
                    let ids = BTreeSet::from([*id]);
                    self.raft
                        .change_membership(ChangeMembers::AddVoterIds(ids), false)
                        .await
                        .map_err(membership_err)?;
                    Ok(Vec::new())
                }
                Op::AddLearner(id, addr) => {
                    self.raft.add_learner(*id, BasicNode::new(addr.clone()), false).await.map_err(membership_err)?;
                    Ok(Vec::new())
                }
                Op::RemoveVoter(id) => {
                    let ids = BTreeSet::from([*id]);
                    self.raft
                        .change_membership(ChangeMembers::RemoveVoters(ids), false)
                        .await
                        .map_err(membership_err)?;
                    Ok(Vec::new())
                }
            }
        };
        smol::future::or(work, async {
            smol::Timer::after(timeout).await;
            Err(Attempt::Timeout)
        })
        .await
    }

    async fn write_local(&self, commands: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, Attempt> {
        let mut pending = Vec::with_capacity(commands.len());
        for c in commands {
            let rx = self.raft.client_write_ff(Request(c.clone())).await.map_err(|e| Attempt::Fatal(e.to_string()))?;
            pending.push(rx);
        }
        let mut out = Vec::with_capacity(pending.len());
        let mut first_error = None;
        for rx in pending {
            match rx.await {
                Ok(Ok(resp)) => out.push(resp.data.0),
                // Leadership moved before this command was appended: nothing was proposed.
                Ok(Err(ClientWriteError::ForwardToLeader(_))) => {
                    first_error.get_or_insert(if out.is_empty() { Attempt::Retry } else { Attempt::Timeout });
                }
                Ok(Err(e)) => {
                    first_error.get_or_insert(Attempt::Fatal(e.to_string()));
                }
                Err(_) => {
                    first_error.get_or_insert(Attempt::Fatal("raft stopped".into()));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

fn membership_err(e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> Attempt {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Attempt::Retry,
        // Another change in progress: wait for it and try again.
        RaftError::APIError(ClientWriteError::ChangeMembershipError(_)) => Attempt::Retry,
        RaftError::Fatal(e) => Attempt::Fatal(e.to_string()),
    }
}

fn status_of(m: &RaftMetrics<u64, BasicNode>, election_timeout_max: u64) -> GroupStatus {
    let membership = m.membership_config.membership();
    let is_leader = m.state == ServerState::Leader;
    let has_quorum = if is_leader {
        m.millis_since_quorum_ack.is_some_and(|ms| ms < election_timeout_max)
    } else {
        m.current_leader.is_some()
    };
    GroupStatus {
        leader: m.current_leader,
        term: m.current_term,
        is_leader,
        voters: membership.voter_ids().collect(),
        learners: membership.learner_ids().collect(),
        last_log_index: m.last_log_index,
        last_applied: m.last_applied.map(|l| l.index),
        millis_since_quorum_ack: m.millis_since_quorum_ack,
        has_quorum,
        addresses: membership.nodes().filter_map(|(id, n)| Some((*id, n.addr.parse().ok()?))).collect(),
        reachable: BTreeMap::new(),
    }
}

impl Shared {
    /// The Raft instance of a group open here.
    pub(crate) fn raft_of(&self, group: GroupId) -> Option<Raft> {
        lock(&self.groups).get(&group).map(|g| g.raft.clone())
    }

    pub(crate) fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.config.write_timeout_ms)
    }

    /// Serves one request from a peer. Unknown groups get an error reply: a node may hear of
    /// a group before it has opened it, and openraft retries.
    pub(crate) async fn handle(self: &Arc<Self>, req: RpcRequest) -> RpcResponse {
        let group = match &req {
            RpcRequest::AppendEntries(g, _)
            | RpcRequest::Vote(g, _)
            | RpcRequest::InstallSnapshot(g, _)
            | RpcRequest::ClientWrite(g, _)
            | RpcRequest::AddVoter(g, _, _)
            | RpcRequest::AddLearner(g, _, _)
            | RpcRequest::Reachability(g)
            | RpcRequest::RemoveVoter(g, _)
            | RpcRequest::Elect(g)
            | RpcRequest::OpenPipeline(g) => *g,
            // Handled by the connection (it hands itself to the service).
            RpcRequest::OpenService(_) => return RpcResponse::Failed("not a request".into()),
        };
        let Some(inner) = lock(&self.groups).get(&group).cloned() else {
            return RpcResponse::Failed(format!("group {} is not open here", group.0));
        };
        let raft = &inner.raft;
        let timeout = Duration::from_millis(self.config.write_timeout_ms);
        match req {
            RpcRequest::AppendEntries(_, rpc) => match raft.append_entries(rpc).await {
                Ok(r) => RpcResponse::AppendEntries(r),
                Err(e) => RpcResponse::Failed(e.to_string()),
            },
            RpcRequest::Vote(_, rpc) => match raft.vote(rpc).await {
                Ok(r) => RpcResponse::Vote(r),
                Err(e) => RpcResponse::Failed(e.to_string()),
            },
            RpcRequest::InstallSnapshot(_, rpc) => match raft.install_snapshot(rpc).await {
                Ok(r) => RpcResponse::InstallSnapshot(Ok(r)),
                Err(RaftError::APIError(e)) => RpcResponse::InstallSnapshot(Err(e)),
                Err(RaftError::Fatal(e)) => RpcResponse::Failed(e.to_string()),
            },
            RpcRequest::ClientWrite(_, commands) => {
                RpcResponse::ClientWrite(inner.served(Op::Write(commands), timeout).await)
            }
            RpcRequest::AddVoter(_, id, addr) => {
                RpcResponse::Done(inner.served(Op::AddVoter(id, addr), timeout).await.map(|_| ()))
            }
            RpcRequest::Reachability(_) => {
                let status = Group { inner: inner.clone(), shared: self.clone() }.status();
                RpcResponse::Reachability(status.is_leader, status.reachable)
            }
            RpcRequest::AddLearner(_, id, addr) => {
                RpcResponse::Done(inner.served(Op::AddLearner(id, addr), timeout).await.map(|_| ()))
            }
            RpcRequest::RemoveVoter(_, id) => {
                RpcResponse::Done(inner.served(Op::RemoveVoter(id), timeout).await.map(|_| ()))
            }
            // Handled by the connection (it switches to the pipelined protocol).
            RpcRequest::OpenPipeline(_) | RpcRequest::OpenService(_) => RpcResponse::Failed("not a request".into()),
            RpcRequest::Elect(_) => {
                RpcResponse::Done(raft.trigger().elect().await.map_err(|e| RemoteWriteError::Fatal(e.to_string())))
            }
        }
    }
}

impl GroupInner {
    /// A forwarded operation: carried out only if this node is the leader (no second hop,
    /// so two nodes with stale views can't bounce a request between them).
    async fn served(&self, op: Op, timeout: Duration) -> Result<Vec<Vec<u8>>, RemoteWriteError> {
        let leader = self.raft.metrics().borrow().current_leader;
        if leader != Some(self.raft_id()) {
            return Err(RemoteWriteError::NotLeader(leader));
        }
        self.local(&op, timeout).await.map_err(|e| match e {
            Attempt::Retry => RemoteWriteError::NotLeader(None),
            Attempt::Timeout => RemoteWriteError::Timeout,
            Attempt::Fatal(e) => RemoteWriteError::Fatal(e),
        })
    }

    fn raft_id(&self) -> NodeId {
        self.raft.metrics().borrow().id
    }
}

#[cfg(test)]
mod flush_tests;
