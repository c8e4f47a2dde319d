//! Declaring the exchange, queues and bindings of a run on a setup connection.

use amq_protocol::protocol::{exchange, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable};

use crate::client::{Conn, Res};

/// Parses `key=value,key=value` x-arguments (of a queue declare or a consume): integers become long-long ints, `true` /
/// `false` booleans, anything else a long string.
pub fn parse_args(spec: &str) -> Res<FieldTable> {
    let mut table = FieldTable::default();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| format!("argument {part:?} is not key=value"))?;
        let value = if let Ok(i) = v.parse::<i64>() {
            AMQPValue::LongLongInt(i)
        } else if v == "true" || v == "false" {
            AMQPValue::Boolean(v == "true")
        } else {
            AMQPValue::LongString(v.into())
        };
        table.insert(k.trim().into(), value);
    }
    Ok(table)
}

pub async fn declare_exchange(conn: &mut Conn, name: &str, kind: &str, durable: bool) -> Res<()> {
    let decl = exchange::Declare {
        exchange: name.into(),
        kind: kind.into(),
        // amq.* exchanges exist already and may not be declared actively.
        passive: name.starts_with("amq."),
        durable,
        auto_delete: false,
        internal: false,
        nowait: false,
        arguments: FieldTable::default(),
    };
    match conn.rpc(1, AMQPClass::Exchange(exchange::AMQPMethod::Declare(decl))).await? {
        AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(_)) => Ok(()),
        other => Err(format!("expected exchange.declare-ok, got {other:?}")),
    }
}

pub struct QueueSpec<'a> {
    pub durable: bool,
    pub auto_delete: bool,
    pub exclusive: bool,
    pub args: &'a FieldTable,
}

pub fn declare_queue_method(name: &str, spec: &QueueSpec<'_>) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: name.into(),
        passive: false,
        durable: spec.durable,
        exclusive: spec.exclusive,
        auto_delete: spec.auto_delete,
        nowait: false,
        arguments: spec.args.clone(),
    }))
}

pub async fn declare_queue(conn: &mut Conn, name: &str, spec: &QueueSpec<'_>) -> Res<()> {
    match conn.rpc(1, declare_queue_method(name, spec)).await? {
        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_)) => Ok(()),
        other => Err(format!("expected queue.declare-ok, got {other:?}")),
    }
}

pub async fn purge_queue(conn: &mut Conn, name: &str) -> Res<()> {
    let purge = queue::Purge { queue: name.into(), nowait: false };
    match conn.rpc(1, AMQPClass::Queue(queue::AMQPMethod::Purge(purge))).await? {
        AMQPClass::Queue(queue::AMQPMethod::PurgeOk(_)) => Ok(()),
        other => Err(format!("expected queue.purge-ok, got {other:?}")),
    }
}

/// Deletes a queue (even if used or not empty); returns the messages it held.
pub async fn delete_queue(conn: &mut Conn, name: &str) -> Res<u32> {
    let del = queue::Delete { queue: name.into(), if_unused: false, if_empty: false, nowait: false };
    match conn.rpc(1, AMQPClass::Queue(queue::AMQPMethod::Delete(del))).await? {
        AMQPClass::Queue(queue::AMQPMethod::DeleteOk(ok)) => Ok(ok.message_count),
        other => Err(format!("expected queue.delete-ok, got {other:?}")),
    }
}

pub fn bind_method(queue: &str, exchange: &str, key: &str) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
        queue: queue.into(),
        exchange: exchange.into(),
        routing_key: key.into(),
        nowait: false,
        arguments: FieldTable::default(),
    }))
}

pub fn unbind_method(queue: &str, exchange: &str, key: &str) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Unbind(queue::Unbind {
        queue: queue.into(),
        exchange: exchange.into(),
        routing_key: key.into(),
        arguments: FieldTable::default(),
    }))
}

pub async fn bind_queue(conn: &mut Conn, queue: &str, exchange: &str, key: &str) -> Res<()> {
    match conn.rpc(1, bind_method(queue, exchange, key)).await? {
        AMQPClass::Queue(queue::AMQPMethod::BindOk(_)) => Ok(()),
        other => Err(format!("expected queue.bind-ok, got {other:?}")),
    }
}

pub async fn unbind_queue(conn: &mut Conn, queue: &str, exchange: &str, key: &str) -> Res<()> {
    match conn.rpc(1, unbind_method(queue, exchange, key)).await? {
        AMQPClass::Queue(queue::AMQPMethod::UnbindOk(_)) => Ok(()),
        other => Err(format!("expected queue.unbind-ok, got {other:?}")),
    }
}

pub async fn delete_exchange(conn: &mut Conn, name: &str) -> Res<()> {
    let del = exchange::Delete { exchange: name.into(), if_unused: false, nowait: false };
    match conn.rpc(1, AMQPClass::Exchange(exchange::AMQPMethod::Delete(del))).await? {
        AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(_)) => Ok(()),
        other => Err(format!("expected exchange.delete-ok, got {other:?}")),
    }
}
