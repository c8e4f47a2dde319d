//! Global runtime parameters (RabbitMQ's `rabbitmqctl set_global_parameter`, the
//! management API's `/api/global-parameters`): named JSON values such as
//! `cluster_name`, recorded like every administrative change (and replicated on a
//! node of a cluster, as every definition).

use serde_json::Value;

use super::{Admin, AdminError};
use crate::store::StoreOp;

impl Admin {
    /// Sets `name` to `value`; true if it replaced a value.
    pub fn set_global_parameter(&self, name: &str, value: Value) -> Result<bool, AdminError> {
        super::check_name("global parameter", name)?;
        if let Some(cluster) = self.cluster() {
            let replaced = self.broker.global_parameters().contains_key(name);
            let change =
                crate::membership::DefinitionChange::SetGlobalParameter { name: name.into(), value: value.to_string() };
            return self.replicate(&cluster, change).map(|()| replaced);
        }
        let _one = self.serialised();
        self.persist(StoreOp::PutGlobalParameter { name: name.into(), value: value.to_string() });
        let replaced = self.broker.global_parameters().insert(name.to_string(), value).is_some();
        log::info!("global parameter '{name}' set");
        self.committed().map(|()| replaced)
    }

    /// Clears `name` (`NoSuchParameter` if it is not set).
    pub fn clear_global_parameter(&self, name: &str) -> Result<(), AdminError> {
        if let Some(cluster) = self.cluster() {
            if !self.broker.global_parameters().contains_key(name) {
                return Err(AdminError::NoSuchParameter(name.into()));
            }
            let change = crate::membership::DefinitionChange::ClearGlobalParameter { name: name.into() };
            return self.replicate(&cluster, change);
        }
        let _one = self.serialised();
        if self.broker.global_parameters().remove(name).is_none() {
            return Err(AdminError::NoSuchParameter(name.into()));
        }
        self.persist(StoreOp::DeleteGlobalParameter { name: name.into() });
        log::info!("global parameter '{name}' cleared");
        self.committed()
    }

    /// Every global parameter, by name.
    pub fn global_parameters(&self) -> Vec<(String, Value)> {
        self.broker.global_parameters().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}
