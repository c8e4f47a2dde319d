//! A policy's stored form ([`PolicyRecord`]), and back.

use serde_json::Value;

use super::{Kind, Policy};
use crate::store::PolicyRecord;

/// The stored form of a policy.
pub fn record(p: &Policy) -> PolicyRecord {
    PolicyRecord {
        vhost: p.vhost.clone(),
        name: p.name.clone(),
        operator: p.kind == Kind::Operator,
        pattern: p.pattern.clone(),
        apply_to: p.apply_to.as_str().into(),
        priority: p.priority,
        definition: Value::Object(p.definition.clone()).to_string(),
    }
}

/// A stored policy, validated again (None, logged, if it no longer is).
pub fn from_record(r: &PolicyRecord) -> Option<Policy> {
    let kind = if r.operator { Kind::Operator } else { Kind::Policy };
    let body = serde_json::json!({
        "pattern": r.pattern,
        "apply-to": r.apply_to,
        "priority": r.priority,
        "definition": serde_json::from_str::<Value>(&r.definition).unwrap_or(Value::Null),
    });
    match Policy::from_json(kind, &r.vhost, &r.name, &body) {
        Ok(p) => Some(p),
        Err(e) => {
            log::error!("stored policy '{}' of vhost '{}' skipped: {e}", r.name, r.vhost);
            None
        }
    }
}
