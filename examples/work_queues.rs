//! RabbitMQ tutorial 2, "Work Queues": a producer sends tasks to the durable queue
//! `task_queue`; two workers with prefetch 1 and manual acks share them. Exits when all tasks
//! are done.

use lapin::{options::*, types::FieldTable, BasicProperties, Channel, Connection, ConnectionProperties};
use smol::stream::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;

type Error = Box<dyn std::error::Error + Send + Sync>;

const QUEUE: &str = "task_queue";
const TASKS: usize = 8;

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

async fn declare(channel: &Channel) -> Result<(), Error> {
    channel
        .queue_declare(QUEUE.into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await?;
    Ok(())
}

/// A worker: takes one task at a time, "works" one tick per dot, acks, reports.
async fn worker(id: usize, conn: &Connection, done: mpsc::UnboundedSender<(usize, String)>) -> Result<(), Error> {
    let channel = conn.create_channel().await?;
    declare(&channel).await?;
    channel.basic_qos(1, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            QUEUE.into(),
            format!("worker-{id}").as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let task = String::from_utf8_lossy(&delivery.data).to_string();
            println!(" [worker {id}] Received '{task}'");
            let dots = task.chars().filter(|c| *c == '.').count() as u64;
            tokio::time::sleep(Duration::from_millis(20 * dots)).await; // the "work"
            println!(" [worker {id}] Done");
            if delivery.ack(BasicAckOptions::default()).await.is_err() {
                break;
            }
            if done.send((id, task)).is_err() {
                break;
            }
        }
    });
    Ok(())
}

async fn run(url: &str) -> Result<(), Error> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let producer = conn.create_channel().await?;
    declare(&producer).await?;
    producer.queue_purge(QUEUE.into(), QueuePurgeOptions::default()).await?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    worker(1, &conn, tx.clone()).await?;
    worker(2, &conn, tx).await?;

    producer.confirm_select(ConfirmSelectOptions::default()).await?;
    for i in 1..=TASKS {
        let task = format!("Task {i}{}", ".".repeat(i % 4 + 1));
        producer
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                task.as_bytes(),
                BasicProperties::default().with_delivery_mode(2), // persistent
            )
            .await?
            .await?;
        println!(" [x] Sent '{task}'");
    }

    let mut per_worker = [0usize; 3];
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < TASKS {
        let (id, task) = rx.recv().await.ok_or("workers stopped")?;
        per_worker[id] += 1;
        if !seen.insert(task.clone()) {
            return Err(format!("task {task:?} processed twice").into());
        }
    }
    println!("worker 1 handled {} tasks, worker 2 handled {} tasks", per_worker[1], per_worker[2]);
    println!("All {TASKS} tasks done");
    conn.close(200, "bye".into()).await?;
    Ok(())
}
