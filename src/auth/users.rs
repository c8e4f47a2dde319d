//! The user table: names, password hashes, tags and per-user limits.
//!
//! A user without a password hash cannot log in with a password (PLAIN, AMQPLAIN):
//! such users exist for mechanisms that authenticate otherwise (EXTERNAL, with a
//! client certificate). Tags are kept as given; RabbitMQ's management tags
//! (`administrator`, `monitoring`, `policymaker`, `management`, `impersonator`) mean
//! something to the HTTP API, and `impersonator` lets a publisher set any `user_id`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use super::password::{HashingAlgorithm, PasswordHash};
use crate::store::UserRecord;

/// Per-user limits (RabbitMQ's user limits); `None` means no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserLimits {
    /// Connections the user may have open at once, over all vhosts.
    pub max_connections: Option<u64>,
    /// Channels the user may have open at once, over all connections.
    pub max_channels: Option<u64>,
}

/// A user as the broker holds it.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub password: Option<PasswordHash>,
    pub tags: Vec<String>,
    pub limits: UserLimits,
}

/// What the rest of the broker (and the admin API) may see of a user: everything but
/// the ability to change it. The hash is RabbitMQ's base64 form, for definitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub tags: Vec<String>,
    /// `None` for a passwordless user.
    pub password_hash: Option<String>,
    /// RabbitMQ's name of the hashing algorithm (`rabbit_password_hashing_sha256`).
    pub hashing_algorithm: &'static str,
    pub limits: UserLimits,
}

impl User {
    pub fn info(&self) -> UserInfo {
        UserInfo {
            name: self.name.clone(),
            tags: self.tags.clone(),
            password_hash: self.password.as_ref().map(PasswordHash::to_base64),
            hashing_algorithm: self.password.as_ref().map_or(HashingAlgorithm::default(), |p| p.algorithm).name(),
            limits: self.limits,
        }
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    pub fn record(&self) -> UserRecord {
        let info = self.info();
        UserRecord {
            name: info.name,
            password_hash: info.password_hash.unwrap_or_default(),
            hashing_algorithm: info.hashing_algorithm.to_string(),
            tags: info.tags,
            max_connections: self.limits.max_connections,
            max_channels: self.limits.max_channels,
        }
    }

    /// A stored user; `None` (logged) if its hash or algorithm is unreadable.
    pub fn from_record(r: &UserRecord) -> Option<Self> {
        let password = if r.password_hash.is_empty() {
            None
        } else {
            let algorithm = match r.hashing_algorithm.as_str() {
                "" => HashingAlgorithm::default(),
                name => match HashingAlgorithm::from_name(name) {
                    Some(a) => a,
                    None => {
                        log::error!("user '{}': unknown password hashing algorithm '{name}'; skipped", r.name);
                        return None;
                    }
                },
            };
            match PasswordHash::from_base64(&r.password_hash, algorithm) {
                Some(h) => Some(h),
                None => {
                    log::error!("user '{}': unreadable password hash; skipped", r.name);
                    return None;
                }
            }
        };
        Some(Self {
            name: r.name.clone(),
            password,
            tags: r.tags.clone(),
            limits: UserLimits { max_connections: r.max_connections, max_channels: r.max_channels },
        })
    }
}

/// The users by name.
#[derive(Default)]
pub struct Users {
    by_name: RwLock<HashMap<String, Arc<User>>>,
}

impl Users {
    pub fn get(&self, name: &str) -> Option<Arc<User>> {
        self.by_name.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<User>> {
        let mut all: Vec<_> = self.by_name.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Runs `f` on the table under its write lock (changes and the store ops that
    /// record them are made together, so the store sees them in the same order).
    pub fn change<T>(&self, f: impl FnOnce(&mut HashMap<String, Arc<User>>) -> T) -> T {
        f(&mut self.by_name.write().unwrap_or_else(|e| e.into_inner()))
    }

    /// Checks a password: the user if it has a password hash and `password` matches.
    pub fn verify(&self, name: &str, password: &str) -> Option<Arc<User>> {
        let user = self.get(name)?;
        user.password.as_ref().is_some_and(|h| h.verify(password)).then_some(user)
    }
}
