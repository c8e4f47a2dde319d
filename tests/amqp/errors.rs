//! Channel- and connection-level errors and their scope.

use crate::common::{start_broker, unique};
use crate::util::*;
use lapin::{options::*, types::FieldTable, BasicProperties, Connection, ConnectionProperties};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_error_closes_only_that_channel() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let good = channel(&conn).await;
    confirm_select(&good).await;
    let q = unique("survivor");
    declare_queue(&good, &q).await;
    let bad = channel(&conn).await;
    let res = within(
        "queue.declare",
        bad.queue_declare(
            unique("missing").as_str().into(),
            QueueDeclareOptions { passive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await;
    assert_amqp_err(res, 404, "NOT_FOUND - no queue");
    assert!(!bad.status().connected(), "failed channel is closed");
    // Further use of the closed channel fails locally; the connection is untouched.
    assert!(bad.basic_qos(1, BasicQosOptions::default()).await.is_err());
    assert!(conn.status().connected());
    // The other channel keeps working.
    publish_confirmed(&good, "", &q, b"still works", BasicProperties::default()).await;
    assert_eq!(drain(&good, &q).await, vec!["still works"]);
    // New channels can be opened on the same connection afterwards.
    let again = channel(&conn).await;
    declare_queue(&again, &unique("new-channel")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_missing_exchange_closes_channel_404() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    confirm_select(&ch).await;
    let ex = unique("no-such-exchange");
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            ex.as_str().into(),
            "k".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        ),
    )
    .await
    .expect("publish is async");
    let res = within("confirm", confirm).await;
    assert_amqp_err(res, 404, &format!("NOT_FOUND - no exchange '{ex}' in vhost '/'"));
    let ch2 = channel(&conn).await;
    declare_queue(&ch2, &unique("after")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_publish_to_missing_exchange_gets_channel_close_404() {
    use amqprs::channel::{BasicPublishArguments, QueueDeclareArguments};
    let broker = start_broker();
    let (conn, ch) = rs::open(&broker).await;
    let mut events = rs::events(&ch).await;
    let ex = unique("rs-missing");
    ch.basic_publish(Default::default(), b"x".to_vec(), BasicPublishArguments::new(&ex, "k"))
        .await
        .expect("publish is async");
    assert_eq!(
        rs::next_event(&mut events).await,
        rs::Event::Close {
            code: 404,
            text: format!("NOT_FOUND - no exchange '{ex}' in vhost '/'"),
            class_id: 60,
            method_id: 40,
        }
    );
    // Another channel on the same connection works.
    let ch2 = within("channel", conn.open_channel(None)).await.expect("channel");
    within("declare", ch2.queue_declare(QueueDeclareArguments::new(&unique("rs-after"))))
        .await
        .expect("declare on another channel");
    conn.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_from_missing_queue_closes_channel_404() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    let q = unique("nowhere");
    let res = within(
        "basic.consume",
        ch.basic_consume(q.as_str().into(), "".into(), BasicConsumeOptions::default(), FieldTable::default()),
    )
    .await;
    assert_amqp_err(res, 404, &format!("NOT_FOUND - no queue '{q}' in vhost '/'"));
    let ch2 = channel(&conn).await;
    declare_queue(&ch2, &unique("after")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqprs_channel_error_reports_class_and_method() {
    use amqprs::channel::{QueueDeclareArguments, QueuePurgeArguments};
    let broker = start_broker();
    let (conn, ch) = rs::open(&broker).await;
    let mut events = rs::events(&ch).await;
    let q = unique("rs-nope");
    let res = within("purge", ch.queue_purge(QueuePurgeArguments::new(&q))).await;
    assert!(res.is_err(), "purge of a missing queue fails: {res:?}");
    assert_eq!(
        rs::next_event(&mut events).await,
        rs::Event::Close {
            code: 404,
            text: format!("NOT_FOUND - no queue '{q}' in vhost '/'"),
            class_id: 50,
            method_id: 30,
        }
    );
    assert!(!ch.is_open());
    assert!(conn.is_open());
    let ch2 = within("channel", conn.open_channel(None)).await.expect("channel");
    within("declare", ch2.queue_declare(QueueDeclareArguments::new(&unique("rs-ok")))).await.expect("declare");
    conn.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_channel_errors_on_one_connection() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    for _ in 0..20 {
        let ch = channel(&conn).await;
        let res = within(
            "exchange.declare",
            ch.exchange_declare(
                unique("missing").as_str().into(),
                lapin::ExchangeKind::Direct,
                ExchangeDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            ),
        )
        .await;
        assert_amqp_err(res, 404, "NOT_FOUND - no exchange");
    }
    assert!(conn.status().connected());
    let ch = channel(&conn).await;
    declare_queue(&ch, &unique("still-fine")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_commit_without_select_is_406() {
    let broker = start_broker();
    let (conn, ch) = open(&broker).await;
    let res = within("tx.commit", ch.tx_commit()).await;
    assert_amqp_err(res, 406, "PRECONDITION_FAILED - channel is not transactional");
    let ch2 = channel(&conn).await;
    within("tx.select", ch2.tx_select()).await.expect("tx.select");
    let res = within("confirm.select", ch2.confirm_select(ConfirmSelectOptions::default())).await;
    assert_amqp_err(res, 406, "PRECONDITION_FAILED - cannot switch from tx to confirm mode");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tx_commit_and_rollback() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let q = unique("tx");
    declare_queue(&ch, &q).await;
    within("tx.select", ch.tx_select()).await.expect("tx.select");
    publish(&ch, "", &q, b"rolled-back").await;
    within("tx.rollback", ch.tx_rollback()).await.expect("rollback");
    publish(&ch, "", &q, b"committed").await;
    within("tx.commit", ch.tx_commit()).await.expect("commit");
    // Messages are enqueued by the time commit-ok arrives.
    assert_eq!(drain(&ch, &q).await, vec!["committed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immediate_flag_is_connection_error_540() {
    let broker = start_broker();
    let conn = connect(&broker).await;
    let ch = channel(&conn).await;
    confirm_select(&ch).await;
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            "".into(),
            "whatever".into(),
            BasicPublishOptions { mandatory: false, immediate: true },
            b"x",
            BasicProperties::default(),
        ),
    )
    .await
    .expect("publish is async");
    let res = within("confirm", confirm).await;
    assert_amqp_err(res, 540, "NOT_IMPLEMENTED - immediate=true");
    // Hard error: the connection is gone; the broker still accepts new ones.
    assert!(!conn.status().connected());
    let fresh = connect(&broker).await;
    declare_queue(&channel(&fresh).await, &unique("after-540")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused() {
    let broker = start_broker();
    let url = broker.url().replacen("guest:guest@", "guest:wrong@", 1);
    let res = within("connect", Connection::connect(&url, ConnectionProperties::default())).await;
    let err = res.expect_err("login with a wrong password must fail");
    // lapin advertises authentication_failure_close, so RabbitMQ answers with connection.close.
    assert_eq!(code(&err), Some(403), "{err:?}");
    assert_eq!(
        text(&err),
        "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details see the broker logfile."
    );
    // The broker is fine afterwards.
    let (_c, ch) = open(&broker).await;
    declare_queue(&ch, &unique("after-auth-failure")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_vhost_is_refused_530() {
    let broker = start_broker();
    let url = match broker.url().rsplit_once('/') {
        Some((base, _)) => format!("{base}/no-such-vhost"),
        None => unreachable!(),
    };
    let res = within("connect", Connection::connect(&url, ConnectionProperties::default())).await;
    let err = res.expect_err("unknown vhost must be refused");
    assert_eq!(code(&err), Some(530), "{err:?}");
    assert_eq!(text(&err), "NOT_ALLOWED - vhost no-such-vhost not found");
    let (_c, ch) = open(&broker).await;
    declare_queue(&ch, &unique("after-vhost")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_internal_exchange_is_403() {
    let broker = start_broker();
    let (conn, ch) = open(&broker).await;
    let ex = unique("internal");
    within(
        "exchange.declare",
        ch.exchange_declare(
            ex.as_str().into(),
            lapin::ExchangeKind::Fanout,
            ExchangeDeclareOptions { internal: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await
    .expect("declare internal exchange");
    confirm_select(&ch).await;
    let confirm = within(
        "basic.publish",
        ch.basic_publish(
            ex.as_str().into(),
            "".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        ),
    )
    .await
    .expect("publish is async");
    assert_amqp_err(
        within("confirm", confirm).await,
        403,
        &format!("ACCESS_REFUSED - cannot publish to internal exchange '{ex}' in vhost '/'"),
    );
    // Internal exchanges still receive messages through exchange-to-exchange bindings.
    let ch = channel(&conn).await;
    confirm_select(&ch).await;
    let front = unique("front");
    declare_exchange(&ch, &front, lapin::ExchangeKind::Fanout).await;
    within(
        "exchange.bind",
        ch.exchange_bind(
            ex.as_str().into(),
            front.as_str().into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .expect("exchange.bind");
    let q = unique("behind-internal");
    declare_queue(&ch, &q).await;
    bind(&ch, &q, &ex, "").await;
    publish_confirmed(&ch, &front, "", b"through", BasicProperties::default()).await;
    assert_eq!(drain(&ch, &q).await, vec!["through"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_x_match_is_406() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let q = unique("q");
    declare_queue(&ch, &q).await;
    let mut args = FieldTable::default();
    args.insert("x-match".into(), lapin::types::AMQPValue::LongString("sometimes".into()));
    let res = within(
        "queue.bind",
        ch.queue_bind(q.as_str().into(), "amq.headers".into(), "".into(), QueueBindOptions::default(), args),
    )
    .await;
    assert_amqp_err(res, 406, "PRECONDITION_FAILED - Invalid x-match field value <<\"sometimes\">>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_consume_on_a_queue_with_consumers_is_403() {
    let broker = start_broker();
    let (conn, ch) = open(&broker).await;
    let q = unique("shared");
    declare_queue(&ch, &q).await;
    let _c = consume(&ch, &q, true).await;
    let ch2 = channel(&conn).await;
    let res = within(
        "basic.consume",
        ch2.basic_consume(
            q.as_str().into(),
            "".into(),
            BasicConsumeOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await;
    assert_amqp_err(res, 403, &format!("ACCESS_REFUSED - queue '{q}' in vhost '/' in exclusive use"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_zero_and_global_are_accepted() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    // prefetch_count 0 means unlimited; a non-zero prefetch_size is checked in bad_input.rs.
    within("basic.qos", ch.basic_qos(0, BasicQosOptions::default())).await.expect("qos 0");
    within("basic.qos", ch.basic_qos(10, BasicQosOptions { global: true })).await.expect("global qos");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_redeclare_of_a_shared_queue_is_405() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let q = unique("shared");
    declare_queue(&ch, &q).await;
    let res = within(
        "queue.declare",
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        ),
    )
    .await;
    assert_amqp_err(
        res,
        405,
        &format!("RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{q}' in vhost '/'"),
    );
}
