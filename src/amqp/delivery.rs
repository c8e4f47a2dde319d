//! The delivery side of a channel: delivery tags, the unacked map, the channel's
//! consumers and their prefetch credit.
//!
//! This state is shared between the connection task (acks, consume, cancel, close)
//! and the queues, which deliver to consumers from whichever task published. Lock
//! order is always queue → channel → outbox; code holding a channel lock never takes a
//! queue lock.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use amq_protocol::types::ChannelId;

use amq_protocol::protocol::{basic, AMQPClass};

use super::channel_stats::ChannelCounts;
use super::frame::{write_content, write_deliver, write_method};
use super::outbox::Outbox;
use crate::message::QueuedMessage;
use crate::queue::{ConsumerSink, DeliveryTag, Offer, Queue};
use crate::store::ConfirmSink;
use crate::vhost::ReplySink;

/// A delivered message waiting for ack, nack or reject.
pub struct Unacked {
    pub tag: DeliveryTag,
    pub queue: Arc<Queue>,
    pub message: QueuedMessage,
    /// The consumer it went to; `None` for basic.get.
    pub consumer: Option<Arc<str>>,
}

/// Unacked deliveries in tag order. Acks usually come in order, so removal is from the
/// front in O(1); an out-of-order ack costs a binary search and a shift.
#[derive(Default)]
pub struct UnackedMap {
    entries: VecDeque<Unacked>,
}

impl UnackedMap {
    fn push(&mut self, u: Unacked) {
        self.entries.push_back(u);
    }

    /// Moves the entry `tag` (or, with `multiple`, every entry up to and including it;
    /// tag 0 with `multiple` means all) into `out`. False if `tag` is not outstanding.
    pub fn take(&mut self, tag: DeliveryTag, multiple: bool, out: &mut Vec<Unacked>) -> bool {
        if multiple {
            if tag == 0 {
                out.extend(self.entries.drain(..));
                return true;
            }
            // As RabbitMQ: the tag itself must be outstanding, even with `multiple`.
            let end = self.entries.partition_point(|u| u.tag <= tag);
            if end == 0 || self.entries[end - 1].tag != tag {
                return false;
            }
            out.extend(self.entries.drain(..end));
            true
        } else {
            match self.entries.binary_search_by_key(&tag, |u| u.tag) {
                Ok(i) => {
                    if let Some(u) = self.entries.remove(i) {
                        out.push(u);
                    }
                    true
                }
                Err(_) => false,
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn take_all(&mut self, out: &mut Vec<Unacked>) {
        out.extend(self.entries.drain(..));
    }

    /// Moves every entry up to and including `tag` (outstanding or not) into `out`.
    pub fn take_through(&mut self, tag: DeliveryTag, out: &mut Vec<Unacked>) {
        let end = self.entries.partition_point(|u| u.tag <= tag);
        out.extend(self.entries.drain(..end));
    }

    /// Moves the entries delivered to consumer `consumer` into `out`, in tag order.
    pub fn take_consumer(&mut self, consumer: &str, out: &mut Vec<Unacked>) {
        let mut kept = VecDeque::with_capacity(self.entries.len());
        for u in self.entries.drain(..) {
            if u.consumer.as_deref() == Some(consumer) {
                out.push(u);
            } else {
                kept.push_back(u);
            }
        }
        self.entries = kept;
    }

    /// The oldest delivery to consumer `consumer` still unacked.
    fn oldest_of(&self, consumer: &str) -> Option<DeliveryTag> {
        self.entries.iter().find(|u| u.consumer.as_deref() == Some(consumer)).map(|u| u.tag)
    }
}

/// Most delivery tags a channel remembers as requeued by a consumer timeout.
const TIMED_OUT_TAGS: usize = 65_536;

/// One consumer as the channel sees it.
pub struct ConsumerState {
    pub queue: Arc<Queue>,
    pub no_ack: bool,
    /// Per-consumer prefetch (0 = unlimited).
    pub prefetch: u16,
    pub unacked: u32,
    /// False until basic.consume-ok has been written, so no delivery overtakes it.
    pub active: bool,
    /// As consumed, for listings.
    pub exclusive: bool,
    pub arguments: amq_protocol::types::FieldTable,
}

pub struct DeliveryState {
    next_tag: DeliveryTag,
    pub unacked: UnackedMap,
    pub consumers: HashMap<Arc<str>, ConsumerState>,
    /// basic.qos global=true limit over all consumers of the channel (0 = unlimited).
    pub global_prefetch: u16,
    /// Unacked deliveries made to consumers (not basic.get), for `global_prefetch`.
    consumer_unacked: u32,
    /// channel.flow: false pauses deliveries to consumers.
    pub flow_active: bool,
    /// Set when the channel closes: queues drop their consumers on next contact.
    pub closed: bool,
    /// The consumer tag of this channel's direct reply-to consumer, if any.
    pub reply_consumer: Option<Arc<str>>,
    /// Delivery tags requeued because their consumer timed out: a late ack, nack or
    /// reject of one is ignored instead of closing the channel (bounded).
    pub timed_out: std::collections::BTreeSet<DeliveryTag>,
}

impl DeliveryState {
    /// Assigns the next delivery tag.
    pub fn next_tag(&mut self) -> DeliveryTag {
        let t = self.next_tag;
        self.next_tag += 1;
        t
    }

    /// Records a delivery that needs an ack.
    pub fn track(&mut self, u: Unacked) {
        if let Some(tag) = &u.consumer {
            if let Some(c) = self.consumers.get_mut(tag) {
                c.unacked += 1;
            }
            self.consumer_unacked += 1;
        }
        self.unacked.push(u);
    }

    /// Releases the prefetch credit held by entries just taken out of the unacked map.
    pub fn release(&mut self, taken: &[Unacked]) {
        for u in taken {
            if let Some(tag) = &u.consumer {
                if let Some(c) = self.consumers.get_mut(tag) {
                    c.unacked = c.unacked.saturating_sub(1);
                }
                self.consumer_unacked = self.consumer_unacked.saturating_sub(1);
            }
        }
    }
}

impl ReplySink for ChannelShared {
    fn deliver_reply(&self, message: &QueuedMessage) -> bool {
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        let Some(tag) = st.reply_consumer.clone() else {
            return false;
        };
        let mut out = self.outbox.lock();
        if out.is_closed() {
            return false;
        }
        let delivery_tag = st.next_tag();
        let frame_max = out.frame_max();
        let m = &message.message;
        let buf = out.buf();
        write_deliver(buf, self.id, &tag, delivery_tag, false, &m.exchange, &m.routing_key);
        write_content(buf, self.id, &m.raw_properties, &m.body, frame_max);
        true
    }
}

/// The part of a channel that queues deliver into.
pub struct ChannelShared {
    pub id: ChannelId,
    pub outbox: Arc<Outbox>,
    state: Mutex<DeliveryState>,
    confirms: Mutex<ConfirmTracker>,
    /// channel.close was sent from another thread ([`ChannelShared::close_from_outside`]).
    closed_outside: std::sync::atomic::AtomicBool,
    /// What went through the channel, for statistics.
    pub counts: ChannelCounts,
    /// Its modes, mirrored for listings (the connection task owns the real ones).
    pub modes: ChannelModes,
}

/// A channel's modes as listings show them; written by the connection task.
#[derive(Default, Debug)]
pub struct ChannelModes {
    pub confirm: AtomicBool,
    pub transactional: AtomicBool,
    /// basic.qos global=false.
    pub prefetch: AtomicU16,
}

/// Publisher-confirm bookkeeping. Confirms go out in publish order, so one `multiple`
/// ack covers a run: a publish waiting for the store holds back the acks of later
/// publishes until its commit (commits complete in order, so this costs nothing when
/// all publishes are persistent, and little when they are mixed).
#[derive(Default)]
struct ConfirmTracker {
    /// Sequence number of the last publish.
    published: u64,
    /// Publishes waiting for a store commit, ascending.
    waiting: VecDeque<u64>,
    /// Publishes a queue refused (x-overflow reject-publish), ascending: each gets a
    /// single nack once everything before it has been confirmed.
    nacks: VecDeque<u64>,
    /// Everything up to here has been acked or nacked to the client.
    sent: u64,
    /// Publishes queues still hold (replicated queues not yet committed): how many
    /// queues each waits for.
    held: std::collections::BTreeMap<u64, u32>,
}

impl ConfirmTracker {
    /// Acks may cover everything below the first publish still waiting for the store
    /// or a queue's hold, and below the first one to nack.
    fn watermark(&self) -> u64 {
        let w = self.waiting.front().map_or(self.published, |s| s - 1);
        let w = self.held.first_key_value().map_or(w, |(s, _)| w.min(s - 1));
        self.nacks.front().map_or(w, |n| w.min(n - 1))
    }
}

impl ChannelShared {
    pub fn new(id: ChannelId, outbox: Arc<Outbox>) -> Arc<Self> {
        Arc::new(Self {
            id,
            outbox,
            state: Mutex::new(DeliveryState {
                next_tag: 1,
                unacked: UnackedMap::default(),
                consumers: HashMap::new(),
                global_prefetch: 0,
                consumer_unacked: 0,
                flow_active: true,
                closed: false,
                reply_consumer: None,
                timed_out: Default::default(),
            }),
            confirms: Mutex::new(ConfirmTracker::default()),
            closed_outside: Default::default(),
            counts: ChannelCounts::default(),
            modes: ChannelModes::default(),
        })
    }

    /// Closes the channel from outside its connection task (the store thread, when the
    /// commit under a tx.commit failed): sends channel.close; the connection task
    /// treats the channel as closing from its next frame on.
    pub fn close_from_outside(&self, err: &crate::error::AmqpError, (class_id, method_id): (u16, u16)) {
        use amq_protocol::protocol::channel;
        if !self.closed_outside.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let (reply_code, reply_text) = (err.reply_code(), err.reply_text().into());
            let close = channel::Close { reply_code, reply_text, class_id, method_id };
            write_method(self.outbox.lock().buf(), self.id, AMQPClass::Channel(channel::AMQPMethod::Close(close)));
        }
    }

    pub fn closed_outside(&self) -> bool {
        self.closed_outside.load(std::sync::atomic::Ordering::Acquire)
    }

    fn confirms(&self) -> MutexGuard<'_, ConfirmTracker> {
        self.confirms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers a publish in confirm mode; `durable` publishes are confirmed by the store
    /// writer after commit, the others by [`flush_confirms`](Self::flush_confirms).
    pub fn next_publish_seq(&self, durable: bool) -> u64 {
        let mut c = self.confirms();
        c.published += 1;
        let seq = c.published;
        if durable {
            c.waiting.push_back(seq);
        }
        seq
    }

    /// Numbers a publish in confirm mode that a queue refused: it will be nacked (alone,
    /// after every earlier publish is acked) by the next flush.
    pub fn next_publish_rejected(&self) -> u64 {
        let mut c = self.confirms();
        c.published += 1;
        let seq = c.published;
        c.nacks.push_back(seq);
        seq
    }

    /// Sends one ack covering every publish confirmed and not yet acked.
    pub fn flush_confirms(&self) {
        let mut c = self.confirms();
        self.flush_locked(&mut c);
    }

    fn flush_locked(&self, c: &mut ConfirmTracker) {
        loop {
            let to = c.watermark();
            if to > c.sent {
                let multiple = to - c.sent > 1;
                let mut out = self.outbox.lock();
                write_method(
                    out.buf(),
                    self.id,
                    AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack { delivery_tag: to, multiple })),
                );
                self.counts.confirmed(to - c.sent);
                c.sent = to;
            }
            // The next refused publish, once everything before it is confirmed.
            match c.nacks.front() {
                Some(&n) if n == c.sent + 1 => {
                    c.nacks.pop_front();
                    let mut out = self.outbox.lock();
                    write_method(
                        out.buf(),
                        self.id,
                        AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack {
                            delivery_tag: n,
                            multiple: false,
                            requeue: false,
                        })),
                    );
                    c.sent = n;
                }
                _ => return,
            }
        }
    }

    /// The channel now, for listings.
    pub fn info(&self) -> crate::clients::ChannelInfo {
        let st = self.lock();
        let mut consumers: Vec<crate::clients::ConsumerInfo> = st
            .consumers
            .iter()
            .map(|(tag, c)| crate::clients::ConsumerInfo {
                tag: tag.clone(),
                queue: c.queue.name().clone(),
                no_ack: c.no_ack,
                exclusive: c.exclusive,
                prefetch: c.prefetch,
                arguments: c.arguments.clone(),
                active: c.active,
            })
            .collect();
        consumers.sort_by(|a, b| a.tag.cmp(&b.tag));
        crate::clients::ChannelInfo {
            number: self.id,
            confirm: self.modes.confirm.load(Ordering::Relaxed),
            transactional: self.modes.transactional.load(Ordering::Relaxed),
            prefetch: self.modes.prefetch.load(Ordering::Relaxed),
            global_prefetch: st.global_prefetch,
            unacked: st.unacked.len() as u32,
            consumers,
            messages: self.counts.snapshot(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, DeliveryState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ConfirmSink for ChannelShared {
    /// The store committed every publish up to `seq`.
    fn stored(&self, seq: u64) {
        let mut c = self.confirms();
        while c.waiting.front().is_some_and(|&s| s <= seq) {
            c.waiting.pop_front();
        }
        self.flush_locked(&mut c);
    }

    /// The store failed to commit publishes up to `seq`: nack them.
    fn failed(&self, seq: u64) {
        let mut c = self.confirms();
        while c.waiting.front().is_some_and(|&s| s <= seq) {
            c.waiting.pop_front();
        }
        while c.nacks.front().is_some_and(|&s| s <= seq) {
            c.nacks.pop_front();
        }
        if seq > c.sent {
            let multiple = seq - c.sent > 1;
            let mut out = self.outbox.lock();
            write_method(
                out.buf(),
                self.id,
                AMQPClass::Basic(basic::AMQPMethod::Nack(basic::Nack { delivery_tag: seq, multiple, requeue: false })),
            );
            c.sent = seq;
        }
        self.flush_locked(&mut c);
    }
}

impl crate::queue::ConfirmHolder for ChannelShared {
    fn hold(&self, seq: u64) {
        *self.confirms().held.entry(seq).or_insert(0) += 1;
    }

    fn release(&self, seq: u64, stored: bool) {
        let mut c = self.confirms();
        if let std::collections::btree_map::Entry::Occupied(mut e) = c.held.entry(seq) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        if !stored && seq > c.sent {
            // Nacked alone, in order (as a refused publish).
            let at = c.nacks.partition_point(|&n| n < seq);
            if c.nacks.get(at) != Some(&seq) {
                c.nacks.insert(at, seq);
            }
        }
        // A release may come before the channel numbered the publish (a fast
        // commit): the flush then covers only what the channel has numbered.
        if seq <= c.published {
            self.flush_locked(&mut c);
        }
    }
}

impl ConsumerSink for ChannelShared {
    /// Unacked deliveries held by consumer `tag` (0 if it is gone).
    fn unacked(&self, tag: &str) -> u32 {
        self.lock().consumers.get(tag).map_or(0, |c| c.unacked)
    }

    /// The oldest unacked delivery of consumer `tag` and the next delivery tag the
    /// channel will assign (None: it holds nothing, or it is gone).
    fn oldest_unacked(&self, tag: &str) -> Option<(DeliveryTag, DeliveryTag)> {
        let st = self.lock();
        if st.closed || st.consumers.get(tag).is_none_or(|c| c.unacked == 0) {
            return None;
        }
        st.unacked.oldest_of(tag).map(|t| (t, st.next_tag))
    }

    /// Consumer timeout: forgets consumer `tag`, takes its unacked deliveries (for the
    /// queue to requeue; their tags are remembered so late acks are ignored) and sends
    /// the client basic.cancel. The channel stays open. None if the consumer is gone.
    fn time_out(&self, tag: &str) -> Option<Vec<QueuedMessage>> {
        let mut st = self.lock();
        if st.closed || !st.consumers.contains_key(tag) {
            return None;
        }
        let mut taken = Vec::new();
        st.unacked.take_consumer(tag, &mut taken);
        st.release(&taken);
        st.consumers.remove(tag);
        for u in &taken {
            st.timed_out.insert(u.tag);
        }
        while st.timed_out.len() > TIMED_OUT_TAGS {
            st.timed_out.pop_first();
        }
        let mut out = self.outbox.lock();
        write_method(
            out.buf(),
            self.id,
            AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                consumer_tag: crate::wire::shortstr::short(tag),
                nowait: true,
            })),
        );
        Some(taken.into_iter().map(|u| u.message).collect())
    }

    /// Offers `message` from `queue` to consumer `tag`; on success the deliver frames are
    /// in the outbox and, unless no-ack, the delivery is in the unacked map.
    /// Called with the queue's lock held.
    fn offer(&self, queue: &Arc<Queue>, tag: &Arc<str>, message: &QueuedMessage) -> Offer {
        let mut st = self.lock();
        if st.closed {
            return Offer::Gone;
        }
        let global_full = st.global_prefetch > 0 && st.consumer_unacked >= u32::from(st.global_prefetch);
        let flow_active = st.flow_active;
        let Some(c) = st.consumers.get(tag) else {
            return Offer::Gone;
        };
        let no_ack = c.no_ack;
        if !flow_active
            || !c.active
            || (!no_ack && ((c.prefetch > 0 && c.unacked >= u32::from(c.prefetch)) || global_full))
        {
            return Offer::Busy;
        }
        let mut out = self.outbox.lock();
        if out.is_closed() {
            return Offer::Gone;
        }
        if out.is_congested() {
            out.park(queue);
            return Offer::Busy;
        }
        let delivery_tag = st.next_tag();
        let frame_max = out.frame_max();
        let m = &message.message;
        let buf = out.buf();
        write_deliver(buf, self.id, tag, delivery_tag, message.redelivered, &m.exchange, &m.routing_key);
        write_content(buf, self.id, &m.raw_properties, &m.body, frame_max);
        drop(out);
        self.counts.delivered(true, no_ack, message.redelivered);
        if !no_ack {
            st.track(Unacked {
                tag: delivery_tag,
                queue: queue.clone(),
                message: message.clone(),
                consumer: Some(tag.clone()),
            });
        }
        Offer::Delivered { no_ack }
    }

    fn cancelled(&self, tag: &Arc<str>) {
        let mut st = self.lock();
        if st.consumers.remove(tag).is_none() || st.closed {
            return;
        }
        let mut out = self.outbox.lock();
        write_method(
            out.buf(),
            self.id,
            AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                consumer_tag: tag.as_ref().into(),
                nowait: true,
            })),
        );
    }

    fn describe(&self) -> String {
        format!("channel {}", self.id)
    }
}
