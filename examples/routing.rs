//! RabbitMQ tutorial 4, "Routing": a direct exchange `direct_logs` routes by severity. One
//! subscriber wants only errors, the other info, warning and error.

use lapin::{options::*, types::FieldTable, BasicProperties, Connection, ConnectionProperties, Consumer, ExchangeKind};
use smol::stream::StreamExt;
use std::time::Duration;

type Error = Box<dyn std::error::Error + Send + Sync>;

const LOGS: [(&str, &str); 4] =
    [("info", "starting up"), ("warning", "disk at 91%"), ("debug", "nobody listens to debug"), ("error", "disk full")];

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

async fn subscriber(conn: &Connection, severities: &[&str]) -> Result<Consumer, Error> {
    let channel = conn.create_channel().await?;
    channel
        .exchange_declare(
            "direct_logs".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let queue = channel
        .queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
        .await?;
    for severity in severities {
        channel
            .queue_bind(
                queue.name().clone(),
                "direct_logs".into(),
                (*severity).into(),
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
    for severity in wanted {
        let delivery = consumer.next().await.ok_or("consumer cancelled")??;
        let body = String::from_utf8(delivery.data)?;
        println!(" [{name}] {}:'{body}'", delivery.routing_key);
        if delivery.routing_key.as_str() != *severity {
            return Err(format!("{name} got {} , expected {severity}", delivery.routing_key).into());
        }
    }
    Ok(())
}

async fn run(url: &str) -> Result<(), Error> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let mut errors_only = subscriber(&conn, &["error"]).await?;
    let mut everything = subscriber(&conn, &["info", "warning", "error"]).await?;

    let channel = conn.create_channel().await?;
    for (severity, msg) in LOGS {
        channel
            .basic_publish(
                "direct_logs".into(),
                severity.into(),
                BasicPublishOptions::default(),
                msg.as_bytes(),
                BasicProperties::default(),
            )
            .await?;
        println!(" [x] Sent {severity}:'{msg}'");
    }
    expect("errors", &mut errors_only, &["error"]).await?;
    expect("all", &mut everything, &["info", "warning", "error"]).await?;
    println!("Routing by severity worked");
    conn.close(200, "bye".into()).await?;
    Ok(())
}
