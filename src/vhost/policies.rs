//! A vhost's policies and operator policies, and applying them: to every queue and
//! exchange when a policy is set or cleared, and to each new one as it is created.

use std::sync::Arc;

use super::*;
use crate::policy::{Policy, PolicySet};

impl VHost {
    /// The policies now (a snapshot: the set is replaced whole on each change).
    pub fn policy_set(&self) -> Arc<PolicySet> {
        self.policies.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Changes the policy set and applies the result to every queue and exchange.
    pub fn change_policies<R>(&self, f: impl FnOnce(&mut PolicySet) -> R) -> R {
        let r = {
            let mut guard = self.policies.write().unwrap_or_else(|e| e.into_inner());
            let mut set = (**guard).clone();
            let r = f(&mut set);
            *guard = Arc::new(set);
            r
        };
        self.reapply_policies();
        r
    }

    /// Gives every queue and exchange the policies that match it now (queues whose
    /// policies did not change are left alone).
    pub fn reapply_policies(&self) {
        let set = self.policy_set();
        for q in self.queue_handles() {
            let applied = set.for_queue(q.name(), QueueKind::of(&q.settings().arguments).declared());
            if !applied.same_as(&q.policies()) {
                q.apply_policies(applied);
            }
        }
        let mut topo = self.change_topology();
        let topo = &mut *topo;
        for (name, meta) in topo.exchanges.iter_mut() {
            let policy = Self::exchange_policy(&set, name);
            let same = match (&policy, &meta.policy) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            };
            if !same {
                meta.policy = policy;
                topo.routing.set_alternate(name, effective_alternate(meta));
            }
        }
    }

    /// A new queue's policies (before anything can reach it).
    pub(super) fn apply_policies_to_new(&self, q: &Arc<Queue>) {
        let set = self.policy_set();
        if !set.is_empty() {
            q.apply_policies(set.for_queue(q.name(), QueueKind::of(&q.settings().arguments).declared()));
        }
    }

    /// A new exchange's policy; sets its alternate in the routing table.
    pub(super) fn apply_policy_to_new_exchange(&self, topo: &mut Topology, name: &str) {
        let set = self.policy_set();
        let topo = &mut *topo;
        if let Some(meta) = topo.exchanges.get_mut(name) {
            meta.policy = Self::exchange_policy(&set, name);
            if meta.policy.is_some() {
                topo.routing.set_alternate(name, effective_alternate(meta));
            }
        }
    }

    /// The default exchange takes no policy (it has no alternate to set).
    fn exchange_policy(set: &PolicySet, name: &str) -> Option<Arc<Policy>> {
        if name.is_empty() {
            None
        } else {
            set.for_exchange(name)
        }
    }
}

/// The alternate exchange an exchange routes to: its `alternate-exchange` argument,
/// else its policy's (as RabbitMQ: the argument wins).
fn effective_alternate(meta: &ExchangeMeta) -> Option<&str> {
    meta.settings
        .alternate
        .as_deref()
        .or_else(|| meta.policy.as_ref().and_then(|p| p.parsed.alternate_exchange.as_deref()))
}
