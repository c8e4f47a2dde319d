//! Which fields the table format shows for each kind of object (the JSON format shows
//! everything the API returned). A field the broker does not report is an empty cell.

/// A column: its header and the dotted path of the field it shows.
pub type Column = (&'static str, &'static str);

pub const QUEUES: &[Column] = &[
    ("vhost", "vhost"),
    ("name", "name"),
    ("type", "type"),
    ("durable", "durable"),
    ("auto_delete", "auto_delete"),
    ("messages", "messages"),
    ("ready", "messages_ready"),
    ("unacked", "messages_unacknowledged"),
    ("consumers", "consumers"),
    ("state", "state"),
];

pub const EXCHANGES: &[Column] = &[
    ("vhost", "vhost"),
    ("name", "name"),
    ("type", "type"),
    ("durable", "durable"),
    ("auto_delete", "auto_delete"),
    ("internal", "internal"),
    ("arguments", "arguments"),
];

pub const BINDINGS: &[Column] = &[
    ("vhost", "vhost"),
    ("source", "source"),
    ("destination", "destination"),
    ("destination_type", "destination_type"),
    ("routing_key", "routing_key"),
    ("arguments", "arguments"),
];

pub const CONNECTIONS: &[Column] = &[
    ("name", "name"),
    ("user", "user"),
    ("vhost", "vhost"),
    ("state", "state"),
    ("channels", "channels"),
    ("protocol", "protocol"),
    ("client", "client_properties.product"),
];

pub const CHANNELS: &[Column] = &[
    ("name", "name"),
    ("user", "user"),
    ("vhost", "vhost"),
    ("state", "state"),
    ("consumers", "consumer_count"),
    ("unacked", "messages_unacknowledged"),
    ("prefetch", "prefetch_count"),
    ("confirm", "confirm"),
];

pub const CONSUMERS: &[Column] = &[
    ("vhost", "queue.vhost"),
    ("queue", "queue.name"),
    ("consumer_tag", "consumer_tag"),
    ("channel", "channel_details.name"),
    ("ack_required", "ack_required"),
    ("prefetch", "prefetch_count"),
    ("exclusive", "exclusive"),
    ("active", "active"),
];

pub const VHOSTS: &[Column] =
    &[("name", "name"), ("description", "description"), ("tags", "tags"), ("messages", "messages")];

pub const USERS: &[Column] = &[("name", "name"), ("tags", "tags")];

pub const PERMISSIONS: &[Column] =
    &[("user", "user"), ("vhost", "vhost"), ("configure", "configure"), ("write", "write"), ("read", "read")];

pub const CLUSTER_NODES: &[Column] = &[
    ("id", "id"),
    ("name", "name"),
    ("cluster_address", "cluster_addr"),
    ("voter", "voter"),
    ("reachable", "reachable"),
    ("amqp", "amqp"),
    ("leader", "leader"),
];

pub const ALARMS: &[Column] = &[("node", "node"), ("resource", "resource")];

pub const HEALTH: &[Column] = &[("check", "check"), ("status", "status"), ("reason", "reason")];

pub const MESSAGES: &[Column] = &[
    ("exchange", "exchange"),
    ("routing_key", "routing_key"),
    ("redelivered", "redelivered"),
    ("remaining", "message_count"),
    ("payload_bytes", "payload_bytes"),
    ("payload_encoding", "payload_encoding"),
    ("payload", "payload"),
    ("properties", "properties"),
];

/// The overview as key/value lines.
pub const OVERVIEW: &[Column] = &[
    ("product", "product_name"),
    ("product_version", "product_version"),
    ("rabbitmq_version", "rabbitmq_version"),
    ("management_version", "management_version"),
    ("node", "node"),
    ("cluster_name", "cluster_name"),
    ("connections", "object_totals.connections"),
    ("channels", "object_totals.channels"),
    ("exchanges", "object_totals.exchanges"),
    ("queues", "object_totals.queues"),
    ("consumers", "object_totals.consumers"),
    ("messages", "queue_totals.messages"),
    ("messages_ready", "queue_totals.messages_ready"),
    ("messages_unacknowledged", "queue_totals.messages_unacknowledged"),
    ("publish_rate", "message_stats.publish_details.rate"),
    ("deliver_get_rate", "message_stats.deliver_get_details.rate"),
];
