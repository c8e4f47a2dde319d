//! RabbitMQ tutorial 1, "Hello World!": publish a message to the queue `hello` and consume it.
//!
//! `AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f cargo run --example hello_world`

use lapin::{options::*, types::FieldTable, BasicProperties, Connection, ConnectionProperties};
use smol::stream::StreamExt;
use std::time::Duration;

type Error = Box<dyn std::error::Error + Send + Sync>;

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

async fn run(url: &str) -> Result<(), Error> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel.queue_declare("hello".into(), QueueDeclareOptions::default(), FieldTable::default()).await?;
    // Start from an empty queue so that a leftover from an earlier run is not what we print.
    channel.queue_purge("hello".into(), QueuePurgeOptions::default()).await?;

    // Sender.
    channel
        .basic_publish(
            "".into(),
            "hello".into(),
            BasicPublishOptions::default(),
            b"Hello World!",
            BasicProperties::default(),
        )
        .await?;
    println!(" [x] Sent 'Hello World!'");

    // Receiver.
    let mut consumer = channel
        .basic_consume(
            "hello".into(),
            "".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    println!(" [*] Waiting for messages.");
    let delivery = consumer.next().await.ok_or("consumer was cancelled")??;
    let body = String::from_utf8(delivery.data)?;
    println!(" [x] Received '{body}'");
    if body != "Hello World!" {
        return Err(format!("unexpected message {body:?}").into());
    }
    conn.close(200, "bye".into()).await?;
    Ok(())
}
