//! A connection as listings see it: what the handshake settled, its open channels and
//! its byte counts, kept where the management API can read them without the
//! connection task. The task writes it at the handshake and when channels open and
//! close (rare), so the frame loop pays only the byte count.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use amq_protocol::types::{ChannelId, FieldTable};

use crate::amqp::delivery::ChannelShared;
use crate::amqp::outbox::Outbox;
use crate::clients::ConnectionInfo;
use crate::queue::ConnectionId;
use crate::stats::Counter;

pub(super) struct ConnectionView {
    pub(super) id: std::sync::OnceLock<ConnectionId>,
    peer: SocketAddr,
    local: SocketAddr,
    tls: bool,
    connected_at_ms: u64,
    pub(super) meta: Mutex<Meta>,
    channels: Mutex<BTreeMap<ChannelId, Arc<ChannelShared>>>,
    /// Bytes read from the socket; only the connection task counts.
    pub(super) recv_oct: Counter,
    /// An alarm holds this publisher back.
    pub(super) blocked: AtomicBool,
}

/// What the handshake settled.
#[derive(Default)]
pub(super) struct Meta {
    pub(super) user: String,
    pub(super) vhost: String,
    pub(super) auth_mechanism: String,
    pub(super) client_properties: FieldTable,
    pub(super) frame_max: u32,
    pub(super) channel_max: u16,
    pub(super) heartbeat_s: u16,
}

impl ConnectionView {
    pub(super) fn new(peer: SocketAddr, local: SocketAddr, tls: bool) -> Arc<Self> {
        Arc::new(Self {
            id: Default::default(),
            peer,
            local,
            tls,
            connected_at_ms: crate::message::now_ms(),
            meta: Mutex::default(),
            channels: Mutex::default(),
            recv_oct: Counter::default(),
            blocked: AtomicBool::new(false),
        })
    }

    pub(super) fn meta(&self) -> MutexGuard<'_, Meta> {
        self.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn channels(&self) -> MutexGuard<'_, BTreeMap<ChannelId, Arc<ChannelShared>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn channel_opened(&self, shared: &Arc<ChannelShared>) {
        self.channels().insert(shared.id, shared.clone());
    }

    pub(super) fn channel_closed(&self, id: ChannelId) {
        self.channels().remove(&id);
    }

    pub(super) fn channels_closed(&self) {
        self.channels().clear();
    }

    pub(super) fn info(&self, outbox: &Outbox) -> ConnectionInfo {
        let channels: Vec<Arc<ChannelShared>> = self.channels().values().cloned().collect();
        let m = self.meta();
        ConnectionInfo {
            id: self.id.get().copied().unwrap_or_default(),
            peer: self.peer,
            local: self.local,
            tls: self.tls,
            user: m.user.clone(),
            vhost: m.vhost.clone(),
            auth_mechanism: m.auth_mechanism.clone(),
            client_properties: m.client_properties.clone(),
            connected_at_ms: self.connected_at_ms,
            frame_max: m.frame_max,
            channel_max: m.channel_max,
            heartbeat_s: m.heartbeat_s,
            recv_oct: self.recv_oct.get(),
            send_oct: outbox.sent_bytes(),
            blocked: self.blocked.load(Ordering::Relaxed),
            channels: channels.iter().map(|c| c.info()).collect(),
        }
    }
}
