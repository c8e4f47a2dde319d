//! Definition changes on a node of a cluster. A change made through this node is
//! submitted to the cluster ([`submit`]); the cluster applies every committed change
//! on every node, in log order, through [`apply`], which runs the same core code as
//! on a single node. The outcome on the node a change was made through goes back to
//! whoever submitted it (an AMQP channel, an administrative call), matched by the
//! change's id; elsewhere an error is only logged (a node that already has what a
//! change creates, say, after a restart replays its log).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::broker::Broker;
use crate::error::AmqpError;
use crate::membership::{ClusterView, DefinitionChange, Replicated};
use crate::vhost::{ExchangeDeclare, VHost, VHostLimits};

use super::{Admin, AdminError, UserLimits};

/// Why a replicated change did not take effect on the node it was made through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeError {
    /// An administrative change refused here.
    Admin(AdminError),
    /// A topology change refused here, with the AMQP error a single node would give.
    Amqp(AmqpError),
    /// The cluster did not commit it (no majority, no leader in time).
    NotReplicated(String),
}

/// Who waits for a change's outcome.
pub type Outcome = Box<dyn FnOnce(Result<(), ChangeError>) + Send>;

/// The changes submitted through this process that are not yet applied here, by id.
fn waiting() -> &'static Mutex<HashMap<u64, Outcome>> {
    static WAITING: OnceLock<Mutex<HashMap<u64, Outcome>>> = OnceLock::new();
    WAITING.get_or_init(Mutex::default)
}

fn take(id: u64) -> Option<Outcome> {
    waiting().lock().unwrap_or_else(|e| e.into_inner()).remove(&id)
}

/// A fresh change id: a process-wide counter hashed with the standard library's
/// randomly keyed SipHash, so ids from different nodes do not meet.
fn new_id() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// Submits `change` to the cluster; `outcome` runs once this node has applied it
/// (with what applying it gave) or the cluster did not commit it.
pub fn submit(cluster: &Arc<dyn ClusterView>, change: DefinitionChange, outcome: Outcome) {
    let id = new_id();
    waiting().lock().unwrap_or_else(|e| e.into_inner()).insert(id, outcome);
    cluster.replicate(
        Replicated { id, change },
        Box::new(move |r| {
            // Applied here without passing through `apply` with its id (a snapshot
            // brought it): it took effect.
            if let Some(outcome) = take(id) {
                outcome(r.map_err(ChangeError::NotReplicated));
            }
        }),
    );
}

/// Submits `change` and waits for its outcome here (for callers on the blocking
/// pool: administrative calls).
pub fn submit_and_wait(cluster: &Arc<dyn ClusterView>, change: DefinitionChange) -> Result<(), ChangeError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    submit(
        cluster,
        change,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    // The cluster answers every submission (it bounds its own wait).
    rx.recv().unwrap_or_else(|_| Err(ChangeError::NotReplicated("the cluster stopped".into())))
}

/// Applies a committed change on this node (on the cluster's applier, in log order;
/// it may block on the store's commit).
pub fn apply(broker: &Arc<Broker>, replicated: Replicated) {
    let result = apply_change(broker, &replicated.change);
    match take(replicated.id) {
        Some(outcome) => outcome(result),
        None => {
            if let Err(e) = result {
                log::debug!("cluster: a replicated change had no effect here ({e:?}): {:?}", replicated.change);
            }
        }
    }
}

/// Applies a change the cluster holds (a node catching up from a snapshot).
pub fn apply_retained(broker: &Arc<Broker>, change: &DefinitionChange) {
    if let Err(e) = apply_change(broker, change) {
        log::debug!("cluster: a retained change had no effect here ({e:?}): {change:?}");
    }
}

fn apply_change(broker: &Arc<Broker>, change: &DefinitionChange) -> Result<(), ChangeError> {
    use DefinitionChange as C;
    let admin = Admin::here(broker.clone());
    let admin_result = match change {
        C::AddVHost { name, description, tags } => admin.add_vhost_with(name, description, &strs(tags)),
        C::DeleteVHost { name } => admin.delete_vhost(name),
        C::SetVHostMetadata { name, description, tags } => {
            let tags = tags.as_ref().map(|t| strs(t));
            admin.set_vhost_metadata(name, description.as_deref(), tags.as_deref())
        }
        C::SetVHostLimits { name, max_connections, max_queues } => {
            admin.set_vhost_limits(name, VHostLimits { max_connections: *max_connections, max_queues: *max_queues })
        }
        C::AddUser { name, password_hash, hashing_algorithm, tags } => {
            admin.add_user_with_hash(name, password_hash, hashing_algorithm, &strs(tags))
        }
        C::SetPasswordHash { name, password_hash, hashing_algorithm } => {
            admin.set_password_hash(name, password_hash, hashing_algorithm)
        }
        C::SetUserTags { name, tags } => admin.set_user_tags(name, &strs(tags)),
        C::SetUserLimits { name, max_connections, max_channels } => {
            admin.set_user_limits(name, UserLimits { max_connections: *max_connections, max_channels: *max_channels })
        }
        C::DeleteUser { name } => admin.delete_user(name),
        C::SetPermissions { user, vhost, configure, write, read } => {
            admin.set_permissions(user, vhost, configure, write, read)
        }
        C::ClearPermissions { user, vhost } => admin.clear_permissions(user, vhost),
        C::SetTopicPermissions { user, vhost, exchange, write, read } => {
            admin.set_topic_permissions(user, vhost, exchange, write, read)
        }
        C::ClearTopicPermissions { user, vhost, exchange } => {
            admin.clear_topic_permissions(user, vhost, exchange.as_deref())
        }
        C::SetPolicy { vhost, name, operator, pattern, apply_to, priority, definition } => {
            let record = crate::store::PolicyRecord {
                vhost: vhost.clone(),
                name: name.clone(),
                operator: *operator,
                pattern: pattern.clone(),
                apply_to: apply_to.clone(),
                priority: *priority,
                definition: definition.clone(),
            };
            match crate::policy::from_record(&record) {
                Some(policy) => admin.set_policy(policy),
                None => Err(AdminError::Invalid(format!("policy '{name}' of vhost '{vhost}' is not valid here"))),
            }
        }
        C::ClearPolicy { vhost, name, operator } => {
            let kind = if *operator { crate::policy::Kind::Operator } else { crate::policy::Kind::Policy };
            admin.clear_policy(kind, vhost, name)
        }
        C::SetGlobalParameter { name, value } => match serde_json::from_str(value) {
            Ok(value) => admin.set_global_parameter(name, value).map(|_| ()),
            Err(e) => Err(AdminError::Invalid(format!("global parameter '{name}': {e}"))),
        },
        C::ClearGlobalParameter { name } => admin.clear_global_parameter(name),
        topology => return apply_topology(broker, topology).map_err(ChangeError::Amqp),
    };
    admin_result.map_err(ChangeError::Admin)
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn apply_topology(broker: &Broker, change: &DefinitionChange) -> Result<(), AmqpError> {
    apply_topology_with(change, |name| broker.vhost(name))
}

/// A topology change applied on this node alone, to `v` (a no-wait creation takes
/// effect at once on the node it was made through; see `channel::replicated`).
pub(crate) fn apply_topology_here(v: &Arc<VHost>, change: &DefinitionChange) -> Result<(), AmqpError> {
    apply_topology_with(change, |name| (name == &*v.name).then(|| v.clone()))
}

/// The change that undoes a creation (an exchange, a binding): where a no-wait
/// creation applied at once goes back if the cluster did not commit it.
pub(crate) fn undoing(change: &DefinitionChange) -> Option<DefinitionChange> {
    use DefinitionChange as C;
    Some(match change.clone() {
        C::DeclareExchange { vhost, name, .. } => C::DeleteExchange { vhost, name, if_unused: false },
        C::BindExchange { vhost, destination, source, routing_key, arguments } => {
            C::UnbindExchange { vhost, destination, source, routing_key, arguments }
        }
        C::BindQueue { vhost, queue, exchange, routing_key, arguments } => {
            C::UnbindQueue { vhost, queue, exchange, routing_key, arguments }
        }
        _ => return None,
    })
}

fn apply_topology_with(change: &DefinitionChange, find: impl Fn(&str) -> Option<Arc<VHost>>) -> Result<(), AmqpError> {
    use DefinitionChange as C;
    let vhost = |name: &str| find(name).ok_or_else(|| AmqpError::NotFound(format!("no vhost '{name}'")));
    match change {
        C::DeclareExchange { vhost: v, name, kind, durable, auto_delete, internal, arguments } => vhost(v)?
            .declare_exchange(&ExchangeDeclare {
                name,
                kind,
                passive: false,
                durable: *durable,
                auto_delete: *auto_delete,
                internal: *internal,
                arguments,
            }),
        C::DeleteExchange { vhost: v, name, if_unused } => vhost(v)?.delete_exchange(name, *if_unused),
        C::BindExchange { vhost: v, destination, source, routing_key, arguments } => {
            vhost(v)?.bind_exchange(destination, source, routing_key, arguments)
        }
        C::UnbindExchange { vhost: v, destination, source, routing_key, arguments } => {
            vhost(v)?.unbind_exchange(destination, source, routing_key, arguments)
        }
        C::BindQueue { vhost: v, queue, exchange, routing_key, arguments } => {
            let v = vhost(v)?;
            let q = v
                .queue(queue)
                .ok_or_else(|| AmqpError::NotFound(format!("no queue '{queue}' in vhost '{}'", v.name)))?;
            v.bind_queue(&q, exchange, routing_key, arguments)
        }
        C::UnbindQueue { vhost: v, queue, exchange, routing_key, arguments } => {
            // A replicated queue is never exclusive: no connection owns it.
            vhost(v)?.unbind_queue(queue, exchange, routing_key, arguments, 0)
        }
        administrative => Err(AmqpError::InternalError(format!("not a topology change: {administrative:?}"))),
    }
}

impl Admin {
    /// The cluster an administrative change goes through: None on a single node, and
    /// when this change is being applied from the cluster's log.
    pub(super) fn cluster(&self) -> Option<Arc<dyn ClusterView>> {
        if self.here {
            return None;
        }
        self.broker.cluster().cloned()
    }

    /// Replicates an administrative change and waits until this node has applied it.
    pub(super) fn replicate(&self, cluster: &Arc<dyn ClusterView>, change: DefinitionChange) -> Result<(), AdminError> {
        submit_and_wait(cluster, change).map_err(|e| match e {
            ChangeError::Admin(e) => e,
            ChangeError::Amqp(e) => AdminError::Invalid(e.to_string()),
            ChangeError::NotReplicated(why) => AdminError::NotReplicated(why),
        })
    }
}
