//! What the core sees of its clients: the [`ClientConnection`] seam the AMQP layer
//! implements, and the snapshots it gives of a connection, its channels and consumers
//! (for the management API and metrics). Snapshots are copies taken when asked, never
//! live references, so a listing cannot hold up a connection.

use std::net::SocketAddr;
use std::sync::Arc;

use amq_protocol::types::FieldTable;

use crate::queue::ConnectionId;
use crate::stats::MessageStats;

/// A live client connection as the broker sees it: something it can close and
/// describe. The AMQP layer implements it; the broker never writes frames itself.
pub trait ClientConnection: Send + Sync {
    /// Closes the connection with 320 CONNECTION_FORCED and `reason`.
    fn force_close(&self, reason: &str);
    /// The connection now.
    fn info(&self) -> ConnectionInfo;
}

/// One connection at one moment.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    pub id: ConnectionId,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
    /// Empty until authenticated.
    pub user: String,
    /// Empty until connection.open.
    pub vhost: String,
    pub auth_mechanism: String,
    pub client_properties: FieldTable,
    /// Wall clock of the TCP accept, ms since the UNIX epoch.
    pub connected_at_ms: u64,
    pub frame_max: u32,
    pub channel_max: u16,
    pub heartbeat_s: u16,
    /// Bytes read from and written to the socket (TLS: the plaintext).
    pub recv_oct: u64,
    pub send_oct: u64,
    /// An alarm holds this publisher back.
    pub blocked: bool,
    pub channels: Vec<ChannelInfo>,
}

impl ConnectionInfo {
    /// RabbitMQ's connection name: `peer -> local`.
    pub fn name(&self) -> String {
        format!("{} -> {}", self.peer, self.local)
    }
}

/// One channel at one moment.
#[derive(Clone, Debug)]
pub struct ChannelInfo {
    pub number: u16,
    pub confirm: bool,
    pub transactional: bool,
    /// basic.qos per consumer (for consumers created afterwards) and per channel.
    pub prefetch: u16,
    pub global_prefetch: u16,
    pub unacked: u32,
    pub consumers: Vec<ConsumerInfo>,
    pub messages: MessageStats,
}

/// One consumer at one moment.
#[derive(Clone, Debug)]
pub struct ConsumerInfo {
    pub tag: Arc<str>,
    pub queue: Arc<str>,
    pub no_ack: bool,
    pub exclusive: bool,
    pub prefetch: u16,
    pub arguments: FieldTable,
    /// False until consume-ok went out (and for a single-active-consumer standby, still
    /// true: the queue, not the channel, knows which consumer is active).
    pub active: bool,
}
