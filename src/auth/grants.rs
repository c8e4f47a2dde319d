//! Who may do what where: each user's permissions per vhost and topic permissions
//! per (vhost, exchange), with a generation counter that every change bumps.
//!
//! Connections resolve their user's rights in their vhost once ([`super::access`]) and
//! re-resolve when the generation moved, so a change applies to every open channel
//! from its next check on, as in RabbitMQ 3.10 (its channels cache granted checks too,
//! and a permission change empties those caches: observed, a revoked write refuses
//! the next publish on a channel that had published).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::permissions::{Permission, TopicPermission};

/// The permission tables, keyed by (user, vhost).
#[derive(Default)]
pub struct GrantTables {
    pub permissions: HashMap<(String, String), Arc<Permission>>,
    /// Per (user, vhost), one entry per exchange.
    pub topic: HashMap<(String, String), Vec<TopicPermission>>,
}

impl GrantTables {
    /// Drops every grant of `user`.
    pub fn remove_user(&mut self, user: &str) {
        self.permissions.retain(|(u, _), _| u != user);
        self.topic.retain(|(u, _), _| u != user);
    }

    /// Drops every grant in `vhost`.
    pub fn remove_vhost(&mut self, vhost: &str) {
        self.permissions.retain(|(_, v), _| v != vhost);
        self.topic.retain(|(_, v), _| v != vhost);
    }
}

#[derive(Default)]
pub struct Grants {
    tables: RwLock<GrantTables>,
    generation: AtomicU64,
}

impl Grants {
    /// Bumped after every change. Read with one relaxed load per check on the publish
    /// path: a change is seen by the next publish that reads it.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    pub fn permission(&self, user: &str, vhost: &str) -> Option<Arc<Permission>> {
        let t = self.tables.read().unwrap_or_else(|e| e.into_inner());
        t.permissions.get(&(user.to_string(), vhost.to_string())).cloned()
    }

    pub fn topic_permissions(&self, user: &str, vhost: &str) -> Vec<TopicPermission> {
        let t = self.tables.read().unwrap_or_else(|e| e.into_inner());
        t.topic.get(&(user.to_string(), vhost.to_string())).cloned().unwrap_or_default()
    }

    /// Reads the tables.
    pub fn read<T>(&self, f: impl FnOnce(&GrantTables) -> T) -> T {
        f(&self.tables.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Changes the tables under their write lock, then bumps the generation.
    pub fn change<T>(&self, f: impl FnOnce(&mut GrantTables) -> T) -> T {
        let mut t = self.tables.write().unwrap_or_else(|e| e.into_inner());
        let out = f(&mut t);
        self.generation.fetch_add(1, Ordering::Release);
        out
    }
}
