//! `haremq-perf`: a load-testing tool for any AMQP 0-9-1 broker (HareMQ, RabbitMQ).
//!
//! # Usage
//!
//! ```text
//! haremq-perf [-h|--uri amqp://guest:guest@127.0.0.1:5672/%2f]
//!             [-x|--publishers N] [-y|--consumers N] [-s|--size BYTES]
//!             [-z|--time SECS] [-C|--pmessages N] [-D|--cmessages N]
//!             [-c|--confirm WINDOW] [--persistent | -f persistent] [-q|--prefetch N]
//!             [-a|--autoack | -A|--multi-ack-every N]
//!             [-e|--exchange NAME -t|--exchange-type direct|fanout|topic|headers] [-k|--routing-key KEY]
//!             [-u|--queue NAME,... | --queues N] [--queue-prefix P] [--durable] [--auto-delete BOOL] [--purge]
//!             [--queue-args k=v,...] [--queue-type classic|quorum|stream] [--consumer-args k=v,...]
//!             [-r|--rate MSGS_PER_SEC] [--json] [--threads N | --thread-per-conn]
//!             [--scenario throughput|connections|queues|bind-churn|delete-queues]
//!             [--connections N] [--broker-pid PID]
//!             [--tls-ca FILE | --tls-insecure]
//! ```
//!
//! An `amqps://` URI (default port 5671) connects over TLS 1.2/1.3 (rustls), trusting
//! the CA certificates in `--tls-ca`, or any certificate with `--tls-insecure`.
//!
//! The short options are RabbitMQ PerfTest's letters for the options both tools have, so
//! a PerfTest command line such as `-x 1 -y 2 -s 1000 -z 30 -c 100 -q 100 -f persistent`
//! works unchanged. As in PerfTest, `-h` is the URI: help is `--help` or `-?`, and `-v` is
//! the version.
//!
//! Examples:
//!
//! ```text
//! # 1 publisher, 1 consumer, 16-byte bodies, no-ack consume, 5 seconds
//! haremq-perf --uri amqp://guest:guest@127.0.0.1:5672/%2f --size 16 --autoack --time 5
//! # confirms (window 256), persistent 1 KiB, manual acks, prefetch 256, durable queue
//! haremq-perf --confirm 256 --persistent --size 1024 --prefetch 256 --durable --time 5
//! # fanout to 8 queues, one consumer each
//! haremq-perf --exchange perf-fanout --exchange-type fanout --queues 8 --consumers 8 --time 5
//! # a stream: fill it with 100,000 messages, then replay them from the start
//! haremq-perf --queue-type stream --queue s --consumers 0 --size 1024 --confirm 256 --pmessages 100000
//! haremq-perf --queue-type stream --queue s --publishers 0 --cmessages 100000 --prefetch 1000 \
//!             --multi-ack-every 100 --consumer-args x-stream-offset=first
//! haremq-perf --scenario delete-queues --queue s
//! # 1000 idle connections held 10 s, with the broker's RSS
//! haremq-perf --scenario connections --connections 1000 --time 10 --broker-pid 1234
//! ```
//!
//! Every second it prints `time: T s, sent: X msg/s, confirmed: Y msg/s, received: Z msg/s,
//! latency p50/p99: A/B ms`; at the end `summary:` lines (totals, average rates, latency
//! p50/p95/p99/max from a histogram of send timestamp → receive; with `--confirm` also the
//! confirm latency, publish → basic.ack of each acked message), and with `--json` one
//! JSON line (`p50_us`... for the receive latency, `confirm_p50_us`... for the confirm
//! latency). The first 8 body bytes carry the send time (ns since the UNIX epoch), so
//! latency needs `--size` ≥ 8 and publishers and consumers on one clock.
//!
//! Topology: queues are `<prefix><i>` (`perf-q-0`, ...). With the default exchange there is
//! one queue unless `--queues N`; publishers go round-robin over the queues (routing key =
//! queue name). With `--exchange`, the exchange is declared and every queue is bound with
//! the routing key (default `perf`); without `--queues`, each consumer gets its own queue
//! (as RabbitMQ PerfTest does), else consumers are spread round-robin over the queues.
//!
//! `--queue-type quorum|stream` declares the queues with `x-queue-type`, durable and not
//! auto-delete (as RabbitMQ requires for those types). Stream consumers need `--prefetch`
//! and manual acks; `--consumer-args x-stream-offset=first|last|next|N` says where they
//! start (basic.consume arguments, with `--queue-args`' value rules).
//!
//! Every run ends by itself (`--time`, default 10 s without a message count, or the
//! counts); a broker error is printed and the exit status is 1.
//!
//! The client is its own: one TCP connection per publisher/consumer, frames from
//! `amq-protocol`, publishes serialized once into a template and time-stamped in place,
//! batched into one write, and reads of up to 1 MiB parsed frame by frame in place.

mod client;
mod proto;
mod roles;
mod scenarios;
mod stats;
mod tls;
mod topology;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::types::{AMQPValue, FieldTable};
use amq_protocol::uri::AMQPUri;
use clap::{ArgAction, Parser, ValueEnum};
use hdrhistogram::Histogram;
use smol::Executor;

use client::{Conn, Res};
use roles::{ConConfig, PubConfig};
use stats::{new_hist, ConStats, PubStats, Shared};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExchangeType {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeType {
    fn as_str(self) -> &'static str {
        match self {
            ExchangeType::Direct => "direct",
            ExchangeType::Fanout => "fanout",
            ExchangeType::Topic => "topic",
            ExchangeType::Headers => "headers",
        }
    }
}

/// `x-queue-type` of the declared queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum QueueType {
    Classic,
    Quorum,
    Stream,
}

impl QueueType {
    fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Publishers and consumers (the default).
    Throughput,
    /// Open --connections idle connections and hold them for --time seconds.
    Connections,
    /// Declare --queues queues with one consumer each and push a few messages through each.
    Queues,
    /// Bind and unbind a queue in a loop for --time seconds.
    BindChurn,
    /// Delete the run's queues (--queue, or <prefix><i>) and exit: cleanup between runs.
    DeleteQueues,
}

// The short options are RabbitMQ PerfTest's letters for the options both tools have
// (-h is PerfTest's --uri, so help is --help or -?, and -v is the version as there).
#[derive(Parser, Debug, Clone)]
#[command(
    name = "haremq-perf",
    version,
    about = "Load-testing tool for AMQP 0-9-1 brokers (HareMQ, RabbitMQ)",
    disable_help_flag = true,
    disable_version_flag = true
)]
pub struct Opts {
    /// Print help.
    #[arg(short = '?', long, action = ArgAction::Help)]
    help: Option<bool>,
    /// Print the version.
    #[arg(short = 'v', short_alias = 'V', long, action = ArgAction::Version)]
    version: Option<bool>,
    /// Broker URI (PLAIN credentials and vhost are taken from it; %2f is "/").
    #[arg(short = 'h', long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub uri: String,
    /// Publisher connections.
    #[arg(short = 'x', long, default_value_t = 1)]
    pub publishers: usize,
    /// Consumer connections.
    #[arg(short = 'y', long, default_value_t = 1)]
    pub consumers: usize,
    /// Message body size in bytes (the first 8 carry the send timestamp).
    #[arg(short = 's', long, default_value_t = 12)]
    pub size: usize,
    /// Run duration in seconds (default 10 when no message count is given).
    #[arg(short = 'z', long)]
    pub time: Option<f64>,
    /// Messages per publisher.
    #[arg(short = 'C', long)]
    pub pmessages: Option<u64>,
    /// Messages per consumer.
    #[arg(short = 'D', long)]
    pub cmessages: Option<u64>,
    /// Publisher confirms with at most WINDOW unconfirmed messages per publisher.
    #[arg(short = 'c', long, value_name = "WINDOW")]
    pub confirm: Option<u32>,
    /// Publish persistent messages (delivery-mode 2).
    #[arg(long)]
    pub persistent: bool,
    /// Message flag, as PerfTest's -f: `persistent` is --persistent.
    #[arg(short = 'f', long, value_name = "FLAG", value_parser = ["persistent"])]
    pub flag: Vec<String>,
    /// Consumer prefetch (basic.qos per consumer).
    #[arg(short = 'q', long)]
    pub prefetch: Option<u16>,
    /// Consume without acknowledgements (no-ack).
    #[arg(short = 'a', long, conflicts_with = "multi_ack_every")]
    pub autoack: bool,
    /// Ack every N messages with multiple=true (default: ack each message).
    #[arg(short = 'A', long, default_value_t = 0)]
    pub multi_ack_every: u64,
    /// Exchange to publish to ("" = default exchange).
    #[arg(short = 'e', long, default_value = "")]
    pub exchange: String,
    /// Type of --exchange.
    #[arg(short = 't', long, value_enum, default_value_t = ExchangeType::Direct)]
    pub exchange_type: ExchangeType,
    /// Routing key for --exchange publishes and bindings (default "perf").
    #[arg(short = 'k', long)]
    pub routing_key: Option<String>,
    /// Queue names, comma-separated, instead of <prefix><i> (throughput runs).
    #[arg(short = 'u', long, value_name = "NAME[,NAME...]", value_delimiter = ',', conflicts_with = "queues")]
    pub queue: Vec<String>,
    /// Number of queues.
    #[arg(long)]
    pub queues: Option<usize>,
    /// Queue name prefix: queues are <prefix><i>.
    #[arg(long, default_value = "perf-q-")]
    pub queue_prefix: String,
    /// Declare durable queues (and exchange).
    #[arg(long)]
    pub durable: bool,
    /// Declare auto-delete queues (deleted when their last consumer leaves).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    pub auto_delete: bool,
    /// Purge the queues before the run.
    #[arg(long)]
    pub purge: bool,
    /// Queue x-arguments, key=value,... (integers are sent as long ints).
    #[arg(long)]
    pub queue_args: Option<String>,
    /// Queue type (x-queue-type); quorum and stream queues are declared durable and not
    /// auto-delete.
    #[arg(long, value_enum)]
    pub queue_type: Option<QueueType>,
    /// basic.consume arguments, key=value,... as --queue-args (e.g. x-stream-offset=first).
    #[arg(long)]
    pub consumer_args: Option<String>,
    /// Publish rate per publisher (msgs/s), evenly paced.
    #[arg(short = 'r', long)]
    pub rate: Option<f64>,
    /// Print one JSON summary line at the end.
    #[arg(long)]
    pub json: bool,
    /// Executor threads shared by all connections.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// One thread per connection instead of a shared executor.
    #[arg(long)]
    pub thread_per_conn: bool,
    /// What to run.
    #[arg(long, value_enum, default_value_t = Scenario::Throughput)]
    pub scenario: Scenario,
    /// Connections for --scenario connections.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Broker process id, to report its RSS (from /proc) in scenarios.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// With an amqps:// URI: PEM file of the CA certificate(s) to trust.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// With an amqps:// URI: accept any server certificate (self-signed test setups).
    #[arg(long, conflicts_with = "tls_ca")]
    pub tls_insecure: bool,
}

/// Runs role futures either on a shared executor (N threads) or one thread each.
pub struct Runtime {
    ex: Option<Arc<Executor<'static>>>,
    shutdown: Option<smol::channel::Sender<()>>,
    spawned: usize,
    finished: Arc<AtomicUsize>,
    tasks: Vec<smol::Task<()>>,
}

impl Runtime {
    pub fn new(opts: &Opts) -> Runtime {
        let finished = Arc::new(AtomicUsize::new(0));
        if opts.thread_per_conn {
            return Runtime { ex: None, shutdown: None, spawned: 0, finished, tasks: Vec::new() };
        }
        let ex = Arc::new(Executor::new());
        let (tx, rx) = smol::channel::bounded::<()>(1);
        for i in 0..opts.threads.max(1) {
            let ex = ex.clone();
            let rx = rx.clone();
            let spawned = std::thread::Builder::new().name(format!("perf-exec-{i}")).spawn(move || {
                smol::block_on(ex.run(async {
                    let _ = rx.recv().await;
                }))
            });
            if let Err(e) = spawned {
                eprintln!("haremq-perf: cannot start executor thread: {e}");
            }
        }
        Runtime { ex: Some(ex), shutdown: Some(tx), spawned: 0, finished, tasks: Vec::new() }
    }

    pub fn spawn(&mut self, fut: impl Future<Output = ()> + Send + 'static) {
        self.spawned += 1;
        let finished = self.finished.clone();
        let fut = async move {
            fut.await;
            finished.fetch_add(1, Ordering::SeqCst);
        };
        match &self.ex {
            Some(ex) => self.tasks.push(ex.spawn(fut)),
            None => {
                if let Err(e) = std::thread::Builder::new().name("perf-conn".into()).spawn(move || smol::block_on(fut))
                {
                    eprintln!("haremq-perf: cannot start connection thread: {e}");
                    self.finished.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    /// Waits (bounded) for every spawned future to finish, then stops the threads.
    pub fn join(mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.finished.load(Ordering::SeqCst) < self.spawned && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.tasks.clear();
        self.shutdown.take();
    }
}

/// The command line, with PerfTest's `-f persistent` folded into `persistent`.
fn parse_opts<I: IntoIterator<Item = T>, T: Into<std::ffi::OsString> + Clone>(args: I) -> Result<Opts, clap::Error> {
    let mut opts = Opts::try_parse_from(args)?;
    opts.persistent |= opts.flag.iter().any(|f| f == "persistent");
    Ok(opts)
}

fn main() {
    let opts = parse_opts(std::env::args_os()).unwrap_or_else(|e| e.exit());
    let uri: AMQPUri = match opts.uri.parse() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("haremq-perf: bad --uri {:?}: {e}", opts.uri);
            std::process::exit(2);
        }
    };
    if uri.scheme == amq_protocol::uri::AMQPScheme::AMQPS {
        if let Err(e) = tls::configure(opts.tls_ca.as_deref(), opts.tls_insecure) {
            eprintln!("haremq-perf: {e}");
            std::process::exit(2);
        }
    }
    let result = match opts.scenario {
        Scenario::Throughput => run_throughput(&opts, uri),
        Scenario::Connections => scenarios::connections(&opts, uri),
        Scenario::Queues => scenarios::queues(&opts, uri),
        Scenario::BindChurn => scenarios::bind_churn(&opts, uri),
        Scenario::DeleteQueues => scenarios::delete_queues(&opts, uri),
    };
    if let Err(e) = result {
        eprintln!("haremq-perf: error: {e}");
        std::process::exit(1);
    }
}

struct Plan {
    queues: Vec<String>,
    default_exchange: bool,
    routing_key: String,
}

fn plan(opts: &Opts) -> Plan {
    let default_exchange = opts.exchange.is_empty();
    let nq = opts.queues.unwrap_or(if default_exchange { 1 } else { opts.consumers.max(1) }).max(1);
    let queues = if opts.queue.is_empty() {
        (0..nq).map(|i| format!("{}{i}", opts.queue_prefix)).collect()
    } else {
        opts.queue.clone()
    };
    Plan { queues, default_exchange, routing_key: opts.routing_key.clone().unwrap_or_else(|| "perf".into()) }
}

/// The queues' declare arguments, durable and auto-delete flags: `--queue-args`, plus
/// `x-queue-type` with `--queue-type`; quorum and stream queues must be durable and may
/// not be auto-delete.
fn queue_declaration(opts: &Opts) -> Res<(FieldTable, bool, bool)> {
    let mut args = match &opts.queue_args {
        Some(spec) => topology::parse_args(spec)?,
        None => FieldTable::default(),
    };
    let (mut durable, mut auto_delete) = (opts.durable, opts.auto_delete);
    if let Some(t) = opts.queue_type {
        args.insert("x-queue-type".into(), AMQPValue::LongString(t.as_str().into()));
        if t != QueueType::Classic {
            (durable, auto_delete) = (true, false);
        }
    }
    Ok((args, durable, auto_delete))
}

async fn setup_topology(opts: &Opts, uri: &AMQPUri, plan: &Plan) -> Res<Conn> {
    let mut conn = Conn::open(uri).await?;
    conn.open_channel(1).await?;
    if !plan.default_exchange {
        topology::declare_exchange(&mut conn, &opts.exchange, opts.exchange_type.as_str(), opts.durable).await?;
    }
    let (args, durable, auto_delete) = queue_declaration(opts)?;
    let spec = topology::QueueSpec { durable, auto_delete, exclusive: false, args: &args };
    for q in &plan.queues {
        topology::declare_queue(&mut conn, q, &spec).await?;
        if opts.purge {
            topology::purge_queue(&mut conn, q).await?;
        }
        if !plan.default_exchange {
            topology::bind_queue(&mut conn, q, &opts.exchange, &plan.routing_key).await?;
        }
    }
    Ok(conn)
}

#[derive(Default, Clone, Copy)]
struct Totals {
    sent: u64,
    confirmed: u64,
    nacked: u64,
    received: u64,
}

fn totals(pubs: &[Arc<PubStats>], cons: &[Arc<ConStats>]) -> Totals {
    let mut t = Totals::default();
    for p in pubs {
        t.sent += p.sent.load(Ordering::Relaxed);
        t.confirmed += p.confirmed.load(Ordering::Relaxed);
        t.nacked += p.nacked.load(Ordering::Relaxed);
    }
    for c in cons {
        t.received += c.received.load(Ordering::Relaxed);
    }
    t
}

fn drain_hists(cons: &[Arc<ConStats>], into: &mut Histogram<u64>) {
    for c in cons {
        if let Ok(mut h) = c.hist.lock() {
            if !h.is_empty() {
                let _ = into.add(&*h);
                h.reset();
            }
        }
    }
}

/// The publishers' confirm latencies (publish → basic.ack), merged.
fn confirm_hist(pubs: &[Arc<PubStats>]) -> Histogram<u64> {
    let mut all = new_hist();
    for p in pubs {
        if let Ok(h) = p.confirm_hist.lock() {
            let _ = all.add(&*h);
        }
    }
    all
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn run_throughput(opts: &Opts, uri: AMQPUri) -> Res<()> {
    if opts.size < 8 {
        eprintln!("haremq-perf: note: --size < 8, no latency is measured");
    }
    if let (Some(p), n) = (opts.prefetch, opts.multi_ack_every) {
        if n > u64::from(p) && p > 0 {
            return Err(format!("--multi-ack-every {n} exceeds --prefetch {p}: consumers would stall"));
        }
    }
    if opts.queue_type == Some(QueueType::Stream)
        && opts.consumers > 0
        && (opts.autoack || opts.prefetch.unwrap_or(0) == 0)
    {
        return Err("stream consumers need --prefetch > 0 and manual acks (no --autoack)".into());
    }
    let consume_args = match &opts.consumer_args {
        Some(spec) => topology::parse_args(spec)?,
        None => FieldTable::default(),
    };
    let plan = plan(opts);
    let shared = Arc::new(Shared::new());
    let setup = smol::block_on(setup_topology(opts, &uri, &plan))?;
    let mut rt = Runtime::new(opts);

    let pubs: Vec<Arc<PubStats>> = (0..opts.publishers).map(|_| Arc::new(PubStats::new())).collect();
    let cons: Vec<Arc<ConStats>> = (0..opts.consumers).map(|_| Arc::new(ConStats::new())).collect();

    // Consumers first, so that nothing published is missed.
    let ready = Arc::new(AtomicUsize::new(0));
    for (j, stats) in cons.iter().enumerate() {
        let cfg = ConConfig {
            queue: plan.queues[j % plan.queues.len()].clone(),
            tag: format!("perf-c-{j}"),
            prefetch: opts.prefetch,
            autoack: opts.autoack,
            multi_ack_every: opts.multi_ack_every,
            count: opts.cmessages,
            arguments: consume_args.clone(),
        };
        let (uri, stats, shared2, ready) = (uri.clone(), stats.clone(), shared.clone(), ready.clone());
        let signal: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            ready.fetch_add(1, Ordering::SeqCst);
        });
        rt.spawn(async move {
            if let Err(e) = roles::consumer(uri, cfg, stats.clone(), shared2.clone(), signal).await {
                shared2.fail(format!("consumer {j}: {e}"));
            }
            stats.done.store(true, Ordering::SeqCst);
        });
    }
    let wait_until = Instant::now() + Duration::from_secs(30);
    while ready.load(Ordering::SeqCst) < opts.consumers && shared.error().is_none() {
        if Instant::now() > wait_until {
            shared.fail("consumers did not start within 30 s".into());
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    smol::block_on(setup.close());

    let routing_keys = if plan.default_exchange { plan.queues.clone() } else { vec![plan.routing_key.clone()] };
    for (i, stats) in pubs.iter().enumerate() {
        let cfg = PubConfig {
            exchange: opts.exchange.clone(),
            routing_keys: routing_keys.clone(),
            offset: i,
            size: opts.size,
            persistent: opts.persistent,
            confirm: opts.confirm,
            rate: opts.rate,
            count: opts.pmessages,
        };
        let (uri, stats, shared2) = (uri.clone(), stats.clone(), shared.clone());
        rt.spawn(async move {
            if let Err(e) = roles::publisher(uri, cfg, stats, shared2.clone()).await {
                shared2.fail(format!("publisher {i}: {e}"));
            }
        });
    }

    let start = Instant::now();
    let has_count = opts.pmessages.is_some() || opts.cmessages.is_some();
    let time = opts.time.or(if has_count { None } else { Some(10.0) });
    let deadline = time.map(|t| start + Duration::from_secs_f64(t));
    // Copies of each message that reach a consumer, when every queue has a consumer.
    let copies = if opts.consumers >= plan.queues.len() {
        Some(if plan.default_exchange { 1 } else { plan.queues.len() as u64 })
    } else {
        None
    };
    let stall_check = opts.rate.is_none_or(|r| r >= 1.0);

    let mut total_hist = new_hist();
    let mut sec_hist = new_hist();
    let mut last = Totals::default();
    let mut tick = 1u64;
    let mut progress_at = Instant::now();
    let mut progress_sum = 0u64;
    let mut idle_since: Option<(Instant, u64)> = None;
    loop {
        if shared.is_stopped() {
            break;
        }
        let now = Instant::now();
        let t = totals(&pubs, &cons);
        let next_tick = start + Duration::from_secs(tick);
        if now >= next_tick {
            drain_hists(&cons, &mut sec_hist);
            let lat = if !sec_hist.is_empty() {
                format!("{:.3}/{:.3}", ms(sec_hist.value_at_quantile(0.5)), ms(sec_hist.value_at_quantile(0.99)))
            } else {
                "-/-".into()
            };
            println!(
                "time: {:.3} s, sent: {} msg/s, confirmed: {} msg/s, received: {} msg/s, latency p50/p99: {} ms",
                now.duration_since(start).as_secs_f64(),
                t.sent - last.sent,
                t.confirmed - last.confirmed,
                t.received - last.received,
                lat
            );
            let _ = total_hist.add(&sec_hist);
            sec_hist.reset();
            last = t;
            tick += 1;
        }
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        // Bounded completion with message counts.
        let pubs_done = pubs.iter().all(|p| p.done.load(Ordering::SeqCst));
        let cons_done = cons.iter().all(|c| c.done.load(Ordering::SeqCst));
        if opts.cmessages.is_some() && cons_done && (opts.pmessages.is_none() || pubs_done) {
            break;
        }
        if (opts.pmessages.is_some() || opts.publishers == 0) && pubs_done && opts.cmessages.is_none() {
            if opts.consumers == 0 {
                break;
            }
            if copies.is_some_and(|c| t.received >= t.sent * c) {
                break;
            }
            match idle_since {
                Some((at, r)) if r == t.received => {
                    if now.duration_since(at) > Duration::from_secs(2) {
                        break;
                    }
                }
                _ => idle_since = Some((now, t.received)),
            }
        }
        let sum = t.sent + t.confirmed + t.nacked + t.received;
        if sum != progress_sum {
            progress_sum = sum;
            progress_at = now;
        } else if stall_check && now.duration_since(progress_at) > Duration::from_secs(10) {
            shared.fail("no progress for 10 s (broker stalled or blocked?)".into());
            break;
        }
        let next_tick = start + Duration::from_secs(tick);
        let until = next_tick.min(deadline.unwrap_or(next_tick));
        let sleep = until.saturating_duration_since(Instant::now()).min(Duration::from_millis(50));
        std::thread::sleep(sleep);
    }
    let end = Instant::now();
    let t = totals(&pubs, &cons);
    shared.stop();
    drain_hists(&cons, &mut total_hist);
    rt.join(Duration::from_secs(5));

    let dur = end.duration_since(start).as_secs_f64().max(1e-9);
    let q = |p: f64| if !total_hist.is_empty() { total_hist.value_at_quantile(p) } else { 0 };
    let (p50, p95, p99, max) = (q(0.5), q(0.95), q(0.99), total_hist.max());
    println!("summary: duration: {dur:.3} s");
    println!("summary: sent: {} msg, {:.0} msg/s", t.sent, t.sent as f64 / dur);
    println!("summary: confirmed: {} msg, {:.0} msg/s (nacked: {})", t.confirmed, t.confirmed as f64 / dur, t.nacked);
    println!("summary: received: {} msg, {:.0} msg/s", t.received, t.received as f64 / dur);
    println!(
        "summary: latency ms: p50 {:.3}, p95 {:.3}, p99 {:.3}, max {:.3} ({} samples)",
        ms(p50),
        ms(p95),
        ms(p99),
        ms(max),
        total_hist.len()
    );
    let confirms = confirm_hist(&pubs);
    let cq = |p: f64| if !confirms.is_empty() { confirms.value_at_quantile(p) } else { 0 };
    let (c50, c95, c99, cmax) = (cq(0.5), cq(0.95), cq(0.99), confirms.max());
    if opts.confirm.is_some() {
        println!(
            "summary: confirm latency ms: p50 {:.3}, p95 {:.3}, p99 {:.3}, max {:.3} ({} samples)",
            ms(c50),
            ms(c95),
            ms(c99),
            ms(cmax),
            confirms.len()
        );
    }
    if opts.json {
        println!(
            "{{\"send_rate\":{:.1},\"confirm_rate\":{:.1},\"receive_rate\":{:.1},\"p50_us\":{p50},\"p95_us\":{p95},\"p99_us\":{p99},\"max_us\":{max},\"confirm_p50_us\":{c50},\"confirm_p95_us\":{c95},\"confirm_p99_us\":{c99},\"confirm_max_us\":{cmax},\"sent\":{},\"received\":{},\"confirmed\":{},\"nacked\":{},\"duration_s\":{dur:.3}}}",
            t.sent as f64 / dur,
            t.confirmed as f64 / dur,
            t.received as f64 / dur,
            t.sent,
            t.received,
            t.confirmed,
            t.nacked,
        );
    }
    match shared.error() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        Opts::command().debug_assert();
    }

    #[test]
    fn perftest_short_options() {
        let o = parse_opts([
            "haremq-perf",
            "-h",
            "amqp://u:p@10.0.0.1:5673/v",
            "-x",
            "2",
            "-y",
            "3",
            "-s",
            "100",
            "-z",
            "5",
            "-C",
            "1000",
            "-D",
            "2000",
            "-c",
            "64",
            "-f",
            "persistent",
            "-q",
            "50",
            "-a",
            "-e",
            "ex",
            "-t",
            "fanout",
            "-k",
            "rk",
            "-u",
            "qa,qb",
            "-r",
            "500",
        ])
        .expect("PerfTest's letters parse");
        assert_eq!(o.uri, "amqp://u:p@10.0.0.1:5673/v");
        assert_eq!((o.publishers, o.consumers, o.size), (2, 3, 100));
        assert_eq!((o.time, o.pmessages, o.cmessages), (Some(5.0), Some(1000), Some(2000)));
        assert_eq!((o.confirm, o.prefetch), (Some(64), Some(50)));
        assert!(o.persistent && o.autoack);
        assert_eq!((o.exchange.as_str(), o.exchange_type), ("ex", ExchangeType::Fanout));
        assert_eq!(o.routing_key.as_deref(), Some("rk"));
        assert_eq!(o.rate, Some(500.0));
        assert_eq!(plan(&o).queues, ["qa", "qb"]);
        let o = parse_opts(["haremq-perf", "-A", "10"]).expect("-A");
        assert_eq!(o.queue_type, None);
        assert_eq!(o.multi_ack_every, 10);
        assert!(!o.persistent);
        assert_eq!(plan(&o).queues, ["perf-q-0"]);
    }

    #[test]
    fn stream_queue_type_and_consumer_args() {
        let o = parse_opts(["haremq-perf", "--queue-type", "stream", "--queue-args", "x-max-length-bytes=1000000"])
            .expect("--queue-type stream");
        let (args, durable, auto_delete) = queue_declaration(&o).expect("declaration");
        assert!(durable && !auto_delete, "streams are durable and not auto-delete");
        assert_eq!(args.inner().get("x-queue-type"), Some(&AMQPValue::LongString("stream".into())));
        assert_eq!(args.inner().get("x-max-length-bytes"), Some(&AMQPValue::LongLongInt(1_000_000)));
        let o = parse_opts(["haremq-perf", "--queue-type", "classic"]).expect("classic");
        let (_, durable, auto_delete) = queue_declaration(&o).expect("declaration");
        assert!(!durable && auto_delete, "classic keeps --durable / --auto-delete");
        let (args, durable, _) = queue_declaration(&parse_opts(["haremq-perf"]).expect("plain")).expect("plain");
        assert!(args.inner().is_empty() && !durable);
        let o = parse_opts(["haremq-perf", "--consumer-args", "x-stream-offset=first,x-priority=3"]).expect("args");
        let args = topology::parse_args(o.consumer_args.as_deref().unwrap_or_default()).expect("parse");
        assert_eq!(args.inner().get("x-stream-offset"), Some(&AMQPValue::LongString("first".into())));
        assert_eq!(args.inner().get("x-priority"), Some(&AMQPValue::LongLongInt(3)));
        let o = parse_opts(["haremq-perf", "--queue-type", "stream", "--autoack", "--prefetch", "10"]).expect("parse");
        let uri: AMQPUri = "amqp://guest:guest@127.0.0.1:1/%2f".parse().expect("uri");
        let e = run_throughput(&o, uri).expect_err("stream consumers need manual acks");
        assert!(e.contains("--prefetch"), "{e}");
    }

    #[test]
    fn long_names_still_work_and_help_is_not_h() {
        let o = parse_opts(["haremq-perf", "--uri", "amqp://x", "--publishers", "4", "--persistent", "--queues", "3"])
            .expect("long names parse");
        assert_eq!((o.uri.as_str(), o.publishers, o.persistent), ("amqp://x", 4, true));
        assert_eq!(plan(&o).queues.len(), 3);
        for help in ["--help", "-?"] {
            let e = parse_opts(["haremq-perf", help]).expect_err("help exits");
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        }
        let e = parse_opts(["haremq-perf", "-h"]).expect_err("-h wants a URI");
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        let e = parse_opts(["haremq-perf", "-f", "mandatory"]).expect_err("only persistent");
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        let e = parse_opts(["haremq-perf", "-u", "q", "--queues", "2"]).expect_err("conflict");
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        for version in ["-v", "-V", "--version"] {
            let e = parse_opts(["haremq-perf", version]).expect_err("version exits");
            assert_eq!(e.kind(), clap::error::ErrorKind::DisplayVersion);
        }
    }
}
