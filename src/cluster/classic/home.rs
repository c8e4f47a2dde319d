//! The home side of the classic-queue links: what this node does for the other
//! nodes' clients of the classic queues it holds.
//!
//! Each connection from another node is a session. A publish is enqueued as a local
//! publish would be and answered once it is safe (after the store's fsync for a
//! persistent message on a durable queue). A consumer is attached as a proxy
//! ([`Proxy`], a [`ConsumerSink`]) that forwards deliveries within its window and
//! counts the settlements coming back. When the session ends, its consumers are
//! detached and every delivery it has not settled is requeued, as when a local
//! channel closes.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use amq_protocol::types::FieldTable;
use haremq_raft::{RaftNode, ServiceStream};

use crate::broker::Broker;
use crate::error::{AmqpError, AmqpResult};
use crate::message::QueuedMessage;
use crate::queue::remote::protocol::{FromHome, Got, HomeStats, PublishOutcome, Settlement, ToHome, WireError};
use crate::queue::{
    enqueue_routed, ConsumerSink, DeliveryTag, NewConsumer, Offer, Queue, QueueHost, QueueKind, QueueRef,
};
use crate::vhost::VHost;

/// Deliveries a no-ack consumer (or one without a prefetch) may have in flight.
const UNLIMITED_WINDOW: u32 = 1000;

/// Answers and deliveries a session holds for a peer that does not read them: past
/// this, the session ends (the peer is stuck or misbehaving) rather than grow.
const MAX_OUTGOING: usize = 64 * 1024;

/// Serves the other nodes' connections to this node's classic queues.
pub fn serve(node: &RaftNode, broker: Weak<Broker>) {
    node.serve(
        super::link::SERVICE,
        Arc::new(move |peer, stream| {
            smol::spawn(session(peer, stream, broker.clone())).detach();
        }),
    );
}

/// A delivery id unique in this process: a settlement from an earlier connection
/// (after a reconnect) settles nothing.
fn next_delivery() -> u64 {
    static NEXT: OnceLock<AtomicU64> = OnceLock::new();
    NEXT.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(crate::message::now_ms());
        AtomicU64::new(h.finish() >> 2)
    })
    .fetch_add(1, Ordering::Relaxed)
}

struct Session {
    peer: u64,
    broker: Weak<Broker>,
    out: smol::channel::Sender<FromHome>,
    proxies: Mutex<HashMap<u64, Arc<Proxy>>>,
    unsettled: Mutex<HashMap<u64, Unsettled>>,
}

/// A delivery the other node has not settled yet.
struct Unsettled {
    /// None: a basic.get.
    consumer: Option<u64>,
    queue: Arc<Queue>,
    message: QueuedMessage,
}

async fn session(peer: u64, stream: ServiceStream, broker: Weak<Broker>) {
    let (mut reader, mut writer) = stream.split();
    let (out, out_rx) = smol::channel::bounded::<FromHome>(MAX_OUTGOING);
    let writing = smol::spawn(async move {
        while let Ok(first) = out_rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < 512 {
                match out_rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            if let Err(e) = writer.send_all(&batch).await {
                log::debug!("cluster: writing to node {peer}'s queue link failed: {e}");
                break;
            }
        }
        writer.close();
    });
    let s = Arc::new(Session { peer, broker, out, proxies: Mutex::default(), unsettled: Mutex::default() });
    log::debug!("cluster: node {peer} opened a queue link");
    loop {
        // The other node pings an idle link: silence means it is gone (or cut off).
        let next = smol::future::or(async { reader.recv::<ToHome>().await }, async {
            smol::Timer::after(super::link::SILENCE).await;
            Err(format!("nothing heard for {} s", super::link::SILENCE.as_secs()))
        });
        match next.await {
            // In order, on this task: nothing a request does waits (the store's
            // commits and the cluster's log answer through callbacks).
            Ok(request) => s.handle(request),
            Err(e) => {
                log::debug!("cluster: node {peer}'s queue link ended: {e}");
                break;
            }
        }
    }
    s.end();
    drop(s);
    writing.await;
}

/// Queues `msg` for the peer; a peer that lets [`MAX_OUTGOING`] pile up loses the
/// session (the writer drains what is queued, then closes the connection).
fn send_or_close(out: &smol::channel::Sender<FromHome>, msg: FromHome) -> bool {
    match out.try_send(msg) {
        Ok(()) => true,
        Err(smol::channel::TrySendError::Full(_)) => {
            log::warn!("cluster: a queue link's peer reads nothing back; closing the link");
            out.close();
            false
        }
        Err(smol::channel::TrySendError::Closed(_)) => false,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Session {
    fn send(&self, msg: FromHome) {
        send_or_close(&self.out, msg);
    }

    /// A classic queue that lives here.
    fn local(&self, vhost: &str, queue: &str) -> AmqpResult<(Arc<VHost>, Arc<Queue>)> {
        let missing = || AmqpError::NotFound(format!("no queue '{queue}' in vhost '{vhost}'"));
        let broker = self.broker.upgrade().ok_or_else(missing)?;
        let vh = broker.vhost(vhost).ok_or_else(missing)?;
        let q = vh.queue(queue).filter(|q| q.home().is_none() && q.kind() == QueueKind::Classic).ok_or_else(missing)?;
        Ok((vh, q))
    }

    fn handle(self: &Arc<Self>, request: ToHome) {
        match request {
            ToHome::Publish { id, vhost, queue, message } => {
                let outcome = match self.local(&vhost, &queue) {
                    Ok((vh, q)) => {
                        let store = QueueHost::store(&*vh).clone();
                        let done = enqueue_routed(&store, &mut vec![QueueRef(q)], message.into_message(), None);
                        if id != 0 && done.stored > 0 && !done.rejected {
                            if let Some(store) = store {
                                let out = self.out.clone();
                                store.after_commit(Box::new(move |ok| {
                                    let outcome = if ok { PublishOutcome::Accepted } else { PublishOutcome::Lost };
                                    send_or_close(&out, FromHome::Published { id, outcome });
                                }));
                                return;
                            }
                        }
                        if done.rejected {
                            PublishOutcome::Rejected
                        } else if done.delivered > 0 {
                            PublishOutcome::Accepted
                        } else {
                            PublishOutcome::Lost
                        }
                    }
                    Err(_) => PublishOutcome::Lost,
                };
                if id != 0 {
                    self.send(FromHome::Published { id, outcome });
                }
            }
            ToHome::Consume { consumer, vhost, queue, tag, exclusive, priority, no_ack, prefetch } => {
                let refused = self.consume(consumer, &vhost, &queue, tag, exclusive, priority, no_ack, prefetch).err();
                self.send(FromHome::Consumed { consumer, refused: refused.as_ref().map(WireError::of) });
            }
            ToHome::Cancel { consumer } => {
                let proxy = lock(&self.proxies).remove(&consumer);
                if let Some(p) = proxy {
                    self.detach(&p);
                }
            }
            ToHome::Credit { consumer, n } => {
                let proxy = lock(&self.proxies).get(&consumer).cloned();
                if let Some(p) = proxy {
                    p.returned(n);
                }
            }
            ToHome::Settle { delivery, how } => {
                let Some(u) = lock(&self.unsettled).remove(&delivery) else { return };
                match how {
                    Settlement::Ack => u.queue.ack(&u.message),
                    Settlement::Forget => u.queue.forget(&u.message),
                    Settlement::Requeue => {
                        u.queue.counters().returned.add(1);
                        u.queue.requeue(&mut std::iter::once(u.message));
                    }
                    Settlement::Reject => {
                        u.queue.counters().rejected.add(1);
                        u.queue.reject(u.message);
                    }
                }
                let proxy = u.consumer.and_then(|c| lock(&self.proxies).get(&c).cloned());
                if let Some(p) = proxy {
                    p.returned(1);
                }
            }
            ToHome::Get { id, vhost, queue, no_ack } => {
                let result = self.local(&vhost, &queue).map(|(_, q)| {
                    let mut got = None;
                    q.get(no_ack, &mut |m, left| {
                        let delivery = next_delivery();
                        if no_ack {
                            q.forget(&m);
                        } else {
                            q.mark_delivered(&m);
                        }
                        got = Some(Got {
                            delivery,
                            redelivered: m.redelivered,
                            left,
                            message: crate::queue::remote::protocol::WireMessage::of(&m.message),
                        });
                        if !no_ack {
                            lock(&self.unsettled)
                                .insert(delivery, Unsettled { consumer: None, queue: q.clone(), message: m });
                        }
                    });
                    got
                });
                self.send(FromHome::Got { id, result: result.map_err(|e| WireError::of(&e)) });
            }
            ToHome::Purge { id, vhost, queue } => {
                let result = self.local(&vhost, &queue).map(|(_, q)| q.purge());
                self.send(FromHome::Done { id, result: result.map_err(|e| WireError::of(&e)) });
            }
            ToHome::Delete { id, vhost, queue, if_unused, if_empty } => {
                let (vh, q) = match self.local(&vhost, &queue) {
                    Ok(found) => found,
                    // Deleting a missing queue succeeds, as in RabbitMQ.
                    Err(_) => return self.send(FromHome::Done { id, result: Ok(0) }),
                };
                if let Err(e) = crate::vhost::check_deletable(&*q, if_unused, if_empty) {
                    return self.send(FromHome::Done { id, result: Err(WireError::of(&e)) });
                }
                let count = vh.delete_queue(&q);
                let out = self.out.clone();
                let answer = move |_| {
                    send_or_close(&out, FromHome::Done { id, result: Ok(count) });
                };
                match self.broker.upgrade().and_then(|b| b.cluster().cloned()) {
                    Some(cluster) => cluster.delete_classic_queue(&vhost, &queue, Box::new(answer)),
                    None => answer(Ok(())),
                }
            }
            ToHome::Ping { id } => self.send(FromHome::Pong { id }),
            ToHome::Stats { id, vhost, queue } => {
                let result = self.local(&vhost, &queue).map(|(_, q)| {
                    let s = q.stats();
                    HomeStats {
                        ready: s.messages_ready,
                        unacked: s.messages_unacknowledged,
                        bytes_ready: s.message_bytes_ready,
                        consumers: s.consumers,
                    }
                });
                self.send(FromHome::Stats { id, result: result.map_err(|e| WireError::of(&e)) });
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn consume(
        self: &Arc<Self>,
        consumer: u64,
        vhost: &str,
        queue: &str,
        tag: String,
        exclusive: bool,
        priority: i32,
        no_ack: bool,
        prefetch: u16,
    ) -> AmqpResult<()> {
        let (_, q) = self.local(vhost, queue)?;
        let window = if no_ack || prefetch == 0 { UNLIMITED_WINDOW } else { u32::from(prefetch) };
        let tag: Arc<str> = tag.into();
        let proxy = Arc::new(Proxy {
            consumer,
            tag: tag.clone(),
            session: Arc::downgrade(self),
            queue: Arc::downgrade(&q),
            no_ack,
            window,
            in_flight: AtomicU32::new(0),
            blocked: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
        });
        lock(&self.proxies).insert(consumer, proxy.clone());
        let added = q.add_consumer(NewConsumer {
            tag,
            sink: proxy,
            exclusive,
            priority,
            no_ack,
            prefetch,
            arguments: &FieldTable::default(),
            registered: None,
        });
        if added.is_err() {
            lock(&self.proxies).remove(&consumer);
        }
        added
    }

    /// Detaches a proxy consumer; deletes an auto-delete queue it was the last of.
    fn detach(&self, p: &Arc<Proxy>) {
        p.cancelled.store(true, Ordering::Release);
        let Some(q) = p.queue.upgrade() else { return };
        if q.remove_consumer(&p.tag, &**p as &dyn ConsumerSink) {
            log::info!("cluster: auto-delete queue '{}' lost its last consumer (on node {})", q.name(), self.peer);
            if let Some(broker) = self.broker.upgrade() {
                if let Some(vh) = broker.vhost(q.vhost()) {
                    vh.delete_queue(&q);
                }
            }
        }
    }

    /// The other node is gone (or closed the link): its consumers are detached and
    /// what it held is requeued.
    fn end(&self) {
        let proxies: Vec<Arc<Proxy>> = lock(&self.proxies).drain().map(|(_, p)| p).collect();
        for p in &proxies {
            self.detach(p);
        }
        let unsettled: Vec<Unsettled> = lock(&self.unsettled).drain().map(|(_, u)| u).collect();
        if !proxies.is_empty() || !unsettled.is_empty() {
            log::info!(
                "cluster: node {}'s queue link ended: {} consumers detached, {} deliveries requeued",
                self.peer,
                proxies.len(),
                unsettled.len()
            );
        }
        for u in unsettled {
            u.queue.counters().returned.add(1);
            u.queue.requeue(&mut std::iter::once(u.message));
        }
    }
}

/// A consumer on another node, as the queue here sees it.
struct Proxy {
    consumer: u64,
    tag: Arc<str>,
    session: Weak<Session>,
    queue: Weak<Queue>,
    no_ack: bool,
    /// Deliveries it may have in flight (sent, not settled or credited back).
    window: u32,
    in_flight: AtomicU32,
    /// The queue found it full: it is dispatched again when credit comes back.
    blocked: AtomicBool,
    cancelled: AtomicBool,
}

impl Proxy {
    /// `n` deliveries were settled or handed to the client.
    fn returned(&self, n: u32) {
        let _ = self.in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| Some(f.saturating_sub(n)));
        if self.blocked.swap(false, Ordering::AcqRel) {
            if let Some(q) = self.queue.upgrade() {
                q.dispatch();
            }
        }
    }
}

impl ConsumerSink for Proxy {
    fn offer(&self, queue: &Arc<Queue>, _tag: &Arc<str>, m: &QueuedMessage) -> Offer {
        if self.cancelled.load(Ordering::Acquire) {
            return Offer::Gone;
        }
        let Some(session) = self.session.upgrade() else { return Offer::Gone };
        if self.in_flight.load(Ordering::Acquire) >= self.window {
            self.blocked.store(true, Ordering::Release);
            // Credit may have come back between the check and the flag.
            if self.in_flight.load(Ordering::Acquire) >= self.window {
                return Offer::Busy;
            }
            self.blocked.store(false, Ordering::Release);
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let delivery = next_delivery();
        if !self.no_ack {
            lock(&session.unsettled).insert(
                delivery,
                Unsettled { consumer: Some(self.consumer), queue: queue.clone(), message: m.clone() },
            );
        }
        let sent = send_or_close(
            &session.out,
            FromHome::Deliver {
                consumer: self.consumer,
                delivery,
                redelivered: m.redelivered,
                message: crate::queue::remote::protocol::WireMessage::of(&m.message),
            },
        );
        if !sent {
            lock(&session.unsettled).remove(&delivery);
            return Offer::Gone;
        }
        Offer::Delivered { no_ack: self.no_ack }
    }

    fn unacked(&self, _tag: &str) -> u32 {
        if self.no_ack {
            0
        } else {
            self.in_flight.load(Ordering::Acquire)
        }
    }

    /// Consumer timeouts apply on the consumer's own node.
    fn oldest_unacked(&self, _tag: &str) -> Option<(DeliveryTag, DeliveryTag)> {
        None
    }

    fn time_out(&self, _tag: &str) -> Option<Vec<QueuedMessage>> {
        None
    }

    /// The queue was deleted here: the consumer's node tells its client.
    fn cancelled(&self, _tag: &Arc<str>) {
        self.cancelled.store(true, Ordering::Release);
        if let Some(session) = self.session.upgrade() {
            lock(&session.proxies).remove(&self.consumer);
            session.send(FromHome::Cancelled { consumer: self.consumer });
        }
    }

    fn describe(&self) -> String {
        match self.session.upgrade() {
            Some(s) => format!("node {} consumer {}", s.peer, self.consumer),
            None => format!("consumer {} (link closed)", self.consumer),
        }
    }
}
