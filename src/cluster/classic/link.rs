//! This node's links to the home nodes of classic queues it serves remotely: one
//! ordered connection per home node (the cluster link's `classic-queues` service),
//! opened when first needed and again after a failure.
//!
//! Everything sent goes through one queue per link, written in batches by the
//! link's task, so the publishes of one channel reach the home in the order they were
//! made. When the connection fails, every request waiting for an answer fails (a
//! publisher waiting for a confirm gets a nack) and every consumer attached through it
//! is cancelled; the home, seeing the same connection end, requeues what they held.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use haremq_raft::{Group, RaftNode};

use crate::queue::remote::protocol::{FromHome, Settlement, ToHome};
use crate::queue::remote::{Answer, HomeLink, RemoteConsumers};

/// The service name on the cluster link.
pub const SERVICE: &str = "classic-queues";

/// How long connecting to a home may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Bytes of requests a link holds before its connection takes them: beyond this,
/// new requests fail at once (a publisher gets a nack) rather than fill memory while
/// a home is slow or unreachable.
const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

/// Requests written in one batch at most.
const BATCH: usize = 512;

/// How often a link pings its home.
const PING_EVERY: Duration = Duration::from_secs(2);

/// A link that hears nothing for this long is taken for dead, on both sides (a
/// partition without a reset leaves a TCP connection open for far longer).
pub const SILENCE: Duration = Duration::from_secs(10);

/// The links of this node, by home node.
pub struct Links {
    node: Arc<RaftNode>,
    /// The metadata group: where the members' cluster addresses are.
    metadata: Group,
    links: Mutex<HashMap<u64, Arc<Link>>>,
}

impl Links {
    pub fn new(node: Arc<RaftNode>, metadata: Group) -> Arc<Links> {
        Arc::new(Links { node, metadata, links: Mutex::default() })
    }

    /// The link to node `home` (created on first use).
    pub fn to(&self, home: u64) -> Arc<Link> {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links
            .entry(home)
            .or_insert_with(|| {
                let (kick, kicked) = smol::channel::bounded(1);
                Arc::new_cyclic(|me| Link {
                    home,
                    node: self.node.clone(),
                    metadata: self.metadata.clone(),
                    me: me.clone(),
                    next_id: AtomicU64::new(1),
                    state: Mutex::default(),
                    kick,
                    kicked,
                })
            })
            .clone()
    }
}

/// One node's link to one home node.
pub struct Link {
    home: u64,
    node: Arc<RaftNode>,
    metadata: Group,
    me: Weak<Link>,
    next_id: AtomicU64,
    state: Mutex<LinkState>,
    /// Wakes the link's task when requests are queued.
    kick: smol::channel::Sender<()>,
    kicked: smol::channel::Receiver<()>,
}

#[derive(Default)]
struct LinkState {
    outgoing: Vec<ToHome>,
    queued_bytes: usize,
    answers: HashMap<u64, Answer>,
    consumers: HashMap<u64, Weak<dyn RemoteConsumers>>,
    /// A task owns the connection (or is opening it).
    running: bool,
}

/// Roughly what a request costs while queued.
fn cost(request: &ToHome) -> usize {
    64 + match request {
        ToHome::Publish { message, .. } => message.body.len() + message.raw_properties.len(),
        _ => 0,
    }
}

impl Link {
    fn lock(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Owns one connection until it fails: writes what is queued, hands what comes
    /// back to whoever waits for it.
    async fn run(self: Arc<Self>) {
        let why = match self.connect().await {
            Ok(stream) => {
                let (mut reader, mut writer) = stream.split();
                let (done_tx, done_rx) = smol::channel::bounded::<String>(1);
                let me = self.clone();
                let read = smol::spawn(async move {
                    let why = loop {
                        let next = smol::future::or(async { reader.recv::<FromHome>().await }, async {
                            smol::Timer::after(SILENCE).await;
                            Err(format!("nothing heard for {} s", SILENCE.as_secs()))
                        });
                        match next.await {
                            Ok(msg) => me.received(msg),
                            Err(e) => break e,
                        }
                    };
                    let _ = done_tx.try_send(why);
                });
                let mut ping_at = std::time::Instant::now();
                let why = loop {
                    if std::time::Instant::now() >= ping_at {
                        // The home answers; the reader above counts the silence.
                        ping_at = std::time::Instant::now() + PING_EVERY;
                        let id = self.next_id();
                        self.send(ToHome::Ping { id }, Some((id, Box::new(|_| ()))));
                    }
                    let batch = std::mem::take(&mut self.lock().outgoing);
                    if batch.is_empty() {
                        let woke = smol::future::or(
                            async { self.kicked.recv().await.map(|_| None) },
                            smol::future::or(
                                async { Ok(Some(done_rx.recv().await.unwrap_or_else(|_| "closed".into()))) },
                                async {
                                    smol::Timer::at(ping_at).await;
                                    Ok(None)
                                },
                            ),
                        )
                        .await;
                        match woke {
                            Ok(None) => continue,
                            Ok(Some(why)) => break why,
                            Err(_) => break "stopped".into(),
                        }
                    }
                    self.lock().queued_bytes = 0;
                    let mut failed = None;
                    for chunk in batch.chunks(BATCH) {
                        if let Err(e) = writer.send_all(chunk).await {
                            failed = Some(e);
                            break;
                        }
                    }
                    if let Some(e) = failed {
                        break e;
                    }
                };
                writer.close();
                drop(read);
                why
            }
            Err(e) => e,
        };
        self.failed(&why);
    }

    async fn connect(&self) -> Result<haremq_raft::ServiceStream, String> {
        let addr: SocketAddr = *self
            .metadata
            .status()
            .addresses
            .get(&self.home)
            .ok_or_else(|| format!("node {} is not a member of the cluster", self.home))?;
        self.node.connect(self.home, addr, SERVICE, CONNECT_TIMEOUT).await
    }

    /// The connection ended: everything waiting fails, every consumer is cancelled.
    fn failed(&self, why: &str) {
        let (answers, consumers, dropped) = {
            let mut st = self.lock();
            st.running = false;
            st.queued_bytes = 0;
            (std::mem::take(&mut st.answers), std::mem::take(&mut st.consumers), std::mem::take(&mut st.outgoing))
        };
        if !answers.is_empty() || !consumers.is_empty() {
            log::warn!(
                "cluster: the link to node {} failed ({why}): {} requests fail, {} consumers are cancelled",
                self.home,
                answers.len(),
                consumers.len()
            );
        }
        drop(dropped);
        for (_, answer) in answers {
            answer(Err(format!("the link to node {} failed: {why}", self.home)));
        }
        for (id, to) in consumers {
            if let Some(to) = to.upgrade() {
                to.cancelled(id);
            }
        }
    }

    fn received(&self, msg: FromHome) {
        match msg {
            FromHome::Deliver { consumer, delivery, redelivered, message } => {
                let to = self.lock().consumers.get(&consumer).and_then(Weak::upgrade);
                match to {
                    Some(to) => to.deliver(consumer, delivery, redelivered, message),
                    None => self.send(ToHome::Settle { delivery, how: Settlement::Requeue }, None),
                }
            }
            FromHome::Cancelled { consumer } => {
                let to = self.lock().consumers.remove(&consumer).and_then(|w| w.upgrade());
                if let Some(to) = to {
                    to.cancelled(consumer);
                }
            }
            FromHome::Consumed { consumer, .. } => self.answer(consumer, msg),
            other => {
                if let Some(id) = other.answers() {
                    self.answer(id, other);
                }
            }
        }
    }

    fn answer(&self, id: u64, msg: FromHome) {
        let answer = self.lock().answers.remove(&id);
        if let Some(answer) = answer {
            answer(Ok(msg));
        }
    }
}

impl HomeLink for Link {
    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn send(&self, request: ToHome, answer: Option<(u64, Answer)>) {
        let mut st = self.lock();
        let size = cost(&request);
        if st.queued_bytes + size > MAX_QUEUED_BYTES {
            drop(st);
            log::warn!("cluster: the link to node {} holds too much; a request is refused", self.home);
            if let Some((_, answer)) = answer {
                // Not inside the caller's call: it may hold a lock the answer takes.
                smol::spawn(async move { answer(Err("the link to the queue's node is congested".into())) }).detach();
            }
            return;
        }
        st.queued_bytes += size;
        st.outgoing.push(request);
        if let Some((id, answer)) = answer {
            st.answers.insert(id, answer);
        }
        if !st.running {
            st.running = true;
            if let Some(me) = self.me.upgrade() {
                smol::spawn(me.run()).detach();
            }
        }
        drop(st);
        let _ = self.kick.try_send(());
    }

    fn attach(&self, consumer: u64, to: Weak<dyn RemoteConsumers>) {
        self.lock().consumers.insert(consumer, to);
    }

    fn detach(&self, consumer: u64) {
        self.lock().consumers.remove(&consumer);
    }
}
