//! Classic queues through every node: a classic queue lives on the node it was
//! declared through (its home); the other nodes route to it, publish to it (confirms
//! after the home has it safe), consume from it, get, purge and delete it over their
//! link to the home.

use lapin::options::*;
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use smol::stream::StreamExt;

use super::definitions::{connect, eventually};
use super::{TestCluster, WAIT};

async fn declare_durable(url: &str, queue: &str) {
    let (_conn, ch) = connect(url).await.expect("connect");
    ch.queue_declare(queue.into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .expect("declare");
}

/// The ready count a passive declare through `url` reports (None: 404).
async fn count(url: &str, queue: &str) -> Option<u32> {
    let (_conn, ch) = connect(url).await.expect("connect");
    let q = ch
        .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .ok()?;
    Some(q.message_count())
}

/// Waits until a passive declare through `url` counts `want` ready messages (None:
/// the queue is not there).
async fn count_becomes(url: String, queue: &str, want: Option<u32>) {
    eventually(&format!("'{queue}' to count {want:?} through {url}"), || {
        let url = url.clone();
        async move { (count(&url, queue).await == want).then_some(()) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_queue_is_served_by_every_node() {
    let c = TestCluster::start(3);
    let url = |id| c.node(id).url();
    {
        let (_conn, ch) = connect(&url(1)).await.expect("connect to node 1");
        ch.exchange_declare(
            "orders-x".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("exchange");
        ch.queue_declare(
            "orders".into(),
            QueueDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("declare a classic queue on node 1");
        ch.queue_bind(
            "orders".into(),
            "orders-x".into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    }
    // Node 1 is its home; the others serve it from there.
    let (code, q) = c.node(2).get("queues/%2F/orders");
    assert_eq!(code, 200, "node 2 lists the queue: {q}");
    assert!(q["node"].as_str().is_some_and(|n| n.starts_with("haremq-1@")), "it lives on node 1: {q}");

    // 200 persistent publishes with confirms through node 2, routed by node 2's copy of
    // the binding.
    {
        let (_conn, ch) = connect(&url(2)).await.expect("connect to node 2");
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        let mut confirms = Vec::new();
        for i in 0..200u32 {
            let props = BasicProperties::default().with_delivery_mode(2);
            let p = ch
                .basic_publish(
                    "orders-x".into(),
                    "k".into(),
                    BasicPublishOptions::default(),
                    i.to_string().as_bytes(),
                    props,
                )
                .await
                .expect("publish");
            confirms.push(p);
        }
        for p in confirms {
            assert!(p.await.expect("confirm").is_ack(), "every publish through node 2 is confirmed");
        }
    }
    assert_eq!(count(&url(3), "orders").await, Some(200), "node 3 counts what node 1 holds");
    assert_eq!(count(&url(1), "orders").await, Some(200));

    // Consumed through node 3 with a prefetch, in publish order, each acked.
    {
        let (_conn, ch) = connect(&url(3)).await.expect("connect to node 3");
        ch.basic_qos(10, BasicQosOptions::default()).await.expect("qos");
        let mut consumer = ch
            .basic_consume("orders".into(), "c3".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .expect("consume through node 3");
        for i in 0..200u32 {
            let d = tokio::time::timeout(WAIT, consumer.next())
                .await
                .expect("a delivery in time")
                .expect("consumer open")
                .expect("delivery");
            assert_eq!(d.data, i.to_string().into_bytes(), "in publish order");
            assert!(!d.redelivered);
            d.ack(BasicAckOptions::default()).await.expect("ack");
        }
        ch.basic_cancel("c3".into(), BasicCancelOptions::default()).await.expect("cancel");
    }
    // Every delivery settled on the home, and the consumer gone there.
    super::wait_for("the acks and the cancel to reach node 1", || {
        let (_, q) = c.node(1).get("queues/%2F/orders");
        (q["messages"] == 0 && q["messages_unacknowledged"] == 0 && q["consumers"] == 0).then_some(())
    });

    // basic.get through node 2: a nack with requeue puts it back, redelivered.
    {
        let (_conn, ch) = connect(&url(3)).await.expect("connect to node 3");
        ch.basic_publish(
            "".into(),
            "orders".into(),
            BasicPublishOptions::default(),
            b"again",
            BasicProperties::default(),
        )
        .await
        .expect("publish through the default exchange");
        let (_conn2, ch2) = connect(&url(2)).await.expect("connect to node 2");
        let m = eventually("a message to get", || {
            let ch2 = ch2.clone();
            async move { ch2.basic_get("orders".into(), BasicGetOptions { no_ack: false }).await.ok()? }
        })
        .await;
        assert_eq!(m.delivery.data, b"again");
        assert!(!m.delivery.redelivered);
        m.delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await.expect("nack");
        let again = eventually("the requeued message", || {
            let ch = ch.clone();
            async move { ch.basic_get("orders".into(), BasicGetOptions { no_ack: true }).await.ok()? }
        })
        .await;
        assert_eq!(again.delivery.data, b"again");
        assert!(again.delivery.redelivered, "requeued on the home, then redelivered");
    }

    // Purge and delete through other nodes; the queue is then gone everywhere.
    {
        let (_conn, ch) = connect(&url(1)).await.expect("connect to node 1");
        for _ in 0..5 {
            ch.basic_publish(
                "".into(),
                "orders".into(),
                BasicPublishOptions::default(),
                b"p",
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        }
        count_becomes(url(3), "orders", Some(5)).await;
        let (_conn3, ch3) = connect(&url(3)).await.expect("connect to node 3");
        assert_eq!(ch3.queue_purge("orders".into(), QueuePurgeOptions::default()).await.expect("purge"), 5);
        ch.basic_publish("".into(), "orders".into(), BasicPublishOptions::default(), b"d", BasicProperties::default())
            .await
            .expect("publish");
        let (_conn2, ch2) = connect(&url(2)).await.expect("connect to node 2");
        count_becomes(url(2), "orders", Some(1)).await;
        assert_eq!(
            ch2.queue_delete("orders".into(), QueueDeleteOptions::default()).await.expect("delete through node 2"),
            1
        );
    }
    assert_eq!(count(&url(1), "orders").await, None, "the home deleted it");
    for id in [2, 3] {
        count_becomes(url(id), "orders", None).await;
    }
    // The name is free again, on any node.
    declare_durable(&url(3), "orders").await;
    assert_eq!(count(&url(1), "orders").await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_consumer_ends_with_its_home_and_nothing_confirmed_is_lost() {
    let mut c = TestCluster::start(3);
    declare_durable(&c.node(1).url(), "jobs").await;
    {
        let (_conn, ch) = connect(&c.node(3).url()).await.expect("connect to node 3");
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        for i in 0..50u32 {
            let props = BasicProperties::default().with_delivery_mode(2);
            let ok = ch
                .basic_publish(
                    "".into(),
                    "jobs".into(),
                    BasicPublishOptions::default(),
                    i.to_string().as_bytes(),
                    props,
                )
                .await
                .expect("publish")
                .await
                .expect("confirm");
            assert!(ok.is_ack());
        }
    }
    // A consumer through node 2 holds 5 unacked deliveries when the home dies.
    let (_conn, ch) = connect(&c.node(2).url()).await.expect("connect to node 2");
    ch.basic_qos(5, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = ch
        .basic_consume("jobs".into(), "c2".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume through node 2");
    for _ in 0..5 {
        tokio::time::timeout(WAIT, consumer.next()).await.expect("delivery in time").expect("open").expect("delivery");
    }
    c.node_mut(1).kill9();
    // The consumer is cancelled (basic.cancel ends lapin's stream); the channel stays.
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match consumer.next().await {
                None => return,
                Some(Err(e)) => panic!("the channel failed: {e}"),
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the consumer through node 2 is cancelled when its queue's home goes");
    // A publish to the unreachable home is not confirmed.
    {
        let (_conn, ch3) = connect(&c.node(3).url()).await.expect("connect to node 3");
        ch3.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        let confirm = tokio::time::timeout(
            WAIT,
            ch3.basic_publish(
                "".into(),
                "jobs".into(),
                BasicPublishOptions::default(),
                b"x",
                BasicProperties::default(),
            )
            .await
            .expect("publish"),
        )
        .await
        .expect("answered in time")
        .expect("confirm");
        assert!(confirm.is_nack(), "nacked: the queue's home is down");
    }
    c.node_mut(1).start();
    // Every confirmed message is still there: the 5 held by the cancelled consumer
    // were never acked.
    count_becomes(c.node(3).url(), "jobs", Some(50)).await;
    let (_conn2, ch2) = connect(&c.node(2).url()).await.expect("connect to node 2");
    let mut bodies = Vec::new();
    for _ in 0..50 {
        let m = eventually("a message", || {
            let ch2 = ch2.clone();
            async move { ch2.basic_get("jobs".into(), BasicGetOptions { no_ack: true }).await.ok()? }
        })
        .await;
        bodies.push(String::from_utf8(m.delivery.data).expect("utf-8").parse::<u32>().expect("a number"));
    }
    bodies.sort_unstable();
    assert_eq!(bodies, (0..50).collect::<Vec<u32>>(), "each confirmed message once, through node 2");
    assert_eq!(count(&c.node(1).url(), "jobs").await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queues_stay_home_and_auto_delete_and_http_reach_every_node() {
    let c = TestCluster::start(3);
    let (_conn, ch) = connect(&c.node(1).url()).await.expect("connect to node 1");
    ch.queue_declare(
        "mine".into(),
        QueueDeclareOptions { exclusive: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("exclusive queue");
    ch.queue_declare(
        "brief".into(),
        QueueDeclareOptions { auto_delete: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .expect("auto-delete queue");
    assert_eq!(count(&c.node(2).url(), "mine").await, None, "an exclusive queue is its connection's node's only");
    assert_eq!(count(&c.node(2).url(), "brief").await, Some(0));
    // Its last consumer, through node 3, goes: the home deletes it, then every node.
    {
        let (_conn3, ch3) = connect(&c.node(3).url()).await.expect("connect to node 3");
        // Kept: lapin cancels a consumer it drops.
        let _consumer = ch3
            .basic_consume("brief".into(), "only".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .expect("consume");
        let (_, q) = c.node(1).get("queues/%2F/brief");
        let (_, all) = c.node(1).get("queues");
        assert_eq!(q["consumers"], 1, "the home counts the consumer through node 3: {q} {all}");
        ch3.basic_cancel("only".into(), BasicCancelOptions::default()).await.expect("cancel");
    }
    for id in [1, 2, 3] {
        count_becomes(c.node(id).url(), "brief", None).await;
    }
    // A no-wait declare followed at once by a publish: the queue exists on its home
    // before the next frame, as on a single node.
    {
        ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
        ch.queue_declare(
            "fast".into(),
            QueueDeclareOptions { durable: true, nowait: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("no-wait declare");
        let confirm = ch
            .basic_publish("".into(), "fast".into(), BasicPublishOptions::default(), b"f", BasicProperties::default())
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack());
        count_becomes(c.node(3).url(), "fast", Some(1)).await;
        // The same with a no-wait exchange and binding: routed by the next frame.
        ch.exchange_declare(
            "fast-x".into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions { nowait: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .expect("no-wait exchange");
        ch.queue_bind(
            "fast".into(),
            "fast-x".into(),
            "".into(),
            QueueBindOptions { nowait: true },
            FieldTable::default(),
        )
        .await
        .expect("no-wait binding");
        let confirm = ch
            .basic_publish(
                "fast-x".into(),
                "".into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                b"g",
                BasicProperties::default(),
            )
            .await
            .expect("publish to the new exchange at once")
            .await
            .expect("confirm");
        assert!(confirm.is_ack() && confirm.take_message().is_none(), "routed, not returned");
        count_becomes(c.node(3).url(), "fast", Some(2)).await;
    }
    // A consumer the home refuses is refused through any node, with the home's error.
    {
        declare_durable(&c.node(1).url(), "solo").await;
        let (_c1, ch1) = connect(&c.node(1).url()).await.expect("connect to node 1");
        let _first = ch1
            .basic_consume(
                "solo".into(),
                "first".into(),
                BasicConsumeOptions { exclusive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .expect("an exclusive consumer on node 1");
        let (_c3, ch3) = connect(&c.node(3).url()).await.expect("connect to node 3");
        let refused = ch3
            .basic_consume("solo".into(), "second".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map(|_| ())
            .expect_err("a second consumer through node 3 is refused");
        assert!(refused.to_string().contains("in exclusive use"), "403 from the home: {refused}");
    }
    // Declared over node 2's HTTP API: node 2 is its home, node 3 serves it.
    let body = serde_json::json!({"durable": true, "auto_delete": false, "arguments": {}});
    let (code, reply) = super::http("PUT", &c.node(2).api("queues/%2F/web"), Some(body));
    assert_eq!(code, 201, "{reply}");
    count_becomes(c.node(3).url(), "web", Some(0)).await;
    // Deleted over node 3's API: the home deletes it, and then every node.
    let (code, reply) = super::http("DELETE", &c.node(3).api("queues/%2F/web"), None);
    assert_eq!(code, 204, "{reply}");
    assert_eq!(count(&c.node(2).url(), "web").await, None, "its home deleted it");
    count_becomes(c.node(1).url(), "web", None).await;
}

/// A partition that drops packets without resetting connections: both ends of a
/// queue link notice the silence (pings stop being answered), the consumer on the
/// cut-off side is cancelled and the home requeues what it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_link_is_given_up_on_both_sides() {
    let c = TestCluster::start(3);
    declare_durable(&c.node(1).url(), "held").await;
    {
        let (_conn, ch) = connect(&c.node(1).url()).await.expect("connect to node 1");
        for i in 0..5u32 {
            ch.basic_publish(
                "".into(),
                "held".into(),
                BasicPublishOptions::default(),
                &i.to_be_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        }
    }
    let (_conn, ch) = connect(&c.node(2).url()).await.expect("connect to node 2");
    ch.basic_qos(5, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = ch
        .basic_consume("held".into(), "c".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume through node 2");
    for _ in 0..5 {
        tokio::time::timeout(WAIT, consumer.next()).await.expect("delivery in time").expect("open").expect("delivery");
    }
    c.freeze(1, true);
    let started = std::time::Instant::now();
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match consumer.next().await {
                None => return,
                Some(Err(e)) => panic!("the channel failed: {e}"),
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the consumer through node 2 is cancelled once its link to node 1 falls silent");
    eprintln!("SILENT LINK: consumer cancelled {} ms after the freeze", started.elapsed().as_millis());
    // Node 1's API is not behind the proxies: the home requeued the 5 deliveries.
    super::wait_for("node 1 to requeue what node 2's consumer held", || {
        let (_, q) = c.node(1).get("queues/%2F/held");
        (q["messages_ready"] == 5 && q["consumers"] == 0).then_some(())
    });
    c.freeze(1, false);
}
