//! A connection's rights: its user's permissions in its vhost, resolved from the
//! grants, and the checks the AMQP layer makes before each operation, with RabbitMQ's
//! refusals (403 ACCESS_REFUSED and its texts).
//!
//! Which operation needs what is RabbitMQ's rule, applied by the AMQP layer:
//! exchange.declare and exchange.delete need configure on the exchange (a new
//! exchange with an `alternate-exchange` also read on itself and write on the
//! alternate); queue.declare and queue.delete configure on the queue (a new queue
//! with `x-dead-letter-exchange` also read on itself and write on that exchange);
//! queue.bind/unbind write on the queue and read on the exchange; exchange.bind/unbind
//! write on the destination and read on the source; basic.publish write on the
//! exchange; basic.consume, basic.get and queue.purge read on the queue. Passive
//! declares need nothing. The default exchange is named `amq.default` for matching.
//! On topic exchanges, topic permissions (where set for the exchange) also check the
//! routing key: write on publish, read on queue.bind/unbind and exchange.bind/unbind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::grants::Grants;
use super::permissions::{Access, Permission, TopicRule, Variables};
use crate::error::{AmqpError, AmqpResult};

/// The kind of a resource in RabbitMQ's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    Exchange,
    Queue,
}

impl ResourceKind {
    fn word(self) -> &'static str {
        match self {
            Self::Exchange => "exchange",
            Self::Queue => "queue",
        }
    }
}

/// The name permissions see for an exchange: the default exchange is `amq.default`.
pub fn exchange_resource_name(name: &str) -> &str {
    if name.is_empty() {
        "amq.default"
    } else {
        name
    }
}

/// One user's rights in one vhost, as of one generation of the grants.
pub struct VHostAccess {
    pub generation: u64,
    user: Arc<str>,
    vhost: Arc<str>,
    permission: Option<Arc<Permission>>,
    /// Topic permissions by exchange, their variables expanded for this connection.
    topic: HashMap<String, TopicRule>,
}

impl VHostAccess {
    /// Reads `user`'s rights in `vhost` from `grants`. A topic permission whose
    /// expansion does not compile (a variable's value broke it) allows nothing.
    pub fn resolve(grants: &Grants, user: &Arc<str>, vhost: &Arc<str>, client_id: Option<&str>) -> Self {
        let generation = grants.generation();
        let vars = Variables { username: user, vhost, client_id };
        let topic = grants
            .topic_permissions(user, vhost)
            .into_iter()
            .map(|t| {
                let rule = t.expand(&vars).unwrap_or_else(|e| {
                    log::warn!("topic permission of '{user}' on '{}' in vhost '{vhost}': {e}", t.exchange);
                    TopicRule { write: none(), read: none() }
                });
                (t.exchange, rule)
            })
            .collect();
        Self { generation, user: user.clone(), vhost: vhost.clone(), permission: grants.permission(user, vhost), topic }
    }

    /// 403 unless the user may `access` the resource.
    pub fn check(&self, access: Access, kind: ResourceKind, name: &str) -> AmqpResult<()> {
        let name = match kind {
            ResourceKind::Exchange => exchange_resource_name(name),
            ResourceKind::Queue => name,
        };
        if self.permission.as_ref().is_some_and(|p| p.allows(access, name)) {
            return Ok(());
        }
        Err(AmqpError::AccessRefused(format!(
            "access to {} '{name}' in vhost '{}' refused for user '{}'",
            kind.word(),
            self.vhost,
            self.user
        )))
    }

    /// The topic permission on `exchange`, if one is set.
    pub fn topic_rule(&self, exchange: &str) -> Option<&TopicRule> {
        if self.topic.is_empty() {
            return None;
        }
        self.topic.get(exchange)
    }

    /// 403 unless a topic permission on `exchange` (a topic exchange) allows
    /// `routing_key`; no topic permission on it allows everything.
    pub fn check_topic(&self, access: Access, exchange: &str, routing_key: &str) -> AmqpResult<()> {
        match self.topic_rule(exchange) {
            Some(rule) if !rule.allows(access, routing_key) => Err(self.topic_refused(exchange, routing_key)),
            _ => Ok(()),
        }
    }

    pub fn topic_refused(&self, exchange: &str, routing_key: &str) -> AmqpError {
        AmqpError::AccessRefused(format!(
            "access to topic '{routing_key}' in exchange '{exchange}' in vhost '{}' refused for user '{}'",
            self.vhost, self.user
        ))
    }
}

fn none() -> super::permissions::Pattern {
    // `$^` can match nothing at all... except the empty string; `[^\s\S]` never does.
    super::permissions::Pattern::new(r"[^\s\S]").expect("valid")
}

/// A connection's view of its rights: resolved at connection.open and again whenever
/// the grants changed since.
pub struct SessionAccess {
    grants: Arc<Grants>,
    user: Arc<str>,
    vhost: Arc<str>,
    current: Mutex<Arc<VHostAccess>>,
}

impl SessionAccess {
    pub fn new(grants: Arc<Grants>, user: &str, vhost: &str) -> Self {
        let (user, vhost): (Arc<str>, Arc<str>) = (user.into(), vhost.into());
        let current = Mutex::new(Arc::new(VHostAccess::resolve(&grants, &user, &vhost, None)));
        Self { grants, user, vhost, current }
    }

    /// The grants' generation now (one relaxed load): cached answers are valid while
    /// it is the one they were made at.
    pub fn generation(&self) -> u64 {
        self.grants.generation()
    }

    /// The rights as of now.
    pub fn current(&self) -> Arc<VHostAccess> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if cur.generation != self.grants.generation() {
            *cur = Arc::new(VHostAccess::resolve(&self.grants, &self.user, &self.vhost, None));
        }
        cur.clone()
    }

    pub fn check(&self, access: Access, kind: ResourceKind, name: &str) -> AmqpResult<()> {
        self.current().check(access, kind, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::permissions::TopicPermission;

    fn grants() -> Arc<Grants> {
        let g = Arc::new(Grants::default());
        g.change(|t| {
            t.permissions
                .insert(("u".into(), "/".into()), Arc::new(Permission::new("^c", "^w|amq.default", "^r").unwrap()));
            t.topic.insert(
                ("u".into(), "/".into()),
                vec![TopicPermission {
                    exchange: "amq.topic".into(),
                    write: "^{username}\\.".into(),
                    read: "^x".into(),
                }],
            );
        });
        g
    }

    #[test]
    fn checks_and_texts() {
        let s = SessionAccess::new(grants(), "u", "/");
        assert!(s.check(Access::Configure, ResourceKind::Queue, "cq").is_ok());
        let err = s.check(Access::Configure, ResourceKind::Queue, "q").unwrap_err();
        assert_eq!(err.to_string(), "ACCESS_REFUSED - access to queue 'q' in vhost '/' refused for user 'u'");
        assert!(s.check(Access::Write, ResourceKind::Exchange, "").is_ok(), "the default exchange is amq.default");
        let err = s.check(Access::Read, ResourceKind::Exchange, "").unwrap_err();
        assert_eq!(
            err.to_string(),
            "ACCESS_REFUSED - access to exchange 'amq.default' in vhost '/' refused for user 'u'"
        );
        let cur = s.current();
        assert!(cur.check_topic(Access::Write, "amq.topic", "u.a").is_ok());
        assert!(cur.check_topic(Access::Write, "amq.topic", "v.a").is_err());
        assert!(cur.check_topic(Access::Write, "other", "v.a").is_ok(), "no topic permission: allowed");
    }

    #[test]
    fn changes_apply_at_the_next_check() {
        let g = grants();
        let s = SessionAccess::new(g.clone(), "u", "/");
        assert!(s.check(Access::Read, ResourceKind::Queue, "rq").is_ok());
        let before = s.generation();
        g.change(|t| t.remove_user("u"));
        assert_ne!(s.generation(), before);
        assert!(s.check(Access::Read, ResourceKind::Queue, "rq").is_err());
        assert!(s.current().permission.is_none());
    }

    #[test]
    fn no_permissions_in_another_vhost() {
        let s = SessionAccess::new(grants(), "u", "other");
        assert!(s.current().permission.is_none());
        let err = s.check(Access::Read, ResourceKind::Queue, "rq").unwrap_err();
        assert_eq!(err.to_string(), "ACCESS_REFUSED - access to queue 'rq' in vhost 'other' refused for user 'u'");
    }
}
