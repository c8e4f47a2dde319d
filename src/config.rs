//! Broker configuration: defaults, the optional TOML file and the command-line flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Everything the broker needs to start. `Config::default()` is a usable broker on
/// `0.0.0.0:5672` with data in `./data` and the user guest/guest (loopback only).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address and port to accept AMQP connections on.
    pub listen: SocketAddr,
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
}

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
            listen: SocketAddr::from(([0, 0, 0, 0], 5672)),
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
        }
    }
}
