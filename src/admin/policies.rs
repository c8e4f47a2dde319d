//! Policies and operator policies through the administration API: validated,
//! applied to the vhost's queues and exchanges at once, recorded, and returned once
//! committed (as every administrative change).

use std::sync::Arc;

use serde_json::Value;

use super::{Admin, AdminError};
use crate::membership::DefinitionChange;
use crate::policy::{record, Kind, Policy, PolicyError};
use crate::store::StoreOp;

impl Admin {
    /// Validates a policy from its JSON form (`pattern`, `definition`, `priority`,
    /// `apply-to`), as RabbitMQ's management API takes it.
    pub fn parse_policy(kind: Kind, vhost: &str, name: &str, body: &Value) -> Result<Policy, PolicyError> {
        Policy::from_json(kind, vhost, name, body)
    }

    /// Sets (adds or replaces) a policy; every queue and exchange of its vhost gets
    /// the policies that match it now.
    pub fn set_policy(&self, policy: Policy) -> Result<(), AdminError> {
        super::check_name("policy", &policy.name)?;
        if let Some(cluster) = self.cluster() {
            let r = record(&policy);
            let change = DefinitionChange::SetPolicy {
                vhost: r.vhost,
                name: r.name,
                operator: r.operator,
                pattern: r.pattern,
                apply_to: r.apply_to,
                priority: r.priority,
                definition: r.definition,
            };
            return self.replicate(&cluster, change);
        }
        let _one = self.serialised();
        let v = self.broker.vhost(&policy.vhost).ok_or_else(|| AdminError::NoSuchVHost(policy.vhost.clone()))?;
        self.persist(StoreOp::PutPolicy(record(&policy)));
        let (kind, name) = (policy.kind, policy.name.clone());
        v.change_policies(|set| set.insert(Arc::new(policy)));
        log::info!("{} '{name}' set in vhost '{}'", kind_name(kind), v.name);
        self.committed()
    }

    /// Clears a policy; the queues and exchanges it applied to fall back to the next
    /// matching one, or their own arguments.
    pub fn clear_policy(&self, kind: Kind, vhost: &str, name: &str) -> Result<(), AdminError> {
        if let Some(cluster) = self.cluster() {
            let change = DefinitionChange::ClearPolicy {
                vhost: vhost.into(),
                name: name.into(),
                operator: kind == Kind::Operator,
            };
            return self.replicate(&cluster, change);
        }
        let _one = self.serialised();
        let v = self.broker.vhost(vhost).ok_or_else(|| AdminError::NoSuchVHost(vhost.into()))?;
        if v.policy_set().get(kind, name).is_none() {
            return Err(AdminError::NoSuchPolicy(name.into()));
        }
        self.persist(StoreOp::DeletePolicy {
            vhost: vhost.into(),
            operator: kind == Kind::Operator,
            name: name.into(),
        });
        v.change_policies(|set| set.remove(kind, name));
        log::info!("{} '{name}' cleared in vhost '{vhost}'", kind_name(kind));
        self.committed()
    }

    /// The policies of one kind, of one vhost or all, sorted by vhost and name.
    pub fn policies(&self, kind: Kind, vhost: Option<&str>) -> Vec<Arc<Policy>> {
        let names = match vhost {
            Some(v) => vec![v.to_string()],
            None => self.broker.vhost_names(),
        };
        names
            .iter()
            .filter_map(|n| self.broker.vhost(n))
            .flat_map(|v| v.policy_set().of_kind(kind).cloned().collect::<Vec<_>>())
            .collect()
    }

    pub fn policy(&self, kind: Kind, vhost: &str, name: &str) -> Option<Arc<Policy>> {
        self.broker.vhost(vhost)?.policy_set().get(kind, name).cloned()
    }
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Policy => "policy",
        Kind::Operator => "operator policy",
    }
}
