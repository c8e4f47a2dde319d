//! The queue layer on its own: classic queues driven through [`QueueType`] with an
//! in-memory [`ConsumerSink`] and [`QueueHost`] — no channel, outbox or socket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldTable};
use haremq_routing::RouteRequest;

use super::classic::ClassicQueue;
use super::*;
use crate::message::now_ms;
use crate::message::properties::encode_properties;
use crate::store::StoreHandle;

/// What a sink was given: (consumer tag, body, redelivered).
type Delivered = Vec<(Arc<str>, Vec<u8>, bool)>;

/// A consumer that records what it is given, with a prefetch-like credit.
struct Sink {
    no_ack: bool,
    credit: Mutex<u32>,
    /// (consumer tag, message body, redelivered)
    delivered: Mutex<Delivered>,
    unacked: Mutex<Vec<(Arc<Queue>, QueuedMessage)>>,
    cancelled: Mutex<Vec<Arc<str>>>,
}

impl Sink {
    fn new(credit: u32, no_ack: bool) -> Arc<Self> {
        Arc::new(Self {
            no_ack,
            credit: Mutex::new(credit),
            delivered: Mutex::default(),
            unacked: Mutex::default(),
            cancelled: Mutex::default(),
        })
    }

    fn bodies(&self) -> Vec<String> {
        self.delivered.lock().unwrap().iter().map(|(_, b, _)| String::from_utf8_lossy(b).into_owned()).collect()
    }

    /// Settles every unacked delivery: ack (`requeue` false) or requeue.
    fn settle_all(&self, requeue: bool) {
        let taken: Vec<_> = self.unacked.lock().unwrap().drain(..).collect();
        *self.credit.lock().unwrap() += taken.len() as u32;
        let Some(q) = taken.first().map(|(q, _)| q.clone()) else { return };
        if requeue {
            // One call, as a channel requeues a run from one queue.
            q.requeue(&mut taken.into_iter().map(|(_, m)| m));
        } else {
            for (_, m) in &taken {
                q.forget(m);
            }
            q.dispatch();
        }
    }
}

impl ConsumerSink for Sink {
    fn offer(&self, queue: &Arc<Queue>, tag: &Arc<str>, message: &QueuedMessage) -> Offer {
        let mut credit = self.credit.lock().unwrap();
        if *credit == 0 {
            return Offer::Busy;
        }
        *credit -= 1;
        self.delivered.lock().unwrap().push((tag.clone(), message.message.body.to_vec(), message.redelivered));
        if self.no_ack {
            *credit += 1;
        } else {
            self.unacked.lock().unwrap().push((queue.clone(), message.clone()));
        }
        Offer::Delivered { no_ack: self.no_ack }
    }
    fn unacked(&self, _: &str) -> u32 {
        self.unacked.lock().unwrap().len() as u32
    }
    fn oldest_unacked(&self, _: &str) -> Option<(DeliveryTag, DeliveryTag)> {
        None
    }
    fn time_out(&self, _: &str) -> Option<Vec<QueuedMessage>> {
        None
    }
    fn cancelled(&self, tag: &Arc<str>) {
        self.cancelled.lock().unwrap().push(tag.clone());
    }
    fn describe(&self) -> String {
        "test sink".into()
    }
}

/// A vhost with one dead-letter exchange `dlx` that routes to the queue `dead`.
struct Host {
    name: Arc<str>,
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    store: Option<StoreHandle>,
}

impl Host {
    fn new() -> Arc<Self> {
        Arc::new(Self { name: "/".into(), queues: Mutex::default(), store: None })
    }

    fn declare(self: &Arc<Self>, name: &str, args: &[(&str, AMQPValue)]) -> Arc<Queue> {
        let mut arguments = FieldTable::default();
        for (k, v) in args {
            arguments.insert((*k).into(), v.clone());
        }
        args::validate(name, "/", &arguments).expect("valid arguments");
        let settings = QueueSettings { durable: false, exclusive_owner: None, auto_delete: false, arguments };
        let host: Arc<dyn QueueHost> = self.clone();
        let q: Arc<Queue> = ClassicQueue::new(name.into(), &host, settings, None);
        self.queues.lock().unwrap().insert(name.into(), q.clone());
        q
    }
}

impl QueueHost for Host {
    fn name(&self) -> &Arc<str> {
        &self.name
    }
    fn default_consumer_timeout_ms(&self) -> u64 {
        0
    }
    fn route_dead_letter(&self, exchange: &str, _: &RouteRequest<'_>, out: &mut Vec<QueueRef>) -> AmqpResult<Arc<str>> {
        if exchange == "dlx" {
            if let Some(q) = self.queues.lock().unwrap().get("dead") {
                out.push(QueueRef(q.clone()));
            }
        }
        Ok(exchange.into())
    }
    fn delete_queue(&self, queue: &Arc<Queue>) -> u32 {
        self.queues.lock().unwrap().remove(queue.name().as_ref());
        queue.mark_deleted().0
    }
    fn store(&self) -> &Option<StoreHandle> {
        &self.store
    }
}

fn message(body: &str) -> Arc<Message> {
    Arc::new(Message {
        exchange: "".into(),
        routing_key: "k".into(),
        raw_properties: encode_properties(&BasicProperties::default()).into_boxed_slice(),
        body: body.as_bytes().into(),
        persistent: false,
        published_ms: now_ms(),
        ttl: None,
        store: Default::default(),
        charge: Default::default(),
    })
}

fn publish(q: &Arc<Queue>, bodies: &[&str]) {
    for b in bodies {
        assert_eq!(q.publish(message(b)), Enqueued::InMemory);
    }
}

#[test]
fn round_robin_between_consumers_with_credit() {
    let host = Host::new();
    let q = host.declare("q", &[]);
    let (a, b) = (Sink::new(10, true), Sink::new(10, true));
    attach(&q, "a", a.clone(), false).unwrap();
    attach(&q, "b", b.clone(), false).unwrap();
    publish(&q, &["1", "2", "3", "4"]);
    assert_eq!(a.bodies(), ["1", "3"]);
    assert_eq!(b.bodies(), ["2", "4"]);
    assert_eq!(q.message_count(), 0);
}

#[test]
fn messages_wait_for_credit_and_requeues_keep_their_place() {
    let host = Host::new();
    let q = host.declare("q", &[]);
    let c = Sink::new(2, false);
    attach(&q, "c", c.clone(), false).unwrap();
    publish(&q, &["1", "2", "3"]);
    assert_eq!(c.bodies(), ["1", "2"]);
    assert_eq!(q.message_count(), 1, "the third waits for credit");
    c.settle_all(true);
    // Requeued 1 and 2 go back before 3, redelivered; credit 2 takes them again.
    let d = c.delivered.lock().unwrap().clone();
    let got: Vec<_> = d.iter().map(|(_, b, r)| (String::from_utf8_lossy(b).into_owned(), *r)).collect();
    assert_eq!(got[2..], [("1".to_string(), true), ("2".to_string(), true)]);
    c.settle_all(false);
    assert_eq!(c.bodies().last().map(String::as_str), Some("3"));
}

#[test]
fn basic_get_takes_the_head_and_counts_what_is_left() {
    let host = Host::new();
    let q = host.declare("q", &[]);
    publish(&q, &["1", "2"]);
    let mut got = Vec::new();
    assert!(q.get(true, &mut |m, left| got.push((m.message.body.to_vec(), left))));
    assert_eq!(got, [(b"1".to_vec(), 1)]);
    assert_eq!(q.purge(), 1);
    assert!(!q.get(true, &mut |_, _| panic!("empty queue delivered")));
}

#[test]
fn max_length_drops_from_the_head_into_the_dead_letter_exchange() {
    let host = Host::new();
    let dead = host.declare("dead", &[]);
    let q = host.declare(
        "q",
        &[("x-max-length", AMQPValue::LongInt(2)), ("x-dead-letter-exchange", AMQPValue::LongString("dlx".into()))],
    );
    publish(&q, &["1", "2", "3"]);
    assert_eq!(q.message_count(), 2);
    let mut got = Vec::new();
    while dead.get(true, &mut |m, _| got.push(String::from_utf8_lossy(&m.message.body).into_owned())) {}
    assert_eq!(got, ["1"]);
}

#[test]
fn reject_publish_refuses_when_full() {
    let host = Host::new();
    let q = host.declare(
        "q",
        &[("x-max-length", AMQPValue::LongInt(1)), ("x-overflow", AMQPValue::LongString("reject-publish".into()))],
    );
    assert_eq!(q.publish(message("1")), Enqueued::InMemory);
    assert_eq!(q.publish(message("2")), Enqueued::Rejected);
    assert_eq!(q.message_count(), 1);
}

#[test]
fn rejected_deliveries_are_dead_lettered() {
    let host = Host::new();
    let dead = host.declare("dead", &[]);
    let q = host.declare("q", &[("x-dead-letter-exchange", AMQPValue::LongString("dlx".into()))]);
    let c = Sink::new(1, false);
    attach(&q, "c", c.clone(), false).unwrap();
    publish(&q, &["x"]);
    let (queue, m) = c.unacked.lock().unwrap().pop().expect("delivered");
    queue.reject(m);
    let mut headers = None;
    assert!(dead.get(true, &mut |m, _| {
        let props = crate::message::properties::Properties::parse(&m.message.raw_properties).expect("properties");
        headers = props.headers().and_then(Result::ok);
    }));
    let h = headers.expect("x-death headers");
    assert_eq!(h.inner().get("x-first-death-reason"), Some(&AMQPValue::LongString("rejected".into())));
}

#[test]
fn single_active_consumer_delivers_to_one_until_it_leaves() {
    let host = Host::new();
    let q = host.declare("q", &[("x-single-active-consumer", AMQPValue::Boolean(true))]);
    let (a, b) = (Sink::new(10, true), Sink::new(10, true));
    attach(&q, "a", a.clone(), false).unwrap();
    attach(&q, "b", b.clone(), false).unwrap();
    publish(&q, &["1", "2"]);
    assert_eq!(a.bodies(), ["1", "2"]);
    assert!(b.bodies().is_empty());
    assert!(!q.remove_consumer("a", &*a));
    publish(&q, &["3"]);
    assert_eq!(b.bodies(), ["3"]);
}

#[test]
fn exclusive_consumers_exclude_others() {
    let host = Host::new();
    let q = host.declare("q", &[]);
    attach(&q, "a", Sink::new(1, true), true).unwrap();
    let err = attach(&q, "b", Sink::new(1, true), false).unwrap_err();
    assert_eq!(err.reply_code(), 403);
}

#[test]
fn deleting_a_queue_hands_back_its_consumers() {
    let host = Host::new();
    let q = host.declare("q", &[]);
    let c = Sink::new(0, false);
    attach(&q, "c", c.clone(), false).unwrap();
    publish(&q, &["1", "2"]);
    let (ready, orphans) = q.mark_deleted();
    assert_eq!(ready, 2);
    assert_eq!(orphans.iter().map(|o| o.tag.to_string()).collect::<Vec<_>>(), ["c"]);
    assert!(q.is_deleted());
    assert_eq!(q.publish(message("late")), Enqueued::No);
}

/// Attaches a consumer with no arguments (the channel's part done by hand).
fn attach(q: &Arc<Queue>, tag: &str, sink: Arc<dyn ConsumerSink>, exclusive: bool) -> crate::error::AmqpResult<()> {
    let args = FieldTable::default();
    q.add_consumer(NewConsumer {
        tag: tag.into(),
        sink,
        exclusive,
        priority: 0,
        no_ack: false,
        prefetch: 0,
        registered: None,
        arguments: &args,
    })
}
