//! The broker's shared state: configuration, users, virtual hosts and the registry of
//! live connections (for shutdown).

use crate::memory::MemoryAlarm;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::auth::UserTable;
use crate::config::Config;
use crate::message::Message;
use crate::queue::ConnectionId;
use crate::store::{Snapshot, StoreHandle};
use crate::vhost::VHost;

/// A live client connection as the broker sees it: something it can close. The
/// AMQP layer implements it; the broker never writes frames itself.
pub trait ClientConnection: Send + Sync {
    /// Closes the connection with 320 CONNECTION_FORCED and `reason`.
    fn force_close(&self, reason: &str);
}

pub struct Broker {
    pub config: Config,
    /// The durable store (None only for brokers built without one, e.g. unit tests).
    pub store: Option<StoreHandle>,
    pub users: UserTable,
    /// Blocks publishers while messages hold more memory than configured.
    pub memory: MemoryAlarm,
    /// Blocks publishers while the data directory's disk is nearly full.
    pub disk: crate::disk::DiskAlarm,
    vhosts: RwLock<HashMap<String, Arc<VHost>>>,
    next_connection: AtomicU64,
    connections: Mutex<HashMap<ConnectionId, Arc<dyn ClientConnection>>>,
    shutting_down: AtomicBool,
}

impl Broker {
    /// Builds the broker state, restoring durable definitions and messages from
    /// `snapshot`.
    pub fn new(config: Config, store: Option<StoreHandle>, snapshot: Option<Snapshot>) -> Arc<Self> {
        let mut vhosts = HashMap::new();
        let root = VHost::new("/", store.clone());
        root.consumer_timeout_ms.store(config.consumer_timeout_ms, std::sync::atomic::Ordering::Relaxed);
        if let Some(mut snap) = snapshot {
            // One shared message per record, however many entries reference it.
            let messages =
                snap.messages.drain().map(|(id, record)| (id, Arc::new(Message::from_record(record, id, 0)))).collect();
            root.restore(&snap, &messages);
        }
        vhosts.insert("/".to_string(), root);
        let limit = match config.memory_limit {
            0 => crate::memory::limit_from_fraction(config.memory_high_watermark),
            bytes => bytes,
        };
        Arc::new(Self {
            users: UserTable::from_config(&config),
            memory: MemoryAlarm::new(limit),
            disk: crate::disk::DiskAlarm::new(&config.data_dir, config.disk_free_limit).with_store(store.clone()),
            config,
            store,
            vhosts: RwLock::new(vhosts),
            next_connection: AtomicU64::new(1),
            connections: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
        })
    }

    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// The names of all vhosts, sorted.
    pub fn vhost_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.vhosts.read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        names.sort();
        names
    }

    /// Registers a new connection, to be closed on shutdown.
    pub fn register_connection(&self, connection: Arc<dyn ClientConnection>) -> ConnectionId {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        self.connections.lock().unwrap_or_else(|e| e.into_inner()).insert(id, connection);
        id
    }

    pub fn unregister_connection(&self, id: ConnectionId) {
        self.connections.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    pub fn connection_count(&self) -> usize {
        self.connections.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Starts shutdown: every connection is sent connection.close 320 and closed.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        let conns: Vec<Arc<dyn ClientConnection>> =
            self.connections.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        for c in conns {
            c.force_close("broker shutdown");
        }
    }
}
