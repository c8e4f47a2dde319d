//! Publishing and getting without a channel, as the management API's
//! `POST /api/exchanges/{vhost}/{name}/publish` and `POST /api/queues/{vhost}/{name}/get`
//! do: RabbitMQ runs them on an internal ("direct") connection; here they call the
//! same routing and queue operations a channel uses. Permissions are the caller's
//! business.

use std::sync::Arc;

use amq_protocol::protocol::BasicProperties;
use haremq_routing::RouteRequest;

use super::*;
use crate::message::properties::encode_properties;

/// A message to publish: its properties decoded (the broker encodes them).
pub struct DirectPublish<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

/// What a get should do with the messages it took, RabbitMQ's `ackmode`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GetSettle {
    /// `ack_requeue_true` / `reject_requeue_true`: all put back (redelivered) once
    /// every message was taken, as RabbitMQ's closing channel requeues them.
    Requeue,
    /// `ack_requeue_false`: removed.
    Ack,
    /// `reject_requeue_false`: rejected without requeue (dead-lettered if the queue
    /// has a dead-letter exchange).
    Reject,
}

/// One message a get returned.
pub struct GotMessage {
    pub message: Arc<Message>,
    pub redelivered: bool,
    /// Messages left in the queue after this one was taken.
    pub message_count: u32,
}

impl VHost {
    /// Routes and enqueues a message as a publish on a channel would (expiration as
    /// a TTL, CC/BCC, delayed-message exchanges, alternate exchanges); true if it
    /// reached a queue (or is held by a delayed-message exchange). 404 for a missing
    /// exchange, 403 for an internal one, 406 for a bad `expiration`.
    pub fn publish_direct(&self, p: DirectPublish<'_>) -> AmqpResult<bool> {
        let exchange = self.check_publish(p.exchange)?;
        let ttl =
            match p.properties.expiration() {
                None => None,
                Some(e) => Some(crate::queue::args::parse_expiration(e.as_str()).map_err(|why| {
                    AmqpError::PreconditionFailed(format!("invalid expiration '{}': {why}", e.as_str()))
                })?),
            };
        let mut properties = p.properties;
        let mut extra_keys = Vec::new();
        if let Some(table) = properties.headers().clone() {
            if table.inner().contains_key("CC") || table.inner().contains_key("BCC") {
                extra_keys = crate::exchange::cc_keys(&table)
                    .map_err(|reason| AmqpError::PreconditionFailed(format!("invalid message: {reason}")))?;
            }
            if table.inner().contains_key("BCC") {
                let mut stripped = FieldTable::default();
                for (k, v) in table.inner() {
                    if k.as_str() != "BCC" {
                        stripped.insert(k.clone(), v.clone());
                    }
                }
                properties = properties.with_headers(stripped);
            }
        }
        let persistent = *properties.delivery_mode() == Some(2);
        let raw_properties: Box<[u8]> = encode_properties(&properties).into_boxed_slice();
        let headers = properties.headers().clone();
        let message_id = properties.message_id().as_ref().map(|s| s.as_str().to_string());
        let correlation_id = properties.correlation_id().as_ref().map(|s| s.as_str().to_string());
        let timestamp = *properties.timestamp();
        let keys: Vec<&str> = extra_keys.iter().map(String::as_str).collect();
        let req = RouteRequest {
            routing_key: p.routing_key,
            extra_keys: &keys,
            headers: headers.as_ref(),
            message_id: message_id.as_deref(),
            correlation_id: correlation_id.as_deref(),
            timestamp,
        };
        let mut routed = Vec::new();
        let exchange = match self.route(&exchange, &req, &mut routed)? {
            Routed::Now(name, _) => name,
            Routed::Delay(name, ms) => {
                self.schedule_delayed(DelayedMessage {
                    due: std::time::Instant::now() + std::time::Duration::from_millis(ms),
                    exchange: name,
                    routing_key: p.routing_key.into(),
                    extra_keys,
                    headers,
                    message_id,
                    correlation_id,
                    timestamp,
                    raw_properties,
                    body: p.body.into_boxed_slice(),
                    persistent,
                    ttl,
                    store_id: None,
                });
                return Ok(true);
            }
        };
        let body = p.body.into_boxed_slice();
        let charge = crate::memory::MemoryCharge::content(p.routing_key, &raw_properties, &body);
        let outcome = enqueue_routed(
            &self.store,
            &mut routed,
            Message {
                exchange,
                routing_key: p.routing_key.into(),
                raw_properties,
                body,
                persistent,
                published_ms: crate::message::now_ms(),
                ttl,
                store: Default::default(),
                charge,
            },
            None,
        );
        Ok(outcome.delivered > 0)
    }

    /// Takes up to `count` messages from the head of `q` and settles them as `settle`
    /// says. Requeued ones come back marked redelivered, at their positions.
    pub fn get_direct(&self, q: &Arc<Queue>, count: usize, settle: GetSettle) -> Vec<GotMessage> {
        q.touch();
        let mut got = Vec::new();
        let mut held = Vec::new();
        while got.len() < count {
            // Taken as an acknowledging get, settled below (the statistics count a
            // get, then an ack, a requeue or a reject, as RabbitMQ's channel does).
            let took = q.get(false, &mut |m, left| {
                got.push(GotMessage { message: m.message.clone(), redelivered: m.redelivered, message_count: left });
                q.mark_delivered(&m);
                held.push(m);
            });
            if !took {
                break;
            }
        }
        // Settled after the gets, outside the queue's lock (get holds it while the
        // closure runs).
        match settle {
            GetSettle::Requeue => q.requeue(&mut held.into_iter()),
            GetSettle::Reject => held.into_iter().for_each(|m| q.reject(m)),
            GetSettle::Ack => held.iter().for_each(|m| q.ack(m)),
        }
        got
    }
}
