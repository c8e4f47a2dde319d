//! RabbitMQ tutorial 3, "Publish/Subscribe": a fanout exchange `logs`; two subscribers, each with
//! an exclusive server-named queue, both receive every log message.

use lapin::{options::*, types::FieldTable, BasicProperties, Connection, ConnectionProperties, Consumer, ExchangeKind};
use smol::stream::StreamExt;
use std::time::Duration;

type Error = Box<dyn std::error::Error + Send + Sync>;

const MESSAGES: [&str; 3] = ["info: Hello World!", "warning: disk almost full", "error: it broke"];

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

async fn subscriber(conn: &Connection) -> Result<Consumer, Error> {
    let channel = conn.create_channel().await?;
    channel
        .exchange_declare("logs".into(), ExchangeKind::Fanout, ExchangeDeclareOptions::default(), FieldTable::default())
        .await?;
    let queue = channel
        .queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
        .await?;
    channel
        .queue_bind(queue.name().clone(), "logs".into(), "".into(), QueueBindOptions::default(), FieldTable::default())
        .await?;
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    Ok(consumer)
}

async fn run(url: &str) -> Result<(), Error> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let mut subscribers = [subscriber(&conn).await?, subscriber(&conn).await?];

    let channel = conn.create_channel().await?;
    channel
        .exchange_declare("logs".into(), ExchangeKind::Fanout, ExchangeDeclareOptions::default(), FieldTable::default())
        .await?;
    for msg in MESSAGES {
        channel
            .basic_publish(
                "logs".into(),
                "".into(),
                BasicPublishOptions::default(),
                msg.as_bytes(),
                BasicProperties::default(),
            )
            .await?;
        println!(" [x] Sent '{msg}'");
    }

    for (i, consumer) in subscribers.iter_mut().enumerate() {
        for expected in MESSAGES {
            let delivery = consumer.next().await.ok_or("consumer cancelled")??;
            let body = String::from_utf8(delivery.data)?;
            println!(" [subscriber {}] '{body}'", i + 1);
            if body != expected {
                return Err(format!("subscriber {} got {body:?}, expected {expected:?}", i + 1).into());
            }
        }
    }
    println!("Both subscribers received all {} messages", MESSAGES.len());
    conn.close(200, "bye".into()).await?;
    Ok(())
}
