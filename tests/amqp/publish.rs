//! Publishing: confirms, mandatory returns, properties, large and empty bodies.

use crate::common::{start_broker, unique};
use crate::util::*;
use lapin::{
    options::*,
    types::{AMQPValue, DecimalValue, FieldArray, FieldTable},
    BasicProperties, Confirmation, ExchangeKind,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_publish_is_confirmed() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let q = unique("confirms");
    declare_queue(&ch, &q).await;
    let mut pending = Vec::with_capacity(1000);
    for i in 0..1000u32 {
        let c = within(
            "basic.publish",
            ch.basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                &i.to_be_bytes(),
                BasicProperties::default(),
            ),
        )
        .await
        .expect("publish");
        pending.push(c);
    }
    for (i, c) in pending.into_iter().enumerate() {
        let c = within("publisher confirm", c).await.expect("confirm");
        assert_eq!(c, Confirmation::Ack(None), "publish #{i}");
    }
    assert_eq!(message_count(&ch, &q).await, 1000);
    // Confirms also cover unroutable (non-mandatory) messages: they are acked, not returned.
    publish_confirmed(&ch, "", &unique("nowhere"), b"x", BasicProperties::default()).await;
    let returned = within("wait_for_confirms", ch.wait_for_confirms()).await.expect("wait");
    assert!(returned.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_every_publish_is_confirmed() {
    use amqprs::channel::{BasicPublishArguments, ConfirmSelectArguments, QueueDeclareArguments};
    let broker = start_broker();
    let (conn, ch) = rs::open(&broker).await;
    let mut events = rs::events(&ch).await;
    within("confirm", ch.confirm_select(ConfirmSelectArguments::default())).await.expect("confirm");
    let q = unique("rs-confirms");
    within("declare", ch.queue_declare(QueueDeclareArguments::new(&q))).await.expect("declare");
    for i in 0..1000u32 {
        ch.basic_publish(Default::default(), i.to_be_bytes().to_vec(), BasicPublishArguments::new("", &q))
            .await
            .expect("publish");
    }
    rs::wait_acked(&mut events, 1, 1000).await;
    let (_, count, _) = within("passive", ch.queue_declare(QueueDeclareArguments::new(&q).passive(true).finish()))
        .await
        .expect("declare")
        .expect("declare-ok");
    assert_eq!(count, 1000);
    conn.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mandatory_unroutable_is_returned_with_312_no_route() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let ex = unique("mandatory");
    declare_exchange(&ch, &ex, ExchangeKind::Direct).await;
    let props = BasicProperties::default().with_message_id("mid-1".into());
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            ex.as_str().into(),
            "no-binding".into(),
            BasicPublishOptions { mandatory: true, immediate: false },
            b"bounce",
            props.clone(),
        ),
    )
    .await
    .expect("publish");
    let confirmation = within("confirm", confirm).await.expect("confirm");
    // RabbitMQ sends basic.return before the basic.ack for the same message.
    assert!(confirmation.is_ack(), "unroutable mandatory message is still acked: {confirmation:?}");
    let ret = confirmation.take_message().expect("a basic.return");
    assert_eq!(ret.reply_code, 312);
    assert_eq!(ret.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(ret.delivery.exchange.as_str(), ex);
    assert_eq!(ret.delivery.routing_key.as_str(), "no-binding");
    assert_eq!(ret.delivery.data, b"bounce");
    assert_eq!(ret.delivery.properties, props);

    // The default exchange with a missing queue name behaves the same.
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            "".into(),
            unique("no-such-queue").as_str().into(),
            BasicPublishOptions { mandatory: true, immediate: false },
            b"bounce2",
            BasicProperties::default(),
        ),
    )
    .await
    .expect("publish");
    let ret = within("confirm", confirm).await.expect("confirm").take_message().expect("returned");
    assert_eq!((ret.reply_code, ret.reply_text.as_str()), (312, "NO_ROUTE"));

    // A routable mandatory message is not returned.
    let q = unique("routable");
    declare_queue(&ch, &q).await;
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions { mandatory: true, immediate: false },
            b"ok",
            BasicProperties::default(),
        ),
    )
    .await
    .expect("publish");
    assert_eq!(within("confirm", confirm).await.expect("confirm"), Confirmation::Ack(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_mandatory_return() {
    use amqprs::channel::{BasicPublishArguments, ConfirmSelectArguments};
    let broker = start_broker();
    let (conn, ch) = rs::open(&broker).await;
    let mut events = rs::events(&ch).await;
    within("confirm", ch.confirm_select(ConfirmSelectArguments::default())).await.expect("confirm");
    let key = unique("rs-nowhere");
    ch.basic_publish(
        Default::default(),
        b"rs-bounce".to_vec(),
        BasicPublishArguments::new("amq.direct", &key).mandatory(true).finish(),
    )
    .await
    .expect("publish");
    assert_eq!(
        rs::next_event(&mut events).await,
        rs::Event::Return {
            code: 312,
            text: "NO_ROUTE".into(),
            exchange: "amq.direct".into(),
            routing_key: key.clone(),
            body: b"rs-bounce".to_vec(),
        }
    );
    assert_eq!(rs::next_event(&mut events).await, rs::Event::Ack { tag: 1, multiple: false });
    conn.close().await.expect("close");
}

fn full_properties() -> BasicProperties {
    let mut inner = FieldTable::default();
    inner.insert("deep".into(), AMQPValue::LongString("value".into()));
    inner.insert("n".into(), AMQPValue::LongLongInt(-1_234_567_890_123));
    let mut headers = FieldTable::default();
    headers.insert("string".into(), AMQPValue::LongString("hello wörld".into()));
    headers.insert("bool".into(), AMQPValue::Boolean(true));
    headers.insert("i8".into(), AMQPValue::ShortShortInt(-8));
    headers.insert("u8".into(), AMQPValue::ShortShortUInt(200));
    headers.insert("i16".into(), AMQPValue::ShortInt(-1600));
    headers.insert("u16".into(), AMQPValue::ShortUInt(60000));
    headers.insert("i32".into(), AMQPValue::LongInt(-320_000));
    headers.insert("u32".into(), AMQPValue::LongUInt(4_000_000_000));
    headers.insert("i64".into(), AMQPValue::LongLongInt(i64::MIN));
    headers.insert("f32".into(), AMQPValue::Float(1.5));
    headers.insert("f64".into(), AMQPValue::Double(-2.25));
    headers.insert("decimal".into(), AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 12345 }));
    headers.insert("timestamp".into(), AMQPValue::Timestamp(1_700_000_000));
    headers.insert("void".into(), AMQPValue::Void);
    headers.insert("bytes".into(), AMQPValue::ByteArray(vec![0u8, 1, 2, 255].into()));
    headers.insert(
        "array".into(),
        AMQPValue::FieldArray(FieldArray::from(vec![
            AMQPValue::LongString("a".into()),
            AMQPValue::LongInt(2),
            AMQPValue::FieldTable(inner.clone()),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Boolean(false)])),
        ])),
    );
    headers.insert("table".into(), AMQPValue::FieldTable(inner));
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(headers)
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-42".into())
        .with_reply_to("reply-queue".into())
        .with_expiration("600000".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_600_000_000)
        .with_type("my.type".into())
        .with_user_id("guest".into())
        .with_app_id("haremq-tests".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_and_headers_round_trip_exactly() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let q = unique("props");
    declare_queue(&ch, &q).await;
    let props = full_properties();
    publish_confirmed(&ch, "", &q, b"{}", props.clone()).await;
    // Via a consumer...
    let cch = channel(&_conn).await;
    let mut consumer = consume(&cch, &q, false).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.properties, props);
    assert_eq!(d.data, b"{}");
    d.reject(BasicRejectOptions { requeue: true }).await.expect("reject");
    let d = next_delivery(&mut consumer).await;
    assert!(d.redelivered);
    assert_eq!(d.properties, props, "properties unchanged after requeue");
    within("cancel", cch.basic_cancel(consumer.tag(), BasicCancelOptions::default())).await.expect("cancel");
    d.nack(BasicNackOptions { multiple: false, requeue: true }).await.expect("nack");
    // ...and via basic.get.
    let m = loop {
        if let Some(m) =
            within("basic.get", ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true })).await.expect("get")
        {
            break m;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(m.delivery.properties, props);

    // No properties at all stays no properties.
    publish_confirmed(&ch, "", &q, b"bare", BasicProperties::default()).await;
    let m = within("basic.get", ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("get")
        .expect("message");
    assert_eq!(m.delivery.properties, BasicProperties::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_properties_round_trip() {
    use amqprs::channel::{
        BasicConsumeArguments, BasicPublishArguments, ConfirmSelectArguments, QueueDeclareArguments,
    };
    use amqprs::{BasicProperties, FieldTable, FieldValue};
    let broker = start_broker();
    let (conn, ch) = rs::open(&broker).await;
    let mut events = rs::events(&ch).await;
    within("confirm", ch.confirm_select(ConfirmSelectArguments::default())).await.expect("confirm");
    let q = unique("rs-props");
    within("declare", ch.queue_declare(QueueDeclareArguments::new(&q))).await.expect("declare");
    let mut headers = FieldTable::new();
    headers.insert("k".try_into().unwrap(), FieldValue::S("v".try_into().unwrap()));
    headers.insert("n".try_into().unwrap(), FieldValue::I(-5));
    headers.insert("b".try_into().unwrap(), FieldValue::t(true));
    let props = BasicProperties::default()
        .with_content_type("text/plain")
        .with_correlation_id("c-1")
        .with_reply_to("r-q")
        .with_message_id("m-1")
        .with_timestamp(1234567)
        .with_message_type("t")
        .with_app_id("app")
        .with_priority(3)
        .with_persistence(true)
        .with_expiration("60000")
        .with_headers(headers.clone())
        .finish();
    ch.basic_publish(props, b"rs-body".to_vec(), BasicPublishArguments::new("", &q)).await.expect("publish");
    rs::wait_acked(&mut events, 1, 1).await;
    let (_tag, mut rx) =
        within("consume", ch.basic_consume_rx(BasicConsumeArguments::new(&q, "").finish())).await.expect("consume");
    let msg = within("delivery", rx.recv()).await.expect("delivery");
    let p = msg.basic_properties.expect("properties");
    assert_eq!(p.content_type().map(String::as_str), Some("text/plain"));
    assert_eq!(p.correlation_id().map(String::as_str), Some("c-1"));
    assert_eq!(p.reply_to().map(String::as_str), Some("r-q"));
    assert_eq!(p.message_id().map(String::as_str), Some("m-1"));
    assert_eq!(p.timestamp(), Some(1234567));
    assert_eq!(p.message_type().map(String::as_str), Some("t"));
    assert_eq!(p.app_id().map(String::as_str), Some("app"));
    assert_eq!(p.priority(), Some(3));
    assert_eq!(p.delivery_mode(), Some(2));
    assert_eq!(p.expiration().map(String::as_str), Some("60000"));
    assert_eq!(p.headers(), Some(&headers));
    assert_eq!(msg.content.expect("content"), b"rs-body");
    conn.close().await.expect("close");
}

async fn round_trip_body(len: usize) {
    let broker = start_broker();
    let (conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let q = unique("body");
    declare_queue(&ch, &q).await;
    let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    publish_confirmed(&ch, "", &q, &body, BasicProperties::default()).await;
    let cch = channel(&conn).await;
    let mut consumer = consume(&cch, &q, true).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data.len(), len);
    assert!(d.data == body, "body of {len} bytes corrupted");
    within("cancel", cch.basic_cancel(consumer.tag(), BasicCancelOptions::default())).await.expect("cancel");
    publish_confirmed(&ch, "", &q, &body, BasicProperties::default()).await;
    let got = get_body(&ch, &q).await.expect("message via basic.get");
    assert!(got == body, "body of {len} bytes corrupted via basic.get");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_body_round_trips() {
    round_trip_body(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_at_frame_boundaries_round_trips() {
    // RabbitMQ negotiates frame_max 131072: a body frame carries at most 131064 bytes.
    for len in [1, 131_063, 131_064, 131_065, 262_128, 262_129] {
        round_trip_body(len).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mebibyte_body_round_trips() {
    round_trip_body(1 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_id_matching_login_is_accepted() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let q = unique("uid");
    declare_queue(&ch, &q).await;
    publish_confirmed(&ch, "", &q, b"x", BasicProperties::default().with_user_id("guest".into())).await;
    let m = within("get", ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("get")
        .expect("message");
    assert_eq!(m.delivery.properties.user_id().as_ref().map(|s| s.as_str()), Some("guest"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_id_different_from_login_closes_channel_406() {
    let broker = start_broker();
    let (conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let q = unique("uid-bad");
    declare_queue(&ch, &q).await;
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            "".into(),
            q.as_str().into(),
            BasicPublishOptions::default(),
            b"spoofed",
            BasicProperties::default().with_user_id("bob".into()),
        ),
    )
    .await
    .expect("publish is async");
    let res = within("confirm", confirm).await;
    assert_amqp_err(res, 406, "PRECONDITION_FAILED - user_id property set to 'bob' but authenticated user was 'guest'");
    let ch2 = channel(&conn).await;
    assert_eq!(message_count(&ch2, &q).await, 0, "the spoofed message was not enqueued");
}

/// A channel that keeps publishing with the same exchange and key follows topology
/// changes made by another connection between its publishes (HareMQ caches the last
/// route per channel; this is the test that the cache never serves a stale one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_publishes_follow_topology_changes() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let (_admin_conn, admin) = open(&broker).await;
    confirm_select(&ch).await;
    let x = unique("route-cache-x");
    let (a, b) = (unique("route-cache-a"), unique("route-cache-b"));
    declare_exchange(&admin, &x, ExchangeKind::Direct).await;
    declare_queue(&admin, &a).await;
    declare_queue(&admin, &b).await;
    bind(&admin, &a, &x, "k").await;
    publish_confirmed(&ch, &x, "k", b"1", BasicProperties::default()).await;
    // Rebind: the same key now leads to b only.
    within("queue.unbind", admin.queue_unbind(a.as_str().into(), x.as_str().into(), "k".into(), FieldTable::default()))
        .await
        .expect("queue.unbind");
    bind(&admin, &b, &x, "k").await;
    publish_confirmed(&ch, &x, "k", b"2", BasicProperties::default()).await;
    // Delete and redeclare b: its bindings went with it, so this one is unroutable.
    within("queue.delete", admin.queue_delete(b.as_str().into(), QueueDeleteOptions::default()))
        .await
        .expect("queue.delete");
    declare_queue(&admin, &b).await;
    publish_confirmed(&ch, &x, "k", b"3", BasicProperties::default()).await;
    bind(&admin, &b, &x, "k").await;
    publish_confirmed(&ch, &x, "k", b"4", BasicProperties::default()).await;
    // The default exchange: the queue a key names is looked up again after a redeclare.
    publish_confirmed(&ch, "", &a, b"5", BasicProperties::default()).await;
    within("queue.delete", admin.queue_delete(a.as_str().into(), QueueDeleteOptions::default()))
        .await
        .expect("queue.delete");
    declare_queue(&admin, &a).await;
    publish_confirmed(&ch, "", &a, b"6", BasicProperties::default()).await;
    assert_eq!(drain(&admin, &a).await, vec!["6"]);
    assert_eq!(drain(&admin, &b).await, vec!["4"]);
    // The exchange itself deleted: the next publish to it is a 404 channel error.
    within("exchange.delete", admin.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default()))
        .await
        .expect("exchange.delete");
    let res = ch
        .basic_publish(x.as_str().into(), "k".into(), BasicPublishOptions::default(), b"7", BasicProperties::default())
        .await;
    let res = match res {
        Ok(confirm) => within("publisher confirm", confirm).await,
        Err(e) => Err(e),
    };
    assert_amqp_err(res, 404, "NOT_FOUND - no exchange");
}
