//! Streams and kill -9: every confirmed append is in the log after a restart, in order,
//! with offsets that have no gaps.

use std::collections::{BTreeSet, VecDeque};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};

use super::{connect, Broker, DataDir, WAIT};

fn stream_args() -> FieldTable {
    let mut t = FieldTable::default();
    t.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from("stream")));
    t
}

async fn declare_stream(ch: &Channel, name: &str) {
    ch.queue_declare(name.into(), QueueDeclareOptions { durable: true, ..Default::default() }, stream_args())
        .await
        .expect("stream declared");
}

/// Publishes numbered messages with confirms (a window of 64) until the broker dies;
/// returns the numbers confirmed.
async fn publish_until_killed(b: &Broker, stream: &str, confirmed_count: &AtomicU32) -> BTreeSet<u32> {
    let (_conn, ch) = connect(b).await;
    ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
    declare_stream(&ch, stream).await;
    let mut confirmed = BTreeSet::new();
    let mut window = VecDeque::new();
    for i in 0u32..2_000_000 {
        let sent = ch
            .basic_publish(
                "".into(),
                stream.into(),
                BasicPublishOptions::default(),
                &i.to_be_bytes(),
                BasicProperties::default(),
            )
            .await;
        match sent {
            Ok(c) => window.push_back((i, c)),
            Err(_) => break,
        }
        if window.len() >= 64 {
            let (n, c) = window.pop_front().expect("non-empty");
            match c.await {
                Ok(conf) if conf.is_ack() => {
                    confirmed.insert(n);
                    confirmed_count.fetch_add(1, Ordering::Relaxed);
                }
                _ => break,
            }
        }
    }
    while let Some((n, c)) = window.pop_front() {
        if let Ok(conf) = c.await {
            if conf.is_ack() {
                confirmed.insert(n);
            }
        }
    }
    confirmed
}

/// Reads the whole stream from the first offset: (offset, number) pairs.
async fn read_all(b: &Broker, stream: &str) -> Vec<(i64, u32)> {
    let (_conn, ch) = connect(b).await;
    let held = ch
        .queue_declare(stream.into(), QueueDeclareOptions { durable: true, ..Default::default() }, stream_args())
        .await
        .expect("redeclare")
        .message_count();
    ch.basic_qos(500, BasicQosOptions::default()).await.expect("qos");
    let mut args = FieldTable::default();
    args.insert("x-stream-offset".into(), AMQPValue::LongString(LongString::from("first")));
    let mut consumer =
        ch.basic_consume(stream.into(), "".into(), BasicConsumeOptions::default(), args).await.expect("consume");
    let mut out = Vec::with_capacity(held as usize);
    while out.len() < held as usize {
        use smol::stream::StreamExt;
        let d = tokio::time::timeout(WAIT, consumer.next())
            .await
            .expect("a delivery in time")
            .expect("consumer open")
            .expect("delivery");
        let offset = match d.properties.headers().as_ref().and_then(|h| h.inner().get("x-stream-offset").cloned()) {
            Some(AMQPValue::LongLongInt(n)) => n,
            other => panic!("no x-stream-offset: {other:?}"),
        };
        out.push((offset, u32::from_be_bytes([d.data[0], d.data[1], d.data[2], d.data[3]])));
        d.ack(BasicAckOptions::default()).await.expect("ack");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_stream_publishing_keeps_every_confirmed_message_in_order() {
    let dir = DataDir::new("streamkill");
    for (round, kill_after) in [50u32, 1500].into_iter().enumerate() {
        let b = Broker::start(&dir.0);
        let pid = b.child.id();
        let count = Arc::new(AtomicU32::new(0));
        let watched = count.clone();
        let killer = std::thread::spawn(move || {
            let deadline = Instant::now() + WAIT;
            while watched.load(Ordering::Relaxed) < kill_after && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        });
        let stream = format!("stream-crash-{round}");
        let confirmed = publish_until_killed(&b, &stream, &count).await;
        killer.join().expect("killer");
        b.kill9();
        assert!(confirmed.len() >= kill_after as usize, "round {round}: killed after {kill_after} confirms");

        let b = Broker::start(&dir.0);
        let got = read_all(&b, &stream).await;
        let offsets: Vec<i64> = got.iter().map(|(o, _)| *o).collect();
        assert!(offsets.iter().enumerate().all(|(i, o)| *o == i as i64), "round {round}: offsets 0.. without gaps");
        let numbers: Vec<u32> = got.iter().map(|(_, n)| *n).collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "round {round}: publish order kept, no duplicates");
        let held: BTreeSet<u32> = numbers.iter().copied().collect();
        let missing: Vec<_> = confirmed.difference(&held).take(5).collect();
        assert!(missing.is_empty(), "round {round}: confirmed messages lost, e.g. {missing:?}");
        b.kill9();
    }
}
