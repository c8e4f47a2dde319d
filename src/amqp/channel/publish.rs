//! Publishing: basic.publish, its content header and body frames assembled into a
//! message, routed (with the channel's route cache), enqueued, and confirmed or
//! returned (mandatory).

use std::sync::Arc;

use amq_protocol::protocol::BasicProperties;
use amq_protocol::protocol::{basic, AMQPClass};
use amq_protocol::types::FieldTable;
use haremq_routing::RouteRequest;

use super::{access, Channel, Context};
use crate::amqp::frame::{write_content, write_method, ContentHeader, PublishArgs};
use crate::error::{AmqpError, AmqpResult};
use crate::exchange::delayed::DelayedMessage;
use crate::memory::MemoryCharge;
use crate::message::properties::{encode_properties, Properties};
use crate::message::{Message, QueuedMessage, StoredMeta};
use crate::queue::{enqueue_routed, ConfirmHolder, ConfirmRef, Enqueueing};
use crate::vhost::{Routed, REPLY_TO_PREFIX, REPLY_TO_QUEUE};
use crate::wire::shortstr::short;

/// Largest message body accepted (RabbitMQ's default `max_message_size`, 128 MiB).
pub const MAX_MESSAGE_SIZE: u64 = 128 * 1024 * 1024;

/// Properties at least this large are charged to the memory alarm while their
/// publish waits for its body (smaller ones cost less than the charge would).
const LARGE_PROPERTIES: usize = 4096;

/// A publish whose content is still arriving.
pub(super) struct Pending {
    /// The exchange's interned name.
    pub(super) exchange: Arc<str>,
    pub(super) routing_key: Box<str>,
    pub(super) mandatory: bool,
    pub(super) header: Option<PendingHeader>,
    pub(super) body: Vec<u8>,
    /// What this publish holds while it is pending (arriving, or waiting for
    /// tx.commit), counted by the memory alarm: a peer can make the broker hold
    /// announced-but-unfinished bodies on every channel, and uncommitted publishes.
    charge: MemoryCharge,
}

impl Pending {
    /// Charges what the publish holds now: key, properties and the body's buffer.
    fn recharge(&mut self) {
        let properties = self.header.as_ref().map_or(0, |h| h.raw_properties.len());
        self.charge.resize(self.routing_key.len() + properties + self.body.capacity());
    }
}

pub(super) struct PendingHeader {
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

impl Channel {
    /// A basic.publish frame (parsed by the fast path; see `frame::parse_publish`).
    pub fn handle_publish(&mut self, ctx: &Context<'_>, p: PublishArgs<'_>) -> AmqpResult<()> {
        self.expect_method()?;
        self.publish(ctx, p)
    }

    /// basic.publish: the content that follows is assembled into a message.
    pub(super) fn publish(&mut self, ctx: &Context<'_>, p: PublishArgs<'_>) -> AmqpResult<()> {
        if p.immediate {
            return Err(AmqpError::NotImplemented("immediate=true".into()));
        }
        // As RabbitMQ: write permission first (cached per channel), then a missing or
        // internal exchange, then the routing key against topic permissions. On
        // failure the content that follows is ignored because the channel is closing.
        let topic = self.publish_access.check(ctx.access, p.exchange)?;
        let exchange = match self.route_cache.exchange(ctx.vhost, p.exchange) {
            Some(name) => name,
            None => ctx.vhost.check_publish(p.exchange)?,
        };
        if topic {
            access::publish_topic(ctx, &exchange, p.routing_key)?;
        }
        self.pending = Some(Pending {
            exchange,
            routing_key: p.routing_key.into(),
            mandatory: p.mandatory,
            header: None,
            body: Vec::new(),
            charge: MemoryCharge::default(),
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
            if user_id != ctx.user && !ctx.impersonator {
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
            *p = std::mem::take(p).with_reply_to(short(&format!("{REPLY_TO_PREFIX}{token}")));
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
        p.header = Some(PendingHeader {
            body_size: h.body_size,
            raw_properties,
            persistent: props.delivery_mode == Some(2),
            headers,
            extra_keys,
            ttl,
        });
        if p.header.as_ref().is_some_and(|h| h.raw_properties.len() >= LARGE_PROPERTIES) {
            // Held until the body comes, on as many channels as the peer opens.
            p.recharge();
        }
        if h.body_size == 0 {
            self.finish_publish(ctx)?;
        }
        Ok(())
    }

    pub fn handle_body(&mut self, ctx: &Context<'_>, data: &[u8]) -> AmqpResult<()> {
        let Some(p) = self.pending.as_mut() else {
            return Err(AmqpError::UnexpectedFrame("expected method frame, got non method frame instead".into()));
        };
        let Some(body_size) = p.header.as_ref().map(|h| h.body_size) else {
            return Err(AmqpError::UnexpectedFrame(
                "expected content header for class 60, got non content header frame instead".into(),
            ));
        };
        if (p.body.len() + data.len()) as u64 > body_size {
            return Err(AmqpError::FrameError(format!("content body exceeds the announced size {body_size}")));
        }
        if p.body.is_empty() {
            // The first body frame. Capacity is bounded by MAX_MESSAGE_SIZE (checked at
            // the header); start modestly so a large announced size costs memory only
            // as the body actually arrives.
            p.body = Vec::with_capacity((body_size as usize).min(data.len().max(1 << 20)));
        }
        p.body.extend_from_slice(data);
        if p.body.len() as u64 == body_size {
            self.finish_publish(ctx)?;
        } else {
            // More frames to come: what is held until then counts as memory. (A body
            // that arrives in one frame is routed at once and never charged here.)
            p.recharge();
        }
        Ok(())
    }

    /// A publish's content is complete: route it now, or keep it for tx.commit.
    pub(super) fn finish_publish(&mut self, ctx: &Context<'_>) -> AmqpResult<()> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        if let Some(tx) = self.tx.as_mut() {
            let mut p = p;
            p.recharge();
            tx.publishes.push(p);
            return Ok(());
        }
        let routed = self.route_publish(ctx, p)?;
        if self.confirm && routed.rejected {
            self.confirm_seq = self.shared.next_publish_rejected();
            self.confirms_due = true;
        } else if self.confirm {
            let durable = routed.stored > 0;
            let seq = self.shared.next_publish_seq(durable);
            self.confirm_seq = seq;
            match (&ctx.store, durable) {
                (Some(store), true) => store.confirm_after_commit(self.shared.clone(), seq),
                _ => self.confirms_due = true,
            }
        }
        Ok(())
    }

    /// Routes and enqueues a complete publish and handles mandatory. Returns how many
    /// durable queues stored it and whether a queue refused it (x-overflow).
    pub(super) fn route_publish(&mut self, ctx: &Context<'_>, p: Pending) -> AmqpResult<PublishOutcome> {
        self.route_publish_held(ctx, p, None)
    }

    /// [`route_publish`](Self::route_publish) for a tx.commit: `tx` (when given) holds
    /// the commit for the queues that store the message later (quorum queues), instead
    /// of the channel's confirm tracker.
    pub(super) fn route_publish_held(
        &mut self,
        ctx: &Context<'_>,
        p: Pending,
        tx: Option<&Arc<dyn ConfirmHolder>>,
    ) -> AmqpResult<PublishOutcome> {
        let Pending { exchange, routing_key, mandatory, header: Some(h), body, charge: _pending } = p else {
            return Ok(PublishOutcome::default());
        };
        self.routed.clear();
        let cached =
            h.extra_keys.is_empty() && self.route_cache.route(ctx.vhost, &exchange, &routing_key, &mut self.routed);
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
            self.shared.counts.published(1, false);
            return Ok(PublishOutcome { stored: usize::from(persisted), rejected: false });
        }
        let charge = MemoryCharge::content(&routing_key, &h.raw_properties, &body);
        // The number this publish's confirm will get (publishes are numbered in the
        // order the channel handles them), for queues that hold the confirm.
        let confirm = match tx {
            Some(holder) => Some(ConfirmRef { holder, seq: 0 }),
            None => self.confirm.then(|| ConfirmRef { holder: &self.confirm_holder, seq: self.confirm_seq + 1 }),
        };
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
            confirm,
        );
        if delivered == 0 && message.exchange.is_empty() && message.routing_key.starts_with(REPLY_TO_PREFIX) {
            if let Some(ch) = ctx.vhost.reply_consumer(&message.routing_key) {
                let m = QueuedMessage::new(0, false, message.clone());
                if ch.deliver_reply(&m) {
                    delivered += 1;
                }
            }
        }
        self.shared.counts.published(delivered, cached);
        if delivered == 0 {
            self.shared.counts.unroutable(mandatory);
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
                    exchange: short(&exchange),
                    routing_key: short(&message.routing_key),
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
}

/// What routing a publish did.
#[derive(Default)]
pub(super) struct PublishOutcome {
    /// Durable queues that stored it.
    pub(super) stored: usize,
    /// A queue refused it (x-overflow reject-publish).
    pub(super) rejected: bool,
}

/// The publisher's properties decoded in full into `slot` (once), for the rare
/// publishes whose properties the broker rewrites.
fn decoded<'p>(slot: &'p mut Option<BasicProperties>, raw: &[u8]) -> AmqpResult<&'p mut BasicProperties> {
    let props = match slot.take() {
        Some(p) => p,
        None => match crate::wire::nesting::parse_properties(raw) {
            Some(p) => p,
            None => return Err(AmqpError::FrameError("cannot decode content header".into())),
        },
    };
    Ok(slot.insert(props))
}
