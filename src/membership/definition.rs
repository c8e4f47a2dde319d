//! Definition changes every node of a cluster applies in the same order: vhosts,
//! users, permissions, exchanges and bindings. A change made through any node (an
//! AMQP method, the management API) is written to the metadata log and applied on
//! every node by the same core code that applies it on a single node; the node it was
//! made through answers once its own copy has applied it.
//!
//! The metadata group keeps, for its snapshots, only the changes that still matter
//! ([`retain`]): a later change about the same thing replaces an earlier one, a
//! deletion drops what it deletes and what lived inside it. A node that catches up
//! from a snapshot applies those in log order.

use std::collections::BTreeMap;

use amq_protocol::types::FieldTable;
use serde::{Deserialize, Serialize};

/// A replicated change, with the id its origin waits on (random; unique in practice).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Replicated {
    pub id: u64,
    pub change: DefinitionChange,
}

/// What a change does. Users carry password hashes, never passwords: hashing salts
/// at random, so it happens once, at the origin.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum DefinitionChange {
    AddVHost {
        name: String,
        description: String,
        tags: Vec<String>,
    },
    DeleteVHost {
        name: String,
    },
    SetVHostMetadata {
        name: String,
        description: Option<String>,
        tags: Option<Vec<String>>,
    },
    SetVHostLimits {
        name: String,
        max_connections: Option<u64>,
        max_queues: Option<u64>,
    },
    /// `password_hash` "" for a user without a password.
    AddUser {
        name: String,
        password_hash: String,
        hashing_algorithm: String,
        tags: Vec<String>,
    },
    SetPasswordHash {
        name: String,
        password_hash: String,
        hashing_algorithm: String,
    },
    SetUserTags {
        name: String,
        tags: Vec<String>,
    },
    SetUserLimits {
        name: String,
        max_connections: Option<u64>,
        max_channels: Option<u64>,
    },
    DeleteUser {
        name: String,
    },
    SetPermissions {
        user: String,
        vhost: String,
        configure: String,
        write: String,
        read: String,
    },
    ClearPermissions {
        user: String,
        vhost: String,
    },
    SetTopicPermissions {
        user: String,
        vhost: String,
        exchange: String,
        write: String,
        read: String,
    },
    /// `exchange` None: all of the user's topic permissions in the vhost.
    ClearTopicPermissions {
        user: String,
        vhost: String,
        exchange: Option<String>,
    },
    /// A policy (`operator`: an operator policy) in its stored form: the definition
    /// is JSON text, validated again where it is applied.
    SetPolicy {
        vhost: String,
        name: String,
        operator: bool,
        pattern: String,
        apply_to: String,
        priority: i64,
        definition: String,
    },
    ClearPolicy {
        vhost: String,
        name: String,
        operator: bool,
    },
    DeclareExchange {
        vhost: String,
        name: String,
        kind: String,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    },
    DeleteExchange {
        vhost: String,
        name: String,
        if_unused: bool,
    },
    BindExchange {
        vhost: String,
        destination: String,
        source: String,
        routing_key: String,
        arguments: FieldTable,
    },
    UnbindExchange {
        vhost: String,
        destination: String,
        source: String,
        routing_key: String,
        arguments: FieldTable,
    },
    /// A binding to a queue every node serves (quorum queues, classic queues that are
    /// not exclusive); exclusive queues' bindings stay on the node of their queue.
    BindQueue {
        vhost: String,
        queue: String,
        exchange: String,
        routing_key: String,
        arguments: FieldTable,
    },
    UnbindQueue {
        vhost: String,
        queue: String,
        exchange: String,
        routing_key: String,
        arguments: FieldTable,
    },
    /// A global runtime parameter (RabbitMQ's `set_global_parameter`); the value is
    /// JSON text.
    SetGlobalParameter {
        name: String,
        value: String,
    },
    ClearGlobalParameter {
        name: String,
    },
}

/// How a change relates to what it is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    /// Creates its subject; a subject that exists stays as it is.
    Create,
    /// Sets its subject, replacing what was set before.
    Set,
    /// Deletes its subject, everything under it and everything it owns.
    Delete,
}

/// A path naming what a change is about (`["v", vhost, "e", exchange]`); a path
/// under another one lives inside it.
type Path = Vec<String>;

fn path(parts: &[&str]) -> Path {
    parts.iter().map(|p| p.to_string()).collect()
}

/// A binding's identity: its arguments are part of it (as in RabbitMQ).
fn binding(vhost: &str, source: &str, kind: &str, destination: &str, key: &str, args: &FieldTable) -> Path {
    let args = serde_json::to_string(args).unwrap_or_default();
    path(&["v", vhost, "b", source, kind, destination, key, &args])
}

impl DefinitionChange {
    /// What the change is about, what it does to it, and what else it depends on (a
    /// permission lives in its vhost as well as with its user; a binding with both
    /// ends).
    fn subject(&self) -> (Path, Effect, Vec<Path>) {
        use DefinitionChange as C;
        use Effect::*;
        match self {
            C::AddVHost { name, .. } => (path(&["v", name]), Create, vec![]),
            C::DeleteVHost { name } => (path(&["v", name]), Delete, vec![]),
            C::SetVHostMetadata { name, .. } => (path(&["v", name, "meta"]), Set, vec![]),
            C::SetVHostLimits { name, .. } => (path(&["v", name, "limits"]), Set, vec![]),
            C::AddUser { name, .. } => (path(&["u", name]), Create, vec![]),
            C::SetPasswordHash { name, .. } => (path(&["u", name, "password"]), Set, vec![]),
            C::SetUserTags { name, .. } => (path(&["u", name, "tags"]), Set, vec![]),
            C::SetUserLimits { name, .. } => (path(&["u", name, "limits"]), Set, vec![]),
            C::DeleteUser { name } => (path(&["u", name]), Delete, vec![]),
            C::SetPermissions { user, vhost, .. } => (path(&["u", user, "p", vhost]), Set, vec![path(&["v", vhost])]),
            C::ClearPermissions { user, vhost } => (path(&["u", user, "p", vhost]), Delete, vec![]),
            C::SetTopicPermissions { user, vhost, exchange, .. } => {
                (path(&["u", user, "t", vhost, exchange]), Set, vec![path(&["v", vhost])])
            }
            C::ClearTopicPermissions { user, vhost, exchange } => {
                let mut p = path(&["u", user, "t", vhost]);
                p.extend(exchange.clone());
                (p, Delete, vec![])
            }
            C::SetPolicy { vhost, name, operator, .. } => (policy_path(vhost, name, *operator), Set, vec![]),
            C::ClearPolicy { vhost, name, operator } => (policy_path(vhost, name, *operator), Delete, vec![]),
            C::DeclareExchange { vhost, name, .. } => (path(&["v", vhost, "e", name]), Create, vec![]),
            C::DeleteExchange { vhost, name, .. } => (path(&["v", vhost, "e", name]), Delete, vec![]),
            C::BindExchange { vhost, destination, source, routing_key, arguments } => (
                binding(vhost, source, "e", destination, routing_key, arguments),
                Set,
                vec![path(&["v", vhost, "e", source]), path(&["v", vhost, "e", destination])],
            ),
            C::UnbindExchange { vhost, destination, source, routing_key, arguments } => {
                (binding(vhost, source, "e", destination, routing_key, arguments), Delete, vec![])
            }
            C::BindQueue { vhost, queue, exchange, routing_key, arguments } => (
                binding(vhost, exchange, "q", queue, routing_key, arguments),
                Set,
                vec![path(&["v", vhost, "e", exchange]), queue_path(vhost, queue)],
            ),
            C::UnbindQueue { vhost, queue, exchange, routing_key, arguments } => {
                (binding(vhost, exchange, "q", queue, routing_key, arguments), Delete, vec![])
            }
            C::SetGlobalParameter { name, .. } => (path(&["g", name]), Set, vec![]),
            C::ClearGlobalParameter { name } => (path(&["g", name]), Delete, vec![]),
        }
    }
}

fn policy_path(vhost: &str, name: &str, operator: bool) -> Path {
    path(&["v", vhost, if operator { "operator-policy" } else { "policy" }, name])
}

/// A replicated queue's path (its bindings depend on it).
fn queue_path(vhost: &str, name: &str) -> Path {
    path(&["v", vhost, "q", name])
}

/// The changes that still matter, in log order (applied in that order they rebuild
/// what every node holds), indexed by subject and by what depends on what, so that
/// recording a change costs O(log n) plus what it removes, however many bindings
/// the cluster has (it runs in the metadata group's apply). A snapshot stores the
/// changes only; the indexes are rebuilt when it is read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "BTreeMap<u64, DefinitionChange>", into = "BTreeMap<u64, DefinitionChange>")]
pub struct Retained {
    by_index: BTreeMap<u64, DefinitionChange>,
    by_subject: BTreeMap<Path, u64>,
    /// The retained deletions (tombstones), by index: the oldest go first once there
    /// are [`MAX_TOMBSTONES`].
    tombstones: std::collections::BTreeSet<u64>,
    /// For each path something depends on, the subjects that depend on it.
    dependents: BTreeMap<Path, std::collections::BTreeSet<Path>>,
}

impl From<BTreeMap<u64, DefinitionChange>> for Retained {
    fn from(changes: BTreeMap<u64, DefinitionChange>) -> Self {
        let mut r = Retained::default();
        for (index, change) in changes {
            r.insert(index, change);
        }
        r
    }
}

impl From<Retained> for BTreeMap<u64, DefinitionChange> {
    fn from(r: Retained) -> Self {
        r.by_index
    }
}

impl Retained {
    pub fn new() -> Self {
        Self::default()
    }

    /// The changes in log order.
    pub fn values(&self) -> impl Iterator<Item = &DefinitionChange> {
        self.by_index.values()
    }

    pub fn len(&self) -> usize {
        self.by_index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_index.is_empty()
    }

    pub fn into_values(self) -> impl Iterator<Item = DefinitionChange> {
        self.by_index.into_values()
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }

    fn insert(&mut self, index: u64, change: DefinitionChange) {
        let (subject, effect, depends) = change.subject();
        if effect == Effect::Delete {
            self.tombstones.insert(index);
        }
        for d in depends {
            self.dependents.entry(d).or_default().insert(subject.clone());
        }
        self.by_subject.insert(subject, index);
        self.by_index.insert(index, change);
    }

    /// What the retained change about `subject` does (None: nothing retained).
    fn effect_on(&self, subject: &Path) -> Option<Effect> {
        let index = self.by_subject.get(subject)?;
        Some(self.by_index.get(index)?.subject().1)
    }

    /// Keeps at most [`MAX_TOMBSTONES`] deletions, dropping the oldest.
    fn trim_tombstones(&mut self) {
        while self.tombstones.len() > MAX_TOMBSTONES {
            let Some(index) = self.tombstones.pop_first() else { return };
            if let Some(change) = self.by_index.remove(&index) {
                self.by_subject.remove(&change.subject().0);
            }
        }
    }

    fn remove_subject(&mut self, subject: &Path) {
        let Some(index) = self.by_subject.remove(subject) else { return };
        self.tombstones.remove(&index);
        let Some(change) = self.by_index.remove(&index) else { return };
        for d in change.subject().2 {
            if let Some(set) = self.dependents.get_mut(&d) {
                set.remove(subject);
                if set.is_empty() {
                    self.dependents.remove(&d);
                }
            }
        }
    }

    /// The paths at or under `prefix` among `keys`.
    fn under<'a, V>(keys: &'a BTreeMap<Path, V>, prefix: &'a Path) -> impl Iterator<Item = (&'a Path, &'a V)> + 'a {
        keys.range(prefix.clone()..).take_while(move |(k, _)| k.starts_with(prefix))
    }
}

/// Deletions a snapshot keeps (tombstones). A node restored from a snapshot applies
/// them, so it loses what was deleted while it was away; beyond this many, the oldest
/// are dropped (a node away for longer keeps what their deletions removed: a
/// tombstone per deleted name, kept for ever, would grow without bound under an
/// application that binds and unbinds fresh names).
pub const MAX_TOMBSTONES: usize = 10_000;

/// Records `change` (at log `index`) in `retained`: a creation is kept unless its
/// subject is already there (a tombstone gives way to it), a setting replaces the
/// earlier one, a deletion drops its subject, what lies under it and what depends on
/// it, and stays as a tombstone.
pub fn retain(retained: &mut Retained, index: u64, change: DefinitionChange) {
    let (subject, effect, _) = change.subject();
    match effect {
        Effect::Create => match retained.effect_on(&subject) {
            None => retained.insert(index, change),
            Some(Effect::Delete) => {
                retained.remove_subject(&subject);
                retained.insert(index, change);
            }
            Some(_) => {}
        },
        Effect::Set => {
            retained.remove_subject(&subject);
            retained.insert(index, change);
        }
        Effect::Delete => {
            forget(retained, &subject);
            retained.insert(index, change);
            retained.trim_tombstones();
        }
    }
}

/// Drops what a deleted replicated queue's bindings (they went with it on every node).
pub fn forget_queue(retained: &mut Retained, vhost: &str, name: &str) {
    forget(retained, &queue_path(vhost, name));
}

fn forget(retained: &mut Retained, gone: &Path) {
    let mut doomed: Vec<Path> = Retained::under(&retained.by_subject, gone).map(|(k, _)| k.clone()).collect();
    for (_, subjects) in Retained::under(&retained.dependents, gone) {
        doomed.extend(subjects.iter().cloned());
    }
    for subject in doomed {
        retained.remove_subject(&subject);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DefinitionChange as C;

    fn vhost(name: &str) -> C {
        C::AddVHost { name: name.into(), description: String::new(), tags: vec![] }
    }

    fn exchange(vhost: &str, name: &str, kind: &str) -> C {
        C::DeclareExchange {
            vhost: vhost.into(),
            name: name.into(),
            kind: kind.into(),
            durable: true,
            auto_delete: false,
            internal: false,
            arguments: FieldTable::default(),
        }
    }

    fn bind(vhost: &str, source: &str, queue: &str) -> C {
        C::BindQueue {
            vhost: vhost.into(),
            queue: queue.into(),
            exchange: source.into(),
            routing_key: "k".into(),
            arguments: FieldTable::default(),
        }
    }

    fn replay(changes: Vec<C>) -> Vec<C> {
        let mut r = Retained::new();
        for (i, c) in changes.into_iter().enumerate() {
            retain(&mut r, i as u64 + 1, c);
        }
        r.into_values().collect()
    }

    #[test]
    fn a_creation_keeps_the_first_and_a_setting_the_last() {
        let kept = replay(vec![
            exchange("/", "x", "direct"),
            exchange("/", "x", "fanout"),
            C::SetUserTags { name: "u".into(), tags: vec!["a".into()] },
            C::SetUserTags { name: "u".into(), tags: vec!["b".into()] },
        ]);
        assert_eq!(
            kept,
            vec![exchange("/", "x", "direct"), C::SetUserTags { name: "u".into(), tags: vec!["b".into()] }]
        );
    }

    #[test]
    fn a_deletion_drops_what_lives_inside_and_depends_on_it() {
        let perm = |vhost: &str| C::SetPermissions {
            user: "u".into(),
            vhost: vhost.into(),
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        };
        let kept = replay(vec![
            vhost("a"),
            vhost("b"),
            exchange("a", "x", "topic"),
            exchange("b", "x", "topic"),
            bind("a", "x", "q"),
            bind("b", "x", "q"),
            perm("a"),
            perm("b"),
            C::DeleteVHost { name: "a".into() },
            C::DeleteExchange { vhost: "b".into(), name: "x".into(), if_unused: false },
        ]);
        assert_eq!(
            kept,
            vec![
                vhost("b"),
                perm("b"),
                C::DeleteVHost { name: "a".into() },
                C::DeleteExchange { vhost: "b".into(), name: "x".into(), if_unused: false }
            ],
            "what is left, and the deletions as tombstones (the vhost's covers its exchange)"
        );
        let mut r = Retained::new();
        retain(&mut r, 1, exchange("/", "x", "topic"));
        retain(&mut r, 2, bind("/", "x", "q"));
        retain(&mut r, 3, bind("/", "x", "q2"));
        forget_queue(&mut r, "/", "q");
        assert_eq!(r.into_values().collect::<Vec<_>>(), vec![exchange("/", "x", "topic"), bind("/", "x", "q2")]);
    }

    #[test]
    fn an_unbinding_and_a_user_deletion_forget_exactly_theirs() {
        let mut args = FieldTable::default();
        args.insert("x-match".into(), amq_protocol::types::AMQPValue::LongString("all".into()));
        let with_args = C::BindQueue {
            vhost: "/".into(),
            queue: "q".into(),
            exchange: "x".into(),
            routing_key: "k".into(),
            arguments: args,
        };
        let kept = replay(vec![
            bind("/", "x", "q"),
            with_args.clone(),
            C::UnbindQueue {
                vhost: "/".into(),
                queue: "q".into(),
                exchange: "x".into(),
                routing_key: "k".into(),
                arguments: FieldTable::default(),
            },
            C::AddUser {
                name: "u".into(),
                password_hash: String::new(),
                hashing_algorithm: "rabbit_password_hashing_sha256".into(),
                tags: vec![],
            },
            C::SetUserTags { name: "u".into(), tags: vec![] },
            C::SetTopicPermissions {
                user: "u".into(),
                vhost: "/".into(),
                exchange: "x".into(),
                write: ".*".into(),
                read: ".*".into(),
            },
            C::DeleteUser { name: "u".into() },
            C::AddUser {
                name: "u2".into(),
                password_hash: String::new(),
                hashing_algorithm: "rabbit_password_hashing_sha256".into(),
                tags: vec![],
            },
        ]);
        assert_eq!(kept.len(), 4, "{kept:?}");
        assert_eq!(kept[0], with_args, "a binding's arguments tell it apart");
        assert!(matches!(&kept[1], C::UnbindQueue { arguments, .. } if arguments.inner().is_empty()), "a tombstone");
        assert!(matches!(&kept[2], C::DeleteUser { name } if name == "u"), "a tombstone");
        assert!(matches!(&kept[3], C::AddUser { name, .. } if name == "u2"));
    }

    #[test]
    fn tombstones_give_way_to_a_new_creation_and_are_bounded() {
        let kept = replay(vec![
            exchange("/", "x", "direct"),
            C::DeleteExchange { vhost: "/".into(), name: "x".into(), if_unused: false },
            exchange("/", "x", "fanout"),
        ]);
        assert_eq!(kept, vec![exchange("/", "x", "fanout")], "created again: no deletion to apply");
        let mut r = Retained::new();
        for i in 0..MAX_TOMBSTONES as u64 + 5 {
            retain(&mut r, i + 1, C::DeleteExchange { vhost: "/".into(), name: format!("x{i}"), if_unused: false });
        }
        assert_eq!(r.len(), MAX_TOMBSTONES, "the oldest tombstones go");
        assert!(
            matches!(r.values().next(), Some(C::DeleteExchange { name, .. }) if name == "x5"),
            "the newest are kept"
        );
        let copy: Retained = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(copy, r, "a snapshot keeps them, indexes rebuilt");
    }
}
