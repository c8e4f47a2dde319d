//! Exporting definitions in RabbitMQ 3.10's layout.

use super::arguments::from_table;
use std::sync::Arc;

use serde_json::{json, Value};

use super::format::{
    BindingDef, Definitions, ExchangeDef, PermissionDef, QueueDef, Tags, TopicPermissionDef, UserDef, VhostDef,
};
use crate::admin::Admin;
use crate::broker::Broker;

/// The RabbitMQ version whose definitions format this follows (RabbitMQ's importer
/// reads it; HareMQ's own name and version are in `product_*`).
const FORMAT_VERSION: &str = "3.10.0";

/// Users (with their password hashes, tags and limits), permissions, topic
/// permissions, vhosts (with their metadata; limits as `vhost-limits` parameters, as
/// RabbitMQ writes them), and in each vhost the exchanges (but the
/// default and `amq.*` ones, which every vhost has), the queues (but exclusive ones,
/// which belong to a connection), the bindings between what is exported, and the
/// policies (operator policies are not exported, as in RabbitMQ 3.10).
pub fn export(broker: &Arc<Broker>) -> Definitions {
    let mut defs = Definitions {
        rabbit_version: Some(FORMAT_VERSION.into()),
        rabbitmq_version: Some(FORMAT_VERSION.into()),
        product_name: Some("HareMQ".into()),
        product_version: Some(env!("CARGO_PKG_VERSION").into()),
        ..Default::default()
    };
    let admin = Admin::new(broker.clone());
    for u in admin.users() {
        let limits =
            limits_json(&[("max-connections", u.limits.max_connections), ("max-channels", u.limits.max_channels)]);
        defs.users.push(UserDef {
            name: u.name,
            password_hash: u.password_hash.unwrap_or_default(),
            hashing_algorithm: u.hashing_algorithm.into(),
            tags: Tags(u.tags),
            limits: Value::Object(limits),
        });
    }
    for p in admin.permissions() {
        defs.permissions.push(PermissionDef {
            user: p.user,
            vhost: p.vhost,
            configure: p.configure,
            write: p.write,
            read: p.read,
        });
    }
    for t in admin.topic_permissions() {
        defs.topic_permissions.push(TopicPermissionDef {
            user: t.user,
            vhost: t.vhost,
            exchange: t.exchange,
            write: t.write,
            read: t.read,
        });
    }
    defs.policies = admin.policies(crate::policy::Kind::Policy, None).iter().map(|p| p.to_json()).collect();
    for info in admin.vhosts() {
        let limits =
            limits_json(&[("max-connections", info.limits.max_connections), ("max-queues", info.limits.max_queues)]);
        if !limits.is_empty() {
            // Where RabbitMQ keeps vhost limits: a runtime parameter.
            defs.parameters.push(json!({
                "vhost": info.name, "component": "vhost-limits", "name": "limits", "value": limits,
            }));
        }
        defs.vhosts.push(VhostDef {
            name: info.name.clone(),
            description: None,
            metadata: Some(json!({"description": info.description, "tags": info.tags})),
            limits: None,
        });
    }
    for name in broker.vhost_names() {
        let Some(v) = broker.vhost(&name) else { continue };
        let exported_exchange = |x: &str| !x.is_empty() && !x.starts_with("amq.");
        for x in v.exchange_list().into_iter().filter(|x| exported_exchange(&x.name)) {
            defs.exchanges.push(ExchangeDef {
                name: x.name.to_string(),
                vhost: name.clone(),
                kind: x.kind.to_string(),
                durable: x.durable,
                auto_delete: x.auto_delete,
                internal: x.internal,
                arguments: from_table(&x.arguments),
            });
        }
        let mut exclusive = std::collections::HashSet::new();
        for q in v.queue_list() {
            if q.exclusive {
                exclusive.insert(q.name);
                continue;
            }
            defs.queues.push(QueueDef {
                name: q.name.to_string(),
                vhost: name.clone(),
                durable: q.durable,
                auto_delete: q.auto_delete,
                arguments: from_table(&q.arguments),
                queue_type: Some(crate::queue::QueueKind::of(&q.arguments).declared().into()),
            });
        }
        for b in v.binding_list() {
            // Bindings from amq.* exchanges are exported (they are the user's); the
            // default exchange's are implicit and never listed.
            if b.source.is_empty() || (b.to_queue && exclusive.contains(&b.destination)) {
                continue;
            }
            defs.bindings.push(BindingDef {
                source: b.source.to_string(),
                vhost: name.clone(),
                destination: b.destination.to_string(),
                destination_type: if b.to_queue { "queue" } else { "exchange" }.into(),
                routing_key: b.routing_key.to_string(),
                arguments: from_table(&b.arguments),
            });
        }
    }
    defs
}

/// RabbitMQ's JSON for limits: the set ones, by name.
fn limits_json(limits: &[(&str, Option<u64>)]) -> serde_json::Map<String, Value> {
    limits.iter().filter_map(|(name, n)| Some((name.to_string(), Value::from((*n)?)))).collect()
}
