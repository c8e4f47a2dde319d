//! The security part of a definitions import: vhosts, users, permissions, topic
//! permissions and limits, through the admin API. Everything is checked before
//! anything changes (names, hashes, regular expressions, limit values); what was
//! applied is recorded so a later refusal (in the topology) can restore it.

use serde_json::Value;

use super::format::Definitions;
use super::import::ImportError;
use crate::admin::{parse_hash, Admin, PermissionInfo, TopicPermissionInfo, UserLimits, VHostLimits};

/// (user, vhost, exchange) of a topic permission.
type TopicKey = (String, String, String);
use crate::auth::permissions::{Permission, TopicPermission};

/// How to put back what the security part of an import changed.
#[derive(Default)]
pub(super) struct Undo {
    vhosts_created: Vec<String>,
    users_created: Vec<String>,
    /// (name, hash, algorithm, tags, limits) of users the import replaced.
    users_replaced: Vec<(String, String, String, Vec<String>, UserLimits)>,
    /// Permissions set: (user, vhost) and what was there before.
    permissions: Vec<((String, String), Option<PermissionInfo>)>,
    /// Topic permissions set: (user, vhost, exchange) and what was there before.
    topic_permissions: Vec<(TopicKey, Option<TopicPermissionInfo>)>,
    /// (vhost, previous limits) of vhost limits set.
    vhost_limits: Vec<(String, VHostLimits)>,
}

impl Undo {
    pub(super) fn apply(self, admin: &Admin) {
        for (vhost, limits) in self.vhost_limits.into_iter().rev() {
            let _ = admin.set_vhost_limits(&vhost, limits);
        }
        for ((user, vhost, exchange), before) in self.topic_permissions.into_iter().rev() {
            let _ = match before {
                Some(t) => admin.set_topic_permissions(&user, &vhost, &exchange, &t.write, &t.read),
                None => admin.clear_topic_permissions(&user, &vhost, Some(&exchange)),
            };
        }
        for ((user, vhost), before) in self.permissions.into_iter().rev() {
            let _ = match before {
                Some(p) => admin.set_permissions(&user, &vhost, &p.configure, &p.write, &p.read),
                None => admin.clear_permissions(&user, &vhost),
            };
        }
        for (name, hash, algorithm, tags, limits) in self.users_replaced.into_iter().rev() {
            let _ = admin.set_password_hash(&name, &hash, &algorithm);
            let _ = admin.set_user_tags(&name, &tags.iter().map(String::as_str).collect::<Vec<_>>());
            let _ = admin.set_user_limits(&name, limits);
        }
        for name in self.users_created.into_iter().rev() {
            let _ = admin.delete_user(&name);
        }
        for name in self.vhosts_created.into_iter().rev() {
            let _ = admin.delete_vhost(&name);
        }
    }
}

/// RabbitMQ writes vhost limits as runtime parameters of component `vhost-limits`.
fn vhost_limit_params(defs: &Definitions) -> Vec<(String, &Value)> {
    defs.parameters
        .iter()
        .filter(|p| p.get("component").and_then(Value::as_str) == Some("vhost-limits"))
        .filter_map(|p| Some((p.get("vhost")?.as_str()?.to_string(), p.get("value")?)))
        .collect()
}

/// A limit value: absent, or a non-negative integer (RabbitMQ's -1 means none).
fn limit(value: &Value, key: &str) -> Result<Option<u64>, String> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if n < 0 => Ok(None),
            Some(n) => Ok(Some(n as u64)),
            None => Err(format!("'{key}' must be an integer, not {v}")),
        },
    }
}

fn user_limits(value: &Value) -> Result<UserLimits, String> {
    Ok(UserLimits { max_connections: limit(value, "max-connections")?, max_channels: limit(value, "max-channels")? })
}

/// Checks every security entry; nothing is changed.
pub(super) fn validate(defs: &Definitions) -> Result<(), ImportError> {
    let bad = |what: String, why: String| ImportError(format!("{what}: {why}"));
    for u in &defs.users {
        let what = format!("user '{}'", u.name);
        if u.name.is_empty() || u.name.len() > 255 {
            return Err(bad(what, "a user name must be 1 to 255 bytes long".into()));
        }
        parse_hash(&u.name, &u.password_hash, &u.hashing_algorithm).map_err(|e| bad(what.clone(), e.to_string()))?;
        user_limits(&u.limits).map_err(|e| bad(what, e))?;
    }
    for v in &defs.vhosts {
        if v.name.is_empty() || v.name.len() > 255 {
            return Err(bad(format!("vhost '{}'", v.name), "a vhost name must be 1 to 255 bytes long".into()));
        }
    }
    for p in &defs.permissions {
        Permission::new(&p.configure, &p.write, &p.read)
            .map_err(|e| bad(format!("permissions of user '{}' in vhost '{}'", p.user, p.vhost), e))?;
    }
    for t in &defs.topic_permissions {
        let tp = TopicPermission { exchange: t.exchange.clone(), write: t.write.clone(), read: t.read.clone() };
        tp.validate().map_err(|e| {
            bad(
                format!("topic permissions of user '{}' on exchange '{}' in vhost '{}'", t.user, t.exchange, t.vhost),
                e,
            )
        })?;
    }
    for (vhost, value) in vhost_limit_params(defs) {
        let what = format!("limits of vhost '{vhost}'");
        limit(value, "max-connections").map_err(|e| bad(what.clone(), e))?;
        limit(value, "max-queues").map_err(|e| bad(what, e))?;
    }
    Ok(())
}

/// Applies the security entries in RabbitMQ's order: users, vhosts, permissions,
/// topic permissions, then vhost limits. A user that exists is updated (hash, tags,
/// limits), as RabbitMQ's import does; a vhost that exists is kept.
pub(super) fn apply(admin: &Admin, defs: &Definitions, undo: &mut Undo) -> Result<(), ImportError> {
    let failed = |what: String| move |e: crate::admin::AdminError| ImportError(format!("{what}: {e}"));
    for u in &defs.users {
        let what = format!("user '{}'", u.name);
        let tags: Vec<&str> = u.tags.0.iter().map(String::as_str).collect();
        let limits = user_limits(&u.limits).map_err(|e| ImportError(format!("{what}: {e}")))?;
        match admin.user(&u.name) {
            None => {
                admin
                    .add_user_with_hash(&u.name, &u.password_hash, &u.hashing_algorithm, &tags)
                    .map_err(failed(what.clone()))?;
                undo.users_created.push(u.name.clone());
            }
            Some(cur) => {
                let same = cur.password_hash.as_deref().unwrap_or("") == u.password_hash
                    && cur.hashing_algorithm == u.hashing_algorithm
                    && cur.tags == u.tags.0;
                if !same {
                    undo.users_replaced.push((
                        cur.name.clone(),
                        cur.password_hash.clone().unwrap_or_default(),
                        cur.hashing_algorithm.to_string(),
                        cur.tags.clone(),
                        cur.limits,
                    ));
                    admin
                        .set_password_hash(&u.name, &u.password_hash, &u.hashing_algorithm)
                        .map_err(failed(what.clone()))?;
                    admin.set_user_tags(&u.name, &tags).map_err(failed(what.clone()))?;
                }
            }
        }
        if limits != UserLimits::default() {
            admin.set_user_limits(&u.name, limits).map_err(failed(what))?;
        }
    }
    for v in &defs.vhosts {
        if admin.vhosts().iter().any(|x| x.name == v.name) {
            continue;
        }
        let meta = v.metadata.as_ref();
        let description = v
            .description
            .as_deref()
            .or_else(|| meta.and_then(|m| m.get("description")).and_then(Value::as_str))
            .unwrap_or("");
        let tags: Vec<&str> = meta
            .and_then(|m| m.get("tags"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        admin.add_vhost_with(&v.name, description, &tags).map_err(failed(format!("vhost '{}'", v.name)))?;
        undo.vhosts_created.push(v.name.clone());
    }
    let current = admin.permissions();
    for p in &defs.permissions {
        let before = current.iter().find(|c| c.user == p.user && c.vhost == p.vhost).cloned();
        admin
            .set_permissions(&p.user, &p.vhost, &p.configure, &p.write, &p.read)
            .map_err(failed(format!("permissions of user '{}' in vhost '{}'", p.user, p.vhost)))?;
        undo.permissions.push(((p.user.clone(), p.vhost.clone()), before));
    }
    let current = admin.topic_permissions();
    for t in &defs.topic_permissions {
        let before =
            current.iter().find(|c| c.user == t.user && c.vhost == t.vhost && c.exchange == t.exchange).cloned();
        admin.set_topic_permissions(&t.user, &t.vhost, &t.exchange, &t.write, &t.read).map_err(failed(format!(
            "topic permissions of user '{}' on exchange '{}' in vhost '{}'",
            t.user, t.exchange, t.vhost
        )))?;
        undo.topic_permissions.push(((t.user.clone(), t.vhost.clone(), t.exchange.clone()), before));
    }
    for (vhost, value) in vhost_limit_params(defs) {
        let what = format!("limits of vhost '{vhost}'");
        let before = admin
            .vhosts()
            .into_iter()
            .find(|v| v.name == vhost)
            .map(|v| v.limits)
            .ok_or_else(|| ImportError(format!("{what}: vhost '{vhost}' does not exist")))?;
        let limits = VHostLimits {
            max_connections: limit(value, "max-connections").map_err(|e| ImportError(format!("{what}: {e}")))?,
            max_queues: limit(value, "max-queues").map_err(|e| ImportError(format!("{what}: {e}")))?,
        };
        admin.set_vhost_limits(&vhost, limits).map_err(failed(what))?;
        undo.vhost_limits.push((vhost, before));
    }
    Ok(())
}
