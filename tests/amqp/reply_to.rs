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
        BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into()).with_correlation_id("c1".into()),
    )
    .await;

    let request = next_delivery(&mut server_consumer).await;
    let reply_to = request.properties.reply_to().clone().expect("reply_to is set");
    assert!(
        reply_to.as_str().starts_with("amq.rabbitmq.reply-to."),
        "broker rewrites reply_to to a routable address, got {reply_to}"
    );
    assert_eq!(request.properties.correlation_id().as_ref().map(|c| c.as_str()), Some("c1"));
    publish_props(&server, "", reply_to.as_str(), b"pong", BasicProperties::default().with_correlation_id("c1".into()))
        .await;
    request.ack(BasicAckOptions::default()).await.expect("ack");

    let reply = next_delivery(&mut replies).await;
    assert_eq!(reply.data, b"pong");
    assert_eq!(reply.properties.correlation_id().as_ref().map(|c| c.as_str()), Some("c1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_to_without_reply_consumer_is_406() {
    use amqprs::channel::{BasicPublishArguments, QueueDeclareArguments};
    let broker = start_broker();
    let (_conn, ch) = rs::open(&broker).await;
    let mut events = rs::events(&ch).await;
    let q = unique("rpc-requests");
    within("declare", ch.queue_declare(QueueDeclareArguments::new(&q))).await.expect("declare");
    let mut props = amqprs::BasicProperties::default();
    props.with_reply_to("amq.rabbitmq.reply-to");
    ch.basic_publish(props, b"ping".to_vec(), BasicPublishArguments::new("", &q)).await.expect("publish is sent");
    // The channel is closed with the error (observed through the close itself, not a
    // later method, which could race with the close).
    match rs::next_event(&mut events).await {
        rs::Event::Close { code, text, .. } => {
            assert_eq!(code, 406);
            assert!(
                text.starts_with("PRECONDITION_FAILED - fast reply consumer does not exist"),
                "reply text {text:?}"
            );
        }
        other => panic!("expected channel.close, got {other:?}"),
    }
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
