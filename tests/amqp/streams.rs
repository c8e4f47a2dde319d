//! Stream queues (`x-queue-type: stream`) and queue-type validation, through lapin.
//! Every test but the restart one also passes against RabbitMQ 3.10
//! (`HAREMQ_TEST_EXTERNAL_URL`), where the texts and codes come from.

use crate::common::{start_broker, unique, WAIT};
use crate::util::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{options::*, BasicProperties, Channel, Consumer};
use std::time::{Duration, Instant};

fn args(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn text_arg(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn stream_args(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = args(extra);
    t.insert("x-queue-type".into(), text_arg("stream"));
    t
}

async fn declare_stream(ch: &Channel, name: &str, extra: &[(&str, AMQPValue)]) {
    within(
        "declare stream",
        ch.queue_declare(name.into(), QueueDeclareOptions { durable: true, ..Default::default() }, stream_args(extra)),
    )
    .await
    .expect("stream declared");
}

async fn publish_n(ch: &Channel, queue: &str, range: std::ops::Range<usize>) {
    for i in range {
        publish_confirmed(ch, "", queue, format!("m{i}").as_bytes(), BasicProperties::default()).await;
    }
}

/// A stream consumer on its own channel: prefetch, then basic.consume from `offset`.
async fn stream_consumer(conn: &lapin::Connection, queue: &str, offset: AMQPValue, prefetch: u16) -> Consumer {
    let ch = channel(conn).await;
    within("qos", ch.basic_qos(prefetch, BasicQosOptions::default())).await.expect("qos");
    within(
        "consume",
        ch.basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), args(&[("x-stream-offset", offset)])),
    )
    .await
    .expect("stream consume")
}

fn offset_of(d: &lapin::message::Delivery) -> i64 {
    match d.properties.headers().as_ref().and_then(|h| h.inner().get("x-stream-offset").cloned()) {
        Some(AMQPValue::LongLongInt(n)) => n,
        other => panic!("x-stream-offset header missing or mistyped: {other:?}"),
    }
}

/// The next `n` deliveries as (body, offset), each acked.
async fn take(consumer: &mut Consumer, n: usize) -> Vec<(String, i64)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let d = next_delivery(consumer).await;
        out.push((String::from_utf8(d.data.clone()).expect("utf-8"), offset_of(&d)));
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    out
}

fn expected(range: std::ops::Range<usize>) -> Vec<(String, i64)> {
    range.map(|i| (format!("m{i}"), i as i64)).collect()
}

async fn declare_err(ch: Channel, name: &str, opts: QueueDeclareOptions, a: FieldTable, code: u16, text: &str) {
    let r = within("declare", ch.queue_declare(name.into(), opts, a)).await;
    assert_amqp_err(r, code, text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_types_and_their_arguments_are_checked_as_rabbitmq_does() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    let q = unique("qt");
    let cases: Vec<(QueueDeclareOptions, FieldTable, String)> = vec![
        (
            durable,
            args(&[("x-queue-type", text_arg("bogus"))]),
            format!("PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue '{q}' in vhost '/': \"unsupported queue type 'bogus'\""),
        ),
        (
            QueueDeclareOptions::default(),
            stream_args(&[]),
            format!("PRECONDITION_FAILED - invalid property 'non-durable' for queue '{q}' in vhost '/'"),
        ),
        (
            QueueDeclareOptions { durable: true, exclusive: true, ..Default::default() },
            stream_args(&[]),
            format!("PRECONDITION_FAILED - invalid property 'exclusive-owner' for queue '{q}' in vhost '/'"),
        ),
        (
            QueueDeclareOptions { durable: true, auto_delete: true, exclusive: true, ..Default::default() },
            stream_args(&[]),
            format!("PRECONDITION_FAILED - invalid property 'auto-delete' for queue '{q}' in vhost '/'"),
        ),
        (
            QueueDeclareOptions::default(),
            stream_args(&[("x-max-priority", AMQPValue::LongInt(5))]),
            format!("PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '{q}' in vhost '/' of queue type rabbit_stream_queue"),
        ),
        (
            durable,
            stream_args(&[("x-max-age", text_arg("10"))]),
            format!("PRECONDITION_FAILED - invalid arg 'x-max-age' for queue '{q}' in vhost '/': invalid_max_age"),
        ),
        (
            durable,
            args(&[("x-max-age", text_arg("1D"))]),
            format!("PRECONDITION_FAILED - invalid arg 'x-max-age' for queue '{q}' in vhost '/' of queue type rabbit_classic_queue"),
        ),
        (
            durable,
            args(&[("x-queue-type", text_arg("quorum")), ("x-max-priority", AMQPValue::LongInt(5))]),
            format!("PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue '{q}' in vhost '/' of queue type rabbit_quorum_queue"),
        ),
        (
            QueueDeclareOptions::default(),
            args(&[("x-queue-type", text_arg("quorum"))]),
            format!("PRECONDITION_FAILED - invalid property 'non-durable' for queue '{q}' in vhost '/'"),
        ),
    ];
    for (opts, a, text) in cases {
        declare_err(channel(&conn).await, &q, opts, a, 406, &text).await;
    }
    // A quorum queue is accepted (a classic durable queue on one node) and works.
    let ch = channel(&conn).await;
    confirm_select(&ch).await;
    let qq = unique("quorum");
    within(
        "declare quorum",
        ch.queue_declare(qq.as_str().into(), durable, args(&[("x-queue-type", text_arg("quorum"))])),
    )
    .await
    .expect("quorum queue declared");
    publish_confirmed(&ch, "", &qq, b"hello", BasicProperties::default()).await;
    assert_eq!(get_body(&ch, &qq).await.as_deref(), Some(&b"hello"[..]));
    // Redeclaring a stream as a classic queue is inequivalent.
    let s = unique("stream");
    declare_stream(&ch, &s, &[]).await;
    declare_err(
        channel(&conn).await,
        &s,
        durable,
        FieldTable::default(),
        406,
        &format!("PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue '{s}' in vhost '/': received none but current is the value 'stream' of type 'longstr'"),
    )
    .await;
    for name in [qq, s] {
        ch.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await.expect("delete");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_replay_from_every_kind_of_offset() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    confirm_select(&ch).await;
    let s = unique("replay");
    declare_stream(&ch, &s, &[]).await;
    publish_n(&ch, &s, 0..10).await;

    let mut first = stream_consumer(&conn, &s, text_arg("first"), 100).await;
    assert_eq!(take(&mut first, 10).await, expected(0..10), "first: everything, each with its offset");
    let mut five = stream_consumer(&conn, &s, AMQPValue::LongLongInt(5), 100).await;
    assert_eq!(take(&mut five, 5).await, expected(5..10));
    let mut last = stream_consumer(&conn, &s, text_arg("last"), 100).await;
    assert_eq!(take(&mut last, 1).await, expected(9..10), "last: the newest message");
    let hour_ago = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 3600;
    let mut since = stream_consumer(&conn, &s, AMQPValue::Timestamp(hour_ago), 100).await;
    assert_eq!(take(&mut since, 10).await, expected(0..10), "a timestamp an hour ago: everything");
    let mut interval = stream_consumer(&conn, &s, text_arg("1h"), 100).await;
    assert_eq!(take(&mut interval, 10).await, expected(0..10), "an interval of an hour: everything");
    let mut negative = stream_consumer(&conn, &s, AMQPValue::LongLongInt(-1), 100).await;
    assert_eq!(take(&mut negative, 1).await, expected(0..1), "a negative offset starts at the first");
    let mut next = stream_consumer(&conn, &s, text_arg("next"), 100).await;
    let mut beyond = stream_consumer(&conn, &s, AMQPValue::LongLongInt(11), 100).await;
    // Make sure both consumers are attached before publishing (a synchronous round trip).
    message_count(&ch, &s).await;
    publish_n(&ch, &s, 10..13).await;
    assert_eq!(take(&mut next, 3).await, expected(10..13), "next: only what comes after");
    assert_eq!(take(&mut beyond, 2).await, expected(11..13), "an offset past the end waits for it");
    // Live consumers get the new messages too; nothing was removed by consuming.
    assert_eq!(take(&mut first, 3).await, expected(10..13));
    let mut again = stream_consumer(&conn, &s, text_arg("first"), 100).await;
    assert_eq!(take(&mut again, 13).await, expected(0..13));
    ch.queue_delete(s.as_str().into(), QueueDeleteOptions::default()).await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_read_the_same_log_at_their_own_pace() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    confirm_select(&ch).await;
    let s = unique("pace");
    declare_stream(&ch, &s, &[]).await;
    let mut fast = stream_consumer(&conn, &s, text_arg("first"), 50).await;
    let mut slow = stream_consumer(&conn, &s, text_arg("first"), 1).await;
    publish_n(&ch, &s, 0..300).await;
    assert_eq!(take(&mut fast, 300).await, expected(0..300), "the fast one reads everything, in order");
    // The slow one holds at most its prefetch (one) unacked: a second delivery only
    // comes once it acks the first, and it reads the same sequence.
    let d = next_delivery(&mut slow).await;
    assert_eq!(offset_of(&d), 0);
    assert_no_delivery(&mut slow, Duration::from_millis(300)).await;
    d.ack(BasicAckOptions::default()).await.expect("ack");
    assert_eq!(take(&mut slow, 299).await, expected(1..300));
    ch.queue_delete(s.as_str().into(), QueueDeleteOptions::default()).await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_a_stream_does_not_support_are_refused_as_rabbitmq_does() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    confirm_select(&ch).await;
    let s = unique("refuse");
    declare_stream(&ch, &s, &[]).await;
    publish_n(&ch, &s, 0..3).await;
    let rs = format!("queue '{s}' in vhost '/'");

    // No prefetch: 406 on the channel.
    let c = channel(&conn).await;
    let r = within(
        "consume",
        c.basic_consume(s.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()),
    )
    .await;
    assert_amqp_err(r, 406, &format!("PRECONDITION_FAILED - consumer prefetch count is not set for '{rs}'"));

    // The others close the connection with 540.
    let fresh = || async {
        let conn = connect(&broker).await;
        let ch = channel(&conn).await;
        ch.basic_qos(10, BasicQosOptions::default()).await.expect("qos");
        (conn, ch)
    };
    let (_c1, ch1) = fresh().await;
    let r = within(
        "consume no-ack",
        ch1.basic_consume(
            s.as_str().into(),
            "".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await;
    assert_amqp_err(
        r,
        540,
        &format!("NOT_IMPLEMENTED - automatic acknowledgement not supported by stream queues {rs}"),
    );
    let (_c2, ch2) = fresh().await;
    let r = within("get", ch2.basic_get(s.as_str().into(), BasicGetOptions::default())).await;
    assert_amqp_err(r, 540, &format!("NOT_IMPLEMENTED - basic.get not supported by stream queues {rs}"));
    let (_c3, ch3) = fresh().await;
    let r = within("purge", ch3.queue_purge(s.as_str().into(), QueuePurgeOptions::default())).await;
    assert_amqp_err(r, 540, &format!("NOT_IMPLEMENTED - queue.purge not supported by stream queues {rs}"));
    for requeue in [true, false] {
        let (c4, ch4) = fresh().await;
        let mut consumer = within(
            "consume",
            ch4.basic_consume(
                s.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                args(&[("x-stream-offset", text_arg("first"))]),
            ),
        )
        .await
        .expect("consume");
        let d = next_delivery(&mut consumer).await;
        d.nack(BasicNackOptions { requeue, ..Default::default() }).await.expect("nack sent");
        let deadline = Instant::now() + WAIT;
        while c4.status().connected() {
            assert!(Instant::now() < deadline, "the connection was not closed after a nack");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(c4);
    }
    // The stream still holds everything (RabbitMQ's message count lags: read it).
    let mut c = stream_consumer(&conn, &s, text_arg("first"), 10).await;
    assert_eq!(take(&mut c, 3).await, expected(0..3));
    if !broker.is_external() {
        // HareMQ keeps a stream that holds messages from if-empty (RabbitMQ 3.10
        // deletes it).
        let r = within(
            "delete if-empty",
            channel(&conn)
                .await
                .queue_delete(s.as_str().into(), QueueDeleteOptions { if_empty: true, ..Default::default() }),
        )
        .await;
        assert_amqp_err(r, 406, &format!("PRECONDITION_FAILED - {rs} not empty"));
    }
    ch.queue_delete(s.as_str().into(), QueueDeleteOptions::default()).await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_resumes_from_its_stored_offset_after_a_restart() {
    let mut broker = start_broker();
    if broker.is_external() {
        return;
    }
    let s = unique("resume");
    let resume_at = {
        let conn = connect(&broker).await;
        let ch = channel(&conn).await;
        confirm_select(&ch).await;
        declare_stream(&ch, &s, &[]).await;
        publish_n(&ch, &s, 0..100).await;
        let mut c = stream_consumer(&conn, &s, text_arg("first"), 10).await;
        let got = take(&mut c, 40).await;
        // The application records the offset after the last one it processed.
        got.last().expect("40 read").1 + 1
    };
    broker.restart();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    confirm_select(&ch).await;
    assert_eq!(message_count(&ch, &s).await, 100, "the stream survives a restart");
    publish_n(&ch, &s, 100..110).await;
    let mut c = stream_consumer(&conn, &s, AMQPValue::LongLongInt(resume_at), 10).await;
    assert_eq!(take(&mut c, 70).await, expected(40..110), "exactly the messages after the stored offset");
    assert_no_delivery(&mut c, Duration::from_millis(200)).await;
}

/// Retention drops whole segments from the head: the oldest offset left is where a
/// segment started, and every offset after it is there.
async fn first_offset(conn: &lapin::Connection, s: &str) -> i64 {
    let mut c = stream_consumer(conn, s, text_arg("first"), 1).await;
    let d = next_delivery(&mut c).await;
    offset_of(&d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_size_drops_whole_segments_from_the_head() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    confirm_select(&ch).await;
    let s = unique("bytes");
    declare_stream(
        &ch,
        &s,
        &[
            ("x-max-length-bytes", AMQPValue::LongLongInt(20_000)),
            ("x-stream-max-segment-size-bytes", AMQPValue::LongLongInt(5_000)),
        ],
    )
    .await;
    let body = vec![b'x'; 1000];
    for _ in 0..100 {
        publish_confirmed(&ch, "", &s, &body, BasicProperties::default()).await;
    }
    let first = first_offset(&conn, &s).await;
    assert!(first >= 1, "the oldest segments are gone");
    if !broker.is_external() {
        // (RabbitMQ keeps less: its offsets also count its own tracking records.)
        assert!(first <= 85, "about 20 kB of 1 kB messages are kept, from offset {first}");
        // (RabbitMQ's message count lags behind.)
        assert_eq!(message_count(&ch, &s).await as i64, 100 - first, "everything from the first offset on");
    }
    let mut c = stream_consumer(&conn, &s, text_arg("first"), 200).await;
    for expect in first..100 {
        let d = next_delivery(&mut c).await;
        assert_eq!(offset_of(&d), expect, "no gap after the head");
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    ch.queue_delete(s.as_str().into(), QueueDeleteOptions::default()).await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_age_drops_old_segments() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    confirm_select(&ch).await;
    let s = unique("age");
    declare_stream(
        &ch,
        &s,
        &[("x-max-age", text_arg("1s")), ("x-stream-max-segment-size-bytes", AMQPValue::LongLongInt(2_000))],
    )
    .await;
    let body = vec![b'y'; 1000];
    for _ in 0..10 {
        publish_confirmed(&ch, "", &s, &body, BasicProperties::default()).await;
    }
    // Retention is looked at when a segment rolls over: keep publishing until the old
    // segments (older than a second) are gone.
    let deadline = Instant::now() + WAIT;
    let mut published = 10;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..3 {
            publish_confirmed(&ch, "", &s, &body, BasicProperties::default()).await;
            published += 3;
        }
        if first_offset(&conn, &s).await >= 10 {
            break;
        }
        assert!(Instant::now() < deadline, "segments older than x-max-age were not dropped");
    }
    if !broker.is_external() {
        assert!(message_count(&ch, &s).await < published);
    }
    ch.queue_delete(s.as_str().into(), QueueDeleteOptions::default()).await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_api_reports_streams_and_quorum_queues_as_what_they_are() {
    let broker = crate::common::start_broker_with(|c| c.management = Some("127.0.0.1:0".parse().unwrap()));
    if broker.is_external() {
        return;
    }
    let api = format!("http://{}/api", broker.handle().management_addr().expect("management API"));
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    confirm_select(&ch).await;
    declare_stream(&ch, "api-stream", &[]).await;
    ch.queue_declare(
        "api-quorum".into(),
        QueueDeclareOptions { durable: true, ..Default::default() },
        args(&[("x-queue-type", text_arg("quorum"))]),
    )
    .await
    .expect("quorum");
    publish_n(&ch, "api-stream", 0..4).await;
    let get =
        |name: &str| crate::management::http("GET", format!("{api}/queues/%2F/{name}"), crate::management::GUEST, None);
    let stream = get("api-stream").await.json();
    assert_eq!(stream["type"], "stream");
    assert_eq!(stream["messages"], 4);
    assert_eq!(stream["arguments"]["x-queue-type"], "stream");
    let quorum = get("api-quorum").await.json();
    assert_eq!(quorum["type"], "classic", "a quorum queue runs as a classic one and says so");
    let defs =
        crate::management::http("GET", format!("{api}/definitions"), crate::management::GUEST, None).await.json();
    let types: Vec<(String, String)> = defs["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| (q["name"].as_str().unwrap().to_string(), q["type"].as_str().unwrap_or("").to_string()))
        .collect();
    assert!(types.contains(&("api-stream".into(), "stream".into())), "{types:?}");
    assert!(types.contains(&("api-quorum".into(), "quorum".into())), "{types:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtering_consumer_gets_exactly_the_values_it_asked_for() {
    // RabbitMQ 3.13's stream filtering (3.10 has none); HareMQ filters each message.
    let broker = start_broker();
    if broker.is_external() {
        return;
    }
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    confirm_select(&ch).await;
    let s = unique("filter");
    declare_stream(&ch, &s, &[]).await;
    for i in 0..30usize {
        let mut props = BasicProperties::default();
        if i % 3 != 2 {
            let region = if i % 3 == 0 { "eu" } else { "us" };
            props = props.with_headers(args(&[("x-stream-filter-value", text_arg(region))]));
        }
        publish_confirmed(&ch, "", &s, format!("m{i}").as_bytes(), props).await;
    }
    let consume = |filter: FieldTable| {
        let conn = &conn;
        let s = s.clone();
        async move {
            let ch = channel(conn).await;
            ch.basic_qos(5, BasicQosOptions::default()).await.expect("qos");
            let mut a = filter;
            a.insert("x-stream-offset".into(), text_arg("first"));
            ch.basic_consume(s.as_str().into(), "".into(), BasicConsumeOptions::default(), a).await.expect("consume")
        }
    };
    let mut eu = consume(args(&[("x-stream-filter", text_arg("eu"))])).await;
    let want: Vec<(String, i64)> = (0..30).filter(|i| i % 3 == 0).map(|i| (format!("m{i}"), i as i64)).collect();
    assert_eq!(take(&mut eu, 10).await, want, "only eu, and the prefetch of 5 is no limit on skipped ones");
    assert_no_delivery(&mut eu, Duration::from_millis(200)).await;
    let mut us_or_none = consume(args(&[
        ("x-stream-filter", AMQPValue::FieldArray(vec![text_arg("us")].into())),
        ("x-stream-match-unfiltered", AMQPValue::Boolean(true)),
    ]))
    .await;
    let want: Vec<(String, i64)> = (0..30).filter(|i| i % 3 != 0).map(|i| (format!("m{i}"), i as i64)).collect();
    assert_eq!(take(&mut us_or_none, 20).await, want);
}
