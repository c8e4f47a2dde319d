//! `GET /api/nodes` and `/api/nodes/{name}` (monitoring users and administrators, as
//! RabbitMQ: 401 `Not monitor user` otherwise), and `GET /api/extensions`.
//!
//! This node's fields are RabbitMQ 3.10's, filled only where HareMQ has the number
//! (the other members of a cluster show what this node knows of them): memory is the process's resident set (RabbitMQ's `rss` strategy)
//! against the memory alarm's limit, disk is the data directory's filesystem, file
//! descriptors come from `/proc/self/fd` and `RLIMIT_NOFILE`, `sockets_used` is the
//! open AMQP connections. Erlang-only fields (processes, GC, Mnesia, I/O counters,
//! message-store rates) are left out rather than invented.

use serde_json::{json, Value};

use super::{Call, Context, Reply};

fn require_monitor(call: &Call) -> Result<(), Reply> {
    if call.login.reads_all() {
        Ok(())
    } else {
        Err(Reply::error(401, "not_authorised", "Not monitor user"))
    }
}

/// The process's resident memory in bytes (`/proc/self/statm`, Linux).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

fn fd_used() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

fn fd_total() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0).then_some(limit.rlim_cur)
}

/// Milliseconds since this process started (`/proc/self/stat` against
/// `/proc/uptime`), RabbitMQ's `uptime`.
fn uptime_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    let start_ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?.max(1);
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let system_s: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    let started_ms = start_ticks * 1000 / hz;
    Some(((system_s * 1000.0) as u64).saturating_sub(started_ms))
}

fn exchange_types() -> Vec<Value> {
    const KNOWN: &[&str] = &[
        "direct",
        "fanout",
        "headers",
        "topic",
        "x-consistent-hash",
        "x-modulus-hash",
        "x-random",
        "x-local-random",
        "x-delayed-message",
    ];
    KNOWN
        .iter()
        .filter(|k| crate::exchange::check_type(k).is_ok())
        .map(|k| json!({"name": k, "description": "", "enabled": true}))
        .collect()
}

fn node(ctx: &Context) -> Value {
    let mem_limit = ctx.broker.memory.limit();
    let listeners: Vec<Value> = ctx
        .listeners
        .iter()
        .map(|(protocol, addr)| {
            json!({"node": ctx.broker.node_name(), "protocol": protocol, "ip_address": addr.ip().to_string(), "port": addr.port()})
        })
        .collect();
    let processors = std::thread::available_parallelism().map_or(1, |n| n.get());
    json!({
        "name": ctx.broker.node_name(),
        "type": "disc",
        "running": true,
        "os_pid": std::process::id().to_string(),
        "mem_used": resident_bytes(),
        "mem_limit": mem_limit,
        "mem_alarm": ctx.broker.memory.is_raised(),
        "mem_calculation_strategy": "rss",
        "disk_free": ctx.broker.disk.free_bytes(),
        "disk_free_limit": ctx.broker.disk.limit(),
        "disk_free_alarm": ctx.broker.disk.is_raised(),
        "fd_used": fd_used(),
        "fd_total": fd_total(),
        "sockets_used": ctx.broker.connection_count(),
        "sockets_total": fd_total(),
        "uptime": uptime_ms(),
        "processors": processors,
        "rates_mode": "basic",
        "db_dir": ctx.broker.config.data_dir.display().to_string(),
        "exchange_types": exchange_types(),
        "auth_mechanisms": [],
        "applications": [],
        "contexts": [],
        "listeners": listeners,
        "partitions": [],
        "cluster_links": [],
        "enabled_plugins": [],
        "config_files": [],
        "log_files": [],
        "net_ticktime": 60,
    })
}

/// Every node: this one in full, the other members of its cluster with what this
/// node knows of them (name, whether it reaches them, their listeners).
fn all_nodes(ctx: &Context) -> Vec<Value> {
    let mut me = node(ctx);
    let Some(cluster) = ctx.broker.cluster() else {
        return vec![me];
    };
    let status = cluster.status();
    let unreachable: Vec<&str> =
        status.nodes.iter().filter(|n| n.reachable == Some(false)).map(|n| n.name.as_str()).collect();
    me["partitions"] = json!(unreachable);
    me["cluster_node_id"] = json!(status.node_id);
    me["cluster_leader"] = json!(status.leader);
    me["cluster_has_quorum"] = json!(status.has_quorum);
    let mut nodes = vec![me];
    for n in status.nodes.iter().filter(|n| n.id != status.node_id) {
        let listener = |protocol: &str, a: std::net::SocketAddr| json!({"node": n.name, "protocol": protocol, "ip_address": a.ip().to_string(), "port": a.port()});
        let listeners: Vec<Value> = [n.amqp.map(|a| listener("amqp", a)), n.management.map(|a| listener("http", a))]
            .into_iter()
            .flatten()
            .collect();
        nodes.push(json!({
            "name": n.name,
            "type": "disc",
            "running": n.reachable,
            "cluster_node_id": n.id,
            "cluster_address": n.cluster_addr.to_string(),
            "cluster_voter": n.voter,
            "listeners": listeners,
        }));
    }
    nodes
}

pub fn list(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    require_monitor(call)?;
    super::pagination::reply(call, all_nodes(ctx))
}

/// `GET /api/nodes/{name}`: 404 for a name that is not a node of the cluster.
pub fn one(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    require_monitor(call)?;
    all_nodes(ctx).into_iter().find(|n| n["name"] == call.params[0]).map(Reply::json).ok_or_else(Reply::not_found)
}

/// `GET /api/extensions`: the web UI's plugin scripts. HareMQ serves no UI, so none.
pub fn extensions(_ctx: &Context, _call: &Call) -> Result<Reply, Reply> {
    Ok(Reply::json(json!([])))
}
