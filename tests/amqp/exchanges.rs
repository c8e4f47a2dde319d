//! Exchange types, bindings and exchange-level errors.

use crate::common::{start_broker, unique};
use crate::util::*;
use lapin::{
    options::*,
    types::{AMQPValue, FieldTable},
    BasicProperties, ExchangeKind,
};

fn table(pairs: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), AMQPValue::LongString((*v).into()));
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_exchange_routes_by_exact_key_to_every_bound_queue() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let ex = unique("direct");
    declare_exchange(&ch, &ex, ExchangeKind::Direct).await;
    let (q1, q2, q3) = (unique("q1"), unique("q2"), unique("q3"));
    for q in [&q1, &q2, &q3] {
        declare_queue(&ch, q).await;
    }
    bind(&ch, &q1, &ex, "black").await;
    bind(&ch, &q2, &ex, "black").await;
    bind(&ch, &q3, &ex, "green").await;
    // A queue bound twice with different keys gets one copy per matching message only.
    bind(&ch, &q3, &ex, "black").await;

    publish_confirmed(&ch, &ex, "black", b"m-black", BasicProperties::default()).await;
    publish_confirmed(&ch, &ex, "green", b"m-green", BasicProperties::default()).await;
    publish_confirmed(&ch, &ex, "Black", b"m-case", BasicProperties::default()).await;
    publish_confirmed(&ch, &ex, "", b"m-empty", BasicProperties::default()).await;

    assert_eq!(drain(&ch, &q1).await, vec!["m-black"]);
    assert_eq!(drain(&ch, &q2).await, vec!["m-black"]);
    assert_eq!(drain(&ch, &q3).await, vec!["m-black", "m-green"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_exchange_unbind_stops_routing() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let ex = unique("direct-unbind");
    declare_exchange(&ch, &ex, ExchangeKind::Direct).await;
    let q = unique("q");
    declare_queue(&ch, &q).await;
    bind(&ch, &q, &ex, "k").await;
    publish_confirmed(&ch, &ex, "k", b"one", BasicProperties::default()).await;
    within("queue.unbind", ch.queue_unbind(q.as_str().into(), ex.as_str().into(), "k".into(), FieldTable::default()))
        .await
        .expect("queue.unbind");
    publish_confirmed(&ch, &ex, "k", b"two", BasicProperties::default()).await;
    assert_eq!(drain(&ch, &q).await, vec!["one"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_exchange_ignores_routing_key() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let ex = unique("fanout");
    declare_exchange(&ch, &ex, ExchangeKind::Fanout).await;
    let qs: Vec<String> = (0..3).map(|i| unique(&format!("fq{i}"))).collect();
    for (i, q) in qs.iter().enumerate() {
        declare_queue(&ch, q).await;
        bind(&ch, q, &ex, &format!("ignored-{i}")).await;
    }
    publish_confirmed(&ch, &ex, "anything", b"a", BasicProperties::default()).await;
    publish_confirmed(&ch, &ex, "", b"b", BasicProperties::default()).await;
    for q in &qs {
        assert_eq!(drain(&ch, q).await, vec!["a", "b"], "queue {q}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_exchange_matches_star_and_hash_like_rabbitmq() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let ex = unique("topic");
    declare_exchange(&ch, &ex, ExchangeKind::Topic).await;
    let patterns = ["*.orange.*", "*.*.rabbit", "lazy.#", "#", "a.*", "a.#.z", "#.end", "*", "exact.key"];
    let mut queues = Vec::new();
    for p in patterns {
        let q = unique("tq");
        declare_queue(&ch, &q).await;
        bind(&ch, &q, &ex, p).await;
        queues.push((p, q));
    }
    let keys = [
        "quick.orange.rabbit",
        "lazy.orange.elephant",
        "quick.orange.fox",
        "lazy.brown.fox",
        "lazy",
        "quick.brown.fox",
        "orange",
        "quick.orange.new.rabbit",
        "a",
        "a.b",
        "a.b.c",
        "a.z",
        "a.b.c.z",
        "end",
        "x.y.end",
        "",
        "exact.key",
        "exact.key.more",
    ];
    for k in keys {
        publish_confirmed(&ch, &ex, k, k.as_bytes(), BasicProperties::default()).await;
    }
    let expect = |p: &str| -> Vec<&str> {
        match p {
            "*.orange.*" => vec!["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"],
            "*.*.rabbit" => vec!["quick.orange.rabbit"],
            "lazy.#" => vec!["lazy.orange.elephant", "lazy.brown.fox", "lazy"],
            "#" => keys.to_vec(),
            "a.*" => vec!["a.b", "a.z"],
            "a.#.z" => vec!["a.z", "a.b.c.z"],
            "#.end" => vec!["end", "x.y.end"],
            "*" => vec!["lazy", "orange", "a", "end"],
            "exact.key" => vec!["exact.key"],
            _ => unreachable!(),
        }
    };
    for (p, q) in &queues {
        assert_eq!(drain(&ch, q).await, expect(p), "binding pattern {p:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_exchange_x_match_all_and_any() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let ex = unique("headers");
    declare_exchange(&ch, &ex, ExchangeKind::Headers).await;
    let q_all = unique("h-all");
    let q_any = unique("h-any");
    let q_default = unique("h-default");
    for q in [&q_all, &q_any, &q_default] {
        declare_queue(&ch, q).await;
    }
    bind_args(&ch, &q_all, &ex, "", table(&[("x-match", "all"), ("format", "pdf"), ("type", "report")])).await;
    bind_args(&ch, &q_any, &ex, "", table(&[("x-match", "any"), ("format", "pdf"), ("type", "log")])).await;
    // Without x-match RabbitMQ defaults to "all".
    bind_args(&ch, &q_default, &ex, "", table(&[("format", "zip"), ("type", "report")])).await;

    let send = |name: &'static str, headers: FieldTable| {
        let ch = ch.clone();
        let ex = ex.clone();
        async move {
            publish_confirmed(
                &ch,
                &ex,
                "routing-key-is-ignored",
                name.as_bytes(),
                BasicProperties::default().with_headers(headers),
            )
            .await
        }
    };
    send("pdf-report", table(&[("format", "pdf"), ("type", "report")])).await;
    send("pdf-report-extra", table(&[("format", "pdf"), ("type", "report"), ("extra", "1")])).await;
    send("pdf-only", table(&[("format", "pdf")])).await;
    send("log-only", table(&[("type", "log")])).await;
    send("zip-report", table(&[("format", "zip"), ("type", "report")])).await;
    send("nothing", FieldTable::default()).await;
    // No headers property at all.
    publish_confirmed(&ch, &ex, "", b"no-headers", BasicProperties::default()).await;

    assert_eq!(drain(&ch, &q_all).await, vec!["pdf-report", "pdf-report-extra"]);
    assert_eq!(drain(&ch, &q_any).await, vec!["pdf-report", "pdf-report-extra", "pdf-only", "log-only"]);
    assert_eq!(drain(&ch, &q_default).await, vec!["zip-report"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_to_exchange_binding_forwards_messages() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let src = unique("e2e-src");
    let dst = unique("e2e-dst");
    declare_exchange(&ch, &src, ExchangeKind::Topic).await;
    declare_exchange(&ch, &dst, ExchangeKind::Fanout).await;
    within(
        "exchange.bind",
        ch.exchange_bind(
            dst.as_str().into(),
            src.as_str().into(),
            "logs.*".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("exchange.bind");
    let q_dst = unique("q-dst");
    let q_src = unique("q-src");
    declare_queue(&ch, &q_dst).await;
    declare_queue(&ch, &q_src).await;
    bind(&ch, &q_dst, &dst, "").await;
    bind(&ch, &q_src, &src, "logs.error").await;

    publish_confirmed(&ch, &src, "logs.info", b"info", BasicProperties::default()).await;
    publish_confirmed(&ch, &src, "logs.error", b"error", BasicProperties::default()).await;
    publish_confirmed(&ch, &src, "metrics.cpu", b"cpu", BasicProperties::default()).await;
    assert_eq!(drain(&ch, &q_dst).await, vec!["info", "error"]);
    assert_eq!(drain(&ch, &q_src).await, vec!["error"]);

    within(
        "exchange.unbind",
        ch.exchange_unbind(
            dst.as_str().into(),
            src.as_str().into(),
            "logs.*".into(),
            ExchangeUnbindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("exchange.unbind");
    publish_confirmed(&ch, &src, "logs.error", b"after-unbind", BasicProperties::default()).await;
    assert_eq!(drain(&ch, &q_dst).await, Vec::<String>::new());
    assert_eq!(drain(&ch, &q_src).await, vec!["after-unbind"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_exchange_routes_by_queue_name() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let q = unique("default-ex");
    declare_queue(&ch, &q).await;
    publish_confirmed(&ch, "", &q, b"direct to queue", BasicProperties::default()).await;
    publish_confirmed(&ch, "", &unique("no-such-queue"), b"dropped", BasicProperties::default()).await;
    let msg = within("basic.get", ch.basic_get(q.as_str().into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
        .expect("a message");
    assert_eq!(msg.delivery.data, b"direct to queue");
    assert_eq!(msg.delivery.exchange.as_str(), "");
    assert_eq!(msg.delivery.routing_key.as_str(), q);
    assert_eq!(msg.message_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_to_the_default_exchange_is_refused_403() {
    let broker = start_broker();
    let (conn, ch) = open(&broker).await;
    let q = unique("q");
    declare_queue(&ch, &q).await;
    let res = within(
        "queue.bind",
        ch.queue_bind(q.as_str().into(), "".into(), "k".into(), QueueBindOptions::default(), FieldTable::default()),
    )
    .await;
    assert_amqp_err(res, 403, "ACCESS_REFUSED - operation not permitted on the default exchange");
    // The connection survives a channel error.
    let ch2 = channel(&conn).await;
    declare_queue(&ch2, &unique("after")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predeclared_exchanges_exist() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    for (name, kind) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        within(
            "passive exchange.declare",
            ch.exchange_declare(
                name.into(),
                kind,
                ExchangeDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{name} should exist: {e:?}"));
    }
    // RabbitMQ checks equivalence before the reserved prefix: redeclaring a predeclared exchange
    // with its exact (durable) definition is allowed.
    within(
        "exchange.declare amq.direct",
        ch.exchange_declare(
            "amq.direct".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("equivalent redeclare of amq.direct");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predeclared_amq_direct_routes() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let q = unique("amqdirect");
    declare_queue(&ch, &q).await;
    bind(&ch, &q, "amq.direct", &q).await;
    publish_confirmed(&ch, "amq.direct", &q, b"via amq.direct", BasicProperties::default()).await;
    assert_eq!(drain(&ch, &q).await, vec!["via amq.direct"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declaring_amq_prefixed_exchange_is_refused_403() {
    let broker = start_broker();
    let (conn, ch) = open(&broker).await;
    let name = unique("amq.custom");
    let res = within(
        "exchange.declare",
        ch.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_amqp_err(res, 403, &format!("ACCESS_REFUSED - exchange name '{name}' contains reserved prefix 'amq.*'"));
    assert!(!ch.status().connected(), "channel must be closed after a channel error");
    let ch2 = channel(&conn).await;
    declare_exchange(&ch2, &unique("fine"), ExchangeKind::Direct).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclaring_exchange_with_other_type_is_406() {
    let broker = start_broker();
    let (conn, ch) = open(&broker).await;
    let ex = unique("retype");
    declare_exchange(&ch, &ex, ExchangeKind::Direct).await;
    // The same definition again is fine.
    declare_exchange(&ch, &ex, ExchangeKind::Direct).await;
    let res = within(
        "exchange.declare",
        ch.exchange_declare(
            ex.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_amqp_err(
        res,
        406,
        &format!(
            "PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{ex}' in vhost '/': received 'fanout' but current is 'direct'"
        ),
    );
    let ch2 = channel(&conn).await;
    let res = within(
        "exchange.declare",
        ch2.exchange_declare(
            ex.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await;
    assert_amqp_err(
        res,
        406,
        &format!(
            "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange '{ex}' in vhost '/': received 'true' but current is 'false'"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_missing_exchange_is_404() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let ex = unique("missing");
    let res = within(
        "exchange.declare",
        ch.exchange_declare(
            ex.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await;
    assert_amqp_err(res, 404, &format!("NOT_FOUND - no exchange '{ex}' in vhost '/'"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_delete_if_unused_with_bindings_is_406() {
    let broker = start_broker();
    let (conn, ch) = open(&broker).await;
    let ex = unique("inuse");
    declare_exchange(&ch, &ex, ExchangeKind::Fanout).await;
    let q = unique("q");
    declare_queue(&ch, &q).await;
    bind(&ch, &q, &ex, "").await;
    let res = within(
        "exchange.delete",
        ch.exchange_delete(ex.as_str().into(), ExchangeDeleteOptions { if_unused: true, ..Default::default() }),
    )
    .await;
    assert_amqp_err(res, 406, &format!("PRECONDITION_FAILED - exchange '{ex}' in vhost '/' in use"));

    // Still there; a plain delete works, and deleting it again is not an error.
    let ch2 = channel(&conn).await;
    within("exchange.delete", ch2.exchange_delete(ex.as_str().into(), ExchangeDeleteOptions::default()))
        .await
        .expect("exchange.delete");
    within("exchange.delete again", ch2.exchange_delete(ex.as_str().into(), ExchangeDeleteOptions::default()))
        .await
        .expect("deleting a missing exchange is ok in RabbitMQ");
    let res = within(
        "exchange.declare",
        ch2.exchange_declare(
            ex.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await;
    assert_amqp_err(res, 404, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_delete_if_unused_without_bindings_succeeds() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let ex = unique("unused");
    declare_exchange(&ch, &ex, ExchangeKind::Topic).await;
    within(
        "exchange.delete",
        ch.exchange_delete(ex.as_str().into(), ExchangeDeleteOptions { if_unused: true, ..Default::default() }),
    )
    .await
    .expect("exchange.delete if-unused on an unbound exchange");
}

/// The same routing checks with amqprs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_direct_and_fanout_routing() {
    use amqprs::channel::{
        BasicGetArguments, BasicPublishArguments, ConfirmSelectArguments, ExchangeDeclareArguments, QueueBindArguments,
        QueueDeclareArguments,
    };
    let broker = start_broker();
    let (conn, ch) = rs::open(&broker).await;
    let mut events = rs::events(&ch).await;
    within("confirm.select", ch.confirm_select(ConfirmSelectArguments::default())).await.expect("confirm.select");
    let direct = unique("rs-direct");
    let fanout = unique("rs-fanout");
    within("declare", ch.exchange_declare(ExchangeDeclareArguments::new(&direct, "direct")))
        .await
        .expect("exchange.declare direct");
    within("declare", ch.exchange_declare(ExchangeDeclareArguments::new(&fanout, "fanout")))
        .await
        .expect("exchange.declare fanout");
    let qa = unique("rs-a");
    let qb = unique("rs-b");
    for q in [&qa, &qb] {
        let (name, count, consumers) = within("queue.declare", ch.queue_declare(QueueDeclareArguments::new(q)))
            .await
            .expect("queue.declare")
            .expect("declare-ok");
        assert_eq!((name.as_str(), count, consumers), (q.as_str(), 0, 0));
        within("queue.bind", ch.queue_bind(QueueBindArguments::new(q, &fanout, ""))).await.expect("bind fanout");
    }
    within("queue.bind", ch.queue_bind(QueueBindArguments::new(&qa, &direct, "only-a"))).await.expect("bind direct");

    ch.basic_publish(Default::default(), b"to-a".to_vec(), BasicPublishArguments::new(&direct, "only-a"))
        .await
        .expect("publish");
    ch.basic_publish(Default::default(), b"to-none".to_vec(), BasicPublishArguments::new(&direct, "nobody"))
        .await
        .expect("publish");
    ch.basic_publish(Default::default(), b"to-all".to_vec(), BasicPublishArguments::new(&fanout, "x"))
        .await
        .expect("publish");

    // All three confirmed: they are enqueued (or dropped) before the gets below.
    rs::wait_acked(&mut events, 1, 3).await;
    let mut got_a = Vec::new();
    while let Some((_get_ok, _props, body)) =
        within("basic.get", ch.basic_get(BasicGetArguments::new(&qa).no_ack(true).finish())).await.expect("basic.get")
    {
        got_a.push(String::from_utf8(body).unwrap());
    }
    let mut got_b = Vec::new();
    while let Some((_get_ok, _props, body)) =
        within("basic.get", ch.basic_get(BasicGetArguments::new(&qb).no_ack(true).finish())).await.expect("basic.get")
    {
        got_b.push(String::from_utf8(body).unwrap());
    }
    assert_eq!(got_a, vec!["to-a", "to-all"]);
    assert_eq!(got_b, vec!["to-all"]);
    ch.close().await.expect("channel.close");
    conn.close().await.expect("connection.close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_exchange_value_types_and_void() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let ex = unique("headers-types");
    declare_exchange(&ch, &ex, ExchangeKind::Headers).await;
    let q_int = unique("h-int");
    let q_void = unique("h-void");
    declare_queue(&ch, &q_int).await;
    declare_queue(&ch, &q_void).await;
    let mut args = FieldTable::default();
    args.insert("x-match".into(), AMQPValue::LongString("all".into()));
    args.insert("n".into(), AMQPValue::LongInt(1));
    bind_args(&ch, &q_int, &ex, "", args).await;
    // A void binding value matches on the presence of the key, whatever its value.
    let mut args = FieldTable::default();
    args.insert("x-match".into(), AMQPValue::LongString("any".into()));
    args.insert("flag".into(), AMQPValue::Void);
    bind_args(&ch, &q_void, &ex, "", args).await;

    let send = |name: &'static str, key: &'static str, v: AMQPValue| {
        let ch = ch.clone();
        let ex = ex.clone();
        async move {
            let mut h = FieldTable::default();
            h.insert(key.into(), v);
            publish_confirmed(&ch, &ex, "", name.as_bytes(), BasicProperties::default().with_headers(h)).await
        }
    };
    send("long-int-1", "n", AMQPValue::LongInt(1)).await;
    send("long-int-2", "n", AMQPValue::LongInt(2)).await;
    send("string-1", "n", AMQPValue::LongString("1".into())).await;
    send("short-short-1", "n", AMQPValue::ShortShortInt(1)).await;
    send("long-long-1", "n", AMQPValue::LongLongInt(1)).await;
    send("flag-string", "flag", AMQPValue::LongString("whatever".into())).await;
    send("flag-bool", "flag", AMQPValue::Boolean(false)).await;
    send("other-key", "other", AMQPValue::Void).await;

    // RabbitMQ compares numbers by value across integer widths (Erlang `==`), but a string "1"
    // is not the number 1.
    assert_eq!(drain(&ch, &q_int).await, vec!["long-int-1", "short-short-1", "long-long-1"]);
    assert_eq!(drain(&ch, &q_void).await, vec!["flag-string", "flag-bool"]);
}

async fn exchange_unbind(ch: &lapin::Channel, destination: &str, source: &str, key: &str) -> lapin::Result<()> {
    within(
        "exchange.unbind",
        ch.exchange_unbind(
            destination.into(),
            source.into(),
            key.into(),
            ExchangeUnbindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
}

async fn exchange_bind(ch: &lapin::Channel, destination: &str, source: &str, key: &str) {
    within(
        "exchange.bind",
        ch.exchange_bind(
            destination.into(),
            source.into(),
            key.into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("exchange.bind")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_unbind_is_idempotent_when_anything_is_missing() {
    let broker = start_broker();
    let (conn, ch) = open(&broker).await;
    let (a, b) = (unique("xunbind-a"), unique("xunbind-b"));
    declare_exchange(&ch, &a, ExchangeKind::Direct).await;
    declare_exchange(&ch, &b, ExchangeKind::Direct).await;
    let (no_a, no_b) = (unique("no-such-x"), unique("no-such-x"));
    // RabbitMQ 3.10 answers unbind-ok for all of these, on one channel.
    exchange_unbind(&ch, &a, &no_b, "k").await.expect("unbind from a missing source");
    exchange_unbind(&ch, &no_a, &b, "k").await.expect("unbind of a missing destination");
    exchange_unbind(&ch, &no_a, &no_b, "k").await.expect("unbind with both missing");
    exchange_unbind(&ch, &a, &b, "k").await.expect("unbind of a missing binding");
    // The destination deleted by this channel's previous method.
    let gone = unique("xunbind-deleted");
    declare_exchange(&ch, &gone, ExchangeKind::Fanout).await;
    exchange_bind(&ch, &gone, &a, "k").await;
    within("exchange.delete", ch.exchange_delete(gone.as_str().into(), ExchangeDeleteOptions::default()))
        .await
        .expect("exchange.delete");
    exchange_unbind(&ch, &gone, &a, "k").await.expect("unbind of a destination deleted just before");
    // An auto-delete source that this channel's previous unbind deleted.
    let auto = unique("xunbind-auto");
    within(
        "exchange.declare",
        ch.exchange_declare(
            auto.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions { auto_delete: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("auto-delete exchange.declare");
    exchange_bind(&ch, &a, &auto, "k").await;
    exchange_unbind(&ch, &a, &auto, "k").await.expect("unbind of the last binding");
    exchange_unbind(&ch, &a, &auto, "k").await.expect("unbind from the auto-deleted source");
    let res = within(
        "passive exchange.declare",
        ch.exchange_declare(
            auto.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await;
    assert_amqp_err(res, 404, &format!("NOT_FOUND - no exchange '{auto}' in vhost '/'"));
    // The default exchange on either side is still refused, even when the other is missing.
    for (destination, source) in [(a.as_str(), ""), ("", a.as_str()), ("", no_b.as_str())] {
        let ch = channel(&conn).await;
        let res = exchange_unbind(&ch, destination, source, "k").await;
        assert_amqp_err(res, 403, "ACCESS_REFUSED - operation not permitted on the default exchange");
    }
}
