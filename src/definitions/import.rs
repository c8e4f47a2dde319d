//! Importing definitions: apply in order, undo on the first refusal.

use std::sync::Arc;

use super::arguments::to_table;
use super::format::{BindingDef, Definitions, ExchangeDef, QueueDef};
use super::security;
use crate::admin::replicated::ChangeError;
use crate::admin::Admin;
use crate::broker::Broker;
use crate::policy::{Kind, Policy};
use crate::queue::QueueSettings;
use crate::vhost::{BindingInfo, ExchangeDeclare, VHost};

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub exchanges_created: usize,
    pub queues_created: usize,
    pub bindings_created: usize,
    /// Sections HareMQ read but does not act on (policies, parameters), with counts.
    pub ignored: Vec<String>,
}

/// Why an import was refused; it names the entry.
#[derive(Debug, PartialEq, Eq)]
pub struct ImportError(pub String);

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "definitions import refused, nothing changed: {}", self.0)
    }
}

impl std::error::Error for ImportError {}

/// What an import created so far, to undo on failure.
#[derive(Default)]
struct Created {
    exchanges: Vec<(Arc<VHost>, String)>,
    queues: Vec<(Arc<VHost>, String)>,
    bindings: Vec<(Arc<VHost>, BindingInfo)>,
    /// Policies set: (vhost, name) and the policy it replaced.
    policies: Vec<(String, String, Option<Arc<Policy>>)>,
}

impl Created {
    /// Through the same administrative calls as the import (on a cluster, on every
    /// node).
    fn undo(self, admin: &Admin) {
        for (vhost, name, before) in self.policies.into_iter().rev() {
            let _ = match before {
                Some(p) => admin.set_policy((*p).clone()),
                None => admin.clear_policy(Kind::Policy, &vhost, &name),
            };
        }
        for (vhost, b) in self.bindings.into_iter().rev() {
            let _ = if b.to_queue {
                match vhost.queue(&b.destination) {
                    Some(q) => admin.bind_queue(&vhost, &q, &b.source, &b.routing_key, &b.arguments, false),
                    None => Ok(()),
                }
            } else {
                admin.bind_exchange(&vhost, &b.destination, &b.source, &b.routing_key, &b.arguments, false)
            };
        }
        for (vhost, name) in self.queues.into_iter().rev() {
            if let Some(q) = vhost.queue(&name) {
                let _ = admin.delete_queue(&vhost, &q);
            }
        }
        for (vhost, name) in self.exchanges.into_iter().rev() {
            let _ = admin.delete_exchange(&vhost, &name, false);
        }
    }
}

/// Applies `defs` to `broker`, all or nothing: the security entries (users, vhosts,
/// permissions, limits) are checked whole first, then applied, then the topology; a
/// refusal anywhere puts back what this import changed.
pub fn import(broker: &Arc<Broker>, defs: &Definitions) -> Result<ImportReport, ImportError> {
    security::validate(defs)?;
    for p in &defs.policies {
        parse_policy(p)?;
    }
    let admin = Admin::new(broker.clone());
    let mut undo = security::Undo::default();
    if let Err(e) = security::apply(&admin, defs, &mut undo) {
        undo.apply(&admin);
        return Err(e);
    }
    let mut created = Created::default();
    match apply(broker, &admin, defs, &mut created) {
        Ok(mut report) => {
            report.exchanges_created = created.exchanges.len();
            report.queues_created = created.queues.len();
            report.bindings_created = created.bindings.len();
            Ok(report)
        }
        Err(e) => {
            created.undo(&admin);
            undo.apply(&admin);
            Err(e)
        }
    }
}

/// A policy entry (`vhost`, `name`, `pattern`, `definition`, `priority`, `apply-to`),
/// checked as the management API checks it.
fn parse_policy(p: &serde_json::Value) -> Result<Policy, ImportError> {
    let field = |k: &str| p.get(k).and_then(serde_json::Value::as_str).unwrap_or_default();
    let (vhost, name) = (field("vhost"), field("name"));
    Policy::from_json(Kind::Policy, vhost, name, p)
        .map_err(|e| ImportError(format!("policy '{name}' in vhost '{vhost}': {}", e.to_string().trim_end())))
}

fn apply(
    broker: &Broker,
    admin: &Admin,
    defs: &Definitions,
    created: &mut Created,
) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport::default();
    let other_parameters =
        defs.parameters.iter().filter(|p| p.get("component").and_then(|c| c.as_str()) != Some("vhost-limits")).count();
    for (what, n) in [("parameters", other_parameters), ("global_parameters", defs.global_parameters.len())] {
        if n > 0 {
            report.ignored.push(format!("{n} {what} (not supported yet)"));
        }
    }
    let vhost = |name: &str, entry: &dyn Fn() -> String| {
        broker.vhost(name).ok_or_else(|| ImportError(format!("{}: vhost '{name}' does not exist", entry())))
    };
    // RabbitMQ's order: policies before queues and exchanges.
    for p in &defs.policies {
        let policy = parse_policy(p)?;
        let (vhost_name, name) = (policy.vhost.clone(), policy.name.clone());
        let entry = || format!("policy '{name}' in vhost '{vhost_name}'");
        vhost(&vhost_name, &entry)?;
        let before = admin.policy(Kind::Policy, &vhost_name, &name);
        admin.set_policy(policy).map_err(|e| ImportError(format!("{}: {e}", entry())))?;
        created.policies.push((vhost_name.clone(), name.clone(), before));
    }
    for x in &defs.exchanges {
        let entry = || format!("exchange '{}' in vhost '{}'", x.name, x.vhost);
        let v = vhost(&x.vhost, &entry)?;
        if declare_exchange(admin, &v, x).map_err(|e| ImportError(format!("{}: {e}", entry())))? {
            created.exchanges.push((v, x.name.clone()));
        }
    }
    for q in &defs.queues {
        let entry = || format!("queue '{}' in vhost '{}'", q.name, q.vhost);
        let v = vhost(&q.vhost, &entry)?;
        if declare_queue(admin, &v, q).map_err(|e| ImportError(format!("{}: {e}", entry())))? {
            created.queues.push((v, q.name.clone()));
        }
    }
    for b in &defs.bindings {
        let entry = || {
            format!(
                "binding from '{}' to {} '{}' with key '{}' in vhost '{}'",
                b.source, b.destination_type, b.destination, b.routing_key, b.vhost
            )
        };
        let v = vhost(&b.vhost, &entry)?;
        if let Some(info) = bind(admin, &v, b).map_err(|e| ImportError(format!("{}: {e}", entry())))? {
            created.bindings.push((v, info));
        }
    }
    Ok(report)
}

/// Declares one exchange; true if it was created (false: an equivalent one existed).
/// Through the administrative calls: on a cluster, on every node.
fn declare_exchange(admin: &Admin, v: &VHost, x: &ExchangeDef) -> Result<bool, String> {
    if x.name.is_empty() {
        return Ok(false); // the default exchange always exists
    }
    let arguments = to_table(&x.arguments)?;
    let exists = v.exchange_exists(&x.name);
    let d = ExchangeDeclare {
        name: &x.name,
        kind: &x.kind,
        passive: false,
        durable: x.durable,
        auto_delete: x.auto_delete,
        internal: x.internal,
        arguments: &arguments,
    };
    admin.declare_exchange(v, &d).map_err(|e| e.reply_text())?;
    Ok(!exists)
}

/// Declares one queue; true if it was created.
fn declare_queue(admin: &Admin, v: &Arc<VHost>, q: &QueueDef) -> Result<bool, String> {
    if q.name.is_empty() || q.name.len() > 255 {
        return Err("a queue name must be 1 to 255 bytes".into());
    }
    let arguments = to_table(&q.arguments)?;
    let exists = v.queue(&q.name).is_some();
    if !exists {
        crate::queue::args::validate(&q.name, &v.name, &arguments).map_err(|e| e.reply_text())?;
    }
    let settings = QueueSettings { durable: q.durable, exclusive_owner: None, auto_delete: q.auto_delete, arguments };
    admin.declare_queue(v, &q.name, settings).map_err(|e| match e {
        ChangeError::Amqp(e) => e.reply_text(),
        ChangeError::Admin(e) => e.to_string(),
        ChangeError::NotReplicated(why) => format!("the cluster did not commit it: {why}"),
    })
}

/// Adds one binding; the binding if this import added it.
fn bind(admin: &Admin, v: &VHost, b: &BindingDef) -> Result<Option<BindingInfo>, String> {
    let to_queue = match b.destination_type.as_str() {
        "queue" => true,
        "exchange" => false,
        other => return Err(format!("unknown destination_type '{other}' (expected queue or exchange)")),
    };
    let info = BindingInfo {
        source: b.source.as_str().into(),
        destination: b.destination.as_str().into(),
        to_queue,
        routing_key: b.routing_key.as_str().into(),
        arguments: to_table(&b.arguments)?,
    };
    if b.source.is_empty() {
        // Bindings from the default exchange are implicit; RabbitMQ never exports them.
        return Ok(None);
    }
    let existed = v.has_binding(&info);
    if to_queue {
        let q = v.queue(&b.destination).ok_or_else(|| format!("queue '{}' does not exist", b.destination))?;
        admin.bind_queue(v, &q, &b.source, &b.routing_key, &info.arguments, true).map_err(|e| e.reply_text())?;
    } else {
        admin
            .bind_exchange(v, &b.destination, &b.source, &b.routing_key, &info.arguments, true)
            .map_err(|e| e.reply_text())?;
    }
    Ok((!existed).then_some(info))
}
