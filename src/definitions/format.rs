//! RabbitMQ's `definitions.json`, as `rabbitmqctl export_definitions` and the management
//! API write it (3.10): every section optional, unknown fields ignored, so a file from
//! any RabbitMQ 3.x reads.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A whole definitions file.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Definitions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rabbit_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rabbitmq_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_version: Option<String>,
    pub users: Vec<UserDef>,
    pub vhosts: Vec<VhostDef>,
    pub permissions: Vec<PermissionDef>,
    pub topic_permissions: Vec<TopicPermissionDef>,
    /// Runtime parameters (shovels, federation upstreams…): HareMQ does not act on them;
    /// an import reports them and an export carries none.
    pub parameters: Vec<Value>,
    pub global_parameters: Vec<Value>,
    /// Policies (RabbitMQ's JSON form: vhost, name, pattern, apply-to, definition,
    /// priority). Operator policies are not part of definitions, as in RabbitMQ 3.10.
    pub policies: Vec<Value>,
    pub queues: Vec<QueueDef>,
    pub exchanges: Vec<ExchangeDef>,
    pub bindings: Vec<BindingDef>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct UserDef {
    pub name: String,
    #[serde(default)]
    pub password_hash: String,
    #[serde(default = "default_hashing")]
    pub hashing_algorithm: String,
    #[serde(default)]
    pub tags: Tags,
    #[serde(default)]
    pub limits: Value,
}

fn default_hashing() -> String {
    "rabbit_password_hashing_sha256".into()
}

/// User tags: RabbitMQ 3.10 writes a list, older versions a comma-separated string;
/// both are read, a list is written.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Tags(pub Vec<String>);

impl<'de> Deserialize<'de> for Tags {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            List(Vec<String>),
            Text(String),
        }
        Ok(Tags(match Either::deserialize(d)? {
            Either::List(v) => v,
            Either::Text(s) => s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect(),
        }))
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct VhostDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Value>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct PermissionDef {
    pub user: String,
    pub vhost: String,
    pub configure: String,
    pub write: String,
    pub read: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct TopicPermissionDef {
    pub user: String,
    pub vhost: String,
    pub exchange: String,
    pub write: String,
    pub read: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct QueueDef {
    pub name: String,
    pub vhost: String,
    #[serde(default = "yes")]
    pub durable: bool,
    #[serde(default)]
    pub auto_delete: bool,
    #[serde(default)]
    pub arguments: Map<String, Value>,
    /// 3.10 and later also write the queue type here (it is in the arguments too).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub queue_type: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ExchangeDef {
    pub name: String,
    pub vhost: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default = "yes")]
    pub durable: bool,
    #[serde(default)]
    pub auto_delete: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub arguments: Map<String, Value>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct BindingDef {
    pub source: String,
    pub vhost: String,
    pub destination: String,
    pub destination_type: String,
    #[serde(default)]
    pub routing_key: String,
    #[serde(default)]
    pub arguments: Map<String, Value>,
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_read_as_a_list_or_as_rabbitmqs_older_comma_separated_string() {
        let list: UserDef = serde_json::from_str(r#"{"name": "a", "tags": ["administrator", "monitoring"]}"#).unwrap();
        let text: UserDef = serde_json::from_str(r#"{"name": "a", "tags": "administrator, monitoring"}"#).unwrap();
        let none: UserDef = serde_json::from_str(r#"{"name": "a", "tags": ""}"#).unwrap();
        assert_eq!(list.tags, Tags(vec!["administrator".into(), "monitoring".into()]));
        assert_eq!(text.tags, list.tags);
        assert!(none.tags.0.is_empty());
        assert_eq!(serde_json::to_value(&text.tags).unwrap(), serde_json::json!(["administrator", "monitoring"]));
    }

    #[test]
    fn every_section_is_optional_and_unknown_fields_are_ignored() {
        let d: Definitions =
            serde_json::from_str(r#"{"rabbit_version": "3.8.9", "explicit_future_field": 1}"#).unwrap();
        assert!(d.queues.is_empty() && d.users.is_empty());
        let x: ExchangeDef = serde_json::from_str(r#"{"name": "x", "vhost": "/", "type": "topic"}"#).unwrap();
        assert!(x.durable && !x.internal && !x.auto_delete);
    }
}
