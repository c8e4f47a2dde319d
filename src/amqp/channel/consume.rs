//! Consuming: basic.consume (including direct reply-to), basic.cancel, basic.get,
//! basic.qos and basic.recover.

use std::sync::Arc;

use amq_protocol::protocol::{basic, AMQPClass};

use super::settle::requeue_all;
use super::{access, ok, Channel, Context};
use crate::amqp::delivery::{ChannelShared, ConsumerState, Unacked};
use crate::amqp::frame::{write_content, write_method};
use crate::error::{AmqpError, AmqpResult};
use crate::message::QueuedMessage;
use crate::queue::{NewConsumer, Queue, QueueOp};
use crate::util::random_name;
use crate::vhost::{VHost, REPLY_TO_QUEUE};
use crate::wire::shortstr::short;

impl Channel {
    pub(super) fn consume(&mut self, ctx: &Context<'_>, c: basic::Consume) -> AmqpResult<Option<AMQPClass>> {
        let tag: Arc<str> = if c.consumer_tag.as_str().is_empty() {
            format!("amq.ctag-{}", random_name()).into()
        } else {
            c.consumer_tag.as_str().into()
        };
        if c.queue.as_str() == REPLY_TO_QUEUE {
            return self.consume_replies(ctx, tag, &c);
        }
        let name = self.queue_name(c.queue.as_str())?;
        access::read_queue(ctx, &name)?;
        let q = self.resolve_queue(ctx, &name)?;
        let priority = crate::queue::args::consumer_priority(q.name(), q.vhost(), &c.arguments)?;
        {
            let mut st = self.shared.lock();
            if st.consumers.contains_key(&tag) {
                return Err(AmqpError::NotAllowed(format!("attempt to reuse consumer tag '{tag}'")));
            }
            // Registered with no credit until consume-ok is written, so no delivery can
            // overtake it; credit is given below.
            st.consumers.insert(
                tag.clone(),
                ConsumerState {
                    queue: q.clone(),
                    no_ack: c.no_ack,
                    prefetch: 0,
                    unacked: 0,
                    active: false,
                    exclusive: c.exclusive,
                    arguments: c.arguments.clone(),
                },
            );
        }
        // A replicated queue registers the consumer through its log: consume-ok (and
        // with it the consumer's credit) waits for that, so consumers are ordered as
        // their consume-oks are (RabbitMQ's quorum queues do the same).
        let deferred = !c.nowait && q.defers_consume_ok();
        let registered = deferred.then(|| {
            let (shared, tag, q, prefetch) = (self.shared.clone(), tag.clone(), q.clone(), self.consumer_prefetch);
            Box::new(move |registered: AmqpResult<()>| {
                if shared.lock().closed {
                    return;
                }
                if let Err(e) = registered {
                    // Refused where the queue lives (403 exclusive use, 404 its node
                    // down): as a single node would refuse basic.consume.
                    shared.lock().consumers.remove(&tag);
                    shared.close_from_outside(&e, (60, 20));
                    return;
                }
                let ok = AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk { consumer_tag: short(&tag) }));
                write_method(shared.outbox.lock().buf(), shared.id, ok);
                if let Some(cs) = shared.lock().consumers.get_mut(&tag) {
                    cs.prefetch = prefetch;
                    cs.active = true;
                }
                q.dispatch();
            }) as crate::queue::Registered
        });
        let consumer = NewConsumer {
            tag: tag.clone(),
            sink: self.shared.clone(),
            exclusive: c.exclusive,
            priority,
            no_ack: c.no_ack,
            prefetch: self.consumer_prefetch,
            arguments: &c.arguments,
            registered,
        };
        if let Err(e) = q.add_consumer(consumer) {
            self.shared.lock().consumers.remove(&tag);
            return Err(e);
        }
        if deferred {
            return Ok(None);
        }
        if !c.nowait {
            self.send(AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk { consumer_tag: short(&tag) })));
        }
        if let Some(cs) = self.shared.lock().consumers.get_mut(&tag) {
            cs.prefetch = self.consumer_prefetch;
            cs.active = true;
        }
        q.dispatch();
        Ok(None)
    }

    /// Direct reply-to: the channel becomes the consumer of its own reply address.
    pub(super) fn consume_replies(
        &mut self,
        ctx: &Context<'_>,
        tag: Arc<str>,
        c: &basic::Consume,
    ) -> AmqpResult<Option<AMQPClass>> {
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
            ok(AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk { consumer_tag: short(&tag) })))
        }
    }

    pub(super) fn stop_replies(&mut self, vhost: &VHost) {
        if let Some(token) = self.reply_token.take() {
            vhost.unregister_reply_consumer(&token);
        }
        self.shared.lock().reply_consumer = None;
    }

    /// basic.cancel from the client (or an internal cancel). Unknown tags are ignored, as
    /// in RabbitMQ.
    pub(super) fn cancel(&mut self, ctx: &Context<'_>, tag: &str) {
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

    /// basic.recover on a channel consuming from a queue that cannot take deliveries
    /// back (a stream): 540 (RabbitMQ 3.10 fails with 541 there).
    pub(super) fn refuse_recover(&self) -> AmqpResult<()> {
        for c in self.shared.lock().consumers.values() {
            c.queue.refuse(QueueOp::Recover)?;
        }
        Ok(())
    }

    pub(super) fn recover(&mut self) {
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
    pub(super) fn dispatch_consumer_queues(&self) {
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

    /// basic.get: the head message, written as get-ok under the queue's lock; for a
    /// queue that answers later (a round trip over the network), when it answers
    /// (the client waits for get-ok before its next synchronous method).
    pub(super) fn get(&mut self, ctx: &Context<'_>, g: basic::Get) -> AmqpResult<Option<AMQPClass>> {
        use basic::AMQPMethod as B;
        let name = self.queue_name(g.queue.as_str())?;
        access::read_queue(ctx, &name)?;
        let q = self.resolve_queue(ctx, &name)?;
        q.refuse(QueueOp::Get)?;
        let shared = self.shared.clone();
        if q.answers_later() {
            let queue = q.clone();
            q.get_later(
                g.no_ack,
                Box::new(move |got| match got {
                    Some((m, left)) => deliver_get(&shared, &queue, g.no_ack, m, left),
                    None => {
                        shared.counts.got_empty();
                        write_method(
                            shared.outbox.lock().buf(),
                            shared.id,
                            AMQPClass::Basic(B::GetEmpty(basic::GetEmpty {})),
                        );
                    }
                }),
            );
            return Ok(None);
        }
        let got = q.get(g.no_ack, &mut |m, left| {
            crate::amqp::panics::test_trigger(q.name());
            deliver_get(&shared, &q, g.no_ack, m, left);
        });
        if got {
            Ok(None)
        } else {
            self.shared.counts.got_empty();
            ok(AMQPClass::Basic(B::GetEmpty(basic::GetEmpty {})))
        }
    }

    /// basic.qos: per-consumer prefetch for consumers created afterwards, or (global)
    /// a limit over the channel's consumers, as RabbitMQ implements it.
    pub(super) fn qos(&mut self, q: basic::Qos) {
        use basic::AMQPMethod as B;
        // prefetch_size is not exposed by amq-protocol; RabbitMQ ignores it too.
        if q.global {
            self.shared.lock().global_prefetch = q.prefetch_count;
        } else {
            self.consumer_prefetch = q.prefetch_count;
            self.shared.modes.prefetch.store(q.prefetch_count, std::sync::atomic::Ordering::Relaxed);
        }
        self.send(AMQPClass::Basic(B::QosOk(basic::QosOk {})));
        self.dispatch_consumer_queues();
    }
}

/// Writes basic.get-ok with message `m` (`left` ready after it) and tracks it unless
/// no-ack.
fn deliver_get(shared: &Arc<ChannelShared>, q: &Arc<Queue>, no_ack: bool, m: QueuedMessage, left: u32) {
    use basic::AMQPMethod as B;
    let mut st = shared.lock();
    let tag = st.next_tag();
    {
        let mut out = shared.outbox.lock();
        let frame_max = out.frame_max();
        write_method(
            out.buf(),
            shared.id,
            AMQPClass::Basic(B::GetOk(basic::GetOk {
                delivery_tag: tag,
                redelivered: m.redelivered,
                exchange: short(&m.message.exchange),
                routing_key: short(&m.message.routing_key),
                message_count: left,
            })),
        );
        write_content(out.buf(), shared.id, &m.message.raw_properties, &m.message.body, frame_max);
    }
    shared.counts.delivered(false, no_ack, m.redelivered);
    if no_ack {
        q.forget(&m);
    } else {
        q.mark_delivered(&m);
        st.track(Unacked { tag, queue: q.clone(), message: m, consumer: None });
    }
}
