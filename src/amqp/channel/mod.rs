//! One AMQP channel as its connection task sees it: the method dispatch, split by
//! method class into the files beside this one (publish, consume, settle, queue and
//! exchange methods, transactions).
//!
//! Everything here runs on the connection's task. The parts queues must reach from
//! other tasks (consumers, unacked map, delivery tags) live in [`ChannelShared`].

mod access;
mod consume;
mod exchange_methods;
mod publish;
mod queue_methods;
mod replicated;
mod settle;
mod transaction;

use std::sync::Arc;

use amq_protocol::protocol::{basic, channel, confirm, AMQPClass};
use amq_protocol::types::ChannelId;

use super::access_cache::PublishAccess;
use super::delivery::{ChannelShared, ConsumerState, DeliveryState, Unacked};
use super::frame::{write_method, PublishArgs};
use super::outbox::Outbox;
use super::route_cache::RouteCache;
use crate::auth::access::SessionAccess;
use crate::error::{AmqpError, AmqpResult};
use crate::queue::{ConnectionId, QueueRef};
use crate::store::StoreHandle;
use crate::vhost::VHost;
use publish::Pending;
use settle::{requeue_all, Settle};
use transaction::Transaction;

/// What the channel needs from its connection while handling a frame.
pub struct Context<'a> {
    pub vhost: &'a Arc<VHost>,
    pub store: &'a Option<StoreHandle>,
    pub conn_id: ConnectionId,
    pub user: &'a str,
    /// The user's rights in the vhost: every method is checked against them.
    pub access: &'a SessionAccess,
    /// The user may set any `user_id` (the `impersonator` tag).
    pub impersonator: bool,
    /// The wall clock (ms since the UNIX epoch) when this batch of frames was read:
    /// messages published in it count their TTLs from here.
    pub now_ms: u64,
    /// The cluster this node is part of (quorum queues are declared through it).
    pub cluster: Option<&'a Arc<dyn crate::membership::ClusterView>>,
}

pub struct Channel {
    pub shared: Arc<ChannelShared>,
    /// We sent channel.close and wait for close-ok; everything else is ignored.
    pub closing: bool,
    pending: Option<Pending>,
    confirm: bool,
    /// A publish was confirmed without the store; flush after this read.
    confirms_due: bool,
    /// The number of the last publish in confirm mode (the channel numbers them in
    /// the order it handles them; the shared tracker keeps the same count).
    confirm_seq: u64,
    /// The channel's confirm tracker as queues that hold a confirm see it.
    confirm_holder: Arc<dyn crate::queue::ConfirmHolder>,
    /// basic.qos global=false: the prefetch given to consumers created afterwards.
    consumer_prefetch: u16,
    /// The last queue declared on this channel (AMQP's "current queue", for empty names).
    last_queue: Option<Arc<str>>,
    routed: Vec<QueueRef>,
    /// The last route this channel published along, while the topology is unchanged.
    route_cache: RouteCache,
    /// The last exchange this channel was allowed to publish to, while the grants are
    /// unchanged.
    publish_access: PublishAccess,
    taken: Vec<Unacked>,
    /// The token of this channel's direct reply-to address, once it consumes from
    /// `amq.rabbitmq.reply-to`.
    reply_token: Option<String>,
    /// Set by tx.select: publishes and settlements wait here for tx.commit.
    tx: Option<Transaction>,
}

pub(super) fn ok(method: AMQPClass) -> AmqpResult<Option<AMQPClass>> {
    Ok(Some(method))
}

impl Channel {
    pub fn new(id: ChannelId, outbox: Arc<Outbox>) -> Self {
        let shared = ChannelShared::new(id, outbox);
        Self {
            shared: shared.clone(),
            confirm_seq: 0,
            confirm_holder: shared,
            closing: false,
            pending: None,
            confirm: false,
            confirms_due: false,
            consumer_prefetch: 0,
            last_queue: None,
            routed: Vec::new(),
            route_cache: RouteCache::default(),
            publish_access: PublishAccess::default(),
            taken: Vec::new(),
            reply_token: None,
            tx: None,
        }
    }

    pub fn id(&self) -> ChannelId {
        self.shared.id
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
                self.shared.modes.confirm.store(true, std::sync::atomic::Ordering::Relaxed);
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
            AMQPClass::Access(_) => return Err(AmqpError::NotImplemented("access.request is not supported".into())),
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
            B::Get(g) => self.get(ctx, g),
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
                self.refuse_recover()?;
                self.send(AMQPClass::Basic(B::RecoverOk(basic::RecoverOk {})));
                self.recover();
                Ok(None)
            }
            B::RecoverAsync(_) => {
                self.refuse_recover()?;
                self.recover();
                Ok(None)
            }
            B::Qos(q) => {
                self.qos(q);
                Ok(None)
            }
            other => Err(AmqpError::CommandInvalid(format!(
                "method 60.{} is not valid from a client",
                AMQPClass::Basic(other).get_amqp_method_id()
            ))),
        }
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
