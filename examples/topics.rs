//! RabbitMQ tutorial 5, "Topics": a topic exchange `topic_logs` with `*` and `#` bindings.

use lapin::{options::*, types::FieldTable, BasicProperties, Connection, ConnectionProperties, Consumer, ExchangeKind};
use smol::stream::StreamExt;
use std::time::Duration;

type Error = Box<dyn std::error::Error + Send + Sync>;

const KEYS: [&str; 9] = [
    "quick.brown.fox",         // matches nothing
    "quick.orange.rabbit",     // Q1, Q2
    "orange",                  // nothing
    "lazy.orange.elephant",    // Q1, Q2
    "quick.orange.fox",        // Q1
    "quick.orange.new.rabbit", // nothing
    "lazy.brown.fox",          // Q2
    "lazy.pink.rabbit",        // Q2 (once, although it matches two bindings)
    "lazy.orange.new.rabbit",  // Q2
];

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

async fn subscriber(conn: &Connection, patterns: &[&str]) -> Result<Consumer, Error> {
    let channel = conn.create_channel().await?;
    channel
        .exchange_declare(
            "topic_logs".into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let queue = channel
        .queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
        .await?;
    for pattern in patterns {
        channel
            .queue_bind(
                queue.name().clone(),
                "topic_logs".into(),
                (*pattern).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?)
}

async fn expect(name: &str, consumer: &mut Consumer, wanted: &[&str]) -> Result<(), Error> {
    for key in wanted {
        let delivery = consumer.next().await.ok_or("consumer cancelled")??;
        println!(" [{name}] {}:'{}'", delivery.routing_key, String::from_utf8_lossy(&delivery.data));
        if delivery.routing_key.as_str() != *key {
            return Err(format!("{name} got {}, expected {key}", delivery.routing_key).into());
        }
    }
    Ok(())
}

async fn run(url: &str) -> Result<(), Error> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let mut q1 = subscriber(&conn, &["*.orange.*"]).await?;
    let mut q2 = subscriber(&conn, &["*.*.rabbit", "lazy.#"]).await?;

    let channel = conn.create_channel().await?;
    for key in KEYS {
        let msg = format!("message for {key}");
        channel
            .basic_publish(
                "topic_logs".into(),
                key.into(),
                BasicPublishOptions::default(),
                msg.as_bytes(),
                BasicProperties::default(),
            )
            .await?;
        println!(" [x] Sent {key}:'{msg}'");
    }
    expect("Q1 *.orange.*", &mut q1, &["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"]).await?;
    expect(
        "Q2 *.*.rabbit lazy.#",
        &mut q2,
        &[
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "lazy.brown.fox",
            "lazy.pink.rabbit",
            "lazy.orange.new.rabbit",
        ],
    )
    .await?;
    println!("Topic routing worked");
    conn.close(200, "bye".into()).await?;
    Ok(())
}
