//! The dialing side: one authenticated connection per (group, target), one request in flight.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use smol::net::TcpStream;

use super::auth::{handshake, Role};
use super::frame::{read_frame, write_frame, FrameError};
use super::message::{RpcRequest, RpcResponse};
use crate::types::TypeConfig;
use crate::GroupId;

/// What a node needs to dial its peers.
#[derive(Clone)]
pub struct Dialer {
    pub node_id: u64,
    pub secret: Arc<[u8]>,
    /// Addresses that override the membership's (see `NodeConfig::routes`).
    pub routes: Arc<BTreeMap<u64, SocketAddr>>,
    /// When each peer was last heard from.
    pub contacts: Arc<Contacts>,
}

impl Dialer {
    /// The address to dial for `target`, whose membership address is `recorded`.
    pub fn route(&self, target: u64, recorded: SocketAddr) -> SocketAddr {
        self.routes.get(&target).copied().unwrap_or(recorded)
    }
}

/// When each peer was last heard from: a request it answered, or one it sent. Shared by
/// every group of the node, so a peer's reachability is known from any group's traffic.
#[derive(Default)]
pub struct Contacts(std::sync::Mutex<HashMap<u64, Instant>>);

impl Contacts {
    pub fn heard_from(&self, peer: u64) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(peer, Instant::now());
    }

    /// Whether each peer heard from since start was heard from within `window`.
    pub fn reachable(&self, window: Duration) -> BTreeMap<u64, bool> {
        let now = Instant::now();
        let seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter().map(|(peer, at)| (*peer, now.duration_since(*at) <= window)).collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0}")]
    Unreachable(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The request doesn't fit in a frame; nothing was sent.
    #[error("request exceeds the frame size limit")]
    TooLarge,
}

/// A connection to one peer, re-established on the next call after any error. Calls are
/// serialized (the lock is held across the round trip): one request in flight.
pub struct Client {
    dialer: Dialer,
    addr: SocketAddr,
    conn: smol::lock::Mutex<Option<TcpStream>>,
    /// Set after a failed handshake, so a peer with the wrong secret is logged once rather
    /// than on every reconnect attempt.
    auth_failing: AtomicBool,
}

impl Client {
    pub fn new(dialer: Dialer, addr: SocketAddr) -> Client {
        Client { dialer, addr, conn: smol::lock::Mutex::new(None), auth_failing: AtomicBool::new(false) }
    }

    /// The address this client dials.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends a request and waits for its response, within `timeout` (connect included).
    pub async fn call(&self, req: &RpcRequest, timeout: Duration) -> Result<RpcResponse, CallError> {
        let mut conn = self.conn.lock().await;
        let attempt = async {
            if conn.is_none() {
                let mut stream =
                    TcpStream::connect(self.addr).await.map_err(|e| CallError::Unreachable(e.to_string()))?;
                // Small RPCs (votes, heartbeats) must not wait for Nagle.
                let _ = stream.set_nodelay(true);
                match handshake(&mut stream, &self.dialer.secret, self.dialer.node_id, Role::Dialer).await {
                    Ok(_) => {
                        if self.auth_failing.swap(false, Ordering::Relaxed) {
                            log::info!("raft: handshake with {} succeeds again", self.addr);
                        }
                    }
                    Err(e) => {
                        if !self.auth_failing.swap(true, Ordering::Relaxed) {
                            log::warn!("raft: handshake with {} failed: {e}", self.addr);
                        }
                        return Err(CallError::Unreachable(e.to_string()));
                    }
                }
                *conn = Some(stream);
            }
            let Some(stream) = conn.as_mut() else { return Err(CallError::Unreachable("no connection".into())) };
            write_frame(stream, req).await.map_err(|e| match e {
                FrameError::TooLarge(_) => CallError::TooLarge,
                e => CallError::Unreachable(e.to_string()),
            })?;
            read_frame::<RpcResponse>(stream).await.map_err(|e| CallError::Unreachable(e.to_string()))
        };
        let result = smol::future::or(attempt, async {
            smol::Timer::after(timeout).await;
            Err(CallError::Timeout(timeout))
        })
        .await;
        if result.is_err() {
            // The stream may hold half a frame or a late response: start over next time.
            *conn = None;
        }
        result
    }
}

/// Creates the per-target network clients of one group's Raft instance.
pub struct NetworkFactory {
    pub dialer: Dialer,
    pub group: GroupId,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = GroupNetwork;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> GroupNetwork {
        let addr = node.addr.parse::<SocketAddr>().map(|a| self.dialer.route(target, a));
        if addr.is_err() {
            log::error!("raft: node {target} has an invalid address {:?}", node.addr);
        }
        GroupNetwork {
            client: addr.ok().map(|a| Client::new(self.dialer.clone(), a)),
            group: self.group,
            target,
            node: node.clone(),
        }
    }
}

/// One group's link to one target node.
pub struct GroupNetwork {
    client: Option<Client>,
    group: GroupId,
    target: u64,
    node: BasicNode,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<u64, BasicNode, RaftError<u64, E>>;

fn unreachable<E: std::error::Error>(msg: impl Into<String>) -> RPCError<u64, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(msg.into())))
}

impl GroupNetwork {
    async fn call<E: std::error::Error>(
        &self,
        req: RpcRequest,
        option: &RPCOption,
    ) -> Result<RpcResponse, RPCError<u64, BasicNode, E>> {
        let Some(client) = &self.client else { return Err(unreachable("invalid address")) };
        let result = client.call(&req, option.hard_ttl()).await;
        if result.is_ok() {
            client.dialer.contacts.heard_from(self.target);
        }
        match result {
            Ok(RpcResponse::Failed(msg)) => Err(unreachable(format!("node {}: {msg}", self.target))),
            Ok(resp) => Ok(resp),
            Err(CallError::Unreachable(msg)) => Err(unreachable(msg)),
            Err(e @ CallError::Timeout(_)) => Err(RPCError::Network(NetworkError::new(&e))),
            Err(e @ CallError::TooLarge) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }
}

fn unexpected<E: std::error::Error>() -> RPCError<u64, BasicNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other("unexpected response type")))
}

impl RaftNetwork<TypeConfig> for GroupNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcErr> {
        let entries = rpc.entries.len() as u64;
        let result = self.call(RpcRequest::AppendEntries(self.group, rpc), &option).await;
        if let Err(RPCError::Network(e)) = &result {
            if entries > 1 && e.to_string().contains("frame size limit") {
                // Let openraft resend fewer entries per request.
                return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries / 2)));
            }
        }
        match result? {
            RpcResponse::AppendEntries(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcErr<InstallSnapshotError>> {
        match self.call(RpcRequest::InstallSnapshot(self.group, rpc), &option).await? {
            RpcResponse::InstallSnapshot(Ok(r)) => Ok(r),
            RpcResponse::InstallSnapshot(Err(e)) => Err(RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                RaftError::APIError(e),
            ))),
            _ => Err(unexpected()),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<u64>, option: RPCOption) -> Result<VoteResponse<u64>, RpcErr> {
        match self.call(RpcRequest::Vote(self.group, rpc), &option).await? {
            RpcResponse::Vote(r) => Ok(r),
            _ => Err(unexpected()),
        }
    }

    /// Retry quickly: a peer that is down or hasn't opened the group yet is usually back soon,
    /// and failover time matters more than a few wasted connects.
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(100)))
    }
}
