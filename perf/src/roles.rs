//! The publisher and consumer connections of a throughput/latency run.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amq_protocol::protocol::{basic, confirm, connection, AMQPClass};
use amq_protocol::types::FieldTable;
use amq_protocol::uri::AMQPUri;
use event_listener::Event;
use smol::future;
use smol::Timer;

use crate::client::{self, close_error, for_each_frame, Conn, Res};
use crate::proto::{self, PublishTemplate, FRAME_BODY, FRAME_HEADER, FRAME_METHOD};
use crate::stats::{now_ns, ConStats, PubStats, Shared};

/// Bytes of publishes gathered before one write.
const BATCH_BYTES: usize = 128 * 1024;
const BATCH_MAX_MSGS: u64 = 4096;

pub struct PubConfig {
    pub exchange: String,
    /// Round-robin routing keys (one per queue with the default exchange).
    pub routing_keys: Vec<String>,
    pub offset: usize,
    pub size: usize,
    pub persistent: bool,
    pub confirm: Option<u32>,
    pub rate: Option<f64>,
    pub count: Option<u64>,
}

/// Confirm bookkeeping shared between the reader (which resolves tags) and the writer
/// (which waits for window room). Only atomics cross; the ring lives in the reader.
struct ConfirmShared {
    resolved: AtomicU64,
    /// Lowest delivery tag not yet confirmed.
    low: AtomicU64,
    event: Event,
}

/// Out-of-order confirm tracking over a ring of `cap` tags starting at `low`.
struct Tracker {
    ring: Vec<bool>,
    mask: u64,
    low: u64,
    resolved: u64,
}

impl Tracker {
    fn new(cap: u64) -> Tracker {
        Tracker { ring: vec![false; cap as usize], mask: cap - 1, low: 1, resolved: 0 }
    }

    /// Returns how many tags this ack/nack newly resolved; `each` is called with every
    /// one of them.
    fn resolve(&mut self, tag: u64, multiple: bool, mut each: impl FnMut(u64)) -> u64 {
        let before = self.resolved;
        if tag < self.low {
            return 0;
        }
        if multiple {
            for t in self.low..=tag {
                let slot = &mut self.ring[(t & self.mask) as usize];
                if *slot {
                    *slot = false;
                } else {
                    self.resolved += 1;
                    each(t);
                }
            }
            self.low = tag + 1;
        } else if tag == self.low {
            self.resolved += 1;
            self.low += 1;
            each(tag);
        } else {
            let slot = &mut self.ring[(tag & self.mask) as usize];
            if !*slot {
                *slot = true;
                self.resolved += 1;
                each(tag);
            }
        }
        loop {
            let slot = &mut self.ring[(self.low & self.mask) as usize];
            if !*slot {
                break;
            }
            *slot = false;
            self.low += 1;
        }
        self.resolved - before
    }
}

/// When each batch of publishes was stamped, for confirm latency: the writer appends
/// (first delivery tag of the batch, send time in ns since the epoch), the reader looks
/// up the send time of every tag it sees acked and forgets batches below the lowest
/// unconfirmed tag. One entry per batch, not per message: a batch shares one timestamp.
#[derive(Default)]
struct SendTimes {
    batches: VecDeque<(u64, u64)>,
}

impl SendTimes {
    fn push(&mut self, first_tag: u64, sent_ns: u64) {
        self.batches.push_back((first_tag, sent_ns));
    }

    fn sent_at(&self, tag: u64) -> Option<u64> {
        let after = self.batches.partition_point(|&(first, _)| first <= tag);
        after.checked_sub(1).map(|i| self.batches[i].1)
    }

    /// Drops the batches that hold only tags below `low` (all resolved).
    fn forget_below(&mut self, low: u64) {
        while self.batches.len() >= 2 && self.batches[1].0 <= low {
            self.batches.pop_front();
        }
    }
}

fn close_frame() -> Vec<u8> {
    let mut buf = Vec::new();
    proto::write_method(
        &mut buf,
        0,
        AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
            reply_code: 200,
            reply_text: "bye".into(),
            class_id: 0,
            method_id: 0,
        })),
    );
    buf
}

/// Handles a method frame that is not on the hot path: a broker close is an error.
fn other_method(payload: &[u8]) -> Res<()> {
    match proto::method_ids(payload) {
        Some((10, 50)) | Some((20, 40)) => {
            let class = proto::parse_method(payload)?;
            Err(close_error(&class).unwrap_or_else(|| "closed by broker".into()))
        }
        Some((60, 30)) => Err("consumer cancelled by broker (queue deleted?)".into()),
        _ => Ok(()),
    }
}

pub async fn publisher(uri: AMQPUri, cfg: PubConfig, stats: Arc<PubStats>, shared: Arc<Shared>) -> Res<()> {
    let mut conn = Conn::open(&uri).await?;
    conn.open_channel(1).await?;
    if cfg.confirm.is_some() {
        match conn.rpc(1, AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select { nowait: false }))).await? {
            AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)) => {}
            other => return Err(format!("expected confirm.select-ok, got {other:?}")),
        }
    }
    let templates: Vec<PublishTemplate> = cfg
        .routing_keys
        .iter()
        .map(|rk| PublishTemplate::new(1, &cfg.exchange, rk, cfg.size, cfg.persistent, conn.frame_max))
        .collect();
    let msg_len = templates.first().map(|t| t.bytes.len()).unwrap_or(64).max(1);
    let per_batch = ((BATCH_BYTES / msg_len) as u64).clamp(1, BATCH_MAX_MSGS);
    let window = cfg.confirm.map(|w| u64::from(w.max(1)));
    // The ring must cover every tag between the lowest unconfirmed one and the newest.
    let ring_cap = window.map(|w| (w * 4).max(1024).next_power_of_two()).unwrap_or(1);
    let cs = Arc::new(ConfirmShared { resolved: AtomicU64::new(0), low: AtomicU64::new(1), event: Event::new() });
    // Reader and writer run in one task (future::or), so this lock is never contended.
    let send_times = Arc::new(Mutex::new(SendTimes::default()));

    let Conn { stream: mut wstream, mut reader, .. } = conn;

    let reader_fut = {
        let cs = cs.clone();
        let stats = stats.clone();
        let send_times = send_times.clone();
        async move {
            let mut tracker = Tracker::new(ring_cap);
            let mut acked_tags: Vec<u64> = Vec::with_capacity(1024);
            let mut lats: Vec<u64> = Vec::with_capacity(1024);
            loop {
                reader.fill().await?;
                let now = now_ns();
                let mut acked = 0u64;
                let mut nacked = 0u64;
                let mut closed_ok = false;
                for_each_frame(&mut reader, |f| {
                    if f.kind != FRAME_METHOD {
                        return Ok(());
                    }
                    match proto::method_ids(f.payload) {
                        Some((60, 80)) | Some((60, 120)) => {
                            let (tag, multiple) = proto::ack_fields(f.payload).ok_or("malformed basic.ack/nack")?;
                            if proto::method_ids(f.payload) == Some((60, 80)) {
                                acked += tracker.resolve(tag, multiple, |t| acked_tags.push(t));
                            } else {
                                nacked += tracker.resolve(tag, multiple, |_| {});
                            }
                            Ok(())
                        }
                        Some((10, 51)) => {
                            closed_ok = true;
                            Ok(())
                        }
                        _ => other_method(f.payload),
                    }
                })?;
                if acked + nacked > 0 {
                    if let Ok(mut times) = send_times.lock() {
                        for &t in &acked_tags {
                            if let Some(sent) = times.sent_at(t) {
                                lats.push(now.saturating_sub(sent) / 1000);
                            }
                        }
                        times.forget_below(tracker.low);
                    }
                    if let Ok(mut h) = stats.confirm_hist.lock() {
                        for &l in &lats {
                            h.saturating_record(l);
                        }
                    }
                    acked_tags.clear();
                    lats.clear();
                    stats.confirmed.fetch_add(acked, Ordering::Relaxed);
                    stats.nacked.fetch_add(nacked, Ordering::Relaxed);
                    cs.low.store(tracker.low, Ordering::Release);
                    cs.resolved.store(tracker.resolved, Ordering::Release);
                    cs.event.notify(usize::MAX);
                }
                if closed_ok {
                    return Ok::<(), String>(());
                }
            }
        }
    };

    let writer_fut = {
        let shared = shared.clone();
        let stats = stats.clone();
        let cs = cs.clone();
        let send_times = send_times.clone();
        async move {
            let start = Instant::now();
            let mut buf: Vec<u8> = Vec::with_capacity(BATCH_BYTES + msg_len);
            let mut seq: u64 = 0;
            let nt = templates.len();
            let mut next_t = cfg.offset % nt.max(1);
            'outer: loop {
                if shared.is_stopped() {
                    break;
                }
                let mut n = per_batch;
                if let Some(c) = cfg.count {
                    if seq >= c {
                        break;
                    }
                    n = n.min(c - seq);
                }
                if let Some(w) = window {
                    loop {
                        let resolved = cs.resolved.load(Ordering::Acquire);
                        let low = cs.low.load(Ordering::Acquire);
                        let outstanding = seq - resolved;
                        let span = seq + 1 - low;
                        let room = w.saturating_sub(outstanding).min(ring_cap.saturating_sub(span));
                        if room > 0 {
                            n = n.min(room);
                            break;
                        }
                        let listener = cs.event.listen();
                        if cs.resolved.load(Ordering::Acquire) != resolved || cs.low.load(Ordering::Acquire) != low {
                            continue;
                        }
                        future::or(listener, shared.stopped()).await;
                        if shared.is_stopped() {
                            break 'outer;
                        }
                    }
                }
                if let Some(r) = cfg.rate {
                    let due = (start.elapsed().as_secs_f64() * r) as u64 + 1;
                    if due <= seq {
                        let at = start + Duration::from_secs_f64(seq as f64 / r);
                        future::or(
                            async {
                                Timer::at(at).await;
                            },
                            shared.stopped(),
                        )
                        .await;
                        continue;
                    }
                    n = n.min(due - seq);
                }
                if nt > 0 {
                    let ts = now_ns();
                    if window.is_some() {
                        if let Ok(mut times) = send_times.lock() {
                            times.push(seq + 1, ts);
                        }
                    }
                    for _ in 0..n {
                        templates[next_t].append(&mut buf, ts);
                        next_t += 1;
                        if next_t == nt {
                            next_t = 0;
                        }
                    }
                }
                let wrote = future::or(async { Some(client::write_all(&mut wstream, &buf).await) }, async {
                    shared.stopped().await;
                    None
                })
                .await;
                buf.clear();
                match wrote {
                    Some(Ok(())) => {}
                    Some(Err(e)) => return Err(format!("write error: {e}")),
                    // Stopped mid-write: the stream is mid-frame, so no graceful close.
                    None => return Ok(()),
                }
                seq += n;
                stats.sent.fetch_add(n, Ordering::Relaxed);
            }
            // Wait for the outstanding confirms (unless the run is being stopped).
            if window.is_some() {
                while cs.resolved.load(Ordering::Acquire) < seq && !shared.is_stopped() {
                    let listener = cs.event.listen();
                    if cs.resolved.load(Ordering::Acquire) >= seq {
                        break;
                    }
                    future::or(listener, shared.stopped()).await;
                }
            }
            stats.done.store(true, Ordering::SeqCst);
            if !shared.is_stopped() {
                // Publishing is over; wait for the end of the run before disconnecting.
                shared.stopped().await;
            }
            let close = close_frame();
            if client::write_all(&mut wstream, &close).await.is_ok() {
                // The reader finishes on close-ok; this bounds the wait.
                Timer::after(Duration::from_secs(2)).await;
            }
            Ok(())
        }
    };
    let result = future::or(reader_fut, writer_fut).await;
    stats.done.store(true, Ordering::SeqCst);
    result
}

pub struct ConConfig {
    pub queue: String,
    pub tag: String,
    pub prefetch: Option<u16>,
    pub autoack: bool,
    pub multi_ack_every: u64,
    pub count: Option<u64>,
    /// basic.consume arguments (e.g. x-stream-offset).
    pub arguments: FieldTable,
}

pub async fn consumer(
    uri: AMQPUri,
    cfg: ConConfig,
    stats: Arc<ConStats>,
    shared: Arc<Shared>,
    ready: Arc<dyn Fn() + Send + Sync>,
) -> Res<()> {
    let mut conn = Conn::open(&uri).await?;
    conn.open_channel(1).await?;
    if let Some(p) = cfg.prefetch {
        match conn
            .rpc(1, AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos { prefetch_count: p, global: false })))
            .await?
        {
            AMQPClass::Basic(basic::AMQPMethod::QosOk(_)) => {}
            other => return Err(format!("expected basic.qos-ok, got {other:?}")),
        }
    }
    let consume = basic::Consume {
        queue: cfg.queue.as_str().into(),
        consumer_tag: cfg.tag.as_str().into(),
        no_local: false,
        no_ack: cfg.autoack,
        exclusive: false,
        nowait: false,
        arguments: cfg.arguments,
    };
    match conn.rpc(1, AMQPClass::Basic(basic::AMQPMethod::Consume(consume))).await? {
        AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(_)) => {}
        other => return Err(format!("expected basic.consume-ok, got {other:?}")),
    }
    ready();

    let mut acks: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut lats: Vec<u64> = Vec::with_capacity(4096);
    let mut last_tag = 0u64;
    let mut unacked = 0u64;
    let mut body_left = 0u64;
    let mut first_body = false;
    let mut total = 0u64;
    let mut clean = true;
    loop {
        let filled = future::or(async { Some(conn.reader.fill().await) }, async {
            shared.stopped().await;
            None
        })
        .await;
        match filled {
            None => break,
            Some(r) => {
                r?;
            }
        }
        let now = now_ns();
        let mut got = 0u64;
        for_each_frame(&mut conn.reader, |f| {
            let mut complete = false;
            match f.kind {
                FRAME_METHOD => match proto::method_ids(f.payload) {
                    Some((60, 60)) => {
                        last_tag = proto::deliver_tag(f.payload).ok_or("malformed basic.deliver")?;
                    }
                    _ => other_method(f.payload)?,
                },
                FRAME_HEADER => {
                    body_left = proto::header_body_size(f.payload).ok_or("malformed content header")?;
                    first_body = true;
                    complete = body_left == 0;
                }
                FRAME_BODY => {
                    if first_body && f.payload.len() >= 8 {
                        let mut ts = [0u8; 8];
                        ts.copy_from_slice(&f.payload[..8]);
                        let sent = u64::from_be_bytes(ts);
                        lats.push(now.saturating_sub(sent) / 1000);
                    }
                    first_body = false;
                    body_left = body_left.saturating_sub(f.payload.len() as u64);
                    complete = body_left == 0;
                }
                _ => {}
            }
            if complete {
                got += 1;
                if !cfg.autoack {
                    if cfg.multi_ack_every > 0 {
                        unacked += 1;
                        if unacked >= cfg.multi_ack_every {
                            proto::write_ack(&mut acks, 1, last_tag, true);
                            unacked = 0;
                        }
                    } else {
                        proto::write_ack(&mut acks, 1, last_tag, false);
                    }
                }
            }
            Ok(())
        })?;
        if !lats.is_empty() {
            if let Ok(mut h) = stats.hist.lock() {
                for &l in &lats {
                    h.saturating_record(l);
                }
            }
            lats.clear();
        }
        if got > 0 {
            total += got;
            stats.received.fetch_add(got, Ordering::Relaxed);
        }
        if !acks.is_empty() {
            let wrote = future::or(async { Some(client::write_all(&mut conn.stream, &acks).await) }, async {
                shared.stopped().await;
                None
            })
            .await;
            acks.clear();
            match wrote {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(format!("write error: {e}")),
                None => {
                    clean = false;
                    break;
                }
            }
        }
        if let Some(c) = cfg.count {
            if total >= c {
                break;
            }
        }
    }
    stats.done.store(true, Ordering::SeqCst);
    if clean {
        if !shared.is_stopped() {
            shared.stopped().await;
        }
        conn.close().await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{SendTimes, Tracker};

    #[test]
    fn tracker_counts_out_of_order_and_multiple() {
        let mut t = Tracker::new(16);
        let mut seen = Vec::new();
        assert_eq!(t.resolve(3, false, |x| seen.push(x)), 1);
        assert_eq!(t.resolve(2, false, |x| seen.push(x)), 1);
        assert_eq!(t.low, 1);
        assert_eq!(t.resolve(1, false, |x| seen.push(x)), 1);
        assert_eq!(t.low, 4);
        assert_eq!(t.resolve(6, false, |x| seen.push(x)), 1);
        assert_eq!(t.resolve(7, true, |x| seen.push(x)), 3); // 4, 5 and 7; 6 was already counted
        assert_eq!(t.low, 8);
        assert_eq!(t.resolve(7, true, |x| seen.push(x)), 0);
        assert_eq!(t.resolved, 7);
        assert_eq!(seen, [3, 2, 1, 6, 4, 5, 7], "each newly resolved tag once");
    }

    #[test]
    fn send_times_by_batch() {
        let mut s = SendTimes::default();
        s.push(1, 100); // tags 1..=4
        s.push(5, 200); // tags 5..=9
        s.push(10, 300);
        assert_eq!(s.sent_at(0), None);
        assert_eq!(
            (s.sent_at(1), s.sent_at(4), s.sent_at(5), s.sent_at(9)),
            (Some(100), Some(100), Some(200), Some(200))
        );
        assert_eq!(s.sent_at(42), Some(300));
        s.forget_below(6); // tag 5 may still be unconfirmed: its batch stays
        assert_eq!((s.sent_at(5), s.batches.len()), (Some(200), 2));
        s.forget_below(10);
        assert_eq!((s.sent_at(10), s.batches.len()), (Some(300), 1));
    }
}
