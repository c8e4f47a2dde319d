//! Consumer and ordering features through lapin: priority queues (`x-max-priority`),
//! consumer priorities (`x-priority`), single active consumer, consumer timeouts
//! (`x-consumer-timeout`), message deduplication (`x-message-deduplication`).
//!
//! Timing: every wait polls a condition with a deadline (`WAIT`); fixed pauses only
//! confirm the *absence* of something after the positive condition was established.

use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Consumer};

use crate::common::{start_broker, unique, WAIT};
use crate::util::*;

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

async fn declare(ch: &Channel, name: &str, a: &[(&str, AMQPValue)]) {
    within("queue.declare", ch.queue_declare(name.into(), QueueDeclareOptions::default(), args(a)))
        .await
        .expect("queue.declare");
}

async fn publish_prio(ch: &Channel, queue: &str, body: &str, priority: Option<u8>) {
    let mut props = BasicProperties::default();
    if let Some(p) = priority {
        props = props.with_priority(p);
    }
    publish_confirmed(ch, "", queue, body.as_bytes(), props).await;
}

async fn consume_with(ch: &Channel, queue: &str, a: &[(&str, AMQPValue)]) -> Consumer {
    within("basic.consume", ch.basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), args(a)))
        .await
        .expect("basic.consume")
}

async fn qos(ch: &Channel, n: u16) {
    within("basic.qos", ch.basic_qos(n, BasicQosOptions::default())).await.expect("basic.qos");
}

fn body(d: &lapin::message::Delivery) -> String {
    String::from_utf8_lossy(&d.data).into_owned()
}

async fn ack(d: &lapin::message::Delivery) {
    within("basic.ack", d.acker.ack(BasicAckOptions::default())).await.expect("basic.ack");
}

/// Waits for the consumer's stream to end (a server-sent basic.cancel).
async fn wait_cancelled(c: &mut Consumer) {
    use smol::stream::StreamExt;
    match tokio::time::timeout(WAIT, c.next()).await {
        Err(_) => panic!("consumer was not cancelled within {WAIT:?}"),
        Ok(None) => {}
        Ok(Some(Ok(d))) => panic!("unexpected delivery {:?} while waiting for the cancel", body(&d)),
        Ok(Some(Err(e))) => panic!("consumer error {e:?} while waiting for the cancel"),
    }
}

// ---- priority queues ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_queue_delivers_highest_first_fifo_within_a_level() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let q = unique("prio");
    declare(&ch, &q, &[("x-max-priority", AMQPValue::ShortShortUInt(5))]).await;
    // No priority counts as 0; above the max counts as the max.
    for (b, p) in [
        ("none-1", None),
        ("p1-a", Some(1)),
        ("p5-a", Some(5)),
        ("p9-as-5", Some(9)),
        ("p1-b", Some(1)),
        ("none-2", None),
        ("p0", Some(0)),
        ("p5-b", Some(5)),
    ] {
        publish_prio(&ch, &q, b, p).await;
    }
    assert_eq!(message_count(&ch, &q).await, 8);
    assert_eq!(drain(&ch, &q).await, ["p5-a", "p9-as-5", "p5-b", "p1-a", "p1-b", "none-1", "none-2", "p0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_queue_requeue_restores_the_position_within_the_level() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let q = unique("prio-requeue");
    declare(&ch, &q, &[("x-max-priority", AMQPValue::LongInt(10))]).await;
    for (b, p) in [("h1", 7), ("h2", 7), ("l1", 2), ("l2", 2)] {
        publish_prio(&ch, &q, b, Some(p)).await;
    }
    qos(&ch, 3).await;
    let mut c = consume(&ch, &q, false).await;
    let d1 = next_delivery(&mut c).await;
    let d2 = next_delivery(&mut c).await;
    let d3 = next_delivery(&mut c).await;
    assert_eq!([body(&d1), body(&d2), body(&d3)], ["h1", "h2", "l1"]);
    // A higher message arrives while these are out; requeued ones go back in place.
    publish_prio(&ch, &q, "h3", Some(7)).await;
    // (Each nack frees one unit of credit, so one delivery follows each.)
    within("nack", d1.acker.nack(BasicNackOptions { requeue: true, ..Default::default() })).await.expect("nack");
    within("nack", d3.acker.nack(BasicNackOptions { requeue: true, ..Default::default() })).await.expect("nack");
    let mut got = Vec::new();
    for _ in 0..4 {
        let d = next_delivery(&mut c).await;
        got.push((body(&d), d.redelivered));
        ack(&d).await;
    }
    ack(&d2).await;
    assert_eq!(got, [("h1".into(), true), ("h3".into(), false), ("l1".into(), true), ("l2".into(), false)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_queue_with_length_limit_and_ttl() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let q = unique("prio-limits");
    declare(
        &ch,
        &q,
        &[
            ("x-max-priority", AMQPValue::LongInt(3)),
            ("x-max-length", AMQPValue::LongInt(3)),
            ("x-overflow", AMQPValue::LongString(LongString::from("reject-publish"))),
        ],
    )
    .await;
    for (b, p) in [("a", 1), ("b", 3), ("c", 2)] {
        publish_prio(&ch, &q, b, Some(p)).await;
    }
    // Full: refused with a nack.
    let confirm = within(
        "publish",
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b"d",
            BasicProperties::default(),
        ),
    )
    .await
    .expect("publish");
    assert!(within("confirm", confirm).await.expect("confirm").is_nack());
    assert_eq!(drain(&ch, &q).await, ["b", "c", "a"]);
    if broker.is_external() {
        // RabbitMQ expires only the head of the whole queue (documented: expired
        // lower-priority messages get stuck behind higher ones).
        return;
    }
    // A low-priority message with a short TTL behind higher ones still expires.
    let q2 = unique("prio-ttl");
    declare(&ch, &q2, &[("x-max-priority", AMQPValue::LongInt(3))]).await;
    publish_confirmed(&ch, "", &q2, b"long", BasicProperties::default().with_priority(3)).await;
    publish_confirmed(&ch, "", &q2, b"short", BasicProperties::default().with_expiration("50".into())).await;
    let deadline = Instant::now() + WAIT;
    while message_count(&ch, &q2).await != 1 {
        assert!(Instant::now() < deadline, "the expired low-priority message is still there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(drain(&ch, &q2).await, ["long"]);
}

// ---- consumer priorities ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_consumers_get_messages_until_blocked() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let pub_ch = channel(&conn).await;
    confirm_select(&pub_ch).await;
    let q = unique("cprio");
    declare(&pub_ch, &q, &[]).await;
    let (hi_ch, lo_ch) = (channel(&conn).await, channel(&conn).await);
    qos(&hi_ch, 2).await;
    qos(&lo_ch, 10).await;
    let mut lo = consume_with(&lo_ch, &q, &[]).await;
    let mut hi = consume_with(&hi_ch, &q, &[("x-priority", AMQPValue::LongInt(10))]).await;
    for i in 0..5 {
        publish_confirmed(&pub_ch, "", &q, format!("m{i}").as_bytes(), BasicProperties::default()).await;
    }
    // The high-priority consumer takes two (its prefetch), the rest overflow below.
    let h1 = next_delivery(&mut hi).await;
    let h2 = next_delivery(&mut hi).await;
    assert_eq!([body(&h1), body(&h2)], ["m0", "m1"]);
    let mut low = Vec::new();
    for _ in 0..3 {
        let d = next_delivery(&mut lo).await;
        low.push(body(&d));
        ack(&d).await;
    }
    assert_eq!(low, ["m2", "m3", "m4"]);
    // Credit back: the high-priority consumer is preferred again.
    ack(&h1).await;
    ack(&h2).await;
    publish_confirmed(&pub_ch, "", &q, b"m5", BasicProperties::default()).await;
    assert_eq!(body(&next_delivery(&mut hi).await), "m5");
    assert_no_delivery(&mut lo, Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_priority_consumers_share_round_robin() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let q = unique("cprio-rr");
    declare(&ch, &q, &[]).await;
    let p = [("x-priority", AMQPValue::ShortInt(5))];
    let mut a = consume_with(&ch, &q, &p).await;
    let mut b = consume_with(&ch, &q, &p).await;
    let mut low = consume_with(&ch, &q, &[("x-priority", AMQPValue::ShortInt(-1))]).await;
    for i in 0..4 {
        publish_confirmed(&ch, "", &q, format!("m{i}").as_bytes(), BasicProperties::default()).await;
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(body(&next_delivery(&mut a).await));
        got.push(body(&next_delivery(&mut b).await));
    }
    got.sort();
    assert_eq!(got, ["m0", "m1", "m2", "m3"]);
    assert_no_delivery(&mut low, Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_consumer_priority_is_406() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let q = unique("cprio-bad");
    declare(&ch, &q, &[]).await;
    let res = within(
        "basic.consume",
        ch.basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            args(&[("x-priority", AMQPValue::LongString(LongString::from("high")))]),
        ),
    )
    .await;
    assert_amqp_err(res, 406, "PRECONDITION_FAILED - invalid arg 'x-priority'");
}

// ---- single active consumer ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_active_consumer_takes_over_on_cancel_and_on_channel_close() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let pub_ch = channel(&conn).await;
    confirm_select(&pub_ch).await;
    let q = unique("sac");
    declare(&pub_ch, &q, &[("x-single-active-consumer", AMQPValue::Boolean(true))]).await;
    let (ch1, ch2, ch3) = (channel(&conn).await, channel(&conn).await, channel(&conn).await);
    let mut c1 = consume_with(&ch1, &q, &[]).await;
    let mut c2 = consume_with(&ch2, &q, &[]).await;
    let mut c3 = consume_with(&ch3, &q, &[]).await;
    for i in 0..3 {
        publish_confirmed(&pub_ch, "", &q, format!("m{i}").as_bytes(), BasicProperties::default()).await;
    }
    for i in 0..3 {
        let d = next_delivery(&mut c1).await;
        assert_eq!(body(&d), format!("m{i}"));
        ack(&d).await;
    }
    assert_no_delivery(&mut c2, Duration::from_millis(100)).await;
    // Cancel: the next registered consumer takes over.
    within("basic.cancel", ch1.basic_cancel(c1.tag().as_str().into(), BasicCancelOptions::default()))
        .await
        .expect("basic.cancel");
    publish_confirmed(&pub_ch, "", &q, b"m3", BasicProperties::default()).await;
    let d = next_delivery(&mut c2).await;
    assert_eq!(body(&d), "m3");
    // Channel close with an unacked delivery: it is requeued and the next one gets it.
    within("channel.close", ch2.close(200, "bye".into())).await.expect("channel.close");
    let d = next_delivery(&mut c3).await;
    assert_eq!((body(&d), d.redelivered), ("m3".into(), true));
    ack(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_active_consumer_prefers_a_higher_priority_consumer() {
    let broker = start_broker();
    if broker.is_external() {
        // RabbitMQ 3.10 keeps the first consumer active; this is the documented
        // behaviour of later versions (priority-aware single active consumer).
        return;
    }
    let conn = connect(&broker).await;
    let pub_ch = channel(&conn).await;
    confirm_select(&pub_ch).await;
    let q = unique("sac-prio");
    declare(&pub_ch, &q, &[("x-single-active-consumer", AMQPValue::Boolean(true))]).await;
    let (ch1, ch2) = (channel(&conn).await, channel(&conn).await);
    let mut low = consume_with(&ch1, &q, &[]).await;
    publish_confirmed(&pub_ch, "", &q, b"m0", BasicProperties::default()).await;
    let d0 = next_delivery(&mut low).await;
    let mut high = consume_with(&ch2, &q, &[("x-priority", AMQPValue::LongInt(5))]).await;
    publish_confirmed(&pub_ch, "", &q, b"m1", BasicProperties::default()).await;
    // The active consumer still holds m0: nobody gets m1 until it is settled.
    assert_no_delivery(&mut high, Duration::from_millis(100)).await;
    ack(&d0).await;
    assert_eq!(body(&next_delivery(&mut high).await), "m1");
    assert_no_delivery(&mut low, Duration::from_millis(100)).await;
}

// ---- consumer timeout ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_timeout_cancels_requeues_and_keeps_the_channel_open() {
    let broker = start_broker();
    if broker.is_external() {
        // RabbitMQ closes the whole channel (406) instead.
        return;
    }
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    confirm_select(&ch).await;
    let q = unique("ctimeout");
    declare(&ch, &q, &[("x-consumer-timeout", AMQPValue::LongInt(300))]).await;
    publish_confirmed(&ch, "", &q, b"slow", BasicProperties::default()).await;
    let started = Instant::now();
    let mut c = consume(&ch, &q, false).await;
    let d = next_delivery(&mut c).await;
    assert_eq!(body(&d), "slow");
    wait_cancelled(&mut c).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "cancelled early: {:?}", started.elapsed());
    // The channel is still usable; a late ack of the requeued delivery is ignored.
    ack(&d).await;
    let other = channel(&conn).await;
    let mut c2 = consume(&other, &q, false).await;
    let d2 = next_delivery(&mut c2).await;
    assert_eq!((body(&d2), d2.redelivered), ("slow".into(), true));
    ack(&d2).await;
    publish_confirmed(&ch, "", &q, b"after", BasicProperties::default()).await;
    assert_eq!(body(&next_delivery(&mut c2).await), "after");
    assert_eq!(message_count(&ch, &q).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_timeout_from_config_and_acking_in_time_is_fine() {
    let broker = crate::common::start_broker_with(|c| c.consumer_timeout_ms = 400);
    if broker.is_external() {
        return;
    }
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let q = unique("ctimeout-cfg");
    declare(&ch, &q, &[]).await;
    let quick = unique("ctimeout-off");
    declare(&ch, &quick, &[("x-consumer-timeout", AMQPValue::LongInt(0))]).await;
    publish_confirmed(&ch, "", &q, b"a", BasicProperties::default()).await;
    publish_confirmed(&ch, "", &quick, b"b", BasicProperties::default()).await;
    let mut c = consume(&ch, &q, false).await;
    let mut kept = consume(&ch, &quick, false).await;
    let _held = next_delivery(&mut c).await;
    let held_too = next_delivery(&mut kept).await;
    wait_cancelled(&mut c).await;
    // x-consumer-timeout 0 disables it for that queue: still consuming.
    publish_confirmed(&ch, "", &quick, b"c", BasicProperties::default()).await;
    assert_eq!(body(&next_delivery(&mut kept).await), "c");
    ack(&held_too).await;
    assert_eq!(message_count(&ch, &q).await, 1);
}

// ---- deduplication -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deduplication_drops_duplicates_and_confirms_them() {
    let broker = start_broker();
    if broker.is_external() {
        // A plugin RabbitMQ does not ship.
        return;
    }
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let q = unique("dedup");
    declare(&ch, &q, &[("x-message-deduplication", AMQPValue::Boolean(true)), ("x-cache-size", AMQPValue::LongInt(2))])
        .await;
    let with_header = |k: &str| {
        let mut h = FieldTable::default();
        h.insert("x-deduplication-header".into(), AMQPValue::LongString(LongString::from(k)));
        BasicProperties::default().with_headers(h)
    };
    let with_id = |k: &str| BasicProperties::default().with_message_id(k.into());
    // Each publish is confirmed with an ack, duplicate or not.
    publish_confirmed(&ch, "", &q, b"a1", with_header("a")).await;
    publish_confirmed(&ch, "", &q, b"a2", with_header("a")).await;
    publish_confirmed(&ch, "", &q, b"m1", with_id("m")).await;
    publish_confirmed(&ch, "", &q, b"m2", with_id("m")).await;
    publish_confirmed(&ch, "", &q, b"plain1", BasicProperties::default()).await;
    publish_confirmed(&ch, "", &q, b"plain2", BasicProperties::default()).await;
    // The cache holds 2 keys: "a" and "m"; a third evicts "a".
    publish_confirmed(&ch, "", &q, b"x1", with_header("x")).await;
    publish_confirmed(&ch, "", &q, b"a3", with_header("a")).await;
    publish_confirmed(&ch, "", &q, b"x2", with_header("x")).await;
    assert_eq!(drain(&ch, &q).await, ["a1", "m1", "plain1", "plain2", "x1", "a3"]);
    // Consumed keys are still remembered.
    publish_confirmed(&ch, "", &q, b"a4", with_header("a")).await;
    assert_eq!(message_count(&ch, &q).await, 0);
}

// ---- argument validation -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_queue_arguments_are_406() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let cases: Vec<(&str, AMQPValue, &str)> = vec![
        ("x-max-priority", AMQPValue::LongInt(256), "{max_value_exceeded,256}"),
        ("x-max-priority", AMQPValue::LongInt(-1), "{value_negative,-1}"),
        ("x-single-active-consumer", AMQPValue::LongString(LongString::from("yes")), "{unacceptable_type,longstr}"),
    ];
    for (k, v, why) in cases {
        let ch = channel(&conn).await;
        let q = unique("badarg");
        let res = within(
            "queue.declare",
            ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), args(&[(k, v)])),
        )
        .await;
        assert_amqp_err(
            res,
            406,
            &format!("PRECONDITION_FAILED - invalid arg '{k}' for queue '{q}' in vhost '/': {why}"),
        );
    }
    if broker.is_external() {
        return;
    }
    let cases: Vec<(&str, AMQPValue)> = vec![
        ("x-consumer-timeout", AMQPValue::LongInt(-5)),
        ("x-message-deduplication", AMQPValue::LongInt(1)),
        ("x-cache-size", AMQPValue::LongInt(0)),
    ];
    for (k, v) in cases {
        let ch = channel(&conn).await;
        let q = unique("badarg");
        let res = within(
            "queue.declare",
            ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), args(&[(k, v)])),
        )
        .await;
        assert_amqp_err(res, 406, &format!("PRECONDITION_FAILED - invalid arg '{k}' for queue '{q}'"));
    }
}
