//! Restoring a vhost from the store's snapshot at start: durable exchanges, queues
//! (with their entries and spilled runs), bindings and held delayed messages.

use std::collections::HashMap;
use std::sync::Arc;

use haremq_routing::Destination;

use super::*;

impl VHost {
    /// Recreates this vhost's durable exchanges, queues (with their messages) and
    /// bindings from a store snapshot.
    pub fn restore(&self, snap: &Snapshot, messages: &HashMap<MessageId, Arc<Message>>) {
        let Some(store) = &self.store else {
            return;
        };
        let mut topo = self.change_topology();
        for e in snap.exchanges.iter().filter(|e| *e.vhost == *self.name) {
            let settings = match crate::exchange::settings(&e.kind, &e.arguments, &e.name, &self.name) {
                Ok(s) => s,
                Err(err) => {
                    log::warn!("skipping stored exchange '{}' of type '{}': {err}", e.name, e.kind);
                    continue;
                }
            };
            let name: Arc<str> = e.name.as_str().into();
            Self::add_to_routing(&mut topo.routing, &e.name, &settings);
            topo.exchanges.insert(
                name.clone(),
                ExchangeMeta {
                    name,
                    settings,
                    durable: true,
                    auto_delete: e.auto_delete,
                    internal: e.internal,
                    arguments: e.arguments.clone(),
                    policy: None,
                },
            );
        }
        let mut queues = self.change_queues();
        let mut recovered = 0usize;
        for q in snap.queues.iter().filter(|q| *q.vhost == *self.name) {
            let mut ready: Vec<Entry> = Vec::new();
            let mut count = 0u64;
            for r in snap.entries.get(&q.id).into_iter().flatten() {
                match r {
                    Recovered::Entry(e) => {
                        let Some(message) = messages.get(&e.message) else { continue };
                        message.store.refs.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                        ready.push(Entry::Loaded(QueuedMessage::new(e.seq, e.delivered, message.clone())));
                        count += 1;
                    }
                    Recovered::Run { first_seq, last_seq, count: n } => {
                        ready.push(Entry::Run(Run::recovered(*first_seq, *last_seq, *n)));
                        count += n;
                    }
                }
            }
            recovered += count as usize;
            let name: Arc<str> = q.name.as_str().into();
            let settings = QueueSettings {
                durable: true,
                exclusive_owner: None,
                auto_delete: q.auto_delete,
                arguments: q.arguments.clone(),
            };
            let Some(me) = self.me.upgrade() else { return };
            let queue: Arc<Queue> = if QueueKind::of(&q.arguments) == QueueKind::Stream {
                match StreamQueue::open(name.clone(), self.name.clone(), settings, store.clone(), q.id) {
                    Ok(stream) => stream,
                    Err(e) => {
                        log::error!("stream '{}' in vhost '{}' is not restored: {e}", q.name, self.name);
                        continue;
                    }
                }
            } else {
                let host: Arc<dyn QueueHost> = me;
                ClassicQueue::restore(name.clone(), &host, settings, Some((store.clone(), q.id)), ready)
            };
            queues.insert(name, queue);
        }
        for b in snap.bindings.iter().filter(|b| *b.vhost == *self.name) {
            let dest = if b.to_queue {
                match queues.get(b.destination.as_str()) {
                    Some(q) => Destination::Queue(QueueRef(q.clone())),
                    None => continue,
                }
            } else {
                Destination::Exchange(b.destination.as_str().into())
            };
            if let Err(e) = topo.routing.bind(&b.source, dest, &b.routing_key, &b.arguments) {
                log::warn!("skipping stored binding {} -> {}: {e:?}", b.source, b.destination);
            }
        }
        log::info!(
            "vhost '{}': recovered {} exchanges, {} queues, {} messages",
            self.name,
            snap.exchanges.iter().filter(|e| *e.vhost == *self.name).count(),
            queues.len(),
            recovered
        );
        drop(queues);
        drop(topo);
        self.restore_delayed(snap);
    }

    /// Reschedules the delayed messages recovered from the store.
    pub(super) fn restore_delayed(&self, snap: &Snapshot) {
        let now = crate::message::now_ms();
        for (id, r) in snap.delayed.iter().filter(|(_, r)| *r.vhost == *self.name) {
            let props = match crate::wire::nesting::parse_properties(&r.raw_properties) {
                Some(p) => p,
                None => {
                    log::warn!("dropping stored delayed message {id}: unreadable properties");
                    self.persist(StoreOp::DeleteDelayed(*id));
                    continue;
                }
            };
            self.delayed.schedule(DelayedMessage {
                due: std::time::Instant::now() + std::time::Duration::from_millis(r.due_ms.saturating_sub(now)),
                exchange: r.exchange.as_str().into(),
                routing_key: r.routing_key.as_str().into(),
                extra_keys: r.extra_keys.clone(),
                headers: props.headers().clone(),
                message_id: props.message_id().as_ref().map(|s| s.to_string()),
                correlation_id: props.correlation_id().as_ref().map(|s| s.to_string()),
                timestamp: *props.timestamp(),
                raw_properties: r.raw_properties.clone().into_boxed_slice(),
                body: r.body.clone().into_boxed_slice(),
                persistent: r.persistent,
                ttl: r.ttl,
                store_id: Some(*id),
            });
        }
    }
}
