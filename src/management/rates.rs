//! Rates: a ticker samples the broker's counters every `stats_interval_ms` (RabbitMQ's
//! `collect_statistics_interval`, 5 s) and keeps, per object, the last sample and the
//! rate since the one before. The
//! hot path never sees it: it only reads counters the broker keeps anyway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::broker::Broker;
use crate::queue::ConnectionId;
use crate::stats::MessageStats;

/// `message_stats` keys, in the order [`message_values`] lays them out.
pub const MESSAGE_KEYS: [&str; 12] = [
    "publish",
    "confirm",
    "deliver",
    "deliver_no_ack",
    "get",
    "get_no_ack",
    "get_empty",
    "redeliver",
    "ack",
    "return_unroutable",
    "drop_unroutable",
    "deliver_get",
];

pub fn message_values(m: &MessageStats) -> [u64; 12] {
    [
        m.publish,
        m.confirm,
        m.deliver,
        m.deliver_no_ack,
        m.get,
        m.get_no_ack,
        m.get_empty,
        m.redeliver,
        m.ack,
        m.return_unroutable,
        m.drop_unroutable,
        m.deliver_get(),
    ]
}

/// Overview samples kept: 24 hours at the default 5 s would be 17,280; ten minutes'
/// worth at any interval is what the dashboard's graphs and most tools ask for.
const HISTORY: usize = 720;

/// One object's last sample and the per-second rates of change since the one before.
#[derive(Clone, Debug, Default)]
pub struct Track {
    at: Option<Instant>,
    values: Vec<u64>,
    pub rates: Vec<f64>,
    /// Wall clock (ms) of the first sample with the current values: nothing has moved
    /// since (RabbitMQ's `idle_since`, found by the sampler, not the hot path).
    pub changed_ms: u64,
}

impl Track {
    fn update(&mut self, now: Instant, values: Vec<u64>) {
        if self.at.is_none() || self.values != values {
            self.changed_ms = crate::message::now_ms();
        }
        if let Some(at) = self.at {
            let secs = now.duration_since(at).as_secs_f64();
            if secs > 0.0 && self.values.len() == values.len() {
                self.rates = values
                    .iter()
                    .zip(&self.values)
                    .map(|(new, old)| (*new as i128 - *old as i128) as f64 / secs)
                    .collect();
            }
        }
        self.at = Some(now);
        self.values = values;
    }

    /// When the object went idle, in RabbitMQ's format (`2026-12-02T21:02:11.869+00:00`);
    /// None while its counts still moved in the last sample interval.
    pub fn idle_since(&self) -> Option<String> {
        if self.rates.iter().any(|r| *r != 0.0) {
            return None;
        }
        let t = jiff::Timestamp::from_millisecond(self.changed_ms as i64).ok()?;
        Some(t.strftime("%Y-%m-%dT%H:%M:%S%.3f+00:00").to_string())
    }

    /// The rate of value `i` (0 until two samples exist).
    pub fn rate(&self, i: usize) -> f64 {
        self.rates.get(i).copied().unwrap_or(0.0)
    }
}

#[derive(Default)]
pub struct Rates {
    inner: Mutex<Inner>,
}

#[derive(Default)]
pub struct Inner {
    /// Overview: `message_values` then ready, unacked, total.
    pub overview: Track,
    /// The overview's samples, oldest first, at most [`HISTORY`]: (wall clock ms, the
    /// same values as `overview`), for `?msg_rates_age=`/`?lengths_age=` graphs.
    pub history: std::collections::VecDeque<(u64, Vec<u64>)>,
    /// Queues by (vhost, name): `message_values` then ready, unacked, total.
    pub queues: HashMap<(String, String), Track>,
    /// Connections: recv_oct, send_oct.
    pub connections: HashMap<ConnectionId, Track>,
    /// Channels by (connection, number): `message_values`.
    pub channels: HashMap<(ConnectionId, u16), Track>,
}

impl Rates {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one sample of everything; objects that are gone are forgotten.
    pub fn sample(&self, broker: &Broker) {
        let now = Instant::now();
        let mut queues = Vec::new();
        let (mut ready, mut unacked) = (0u64, 0u64);
        for name in broker.vhost_names() {
            let Some(v) = broker.vhost(&name) else { continue };
            for q in v.queue_handles() {
                let s = q.stats();
                ready += s.messages_ready;
                unacked += s.messages_unacknowledged;
                let mut values = message_values(&s.messages).to_vec();
                values.extend([
                    s.messages_ready,
                    s.messages_unacknowledged,
                    s.messages_ready + s.messages_unacknowledged,
                ]);
                queues.push(((name.clone(), q.name().to_string()), values));
            }
        }
        let connections = broker.connections();
        let totals = crate::stats::global::totals();
        let mut inner = self.lock();
        let mut overview = message_values(&totals.messages).to_vec();
        overview.extend([ready, unacked, ready + unacked]);
        inner.history.push_back((crate::message::now_ms(), overview.clone()));
        while inner.history.len() > HISTORY {
            inner.history.pop_front();
        }
        inner.overview.update(now, overview);
        let mut seen_queues = HashMap::with_capacity(queues.len());
        for (key, values) in queues {
            let mut t = inner.queues.remove(&key).unwrap_or_default();
            t.update(now, values);
            seen_queues.insert(key, t);
        }
        inner.queues = seen_queues;
        let mut seen_conns = HashMap::with_capacity(connections.len());
        let mut seen_channels = HashMap::new();
        for c in &connections {
            let mut t = inner.connections.remove(&c.id).unwrap_or_default();
            t.update(now, vec![c.recv_oct, c.send_oct]);
            seen_conns.insert(c.id, t);
            for ch in &c.channels {
                let key = (c.id, ch.number);
                let mut t = inner.channels.remove(&key).unwrap_or_default();
                t.update(now, message_values(&ch.messages).to_vec());
                seen_channels.insert(key, t);
            }
        }
        inner.connections = seen_conns;
        inner.channels = seen_channels;
    }
}

/// Samples every `interval` until `stop` fires. Sampling takes queue and channel locks
/// briefly, one at a time, on the blocking pool.
pub async fn run(rates: Arc<Rates>, broker: Arc<Broker>, interval: Duration, stop: smol::channel::Receiver<()>) {
    loop {
        let (r, b) = (rates.clone(), broker.clone());
        smol::unblock(move || r.sample(&b)).await;
        let stopped = smol::future::or(
            async {
                let _ = stop.recv().await;
                true
            },
            async {
                smol::Timer::after(interval).await;
                false
            },
        )
        .await;
        if stopped {
            return;
        }
    }
}
