//! Consumers, acknowledgements, prefetch, basic.get, cancel and recover.

use crate::common::{start_broker, unique, WAIT};
use crate::util::*;
use lapin::{options::*, types::FieldTable, BasicProperties, Channel};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Polls the ready-message count of `queue` until it equals `n` (requeues after a channel
/// closes happen asynchronously in RabbitMQ).
async fn wait_message_count(ch: &Channel, queue: &str, n: u32) {
    let deadline = Instant::now() + WAIT;
    loop {
        let c = message_count(ch, queue).await;
        if c == n {
            return;
        }
        assert!(Instant::now() < deadline, "queue {queue} has {c} ready messages, expected {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn publish_n(ch: &Channel, queue: &str, n: usize) {
    for i in 0..n {
        publish_confirmed(ch, "", queue, format!("m{i}").as_bytes(), BasicProperties::default()).await;
    }
}

/// A queue plus a confirm-mode channel to publish into it.
async fn setup(conn: &lapin::Connection) -> (Channel, String) {
    let ch = channel(conn).await;
    confirm_select(&ch).await;
    let q = unique("cq");
    declare_queue(&ch, &q).await;
    (ch, q)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_delivers_in_order_with_increasing_tags() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let (pch, q) = setup(&conn).await;
    publish_n(&pch, &q, 3).await;
    let ch = channel(&conn).await;
    let mut consumer = within(
        "basic.consume",
        ch.basic_consume(q.as_str().into(), "my-tag".into(), BasicConsumeOptions::default(), FieldTable::default()),
    )
    .await
    .expect("consume");
    assert_eq!(consumer.tag().as_str(), "my-tag");
    for i in 0..3u64 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.data, format!("m{i}").as_bytes());
        assert_eq!(d.delivery_tag, i + 1);
        assert_eq!(d.exchange.as_str(), "");
        assert_eq!(d.routing_key.as_str(), q);
        assert!(!d.redelivered);
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    // Acked messages are gone; a server-generated consumer tag looks like RabbitMQ's.
    wait_message_count(&pch, &q, 0).await;
    let c2 = consume(&ch, &q, true).await;
    assert!(c2.tag().as_str().starts_with("amq.ctag-"), "generated tag {:?}", c2.tag());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_get_messages_round_robin() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let (pch, q) = setup(&conn).await;
    let ch1 = channel(&conn).await;
    let ch2 = channel(&conn).await;
    let mut c1 = consume(&ch1, &q, true).await;
    let mut c2 = consume(&ch2, &q, true).await;
    publish_n(&pch, &q, 6).await;
    let mut got1 = Vec::new();
    let mut got2 = Vec::new();
    for _ in 0..3 {
        got1.push(String::from_utf8(next_delivery(&mut c1).await.data).unwrap());
        got2.push(String::from_utf8(next_delivery(&mut c2).await.data).unwrap());
    }
    let even = vec!["m0", "m2", "m4"];
    let odd = vec!["m1", "m3", "m5"];
    assert!((got1 == even && got2 == odd) || (got1 == odd && got2 == even), "not round-robin: {got1:?} / {got2:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_caps_unacked_deliveries() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let (pch, q) = setup(&conn).await;
    publish_n(&pch, &q, 5).await;
    let ch = channel(&conn).await;
    within("basic.qos", ch.basic_qos(2, BasicQosOptions::default())).await.expect("qos");
    let mut consumer = consume(&ch, &q, false).await;
    let d1 = next_delivery(&mut consumer).await;
    let d2 = next_delivery(&mut consumer).await;
    assert_eq!((d1.data.as_slice(), d2.data.as_slice()), (&b"m0"[..], &b"m1"[..]));
    // Exactly two are out: the other three stay ready in the queue.
    assert_eq!(message_count(&pch, &q).await, 3);
    assert_no_delivery(&mut consumer, Duration::from_millis(300)).await;
    assert_eq!(message_count(&pch, &q).await, 3);

    d1.ack(BasicAckOptions::default()).await.expect("ack");
    let d3 = next_delivery(&mut consumer).await;
    assert_eq!(d3.data, b"m2");
    assert_no_delivery(&mut consumer, Duration::from_millis(200)).await;
    // Acking two at once with `multiple` frees two slots.
    d3.ack(BasicAckOptions { multiple: true }).await.expect("ack multiple");
    let d4 = next_delivery(&mut consumer).await;
    let d5 = next_delivery(&mut consumer).await;
    assert_eq!((d4.data.as_slice(), d5.data.as_slice()), (&b"m3"[..], &b"m4"[..]));
    d5.ack(BasicAckOptions { multiple: true }).await.expect("ack multiple");
    wait_message_count(&pch, &q, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_and_reject_with_requeue_redeliver_with_redelivered_flag() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let (pch, q) = setup(&conn).await;
    publish_n(&pch, &q, 1).await;
    let ch = channel(&conn).await;
    let mut consumer = consume(&ch, &q, false).await;
    let d = next_delivery(&mut consumer).await;
    assert!(!d.redelivered);
    d.nack(BasicNackOptions { multiple: false, requeue: true }).await.expect("nack");
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data, b"m0");
    assert!(d.redelivered, "requeued message must be flagged redelivered");
    assert_eq!(d.delivery_tag, 2);
    d.reject(BasicRejectOptions { requeue: true }).await.expect("reject");
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data, b"m0");
    assert!(d.redelivered);
    assert_eq!(d.delivery_tag, 3);
    // Cancel the consumer and requeue once more: the message goes back to the queue.
    within("basic.cancel", ch.basic_cancel(consumer.tag(), BasicCancelOptions::default())).await.expect("cancel");
    d.nack(BasicNackOptions { multiple: false, requeue: true }).await.expect("nack");
    wait_message_count(&pch, &q, 1).await;
    let m = within("basic.get", pch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("get")
        .expect("message back in the queue");
    assert!(m.delivery.redelivered);
    assert_eq!(m.delivery.data, b"m0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_and_nack_without_requeue_drop_the_message() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let (pch, q) = setup(&conn).await;
    publish_n(&pch, &q, 2).await;
    let ch = channel(&conn).await;
    let mut consumer = consume(&ch, &q, false).await;
    let d0 = next_delivery(&mut consumer).await;
    let d1 = next_delivery(&mut consumer).await;
    d0.reject(BasicRejectOptions { requeue: false }).await.expect("reject");
    d1.nack(BasicNackOptions { multiple: false, requeue: false }).await.expect("nack");
    // Closing the channel would requeue anything still unacked: nothing is.
    within("channel.close", ch.close(200, "bye".into())).await.expect("close");
    assert_eq!(message_count(&pch, &q).await, 0);
    assert_eq!(get_body(&pch, &q).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_multiple_then_close_requeues_only_the_rest() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let (pch, q) = setup(&conn).await;
    publish_n(&pch, &q, 5).await;
    let ch = channel(&conn).await;
    let mut consumer = consume(&ch, &q, false).await;
    let mut tags = Vec::new();
    for _ in 0..5 {
        tags.push(next_delivery(&mut consumer).await.delivery_tag);
    }
    assert_eq!(tags, vec![1, 2, 3, 4, 5]);
    within("basic.ack", ch.basic_ack(3, BasicAckOptions { multiple: true })).await.expect("ack multiple");
    within("channel.close", ch.close(200, "bye".into())).await.expect("close");
    wait_message_count(&pch, &q, 2).await;
    let mut rest = Vec::new();
    while let Some(m) =
        within("basic.get", pch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })).await.expect("get")
    {
        assert!(m.delivery.redelivered);
        rest.push(String::from_utf8(m.delivery.data).unwrap());
    }
    assert_eq!(rest, vec!["m3", "m4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_of_unknown_delivery_tag_closes_channel_406() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let (_pch, q) = setup(&conn).await;
    let ch = channel(&conn).await;
    // The channel error arrives asynchronously (basic.ack has no reply); lapin hands the
    // channel.close reason to the channel's consumers.
    let mut consumer = consume(&ch, &q, false).await;
    within("basic.ack", ch.basic_ack(99, BasicAckOptions::default())).await.expect("ack is async");
    assert_consumer_error(&mut consumer, 406, "PRECONDITION_FAILED - unknown delivery tag 99").await;
    assert!(!ch.status().connected());
    // Other channels on the connection are unaffected.
    let ch2 = channel(&conn).await;
    declare_queue(&ch2, &unique("after-406")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_ack_closes_channel_406() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let (pch, q) = setup(&conn).await;
    publish_n(&pch, &q, 1).await;
    let ch = channel(&conn).await;
    let mut consumer = consume(&ch, &q, false).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.delivery_tag, 1);
    within("basic.ack", ch.basic_ack(1, BasicAckOptions::default())).await.expect("ack");
    within("basic.ack", ch.basic_ack(1, BasicAckOptions::default())).await.expect("ack is async");
    assert_consumer_error(&mut consumer, 406, "PRECONDITION_FAILED - unknown delivery tag 1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_on_no_ack_consumer_delivery_is_406() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let (pch, q) = setup(&conn).await;
    publish_n(&pch, &q, 1).await;
    let ch = channel(&conn).await;
    let mut consumer = consume(&ch, &q, true).await;
    let d = next_delivery(&mut consumer).await;
    within("basic.ack", ch.basic_ack(d.delivery_tag, BasicAckOptions::default())).await.expect("ack is async");
    assert_consumer_error(&mut consumer, 406, "PRECONDITION_FAILED - unknown delivery tag 1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_and_get_empty() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let (pch, q) = setup(&conn).await;
    let ch = channel(&conn).await;
    assert!(within("basic.get", ch.basic_get(q.as_str().into(), BasicGetOptions::default()))
        .await
        .expect("get-empty")
        .is_none());
    publish_n(&pch, &q, 2).await;
    let m = within("basic.get", ch.basic_get(q.as_str().into(), BasicGetOptions::default()))
        .await
        .expect("get")
        .expect("message");
    assert_eq!(m.delivery.data, b"m0");
    assert_eq!(m.message_count, 1, "get-ok message_count is the number left");
    assert_eq!(m.delivery.delivery_tag, 1);
    assert!(!m.delivery.redelivered);
    assert_eq!(m.delivery.routing_key.as_str(), q);
    m.delivery.ack(BasicAckOptions::default()).await.expect("ack");
    let m = within("basic.get", ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("get")
        .expect("message");
    assert_eq!(m.delivery.data, b"m1");
    assert_eq!(m.message_count, 0);
    assert_eq!(m.delivery.delivery_tag, 2);
    assert!(within("basic.get", ch.basic_get(q.as_str().into(), BasicGetOptions::default()))
        .await
        .expect("get-empty")
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_from_missing_queue_is_404() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let q = unique("nope");
    let res = within("basic.get", ch.basic_get(q.as_str().into(), BasicGetOptions::default())).await;
    assert_amqp_err(res, 404, &format!("NOT_FOUND - no queue '{q}' in vhost '/'"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_cancel_stops_deliveries() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let (pch, q) = setup(&conn).await;
    let ch = channel(&conn).await;
    let mut consumer = consume(&ch, &q, true).await;
    publish_n(&pch, &q, 1).await;
    assert_eq!(next_delivery(&mut consumer).await.data, b"m0");
    within("basic.cancel", ch.basic_cancel(consumer.tag(), BasicCancelOptions::default())).await.expect("cancel");
    // The consumer stream ends after cancel-ok.
    let end = within("consumer end", smol::stream::StreamExt::next(&mut consumer)).await;
    assert!(end.is_none(), "stream should end after cancel, got {:?}", end.map(|r| r.map(|d| d.data)));
    publish_n(&pch, &q, 1).await;
    let passive = within(
        "passive declare",
        pch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("declare");
    assert_eq!((passive.message_count(), passive.consumer_count()), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_a_consumer_tag_on_a_channel_is_connection_error_530() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let (_pch, q) = setup(&conn).await;
    let ch = channel(&conn).await;
    let _c = within(
        "basic.consume",
        ch.basic_consume(q.as_str().into(), "dup".into(), BasicConsumeOptions::default(), FieldTable::default()),
    )
    .await
    .expect("consume");
    let res = within(
        "basic.consume",
        ch.basic_consume(q.as_str().into(), "dup".into(), BasicConsumeOptions::default(), FieldTable::default()),
    )
    .await;
    assert_amqp_err(res, 530, "NOT_ALLOWED - attempt to reuse consumer tag 'dup'");
    // 530 is a hard error: the whole connection is closed.
    let fresh = connect(&broker).await;
    declare_queue(&channel(&fresh).await, &unique("after-530")).await;
    assert!(within("channel on closed connection", conn.create_channel()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_consumer_blocks_other_consumers_403() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let (_pch, q) = setup(&conn).await;
    let ch = channel(&conn).await;
    let _c = within(
        "basic.consume",
        ch.basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("exclusive consume");
    let ch2 = channel(&conn).await;
    let res = within(
        "basic.consume",
        ch2.basic_consume(q.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()),
    )
    .await;
    assert_amqp_err(res, 403, &format!("ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_queue_cancels_its_consumers() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let (pch, q) = setup(&conn).await;
    let ch = channel(&conn).await;
    let mut consumer = consume(&ch, &q, false).await;
    within("queue.delete", pch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())).await.expect("delete");
    // RabbitMQ sends basic.cancel (consumer_cancel_notify); lapin ends the consumer stream.
    let end = within("server-sent basic.cancel", smol::stream::StreamExt::next(&mut consumer)).await;
    assert!(end.is_none(), "expected end of stream, got {:?}", end.map(|r| r.map(|d| d.data)));
    // The channel itself stays open.
    assert!(ch.status().connected());
    declare_queue(&ch, &unique("still-open")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_gets_server_cancel_when_queue_deleted() {
    use amqprs::channel::{BasicConsumeArguments, QueueDeclareArguments, QueueDeleteArguments};
    let broker = start_broker();
    let (conn, ch) = rs::open(&broker).await;
    let mut events = rs::events(&ch).await;
    let q = unique("rs-cancel");
    within("declare", ch.queue_declare(QueueDeclareArguments::new(&q))).await.expect("declare");
    let (tag, _rx) =
        within("consume", ch.basic_consume_rx(BasicConsumeArguments::new(&q, "rs-ctag"))).await.expect("consume");
    assert_eq!(tag, "rs-ctag");
    let ch2 = within("channel", conn.open_channel(None)).await.expect("channel");
    within("delete", ch2.queue_delete(QueueDeleteArguments::new(&q))).await.expect("delete");
    assert_eq!(rs::next_event(&mut events).await, rs::Event::Cancel("rs-ctag".into()));
    conn.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_are_requeued_when_the_channel_closes() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let (pch, q) = setup(&conn).await;
    publish_n(&pch, &q, 3).await;
    let ch = channel(&conn).await;
    let mut consumer = consume(&ch, &q, false).await;
    for _ in 0..3 {
        next_delivery(&mut consumer).await;
    }
    assert_eq!(message_count(&pch, &q).await, 0);
    within("channel.close", ch.close(200, "bye".into())).await.expect("close");
    wait_message_count(&pch, &q, 3).await;
    let ch2 = channel(&conn).await;
    let mut consumer = consume(&ch2, &q, true).await;
    for i in 0..3 {
        let d = next_delivery(&mut consumer).await;
        assert_eq!(d.data, format!("m{i}").as_bytes(), "requeued in original order");
        assert!(d.redelivered);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_are_requeued_when_the_connection_closes() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let (pch, q) = setup(&conn).await;
    publish_n(&pch, &q, 2).await;
    let other = connect(&broker).await;
    let ch = channel(&other).await;
    let mut consumer = consume(&ch, &q, false).await;
    next_delivery(&mut consumer).await;
    next_delivery(&mut consumer).await;
    within("connection.close", other.close(200, "bye".into())).await.expect("close");
    wait_message_count(&pch, &q, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_recover_requeue_redelivers_unacked() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let (pch, q) = setup(&conn).await;
    publish_n(&pch, &q, 2).await;
    let ch = channel(&conn).await;
    let mut consumer = consume(&ch, &q, false).await;
    let d1 = next_delivery(&mut consumer).await;
    let d2 = next_delivery(&mut consumer).await;
    assert_eq!((d1.delivery_tag, d2.delivery_tag), (1, 2));
    within("basic.recover", ch.basic_recover(BasicRecoverOptions { requeue: true })).await.expect("recover");
    let mut seen = BTreeSet::new();
    for _ in 0..2 {
        let d = next_delivery(&mut consumer).await;
        assert!(d.redelivered, "recovered message must be redelivered");
        assert!(d.delivery_tag > 2, "new delivery tag expected, got {}", d.delivery_tag);
        seen.insert(String::from_utf8(d.data.clone()).unwrap());
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    assert_eq!(seen, BTreeSet::from(["m0".to_string(), "m1".to_string()]));
    wait_message_count(&pch, &q, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_consume_with_manual_ack_and_prefetch() {
    use amqprs::channel::{
        BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, ConfirmSelectArguments,
        QueueDeclareArguments,
    };
    let broker = start_broker();
    let (conn, ch) = rs::open(&broker).await;
    let mut events = rs::events(&ch).await;
    within("confirm", ch.confirm_select(ConfirmSelectArguments::default())).await.expect("confirm");
    let q = unique("rs-consume");
    within("declare", ch.queue_declare(QueueDeclareArguments::new(&q))).await.expect("declare");
    for i in 0..3 {
        ch.basic_publish(Default::default(), format!("rs{i}").into_bytes(), BasicPublishArguments::new("", &q))
            .await
            .expect("publish");
    }
    rs::wait_acked(&mut events, 1, 3).await;

    let cch = within("channel", conn.open_channel(None)).await.expect("channel");
    within("qos", cch.basic_qos(BasicQosArguments::new(0, 1, false))).await.expect("qos");
    let (_tag, mut rx) =
        within("consume", cch.basic_consume_rx(BasicConsumeArguments::new(&q, "").manual_ack(true).finish()))
            .await
            .expect("consume");
    for i in 0..3u64 {
        let msg = within("amqprs delivery", rx.recv()).await.expect("delivery");
        let deliver = msg.deliver.expect("deliver");
        assert_eq!(msg.content.expect("content"), format!("rs{i}").into_bytes());
        assert_eq!(deliver.delivery_tag(), i + 1);
        assert!(!deliver.redelivered());
        // With prefetch 1 nothing else is in flight until this ack.
        if i < 2 {
            assert!(tokio::time::timeout(Duration::from_millis(200), rx.recv()).await.is_err(), "prefetch 1 exceeded");
        }
        cch.basic_ack(BasicAckArguments::new(deliver.delivery_tag(), false)).await.expect("ack");
    }
    conn.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeued_message_goes_back_to_its_original_position() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let (pch, q) = setup(&conn).await;
    publish_n(&pch, &q, 3).await;
    let ch = channel(&conn).await;
    let m = within("basic.get", ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: false }))
        .await
        .expect("get")
        .expect("message");
    assert_eq!(m.delivery.data, b"m0");
    assert_eq!(m.message_count, 2);
    m.delivery.nack(BasicNackOptions { multiple: false, requeue: true }).await.expect("nack");
    wait_message_count(&pch, &q, 3).await;
    let mut order = Vec::new();
    while let Some(m) =
        within("basic.get", ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })).await.expect("get")
    {
        order.push((String::from_utf8(m.delivery.data).unwrap(), m.delivery.redelivered));
    }
    assert_eq!(order, vec![("m0".to_string(), true), ("m1".to_string(), false), ("m2".to_string(), false)]);
}
