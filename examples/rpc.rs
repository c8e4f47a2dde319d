//! RabbitMQ tutorial 6, "RPC": a server consumes `rpc_queue` and answers fib(n) to the
//! request's `reply_to` queue with the same `correlation_id`; a client calls it a few times.

use lapin::{options::*, types::FieldTable, BasicProperties, Connection, ConnectionProperties};
use smol::stream::StreamExt;
use std::time::Duration;

type Error = Box<dyn std::error::Error + Send + Sync>;

const QUEUE: &str = "rpc_queue";

#[tokio::main]
async fn main() {
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    match tokio::time::timeout(Duration::from_secs(20), run(&url)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("error: timed out");
            std::process::exit(2);
        }
    }
}

fn fib(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    a
}

/// The RPC server, on its own connection. Returns once it is consuming.
async fn start_server(url: &str) -> Result<Connection, Error> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel.queue_declare(QUEUE.into(), QueueDeclareOptions::default(), FieldTable::default()).await?;
    channel.queue_purge(QUEUE.into(), QueuePurgeOptions::default()).await?;
    channel.basic_qos(1, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(QUEUE.into(), "rpc-server".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await?;
    println!(" [x] Awaiting RPC requests");
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let n: u64 = String::from_utf8_lossy(&delivery.data).parse().unwrap_or(0);
            println!(" [.] fib({n})");
            let reply_to = delivery.properties.reply_to().clone().unwrap_or_default();
            let mut props = BasicProperties::default();
            if let Some(id) = delivery.properties.correlation_id() {
                props = props.with_correlation_id(id.clone());
            }
            let answer = fib(n).to_string();
            let published = channel
                .basic_publish("".into(), reply_to, BasicPublishOptions::default(), answer.as_bytes(), props)
                .await;
            if published.is_err() || delivery.ack(BasicAckOptions::default()).await.is_err() {
                break;
            }
        }
    });
    Ok(conn)
}

async fn run(url: &str) -> Result<(), Error> {
    let server = start_server(url).await?;

    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    let callback = channel
        .queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
        .await?;
    let mut replies = channel
        .basic_consume(
            callback.name().clone(),
            "".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;

    for (i, n) in [0u64, 1, 10, 30, 50].into_iter().enumerate() {
        let correlation_id = format!("{}-{i}", std::process::id());
        println!(" [x] Requesting fib({n})");
        channel
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                n.to_string().as_bytes(),
                BasicProperties::default()
                    .with_reply_to(callback.name().clone())
                    .with_correlation_id(correlation_id.as_str().into()),
            )
            .await?;
        // Wait for the reply with our correlation id (ignore anything else).
        loop {
            let delivery = replies.next().await.ok_or("reply consumer cancelled")??;
            let id = delivery.properties.correlation_id().as_ref().map(|s| s.as_str().to_string());
            if id.as_deref() != Some(correlation_id.as_str()) {
                println!(" [?] ignoring reply with correlation id {id:?}");
                continue;
            }
            let answer: u64 = String::from_utf8(delivery.data)?.parse()?;
            println!(" [.] Got fib({n}) = {answer}");
            if answer != fib(n) {
                return Err(format!("wrong answer for fib({n}): {answer}").into());
            }
            break;
        }
    }
    conn.close(200, "bye".into()).await?;
    server.close(200, "bye".into()).await?;
    Ok(())
}
