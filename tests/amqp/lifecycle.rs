//! Queue lifecycle through lapin: x-argument validation, message TTL (queue argument
//! and `expiration` property), x-expires, length limits with every x-overflow mode,
//! dead-lettering with RabbitMQ's x-death headers, cycles, and x-delivery-limit.
//!
//! Timing: TTLs are short (50–300 ms) and every wait polls a condition with a deadline
//! (`WAIT`); fixed pauses only ever confirm the *absence* of something after the
//! positive condition was established.

use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection};

use crate::common::{start_broker, unique, WAIT};
use crate::util::*;

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v.as_bytes().to_vec()))
}

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// Dead-letters to `target` through the default exchange.
fn dlx_to(target: &str) -> Vec<(&'static str, AMQPValue)> {
    vec![("x-dead-letter-exchange", s("")), ("x-dead-letter-routing-key", s(target))]
}

async fn declare(ch: &Channel, name: &str, a: &[(&str, AMQPValue)]) {
    within("queue.declare", ch.queue_declare(name.into(), QueueDeclareOptions::default(), args(a)))
        .await
        .expect("queue.declare");
}

async fn try_declare(conn: &Connection, name: &str, a: &[(&str, AMQPValue)]) -> lapin::Result<lapin::Queue> {
    let ch = channel(conn).await;
    within("queue.declare", ch.queue_declare(name.into(), QueueDeclareOptions::default(), args(a))).await
}

/// Polls the ready count of `queue` until it is `n`.
async fn wait_count(ch: &Channel, queue: &str, n: u32) {
    let deadline = Instant::now() + WAIT;
    loop {
        let c = message_count(ch, queue).await;
        if c == n {
            return;
        }
        assert!(Instant::now() < deadline, "queue {queue} has {c} messages, expected {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// basic.get (auto-ack) of a message that must be there.
async fn get(ch: &Channel, queue: &str) -> lapin::message::BasicGetMessage {
    within("basic.get", ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
        .unwrap_or_else(|| panic!("queue {queue} is empty"))
}

fn header<'a>(props: &'a BasicProperties, key: &str) -> Option<&'a AMQPValue> {
    props.headers().as_ref()?.inner().get(key)
}

fn as_str(v: Option<&AMQPValue>) -> String {
    match v {
        Some(AMQPValue::LongString(l)) => String::from_utf8_lossy(l.as_bytes()).into_owned(),
        other => panic!("expected a longstr, got {other:?}"),
    }
}

fn x_death(props: &BasicProperties) -> Vec<FieldTable> {
    match header(props, "x-death") {
        Some(AMQPValue::FieldArray(a)) => a
            .as_slice()
            .iter()
            .map(|v| match v {
                AMQPValue::FieldTable(t) => t.clone(),
                other => panic!("x-death entry is not a table: {other:?}"),
            })
            .collect(),
        other => panic!("no x-death array: {other:?}"),
    }
}

fn field<'a>(t: &'a FieldTable, k: &str) -> Option<&'a AMQPValue> {
    t.inner().get(k)
}

fn count_of(t: &FieldTable) -> i64 {
    match field(t, "count") {
        Some(AMQPValue::LongLongInt(n)) => *n,
        other => panic!("count is not a long: {other:?}"),
    }
}

async fn confirm_of(ch: &Channel, queue: &str, body: &[u8]) -> lapin::Confirmation {
    let c = within(
        "basic.publish",
        ch.basic_publish("".into(), queue.into(), BasicPublishOptions::default(), body, BasicProperties::default()),
    )
    .await
    .expect("basic.publish");
    within("publisher confirm", c).await.expect("confirm")
}

// ---- x-argument validation ----------------------------------------------------------

#[tokio::test]
async fn invalid_queue_arguments_are_406_with_rabbitmq_texts() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let q = unique("badargs");
    let rs = format!("for queue '{q}' in vhost '/'");
    let cases: Vec<(Vec<(&str, AMQPValue)>, String)> = vec![
        (
            vec![("x-message-ttl", AMQPValue::LongInt(-1))],
            format!("invalid arg 'x-message-ttl' {rs}: {{value_negative,-1}}"),
        ),
        (
            vec![("x-message-ttl", s("1000"))],
            format!("invalid arg 'x-message-ttl' {rs}: \"expected integer, got longstr\""),
        ),
        (
            vec![("x-message-ttl", AMQPValue::Double(1.5))],
            format!("invalid arg 'x-message-ttl' {rs}: \"expected integer, got double\""),
        ),
        (vec![("x-expires", AMQPValue::LongInt(0))], format!("invalid arg 'x-expires' {rs}: {{value_zero,0}}")),
        (
            vec![("x-max-length", AMQPValue::LongLongInt(-5))],
            format!("invalid arg 'x-max-length' {rs}: {{value_negative,-5}}"),
        ),
        (
            vec![("x-max-length-bytes", AMQPValue::Boolean(true))],
            format!("invalid arg 'x-max-length-bytes' {rs}: \"expected integer, got bool\""),
        ),
        (
            vec![("x-overflow", AMQPValue::LongInt(1))],
            format!("invalid arg 'x-overflow' {rs}: {{unacceptable_type,signedint}}"),
        ),
        (
            vec![("x-dead-letter-exchange", s("")), ("x-dead-letter-routing-key", AMQPValue::Boolean(false))],
            format!("invalid arg 'x-dead-letter-routing-key' {rs}: {{unacceptable_type,bool}}"),
        ),
        (vec![("x-overflow", s("drop-tail"))], format!("invalid arg 'x-overflow' {rs}: invalid_overflow")),
        (
            vec![("x-dead-letter-routing-key", s("k"))],
            format!("invalid arg 'x-dead-letter-routing-key' {rs}: routing_key_but_no_dlx_defined"),
        ),
        (
            vec![("x-dead-letter-exchange", AMQPValue::LongInt(1))],
            format!("invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue '{q}' in vhost '/'"),
        ),
    ];
    let mut wrong = Vec::new();
    for (a, text) in cases {
        match try_declare(&conn, &q, &a).await {
            Err(e) if code(&e) == Some(406) && crate::util::text(&e) == format!("PRECONDITION_FAILED - {text}") => {}
            other => {
                wrong.push(format!("{a:?}: expected {text:?}, got {:?}", other.map_err(|e| crate::util::text(&e))))
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Any AMQP integer type is accepted.
    for v in [AMQPValue::ShortShortUInt(5), AMQPValue::ShortInt(5), AMQPValue::LongUInt(5), AMQPValue::LongLongInt(5)] {
        let name = unique("intargs");
        try_declare(&conn, &name, &[("x-max-length", v.clone()), ("x-message-ttl", v)]).await.expect("declare");
        let ch = channel(&conn).await;
        ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await.expect("delete");
    }
}

#[tokio::test]
async fn invalid_expiration_property_is_406() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let q = unique("badexp");
    declare(&channel(&conn).await, &q, &[]).await;
    for (exp, why) in [("abc", "no_integer"), ("-1", "{value_negative,-1}")] {
        let ch = channel(&conn).await;
        confirm_select(&ch).await;
        let props = BasicProperties::default().with_expiration(exp.into());
        let confirm = within(
            "basic.publish",
            ch.basic_publish("".into(), q.as_str().into(), BasicPublishOptions::default(), b"x", props),
        )
        .await
        .expect("publish is async");
        assert_amqp_err(
            within("confirm", confirm).await,
            406,
            &format!("PRECONDITION_FAILED - invalid expiration '{exp}': {why}"),
        );
    }
    let ch = channel(&conn).await;
    assert_eq!(message_count(&ch, &q).await, 0);
}

// ---- TTL ----------------------------------------------------------------------------

#[tokio::test]
async fn queue_ttl_dead_letters_without_any_client_activity() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let q = unique("ttl");
    let dlq = unique("ttl-dlq");
    declare(&ch, &dlq, &[]).await;
    let mut a = dlx_to(&dlq);
    a.push(("x-message-ttl", AMQPValue::LongInt(100)));
    declare(&ch, &q, &a).await;
    confirm_select(&ch).await;
    for i in 0..3 {
        publish_confirmed(&ch, "", &q, format!("m{i}").as_bytes(), BasicProperties::default()).await;
    }
    // Nobody touches `q`: the timer dead-letters its messages.
    wait_count(&ch, &dlq, 3).await;
    assert_eq!(message_count(&ch, &q).await, 0);
    let m = get(&ch, &dlq).await;
    assert_eq!(m.delivery.data, b"m0");
    assert_eq!(m.delivery.exchange.as_str(), "");
    assert_eq!(m.delivery.routing_key.as_str(), dlq);
    let p = &m.delivery.properties;
    let deaths = x_death(p);
    assert_eq!(deaths.len(), 1);
    let d = &deaths[0];
    assert_eq!(count_of(d), 1);
    assert_eq!(as_str(field(d, "reason")), "expired");
    assert_eq!(as_str(field(d, "queue")), q);
    assert_eq!(as_str(field(d, "exchange")), "");
    assert!(matches!(field(d, "time"), Some(AMQPValue::Timestamp(_))));
    assert_eq!(field(d, "routing-keys"), Some(&AMQPValue::FieldArray(FieldArray::from(vec![s(&q)]))));
    assert_eq!(as_str(header(p, "x-first-death-reason")), "expired");
    assert_eq!(as_str(header(p, "x-first-death-queue")), q);
    assert_eq!(as_str(header(p, "x-first-death-exchange")), "");
    if !broker.is_external() {
        // RabbitMQ 3.13 adds these; 3.10 does not.
        assert_eq!(as_str(header(p, "x-last-death-queue")), q);
    }
}

#[tokio::test]
async fn per_message_expiration_and_queue_ttl_lower_wins() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let q = unique("ttl-min");
    let dlq = unique("ttl-min-dlq");
    declare(&ch, &dlq, &[]).await;
    let mut a = dlx_to(&dlq);
    a.push(("x-message-ttl", AMQPValue::LongInt(60_000)));
    declare(&ch, &q, &a).await;
    confirm_select(&ch).await;
    let short = BasicProperties::default().with_expiration("50".into());
    publish_confirmed(&ch, "", &q, b"short", short).await;
    wait_count(&ch, &dlq, 1).await;
    let m = get(&ch, &dlq).await;
    assert_eq!(m.delivery.data, b"short");
    // The per-message TTL is removed on dead-lettering and kept in x-death.
    assert_eq!(m.delivery.properties.expiration(), &None);
    let d = &x_death(&m.delivery.properties)[0];
    assert_eq!(as_str(field(d, "original-expiration")), "50");

    // The queue's lower TTL wins over a long per-message one.
    let q2 = unique("ttl-min2");
    let mut a = dlx_to(&dlq);
    a.push(("x-message-ttl", AMQPValue::LongInt(50)));
    declare(&ch, &q2, &a).await;
    let long = BasicProperties::default().with_expiration("60000".into());
    publish_confirmed(&ch, "", &q2, b"long", long).await;
    wait_count(&ch, &dlq, 1).await;
    assert_eq!(get(&ch, &dlq).await.delivery.data, b"long");
}

#[tokio::test]
async fn expired_messages_are_never_delivered() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let q = unique("ttl-nodeliver");
    declare(&ch, &q, &[]).await;
    confirm_select(&ch).await;
    publish_confirmed(&ch, "", &q, b"gone", BasicProperties::default().with_expiration("30".into())).await;
    publish_confirmed(&ch, "", &q, b"kept", BasicProperties::default()).await;
    // The head expires by itself (no DLX: dropped).
    wait_count(&ch, &q, 1).await;
    let mut c = consume(&ch, &q, true).await;
    assert_eq!(next_delivery(&mut c).await.data, b"kept");
    // TTL 0: delivered to a waiting consumer, otherwise expired at once.
    publish_confirmed(&ch, "", &q, b"now", BasicProperties::default().with_expiration("0".into())).await;
    assert_eq!(next_delivery(&mut c).await.data, b"now");
    let q0 = unique("ttl-zero");
    declare(&ch, &q0, &[]).await;
    publish_confirmed(&ch, "", &q0, b"x", BasicProperties::default().with_expiration("0".into())).await;
    wait_count(&ch, &q0, 0).await;
    assert!(get_body(&ch, &q0).await.is_none());
}

// ---- x-expires -----------------------------------------------------------------------

async fn queue_exists(conn: &Connection, queue: &str) -> bool {
    let ch = channel(conn).await;
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    match within("passive declare", ch.queue_declare(queue.into(), passive, FieldTable::default())).await {
        Ok(_) => true,
        Err(e) if code(&e) == Some(404) => false,
        Err(e) => panic!("passive declare: {e:?}"),
    }
}

/// Waits until `queue` is gone, probing with mandatory publishes (a passive declare
/// would count as use and restart the x-expires period, in RabbitMQ too).
async fn wait_gone(ch: &Channel, queue: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
        let c = within(
            "probe publish",
            ch.basic_publish("".into(), queue.into(), opts, b"probe", BasicProperties::default()),
        )
        .await
        .expect("publish");
        if let lapin::Confirmation::Ack(Some(_)) = within("probe confirm", c).await.expect("confirm") {
            return; // returned: no such queue
        }
        assert!(Instant::now() < deadline, "queue {queue} still exists");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn x_expires_deletes_an_unused_queue_but_not_a_consumed_one() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let probe = channel(&conn).await;
    confirm_select(&probe).await;
    let idle = unique("expires-idle");
    declare(&ch, &idle, &[("x-expires", AMQPValue::LongInt(150))]).await;
    wait_gone(&probe, &idle).await;

    let used = unique("expires-used");
    declare(&ch, &used, &[("x-expires", AMQPValue::LongInt(150))]).await;
    let consumer = consume(&ch, &used, true).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(queue_exists(&conn, &used).await, "a consumed queue must not expire");
    within("cancel", ch.basic_cancel(consumer.tag(), BasicCancelOptions::default())).await.expect("cancel");
    wait_gone(&probe, &used).await;
}

// ---- length limits --------------------------------------------------------------------

#[tokio::test]
async fn max_length_drop_head_dead_letters_with_reason_maxlen() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let q = unique("maxlen");
    let dlq = unique("maxlen-dlq");
    declare(&ch, &dlq, &[]).await;
    let mut a = dlx_to(&dlq);
    a.push(("x-max-length", AMQPValue::ShortShortUInt(2)));
    declare(&ch, &q, &a).await;
    confirm_select(&ch).await;
    for b in ["1", "2", "3", "4"] {
        publish_confirmed(&ch, "", &q, b.as_bytes(), BasicProperties::default()).await;
    }
    wait_count(&ch, &dlq, 2).await;
    assert_eq!(drain(&ch, &q).await, ["3", "4"]);
    let m = get(&ch, &dlq).await;
    assert_eq!(m.delivery.data, b"1");
    assert_eq!(as_str(field(&x_death(&m.delivery.properties)[0], "reason")), "maxlen");

    let qb = unique("maxbytes");
    declare(&ch, &qb, &[("x-max-length-bytes", AMQPValue::LongInt(10))]).await;
    for b in ["aaaaa", "bbbbb", "ccccc"] {
        publish_confirmed(&ch, "", &qb, b.as_bytes(), BasicProperties::default()).await;
    }
    assert_eq!(drain(&ch, &qb).await, ["bbbbb", "ccccc"]);
}

#[tokio::test]
async fn reject_publish_nacks_only_the_refused_publishes() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let q = unique("reject");
    declare(&ch, &q, &[("x-max-length", AMQPValue::LongInt(1)), ("x-overflow", s("reject-publish"))]).await;
    confirm_select(&ch).await;
    assert!(confirm_of(&ch, &q, b"1").await.is_ack());
    assert!(confirm_of(&ch, &q, b"2").await.is_nack());
    assert!(confirm_of(&ch, &q, b"3").await.is_nack());
    assert_eq!(get_body(&ch, &q).await.as_deref(), Some(&b"1"[..]));
    assert!(confirm_of(&ch, &q, b"4").await.is_ack());
    // Pipelined: acks and nacks stay in publish order.
    let mut pending = Vec::new();
    for b in ["5", "6"] {
        pending.push(
            ch.basic_publish(
                "".into(),
                q.as_str().into(),
                BasicPublishOptions::default(),
                b.as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish"),
        );
    }
    for p in pending {
        assert!(within("confirm", p).await.expect("confirm").is_nack());
    }
    assert_eq!(drain(&ch, &q).await, ["4"]);

    // Without confirms the refused message is dropped silently.
    let (_c2, plain) = open(&broker).await;
    publish(&plain, "", &q, b"a").await;
    publish(&plain, "", &q, b"b").await;
    // A method on the publishing channel is answered after both publishes are handled
    // (waiting on another channel raced the second publish).
    assert_eq!(message_count(&plain, &q).await, 1);
    assert_eq!(drain(&ch, &q).await, ["a"]);
}

#[tokio::test]
async fn reject_publish_dlx_nacks_and_dead_letters() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let q = unique("rejectdlx");
    let dlq = unique("rejectdlx-dlq");
    declare(&ch, &dlq, &[]).await;
    let mut a = dlx_to(&dlq);
    a.push(("x-max-length", AMQPValue::LongInt(1)));
    a.push(("x-overflow", s("reject-publish-dlx")));
    declare(&ch, &q, &a).await;
    confirm_select(&ch).await;
    assert!(confirm_of(&ch, &q, b"1").await.is_ack());
    assert!(confirm_of(&ch, &q, b"2").await.is_nack());
    wait_count(&ch, &dlq, 1).await;
    let m = get(&ch, &dlq).await;
    assert_eq!(m.delivery.data, b"2");
    assert_eq!(as_str(field(&x_death(&m.delivery.properties)[0], "reason")), "maxlen");
    assert_eq!(drain(&ch, &q).await, ["1"]);
}

// ---- dead-lettering ----------------------------------------------------------------------

#[tokio::test]
async fn nack_and_reject_dead_letter_with_reason_rejected_to_a_topic_dlx() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let dlx = unique("dlx-topic");
    declare_exchange(&ch, &dlx, lapin::ExchangeKind::Topic).await;
    let dlq = unique("dlx-topic-q");
    declare(&ch, &dlq, &[]).await;
    bind(&ch, &dlq, &dlx, "orders.#").await;
    let q = unique("dlx-src");
    declare(&ch, &q, &[("x-dead-letter-exchange", s(&dlx))]).await;
    // No x-dead-letter-routing-key: the original routing key is kept.
    let src_x = unique("dlx-src-x");
    declare_exchange(&ch, &src_x, lapin::ExchangeKind::Direct).await;
    bind(&ch, &q, &src_x, "orders.eu").await;
    confirm_select(&ch).await;
    publish_confirmed(&ch, &src_x, "orders.eu", b"a", BasicProperties::default()).await;
    publish_confirmed(&ch, &src_x, "orders.eu", b"b", BasicProperties::default()).await;
    let mut c = consume(&ch, &q, false).await;
    let d1 = next_delivery(&mut c).await;
    d1.nack(BasicNackOptions { requeue: false, ..Default::default() }).await.expect("nack");
    let d2 = next_delivery(&mut c).await;
    d2.reject(BasicRejectOptions { requeue: false }).await.expect("reject");
    wait_count(&ch, &dlq, 2).await;
    let m = get(&ch, &dlq).await;
    assert_eq!(m.delivery.data, b"a");
    assert_eq!(m.delivery.exchange.as_str(), dlx);
    assert_eq!(m.delivery.routing_key.as_str(), "orders.eu");
    let d = &x_death(&m.delivery.properties)[0];
    assert_eq!(as_str(field(d, "reason")), "rejected");
    assert_eq!(as_str(field(d, "exchange")), src_x);
    assert_eq!(field(d, "routing-keys"), Some(&AMQPValue::FieldArray(FieldArray::from(vec![s("orders.eu")]))));
    // Requeue=true still requeues.
    publish_confirmed(&ch, &src_x, "orders.eu", b"c", BasicProperties::default()).await;
    let d3 = next_delivery(&mut c).await;
    d3.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("nack");
    let again = next_delivery(&mut c).await;
    assert_eq!(again.data, b"c");
    assert!(again.redelivered);
    again.ack(BasicAckOptions::default()).await.expect("ack");
}

#[tokio::test]
async fn x_death_after_a_double_dead_letter_cycle() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    // work --rejected--> wait --expired (TTL)--> work, twice.
    let work = unique("cycle-work");
    let wait = unique("cycle-wait");
    declare(&ch, &work, &dlx_to(&wait)).await;
    let mut a = dlx_to(&work);
    a.push(("x-message-ttl", AMQPValue::LongInt(50)));
    declare(&ch, &wait, &a).await;
    confirm_select(&ch).await;
    publish_confirmed(&ch, "", &work, b"job", BasicProperties::default()).await;
    let mut c = consume(&ch, &work, false).await;
    for _ in 0..2 {
        let d = next_delivery(&mut c).await;
        d.reject(BasicRejectOptions { requeue: false }).await.expect("reject");
    }
    let d = next_delivery(&mut c).await;
    assert_eq!(d.data, b"job");
    let p = &d.properties;
    let deaths = x_death(p);
    assert_eq!(deaths.len(), 2, "{deaths:?}");
    assert_eq!(as_str(field(&deaths[0], "queue")), wait);
    assert_eq!(as_str(field(&deaths[0], "reason")), "expired");
    assert_eq!(count_of(&deaths[0]), 2);
    assert_eq!(as_str(field(&deaths[1], "queue")), work);
    assert_eq!(as_str(field(&deaths[1], "reason")), "rejected");
    assert_eq!(count_of(&deaths[1]), 2);
    assert_eq!(as_str(header(p, "x-first-death-queue")), work);
    assert_eq!(as_str(header(p, "x-first-death-reason")), "rejected");
    d.ack(BasicAckOptions::default()).await.expect("ack");
}

#[tokio::test]
async fn automatic_dead_letter_cycles_are_dropped() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let q = unique("selfcycle");
    let mut a = dlx_to(&q);
    a.push(("x-message-ttl", AMQPValue::LongInt(50)));
    declare(&ch, &q, &a).await;
    confirm_select(&ch).await;
    publish_confirmed(&ch, "", &q, b"loop", BasicProperties::default()).await;
    wait_count(&ch, &q, 0).await;
    let mut c = consume(&ch, &q, true).await;
    assert_no_delivery(&mut c, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn missing_dead_letter_exchange_drops_the_message() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let q = unique("dlx-missing");
    declare(&ch, &q, &[("x-dead-letter-exchange", s(&unique("no-such-x")))]).await;
    confirm_select(&ch).await;
    publish_confirmed(&ch, "", &q, b"x", BasicProperties::default()).await;
    let m = within("get", ch.basic_get(q.as_str().into(), BasicGetOptions::default()))
        .await
        .expect("get")
        .expect("message");
    m.delivery.reject(BasicRejectOptions { requeue: false }).await.expect("reject");
    // The channel is still usable and the message is gone.
    assert_eq!(message_count(&ch, &q).await, 0);
}

#[tokio::test]
async fn delivery_limit_dead_letters_after_n_requeues() {
    let broker = start_broker();
    if broker.is_external() {
        return; // RabbitMQ 3.10 honours x-delivery-limit on quorum queues only.
    }
    let (_conn, ch) = open(&broker).await;
    let q = unique("dlimit");
    let dlq = unique("dlimit-dlq");
    declare(&ch, &dlq, &[]).await;
    let mut a = dlx_to(&dlq);
    a.push(("x-delivery-limit", AMQPValue::LongInt(2)));
    declare(&ch, &q, &a).await;
    confirm_select(&ch).await;
    publish_confirmed(&ch, "", &q, b"poison", BasicProperties::default()).await;
    let mut c = consume(&ch, &q, false).await;
    for _ in 0..3 {
        let d = next_delivery(&mut c).await;
        assert_eq!(d.data, b"poison");
        d.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("nack");
    }
    wait_count(&ch, &dlq, 1).await;
    let m = get(&ch, &dlq).await;
    assert_eq!(as_str(field(&x_death(&m.delivery.properties)[0], "reason")), "delivery_limit");
    assert_no_delivery(&mut c, Duration::from_millis(100)).await;
}
