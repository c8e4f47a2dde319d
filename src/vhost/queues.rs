//! Queues: declare (exclusivity, RabbitMQ's equivalence rules), delete, and the
//! exclusive queues a closing connection takes with it.

use std::sync::Arc;

use amq_protocol::types::AMQPValue;

use super::*;

/// The queue arguments RabbitMQ 3.10 compares on redeclare (its classic queue type's
/// `queue_arguments`), in its order.
pub(super) const COMPARED_QUEUE_ARGS: [&str; 13] = [
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-type",
    "x-queue-master-locator",
];

/// RabbitMQ's argument equivalence: the same type class (all integer types are one,
/// float and double another) and an equal value.
pub(super) fn arg_equivalent(a: &AMQPValue, b: &AMQPValue) -> bool {
    pub(super) fn int(v: &AMQPValue) -> Option<i128> {
        Some(match v {
            AMQPValue::ShortShortInt(n) => i128::from(*n),
            AMQPValue::ShortShortUInt(n) => i128::from(*n),
            AMQPValue::ShortInt(n) => i128::from(*n),
            AMQPValue::ShortUInt(n) => i128::from(*n),
            AMQPValue::LongInt(n) => i128::from(*n),
            AMQPValue::LongUInt(n) => i128::from(*n),
            AMQPValue::LongLongInt(n) => i128::from(*n),
            _ => return None,
        })
    }
    pub(super) fn float(v: &AMQPValue) -> Option<f64> {
        match v {
            AMQPValue::Float(f) => Some(f64::from(*f)),
            AMQPValue::Double(f) => Some(*f),
            _ => None,
        }
    }
    match (int(a), int(b), float(a), float(b)) {
        (Some(x), Some(y), ..) => x == y,
        (_, _, Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// 403 for a new queue named with the reserved prefix `amq.` (server-named
/// `amq.gen-…` names excepted).
pub fn check_queue_name(name: &str) -> AmqpResult<()> {
    if name.starts_with("amq.") && !name.starts_with("amq.gen-") {
        return Err(AmqpError::AccessRefused(format!("queue name '{name}' contains reserved prefix 'amq.*'")));
    }
    Ok(())
}

/// queue.delete's `if-unused` and `if-empty` conditions (406, RabbitMQ's texts).
pub fn check_deletable(q: &Queue, if_unused: bool, if_empty: bool) -> AmqpResult<()> {
    let refuse =
        |why| Err(AmqpError::PreconditionFailed(format!("queue '{}' in vhost '{}' {why}", q.name(), q.vhost())));
    if if_unused && q.consumer_count() > 0 {
        return refuse("in use");
    }
    if if_empty && q.message_count() > 0 {
        return refuse("not empty");
    }
    Ok(())
}

impl VHost {
    /// 406 if the vhost's `max-queues` is reached (RabbitMQ's text). Checked again
    /// under the queue-map lock when the queue is created.
    pub fn check_queue_limit(&self, name: &str) -> AmqpResult<()> {
        if let Some(max) = self.limits().max_queues {
            if read(&self.queues).len() as u64 >= max {
                return Err(self.queue_limit_reached(name, max));
            }
        }
        Ok(())
    }

    fn queue_limit_reached(&self, name: &str, max: u64) -> AmqpError {
        AmqpError::PreconditionFailed(format!(
            "cannot declare queue '{name}': queue limit in vhost '{}' ({max}) is reached",
            self.name
        ))
    }

    /// queue.declare for an already-named queue. Returns the queue and whether it was
    /// created by this call.
    pub fn declare_queue(
        &self,
        name: &str,
        passive: bool,
        settings: QueueSettings,
        conn: ConnectionId,
    ) -> AmqpResult<(Arc<Queue>, bool)> {
        if passive {
            return Ok((self.queue_for(name, conn)?, false));
        }
        check_queue_name(name)?;
        let mut queues = self.change_queues();
        if let Some(q) = queues.get(name) {
            // As RabbitMQ: the declared owner must be the queue's, exactly (another
            // connection's queue, exclusive=true for a shared queue and exclusive=false
            // from the owner alike): a lock conflict, checked before the other fields.
            if q.settings().exclusive_owner != settings.exclusive_owner {
                return Err(exclusive_locked(q.as_ref()));
            }
            self.check_queue_equivalent(q.as_ref(), &settings)?;
            return Ok((q.clone(), false));
        }
        if self.is_deleted() {
            return Err(self.deleted_error());
        }
        // RabbitMQ's vhost limit, for new queues only (every queue of the vhost counts).
        if let Some(max) = self.limits().max_queues {
            if queues.len() as u64 >= max {
                return Err(self.queue_limit_reached(name, max));
            }
        }
        let kind = QueueKind::of(&settings.arguments);
        crate::queue::kind::check_properties(kind, name, &self.name, &settings)?;
        let name: Arc<str> = name.into();
        let Some(me) = self.me.upgrade() else {
            return Err(AmqpError::InternalError("vhost is shutting down".into()));
        };
        // Exclusive queues die with their connection, so they are never stored.
        let store = match &self.store {
            Some(store) if settings.durable && settings.exclusive_owner.is_none() => {
                Some((store.clone(), store.next_queue_id()))
            }
            _ => None,
        };
        let record = |id| {
            StoreOp::PutQueue(QueueRecord {
                id,
                vhost: self.name.to_string(),
                name: name.to_string(),
                auto_delete: settings.auto_delete,
                arguments: settings.arguments.clone(),
            })
        };
        let q: Arc<Queue> = match (kind, store) {
            (QueueKind::Stream, Some((store, id))) => {
                let stream = StreamQueue::open(name.clone(), self.name.clone(), settings.clone(), store.clone(), id)
                    .map_err(|e| {
                        log::error!("cannot create the log of stream '{name}' in vhost '{}': {e}", self.name);
                        AmqpError::InternalError(format!("cannot create the stream's log: {e}"))
                    })?;
                store.send(record(id));
                stream
            }
            (QueueKind::Stream, None) => {
                return Err(AmqpError::PreconditionFailed(format!(
                    "queue '{name}' in vhost '{}': streams need a data directory",
                    self.name
                )))
            }
            (kind, store) => {
                if kind == QueueKind::Quorum {
                    log::info!(
                        "queue '{name}' in vhost '{}' is declared as a quorum queue: HareMQ runs it as a classic durable queue (not replicated)",
                        self.name
                    );
                }
                if let Some((store, id)) = &store {
                    store.send(record(*id));
                }
                let host: Arc<dyn QueueHost> = me;
                ClassicQueue::new(name.clone(), &host, settings, store)
            }
        };
        self.apply_policies_to_new(&q);
        queues.insert(name, q.clone());
        drop(queues);
        // Every queue is bound to the default exchange by its name; that binding is
        // implicit (handled in `route`), as in RabbitMQ, and never listed.
        Ok((q, true))
    }

    /// Adds a queue whose existence was decided elsewhere (a quorum queue whose
    /// replicated declaration this node applied). False, and nothing changes, if the
    /// vhost already has a queue of that name or is being deleted.
    pub fn insert_replicated_queue(&self, q: Arc<Queue>) -> bool {
        let mut queues = self.change_queues();
        if self.is_deleted() || queues.contains_key(q.name()) {
            return false;
        }
        self.apply_policies_to_new(&q);
        queues.insert(q.name().clone(), q);
        true
    }

    /// RabbitMQ's equivalence check for a redeclare (after the owner check): durable,
    /// auto_delete, then the arguments it compares for classic queues, in its order.
    /// Other arguments (its quorum/stream ones, HareMQ's extensions, unknown ones) are
    /// not compared. Integers compare by value across integer types.
    pub(super) fn check_queue_equivalent(&self, q: &Queue, s: &QueueSettings) -> AmqpResult<()> {
        let cur = q.settings();
        let mismatch = |arg: &str, received: String, current: String| {
            AmqpError::PreconditionFailed(format!(
                "inequivalent arg '{arg}' for queue '{}' in vhost '{}': received {received} but current is {current}",
                q.name(),
                self.name
            ))
        };
        if cur.durable != s.durable {
            return Err(mismatch("durable", format!("'{}'", s.durable), format!("'{}'", cur.durable)));
        }
        if cur.auto_delete != s.auto_delete {
            return Err(mismatch("auto_delete", format!("'{}'", s.auto_delete), format!("'{}'", cur.auto_delete)));
        }
        for key in COMPARED_QUEUE_ARGS {
            let (received, current) = (s.arguments.inner().get(key), cur.arguments.inner().get(key));
            let equivalent = match (received, current) {
                (Some(r), Some(c)) => arg_equivalent(r, c),
                // x-queue-type "classic" is the default.
                (None, Some(v)) | (Some(v), None) => {
                    key == "x-queue-type" && matches!(v, AMQPValue::LongString(t) if t.as_bytes() == b"classic")
                }
                (None, None) => true,
            };
            if !equivalent {
                // RabbitMQ's wording: both set, the values; one unset, "none" and "the
                // value 'v' of type 't'".
                let side = |v: Option<&AMQPValue>, other: Option<&AMQPValue>| match (v, other) {
                    (None, _) => "none".to_string(),
                    (Some(v), Some(_)) => format!("'{}'", DisplayValue(Some(v))),
                    (Some(v), None) => {
                        format!("the value '{}' of type '{}'", DisplayValue(Some(v)), crate::exchange::type_word(v))
                    }
                };
                return Err(mismatch(key, side(received, current), side(current, received)));
            }
        }
        Ok(())
    }

    /// Deletes a queue: unbinds it, cancels its consumers (server-sent basic.cancel)
    /// and drops its messages. Returns the number of ready messages it held.
    pub fn delete_queue(&self, q: &Arc<Queue>) -> u32 {
        {
            let mut queues = self.change_queues();
            if queues.get(q.name()).is_some_and(|cur| Arc::ptr_eq(cur, q)) {
                queues.remove(q.name());
            }
        }
        {
            let mut topo = self.change_topology();
            let sources = topo.routing.remove_queue(&QueueRef(q.clone()));
            self.auto_delete_exchanges(&mut topo, sources);
        }
        let (count, orphans) = q.mark_deleted();
        for o in orphans {
            o.channel.cancelled(&o.tag);
        }
        count
    }

    /// The queues exclusively owned by `conn`, to delete when it closes.
    pub fn exclusive_queues_of(&self, conn: ConnectionId) -> Vec<Arc<Queue>> {
        read(&self.queues).values().filter(|q| q.settings().exclusive_owner == Some(conn)).cloned().collect()
    }
}
