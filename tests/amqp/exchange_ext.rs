//! Routing extensions: alternate exchanges, CC/BCC (sender-selected distribution), the
//! consistent-hash exchange and the delayed-message exchange.
//!
//! The AE and CC/BCC tests also pass against RabbitMQ 3.10; the consistent-hash and
//! delayed-message ones need plugins the reference node lacks, so they return early
//! against an external broker.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lapin::message::BasicReturnMessage;
use lapin::options::*;
use lapin::types::{AMQPValue, FieldArray, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

use crate::common::{start_broker, unique};
use crate::util::*;

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn s(v: &str) -> AMQPValue {
    AMQPValue::LongString(v.into())
}

fn strings(vs: &[&str]) -> AMQPValue {
    AMQPValue::FieldArray(FieldArray::from(vs.iter().map(|v| s(v)).collect::<Vec<_>>()))
}

async fn declare_exchange_args(ch: &Channel, name: &str, kind: ExchangeKind, a: FieldTable) -> lapin::Result<()> {
    within("exchange.declare", ch.exchange_declare(name.into(), kind, ExchangeDeclareOptions::default(), a)).await
}

/// Publishes (the channel must be in confirm mode) and waits for the confirm; returns
/// the basic.return that preceded it, if any.
async fn publish_mandatory(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Option<BasicReturnMessage> {
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions { mandatory: true, immediate: false },
            body,
            props,
        ),
    )
    .await
    .expect("basic.publish");
    let c = within("publisher confirm", confirm).await.expect("confirm");
    assert!(c.is_ack(), "not acked: {c:?}");
    c.take_message()
}

fn headers(pairs: &[(&str, AMQPValue)]) -> BasicProperties {
    BasicProperties::default().with_headers(args(pairs))
}

// ---- alternate exchanges -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternate_exchange_takes_unroutable_messages() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let (main, ae) = (unique("ae-main"), unique("ae-fanout"));
    let (q_main, q_ae) = (unique("ae-q-main"), unique("ae-q-unrouted"));
    declare_exchange(&ch, &ae, ExchangeKind::Fanout).await;
    declare_exchange_args(&ch, &main, ExchangeKind::Direct, args(&[("alternate-exchange", s(&ae))]))
        .await
        .expect("declare with alternate-exchange");
    declare_queue(&ch, &q_main).await;
    declare_queue(&ch, &q_ae).await;
    bind(&ch, &q_main, &main, "known").await;
    bind(&ch, &q_ae, &ae, "").await;

    // Routable: the AE is not involved.
    assert!(publish_mandatory(&ch, &main, "known", b"routed", BasicProperties::default()).await.is_none());
    // Unroutable: the AE routes it, so mandatory does not return it.
    let props = BasicProperties::default().with_message_id("m-1".into());
    assert!(publish_mandatory(&ch, &main, "unknown", b"via-ae", props.clone()).await.is_none());
    assert_eq!(drain(&ch, &q_main).await, ["routed"]);
    let got = within("basic.get", ch.basic_get(q_ae.as_str().into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
        .expect("a message in the AE's queue");
    assert_eq!(got.delivery.data, b"via-ae");
    // The delivery names the exchange and key it was published with.
    assert_eq!(got.delivery.exchange.as_str(), main);
    assert_eq!(got.delivery.routing_key.as_str(), "unknown");
    assert_eq!(got.delivery.properties, props);

    // Once the AE routes nowhere either, mandatory returns the message.
    within("queue.unbind", ch.queue_unbind(q_ae.as_str().into(), ae.as_str().into(), "".into(), FieldTable::default()))
        .await
        .expect("unbind");
    let ret = publish_mandatory(&ch, &main, "unknown", b"bounce", BasicProperties::default())
        .await
        .expect("returned when the AE routes nowhere");
    assert_eq!((ret.reply_code, ret.reply_text.as_str()), (312, "NO_ROUTE"));
    assert_eq!(ret.delivery.exchange.as_str(), main);
    assert_eq!(ret.delivery.data, b"bounce");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternate_exchanges_chain_and_loops_end() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let (a, b, c) = (unique("ae-a"), unique("ae-b"), unique("ae-c"));
    // a → b → c → a: a cycle of alternates, none with bindings yet.
    declare_exchange_args(&ch, &a, ExchangeKind::Direct, args(&[("alternate-exchange", s(&b))])).await.unwrap();
    declare_exchange_args(&ch, &b, ExchangeKind::Topic, args(&[("alternate-exchange", s(&c))])).await.unwrap();
    declare_exchange_args(&ch, &c, ExchangeKind::Direct, args(&[("alternate-exchange", s(&a))])).await.unwrap();
    let ret = publish_mandatory(&ch, &a, "x.y", b"loop", BasicProperties::default()).await;
    assert_eq!(ret.expect("returned: the AE loop routes nowhere").reply_code, 312);

    // The last alternate in the chain routes it.
    let qc = unique("ae-qc");
    declare_queue(&ch, &qc).await;
    bind(&ch, &qc, &c, "x.y").await;
    assert!(publish_mandatory(&ch, &a, "x.y", b"to-c", BasicProperties::default()).await.is_none());
    assert_eq!(drain(&ch, &qc).await, ["to-c"]);

    // An earlier one that matches takes precedence.
    let qb = unique("ae-qb");
    declare_queue(&ch, &qb).await;
    bind(&ch, &qb, &b, "x.*").await;
    assert!(publish_mandatory(&ch, &a, "x.y", b"to-b", BasicProperties::default()).await.is_none());
    assert_eq!(drain(&ch, &qb).await, ["to-b"]);
    assert!(drain(&ch, &qc).await.is_empty());

    // An alternate that does not exist is ignored.
    let lone = unique("ae-missing");
    declare_exchange_args(&ch, &lone, ExchangeKind::Fanout, args(&[("alternate-exchange", s(&unique("nope")))]))
        .await
        .unwrap();
    let ret = publish_mandatory(&ch, &lone, "k", b"nowhere", BasicProperties::default()).await;
    assert_eq!(ret.expect("returned").reply_code, 312);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alternate_exchange_must_match_on_redeclare() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let x = unique("ae-redeclare");
    declare_exchange_args(&ch, &x, ExchangeKind::Direct, args(&[("alternate-exchange", s("one"))])).await.unwrap();
    // Same arguments: fine.
    declare_exchange_args(&ch, &x, ExchangeKind::Direct, args(&[("alternate-exchange", s("one"))])).await.unwrap();
    let res = declare_exchange_args(&ch, &x, ExchangeKind::Direct, args(&[("alternate-exchange", s("two"))])).await;
    let text = format!(
        "PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '{x}' in vhost '/': received 'two' but current is 'one'"
    );
    assert_amqp_err(res, 406, &text);
    let ch = channel(&conn).await;
    let res = declare_exchange_args(&ch, &x, ExchangeKind::Direct, FieldTable::default()).await;
    let text = format!(
        "PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange '{x}' in vhost '/': received none but current is the value 'one' of type 'longstr'"
    );
    assert_amqp_err(res, 406, &text);
    // A non-string alternate-exchange is refused.
    let ch = channel(&conn).await;
    let x = unique("ae-int");
    let res =
        declare_exchange_args(&ch, &x, ExchangeKind::Direct, args(&[("alternate-exchange", AMQPValue::LongInt(5))]))
            .await;
    let text = format!(
        "PRECONDITION_FAILED - invalid type 'signedint' for arg 'alternate-exchange' in exchange '{x}' in vhost '/'"
    );
    assert_amqp_err(res, 406, &text);
}

// ---- CC / BCC ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cc_and_bcc_add_routing_keys_and_bcc_is_removed() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let x = unique("cc-direct");
    declare_exchange(&ch, &x, ExchangeKind::Direct).await;
    let qs: Vec<String> = (0..4).map(|i| unique(&format!("cc-q{i}"))).collect();
    for (i, q) in qs.iter().enumerate() {
        declare_queue(&ch, q).await;
        bind(&ch, q, &x, &format!("k{i}")).await;
    }
    // k0 is the routing key, k1 via CC, k2 via BCC (and k0 again via CC: no duplicate).
    let props = headers(&[
        ("CC", strings(&["k1", "k0", "no-such-key"])),
        ("BCC", strings(&["k2"])),
        ("other", AMQPValue::LongInt(7)),
    ])
    .with_content_type("text/plain".into())
    .with_priority(3);
    assert!(publish_mandatory(&ch, &x, "k0", b"sel", props).await.is_none());
    for q in &qs[..3] {
        let got = within("basic.get", ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }))
            .await
            .expect("basic.get")
            .unwrap_or_else(|| panic!("{q} got the message"));
        assert_eq!(got.delivery.data, b"sel");
        assert_eq!(got.delivery.routing_key.as_str(), "k0");
        let p = &got.delivery.properties;
        let h = p.headers().as_ref().expect("headers kept").inner();
        assert!(h.contains_key("CC"), "CC is delivered");
        assert!(!h.contains_key("BCC"), "BCC is removed before delivery");
        assert_eq!(h.get("other"), Some(&AMQPValue::LongInt(7)));
        assert_eq!(p.content_type().as_ref().map(|c| c.as_str()), Some("text/plain"));
        assert_eq!(*p.priority(), Some(3));
        assert!(get_body(&ch, q).await.is_none(), "{q} got it once");
    }
    assert!(drain(&ch, &qs[3]).await.is_empty());

    // Without BCC the properties come back exactly as sent.
    let props =
        headers(&[("CC", strings(&["k3"])), ("z", s("last")), ("a", s("first"))]).with_message_id("cc-2".into());
    assert!(publish_mandatory(&ch, &x, "k1", b"cc-only", props.clone()).await.is_none());
    for q in [&qs[1], &qs[3]] {
        let got = within("basic.get", ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }))
            .await
            .expect("basic.get")
            .expect("delivered");
        assert_eq!(got.delivery.properties, props);
    }

    // A BCC-only match still counts as routed for mandatory; nothing at all returns it.
    assert!(publish_mandatory(&ch, &x, "none", b"bcc", headers(&[("BCC", strings(&["k3"]))])).await.is_none());
    assert_eq!(drain(&ch, &qs[3]).await, ["bcc"]);
    let ret = publish_mandatory(&ch, &x, "none", b"lost", headers(&[("CC", strings(&["nope"]))])).await;
    assert_eq!(ret.expect("returned").reply_code, 312);

    // The default exchange routes CC keys to the queues they name.
    let props = headers(&[("CC", strings(&[&qs[2]])), ("BCC", strings(&[&qs[3]]))]);
    assert!(publish_mandatory(&ch, "", &qs[1], b"dflt", props).await.is_none());
    for q in &qs[1..] {
        assert_eq!(drain(&ch, q).await, ["dflt"], "{q}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cc_topic_routes_each_key() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let x = unique("cc-topic");
    declare_exchange(&ch, &x, ExchangeKind::Topic).await;
    let (qa, qb) = (unique("cc-ta"), unique("cc-tb"));
    declare_queue(&ch, &qa).await;
    declare_queue(&ch, &qb).await;
    bind(&ch, &qa, &x, "a.*").await;
    bind(&ch, &qb, &x, "b.#").await;
    let props = headers(&[("CC", strings(&["b.x.y", "a.z"]))]);
    assert!(publish_mandatory(&ch, &x, "c.c", b"t", props).await.is_none());
    assert_eq!(drain(&ch, &qa).await, ["t"]);
    assert_eq!(drain(&ch, &qb).await, ["t"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cc_of_the_wrong_type_is_406() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let q = unique("cc-bad");
    declare_queue(&ch, &q).await;
    let mut consumer = consume(&ch, &q, true).await;
    publish_props(&ch, "", &q, b"x", headers(&[("CC", s("not-an-array"))])).await;
    let text = "PRECONDITION_FAILED - invalid message: {unacceptable_type_in_header,\"CC\",longstr}";
    assert_consumer_error(&mut consumer, 406, text).await;
}

// ---- consistent hash -----------------------------------------------------------------

/// Drains `queues` with basic.get; body → queue index.
async fn where_did_they_go(ch: &Channel, queues: &[String]) -> HashMap<String, usize> {
    let mut at = HashMap::new();
    for (i, q) in queues.iter().enumerate() {
        for body in drain(ch, q).await {
            assert!(at.insert(body.clone(), i).is_none(), "{body} delivered twice");
        }
    }
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_spreads_by_weight_and_is_stable() {
    let broker = start_broker();
    if broker.is_external() {
        return; // needs the rabbitmq_consistent_hash_exchange plugin
    }
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let x = unique("chx");
    declare_exchange(&ch, &x, ExchangeKind::Custom("x-consistent-hash".into())).await;
    let qs: Vec<String> = (0..3).map(|i| unique(&format!("chx-q{i}"))).collect();
    for (q, weight) in qs.iter().zip(["1", "1", "2"]) {
        declare_queue(&ch, q).await;
        bind(&ch, q, &x, weight).await;
    }
    let n = 800;
    for i in 0..n {
        publish_confirmed(&ch, &x, &format!("key-{i}"), format!("m{i}").as_bytes(), BasicProperties::default()).await;
    }
    let first = where_did_they_go(&ch, &qs).await;
    assert_eq!(first.len(), n, "every message went to exactly one queue");
    let mut per_queue = [0usize; 3];
    for i in first.values() {
        per_queue[*i] += 1;
    }
    // Shares 1/4, 1/4, 1/2: each queue gets a fair part, the weight-2 one the most.
    assert!(per_queue.iter().all(|&c| c > n / 10), "spread {per_queue:?}");
    assert!(per_queue[2] > per_queue[0] && per_queue[2] > per_queue[1], "weights {per_queue:?}");

    // The same key always lands on the same queue.
    for i in 0..n {
        publish_confirmed(&ch, &x, &format!("key-{i}"), format!("again{i}").as_bytes(), BasicProperties::default())
            .await;
    }
    let second = where_did_they_go(&ch, &qs).await;
    for i in 0..n {
        assert_eq!(second[&format!("again{i}")], first[&format!("m{i}")], "key-{i} moved");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_on_header_and_property() {
    let broker = start_broker();
    if broker.is_external() {
        return;
    }
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let xh = unique("chx-header");
    declare_exchange_args(
        &ch,
        &xh,
        ExchangeKind::Custom("x-consistent-hash".into()),
        args(&[("hash-header", s("shard"))]),
    )
    .await
    .unwrap();
    let xp = unique("chx-prop");
    declare_exchange_args(
        &ch,
        &xp,
        ExchangeKind::Custom("x-consistent-hash".into()),
        args(&[("hash-property", s("message_id"))]),
    )
    .await
    .unwrap();
    let qs: Vec<String> = (0..4).map(|i| unique(&format!("chx-hq{i}"))).collect();
    for q in &qs {
        declare_queue(&ch, q).await;
        bind(&ch, q, &xh, "1").await;
        bind(&ch, q, &xp, "1").await;
    }
    // Same header value, different routing keys: one queue per header value.
    for shard in 0..20 {
        for k in 0..3 {
            let props = headers(&[("shard", s(&format!("s{shard}")))]);
            publish_confirmed(&ch, &xh, &format!("rk{k}"), format!("h{shard}-{k}").as_bytes(), props).await;
        }
    }
    let at = where_did_they_go(&ch, &qs).await;
    assert_eq!(at.len(), 60);
    for shard in 0..20 {
        let q0 = at[&format!("h{shard}-0")];
        assert!((1..3).all(|k| at[&format!("h{shard}-{k}")] == q0), "shard {shard} split");
    }
    assert!(at.values().collect::<std::collections::HashSet<_>>().len() > 1, "all shards in one queue");
    // Same message_id, different routing keys.
    for id in 0..20 {
        for k in 0..3 {
            let props = BasicProperties::default().with_message_id(format!("id{id}").into());
            publish_confirmed(&ch, &xp, &format!("rk{k}"), format!("p{id}-{k}").as_bytes(), props).await;
        }
    }
    let at = where_did_they_go(&ch, &qs).await;
    assert_eq!(at.len(), 60);
    for id in 0..20 {
        let q0 = at[&format!("p{id}-0")];
        assert!((1..3).all(|k| at[&format!("p{id}-{k}")] == q0), "message id {id} split");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_invalid_arguments() {
    let broker = start_broker();
    if broker.is_external() {
        return;
    }
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let x = unique("chx-bad");
    declare_exchange(&ch, &x, ExchangeKind::Custom("x-consistent-hash".into())).await;
    let q = unique("chx-bad-q");
    declare_queue(&ch, &q).await;
    for weight in ["abc", "0", "-3", ""] {
        let ch = channel(&conn).await;
        let res = within(
            "queue.bind",
            ch.queue_bind(
                q.as_str().into(),
                x.as_str().into(),
                weight.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            ),
        )
        .await;
        assert_amqp_err(res, 406, "PRECONDITION_FAILED - The binding key must be");
    }
    let ch = channel(&conn).await;
    let res = declare_exchange_args(
        &ch,
        &unique("chx-prop-bad"),
        ExchangeKind::Custom("x-consistent-hash".into()),
        args(&[("hash-property", s("app_id"))]),
    )
    .await;
    assert_amqp_err(res, 406, "PRECONDITION_FAILED - Unsupported property");
    let ch = channel(&conn).await;
    let res = declare_exchange_args(
        &ch,
        &unique("chx-both"),
        ExchangeKind::Custom("x-consistent-hash".into()),
        args(&[("hash-property", s("message_id")), ("hash-header", s("h"))]),
    )
    .await;
    assert_amqp_err(res, 406, "PRECONDITION_FAILED - hash-header and hash-property are mutually exclusive");
}

// ---- delayed messages ----------------------------------------------------------------

fn delayed_args(kind: &str) -> FieldTable {
    args(&[("x-delayed-type", s(kind))])
}

fn delay(ms: i64) -> BasicProperties {
    headers(&[("x-delay", AMQPValue::LongLongInt(ms))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_arrive_in_due_order() {
    let broker = start_broker();
    if broker.is_external() {
        return; // needs the rabbitmq_delayed_message_exchange plugin
    }
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let x = unique("delayed");
    declare_exchange_args(&ch, &x, ExchangeKind::Custom("x-delayed-message".into()), delayed_args("direct"))
        .await
        .expect("declare x-delayed-message");
    let q = unique("delayed-q");
    declare_queue(&ch, &q).await;
    bind(&ch, &q, &x, "k").await;
    let mut consumer = consume(&ch, &q, true).await;

    // Published latest-due first; also a zero, a negative and an absent delay (immediate).
    let start = Instant::now();
    let plan: [(&str, Option<i64>); 6] = [
        ("d900", Some(900)),
        ("d600", Some(600)),
        ("d300", Some(300)),
        ("now", None),
        ("zero", Some(0)),
        ("neg", Some(-5)),
    ];
    for (body, ms) in plan {
        let props = ms.map(delay).unwrap_or_default();
        publish_confirmed(&ch, &x, "k", body.as_bytes(), props).await;
    }
    let mut order = Vec::new();
    for _ in 0..plan.len() {
        let d = next_delivery(&mut consumer).await;
        let body = String::from_utf8(d.data.clone()).unwrap();
        if let Some(ms) = body.strip_prefix('d') {
            let ms: u64 = ms.parse().unwrap();
            assert!(
                start.elapsed() >= Duration::from_millis(ms),
                "{body} arrived after {:?}, before its delay",
                start.elapsed()
            );
            // The x-delay header is delivered as published.
            let h = d.properties.headers().as_ref().expect("headers").inner();
            assert_eq!(h.get("x-delay"), Some(&AMQPValue::LongLongInt(ms as i64)));
        }
        order.push(body);
    }
    assert_eq!(order, ["now", "zero", "neg", "d300", "d600", "d900"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_route_as_the_delayed_type() {
    let broker = start_broker();
    if broker.is_external() {
        return;
    }
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let x = unique("delayed-topic");
    declare_exchange_args(&ch, &x, ExchangeKind::Custom("x-delayed-message".into()), delayed_args("topic"))
        .await
        .unwrap();
    let (qa, qb) = (unique("delayed-ta"), unique("delayed-tb"));
    declare_queue(&ch, &qa).await;
    declare_queue(&ch, &qb).await;
    bind(&ch, &qa, &x, "orders.*").await;
    bind(&ch, &qb, &x, "#.eu").await;
    let mut ca = consume(&ch, &qa, true).await;
    let mut cb = consume(&ch, &qb, true).await;
    // Mandatory is ignored for delayed messages: an unroutable one is not returned.
    assert!(publish_mandatory(&ch, &x, "nothing.here", b"lost", delay(200)).await.is_none());
    assert!(publish_mandatory(&ch, &x, "orders.eu", b"both", delay(250)).await.is_none());
    // Many messages due close together, published in reverse: all arrive, in due order.
    // They are pipelined (confirms awaited afterwards) so they reach the broker within one
    // or two reads, and their delays are fixed from one base, so client-side hiccups do
    // not reorder their due times.
    let base = Instant::now() + Duration::from_millis(1500);
    let mut confirms = Vec::new();
    for i in (0..50u64).rev() {
        let due = base + Duration::from_millis(i * 10);
        let ms = due.saturating_duration_since(Instant::now()).as_millis() as i64;
        assert!(ms > 0, "publishing took too long to test ordering");
        let c = ch
            .basic_publish(
                x.as_str().into(),
                "orders.us".into(),
                BasicPublishOptions::default(),
                format!("{i}").as_bytes(),
                delay(ms),
            )
            .await
            .expect("publish");
        confirms.push(c);
    }
    for c in confirms {
        assert!(within("confirm", c).await.expect("confirm").is_ack());
    }
    assert_eq!(next_delivery(&mut ca).await.data, b"both");
    assert_eq!(next_delivery(&mut cb).await.data, b"both");
    for i in 0..50 {
        assert_eq!(String::from_utf8(next_delivery(&mut ca).await.data).unwrap(), i.to_string());
    }
    assert_no_delivery(&mut cb, Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_exchange_needs_a_valid_delayed_type() {
    let broker = start_broker();
    if broker.is_external() {
        return;
    }
    let conn = connect(&broker).await;
    let cases: [FieldTable; 4] = [
        FieldTable::default(),
        delayed_args("nonsense"),
        delayed_args("x-delayed-message"),
        args(&[("x-delayed-type", AMQPValue::LongInt(1))]),
    ];
    for a in cases {
        let ch = channel(&conn).await;
        let res =
            declare_exchange_args(&ch, &unique("delayed-bad"), ExchangeKind::Custom("x-delayed-message".into()), a)
                .await;
        assert_amqp_err(
            res,
            406,
            "PRECONDITION_FAILED - Invalid argument, 'x-delayed-type' must be an existing exchange type",
        );
    }
    // A redeclare must name the same type.
    let ch = channel(&conn).await;
    let x = unique("delayed-redeclare");
    declare_exchange_args(&ch, &x, ExchangeKind::Custom("x-delayed-message".into()), delayed_args("fanout"))
        .await
        .unwrap();
    declare_exchange_args(&ch, &x, ExchangeKind::Custom("x-delayed-message".into()), delayed_args("fanout"))
        .await
        .unwrap();
    let res = declare_exchange_args(&ch, &x, ExchangeKind::Fanout, FieldTable::default()).await;
    assert_amqp_err(res, 406, "PRECONDITION_FAILED - inequivalent arg 'type'");
    // Unknown exchange types stay 503.
    let ch = channel(&conn).await;
    let res =
        declare_exchange_args(&ch, &unique("weird"), ExchangeKind::Custom("x-weird".into()), FieldTable::default())
            .await;
    assert_amqp_err(res, 503, "COMMAND_INVALID - unknown exchange type 'x-weird'");
}
