//! The administration API of the core: virtual hosts, users, permissions, topic
//! permissions, limits and policies, changed at run time. Tests reach it through
//! [`crate::BrokerHandle::admin`]; the management HTTP API and the CLI are to call the
//! same functions.
//!
//! Every change is applied in memory and recorded in the store, and the call returns
//! once the store has committed it (as RabbitMQ returns after its database
//! transaction): a change that returned `Ok` survives a crash. Changes are serialised
//! (one at a time), so the store records them in the order they were applied.
//!
//! What follows from a change, as in RabbitMQ: deleting a vhost closes its
//! connections (320 CONNECTION_FORCED "vhost 'v' is deleted") and deletes everything
//! in it; deleting a user closes its connections ("user 'u' is deleted") and drops its
//! permissions; permission changes apply to open connections at their next check.

mod global_parameters;
mod policies;
pub(crate) mod replicated;
pub(crate) mod topology;

use std::sync::Arc;
use std::time::Duration;

use crate::auth::password::{HashingAlgorithm, PasswordHash};
use crate::auth::permissions::{Permission, TopicPermission};
use crate::auth::users::User;
use crate::broker::Broker;
use crate::store::{PermissionRecord, StoreOp, TopicPermissionRecord};
use crate::vhost::VHostMeta;

pub use crate::auth::users::{UserInfo, UserLimits};
pub use crate::vhost::VHostLimits;

/// Why an administrative change was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    #[error("Virtual host '{0}' already exists")]
    VHostExists(String),
    #[error("Virtual host '{0}' does not exist")]
    NoSuchVHost(String),
    #[error("User '{0}' already exists")]
    UserExists(String),
    #[error("User '{0}' does not exist")]
    NoSuchUser(String),
    #[error("Policy '{0}' does not exist")]
    NoSuchPolicy(String),
    #[error("Parameter '{0}' does not exist")]
    NoSuchParameter(String),
    /// A malformed argument: an empty or too long name, an invalid regular
    /// expression, an unreadable password hash.
    #[error("{0}")]
    Invalid(String),
    /// Applied in memory, but the store's commit failed (it is retried; see the log).
    #[error("the change was applied but the store could not record it yet: {0}")]
    NotDurable(String),
    /// On a node of a cluster: the cluster did not commit the change (no majority).
    #[error("the cluster did not commit the change: {0}")]
    NotReplicated(String),
}

/// A vhost as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VHostInfo {
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub limits: VHostLimits,
    /// Open connections in it now.
    pub connections: usize,
}

/// A user's permissions in a vhost, as set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PermissionInfo {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

/// A user's topic permission on an exchange of a vhost, as set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicPermissionInfo {
    pub user: String,
    pub vhost: String,
    pub exchange: String,
    pub write: String,
    pub read: String,
}

/// How long a change waits for the store's commit before reporting it not durable.
const COMMIT_WAIT: Duration = Duration::from_secs(30);

/// The administration API of a running broker.
#[derive(Clone)]
pub struct Admin {
    broker: Arc<Broker>,
    /// Applying a change from the cluster's log: change this node only.
    here: bool,
}

/// A password hash in RabbitMQ's form ("" for none), checked.
pub(crate) fn parse_hash(
    user: &str,
    password_hash: &str,
    hashing_algorithm: &str,
) -> Result<Option<PasswordHash>, AdminError> {
    let algorithm = HashingAlgorithm::from_name(hashing_algorithm)
        .ok_or_else(|| AdminError::Invalid(format!("unknown hashing algorithm '{hashing_algorithm}'")))?;
    match password_hash {
        "" => Ok(None),
        h => PasswordHash::from_base64(h, algorithm)
            .map(Some)
            .ok_or_else(|| AdminError::Invalid(format!("password hash of user '{user}' is not valid"))),
    }
}

/// A password hash as a replicated change carries it: RabbitMQ's base64 form and
/// algorithm name ("" for no password).
fn hash_parts(hash: Option<&PasswordHash>) -> (String, String) {
    match hash {
        Some(h) => (h.to_base64(), h.algorithm.name().to_string()),
        None => (String::new(), HashingAlgorithm::Sha256.name().to_string()),
    }
}

fn owned(strs: &[&str]) -> Vec<String> {
    strs.iter().map(|s| s.to_string()).collect()
}

fn check_name(what: &str, name: &str) -> Result<(), AdminError> {
    if name.is_empty() || name.len() > 255 {
        return Err(AdminError::Invalid(format!("a {what} name must be 1 to 255 bytes long")));
    }
    Ok(())
}

impl Admin {
    pub(crate) fn new(broker: Arc<Broker>) -> Self {
        Self { broker, here: false }
    }

    /// The administration of this node alone, for changes the cluster's log applies.
    pub(crate) fn here(broker: Arc<Broker>) -> Self {
        Self { broker, here: true }
    }

    fn persist(&self, op: StoreOp) {
        if let Some(store) = &self.broker.store {
            store.send(op);
        }
    }

    /// Waits until the store has committed everything sent so far.
    fn committed(&self) -> Result<(), AdminError> {
        let Some(store) = &self.broker.store else {
            return Ok(());
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        store.after_commit(Box::new(move |ok| {
            let _ = tx.send(ok);
        }));
        match rx.recv_timeout(COMMIT_WAIT) {
            Ok(true) => Ok(()),
            Ok(false) => Err(AdminError::NotDurable("the commit failed".into())),
            Err(_) => Err(AdminError::NotDurable(format!("no commit within {COMMIT_WAIT:?}"))),
        }
    }

    fn serialised(&self) -> std::sync::MutexGuard<'_, ()> {
        self.broker.admin_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    // ---- virtual hosts ----

    /// Creates a vhost with the predeclared exchanges.
    pub fn add_vhost(&self, name: &str) -> Result<(), AdminError> {
        self.add_vhost_with(name, "", &[])
    }

    /// Creates a vhost with a description and tags (RabbitMQ's vhost metadata).
    pub fn add_vhost_with(&self, name: &str, description: &str, tags: &[&str]) -> Result<(), AdminError> {
        if let Some(cluster) = self.cluster() {
            return self.replicate(
                &cluster,
                crate::membership::DefinitionChange::AddVHost {
                    name: name.into(),
                    description: description.into(),
                    tags: owned(tags),
                },
            );
        }
        check_name("vhost", name)?;
        let _one = self.serialised();
        if self.broker.vhost(name).is_some() {
            return Err(AdminError::VHostExists(name.into()));
        }
        let v = self.broker.new_vhost(name);
        v.set_meta(VHostMeta { description: description.into(), tags: tags.iter().map(|t| t.to_string()).collect() });
        self.persist(StoreOp::PutVHost(v.record()));
        self.broker.insert_vhost(v);
        log::info!("vhost '{name}' created");
        self.committed()
    }

    /// Deletes a vhost: its connections are closed (320 CONNECTION_FORCED), and its
    /// queues (with their messages), exchanges, bindings and permissions are deleted.
    pub fn delete_vhost(&self, name: &str) -> Result<(), AdminError> {
        if let Some(cluster) = self.cluster() {
            return self.replicate(&cluster, crate::membership::DefinitionChange::DeleteVHost { name: name.into() });
        }
        let _one = self.serialised();
        let Some(v) = self.broker.take_vhost(name) else {
            return Err(AdminError::NoSuchVHost(name.into()));
        };
        v.mark_deleted();
        let closed = self.broker.close_connections(Some(name), None, &format!("vhost '{name}' is deleted"));
        let queues = v.delete_contents();
        self.broker.users.grants.change(|t| t.remove_vhost(name));
        log::info!("vhost '{name}' deleted: {queues} queue(s), {closed} connection(s) closed");
        self.committed()
    }

    pub fn vhosts(&self) -> Vec<VHostInfo> {
        self.broker
            .vhost_names()
            .into_iter()
            .filter_map(|n| self.broker.vhost(&n))
            .map(|v| {
                let meta = v.meta();
                VHostInfo {
                    name: v.name.to_string(),
                    description: meta.description,
                    tags: meta.tags,
                    limits: v.limits(),
                    connections: self.broker.connections_in(&v.name),
                }
            })
            .collect()
    }

    /// Changes a vhost's description and tags (`None` keeps one), as a management
    /// API PUT on an existing vhost does.
    pub fn set_vhost_metadata(
        &self,
        name: &str,
        description: Option<&str>,
        tags: Option<&[&str]>,
    ) -> Result<(), AdminError> {
        if let Some(cluster) = self.cluster() {
            return self.replicate(
                &cluster,
                crate::membership::DefinitionChange::SetVHostMetadata {
                    name: name.into(),
                    description: description.map(Into::into),
                    tags: tags.map(owned),
                },
            );
        }
        let _one = self.serialised();
        let v = self.broker.vhost(name).ok_or_else(|| AdminError::NoSuchVHost(name.into()))?;
        let mut meta = v.meta();
        if let Some(d) = description {
            meta.description = d.into();
        }
        if let Some(t) = tags {
            meta.tags = t.iter().map(|t| t.to_string()).collect();
        }
        v.set_meta(meta);
        self.persist(StoreOp::PutVHost(v.record()));
        self.committed()
    }

    /// Sets a vhost's limits (`None` clears one). Existing connections and queues
    /// stay; the limits apply to new ones.
    pub fn set_vhost_limits(&self, name: &str, limits: VHostLimits) -> Result<(), AdminError> {
        if let Some(cluster) = self.cluster() {
            return self.replicate(
                &cluster,
                crate::membership::DefinitionChange::SetVHostLimits {
                    name: name.into(),
                    max_connections: limits.max_connections,
                    max_queues: limits.max_queues,
                },
            );
        }
        let _one = self.serialised();
        let v = self.broker.vhost(name).ok_or_else(|| AdminError::NoSuchVHost(name.into()))?;
        v.set_limits(limits);
        self.persist(StoreOp::PutVHost(v.record()));
        self.committed()
    }

    // ---- users ----

    /// Creates a user with a password (hashed with SHA-256, RabbitMQ's default) or
    /// none (it can then log in only by a mechanism that needs no password).
    pub fn add_user(&self, name: &str, password: Option<&str>, tags: &[&str]) -> Result<(), AdminError> {
        let hash = password.map(|p| PasswordHash::new(p, HashingAlgorithm::Sha256));
        self.insert_user(name, hash, tags)
    }

    /// Creates a user from a password hash in RabbitMQ's form (base64 of salt and
    /// digest, as in definitions files) and its algorithm's RabbitMQ name
    /// (`rabbit_password_hashing_sha256`, `_sha512` or `_md5`).
    pub fn add_user_with_hash(
        &self,
        name: &str,
        password_hash: &str,
        hashing_algorithm: &str,
        tags: &[&str],
    ) -> Result<(), AdminError> {
        let hash = parse_hash(name, password_hash, hashing_algorithm)?;
        self.insert_user(name, hash, tags)
    }

    fn insert_user(&self, name: &str, password: Option<PasswordHash>, tags: &[&str]) -> Result<(), AdminError> {
        check_name("user", name)?;
        if let Some(cluster) = self.cluster() {
            let (password_hash, hashing_algorithm) = hash_parts(password.as_ref());
            let change = crate::membership::DefinitionChange::AddUser {
                name: name.into(),
                password_hash,
                hashing_algorithm,
                tags: owned(tags),
            };
            return self.replicate(&cluster, change);
        }
        let _one = self.serialised();
        let user = User {
            name: name.into(),
            password,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            limits: UserLimits::default(),
        };
        self.broker.users.users.change(|t| {
            if t.contains_key(name) {
                return Err(AdminError::UserExists(name.into()));
            }
            self.persist(StoreOp::PutUser(user.record()));
            t.insert(name.into(), Arc::new(user));
            Ok(())
        })?;
        self.committed()
    }

    /// Changes a user with `f` (and records it).
    fn update_user(&self, name: &str, f: impl FnOnce(&mut User)) -> Result<(), AdminError> {
        let _one = self.serialised();
        self.broker.users.users.change(|t| {
            let cur = t.get(name).ok_or_else(|| AdminError::NoSuchUser(name.into()))?;
            let mut user = User::clone(cur);
            f(&mut user);
            self.persist(StoreOp::PutUser(user.record()));
            t.insert(name.into(), Arc::new(user));
            Ok::<(), AdminError>(())
        })?;
        // Rights resolved per connection include tags: re-resolve.
        self.broker.users.grants.change(|_| ());
        self.committed()
    }

    /// Sets a new password, or removes it (`None`).
    pub fn change_password(&self, name: &str, password: Option<&str>) -> Result<(), AdminError> {
        let hash = password.map(|p| PasswordHash::new(p, HashingAlgorithm::Sha256));
        if let Some(cluster) = self.cluster() {
            let (password_hash, hashing_algorithm) = hash_parts(hash.as_ref());
            let change = crate::membership::DefinitionChange::SetPasswordHash {
                name: name.into(),
                password_hash,
                hashing_algorithm,
            };
            return self.replicate(&cluster, change);
        }
        self.update_user(name, |u| u.password = hash)
    }

    /// Replaces a user's password hash with one in RabbitMQ's form (as a definitions
    /// import does for a user that exists); "" removes the password.
    pub fn set_password_hash(
        &self,
        name: &str,
        password_hash: &str,
        hashing_algorithm: &str,
    ) -> Result<(), AdminError> {
        let hash = parse_hash(name, password_hash, hashing_algorithm)?;
        if let Some(cluster) = self.cluster() {
            let change = crate::membership::DefinitionChange::SetPasswordHash {
                name: name.into(),
                password_hash: password_hash.into(),
                hashing_algorithm: hashing_algorithm.into(),
            };
            return self.replicate(&cluster, change);
        }
        self.update_user(name, |u| u.password = hash)
    }

    /// Replaces a user's tags (any strings; RabbitMQ's are `administrator`,
    /// `monitoring`, `policymaker`, `management` and `impersonator`).
    pub fn set_user_tags(&self, name: &str, tags: &[&str]) -> Result<(), AdminError> {
        if let Some(cluster) = self.cluster() {
            return self.replicate(
                &cluster,
                crate::membership::DefinitionChange::SetUserTags { name: name.into(), tags: owned(tags) },
            );
        }
        self.update_user(name, |u| u.tags = tags.iter().map(|t| t.to_string()).collect())
    }

    /// Sets a user's limits (`None` clears one); they apply to new connections and
    /// channels.
    pub fn set_user_limits(&self, name: &str, limits: UserLimits) -> Result<(), AdminError> {
        if let Some(cluster) = self.cluster() {
            return self.replicate(
                &cluster,
                crate::membership::DefinitionChange::SetUserLimits {
                    name: name.into(),
                    max_connections: limits.max_connections,
                    max_channels: limits.max_channels,
                },
            );
        }
        self.update_user(name, |u| u.limits = limits)
    }

    /// Deletes a user with its permissions; its connections are closed (320).
    pub fn delete_user(&self, name: &str) -> Result<(), AdminError> {
        if let Some(cluster) = self.cluster() {
            return self.replicate(&cluster, crate::membership::DefinitionChange::DeleteUser { name: name.into() });
        }
        let _one = self.serialised();
        self.broker.users.users.change(|t| {
            t.remove(name).ok_or_else(|| AdminError::NoSuchUser(name.into()))?;
            self.persist(StoreOp::DeleteUser { name: name.into() });
            Ok::<(), AdminError>(())
        })?;
        self.broker.users.grants.change(|t| t.remove_user(name));
        let closed = self.broker.close_connections(None, Some(name), &format!("user '{name}' is deleted"));
        log::info!("user '{name}' deleted: {closed} connection(s) closed");
        self.committed()
    }

    pub fn users(&self) -> Vec<UserInfo> {
        self.broker.users.users.list().iter().map(|u| u.info()).collect()
    }

    pub fn user(&self, name: &str) -> Option<UserInfo> {
        self.broker.users.user(name)
    }

    /// The user if `password` is its password (for HTTP basic authentication).
    pub fn check_password(&self, name: &str, password: &str) -> Option<UserInfo> {
        self.broker.users.users.verify(name, password).map(|u| u.info())
    }

    // ---- permissions ----

    fn require(&self, user: &str, vhost: &str) -> Result<(), AdminError> {
        if self.broker.users.users.get(user).is_none() {
            return Err(AdminError::NoSuchUser(user.into()));
        }
        if self.broker.vhost(vhost).is_none() {
            return Err(AdminError::NoSuchVHost(vhost.into()));
        }
        Ok(())
    }

    /// Sets `user`'s permissions in `vhost`: RabbitMQ's configure, write and read
    /// regular expressions (matched unanchored; "" allows nothing).
    pub fn set_permissions(
        &self,
        user: &str,
        vhost: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Result<(), AdminError> {
        let perm = Permission::new(configure, write, read).map_err(AdminError::Invalid)?;
        if let Some(cluster) = self.cluster() {
            return self.replicate(
                &cluster,
                crate::membership::DefinitionChange::SetPermissions {
                    user: user.into(),
                    vhost: vhost.into(),
                    configure: configure.into(),
                    write: write.into(),
                    read: read.into(),
                },
            );
        }
        let _one = self.serialised();
        self.require(user, vhost)?;
        self.broker.users.grants.change(|t| {
            self.persist(StoreOp::PutPermission(PermissionRecord {
                user: user.into(),
                vhost: vhost.into(),
                configure: configure.into(),
                write: write.into(),
                read: read.into(),
            }));
            t.permissions.insert((user.into(), vhost.into()), Arc::new(perm));
        });
        self.committed()
    }

    /// Removes `user`'s permissions in `vhost` (its open connections there can do
    /// nothing more; new ones are refused).
    pub fn clear_permissions(&self, user: &str, vhost: &str) -> Result<(), AdminError> {
        if let Some(cluster) = self.cluster() {
            return self.replicate(
                &cluster,
                crate::membership::DefinitionChange::ClearPermissions { user: user.into(), vhost: vhost.into() },
            );
        }
        let _one = self.serialised();
        self.broker.users.grants.change(|t| {
            self.persist(StoreOp::DeletePermission { user: user.into(), vhost: vhost.into() });
            t.permissions.remove(&(user.into(), vhost.into()));
        });
        self.committed()
    }

    pub fn permissions(&self) -> Vec<PermissionInfo> {
        let mut all: Vec<PermissionInfo> = self.broker.users.grants.read(|t| {
            t.permissions
                .iter()
                .map(|((user, vhost), p)| PermissionInfo {
                    user: user.clone(),
                    vhost: vhost.clone(),
                    configure: p.configure.text.clone(),
                    write: p.write.text.clone(),
                    read: p.read.text.clone(),
                })
                .collect()
        });
        all.sort_by(|a, b| (&a.user, &a.vhost).cmp(&(&b.user, &b.vhost)));
        all
    }

    /// Sets `user`'s topic permission on `exchange` in `vhost`: write and read regular
    /// expressions matched against routing keys (publish) and binding keys (bind) on
    /// that topic exchange; `{username}`, `{vhost}` and `{client_id}` are expanded.
    pub fn set_topic_permissions(
        &self,
        user: &str,
        vhost: &str,
        exchange: &str,
        write: &str,
        read: &str,
    ) -> Result<(), AdminError> {
        let tp = TopicPermission { exchange: exchange.into(), write: write.into(), read: read.into() };
        tp.validate().map_err(AdminError::Invalid)?;
        if let Some(cluster) = self.cluster() {
            return self.replicate(
                &cluster,
                crate::membership::DefinitionChange::SetTopicPermissions {
                    user: user.into(),
                    vhost: vhost.into(),
                    exchange: exchange.into(),
                    write: write.into(),
                    read: read.into(),
                },
            );
        }
        let _one = self.serialised();
        self.require(user, vhost)?;
        self.broker.users.grants.change(|t| {
            self.persist(StoreOp::PutTopicPermission(TopicPermissionRecord {
                user: user.into(),
                vhost: vhost.into(),
                exchange: exchange.into(),
                write: write.into(),
                read: read.into(),
            }));
            let list = t.topic.entry((user.into(), vhost.into())).or_default();
            list.retain(|p| p.exchange != exchange);
            list.push(tp);
        });
        self.committed()
    }

    /// Removes `user`'s topic permission on `exchange` in `vhost`, or all of them there
    /// (`None`).
    pub fn clear_topic_permissions(&self, user: &str, vhost: &str, exchange: Option<&str>) -> Result<(), AdminError> {
        if let Some(cluster) = self.cluster() {
            return self.replicate(
                &cluster,
                crate::membership::DefinitionChange::ClearTopicPermissions {
                    user: user.into(),
                    vhost: vhost.into(),
                    exchange: exchange.map(Into::into),
                },
            );
        }
        let _one = self.serialised();
        self.broker.users.grants.change(|t| {
            let key = (user.to_string(), vhost.to_string());
            let Some(list) = t.topic.get_mut(&key) else { return };
            list.retain(|p| {
                let gone = exchange.is_none_or(|x| p.exchange == x);
                if gone {
                    self.persist(StoreOp::DeleteTopicPermission {
                        user: user.into(),
                        vhost: vhost.into(),
                        exchange: p.exchange.clone(),
                    });
                }
                !gone
            });
            if list.is_empty() {
                t.topic.remove(&key);
            }
        });
        self.committed()
    }

    pub fn topic_permissions(&self) -> Vec<TopicPermissionInfo> {
        let mut all: Vec<TopicPermissionInfo> = self.broker.users.grants.read(|t| {
            t.topic
                .iter()
                .flat_map(|((user, vhost), list)| {
                    list.iter().map(move |p| TopicPermissionInfo {
                        user: user.clone(),
                        vhost: vhost.clone(),
                        exchange: p.exchange.clone(),
                        write: p.write.clone(),
                        read: p.read.clone(),
                    })
                })
                .collect()
        });
        all.sort_by(|a, b| (&a.user, &a.vhost, &a.exchange).cmp(&(&b.user, &b.vhost, &b.exchange)));
        all
    }
}
