//! RabbitMQ's policies and operator policies: named, per-vhost rules that set
//! queue and exchange arguments by name pattern, changeable at run time.
//!
//! A leaf of the core: the model, its validation (RabbitMQ's texts), and which policy
//! applies to a name. The vhost holds a [`PolicySet`] and hands queues their
//! [`Applied`] policies; queues turn them into effective arguments
//! (`queue::args::QueueArgs::effective`).

pub mod definition;
mod record;

use std::collections::BTreeMap;
use std::sync::Arc;

use regex::Regex;
use serde_json::{json, Map, Value};

pub use definition::Definition;
pub use record::{from_record, record};

/// A policy or an operator policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Policy,
    Operator,
}

/// What a policy applies to (`apply-to`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyTo {
    Queues,
    Exchanges,
    All,
    ClassicQueues,
    QuorumQueues,
    Streams,
}

impl ApplyTo {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queues" => Self::Queues,
            "exchanges" => Self::Exchanges,
            "all" => Self::All,
            "classic_queues" => Self::ClassicQueues,
            "quorum_queues" => Self::QuorumQueues,
            "streams" => Self::Streams,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queues => "queues",
            Self::Exchanges => "exchanges",
            Self::All => "all",
            Self::ClassicQueues => "classic_queues",
            Self::QuorumQueues => "quorum_queues",
            Self::Streams => "streams",
        }
    }

    /// Whether it applies to a queue declared with `x-queue-type` `queue_type`
    /// (`classic`, `quorum` or `stream`).
    fn queues_of_type(self, queue_type: &str) -> bool {
        match self {
            Self::Queues | Self::All => true,
            Self::ClassicQueues => queue_type == "classic",
            Self::QuorumQueues => queue_type == "quorum",
            Self::Streams => queue_type == "stream",
            Self::Exchanges => false,
        }
    }

    fn exchanges(self) -> bool {
        matches!(self, Self::Exchanges | Self::All)
    }
}

/// One policy, validated.
#[derive(Clone, Debug)]
pub struct Policy {
    pub kind: Kind,
    pub vhost: String,
    pub name: String,
    pub pattern: String,
    regex: Regex,
    pub apply_to: ApplyTo,
    pub priority: i64,
    /// As given (keys sorted, as RabbitMQ lists them).
    pub definition: Map<String, Value>,
    pub parsed: Definition,
}

/// "Validation failed" errors are RabbitMQ's `{error_string, ...}`; a missing key is
/// reported alone, as the management API does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyError {
    /// RabbitMQ's `[{key_missing,K}]`.
    KeyMissing(&'static str),
    /// The text after "Validation failed\n\n".
    Invalid(String),
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::KeyMissing(k) => write!(f, "[{{key_missing,{k}}}]"),
            Self::Invalid(text) => write!(f, "Validation failed\n\n{text}\n"),
        }
    }
}

impl Policy {
    /// A policy from its JSON form (`pattern`, `definition`, optional `priority`
    /// (default 0) and `apply-to` (default `all`)), checked as RabbitMQ checks it.
    pub fn from_json(kind: Kind, vhost: &str, name: &str, body: &Value) -> Result<Policy, PolicyError> {
        let pattern = body.get("pattern").ok_or(PolicyError::KeyMissing("pattern"))?;
        let definition = body.get("definition").ok_or(PolicyError::KeyMissing("definition"))?;
        let invalid = |s: String| PolicyError::Invalid(s);
        let priority = match body.get("priority") {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_i64().ok_or_else(|| {
                invalid(format!("priority should be a number, actually was {}", definition::erlang_term(v)))
            })?,
        };
        let apply_to = match body.get("apply-to") {
            None | Some(Value::Null) => ApplyTo::All,
            Some(v) => v.as_str().and_then(ApplyTo::parse).ok_or_else(|| {
                invalid(format!(
                    "apply-to '{}' unrecognised; should be one of: 'queues', 'classic_queues', 'quorum_queues', 'streams', 'exchanges', or 'all'",
                    v.as_str().map_or_else(|| v.to_string(), str::to_string)
                ))
            })?,
        };
        let Some(pattern) = pattern.as_str() else {
            return Err(invalid(format!("pattern should be a binary but was {}", definition::erlang_term(pattern))));
        };
        let regex = Regex::new(pattern)
            .map_err(|e| invalid(format!("pattern should be regular expression but is invalid: {e}")))?;
        let Some(definition) = definition.as_object() else {
            return Err(invalid(format!("definition must be a JSON object, was {definition}")));
        };
        definition::validate(definition, kind == Kind::Operator).map_err(invalid)?;
        Ok(Policy {
            kind,
            vhost: vhost.into(),
            name: name.into(),
            pattern: pattern.into(),
            regex,
            apply_to,
            priority,
            definition: definition.clone(),
            parsed: Definition::parse(definition),
        })
    }

    /// RabbitMQ's JSON form (`GET /api/policies`, definitions files).
    pub fn to_json(&self) -> Value {
        json!({
            "vhost": self.vhost,
            "name": self.name,
            "pattern": self.pattern,
            "apply-to": self.apply_to.as_str(),
            "definition": self.definition,
            "priority": self.priority,
        })
    }

    /// RabbitMQ's match: the pattern anywhere in the name (unanchored).
    pub fn matches(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }
}

/// The policies in force on one queue.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub policy: Option<Arc<Policy>>,
    pub operator: Option<Arc<Policy>>,
}

impl Applied {
    /// The merged definition the queue acts on (RabbitMQ's
    /// `effective_policy_definition`).
    pub fn effective_definition(&self) -> Map<String, Value> {
        definition::merge(self.policy.as_ref().map(|p| &p.definition), self.operator.as_ref().map(|p| &p.definition))
    }

    /// The same policies (by identity): nothing to recompute.
    pub fn same_as(&self, other: &Applied) -> bool {
        let same = |a: &Option<Arc<Policy>>, b: &Option<Arc<Policy>>| match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        same(&self.policy, &other.policy) && same(&self.operator, &other.operator)
    }
}

/// A vhost's policies and operator policies, by name.
#[derive(Clone, Debug, Default)]
pub struct PolicySet {
    policies: BTreeMap<(Kind, String), Arc<Policy>>,
}

impl PolicySet {
    /// Adds or replaces a policy; returns the one it replaced.
    pub fn insert(&mut self, p: Arc<Policy>) -> Option<Arc<Policy>> {
        self.policies.insert((p.kind, p.name.clone()), p)
    }

    pub fn remove(&mut self, kind: Kind, name: &str) -> Option<Arc<Policy>> {
        self.policies.remove(&(kind, name.to_string()))
    }

    pub fn get(&self, kind: Kind, name: &str) -> Option<&Arc<Policy>> {
        self.policies.get(&(kind, name.to_string()))
    }

    /// The policies of one kind, sorted by name.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Arc<Policy>> {
        self.policies.iter().filter(move |((k, _), _)| *k == kind).map(|(_, p)| p)
    }

    /// The matching policy of `kind` with the highest priority. RabbitMQ leaves ties
    /// undefined; HareMQ takes the first by name, so the choice is stable.
    fn best(&self, kind: Kind, applies: impl Fn(ApplyTo) -> bool, name: &str) -> Option<Arc<Policy>> {
        let mut best: Option<&Arc<Policy>> = None;
        for p in self.of_kind(kind) {
            if applies(p.apply_to) && p.matches(name) && best.is_none_or(|b| p.priority > b.priority) {
                best = Some(p);
            }
        }
        best.cloned()
    }

    /// The policy and operator policy of a queue of type `queue_type` (as declared:
    /// `classic`, `quorum` or `stream`).
    pub fn for_queue(&self, name: &str, queue_type: &str) -> Applied {
        let applies = |a: ApplyTo| a.queues_of_type(queue_type);
        Applied { policy: self.best(Kind::Policy, applies, name), operator: self.best(Kind::Operator, applies, name) }
    }

    /// The policy of an exchange (operator policies set queue limits only).
    pub fn for_exchange(&self, name: &str) -> Option<Arc<Policy>> {
        self.best(Kind::Policy, ApplyTo::exchanges, name)
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(kind: Kind, name: &str, body: Value) -> Arc<Policy> {
        Arc::new(Policy::from_json(kind, "/", name, &body).unwrap())
    }

    #[test]
    fn highest_priority_wins_then_name() {
        let mut set = PolicySet::default();
        set.insert(policy(Kind::Policy, "low", json!({"pattern": "^q", "definition": {"max-length": 1}})));
        set.insert(policy(
            Kind::Policy,
            "high",
            json!({"pattern": "q", "definition": {"max-length": 2}, "priority": 5, "apply-to": "queues"}),
        ));
        set.insert(policy(
            Kind::Policy,
            "b-tie",
            json!({"pattern": "^qq", "definition": {"max-length": 3}, "priority": 5}),
        ));
        set.insert(policy(
            Kind::Policy,
            "x",
            json!({"pattern": ".*", "definition": {"alternate-exchange": "ae"}, "priority": 9, "apply-to": "exchanges"}),
        ));
        assert_eq!(set.for_queue("q1", "classic").policy.unwrap().name, "high");
        assert_eq!(set.for_queue("qq", "classic").policy.unwrap().name, "b-tie", "ties go to the first by name");
        assert_eq!(set.for_queue("aq", "classic").policy.unwrap().name, "high", "unanchored");
        assert!(set.for_queue("zzz", "classic").policy.is_none());
        assert_eq!(set.for_exchange("q").unwrap().name, "x");
        assert_eq!(set.for_exchange("zzz").unwrap().name, "x");
        assert!(set.for_queue("q1", "classic").operator.is_none());
        set.insert(policy(
            Kind::Operator,
            "op",
            json!({"pattern": "", "definition": {"max-length": 1}, "apply-to": "queues"}),
        ));
        let a = set.for_queue("q1", "classic");
        assert_eq!(a.operator.as_ref().unwrap().name, "op");
        assert_eq!(a.effective_definition(), json!({"max-length": 1}).as_object().cloned().unwrap());
        set.remove(Kind::Policy, "high");
        assert_eq!(set.for_queue("q1", "classic").policy.unwrap().name, "low");
    }

    #[test]
    fn request_checks() {
        let err = |body: Value| Policy::from_json(Kind::Policy, "/", "p", &body).unwrap_err().to_string();
        assert_eq!(err(json!({"definition": {"max-length": 1}})), "[{key_missing,pattern}]");
        assert_eq!(err(json!({"pattern": "^x"})), "[{key_missing,definition}]");
        assert_eq!(
            err(json!({"pattern": "^x", "definition": {"max-length": 1}, "priority": "5"})),
            "Validation failed\n\npriority should be a number, actually was <<\"5\">>\n"
        );
        assert_eq!(
            err(json!({"pattern": 1, "definition": {"max-length": 1}})),
            "Validation failed\n\npattern should be a binary but was 1\n"
        );
        assert!(err(json!({"pattern": "(", "definition": {"max-length": 1}}))
            .starts_with("Validation failed\n\npattern should be regular expression but is invalid"));
        assert!(err(json!({"pattern": "x", "definition": {"max-length": 1}, "apply-to": "bogus"}))
            .starts_with("Validation failed\n\napply-to 'bogus' unrecognised"));
        let p = policy(Kind::Policy, "p", json!({"pattern": "^x", "definition": {"max-length": 1}}));
        assert_eq!(
            p.to_json(),
            json!({"vhost": "/", "name": "p", "pattern": "^x", "apply-to": "all", "definition": {"max-length": 1}, "priority": 0})
        );
    }
}
