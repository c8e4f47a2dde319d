//! The listeners (plain TCP, and TLS when configured), their accept loops, the executor
//! threads and shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use smol::future;
use smol::net::TcpListener;
use smol::Executor;

use crate::broker::Broker;
use crate::config::Config;
use crate::store::redb_store::RedbStore;
use crate::store::{Store, StoreHandle};
use crate::tls::Acceptor;

/// Stack of each executor thread. Frame handling is synchronous and its depth bounded
/// (field tables nest at most `wire::nesting::MAX_NESTING` levels before `amq-protocol`
/// recurses into them); 8 MiB, the usual main-thread size, instead of std's 2 MiB
/// leaves room for unoptimised builds and deep call chains (routing, dead-lettering).
/// It is reserved address space: only the pages a thread touches take memory.
const EXECUTOR_STACK_SIZE: usize = 8 << 20;

/// A running broker. Dropping it shuts the broker down.
pub struct BrokerHandle {
    local_addr: SocketAddr,
    plain_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    management_addr: Option<SocketAddr>,
    management_tls_addr: Option<SocketAddr>,
    prometheus_addr: Option<SocketAddr>,
    broker: Arc<Broker>,
    /// This node's part in its cluster (None: a single node).
    cluster: Option<Arc<crate::cluster::Cluster>>,
    stop: Option<smol::channel::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl BrokerHandle {
    /// The address the broker accepts plain AMQP connections on (useful with port 0);
    /// the TLS listener's when there is no plain one.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The broker's definitions as a RabbitMQ `definitions.json` document.
    pub fn export_definitions(&self) -> String {
        let defs = crate::definitions::export(&self.broker);
        serde_json::to_string_pretty(&defs).unwrap_or_default()
    }

    /// Imports a RabbitMQ `definitions.json` document, all or nothing; the error names
    /// the entry that was refused.
    pub fn import_definitions(&self, json: &str) -> Result<(), String> {
        let defs: crate::definitions::Definitions =
            serde_json::from_str(json).map_err(|e| format!("invalid definitions: {e}"))?;
        crate::definitions::import(&self.broker, &defs).map(|_| ()).map_err(|e| e.to_string())
    }

    /// The administration API: vhosts, users, permissions and limits.
    pub fn admin(&self) -> crate::admin::Admin {
        crate::admin::Admin::new(self.broker.clone())
    }

    /// The plain listener's address, if there is one.
    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.plain_addr
    }

    /// The TLS (AMQPS) listener's address, if TLS is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The management HTTP API's address, if it is on (and could bind its port).
    pub fn management_addr(&self) -> Option<SocketAddr> {
        self.management_addr
    }

    /// The management HTTP API's HTTPS address, if it is on (and could bind its port).
    pub fn management_tls_addr(&self) -> Option<SocketAddr> {
        self.management_tls_addr
    }

    /// The Prometheus endpoint's address, if it is on (and could bind its port).
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.prometheus_addr
    }

    /// The cluster link's address, when the broker is a node of a cluster.
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.cluster.as_ref().map(|c| c.local_addr())
    }

    /// Stops accepting, closes client connections with 320 CONNECTION_FORCED and waits
    /// for the broker's threads to finish.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let Some(stop) = self.stop.take() else {
            return;
        };
        self.broker.begin_shutdown();
        // Give connections a moment to flush their close frames and tear down.
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.broker.connection_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(stop);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(cluster) = &self.cluster {
            cluster.shutdown();
        }
        // Connections are gone: commit what they sent and stop the writer.
        if let Some(store) = &self.broker.store {
            store.shutdown();
        }
        log::info!("broker on {} stopped", self.local_addr);
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Binds a listener.
fn bind(addr: SocketAddr) -> io::Result<(TcpListener, SocketAddr)> {
    let std_listener = std::net::TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let local = std_listener.local_addr()?;
    Ok((TcpListener::try_from(std_listener)?, local))
}

/// Binds the listeners and starts the broker on background threads. Returns once the
/// broker accepts connections.
pub fn start(config: Config) -> io::Result<BrokerHandle> {
    crate::auth::mechanisms::validate(&config.auth_mechanisms).map_err(io::Error::other)?;
    // Certificate and key problems are start-up errors, before anything is bound.
    let acceptor = Acceptor::from_config(&config)?.map(Arc::new);
    if config.listen.is_none() && acceptor.is_none() {
        return Err(io::Error::other("no listener: the plain one is off (listen = \"\") and there is no [tls] table"));
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        io::Error::new(e.kind(), format!("cannot create data directory {}: {e}", config.data_dir.display()))
    })?;
    let plain = config.listen.map(bind).transpose()?;
    if config.management_tls.is_some() && acceptor.is_none() {
        return Err(io::Error::other("management_tls needs a [tls] table with cert and key"));
    }
    let management_acceptor = acceptor.clone();
    let tls = match (&config.tls, acceptor) {
        (Some(t), Some(acceptor)) => Some((bind(t.listen)?, acceptor)),
        _ => None,
    };
    let plain_addr = plain.as_ref().map(|(_, a)| *a);
    let tls_addr = tls.as_ref().map(|((_, a), _)| *a);
    let local_addr = plain_addr.or(tls_addr).ok_or_else(|| io::Error::other("no listener"))?;
    let mut store = RedbStore::open_with(&config.data_dir, config.accept_store_repair)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let snapshot = store.load().map_err(|e| io::Error::other(e.to_string()))?;
    let next_message = snapshot.max_message_id + 1;
    let next_queue = snapshot.queues.iter().map(|q| q.id).max().map_or(1, |q| q + 1);
    let store = StoreHandle::start(Box::new(store), next_message, next_queue)?;
    let streams_dir = config.data_dir.join("streams");
    sweep_streams(&streams_dir, &snapshot);
    store.set_streams_dir(streams_dir);
    let config_threads = config.threads;
    let config_management = config.management;
    let config_management_tls = config.management_tls.zip(management_acceptor);
    let config_prometheus = config.prometheus;
    let definitions = config.definitions.clone();
    let broker = Broker::new(config, Some(store), Some(snapshot));
    if let Some(path) = definitions {
        let defs = crate::definitions::read_file(&path).map_err(io::Error::other)?;
        let report = crate::definitions::import(&broker, &defs).map_err(|e| io::Error::other(e.to_string()))?;
        log::info!(
            "imported definitions from {}: {} exchanges, {} queues, {} bindings created",
            path.display(),
            report.exchanges_created,
            report.queues_created,
            report.bindings_created
        );
        for ignored in report.ignored {
            log::warn!("definitions {}: ignored {ignored}", path.display());
        }
    }
    let ex = Arc::new(Executor::new());
    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);

    let n = match config_threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let mut threads = Vec::with_capacity(n);
    for i in 0..n {
        let ex = ex.clone();
        let stop_rx = stop_rx.clone();
        let t = std::thread::Builder::new().name(format!("haremq-{i}")).stack_size(EXECUTOR_STACK_SIZE).spawn(
            move || {
                let _ = smol::block_on(ex.run(stop_rx.recv()));
            },
        )?;
        threads.push(t);
    }
    let (management_addr, management_tls_addr) =
        start_management(config_management, config_management_tls, &broker, &ex, &stop_rx, plain_addr, tls_addr);
    let prometheus_addr = config_prometheus.and_then(|addr| start_prometheus(addr, &broker, &ex, &stop_rx));
    let cluster = match &broker.config.cluster {
        Some(config) => {
            let listeners = crate::cluster::Listeners { amqp: plain_addr.or(tls_addr), management: management_addr };
            let cluster = crate::cluster::Cluster::start(config, &broker.config.data_dir, listeners, &broker)?;
            broker.set_cluster(cluster.clone());
            Some(cluster)
        }
        None => None,
    };
    if let Some((listener, addr)) = plain {
        let (b, e) = (broker.clone(), ex.clone());
        let serve = move |stream, peer| {
            e.spawn(crate::amqp::connection::serve_plain(b.clone(), stream, peer, e.clone())).detach();
        };
        ex.spawn(accept_loop(listener, "AMQP", broker.clone(), stop_rx.clone(), serve)).detach();
        log::info!("HareMQ listening on {addr}");
    }
    if let Some(((listener, addr), acceptor)) = tls {
        let (b, e) = (broker.clone(), ex.clone());
        let serve = move |stream, peer| {
            let conn = crate::amqp::connection::serve_tls(b.clone(), acceptor.clone(), stream, peer, e.clone());
            e.spawn(conn).detach();
        };
        ex.spawn(accept_loop(listener, "AMQPS", broker.clone(), stop_rx, serve)).detach();
        log::info!("HareMQ listening for TLS (amqps) at {addr}");
    }
    Ok(BrokerHandle {
        local_addr,
        plain_addr,
        tls_addr,
        management_addr,
        management_tls_addr,
        prometheus_addr,
        broker,
        cluster,
        stop: Some(stop_tx),
        threads,
    })
}

/// Binds the management HTTP API (plain HTTP on `http`, HTTPS on `https` with the
/// AMQPS certificates) and starts its accept loops and the rates ticker. A port that
/// cannot be bound is logged and that listener skipped: messaging matters more than its
/// administration, and several brokers on one host would otherwise all fight for 15672.
/// Removes the logs of streams the store does not record: left by a crash after a
/// stream's deletion was committed but before its log was removed, or before its
/// declaration was committed (its publishes were never confirmed).
fn sweep_streams(dir: &std::path::Path, snapshot: &crate::store::Snapshot) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let live: std::collections::HashSet<String> = snapshot
        .queues
        .iter()
        .filter(|q| crate::queue::QueueKind::of(&q.arguments) == crate::queue::QueueKind::Stream)
        .map(|q| q.id.to_string())
        .collect();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u64>().is_ok() && !live.contains(&name) {
            log::info!("removing the log of a deleted stream ({})", e.path().display());
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                log::warn!("could not remove {}: {err}", e.path().display());
            }
        }
    }
}

fn start_management(
    http: Option<SocketAddr>,
    https: Option<(SocketAddr, Arc<Acceptor>)>,
    broker: &Arc<Broker>,
    ex: &Arc<Executor<'static>>,
    stop: &smol::channel::Receiver<()>,
    plain: Option<SocketAddr>,
    tls: Option<SocketAddr>,
) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let bind_logged = |addr: SocketAddr, what: &str| match bind(addr) {
        Ok(l) => Some(l),
        Err(e) => {
            log::error!("management {what} off: {e}");
            None
        }
    };
    let http = http.and_then(|a| bind_logged(a, "HTTP API"));
    let https = https.and_then(|(a, acceptor)| bind_logged(a, "HTTPS API").map(|l| (l, acceptor)));
    if http.is_none() && https.is_none() {
        return (None, None);
    }
    let (http_addr, https_addr) = (http.as_ref().map(|(_, a)| *a), https.as_ref().map(|((_, a), _)| *a));
    let mut listeners = Vec::new();
    listeners.extend(plain.map(|a| ("amqp", a)));
    listeners.extend(tls.map(|a| ("amqp/ssl", a)));
    listeners.extend(http_addr.map(|a| ("http", a)));
    listeners.extend(https_addr.map(|a| ("https", a)));
    let rates = Arc::new(crate::management::rates::Rates::default());
    let interval = Duration::from_millis(broker.config.stats_interval_ms.max(100));
    ex.spawn(crate::management::rates::run(rates.clone(), broker.clone(), interval, stop.clone())).detach();
    let ctx = Arc::new(crate::management::Context::new(broker.clone(), listeners, rates));
    if let Some((listener, bound)) = http {
        let (e, ctx) = (ex.clone(), ctx.clone());
        let serve = move |stream, peer| {
            e.spawn(crate::management::serve(stream, peer, ctx.clone())).detach();
        };
        ex.spawn(accept_loop(listener, "management", broker.clone(), stop.clone(), serve)).detach();
        log::info!("management HTTP API on http://{bound}/api/");
    }
    if let Some(((listener, bound), acceptor)) = https {
        let (e, b) = (ex.clone(), broker.clone());
        let serve = move |stream: smol::net::TcpStream, peer| {
            let (acceptor, ctx) = (acceptor.clone(), ctx.clone());
            let deadline = std::time::Instant::now() + Duration::from_millis(b.config.handshake_timeout_ms);
            e.spawn(async move {
                if let Some((tls, _)) = acceptor.accept(stream, peer, deadline).await {
                    crate::management::serve(tls, peer, ctx).await;
                }
            })
            .detach();
        };
        ex.spawn(accept_loop(listener, "management HTTPS", broker.clone(), stop.clone(), serve)).detach();
        log::info!("management HTTPS API on https://{bound}/api/");
    }
    (http_addr, https_addr)
}

/// Binds the Prometheus endpoint and starts its accept loop; as the management API, a
/// port that cannot be bound is logged and skipped.
fn start_prometheus(
    addr: SocketAddr,
    broker: &Arc<Broker>,
    ex: &Arc<Executor<'static>>,
    stop: &smol::channel::Receiver<()>,
) -> Option<SocketAddr> {
    let (listener, bound) = match bind(addr) {
        Ok(l) => l,
        Err(e) => {
            log::error!("Prometheus metrics off: {e}");
            return None;
        }
    };
    let (b, e) = (broker.clone(), ex.clone());
    let serve = move |stream, peer| {
        e.spawn(crate::management::prometheus::serve(stream, peer, b.clone())).detach();
    };
    ex.spawn(accept_loop(listener, "prometheus", broker.clone(), stop.clone(), serve)).detach();
    log::info!("Prometheus metrics on http://{bound}/metrics");
    Some(bound)
}

/// Accepts connections until `stop` fires and hands each to `serve` (which spawns its
/// task); nothing is accepted into a broker that is shutting down. `what` names the
/// listener in log lines. The AMQP, AMQPS and management listeners share it.
async fn accept_loop(
    listener: TcpListener,
    what: &'static str,
    broker: Arc<Broker>,
    stop: smol::channel::Receiver<()>,
    serve: impl Fn(smol::net::TcpStream, SocketAddr),
) {
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            let _ = stop.recv().await;
            None
        })
        .await;
        match accepted {
            None => return,
            Some(Ok((stream, peer))) => {
                if !broker.is_shutting_down() {
                    serve(stream, peer);
                }
            }
            Some(Err(e)) => {
                // EMFILE and friends: back off briefly instead of spinning.
                log::error!("{what} accept failed: {e}");
                smol::Timer::after(Duration::from_millis(50)).await;
            }
        }
    }
}
