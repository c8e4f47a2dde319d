//! Permissions as RabbitMQ defines them: per (user, vhost) three regular expressions —
//! configure, write, read — matched against resource names, and per (user, vhost,
//! exchange) topic permissions: write and read expressions matched against routing
//! keys on topic exchanges.
//!
//! Matching is RabbitMQ's: an unanchored search (`re:run`), so `a` allows every name
//! containing an `a`, and `^a$` only `a`; the empty expression allows nothing but the
//! empty name (RabbitMQ reads it as `^$`). Expressions are compiled once, when set;
//! one the `regex` crate cannot compile (PCRE look-around and back-references) is
//! refused when it is set.

use regex::Regex;

/// What an operation needs on a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Configure,
    Write,
    Read,
}

/// A compiled permission expression and the text it was set with.
#[derive(Clone, Debug)]
pub struct Pattern {
    pub text: String,
    regex: Regex,
}

impl Pattern {
    /// Compiles `text` as RabbitMQ reads it (the empty expression is `^$`).
    pub fn new(text: &str) -> Result<Self, String> {
        let source = if text.is_empty() { "^$" } else { text };
        let regex = Regex::new(source).map_err(|e| format!("invalid regular expression '{text}': {e}"))?;
        Ok(Self { text: text.to_string(), regex })
    }

    /// Whether `name` matches anywhere (unanchored, as RabbitMQ's `re:run`).
    pub fn allows(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }
}

/// A user's permissions in one vhost.
#[derive(Clone, Debug)]
pub struct Permission {
    pub configure: Pattern,
    pub write: Pattern,
    pub read: Pattern,
}

impl Permission {
    pub fn new(configure: &str, write: &str, read: &str) -> Result<Self, String> {
        Ok(Self { configure: Pattern::new(configure)?, write: Pattern::new(write)?, read: Pattern::new(read)? })
    }

    /// Full rights: `.*` for all three.
    pub fn all() -> Self {
        Self::new(".*", ".*", ".*").expect("valid")
    }

    pub fn allows(&self, access: Access, name: &str) -> bool {
        match access {
            Access::Configure => self.configure.allows(name),
            Access::Write => self.write.allows(name),
            Access::Read => self.read.allows(name),
        }
    }
}

/// A user's topic permission on one exchange of one vhost, as set: the expressions
/// may hold `{username}`, `{vhost}` and `{client_id}`, expanded per connection
/// ([`TopicPermission::expand`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicPermission {
    pub exchange: String,
    pub write: String,
    pub read: String,
}

/// A topic permission with its variables expanded for one connection, compiled.
#[derive(Clone, Debug)]
pub struct TopicRule {
    pub write: Pattern,
    pub read: Pattern,
}

/// The values a connection gives the topic-permission variables. RabbitMQ's AMQP
/// 0-9-1 connections give `username` and `vhost` only (`client_id` comes from MQTT
/// and other plugin connections); a variable without a value stays literal text.
pub struct Variables<'a> {
    pub username: &'a str,
    pub vhost: &'a str,
    pub client_id: Option<&'a str>,
}

impl TopicPermission {
    /// Checks that the expressions compile (with the variables as literal text).
    pub fn validate(&self) -> Result<(), String> {
        let none = Variables { username: "", vhost: "", client_id: None };
        self.expand(&none).map(|_| ())
    }

    /// Expands the variables (plain text substitution, as RabbitMQ's
    /// `binary:replace`: values are not escaped) and compiles both expressions.
    pub fn expand(&self, vars: &Variables<'_>) -> Result<TopicRule, String> {
        let expand = |text: &str| -> Result<Pattern, String> {
            if text.is_empty() {
                return Pattern::new("");
            }
            let mut s = text.replace("{username}", vars.username).replace("{vhost}", vars.vhost);
            s = match vars.client_id {
                Some(id) => s.replace("{client_id}", id),
                // PCRE reads an unexpanded `{client_id}` as literal text; the regex
                // crate needs the braces escaped to do the same.
                None => s.replace("{client_id}", r"\{client_id\}"),
            };
            let regex = Regex::new(&s).map_err(|e| format!("invalid regular expression '{text}': {e}"))?;
            Ok(Pattern { text: text.to_string(), regex })
        };
        Ok(TopicRule { write: expand(&self.write)?, read: expand(&self.read)? })
    }
}

impl TopicRule {
    pub fn allows(&self, access: Access, routing_key: &str) -> bool {
        match access {
            Access::Write => self.write.allows(routing_key),
            Access::Read => self.read.allows(routing_key),
            Access::Configure => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unanchored_as_rabbitmq() {
        let p = Permission::new("^amq\\.gen-", "orders", "^(q1|q2)$").unwrap();
        assert!(p.allows(Access::Configure, "amq.gen-abc"));
        assert!(!p.allows(Access::Configure, "x.amq.gen-abc"));
        assert!(p.allows(Access::Write, "my-orders-x"), "a search, not a full match");
        assert!(!p.allows(Access::Write, "order"));
        assert!(p.allows(Access::Read, "q1"));
        assert!(!p.allows(Access::Read, "q10"));
    }

    #[test]
    fn empty_expression_allows_nothing() {
        let p = Permission::new("", "", ".*").unwrap();
        assert!(!p.allows(Access::Configure, "q"));
        assert!(!p.allows(Access::Write, "amq.default"));
        assert!(p.allows(Access::Read, "anything"));
    }

    #[test]
    fn invalid_expressions_are_refused() {
        let err = Permission::new("(", ".*", ".*").unwrap_err();
        assert!(err.starts_with("invalid regular expression '('"), "{err}");
        assert!(TopicPermission { exchange: "x".into(), write: "(?<=a)b".into(), read: ".*".into() }
            .validate()
            .is_err());
    }

    #[test]
    fn topic_variables_expand() {
        let t = TopicPermission {
            exchange: "amq.topic".into(),
            write: "^{username}\\.{vhost}\\.".into(),
            read: "^{client_id}$".into(),
        };
        let rule = t.expand(&Variables { username: "alice", vhost: "prod", client_id: None }).unwrap();
        assert!(rule.allows(Access::Write, "alice.prod.x"));
        assert!(!rule.allows(Access::Write, "bob.prod.x"));
        // Without a client id the placeholder is literal text, as in RabbitMQ.
        assert!(rule.allows(Access::Read, "{client_id}"));
        assert!(!rule.allows(Access::Read, "c1"));
        let rule = t.expand(&Variables { username: "alice", vhost: "prod", client_id: Some("c1") }).unwrap();
        assert!(rule.allows(Access::Read, "c1"));
        // Empty is ^$.
        let t = TopicPermission { exchange: "x".into(), write: "".into(), read: "".into() };
        let rule = t.expand(&Variables { username: "u", vhost: "/", client_id: None }).unwrap();
        assert!(!rule.allows(Access::Write, "a"));
        assert!(rule.allows(Access::Write, ""));
    }
}
