//! Queue declaration, counts, purge/delete, exclusivity and auto-delete.

use crate::common::{start_broker, unique, WAIT};
use crate::util::*;
use lapin::{options::*, types::FieldTable, BasicProperties, Connection, ExchangeKind};
use std::time::{Duration, Instant};

/// Polls (on fresh channels) until a passive declare of `queue` fails with 404.
/// RabbitMQ removes exclusive/auto-delete queues asynchronously, so the test waits for it
/// with a deadline instead of assuming it already happened.
async fn wait_until_queue_gone(conn: &Connection, queue: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let ch = channel(conn).await;
        let res = within(
            "passive queue.declare",
            ch.queue_declare(
                queue.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            ),
        )
        .await;
        match res {
            Err(e) if code(&e) == Some(404) => {
                assert_eq!(text(&e), format!("NOT_FOUND - no queue '{queue}' in vhost '/'"));
                return;
            }
            Err(e) => panic!("unexpected error: {e:?}"),
            Ok(_) => {
                let _ = ch.close(200, "poll".into()).await;
                assert!(Instant::now() < deadline, "queue {queue} still exists after {WAIT:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn queue_exists(conn: &Connection, queue: &str) -> bool {
    let ch = channel(conn).await;
    let res = ch
        .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await;
    match res {
        Ok(_) => {
            let _ = ch.close(200, "bye".into()).await;
            true
        }
        Err(e) if code(&e) == Some(404) => false,
        Err(e) => panic!("unexpected error: {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_named_queue_gets_amq_gen_name() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let q = within(
        "queue.declare",
        ch.queue_declare(
            "".into(),
            QueueDeclareOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("queue.declare");
    let name = q.name().as_str().to_string();
    assert!(name.starts_with("amq.gen-"), "server-named queue {name:?}");
    assert!(name.len() > "amq.gen-".len() + 10, "name too short: {name:?}");
    assert_eq!((q.message_count(), q.consumer_count()), (0, 0));
    // A second one gets a different name, and the names are usable for routing.
    let q2 = within(
        "queue.declare",
        ch.queue_declare(
            "".into(),
            QueueDeclareOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("queue.declare");
    assert_ne!(q2.name().as_str(), name);
    confirm_select(&ch).await;
    publish_confirmed(&ch, "", &name, b"to server-named", BasicProperties::default()).await;
    assert_eq!(drain(&ch, &name).await, vec!["to server-named"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_server_named_exclusive_queue() {
    use amqprs::channel::QueueDeclareArguments;
    let broker = start_broker();
    let (conn, ch) = rs::open(&broker).await;
    let (name, messages, consumers) =
        within("queue.declare", ch.queue_declare(QueueDeclareArguments::exclusive_server_named()))
            .await
            .expect("queue.declare")
            .expect("declare-ok");
    assert!(name.starts_with("amq.gen-"), "{name}");
    assert_eq!((messages, consumers), (0, 0));
    conn.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_missing_queue_is_404() {
    let broker = start_broker();
    let (conn, ch) = open(&broker).await;
    let q = unique("missing");
    let res = within(
        "queue.declare",
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await;
    assert_amqp_err(res, 404, &format!("NOT_FOUND - no queue '{q}' in vhost '/'"));
    // The queue was not created by the failed passive declare.
    assert!(!queue_exists(&conn, &q).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_ok_reports_ready_messages_and_consumers() {
    let broker = start_broker();
    let (conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let q = unique("counts");
    let declared = declare_queue(&ch, &q).await;
    assert_eq!((declared.message_count(), declared.consumer_count()), (0, 0));
    for i in 0..3 {
        publish_confirmed(&ch, "", &q, format!("m{i}").as_bytes(), BasicProperties::default()).await;
    }
    // A non-passive redeclare reports the same counts.
    let again = declare_queue(&ch, &q).await;
    assert_eq!((again.message_count(), again.consumer_count()), (3, 0));

    let cch = channel(&conn).await;
    within("basic.qos", cch.basic_qos(1, BasicQosOptions::default())).await.expect("qos");
    let mut consumer = consume(&cch, &q, false).await;
    let d = next_delivery(&mut consumer).await;
    assert_eq!(d.data, b"m0");
    // One message is unacked (not counted), two are ready; one consumer.
    let passive = within(
        "passive declare",
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("passive declare");
    assert_eq!((passive.message_count(), passive.consumer_count()), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_returns_number_of_purged_messages() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let q = unique("purge");
    declare_queue(&ch, &q).await;
    for _ in 0..4 {
        publish_confirmed(&ch, "", &q, b"x", BasicProperties::default()).await;
    }
    let n =
        within("queue.purge", ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())).await.expect("purge");
    assert_eq!(n, 4);
    assert_eq!(message_count(&ch, &q).await, 0);
    let n =
        within("queue.purge", ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())).await.expect("purge");
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_of_missing_queue_is_404() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let q = unique("nope");
    let res = within("queue.purge", ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())).await;
    assert_amqp_err(res, 404, &format!("NOT_FOUND - no queue '{q}' in vhost '/'"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_returns_message_count_and_missing_queue_delete_is_ok() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let q = unique("del");
    declare_queue(&ch, &q).await;
    for _ in 0..2 {
        publish_confirmed(&ch, "", &q, b"x", BasicProperties::default()).await;
    }
    let n = within("queue.delete", ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()))
        .await
        .expect("delete");
    assert_eq!(n, 2);
    // RabbitMQ answers delete-ok (count 0) for a queue that does not exist.
    let n = within("queue.delete", ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()))
        .await
        .expect("delete of a missing queue");
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_empty_on_non_empty_queue_is_406() {
    let broker = start_broker();
    let (conn, ch) = open(&broker).await;
    confirm_select(&ch).await;
    let q = unique("notempty");
    declare_queue(&ch, &q).await;
    publish_confirmed(&ch, "", &q, b"x", BasicProperties::default()).await;
    let res = within(
        "queue.delete",
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions { if_empty: true, ..Default::default() }),
    )
    .await;
    assert_amqp_err(res, 406, &format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' not empty"));
    let ch2 = channel(&conn).await;
    assert_eq!(message_count(&ch2, &q).await, 1, "queue and message still there");
    // if-empty on an empty queue deletes it.
    let q2 = unique("empty");
    declare_queue(&ch2, &q2).await;
    within(
        "queue.delete",
        ch2.queue_delete(q2.as_str().into(), QueueDeleteOptions { if_empty: true, ..Default::default() }),
    )
    .await
    .expect("if-empty delete of an empty queue");
    assert!(!queue_exists(&conn, &q2).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_unused_on_consumed_queue_is_406() {
    let broker = start_broker();
    let (conn, ch) = open(&broker).await;
    let q = unique("inuse");
    declare_queue(&ch, &q).await;
    let cch = channel(&conn).await;
    let _consumer = consume(&cch, &q, true).await;
    let res = within(
        "queue.delete",
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions { if_unused: true, ..Default::default() }),
    )
    .await;
    assert_amqp_err(res, 406, &format!("PRECONDITION_FAILED - queue '{q}' in vhost '/' in use"));
    assert!(queue_exists(&conn, &q).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_with_different_properties_is_406() {
    let broker = start_broker();
    let (conn, ch) = open(&broker).await;
    let q = unique("inequivalent");
    declare_queue(&ch, &q).await;
    let res = within(
        "queue.declare",
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await;
    assert_amqp_err(
        res,
        406,
        &format!(
            "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '{q}' in vhost '/': received 'true' but current is 'false'"
        ),
    );
    let ch2 = channel(&conn).await;
    let res = within(
        "queue.declare",
        ch2.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions { auto_delete: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await;
    assert_amqp_err(
        res,
        406,
        &format!(
            "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue '{q}' in vhost '/': received 'true' but current is 'false'"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declaring_amq_prefixed_queue_is_403() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let q = unique("amq.mine");
    let res = within(
        "queue.declare",
        ch.queue_declare(q.as_str().into(), QueueDeclareOptions::default(), FieldTable::default()),
    )
    .await;
    assert_amqp_err(res, 403, &format!("ACCESS_REFUSED - queue name '{q}' contains reserved prefix 'amq.*'"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_to_missing_exchange_or_queue_is_404() {
    let broker = start_broker();
    let (conn, ch) = open(&broker).await;
    let q = unique("q");
    declare_queue(&ch, &q).await;
    let ex = unique("noex");
    let res = within(
        "queue.bind",
        ch.queue_bind(
            q.as_str().into(),
            ex.as_str().into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_amqp_err(res, 404, &format!("NOT_FOUND - no exchange '{ex}' in vhost '/'"));

    let ch2 = channel(&conn).await;
    let ex2 = unique("ex");
    declare_exchange(&ch2, &ex2, ExchangeKind::Direct).await;
    let missing_q = unique("noq");
    let res = within(
        "queue.bind",
        ch2.queue_bind(
            missing_q.as_str().into(),
            ex2.as_str().into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await;
    assert_amqp_err(res, 404, &format!("NOT_FOUND - no queue '{missing_q}' in vhost '/'"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_from_another_connection_is_405() {
    let broker = start_broker();
    let (_owner, ch) = open(&broker).await;
    let q = unique("excl");
    within(
        "queue.declare",
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("exclusive declare");

    let other = connect(&broker).await;
    let expected = format!(
        "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'. \
         It could be originally declared on another connection or the exclusive property value \
         does not match that of the original declaration."
    );
    // Non-passive declare.
    let ch1 = channel(&other).await;
    let res = within(
        "queue.declare",
        ch1.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await;
    assert_amqp_err(res, 405, &expected);
    // Passive declare.
    let ch2 = channel(&other).await;
    let res = within(
        "queue.declare",
        ch2.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await;
    assert_amqp_err(res, 405, &expected);
    // Consume.
    let ch3 = channel(&other).await;
    let res = within(
        "basic.consume",
        ch3.basic_consume(q.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()),
    )
    .await;
    assert_amqp_err(res, 405, &expected);
    // The owner still uses it fine; the other connection is still usable.
    assert_eq!(message_count(&ch, &q).await, 0);
    declare_queue(&channel(&other).await, &unique("other-ok")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_queue_is_deleted_when_its_connection_closes() {
    let broker = start_broker();
    let (owner, ch) = open(&broker).await;
    let q = unique("excl-gone");
    within(
        "queue.declare",
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("exclusive declare");
    let observer = connect(&broker).await;
    within("connection.close", owner.close(200, "bye".into())).await.expect("close");
    wait_until_queue_gone(&observer, &q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_is_deleted_when_last_consumer_cancels() {
    let broker = start_broker();
    let (conn, ch) = open(&broker).await;
    let q = unique("autodel");
    within(
        "queue.declare",
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions { auto_delete: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("declare");
    let c1 = consume(&ch, &q, true).await;
    let c2 = consume(&ch, &q, true).await;
    within("basic.cancel", ch.basic_cancel(c1.tag(), BasicCancelOptions::default())).await.expect("cancel 1");
    // Still one consumer: the queue is alive.
    let passive = within(
        "passive declare",
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("queue still exists with one consumer left");
    assert_eq!(passive.consumer_count(), 1);
    within("basic.cancel", ch.basic_cancel(c2.tag(), BasicCancelOptions::default())).await.expect("cancel 2");
    wait_until_queue_gone(&conn, &q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_delete_queue_without_consumers_is_kept() {
    let broker = start_broker();
    let (conn, ch) = open(&broker).await;
    let q = unique("autodel-never-consumed");
    within(
        "queue.declare",
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions { auto_delete: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("declare");
    within("channel.close", ch.close(200, "bye".into())).await.expect("close");
    assert!(queue_exists(&conn, &q).await, "auto-delete queue that never had a consumer stays");
    let ch = channel(&conn).await;
    within("queue.delete", ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())).await.expect("cleanup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_declare_purge_delete_counts() {
    use amqprs::channel::{
        BasicPublishArguments, ConfirmSelectArguments, QueueDeclareArguments, QueueDeleteArguments, QueuePurgeArguments,
    };
    let broker = start_broker();
    let (conn, ch) = rs::open(&broker).await;
    let mut events = rs::events(&ch).await;
    within("confirm.select", ch.confirm_select(ConfirmSelectArguments::default())).await.expect("confirm.select");
    let q = unique("rs-counts");
    within("declare", ch.queue_declare(QueueDeclareArguments::new(&q))).await.expect("declare");
    for i in 0..5u8 {
        ch.basic_publish(Default::default(), vec![i], BasicPublishArguments::new("", &q)).await.expect("publish");
    }
    rs::wait_acked(&mut events, 1, 5).await;
    let (_, messages, consumers) =
        within("passive declare", ch.queue_declare(QueueDeclareArguments::new(&q).passive(true).finish()))
            .await
            .expect("passive declare")
            .expect("declare-ok");
    assert_eq!((messages, consumers), (5, 0));
    let purged = within("purge", ch.queue_purge(QueuePurgeArguments::new(&q))).await.expect("purge");
    assert_eq!(purged, Some(5));
    ch.basic_publish(Default::default(), vec![9], BasicPublishArguments::new("", &q)).await.expect("publish");
    rs::wait_acked(&mut events, 6, 6).await;
    let deleted = within("delete", ch.queue_delete(QueueDeleteArguments::new(&q))).await.expect("delete");
    assert_eq!(deleted, Some(1));
    conn.close().await.expect("close");
}

async fn unbind(ch: &lapin::Channel, queue: &str, exchange: &str, key: &str) -> lapin::Result<()> {
    within("queue.unbind", ch.queue_unbind(queue.into(), exchange.into(), key.into(), FieldTable::default())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_unbind_is_idempotent_when_anything_is_missing() {
    let broker = start_broker();
    let (conn, ch) = open(&broker).await;
    let q = unique("unbind-q");
    let x = unique("unbind-x");
    declare_queue(&ch, &q).await;
    declare_exchange(&ch, &x, ExchangeKind::Direct).await;
    let (no_q, no_x) = (unique("no-such-q"), unique("no-such-x"));
    // RabbitMQ 3.10 answers unbind-ok for all of these; all on one channel, which a
    // 404 would have closed.
    unbind(&ch, &no_q, &x, "k").await.expect("unbind of a missing queue");
    unbind(&ch, &q, &no_x, "k").await.expect("unbind from a missing exchange");
    unbind(&ch, &no_q, &no_x, "k").await.expect("unbind with both missing");
    unbind(&ch, &q, &x, "k").await.expect("unbind of a missing binding");
    // The queue deleted by this channel's previous method.
    let gone = unique("unbind-deleted");
    declare_queue(&ch, &gone).await;
    bind(&ch, &gone, &x, "k").await;
    within("queue.delete", ch.queue_delete(gone.as_str().into(), QueueDeleteOptions::default()))
        .await
        .expect("queue.delete");
    unbind(&ch, &gone, &x, "k").await.expect("unbind of a queue deleted just before");
    // An auto-delete queue whose last consumer this channel just cancelled.
    let auto = unique("unbind-auto");
    within(
        "queue.declare",
        ch.queue_declare(
            auto.as_str().into(),
            QueueDeclareOptions { auto_delete: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("auto-delete declare");
    bind(&ch, &auto, &x, "k").await;
    let consumer = consume(&ch, &auto, true).await;
    within("basic.cancel", ch.basic_cancel(consumer.tag().as_str().into(), BasicCancelOptions::default()))
        .await
        .expect("basic.cancel");
    unbind(&ch, &auto, &x, "k").await.expect("unbind of an auto-deleted queue");
    wait_until_queue_gone(&conn, &auto).await;
    unbind(&ch, &auto, &x, "k").await.expect("unbind of an auto-deleted queue, later");
    // An auto-delete exchange that this channel's previous unbind deleted.
    let ax = unique("unbind-auto-x");
    within(
        "exchange.declare",
        ch.exchange_declare(
            ax.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions { auto_delete: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("auto-delete exchange.declare");
    bind(&ch, &q, &ax, "k").await;
    unbind(&ch, &q, &ax, "k").await.expect("unbind of the last binding");
    unbind(&ch, &q, &ax, "k").await.expect("unbind from the auto-deleted exchange");
    // The channel is still open and the remaining topology intact.
    assert_eq!(message_count(&ch, &q).await, 0);
    let res = within(
        "passive exchange.declare",
        ch.exchange_declare(
            ax.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await;
    assert_amqp_err(res, 404, &format!("NOT_FOUND - no exchange '{ax}' in vhost '/'"));

    // What is still refused.
    let ch = channel(&conn).await;
    let res = unbind(&ch, &q, "", &q).await;
    assert_amqp_err(res, 403, "ACCESS_REFUSED - operation not permitted on the default exchange");
    let ch = channel(&conn).await;
    let res = unbind(&ch, &no_q, "", &no_q).await;
    assert_amqp_err(res, 403, "ACCESS_REFUSED - operation not permitted on the default exchange");
    let ch = channel(&conn).await;
    let res = unbind(&ch, "", &x, "k").await;
    assert_amqp_err(res, 404, "NOT_FOUND - no previously declared queue");
    // Another connection's exclusive queue: 405 only where a binding exists to remove.
    let (_owner, och) = open(&broker).await;
    let excl = unique("unbind-excl");
    within(
        "queue.declare",
        och.queue_declare(
            excl.as_str().into(),
            QueueDeclareOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("exclusive declare");
    bind(&och, &excl, &x, "k").await;
    let ch = channel(&conn).await;
    unbind(&ch, &excl, &no_x, "k").await.expect("unbind of another connection's queue from a missing exchange");
    unbind(&ch, &excl, &x, "other-key").await.expect("unbind of another connection's queue, no such binding");
    let res = unbind(&ch, &excl, &x, "k").await;
    assert_amqp_err(
        res,
        405,
        &format!("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{excl}' in vhost '/'"),
    );
}

async fn redeclare(
    conn: &Connection,
    q: &str,
    opts: QueueDeclareOptions,
    args: FieldTable,
) -> lapin::Result<lapin::Queue> {
    let ch = channel(conn).await;
    within("queue.declare", ch.queue_declare(q.into(), opts, args)).await
}

fn args(pairs: &[(&str, lapin::types::AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclare_checks_exclusive_owner_strictly_and_compares_rabbitmqs_arguments() {
    use lapin::types::AMQPValue as V;
    let broker = start_broker();
    let conn = connect(&broker).await;
    let exclusive = QueueDeclareOptions { exclusive: true, ..Default::default() };
    let none = FieldTable::default;
    let q = unique("redeclare-excl");
    redeclare(&conn, &q, exclusive, none()).await.expect("exclusive declare");
    // Exclusivity must match even for the owner: 405, not 406.
    let locked = format!(
        "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'. \
         It could be originally declared on another connection or the exclusive property value \
         does not match that of the original declaration."
    );
    assert_amqp_err(redeclare(&conn, &q, QueueDeclareOptions::default(), none()).await, 405, &locked);
    let durable_shared = QueueDeclareOptions { durable: true, ..Default::default() };
    assert_amqp_err(redeclare(&conn, &q, durable_shared, none()).await, 405, &locked);
    // An exclusive queue is never durable: durable=true is ignored with exclusive=true.
    let durable_exclusive = QueueDeclareOptions { durable: true, exclusive: true, ..Default::default() };
    redeclare(&conn, &q, durable_exclusive, none()).await.expect("exclusive durable redeclare");
    let qd = unique("redeclare-excl-durable");
    redeclare(&conn, &qd, durable_exclusive, none()).await.expect("exclusive durable declare");
    redeclare(&conn, &qd, exclusive, none()).await.expect("exclusive non-durable redeclare");
    // Exclusive consumers: the second is refused.
    let ch = channel(&conn).await;
    let excl_consume = BasicConsumeOptions { exclusive: true, ..Default::default() };
    // Kept alive: lapin cancels a consumer when it is dropped, which would race c2.
    let _c1 = within("basic.consume", ch.basic_consume(q.as_str().into(), "c1".into(), excl_consume, none()))
        .await
        .expect("exclusive consume");
    let res = within("basic.consume", ch.basic_consume(q.as_str().into(), "c2".into(), excl_consume, none())).await;
    assert_amqp_err(res, 403, &format!("ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use"));

    // Arguments: only RabbitMQ's classic-queue arguments are compared, integers by value.
    let qa = unique("redeclare-args");
    let ttl = |v: V| args(&[("x-message-ttl", v)]);
    redeclare(&conn, &qa, QueueDeclareOptions::default(), ttl(V::LongInt(1000))).await.expect("declare");
    redeclare(&conn, &qa, QueueDeclareOptions::default(), ttl(V::ShortInt(1000)))
        .await
        .expect("same value, other int type");
    redeclare(&conn, &qa, QueueDeclareOptions::default(), ttl(V::LongLongInt(1000))).await.expect("same value, long");
    let ignored = args(&[
        ("x-message-ttl", V::LongInt(1000)),
        ("x-queue-type", V::LongString("classic".into())),
        ("x-delivery-limit", V::LongInt(9)),
        ("x-consumer-timeout", V::LongInt(60000)),
        ("x-whatever", V::LongInt(1)),
        ("plain", V::LongInt(1)),
    ]);
    redeclare(&conn, &qa, QueueDeclareOptions::default(), ignored).await.expect("arguments RabbitMQ does not compare");
    let prefix = "PRECONDITION_FAILED - inequivalent arg";
    let cases: Vec<(FieldTable, String)> = vec![
        (ttl(V::LongLongInt(2000)), "'x-message-ttl' for queue '{q}' in vhost '/': received '2000' but current is '1000'".into()),
        (none(), "'x-message-ttl' for queue '{q}' in vhost '/': received none but current is the value '1000' of type 'signedint'".into()),
        (ttl(V::LongString("1000".into())), "'x-message-ttl' for queue '{q}' in vhost '/': received '1000' but current is '1000'".into()),
        (
            args(&[("x-message-ttl", V::LongInt(1000)), ("x-expires", V::LongInt(5000))]),
            "'x-expires' for queue '{q}' in vhost '/': received the value '5000' of type 'signedint' but current is none".into(),
        ),
        (
            args(&[("x-message-ttl", V::LongInt(1000)), ("x-max-priority", V::ShortShortUInt(5))]),
            "'x-max-priority' for queue '{q}' in vhost '/': received the value '5' of type 'unsignedbyte' but current is none".into(),
        ),
        (
            args(&[("x-message-ttl", V::LongInt(1000)), ("x-queue-type", V::LongString("quorum".into()))]),
            "'x-queue-type' for queue '{q}' in vhost '/': received the value 'quorum' of type 'longstr' but current is none".into(),
        ),
        (
            args(&[("x-message-ttl", V::LongInt(1000)), ("x-single-active-consumer", V::Boolean(true))]),
            "'x-single-active-consumer' for queue '{q}' in vhost '/': received the value 'true' of type 'bool' but current is none".into(),
        ),
    ];
    for (a, text) in cases {
        let expected = format!("{prefix} {}", text.replace("{q}", &qa));
        assert_amqp_err(redeclare(&conn, &qa, QueueDeclareOptions::default(), a).await, 406, &expected);
    }
    // durable and auto_delete come before the arguments.
    let res = redeclare(&conn, &qa, durable_shared, ttl(V::LongInt(2000))).await;
    assert_amqp_err(
        res,
        406,
        &format!("{prefix} 'durable' for queue '{qa}' in vhost '/': received 'true' but current is 'false'"),
    );
    let strings = unique("redeclare-strings");
    let dlx = |x: &str| args(&[("x-dead-letter-exchange", V::LongString(x.into()))]);
    redeclare(&conn, &strings, QueueDeclareOptions::default(), dlx("a")).await.expect("declare");
    assert_amqp_err(
        redeclare(&conn, &strings, QueueDeclareOptions::default(), dlx("b")).await,
        406,
        &format!(
            "{prefix} 'x-dead-letter-exchange' for queue '{strings}' in vhost '/': received 'b' but current is 'a'"
        ),
    );
}
