//! `GET /api/nodes` and `/api/nodes/{name}` (monitoring users and administrators, as
//! RabbitMQ: 401 `Not monitor user` otherwise), and `GET /api/extensions`.
//!
//! HareMQ is one node. Its fields are RabbitMQ 3.10's, filled only where HareMQ
//! has the number: memory is the process's resident set (RabbitMQ's `rss` strategy)
//! against the memory alarm's limit, disk is the data directory's filesystem, file
//! descriptors come from `/proc/self/fd` and `RLIMIT_NOFILE`, `sockets_used` is the
//! open AMQP connections. Erlang-only fields (processes, GC, Mnesia, I/O counters,
//! message-store rates) are left out rather than invented.

use serde_json::{json, Value};

use super::overview::node_name;
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
            json!({"node": node_name(), "protocol": protocol, "ip_address": addr.ip().to_string(), "port": addr.port()})
        })
        .collect();
    let processors = std::thread::available_parallelism().map_or(1, |n| n.get());
    json!({
        "name": node_name(),
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

pub fn list(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    require_monitor(call)?;
    super::pagination::reply(call, vec![node(ctx)])
}

/// `GET /api/nodes/{name}`: 404 for any other node name.
pub fn one(ctx: &Context, call: &Call) -> Result<Reply, Reply> {
    require_monitor(call)?;
    if call.params[0] != node_name() {
        return Err(Reply::not_found());
    }
    Ok(Reply::json(node(ctx)))
}

/// `GET /api/extensions`: the web UI's plugin scripts. HareMQ serves no UI, so none.
pub fn extensions(_ctx: &Context, _call: &Call) -> Result<Reply, Reply> {
    Ok(Reply::json(json!([])))
}
