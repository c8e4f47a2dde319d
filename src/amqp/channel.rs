//! One AMQP channel as its connection task sees it: the method state machine,
//! content assembly for publishes, publisher confirms, consume/cancel, acks and qos.
//!
//! Everything here runs on the connection's task. The parts queues must reach from
//! other tasks (consumers, unacked map, delivery tags) live in [`ChannelShared`].

use std::sync::Arc;

use amq_protocol::protocol::{basic, channel, confirm, exchange, queue, tx, AMQPClass};
use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{ChannelId, FieldTable, ShortString};
use haremq_routing::RouteRequest;

use super::delivery::{ChannelShared, ConsumerState, DeliveryState, Unacked};
use super::frame::{write_content, write_method, ContentHeader, PublishArgs};
use super::outbox::Outbox;
use crate::message::properties::{encode_properties, Properties};
use super::route_cache::RouteCache;
use crate::error::{AmqpError, AmqpResult};
use crate::exchange::delayed::DelayedMessage;
use crate::memory::MemoryCharge;
use crate::message::{Message, QueuedMessage, StoredMeta};
use crate::queue::{ConnectionId, Queue, QueueSettings};
use crate::util::random_name;
use crate::queue::{enqueue_routed, Enqueueing, QueueRef};
use crate::store::StoreHandle;
use crate::vhost::{ExchangeDeclare, Routed, VHost, REPLY_TO_PREFIX, REPLY_TO_QUEUE};

/// Largest message body accepted (RabbitMQ's default `max_message_size`, 128 MiB).
pub const MAX_MESSAGE_SIZE: u64 = 128 * 1024 * 1024;

/// What the channel needs from its connection while handling a frame.
pub struct Context<'a> {
    pub vhost: &'a Arc<VHost>,
    pub store: &'a Option<StoreHandle>,
    pub conn_id: ConnectionId,
    pub user: &'a str,
    pub outbox: &'a Arc<Outbox>,
    /// The wall clock (ms since the UNIX epoch) when this batch of frames was read:
    /// messages published in it count their TTLs from here.
    pub now_ms: u64,
}

/// A publish whose content is still arriving.
struct Pending {
    /// The exchange's interned name.
    exchange: Arc<str>,
    routing_key: Box<str>,
    mandatory: bool,
    header: Option<PendingHeader>,
    body: Vec<u8>,
}

struct PendingHeader {
    body_size: u64,
    raw_properties: Box<[u8]>,
    persistent: bool,
    /// The decoded header table (moved from the content header, not cloned), for
    /// headers exchanges and `x-delay`. Other properties are read from
    /// `raw_properties` in place when needed.
    headers: Option<FieldTable>,
    /// Routing keys from the `CC` and `BCC` headers (empty, unallocated, without them).
    extra_keys: Vec<String>,
    /// The per-message TTL from `expiration`.
    ttl: Option<u32>,
}

pub struct Channel {
    pub shared: Arc<ChannelShared>,
    /// We sent channel.close and wait for close-ok; everything else is ignored.
    pub closing: bool,
    pending: Option<Pending>,
    confirm: bool,
    /// A publish was confirmed without the store; flush after this read.
    confirms_due: bool,
    /// basic.qos global=false: the prefetch given to consumers created afterwards.
    consumer_prefetch: u16,
    /// The last queue declared on this channel (AMQP's "current queue", for empty names).
    last_queue: Option<Arc<str>>,
    routed: Vec<QueueRef>,
    /// The last route this channel published along, while the topology is unchanged.
    route_cache: RouteCache,
    taken: Vec<Unacked>,
    /// The token of this channel's direct reply-to address, once it consumes from
    /// `amq.rabbitmq.reply-to`.
    reply_token: Option<String>,
    /// Set by tx.select: publishes and settlements wait here for tx.commit.
    tx: Option<Transaction>,
}

/// The work of an open transaction, applied in order on commit.
#[derive(Default)]
struct Transaction {
    publishes: Vec<Pending>,
    settlements: Vec<(u64, bool, Settle)>,
}

fn ok(method: AMQPClass) -> AmqpResult<Option<AMQPClass>> {
    Ok(Some(method))
}

impl Channel {
    pub fn new(id: ChannelId, outbox: Arc<Outbox>) -> Self {
        Self {
            shared: ChannelShared::new(id, outbox),
            closing: false,
            pending: None,
            confirm: false,
            confirms_due: false,
            consumer_prefetch: 0,
            last_queue: None,
            routed: Vec::new(),
            route_cache: RouteCache::default(),
            taken: Vec::new(),
            reply_token: None,
            tx: None,
        }
    }

    pub fn id(&self) -> ChannelId {
        self.shared.id
    }

    /// True while a publish waits for its content header or body.
    pub fn expects_content(&self) -> bool {
        self.pending.is_some()
    }

    fn send(&self, method: AMQPClass) {
        let mut out = self.shared.outbox.lock();
        write_method(out.buf(), self.id(), method);
    }

    /// Handles a method for this channel (not channel.open/close, which the connection
    /// handles). Replies are written to the outbox.
    pub fn handle_method(&mut self, ctx: &Context<'_>, method: AMQPClass) -> AmqpResult<()> {
        self.expect_method()?;
        let reply = match method {
            AMQPClass::Basic(m) => self.basic(ctx, m)?,
            AMQPClass::Exchange(m) => self.exchange(ctx, m)?,
            AMQPClass::Queue(m) => self.queue(ctx, m)?,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                if self.tx.is_some() {
                    return Err(AmqpError::PreconditionFailed("cannot switch from tx to confirm mode".into()));
                }
                self.confirm = true;
                if s.nowait {
                    None
                } else {
                    Some(AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})))
                }
            }
            AMQPClass::Channel(channel::AMQPMethod::Flow(f)) => {
                self.shared.lock().flow_active = f.active;
                self.send(AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk { active: f.active })));
                if f.active {
                    self.dispatch_consumer_queues();
                }
                None
            }
            AMQPClass::Channel(channel::AMQPMethod::FlowOk(_)) => None,
            AMQPClass::Tx(m) => self.transaction(ctx, m)?,
            AMQPClass::Access(_) => {
                return Err(AmqpError::NotImplemented("access.request is not supported".into()))
            }
            other => {
                return Err(AmqpError::CommandInvalid(format!(
                    "method {}.{} is not valid on a channel",
                    other.get_amqp_class_id(),
                    other.get_amqp_method_id()
                )))
            }
        };
        if let Some(reply) = reply {
            self.send(reply);
        }
        Ok(())
    }

    // ---- tx ------------------------------------------------------------------------

    fn transaction(&mut self, ctx: &Context<'_>, m: tx::AMQPMethod) -> AmqpResult<Option<AMQPClass>> {
        let not_transactional = || AmqpError::PreconditionFailed("channel is not transactional".into());
        match m {
            tx::AMQPMethod::Select(_) => {
                if self.confirm {
                    return Err(AmqpError::PreconditionFailed("cannot switch from confirm to tx mode".into()));
                }
                self.tx.get_or_insert_with(Transaction::default);
                ok(AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})))
            }
            tx::AMQPMethod::Commit(_) => {
                let work = std::mem::take(self.tx.as_mut().ok_or_else(not_transactional)?);
                let mut stored = 0;
                for p in work.publishes {
                    stored += self.route_publish(ctx, p)?.stored;
                }
                for (tag, multiple, how) in work.settlements {
                    self.settle_now(tag, multiple, how)?;
                }
                let reply = AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {}));
                match ctx.store {
                    // Persistent messages of the transaction are on disk before commit-ok.
                    Some(store) if stored > 0 => {
                        let shared = self.shared.clone();
                        store.after_commit(Box::new(move |durable| {
                            if durable {
                                let mut out = shared.outbox.lock();
                                write_method(out.buf(), shared.id, reply);
                            } else {
                                // The commit failed: RabbitMQ's reply when a transaction's
                                // publish is nacked.
                                let err = AmqpError::PreconditionFailed("partial tx completion".into());
                                shared.close_from_outside(&err, (90, 20));
                            }
                        }));
                        Ok(None)
                    }
                    _ => ok(reply),
                }
            }
            tx::AMQPMethod::Rollback(_) => {
                *self.tx.as_mut().ok_or_else(not_transactional)? = Transaction::default();
                ok(AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})))
            }
            other => Err(AmqpError::CommandInvalid(format!(
                "method 90.{} is not valid from a client",
                AMQPClass::Tx(other).get_amqp_method_id()
            ))),
        }
    }

    // ---- basic ---------------------------------------------------------------------

    fn basic(&mut self, ctx: &Context<'_>, m: basic::AMQPMethod) -> AmqpResult<Option<AMQPClass>> {
        use basic::AMQPMethod as B;
        match m {
            B::Publish(p) => {
                let args = PublishArgs {
                    exchange: p.exchange.as_str(),
                    routing_key: p.routing_key.as_str(),
                    mandatory: p.mandatory,
                    immediate: p.immediate,
                };
                self.publish(ctx, args).map(|()| None)
            }
            B::Consume(c) => self.consume(ctx, c),
            B::Cancel(c) => {
                self.cancel(ctx, c.consumer_tag.as_str());
                if c.nowait {
                    Ok(None)
                } else {
                    ok(AMQPClass::Basic(B::CancelOk(basic::CancelOk { consumer_tag: c.consumer_tag })))
                }
            }
            B::Get(g) => {
                let q = self.resolve_queue(ctx, g.queue.as_str())?;
                let id = self.id();
                let shared = self.shared.clone();
                let got = q.get(|m, left| {
                    let mut st = shared.lock();
                    let tag = st.next_tag();
                    {
                        let mut out = shared.outbox.lock();
                        let frame_max = out.frame_max();
                        write_method(
                            out.buf(),
                            id,
                            AMQPClass::Basic(B::GetOk(basic::GetOk {
                                delivery_tag: tag,
                                redelivered: m.redelivered,
                                exchange: m.message.exchange.as_ref().into(),
                                routing_key: m.message.routing_key.as_ref().into(),
                                message_count: left,
                            })),
                        );
                        write_content(out.buf(), id, &m.message.raw_properties, &m.message.body, frame_max);
                    }
                    if g.no_ack {
                        q.forget(&m);
                    } else {
                        q.mark_delivered(&m);
                        st.track(Unacked { tag, queue: q.clone(), message: m, consumer: None });
                    }
                });
                if got {
                    Ok(None)
                } else {
                    ok(AMQPClass::Basic(B::GetEmpty(basic::GetEmpty {})))
                }
            }
            B::Ack(a) => {
                self.settle(ctx, a.delivery_tag, a.multiple, Settle::Ack)?;
                Ok(None)
            }
            B::Nack(n) => {
                let how = if n.requeue { Settle::Requeue } else { Settle::Discard };
                self.settle(ctx, n.delivery_tag, n.multiple, how)?;
                Ok(None)
            }
            B::Reject(r) => {
                let how = if r.requeue { Settle::Requeue } else { Settle::Discard };
                self.settle(ctx, r.delivery_tag, false, how)?;
                Ok(None)
            }
            B::Recover(_) => {
                // recover-ok must precede the redeliveries: clients (lapin) drop
                // deliveries they had buffered for the consumer when it arrives.
                // requeue=false is treated as requeue=true, as RabbitMQ does.
                self.send(AMQPClass::Basic(B::RecoverOk(basic::RecoverOk {})));
                self.recover();
                Ok(None)
            }
            B::RecoverAsync(_) => {
                self.recover();
                Ok(None)
            }
            B::Qos(q) => {
                // prefetch_size is not exposed by amq-protocol; RabbitMQ ignores it too.
                if q.global {
                    self.shared.lock().global_prefetch = q.prefetch_count;
                } else {
                    self.consumer_prefetch = q.prefetch_count;
                }
                self.send(AMQPClass::Basic(B::QosOk(basic::QosOk {})));
                self.dispatch_consumer_queues();
                Ok(None)
            }
            other => Err(AmqpError::CommandInvalid(format!(
                "method 60.{} is not valid from a client",
                AMQPClass::Basic(other).get_amqp_method_id()
            ))),
        }
    }

    fn consume(&mut self, ctx: &Context<'_>, c: basic::Consume) -> AmqpResult<Option<AMQPClass>> {
        let tag: Arc<str> = if c.consumer_tag.as_str().is_empty() {
            format!("amq.ctag-{}", random_name()).into()
        } else {
            c.consumer_tag.as_str().into()
        };
        if c.queue.as_str() == REPLY_TO_QUEUE {
            return self.consume_replies(ctx, tag, &c);
        }
        let q = self.resolve_queue(ctx, c.queue.as_str())?;
        let priority = crate::queue::args::consumer_priority(&q.name, &q.vhost, &c.arguments)?;
        {
            let mut st = self.shared.lock();
            if st.consumers.contains_key(&tag) {
                return Err(AmqpError::NotAllowed(format!("attempt to reuse consumer tag '{tag}'")));
            }
            // Registered with no credit until consume-ok is written, so no delivery can
            // overtake it; credit is given below.
            st.consumers.insert(
                tag.clone(),
                ConsumerState { queue: q.clone(), no_ack: c.no_ack, prefetch: 0, unacked: 0, active: false },
            );
        }
        if let Err(e) = q.add_consumer(tag.clone(), self.shared.clone(), c.exclusive, priority) {
            self.shared.lock().consumers.remove(&tag);
            return Err(e);
        }
        if !c.nowait {
            self.send(AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                consumer_tag: tag.as_ref().into(),
            })));
        }
        if let Some(cs) = self.shared.lock().consumers.get_mut(&tag) {
            cs.prefetch = self.consumer_prefetch;
            cs.active = true;
        }
        q.dispatch();
        Ok(None)
    }

    /// Direct reply-to: the channel becomes the consumer of its own reply address.
    fn consume_replies(&mut self, ctx: &Context<'_>, tag: Arc<str>, c: &basic::Consume) -> AmqpResult<Option<AMQPClass>> {
        if !c.no_ack {
            return Err(AmqpError::PreconditionFailed("reply consumer cannot acknowledge".into()));
        }
        {
            let mut st = self.shared.lock();
            if st.reply_consumer.is_some() {
                return Err(AmqpError::PreconditionFailed("reply consumer already set".into()));
            }
            if st.consumers.contains_key(&tag) {
                return Err(AmqpError::NotAllowed(format!("attempt to reuse consumer tag '{tag}'")));
            }
            st.reply_consumer = Some(tag.clone());
        }
        let token = random_name();
        ctx.vhost.register_reply_consumer(&token, self.shared.clone());
        self.reply_token = Some(token);
        if c.nowait {
            Ok(None)
        } else {
            ok(AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk { consumer_tag: tag.as_ref().into() })))
        }
    }

    fn stop_replies(&mut self, vhost: &VHost) {
        if let Some(token) = self.reply_token.take() {
            vhost.unregister_reply_consumer(&token);
        }
        self.shared.lock().reply_consumer = None;
    }

    /// basic.cancel from the client (or an internal cancel). Unknown tags are ignored, as
    /// in RabbitMQ.
    fn cancel(&mut self, ctx: &Context<'_>, tag: &str) {
        let is_reply = self.shared.lock().reply_consumer.as_deref() == Some(tag);
        if is_reply {
            self.stop_replies(ctx.vhost);
            return;
        }
        let removed = self.shared.lock().consumers.remove(tag);
        if let Some(c) = removed {
            if c.queue.remove_consumer(tag, &*self.shared) {
                ctx.vhost.delete_queue(&c.queue);
            }
        }
    }

    fn settle(&mut self, ctx: &Context<'_>, tag: u64, multiple: bool, how: Settle) -> AmqpResult<()> {
        let _ = ctx;
        if let Some(tx) = self.tx.as_mut() {
            tx.settlements.push((tag, multiple, how));
            return Ok(());
        }
        self.settle_now(tag, multiple, how)
    }

    fn settle_now(&mut self, tag: u64, multiple: bool, how: Settle) -> AmqpResult<()> {
        let mut taken = std::mem::take(&mut self.taken);
        {
            let mut st = self.shared.lock();
            if !st.unacked.take(tag, multiple, &mut taken) {
                // A delivery requeued by a consumer timeout: its late settlement is
                // ignored (with `multiple`, the earlier outstanding ones still count).
                if !st.timed_out.remove(&tag) {
                    drop(st);
                    self.taken = taken;
                    return Err(AmqpError::PreconditionFailed(format!("unknown delivery tag {tag}")));
                }
                if multiple {
                    st.unacked.take_through(tag, &mut taken);
                }
            }
            if multiple && !st.timed_out.is_empty() {
                if tag == 0 {
                    st.timed_out.clear();
                } else {
                    st.timed_out = st.timed_out.split_off(&(tag + 1));
                }
            }
            st.release(&taken);
        }
        match how {
            Settle::Requeue => requeue_all(&mut taken),
            Settle::Ack => {
                for u in &taken {
                    u.queue.forget(&u.message);
                }
            }
            // Dead-lettered (reason `rejected`) where the queue has a DLX.
            Settle::Discard => {
                for u in taken.drain(..) {
                    u.queue.reject(u.message);
                }
            }
        }
        taken.clear();
        self.taken = taken;
        self.dispatch_consumer_queues();
        Ok(())
    }

    fn recover(&mut self) {
        let mut taken = std::mem::take(&mut self.taken);
        {
            let mut st = self.shared.lock();
            st.unacked.take_all(&mut taken);
            st.release(&taken);
        }
        requeue_all(&mut taken);
        self.taken = taken;
        self.dispatch_consumer_queues();
    }

    /// Lets every queue this channel consumes from deliver again (after credit was
    /// freed or flow resumed).
    fn dispatch_consumer_queues(&self) {
        let queues: Vec<Arc<Queue>> = {
            let st = self.shared.lock();
            let mut qs: Vec<Arc<Queue>> = Vec::with_capacity(st.consumers.len());
            for c in st.consumers.values() {
                if !qs.iter().any(|q| Arc::ptr_eq(q, &c.queue)) {
                    qs.push(c.queue.clone());
                }
            }
            qs
        };
        for q in queues {
            q.dispatch();
        }
    }

    // ---- content -------------------------------------------------------------------

    /// A basic.publish frame (parsed by the fast path; see `frame::parse_publish`).
    pub fn handle_publish(&mut self, ctx: &Context<'_>, p: PublishArgs<'_>) -> AmqpResult<()> {
        self.expect_method()?;
        self.publish(ctx, p)
    }

    /// A basic.ack frame (parsed by the fast path; see `frame::parse_ack`).
    pub fn handle_ack(&mut self, ctx: &Context<'_>, tag: u64, multiple: bool) -> AmqpResult<()> {
        self.expect_method()?;
        self.settle(ctx, tag, multiple, Settle::Ack)
    }

    /// A method frame may not interrupt a publish's content (505).
    fn expect_method(&self) -> AmqpResult<()> {
        let Some(p) = self.pending.as_ref() else {
            return Ok(());
        };
        let expected = if p.header.is_some() {
            "expected content body, got non content body frame instead"
        } else {
            "expected content header for class 60, got non content header frame instead"
        };
        Err(AmqpError::UnexpectedFrame(expected.into()))
    }

    /// basic.publish: the content that follows is assembled into a message.
    fn publish(&mut self, ctx: &Context<'_>, p: PublishArgs<'_>) -> AmqpResult<()> {
        if p.immediate {
            return Err(AmqpError::NotImplemented("immediate=true".into()));
        }
        // Fail early for a missing or internal exchange; the content that follows is
        // then ignored because the channel is closing.
        let exchange = match self.route_cache.exchange(ctx.vhost, p.exchange) {
            Some(name) => name,
            None => ctx.vhost.check_publish(p.exchange)?,
        };
        self.pending = Some(Pending {
            exchange,
            routing_key: p.routing_key.into(),
            mandatory: p.mandatory,
            header: None,
            body: Vec::new(),
        });
        Ok(())
    }

    pub fn handle_header(&mut self, ctx: &Context<'_>, h: ContentHeader<'_>) -> AmqpResult<()> {
        let Some(p) = self.pending.as_mut() else {
            return Err(AmqpError::UnexpectedFrame("expected method frame, got non method frame instead".into()));
        };
        if p.header.is_some() {
            return Err(AmqpError::UnexpectedFrame("expected content body, got non content body frame instead".into()));
        }
        if h.class_id != 60 {
            return Err(AmqpError::UnexpectedFrame(format!(
                "expected content header for class 60, got one for class {} instead",
                h.class_id
            )));
        }
        if h.body_size > MAX_MESSAGE_SIZE {
            self.pending = None;
            return Err(AmqpError::PreconditionFailed(format!(
                "message size {} is larger than configured max size {MAX_MESSAGE_SIZE}",
                h.body_size
            )));
        }
        let props = h.properties;
        if let Some(user_id) = props.user_id {
            if user_id != ctx.user {
                self.pending = None;
                return Err(AmqpError::PreconditionFailed(format!(
                    "user_id property set to '{}' but authenticated user was '{}'",
                    user_id, ctx.user
                )));
            }
        }
        let ttl = match props.expiration {
            None => None,
            Some(e) => match crate::queue::args::parse_expiration(e) {
                Ok(ms) => Some(ms),
                Err(why) => {
                    self.pending = None;
                    return Err(AmqpError::PreconditionFailed(format!("invalid expiration '{e}': {why}")));
                }
            },
        };
        // Properties the broker rewrites (rare): decoded in full, changed, re-encoded.
        let mut rewritten: Option<BasicProperties> = None;
        if props.reply_to == Some(REPLY_TO_QUEUE) {
            // Direct reply-to: hand out this channel's reply address instead.
            let Some(token) = &self.reply_token else {
                self.pending = None;
                return Err(AmqpError::PreconditionFailed("fast reply consumer does not exist".into()));
            };
            let p = decoded(&mut rewritten, h.raw_properties)?;
            *p = std::mem::take(p).with_reply_to(format!("{REPLY_TO_PREFIX}{token}").into());
        }
        // Sender-selected distribution: CC and BCC add routing keys; BCC is removed
        // before delivery (the only case where the header table is re-encoded).
        let mut extra_keys = Vec::new();
        let mut headers = h.headers;
        if let Some(table) = &headers {
            let has_cc = table.inner().contains_key("CC");
            let has_bcc = table.inner().contains_key("BCC");
            if has_cc || has_bcc {
                extra_keys = match crate::exchange::cc_keys(table) {
                    Ok(k) => k,
                    Err(reason) => {
                        self.pending = None;
                        return Err(AmqpError::PreconditionFailed(format!("invalid message: {reason}")));
                    }
                };
            }
            if has_bcc {
                let mut stripped = amq_protocol::types::FieldTable::default();
                for (k, v) in table.inner() {
                    if k.as_str() != "BCC" {
                        stripped.insert(k.clone(), v.clone());
                    }
                }
                let p = decoded(&mut rewritten, h.raw_properties)?;
                *p = std::mem::take(p).with_headers(stripped.clone());
                headers = Some(stripped);
            }
        }
        let raw_properties: Box<[u8]> = match &rewritten {
            Some(p) => encode_properties(p).into_boxed_slice(),
            None => h.raw_properties.into(),
        };
        let Some(p) = self.pending.as_mut() else {
            return Ok(());
        };
        // Capacity is bounded by MAX_MESSAGE_SIZE above; start modestly so a large
        // announced size costs memory only as the body actually arrives.
        p.body = Vec::with_capacity(h.body_size.min(1 << 20) as usize);
        p.header = Some(PendingHeader {
            body_size: h.body_size,
            raw_properties,
            persistent: props.delivery_mode == Some(2),
            headers,
            extra_keys,
            ttl,
        });
        if h.body_size == 0 {
            self.finish_publish(ctx)?;
        }
        Ok(())
    }

    pub fn handle_body(&mut self, ctx: &Context<'_>, data: &[u8]) -> AmqpResult<()> {
        let Some(p) = self.pending.as_mut() else {
            return Err(AmqpError::UnexpectedFrame("expected method frame, got non method frame instead".into()));
        };
        let Some(h) = p.header.as_ref() else {
            return Err(AmqpError::UnexpectedFrame(
                "expected content header for class 60, got non content header frame instead".into(),
            ));
        };
        if (p.body.len() + data.len()) as u64 > h.body_size {
            return Err(AmqpError::FrameError(format!(
                "content body exceeds the announced size {}",
                h.body_size
            )));
        }
        p.body.extend_from_slice(data);
        if p.body.len() as u64 == h.body_size {
            self.finish_publish(ctx)?;
        }
        Ok(())
    }

    /// A publish's content is complete: route it now, or keep it for tx.commit.
    fn finish_publish(&mut self, ctx: &Context<'_>) -> AmqpResult<()> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        if let Some(tx) = self.tx.as_mut() {
            tx.publishes.push(p);
            return Ok(());
        }
        let routed = self.route_publish(ctx, p)?;
        if self.confirm && routed.rejected {
            self.shared.next_publish_rejected();
            self.confirms_due = true;
        } else if self.confirm {
            let durable = routed.stored > 0;
            let seq = self.shared.next_publish_seq(durable);
            match (&ctx.store, durable) {
                (Some(store), true) => store.confirm_after_commit(self.shared.clone(), seq),
                _ => self.confirms_due = true,
            }
        }
        Ok(())
    }

    /// Routes and enqueues a complete publish and handles mandatory. Returns how many
    /// durable queues stored it and whether a queue refused it (x-overflow).
    fn route_publish(&mut self, ctx: &Context<'_>, p: Pending) -> AmqpResult<PublishOutcome> {
        let Pending { exchange, routing_key, mandatory, header: Some(h), body } = p else {
            return Ok(PublishOutcome::default());
        };
        self.routed.clear();
        let cached = h.extra_keys.is_empty()
            && self.route_cache.route(ctx.vhost, &exchange, &routing_key, &mut self.routed);
        let mut delay = None;
        let exchange_name = if cached {
            exchange.clone()
        } else {
            // Validated when the header arrived (or re-encoded by the broker).
            let props = Properties::parse(&h.raw_properties).unwrap_or_default();
            let keys: Vec<&str> = h.extra_keys.iter().map(String::as_str).collect();
            let req = RouteRequest {
                routing_key: &routing_key,
                extra_keys: &keys,
                headers: h.headers.as_ref(),
                message_id: props.message_id,
                correlation_id: props.correlation_id,
                timestamp: props.timestamp,
            };
            match ctx.vhost.route(&exchange, &req, &mut self.routed)? {
                Routed::Now(name, generation) => {
                    if let Some(g) = generation {
                        self.route_cache.store(g, &name, &routing_key, &self.routed);
                    }
                    name
                }
                Routed::Delay(name, ms) => {
                    let ids = (props.message_id.map(str::to_owned), props.correlation_id.map(str::to_owned));
                    delay = Some((ms, ids, props.timestamp));
                    name
                }
            }
        };
        if let Some((ms, (message_id, correlation_id), timestamp)) = delay {
            // Held until due (and stored, if persistent on a durable exchange);
            // mandatory does not apply (as the plugin).
            let persisted = ctx.vhost.schedule_delayed(DelayedMessage {
                due: std::time::Instant::now() + std::time::Duration::from_millis(ms),
                exchange: exchange_name,
                routing_key,
                extra_keys: h.extra_keys,
                headers: h.headers,
                message_id,
                correlation_id,
                timestamp,
                raw_properties: h.raw_properties,
                body: body.into_boxed_slice(),
                persistent: h.persistent,
                ttl: h.ttl,
                store_id: None,
            });
            return Ok(PublishOutcome { stored: usize::from(persisted), rejected: false });
        }
        let charge = MemoryCharge::content(&routing_key, &h.raw_properties, &body);
        let Enqueueing { message, mut delivered, stored, rejected } = enqueue_routed(
            ctx.store,
            &mut self.routed,
            Message {
                exchange: exchange_name,
                routing_key,
                raw_properties: h.raw_properties,
                body: body.into_boxed_slice(),
                persistent: h.persistent,
                published_ms: ctx.now_ms,
                ttl: h.ttl,
                store: StoredMeta::default(),
                charge,
            },
        );
        if delivered == 0 && message.exchange.is_empty() && message.routing_key.starts_with(REPLY_TO_PREFIX) {
            if let Some(ch) = ctx.vhost.reply_consumer(&message.routing_key) {
                let m = QueuedMessage::new(0, false, message.clone());
                if ch.deliver_reply(&m) {
                    delivered += 1;
                }
            }
        }
        if delivered == 0 && mandatory {
            let mut out = self.shared.outbox.lock();
            let frame_max = out.frame_max();
            write_method(
                out.buf(),
                self.id(),
                AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                    reply_code: 312,
                    reply_text: "NO_ROUTE".into(),
                    exchange: ShortString::from(&*exchange),
                    routing_key: message.routing_key.as_ref().into(),
                })),
            );
            write_content(out.buf(), self.id(), &message.raw_properties, &message.body, frame_max);
        }
        Ok(PublishOutcome { stored, rejected })
    }

    /// Sends the publisher confirms accumulated while handling one read's worth of
    /// frames, as a single `multiple` ack where several are due.
    pub fn flush_confirms(&mut self) {
        if std::mem::take(&mut self.confirms_due) {
            self.shared.flush_confirms();
        }
    }

    pub fn has_confirms_due(&self) -> bool {
        self.confirms_due
    }

    // ---- exchange ------------------------------------------------------------------

    fn exchange(&mut self, ctx: &Context<'_>, m: exchange::AMQPMethod) -> AmqpResult<Option<AMQPClass>> {
        use exchange::AMQPMethod as E;
        let (reply, nowait) = match m {
            E::Declare(d) => {
                ctx.vhost.declare_exchange(&ExchangeDeclare {
                    name: d.exchange.as_str(),
                    kind: d.kind.as_str(),
                    passive: d.passive,
                    durable: d.durable,
                    auto_delete: d.auto_delete,
                    internal: d.internal,
                    arguments: &d.arguments,
                })?;
                (E::DeclareOk(exchange::DeclareOk {}), d.nowait)
            }
            E::Delete(d) => {
                ctx.vhost.delete_exchange(d.exchange.as_str(), d.if_unused)?;
                (E::DeleteOk(exchange::DeleteOk {}), d.nowait)
            }
            E::Bind(b) => {
                ctx.vhost.bind_exchange(b.destination.as_str(), b.source.as_str(), b.routing_key.as_str(), &b.arguments)?;
                (E::BindOk(exchange::BindOk {}), b.nowait)
            }
            E::Unbind(u) => {
                ctx.vhost.unbind_exchange(u.destination.as_str(), u.source.as_str(), u.routing_key.as_str(), &u.arguments)?;
                (E::UnbindOk(exchange::UnbindOk {}), u.nowait)
            }
            other => {
                return Err(AmqpError::CommandInvalid(format!(
                    "method 40.{} is not valid from a client",
                    AMQPClass::Exchange(other).get_amqp_method_id()
                )))
            }
        };
        Ok(if nowait { None } else { Some(AMQPClass::Exchange(reply)) })
    }

    // ---- queue ---------------------------------------------------------------------

    /// Resolves a queue name from a client method; "" means the channel's last declared
    /// queue.
    fn resolve_queue(&self, ctx: &Context<'_>, name: &str) -> AmqpResult<Arc<Queue>> {
        let name = if name.is_empty() {
            match &self.last_queue {
                Some(n) => n.clone(),
                None => {
                    return Err(AmqpError::NotFound(format!(
                        "no previously declared queue in vhost '{}'",
                        ctx.vhost.name
                    )))
                }
            }
        } else {
            name.into()
        };
        ctx.vhost.queue_for(&name, ctx.conn_id)
    }

    fn queue(&mut self, ctx: &Context<'_>, m: queue::AMQPMethod) -> AmqpResult<Option<AMQPClass>> {
        use queue::AMQPMethod as Q;
        let (reply, nowait) = match m {
            Q::Declare(d) => {
                let name = if d.queue.as_str().is_empty() {
                    if d.passive {
                        self.resolve_queue(ctx, "")?.name.to_string()
                    } else {
                        format!("amq.gen-{}", random_name())
                    }
                } else {
                    d.queue.as_str().to_string()
                };
                // As RabbitMQ: a redeclare is checked for equivalence instead.
                if !d.passive && ctx.vhost.queue(&name).is_none() {
                    crate::queue::args::validate(&name, &ctx.vhost.name, &d.arguments)?;
                }
                let settings = QueueSettings {
                    durable: d.durable,
                    exclusive_owner: d.exclusive.then_some(ctx.conn_id),
                    auto_delete: d.auto_delete,
                    arguments: d.arguments,
                };
                let (q, created) = ctx.vhost.declare_queue(&name, d.passive, settings, ctx.conn_id)?;
                if !created {
                    // A redeclare restarts the x-expires period.
                    q.touch();
                }
                self.last_queue = Some(q.name.clone());
                (
                    Q::DeclareOk(queue::DeclareOk {
                        queue: q.name.as_ref().into(),
                        message_count: q.message_count(),
                        consumer_count: q.consumer_count(),
                    }),
                    d.nowait,
                )
            }
            Q::Bind(b) => {
                let q = self.resolve_queue(ctx, b.queue.as_str())?;
                ctx.vhost.bind_queue(&q, b.exchange.as_str(), b.routing_key.as_str(), &b.arguments)?;
                (Q::BindOk(queue::BindOk {}), b.nowait)
            }
            Q::Unbind(u) => {
                let q = self.resolve_queue(ctx, u.queue.as_str())?;
                ctx.vhost.unbind_queue(&q, u.exchange.as_str(), u.routing_key.as_str(), &u.arguments)?;
                (Q::UnbindOk(queue::UnbindOk {}), false)
            }
            Q::Purge(p) => {
                let q = self.resolve_queue(ctx, p.queue.as_str())?;
                let n = q.purge();
                (Q::PurgeOk(queue::PurgeOk { message_count: n }), p.nowait)
            }
            Q::Delete(d) => {
                let count = match self.resolve_queue(ctx, d.queue.as_str()) {
                    Err(AmqpError::NotFound(_)) => 0,
                    Err(e) => return Err(e),
                    Ok(q) => {
                        if d.if_unused && q.consumer_count() > 0 {
                            return Err(AmqpError::PreconditionFailed(format!(
                                "queue '{}' in vhost '{}' in use",
                                q.name, ctx.vhost.name
                            )));
                        }
                        if d.if_empty && q.message_count() > 0 {
                            return Err(AmqpError::PreconditionFailed(format!(
                                "queue '{}' in vhost '{}' not empty",
                                q.name, ctx.vhost.name
                            )));
                        }
                        ctx.vhost.delete_queue(&q)
                    }
                };
                (Q::DeleteOk(queue::DeleteOk { message_count: count }), d.nowait)
            }
            other => {
                return Err(AmqpError::CommandInvalid(format!(
                    "method 50.{} is not valid from a client",
                    AMQPClass::Queue(other).get_amqp_method_id()
                )))
            }
        };
        Ok(if nowait { None } else { Some(AMQPClass::Queue(reply)) })
    }

    // ---- teardown ------------------------------------------------------------------

    /// Closes the channel's delivery side: cancels its consumers (auto-deleting queues
    /// that lose their last one) and requeues its unacked messages.
    pub fn teardown(&mut self, vhost: &VHost) {
        self.pending = None;
        self.stop_replies(vhost);
        let (consumers, mut unacked) = {
            let mut st: std::sync::MutexGuard<'_, DeliveryState> = self.shared.lock();
            st.closed = true;
            let consumers: Vec<(Arc<str>, ConsumerState)> = st.consumers.drain().collect();
            let mut unacked = Vec::new();
            st.unacked.take_all(&mut unacked);
            (consumers, unacked)
        };
        for (tag, c) in consumers {
            if c.queue.remove_consumer(&tag, &*self.shared) {
                vhost.delete_queue(&c.queue);
            }
        }
        requeue_all(&mut unacked);
    }
}

/// What routing a publish did.
#[derive(Default)]
struct PublishOutcome {
    /// Durable queues that stored it.
    stored: usize,
    /// A queue refused it (x-overflow reject-publish).
    rejected: bool,
}

#[derive(Clone, Copy)]
enum Settle {
    Ack,
    Requeue,
    Discard,
}

/// Requeues settled deliveries, one lock per run of same-queue messages.
fn requeue_all(taken: &mut Vec<Unacked>) {
    let mut start = 0;
    while start < taken.len() {
        let q = taken[start].queue.clone();
        let mut end = start + 1;
        while end < taken.len() && Arc::ptr_eq(&taken[end].queue, &q) {
            end += 1;
        }
        q.requeue(taken[start..end].iter().map(|u| u.message.clone()));
        start = end;
    }
    taken.clear();
}

/// The publisher's properties decoded in full into `slot` (once), for the rare
/// publishes whose properties the broker rewrites.
fn decoded<'p>(slot: &'p mut Option<BasicProperties>, raw: &[u8]) -> AmqpResult<&'p mut BasicProperties> {
    let props = match slot.take() {
        Some(p) => p,
        None => match amq_protocol::protocol::basic::parse_properties(raw) {
            Ok((_, p)) => p,
            Err(_) => return Err(AmqpError::FrameError("cannot decode content header".into())),
        },
    };
    Ok(slot.insert(props))
}
