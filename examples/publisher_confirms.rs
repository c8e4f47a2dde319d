//! RabbitMQ tutorial 7, "Publisher Confirms": publish messages and wait for the broker's
//! confirms one by one, in batches, and all at once (asynchronously).

use lapin::{options::*, types::FieldTable, BasicProperties, Channel, Connection, ConnectionProperties};
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;

const MESSAGES: usize = 200;
const BATCH: usize = 50;

#[tokio::main]
async fn main() {
    let url = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    match tokio::time::timeout(Duration::from_secs(30), run(&url)).await {
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

async fn new_queue(channel: &Channel) -> Result<String, Error> {
    let q = channel
        .queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
        .await?;
    Ok(q.name().as_str().to_string())
}

async fn individually(channel: &Channel) -> Result<String, Error> {
    let queue = new_queue(channel).await?;
    let start = Instant::now();
    for i in 0..MESSAGES {
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                i.to_string().as_bytes(),
                BasicProperties::default(),
            )
            .await?
            .await?;
        if !confirm.is_ack() {
            return Err(format!("message {i} was not acked: {confirm:?}").into());
        }
    }
    println!("Published {MESSAGES} messages individually in {} ms", start.elapsed().as_millis());
    Ok(queue)
}

async fn in_batches(channel: &Channel) -> Result<String, Error> {
    let queue = new_queue(channel).await?;
    let start = Instant::now();
    let mut outstanding = Vec::with_capacity(BATCH);
    for i in 0..MESSAGES {
        outstanding.push(
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    i.to_string().as_bytes(),
                    BasicProperties::default(),
                )
                .await?,
        );
        if outstanding.len() == BATCH {
            for confirm in outstanding.drain(..) {
                if !confirm.await?.is_ack() {
                    return Err("nack in batch".into());
                }
            }
        }
    }
    for confirm in outstanding.drain(..) {
        if !confirm.await?.is_ack() {
            return Err("nack in last batch".into());
        }
    }
    println!("Published {MESSAGES} messages in batches of {BATCH} in {} ms", start.elapsed().as_millis());
    Ok(queue)
}

async fn asynchronously(channel: &Channel) -> Result<String, Error> {
    let queue = new_queue(channel).await?;
    let start = Instant::now();
    for i in 0..MESSAGES {
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                i.to_string().as_bytes(),
                BasicProperties::default(),
            )
            .await?;
    }
    // Waits for every outstanding confirm; returns the messages the broker returned (none here).
    let returned = channel.wait_for_confirms().await?;
    if !returned.is_empty() {
        return Err(format!("{} messages returned", returned.len()).into());
    }
    println!("Published {MESSAGES} messages and handled confirms asynchronously in {} ms", start.elapsed().as_millis());
    Ok(queue)
}

async fn run(url: &str) -> Result<(), Error> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let queues = [individually(&channel).await?, in_batches(&channel).await?, asynchronously(&channel).await?];
    for queue in &queues {
        let q = channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        if q.message_count() as usize != MESSAGES {
            return Err(format!("queue {queue} holds {} messages, expected {MESSAGES}", q.message_count()).into());
        }
    }
    println!("All {} messages confirmed", 3 * MESSAGES);
    conn.close(200, "bye".into()).await?;
    Ok(())
}
