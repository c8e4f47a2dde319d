//! Client-side helpers shared by the test modules (lapin and amqprs).

#![allow(dead_code)]

use crate::common::{TestBroker, WAIT};
use lapin::{
    options::*, types::FieldTable, BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ErrorKind,
};
use std::future::Future;
use std::time::Duration;

/// Awaits `fut`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

pub async fn connect(broker: &TestBroker) -> Connection {
    within("lapin connect", Connection::connect(broker.url(), ConnectionProperties::default()))
        .await
        .expect("lapin connects")
}

pub async fn channel(conn: &Connection) -> Channel {
    within("channel.open", conn.create_channel()).await.expect("channel opens")
}

/// A connection and one channel on it.
pub async fn open(broker: &TestBroker) -> (Connection, Channel) {
    let conn = connect(broker).await;
    let ch = channel(&conn).await;
    (conn, ch)
}

/// The AMQP reply code carried by a lapin error, if it is a protocol error.
pub fn code(err: &lapin::Error) -> Option<u16> {
    match err.kind() {
        ErrorKind::ProtocolError(e) => Some(e.get_id()),
        _ => None,
    }
}

/// The AMQP reply text carried by a lapin error ("" when it is not a protocol error).
pub fn text(err: &lapin::Error) -> String {
    match err.kind() {
        ErrorKind::ProtocolError(e) => e.get_message().as_str().to_string(),
        _ => String::new(),
    }
}

/// Asserts that `res` failed with a protocol error of `expected` reply code, and that the reply
/// text starts with `prefix` (RabbitMQ texts look like `NOT_FOUND - no queue 'x' in vhost '/'`).
#[track_caller]
pub fn assert_amqp_err<T: std::fmt::Debug>(res: lapin::Result<T>, expected: u16, prefix: &str) {
    match res {
        Ok(v) => panic!("expected AMQP error {expected}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(code(&e), Some(expected), "unexpected error: {e:?}");
            let t = text(&e);
            if std::env::var_os("HAREMQ_TEST_PRINT_ERRORS").is_some() {
                eprintln!("OBSERVED {expected} {t}");
            }
            assert!(t.starts_with(prefix), "reply text {t:?} does not start with {prefix:?}");
        }
    }
}

/// Declares a plain (non-durable, non-exclusive, non-auto-delete) queue.
pub async fn declare_queue(ch: &Channel, name: &str) -> lapin::Queue {
    within("queue.declare", ch.queue_declare(name.into(), QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .expect("queue.declare")
}

pub async fn declare_exchange(ch: &Channel, name: &str, kind: lapin::ExchangeKind) {
    within(
        "exchange.declare",
        ch.exchange_declare(name.into(), kind, ExchangeDeclareOptions::default(), FieldTable::default()),
    )
    .await
    .expect("exchange.declare")
}

pub async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    bind_args(ch, queue, exchange, key, FieldTable::default()).await
}

pub async fn bind_args(ch: &Channel, queue: &str, exchange: &str, key: &str, args: FieldTable) {
    within("queue.bind", ch.queue_bind(queue.into(), exchange.into(), key.into(), QueueBindOptions::default(), args))
        .await
        .expect("queue.bind")
}

/// Publishes without waiting for anything.
pub async fn publish(ch: &Channel, exchange: &str, key: &str, body: &[u8]) {
    publish_props(ch, exchange, key, body, BasicProperties::default()).await
}

pub async fn publish_props(ch: &Channel, exchange: &str, key: &str, body: &[u8], props: BasicProperties) {
    within("basic.publish", ch.basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), body, props))
        .await
        .expect("basic.publish");
}

/// Enables publisher confirms on the channel.
pub async fn confirm_select(ch: &Channel) {
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await.expect("confirm.select");
}

/// Publishes on a channel in confirm mode and waits for the broker's ack, so that the message is
/// known to be routed (enqueued) before the test goes on.
pub async fn publish_confirmed(ch: &Channel, exchange: &str, key: &str, body: &[u8], props: BasicProperties) {
    let confirm = within(
        "basic.publish",
        ch.basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), body, props),
    )
    .await
    .expect("basic.publish");
    let c = within("publisher confirm", confirm).await.expect("confirm");
    assert!(c.is_ack(), "publish was not acked: {c:?}");
}

/// Number of ready messages in a queue, via a passive declare.
pub async fn message_count(ch: &Channel, queue: &str) -> u32 {
    let q = within(
        "passive queue.declare",
        ch.queue_declare(
            queue.into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("passive queue.declare");
    q.message_count()
}

/// basic.get with auto-ack; returns the body, or None for get-empty.
pub async fn get_body(ch: &Channel, queue: &str) -> Option<Vec<u8>> {
    within("basic.get", ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
        .map(|m| m.delivery.data)
}

/// Drains a queue with basic.get (auto-ack) and returns the bodies as strings, in order.
pub async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(b) = get_body(ch, queue).await {
        out.push(String::from_utf8(b).expect("utf-8 body"));
    }
    out
}

pub async fn consume(ch: &Channel, queue: &str, no_ack: bool) -> Consumer {
    within(
        "basic.consume",
        ch.basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions { no_ack, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("basic.consume")
}

/// The next delivery of a consumer; fails the test on timeout, error or cancellation.
pub async fn next_delivery(consumer: &mut Consumer) -> lapin::message::Delivery {
    within("a delivery", next_item(consumer)).await.expect("consumer stream ended (cancelled)").expect("delivery error")
}

/// Asserts that the consumer's stream reports a channel error with `expected` reply code and a
/// reply text starting with `prefix` (lapin forwards the channel.close reason to consumers).
pub async fn assert_consumer_error(consumer: &mut Consumer, expected: u16, prefix: &str) {
    match within("channel error on consumer", next_item(consumer)).await {
        Some(Err(e)) => {
            assert_eq!(code(&e), Some(expected), "unexpected error: {e:?}");
            let t = text(&e);
            assert!(t.starts_with(prefix), "reply text {t:?} does not start with {prefix:?}");
        }
        other => panic!("expected a channel error, got {:?}", other.map(|r| r.map(|d| d.data))),
    }
}

/// Asserts that no delivery arrives within `quiet` (used only to check the *absence* of
/// something after the positive condition has already been established).
pub async fn assert_no_delivery(consumer: &mut Consumer, quiet: Duration) {
    if let Ok(item) = tokio::time::timeout(quiet, next_item(consumer)).await {
        panic!("unexpected delivery/event: {:?}", item.map(|r| r.map(|d| d.data)));
    }
}

async fn next_item(c: &mut Consumer) -> Option<lapin::Result<lapin::message::Delivery>> {
    use smol::stream::StreamExt;
    c.next().await
}

/// Helpers for amqprs.
pub mod rs {
    use super::within;
    use crate::common::TestBroker;
    use amqprs::channel::Channel;
    use amqprs::connection::{Connection, OpenConnectionArguments};

    pub async fn connect(broker: &TestBroker) -> Connection {
        let addr = broker.addr();
        let args = OpenConnectionArguments::new(&addr.ip().to_string(), addr.port(), "guest", "guest");
        within("amqprs connect", Connection::open(&args)).await.expect("amqprs connects")
    }

    pub async fn open(broker: &TestBroker) -> (Connection, Channel) {
        let conn = connect(broker).await;
        let ch = within("amqprs channel.open", conn.open_channel(None)).await.expect("amqprs channel opens");
        (conn, ch)
    }

    /// What the broker told an amqprs channel asynchronously.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Event {
        Close { code: u16, text: String, class_id: u16, method_id: u16 },
        Cancel(String),
        Ack { tag: u64, multiple: bool },
        Nack { tag: u64, multiple: bool },
        Return { code: u16, text: String, exchange: String, routing_key: String, body: Vec<u8> },
    }

    struct Forward(tokio::sync::mpsc::UnboundedSender<Event>);

    #[async_trait::async_trait]
    impl amqprs::callbacks::ChannelCallback for Forward {
        async fn close(&mut self, _: &Channel, c: amqprs::CloseChannel) -> Result<(), amqprs::error::Error> {
            let _ = self.0.send(Event::Close {
                code: c.reply_code(),
                text: c.reply_text().clone(),
                class_id: c.class_id(),
                method_id: c.method_id(),
            });
            Ok(())
        }
        async fn cancel(&mut self, _: &Channel, c: amqprs::Cancel) -> Result<(), amqprs::error::Error> {
            let _ = self.0.send(Event::Cancel(c.consumer_tag().to_string()));
            Ok(())
        }
        async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
            Ok(active)
        }
        async fn publish_ack(&mut self, _: &Channel, a: amqprs::Ack) {
            let _ = self.0.send(Event::Ack { tag: a.delivery_tag(), multiple: a.mutiple() });
        }
        async fn publish_nack(&mut self, _: &Channel, n: amqprs::Nack) {
            let _ = self.0.send(Event::Nack { tag: n.delivery_tag(), multiple: n.multiple() });
        }
        async fn publish_return(&mut self, _: &Channel, r: amqprs::Return, _: amqprs::BasicProperties, body: Vec<u8>) {
            let _ = self.0.send(Event::Return {
                code: r.reply_code(),
                text: r.reply_text().clone(),
                exchange: r.exchange().clone(),
                routing_key: r.routing_key().clone(),
                body,
            });
        }
    }

    /// Registers a callback that forwards the channel's asynchronous events.
    pub async fn events(ch: &Channel) -> tokio::sync::mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        ch.register_callback(Forward(tx)).await.expect("register_callback");
        rx
    }

    pub async fn next_event(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) -> Event {
        within("an amqprs channel event", rx.recv()).await.expect("event channel closed")
    }

    /// Waits until the publishes with sequence numbers `first_tag..=last_tag` have all been
    /// acked (confirm mode; earlier ones must have been waited for already).
    pub async fn wait_acked(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>, first_tag: u64, last_tag: u64) {
        let mut acked = std::collections::BTreeSet::new();
        let mut floor = first_tag - 1;
        while floor < last_tag {
            match next_event(rx).await {
                Event::Ack { tag, multiple: true } => floor = floor.max(tag),
                Event::Ack { tag, multiple: false } => {
                    acked.insert(tag);
                }
                other => panic!("unexpected event while waiting for confirms: {other:?}"),
            }
            while acked.remove(&(floor + 1)) {
                floor += 1;
            }
        }
    }
}
