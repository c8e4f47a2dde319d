//! The command line: global options, then `VERB KIND [options]` in rabbitmqadmin v2's
//! shape (`list queues`, `declare queue --name q`, `delete binding ...`).
//!
//! Global options come before the verb (`haremqctl -u admin -p s3cret list queues`), so
//! that a subcommand's own `--password` (`declare user`) never clashes with the login's.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

/// Printed at the end of `haremqctl --help`: what scripts can rely on.
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  local error (a file that cannot be read or written, an answer that is not JSON)
  2  usage error (unknown command or option, bad value)
  3  broker unreachable (connection refused or timed out, unknown host)
  4  authentication failed (HTTP 401: wrong username or password, not a management user)
  5  not found (HTTP 404: no such queue, exchange, vhost, user, binding ...)
  6  other client error (HTTP 4xx: refused, conflicting declaration, bad argument ...)
  7  server error (HTTP 5xx, also a failed health check: 503)";

/// haremqctl: manage a HareMQ (or RabbitMQ) broker over its management HTTP API.
#[derive(Debug, Parser)]
#[command(name = "haremqctl", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Host of the management API.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port of the management API.
    #[arg(long, default_value_t = 15672)]
    pub port: u16,
    /// The API's base URI (http://HOST:PORT[/PREFIX]); overrides --host and --port.
    #[arg(long, value_name = "URI")]
    pub base_uri: Option<String>,
    /// User to log in as (HTTP basic auth).
    #[arg(short, long, default_value = "guest")]
    pub username: String,
    /// That user's password.
    #[arg(short, long, default_value = "guest")]
    pub password: String,
    /// Virtual host the command works in.
    #[arg(long, default_value = "/")]
    pub vhost: String,
    /// Output format: aligned columns for people, or the API's JSON for scripts.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Seconds to wait for the broker's answer before giving up (exit code 3).
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List objects (in --vhost, or every vhost with --all-vhosts).
    #[command(subcommand)]
    List(List),
    /// Show the broker's overview, its alarms or its health checks.
    #[command(subcommand)]
    Show(Show),
    /// Create objects (or update vhosts, users and permissions).
    #[command(subcommand)]
    Declare(Declare),
    /// Delete objects.
    #[command(subcommand)]
    Delete(Delete),
    /// Remove the ready messages of a queue.
    #[command(subcommand)]
    Purge(Purge),
    /// Fetch messages from a queue (basic.get; for inspection, not for consuming).
    #[command(subcommand)]
    Get(Get),
    /// Publish a message to an exchange.
    #[command(subcommand)]
    Publish(Publish),
    /// Close a client connection.
    #[command(subcommand)]
    Close(Close),
    /// Export the broker's definitions (vhosts, users, permissions, topology).
    #[command(subcommand)]
    Export(Export),
    /// Import definitions from a file (all or nothing).
    #[command(subcommand)]
    Import(Import),
    /// The cluster this node belongs to: its members, and adding or removing one.
    #[command(subcommand)]
    Cluster(Cluster),
}

#[derive(Debug, Subcommand)]
pub enum Cluster {
    /// This node's view: its id, the leader, whether it has a majority, the members.
    Status,
    /// Add a node (started with --node-id and --peer pointing at this cluster): it
    /// receives the log, then becomes a voter. Waits until the change is committed.
    Add(ClusterAdd),
    /// Remove a node from the cluster's voters.
    Remove(ClusterRemove),
}

#[derive(Debug, Args)]
pub struct ClusterAdd {
    /// The new node's id (its --node-id).
    #[arg(long)]
    pub id: u64,
    /// The new node's cluster address (its --cluster-listen), HOST:PORT.
    #[arg(long)]
    pub address: String,
}

#[derive(Debug, Args)]
pub struct ClusterRemove {
    /// The id of the node to remove.
    #[arg(long)]
    pub id: u64,
}

/// Which vhosts a listing covers.
#[derive(Debug, Args)]
pub struct Scope {
    /// List across every virtual host instead of only --vhost.
    #[arg(long)]
    pub all_vhosts: bool,
}

#[derive(Debug, Subcommand)]
pub enum List {
    /// Queues with their message and consumer counts.
    Queues(Scope),
    /// Exchanges.
    Exchanges(Scope),
    /// Bindings (including the default exchange's implicit ones).
    Bindings(Scope),
    /// Client connections.
    Connections(Scope),
    /// Channels of client connections.
    Channels(Scope),
    /// Consumers.
    Consumers(Scope),
    /// Virtual hosts.
    Vhosts,
    /// Users and their tags.
    Users,
    /// Users' permissions.
    Permissions(Scope),
}

#[derive(Debug, Subcommand)]
pub enum Show {
    /// Broker version, node, object and message totals.
    Overview,
    /// Memory and disk alarms in effect (none: an empty list).
    Alarms,
    /// Run health checks (/api/health/checks/...); a failed one exits with 7.
    Health(HealthArgs),
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// A check to run; repeat for several. Default: all of them.
    #[arg(
        long = "check",
        value_enum,
        default_values_t = [
            HealthCheck::Alarms,
            HealthCheck::LocalAlarms,
            HealthCheck::VirtualHosts,
            HealthCheck::NodeIsQuorumCritical,
            HealthCheck::NodeIsMirrorSyncCritical,
        ]
    )]
    pub checks: Vec<HealthCheck>,
    /// Also check that the broker listens on this port (repeatable; added to the checks).
    #[arg(long = "port-listener", value_name = "PORT")]
    pub ports: Vec<u16>,
    /// Also check that a listener for this protocol runs: amqp, amqp/ssl, http (repeatable).
    #[arg(long = "protocol-listener", value_name = "PROTOCOL")]
    pub protocols: Vec<String>,
}

/// RabbitMQ's health checks that take no parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HealthCheck {
    Alarms,
    LocalAlarms,
    VirtualHosts,
    NodeIsQuorumCritical,
    NodeIsMirrorSyncCritical,
}

impl HealthCheck {
    /// The check's path segment under `/api/health/checks/`.
    pub fn segment(self) -> &'static str {
        match self {
            HealthCheck::Alarms => "alarms",
            HealthCheck::LocalAlarms => "local-alarms",
            HealthCheck::VirtualHosts => "virtual-hosts",
            HealthCheck::NodeIsQuorumCritical => "node-is-quorum-critical",
            HealthCheck::NodeIsMirrorSyncCritical => "node-is-mirror-sync-critical",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Declare {
    /// Declare a queue in --vhost.
    Queue(DeclareQueue),
    /// Declare an exchange in --vhost.
    Exchange(DeclareExchange),
    /// Bind a queue or exchange to an exchange in --vhost.
    Binding(BindingArgs),
    /// Create a virtual host (or update its description and tags).
    Vhost(DeclareVhost),
    /// Create a user (or change its password and tags).
    User(DeclareUser),
    /// Grant a user permissions in --vhost.
    Permissions(DeclarePermissions),
}

#[derive(Debug, Args)]
pub struct DeclareQueue {
    /// Queue name.
    #[arg(long)]
    pub name: String,
    /// Queue type (x-queue-type): classic, quorum, stream.
    #[arg(long = "type", value_name = "TYPE")]
    pub queue_type: Option<String>,
    /// Survive a broker restart.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub durable: bool,
    /// Delete the queue once its last consumer is gone.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub auto_delete: bool,
    /// Optional arguments as a JSON object, e.g. '{"x-max-length": 10}'.
    #[arg(long, value_parser = json_object, value_name = "JSON")]
    pub arguments: Option<Value>,
}

#[derive(Debug, Args)]
pub struct DeclareExchange {
    /// Exchange name.
    #[arg(long)]
    pub name: String,
    /// Exchange type: direct, fanout, topic, headers, x-consistent-hash, ...
    #[arg(long = "type", value_name = "TYPE", default_value = "direct")]
    pub exchange_type: String,
    /// Survive a broker restart.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    pub durable: bool,
    /// Delete the exchange once its last binding is gone.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub auto_delete: bool,
    /// Clients may not publish to it directly (only other exchanges route to it).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    pub internal: bool,
    /// Optional arguments as a JSON object, e.g. '{"alternate-exchange": "ae"}'.
    #[arg(long, value_parser = json_object, value_name = "JSON")]
    pub arguments: Option<Value>,
}

/// A binding: from an exchange to a queue or an exchange.
#[derive(Debug, Args)]
pub struct BindingArgs {
    /// The exchange messages come from.
    #[arg(long)]
    pub source: String,
    /// The queue or exchange they go to.
    #[arg(long)]
    pub destination: String,
    /// Whether the destination is a queue or an exchange.
    #[arg(long, value_enum, default_value_t = DestinationType::Queue)]
    pub destination_type: DestinationType,
    /// The binding's routing key (a pattern for topic exchanges).
    #[arg(long, default_value = "")]
    pub routing_key: String,
    /// Binding arguments as a JSON object (headers exchanges match on them).
    #[arg(long, value_parser = json_object, value_name = "JSON")]
    pub arguments: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DestinationType {
    Queue,
    Exchange,
}

impl DestinationType {
    /// The API's path letter: `/api/bindings/{vhost}/e/{source}/q|e/{destination}`.
    pub fn letter(self) -> &'static str {
        match self {
            DestinationType::Queue => "q",
            DestinationType::Exchange => "e",
        }
    }

    pub fn noun(self) -> &'static str {
        match self {
            DestinationType::Queue => "queue",
            DestinationType::Exchange => "exchange",
        }
    }
}

#[derive(Debug, Args)]
pub struct DeclareVhost {
    /// Virtual host name.
    #[arg(long)]
    pub name: String,
    /// Free text shown in listings.
    #[arg(long)]
    pub description: Option<String>,
    /// Comma-separated tags.
    #[arg(long)]
    pub tags: Option<String>,
    /// Queue type for queues declared without x-queue-type.
    #[arg(long)]
    pub default_queue_type: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeclareUser {
    /// User name.
    #[arg(long)]
    pub name: String,
    /// The user's password.
    #[arg(long, conflicts_with = "password_hash", required_unless_present = "password_hash")]
    pub password: Option<String>,
    /// A RabbitMQ password hash (base64 of salt and digest) instead of a password.
    #[arg(long)]
    pub password_hash: Option<String>,
    /// Hash algorithm of --password-hash: rabbit_password_hashing_sha256 (default), _sha512, _md5.
    #[arg(long, requires = "password_hash")]
    pub hashing_algorithm: Option<String>,
    /// Comma-separated tags: administrator, monitoring, management, policymaker.
    #[arg(long, default_value = "")]
    pub tags: String,
}

#[derive(Debug, Args)]
pub struct DeclarePermissions {
    /// The user granted the permissions.
    #[arg(long)]
    pub user: String,
    /// Regex of resource names the user may configure (declare, delete).
    #[arg(long)]
    pub configure: String,
    /// Regex of resource names the user may write to (publish, bind to).
    #[arg(long)]
    pub write: String,
    /// Regex of resource names the user may read from (consume, bind from).
    #[arg(long)]
    pub read: String,
}

#[derive(Debug, Subcommand)]
pub enum Delete {
    /// Delete a queue in --vhost.
    Queue(DeleteQueue),
    /// Delete an exchange in --vhost.
    Exchange(DeleteExchange),
    /// Remove a binding in --vhost (found by source, destination, routing key and arguments).
    Binding(BindingArgs),
    /// Delete a virtual host and everything in it.
    Vhost(DeleteNamed),
    /// Delete a user (its connections are closed).
    User(DeleteNamed),
    /// Revoke a user's permissions in --vhost.
    Permissions(DeletePermissions),
}

#[derive(Debug, Args)]
pub struct DeleteQueue {
    /// Queue name.
    #[arg(long)]
    pub name: String,
    /// Only if the queue has no messages (else a 400 from the broker, exit code 6).
    #[arg(long)]
    pub if_empty: bool,
    /// Only if the queue has no consumers.
    #[arg(long)]
    pub if_unused: bool,
    /// A missing queue is not an error.
    #[arg(long)]
    pub idempotently: bool,
}

#[derive(Debug, Args)]
pub struct DeleteExchange {
    /// Exchange name.
    #[arg(long)]
    pub name: String,
    /// Only if nothing is bound to or from the exchange.
    #[arg(long)]
    pub if_unused: bool,
    /// A missing exchange is not an error.
    #[arg(long)]
    pub idempotently: bool,
}

#[derive(Debug, Args)]
pub struct DeleteNamed {
    /// Name of the object.
    #[arg(long)]
    pub name: String,
    /// A missing object is not an error.
    #[arg(long)]
    pub idempotently: bool,
}

#[derive(Debug, Args)]
pub struct DeletePermissions {
    /// The user whose permissions in --vhost are revoked.
    #[arg(long)]
    pub user: String,
    /// Missing permissions are not an error.
    #[arg(long)]
    pub idempotently: bool,
}

#[derive(Debug, Subcommand)]
pub enum Purge {
    /// Remove a queue's ready messages (unacknowledged ones stay).
    Queue(PurgeQueue),
}

#[derive(Debug, Args)]
pub struct PurgeQueue {
    /// Queue name.
    #[arg(long)]
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum Get {
    /// Fetch up to --count messages from a queue.
    Messages(GetMessages),
}

#[derive(Debug, Args)]
pub struct GetMessages {
    /// Queue to fetch from.
    #[arg(long)]
    pub queue: String,
    /// How many messages at most.
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// What happens to fetched messages: put back (requeue) or removed.
    #[arg(long, visible_alias = "ack-mode", value_enum, default_value_t = AckMode::AckRequeueTrue)]
    pub ackmode: AckMode,
    /// Payload encoding in the answer: auto (text when it is UTF-8, else base64) or base64.
    #[arg(long, value_enum, default_value_t = GetEncoding::Auto)]
    pub encoding: GetEncoding,
    /// Cut payloads longer than this many bytes.
    #[arg(long, value_name = "BYTES")]
    pub truncate: Option<u64>,
}

/// The API's `ackmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum AckMode {
    /// Acknowledge, then requeue (the message stays, marked redelivered).
    AckRequeueTrue,
    /// Acknowledge and remove.
    AckRequeueFalse,
    /// Reject and requeue.
    RejectRequeueTrue,
    /// Reject without requeue (dead-lettered if the queue says so).
    RejectRequeueFalse,
}

impl AckMode {
    pub fn as_api(self) -> &'static str {
        match self {
            AckMode::AckRequeueTrue => "ack_requeue_true",
            AckMode::AckRequeueFalse => "ack_requeue_false",
            AckMode::RejectRequeueTrue => "reject_requeue_true",
            AckMode::RejectRequeueFalse => "reject_requeue_false",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GetEncoding {
    Auto,
    Base64,
}

#[derive(Debug, Subcommand)]
pub enum Publish {
    /// Publish one message (prints whether it was routed).
    Message(PublishMessage),
}

#[derive(Debug, Args)]
pub struct PublishMessage {
    /// Exchange to publish to; "" (the default) is the default exchange.
    #[arg(long, default_value = "")]
    pub exchange: String,
    /// Routing key (a queue name for the default exchange).
    #[arg(long, default_value = "")]
    pub routing_key: String,
    /// The message body.
    #[arg(long)]
    pub payload: String,
    /// How --payload is written: string, or base64 for binary bodies.
    #[arg(long, value_enum, default_value_t = PayloadEncoding::String)]
    pub payload_encoding: PayloadEncoding,
    /// Message properties as a JSON object, e.g. '{"delivery_mode": 2, "headers": {"k": "v"}}'.
    #[arg(long, value_parser = json_object, value_name = "JSON")]
    pub properties: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PayloadEncoding {
    String,
    Base64,
}

#[derive(Debug, Subcommand)]
pub enum Close {
    /// Close a client connection by name (as `list connections` shows it).
    Connection(CloseConnection),
}

#[derive(Debug, Args)]
pub struct CloseConnection {
    /// The connection's name, e.g. "127.0.0.1:40000 -> 127.0.0.1:5672".
    pub name: String,
    /// Text the client gets with connection.close (320 CONNECTION_FORCED).
    #[arg(long, default_value = "closed by haremqctl")]
    pub reason: String,
}

#[derive(Debug, Subcommand)]
pub enum Export {
    /// Write every definition as RabbitMQ's definitions JSON.
    Definitions(ExportDefinitions),
}

#[derive(Debug, Args)]
pub struct ExportDefinitions {
    /// File to write (standard output when absent).
    #[arg(long)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Import {
    /// Import a definitions JSON file (as exported by HareMQ or RabbitMQ).
    Definitions(ImportDefinitions),
}

#[derive(Debug, Args)]
pub struct ImportDefinitions {
    /// The definitions file.
    #[arg(long)]
    pub file: PathBuf,
}

/// Parses an option's value as a JSON object (a usage error, exit 2, if it is not one).
fn json_object(text: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("expected a JSON object, like '{\"key\": \"value\"}'".to_string()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn booleans_take_an_optional_value() {
        let cli = Cli::try_parse_from([
            "haremqctl",
            "declare",
            "queue",
            "--name",
            "q",
            "--durable",
            "false",
            "--auto-delete",
        ])
        .unwrap();
        let Command::Declare(Declare::Queue(q)) = cli.command else { panic!("parsed as {:?}", cli.command) };
        assert!(!q.durable);
        assert!(q.auto_delete);
    }

    #[test]
    fn json_options_must_be_objects() {
        assert!(json_object("{\"a\": 1}").is_ok());
        assert!(json_object("[1]").is_err());
        assert!(json_object("{").is_err());
    }
}
