//! Quorum queues across real nodes: declared on one, published to through another,
//! consumed through a third; the leader killed mid-stream; a partitioned node; a
//! restart of the whole cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use smol::stream::StreamExt;

use super::{wait_for, TestCluster, WAIT};

/// The next delivery, or None after `timeout`.
pub(super) async fn next_delivery(c: &mut lapin::Consumer, timeout: Duration) -> Option<lapin::message::Delivery> {
    match tokio::time::timeout(timeout, c.next()).await {
        Ok(Some(Ok(d))) => Some(d),
        _ => None,
    }
}

pub(super) async fn connect(url: &str) -> (Connection, Channel) {
    let conn = tokio::time::timeout(WAIT, Connection::connect(url, ConnectionProperties::default()))
        .await
        .expect("connect in time")
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    (conn, ch)
}

pub(super) fn quorum_args() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    t
}

async fn declare_quorum(ch: &Channel, name: &str) {
    ch.queue_declare(name.into(), QueueDeclareOptions { durable: true, ..Default::default() }, quorum_args())
        .await
        .expect("declare quorum queue");
}

pub(super) fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Publishes `ids` as bodies "m-<id>" with confirms, a window at a time; returns the
/// ids confirmed (acked) before the first error.
pub(super) async fn publish_confirmed(
    ch: &Channel,
    queue: &str,
    ids: impl Iterator<Item = u32>,
    window: usize,
) -> (BTreeSet<u32>, bool) {
    let (confirmed, ok, _) = publish_counted(ch, queue, ids, window).await;
    (confirmed, ok)
}

/// [`publish_confirmed`], also returning every id that was sent (confirmed or not).
async fn publish_counted(
    ch: &Channel,
    queue: &str,
    ids: impl Iterator<Item = u32>,
    window: usize,
) -> (BTreeSet<u32>, bool, Vec<u32>) {
    let mut sent = Vec::new();
    let mut confirmed = BTreeSet::new();
    let mut pending = Vec::new();
    let ids: Vec<u32> = ids.collect();
    for chunk in ids.chunks(window) {
        pending.clear();
        for id in chunk {
            match ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    format!("m-{id}").as_bytes(),
                    persistent(),
                )
                .await
            {
                Ok(c) => {
                    sent.push(*id);
                    pending.push((*id, c))
                }
                Err(_) => return (confirmed, false, sent),
            }
        }
        for (id, c) in pending.drain(..) {
            match tokio::time::timeout(Duration::from_secs(15), c).await {
                Ok(Ok(conf)) if conf.is_ack() => {
                    confirmed.insert(id);
                }
                _ => return (confirmed, false, sent),
            }
        }
    }
    (confirmed, true, sent)
}

pub(super) fn id_of(body: &[u8]) -> u32 {
    std::str::from_utf8(body).ok().and_then(|s| s.strip_prefix("m-")).and_then(|s| s.parse().ok()).expect("m-<id> body")
}

/// The queue's leader node id, from a node's management API.
pub(super) fn queue_leader(c: &TestCluster, via: u64, queue: &str) -> Option<u64> {
    let (code, q) = c.node(via).get(&format!("queues/%2F/{queue}"));
    if code != 200 {
        return None;
    }
    let leader = q["leader"].as_str()?;
    leader.strip_prefix("haremq-")?.split('@').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_queue_is_declared_on_one_node_fed_through_another_and_drained_through_a_third() {
    let c = TestCluster::start(3);
    let (_c1, ch1) = connect(&c.node(1).url()).await;
    declare_quorum(&ch1, "qq").await;
    // Redeclaring is fine, and the queue is a quorum queue on every node.
    declare_quorum(&ch1, "qq").await;
    let (_c2, ch2) = connect(&c.node(2).url()).await;
    ch2.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let (confirmed, ok) = publish_confirmed(&ch2, "qq", 0..2000, 128).await;
    assert!(ok && confirmed.len() == 2000, "every publish confirmed through node 2 ({})", confirmed.len());
    for id in 1..=3 {
        let (code, q) = c.node(id).get("queues/%2F/qq");
        assert_eq!(code, 200, "node {id}: {q}");
        assert_eq!(q["type"], "quorum", "node {id}: {q}");
        assert_eq!(q["members"].as_array().map(Vec::len), Some(3), "{q}");
    }
    let (_c3, ch3) = connect(&c.node(3).url()).await;
    ch3.basic_qos(200, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = ch3
        .basic_consume("qq".into(), "c3".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let mut got = Vec::new();
    while got.len() < 2000 {
        let d = next_delivery(&mut consumer, WAIT).await.expect("a delivery through node 3");
        got.push(id_of(&d.data));
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    assert_eq!(got, (0..2000).collect::<Vec<_>>(), "each message once, in order");
    wait_for("the queue to be empty everywhere", || {
        (1..=3).all(|id| c.node(id).get("queues/%2F/qq").1["messages"] == 0).then_some(())
    });
    // basic.get through node 1 (once the consumer is gone) and a delete through node 2.
    ch3.basic_cancel("c3".into(), BasicCancelOptions::default()).await.expect("cancel");
    let (_, ok) = publish_confirmed(&ch2, "qq", 5000..5001, 1).await;
    assert!(ok);
    let deadline = Instant::now() + WAIT;
    let got = loop {
        if let Some(m) = ch1.basic_get("qq".into(), BasicGetOptions { no_ack: true }).await.expect("get") {
            break id_of(&m.delivery.data);
        }
        assert!(Instant::now() < deadline, "basic.get through node 1 saw nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(got, 5000);
    drop(consumer);
    // Node 3 applies the get's settlement a moment after node 1 answered it.
    wait_for("node 3 to see the queue empty", || {
        let (code, q) = c.node(3).get("queues/%2F/qq");
        (code == 200 && q["messages"].as_u64() == Some(0)).then_some(())
    });
    ch2.queue_delete("qq".into(), QueueDeleteOptions::default()).await.expect("delete");
    wait_for("the queue to be gone everywhere", || {
        (1..=3).all(|id| c.node(id).get("queues/%2F/qq").0 == 404).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_queue_leader_mid_stream_loses_no_confirmed_message() {
    let mut c = TestCluster::start(3);
    {
        let (_c1, ch1) = connect(&c.node(1).url()).await;
        declare_quorum(&ch1, "failover").await;
    }
    let leader = wait_for("the queue's leader", || queue_leader(&c, 1, "failover"));
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    // The publisher is on the leader (it must reconnect); the consumer on another node.
    let (_pc, pch) = connect(&c.node(leader).url()).await;
    pch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let (confirmed_before, ok) = publish_confirmed(&pch, "failover", 0..1500, 64).await;
    assert!(ok, "publishing before the kill");
    // Kill while publishing: the in-flight window's fate is unknown to the publisher.
    // How often each id was sent: a message sent twice (unconfirmed, then again after
    // the failover) may be there twice.
    let mut times_sent: BTreeMap<u32, u32> = (0..1500).map(|id| (id, 1)).collect();
    let publishing = {
        let pch = pch.clone();
        tokio::spawn(async move { publish_counted(&pch, "failover", 1500..100_000, 64).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.node_mut(leader).kill9();
    let killed = Instant::now();
    let (confirmed_during, _, sent_during) = publishing.await.expect("publisher task");
    for id in sent_during {
        *times_sent.entry(id).or_default() += 1;
    }
    // Reconnect to a survivor and go on: the unconfirmed ones are published again.
    let survivor = &c.node(others[0]);
    let next = times_sent.keys().max().copied().unwrap_or(1499) + 1;
    let unconfirmed: Vec<u32> = (1500..next).filter(|id| !confirmed_during.contains(id)).collect();
    let (first_confirm, mut confirmed_after) = loop {
        let (conn, ch) = connect(&survivor.url()).await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        let (got, ok, sent) =
            publish_counted(&ch, "failover", unconfirmed.iter().copied().chain(next..next + 1), 1).await;
        for id in sent {
            *times_sent.entry(id).or_default() += 1;
        }
        if ok {
            break (killed.elapsed(), got);
        }
        drop(conn);
        assert!(killed.elapsed() < WAIT, "no confirm through node {} within {WAIT:?} of the kill", others[0]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "FAILOVER: quorum queue leader node {leader} killed; first confirm through node {} after {} ms",
        others[0],
        first_confirm.as_millis()
    );
    {
        let (_conn, ch) = connect(&survivor.url()).await;
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        let (more, ok) = publish_confirmed(&ch, "failover", next + 1..next + 500, 64).await;
        assert!(ok, "publishing after the failover");
        confirmed_after.extend(more);
    }
    let mut confirmed: BTreeSet<u32> = confirmed_before.into_iter().chain(confirmed_during).collect();
    confirmed.extend(&confirmed_after);
    // Drain through the other survivor.
    let (_cc, cch) = connect(&c.node(others[1]).url()).await;
    cch.basic_qos(500, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = cch
        .basic_consume("failover".into(), "drain".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let mut seen: BTreeMap<u32, (u32, u32)> = BTreeMap::new(); // id -> (first deliveries, redelivered ones)
    while !confirmed.iter().all(|id| seen.contains_key(id)) {
        let d = next_delivery(&mut consumer, WAIT).await.unwrap_or_else(|| {
            let missing: Vec<_> = confirmed.iter().filter(|id| !seen.contains_key(id)).take(5).collect();
            panic!("confirmed messages missing after the failover, e.g. {missing:?}")
        });
        let e = seen.entry(id_of(&d.data)).or_default();
        if d.redelivered {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    for (id, (fresh, _)) in &seen {
        let allowed = times_sent.get(id).copied().unwrap_or(1).max(1);
        assert!(
            *fresh <= allowed,
            "message {id} (sent {allowed} times) delivered {fresh} times without the redelivered flag"
        );
    }
    assert!(first_confirm < Duration::from_secs(10), "failover took {first_confirm:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_stops_confirming_and_catches_up_after_healing() {
    let c = TestCluster::start(3);
    {
        let (_c1, ch1) = connect(&c.node(1).url()).await;
        declare_quorum(&ch1, "split").await;
    }
    let leader = wait_for("the queue's leader", || queue_leader(&c, 1, "split"));
    let minority = (1..=3).find(|id| *id != leader).expect("a follower");
    let majority = (1..=3).find(|id| *id != leader && *id != minority).expect("the other");
    let (_mc, mch) = connect(&c.node(minority).url()).await;
    mch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let (ok_before, ok) = publish_confirmed(&mch, "split", 0..100, 50).await;
    assert!(ok && ok_before.len() == 100);
    c.partition(minority, true);
    // Through the cut-off node: no confirm (a nack or nothing).
    let conf = mch
        .basic_publish("".into(), "split".into(), BasicPublishOptions::default(), b"m-100", persistent())
        .await
        .expect("publish");
    let answer = tokio::time::timeout(Duration::from_secs(3), conf).await;
    assert!(!matches!(answer, Ok(Ok(ref a)) if a.is_ack()), "a partitioned node confirmed a publish: {answer:?}");
    // The majority goes on.
    let (_jc, jch) = connect(&c.node(majority).url()).await;
    jch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let (during, ok) = publish_confirmed(&jch, "split", 200..300, 50).await;
    assert!(ok && during.len() == 100, "the majority confirms while a node is cut off");
    c.partition(minority, false);
    // The healed node catches up: its copy of the queue counts what the majority took.
    wait_for("the healed node to catch up", || {
        let (_, q) = c.node(minority).get("queues/%2F/split");
        (q["messages"].as_u64()? >= 200).then_some(())
    });
    let (_mc2, mch2) = connect(&c.node(minority).url()).await;
    mch2.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let (after, ok) = publish_confirmed(&mch2, "split", 300..310, 10).await;
    assert!(ok && after.len() == 10, "confirms through the healed node again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_cluster_keeps_its_quorum_queues_and_their_messages() {
    let mut c = TestCluster::start(3);
    {
        let (_c1, ch1) = connect(&c.node(1).url()).await;
        declare_quorum(&ch1, "kept").await;
        ch1.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        let (confirmed, ok) = publish_confirmed(&ch1, "kept", 0..300, 100).await;
        assert!(ok && confirmed.len() == 300);
        // Take 100 and ack them: they must not come back.
        ch1.basic_qos(100, BasicQosOptions::default()).await.expect("qos");
        let mut consumer = ch1
            .basic_consume("kept".into(), "k".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .expect("consume");
        for _ in 0..100 {
            let d = next_delivery(&mut consumer, WAIT).await.expect("delivery");
            d.ack(BasicAckOptions::default()).await.expect("ack");
        }
        ch1.basic_cancel("k".into(), BasicCancelOptions::default()).await.expect("cancel");
        wait_for("the acks to be applied", || (c.node(1).get("queues/%2F/kept").1["messages"] == 200).then_some(()));
    }
    for id in 1..=3 {
        c.node_mut(id).stop();
    }
    for id in 1..=3 {
        c.node_mut(id).start();
    }
    c.wait_formed(&[1, 2, 3]);
    let (_c2, ch2) = connect(&c.node(2).url()).await;
    let mut consumer = ch2
        .basic_consume(
            "kept".into(),
            "after".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("consume after restart");
    let mut got = Vec::new();
    while got.len() < 200 {
        let d = next_delivery(&mut consumer, WAIT).await.expect("the kept messages");
        got.push(id_of(&d.data));
    }
    assert_eq!(got, (100..300).collect::<Vec<_>>());
    assert!(next_delivery(&mut consumer, Duration::from_millis(500)).await.is_none(), "no acked message came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queue_limits_ttl_and_delivery_limit_work_through_the_log() {
    let c = TestCluster::start(3);
    let (_c1, ch1) = connect(&c.node(1).url()).await;
    // x-max-length with reject-publish: the publish over the limit is nacked.
    let mut args = quorum_args();
    args.insert("x-max-length".into(), AMQPValue::LongInt(2));
    args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    ch1.queue_declare("limited".into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
        .await
        .expect("declare");
    ch1.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let mut answers = Vec::new();
    for i in 0..3 {
        let conf = ch1
            .basic_publish(
                "".into(),
                "limited".into(),
                BasicPublishOptions::default(),
                format!("m-{i}").as_bytes(),
                persistent(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        answers.push(conf.is_ack());
    }
    assert_eq!(answers, [true, true, false], "the third publish is refused");

    // x-message-ttl: the leader's clock ticks through the log and expires the head.
    let mut args = quorum_args();
    args.insert("x-message-ttl".into(), AMQPValue::LongInt(200));
    ch1.queue_declare("short-lived".into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
        .await
        .expect("declare");
    let (ok, _) = publish_confirmed(&ch1, "short-lived", 0..5, 5).await;
    assert_eq!(ok.len(), 5);
    wait_for("the messages to expire on every node", || {
        (1..=3).all(|id| c.node(id).get("queues/%2F/short-lived").1["messages"] == 0).then_some(())
    });

    // x-delivery-limit: a message rejected with requeue past the limit is dropped (no
    // DLX here), its deliveries counted up to the limit.
    let mut args = quorum_args();
    args.insert("x-delivery-limit".into(), AMQPValue::LongInt(2));
    ch1.queue_declare("poison".into(), QueueDeclareOptions { durable: true, ..Default::default() }, args)
        .await
        .expect("declare");
    let (ok, _) = publish_confirmed(&ch1, "poison", 0..1, 1).await;
    assert_eq!(ok.len(), 1);
    let (_c2, ch2) = connect(&c.node(2).url()).await;
    ch2.basic_qos(1, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = ch2
        .basic_consume("poison".into(), "p".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let mut deliveries = Vec::new();
    while let Some(d) = next_delivery(&mut consumer, Duration::from_secs(3)).await {
        deliveries.push(d.redelivered);
        d.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("nack");
    }
    assert_eq!(deliveries, [false, true, true], "delivered once, then redelivered up to the limit");
    wait_for("the poison message to be gone", || (c.node(2).get("queues/%2F/poison").1["messages"] == 0).then_some(()));
}
