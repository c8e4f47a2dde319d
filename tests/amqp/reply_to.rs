//! Direct reply-to (`amq.rabbitmq.reply-to`): RPC replies without a reply queue.

use crate::common::{start_broker, unique};
use crate::util::*;
use lapin::{options::*, types::FieldTable, BasicProperties};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_over_direct_reply_to() {
    let broker = start_broker();
    let (_client_conn, client) = open(&broker).await;
    let (_server_conn, server) = open(&broker).await;
    let requests = unique("rpc-requests");
    declare_queue(&server, &requests).await;
    let mut server_consumer = consume(&server, &requests, false).await;

    // The client consumes from the pseudo-queue (no-ack is required) and publishes
    // with reply_to = amq.rabbitmq.reply-to.
    let mut replies = consume(&client, "amq.rabbitmq.reply-to", true).await;
    publish_props(
        &client,
        "",
        &requests,
        b"ping",
        BasicProperties::default()
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_correlation_id("c1".into()),
    )
    .await;

    let request = next_delivery(&mut server_consumer).await;
    let reply_to = request.properties.reply_to().clone().expect("reply_to is set");
    assert!(
        reply_to.as_str().starts_with("amq.rabbitmq.reply-to."),
        "broker rewrites reply_to to a routable address, got {reply_to}"
    );
    assert_eq!(request.properties.correlation_id().as_ref().map(|c| c.as_str()), Some("c1"));
    publish_props(
        &server,
        "",
        reply_to.as_str(),
        b"pong",
        BasicProperties::default().with_correlation_id("c1".into()),
    )
    .await;
    request.ack(BasicAckOptions::default()).await.expect("ack");

    let reply = next_delivery(&mut replies).await;
    assert_eq!(reply.data, b"pong");
    assert_eq!(reply.properties.correlation_id().as_ref().map(|c| c.as_str()), Some("c1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_to_without_reply_consumer_is_406() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let q = unique("rpc-requests");
    declare_queue(&ch, &q).await;
    ch.basic_publish(
        "".into(),
        q.as_str().into(),
        BasicPublishOptions::default(),
        b"ping",
        BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into()),
    )
    .await
    .expect("publish is sent");
    // The channel error surfaces on the next synchronous method.
    let res = ch
        .queue_declare(q.as_str().into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await;
    assert_amqp_err(res, 406, "PRECONDITION_FAILED - fast reply consumer does not exist");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_consumer_must_be_no_ack() {
    let broker = start_broker();
    let (_conn, ch) = open(&broker).await;
    let res = ch
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "".into(),
            BasicConsumeOptions { no_ack: false, ..Default::default() },
            FieldTable::default(),
        )
        .await;
    assert_amqp_err(res, 406, "PRECONDITION_FAILED - reply consumer cannot acknowledge");
}
