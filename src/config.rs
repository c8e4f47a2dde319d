//! Broker configuration: defaults, the optional TOML file and the command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

/// Everything the broker needs to start. `Config::default()` is a usable broker on
/// `0.0.0.0:5672` with data in `./data` and the user guest/guest (loopback only).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address and port to accept plain (non-TLS) AMQP connections on; `None` (`listen =
    /// ""` in the file, `--no-plain` on the command line) for no plain listener, e.g.
    /// when only TLS is wanted (RabbitMQ's `listeners.tcp = none`).
    #[serde(deserialize_with = "plain_listen")]
    pub listen: Option<SocketAddr>,
    /// Address and port of the management HTTP API (RabbitMQ's `management.tcp.*`);
    /// `None` (`management = ""`) turns it off. Default `127.0.0.1:15672`, loopback
    /// only, as the API can change everything.
    #[serde(deserialize_with = "plain_listen")]
    pub management: Option<SocketAddr>,
    /// Address and port of the management API over HTTPS (RabbitMQ's
    /// `management.ssl.*`), with the `[tls]` table's certificate and key; `None`
    /// (default) for none.
    #[serde(deserialize_with = "plain_listen")]
    pub management_tls: Option<SocketAddr>,
    /// Address and port of the Prometheus metrics endpoint (`/metrics`, RabbitMQ's
    /// `prometheus.tcp.*`); `None` (`prometheus = ""`) turns it off. Default
    /// `127.0.0.1:15692`.
    #[serde(deserialize_with = "plain_listen")]
    pub prometheus: Option<SocketAddr>,
    /// How often the management API samples counters into rates (ms; RabbitMQ's
    /// `collect_statistics_interval`).
    pub stats_interval_ms: u64,
    /// Directory for the durable store; created if missing.
    pub data_dir: PathBuf,
    /// Heartbeat interval the server proposes, in seconds (0 disables).
    pub heartbeat: u16,
    /// Largest frame the server accepts and proposes, in bytes.
    pub frame_max: u32,
    /// The channel_max the server proposes: the most channels a connection may have open
    /// at once (as RabbitMQ, any channel number up to 65535 may be used; 0 = no limit).
    pub channel_max: u16,
    /// Users allowed to log in.
    pub users: Vec<UserConfig>,
    /// Users that may only connect from a loopback address (RabbitMQ's `loopback_users`).
    pub loopback_users: Vec<String>,
    /// Executor threads; 0 means one per CPU core.
    pub threads: usize,
    /// A consumer holding a delivery unacked longer than this is cancelled (ms; 0
    /// disables; a queue's `x-consumer-timeout` overrides it). RabbitMQ's default.
    pub consumer_timeout_ms: u64,
    /// The memory alarm's limit for message memory, as a fraction of physical memory
    /// (RabbitMQ's `vm_memory_high_watermark`, default 0.4).
    pub memory_high_watermark: f64,
    /// The same limit in bytes; when non-zero it overrides `memory_high_watermark`.
    pub memory_limit: u64,
    /// Publishers are blocked while the data directory's filesystem has less free space
    /// than this, in bytes (RabbitMQ's `disk_free_limit`, default 50 MB; 0 disables).
    pub disk_free_limit: u64,
    /// Start on a store that is damaged or not what the last clean shutdown left
    /// (`--accept-store-repair`; never from the file, so it cannot stay on by
    /// accident): logged as an error, garbage collection skipped.
    #[serde(skip)]
    pub accept_store_repair: bool,
    /// A RabbitMQ `definitions.json` to import at every start (RabbitMQ's
    /// `load_definitions`): what it defines is created if missing; a file that cannot
    /// be imported whole stops the start with an error naming the bad entry.
    pub definitions: Option<PathBuf>,
    /// How long a client has from its TCP connect to `connection.open-ok`, TLS
    /// handshake included (ms; RabbitMQ's `handshake_timeout`).
    pub handshake_timeout_ms: u64,
    /// The TLS (AMQPS) listener: off unless the `[tls]` table is present.
    pub tls: Option<TlsConfig>,
    /// The SASL mechanisms offered in connection.start, in this order (RabbitMQ's
    /// `auth_mechanisms`): any of `PLAIN`, `AMQPLAIN`, `EXTERNAL`. EXTERNAL is offered
    /// only on TLS connections whose client presented a verified certificate.
    pub auth_mechanisms: Vec<String>,
    /// Where EXTERNAL takes the user name from in the client certificate (RabbitMQ's
    /// `ssl_cert_login_from`).
    pub ssl_cert_login_from: CertLoginFrom,
    /// With `ssl_cert_login_from = "subject_alternative_name"`: which kind of SAN
    /// (RabbitMQ's `ssl_cert_login_san_type`).
    pub ssl_cert_login_san_type: SanType,
    /// With `ssl_cert_login_from = "subject_alternative_name"`: which SAN of that kind,
    /// counting from 0 (RabbitMQ's `ssl_cert_login_san_index`).
    pub ssl_cert_login_san_index: usize,
    /// The `[cluster]` table: this node's part in a cluster of HareMQ nodes. Without it
    /// the broker is a single node, exactly as before clustering existed.
    pub cluster: Option<ClusterConfig>,
}

/// The `[cluster]` table (`--node-id`, `--cluster-listen`, `--peer`,
/// `--cluster-secret`): who this node is, where the other nodes reach it, and whom it
/// starts with. Nodes added later join through `haremqctl cluster add` (or the API);
/// `peers` is only the membership a brand-new cluster starts from.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's id, unique and stable across restarts (its Raft identity).
    pub node_id: u64,
    /// Address and port of the cluster link (node-to-node Raft traffic).
    pub listen: SocketAddr,
    /// The address other nodes dial for this node; default `listen` (set it when
    /// `listen` is a wildcard address).
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// The other founding nodes, as `"N@ADDR:PORT"` (this node may be listed too).
    #[serde(default, deserialize_with = "peer_list")]
    pub peers: Vec<Peer>,
    /// The secret every node of the cluster shares; nodes prove they know it to each
    /// other (HMAC challenge) before any Raft message is accepted.
    pub cluster_secret: String,
    /// Take a Raft snapshot (and truncate the log before it) every this many entries
    /// of a group's log; default 10 000.
    #[serde(default)]
    pub snapshot_every: Option<u64>,
}

/// A node of the cluster: its id and cluster-link address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub id: u64,
    pub addr: SocketAddr,
}

impl std::str::FromStr for Peer {
    type Err = String;

    /// `N@ADDR:PORT`, e.g. `2@10.0.0.2:25672`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (id, addr) = s.split_once('@').ok_or_else(|| format!("peer '{s}' is not N@ADDR:PORT"))?;
        let id = id.trim().parse().map_err(|e| format!("peer '{s}': bad node id: {e}"))?;
        let addr = addr.trim().parse().map_err(|e| format!("peer '{s}': bad address: {e}"))?;
        Ok(Peer { id, addr })
    }
}

fn peer_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Peer>, D::Error> {
    Vec::<String>::deserialize(d)?.iter().map(|s| s.parse().map_err(serde::de::Error::custom)).collect()
}

impl ClusterConfig {
    /// The address peers dial for this node.
    pub fn advertised(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.listen)
    }

    /// The founding members: the peers and this node, by id. Errors on an empty
    /// secret, a node id listed with two addresses, or this node listed elsewhere.
    pub fn founders(&self) -> Result<std::collections::BTreeMap<u64, SocketAddr>, String> {
        if self.cluster_secret.trim().is_empty() {
            return Err("cluster: cluster_secret must not be empty".into());
        }
        let mut members = std::collections::BTreeMap::new();
        members.insert(self.node_id, self.advertised());
        for p in &self.peers {
            if p.id == self.node_id {
                continue;
            }
            if let Some(other) = members.insert(p.id, p.addr) {
                if other != p.addr {
                    return Err(format!("cluster: node {} is listed at {other} and at {}", p.id, p.addr));
                }
            }
        }
        Ok(members)
    }
}

/// The `[tls]` table: a second listener that speaks AMQP over TLS 1.2 or 1.3 (RabbitMQ's
/// `listeners.ssl.default` and `ssl_options.*`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Address and port of the TLS listener (`--listen-tls` overrides it).
    #[serde(default = "default_tls_listen")]
    pub listen: SocketAddr,
    /// The server's certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) client certificates are verified against; needed for
    /// `verify_peer`.
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Ask clients for a certificate and verify it against `ca` (RabbitMQ's
    /// `ssl_options.verify = verify_peer`). A client that sends none is still
    /// accepted unless `fail_if_no_peer_cert`.
    #[serde(default)]
    pub verify_peer: bool,
    /// Refuse clients that present no certificate (needs `verify_peer`).
    #[serde(default)]
    pub fail_if_no_peer_cert: bool,
}

/// RabbitMQ's default AMQPS port.
pub const DEFAULT_TLS_PORT: u16 = 5671;

fn default_tls_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_TLS_PORT))
}

/// The default address of the management HTTP API (RabbitMQ's port).
pub const DEFAULT_MANAGEMENT: ([u8; 4], u16) = ([127, 0, 0, 1], 15672);

/// The default address of the Prometheus endpoint (RabbitMQ's port).
pub const DEFAULT_PROMETHEUS: ([u8; 4], u16) = ([127, 0, 0, 1], 15692);

/// `listen = ""` (or `"none"`) turns the plain listener off; the same for `management`.
fn plain_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    match text.trim() {
        "" | "none" => Ok(None),
        addr => addr.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// Which part of a client certificate names the user for SASL EXTERNAL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertLoginFrom {
    /// The subject's common name (several are joined with `,`, as RabbitMQ does).
    #[default]
    CommonName,
    /// The whole subject as an RFC 4514 string, e.g. `CN=alice,O=Example,C=DE`.
    DistinguishedName,
    /// A subject alternative name (see `ssl_cert_login_san_type` and `_index`).
    SubjectAlternativeName,
}

/// The kinds of subject alternative name EXTERNAL can take the user name from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SanType {
    #[default]
    Dns,
    Email,
    Uri,
    Ip,
}

/// The mechanisms RabbitMQ offers by default.
pub fn default_auth_mechanisms() -> Vec<String> {
    vec!["PLAIN".into(), "AMQPLAIN".into()]
}

/// RabbitMQ's default `handshake_timeout`.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// 30 minutes, as RabbitMQ.
pub const DEFAULT_CONSUMER_TIMEOUT_MS: u64 = 30 * 60 * 1000;

/// A user in the built-in user table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    pub password: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 5672))),
            management: Some(SocketAddr::from(DEFAULT_MANAGEMENT)),
            management_tls: None,
            prometheus: Some(SocketAddr::from(DEFAULT_PROMETHEUS)),
            stats_interval_ms: 5000,
            data_dir: PathBuf::from("data"),
            heartbeat: 60,
            frame_max: 131_072,
            channel_max: 2047,
            users: vec![UserConfig { name: "guest".into(), password: "guest".into() }],
            loopback_users: vec!["guest".into()],
            threads: 0,
            consumer_timeout_ms: DEFAULT_CONSUMER_TIMEOUT_MS,
            memory_high_watermark: 0.4,
            memory_limit: 0,
            disk_free_limit: 50_000_000,
            accept_store_repair: false,
            definitions: None,
            handshake_timeout_ms: DEFAULT_HANDSHAKE_TIMEOUT_MS,
            tls: None,
            auth_mechanisms: default_auth_mechanisms(),
            ssl_cert_login_from: CertLoginFrom::default(),
            ssl_cert_login_san_type: SanType::default(),
            ssl_cert_login_san_index: 0,
            cluster: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_table_and_no_plain_listener() {
        let c: Config = toml::from_str(
            r#"
            listen = ""
            auth_mechanisms = ["EXTERNAL", "PLAIN"]
            ssl_cert_login_from = "subject_alternative_name"
            ssl_cert_login_san_type = "email"
            [tls]
            cert = "server.pem"
            key = "server.key"
            ca = "ca.pem"
            verify_peer = true
            fail_if_no_peer_cert = true
            "#,
        )
        .unwrap();
        assert_eq!(c.listen, None);
        assert_eq!(c.management, Some("127.0.0.1:15672".parse().unwrap()));
        let tls = c.tls.unwrap();
        assert_eq!(tls.listen, "0.0.0.0:5671".parse().unwrap());
        assert!(tls.verify_peer && tls.fail_if_no_peer_cert);
        assert_eq!(tls.ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(c.auth_mechanisms, ["EXTERNAL", "PLAIN"]);
        assert_eq!(c.ssl_cert_login_from, CertLoginFrom::SubjectAlternativeName);
        assert_eq!(c.ssl_cert_login_san_type, SanType::Email);
    }

    #[test]
    fn defaults_and_refusals() {
        let c: Config = toml::from_str("listen = \"127.0.0.1:5673\"").unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:5673".parse().unwrap()));
        assert!(c.tls.is_none());
        assert_eq!(c.auth_mechanisms, ["PLAIN", "AMQPLAIN"]);
        assert_eq!(c.handshake_timeout_ms, 10_000);
        assert!(toml::from_str::<Config>("listen = \"nonsense\"").is_err());
        assert!(toml::from_str::<Config>("[tls]\ncert = \"a\"\nkey = \"b\"\nverify = true").is_err());
        assert!(toml::from_str::<Config>("[tls]\ncert = \"a\"").is_err());
        assert!(toml::from_str::<Config>("ssl_cert_login_from = \"nickname\"").is_err());
    }

    #[test]
    fn cluster_table() {
        let c: Config = toml::from_str(
            r#"
            [cluster]
            node_id = 1
            listen = "127.0.0.1:25672"
            peers = ["2@127.0.0.1:25673", "3@127.0.0.1:25674"]
            cluster_secret = "s3cret"
            "#,
        )
        .unwrap();
        let cluster = c.cluster.unwrap();
        let founders = cluster.founders().unwrap();
        assert_eq!(founders.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(founders[&3], "127.0.0.1:25674".parse().unwrap());
        assert!(toml::from_str::<Config>(
            "[cluster]\nnode_id = 1\nlisten = \"127.0.0.1:1\"\npeers = [\"x\"]\ncluster_secret = \"s\""
        )
        .is_err());
        let bad = ClusterConfig { cluster_secret: " ".into(), ..cluster.clone() };
        assert!(bad.founders().is_err());
        let twice = ClusterConfig {
            peers: vec!["2@127.0.0.1:1".parse().unwrap(), "2@127.0.0.1:2".parse().unwrap()],
            ..cluster
        };
        assert!(twice.founders().unwrap_err().contains("node 2"));
        assert!("2@nowhere".parse::<Peer>().is_err());
    }
}
