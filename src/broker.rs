//! The broker's shared state: configuration, users and permissions, virtual hosts and
//! the registry of live connections (for shutdown, vhost deletion and limits).

use crate::memory::MemoryAlarm;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::auth::permissions::{Permission, TopicPermission};
use crate::auth::users::User;
use crate::auth::UserTable;
use crate::config::Config;
use crate::error::{AmqpError, AmqpResult};
use crate::message::Message;
use crate::queue::ConnectionId;
use crate::store::{PermissionRecord, Snapshot, StoreHandle, StoreOp};
use crate::vhost::{VHost, VHostLimits, VHostMeta};

/// The vhost every broker starts with.
pub const DEFAULT_VHOST: &str = "/";

pub use crate::clients::{ClientConnection, ConnectionInfo};

/// A registered connection and, once connection.open succeeded, who uses it where.
struct Registered {
    handle: Arc<dyn ClientConnection>,
    opened: Option<(Arc<str>, String)>,
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
    connections: Mutex<HashMap<ConnectionId, Registered>>,
    /// Open channels per user, over all its connections (its `max-channels`).
    user_channels: Mutex<HashMap<String, Arc<AtomicU64>>>,
    shutting_down: AtomicBool,
    /// What closed channels counted (broker-wide totals: these plus the open channels').
    pub retired: Arc<crate::stats::Retired>,
    /// Global runtime parameters (`cluster_name`, ...), changed through `admin`.
    global_parameters: Mutex<std::collections::BTreeMap<String, serde_json::Value>>,
    /// Administrative changes (`crate::admin`) are made one at a time.
    pub admin_lock: Mutex<()>,
    /// The cluster this node is part of (set once at start; unset on a single node).
    cluster: std::sync::OnceLock<Arc<dyn crate::membership::ClusterView>>,
    /// Resource alarms raised on other nodes of the cluster (`REMOTE_MEMORY`,
    /// `REMOTE_DISK` bits): publishers here are blocked too, as RabbitMQ blocks them
    /// cluster-wide. Set by the cluster layer.
    pub remote_alarms: std::sync::atomic::AtomicU8,
}

/// [`Broker::remote_alarms`]: another node is low on memory.
pub const REMOTE_MEMORY: u8 = 1;
/// [`Broker::remote_alarms`]: another node is low on disk.
pub const REMOTE_DISK: u8 = 2;

impl Broker {
    /// Builds the broker state, restoring vhosts, users, permissions, durable
    /// definitions and messages from `snapshot`. A store without vhosts and users
    /// (a first start) gets the vhost `/` and the configuration's users, recorded.
    pub fn new(config: Config, store: Option<StoreHandle>, snapshot: Option<Snapshot>) -> Arc<Self> {
        let limit = match config.memory_limit {
            0 => crate::memory::limit_from_fraction(config.memory_high_watermark),
            bytes => bytes,
        };
        let broker = Arc::new(Self {
            users: UserTable::new(&config),
            memory: MemoryAlarm::new(limit),
            disk: crate::disk::DiskAlarm::new(&config.data_dir, config.disk_free_limit).with_store(store.clone()),
            config,
            store,
            vhosts: RwLock::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
            connections: Mutex::new(HashMap::new()),
            user_channels: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            admin_lock: Mutex::new(()),
            global_parameters: Mutex::default(),
            retired: Arc::default(),
            cluster: std::sync::OnceLock::new(),
            remote_alarms: std::sync::atomic::AtomicU8::new(0),
        });
        match snapshot {
            None => {
                broker.insert_vhost(broker.new_vhost(DEFAULT_VHOST));
                for u in &broker.config.users {
                    broker.users.seed(&u.name, &u.password, DEFAULT_VHOST);
                }
            }
            Some(snap) => broker.restore(snap),
        }
        broker
    }

    /// The cluster this node is part of; None on a single node.
    pub fn cluster(&self) -> Option<&Arc<dyn crate::membership::ClusterView>> {
        self.cluster.get()
    }

    /// Joins the broker to its cluster (once, at start).
    pub fn set_cluster(&self, cluster: Arc<dyn crate::membership::ClusterView>) {
        if self.cluster.set(cluster).is_err() {
            log::error!("the cluster was set twice; the first stays");
        }
    }

    /// This node's RabbitMQ-style name: `haremq@HOST` alone, `haremq-N@HOST` as node N
    /// of a cluster (several nodes may share a host).
    pub fn node_name(&self) -> String {
        node_name(self.config.cluster.as_ref().map(|c| c.node_id))
    }

    fn persist(&self, op: StoreOp) {
        if let Some(store) = &self.store {
            store.send(op);
        }
    }

    /// The global runtime parameters, locked.
    pub fn global_parameters(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, serde_json::Value>> {
        self.global_parameters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `cluster_name` global parameter, when it is a string.
    pub fn cluster_name(&self) -> Option<String> {
        self.global_parameters().get("cluster_name").and_then(|v| v.as_str()).map(str::to_string)
    }

    /// Restores (or, on a first start, seeds) the security tables, then each vhost.
    fn restore(&self, mut snap: Snapshot) {
        {
            let mut params = self.global_parameters();
            for (name, value) in std::mem::take(&mut snap.global_parameters) {
                match serde_json::from_str(&value) {
                    Ok(v) => drop(params.insert(name, v)),
                    Err(e) => log::error!("global parameter '{name}' in the store is not JSON ({e}); ignored"),
                }
            }
        }
        let first_start = snap.vhosts.is_empty() && snap.users.is_empty();
        if first_start {
            // The first start of this store (or of a store from before vhosts and
            // users were stored): the default vhost, and the configured users with
            // full permissions on it.
            let root = self.new_vhost(DEFAULT_VHOST);
            self.persist(StoreOp::PutVHost(root.record()));
            self.insert_vhost(root);
            for u in &self.config.users {
                let user = self.users.seed(&u.name, &u.password, DEFAULT_VHOST);
                self.persist(StoreOp::PutUser(user.record()));
                self.persist(StoreOp::PutPermission(PermissionRecord {
                    user: u.name.clone(),
                    vhost: DEFAULT_VHOST.into(),
                    configure: ".*".into(),
                    write: ".*".into(),
                    read: ".*".into(),
                }));
            }
            log::info!(
                "first start: created vhost '{DEFAULT_VHOST}' and {} user(s) from the configuration",
                self.config.users.len()
            );
        } else {
            for r in &snap.vhosts {
                let v = self.new_vhost(&r.name);
                v.set_meta(VHostMeta { description: r.description.clone(), tags: r.tags.clone() });
                v.set_limits(VHostLimits { max_connections: r.max_connections, max_queues: r.max_queues });
                let policies: Vec<_> =
                    snap.policies.iter().filter(|p| p.vhost == r.name).filter_map(crate::policy::from_record).collect();
                if !policies.is_empty() {
                    // Applied as the vhost's queues and exchanges are restored.
                    v.change_policies(|set| policies.into_iter().for_each(|p| drop(set.insert(Arc::new(p)))));
                }
                self.insert_vhost(v);
            }
            self.users.users.change(|t| {
                for r in &snap.users {
                    if let Some(u) = User::from_record(r) {
                        t.insert(u.name.clone(), Arc::new(u));
                    }
                }
            });
            self.users.grants.change(|t| {
                for p in &snap.permissions {
                    match Permission::new(&p.configure, &p.write, &p.read) {
                        Ok(perm) => {
                            t.permissions.insert((p.user.clone(), p.vhost.clone()), Arc::new(perm));
                        }
                        Err(e) => log::error!("permissions of '{}' in vhost '{}' skipped: {e}", p.user, p.vhost),
                    }
                }
                for p in &snap.topic_permissions {
                    let tp =
                        TopicPermission { exchange: p.exchange.clone(), write: p.write.clone(), read: p.read.clone() };
                    match tp.validate() {
                        Ok(()) => t.topic.entry((p.user.clone(), p.vhost.clone())).or_default().push(tp),
                        Err(e) => log::error!("topic permission of '{}' in vhost '{}' skipped: {e}", p.user, p.vhost),
                    }
                }
            });
            for u in &self.config.users {
                if self.users.users.get(&u.name).is_none() {
                    log::warn!(
                        "configured user '{}' is not in the user table: [[users]] seed the table on the first start only",
                        u.name
                    );
                }
            }
        }
        // Rows of vhosts that no longer exist (a deletion that raced with a connection
        // still declaring): swept now.
        let known: BTreeSet<String> = self.vhost_names().into_iter().collect();
        let mut orphans = BTreeSet::new();
        orphans.extend(snap.exchanges.iter().map(|e| &e.vhost).filter(|v| !known.contains(*v)).cloned());
        orphans.extend(snap.queues.iter().map(|q| &q.vhost).filter(|v| !known.contains(*v)).cloned());
        orphans.extend(snap.bindings.iter().map(|b| &b.vhost).filter(|v| !known.contains(*v)).cloned());
        orphans.extend(snap.policies.iter().map(|p| &p.vhost).filter(|v| !known.contains(*v)).cloned());
        orphans.extend(snap.delayed.iter().map(|(_, d)| &d.vhost).filter(|v| !known.contains(*v)).cloned());
        for name in orphans {
            log::warn!("store: records of vhost '{name}', which does not exist, deleted");
            self.persist(StoreOp::DeleteVHost { name });
        }
        // One shared message per record, however many entries reference it.
        let messages =
            snap.messages.drain().map(|(id, record)| (id, Arc::new(Message::from_record(record, id, 0)))).collect();
        for v in self.vhosts.read().unwrap_or_else(|e| e.into_inner()).values() {
            v.restore(&snap, &messages);
            v.reapply_policies();
        }
    }

    /// A new, empty vhost (not registered yet).
    pub fn new_vhost(&self, name: &str) -> Arc<VHost> {
        let v = VHost::new(name, self.store.clone());
        v.consumer_timeout_ms.store(self.config.consumer_timeout_ms, Ordering::Relaxed);
        v
    }

    /// Registers `vhost`; false if one of that name exists.
    pub fn insert_vhost(&self, vhost: Arc<VHost>) -> bool {
        let mut map = self.vhosts.write().unwrap_or_else(|e| e.into_inner());
        if map.contains_key(&*vhost.name) {
            return false;
        }
        map.insert(vhost.name.to_string(), vhost);
        true
    }

    /// Unregisters the vhost `name` (new connections to it are refused from now on).
    pub fn take_vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.write().unwrap_or_else(|e| e.into_inner()).remove(name)
    }

    pub fn vhost(&self, name: &str) -> Option<Arc<VHost>> {
        self.vhosts.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// The vhosts' names, sorted.
    pub fn vhost_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.vhosts.read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        names.sort();
        names
    }

    /// Registers a new connection, to be closed on shutdown.
    pub fn register_connection(&self, connection: Arc<dyn ClientConnection>) -> ConnectionId {
        let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Registered { handle: connection, opened: None });
        id
    }

    /// connection.open by `user` into `vhost`, checked as RabbitMQ does, in its order:
    /// the vhost's connection limit, the user's connection limit, then the user's
    /// permission to use the vhost (530 NOT_ALLOWED each, RabbitMQ's texts). On
    /// success the connection counts towards both limits until it is unregistered;
    /// returns the user's open-channel counter.
    pub fn open_connection(&self, id: ConnectionId, user: &str, vhost: &VHost) -> AmqpResult<Arc<AtomicU64>> {
        let mut conns = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        // Deleted meanwhile (marked before its connections are closed under this lock).
        if vhost.is_deleted() {
            return Err(AmqpError::NotAllowed(format!("vhost {} not found", vhost.name)));
        }
        if let Some(max) = vhost.limits().max_connections {
            let n = conns.values().filter(|r| r.opened.as_ref().is_some_and(|(v, _)| *v == vhost.name)).count();
            if n as u64 >= max {
                return Err(AmqpError::NotAllowed(format!(
                    "access to vhost '{}' refused for user '{user}': connection limit ({max}) is reached",
                    vhost.name
                )));
            }
        }
        if let Some(max) = self.users.users.get(user).and_then(|u| u.limits.max_connections) {
            let n = conns.values().filter(|r| r.opened.as_ref().is_some_and(|(_, u)| u == user)).count();
            if n as u64 >= max {
                return Err(AmqpError::NotAllowed(format!(
                    "connection refused for user '{user}': user connection limit ({max}) is reached"
                )));
            }
        }
        if self.users.grants.permission(user, &vhost.name).is_none() {
            return Err(AmqpError::NotAllowed(format!("access to vhost '{}' refused for user '{user}'", vhost.name)));
        }
        if let Some(r) = conns.get_mut(&id) {
            r.opened = Some((vhost.name.clone(), user.to_string()));
        }
        drop(conns);
        let counter =
            self.user_channels.lock().unwrap_or_else(|e| e.into_inner()).entry(user.to_string()).or_default().clone();
        Ok(counter)
    }

    /// channel.open by `user`, whose open channels are counted in `counter`: 530 if
    /// that reaches its `max-channels` (RabbitMQ's text). The connection takes the
    /// channel off the count when it closes.
    pub fn open_channel(&self, user: &str, counter: &AtomicU64) -> AmqpResult<()> {
        let max = self.users.users.get(user).and_then(|u| u.limits.max_channels).unwrap_or(u64::MAX);
        // Checked and counted in one step, so concurrent opens cannot overshoot.
        counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).map(|_| ()).map_err(
            |_| {
                AmqpError::NotAllowed(format!(
                    "number of channels opened for user '{user}' has reached the maximum allowed user limit of ({max})"
                ))
            },
        )
    }

    pub fn unregister_connection(&self, id: ConnectionId) {
        self.connections.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    pub fn connection_count(&self) -> usize {
        self.connections.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Closes (320 CONNECTION_FORCED, `reason`) every open connection in `vhost`, or
    /// of `user`; returns how many.
    pub fn close_connections(&self, vhost: Option<&str>, user: Option<&str>, reason: &str) -> usize {
        let chosen: Vec<Arc<dyn ClientConnection>> = self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|r| {
                r.opened
                    .as_ref()
                    .is_some_and(|(v, u)| vhost.is_none_or(|want| **v == *want) && user.is_none_or(|want| u == want))
            })
            .map(|r| r.handle.clone())
            .collect();
        for c in &chosen {
            c.force_close(reason);
        }
        chosen.len()
    }

    /// Every connection now, in the order they were accepted.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        let handles: Vec<Arc<dyn ClientConnection>> = {
            let conns = self.connections.lock().unwrap_or_else(|e| e.into_inner());
            let mut ids: Vec<(&ConnectionId, &Registered)> = conns.iter().collect();
            ids.sort_by_key(|(id, _)| **id);
            ids.into_iter().map(|(_, r)| r.handle.clone()).collect()
        };
        // Described without the registry's lock: each takes its channels' locks.
        handles.iter().map(|h| h.info()).collect()
    }

    /// Broker-wide message counts since start: every channel's, open or closed.
    pub fn message_totals(&self) -> crate::stats::MessageStats {
        self.retired.total(|| self.connections().iter().flat_map(|c| c.channels.iter().map(|ch| ch.messages)).collect())
    }

    /// Closes connection `id` (320, `reason`); false if there is none.
    pub fn close_connection(&self, id: ConnectionId, reason: &str) -> bool {
        let handle = self.connections.lock().unwrap_or_else(|e| e.into_inner()).get(&id).map(|r| r.handle.clone());
        handle.map(|h| h.force_close(reason)).is_some()
    }

    /// Open connections per (vhost, user), for listings.
    pub fn connections_in(&self, vhost: &str) -> usize {
        let conns = self.connections.lock().unwrap_or_else(|e| e.into_inner());
        conns.values().filter(|r| r.opened.as_ref().is_some_and(|(v, _)| **v == *vhost)).count()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Starts shutdown: every connection is sent connection.close 320 and closed.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        let conns: Vec<Arc<dyn ClientConnection>> =
            self.connections.lock().unwrap_or_else(|e| e.into_inner()).values().map(|r| r.handle.clone()).collect();
        for c in conns {
            c.force_close("broker shutdown");
        }
    }
}

/// The node name of node `id` of a cluster on this host (`None`: a single node).
pub fn node_name(id: Option<u64>) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // or truncates, and the last byte stays 0.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    let host = if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(0);
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".to_string()
    };
    match id {
        None => format!("haremq@{host}"),
        Some(id) => format!("haremq-{id}@{host}"),
    }
}
