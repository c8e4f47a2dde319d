//! Prometheus metrics on their own listener (`--prometheus`, default
//! `127.0.0.1:15692`): `GET /metrics` aggregated and `GET /metrics/per-object` with a
//! series per queue, connection and channel, under the RabbitMQ prometheus plugin's
//! names and labels (so its Grafana dashboards render), plus HareMQ's own
//! (`haremq_*`: store commits and their latency, route-cache hits, message memory).
//! Text exposition format 0.0.4. No authentication, as RabbitMQ's endpoint.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use smol_hyper::rt::{FuturesIo, SmolTimer};

use super::api::overview::RABBITMQ_API_VERSION;
use crate::broker::Broker;
use crate::clients::ConnectionInfo;
use crate::stats::MessageStats;

/// Serves one scrape connection.
pub async fn serve(stream: smol::net::TcpStream, peer: SocketAddr, broker: Arc<Broker>) {
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let broker = broker.clone();
        async move {
            let path = req.uri().path().to_string();
            let is_get = req.method() == hyper::Method::GET || req.method() == hyper::Method::HEAD;
            let response = match (is_get, path.as_str()) {
                (true, "/metrics") | (true, "/metrics/per-object") => {
                    let per_object = path.ends_with("per-object");
                    let text = smol::unblock(move || render(&broker, per_object)).await;
                    hyper::Response::builder()
                        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                        .body(Full::new(Bytes::from(text)))
                }
                (false, "/metrics") | (false, "/metrics/per-object") => {
                    hyper::Response::builder().status(405).header("allow", "GET, HEAD").body(Full::new(Bytes::new()))
                }
                _ => hyper::Response::builder().status(404).body(Full::new(Bytes::from_static(b"Not Found\n"))),
            };
            Ok::<_, std::convert::Infallible>(
                response.unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::from_static(b"")))),
            )
        }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(SmolTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(30))
        .max_buf_size(64 << 10)
        .serve_connection(FuturesIo::new(stream), service)
        .await;
    if let Err(e) = result {
        log::debug!("prometheus connection from {peer}: {e}");
    }
}

/// The exposition text being written: families with their `# TYPE`/`# HELP` lines.
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# TYPE {name} {kind}\n# HELP {name} {help}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", escape(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Label values escape `\`, `"` and newlines.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// A queue's figures with its labels.
struct QueueRow {
    vhost: String,
    name: String,
    stats: crate::queue::QueueStats,
}

/// Everything a scrape reports, rendered.
pub fn render(broker: &Broker, per_object: bool) -> String {
    let mut x = Exposition(String::with_capacity(16 << 10));
    let node = broker.node_name();
    let mut queues = Vec::new();
    for name in broker.vhost_names() {
        if let Some(v) = broker.vhost(&name) {
            for q in v.queue_handles() {
                queues.push(QueueRow { vhost: name.clone(), name: q.name().to_string(), stats: q.stats() });
            }
        }
    }
    let connections = broker.connections();
    let channels: usize = connections.iter().map(|c| c.channels.len()).sum();
    let consumers: u64 = queues.iter().map(|q| u64::from(q.stats.consumers)).sum();

    x.family("rabbitmq_identity_info", "untyped", "RabbitMQ node & cluster identity info");
    let cluster = broker.cluster_name().unwrap_or_else(|| node.clone());
    x.sample("rabbitmq_identity_info", &[("rabbitmq_node", &node), ("rabbitmq_cluster", &cluster)], 1);
    x.family("rabbitmq_build_info", "untyped", "RabbitMQ & Erlang/OTP version info");
    x.sample(
        "rabbitmq_build_info",
        &[
            ("rabbitmq_version", RABBITMQ_API_VERSION),
            ("product_name", "HareMQ"),
            ("product_version", env!("CARGO_PKG_VERSION")),
        ],
        1,
    );
    x.single("rabbitmq_connections", "gauge", "Connections currently open", connections.len());
    x.single("rabbitmq_channels", "gauge", "Channels currently open", channels);
    x.single("rabbitmq_consumers", "gauge", "Consumers currently connected", consumers);
    x.single("rabbitmq_queues", "gauge", "Queues available", queues.len());

    queue_metrics(&mut x, &queues, per_object);
    connection_metrics(&mut x, &connections, per_object);
    // Broker-wide counts, open and closed channels' (listed again under the lock that
    // keeps a closing channel from counting twice or not at all).
    let totals = broker.message_totals();
    global_metrics(&mut x, consumers, &connections, &totals);
    node_metrics(&mut x, broker);
    haremq_metrics(&mut x, broker, &totals);
    x.0
}

fn queue_metrics(x: &mut Exposition, queues: &[QueueRow], per_object: bool) {
    type Get = fn(&QueueRow) -> u64;
    let families: [(&str, &str, &str, Get); 7] = [
        ("rabbitmq_queue_messages_ready", "gauge", "Messages ready to be delivered to consumers", |q| {
            q.stats.messages_ready
        }),
        ("rabbitmq_queue_messages_unacked", "gauge", "Messages delivered to consumers but not yet acknowledged", |q| {
            q.stats.messages_unacknowledged
        }),
        ("rabbitmq_queue_messages", "gauge", "Sum of ready and unacknowledged messages - total queue depth", |q| {
            q.stats.messages_ready + q.stats.messages_unacknowledged
        }),
        ("rabbitmq_queue_messages_ready_bytes", "gauge", "Size in bytes of ready messages", |q| {
            q.stats.message_bytes_ready
        }),
        ("rabbitmq_queue_consumers", "gauge", "Consumers on a queue", |q| u64::from(q.stats.consumers)),
        ("rabbitmq_queue_messages_published_total", "counter", "Total number of messages published to queues", |q| {
            q.stats.messages.publish
        }),
        ("rabbitmq_queue_messages_acked_total", "counter", "Total number of messages acknowledged by consumers", |q| {
            q.stats.messages.ack
        }),
    ];
    for (name, kind, help, get) in families {
        x.family(name, kind, help);
        if per_object {
            for q in queues {
                x.sample(name, &[("vhost", &q.vhost), ("queue", &q.name)], get(q));
            }
        } else {
            x.sample(name, &[], queues.iter().map(get).sum::<u64>());
        }
    }
}

fn connection_metrics(x: &mut Exposition, connections: &[ConnectionInfo], per_object: bool) {
    type Get = fn(&ConnectionInfo) -> u64;
    let families: [(&str, &str, &str, Get); 3] = [
        (
            "rabbitmq_connection_incoming_bytes_total",
            "counter",
            "Total number of bytes received on a connection",
            |c| c.recv_oct,
        ),
        ("rabbitmq_connection_outgoing_bytes_total", "counter", "Total number of bytes sent on a connection", |c| {
            c.send_oct
        }),
        ("rabbitmq_connection_channels", "gauge", "Channels on a connection", |c| c.channels.len() as u64),
    ];
    for (name, kind, help, get) in families {
        x.family(name, kind, help);
        if per_object {
            for c in connections {
                x.sample(name, &[("vhost", &c.vhost), ("connection", &c.name())], get(c));
            }
        } else {
            x.sample(name, &[], connections.iter().map(get).sum::<u64>());
        }
    }
    type ChannelGet = fn(&crate::clients::ChannelInfo) -> u64;
    let families: [(&str, &str, &str, ChannelGet); 9] = [
        ("rabbitmq_channel_consumers", "gauge", "Consumers on a channel", |c| c.consumers.len() as u64),
        ("rabbitmq_channel_messages_unacked", "gauge", "Delivered but not yet acknowledged messages", |c| {
            u64::from(c.unacked)
        }),
        (
            "rabbitmq_channel_messages_published_total",
            "counter",
            "Total number of messages published into an exchange on a channel",
            |c| c.messages.publish,
        ),
        (
            "rabbitmq_channel_messages_confirmed_total",
            "counter",
            "Total number of messages published into an exchange and confirmed on the channel",
            |c| c.messages.confirm,
        ),
        (
            "rabbitmq_channel_messages_delivered_ack_total",
            "counter",
            "Total number of messages delivered to consumers in manual acknowledgement mode",
            |c| c.messages.deliver,
        ),
        (
            "rabbitmq_channel_messages_delivered_total",
            "counter",
            "Total number of messages delivered to consumers in automatic acknowledgement mode",
            |c| c.messages.deliver_no_ack,
        ),
        (
            "rabbitmq_channel_messages_redelivered_total",
            "counter",
            "Total number of messages redelivered to consumers",
            |c| c.messages.redeliver,
        ),
        (
            "rabbitmq_channel_messages_acked_total",
            "counter",
            "Total number of messages acknowledged by consumers",
            |c| c.messages.ack,
        ),
        (
            "rabbitmq_channel_get_empty_total",
            "counter",
            "Total number of times basic.get operations fetched no message",
            |c| c.messages.get_empty,
        ),
    ];
    for (name, kind, help, get) in families {
        x.family(name, kind, help);
        if per_object {
            for c in connections {
                for ch in &c.channels {
                    let channel = format!("{} ({})", c.name(), ch.number);
                    x.sample(name, &[("vhost", &c.vhost), ("channel", &channel)], get(ch));
                }
            }
        } else {
            let total: u64 = connections.iter().flat_map(|c| c.channels.iter()).map(get).sum();
            x.sample(name, &[], total);
        }
    }
}

fn global_metrics(x: &mut Exposition, consumers: u64, connections: &[ConnectionInfo], totals: &MessageStats) {
    let m: &MessageStats = totals;
    let protocol = [("protocol", "amqp091")];
    let counters: [(&str, &str, u64); 13] = [
        ("received", "Total number of messages received from publishers", m.publish),
        ("routed", "Total number of messages routed to queues or streams", m.routed),
        ("unroutable_dropped", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable", m.drop_unroutable),
        ("unroutable_returned", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", m.return_unroutable),
        ("confirmed", "Total number of messages confirmed to publishers", m.confirm),
        ("delivered", "Total number of messages delivered to consumers", m.deliver_get()),
        ("delivered_consume_manual_ack", "Total number of messages delivered to consumers using basic.consume with manual acknowledgment", m.deliver),
        ("delivered_consume_auto_ack", "Total number of messages delivered to consumers using basic.consume with automatic acknowledgment", m.deliver_no_ack),
        ("delivered_get_manual_ack", "Total number of messages delivered to consumers using basic.get with manual acknowledgment", m.get),
        ("delivered_get_auto_ack", "Total number of messages delivered to consumers using basic.get with automatic acknowledgment", m.get_no_ack),
        ("get_empty", "Total number of times basic.get operations fetched no message", m.get_empty),
        ("redelivered", "Total number of messages redelivered to consumers", m.redeliver),
        ("acknowledged", "Total number of message acknowledgements received from consumers", m.ack),
    ];
    for (what, help, value) in counters {
        let name = format!("rabbitmq_global_messages_{what}_total");
        x.family(&name, "counter", help);
        x.sample(&name, &protocol, value);
    }
    x.family("rabbitmq_global_consumers", "gauge", "Current number of consumers");
    x.sample("rabbitmq_global_consumers", &protocol, consumers);
    let publishers = connections.iter().flat_map(|c| c.channels.iter()).filter(|ch| ch.messages.publish > 0).count();
    x.family("rabbitmq_global_publishers", "gauge", "Current number of publishers");
    x.sample("rabbitmq_global_publishers", &protocol, publishers);
}

fn node_metrics(x: &mut Exposition, broker: &Broker) {
    x.single(
        "rabbitmq_alarms_memory_used_watermark",
        "untyped",
        "is 1 if VM memory watermark alarm is in effect",
        u8::from(broker.memory.is_raised()),
    );
    x.single(
        "rabbitmq_alarms_free_disk_space_watermark",
        "untyped",
        "is 1 if free disk space watermark alarm is in effect",
        u8::from(broker.disk.is_raised()),
    );
    x.single("rabbitmq_alarms_file_descriptor_limit", "untyped", "is 1 if file descriptor limit alarm is in effect", 0);
    if let Some(rss) = process::resident_bytes() {
        x.single("rabbitmq_process_resident_memory_bytes", "gauge", "Memory used in bytes", rss);
    }
    x.single(
        "rabbitmq_resident_memory_limit_bytes",
        "gauge",
        "Memory high watermark in bytes (HareMQ: the limit for message memory)",
        broker.memory.limit(),
    );
    if let Some(n) = process::open_fds() {
        x.single("rabbitmq_process_open_fds", "gauge", "Open file descriptors", n);
    }
    if let Some(n) = process::max_fds() {
        x.single("rabbitmq_process_max_fds", "gauge", "Open file descriptors limit", n);
    }
    if let Some(free) = broker.disk.free_bytes() {
        x.single("rabbitmq_disk_space_available_bytes", "gauge", "Disk space available in bytes", free);
    }
    x.single(
        "rabbitmq_disk_space_available_limit_bytes",
        "gauge",
        "Free disk space low watermark in bytes",
        broker.disk.limit(),
    );
}

fn haremq_metrics(x: &mut Exposition, broker: &Broker, totals: &MessageStats) {
    x.single(
        "haremq_message_memory_bytes",
        "gauge",
        "Bytes held by messages and client buffers (what the memory alarm compares with its limit)",
        crate::memory::message_bytes(),
    );
    x.single(
        "haremq_route_cache_hits_total",
        "counter",
        "Publishes routed from their channel's route cache",
        totals.route_cache_hits,
    );
    let Some(store) = &broker.store else { return };
    let s = store.stats();
    x.single("haremq_store_commits_total", "counter", "Store transactions committed (each one fsync)", s.commits);
    x.single("haremq_store_ops_total", "counter", "Store operations committed", s.ops);
    x.single("haremq_store_messages_total", "counter", "Persistent messages that reached the store writer", s.messages);
    x.single(
        "haremq_store_messages_never_written_total",
        "counter",
        "Persistent messages consumed before their commit, so never written",
        s.never_written,
    );
    let name = "haremq_store_commit_seconds";
    x.family(name, "histogram", "Store commit latency (transaction and fsync)");
    let mut cumulative = 0;
    for (le, n) in crate::store::COMMIT_BUCKETS.iter().zip(s.commit_latency) {
        cumulative += n;
        x.sample(&format!("{name}_bucket"), &[("le", &le.to_string())], cumulative);
    }
    cumulative += s.commit_latency[crate::store::COMMIT_BUCKETS.len()];
    x.sample(&format!("{name}_bucket"), &[("le", "+Inf")], cumulative);
    x.sample(&format!("{name}_sum"), &[], s.commit_micros as f64 / 1e6);
    x.sample(&format!("{name}_count"), &[], cumulative);
}

/// The broker process as Linux's /proc shows it.
mod process {
    pub fn resident_bytes() -> Option<u64> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        (page > 0).then(|| pages * page as u64)
    }

    pub fn open_fds() -> Option<u64> {
        Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
    }

    pub fn max_fds() -> Option<u64> {
        let mut limit = std::mem::MaybeUninit::<libc::rlimit>::zeroed();
        // SAFETY: `limit` points to writable memory of the right type.
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, limit.as_mut_ptr()) };
        // SAFETY: getrlimit filled it when it returned 0.
        (rc == 0).then(|| unsafe { limit.assume_init() }.rlim_cur)
    }
}
