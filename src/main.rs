//! The `haremq` binary: flags and config file → [`haremq::start`], then wait for
//! SIGTERM/SIGINT and shut down gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use smol::stream::StreamExt;

/// HareMQ: an AMQP 0-9-1 message broker for RabbitMQ clients.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address and port to accept plain AMQP connections on [default: 0.0.0.0:5672]
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// No plain (non-TLS) listener: only the TLS one (RabbitMQ's `listeners.tcp = none`)
    #[arg(long, conflicts_with = "listen")]
    no_plain: bool,
    /// Address and port of the TLS (AMQPS) listener; needs the config file's [tls] table
    /// for the certificate and key [default: the table's listen, or 0.0.0.0:5671]
    #[arg(long, value_name = "ADDR:PORT")]
    listen_tls: Option<SocketAddr>,
    /// Address and port of the management HTTP API; "" turns it off
    /// [default: the config file's management, or 127.0.0.1:15672]
    #[arg(long, value_name = "ADDR:PORT")]
    management: Option<String>,
    /// Address and port of the management API over HTTPS, with the config file's [tls]
    /// certificate and key [default: the config file's management_tls, or none]
    #[arg(long, value_name = "ADDR:PORT")]
    management_tls: Option<SocketAddr>,
    /// Address and port of the Prometheus metrics endpoint (/metrics); "" turns it off
    /// [default: the config file's prometheus, or 127.0.0.1:15692]
    #[arg(long, value_name = "ADDR:PORT")]
    prometheus: Option<String>,
    /// Directory for durable data, created if missing [default: ./data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// TOML configuration file; flags given on the command line override it
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Start even if the store is damaged or not what the last clean shutdown left
    /// (it needs repair, was rolled back, holds fewer messages, is empty or missing);
    /// without it the broker refuses to start on such a store
    #[arg(long)]
    accept_store_repair: bool,
    /// A RabbitMQ definitions.json to import at start (as RabbitMQ's load_definitions)
    #[arg(long, value_name = "FILE")]
    definitions: Option<PathBuf>,
    /// This node's id in a cluster (with --cluster-listen and --cluster-secret; the
    /// config file's [cluster] table otherwise)
    #[arg(long, value_name = "N")]
    node_id: Option<u64>,
    /// Address and port of the cluster link (node-to-node traffic)
    #[arg(long, value_name = "ADDR:PORT")]
    cluster_listen: Option<SocketAddr>,
    /// A founding node of the cluster, as N@ADDR:PORT (repeat for each)
    #[arg(long = "peer", value_name = "N@ADDR:PORT")]
    peers: Vec<haremq::Peer>,
    /// The secret all nodes of the cluster share [env: HAREMQ_CLUSTER_SECRET]
    #[arg(long, value_name = "SECRET", env = "HAREMQ_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// Take a Raft snapshot every N log entries (default 10000)
    #[arg(long, value_name = "N")]
    cluster_snapshot_every: Option<u64>,
}

fn load_config(args: &Args) -> Result<haremq::Config, String> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| format!("invalid config file {}: {e}", path.display()))?
        }
        None => haremq::Config::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = Some(listen);
    }
    if args.no_plain {
        config.listen = None;
    }
    if let Some(listen) = args.listen_tls {
        match config.tls.as_mut() {
            Some(tls) => tls.listen = listen,
            None => return Err("--listen-tls needs a [tls] table with cert and key in the config file".into()),
        }
    }
    if let Some(addr) = &args.management {
        config.management = match addr.trim() {
            "" | "none" => None,
            a => Some(a.parse().map_err(|e| format!("invalid --management address '{a}': {e}"))?),
        };
    }
    if let Some(addr) = args.management_tls {
        config.management_tls = Some(addr);
    }
    if let Some(addr) = &args.prometheus {
        config.prometheus = match addr.trim() {
            "" | "none" => None,
            a => Some(a.parse().map_err(|e| format!("invalid --prometheus address '{a}': {e}"))?),
        };
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    config.accept_store_repair = args.accept_store_repair;
    if let Some(path) = &args.definitions {
        config.definitions = Some(path.clone());
    }
    cluster_flags(args, &mut config)?;
    Ok(config)
}

/// The cluster flags over the `[cluster]` table: `--node-id` and `--cluster-listen`
/// make a table when the file has none (then `--cluster-secret` is needed too);
/// `--peer`s replace the file's peers.
fn cluster_flags(args: &Args, config: &mut haremq::Config) -> Result<(), String> {
    let any = args.node_id.is_some() || args.cluster_listen.is_some() || !args.peers.is_empty();
    if !any {
        if let (Some(cluster), Some(secret)) = (config.cluster.as_mut(), &args.cluster_secret) {
            cluster.cluster_secret = secret.clone();
        }
        if let (Some(cluster), Some(n)) = (config.cluster.as_mut(), args.cluster_snapshot_every) {
            cluster.snapshot_every = Some(n);
        }
        return Ok(());
    }
    let cluster = match config.cluster.take() {
        Some(c) => c,
        None => haremq::ClusterConfig {
            node_id: args.node_id.ok_or("--node-id is needed to join a cluster")?,
            listen: args.cluster_listen.ok_or("--cluster-listen is needed to join a cluster")?,
            advertise: None,
            peers: Vec::new(),
            cluster_secret: args
                .cluster_secret
                .clone()
                .ok_or("--cluster-secret (or HAREMQ_CLUSTER_SECRET) is needed to join a cluster")?,
            snapshot_every: None,
        },
    };
    let mut cluster = cluster;
    if let Some(id) = args.node_id {
        cluster.node_id = id;
    }
    if let Some(listen) = args.cluster_listen {
        cluster.listen = listen;
    }
    if !args.peers.is_empty() {
        cluster.peers = args.peers.clone();
    }
    if let Some(secret) = &args.cluster_secret {
        cluster.cluster_secret = secret.clone();
    }
    if let Some(n) = args.cluster_snapshot_every {
        cluster.snapshot_every = Some(n);
    }
    config.cluster = Some(cluster);
    Ok(())
}

fn main() -> ExitCode {
    // openraft (the cluster's Raft) logs its state machinery at info: warnings and up
    // unless RUST_LOG asks for more.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,openraft=warn")).init();
    let args = Args::parse();
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut signals = match async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int]) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let handle = match haremq::start(config) {
        Ok(h) => h,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Ok(sig)) = smol::block_on(signals.next()) {
        log::info!("received {sig:?}, shutting down");
    }
    handle.shutdown();
    ExitCode::SUCCESS
}
